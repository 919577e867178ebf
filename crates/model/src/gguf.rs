//! Reader for GGUF files, the model container format of llama.cpp / ggml.
//!
//! A GGUF file is little-endian and consists of
//!
//! 1. a header: magic `b"GGUF"`, format version (`u32`, 2 or 3 are
//!    supported), tensor count (`u64`) and metadata key/value count (`u64`);
//! 2. the metadata key/value pairs (key string, value type `u32`, value);
//! 3. one info record per tensor (name, number of dimensions, dimensions,
//!    ggml type, offset into the data section);
//! 4. padding up to `general.alignment` (default 32), then the data section
//!    holding every tensor at its (aligned) offset.
//!
//! [`GgufFile`] memory-maps a file (or takes an owned buffer), parses and
//! validates everything up front and then hands out metadata and tensor
//! data. Every length and count read from the file is checked against the
//! bytes that are actually left before anything is allocated, so hostile or
//! truncated files produce a [`GgufError`], never a panic or a huge
//! allocation. Tensor data can be dequantised to `f32` for the types listed
//! in [`dequant`]; [`writer`] builds small GGUF files (mainly for tests).

pub mod dequant;
mod file;
mod parse;
#[cfg(any(test, feature = "testing"))]
pub mod quant;
#[cfg(test)]
mod tests;
mod types;
pub mod writer;

pub use file::GgufFile;
#[cfg(any(test, feature = "testing"))]
pub use file::read_every_accessor;
pub use types::{GgmlType, MetaValue, TensorInfo};

use std::path::PathBuf;

/// The four magic bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";

/// Alignment of the data section and of tensor offsets when the file does not
/// set `general.alignment`.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// Metadata key that overrides [`DEFAULT_ALIGNMENT`].
pub const ALIGNMENT_KEY: &str = "general.alignment";

/// Deepest nesting of metadata arrays accepted by the reader. Real files use
/// at most one level; the limit keeps hostile files from exhausting the stack.
pub const MAX_ARRAY_DEPTH: usize = 16;

/// Errors produced while reading GGUF files or their contents.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The file could not be opened, inspected or memory-mapped.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The path that was being read.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The file does not start with the GGUF magic bytes.
    #[error("not a GGUF file (magic bytes {found:02x?}, expected \"GGUF\")")]
    BadMagic {
        /// The first four bytes of the file.
        found: [u8; 4],
    },
    /// The file uses a GGUF version other than 2 or 3.
    #[error("unsupported GGUF version {version} (only versions 2 and 3 are supported)")]
    UnsupportedVersion {
        /// The version found in the header.
        version: u32,
    },
    /// The file ends (or a tensor's data lies) beyond the end of the file.
    #[error(
        "GGUF file truncated: {what} needs {needed} bytes at offset {offset}, \
         but the file is only {file_len} bytes long"
    )]
    Truncated {
        /// What was being read, e.g. `"metadata key 12"`.
        what: String,
        /// Offset at which the read started.
        offset: u64,
        /// Number of bytes the read needed from `offset`.
        needed: u64,
        /// Total length of the file.
        file_len: u64,
    },
    /// The file is structurally invalid (bad UTF-8, unknown value type,
    /// overflowing dimensions, bad alignment, duplicate names, ...).
    #[error("invalid GGUF file: {what}")]
    Invalid {
        /// Description of the problem.
        what: String,
    },
    /// A tensor's data was requested but its ggml type cannot be decoded.
    #[error(
        "tensor '{name}' has type {type_name} ({ggml_type}), which is not supported \
         (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1)"
    )]
    UnsupportedTensorType {
        /// Name of the tensor.
        name: String,
        /// Raw ggml type id.
        ggml_type: u32,
        /// Human-readable ggml type name, e.g. `"Q5_K"`.
        type_name: String,
    },
    /// No tensor with this name exists in the file.
    #[error("tensor '{name}' not found in the GGUF file")]
    MissingTensor {
        /// The requested tensor name.
        name: String,
    },
    /// No metadata entry with this key exists in the file.
    #[error("metadata key '{key}' not found in the GGUF file")]
    MissingKey {
        /// The requested key.
        key: String,
    },
    /// A metadata entry exists but has a different type than requested.
    #[error("metadata key '{key}' has type {found}, expected {expected}")]
    WrongKeyType {
        /// The requested key.
        key: String,
        /// The type the caller asked for.
        expected: &'static str,
        /// The type stored in the file.
        found: &'static str,
    },
}

pub(crate) fn invalid(what: impl Into<String>) -> GgufError {
    GgufError::Invalid { what: what.into() }
}
