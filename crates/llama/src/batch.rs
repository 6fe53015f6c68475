//! Continuous batching: one context holding several sequences, one thread decoding them.
//!
//! On a CPU, decoding one token of one sequence streams every weight of the model through
//! memory for a handful of multiply-adds; decoding one token for each of several sequences
//! in the same `llama_decode` streams the weights once. A model whose pool entry allows
//! `max_concurrency > 1` therefore gets an [`Engine`]: calls are queued to a thread that
//! owns one context with `slots` sequences (each with the model's full context length) and
//! admits a call into a sequence as soon as one is free. Each `llama_decode` then carries one
//! token for every generating sequence plus up to [`PREFILL_PER_STEP`] prompt tokens of the
//! sequences still reading their prompt, so a new call's prompt is evaluated while the others
//! keep generating. Each sequence is sampled, stopped and accounted by the same [`Decoding`]
//! as the single-call path.
//!
//! With `reuse_prefix`, a finished call's tokens stay in its sequence's KV cache; a new call
//! goes to the free sequence sharing the longest prefix with its prompt and evaluates only the
//! rest. Steps of one question share their system prompt and the question, so most of their
//! prompt is read once. When another sequence (busy or not) holds a much longer prefix, its
//! cache is copied into the new call's sequence first: calls that arrive together with the
//! same few-shot prompt read it once.
//!
//! Invariant: **a reused KV prefix is exactly what the sequence holds.** Each sequence
//! remembers the tokens in its KV cache (prompt and fed tokens, in position order); a new
//! call goes to the free sequence with the longest common prefix, the cache is cut there
//! (never at the prompt's end: its last token is read again for fresh logits,
//! [`reusable_prefix`]), and only the rest is evaluated. When another sequence, busy or not,
//! holds a prefix at least [`SHARE_MIN_TOKENS`] longer, its KV cache is copied over first
//! ([`share_prefix`]: llama.cpp copies a whole per-sequence buffer before the next decode,
//! then the copy is cut after the shared prefix). Any failure clears the sequence and what
//! it remembers ([`forget`]; a failed decode clears them all). The engine answers bit for
//! bit like the one-context path with reuse (`generate::reusable_prefix` serves both).
//!
//! Greedy outputs can differ in the last bits from a call decoded alone (a batch of several
//! tokens takes a different matrix-multiplication kernel than one token), exactly as they can
//! between llama.cpp builds; the call cache keeps whichever was computed first.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use r2_pool::{GenRequest, GenResponse};

use crate::generate::{reusable_prefix, Decoding, GenStats, Step};
use crate::new_context;

/// A prefix is copied from another sequence when it saves at least this many prompt tokens
/// over the new call's own sequence: the copy moves the whole KV buffer of a sequence (tens of
/// MB, milliseconds), reading 64 prompt tokens takes a few hundred milliseconds.
const SHARE_MIN_TOKENS: usize = 64;

/// Prompt tokens evaluated per decode, across sequences (llama.cpp's default micro-batch):
/// bounds how long a long prompt holds up the generating sequences.
pub const PREFILL_PER_STEP: usize = 512;

pub type Reply = Result<(GenResponse, GenStats), String>;

/// One queued call.
pub struct Job {
    pub tokens: Vec<LlamaToken>,
    pub request: GenRequest,
    pub cancel: Arc<AtomicBool>,
    pub reply: tokio::sync::oneshot::Sender<Reply>,
}

/// The handle callers queue calls on; the thread exits once every handle is dropped and the
/// calls in flight are answered.
pub struct Engine {
    jobs: Sender<Job>,
}

impl Engine {
    /// Start the engine thread for `model`: `slots` sequences of `n_ctx` tokens each;
    /// `reuse_prefix` keeps finished calls' tokens for the next call's common prefix.
    pub fn start(
        id: &str,
        model: &'static LlamaModel,
        slots: u32,
        n_ctx: u32,
        threads: i32,
        reuse_prefix: bool,
    ) -> Result<Self, String> {
        let (jobs, rx) = std::sync::mpsc::channel();
        let setup = Setup {
            id: id.to_string(),
            model,
            slots: slots.max(1),
            n_ctx,
            threads,
            reuse_prefix,
        };
        std::thread::Builder::new()
            .name(format!("llama-batch-{id}"))
            .spawn(move || setup.serve(rx))
            .map_err(|e| format!("cannot start the batch thread: {e}"))?;
        Ok(Self { jobs })
    }

    /// Queue a call; the answer arrives on the job's `reply`.
    pub fn submit(&self, job: Job) -> Result<(), String> {
        self.jobs
            .send(job)
            .map_err(|_| "the batch thread has stopped".to_string())
    }
}

struct Setup {
    id: String,
    model: &'static LlamaModel,
    slots: u32,
    n_ctx: u32,
    threads: i32,
    reuse_prefix: bool,
}

/// A call in a sequence: first reading its prompt, then generating.
struct Active {
    reply: tokio::sync::oneshot::Sender<Reply>,
    cancel: Arc<AtomicBool>,
    prompt: Vec<LlamaToken>,
    phase: Phase,
    /// The position of the next token fed to this sequence.
    pos: i32,
    /// Prompt tokens already in the KV cache when the call was admitted.
    reused: usize,
    started: Instant,
    stats: GenStats,
}

enum Phase {
    /// Prompt tokens `..pos` are in the KV cache.
    Prefill { request: GenRequest },
    /// `next` is fed at `pos` in the next decode.
    Generate {
        decoding: Decoding,
        next: LlamaToken,
    },
}

/// What a sequence contributed to the current batch.
enum Entry {
    /// Its generated token, with logits at this batch index.
    Token(i32),
    /// The end of its prompt, with logits at this batch index.
    PromptDone(i32),
    /// Its prompt up to this position (no logits).
    PromptPart(usize),
}

impl Active {
    /// A call whose first `reused` prompt tokens are already in its sequence's KV cache.
    fn new(job: Job, reused: usize) -> Self {
        Self {
            reply: job.reply,
            cancel: job.cancel,
            prompt: job.tokens,
            phase: Phase::Prefill {
                request: job.request,
            },
            pos: reused as i32,
            reused,
            started: Instant::now(),
            stats: GenStats::default(),
        }
    }

    fn answer(self) {
        let Phase::Generate { decoding, .. } = self.phase else {
            let _ = self
                .reply
                .send(Err("answered before its prompt was read".into()));
            return;
        };
        let (response, generation_time) = decoding.finish();
        let stats = GenStats {
            generated: response.output_tokens,
            generation_time,
            ..self.stats
        };
        let _ = self.reply.send(Ok((response, stats)));
    }

    fn fail(self, reason: String) {
        let _ = self.reply.send(Err(reason));
    }
}

impl Setup {
    fn serve(self, rx: Receiver<Job>) {
        let mut ctx: Option<(LlamaContext<'static>, LlamaBatch)> = None;
        let mut slots: Vec<Option<Active>> = (0..self.slots).map(|_| None).collect();
        // The tokens in each sequence's KV cache, in position order.
        let mut kept: Vec<Vec<LlamaToken>> = vec![Vec::new(); slots.len()];
        let mut waiting: VecDeque<Job> = VecDeque::new();
        let mut open = true;
        loop {
            // Collect calls; block only when there is nothing to decode.
            if slots.iter().all(Option::is_none) && waiting.is_empty() {
                if !open {
                    return;
                }
                match rx.recv() {
                    Ok(job) => waiting.push_back(job),
                    Err(_) => return,
                }
            }
            while open {
                match rx.try_recv() {
                    Ok(job) => waiting.push_back(job),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => open = false,
                }
            }
            // Calls whose caller gave up while queued are answered without decoding.
            let (gone, queued): (VecDeque<Job>, VecDeque<Job>) = waiting
                .drain(..)
                .partition(|job| job.cancel.load(Ordering::Relaxed));
            waiting = queued;
            for job in gone {
                let _ = job.reply.send(Err("cancelled".into()));
            }

            if ctx.is_none() && !waiting.is_empty() {
                match new_context(self.model, self.n_ctx, self.slots, self.threads) {
                    Ok(c) => {
                        let capacity = PREFILL_PER_STEP + self.slots as usize;
                        ctx = Some((c, LlamaBatch::new(capacity, 1)));
                    }
                    Err(e) => {
                        // Every queued call learns why; the next call tries again.
                        for job in waiting.drain(..) {
                            let _ = job.reply.send(Err(e.clone()));
                        }
                        continue;
                    }
                }
            }
            let Some((context, batch)) = ctx.as_mut() else {
                continue;
            };

            // Admit queued calls into free sequences, each into the one whose KV cache
            // shares the longest prefix with its prompt.
            while let Some(job) = waiting.pop_front() {
                let Some((seq, mut keep)) = (0..slots.len())
                    .filter(|&seq| slots[seq].is_none())
                    .map(|seq| match self.reuse_prefix {
                        true => (seq, reusable_prefix(&kept[seq], &job.tokens)),
                        false => (seq, 0),
                    })
                    .max_by_key(|&(seq, keep)| (keep, std::cmp::Reverse(seq)))
                else {
                    // Every sequence is busy: the call waits for the next free one.
                    waiting.push_front(job);
                    break;
                };
                if context
                    .clear_kv_cache_seq(Some(seq as u32), Some(keep as u32), None)
                    .is_err()
                {
                    keep = 0;
                    if context
                        .clear_kv_cache_seq(Some(seq as u32), None, None)
                        .is_err()
                    {
                        kept[seq].clear();
                        let _ = job
                            .reply
                            .send(Err("cannot clear a sequence's KV cache".into()));
                        continue;
                    }
                }
                kept[seq].truncate(keep);
                if self.reuse_prefix {
                    keep = share_prefix(context, &mut kept, seq, keep, &job.tokens);
                }
                slots[seq] = Some(Active::new(job, keep));
            }

            // One decode: a token for every generating sequence, then prompt tokens.
            batch.clear();
            let mut entries: Vec<(usize, Entry)> = Vec::with_capacity(slots.len());
            let mut prefill_left = PREFILL_PER_STEP;
            for generating in [true, false] {
                for (seq, slot) in slots.iter_mut().enumerate() {
                    let Some(active) = slot.take() else { continue };
                    if active.cancel.load(Ordering::Relaxed) {
                        active.fail("cancelled".into());
                        forget(context, &mut kept[seq], seq);
                        continue;
                    }
                    let added = match (&active.phase, generating) {
                        (Phase::Generate { next, .. }, true) => {
                            batch.add(*next, active.pos, &[seq as i32], true).map(|_| {
                                kept[seq].push(*next);
                                Some(Entry::Token(batch.n_tokens() - 1))
                            })
                        }
                        (Phase::Prefill { .. }, false) if prefill_left > 0 => {
                            let from = active.pos as usize;
                            let to = (from + prefill_left).min(active.prompt.len());
                            prefill_left -= to - from;
                            let last = to == active.prompt.len();
                            (from..to)
                                .try_for_each(|i| {
                                    let logits = last && i + 1 == to;
                                    batch.add(active.prompt[i], i as i32, &[seq as i32], logits)
                                })
                                .map(|_| {
                                    kept[seq].extend_from_slice(&active.prompt[from..to]);
                                    Some(if last {
                                        Entry::PromptDone(batch.n_tokens() - 1)
                                    } else {
                                        Entry::PromptPart(to)
                                    })
                                })
                        }
                        _ => Ok(None),
                    };
                    match added {
                        Ok(Some(entry)) => entries.push((seq, entry)),
                        Ok(None) => {}
                        Err(e) => {
                            active.fail(e.to_string());
                            forget(context, &mut kept[seq], seq);
                            continue;
                        }
                    }
                    *slot = Some(active);
                }
            }
            if entries.is_empty() {
                continue;
            }
            if let Err(e) = context.decode(batch) {
                // The KV cache may be half written: fail every sequence in it and start clean.
                let reason = format!("decoding failed: {e}");
                for slot in slots.iter_mut() {
                    if let Some(active) = slot.take() {
                        active.fail(reason.clone());
                    }
                }
                context.clear_kv_cache();
                kept.iter_mut().for_each(Vec::clear);
                continue;
            }
            for (seq, entry) in entries {
                let Some(mut active) = slots[seq].take() else {
                    continue;
                };
                let index = match entry {
                    Entry::PromptPart(to) => {
                        active.pos = to as i32;
                        slots[seq] = Some(active);
                        continue;
                    }
                    Entry::Token(index) => {
                        active.pos += 1;
                        index
                    }
                    Entry::PromptDone(index) => {
                        active.pos = active.prompt.len() as i32;
                        active.stats.prompt_evaluated =
                            (active.prompt.len() - active.reused) as u32;
                        tracing::debug!(
                            model = %self.id,
                            seq,
                            prompt = active.prompt.len(),
                            reused = active.reused,
                            "prompt read"
                        );
                        active.stats.prompt_time = active.started.elapsed();
                        if let Phase::Prefill { request } = &active.phase {
                            let decoding =
                                Decoding::new(self.model, request, active.prompt.len(), self.n_ctx);
                            active.phase = Phase::Generate {
                                decoding,
                                next: LlamaToken(0),
                            };
                        }
                        index
                    }
                };
                let Phase::Generate { decoding, next } = &mut active.phase else {
                    active.fail("internal error: a sequence sampled before its prompt".into());
                    forget(context, &mut kept[seq], seq);
                    continue;
                };
                let step = if decoding.exhausted() {
                    Step::Done
                } else {
                    decoding.step(context, index)
                };
                match step {
                    Step::Feed(token) => {
                        *next = token;
                        slots[seq] = Some(active);
                    }
                    Step::Done => {
                        active.answer();
                        // Without prefix reuse the next call starts clean anyway (admission
                        // clears from position 0); clearing now frees the cells early.
                        if !self.reuse_prefix {
                            forget(context, &mut kept[seq], seq);
                        }
                    }
                }
            }
        }
    }
}

/// Give sequence `seq` (just admitted, holding `kept[seq]`, the first `keep` tokens of
/// `prompt`) a longer prefix of `prompt` held by another sequence, busy or not, if one saves
/// at least [`SHARE_MIN_TOKENS`]: copy that sequence's KV cache (llama.cpp copies whole
/// per-sequence buffers, before the next decode) and cut the copy after the shared prefix.
/// Returns how many prompt tokens `seq` now holds.
fn share_prefix(
    context: &mut LlamaContext<'static>,
    kept: &mut [Vec<LlamaToken>],
    seq: usize,
    keep: usize,
    prompt: &[LlamaToken],
) -> usize {
    let Some((donor, shared)) = (0..kept.len())
        .filter(|&d| d != seq)
        .map(|d| (d, reusable_prefix(&kept[d], prompt)))
        .max_by_key(|&(d, shared)| (shared, std::cmp::Reverse(d)))
    else {
        return keep;
    };
    if shared < keep + SHARE_MIN_TOKENS {
        return keep;
    }
    let copied = context
        .copy_kv_cache_seq(donor as i32, seq as i32, None, None)
        .is_ok()
        && context
            .clear_kv_cache_seq(Some(seq as u32), Some(shared as u32), None)
            .is_ok();
    if !copied {
        // The sequence's own cache is in an unknown state: start it clean.
        forget(context, &mut kept[seq], seq);
        return 0;
    }
    kept[seq] = kept[donor][..shared].to_vec();
    shared
}

/// Empty sequence `seq`'s KV cache and what the engine remembers of it, together.
fn forget(context: &mut LlamaContext<'static>, kept: &mut Vec<LlamaToken>, seq: usize) {
    let _ = context.clear_kv_cache_seq(Some(seq as u32), None, None);
    kept.clear();
}
