//! Exporting a model for other inference engines (`llm-auction model export`).
//!
//! * [`ExportFormat::Hf`] writes a Hugging Face folder that `transformers` and vLLM load as
//!   `LlamaForCausalLM`: `config.json`, `model.safetensors` (every tensor `f32` under its Hugging
//!   Face name, q/k rows in Hugging Face order: the llama.cpp permutation of a GGUF source is undone
//!   by [`GgufSource`], the loader's own code), `tokenizer.json` (the [`TextTokenizer`] the model
//!   uses, serialised), `tokenizer_config.json` (chat template, BOS/EOS text, `add_bos_token:
//!   false`: the model never adds special tokens when encoding) and `generation_config.json`.
//! * [`ExportFormat::GgufF32`] writes `DIR/model-f32.gguf` for llama.cpp: every metadata key of the
//!   source GGUF file, `general.file_type` set to 0 (`ALL_F32`), every tensor dequantised to F32 in
//!   the GGUF layout (same names, dimensions and row order as the source). Only a GGUF source can
//!   be exported this way.
//!
//! The destination is a folder, written atomically: everything goes into a temporary folder next to
//! it, which is renamed into place at the end (a failed export leaves nothing behind). A non-empty
//! destination is refused unless `force` is set, and even then only when it holds nothing but files
//! an export writes (a previous export), so `force` never deletes unrelated data. Tensors are
//! streamed one at a time, so memory holds at most one tensor in `f32` (plus the source's map).

use crate::chat::{ChatTemplate, from_tokenizer_config};
use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::gguf::writer::{GgufWriter, TensorHeader};
use crate::gguf::{GgmlType, GgufError, GgufFile, MetaValue};
use crate::llama::LoadProgress;
use crate::model::{gguf_config, gguf_tokenizer_spec};
use crate::tokenizer::TextTokenizer;
use crate::weights::{GgufSource, SafetensorsSource, WeightSource, layer_name};
use safetensors::{Dtype, View};
use std::borrow::Cow;
use std::cell::RefCell;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tokenizers::Tokenizer;
use tokenizers::models::ModelWrapper;
use tokenizers::processors::template::TemplateProcessing;

/// The file `gguf-f32` export writes inside the destination folder.
pub const GGUF_F32_FILE: &str = "model-f32.gguf";

/// The files `hf` export writes inside the destination folder.
pub const HF_FILES: [&str; 5] = [
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
];

/// What to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportFormat {
    /// A Hugging Face folder with `f32` safetensors (`hf`).
    #[default]
    Hf,
    /// `model-f32.gguf`, every tensor F32 (`gguf-f32`).
    GgufF32,
}

impl ExportFormat {
    /// The name used on the command line: `hf` or `gguf-f32`.
    pub fn name(self) -> &'static str {
        match self {
            ExportFormat::Hf => "hf",
            ExportFormat::GgufF32 => "gguf-f32",
        }
    }
}

impl std::fmt::Display for ExportFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ExportFormat {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "hf" => Ok(ExportFormat::Hf),
            "gguf-f32" => Ok(ExportFormat::GgufF32),
            other => Err(ModelError::param(
                "format",
                format!("{other:?} is not an export format (hf or gguf-f32)"),
            )),
        }
    }
}

/// How to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExportOptions {
    /// The output format.
    pub format: ExportFormat,
    /// Replace a non-empty destination (only one holding nothing but files an export writes).
    pub force: bool,
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportReport {
    /// The destination folder.
    pub dir: PathBuf,
    /// What to pass as `--model` (or to `vllm serve` / `llama-server -m`): the folder for `hf`,
    /// `DIR/model-f32.gguf` for `gguf-f32`.
    pub model_path: PathBuf,
    /// The file names written inside `dir`, sorted.
    pub files: Vec<String>,
    /// Number of tensors written.
    pub tensors: usize,
    /// Total bytes written.
    pub bytes: u64,
}

/// Exports the model at `src` (a GGUF file or a Hugging Face folder) to the folder `dest`.
///
/// `progress` is called once per tensor with `(name, index, total)`.
///
/// # Errors
/// [`ModelError::ModelPath`] naming `dest` when it exists and is not an empty folder (and `force`
/// does not apply), or naming `src` for a `gguf-f32` export of a non-GGUF source; loading errors of
/// the source ([`ModelError::Gguf`], [`ModelError::Safetensors`], [`ModelError::Config`],
/// [`ModelError::ShapeMismatch`], ...); [`ModelError::ModelPath`] naming the file for write
/// failures. On error nothing is left at `dest` that was not there before.
pub fn export(
    src: &Path,
    dest: &Path,
    opts: &ExportOptions,
    progress: LoadProgress<'_>,
) -> Result<ExportReport> {
    match opts.format {
        ExportFormat::Hf => export_hf(src, dest, opts.force, progress),
        ExportFormat::GgufF32 => export_gguf_f32(src, dest, opts.force, progress),
    }
}

/// Exports `src` as a Hugging Face folder at `dest` (see the [module docs](self)).
///
/// # Errors
/// As [`export`].
pub fn export_hf(
    src: &Path,
    dest: &Path,
    force: bool,
    progress: LoadProgress<'_>,
) -> Result<ExportReport> {
    let dest = check_destination(dest, force)?;
    let source = HfSource::open(src)?;
    let (files, tensors, bytes) = write_atomically(&dest, force, |tmp| {
        source.write(tmp, progress)?;
        Ok(HF_FILES.map(String::from).to_vec())
    })?;
    Ok(ExportReport {
        model_path: dest.clone(),
        dir: dest,
        files,
        tensors,
        bytes,
    })
}

/// Exports the GGUF file `src` as `dest/model-f32.gguf` (see the [module docs](self)).
///
/// # Errors
/// As [`export`]; [`ModelError::Gguf`] naming the tensor if a tensor's type cannot be dequantised
/// (checked before anything is written).
pub fn export_gguf_f32(
    src: &Path,
    dest: &Path,
    force: bool,
    progress: LoadProgress<'_>,
) -> Result<ExportReport> {
    let dest = check_destination(dest, force)?;
    if !is_gguf_file(src)? {
        return Err(ModelError::ModelPath {
            path: src.to_path_buf(),
            message: format!(
                "the gguf-f32 export needs a GGUF file as its source; this is {}",
                if src.is_dir() {
                    "a folder (export it with the hf format instead)"
                } else {
                    "not a GGUF file"
                }
            ),
        });
    }
    let file = GgufFile::open(src)?;
    // The same checks as loading: a llama model, every tensor of a type we can dequantise.
    gguf_config(&file)?;
    for t in file.tensors() {
        if !t.ggml_type.is_supported() {
            return Err(GgufError::UnsupportedTensorType {
                name: t.name.clone(),
                ggml_type: t.ggml_type.id(),
                type_name: t.ggml_type.name(),
            }
            .into());
        }
    }
    let (files, tensors, bytes) = write_atomically(&dest, force, |tmp| {
        write_gguf_f32(&file, &tmp.join(GGUF_F32_FILE), progress)?;
        Ok(vec![GGUF_F32_FILE.to_string()])
    })?;
    Ok(ExportReport {
        model_path: dest.join(GGUF_F32_FILE),
        dir: dest,
        files,
        tensors,
        bytes,
    })
}

// ---------------------------------------------------------------------------
// The Hugging Face folder
// ---------------------------------------------------------------------------

/// Where the weights come from.
enum Tensors {
    Gguf(GgufFile),
    Hf(SafetensorsSource),
}

/// Everything an `hf` export writes, read from the source the way [`crate::Model::load`] reads it.
struct HfSource {
    cfg: LlamaConfig,
    tokenizer: TextTokenizer,
    chat_template: Option<String>,
    bos_token: String,
    eos_token: String,
    pad_token: Option<String>,
    unk_token: Option<String>,
    tensors: Tensors,
}

fn is_gguf_file(path: &Path) -> Result<bool> {
    if path.is_dir() {
        return Ok(false);
    }
    let mut file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let mut magic = [0u8; 4];
    Ok(file.read_exact(&mut magic).is_ok() && magic == crate::gguf::GGUF_MAGIC)
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
    fn open(src: &Path) -> Result<Self> {
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
        let cfg = gguf_config(&file)?;
        let tokenizer = TextTokenizer::from_gguf(gguf_tokenizer_spec(&file)?)?;
        let chat_template = match file.metadata().get("tokenizer.chat_template") {
            Some(MetaValue::String(s)) => Some(s.clone()),
            _ => None,
        };
        let name = |id: Option<u32>| id.and_then(|i| tokenizer.token_str(i));
        let bos_token = name(cfg.bos_token_id).unwrap_or_default();
        let eos_token = name(cfg.eos_token_ids.first().copied()).unwrap_or_default();
        let pad_token = name(meta_u32(&file, "tokenizer.ggml.padding_token_id"));
        let unk_token = name(meta_u32(&file, "tokenizer.ggml.unknown_token_id"));
        Self {
            cfg,
            tokenizer,
            chat_template,
            bos_token,
            eos_token,
            pad_token,
            unk_token,
            tensors: Tensors::Gguf(file),
        }
        .checked()
    }

    fn open_hf(dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        if !cfg_path.is_file() {
            return Err(ModelError::ModelPath {
                path: dir.to_path_buf(),
                message: "a Hugging Face model folder needs config.json, *.safetensors and tokenizer.json".into(),
            });
        }
        let mut cfg = LlamaConfig::from_hf_file(&cfg_path)?;
        // generation_config.json may add end-of-sequence tokens, as in `Model::load`.
        let gen_path = dir.join("generation_config.json");
        if let Ok(text) = std::fs::read_to_string(&gen_path)
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        {
            let ids: Vec<u32> = match v.get("eos_token_id") {
                Some(serde_json::Value::Number(n)) => n.as_u64().into_iter().collect(),
                Some(serde_json::Value::Array(a)) => a.iter().filter_map(|x| x.as_u64()).collect(),
                _ => vec![],
            }
            .into_iter()
            .filter_map(|x| u32::try_from(x).ok())
            .collect();
            for id in ids {
                if !cfg.eos_token_ids.contains(&id) {
                    cfg.eos_token_ids.push(id);
                }
            }
        }
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"))?;
        let tc_path = dir.join("tokenizer_config.json");
        let (chat_template, bos, eos, pad_token, unk_token) = if tc_path.is_file() {
            let (template, bos, eos) = from_tokenizer_config(&tc_path)?;
            let json: serde_json::Value = std::fs::read_to_string(&tc_path)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
            (
                template,
                bos,
                eos,
                config_token(&json, "pad_token"),
                config_token(&json, "unk_token"),
            )
        } else {
            (None, None, None, None, None)
        };
        let name = |id: Option<u32>| id.and_then(|i| tokenizer.token_str(i)).unwrap_or_default();
        let bos_token = bos.unwrap_or_else(|| name(cfg.bos_token_id));
        let eos_token = eos.unwrap_or_else(|| name(cfg.eos_token_ids.first().copied()));
        if cfg.eos_token_ids.is_empty()
            && let Some(id) = tokenizer.token_id(&eos_token)
        {
            cfg.eos_token_ids.push(id);
        }
        Self {
            cfg,
            tokenizer,
            chat_template,
            bos_token,
            eos_token,
            pad_token,
            unk_token,
            tensors: Tensors::Hf(SafetensorsSource::open(dir)?),
        }
        .checked()
    }

    /// Checks what loading would check before anything is written: the template compiles and every
    /// weight exists.
    fn checked(self) -> Result<Self> {
        if let Some(t) = &self.chat_template {
            ChatTemplate::new(t)?;
        }
        let src = self.weight_source();
        let lm_head = src.contains("lm_head.weight");
        if !lm_head && !self.cfg.tie_word_embeddings {
            // As loading: an untied model needs its output projection.
            return Err(ModelError::MissingTensor {
                name: "lm_head.weight".into(),
            });
        }
        for (name, _) in hf_tensor_list(&self.cfg, lm_head)? {
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
                self.cfg.num_heads,
                self.cfg.num_kv_heads,
                self.cfg.head_dim,
            )),
            Tensors::Hf(st) => Box::new(HfRef(st)),
        }
    }

    fn write(&self, dir: &Path, progress: LoadProgress<'_>) -> Result<()> {
        let src = self.weight_source();
        let has_lm_head = src.contains("lm_head.weight");
        let cfg = &self.cfg;
        write_json(&dir.join("config.json"), &hf_config_json(cfg, !has_lm_head))?;
        write_json(
            &dir.join("generation_config.json"),
            &generation_config_json(
                cfg,
                self.pad_token
                    .as_deref()
                    .and_then(|t| self.tokenizer.token_id(t)),
            ),
        )?;
        let tok_path = dir.join("tokenizer.json");
        let text = hf_tokenizer(&self.tokenizer)
            .to_string(false)
            .map_err(|e| write_error(&tok_path, e))?;
        write_file(&tok_path, text.as_bytes())?;
        let tc = tokenizer_config_json(
            cfg,
            self.chat_template.as_deref(),
            &self.bos_token,
            &self.eos_token,
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
    Ok(out)
}

/// An `f32` as the shortest decimal that reads back as the same `f32` (so `1e-5` is written
/// `1e-5`, not `9.999999747378752e-6`).
fn json_f32(x: f32) -> serde_json::Value {
    x.to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// One id as a number, several as a list, none as nothing.
fn ids_json(ids: &[u32]) -> Option<serde_json::Value> {
    match ids {
        [] => None,
        [one] => Some((*one).into()),
        many => Some(many.to_vec().into()),
    }
}

/// The `config.json` of `cfg` (`LlamaForCausalLM`, `float32`).
pub fn hf_config_json(cfg: &LlamaConfig, tie_word_embeddings: bool) -> serde_json::Value {
    let mut c = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": json_f32(cfg.rms_norm_eps),
        "rope_theta": json_f32(cfg.rope_theta),
        "rope_scaling": null,
        "max_position_embeddings": cfg.max_position,
        "vocab_size": cfg.vocab_size,
        "tie_word_embeddings": tie_word_embeddings,
        "attention_bias": false,
        "mlp_bias": false,
        "torch_dtype": "float32",
        "use_cache": true,
    });
    if let Some(id) = cfg.bos_token_id {
        c["bos_token_id"] = id.into();
    }
    if let Some(ids) = ids_json(&cfg.eos_token_ids) {
        c["eos_token_id"] = ids;
    }
    c
}

fn generation_config_json(cfg: &LlamaConfig, pad: Option<u32>) -> serde_json::Value {
    let mut g = serde_json::json!({});
    if let Some(id) = cfg.bos_token_id {
        g["bos_token_id"] = id.into();
    }
    if let Some(ids) = ids_json(&cfg.eos_token_ids) {
        g["eos_token_id"] = ids;
    }
    if let Some(id) = pad {
        g["pad_token_id"] = id.into();
    }
    g
}

fn tokenizer_config_json(
    cfg: &LlamaConfig,
    chat_template: Option<&str>,
    bos: &str,
    eos: &str,
    pad: Option<&str>,
    unk: Option<&str>,
) -> serde_json::Value {
    let mut t = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": false,
        "add_eos_token": false,
        "add_prefix_space": false,
        "clean_up_tokenization_spaces": false,
        "model_max_length": cfg.max_position,
        "bos_token": bos,
        "eos_token": eos,
    });
    if let Some(p) = pad {
        t["pad_token"] = p.into();
    }
    if let Some(u) = unk {
        t["unk_token"] = u.into();
    }
    if let Some(c) = chat_template {
        t["chat_template"] = c.into();
    }
    t
}

/// The Hugging Face tokenizer of `tok` as `tokenizer.json` stores it: the same model,
/// pre-tokenizer (e.g. `Digits(individual)` then `ByteLevel` for SmolLM2), decoder and added
/// tokens, with a post-processor that adds nothing (`$A`, pair `$A $B:1`), because the model never
/// adds special tokens when it encodes. For SmolLM2 this is exactly the reference `tokenizer.json`. `transformers` and vLLM then give the same ids as
/// [`TextTokenizer::encode`], with or without `add_special_tokens`.
pub fn hf_tokenizer(tok: &TextTokenizer) -> Tokenizer {
    let mut inner = tok.inner().clone();
    // A BPE built from GGUF metadata has no continuing-subword prefix or end-of-word suffix
    // (`null`); Hugging Face files spell that `""`, which encodes identically.
    if let ModelWrapper::BPE(bpe) = inner.get_model() {
        let mut bpe = bpe.clone();
        bpe.continuing_subword_prefix
            .get_or_insert_with(String::new);
        bpe.end_of_word_suffix.get_or_insert_with(String::new);
        inner.with_model(bpe);
    }
    // Both templates are fixed, valid strings, so the builder cannot fail; fall back to no
    // post-processor (which adds nothing either) rather than panicking.
    let plain = TemplateProcessing::builder()
        .try_single("$A")
        .and_then(|b| b.try_pair("$A $B:1"))
        .ok()
        .and_then(|b| b.build().ok());
    inner.with_post_processor(plain);
    inner
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

// ---------------------------------------------------------------------------
// The all-F32 GGUF file
// ---------------------------------------------------------------------------

fn write_gguf_f32(file: &GgufFile, path: &Path, progress: LoadProgress<'_>) -> Result<()> {
    let mut metadata = file.metadata().clone();
    // ggml's LLAMA_FTYPE_ALL_F32.
    metadata.insert("general.file_type".into(), MetaValue::U32(0));
    let mut w = GgufWriter::new();
    for (key, value) in metadata {
        w.try_add_meta(&key, value)?;
    }
    let headers: Vec<TensorHeader> = file
        .tensors()
        .iter()
        .map(|t| TensorHeader {
            name: t.name.clone(),
            dims: t.dims.clone(),
            ggml_type: GgmlType::F32,
        })
        .collect();
    let (header, placements) = w.streamed_header(&headers)?;
    let out = std::fs::File::create(path).map_err(|e| write_error(path, e))?;
    let mut out = BufWriter::with_capacity(1 << 20, out);
    let werr = |e: std::io::Error| write_error(path, e);
    out.write_all(&header).map_err(werr)?;
    let mut pos = header.len() as u64;
    let total = headers.len();
    for (index, (t, p)) in headers.iter().zip(&placements).enumerate() {
        progress(&t.name, index, total);
        let data = file.tensor_f32(&t.name)?;
        if (data.len() as u64).checked_mul(4) != Some(p.len) || p.offset < pos {
            return Err(GgufError::Invalid {
                what: format!(
                    "tensor '{}': {} values do not fill its {} bytes",
                    t.name,
                    data.len(),
                    p.len
                ),
            }
            .into());
        }
        std::io::copy(&mut std::io::repeat(0).take(p.offset - pos), &mut out).map_err(werr)?;
        let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        out.write_all(&bytes).map_err(werr)?;
        pos = p.offset + p.len;
    }
    let out = out.into_inner().map_err(|e| werr(e.into_error()))?;
    out.sync_all().map_err(werr)?;
    progress("done", total, total);
    Ok(())
}

// ---------------------------------------------------------------------------
// Atomic folder writes
// ---------------------------------------------------------------------------

fn write_error(path: &Path, e: impl std::fmt::Display) -> ModelError {
    ModelError::ModelPath {
        path: path.to_path_buf(),
        message: format!("cannot write: {e}"),
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| write_error(path, e))
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| write_error(path, e))?;
    text.push('\n');
    write_file(path, text.as_bytes())
}

fn dest_error(dest: &Path, message: impl Into<String>) -> ModelError {
    ModelError::ModelPath {
        path: dest.to_path_buf(),
        message: message.into(),
    }
}

/// Whether an existing `dest` may be written: absent, an empty folder, or (with `force`) a folder
/// holding only files an export writes. Returns `dest` with a usable final component.
///
/// Front ends call it before fetching a source, so a bad `dest` fails before a download.
///
/// # Errors
/// [`ModelError::ModelPath`] naming `dest`.
pub fn check_destination(dest: &Path, force: bool) -> Result<PathBuf> {
    let dest = if dest.file_name().is_none() {
        dest.canonicalize().map_err(|e| ModelError::io(dest, e))?
    } else {
        dest.to_path_buf()
    };
    if dest.file_name().is_none() {
        return Err(dest_error(&dest, "cannot export to a file-system root"));
    }
    let meta = match std::fs::symlink_metadata(&dest) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(dest),
        Err(e) => return Err(ModelError::io(&dest, e)),
    };
    if !meta.is_dir() {
        return Err(dest_error(&dest, "exists and is not a folder"));
    }
    let mut foreign = Vec::new();
    let mut empty = true;
    for entry in std::fs::read_dir(&dest).map_err(|e| ModelError::io(&dest, e))? {
        let entry = entry.map_err(|e| ModelError::io(&dest, e))?;
        empty = false;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if !is_file || !(HF_FILES.contains(&name.as_str()) || name == GGUF_F32_FILE) {
            foreign.push(name);
        }
    }
    if empty {
        return Ok(dest);
    }
    if !force {
        return Err(dest_error(
            &dest,
            "is not empty; refusing to overwrite it (--force replaces a previous export)",
        ));
    }
    if !foreign.is_empty() {
        foreign.sort();
        return Err(dest_error(
            &dest,
            format!(
                "--force only replaces a previous export, and this folder also holds {}",
                foreign.join(", ")
            ),
        ));
    }
    Ok(dest)
}

/// A uniquely named sibling of `dest`: `.NAME.TAG-PID-N`.
fn sibling(dest: &Path, tag: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = dest
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.{tag}-{}-{n}", std::process::id()))
}

/// Removes a temporary folder on drop unless disarmed.
struct TempDir(Option<PathBuf>);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// Runs `fill` on a fresh temporary folder next to `dest`, then moves it to `dest` (replacing an
/// empty folder, or with `force` a previous export). Returns the sorted file names, the number of
/// tensors and the bytes written.
fn write_atomically(
    dest: &Path,
    force: bool,
    fill: impl FnOnce(&Path) -> Result<Vec<String>>,
) -> Result<(Vec<String>, usize, u64)> {
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| write_error(&parent, e))?;
    let tmp_path = sibling(dest, "export-tmp");
    std::fs::create_dir(&tmp_path).map_err(|e| write_error(&tmp_path, e))?;
    let mut tmp = TempDir(Some(tmp_path.clone()));
    let mut files = fill(&tmp_path)?;
    files.sort();
    let mut bytes = 0u64;
    let mut tensors = 0usize;
    for f in &files {
        let path = tmp_path.join(f);
        let file = std::fs::File::open(&path).map_err(|e| ModelError::io(&path, e))?;
        file.sync_all().map_err(|e| write_error(&path, e))?;
        bytes += file.metadata().map_err(|e| ModelError::io(&path, e))?.len();
        if f == "model.safetensors" {
            tensors = count_safetensors(&path)?;
        } else if f == GGUF_F32_FILE {
            tensors = GgufFile::open(&path)?.tensors().len();
        }
    }
    // Re-check: the destination may have changed while we were writing.
    check_destination(dest, force)?;
    let old = if dest.exists() {
        if std::fs::remove_dir(dest).is_ok() {
            None
        } else {
            let old = sibling(dest, "export-old");
            std::fs::rename(dest, &old).map_err(|e| write_error(dest, e))?;
            Some(old)
        }
    } else {
        None
    };
    if let Err(e) = std::fs::rename(&tmp_path, dest) {
        if let Some(old) = &old {
            let _ = std::fs::rename(old, dest);
        }
        return Err(write_error(dest, e));
    }
    tmp.0 = None;
    if let Some(old) = old {
        let _ = std::fs::remove_dir_all(old);
    }
    Ok((files, tensors, bytes))
}

fn count_safetensors(path: &Path) -> Result<usize> {
    let mut file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let mut n = [0u8; 8];
    file.read_exact(&mut n)
        .map_err(|e| ModelError::io(path, e))?;
    let len = usize::try_from(u64::from_le_bytes(n)).unwrap_or(usize::MAX);
    let bad = |message: String| ModelError::Safetensors {
        path: path.to_path_buf(),
        message,
    };
    if len > 100 << 20 {
        return Err(bad(format!("header of {len} bytes")));
    }
    let mut header = vec![0u8; len];
    file.read_exact(&mut header)
        .map_err(|e| ModelError::io(path, e))?;
    let json: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| bad(e.to_string()))?;
    Ok(json
        .as_object()
        .map_or(0, |m| m.keys().filter(|k| *k != "__metadata__").count()))
}
