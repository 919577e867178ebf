//! The runner of a real [`Llama`] in burn: a KV cache of the engine's size on the model's device;
//! scoring rows are reduced to one log-probability on the device (`log_softmax` + `gather`), and only
//! the rows that need full logits are copied to the host.

use super::{ModelRunner, RowOutput, RunnerSpec};
use crate::error::{EngineError, Result};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};
use llm_auction_model::Llama;
use llm_auction_model::backend::ModelBackend;
use llm_auction_model::batch::ForwardBatch;
use llm_auction_model::kv::KvCache;
use llm_auction_model::logits::logits_to_host;

/// Runs forward passes of a borrowed model.
pub struct BurnRunner<'m, B: ModelBackend> {
    model: &'m Llama<B>,
    cache: Option<KvCache<B>>,
}

impl<'m, B: ModelBackend> BurnRunner<'m, B> {
    /// A runner for `model` (its cache is allocated by the engine through [`ModelRunner::init_cache`]).
    pub fn new(model: &'m Llama<B>) -> Self {
        Self { model, cache: None }
    }
}

fn int1<B: ModelBackend>(v: Vec<i64>, device: &B::Device) -> Tensor<B, 1, Int> {
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [n]), device)
}

impl<B: ModelBackend> ModelRunner for BurnRunner<'_, B> {
    fn spec(&self) -> RunnerSpec {
        let c = self.model.config();
        RunnerSpec {
            vocab_size: c.vocab_size,
            max_position: c.max_position,
        }
    }

    fn init_cache(&mut self, num_slots: usize) -> Result<()> {
        self.cache = Some(self.model.new_cache(num_slots)?);
        Ok(())
    }

    fn forward(&mut self, batch: &ForwardBatch, targets: &[Option<u32>]) -> Result<Vec<RowOutput>> {
        let cache = self
            .cache
            .as_mut()
            .ok_or_else(|| EngineError::Internal("init_cache was not called".into()))?;
        if targets.len() != batch.logits_rows.len() {
            return Err(EngineError::Internal("one target per logits row".into()));
        }
        let logits = self.model.forward(batch, cache)?;
        let device = self.model.device();
        let vocab = self.model.config().vocab_size;
        let (full, scored): (Vec<usize>, Vec<usize>) =
            (0..targets.len()).partition(|&k| targets[k].is_none());
        let mut out: Vec<Option<RowOutput>> = vec![None; targets.len()];
        if !scored.is_empty() {
            let rows = logits.clone().select(
                0,
                int1::<B>(scored.iter().map(|&k| k as i64).collect(), device),
            );
            let t: Vec<i64> = scored
                .iter()
                .map(|&k| targets[k].unwrap_or(0) as i64)
                .collect();
            let idx = Tensor::<B, 2, Int>::from_data(TensorData::new(t, [scored.len(), 1]), device);
            let lp: Vec<f32> = log_softmax(rows, 1)
                .gather(1, idx)
                .into_data()
                .to_vec()
                .map_err(|source| {
                    EngineError::Model(llm_auction_model::ModelError::Backend {
                        what: "log-probabilities",
                        source,
                    })
                })?;
            for (j, &k) in scored.iter().enumerate() {
                out[k] = Some(RowOutput::Logprob(lp[j]));
            }
        }
        if !full.is_empty() {
            let rows = if scored.is_empty() {
                logits
            } else {
                logits.select(
                    0,
                    int1::<B>(full.iter().map(|&k| k as i64).collect(), device),
                )
            };
            let host = logits_to_host(rows)?;
            for (j, &k) in full.iter().enumerate() {
                out[k] = Some(RowOutput::Logits(host[j * vocab..(j + 1) * vocab].to_vec()));
            }
        }
        Ok(out
            .into_iter()
            .map(|o| o.unwrap_or(RowOutput::Logprob(f32::NAN)))
            .collect())
    }
}
