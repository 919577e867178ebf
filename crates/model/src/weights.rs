//! Weight sources. Both formats are read into host `f32` matrices under their Hugging Face names
//! (`model.layers.{i}.self_attn.q_proj.weight`, ...), so one loader builds the model from either:
//!
//! * [`SafetensorsSource`] — a Hugging Face folder: `model.safetensors` or the shards listed in
//!   `model.safetensors.index.json`, memory-mapped, F32/F16/BF16.
//! * [`GgufSource`] — a GGUF file: llama.cpp names (`blk.{i}.attn_q.weight`, ...), dequantised to
//!   `f32`, with the q/k row permutation of llama.cpp's converter undone.

use crate::error::{ModelError, Result};
use crate::gguf::{GgufFile, unpermute_rope_rows};
use memmap2::Mmap;
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
}

/// The Hugging Face name of layer `i`'s tensor `suffix` (e.g. `self_attn.q_proj.weight`).
pub fn layer_name(i: usize, suffix: &str) -> String {
    format!("model.layers.{i}.{suffix}")
}

/// Memory-mapped safetensors shards of a Hugging Face folder.
pub struct SafetensorsSource {
    shards: Vec<(PathBuf, Mmap)>,
    /// Tensor name -> shard index.
    index: BTreeMap<String, usize>,
}

fn map_file(path: &Path) -> Result<Mmap> {
    let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    // SAFETY: the file is opened read-only and only read through the map; if another process
    // truncates it while mapped, reads may fault — the same contract as every mmap-based loader.
    #[allow(unsafe_code)]
    let map = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
    Ok(map)
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
            let map = map_file(&path)?;
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
        if let Some(h) = heads {
            let cols = shape.get(1).copied().unwrap_or(1);
            if shape.len() != 2 || shape[0] != h * self.head_dim {
                return Err(ModelError::ShapeMismatch {
                    name: name.to_string(),
                    expected: vec![h * self.head_dim, cols],
                    got: shape,
                });
            }
            data = unpermute_rope_rows(&data, h, self.head_dim, cols)?;
        }
        Ok(HostTensor { shape, data })
    }

    fn contains(&self, name: &str) -> bool {
        self.gguf_name(name)
            .is_some_and(|(g, _)| self.file.tensor_info(&g).is_some())
    }
}
