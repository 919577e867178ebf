//! Typed errors of the engine.

use thiserror::Error;

/// Result alias of this crate.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// Everything that can go wrong while scheduling or running an auction.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The model failed (loading, tokenizing, a forward pass).
    #[error(transparent)]
    Model(#[from] llm_auction_model::ModelError),
    /// The mechanism rejected its input.
    #[error(transparent)]
    Mechanism(#[from] llm_auction_mechanism::Error),
    /// A token list that must not be empty is (a prompt, a context).
    #[error("{field}: must contain at least one token")]
    EmptyInput {
        /// The list, e.g. `prompt`.
        field: String,
    },
    /// A token id outside the model's vocabulary.
    #[error("{field}: token {token} is outside the vocabulary of {vocab}")]
    TokenOutOfVocab {
        /// Where the token was, e.g. `continuation` or `decider`.
        field: String,
        /// The id.
        token: u64,
        /// The vocabulary size.
        vocab: usize,
    },
    /// A text holds a control token of the chat template that the backend cannot encode as text.
    #[error(
        "{field}: the text holds {token:?}, a control token of the model's chat template, which {backend} cannot encode as plain text; remove it"
    )]
    ControlToken {
        /// The text's field.
        field: String,
        /// The control token.
        token: String,
        /// The backend, e.g. `a vLLM server`.
        backend: String,
    },
    /// A request can never fit, even alone.
    #[error("request needs {needed} KV blocks but the engine has {available}")]
    KvCapacity {
        /// Blocks needed.
        needed: usize,
        /// Blocks in the engine.
        available: usize,
    },
    /// A sequence does not fit in the model's context.
    #[error("sequence of {len} tokens exceeds the model's context of {max} tokens")]
    PromptTooLong {
        /// Prompt plus tokens to generate or score.
        len: usize,
        /// The context length.
        max: usize,
    },
    /// The engine configuration is unusable.
    #[error("engine configuration: {0}")]
    Config(String),
    /// An invariant of the engine broke (a bug, not a caller's mistake); the message says which.
    #[error("internal error: {0}")]
    Internal(String),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A model backend failed or answered something unusable.
    #[error("model {model}: {message}")]
    Backend {
        /// The models-file entry.
        model: String,
        /// What went wrong.
        message: String,
    },
    /// A remote server failed (after any retries) or answered something unusable.
    #[error("{kind} at {url}: {message}")]
    Remote {
        /// `vllm` or `llama-server`.
        kind: String,
        /// The base URL of the replica (the last one tried).
        url: String,
        /// What went wrong.
        message: String,
    },
    /// An error of the model behind some of an auction's roles.
    #[error("{roles} (model {entry}): {error}")]
    Role {
        /// The roles served by that model.
        roles: String,
        /// The models-file entry.
        entry: String,
        /// The model's error.
        error: Box<EngineError>,
    },
    /// An error of one item of a list or map the caller gave (`advertisers[2]`).
    #[error("{field}: {error}")]
    InField {
        /// The item, e.g. `advertisers[2]`.
        field: String,
        /// Its error.
        #[source]
        error: Box<EngineError>,
    },
    /// A role names a model entry that does not exist or was not instantiated.
    #[error("model {name:?}: {message}")]
    Entry {
        /// The entry's name.
        name: String,
        /// Why it is not available.
        message: String,
    },
    /// A models file is unusable.
    #[error("{file}: {message}")]
    ModelsFile {
        /// The file.
        file: String,
        /// What is wrong, naming the entry and the field.
        message: String,
    },
    /// The request was aborted (cancelled by its caller, or its deadline passed).
    #[error("aborted: {0}")]
    Aborted(String),
    /// The forward pass that carried the request failed.
    #[error("forward pass failed: {0}")]
    Forward(String),
    /// An auction's input is unusable (e.g. no advertisers).
    #[error("{field}: {message}")]
    Auction {
        /// The offending input (`advertisers[2]`, `advertiser_models.Acme`, `m`).
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl EngineError {
    /// Whether the caller's input (arguments, request body, models file) is at fault rather than a
    /// model, a server or the engine: the HTTP service answers these with 400, Python raises
    /// `ValueError` for them. A role's error is classified by the error inside it.
    pub fn is_caller_error(&self) -> bool {
        use llm_auction_model::ModelError;
        match self {
            EngineError::Role { error, .. } | EngineError::InField { error, .. } => {
                error.is_caller_error()
            }
            EngineError::Model(m) => matches!(
                m,
                ModelError::Parameter { .. }
                    | ModelError::PromptTooLong { .. }
                    | ModelError::UnknownToken { .. }
            ),
            EngineError::Auction { .. }
            | EngineError::Mechanism(_)
            | EngineError::PromptTooLong { .. }
            | EngineError::EmptyInput { .. }
            | EngineError::TokenOutOfVocab { .. }
            | EngineError::ControlToken { .. }
            | EngineError::KvCapacity { .. }
            | EngineError::Entry { .. }
            | EngineError::ModelsFile { .. }
            | EngineError::Config(_) => true,
            _ => false,
        }
    }

    /// The error inside any [`EngineError::Role`] and [`EngineError::InField`] wrappers.
    pub fn root(&self) -> &EngineError {
        match self {
            EngineError::Role { error, .. } | EngineError::InField { error, .. } => error.root(),
            e => e,
        }
    }
}

impl From<llm_auction_model::chat::ChatError> for EngineError {
    fn from(e: llm_auction_model::chat::ChatError) -> Self {
        EngineError::Model(e.into())
    }
}
