//! The token loop: prompt evaluation (reusing the cached prefix), sampling, log-probabilities,
//! stop strings, repetition cut-off, and the `max_tokens` bound.

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

// `u32::is_multiple_of` needs Rust 1.87; the workspace supports 1.85.
#[allow(clippy::too_many_arguments, clippy::manual_is_multiple_of)]
pub fn run(
    model: &LlamaModel,
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

    // Reuse the KV cache for the longest common prefix; always evaluate at least one
    // token so there are fresh logits to sample from.
    let mut keep = if reuse_prefix {
        cached
            .iter()
            .zip(tokens)
            .take_while(|(a, b)| a == b)
            .count()
    } else {
        0
    };
    keep = keep.min(tokens.len().saturating_sub(1));
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
    stats.prompt_evaluated = rest.len() as u32;
    stats.prompt_time = started.elapsed();

    // Greedy decoding takes the argmax that the log-probability pass finds anyway (the same
    // choice as llama.cpp's greedy sampler, which would copy the vocabulary once more).
    let mut sampler = match request.sampling {
        Sampling::Greedy => None,
        Sampling::Temperature { temperature, seed } => Some(LlamaSampler::chain_simple([
            LlamaSampler::temp(temperature.max(1e-3)),
            // llama.cpp seeds with 32 bits; fold the high half in so distinct u64 seeds differ.
            LlamaSampler::dist((seed ^ (seed >> 32)) as u32),
        ])),
    };

    let vocab = model.vocab();
    let budget = request
        .max_tokens
        .min(n_ctx.saturating_sub(tokens.len() as u32));
    let mut out = Utf8Stream::default();
    let mut piece = Vec::with_capacity(64);
    let mut logprobs = Vec::with_capacity(budget as usize);
    let mut finish = FinishReason::Length;
    let mut logits_index = batch.n_tokens() - 1;
    let mut pos = tokens.len() as i32;
    let gen_start = Instant::now();
    let mut generated = 0u32;
    while generated < budget {
        if cancel.load(Ordering::Relaxed) {
            return Err("cancelled".into());
        }
        let logits = ctx.get_logits_ith(logits_index);
        let summary = LogitSummary::of(logits);
        let token = match sampler.as_mut() {
            Some(sampler) => sampler.sample(ctx, logits_index),
            None => LlamaToken(summary.argmax as i32),
        };
        logprobs.push(summary.logprob(logits, token.0 as usize));
        generated += 1;
        if vocab.is_eog(token) && !request.ignore_eos {
            finish = FinishReason::Stop;
            break;
        }
        let before = out.text.len();
        piece.clear();
        vocab.token_to_piece_into(token, &mut piece, false, None);
        out.push(&piece);
        if let Some(cut) = find_stop(&out.text, &request.stop, before) {
            out.text.truncate(cut);
            finish = FinishReason::StopString;
            break;
        }
        if !request.ignore_eos && generated % REPETITION_CHECK_EVERY == 0 {
            if let Some(keep) = looping_tail(&out.text) {
                out.text.truncate(keep);
                finish = FinishReason::Repetition;
                break;
            }
        }
        if generated == budget {
            break;
        }
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
    stats.generated = generated;
    stats.generation_time = gen_start.elapsed();

    let response = GenResponse {
        text: out.finish(),
        input_tokens: tokens.len() as u32,
        output_tokens: generated,
        token_logprobs: Some(logprobs),
        finish,
    };
    Ok((response, stats))
}
