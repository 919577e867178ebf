//! Where an export goes: the checks on the destination folder ([`check_destination`]) and the
//! atomic folder write ([`write_atomically`]: a temporary folder beside the destination, renamed
//! into place at the end).

use super::{GGUF_F32_FILE, HF_FILES};
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub(super) fn write_error(path: &Path, e: impl std::fmt::Display) -> ModelError {
    ModelError::ModelPath {
        path: path.to_path_buf(),
        message: format!("cannot write: {e}"),
    }
}

pub(super) fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| write_error(path, e))
}

pub(super) fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| write_error(path, e))?;
    text.push('\n');
    write_file(path, text.as_bytes())
}

fn dest_error(dest: &Path, message: impl Into<String>) -> ModelError {
    ModelError::ModelPath {
        path: dest.to_path_buf(),
        message: message.into(),
    }
}

/// Whether an existing `dest` may be written: absent, an empty folder, or (with `force`) a folder
/// holding only files an export writes. Returns `dest` with a usable final component.
///
/// Front ends call it before fetching a source, so a bad `dest` fails before a download.
///
/// # Errors
/// [`ModelError::ModelPath`] naming `dest`.
pub fn check_destination(dest: &Path, force: bool) -> Result<PathBuf> {
    let dest = if dest.file_name().is_none() {
        dest.canonicalize().map_err(|e| ModelError::io(dest, e))?
    } else {
        dest.to_path_buf()
    };
    if dest.file_name().is_none() {
        return Err(dest_error(&dest, "cannot export to a file-system root"));
    }
    let meta = match std::fs::symlink_metadata(&dest) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(dest),
        Err(e) => return Err(ModelError::io(&dest, e)),
    };
    if !meta.is_dir() {
        return Err(dest_error(&dest, "exists and is not a folder"));
    }
    let mut foreign = Vec::new();
    let mut empty = true;
    for entry in std::fs::read_dir(&dest).map_err(|e| ModelError::io(&dest, e))? {
        let entry = entry.map_err(|e| ModelError::io(&dest, e))?;
        empty = false;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if !is_file || !(HF_FILES.contains(&name.as_str()) || name == GGUF_F32_FILE) {
            foreign.push(name);
        }
    }
    if empty {
        return Ok(dest);
    }
    if !force {
        return Err(dest_error(
            &dest,
            "is not empty; refusing to overwrite it (--force replaces a previous export)",
        ));
    }
    if !foreign.is_empty() {
        foreign.sort();
        return Err(dest_error(
            &dest,
            format!(
                "--force only replaces a previous export, and this folder also holds {}",
                foreign.join(", ")
            ),
        ));
    }
    Ok(dest)
}

/// A name for a sibling of `dest` unique within this machine: `.NAME.TAG-PID-N`.
fn sibling_name(dest: &Path, tag: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = dest
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(".{name}.{tag}-{}-{n}", std::process::id())
}

/// Runs `fill` on a fresh temporary folder next to `dest`, then moves it to `dest` (replacing an
/// empty folder, or with `force` a previous export). Returns the sorted file names, the number of
/// tensors and the bytes written.
pub(super) fn write_atomically(
    dest: &Path,
    force: bool,
    fill: impl FnOnce(&Path) -> Result<Vec<String>>,
) -> Result<(Vec<String>, usize, u64)> {
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| write_error(&parent, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(&sibling_name(dest, "export-tmp"))
        .rand_bytes(0)
        .tempdir_in(&parent)
        .map_err(|e| write_error(&parent, e))?;
    let tmp_path = tmp.path().to_path_buf();
    let mut files = fill(&tmp_path)?;
    files.sort();
    let mut bytes = 0u64;
    let mut tensors = 0usize;
    for f in &files {
        let path = tmp_path.join(f);
        let file = std::fs::File::open(&path).map_err(|e| ModelError::io(&path, e))?;
        file.sync_all().map_err(|e| write_error(&path, e))?;
        bytes += file.metadata().map_err(|e| ModelError::io(&path, e))?.len();
        if f == "model.safetensors" {
            tensors = count_safetensors(&path)?;
        } else if f == GGUF_F32_FILE {
            tensors = GgufFile::open(&path)?.tensors().len();
        }
    }
    // Re-check: the destination may have changed while we were writing.
    check_destination(dest, force)?;
    let old = if dest.exists() {
        if std::fs::remove_dir(dest).is_ok() {
            None
        } else {
            let old = dest.with_file_name(sibling_name(dest, "export-old"));
            std::fs::rename(dest, &old).map_err(|e| write_error(dest, e))?;
            Some(old)
        }
    } else {
        None
    };
    if let Err(e) = std::fs::rename(&tmp_path, dest) {
        if let Some(old) = &old {
            let _ = std::fs::rename(old, dest);
        }
        return Err(write_error(dest, e));
    }
    // Moved into place: nothing is left to remove.
    let _ = tmp.keep();
    if let Some(old) = old {
        let _ = std::fs::remove_dir_all(old);
    }
    Ok((files, tensors, bytes))
}

fn count_safetensors(path: &Path) -> Result<usize> {
    let mut file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let mut n = [0u8; 8];
    file.read_exact(&mut n)
        .map_err(|e| ModelError::io(path, e))?;
    let len = usize::try_from(u64::from_le_bytes(n)).unwrap_or(usize::MAX);
    let bad = |message: String| ModelError::Safetensors {
        path: path.to_path_buf(),
        message,
    };
    if len > 100 << 20 {
        return Err(bad(format!("header of {len} bytes")));
    }
    let mut header = vec![0u8; len];
    file.read_exact(&mut header)
        .map_err(|e| ModelError::io(path, e))?;
    let json: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| bad(e.to_string()))?;
    Ok(json
        .as_object()
        .map_or(0, |m| m.keys().filter(|k| *k != "__metadata__").count()))
}
