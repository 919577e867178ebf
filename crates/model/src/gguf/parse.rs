//! The GGUF container parser: a bounds-checked cursor over the file's bytes and the validation of
//! the header, metadata, tensor infos and tensor byte ranges. Every length and count read from the
//! file is checked against the bytes that are actually left before anything is allocated.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use super::types::{
    T_ARRAY, T_BOOL, T_F32, T_F64, T_I8, T_I16, T_I32, T_I64, T_STRING, T_U8, T_U16, T_U32, T_U64,
    min_encoded_size,
};
use super::{
    ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, GgmlType, GgufError, MAX_ARRAY_DEPTH, MetaValue,
    TensorInfo, invalid,
};

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

pub(super) struct Layout {
    pub(super) version: u32,
    pub(super) alignment: u64,
    pub(super) data_start: u64,
    pub(super) metadata: BTreeMap<String, MetaValue>,
    pub(super) tensors: Vec<TensorInfo>,
    pub(super) index: HashMap<String, usize>,
    pub(super) ranges: Vec<Option<Range<usize>>>,
}

/// Smallest possible encoded metadata key/value pair: empty key (8), type
/// (4), one-byte value (1).
const MIN_KV_BYTES: u64 = 13;
/// Smallest possible tensor info: empty name (8), n_dims (4), one dim (8),
/// type (4), offset (8).
const MIN_TENSOR_INFO_BYTES: u64 = 32;
/// Most dimensions a ggml tensor can have.
const MAX_DIMS: u32 = 4;

pub(super) fn parse_layout(buf: &[u8]) -> Result<Layout, GgufError> {
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
