//! Scoring binary signals: how well a number predicts "the small model's answer is right".
//!
//! The router makes two yes/no decisions (try the small model first; keep its answer), each
//! from a few numbers measured per question. This crate measures such numbers the way the
//! docs report them — held-out ROC-AUC and Brier score — and turns several of them into one
//! calibrated probability with a small L2-regularised logistic regression.
//!
//! Invariants:
//! - Every function takes its data as slices and returns an error (never panics) on
//!   mismatched lengths, non-finite values, or a set with one class only where two are needed.
//! - [`Logistic`] standardises each feature on its training data and stores that scaling, so
//!   a saved model predicts the same probability for the same raw features.
//! - Out-of-fold predictions ([`out_of_fold`]) never score an example with a model fitted on it.

use serde::{Deserialize, Serialize};

pub mod keep;
pub use keep::{KeepFeature, KeepModel, Observed, ProgramOutcome};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SignalsError {
    #[error("{what}: {got} values but {expected} examples")]
    Length {
        what: &'static str,
        got: usize,
        expected: usize,
    },
    #[error("{what} has a value that is not a finite number (example {index})")]
    NotFinite { what: &'static str, index: usize },
    #[error("no examples")]
    Empty,
    #[error("every example is {}: a signal cannot be scored on one class", if *.positive { "positive" } else { "negative" })]
    OneClass { positive: bool },
    #[error("the answer has no {what} to score")]
    Missing { what: &'static str },
    #[error("{folds} folds need at least {folds} examples of each class")]
    TooFewForFolds { folds: usize },
}

fn check_finite(what: &'static str, values: &[f64]) -> Result<(), SignalsError> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(SignalsError::NotFinite { what, index }),
        None => Ok(()),
    }
}

fn check_len(what: &'static str, got: usize, expected: usize) -> Result<(), SignalsError> {
    if got == expected {
        Ok(())
    } else {
        Err(SignalsError::Length {
            what,
            got,
            expected,
        })
    }
}

fn two_classes(labels: &[bool]) -> Result<(usize, usize), SignalsError> {
    if labels.is_empty() {
        return Err(SignalsError::Empty);
    }
    let pos = labels.iter().filter(|&&y| y).count();
    let neg = labels.len() - pos;
    if pos == 0 || neg == 0 {
        return Err(SignalsError::OneClass { positive: pos > 0 });
    }
    Ok((pos, neg))
}

/// ROC-AUC of `scores` for `labels` (true = positive): the probability that a random
/// positive scores above a random negative, ties counting one half.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Result<f64, SignalsError> {
    check_len("scores", scores.len(), labels.len())?;
    check_finite("scores", scores)?;
    let (pos, neg) = two_classes(labels)?;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Mann–Whitney U from mid-ranks (ties share the mean of their ranks).
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let mid_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum_pos += mid_rank * order[i..=j].iter().filter(|&&k| labels[k]).count() as f64;
        i = j + 1;
    }
    let (p, n) = (pos as f64, neg as f64);
    Ok((rank_sum_pos - p * (p + 1.0) / 2.0) / (p * n))
}

/// Mean squared error of probabilities against outcomes (0 perfect, 0.25 a constant 0.5).
pub fn brier(probabilities: &[f64], labels: &[bool]) -> Result<f64, SignalsError> {
    check_len("probabilities", probabilities.len(), labels.len())?;
    check_finite("probabilities", probabilities)?;
    if labels.is_empty() {
        return Err(SignalsError::Empty);
    }
    let sum: f64 = probabilities
        .iter()
        .zip(labels)
        .map(|(p, &y)| (p - f64::from(u8::from(y))).powi(2))
        .sum();
    Ok(sum / labels.len() as f64)
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// L2-regularised logistic regression on standardised features, fitted by Newton's method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Logistic {
    /// Per feature: the training mean and standard deviation (1 where it was constant).
    pub mean: Vec<f64>,
    pub scale: Vec<f64>,
    /// Per standardised feature.
    pub weights: Vec<f64>,
    pub bias: f64,
}

impl Logistic {
    /// Fit on rows of `x` (one row an example, all rows the same width) and `labels`.
    /// `l2` is the penalty on the weights (not the bias); 1.0 is a sensible default for
    /// a few hundred examples.
    pub fn fit(x: &[Vec<f64>], labels: &[bool], l2: f64) -> Result<Self, SignalsError> {
        check_len("feature rows", x.len(), labels.len())?;
        two_classes(labels)?;
        let d = x[0].len();
        for row in x {
            check_len("features in a row", row.len(), d)?;
            check_finite("features", row)?;
        }
        let n = x.len() as f64;
        let mean: Vec<f64> = (0..d)
            .map(|j| x.iter().map(|r| r[j]).sum::<f64>() / n)
            .collect();
        let scale: Vec<f64> = (0..d)
            .map(|j| {
                let var = x.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / n;
                if var > 1e-12 {
                    var.sqrt()
                } else {
                    1.0
                }
            })
            .collect();
        let z: Vec<Vec<f64>> = x
            .iter()
            .map(|r| (0..d).map(|j| (r[j] - mean[j]) / scale[j]).collect())
            .collect();
        // Parameters: weights then bias (index d).
        let mut theta = vec![0.0; d + 1];
        let l2 = l2.max(0.0);
        for _ in 0..50 {
            let mut grad = vec![0.0; d + 1];
            let mut hess = vec![vec![0.0; d + 1]; d + 1];
            for (row, &y) in z.iter().zip(labels) {
                let s = row.iter().zip(&theta).map(|(a, b)| a * b).sum::<f64>() + theta[d];
                let p = sigmoid(s);
                let r = p - f64::from(u8::from(y));
                let w = (p * (1.0 - p)).max(1e-9);
                for a in 0..=d {
                    let xa = if a == d { 1.0 } else { row[a] };
                    grad[a] += r * xa;
                    for b in 0..=d {
                        let xb = if b == d { 1.0 } else { row[b] };
                        hess[a][b] += w * xa * xb;
                    }
                }
            }
            for a in 0..d {
                grad[a] += l2 * theta[a];
                hess[a][a] += l2;
            }
            // A tiny ridge keeps the system solvable for a constant feature or when the
            // classes separate (where the unpenalised optimum is at infinity).
            for (a, row) in hess.iter_mut().enumerate() {
                row[a] += 1e-6;
            }
            let Some(step) = solve(hess, grad) else { break };
            let mut moved = 0.0f64;
            for (t, s) in theta.iter_mut().zip(&step) {
                *t -= s;
                moved = moved.max(s.abs());
            }
            if moved < 1e-9 {
                break;
            }
        }
        let bias = theta.pop().unwrap_or(0.0);
        Ok(Self {
            mean,
            scale,
            weights: theta,
            bias,
        })
    }

    /// The probability of the positive class for one row of raw features.
    pub fn predict(&self, row: &[f64]) -> Result<f64, SignalsError> {
        check_len("features", row.len(), self.weights.len())?;
        check_finite("features", row)?;
        let s: f64 = row
            .iter()
            .enumerate()
            .map(|(j, v)| (v - self.mean[j]) / self.scale[j] * self.weights[j])
            .sum::<f64>()
            + self.bias;
        Ok(sigmoid(s))
    }
}

/// Gaussian elimination with partial pivoting; None when the system is singular.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let (upper, lower) = a.split_at_mut(col + 1);
        let pivot_row = &upper[col];
        for (offset, row) in lower.iter_mut().enumerate() {
            let f = row[col] / pivot_row[col];
            for (x, p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                *x -= f * p;
            }
            b[col + 1 + offset] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// Out-of-fold probabilities: the examples are split into `folds` stratified folds (each
/// class dealt round-robin after a seeded shuffle), and each fold is scored by a model
/// fitted on the others.
pub fn out_of_fold(
    x: &[Vec<f64>],
    labels: &[bool],
    folds: usize,
    seed: u64,
    l2: f64,
) -> Result<Vec<f64>, SignalsError> {
    check_len("feature rows", x.len(), labels.len())?;
    let (pos, neg) = two_classes(labels)?;
    let folds = folds.max(2);
    if pos < folds || neg < folds {
        return Err(SignalsError::TooFewForFolds { folds });
    }
    let mut order: Vec<usize> = (0..x.len()).collect();
    shuffle(&mut order, seed);
    let mut fold_of = vec![0; x.len()];
    let (mut next_pos, mut next_neg) = (0, 0);
    for &i in &order {
        let next = if labels[i] {
            &mut next_pos
        } else {
            &mut next_neg
        };
        fold_of[i] = *next % folds;
        *next += 1;
    }
    let mut out = vec![0.0; x.len()];
    for f in 0..folds {
        let (train_x, train_y): (Vec<Vec<f64>>, Vec<bool>) = (0..x.len())
            .filter(|&i| fold_of[i] != f)
            .map(|i| (x[i].clone(), labels[i]))
            .unzip();
        let model = Logistic::fit(&train_x, &train_y, l2)?;
        for i in (0..x.len()).filter(|&i| fold_of[i] == f) {
            out[i] = model.predict(&x[i])?;
        }
    }
    Ok(out)
}

/// Fisher–Yates over SplitMix64: the same order on every platform for a seed.
fn shuffle(v: &mut [usize], seed: u64) {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for i in (1..v.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_orders_and_ties() {
        let y = [false, false, true, true];
        assert_eq!(roc_auc(&[0.1, 0.2, 0.3, 0.4], &y).unwrap(), 1.0);
        assert_eq!(roc_auc(&[0.4, 0.3, 0.2, 0.1], &y).unwrap(), 0.0);
        assert_eq!(roc_auc(&[0.5; 4], &y).unwrap(), 0.5);
        // One of four positive–negative pairs is out of order.
        assert_eq!(roc_auc(&[0.1, 0.3, 0.2, 0.4], &y).unwrap(), 0.75);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert_eq!(
            roc_auc(&[0.1], &[true, false]),
            Err(SignalsError::Length {
                what: "scores",
                got: 1,
                expected: 2
            })
        );
        assert_eq!(
            roc_auc(&[0.1, 0.2], &[true, true]),
            Err(SignalsError::OneClass { positive: true })
        );
        assert!(matches!(
            roc_auc(&[f64::NAN, 0.2], &[true, false]),
            Err(SignalsError::NotFinite { index: 0, .. })
        ));
        assert_eq!(brier(&[], &[]), Err(SignalsError::Empty));
        assert!(Logistic::fit(&[vec![1.0], vec![1.0, 2.0]], &[true, false], 1.0).is_err());
        assert!(out_of_fold(&[vec![1.0], vec![2.0]], &[true, false], 5, 0, 1.0).is_err());
    }

    #[test]
    fn brier_of_a_constant_half_is_a_quarter() {
        assert_eq!(brier(&[0.5, 0.5], &[true, false]).unwrap(), 0.25);
        assert_eq!(brier(&[1.0, 0.0], &[true, false]).unwrap(), 0.0);
    }

    /// Deterministic pseudo-noise in [-1, 1).
    fn noise(i: usize, salt: u64) -> f64 {
        let mut state = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt;
        state = (state ^ (state >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    /// Label depends on feature 0 only; feature 1 is noise on a large scale.
    fn data(n: usize) -> (Vec<Vec<f64>>, Vec<bool>) {
        let x: Vec<Vec<f64>> = (0..n)
            .map(|i| vec![noise(i, 1), 1000.0 * noise(i, 2)])
            .collect();
        let y = x
            .iter()
            .enumerate()
            .map(|(i, r)| r[0] + 0.3 * noise(i, 3) > 0.0)
            .collect();
        (x, y)
    }

    #[test]
    fn logistic_finds_the_feature_that_carries_the_label() {
        let (x, y) = data(400);
        let m = Logistic::fit(&x, &y, 1.0).unwrap();
        assert!(m.weights[0] > 2.0, "{m:?}");
        assert!(m.weights[1].abs() < 0.5, "{m:?}");
        let p = out_of_fold(&x, &y, 5, 7, 1.0).unwrap();
        let auc = roc_auc(&p, &y).unwrap();
        assert!(auc > 0.9, "held-out AUC {auc}");
        let b = brier(&p, &y).unwrap();
        assert!(b < 0.15, "held-out Brier {b}");
        // Noise alone predicts nothing held out.
        let noise_only: Vec<Vec<f64>> = x.iter().map(|r| vec![r[1]]).collect();
        let p = out_of_fold(&noise_only, &y, 5, 7, 1.0).unwrap();
        let auc = roc_auc(&p, &y).unwrap();
        assert!((0.35..0.65).contains(&auc), "noise AUC {auc}");
    }

    #[test]
    fn separable_data_and_constant_features_stay_finite() {
        let x = vec![
            vec![0.0, 5.0],
            vec![1.0, 5.0],
            vec![2.0, 5.0],
            vec![3.0, 5.0],
        ];
        let y = [false, false, true, true];
        let m = Logistic::fit(&x, &y, 0.0).unwrap();
        for row in &x {
            assert!(m.predict(row).unwrap().is_finite());
        }
        assert!(m.predict(&[3.0, 5.0]).unwrap() > m.predict(&[0.0, 5.0]).unwrap());
    }

    #[test]
    fn a_saved_model_predicts_the_same() {
        let (x, y) = data(100);
        let m = Logistic::fit(&x, &y, 1.0).unwrap();
        let back: Logistic = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back.predict(&x[3]).unwrap(), m.predict(&x[3]).unwrap());
    }

    #[test]
    fn folds_are_stratified_and_seeded() {
        let (x, y) = data(60);
        let a = out_of_fold(&x, &y, 3, 1, 1.0).unwrap();
        let b = out_of_fold(&x, &y, 3, 1, 1.0).unwrap();
        assert_eq!(a, b);
    }
}
