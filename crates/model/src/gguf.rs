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
pub mod writer;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

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

fn invalid(what: impl Into<String>) -> GgufError {
    GgufError::Invalid { what: what.into() }
}

/// A metadata value as stored in a GGUF file.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    /// `u8` (type id 0).
    U8(u8),
    /// `i8` (type id 1).
    I8(i8),
    /// `u16` (type id 2).
    U16(u16),
    /// `i16` (type id 3).
    I16(i16),
    /// `u32` (type id 4).
    U32(u32),
    /// `i32` (type id 5).
    I32(i32),
    /// `f32` (type id 6).
    F32(f32),
    /// Boolean stored as one byte, 0 or 1 (type id 7).
    Bool(bool),
    /// UTF-8 string (type id 8).
    String(String),
    /// Homogeneous array (type id 9); arrays may nest.
    Array(Vec<MetaValue>),
    /// `u64` (type id 10).
    U64(u64),
    /// `i64` (type id 11).
    I64(i64),
    /// `f64` (type id 12).
    F64(f64),
}

// GGUF metadata value type ids.
const T_U8: u32 = 0;
const T_I8: u32 = 1;
const T_U16: u32 = 2;
const T_I16: u32 = 3;
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;
const T_U64: u32 = 10;
const T_I64: u32 = 11;
const T_F64: u32 = 12;

/// Smallest number of bytes an encoded value of this type can occupy, or
/// `None` for an unknown type id.
fn min_encoded_size(type_id: u32) -> Option<u64> {
    Some(match type_id {
        T_U8 | T_I8 | T_BOOL => 1,
        T_U16 | T_I16 => 2,
        T_U32 | T_I32 | T_F32 => 4,
        T_U64 | T_I64 | T_F64 | T_STRING => 8,
        // element type (u32) + count (u64)
        T_ARRAY => 12,
        _ => return None,
    })
}

/// Name used in error messages for a metadata value type id.
fn value_type_name(type_id: u32) -> &'static str {
    match type_id {
        T_U8 => "u8",
        T_I8 => "i8",
        T_U16 => "u16",
        T_I16 => "i16",
        T_U32 => "u32",
        T_I32 => "i32",
        T_F32 => "f32",
        T_BOOL => "bool",
        T_STRING => "string",
        T_ARRAY => "array",
        T_U64 => "u64",
        T_I64 => "i64",
        T_F64 => "f64",
        _ => "unknown",
    }
}

impl MetaValue {
    /// Short name of the value's type: `"u8"`, `"i8"`, `"u16"`, `"i16"`,
    /// `"u32"`, `"i32"`, `"f32"`, `"bool"`, `"string"`, `"array"`, `"u64"`,
    /// `"i64"` or `"f64"`.
    pub fn type_name(&self) -> &'static str {
        value_type_name(self.type_id())
    }

    /// The GGUF value type id of this value (0 = u8 ... 12 = f64).
    pub fn type_id(&self) -> u32 {
        match self {
            MetaValue::U8(_) => T_U8,
            MetaValue::I8(_) => T_I8,
            MetaValue::U16(_) => T_U16,
            MetaValue::I16(_) => T_I16,
            MetaValue::U32(_) => T_U32,
            MetaValue::I32(_) => T_I32,
            MetaValue::F32(_) => T_F32,
            MetaValue::Bool(_) => T_BOOL,
            MetaValue::String(_) => T_STRING,
            MetaValue::Array(_) => T_ARRAY,
            MetaValue::U64(_) => T_U64,
            MetaValue::I64(_) => T_I64,
            MetaValue::F64(_) => T_F64,
        }
    }

    /// The value as an `i128` if it is an integer of any width.
    fn as_integer(&self) -> Option<i128> {
        Some(match *self {
            MetaValue::U8(v) => v.into(),
            MetaValue::I8(v) => v.into(),
            MetaValue::U16(v) => v.into(),
            MetaValue::I16(v) => v.into(),
            MetaValue::U32(v) => v.into(),
            MetaValue::I32(v) => v.into(),
            MetaValue::U64(v) => v.into(),
            MetaValue::I64(v) => v.into(),
            _ => return None,
        })
    }
}

/// Name used in `WrongKeyType` errors for an array whose elements have the
/// given type id.
fn array_type_name(elem_type: u32) -> &'static str {
    match elem_type {
        T_U8 => "array of u8",
        T_I8 => "array of i8",
        T_U16 => "array of u16",
        T_I16 => "array of i16",
        T_U32 => "array of u32",
        T_I32 => "array of i32",
        T_F32 => "array of f32",
        T_BOOL => "array of bool",
        T_STRING => "array of string",
        T_ARRAY => "array of array",
        T_U64 => "array of u64",
        T_I64 => "array of i64",
        T_F64 => "array of f64",
        _ => "array",
    }
}

/// A ggml tensor element type.
///
/// Only the types that can be dequantised have their own variant; every
/// other id is carried as [`GgmlType::Other`]. [`GgmlType::from_id`] always
/// produces the dedicated variant for known ids, so construct values through
/// it (a hand-built `Other(0)` is treated like `F32` by this module anyway).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    /// 32-bit IEEE float (id 0).
    F32,
    /// 16-bit IEEE half float (id 1).
    F16,
    /// 4-bit blocks of 32 with an f16 scale (id 2).
    Q4_0,
    /// 4-bit blocks of 32 with an f16 scale and f16 minimum (id 3).
    Q4_1,
    /// 8-bit blocks of 32 with an f16 scale (id 8).
    Q8_0,
    /// bfloat16 (id 30).
    BF16,
    /// Any other ggml type id (not dequantisable by this module).
    Other(u32),
}

/// ggml type names for ids `0..=39`, with the block size (elements) and
/// block byte size where the layout is known. Removed types keep their
/// historical names but have no layout.
const GGML_TYPES: [(&str, Option<(usize, usize)>); 40] = [
    ("F32", Some((1, 4))),
    ("F16", Some((1, 2))),
    ("Q4_0", Some((32, 18))),
    ("Q4_1", Some((32, 20))),
    ("Q4_2", None),
    ("Q4_3", None),
    ("Q5_0", Some((32, 22))),
    ("Q5_1", Some((32, 24))),
    ("Q8_0", Some((32, 34))),
    ("Q8_1", Some((32, 36))),
    ("Q2_K", Some((256, 84))),
    ("Q3_K", Some((256, 110))),
    ("Q4_K", Some((256, 144))),
    ("Q5_K", Some((256, 176))),
    ("Q6_K", Some((256, 210))),
    ("Q8_K", Some((256, 292))),
    ("IQ2_XXS", Some((256, 66))),
    ("IQ2_XS", Some((256, 74))),
    ("IQ3_XXS", Some((256, 98))),
    ("IQ1_S", Some((256, 50))),
    ("IQ4_NL", Some((32, 18))),
    ("IQ3_S", Some((256, 110))),
    ("IQ2_S", Some((256, 82))),
    ("IQ4_XS", Some((256, 136))),
    ("I8", Some((1, 1))),
    ("I16", Some((1, 2))),
    ("I32", Some((1, 4))),
    ("I64", Some((1, 8))),
    ("F64", Some((1, 8))),
    ("IQ1_M", Some((256, 56))),
    ("BF16", Some((1, 2))),
    ("Q4_0_4_4", None),
    ("Q4_0_4_8", None),
    ("Q4_0_8_8", None),
    ("TQ1_0", Some((256, 54))),
    ("TQ2_0", Some((256, 66))),
    ("IQ4_NL_4_4", None),
    ("IQ4_NL_4_8", None),
    ("IQ4_NL_8_8", None),
    ("MXFP4", Some((32, 17))),
];

impl GgmlType {
    /// Maps a raw ggml type id to a `GgmlType`.
    pub fn from_id(id: u32) -> Self {
        match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            30 => GgmlType::BF16,
            other => GgmlType::Other(other),
        }
    }

    /// The raw ggml type id.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q8_0 => 8,
            GgmlType::BF16 => 30,
            GgmlType::Other(id) => id,
        }
    }

    fn table_entry(self) -> Option<&'static (&'static str, Option<(usize, usize)>)> {
        usize::try_from(self.id())
            .ok()
            .and_then(|i| GGML_TYPES.get(i))
    }

    /// The ggml name of the type (`"F32"`, `"Q4_1"`, `"Q5_K"`, ...), or
    /// `"type N"` for ids this module does not know.
    pub fn name(self) -> String {
        match self.table_entry() {
            Some((name, _)) => (*name).to_string(),
            None => format!("type {}", self.id()),
        }
    }

    /// Number of elements per block (1 for plain float/int types), or `None`
    /// when the type's layout is unknown (removed or unknown ids).
    pub fn block_size(self) -> Option<usize> {
        self.table_entry().and_then(|(_, l)| *l).map(|(n, _)| n)
    }

    /// Number of bytes per block, or `None` when the type's layout is
    /// unknown (removed or unknown ids).
    pub fn block_bytes(self) -> Option<usize> {
        self.table_entry().and_then(|(_, l)| *l).map(|(_, b)| b)
    }

    /// Whether [`dequant::dequantize`] can decode this type.
    pub fn is_supported(self) -> bool {
        !matches!(GgmlType::from_id(self.id()), GgmlType::Other(_))
    }

    /// Number of bytes `n_elements` elements of this type occupy, or `None`
    /// if the layout is unknown, `n_elements` is not a multiple of the block
    /// size, or the result overflows.
    pub fn bytes_for(self, n_elements: u64) -> Option<u64> {
        let bs = u64::try_from(self.block_size()?).ok()?;
        let bb = u64::try_from(self.block_bytes()?).ok()?;
        if !n_elements.is_multiple_of(bs) {
            return None;
        }
        (n_elements / bs).checked_mul(bb)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Description of one tensor stored in a GGUF file.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// Tensor name, e.g. `"blk.0.attn_q.weight"`.
    pub name: String,
    /// Dimensions in GGUF `ne` order: `ne[0]` varies fastest (row length).
    pub dims: Vec<u64>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Offset of the tensor's data relative to the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Total number of elements (product of `dims`; saturates at `u64::MAX`,
    /// which cannot happen for tensors of a successfully opened file).
    pub fn n_elements(&self) -> u64 {
        self.dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .unwrap_or(u64::MAX)
    }

    /// Row-major shape as HF/PyTorch would write it: `dims` reversed, e.g.
    /// `ne = [576, 49152]` gives `[49152, 576]`. Dimensions that do not fit
    /// in `usize` saturate (only possible on 32-bit targets).
    pub fn shape(&self) -> Vec<usize> {
        self.dims
            .iter()
            .rev()
            .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
            .collect()
    }
}

/// Bytes backing a [`GgufFile`].
enum Storage {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn as_slice(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// An opened and validated GGUF file.
///
/// All structural validation happens in [`GgufFile::open`] /
/// [`GgufFile::from_bytes`]: afterwards every tensor of a type with a known
/// layout is guaranteed to lie inside the file, aligned, with a row length
/// that is a multiple of its block size.
pub struct GgufFile {
    storage: Storage,
    version: u32,
    alignment: u64,
    data_start: u64,
    metadata: BTreeMap<String, MetaValue>,
    tensors: Vec<TensorInfo>,
    index: HashMap<String, usize>,
    /// Absolute byte range of each tensor's data (parallel to `tensors`);
    /// `None` for types whose layout is unknown.
    ranges: Vec<Option<Range<usize>>>,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("alignment", &self.alignment)
            .field("data_start", &self.data_start)
            .field("file_len", &self.storage.as_slice().len())
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps `path`, parses the header, metadata and tensor infos, and
    /// validates that every tensor's byte range is aligned and lies inside
    /// the file.
    ///
    /// The mapping is read-only; as with any memory map, the file must not be
    /// truncated or modified by another process while the `GgufFile` lives.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let io_err = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        let storage = if len == 0 {
            // Mapping an empty file is not portable; it is invalid anyway.
            Storage::Owned(Vec::new())
        } else {
            // SAFETY: the map is read-only and only ever read through safe
            // slices with bounds checks; the documented contract of `open` is
            // that the file is not modified while mapped.
            #[allow(unsafe_code)]
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err)?;
            Storage::Mapped(map)
        };
        Self::parse(storage)
    }

    /// Parses and validates a GGUF file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, GgufError> {
        Self::parse(Storage::Owned(bytes))
    }

    fn parse(storage: Storage) -> Result<Self, GgufError> {
        let parsed = parse_layout(storage.as_slice())?;
        Ok(GgufFile {
            storage,
            version: parsed.version,
            alignment: parsed.alignment,
            data_start: parsed.data_start,
            metadata: parsed.metadata,
            tensors: parsed.tensors,
            index: parsed.index,
            ranges: parsed.ranges,
        })
    }

    /// GGUF format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Alignment of the data section: `general.alignment` or 32.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute file offset at which the data section starts.
    pub fn data_offset(&self) -> u64 {
        self.data_start
    }

    /// All metadata key/value pairs, sorted by key.
    pub fn metadata(&self) -> &BTreeMap<String, MetaValue> {
        &self.metadata
    }

    /// All tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The info of the tensor called `name`, if present.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).and_then(|&i| self.tensors.get(i))
    }

    fn get(&self, key: &str) -> Result<&MetaValue, GgufError> {
        self.metadata.get(key).ok_or_else(|| GgufError::MissingKey {
            key: key.to_string(),
        })
    }

    /// The string value of `key`.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        match self.get(key)? {
            MetaValue::String(s) => Ok(s),
            other => Err(wrong_type(key, "string", other)),
        }
    }

    /// The value of `key` as `u64`; any integer type is accepted as long as
    /// the value is non-negative (a negative value gives
    /// [`GgufError::Invalid`]).
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self.get(key)?;
        let i = v
            .as_integer()
            .ok_or_else(|| wrong_type(key, "unsigned integer", v))?;
        u64::try_from(i)
            .map_err(|_| invalid(format!("metadata key '{key}' = {i} does not fit in u64")))
    }

    /// The value of `key` as `f32`; accepts `F32` and `F64` (rounded).
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        match *self.get(key)? {
            MetaValue::F32(v) => Ok(v),
            MetaValue::F64(v) => Ok(v as f32),
            ref other => Err(wrong_type(key, "f32", other)),
        }
    }

    /// The boolean value of `key`.
    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        match *self.get(key)? {
            MetaValue::Bool(v) => Ok(v),
            ref other => Err(wrong_type(key, "bool", other)),
        }
    }

    fn get_array(&self, key: &str, expected: &'static str) -> Result<&[MetaValue], GgufError> {
        match self.get(key)? {
            MetaValue::Array(items) => Ok(items),
            other => Err(wrong_type(key, expected, other)),
        }
    }

    /// The value of `key` as a list of strings (an array of strings).
    pub fn get_str_array(&self, key: &str) -> Result<Vec<String>, GgufError> {
        const EXPECTED: &str = "array of string";
        self.get_array(key, EXPECTED)?
            .iter()
            .map(|item| match item {
                MetaValue::String(s) => Ok(s.clone()),
                other => Err(wrong_array_type(key, EXPECTED, other)),
            })
            .collect()
    }

    /// The value of `key` as a list of `i64`; the array may hold any integer
    /// type (a `u64` above `i64::MAX` gives [`GgufError::Invalid`]).
    pub fn get_i64_array(&self, key: &str) -> Result<Vec<i64>, GgufError> {
        const EXPECTED: &str = "array of integers";
        self.get_array(key, EXPECTED)?
            .iter()
            .map(|item| {
                let i = item
                    .as_integer()
                    .ok_or_else(|| wrong_array_type(key, EXPECTED, item))?;
                i64::try_from(i).map_err(|_| {
                    invalid(format!(
                        "metadata key '{key}' holds {i}, which does not fit in i64"
                    ))
                })
            })
            .collect()
    }

    /// The value of `key` as a list of `f32`; the array may hold `F32` or
    /// `F64` (rounded) elements.
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>, GgufError> {
        const EXPECTED: &str = "array of f32";
        self.get_array(key, EXPECTED)?
            .iter()
            .map(|item| match *item {
                MetaValue::F32(v) => Ok(v),
                MetaValue::F64(v) => Ok(v as f32),
                ref other => Err(wrong_array_type(key, EXPECTED, other)),
            })
            .collect()
    }

    fn lookup(&self, name: &str) -> Result<(&TensorInfo, Option<&Range<usize>>), GgufError> {
        let i = *self
            .index
            .get(name)
            .ok_or_else(|| GgufError::MissingTensor {
                name: name.to_string(),
            })?;
        match (self.tensors.get(i), self.ranges.get(i)) {
            (Some(info), Some(range)) => Ok((info, range.as_ref())),
            _ => Err(GgufError::MissingTensor {
                name: name.to_string(),
            }),
        }
    }

    /// The raw bytes of tensor `name` as stored in the file.
    ///
    /// Works for every type with a known layout, including ones that cannot
    /// be dequantised (e.g. `Q4_K`); types with an unknown layout give
    /// [`GgufError::UnsupportedTensorType`].
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8], GgufError> {
        let (info, range) = self.lookup(name)?;
        let range = range.ok_or_else(|| unsupported_type(name, info.ggml_type))?;
        let file_len = self.storage.as_slice().len();
        self.storage
            .as_slice()
            .get(range.clone())
            .ok_or_else(|| GgufError::Truncated {
                what: format!("tensor '{name}' data"),
                offset: range.start as u64,
                needed: range.len() as u64,
                file_len: file_len as u64,
            })
    }

    /// Dequantised data of one tensor, row-major in `info.shape()` order.
    pub fn tensor_f32(&self, name: &str) -> Result<Vec<f32>, GgufError> {
        let (info, _) = self.lookup(name)?;
        if !info.ggml_type.is_supported() {
            return Err(unsupported_type(name, info.ggml_type));
        }
        let n = usize::try_from(info.n_elements()).map_err(|_| {
            invalid(format!(
                "tensor '{name}' has too many elements for this platform"
            ))
        })?;
        let bytes = self.tensor_bytes(name)?;
        dequant::dequantize(info.ggml_type, bytes, n, name)
    }
}

fn wrong_type(key: &str, expected: &'static str, found: &MetaValue) -> GgufError {
    GgufError::WrongKeyType {
        key: key.to_string(),
        expected,
        found: found.type_name(),
    }
}

fn wrong_array_type(key: &str, expected: &'static str, element: &MetaValue) -> GgufError {
    GgufError::WrongKeyType {
        key: key.to_string(),
        expected,
        found: array_type_name(element.type_id()),
    }
}

fn unsupported_type(name: &str, ty: GgmlType) -> GgufError {
    GgufError::UnsupportedTensorType {
        name: name.to_string(),
        ggml_type: ty.id(),
        type_name: ty.name(),
    }
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/// Bounds-checked little-endian reader over the file bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    fn remaining(&self) -> u64 {
        self.buf.len().saturating_sub(self.pos) as u64
    }

    fn truncated(&self, what: String, needed: u64) -> GgufError {
        GgufError::Truncated {
            what,
            offset: self.pos as u64,
            needed,
            file_len: self.buf.len() as u64,
        }
    }

    /// Takes `n` bytes, or fails with `Truncated` naming `what`.
    fn take(&mut self, n: u64, what: impl FnOnce() -> String) -> Result<&'a [u8], GgufError> {
        let slice = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .and_then(|end| Some((end, self.buf.get(self.pos..end)?)));
        match slice {
            Some((end, s)) => {
                self.pos = end;
                Ok(s)
            }
            None => Err(self.truncated(what(), n)),
        }
    }

    fn array<const N: usize>(
        &mut self,
        what: impl FnOnce() -> String,
    ) -> Result<[u8; N], GgufError> {
        let chunk = self
            .buf
            .get(self.pos..)
            .and_then(|rest| rest.first_chunk::<N>());
        match chunk {
            Some(c) => {
                self.pos += N;
                Ok(*c)
            }
            None => Err(self.truncated(what(), N as u64)),
        }
    }

    fn u8(&mut self, what: impl FnOnce() -> String) -> Result<u8, GgufError> {
        self.array::<1>(what).map(|[b]| b)
    }

    fn u16(&mut self, what: impl FnOnce() -> String) -> Result<u16, GgufError> {
        self.array(what).map(u16::from_le_bytes)
    }

    fn u32(&mut self, what: impl FnOnce() -> String) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: impl FnOnce() -> String) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// Reads a GGUF string (u64 length + UTF-8 bytes).
    fn string(&mut self, what: impl Fn() -> String) -> Result<&'a str, GgufError> {
        let len = self.u64(&what)?;
        let bytes = self.take(len, &what)?;
        std::str::from_utf8(bytes)
            .map_err(|e| invalid(format!("{} is not valid UTF-8: {e}", what())))
    }

    /// Fails with `Truncated` unless `count` items of at least `min_size`
    /// bytes each can still fit in the rest of the file.
    fn check_count(
        &self,
        count: u64,
        min_size: u64,
        what: impl FnOnce() -> String,
    ) -> Result<usize, GgufError> {
        let needed = count.saturating_mul(min_size);
        if needed > self.remaining() {
            return Err(self.truncated(what(), needed));
        }
        // `count <= remaining <= usize::MAX` here (min_size >= 1).
        usize::try_from(count).map_err(|_| self.truncated(what(), needed))
    }
}

struct Layout {
    version: u32,
    alignment: u64,
    data_start: u64,
    metadata: BTreeMap<String, MetaValue>,
    tensors: Vec<TensorInfo>,
    index: HashMap<String, usize>,
    ranges: Vec<Option<Range<usize>>>,
}

/// Smallest possible encoded metadata key/value pair: empty key (8), type
/// (4), one-byte value (1).
const MIN_KV_BYTES: u64 = 13;
/// Smallest possible tensor info: empty name (8), n_dims (4), one dim (8),
/// type (4), offset (8).
const MIN_TENSOR_INFO_BYTES: u64 = 32;
/// Most dimensions a ggml tensor can have.
const MAX_DIMS: u32 = 4;

fn parse_layout(buf: &[u8]) -> Result<Layout, GgufError> {
    let file_len = buf.len() as u64;
    let mut cur = Cursor::new(buf);

    let magic: [u8; 4] = cur.array(|| "magic".to_string())?;
    if magic != GGUF_MAGIC {
        return Err(GgufError::BadMagic { found: magic });
    }
    let version = cur.u32(|| "version".to_string())?;
    if version != 2 && version != 3 {
        return Err(GgufError::UnsupportedVersion { version });
    }
    let n_tensors = cur.u64(|| "tensor count".to_string())?;
    let n_kv = cur.u64(|| "metadata count".to_string())?;

    let n_kv = cur.check_count(n_kv, MIN_KV_BYTES, || {
        format!("metadata ({n_kv} key/value pairs)")
    })?;
    let mut metadata = BTreeMap::new();
    for i in 0..n_kv {
        let key = cur.string(|| format!("metadata key {i}"))?;
        let value_type = cur.u32(|| format!("type of metadata key '{key}'"))?;
        let value = read_value(&mut cur, value_type, key, 0)?;
        if metadata.insert(key.to_string(), value).is_some() {
            return Err(invalid(format!("duplicate metadata key '{key}'")));
        }
    }

    let alignment = match metadata.get(ALIGNMENT_KEY) {
        None => DEFAULT_ALIGNMENT,
        Some(MetaValue::U32(a)) if a.is_power_of_two() => u64::from(*a),
        Some(MetaValue::U32(a)) => {
            return Err(invalid(format!(
                "{ALIGNMENT_KEY} is {a}, which is not a non-zero power of two"
            )));
        }
        Some(other) => {
            return Err(invalid(format!(
                "{ALIGNMENT_KEY} has type {}, expected u32",
                other.type_name()
            )));
        }
    };

    let n_tensors = cur.check_count(n_tensors, MIN_TENSOR_INFO_BYTES, || {
        format!("tensor infos ({n_tensors} tensors)")
    })?;
    let mut tensors = Vec::with_capacity(n_tensors);
    let mut index = HashMap::with_capacity(n_tensors);
    for i in 0..n_tensors {
        let name = cur.string(|| format!("tensor {i} name"))?;
        let info_what = || format!("tensor '{name}' info");
        let n_dims = cur.u32(info_what)?;
        if !(1..=MAX_DIMS).contains(&n_dims) {
            return Err(invalid(format!(
                "tensor '{name}' has {n_dims} dimensions (must be 1..={MAX_DIMS})"
            )));
        }
        let mut dims = Vec::with_capacity(MAX_DIMS as usize);
        for _ in 0..n_dims {
            dims.push(cur.u64(info_what)?);
        }
        let ggml_type = GgmlType::from_id(cur.u32(info_what)?);
        let offset = cur.u64(info_what)?;
        let n_elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= i64::MAX as u64);
        if n_elements.is_none() {
            return Err(invalid(format!(
                "tensor '{name}' dimensions {dims:?} overflow"
            )));
        }
        if index.insert(name.to_string(), i).is_some() {
            return Err(invalid(format!("duplicate tensor name '{name}'")));
        }
        tensors.push(TensorInfo {
            name: name.to_string(),
            dims,
            ggml_type,
            offset,
        });
    }

    let data_start = (cur.pos as u64)
        .checked_next_multiple_of(alignment)
        .ok_or_else(|| invalid("data section offset overflows"))?;

    let ranges = tensors
        .iter()
        .map(|t| tensor_range(t, data_start, alignment, file_len))
        .collect::<Result<Vec<_>, _>>()?;
    // Tensors lie in the data section in the order they are declared, each after the previous
    // one's end (as every GGUF writer lays them out): overlapping data would alias two tensors.
    let mut previous: Option<(usize, &str)> = None;
    for (t, r) in tensors.iter().zip(&ranges) {
        let Some(r) = r else { continue };
        if let Some((end, before)) = previous
            && r.start < end
        {
            return Err(invalid(format!(
                "tensor '{}' data starts before the end of tensor '{before}' (overlapping or \
                 out-of-order tensor data)",
                t.name
            )));
        }
        previous = Some((r.end, &t.name));
    }

    Ok(Layout {
        version,
        alignment,
        data_start,
        metadata,
        tensors,
        index,
        ranges,
    })
}

/// Validates one tensor's placement and returns its absolute byte range
/// (`None` if its type's layout is unknown, in which case only the start is
/// checked).
fn tensor_range(
    t: &TensorInfo,
    data_start: u64,
    alignment: u64,
    file_len: u64,
) -> Result<Option<Range<usize>>, GgufError> {
    let name = &t.name;
    if !t.offset.is_multiple_of(alignment) {
        return Err(invalid(format!(
            "tensor '{name}' offset {} is not a multiple of the alignment {alignment}",
            t.offset
        )));
    }
    let start = data_start
        .checked_add(t.offset)
        .ok_or_else(|| invalid(format!("tensor '{name}' offset {} overflows", t.offset)))?;
    let data_what = || format!("tensor '{name}' data");
    let (Some(block_size), Some(_)) = (t.ggml_type.block_size(), t.ggml_type.block_bytes()) else {
        if start > file_len {
            return Err(GgufError::Truncated {
                what: data_what(),
                offset: start,
                needed: 0,
                file_len,
            });
        }
        return Ok(None);
    };
    let row_len = t.dims.first().copied().unwrap_or(1);
    if !row_len.is_multiple_of(block_size as u64) {
        return Err(invalid(format!(
            "tensor '{name}' row length {row_len} is not a multiple of the {} block size {block_size}",
            t.ggml_type
        )));
    }
    let size = t
        .ggml_type
        .bytes_for(t.n_elements())
        .ok_or_else(|| invalid(format!("tensor '{name}' byte size overflows")))?;
    let end = start
        .checked_add(size)
        .ok_or_else(|| invalid(format!("tensor '{name}' byte range overflows")))?;
    if end > file_len {
        return Err(GgufError::Truncated {
            what: data_what(),
            offset: start,
            needed: size,
            file_len,
        });
    }
    // Both bounds are <= file_len, which is a slice length, so they fit.
    match (usize::try_from(start), usize::try_from(end)) {
        (Ok(s), Ok(e)) => Ok(Some(s..e)),
        _ => Err(invalid(format!("tensor '{name}' byte range overflows"))),
    }
}

/// Reads one metadata value of type `value_type` belonging to `key`.
fn read_value(
    cur: &mut Cursor<'_>,
    value_type: u32,
    key: &str,
    depth: usize,
) -> Result<MetaValue, GgufError> {
    let what = || format!("value of metadata key '{key}'");
    Ok(match value_type {
        T_U8 => MetaValue::U8(cur.u8(what)?),
        T_I8 => MetaValue::I8(i8::from_le_bytes(cur.array(what)?)),
        T_U16 => MetaValue::U16(cur.u16(what)?),
        T_I16 => MetaValue::I16(i16::from_le_bytes(cur.array(what)?)),
        T_U32 => MetaValue::U32(cur.u32(what)?),
        T_I32 => MetaValue::I32(i32::from_le_bytes(cur.array(what)?)),
        T_F32 => MetaValue::F32(f32::from_le_bytes(cur.array(what)?)),
        T_BOOL => match cur.u8(what)? {
            0 => MetaValue::Bool(false),
            1 => MetaValue::Bool(true),
            b => {
                return Err(invalid(format!(
                    "metadata key '{key}' has bool value {b} (must be 0 or 1)"
                )));
            }
        },
        T_STRING => MetaValue::String(cur.string(what)?.to_string()),
        T_U64 => MetaValue::U64(cur.u64(what)?),
        T_I64 => MetaValue::I64(i64::from_le_bytes(cur.array(what)?)),
        T_F64 => MetaValue::F64(f64::from_le_bytes(cur.array(what)?)),
        T_ARRAY => {
            if depth >= MAX_ARRAY_DEPTH {
                return Err(invalid(format!(
                    "metadata key '{key}' nests arrays deeper than {MAX_ARRAY_DEPTH} levels"
                )));
            }
            let elem_type = cur.u32(what)?;
            let min_size = min_encoded_size(elem_type).ok_or_else(|| {
                invalid(format!(
                    "metadata key '{key}' has unknown array element type {elem_type}"
                ))
            })?;
            let count = cur.u64(what)?;
            let count = cur.check_count(count, min_size, what)?;
            let mut items = Vec::with_capacity(count);
            for _ in 0..count {
                items.push(read_value(cur, elem_type, key, depth + 1)?);
            }
            MetaValue::Array(items)
        }
        other => {
            return Err(invalid(format!(
                "metadata key '{key}' has unknown value type {other}"
            )));
        }
    })
}

// ---------------------------------------------------------------------------
// RoPE row permutation
// ---------------------------------------------------------------------------

fn check_rope_args(
    data: &[f32],
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
    if expected != Some(data.len()) {
        return Err(invalid(format!(
            "RoPE permutation: {} values do not form a [{n_heads} heads * {head_dim}, {cols}] matrix",
            data.len()
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
    check_rope_args(data, n_heads, head_dim, cols)?;
    let half = head_dim / 2;
    // HF row r = h*hd + j*half + i comes from GGUF row h*hd + 2*i + j.
    Ok(gather_rows(data, cols, |r| {
        let (h, within) = (r / head_dim, r % head_dim);
        let (j, i) = (within / half, within % half);
        h * head_dim + 2 * i + j
    }))
}

/// The inverse of [`unpermute_rope_rows`] (HF -> GGUF row order), for the
/// test writer. `data` is row-major `[n_heads*hd, cols]`.
///
/// Errors with [`GgufError::Invalid`] if `head_dim` is odd or `data` does not
/// have `n_heads * head_dim * cols` elements.
pub fn permute_rope_rows(
    data: &[f32],
    n_heads: usize,
    head_dim: usize,
    cols: usize,
) -> Result<Vec<f32>, GgufError> {
    check_rope_args(data, n_heads, head_dim, cols)?;
    let half = head_dim / 2;
    // GGUF row r = h*hd + 2*i + j comes from HF row h*hd + j*half + i.
    Ok(gather_rows(data, cols, |r| {
        let (h, within) = (r / head_dim, r % head_dim);
        let (i, j) = (within / 2, within % 2);
        h * head_dim + j * half + i
    }))
}

#[cfg(test)]
mod tests {
    use super::writer::GgufWriter;
    use super::*;

    /// Small deterministic PRNG (splitmix64) so tests need no extra crates.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next_u64() % n as u64) as usize
        }

        /// Uniform in [-1, 1).
        fn f32(&mut self) -> f32 {
            (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        }
    }

    fn all_meta() -> Vec<(&'static str, MetaValue)> {
        use MetaValue::*;
        vec![
            ("t.u8", U8(200)),
            ("t.i8", I8(-100)),
            ("t.u16", U16(60000)),
            ("t.i16", I16(-30000)),
            ("t.u32", U32(4_000_000_000)),
            ("t.i32", I32(-2_000_000_000)),
            ("t.f32", F32(-3.25e-5)),
            ("t.bool_true", Bool(true)),
            ("t.bool_false", Bool(false)),
            ("t.string", String("héllo wörld ✓ 日本語 🦀".into())),
            ("t.empty_string", String(std::string::String::new())),
            ("t.u64", U64(u64::MAX)),
            ("t.i64", I64(i64::MIN)),
            ("t.f64", F64(-1.5e300)),
            ("t.arr_u8", Array(vec![U8(0), U8(255)])),
            ("t.arr_i32", Array(vec![I32(-1), I32(7), I32(i32::MAX)])),
            ("t.arr_f32", Array(vec![F32(0.5), F32(-1.0)])),
            ("t.arr_bool", Array(vec![Bool(true), Bool(false)])),
            (
                "t.arr_str",
                Array(vec![
                    String("a".into()),
                    String("Ġthe".into()),
                    String("日本".into()),
                ]),
            ),
            ("t.arr_empty", Array(vec![])),
            (
                "t.arr_nested",
                Array(vec![
                    Array(vec![U16(1), U16(2)]),
                    Array(vec![String("ü".into())]),
                    Array(vec![]),
                    Array(vec![Array(vec![F64(2.5)])]),
                ]),
            ),
            ("t.arr_u64", Array(vec![U64(1), U64(u64::MAX)])),
            ("t.arr_i64", Array(vec![I64(-5), I64(5)])),
            ("t.arr_f64", Array(vec![F64(1e-300)])),
            ("t.arr_i8", Array(vec![I8(-128)])),
            ("t.arr_i16", Array(vec![I16(-2)])),
            ("t.arr_u16", Array(vec![U16(9)])),
            ("t.arr_u32", Array(vec![U32(3), U32(4)])),
            ("ключ.日本", String("non-ASCII key".into())),
        ]
    }

    const TYPES: [GgmlType; 6] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
    ];

    /// Asserts `got` reconstructs `orig` within the precision of `ty`.
    fn assert_close(ty: GgmlType, name: &str, orig: &[f32], got: &[f32]) {
        assert_eq!(orig.len(), got.len(), "{name}");
        match ty {
            GgmlType::F32 => assert_eq!(orig, got, "{name}"),
            GgmlType::F16 | GgmlType::BF16 => {
                let rel = if ty == GgmlType::F16 {
                    2f32.powi(-11)
                } else {
                    2f32.powi(-8)
                };
                for (a, b) in orig.iter().zip(got) {
                    assert!((a - b).abs() <= a.abs() * rel + 1e-7, "{name}: {a} vs {b}");
                }
            }
            _ => {
                for (bi, (xs, ys)) in orig.chunks(32).zip(got.chunks(32)).enumerate() {
                    let min = xs.iter().copied().fold(f32::INFINITY, f32::min);
                    let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let extreme = xs
                        .iter()
                        .fold(0f32, |e, &v| if v.abs() > e.abs() { v } else { e });
                    for (x, y) in xs.iter().zip(ys) {
                        let tol = match ty {
                            GgmlType::Q8_0 => amax / 127.0 / 2.0 * 1.002 + 1e-6,
                            GgmlType::Q4_0 => {
                                let d = extreme / -8.0;
                                // The value opposite to the extreme may be clamped to +7.
                                let step = if d != 0.0 && x / d > 7.5 { 1.0 } else { 0.5 };
                                d.abs() * step * 1.002 + 1e-6
                            }
                            _ => (max - min) / 15.0 / 2.0 * 1.002 + min.abs() * 1e-3 + 1e-6,
                        };
                        assert!(
                            (x - y).abs() <= tol,
                            "{name} block {bi}: {x} vs {y} (tol {tol})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn round_trip_all_metadata_and_tensor_types() {
        let mut w = GgufWriter::new();
        for (k, v) in all_meta() {
            w.add_meta(k, v);
        }
        let mut rng = Rng(42);
        let mut expected = Vec::new();
        for ty in TYPES {
            for shape in [vec![64], vec![3, 96], vec![2, 2, 32]] {
                let n: usize = shape.iter().product();
                let mut data: Vec<f32> = (0..n).map(|_| rng.f32() * 3.0).collect();
                if n >= 96 {
                    // an all-zero block, a constant block and a tiny-valued block
                    data[..32].fill(0.0);
                    data[32..64].fill(1.5);
                    for v in &mut data[64..96] {
                        *v *= 1e-3;
                    }
                }
                let name = format!("{}.{}d", ty.name(), shape.len());
                w.add_tensor(&name, &shape, &data, ty).unwrap();
                expected.push((name, shape, data, ty));
            }
        }
        let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
        assert_eq!(f.version(), 3);
        assert_eq!(f.alignment(), 32);
        assert_eq!(f.data_offset() % 32, 0);

        let meta = all_meta();
        assert_eq!(f.metadata().len(), meta.len());
        for (k, v) in &meta {
            assert_eq!(f.metadata().get(*k), Some(v), "{k}");
        }

        let names: Vec<&str> = f.tensors().iter().map(|t| t.name.as_str()).collect();
        let expected_names: Vec<&str> = expected.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, expected_names);
        for (name, shape, data, ty) in &expected {
            let info = f.tensor_info(name).unwrap();
            assert_eq!(&info.shape(), shape);
            let ne: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
            assert_eq!(info.dims, ne);
            assert_eq!(info.ggml_type, *ty);
            assert_eq!(info.n_elements(), data.len() as u64);
            assert_eq!(info.offset % 32, 0);
            let bytes = f.tensor_bytes(name).unwrap();
            assert_eq!(Some(bytes.len() as u64), ty.bytes_for(info.n_elements()));
            let got = f.tensor_f32(name).unwrap();
            assert_close(*ty, name, data, &got);
            if data.len() >= 96 {
                assert_eq!(&got[..32], &data[..32], "{name}: zero block");
                if *ty != GgmlType::Q8_0 {
                    // Q8_0 stores 1.5 as 127 * f16(1.5 / 127), which is inexact.
                    assert_eq!(&got[32..64], &data[32..64], "{name}: constant block");
                }
            }
        }
    }

    #[test]
    fn file_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<GgufFile>();
        assert_send_sync::<GgufError>();
    }

    #[test]
    fn shape_reverses_ne() {
        let t = TensorInfo {
            name: "token_embd.weight".into(),
            dims: vec![576, 49152],
            ggml_type: GgmlType::Q8_0,
            offset: 0,
        };
        assert_eq!(t.shape(), vec![49152, 576]);
        assert_eq!(t.n_elements(), 576 * 49152);
    }

    #[test]
    fn two_d_layout_is_row_major() {
        // shape [2, 3] = [[0, 1, 2], [3, 4, 5]] -> ne = [3, 2]
        let data = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        let mut w = GgufWriter::new();
        w.add_tensor("m", &[2, 3], &data, GgmlType::F32).unwrap();
        let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
        assert_eq!(f.tensor_info("m").unwrap().dims, vec![3, 2]);
        assert_eq!(f.tensor_f32("m").unwrap(), data);
        let raw = f.tensor_bytes("m").unwrap();
        assert_eq!(&raw[4..8], &1.0f32.to_le_bytes());
    }

    #[test]
    fn custom_alignment_round_trips() {
        let mut w = GgufWriter::new();
        w.add_meta(ALIGNMENT_KEY, MetaValue::U32(64));
        w.add_tensor("a", &[3], &[1.0, 2.0, 3.0], GgmlType::F32)
            .unwrap();
        // amax = 127 -> d = 1, so every integer value is exact
        let b: Vec<f32> = (0..32)
            .map(|j| if j == 0 { 127.0 } else { j as f32 - 16.0 })
            .collect();
        w.add_tensor("b", &[32], &b, GgmlType::Q8_0).unwrap();
        let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
        assert_eq!(f.alignment(), 64);
        assert_eq!(f.data_offset() % 64, 0);
        assert_eq!(f.tensor_info("b").unwrap().offset, 64);
        assert_eq!(f.tensor_f32("a").unwrap(), [1.0, 2.0, 3.0]);
        assert_eq!(f.tensor_f32("b").unwrap(), b);
    }

    fn sample_file() -> Vec<u8> {
        let mut w = GgufWriter::new();
        w.add_meta("general.architecture", MetaValue::String("llama".into()));
        w.add_meta("llama.block_count", MetaValue::U32(2));
        w.add_meta("llama.rope.freq_base", MetaValue::F32(10000.0));
        w.add_meta(
            "tokenizer.ggml.tokens",
            MetaValue::Array(vec![
                MetaValue::String("<s>".into()),
                MetaValue::String("é".into()),
            ]),
        );
        w.add_meta(
            "tokenizer.ggml.scores",
            MetaValue::Array(vec![MetaValue::F32(0.0), MetaValue::F32(-1.0)]),
        );
        w.add_meta(
            "nested",
            MetaValue::Array(vec![MetaValue::Array(vec![MetaValue::I64(3)])]),
        );
        w.add_meta("flag", MetaValue::Bool(true));
        let data: Vec<f32> = (0..64).map(|i| i as f32 / 8.0 - 4.0).collect();
        w.add_tensor("norm.weight", &[8], &data[..8], GgmlType::F32)
            .unwrap();
        w.add_tensor("blk.0.attn_q.weight", &[2, 32], &data, GgmlType::Q8_0)
            .unwrap();
        w.add_tensor("blk.0.ffn.weight", &[32], &data[..32], GgmlType::Q4_1)
            .unwrap();
        w.to_bytes()
    }

    #[test]
    fn versions_2_and_3_readable_others_rejected() {
        for v in [2, 3] {
            let mut w = GgufWriter::new().with_version(v);
            w.add_meta("k", MetaValue::U8(1));
            w.add_tensor("t", &[4], &[1.0, 2.0, 3.0, 4.0], GgmlType::F16)
                .unwrap();
            let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
            assert_eq!(f.version(), v);
            assert_eq!(f.tensor_f32("t").unwrap(), [1.0, 2.0, 3.0, 4.0]);
        }
        for v in [0, 1, 4, 0x0300_0000] {
            let bytes = GgufWriter::new().with_version(v).to_bytes();
            match GgufFile::from_bytes(bytes) {
                Err(GgufError::UnsupportedVersion { version }) => assert_eq!(version, v),
                other => panic!("version {v}: {other:?}"),
            }
        }
        let msg = GgufError::UnsupportedVersion { version: 1 }.to_string();
        assert!(msg.contains("version 1"), "{msg}");
    }

    #[test]
    fn bad_magic_rejected() {
        let mut bytes = sample_file();
        bytes[..4].copy_from_slice(b"GGML");
        match GgufFile::from_bytes(bytes) {
            Err(e @ GgufError::BadMagic { found }) => {
                assert_eq!(&found, b"GGML");
                assert!(e.to_string().contains("not a GGUF file"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_prefix_is_truncated() {
        let bytes = sample_file();
        assert!(GgufFile::from_bytes(bytes.clone()).is_ok());
        for len in 0..bytes.len() {
            match GgufFile::from_bytes(bytes[..len].to_vec()) {
                Err(GgufError::Truncated {
                    offset,
                    needed,
                    file_len,
                    ..
                }) => {
                    assert_eq!(file_len, len as u64);
                    assert!(offset.saturating_add(needed) > file_len, "prefix {len}");
                }
                other => panic!("prefix {len}: {other:?}"),
            }
        }
    }

    #[test]
    fn random_header_mutations_never_panic() {
        let original = sample_file();
        let header_len = GgufFile::from_bytes(original.clone())
            .unwrap()
            .data_offset() as usize;
        let mut rng = Rng(0x5EED);
        let mut ok = 0;
        let start = std::time::Instant::now();
        for _ in 0..4000 {
            let mut bytes = original.clone();
            for _ in 0..1 + rng.below(4) {
                let pos = rng.below(header_len);
                match rng.below(4) {
                    0 => bytes[pos] = rng.next_u64() as u8,
                    1 => bytes[pos] ^= 1 << rng.below(8),
                    2 => bytes[pos] = 0xFF,
                    _ => {
                        let v = [0, 1, 1 << 32, 1 << 60, u64::MAX, rng.next_u64()][rng.below(6)];
                        let pos = pos.min(header_len - 8);
                        bytes[pos..pos + 8].copy_from_slice(&v.to_le_bytes());
                    }
                }
            }
            if let Ok(f) = GgufFile::from_bytes(bytes) {
                ok += 1;
                for t in f.tensors() {
                    let _ = f.tensor_bytes(&t.name);
                    let _ = f.tensor_f32(&t.name);
                    let _ = t.shape();
                }
                for key in f.metadata().keys() {
                    let _ = f.get_str(key);
                    let _ = f.get_u64(key);
                    let _ = f.get_f32(key);
                    let _ = f.get_str_array(key);
                    let _ = f.get_i64_array(key);
                    let _ = f.get_f32_array(key);
                }
            }
        }
        assert!(
            ok > 0,
            "some mutations (e.g. in string bytes) should stay valid"
        );
        assert!(start.elapsed().as_secs() < 60, "fuzz loop too slow");
    }

    /// Hand-assembled GGUF bytes for hostile-input tests.
    struct Raw(Vec<u8>);

    impl Raw {
        fn new(version: u32, n_tensors: u64, n_kv: u64) -> Self {
            let mut v = b"GGUF".to_vec();
            v.extend(version.to_le_bytes());
            v.extend(n_tensors.to_le_bytes());
            v.extend(n_kv.to_le_bytes());
            Raw(v)
        }
        fn u8(mut self, x: u8) -> Self {
            self.0.push(x);
            self
        }
        fn u32(mut self, x: u32) -> Self {
            self.0.extend(x.to_le_bytes());
            self
        }
        fn u64(mut self, x: u64) -> Self {
            self.0.extend(x.to_le_bytes());
            self
        }
        fn bytes(mut self, b: &[u8]) -> Self {
            self.0.extend(b);
            self
        }
        fn str(self, s: &str) -> Self {
            self.u64(s.len() as u64).bytes(s.as_bytes())
        }
        fn tensor(mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> Self {
            self = self.str(name).u32(dims.len() as u32);
            for &d in dims {
                self = self.u64(d);
            }
            self.u32(ty).u64(offset)
        }
        fn pad(mut self, align: usize) -> Self {
            while !self.0.len().is_multiple_of(align) {
                self.0.push(0);
            }
            self
        }
        fn parse(self) -> Result<GgufFile, GgufError> {
            GgufFile::from_bytes(self.0)
        }
    }

    fn assert_invalid(r: Result<GgufFile, GgufError>, needle: &str) {
        match r {
            Err(GgufError::Invalid { what }) => assert!(what.contains(needle), "{what}"),
            other => panic!("expected Invalid containing {needle:?}, got {other:?}"),
        }
    }

    fn assert_truncated(r: Result<GgufFile, GgufError>, needle: &str) {
        match r {
            Err(GgufError::Truncated { what, .. }) => assert!(what.contains(needle), "{what}"),
            other => panic!("expected Truncated containing {needle:?}, got {other:?}"),
        }
    }

    #[test]
    fn overlapping_or_out_of_order_tensor_data_is_refused() {
        // Regression: a tensor whose data overlapped another's loaded, aliasing the two.
        let two = |second_offset: u64, first_offset: u64| {
            Raw::new(3, 2, 0)
                .tensor("a", &[8], 0, first_offset)
                .tensor("b", &[8], 0, second_offset)
                .pad(32)
                .bytes(&[0u8; 96])
                .parse()
        };
        assert!(two(32, 0).is_ok());
        assert_invalid(two(0, 0), "overlapping");
        assert_invalid(two(0, 32), "out-of-order");
    }

    #[test]
    fn huge_lengths_and_counts_fail_fast() {
        // key length 2^60
        let r = Raw::new(3, 0, 1).u64(1 << 60).bytes(&[0; 64]).parse();
        match r {
            Err(GgufError::Truncated { what, needed, .. }) => {
                assert_eq!(what, "metadata key 0");
                assert_eq!(needed, 1 << 60);
            }
            other => panic!("{other:?}"),
        }
        // string value length u64::MAX
        let r = Raw::new(3, 0, 1).str("k").u32(8).u64(u64::MAX).parse();
        assert_truncated(r, "value of metadata key 'k'");
        // metadata count 2^60 / tensor count 2^60
        assert_truncated(
            Raw::new(3, 0, 1 << 60).bytes(&[0; 100]).parse(),
            "key/value",
        );
        assert_truncated(
            Raw::new(3, 1 << 60, 0).bytes(&[0; 100]).parse(),
            "tensor infos",
        );
        assert_truncated(Raw::new(3, u64::MAX, u64::MAX).parse(), "metadata");
        // array of 2^60 u64 / strings / arrays
        for elem in [10, 8, 9] {
            let r = Raw::new(3, 0, 1)
                .str("arr")
                .u32(9)
                .u32(elem)
                .u64(1 << 60)
                .parse();
            assert_truncated(r, "metadata key 'arr'");
        }
        // tensor name length 2^60
        assert_truncated(
            Raw::new(3, 1, 0).u64(1 << 60).bytes(&[0; 64]).parse(),
            "tensor 0 name",
        );
    }

    #[test]
    fn deeply_nested_arrays_rejected_without_stack_overflow() {
        let mut raw = Raw::new(3, 0, 1).str("deep").u32(9);
        for _ in 0..100_000 {
            raw = raw.u32(9).u64(1);
        }
        raw = raw.u32(0).u64(0);
        assert_invalid(raw.parse(), "nests arrays deeper");
        // MAX_ARRAY_DEPTH levels are fine
        let mut raw = Raw::new(3, 0, 1).str("ok").u32(9);
        for _ in 0..MAX_ARRAY_DEPTH - 1 {
            raw = raw.u32(9).u64(1);
        }
        let f = raw.u32(0).u64(1).u8(7).parse().unwrap();
        let mut v = f.metadata().get("ok").unwrap();
        for _ in 0..MAX_ARRAY_DEPTH {
            match v {
                MetaValue::Array(items) => v = &items[0],
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(v, &MetaValue::U8(7));
    }

    #[test]
    fn malformed_metadata_rejected() {
        assert_invalid(
            Raw::new(3, 0, 1).str("k").u32(17).u32(0).parse(),
            "unknown value type 17",
        );
        assert_invalid(
            Raw::new(3, 0, 1).str("k").u32(9).u32(13).u64(0).parse(),
            "unknown array element type 13",
        );
        assert_invalid(
            Raw::new(3, 0, 1).str("k").u32(7).u8(2).parse(),
            "bool value 2",
        );
        assert_invalid(
            Raw::new(3, 0, 1)
                .u64(2)
                .bytes(&[0xC3, 0x28])
                .u32(0)
                .u8(0)
                .parse(),
            "not valid UTF-8",
        );
        assert_invalid(
            Raw::new(3, 0, 1).str("k").u32(8).u64(1).u8(0xFF).parse(),
            "not valid UTF-8",
        );
        assert_invalid(
            Raw::new(3, 0, 2)
                .str("k")
                .u32(0)
                .u8(1)
                .str("k")
                .u32(0)
                .u8(2)
                .parse(),
            "duplicate metadata key 'k'",
        );
    }

    #[test]
    fn bad_alignment_rejected() {
        for a in [0u32, 3, 48] {
            let r = Raw::new(3, 0, 1).str(ALIGNMENT_KEY).u32(4).u32(a).parse();
            assert_invalid(r, "power of two");
        }
        let r = Raw::new(3, 0, 1).str(ALIGNMENT_KEY).u32(10).u64(32).parse();
        assert_invalid(r, "expected u32");
    }

    #[test]
    fn malformed_tensor_infos_rejected() {
        for n_dims in [0u32, 5] {
            let r = Raw::new(3, 1, 0)
                .str("t")
                .u32(n_dims)
                .bytes(&[0; 64])
                .parse();
            assert_invalid(r, "dimensions (must be 1..=4)");
        }
        let r = Raw::new(3, 1, 0)
            .tensor("t", &[1 << 32, 1 << 32, 1 << 32], 0, 0)
            .parse();
        assert_invalid(r, "overflow");
        let r = Raw::new(3, 1, 0).tensor("t", &[1 << 63], 0, 0).parse();
        assert_invalid(r, "overflow");
        let r = Raw::new(3, 1, 0)
            .tensor("t", &[4], 0, 4)
            .pad(32)
            .bytes(&[0; 64])
            .parse();
        assert_invalid(r, "not a multiple of the alignment");
        let r = Raw::new(3, 2, 0)
            .tensor("t", &[4], 0, 0)
            .tensor("t", &[4], 0, 32)
            .pad(32)
            .bytes(&[0; 64])
            .parse();
        assert_invalid(r, "duplicate tensor name 't'");
        let r = Raw::new(3, 1, 0)
            .tensor("q", &[16, 2], 8, 0)
            .pad(32)
            .bytes(&[0; 34])
            .parse();
        assert_invalid(r, "row length 16");
        let r = Raw::new(3, 1, 0)
            .tensor("t", &[4], 0, u64::MAX - 31)
            .parse();
        assert_invalid(r, "overflows");
        let r = Raw::new(3, 1, 0)
            .tensor("big", &[1 << 40], 0, 0)
            .pad(32)
            .bytes(&[0; 64])
            .parse();
        match r {
            Err(GgufError::Truncated { what, needed, .. }) => {
                assert_eq!(what, "tensor 'big' data");
                assert_eq!(needed, 4 << 40);
            }
            other => panic!("{other:?}"),
        }
        // bad UTF-8 tensor name
        let r = Raw::new(3, 1, 0)
            .u64(1)
            .u8(0x80)
            .u32(1)
            .u64(1)
            .u32(0)
            .u64(0)
            .parse();
        assert_invalid(r, "tensor 0 name is not valid UTF-8");
    }

    #[test]
    fn zero_tensors_and_empty_tensors_ok() {
        let f = Raw::new(3, 0, 0).parse().unwrap();
        assert!(f.tensors().is_empty());
        assert!(f.metadata().is_empty());
        let f = Raw::new(3, 1, 0)
            .tensor("e", &[0, 5], 2, 0)
            .pad(32)
            .parse()
            .unwrap();
        assert!(f.tensor_f32("e").unwrap().is_empty());
        assert_eq!(f.tensor_info("e").unwrap().shape(), vec![5, 0]);
    }

    #[test]
    fn unsupported_tensor_type_reported_on_access() {
        let mut w = GgufWriter::new();
        w.add_tensor("ok", &[2], &[1.0, 2.0], GgmlType::F32)
            .unwrap();
        w.add_raw_tensor(
            "blk.0.ffn_down.weight",
            &[256, 2],
            GgmlType::from_id(12),
            vec![7; 288],
        )
        .unwrap();
        w.add_raw_tensor("weird", &[3], GgmlType::from_id(99), vec![1, 2, 3])
            .unwrap();
        let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
        let info = f.tensor_info("blk.0.ffn_down.weight").unwrap();
        assert_eq!(info.ggml_type, GgmlType::Other(12));
        assert_eq!(info.ggml_type.name(), "Q4_K");
        let err = f.tensor_f32("blk.0.ffn_down.weight").unwrap_err();
        match &err {
            GgufError::UnsupportedTensorType {
                name,
                ggml_type,
                type_name,
            } => {
                assert_eq!(name, "blk.0.ffn_down.weight");
                assert_eq!(*ggml_type, 12);
                assert_eq!(type_name, "Q4_K");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            err.to_string()
                .contains("'blk.0.ffn_down.weight' has type Q4_K (12)")
        );
        // Raw bytes of a known layout are still available.
        assert_eq!(
            f.tensor_bytes("blk.0.ffn_down.weight").unwrap(),
            &[7; 288][..]
        );
        // Unknown layouts cannot even give bytes.
        for r in [
            f.tensor_f32("weird").map(|_| ()),
            f.tensor_bytes("weird").map(|_| ()),
        ] {
            match r {
                Err(GgufError::UnsupportedTensorType { type_name, .. }) => {
                    assert_eq!(type_name, "type 99")
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(f.tensor_f32("ok").unwrap(), [1.0, 2.0]);
        assert!(matches!(
            f.tensor_f32("nope"),
            Err(GgufError::MissingTensor { name }) if name == "nope"
        ));
        assert!(matches!(
            f.tensor_bytes("nope"),
            Err(GgufError::MissingTensor { .. })
        ));
        assert!(f.tensor_info("nope").is_none());
    }

    #[test]
    fn ggml_type_names_and_layouts() {
        let cases = [
            (0, "F32", Some(1), Some(4)),
            (1, "F16", Some(1), Some(2)),
            (2, "Q4_0", Some(32), Some(18)),
            (3, "Q4_1", Some(32), Some(20)),
            (4, "Q4_2", None, None),
            (8, "Q8_0", Some(32), Some(34)),
            (12, "Q4_K", Some(256), Some(144)),
            (13, "Q5_K", Some(256), Some(176)),
            (14, "Q6_K", Some(256), Some(210)),
            (30, "BF16", Some(1), Some(2)),
            (39, "MXFP4", Some(32), Some(17)),
            (40, "type 40", None, None),
            (u32::MAX, "type 4294967295", None, None),
        ];
        for (id, name, bs, bb) in cases {
            let t = GgmlType::from_id(id);
            assert_eq!(t.id(), id);
            assert_eq!(t.name(), name);
            assert_eq!(t.to_string(), name);
            assert_eq!(t.block_size(), bs, "{name}");
            assert_eq!(t.block_bytes(), bb, "{name}");
        }
        for id in 0..64 {
            assert_eq!(GgmlType::from_id(id).id(), id);
        }
        assert_eq!(GgmlType::from_id(8), GgmlType::Q8_0);
        assert_eq!(GgmlType::from_id(30), GgmlType::BF16);
        assert!(GgmlType::Other(1).is_supported());
        assert!(!GgmlType::Other(12).is_supported());
        assert_eq!(GgmlType::Q4_0.bytes_for(64), Some(36));
        assert_eq!(GgmlType::Q4_0.bytes_for(33), None);
    }

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
        let mut rng = Rng(7);
        for (heads, hd, cols) in [(1, 2, 1), (3, 8, 5), (4, 64, 3), (2, 6, 0), (0, 4, 3)] {
            let x: Vec<f32> = (0..heads * hd * cols).map(|_| rng.f32()).collect();
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

    #[test]
    fn typed_getters() {
        let mut w = GgufWriter::new();
        for (k, v) in all_meta() {
            w.add_meta(k, v);
        }
        w.add_meta("neg", MetaValue::I32(-1));
        w.add_meta("pos_i8", MetaValue::I8(5));
        w.add_meta("f64_arr", MetaValue::Array(vec![MetaValue::F64(0.25)]));
        let f = GgufFile::from_bytes(w.to_bytes()).unwrap();

        assert_eq!(f.get_str("t.string").unwrap(), "héllo wörld ✓ 日本語 🦀");
        assert_eq!(f.get_u64("t.u8").unwrap(), 200);
        assert_eq!(f.get_u64("t.u32").unwrap(), 4_000_000_000);
        assert_eq!(f.get_u64("t.u64").unwrap(), u64::MAX);
        assert_eq!(f.get_u64("pos_i8").unwrap(), 5);
        assert_eq!(f.get_f32("t.f32").unwrap(), -3.25e-5);
        assert_eq!(f.get_f32("t.f64").unwrap(), f32::NEG_INFINITY);
        assert!(f.get_bool("t.bool_true").unwrap());
        assert!(!f.get_bool("t.bool_false").unwrap());
        assert_eq!(f.get_str_array("t.arr_str").unwrap(), ["a", "Ġthe", "日本"]);
        assert!(f.get_str_array("t.arr_empty").unwrap().is_empty());
        assert_eq!(
            f.get_i64_array("t.arr_i32").unwrap(),
            [-1, 7, i32::MAX as i64]
        );
        assert_eq!(f.get_i64_array("t.arr_u8").unwrap(), [0, 255]);
        assert_eq!(f.get_f32_array("t.arr_f32").unwrap(), [0.5, -1.0]);
        assert_eq!(f.get_f32_array("f64_arr").unwrap(), [0.25]);

        let wrong = |r: Result<(), GgufError>, exp: &str, found: &str| match r {
            Err(GgufError::WrongKeyType {
                expected, found: f, ..
            }) => {
                assert_eq!(expected, exp);
                assert_eq!(f, found);
            }
            other => panic!("{other:?}"),
        };
        wrong(f.get_str("t.u32").map(|_| ()), "string", "u32");
        wrong(
            f.get_u64("t.string").map(|_| ()),
            "unsigned integer",
            "string",
        );
        wrong(f.get_u64("t.f32").map(|_| ()), "unsigned integer", "f32");
        wrong(f.get_f32("t.u32").map(|_| ()), "f32", "u32");
        wrong(f.get_bool("t.u8").map(|_| ()), "bool", "u8");
        wrong(
            f.get_str_array("t.string").map(|_| ()),
            "array of string",
            "string",
        );
        wrong(
            f.get_str_array("t.arr_u32").map(|_| ()),
            "array of string",
            "array of u32",
        );
        wrong(
            f.get_i64_array("t.arr_f32").map(|_| ()),
            "array of integers",
            "array of f32",
        );
        wrong(
            f.get_f32_array("t.arr_i32").map(|_| ()),
            "array of f32",
            "array of i32",
        );
        wrong(
            f.get_f32_array("t.arr_nested").map(|_| ()),
            "array of f32",
            "array of array",
        );

        assert!(matches!(f.get_u64("neg"), Err(GgufError::Invalid { .. })));
        assert!(matches!(f.get_u64("t.i64"), Err(GgufError::Invalid { .. })));
        assert!(matches!(
            f.get_i64_array("t.arr_u64"),
            Err(GgufError::Invalid { .. })
        ));

        for r in [
            f.get_str("missing").map(|_| ()),
            f.get_u64("missing").map(|_| ()),
            f.get_f32("missing").map(|_| ()),
            f.get_bool("missing").map(|_| ()),
            f.get_str_array("missing").map(|_| ()),
            f.get_i64_array("missing").map(|_| ()),
            f.get_f32_array("missing").map(|_| ()),
        ] {
            assert!(matches!(r, Err(GgufError::MissingKey { ref key }) if key == "missing"));
        }
        let msg = f.get_str("t.u32").unwrap_err().to_string();
        assert_eq!(msg, "metadata key 't.u32' has type u32, expected string");
    }

    #[test]
    fn meta_value_type_names() {
        let names: Vec<&str> = all_meta().iter().map(|(_, v)| v.type_name()).collect();
        assert_eq!(
            &names[..14],
            [
                "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "bool", "string", "string",
                "u64", "i64", "f64"
            ]
        );
        assert_eq!(MetaValue::Array(vec![]).type_name(), "array");
    }

    #[test]
    fn open_reads_files_and_reports_io_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.gguf");
        std::fs::write(&path, sample_file()).unwrap();
        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
        assert_eq!(f.get_u64("llama.block_count").unwrap(), 2);
        assert_eq!(f.tensor_f32("norm.weight").unwrap().len(), 8);
        assert!(format!("{f:?}").contains("GgufFile"));

        let missing = dir.path().join("missing.gguf");
        let err = GgufFile::open(&missing).unwrap_err();
        assert!(matches!(err, GgufError::Io { ref path, .. } if path == &missing));
        assert!(
            err.to_string()
                .starts_with(&format!("cannot read {}: ", missing.display()))
        );

        let empty = dir.path().join("empty.gguf");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(
            GgufFile::open(&empty),
            Err(GgufError::Truncated { .. })
        ));
        assert!(matches!(
            GgufFile::open(dir.path()),
            Err(GgufError::Io { .. }) | Err(GgufError::Truncated { .. })
        ));
    }
}
