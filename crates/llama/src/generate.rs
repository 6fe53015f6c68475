//! The token loop: prompt evaluation (reusing the cached prefix), sampling, log-probabilities,
//! stop strings, repetition cut-off, and the `max_tokens` bound.
//!
//! [`Decoding`] is one sequence's state between decode calls. The single-call path
//! ([`run`]) and the batched engine (`crate::batch`) drive the same `Decoding`, so both stop,
//! sample and account tokens identically.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use r2_pool::repetition::looping_tail;
use r2_pool::{FinishReason, GenRequest, GenResponse, Sampling};

use crate::logits::LogitSummary;
use crate::text::{find_stop, Utf8Stream};

/// How long each phase took, for throughput benchmarks.
#[derive(Debug, Clone, Copy, Default)]
pub struct GenStats {
    /// Prompt tokens actually evaluated (the rest came from the cached prefix).
    pub prompt_evaluated: u32,
    pub prompt_time: Duration,
    pub generated: u32,
    pub generation_time: Duration,
}

/// How often the (cheap, but not free) repetition check runs, in tokens.
const REPETITION_CHECK_EVERY: u32 = 8;

/// What a sequence needs after a sampling step.
pub enum Step {
    /// Feed this token back (at the next position) and sample again.
    Feed(LlamaToken),
    /// The sequence is finished.
    Done,
}

/// One sequence's generation state: sampler, output text, log-probabilities, stop checks.
pub struct Decoding {
    stop: Vec<String>,
    ignore_eos: bool,
    model: &'static LlamaModel,
    sampler: Option<LlamaSampler>,
    out: Utf8Stream,
    piece: Vec<u8>,
    logprobs: Vec<f32>,
    finish: FinishReason,
    generated: u32,
    budget: u32,
    input_tokens: u32,
    started: Instant,
}

impl Decoding {
    /// `prompt_tokens` is the full prompt length; the budget is `max_tokens` bounded by
    /// what is left of the sequence's `n_ctx`.
    pub fn new(
        model: &'static LlamaModel,
        request: &GenRequest,
        prompt_tokens: usize,
        n_ctx: u32,
    ) -> Self {
        // Greedy decoding takes the argmax that the log-probability pass finds anyway (the
        // same choice as llama.cpp's greedy sampler, which would copy the vocabulary once more).
        let sampler = match request.sampling {
            Sampling::Greedy => None,
            Sampling::Temperature { temperature, seed } => Some(LlamaSampler::chain_simple([
                LlamaSampler::temp(temperature.max(1e-3)),
                // llama.cpp seeds with 32 bits; fold the high half in so distinct u64 seeds differ.
                LlamaSampler::dist((seed ^ (seed >> 32)) as u32),
            ])),
        };
        let budget = request
            .max_tokens
            .min(n_ctx.saturating_sub(prompt_tokens as u32));
        Self {
            stop: request.stop.clone(),
            ignore_eos: request.ignore_eos,
            model,
            sampler,
            out: Utf8Stream::default(),
            piece: Vec::with_capacity(64),
            logprobs: Vec::with_capacity(budget as usize),
            finish: FinishReason::Length,
            generated: 0,
            budget,
            input_tokens: prompt_tokens as u32,
            started: Instant::now(),
        }
    }

    /// Whether the budget allows no token at all (a prompt that fills the context).
    pub fn exhausted(&self) -> bool {
        self.generated >= self.budget
    }

    /// Sample from the logits at batch index `logits_index`, append the token, check every
    /// stop condition.
    // `u32::is_multiple_of` needs Rust 1.87; the workspace supports 1.85.
    #[allow(clippy::manual_is_multiple_of)]
    pub fn step(&mut self, ctx: &LlamaContext<'static>, logits_index: i32) -> Step {
        let logits = ctx.get_logits_ith(logits_index);
        let summary = LogitSummary::of(logits);
        let token = match self.sampler.as_mut() {
            Some(sampler) => sampler.sample(ctx, logits_index),
            None => LlamaToken(summary.argmax as i32),
        };
        self.logprobs
            .push(summary.logprob(logits, token.0 as usize));
        self.generated += 1;
        let vocab = self.model.vocab();
        if vocab.is_eog(token) && !self.ignore_eos {
            self.finish = FinishReason::Stop;
            return Step::Done;
        }
        let before = self.out.text.len();
        self.piece.clear();
        vocab.token_to_piece_into(token, &mut self.piece, false, None);
        self.out.push(&self.piece);
        if let Some(cut) = find_stop(&self.out.text, &self.stop, before) {
            self.out.text.truncate(cut);
            self.finish = FinishReason::StopString;
            return Step::Done;
        }
        if !self.ignore_eos && self.generated % REPETITION_CHECK_EVERY == 0 {
            if let Some(keep) = looping_tail(&self.out.text) {
                self.out.text.truncate(keep);
                self.finish = FinishReason::Repetition;
                return Step::Done;
            }
        }
        if self.generated >= self.budget {
            return Step::Done;
        }
        Step::Feed(token)
    }

    /// The response and the time spent generating (since `new`).
    pub fn finish(self) -> (GenResponse, Duration) {
        let response = GenResponse {
            text: self.out.finish(),
            input_tokens: self.input_tokens,
            output_tokens: self.generated,
            token_logprobs: Some(self.logprobs),
            finish: self.finish,
        };
        (response, self.started.elapsed())
    }
}

/// How many leading tokens of `prompt` can stay in a KV cache that holds `cached`: their
/// longest common prefix, less one when it covers the whole prompt, since the last prompt
/// token must be evaluated again to give fresh logits to sample from.
pub(crate) fn reusable_prefix(cached: &[LlamaToken], prompt: &[LlamaToken]) -> usize {
    let common = cached
        .iter()
        .zip(prompt)
        .take_while(|(a, b)| a == b)
        .count();
    common.min(prompt.len().saturating_sub(1))
}

/// One call on a context of its own (sequence 0).
#[allow(clippy::too_many_arguments)]
pub fn run(
    model: &'static LlamaModel,
    ctx: &mut LlamaContext<'static>,
    cached: &mut Vec<LlamaToken>,
    tokens: &[LlamaToken],
    request: &GenRequest,
    n_ctx: u32,
    reuse_prefix: bool,
    cancel: &AtomicBool,
) -> Result<(GenResponse, GenStats), String> {
    let mut stats = GenStats::default();
    let started = Instant::now();

    let mut keep = if reuse_prefix {
        reusable_prefix(cached, tokens)
    } else {
        0
    };
    if ctx
        .clear_kv_cache_seq(Some(0), Some(keep as u32), None)
        .is_err()
        || keep == 0
    {
        ctx.clear_kv_cache();
        keep = 0;
    }
    cached.truncate(keep);

    let n_batch = ctx.n_batch().max(1) as usize;
    let mut batch = LlamaBatch::new(n_batch, 1);
    let rest = &tokens[keep..];
    for (chunk_index, chunk) in rest.chunks(n_batch).enumerate() {
        batch.clear();
        let base = keep + chunk_index * n_batch;
        for (i, &t) in chunk.iter().enumerate() {
            let last = base + i == tokens.len() - 1;
            batch
                .add(t, (base + i) as i32, &[0], last)
                .map_err(|e| e.to_string())?;
        }
        ctx.decode(&mut batch)
            .map_err(|e| format!("prompt evaluation failed: {e}"))?;
        cached.extend_from_slice(chunk);
    }
    let mut logits_index = batch.n_tokens() - 1;
    stats.prompt_evaluated = rest.len() as u32;
    stats.prompt_time = started.elapsed();

    let mut decoding = Decoding::new(model, request, tokens.len(), n_ctx);
    let mut pos = tokens.len() as i32;
    while !decoding.exhausted() {
        if cancel.load(Ordering::Relaxed) {
            return Err("cancelled".into());
        }
        let Step::Feed(token) = decoding.step(ctx, logits_index) else {
            break;
        };
        batch.clear();
        batch
            .add(token, pos, &[0], true)
            .map_err(|e| e.to_string())?;
        ctx.decode(&mut batch)
            .map_err(|e| format!("generation failed: {e}"))?;
        cached.push(token);
        pos += 1;
        logits_index = 0;
    }
    let (response, generation_time) = decoding.finish();
    stats.generated = response.output_tokens;
    stats.generation_time = generation_time;
    Ok((response, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(ids: &[i32]) -> Vec<LlamaToken> {
        ids.iter().map(|&t| LlamaToken(t)).collect()
    }

    #[test]
    fn the_reusable_prefix_leaves_the_last_prompt_token_to_evaluate() {
        // Shared prefix shorter than the prompt: all of it stays.
        assert_eq!(
            reusable_prefix(&toks(&[1, 2, 3, 9]), &toks(&[1, 2, 3, 4, 5])),
            3
        );
        // The cache holds the whole prompt (and more): the last prompt token is read again.
        assert_eq!(reusable_prefix(&toks(&[1, 2, 3, 4]), &toks(&[1, 2, 3])), 2);
        assert_eq!(reusable_prefix(&toks(&[1, 2, 3]), &toks(&[1, 2, 3])), 2);
        // Nothing in common, an empty cache, an empty prompt.
        assert_eq!(reusable_prefix(&toks(&[7, 2]), &toks(&[1, 2])), 0);
        assert_eq!(reusable_prefix(&[], &toks(&[1, 2])), 0);
        assert_eq!(reusable_prefix(&toks(&[1]), &[]), 0);
    }
}
