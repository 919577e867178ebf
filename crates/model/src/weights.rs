//! Weight sources. Both formats are read into host `f32` matrices under their Hugging Face names
//! (`model.layers.{i}.self_attn.q_proj.weight`, ...), so one loader builds the model from either:
//!
//! * [`SafetensorsSource`] — a Hugging Face folder: `model.safetensors` or the shards listed in
//!   `model.safetensors.index.json`, memory-mapped, F32/F16/BF16.
//! * [`GgufSource`] — a GGUF file: llama.cpp names (`blk.{i}.attn_q.weight`, ...), dequantised to
//!   `f32`, with the q/k row permutation of llama.cpp's converter undone.

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::gguf::{GgufError, GgufFile, invalid};
use crate::mapped::FileBytes;
use crate::packed::{BlockFormat, PackedMatrix};
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A dense row-major `f32` tensor on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Shape, row-major (Hugging Face order, e.g. `[out, in]` for a linear weight).
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values.
    pub data: Vec<f32>,
}

/// Something that yields weights by Hugging Face name.
pub trait WeightSource {
    /// The tensor called `name` (HF naming), as `f32`.
    ///
    /// # Errors
    /// [`ModelError::MissingTensor`] or a format error.
    fn tensor(&self, name: &str) -> Result<HostTensor>;
    /// Whether a tensor of that name exists.
    fn contains(&self, name: &str) -> bool;
    /// The matrix called `name` in the block format its file stores it in, when that is one the
    /// native CPU pass reads ([`crate::packed`]: Q4_1, Q8_0), with the same rows as
    /// [`Self::tensor`]'s; `None` for every other tensor (the default).
    ///
    /// # Errors
    /// As [`Self::tensor`].
    fn packed(&self, name: &str) -> Result<Option<PackedMatrix>> {
        let _ = name;
        Ok(None)
    }
}

/// The Hugging Face name of layer `i`'s tensor `suffix` (e.g. `self_attn.q_proj.weight`).
pub fn layer_name(i: usize, suffix: &str) -> String {
    format!("model.layers.{i}.{suffix}")
}

/// Every tensor of a Llama checkpoint of `cfg`, by Hugging Face name, with its shape, in the order
/// the loader reads them (`lm_head.weight` only when `lm_head`). `cfg` is not validated (see
/// [`crate::export::hf_tensor_list`]).
pub fn llama_tensor_list(cfg: &LlamaConfig, lm_head: bool) -> Vec<(String, Vec<usize>)> {
    let (d, q, kv, f, v) = (
        cfg.hidden_size,
        cfg.q_dim(),
        cfg.kv_dim(),
        cfg.intermediate_size,
        cfg.vocab_size,
    );
    let mut out = vec![("model.embed_tokens.weight".to_string(), vec![v, d])];
    for i in 0..cfg.num_layers {
        for (suffix, shape) in [
            ("input_layernorm.weight", vec![d]),
            ("self_attn.q_proj.weight", vec![q, d]),
            ("self_attn.k_proj.weight", vec![kv, d]),
            ("self_attn.v_proj.weight", vec![kv, d]),
            ("self_attn.o_proj.weight", vec![d, q]),
            ("post_attention_layernorm.weight", vec![d]),
            ("mlp.gate_proj.weight", vec![f, d]),
            ("mlp.up_proj.weight", vec![f, d]),
            ("mlp.down_proj.weight", vec![d, f]),
        ] {
            out.push((layer_name(i, suffix), shape));
        }
    }
    out.push(("model.norm.weight".to_string(), vec![d]));
    if lm_head {
        out.push(("lm_head.weight".to_string(), vec![v, d]));
    }
    out
}

/// Memory-mapped safetensors shards of a Hugging Face folder.
pub struct SafetensorsSource {
    shards: Vec<(PathBuf, FileBytes)>,
    /// Tensor name -> shard index.
    index: BTreeMap<String, usize>,
}

impl SafetensorsSource {
    /// Opens `dir/model.safetensors`, or the shards of `dir/model.safetensors.index.json`.
    ///
    /// # Errors
    /// [`ModelError::Io`], [`ModelError::Safetensors`] for malformed or truncated files.
    pub fn open(dir: &Path) -> Result<Self> {
        let index_path = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index_path.exists() {
            let text =
                std::fs::read_to_string(&index_path).map_err(|e| ModelError::io(&index_path, e))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| ModelError::Safetensors {
                    path: index_path.clone(),
                    message: e.to_string(),
                })?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| ModelError::Safetensors {
                    path: index_path.clone(),
                    message: "no weight_map object".into(),
                })?;
            let mut files: Vec<String> = map
                .values()
                .filter_map(|f| f.as_str().map(String::from))
                .collect();
            files.sort();
            files.dedup();
            if files
                .iter()
                .any(|f| f.contains('/') || f.contains('\\') || f.contains(".."))
            {
                return Err(ModelError::Safetensors {
                    path: index_path,
                    message: "shard names must be plain file names".into(),
                });
            }
            files.into_iter().map(|f| dir.join(f)).collect()
        } else {
            vec![dir.join("model.safetensors")]
        };
        let mut shards = Vec::new();
        let mut index = BTreeMap::new();
        for path in files {
            let map = FileBytes::open(&path).map_err(|e| ModelError::io(&path, e))?;
            let st = SafeTensors::deserialize(&map).map_err(|e| ModelError::Safetensors {
                path: path.clone(),
                message: e.to_string(),
            })?;
            for name in st.names() {
                index.insert(name.to_string(), shards.len());
            }
            drop(st);
            shards.push((path, map));
        }
        Ok(Self { shards, index })
    }
}

impl WeightSource for SafetensorsSource {
    fn tensor(&self, name: &str) -> Result<HostTensor> {
        let shard = *self
            .index
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor { name: name.into() })?;
        let (path, map) = &self.shards[shard];
        let st_err = |message: String| ModelError::Safetensors {
            path: path.clone(),
            message,
        };
        let st = SafeTensors::deserialize(map).map_err(|e| st_err(e.to_string()))?;
        let view = st.tensor(name).map_err(|e| st_err(e.to_string()))?;
        let shape = view.shape().to_vec();
        let bytes = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(st_err(format!(
                    "tensor {name} has dtype {other:?}; only F32, F16 and BF16 are supported"
                )));
            }
        };
        if data.len() != shape.iter().product::<usize>() {
            return Err(st_err(format!(
                "tensor {name}: data does not match shape {shape:?}"
            )));
        }
        Ok(HostTensor { shape, data })
    }

    fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }
}

/// Weights of a GGUF file, served under Hugging Face names.
pub struct GgufSource<'a> {
    file: &'a GgufFile,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
}

impl<'a> GgufSource<'a> {
    /// Wraps a parsed GGUF file; the head counts are needed to undo the q/k permutation.
    pub fn new(file: &'a GgufFile, num_heads: usize, num_kv_heads: usize, head_dim: usize) -> Self {
        Self {
            file,
            num_heads,
            num_kv_heads,
            head_dim,
        }
    }

    /// The llama.cpp name of an HF tensor name, and the head count to unpermute with (q/k only).
    fn gguf_name(&self, name: &str) -> Option<(String, Option<usize>)> {
        let fixed = match name {
            "model.embed_tokens.weight" => Some("token_embd.weight"),
            "model.norm.weight" => Some("output_norm.weight"),
            "lm_head.weight" => Some("output.weight"),
            _ => None,
        };
        if let Some(f) = fixed {
            return Some((f.to_string(), None));
        }
        let rest = name.strip_prefix("model.layers.")?;
        let (i, suffix) = rest.split_once('.')?;
        let i: usize = i.parse().ok()?;
        let (g, heads) = match suffix {
            "input_layernorm.weight" => ("attn_norm.weight", None),
            "self_attn.q_proj.weight" => ("attn_q.weight", Some(self.num_heads)),
            "self_attn.k_proj.weight" => ("attn_k.weight", Some(self.num_kv_heads)),
            "self_attn.v_proj.weight" => ("attn_v.weight", None),
            "self_attn.o_proj.weight" => ("attn_output.weight", None),
            "post_attention_layernorm.weight" => ("ffn_norm.weight", None),
            "mlp.gate_proj.weight" => ("ffn_gate.weight", None),
            "mlp.up_proj.weight" => ("ffn_up.weight", None),
            "mlp.down_proj.weight" => ("ffn_down.weight", None),
            _ => return None,
        };
        Some((format!("blk.{i}.{g}"), heads))
    }
}

impl WeightSource for GgufSource<'_> {
    fn tensor(&self, name: &str) -> Result<HostTensor> {
        let missing = || ModelError::MissingTensor {
            name: name.to_string(),
        };
        let (gname, heads) = self.gguf_name(name).ok_or_else(missing)?;
        let info = self.file.tensor_info(&gname).ok_or_else(missing)?;
        let shape = info.shape();
        let mut data = self.file.tensor_f32(&gname)?;
        if let Some(h) = self.rope_heads(name, heads, &shape)? {
            data = unpermute_rope_rows(&data, h, self.head_dim, shape[1])?;
        }
        Ok(HostTensor { shape, data })
    }

    fn contains(&self, name: &str) -> bool {
        self.gguf_name(name)
            .is_some_and(|(g, _)| self.file.tensor_info(&g).is_some())
    }

    fn packed(&self, name: &str) -> Result<Option<PackedMatrix>> {
        let Some((gname, heads)) = self.gguf_name(name) else {
            return Ok(None);
        };
        let Some(info) = self.file.tensor_info(&gname) else {
            return Ok(None);
        };
        let (Some(format), &[rows, cols]) = (BlockFormat::of(info.ggml_type), &info.shape()[..])
        else {
            return Ok(None);
        };
        let bytes = self.file.tensor_bytes(&gname)?;
        let hd = self.head_dim;
        let packed = match self.rope_heads(name, heads, &[rows, cols])? {
            Some(_) => {
                PackedMatrix::from_gguf(format, bytes, rows, cols, |r| gguf_row_of_hf(r, hd))
            }
            None => PackedMatrix::from_gguf(format, bytes, rows, cols, |r| r),
        };
        Ok(Some(packed?))
    }
}

impl GgufSource<'_> {
    /// For a q/k tensor (`heads` given), checks that `shape` is `[heads · head_dim, cols]` with an
    /// even head dimension and returns the head count to undo the RoPE permutation with; `None`
    /// for every other tensor. One check for the `f32` copy and the block-format copy.
    fn rope_heads(
        &self,
        name: &str,
        heads: Option<usize>,
        shape: &[usize],
    ) -> Result<Option<usize>> {
        let Some(h) = heads else {
            return Ok(None);
        };
        let cols = shape.get(1).copied().unwrap_or(1);
        if shape.len() != 2 || shape[0] != h * self.head_dim {
            return Err(ModelError::ShapeMismatch {
                name: name.to_string(),
                expected: vec![h * self.head_dim, cols],
                got: shape.to_vec(),
            });
        }
        check_rope_args(shape[0].saturating_mul(cols), h, self.head_dim, cols)?;
        Ok(Some(h))
    }
}

// RoPE row permutation of llama.cpp's converter (undone by `GgufSource`).

fn check_rope_args(
    len: usize,
    n_heads: usize,
    head_dim: usize,
    cols: usize,
) -> Result<(), GgufError> {
    if !head_dim.is_multiple_of(2) {
        return Err(invalid(format!(
            "RoPE permutation needs an even head dimension, got {head_dim}"
        )));
    }
    let expected = n_heads
        .checked_mul(head_dim)
        .and_then(|rows| rows.checked_mul(cols));
    if expected != Some(len) {
        return Err(invalid(format!(
            "RoPE permutation: {len} values do not form a [{n_heads} heads * {head_dim}, {cols}] matrix"
        )));
    }
    Ok(())
}

/// Moves rows of a row-major `[rows, cols]` matrix: output row `r` is input
/// row `src_row(r)`.
fn gather_rows(data: &[f32], cols: usize, src_row: impl Fn(usize) -> usize) -> Vec<f32> {
    if cols == 0 || data.is_empty() {
        return Vec::new();
    }
    let rows = data.len() / cols;
    let mut out = Vec::with_capacity(data.len());
    for r in 0..rows {
        let start = src_row(r) * cols;
        if let Some(row) = data.get(start..start + cols) {
            out.extend_from_slice(row);
        }
    }
    out
}

/// llama.cpp's converter permutes the rows of `attn_q` / `attn_k` for its
/// RoPE layout: HF row `h*hd + j*hd/2 + i` is GGUF row `h*hd + 2*i + j`
/// (`j` in {0,1}, `i < hd/2`, per head `h`). Returns the HF-ordered matrix.
/// `data` is row-major `[n_heads*hd, cols]`.
///
/// Errors with [`GgufError::Invalid`] if `head_dim` is odd or `data` does not
/// have `n_heads * head_dim * cols` elements.
pub fn unpermute_rope_rows(
    data: &[f32],
    n_heads: usize,
    head_dim: usize,
    cols: usize,
) -> Result<Vec<f32>, GgufError> {
    move_rope_rows(data, n_heads, head_dim, cols, RopeOrder::Hf)
}

/// The inverse of [`unpermute_rope_rows`] (HF -> GGUF row order), for the
/// test fixtures that write GGUF files. `data` is row-major `[n_heads*hd, cols]`.
///
/// Errors with [`GgufError::Invalid`] if `head_dim` is odd or `data` does not
/// have `n_heads * head_dim * cols` elements.
#[cfg(any(test, feature = "testing"))]
pub fn permute_rope_rows(
    data: &[f32],
    n_heads: usize,
    head_dim: usize,
    cols: usize,
) -> Result<Vec<f32>, GgufError> {
    move_rope_rows(data, n_heads, head_dim, cols, RopeOrder::Gguf)
}

/// The row order [`move_rope_rows`] produces.
#[derive(Clone, Copy)]
enum RopeOrder {
    /// Hugging Face: the two halves of each head's rotary pairs in two blocks.
    Hf,
    /// llama.cpp: each rotary pair in adjacent rows.
    #[cfg(any(test, feature = "testing"))]
    Gguf,
}

/// Reorders the rows of each head of a `[n_heads*hd, cols]` matrix into `to`'s order.
fn move_rope_rows(
    data: &[f32],
    n_heads: usize,
    head_dim: usize,
    cols: usize,
    to: RopeOrder,
) -> Result<Vec<f32>, GgufError> {
    check_rope_args(data.len(), n_heads, head_dim, cols)?;
    Ok(gather_rows(data, cols, |r| match to {
        RopeOrder::Hf => gguf_row_of_hf(r, head_dim),
        // GGUF row h*hd + 2*i + j comes from HF row h*hd + j*half + i.
        #[cfg(any(test, feature = "testing"))]
        RopeOrder::Gguf => {
            let (h, within, half) = (r / head_dim, r % head_dim, head_dim / 2);
            h * head_dim + (within % 2) * half + within / 2
        }
    }))
}

/// The GGUF row of a q/k matrix that its HF row `r` comes from: HF row `h*hd + j*half + i` is
/// GGUF row `h*hd + 2*i + j` (`head_dim` even).
fn gguf_row_of_hf(r: usize, head_dim: usize) -> usize {
    let (h, within, half) = (r / head_dim, r % head_dim, head_dim / 2);
    h * head_dim + 2 * (within % half) + within / half
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_permutation_hand_checked() {
        // n_heads = 2, head_dim = 4, cols = 1; HF rows are 0..8.
        let hf: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let gguf = permute_rope_rows(&hf, 2, 4, 1).unwrap();
        // GGUF row h*4 + 2i + j = HF row h*4 + 2j + i
        assert_eq!(gguf, [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
        assert_eq!(unpermute_rope_rows(&gguf, 2, 4, 1).unwrap(), hf);

        // head_dim = 6 (not an involution): GGUF row 2i+j = HF row 3j+i.
        let hf: Vec<f32> = (0..6).map(|v| v as f32).collect();
        let gguf = permute_rope_rows(&hf, 1, 6, 1).unwrap();
        assert_eq!(gguf, [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        assert_eq!(
            unpermute_rope_rows(&hf, 1, 6, 1).unwrap(),
            [0.0, 2.0, 4.0, 1.0, 3.0, 5.0]
        );

        // whole rows move together (cols = 2)
        let hf = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5];
        assert_eq!(
            permute_rope_rows(&hf, 1, 4, 2).unwrap(),
            [0.0, 0.5, 2.0, 2.5, 1.0, 1.5, 3.0, 3.5]
        );
    }

    #[test]
    fn rope_permutation_round_trips() {
        // Deterministic values in (-1, 1); any distinct values do.
        let value = |i: usize| ((i as f32) * 0.618_034).fract() * 2.0 - 1.0;
        for (heads, hd, cols) in [(1, 2, 1), (3, 8, 5), (4, 64, 3), (2, 6, 0), (0, 4, 3)] {
            let x: Vec<f32> = (0..heads * hd * cols).map(value).collect();
            let p = permute_rope_rows(&x, heads, hd, cols).unwrap();
            assert_eq!(p.len(), x.len());
            assert_eq!(unpermute_rope_rows(&p, heads, hd, cols).unwrap(), x);
            assert_eq!(
                permute_rope_rows(
                    &unpermute_rope_rows(&x, heads, hd, cols).unwrap(),
                    heads,
                    hd,
                    cols
                )
                .unwrap(),
                x
            );
        }
        assert!(matches!(
            unpermute_rope_rows(&[0.0; 6], 1, 3, 2),
            Err(GgufError::Invalid { .. })
        ));
        assert!(matches!(
            permute_rope_rows(&[0.0; 7], 1, 4, 2),
            Err(GgufError::Invalid { .. })
        ));
        assert!(matches!(
            permute_rope_rows(&[0.0; 8], usize::MAX, 4, 2),
            Err(GgufError::Invalid { .. })
        ));
    }
}
