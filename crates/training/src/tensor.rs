//! Tensor pieces shared by SFT and GRPO: masked binary cross-entropy, the stop process's
//! log-probabilities, and conversions between rows, tensors and scalars.
//!
//! Invariant: each formula is the tensor form of its f64 counterpart in
//! [`r2_router::choice`] (checked below), and stays finite for large logits.

use candle_core::{DType, Device, Tensor};
use r2_router::choice::{logit, Fallback};

use crate::TrainingError;

/// `log(1 + e^x)` elementwise, stable.
pub fn softplus(x: &Tensor) -> Result<Tensor, TrainingError> {
    let pos = x.relu()?;
    let tail = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    Ok((pos + tail)?)
}

/// Mean binary cross-entropy with logits over the entries where `mask` is 1.
pub fn masked_bce(z: &Tensor, y: &Tensor, mask: &Tensor) -> Result<Tensor, TrainingError> {
    let per = (softplus(z)? - (y * z)?)?;
    let total = (per * mask)?.sum_all()?;
    let count = mask.sum_all()?.maximum(1.0)?;
    Ok(total.div(&count)?)
}

/// Log-probabilities of the stop process (see [`r2_router::choice`]) for a batch of logit
/// rows `z` (batch × n), with `x = z − logit(t)`:
/// `log π(m) = log σ(x_m)·[m < n−1] + Σ_{j<m} log σ(−x_j)` for [`Fallback::Last`];
/// for [`Fallback::MostLikely`] every option has its `log σ(x_m)` term and the row's
/// likeliest option also receives the all-passed mass `Σ_j log σ(−x_j)` (log-added). The
/// likeliest option is chosen on the current values, outside the gradient, as in the
/// rule itself.
pub fn stop_log_probs(
    z: &Tensor,
    threshold: f64,
    fallback: Fallback,
) -> Result<Tensor, TrainingError> {
    let n = z.dim(1)?;
    let x = (z - logit(threshold))?;
    let ls_pos = softplus(&x.neg()?)?.neg()?;
    let ls_neg = softplus(&x)?.neg()?;
    let mut upper = vec![0f32; n * n];
    for j in 0..n {
        for m in (j + 1)..n {
            upper[j * n + m] = 1.0;
        }
    }
    let upper = Tensor::from_vec(upper, (n, n), &Device::Cpu)?;
    let passed = ls_neg.matmul(&upper)?;
    match fallback {
        Fallback::Last => {
            let mut not_last = vec![1f32; n];
            not_last[n - 1] = 0.0;
            let not_last = Tensor::from_vec(not_last, n, &Device::Cpu)?;
            Ok((passed + ls_pos.broadcast_mul(&not_last)?)?)
        }
        Fallback::MostLikely => {
            let walk = (passed + ls_pos)?;
            let all_passed = ls_neg.sum_keepdim(1)?.broadcast_as(walk.shape())?;
            // log(e^a + e^b) = max(a, b) + softplus(−|a − b|)
            let added =
                (walk.maximum(&all_passed)? + softplus(&(&walk - &all_passed)?.abs()?.neg()?)?)?;
            let rows = z.to_dtype(DType::F64)?.to_vec2::<f64>()?;
            let best: Vec<usize> = rows
                .iter()
                .map(|r| r2_router::choice::most_likely(r))
                .collect();
            let mask = one_hot(&best, n)?;
            Ok((&walk + (mask * (added - &walk)?)?)?)
        }
    }
}

/// One-hot rows for chosen indices.
pub fn one_hot(chosen: &[usize], n: usize) -> Result<Tensor, TrainingError> {
    let mut v = vec![0f32; chosen.len() * n];
    for (r, &c) in chosen.iter().enumerate() {
        v[r * n + c.min(n - 1)] = 1.0;
    }
    Ok(Tensor::from_vec(v, (chosen.len(), n), &Device::Cpu)?)
}

pub fn column(values: &[f64]) -> Result<Tensor, TrainingError> {
    let v: Vec<f32> = values.iter().map(|x| *x as f32).collect();
    Ok(Tensor::from_vec(v, values.len(), &Device::Cpu)?)
}

pub fn scalar(t: &Tensor) -> Result<f64, TrainingError> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_stop_process_matches_the_reference() {
        let rows = vec![
            vec![0.3f32, -1.2, 2.0],
            vec![-4.0, 5.0, 0.0],
            vec![-3.0, -0.5, -2.0],
        ];
        let z = r2_router::net::to_tensor(&rows).unwrap();
        for (t, fb) in [0.3, 0.5, 0.8]
            .into_iter()
            .flat_map(|t| [(t, Fallback::Last), (t, Fallback::MostLikely)])
        {
            let got = stop_log_probs(&z, t, fb)
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec2::<f64>()
                .unwrap();
            for (r, row) in rows.iter().enumerate() {
                let zf: Vec<f64> = row.iter().map(|x| *x as f64).collect();
                let want = r2_router::choice::stop_log_probs(&zf, t, fb);
                for m in 0..3 {
                    assert!(
                        (got[r][m] - want[m]).abs() < 1e-4,
                        "t={t} {fb:?} row {r} m {m}: {} vs {}",
                        got[r][m],
                        want[m]
                    );
                }
            }
        }
    }

    #[test]
    fn masked_bce_ignores_masked_entries() {
        let z = r2_router::net::to_tensor(&[vec![0.0f32, 100.0]]).unwrap();
        let y = r2_router::net::to_tensor(&[vec![1.0f32, 0.0]]).unwrap();
        let only_first = r2_router::net::to_tensor(&[vec![1.0f32, 0.0]]).unwrap();
        let l = scalar(&masked_bce(&z, &y, &only_first).unwrap()).unwrap();
        assert!((l - std::f64::consts::LN_2).abs() < 1e-5);
    }
}
