//! Logits to what callers read: host copies checked for non-finite values, log-probabilities of
//! chosen tokens, and the most likely tokens of a row.

use crate::backend::ModelBackend;
use crate::error::{ModelError, Result};
use crate::sampling::log_sum_exp;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};

/// Row-wise `log_softmax(logits)[targets]` on the device; returns host values.
///
/// # Errors
/// [`ModelError::Backend`] when the device copy fails.
pub fn gather_logprobs<B: ModelBackend>(logits: Tensor<B, 2>, targets: &[u32]) -> Result<Vec<f32>> {
    let device = logits.device();
    let idx: Vec<i64> = targets.iter().map(|&t| t as i64).collect();
    let idx = Tensor::<B, 2, Int>::from_data(TensorData::new(idx, [targets.len(), 1]), &device);
    let lp = log_softmax(logits, 1).gather(1, idx);
    lp.into_data()
        .to_vec::<f32>()
        .map_err(|source| ModelError::Backend {
            what: "log-probabilities",
            source,
        })
}

/// Host copy of a `[rows, vocab]` logits tensor.
///
/// # Errors
/// [`ModelError::NonFinite`] when a logit is NaN or infinite.
pub fn logits_to_host<B: ModelBackend>(logits: Tensor<B, 2>) -> Result<Vec<f32>> {
    let host = logits
        .into_data()
        .to_vec::<f32>()
        .map_err(|source| ModelError::Backend {
            what: "logits",
            source,
        })?;
    match host.iter().find(|x| !x.is_finite()) {
        Some(&value) => Err(ModelError::NonFinite {
            what: "logit",
            value,
        }),
        None => Ok(host),
    }
}

/// The `k` largest entries of a logits row as `(token, log-probability)`, most likely first.
pub fn top_logprobs(row: &[f32], k: usize) -> Vec<(u32, f32)> {
    let lse = log_sum_exp(row);
    let mut idx: Vec<usize> = (0..row.len()).collect();
    let k = k.min(row.len());
    if k == 0 {
        return vec![];
    }
    let cmp = |a: &usize, b: &usize| row[*b].total_cmp(&row[*a]).then(a.cmp(b));
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, cmp);
        idx.truncate(k);
    }
    idx.sort_unstable_by(cmp);
    idx.into_iter()
        .map(|t| (t as u32, (row[t] as f64 - lse) as f32))
        .collect()
}
