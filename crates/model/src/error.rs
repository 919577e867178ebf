//! Typed errors of the model crate. Messages name the file, tensor, field or limit involved.

use crate::chat::ChatError;
use crate::fetch::FetchError;
use crate::gguf::GgufError;
use crate::tokenizer::TokenizerError;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Result alias of this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// Everything that can go wrong while loading or running a model.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The model path is neither a GGUF file nor a Hugging Face folder.
    #[error("{}: {message}", path.display())]
    ModelPath {
        /// The path given.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The architecture configuration is missing or unsupported.
    #[error("config {origin}: {message}")]
    Config {
        /// Where the configuration came from.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// A GGUF file is malformed or unsupported.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// A safetensors file is malformed or unsupported.
    #[error("safetensors {}: {message}", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A required weight is absent.
    #[error("missing tensor {name}")]
    MissingTensor {
        /// The tensor's (Hugging Face) name.
        name: String,
    },
    /// A weight has the wrong shape.
    #[error("tensor {name} has shape {got:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The tensor's name.
        name: String,
        /// The shape the configuration implies.
        expected: Vec<usize>,
        /// The shape in the file.
        got: Vec<usize>,
    },
    /// The tokenizer could not be built or used.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// The chat template could not be compiled or rendered.
    #[error(transparent)]
    Chat(#[from] ChatError),
    /// The default model could not be obtained.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// A forward batch is inconsistent (a bug in the caller, reported instead of panicking).
    #[error("invalid forward batch: {field}: {problem}")]
    Batch {
        /// The batch's field (or `cache`) that is inconsistent.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// A sequence does not fit in the model's context.
    #[error(
        "prompt of {len} tokens (plus {extra} to generate) exceeds the model's context of {max} tokens"
    )]
    PromptTooLong {
        /// Prompt tokens.
        len: usize,
        /// Tokens still to be generated or scored after the prompt.
        extra: usize,
        /// The context length.
        max: usize,
    },
    /// A token id outside the vocabulary.
    #[error("token id {id} is outside the vocabulary of {vocab} tokens")]
    UnknownToken {
        /// The id.
        id: u32,
        /// The vocabulary size.
        vocab: usize,
    },
    /// The KV cache has too few slots for the request.
    #[error("KV cache needs {needed} slots but has {available}")]
    KvCapacity {
        /// Slots needed.
        needed: usize,
        /// Slots available.
        available: usize,
    },
    /// The requested device is not available.
    #[error("device {device}: {message}")]
    Device {
        /// The device asked for (e.g. `cuda`).
        device: String,
        /// Why it cannot be used.
        message: String,
    },
    /// Invalid parameters (sampling, scoring, the kernels to run).
    #[error("{field}: {message}")]
    Parameter {
        /// The parameter.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The forward pass computed NaN or an infinity (weights holding NaN, say).
    #[error(
        "the model computed a non-finite {what} ({value}); its weights may hold NaN or infinity"
    )]
    NonFinite {
        /// What was not finite, e.g. `log-probability`.
        what: &'static str,
        /// The value.
        value: f32,
    },
    /// A tensor read back from the backend had an unexpected type (an internal invariant).
    #[error("backend data error while reading {what}: {source}")]
    Backend {
        /// What was being read (logits, log-probabilities, KV rows).
        what: &'static str,
        /// Burn's error.
        #[source]
        source: burn::tensor::DataError,
    },
}

impl ModelError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn param(field: &'static str, message: impl Into<String>) -> Self {
        ModelError::Parameter {
            field,
            message: message.into(),
        }
    }
}
