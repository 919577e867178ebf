//! Writing files atomically, the one home for it in the crate: the content goes into a temporary
//! file beside the final path (same file system, [`tempfile::NamedTempFile`]), is fsynced, and the
//! temporary is renamed onto the final path, so a reader sees the old file or the new one, never a
//! part, and a failed write leaves the final path untouched and no temporary behind.
//!
//! Temporaries are named `.<final file name>.<pid>-<n>-<nanos>.tmp` (`<pid>-<n>-<nanos>` is unique on the machine), so
//! that one left by a killed process can be recognised by its owner's process id and removed (as
//! [`crate::fetch`] does for the model cache).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use tempfile::NamedTempFile;

/// Writes `bytes` to `path` atomically (see the [module docs](self)); the directory holding `path`
/// must exist. The file gets the permissions `File::create` gives (on Unix `0o666` less the
/// umask), not the private `0o600` of a temporary file.
///
/// # Errors
/// The I/O error of creating, writing, syncing or renaming the temporary file (the caller names
/// `path` in its own error).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = temp_file_beside(path)?;
    tmp.write_all(bytes)?;
    persist(tmp, path)
}

/// A new, empty temporary file in the directory of `final_path` (which must exist), named after
/// it as in the [module docs](self), with the permissions `File::create` gives. It is removed when
/// dropped unless [`persist`]ed.
///
/// # Errors
/// The I/O error of creating the file.
pub(crate) fn temp_file_beside(final_path: &Path) -> io::Result<NamedTempFile> {
    let base = final_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_string());
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(fs::Permissions::from_mode(0o666));
    }
    builder
        .prefix(&format!(".{base}.{}", unique_suffix()))
        .suffix(".tmp")
        .rand_bytes(0)
        .tempfile_in(parent_dir(final_path))
}

/// Fsyncs `tmp`, renames it onto `path` and (best effort) fsyncs the directory, so the rename is
/// durable. On error the temporary is removed.
///
/// # Errors
/// The I/O error of syncing or renaming.
pub(crate) fn persist(tmp: NamedTempFile, path: &Path) -> io::Result<()> {
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(&parent_dir(path));
    Ok(())
}

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Best-effort fsync of a directory, so a rename inside it is durable.
pub(crate) fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// A name fragment unique within this machine for the life of the process:
/// `<pid>-<counter>-<nanoseconds>`.
pub(crate) fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{n}-{nanos:09}", std::process::id())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The sorted names of the entries of `dir`.
    pub(crate) fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn write_atomic_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(names_in(dir.path()), ["out.json"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // Not the private 0600 of a temporary file: group/other bits follow the umask.
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            let umask_allows_group_read = fs::File::create(dir.path().join("plain"))
                .and_then(|f| f.metadata())
                .map(|m| m.permissions().mode() & 0o040 != 0)
                .unwrap();
            assert_eq!(mode & 0o040 != 0, umask_allows_group_read, "mode {mode:o}");
        }
    }

    #[test]
    fn a_failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir").join("out");
        assert!(write_atomic(&missing, b"x").is_err());
        // A directory in the way of the rename: the temporary is removed, the directory kept.
        let blocked = dir.path().join("blocked");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("inside"), b"keep").unwrap();
        assert!(write_atomic(&blocked, b"x").is_err());
        assert_eq!(names_in(dir.path()), ["blocked"]);
        assert_eq!(fs::read(blocked.join("inside")).unwrap(), b"keep");
    }

    #[test]
    fn temporaries_are_named_after_the_final_file_and_this_process() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = temp_file_beside(&dir.path().join("m.gguf")).unwrap();
        let name = tmp
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let prefix = format!(".m.gguf.{}-", std::process::id());
        assert!(
            name.starts_with(&prefix) && name.ends_with(".tmp"),
            "{name}"
        );
        drop(tmp);
        assert!(names_in(dir.path()).is_empty());
    }
}
