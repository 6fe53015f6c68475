//! How per-option scores become one choice.
//!
//! Options are ordered from cheapest to most expensive. Each option has a score `z` (a
//! logit of "this option succeeds"). The deterministic rule takes the first option whose
//! probability `σ(z)` clears the threshold `t`, and the last option when none does.
//!
//! Its stochastic relaxation, used for GRPO rollouts, is a *stop process*: walk the
//! options in order and stop at option `m` with probability `q_m = σ(z_m − logit t)`; the
//! last option always stops. So `π(m) = q_m · Π_{j<m} (1 − q_j)`, which puts most mass on
//! the option the deterministic rule picks, and raising `z_m` moves mass towards `m`
//! exactly as raising its predicted success would.

/// `log σ(x)`, stable for large |x|.
pub fn log_sigmoid(x: f64) -> f64 {
    -softplus(-x)
}

/// `log(1 + e^x)`, stable for large |x|.
pub fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

pub fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-6, 1.0 - 1e-6);
    (p / (1.0 - p)).ln()
}

/// The deterministic rule: the first option with `σ(z) ≥ t`, else the last.
pub fn first_clearing(z: &[f64], threshold: f64) -> usize {
    z.iter()
        .position(|&x| sigmoid(x) >= threshold)
        .unwrap_or(z.len().saturating_sub(1))
}

/// Log-probabilities of the stop process over `z` at threshold `t` (all finite).
pub fn stop_log_probs(z: &[f64], threshold: f64) -> Vec<f64> {
    let shift = logit(threshold);
    let n = z.len();
    let mut out = Vec::with_capacity(n);
    let mut passed = 0.0; // Σ_{j<m} log(1 − q_j)
    for (m, &x) in z.iter().enumerate() {
        let x = x - shift;
        if m + 1 == n {
            out.push(passed);
        } else {
            out.push(passed + log_sigmoid(x));
            passed += log_sigmoid(-x);
        }
    }
    out
}

/// Sample from the stop process with a uniform draw `u ∈ [0, 1)`.
pub fn sample_stop(z: &[f64], threshold: f64, u: f64) -> usize {
    let probs: Vec<f64> = stop_log_probs(z, threshold)
        .into_iter()
        .map(f64::exp)
        .collect();
    let mut acc = 0.0;
    for (m, p) in probs.iter().enumerate() {
        acc += p;
        if u < acc {
            return m;
        }
    }
    z.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn stop_process_is_a_distribution(z in prop::collection::vec(-30.0f64..30.0, 1..6), t in 0.05f64..0.95) {
            let lp = stop_log_probs(&z, t);
            let total: f64 = lp.iter().map(|l| l.exp()).sum();
            prop_assert!((total - 1.0).abs() < 1e-9, "sums to {total}");
            prop_assert!(lp.iter().all(|l| l.is_finite() && *l <= 1e-12));
        }

        #[test]
        fn the_deterministic_choice_is_the_sharpened_stop_process(z in prop::collection::vec(-5.0f64..5.0, 1..6), t in 0.1f64..0.9) {
            // Scaling the margins towards ±∞ concentrates the process on the rule's choice.
            let shift = logit(t);
            let sharp: Vec<f64> = z.iter().map(|x| shift + (x - shift) * 1e4).collect();
            let pick = first_clearing(&z, t);
            prop_assume!(z.iter().all(|x| (sigmoid(*x) - t).abs() > 1e-3));
            let lp = stop_log_probs(&sharp, t);
            prop_assert!(lp[pick].exp() > 0.999);
        }
    }

    #[test]
    fn sampling_follows_the_probabilities() {
        let z = [0.0, 1.0, -1.0];
        let p: Vec<f64> = stop_log_probs(&z, 0.5).iter().map(|l| l.exp()).collect();
        let mut counts = [0usize; 3];
        let mut rng = crate::rng::SplitMix64::new(7);
        for _ in 0..20_000 {
            counts[sample_stop(&z, 0.5, rng.unit())] += 1;
        }
        for m in 0..3 {
            let f = counts[m] as f64 / 20_000.0;
            assert!((f - p[m]).abs() < 0.015, "option {m}: {f} vs {}", p[m]);
        }
    }
}
