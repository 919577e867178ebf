//! The `gguf-f32` export: every metadata key of the source, `general.file_type` 0 (`ALL_F32`),
//! every tensor dequantised to F32 and streamed through [`GgufWriter::streamed_header`].

use super::destination::write_error;
use crate::error::Result;
use crate::gguf::writer::{GgufWriter, TensorHeader};
use crate::gguf::{GgmlType, GgufError, GgufFile, MetaValue};
use crate::llama::LoadProgress;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

/// Writes `file` with every tensor F32 to `path`, one tensor in memory at a time.
pub(super) fn write_gguf_f32(
    file: &GgufFile,
    path: &Path,
    progress: LoadProgress<'_>,
) -> Result<()> {
    let mut metadata = file.metadata().clone();
    // ggml's LLAMA_FTYPE_ALL_F32.
    metadata.insert("general.file_type".into(), MetaValue::U32(0));
    let mut w = GgufWriter::new();
    for (key, value) in metadata {
        w.try_add_meta(&key, value)?;
    }
    let headers: Vec<TensorHeader> = file
        .tensors()
        .iter()
        .map(|t| TensorHeader {
            name: t.name.clone(),
            dims: t.dims.clone(),
            ggml_type: GgmlType::F32,
        })
        .collect();
    let (header, placements) = w.streamed_header(&headers)?;
    let out = std::fs::File::create(path).map_err(|e| write_error(path, e))?;
    let mut out = BufWriter::with_capacity(1 << 20, out);
    let werr = |e: std::io::Error| write_error(path, e);
    out.write_all(&header).map_err(werr)?;
    let mut pos = header.len() as u64;
    let total = headers.len();
    for (index, (t, p)) in headers.iter().zip(&placements).enumerate() {
        progress(&t.name, index, total);
        let data = file.tensor_f32(&t.name)?;
        if (data.len() as u64).checked_mul(4) != Some(p.len) || p.offset < pos {
            return Err(GgufError::Invalid {
                what: format!(
                    "tensor '{}': {} values do not fill its {} bytes",
                    t.name,
                    data.len(),
                    p.len
                ),
            }
            .into());
        }
        std::io::copy(&mut std::io::repeat(0).take(p.offset - pos), &mut out).map_err(werr)?;
        let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        out.write_all(&bytes).map_err(werr)?;
        pos = p.offset + p.len;
    }
    let out = out.into_inner().map_err(|e| werr(e.into_error()))?;
    out.sync_all().map_err(werr)?;
    progress("done", total, total);
    Ok(())
}
