//! How per-option scores become one choice.
//!
//! Options are ordered from cheapest to most expensive. Each option has a score `z` (a
//! logit of "this option succeeds"). The deterministic rule takes the first option whose
//! probability `σ(z)` clears the threshold `t`; when none does, it takes the [`Fallback`]:
//! the last option for steps (the largest model), the option most likely to succeed for
//! routes (the dearest route, decomposing, is not the likeliest to succeed on a weak pool).
//!
//! Its stochastic relaxation, used for GRPO rollouts, is a *stop process*: walk the
//! options in order and stop at option `m` with probability `q_m = σ(z_m − logit t)`.
//! With [`Fallback::Last`] the last option always stops, so
//! `π(m) = q_m · Π_{j<m} (1 − q_j)`; with [`Fallback::MostLikely`] every option may be
//! passed, and the walk that passes all of them (probability `Π_j (1 − q_j)`) lands on
//! the fallback. Either way most mass sits on the option the deterministic rule picks,
//! and raising `z_m` moves mass towards `m` exactly as raising its predicted success
//! would.

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

/// What the rule picks when no option clears the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The last, most expensive option: for steps, the largest model.
    Last,
    /// The option with the highest score (the cheapest among equals): for routes.
    MostLikely,
}

impl Fallback {
    /// The fallback of the route head (`true`) or the step head (`false`).
    pub fn for_head(route_head: bool) -> Self {
        if route_head {
            Fallback::MostLikely
        } else {
            Fallback::Last
        }
    }

    /// The option this fallback picks among `z`.
    pub fn pick(self, z: &[f64]) -> usize {
        match self {
            Fallback::Last => z.len().saturating_sub(1),
            Fallback::MostLikely => most_likely(z),
        }
    }
}

/// The index of the highest score, the first among equals (0 for an empty slice).
pub fn most_likely(z: &[f64]) -> usize {
    let mut best = 0;
    for (m, &x) in z.iter().enumerate() {
        if x > z[best] {
            best = m;
        }
    }
    best
}

/// `log(e^a + e^b)`, stable.
fn log_add_exp(a: f64, b: f64) -> f64 {
    a.max(b) + softplus(-(a - b).abs())
}

/// The deterministic rule: the first option with `σ(z) ≥ t`, else the fallback.
pub fn first_clearing(z: &[f64], threshold: f64, fallback: Fallback) -> usize {
    z.iter()
        .position(|&x| sigmoid(x) >= threshold)
        .unwrap_or_else(|| fallback.pick(z))
}

/// Log-probabilities of the stop process over `z` at threshold `t` (all finite).
pub fn stop_log_probs(z: &[f64], threshold: f64, fallback: Fallback) -> Vec<f64> {
    let shift = logit(threshold);
    let n = z.len();
    let mut out = Vec::with_capacity(n);
    let mut passed = 0.0; // Σ_{j<m} log(1 − q_j)
    for (m, &x) in z.iter().enumerate() {
        let x = x - shift;
        if m + 1 == n && fallback == Fallback::Last {
            out.push(passed);
        } else {
            out.push(passed + log_sigmoid(x));
            passed += log_sigmoid(-x);
        }
    }
    if fallback == Fallback::MostLikely && n > 0 {
        let a = most_likely(z);
        out[a] = log_add_exp(out[a], passed);
    }
    out
}

/// Sample from the stop process with a uniform draw `u ∈ [0, 1)`.
pub fn sample_stop(z: &[f64], threshold: f64, fallback: Fallback, u: f64) -> usize {
    let probs: Vec<f64> = stop_log_probs(z, threshold, fallback)
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

    fn fallback() -> impl Strategy<Value = Fallback> {
        prop_oneof![Just(Fallback::Last), Just(Fallback::MostLikely)]
    }

    proptest! {
        #[test]
        fn stop_process_is_a_distribution(z in prop::collection::vec(-30.0f64..30.0, 1..6), t in 0.05f64..0.95, fb in fallback()) {
            let lp = stop_log_probs(&z, t, fb);
            let total: f64 = lp.iter().map(|l| l.exp()).sum();
            prop_assert!((total - 1.0).abs() < 1e-9, "sums to {total}");
            prop_assert!(lp.iter().all(|l| l.is_finite() && *l <= 1e-12));
        }

        #[test]
        fn the_deterministic_choice_is_the_sharpened_stop_process(z in prop::collection::vec(-5.0f64..5.0, 1..6), t in 0.1f64..0.9, fb in fallback()) {
            // Scaling the margins towards ±∞ concentrates the process on the rule's choice.
            let shift = logit(t);
            let sharp: Vec<f64> = z.iter().map(|x| shift + (x - shift) * 1e4).collect();
            let pick = first_clearing(&z, t, fb);
            prop_assume!(z.iter().all(|x| (sigmoid(*x) - t).abs() > 1e-3));
            let lp = stop_log_probs(&sharp, t, fb);
            prop_assert!(lp[pick].exp() > 0.999);
        }
    }

    #[test]
    fn routes_fall_back_to_the_likeliest_option_and_steps_to_the_last() {
        // Nothing clears 0.5; the middle option is the likeliest.
        let z = [-3.0, -0.5, -2.0];
        assert_eq!(first_clearing(&z, 0.5, Fallback::Last), 2);
        assert_eq!(first_clearing(&z, 0.5, Fallback::MostLikely), 1);
        // Something clears: the fallback does not matter.
        let z = [-3.0, 0.5, 2.0];
        assert_eq!(first_clearing(&z, 0.5, Fallback::MostLikely), 1);
        // Ties go to the cheaper option.
        assert_eq!(most_likely(&[-1.0, -1.0, -2.0]), 0);
    }

    #[test]
    fn sampling_follows_the_probabilities() {
        for fb in [Fallback::Last, Fallback::MostLikely] {
            let z = [0.0, 1.0, -1.0];
            let p: Vec<f64> = stop_log_probs(&z, 0.5, fb)
                .iter()
                .map(|l| l.exp())
                .collect();
            let mut counts = [0usize; 3];
            let mut rng = crate::rng::SplitMix64::new(7);
            for _ in 0..20_000 {
                counts[sample_stop(&z, 0.5, fb, rng.unit())] += 1;
            }
            for m in 0..3 {
                let f = counts[m] as f64 / 20_000.0;
                assert!(
                    (f - p[m]).abs() < 0.015,
                    "{fb:?} option {m}: {f} vs {}",
                    p[m]
                );
            }
        }
    }
}
