//! Continuous batching: one context holding several sequences, one thread decoding them.
//!
//! On a CPU, decoding one token of one sequence streams every weight of the model through
//! memory for a handful of multiply-adds; decoding one token for each of several sequences
//! in the same `llama_decode` streams the weights once. A model whose pool entry allows
//! `max_concurrency > 1` therefore gets an [`Engine`]: calls are queued to a thread that
//! owns one context with `slots` sequences (each with the model's full context length),
//! admits a call into a free sequence as soon as one is free (evaluating its prompt), and
//! then advances every active sequence by one token per decode. Each sequence is sampled,
//! stopped and accounted by the same [`Decoding`] as the single-call path.
//!
//! Greedy outputs can differ in the last bits from a call decoded alone (a batch of several
//! tokens takes a different matrix-multiplication kernel than one token), exactly as they can
//! between llama.cpp builds; the call cache keeps whichever was computed first.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use r2_pool::{GenRequest, GenResponse};

use crate::generate::{eval_prompt, Decoding, GenStats, Step};
use crate::{backend, CONTEXT_CREATION};

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
    /// Start the engine thread for `model`: `slots` sequences of `n_ctx` tokens each.
    pub fn start(
        id: &str,
        model: &'static LlamaModel,
        slots: u32,
        n_ctx: u32,
        threads: i32,
    ) -> Result<Self, String> {
        let (jobs, rx) = std::sync::mpsc::channel();
        let setup = Setup {
            model,
            slots: slots.max(1),
            n_ctx,
            threads,
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
    model: &'static LlamaModel,
    slots: u32,
    n_ctx: u32,
    threads: i32,
}

/// A call being decoded in one sequence.
struct Active {
    reply: tokio::sync::oneshot::Sender<Reply>,
    cancel: Arc<AtomicBool>,
    decoding: Decoding,
    /// The token to feed at `pos` in the next decode.
    next: LlamaToken,
    pos: i32,
    stats: GenStats,
}

impl Active {
    fn answer(self) {
        let (response, generated, generation_time) = self.decoding.finish();
        let stats = GenStats {
            generated,
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
    fn context(&self) -> Result<LlamaContext<'static>, String> {
        let n_ctx = self.n_ctx.saturating_mul(self.slots);
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(n_ctx.min(2048))
            .with_n_seq_max(self.slots)
            .with_n_threads(self.threads)
            .with_n_threads_batch(self.threads);
        let backend = backend()?;
        let _guard = CONTEXT_CREATION
            .lock()
            .map_err(|_| "context lock poisoned".to_string())?;
        self.model
            .new_context(backend, params)
            .map_err(|e| format!("cannot create a {}-sequence context: {e}", self.slots))
    }

    fn serve(self, rx: Receiver<Job>) {
        let mut ctx: Option<(LlamaContext<'static>, LlamaBatch)> = None;
        let mut slots: Vec<Option<Active>> = (0..self.slots).map(|_| None).collect();
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
                match self.context() {
                    Ok(c) => {
                        let capacity = c.n_batch().max(self.slots) as usize;
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

            // Admit queued calls into free sequences.
            for (seq, slot) in slots.iter_mut().enumerate() {
                if slot.is_none() {
                    match waiting.pop_front() {
                        Some(job) => *slot = self.admit(context, batch, seq as i32, job),
                        None => break,
                    }
                }
            }

            // One decode advances every active sequence by one token.
            batch.clear();
            let mut order = Vec::with_capacity(slots.len());
            for (seq, slot) in slots.iter_mut().enumerate() {
                let Some(active) = slot.take() else { continue };
                if active.cancel.load(Ordering::Relaxed) {
                    active.fail("cancelled".into());
                    let _ = context.clear_kv_cache_seq(Some(seq as u32), None, None);
                    continue;
                }
                if let Err(e) = batch.add(active.next, active.pos, &[seq as i32], true) {
                    active.fail(e.to_string());
                    let _ = context.clear_kv_cache_seq(Some(seq as u32), None, None);
                    continue;
                }
                order.push(seq);
                *slot = Some(active);
            }
            if order.is_empty() {
                continue;
            }
            if let Err(e) = context.decode(batch) {
                // The KV cache may be half written: fail every sequence in it and start clean.
                let reason = format!("generation failed: {e}");
                for slot in slots.iter_mut() {
                    if let Some(active) = slot.take() {
                        active.fail(reason.clone());
                    }
                }
                context.clear_kv_cache();
                continue;
            }
            for (index, &seq) in order.iter().enumerate() {
                let Some(mut active) = slots[seq].take() else {
                    continue;
                };
                active.pos += 1;
                match active.decoding.step(context, index as i32) {
                    Step::Feed(token) => {
                        active.next = token;
                        slots[seq] = Some(active);
                    }
                    Step::Done => {
                        active.answer();
                        let _ = context.clear_kv_cache_seq(Some(seq as u32), None, None);
                    }
                }
            }
        }
    }

    /// Evaluate a call's prompt into sequence `seq` and sample its first token. Returns the
    /// active sequence, or `None` when the call is already answered (finished or failed).
    fn admit(
        &self,
        ctx: &mut LlamaContext<'static>,
        batch: &mut LlamaBatch,
        seq: i32,
        job: Job,
    ) -> Option<Active> {
        let started = Instant::now();
        let Job {
            tokens,
            request,
            cancel,
            reply,
        } = job;
        let cleared = ctx.clear_kv_cache_seq(Some(seq as u32), None, None).is_ok();
        let evaluated = if cleared {
            eval_prompt(ctx, batch, &tokens, 0, seq, |_| {})
        } else {
            Err("cannot clear the sequence's KV cache".into())
        };
        let logits_index = match evaluated {
            Ok(i) => i,
            Err(e) => {
                let _ = ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
                let _ = reply.send(Err(e));
                return None;
            }
        };
        let mut active = Active {
            reply,
            cancel,
            decoding: Decoding::new(self.model, &request, tokens.len(), self.n_ctx),
            next: LlamaToken(0),
            pos: tokens.len() as i32,
            stats: GenStats {
                prompt_evaluated: tokens.len() as u32,
                prompt_time: started.elapsed(),
                ..GenStats::default()
            },
        };
        if active.decoding.exhausted() {
            active.answer();
        } else {
            match active.decoding.step(ctx, logits_index) {
                Step::Feed(token) => {
                    active.next = token;
                    return Some(active);
                }
                Step::Done => active.answer(),
            }
        }
        let _ = ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
        None
    }
}
