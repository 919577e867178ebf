//! The GGUF type tables: metadata value types ([`MetaValue`] and the numeric type ids of the
//! format), ggml tensor element types ([`GgmlType`] with every id's name and block layout) and
//! the per-tensor record ([`TensorInfo`]).

use std::fmt;

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
pub(super) const T_U8: u32 = 0;
pub(super) const T_I8: u32 = 1;
pub(super) const T_U16: u32 = 2;
pub(super) const T_I16: u32 = 3;
pub(super) const T_U32: u32 = 4;
pub(super) const T_I32: u32 = 5;
pub(super) const T_F32: u32 = 6;
pub(super) const T_BOOL: u32 = 7;
pub(super) const T_STRING: u32 = 8;
pub(super) const T_ARRAY: u32 = 9;
pub(super) const T_U64: u32 = 10;
pub(super) const T_I64: u32 = 11;
pub(super) const T_F64: u32 = 12;

/// Smallest number of bytes an encoded value of this type can occupy, or
/// `None` for an unknown type id.
pub(super) fn min_encoded_size(type_id: u32) -> Option<u64> {
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
    pub(super) fn as_integer(&self) -> Option<i128> {
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
pub(super) fn array_type_name(elem_type: u32) -> &'static str {
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

    /// Whether [`super::dequant::dequantize`] can decode this type.
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
