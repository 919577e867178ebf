//! The Hugging Face folder of an `hf` export: its source ([`HfSource`], read as loading reads
//! it), its tensors and the streamed `model.safetensors` writer (one tensor in memory at a time).

use super::destination::{write_error, write_file, write_json};
use super::hf_config::{
    generation_config_json, hf_config_json, hf_tokenizer, tokenizer_config_json,
};
use crate::chat::ChatTemplate;
use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::llama::LoadProgress;
use crate::model::{ModelMeta, is_gguf_file};
use crate::weights::{GgufSource, SafetensorsSource, WeightSource, llama_tensor_list};
use safetensors::{Dtype, View};
use std::borrow::Cow;
use std::cell::RefCell;
use std::path::Path;

/// Where the weights come from.
enum Tensors {
    Gguf(GgufFile),
    Hf(SafetensorsSource),
}

/// Everything an `hf` export writes, read from the source the way [`crate::Model::load`] reads it
/// ([`ModelMeta`]).
pub(super) struct HfSource {
    meta: ModelMeta,
    pad_token: Option<String>,
    unk_token: Option<String>,
    tensors: Tensors,
}

fn meta_u32(file: &GgufFile, key: &str) -> Option<u32> {
    file.get_u64(key).ok().and_then(|v| u32::try_from(v).ok())
}

/// A token given as `"text"` or `{"content": "text"}` in `tokenizer_config.json`.
fn config_token(json: &serde_json::Value, key: &str) -> Option<String> {
    match json.get(key)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(m) => m.get("content")?.as_str().map(String::from),
        _ => None,
    }
}

impl HfSource {
    pub(super) fn open(src: &Path) -> Result<Self> {
        if src.is_dir() {
            Self::open_hf(src)
        } else if is_gguf_file(src)? {
            Self::open_gguf(src)
        } else {
            Err(ModelError::ModelPath {
                path: src.to_path_buf(),
                message: if src.exists() {
                    "not a GGUF file (no GGUF magic) and not a Hugging Face folder".into()
                } else {
                    "no such file or folder".into()
                },
            })
        }
    }

    fn open_gguf(path: &Path) -> Result<Self> {
        let file = GgufFile::open(path)?;
        let meta = ModelMeta::from_gguf(&file)?;
        let name = |id: Option<u32>| id.and_then(|i| meta.tokenizer.token_str(i));
        let pad_token = name(meta_u32(&file, "tokenizer.ggml.padding_token_id"));
        let unk_token = name(meta_u32(&file, "tokenizer.ggml.unknown_token_id"));
        Self {
            meta,
            pad_token,
            unk_token,
            tensors: Tensors::Gguf(file),
        }
        .checked()
    }

    fn open_hf(dir: &Path) -> Result<Self> {
        let meta = ModelMeta::from_hf_folder(dir)?;
        let tc_path = dir.join("tokenizer_config.json");
        let json: serde_json::Value = std::fs::read_to_string(&tc_path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        Self {
            meta,
            pad_token: config_token(&json, "pad_token"),
            unk_token: config_token(&json, "unk_token"),
            tensors: Tensors::Hf(SafetensorsSource::open(dir)?),
        }
        .checked()
    }

    /// Checks what loading would check before anything is written: the template compiles and every
    /// weight exists.
    fn checked(self) -> Result<Self> {
        if let Some(t) = &self.meta.chat_template {
            ChatTemplate::new(t)?;
        }
        let src = self.weight_source();
        let lm_head = src.contains("lm_head.weight");
        if !lm_head && !self.meta.cfg.tie_word_embeddings {
            // As loading: an untied model needs its output projection.
            return Err(ModelError::MissingTensor {
                name: "lm_head.weight".into(),
            });
        }
        for (name, _) in hf_tensor_list(&self.meta.cfg, lm_head)? {
            if !src.contains(&name) {
                return Err(ModelError::MissingTensor { name });
            }
        }
        drop(src);
        Ok(self)
    }

    fn weight_source(&self) -> Box<dyn WeightSource + '_> {
        match &self.tensors {
            Tensors::Gguf(file) => Box::new(GgufSource::new(
                file,
                self.meta.cfg.num_heads,
                self.meta.cfg.num_kv_heads,
                self.meta.cfg.head_dim,
            )),
            Tensors::Hf(st) => Box::new(HfRef(st)),
        }
    }

    pub(super) fn write(&self, dir: &Path, progress: LoadProgress<'_>) -> Result<()> {
        let src = self.weight_source();
        let has_lm_head = src.contains("lm_head.weight");
        let cfg = &self.meta.cfg;
        write_json(&dir.join("config.json"), &hf_config_json(cfg, !has_lm_head))?;
        write_json(
            &dir.join("generation_config.json"),
            &generation_config_json(
                cfg,
                self.pad_token
                    .as_deref()
                    .and_then(|t| self.meta.tokenizer.token_id(t)),
            ),
        )?;
        let tok_path = dir.join("tokenizer.json");
        let text = hf_tokenizer(&self.meta.tokenizer)
            .to_string(false)
            .map_err(|e| write_error(&tok_path, e))?;
        write_file(&tok_path, text.as_bytes())?;
        let tc = tokenizer_config_json(
            cfg,
            self.meta.chat_template.as_deref(),
            &self.meta.bos_token,
            &self.meta.eos_token,
            self.pad_token.as_deref(),
            self.unk_token.as_deref(),
        );
        write_json(&dir.join("tokenizer_config.json"), &tc)?;
        let st_path = dir.join("model.safetensors");
        write_safetensors(
            &st_path,
            &*src,
            &hf_tensor_list(cfg, has_lm_head)?,
            progress,
        )?;
        // The safetensors writer goes through a private (0600) temporary file; give the weights
        // the permissions of the other files, so that a server running as another user can read
        // them.
        let cfg_path = dir.join("config.json");
        let perms = std::fs::metadata(&cfg_path)
            .map_err(|e| ModelError::io(&cfg_path, e))?
            .permissions();
        std::fs::set_permissions(&st_path, perms).map_err(|e| write_error(&st_path, e))
    }
}

/// A [`WeightSource`] borrowing a [`SafetensorsSource`].
struct HfRef<'a>(&'a SafetensorsSource);

impl WeightSource for HfRef<'_> {
    fn tensor(&self, name: &str) -> Result<crate::weights::HostTensor> {
        self.0.tensor(name)
    }
    fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }
}

/// Every tensor of a Llama checkpoint of `cfg`, by Hugging Face name, with its shape, in the order
/// the loader reads them (`lm_head.weight` only when `lm_head`).
///
/// # Errors
/// [`ModelError::Config`] if `cfg` is invalid.
pub fn hf_tensor_list(cfg: &LlamaConfig, lm_head: bool) -> Result<Vec<(String, Vec<usize>)>> {
    cfg.validate("export")?;
    Ok(llama_tensor_list(cfg, lm_head))
}

/// A tensor of the source, converted to `f32` bytes only when the safetensors writer asks for it.
struct LazyTensor<'a, 'p> {
    name: String,
    shape: Vec<usize>,
    len: usize,
    index: usize,
    total: usize,
    src: &'a dyn WeightSource,
    error: &'a RefCell<Option<ModelError>>,
    progress: &'a RefCell<LoadProgress<'p>>,
}

impl View for LazyTensor<'_, '_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        if self.error.borrow().is_some() {
            return Cow::Borrowed(&[]);
        }
        (self.progress.borrow_mut())(&self.name, self.index, self.total);
        match self.src.tensor(&self.name) {
            Ok(t) if t.shape == self.shape && t.data.len() * 4 == self.len => {
                Cow::Owned(t.data.iter().flat_map(|x| x.to_le_bytes()).collect())
            }
            Ok(t) => {
                *self.error.borrow_mut() = Some(ModelError::ShapeMismatch {
                    name: self.name.clone(),
                    expected: self.shape.clone(),
                    got: t.shape,
                });
                Cow::Borrowed(&[])
            }
            Err(e) => {
                *self.error.borrow_mut() = Some(e);
                Cow::Borrowed(&[])
            }
        }
    }

    fn data_len(&self) -> usize {
        self.len
    }
}

/// Writes every tensor of `list` from `src` as `f32` into one safetensors file, one tensor in
/// memory at a time.
fn write_safetensors(
    path: &Path,
    src: &dyn WeightSource,
    list: &[(String, Vec<usize>)],
    progress: LoadProgress<'_>,
) -> Result<()> {
    let error = RefCell::new(None);
    let progress = RefCell::new(progress);
    let total = list.len();
    let mut views = Vec::with_capacity(total);
    for (index, (name, shape)) in list.iter().enumerate() {
        let len = shape
            .iter()
            .try_fold(4usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| ModelError::Config {
                origin: "export".into(),
                message: format!("tensor {name} of shape {shape:?} is too large"),
            })?;
        views.push((
            name.clone(),
            LazyTensor {
                name: name.clone(),
                shape: shape.clone(),
                len,
                index,
                total,
                src,
                error: &error,
                progress: &progress,
            },
        ));
    }
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let written = safetensors::serialize_to_file(views, Some(metadata), path);
    if let Some(e) = error.into_inner() {
        return Err(e);
    }
    written.map_err(|e| write_error(path, e))?;
    (progress.into_inner())("done", total, total);
    Ok(())
}
