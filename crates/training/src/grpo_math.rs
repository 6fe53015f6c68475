//! The arithmetic of GRPO, in plain f64 so it can be checked by property tests; the
//! training loop builds the same formulas from tensors and is tested against these.

/// Group-relative advantages: `(r − mean) / (std + eps)` within one question's group.
/// A group whose rewards are all equal carries no signal and gets zeros.
pub fn group_advantages(rewards: &[f64]) -> Vec<f64> {
    let n = rewards.len();
    if n == 0 {
        return Vec::new();
    }
    let mean = rewards.iter().sum::<f64>() / n as f64;
    let var = rewards.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n as f64;
    let std = var.sqrt();
    if std < 1e-9 {
        return vec![0.0; n];
    }
    rewards.iter().map(|r| (r - mean) / (std + 1e-6)).collect()
}

/// PPO's clipped surrogate for one action (to be maximised):
/// `min(ρ·A, clip(ρ, 1−ε, 1+ε)·A)` with `ρ = exp(logp_new − logp_old)`.
pub fn clipped_surrogate(logp_new: f64, logp_old: f64, advantage: f64, eps: f64) -> f64 {
    let ratio = (logp_new - logp_old).exp();
    let clipped = ratio.clamp(1.0 - eps, 1.0 + eps);
    (ratio * advantage).min(clipped * advantage)
}

/// KL(π ‖ π_ref) between two categorical distributions given as log-probabilities.
pub fn kl(logp: &[f64], logp_ref: &[f64]) -> f64 {
    logp.iter()
        .zip(logp_ref)
        .map(|(a, b)| a.exp() * (a - b))
        .sum()
}

/// Entropy (nats) of a categorical distribution given as log-probabilities.
pub fn entropy(logp: &[f64]) -> f64 {
    -logp.iter().map(|a| a.exp() * a).sum::<f64>()
}

/// The reward of one rollout: correctness minus λ times its cost relative to running
/// every step on the largest model.
pub fn reward(correct: bool, cost: f64, cost_all_largest: f64, lambda: f64) -> f64 {
    let rel = if cost_all_largest > 0.0 {
        cost / cost_all_largest
    } else {
        0.0
    };
    f64::from(u8::from(correct)) - lambda * rel
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn advantages_are_centred_and_scaled(r in prop::collection::vec(-5.0f64..5.0, 2..16)) {
            let a = group_advantages(&r);
            prop_assert_eq!(a.len(), r.len());
            let mean: f64 = a.iter().sum::<f64>() / a.len() as f64;
            prop_assert!(mean.abs() < 1e-6);
            let var: f64 = a.iter().map(|x| x * x).sum::<f64>() / a.len() as f64;
            // Unit variance unless the group is constant (then all zeros).
            prop_assert!((var - 1.0).abs() < 1e-3 || a.iter().all(|x| *x == 0.0));
            // Order is preserved: a better reward never gets a smaller advantage.
            for i in 0..r.len() { for j in 0..r.len() {
                if r[i] > r[j] { prop_assert!(a[i] >= a[j]); }
            }}
        }

        #[test]
        fn clipping_removes_the_incentive_beyond_the_trust_region(
            old in -3.0f64..0.0, delta in -2.0f64..2.0, adv in -3.0f64..3.0, eps in 0.05f64..0.4
        ) {
            let new = old + delta;
            let s = clipped_surrogate(new, old, adv, eps);
            let ratio = delta.exp();
            // Never more optimistic than the unclipped objective.
            prop_assert!(s <= ratio * adv + 1e-12);
            // Past the clip in the advantage's direction the objective is flat.
            if adv > 0.0 && ratio > 1.0 + eps {
                prop_assert!((s - (1.0 + eps) * adv).abs() < 1e-9);
                let further = clipped_surrogate(new + 0.5, old, adv, eps);
                prop_assert!((further - s).abs() < 1e-9);
            }
            if adv < 0.0 && ratio < 1.0 - eps {
                prop_assert!((s - (1.0 - eps) * adv).abs() < 1e-9);
            }
            // At ratio 1 it is the plain advantage.
            prop_assert!((clipped_surrogate(old, old, adv, eps) - adv).abs() < 1e-12);
        }

        #[test]
        fn kl_is_non_negative_and_zero_only_at_equality(
            a in prop::collection::vec(-4.0f64..4.0, 2..6), b in prop::collection::vec(-4.0f64..4.0, 2..6)
        ) {
            let n = a.len().min(b.len());
            let norm = |v: &[f64]| { let m = v.iter().cloned().fold(f64::MIN, f64::max);
                let lse = m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
                v.iter().map(|x| x - lse).collect::<Vec<_>>() };
            let (p, q) = (norm(&a[..n]), norm(&b[..n]));
            prop_assert!(kl(&p, &q) >= -1e-12);
            prop_assert!(kl(&p, &p).abs() < 1e-12);
        }

        #[test]
        fn entropy_lies_between_zero_and_that_of_the_uniform_choice(
            a in prop::collection::vec(-6.0f64..6.0, 2..6)
        ) {
            let m = a.iter().cloned().fold(f64::MIN, f64::max);
            let lse = m + a.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
            let p: Vec<f64> = a.iter().map(|x| x - lse).collect();
            let n = p.len() as f64;
            prop_assert!(entropy(&p) >= -1e-12);
            prop_assert!(entropy(&p) <= n.ln() + 1e-9);
            prop_assert!((entropy(&vec![-n.ln(); p.len()]) - n.ln()).abs() < 1e-12);
        }
    }

    #[test]
    fn reward_trades_correctness_against_relative_cost() {
        assert_eq!(reward(true, 0.0, 2.0, 0.5), 1.0);
        assert!((reward(true, 1.0, 2.0, 0.5) - 0.75).abs() < 1e-12);
        assert!((reward(false, 2.0, 2.0, 0.5) + 0.5).abs() < 1e-12);
        // A free pool (api profile, local models only) has no cost term.
        assert_eq!(reward(true, 0.0, 0.0, 0.5), 1.0);
    }
}
