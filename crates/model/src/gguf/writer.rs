//! A small GGUF (v3 by default) writer: tests build tiny model files with it,
//! and `model export --format gguf-f32` writes whole models through
//! [`GgufWriter::streamed_header`], which lays a file out without holding
//! the tensor data in memory.
//!
//! Metadata is written in insertion order, tensors in the order they were
//! added. The data section starts at the first multiple of the alignment
//! after the tensor infos; every tensor starts at an aligned offset, and no
//! padding follows the last tensor. The alignment is 32 unless a valid
//! `general.alignment` (`u32`, non-zero power of two) was added with
//! [`GgufWriter::try_add_meta`].

use super::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, GgmlType, GgufError, MetaValue};

#[cfg(any(test, feature = "testing"))]
mod in_memory;

/// Builder for GGUF files: their header, streamed by [`GgufWriter::streamed_header`], or (with
/// the `testing` feature) whole files held in memory.
#[derive(Debug, Clone)]
pub struct GgufWriter {
    version: u32,
    metadata: Vec<(String, MetaValue)>,
    /// Tensors held in memory, written by `GgufWriter::to_bytes` (test fixtures only).
    #[cfg(any(test, feature = "testing"))]
    tensors: Vec<in_memory::PendingTensor>,
}

/// The info of a tensor whose bytes the caller writes itself, after the
/// header built by [`GgufWriter::streamed_header`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorHeader {
    /// Tensor name, e.g. `"blk.0.attn_q.weight"`.
    pub name: String,
    /// Dimensions in GGUF `ne` order (fastest-varying first).
    pub dims: Vec<u64>,
    /// Element type; its layout must be known (see [`GgmlType::bytes_for`]).
    pub ggml_type: GgmlType,
}

/// Where one tensor's bytes go in a file laid out by
/// [`GgufWriter::streamed_header`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorPlacement {
    /// Absolute file offset of the tensor's first byte.
    pub offset: u64,
    /// Number of bytes of the tensor.
    pub len: u64,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    /// A writer for GGUF version 3 with no metadata and no tensors.
    pub fn new() -> Self {
        GgufWriter {
            version: 3,
            metadata: Vec::new(),
            #[cfg(any(test, feature = "testing"))]
            tensors: Vec::new(),
        }
    }

    /// Sets the version number written in the header. Versions 2 and 3 share
    /// the layout this writer produces (u64 counts); any other value is
    /// written verbatim, which lets tests build files a reader must reject.
    pub fn with_version(mut self, v: u32) -> Self {
        self.version = v;
        self
    }

    /// Adds (or replaces) a metadata entry, failing with
    /// [`GgufError::Invalid`] if `value` contains a heterogeneous array.
    pub fn try_add_meta(&mut self, key: &str, value: MetaValue) -> Result<(), GgufError> {
        check_homogeneous(key, &value)?;
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.metadata.push((key.to_string(), value)),
        }
        Ok(())
    }

    /// Whether tensors were added in memory (only possible with the `testing` feature).
    #[cfg(not(any(test, feature = "testing")))]
    fn holds_tensors(&self) -> bool {
        false
    }

    fn check_dims(&self, name: &str, dims: &[u64], ty: GgmlType) -> Result<(), GgufError> {
        if dims.is_empty() || dims.len() > 4 {
            return Err(invalid(format!(
                "tensor '{name}' has {} dimensions (must be 1..=4)",
                dims.len()
            )));
        }
        if let (Some(bs), Some(&row)) = (ty.block_size(), dims.first())
            && !row.is_multiple_of(bs as u64)
        {
            return Err(invalid(format!(
                "tensor '{name}': row length {row} is not a multiple of the {ty} block size {bs}"
            )));
        }
        Ok(())
    }

    /// The alignment the file will use.
    fn alignment(&self) -> u64 {
        self.metadata
            .iter()
            .find(|(k, _)| k == ALIGNMENT_KEY)
            .and_then(|(_, v)| match v {
                MetaValue::U32(a) if a.is_power_of_two() => Some(u64::from(*a)),
                _ => None,
            })
            .unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// Lays out a file holding this writer's metadata and the tensors
    /// described by `tensors`, whose bytes the caller writes: returns the
    /// header (magic through the padding before the data section) and, per
    /// tensor, the absolute offset and length of its bytes. Writing the
    /// header, then for each tensor zero bytes up to its offset followed by
    /// exactly `len` bytes, gives the same file `GgufWriter::to_bytes`
    /// would.
    ///
    /// Errors with [`GgufError::Invalid`] if tensors were added to this
    /// writer with `GgufWriter::add_tensor` or `GgufWriter::add_raw_tensor`
    /// (a streamed file takes all its tensors from `tensors`), for a tensor
    /// with 0 or more than 4 dimensions, a row length that is not a multiple
    /// of the block size, a byte size that overflows, or a duplicate name; with
    /// [`GgufError::UnsupportedTensorType`] for a type whose layout is unknown.
    pub fn streamed_header(
        &self,
        tensors: &[TensorHeader],
    ) -> Result<(Vec<u8>, Vec<TensorPlacement>), GgufError> {
        if self.holds_tensors() {
            return Err(invalid(
                "streamed_header: the writer already holds tensors".to_string(),
            ));
        }
        let mut lens = Vec::with_capacity(tensors.len());
        let mut names = std::collections::HashSet::with_capacity(tensors.len());
        for t in tensors {
            let ty = GgmlType::from_id(t.ggml_type.id());
            self.check_dims(&t.name, &t.dims, ty)?;
            if !names.insert(t.name.as_str()) {
                return Err(invalid(format!("duplicate tensor name '{}'", t.name)));
            }
            if ty.block_size().is_none() {
                return Err(GgufError::UnsupportedTensorType {
                    name: t.name.clone(),
                    ggml_type: ty.id(),
                    type_name: ty.name(),
                });
            }
            let len = t
                .dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .and_then(|n| ty.bytes_for(n))
                .ok_or_else(|| {
                    invalid(format!(
                        "tensor '{}': the byte size of dims {:?} overflows",
                        t.name, t.dims
                    ))
                })?;
            lens.push(len);
        }
        let mut end = 0u64;
        for (t, &len) in tensors.iter().zip(&lens) {
            end = end
                .checked_next_multiple_of(self.alignment())
                .and_then(|o| o.checked_add(len))
                .ok_or_else(|| invalid(format!("tensor '{}': the file size overflows", t.name)))?;
        }
        let infos = tensors
            .iter()
            .zip(&lens)
            .map(|(t, &len)| (t.name.as_str(), t.dims.as_slice(), t.ggml_type, len));
        let (header, placements) = self.header(infos);
        if (header.len() as u64).checked_add(end).is_none() {
            return Err(invalid("the file size overflows".to_string()));
        }
        Ok((header, placements))
    }

    /// The header (through the padding before the data section) of a file
    /// with this writer's metadata and the given tensor infos, and where each
    /// tensor's bytes go. Lengths must not overflow (checked by the callers).
    fn header<'a>(
        &self,
        infos: impl Iterator<Item = (&'a str, &'a [u64], GgmlType, u64)> + Clone,
    ) -> (Vec<u8>, Vec<TensorPlacement>) {
        let alignment = self.alignment();
        let mut out = Vec::new();
        out.extend_from_slice(&GGUF_MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        put_u64(&mut out, infos.clone().count() as u64);
        put_u64(&mut out, self.metadata.len() as u64);
        for (key, value) in &self.metadata {
            put_str(&mut out, key);
            out.extend_from_slice(&value.type_id().to_le_bytes());
            put_value(&mut out, value);
        }
        let mut offset = 0u64;
        let mut placements = Vec::new();
        for (name, dims, ty, len) in infos {
            offset = offset.next_multiple_of(alignment);
            placements.push(TensorPlacement { offset, len });
            put_str(&mut out, name);
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for &d in dims {
                put_u64(&mut out, d);
            }
            out.extend_from_slice(&ty.id().to_le_bytes());
            put_u64(&mut out, offset);
            offset = offset.saturating_add(len);
        }
        let data_start = (out.len() as u64).next_multiple_of(alignment);
        pad_to(&mut out, data_start);
        for p in &mut placements {
            p.offset = p.offset.saturating_add(data_start);
        }
        (out, placements)
    }
}

fn invalid(what: String) -> GgufError {
    GgufError::Invalid { what }
}

fn check_homogeneous(key: &str, value: &MetaValue) -> Result<(), GgufError> {
    if let MetaValue::Array(items) = value {
        if let Some(first) = items.first() {
            let ty = first.type_id();
            if let Some(bad) = items.iter().find(|v| v.type_id() != ty) {
                return Err(invalid(format!(
                    "metadata key '{key}': array mixes {} and {} elements",
                    first.type_name(),
                    bad.type_name()
                )));
            }
        }
        for item in items {
            check_homogeneous(key, item)?;
        }
    }
    Ok(())
}

fn pad_to(out: &mut Vec<u8>, len: u64) {
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if out.len() < len {
        out.resize(len, 0);
    }
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u64(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, value: &MetaValue) {
    match value {
        MetaValue::U8(v) => out.push(*v),
        MetaValue::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::Bool(v) => out.push(u8::from(*v)),
        MetaValue::String(s) => put_str(out, s),
        MetaValue::Array(items) => {
            // Empty arrays carry no element type information; u8 is used.
            let elem_type = items.first().map_or(0, MetaValue::type_id);
            out.extend_from_slice(&elem_type.to_le_bytes());
            put_u64(out, items.len() as u64);
            for item in items {
                put_value(out, item);
            }
        }
        MetaValue::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::GgufFile;
    use super::*;

    #[test]
    fn atomic_write_then_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        let mut w = GgufWriter::new();
        w.add_meta("general.name", MetaValue::String("tiny".into()));
        w.add_tensor("w", &[2, 32], &[0.25; 64], GgmlType::Q4_1)
            .unwrap();
        w.write(&path).unwrap();
        // overwrite in place works too
        w.add_meta("general.name", MetaValue::String("tiny2".into()));
        w.write(&path).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["tiny.gguf"], "no temporary file left behind");
        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.get_str("general.name").unwrap(), "tiny2");
        assert_eq!(f.metadata().len(), 1);
        assert_eq!(f.tensor_f32("w").unwrap(), [0.25; 64]);
        assert_eq!(std::fs::read(&path).unwrap(), w.to_bytes());

        let bad = dir.path().join("no/such/dir/x.gguf");
        assert!(w.write(&bad).is_err());
    }

    #[test]
    fn layout_has_no_trailing_padding() {
        let mut w = GgufWriter::new();
        w.add_tensor("a", &[3], &[1.0, 2.0, 3.0], GgmlType::F32)
            .unwrap();
        w.add_tensor("b", &[32], &[1.0; 32], GgmlType::Q4_0)
            .unwrap();
        let bytes = w.to_bytes();
        let len = bytes.len() as u64;
        let f = GgufFile::from_bytes(bytes).unwrap();
        let b = f.tensor_info("b").unwrap();
        assert_eq!(b.offset, 32);
        assert_eq!(len, f.data_offset() + 32 + 18);
        // no tensors: the file still ends on an aligned boundary
        assert_eq!(GgufWriter::new().to_bytes().len() % 32, 0);
    }

    #[test]
    fn streamed_header_lays_out_the_same_file_as_to_bytes() {
        let tensors: [(&str, Vec<usize>, GgmlType); 3] = [
            ("a", vec![3], GgmlType::F32),
            ("b", vec![2, 32], GgmlType::Q8_0),
            ("c", vec![5, 1], GgmlType::F32),
        ];
        let mut meta = GgufWriter::new();
        meta.add_meta("general.alignment", MetaValue::U32(64));
        meta.add_meta("general.name", MetaValue::String("s".into()));
        let mut full = meta.clone();
        let mut encoded = Vec::new();
        for (i, (name, shape, ty)) in tensors.iter().enumerate() {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n).map(|k| (k + i) as f32 * 0.25).collect();
            full.add_tensor(name, shape, &data, *ty).unwrap();
            encoded.push(match ty {
                GgmlType::Q8_0 => crate::gguf::quant::quantize_q8_0(&data).unwrap(),
                _ => data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            });
        }
        let headers: Vec<TensorHeader> = tensors
            .iter()
            .map(|(name, shape, ty)| TensorHeader {
                name: name.to_string(),
                dims: shape.iter().rev().map(|&d| d as u64).collect(),
                ggml_type: *ty,
            })
            .collect();
        let (mut out, placements) = meta.streamed_header(&headers).unwrap();
        assert_eq!(out.len() % 64, 0);
        for (bytes, p) in encoded.iter().zip(&placements) {
            assert_eq!(p.offset % 64, 0);
            assert_eq!(p.len, bytes.len() as u64);
            pad_to(&mut out, p.offset);
            out.extend_from_slice(bytes);
        }
        assert_eq!(out, full.to_bytes());

        let invalid = |r: Result<_, GgufError>| matches!(r, Err(GgufError::Invalid { .. }));
        assert!(
            invalid(full.streamed_header(&headers)),
            "writer holds tensors"
        );
        let dup = [headers[0].clone(), headers[0].clone()];
        assert!(invalid(meta.streamed_header(&dup)));
        let mut bad = headers[1].clone();
        bad.dims = vec![16, 2];
        assert!(
            invalid(meta.streamed_header(&[bad])),
            "row not a block multiple"
        );
        let mut huge = headers[0].clone();
        huge.dims = vec![u64::MAX / 2, 4];
        assert!(invalid(meta.streamed_header(&[huge])), "size overflows");
        let mut unknown = headers[0].clone();
        unknown.ggml_type = GgmlType::from_id(99);
        assert!(matches!(
            meta.streamed_header(&[unknown]),
            Err(GgufError::UnsupportedTensorType { ggml_type: 99, .. })
        ));
    }

    #[test]
    fn add_tensor_validates_input() {
        let mut w = GgufWriter::new();
        let invalid = |r: Result<(), GgufError>| matches!(r, Err(GgufError::Invalid { .. }));
        assert!(invalid(w.add_tensor(
            "a",
            &[2, 3],
            &[0.0; 5],
            GgmlType::F32
        )));
        assert!(invalid(w.add_tensor("a", &[], &[], GgmlType::F32)));
        assert!(invalid(w.add_tensor(
            "a",
            &[1, 1, 1, 1, 1],
            &[0.0],
            GgmlType::F32
        )));
        assert!(invalid(w.add_tensor(
            "a",
            &[2, 16],
            &[0.0; 32],
            GgmlType::Q8_0
        )));
        assert!(invalid(w.add_tensor(
            "a",
            &[usize::MAX, 2],
            &[],
            GgmlType::F32
        )));
        assert!(matches!(
            w.add_tensor("a", &[256], &[0.0; 256], GgmlType::from_id(12)),
            Err(GgufError::UnsupportedTensorType { ggml_type: 12, .. })
        ));
        w.add_tensor("a", &[1], &[0.0], GgmlType::F32).unwrap();
        assert!(invalid(w.add_tensor("a", &[1], &[0.0], GgmlType::F32)));
        assert!(invalid(w.add_raw_tensor(
            "r",
            &[256],
            GgmlType::from_id(12),
            vec![0; 143]
        )));
        w.add_raw_tensor("r", &[256], GgmlType::from_id(12), vec![0; 144])
            .unwrap();
        w.add_raw_tensor("u", &[5], GgmlType::from_id(77), vec![1; 3])
            .unwrap();
    }

    #[test]
    fn metadata_replace_and_homogeneity() {
        let mut w = GgufWriter::new();
        w.add_meta("k", MetaValue::U8(1));
        w.add_meta("k", MetaValue::I64(-2));
        let mixed = MetaValue::Array(vec![MetaValue::U8(1), MetaValue::I8(1)]);
        assert!(matches!(
            w.try_add_meta("mixed", mixed),
            Err(GgufError::Invalid { .. })
        ));
        let nested_mixed = MetaValue::Array(vec![MetaValue::Array(vec![
            MetaValue::Bool(true),
            MetaValue::F32(1.0),
        ])]);
        assert!(w.try_add_meta("nested", nested_mixed).is_err());
        // inner arrays may differ from each other
        let ok = MetaValue::Array(vec![
            MetaValue::Array(vec![MetaValue::U8(1)]),
            MetaValue::Array(vec![MetaValue::String("x".into())]),
        ]);
        w.try_add_meta("nested_ok", ok.clone()).unwrap();
        let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
        assert_eq!(f.metadata().len(), 2);
        assert_eq!(f.metadata().get("k"), Some(&MetaValue::I64(-2)));
        assert_eq!(f.metadata().get("nested_ok"), Some(&ok));
    }

    #[test]
    #[should_panic(expected = "array mixes")]
    fn add_meta_panics_on_heterogeneous_array() {
        GgufWriter::new().add_meta(
            "bad",
            MetaValue::Array(vec![MetaValue::U8(1), MetaValue::U16(1)]),
        );
    }
}
