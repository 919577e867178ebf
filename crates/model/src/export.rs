//! Exporting a model for other inference engines (`llm-auction model export`).
//!
//! * [`ExportFormat::Hf`] writes a Hugging Face folder that `transformers` and vLLM load as
//!   `LlamaForCausalLM`: `config.json`, `model.safetensors` (every tensor `f32` under its Hugging
//!   Face name, q/k rows in Hugging Face order: the llama.cpp permutation of a GGUF source is undone
//!   by [`crate::weights::GgufSource`], the loader's own code), `tokenizer.json` (the [`crate::tokenizer::TextTokenizer`] the model
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

mod destination;
mod gguf_f32;
mod hf;
mod hf_config;

pub use destination::check_destination;
pub use hf::hf_tensor_list;
pub use hf_config::{hf_config_json, hf_tokenizer};

use crate::error::{ModelError, Result};
use crate::gguf::{GgufError, GgufFile};
use crate::llama::LoadProgress;
use crate::model::gguf_config;
use destination::write_atomically;
use gguf_f32::write_gguf_f32;
use hf::HfSource;
use std::path::{Path, PathBuf};

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
    /// Every format, in the order the command line lists them.
    pub const ALL: [ExportFormat; 2] = [ExportFormat::Hf, ExportFormat::GgufF32];

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
        ExportFormat::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                ModelError::param(
                    "format",
                    format!("{s:?} is not an export format (hf or gguf-f32)"),
                )
            })
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

impl ExportReport {
    /// The report of an export to `dir` that wrote `(files, tensors, bytes)`.
    fn new(
        model_path: PathBuf,
        dir: PathBuf,
        (files, tensors, bytes): (Vec<String>, usize, u64),
    ) -> Self {
        Self {
            dir,
            model_path,
            files,
            tensors,
            bytes,
        }
    }
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
    let written = write_atomically(&dest, force, |tmp| {
        source.write(tmp, progress)?;
        Ok(HF_FILES.map(String::from).to_vec())
    })?;
    Ok(ExportReport::new(dest.clone(), dest, written))
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
    if !crate::model::is_gguf_file(src)? {
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
    let written = write_atomically(&dest, force, |tmp| {
        write_gguf_f32(&file, &tmp.join(GGUF_F32_FILE), progress)?;
        Ok(vec![GGUF_F32_FILE.to_string()])
    })?;
    Ok(ExportReport::new(dest.join(GGUF_F32_FILE), dest, written))
}
