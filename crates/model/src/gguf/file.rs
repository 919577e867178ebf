//! [`GgufFile`]: an opened, validated GGUF file and its typed accessors for metadata and
//! tensor data. The structure is read and checked by [`super::parse`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::path::Path;

use super::parse::parse_layout;
use super::types::array_type_name;
use super::{GgmlType, GgufError, MetaValue, TensorInfo, dequant, invalid};
use crate::mapped::FileBytes;

/// An opened and validated GGUF file.
///
/// All structural validation happens in [`GgufFile::open`] /
/// [`GgufFile::from_bytes`]: afterwards every tensor of a type with a known
/// layout is guaranteed to lie inside the file, aligned, with a row length
/// that is a multiple of its block size.
pub struct GgufFile {
    storage: FileBytes,
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
            .field("file_len", &self.storage.len())
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
        let storage = FileBytes::open(path).map_err(|source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(storage)
    }

    /// Parses and validates a GGUF file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, GgufError> {
        Self::parse(FileBytes::Owned(bytes))
    }

    fn parse(storage: FileBytes) -> Result<Self, GgufError> {
        let parsed = parse_layout(&storage)?;
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
        let file_len = self.storage.len();
        self.storage
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

/// Calls every accessor of `f` on every metadata key and every tensor, discarding the results: the
/// body of the hostile-input tests and of the `gguf_bytes` fuzz target, which check that nothing
/// panics or allocates beyond the input's size.
#[cfg(any(test, feature = "testing"))]
pub fn read_every_accessor(f: &GgufFile) {
    let _ = (f.version(), f.alignment(), f.data_offset());
    for key in f.metadata().keys() {
        let _ = f.get_str(key);
        let _ = f.get_u64(key);
        let _ = f.get_f32(key);
        let _ = f.get_bool(key);
        let _ = f.get_str_array(key);
        let _ = f.get_i64_array(key);
        let _ = f.get_f32_array(key);
    }
    for t in f.tensors() {
        let _ = (t.shape(), t.n_elements(), f.tensor_info(&t.name));
        let _ = f.tensor_bytes(&t.name);
        let _ = f.tensor_f32(&t.name);
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
