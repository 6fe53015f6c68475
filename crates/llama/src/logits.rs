//! Per-token work on the logits: the greedy choice and the log-probability of the chosen
//! token. It runs once per generated token over the whole vocabulary (152k entries for
//! Qwen2.5), so it is written to vectorise: a lane-wise maximum, then a sum of
//! `exp(logit - max)` with a branch-free `exp`. The straightforward version (scalar
//! `f32::max` fold, then `f64::exp` per entry) took about a millisecond per token on the
//! benchmark machine, a few percent of a small model's generation time; llama.cpp's greedy
//! sampler also copies the whole vocabulary into a fresh candidate array per call.

/// Lanes of the vectorisable loops: 16 × f32 fills one AVX-512 or two AVX2 registers.
const LANES: usize = 16;
/// Elements summed in `f32` lanes before the partial sums are moved to `f64`: bounds the
/// rounding error of long sums without slowing the inner loop.
const BLOCK: usize = 1024;

/// The maximum logit, the first index holding it (llama.cpp's greedy choice: it keeps the
/// first of equal maxima), and `ln Σ exp(logit - max)`.
#[derive(Debug, Clone, Copy)]
pub struct LogitSummary {
    pub max: f32,
    pub argmax: usize,
    pub log_sum: f64,
}

impl LogitSummary {
    pub fn of(logits: &[f32]) -> Self {
        let max = max_of(logits);
        let argmax = logits.iter().position(|&l| l == max).unwrap_or(0);
        let log_sum = sum_exp(logits, max).ln();
        Self {
            max,
            argmax,
            log_sum,
        }
    }

    /// Natural-log probability of `index` under the softmax of the logits.
    pub fn logprob(&self, logits: &[f32], index: usize) -> f32 {
        match logits.get(index) {
            Some(&l) => ((l - self.max) as f64 - self.log_sum) as f32,
            None => f32::NEG_INFINITY,
        }
    }
}

fn max_of(logits: &[f32]) -> f32 {
    let chunks = logits.chunks_exact(LANES);
    let rest = chunks.remainder();
    let mut lanes = [f32::NEG_INFINITY; LANES];
    for c in chunks {
        for i in 0..LANES {
            // Not `f32::max`: its NaN rules keep the loop from vectorising. A NaN logit
            // is skipped either way.
            lanes[i] = if c[i] > lanes[i] { c[i] } else { lanes[i] };
        }
    }
    lanes
        .iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m })
}

/// `Σ exp(logit - max)`.
fn sum_exp(logits: &[f32], max: f32) -> f64 {
    let mut total = 0.0f64;
    for block in logits.chunks(BLOCK) {
        let chunks = block.chunks_exact(LANES);
        let rest = chunks.remainder();
        let mut lanes = [0.0f32; LANES];
        for c in chunks {
            for i in 0..LANES {
                lanes[i] += exp_approx(c[i] - max);
            }
        }
        total += lanes.iter().map(|&x| x as f64).sum::<f64>();
        total += rest
            .iter()
            .map(|&x| exp_approx(x - max) as f64)
            .sum::<f64>();
    }
    total
}

/// `exp(x)` for `x <= 0`, branch-free so loops over it vectorise; relative error below
/// 3e-7. Arguments under -87 (where `exp` leaves the normal range) are treated as -87:
/// their terms (< 2e-38 each) cannot move a sum that contains `exp(0) = 1`.
#[inline(always)]
fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two (Cody–Waite): k · LN2_HI is exact for the k that occur here.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5 · 2^23 rounds to an integer, which then sits in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = if x < -87.0 { -87.0 } else { x };
    let t = x * LOG2E + ROUND;
    let k = t - ROUND;
    let n = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = (x - k * LN2_HI) - k * LN2_LO;
    // exp(r) on |r| <= ln(2)/2: Taylor series to degree 7.
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r / 5040.0))))));
    p * f32::from_bits(((n + 127) << 23) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, in f64.
    fn reference(logits: &[f32], index: usize) -> f64 {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
        logits[index] as f64 - max - sum.ln()
    }

    /// Deterministic pseudo-random logits in roughly [-scale, scale].
    fn logits(n: usize, scale: f32, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }

    #[test]
    fn exp_approx_is_accurate() {
        let mut x = -87.0f32;
        while x <= 0.0 {
            let (got, want) = (exp_approx(x) as f64, (x as f64).exp());
            assert!(
                ((got - want) / want).abs() < 3e-7,
                "x={x} got={got} want={want}"
            );
            x += 0.0137;
        }
        assert_eq!(exp_approx(0.0), 1.0);
        assert!(exp_approx(f32::NEG_INFINITY) < 1e-37);
    }

    #[test]
    fn logprobs_match_the_definition() {
        // Small and vocabulary-sized inputs, lengths that are not multiples of the lanes.
        for (n, scale, seed) in [
            (3, 2.0, 1),
            (17, 5.0, 2),
            (49_157, 20.0, 3),
            (151_937, 30.0, 4),
        ] {
            let l = logits(n, scale, seed);
            let s = LogitSummary::of(&l);
            for i in [0, n / 3, n - 1, s.argmax] {
                let (got, want) = (s.logprob(&l, i) as f64, reference(&l, i));
                assert!(
                    (got - want).abs() < 1e-4 + want.abs() * 1e-5,
                    "n={n} i={i}: {got} vs {want}"
                );
            }
            assert_eq!(s.logprob(&l, n), f32::NEG_INFINITY);
        }
    }

    #[test]
    fn argmax_is_the_first_maximum_like_llama_cpp_greedy() {
        let mut l = logits(1000, 5.0, 9);
        l[700] = 9.0;
        l[123] = 9.0;
        l[999] = 8.0;
        let s = LogitSummary::of(&l);
        assert_eq!((s.argmax, s.max), (123, 9.0));
        let small = [1.0f32, 3.0, 3.0];
        assert_eq!(LogitSummary::of(&small).argmax, 1);
    }

    #[test]
    fn masked_and_nan_logits_do_not_break_it() {
        let l = [f32::NEG_INFINITY, 0.5, f32::NEG_INFINITY, 2.0];
        let s = LogitSummary::of(&l);
        assert_eq!(s.argmax, 3);
        assert!(s.logprob(&l, 0) < -80.0);
        let want = (2.0f64.exp() / (0.5f64.exp() + 2.0f64.exp())).ln();
        assert!((s.logprob(&l, 3) as f64 - want).abs() < 1e-6);
        let with_nan = [1.0f32, f32::NAN, 4.0];
        assert_eq!(LogitSummary::of(&with_nan).argmax, 2);
    }
}
