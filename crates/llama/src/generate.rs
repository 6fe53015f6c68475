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

#[allow(clippy::too_many_arguments)]
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

    let mut sampler = match request.sampling {
        Sampling::Greedy => LlamaSampler::greedy(),
        Sampling::Temperature { temperature, seed } => LlamaSampler::chain_simple([
            LlamaSampler::temp(temperature.max(1e-3)),
            // llama.cpp seeds with 32 bits; fold the high half in so distinct u64 seeds differ.
            LlamaSampler::dist((seed ^ (seed >> 32)) as u32),
        ]),
    };

    let vocab = model.vocab();
    let budget = request
        .max_tokens
        .min(n_ctx.saturating_sub(tokens.len() as u32));
    let mut out = Utf8Stream::default();
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
        let token = sampler.sample(ctx, logits_index);
        logprobs.push(log_softmax_at(logits, token.0 as usize));
        generated += 1;
        if vocab.is_eog(token) {
            finish = FinishReason::Stop;
            break;
        }
        let before = out.text.len();
        out.push(&vocab.token_to_piece(token, false, None));
        if let Some(cut) = find_stop(&out.text, &request.stop, before) {
            out.text.truncate(cut);
            finish = FinishReason::StopString;
            break;
        }
        if generated % REPETITION_CHECK_EVERY == 0 {
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

/// Natural-log probability of `index` under the softmax of `logits`.
fn log_softmax_at(logits: &[f32], index: usize) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    match logits.get(index) {
        Some(&l) => ((l - max) as f64 - sum.ln()) as f32,
        None => f32::NEG_INFINITY,
    }
}

#[cfg(test)]
mod tests {
    use super::log_softmax_at;

    #[test]
    fn log_softmax_matches_definition() {
        let logits = [1.0f32, 2.0, 3.0];
        let z: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
        for (i, &l) in logits.iter().enumerate() {
            let expect = (l as f64).exp() / z;
            assert!((log_softmax_at(&logits, i).exp() as f64 - expect).abs() < 1e-6);
        }
        assert_eq!(log_softmax_at(&logits, 7), f32::NEG_INFINITY);
    }
}
