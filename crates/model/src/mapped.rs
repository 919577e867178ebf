//! The bytes of a model file, memory-mapped read-only: the one place the crate maps files (GGUF
//! files in [`crate::gguf::GgufFile::open`], safetensors shards in
//! [`crate::weights::SafetensorsSource::open`]).

use std::fs::File;
use std::ops::Deref;
use std::path::Path;

/// Read-only bytes of a file (memory-mapped) or of an owned buffer.
pub(crate) enum FileBytes {
    /// A read-only memory map of a whole file.
    Mapped(memmap2::Mmap),
    /// Bytes held in memory (an empty file, or bytes the caller passed in).
    Owned(Vec<u8>),
}

impl FileBytes {
    /// Memory-maps the file at `path` read-only; an empty file gives an empty buffer (mapping an
    /// empty file is not portable).
    ///
    /// As with any memory map, the file must not be truncated or modified by another process while
    /// the map lives (reads could fault or see changed bytes).
    pub(crate) fn open(path: &Path) -> std::io::Result<Self> {
        let file = File::open(path)?;
        if file.metadata()?.len() == 0 {
            return Ok(FileBytes::Owned(Vec::new()));
        }
        // SAFETY: the map is read-only and only ever read through safe slices with bounds checks;
        // the documented contract of `open` is that the file is not modified while mapped.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&file) }?;
        Ok(FileBytes::Mapped(map))
    }
}

impl Deref for FileBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(m) => m,
            FileBytes::Owned(v) => v,
        }
    }
}
