//! The in-memory half of [`GgufWriter`] (test fixtures, the `testing` feature): tensors are
//! encoded and held in memory, then written as one file.

use std::path::Path;

use super::super::quant;
use super::{GgufWriter, invalid, pad_to};
use crate::gguf::{GgmlType, GgufError, MetaValue};

#[derive(Debug, Clone)]
pub(super) struct PendingTensor {
    name: String,
    /// GGUF `ne` order (fastest-varying first).
    dims: Vec<u64>,
    ggml_type: GgmlType,
    data: Vec<u8>,
}

impl GgufWriter {
    /// Adds (or replaces) a metadata entry (for fixtures whose metadata is known to be valid).
    ///
    /// # Panics
    ///
    /// Panics if `value` contains an array whose elements do not all have the
    /// same type, which GGUF cannot represent; use
    /// [`GgufWriter::try_add_meta`] to get an error instead.
    pub fn add_meta(&mut self, key: &str, value: MetaValue) {
        if let Err(e) = self.try_add_meta(key, value) {
            panic!("GgufWriter::add_meta: {e}");
        }
    }

    /// Adds a tensor given as row-major f32 data with HF shape (e.g.
    /// `[rows, cols]`); it is stored with `ne` = shape reversed and encoded
    /// as `ty` (F32, F16, BF16, Q8_0, Q4_0 or Q4_1).
    ///
    /// Errors with [`GgufError::Invalid`] if the shape has 0 or more than 4
    /// dimensions, does not match `data.len()`, the row length (last shape
    /// entry) is not a multiple of the block size, or the name is already
    /// used; with [`GgufError::UnsupportedTensorType`] for other types.
    pub fn add_tensor(
        &mut self,
        name: &str,
        shape: &[usize],
        data: &[f32],
        ty: GgmlType,
    ) -> Result<(), GgufError> {
        let ty = GgmlType::from_id(ty.id());
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        let n = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| invalid(format!("tensor '{name}': shape {shape:?} overflows")))?;
        if n != data.len() {
            return Err(invalid(format!(
                "tensor '{name}': shape {shape:?} needs {n} values, got {}",
                data.len()
            )));
        }
        let bytes = match ty {
            GgmlType::F32 => data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            GgmlType::F16 => quant::encode_f16(data),
            GgmlType::BF16 => quant::encode_bf16(data),
            GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1 => {
                self.check_dims(name, &dims, ty)?;
                match ty {
                    GgmlType::Q8_0 => quant::quantize_q8_0(data)?,
                    GgmlType::Q4_0 => quant::quantize_q4_0(data)?,
                    _ => quant::quantize_q4_1(data)?,
                }
            }
            GgmlType::Other(id) => {
                return Err(GgufError::UnsupportedTensorType {
                    name: name.to_string(),
                    ggml_type: id,
                    type_name: ty.name(),
                });
            }
        };
        self.add_raw_tensor(name, &dims, ty, bytes)
    }

    /// Adds a tensor from already-encoded bytes of any ggml type, with `dims`
    /// in GGUF `ne` order (fastest-varying first). For types with a known
    /// layout the byte length and row length are checked; for unknown types
    /// the bytes are written as given.
    pub fn add_raw_tensor(
        &mut self,
        name: &str,
        dims: &[u64],
        ty: GgmlType,
        data: Vec<u8>,
    ) -> Result<(), GgufError> {
        let ty = GgmlType::from_id(ty.id());
        self.check_dims(name, dims, ty)?;
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(invalid(format!("duplicate tensor name '{name}'")));
        }
        if ty.block_size().is_some() {
            let n = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| invalid(format!("tensor '{name}': dims {dims:?} overflow")))?;
            let expected = ty.bytes_for(n);
            if expected != Some(data.len() as u64) {
                return Err(invalid(format!(
                    "tensor '{name}': {n} elements of type {ty} need {expected:?} bytes, got {}",
                    data.len()
                )));
            }
        }
        self.tensors.push(PendingTensor {
            name: name.to_string(),
            dims: dims.to_vec(),
            ggml_type: ty,
            data,
        });
        Ok(())
    }

    /// Serialises the file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let infos = self.tensors.iter().map(|t| {
            (
                t.name.as_str(),
                t.dims.as_slice(),
                t.ggml_type,
                t.data.len() as u64,
            )
        });
        let (mut out, placements) = self.header(infos);
        for (t, p) in self.tensors.iter().zip(placements) {
            pad_to(&mut out, p.offset);
            out.extend_from_slice(&t.data);
        }
        out
    }

    /// Writes the file atomically ([`crate::atomic_file::write_atomic`]).
    ///
    /// # Errors
    /// The I/O error of writing the file.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        crate::atomic_file::write_atomic(path, &self.to_bytes())
    }

    /// Whether tensors were added in memory (a streamed header takes all its tensors from its
    /// argument).
    pub(super) fn holds_tensors(&self) -> bool {
        !self.tensors.is_empty()
    }
}
