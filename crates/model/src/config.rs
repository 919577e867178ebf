//! Llama hyper-parameters, read from a Hugging Face `config.json` (`LlamaForCausalLM` fields) or from
//! GGUF metadata (`llama.*` keys), and validated once.

use crate::error::{ModelError, Result};
use serde::Deserialize;
use std::path::Path;

/// The architecture parameters of a Llama-family decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Model width `d`.
    pub hidden_size: usize,
    /// SwiGLU inner width.
    pub intermediate_size: usize,
    /// Number of decoder blocks.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (`< num_heads` for grouped-query attention).
    pub num_kv_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// RoPE base `θ`.
    pub rope_theta: f32,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f32,
    /// Longest supported context (positions are `0..max_position`).
    pub max_position: usize,
    /// Whether the LM head reuses the token embedding.
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence token, if any.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence tokens (generation stops at any of them).
    pub eos_token_ids: Vec<u32>,
}

#[derive(Deserialize)]
struct HfConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    #[serde(default = "default_theta")]
    rope_theta: f32,
    #[serde(default = "default_eps")]
    rms_norm_eps: f32,
    #[serde(default = "default_max_pos")]
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    bos_token_id: Option<u32>,
    eos_token_id: Option<serde_json::Value>,
    architectures: Option<Vec<String>>,
    hidden_act: Option<String>,
    rope_scaling: Option<serde_json::Value>,
}

fn default_theta() -> f32 {
    10_000.0
}
fn default_eps() -> f32 {
    1e-6
}
fn default_max_pos() -> usize {
    2048
}

/// The end-of-sequence ids of a `config.json` or `generation_config.json` `eos_token_id` field:
/// absent, null, one integer or a list of integers, each fitting in `u32` (checked against the
/// vocabulary by [`LlamaConfig::validate`]).
///
/// # Errors
/// A one-line message naming `eos_token_id`.
pub fn eos_ids(value: Option<&serde_json::Value>) -> std::result::Result<Vec<u32>, String> {
    use serde_json::Value;
    let id = |x: &Value| x.as_u64().and_then(|x| u32::try_from(x).ok());
    match value {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(v)) => v
            .iter()
            .map(id)
            .collect::<Option<Vec<u32>>>()
            .ok_or_else(|| format!("eos_token_id {value:?} must hold integers below 2^32")),
        Some(other) => id(other)
            .map(|i| vec![i])
            .ok_or_else(|| format!("eos_token_id {other} is not an integer below 2^32")),
    }
}

impl LlamaConfig {
    /// Reads and validates a Hugging Face `config.json`.
    ///
    /// # Errors
    /// [`ModelError::Io`], [`ModelError::Config`] for missing or unsupported fields.
    pub fn from_hf_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        Self::from_hf_json(&text, path)
    }

    /// Parses a Hugging Face `config.json` string (`path` is only used in messages).
    ///
    /// # Errors
    /// [`ModelError::Config`].
    pub fn from_hf_json(text: &str, path: &Path) -> Result<Self> {
        let bad = |message: String| ModelError::Config {
            origin: path.display().to_string(),
            message,
        };
        let c: HfConfig = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        if let Some(archs) = &c.architectures
            && !archs.iter().any(|a| a == "LlamaForCausalLM")
        {
            return Err(bad(format!(
                "architectures {archs:?} is not supported (only LlamaForCausalLM)"
            )));
        }
        if let Some(act) = &c.hidden_act
            && act != "silu"
        {
            return Err(bad(format!(
                "hidden_act {act:?} is not supported (only silu)"
            )));
        }
        if let Some(rs) = &c.rope_scaling
            && !rs.is_null()
        {
            return Err(bad(format!("rope_scaling {rs} is not supported")));
        }
        let eos_token_ids = eos_ids(c.eos_token_id.as_ref()).map_err(bad)?;
        let num_heads = c.num_attention_heads;
        let head_dim = c
            .head_dim
            .unwrap_or(c.hidden_size.checked_div(num_heads).unwrap_or(0));
        let cfg = LlamaConfig {
            vocab_size: c.vocab_size,
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            num_layers: c.num_hidden_layers,
            num_heads,
            num_kv_heads: c.num_key_value_heads.unwrap_or(num_heads),
            head_dim,
            rope_theta: c.rope_theta,
            rms_norm_eps: c.rms_norm_eps,
            max_position: c.max_position_embeddings,
            tie_word_embeddings: c.tie_word_embeddings,
            bos_token_id: c.bos_token_id,
            eos_token_ids,
        };
        cfg.validate(&path.display().to_string())?;
        Ok(cfg)
    }

    /// Checks the invariants the forward pass relies on.
    ///
    /// # Errors
    /// [`ModelError::Config`] naming the offending field.
    pub fn validate(&self, source: &str) -> Result<()> {
        let bad = |message: String| ModelError::Config {
            origin: source.to_string(),
            message,
        };
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_layers", self.num_layers),
            ("num_heads", self.num_heads),
            ("num_kv_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("max_position", self.max_position),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(bad(format!("{name} must be > 0")));
            }
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(bad(format!(
                "num_heads ({}) must be a multiple of num_kv_heads ({})",
                self.num_heads, self.num_kv_heads
            )));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(bad(format!(
                "head_dim ({}) must be even for RoPE",
                self.head_dim
            )));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(bad(format!("rope_theta ({}) must be > 0", self.rope_theta)));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(bad(format!(
                "rms_norm_eps ({}) must be > 0",
                self.rms_norm_eps
            )));
        }
        if self.vocab_size > u32::MAX as usize || self.max_position > u32::MAX as usize {
            return Err(bad("vocab_size and max_position must fit in u32".into()));
        }
        // Every derived size (the largest is the embedding, vocab x hidden) must fit in memory's
        // address space; the tensors' own sizes are checked against the file when they load.
        let products = [
            (
                "vocab_size x hidden_size",
                self.vocab_size.checked_mul(self.hidden_size),
            ),
            (
                "num_heads x head_dim",
                self.num_heads.checked_mul(self.head_dim),
            ),
            (
                "intermediate_size x hidden_size",
                self.intermediate_size.checked_mul(self.hidden_size),
            ),
            ("num_layers x 9 tensors", self.num_layers.checked_mul(9)),
        ];
        for (name, p) in products {
            if p.is_none_or(|p| p > isize::MAX as usize / 4) {
                return Err(bad(format!("{name} is too large")));
            }
        }
        if let Some(b) = self.bos_token_id
            && b as usize >= self.vocab_size
        {
            return Err(bad(format!(
                "bos_token_id {b} is outside the vocabulary of {}",
                self.vocab_size
            )));
        }
        if let Some(&e) = self
            .eos_token_ids
            .iter()
            .find(|&&e| e as usize >= self.vocab_size)
        {
            return Err(bad(format!(
                "eos_token_id {e} is outside the vocabulary of {}",
                self.vocab_size
            )));
        }
        Ok(())
    }

    /// Width of all query heads, `num_heads * head_dim`.
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Width of all key (or value) heads, `num_kv_heads * head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOL: &str = r#"{"architectures":["LlamaForCausalLM"],"vocab_size":49152,"hidden_size":576,
        "intermediate_size":1536,"num_hidden_layers":30,"num_attention_heads":9,"num_key_value_heads":3,
        "rope_theta":100000.0,"rms_norm_eps":1e-5,"max_position_embeddings":8192,"tie_word_embeddings":true,
        "bos_token_id":1,"eos_token_id":2,"hidden_act":"silu","rope_scaling":null}"#;

    #[test]
    fn parses_smollm2_config() {
        let c = LlamaConfig::from_hf_json(SMOL, Path::new("config.json")).unwrap();
        assert_eq!(c.head_dim, 64);
        assert_eq!(c.kv_dim(), 192);
        assert_eq!(c.eos_token_ids, vec![2]);
        assert!(c.tie_word_embeddings);
    }

    #[test]
    fn rejects_bad_configs() {
        let bad = SMOL.replace("\"num_key_value_heads\":3", "\"num_key_value_heads\":4");
        let e = LlamaConfig::from_hf_json(&bad, Path::new("c.json")).unwrap_err();
        assert!(e.to_string().contains("num_kv_heads"), "{e}");
        let bad = SMOL.replace("LlamaForCausalLM", "MistralForCausalLM");
        assert!(LlamaConfig::from_hf_json(&bad, Path::new("c.json")).is_err());
        assert!(LlamaConfig::from_hf_json("{", Path::new("c.json")).is_err());
        let bad = SMOL.replace("\"vocab_size\":49152,", "");
        assert!(
            LlamaConfig::from_hf_json(&bad, Path::new("c.json"))
                .unwrap_err()
                .to_string()
                .contains("vocab_size")
        );
    }
}
