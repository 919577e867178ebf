//! The models file: named model entries that an auction's roles pick from.
//!
//! ```toml
//! [models.kitchen]              # an entry's name
//! kind = "llama-server"         # "local" | "vllm" | "llama-server"
//! urls = ["http://127.0.0.1:8081"]   # remote only; several = replicas of one model
//! model = "smollm2"             # served model name (remote; required for vllm)
//! path = "model.gguf"           # local only; omitted = the default model
//! api_key_env = "KITCHEN_KEY"   # optional: the API key is read from this variable
//! timeout_s = 60                # optional: deadline of one request (default 120)
//! max_concurrency = 4           # optional: requests in flight per entry (default 4)
//! retries = 3                   # optional: retries on connection errors, 429 and 503 (default 3)
//! logprobs_mode = "processed"   # vllm only, optional: the server runs --logprobs-mode
//!                               # processed_logprobs, so sampled log-probabilities are log q
//! ```
//!
//! Unknown fields are ignored (so that files can carry notes for other tools). A relative `path`
//! is resolved against the file's folder. The entry `default` is the default local model unless
//! the file defines it.

use crate::error::{EngineError, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The name of the entry every role uses unless told otherwise.
pub const DEFAULT_ENTRY: &str = "default";

/// Most replicas of one entry.
pub const MAX_URLS: usize = 64;
/// Most requests in flight per entry.
pub const MAX_CONCURRENCY: usize = 256;
/// Longest request deadline, in seconds.
pub const MAX_TIMEOUT_S: f64 = 3600.0;
/// Most retries of one request.
pub const MAX_RETRIES: u32 = 10;

/// The remote dialects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteKind {
    /// vLLM's OpenAI-compatible server.
    Vllm,
    /// llama.cpp's `llama-server`.
    LlamaServer,
}

impl RemoteKind {
    /// The name used in models files and reports.
    pub fn name(self) -> &'static str {
        match self {
            RemoteKind::Vllm => "vllm",
            RemoteKind::LlamaServer => "llama-server",
        }
    }
}

/// A remote entry, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteSpec {
    /// The entry's name.
    pub name: String,
    /// The dialect.
    pub kind: RemoteKind,
    /// Base URLs (replicas), without a trailing slash.
    pub urls: Vec<String>,
    /// The served model name (`model` of the requests), if any.
    pub model: Option<String>,
    /// The API key (read from `api_key_env`), if any.
    pub api_key: Option<String>,
    /// Deadline of one request.
    pub timeout: std::time::Duration,
    /// Requests in flight at once.
    pub max_concurrency: usize,
    /// Retries on connection errors, 429 and 503.
    pub retries: u32,
    /// vLLM only: the server reports the proposal's log-probabilities for sampled tokens
    /// (`--logprobs-mode processed_logprobs`) instead of the raw model's.
    pub processed_logprobs: bool,
}

/// An entry, validated.
#[derive(Debug, Clone, PartialEq)]
pub enum EntrySpec {
    /// An in-process model: a GGUF file or an HF folder, or the default model (`None`).
    Local {
        /// The entry's name.
        name: String,
        /// The file or folder.
        path: Option<PathBuf>,
    },
    /// A model on a server.
    Remote(RemoteSpec),
}

#[derive(Debug, Deserialize)]
struct RawFile {
    #[serde(default)]
    models: BTreeMap<String, RawEntry>,
}

#[derive(Debug, Deserialize)]
struct RawEntry {
    kind: Option<String>,
    urls: Option<Vec<String>>,
    model: Option<String>,
    path: Option<PathBuf>,
    api_key_env: Option<String>,
    timeout_s: Option<f64>,
    max_concurrency: Option<i64>,
    retries: Option<i64>,
    logprobs_mode: Option<String>,
}

/// A parsed models file.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelsFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its entries by name.
    pub entries: BTreeMap<String, EntrySpec>,
}

impl ModelsFile {
    /// Reads and validates a models file.
    ///
    /// # Errors
    /// [`EngineError::ModelsFile`] naming the file, the entry and the field.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| EngineError::ModelsFile {
            file: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Parses a models file's text; `path` names it in errors and anchors relative paths.
    ///
    /// # Errors
    /// [`EngineError::ModelsFile`] naming the file, the entry and the field.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let file = path.display().to_string();
        let bad = |message: String| EngineError::ModelsFile {
            file: file.clone(),
            message,
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            bad(e
                .to_string()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .collect::<Vec<_>>()
                .join(" "))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut entries = BTreeMap::new();
        for (name, e) in raw.models {
            let spec = validate(&name, e, base)
                .map_err(|(field, m)| bad(format!("entry {name:?}: field {field:?}: {m}")))?;
            entries.insert(name, spec);
        }
        Ok(Self {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// The entry `name`.
    ///
    /// # Errors
    /// [`EngineError::ModelsFile`] listing the entries when there is none of that name.
    pub fn entry(&self, name: &str) -> Result<&EntrySpec> {
        self.entries
            .get(name)
            .ok_or_else(|| EngineError::ModelsFile {
                file: self.path.display().to_string(),
                message: format!(
                    "no entry {name:?} (entries: {})",
                    self.entries.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            })
    }
}

type FieldError = (&'static str, String);

fn validate(name: &str, e: RawEntry, base: &Path) -> std::result::Result<EntrySpec, FieldError> {
    if name.is_empty() || name.len() > 128 {
        return Err(("name", "must have 1 to 128 characters".into()));
    }
    let kind = e.kind.ok_or((
        "kind",
        "missing (\"local\", \"vllm\" or \"llama-server\")".into(),
    ))?;
    let remote = match kind.as_str() {
        "local" => None,
        "vllm" => Some(RemoteKind::Vllm),
        "llama-server" => Some(RemoteKind::LlamaServer),
        other => {
            return Err((
                "kind",
                format!("{other:?} is not \"local\", \"vllm\" or \"llama-server\""),
            ));
        }
    };
    let Some(kind) = remote else {
        if e.urls.is_some() {
            return Err(("urls", "only remote entries have URLs".into()));
        }
        return Ok(EntrySpec::Local {
            name: name.into(),
            path: e
                .path
                .map(|p| if p.is_relative() { base.join(p) } else { p }),
        });
    };
    if e.path.is_some() {
        return Err((
            "path",
            "remote entries have no path (serve the model, then give its URL)".into(),
        ));
    }
    let urls = e
        .urls
        .ok_or(("urls", "missing: a remote entry needs a base URL".into()))?;
    if urls.is_empty() || urls.len() > MAX_URLS {
        return Err((
            "urls",
            format!("needs 1 to {MAX_URLS} URLs, got {}", urls.len()),
        ));
    }
    let urls = urls
        .iter()
        .map(|u| check_url(u).map_err(|m| ("urls", m)))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    if kind == RemoteKind::Vllm && e.model.as_deref().is_none_or(str::is_empty) {
        return Err(("model", "vLLM entries need the served model name".into()));
    }
    let api_key = match e.api_key_env {
        None => None,
        Some(var) => Some(std::env::var(&var).map_err(|_| {
            (
                "api_key_env",
                format!("the environment variable {var:?} is not set"),
            )
        })?),
    };
    let timeout_s = e.timeout_s.unwrap_or(120.0);
    if !(timeout_s.is_finite() && timeout_s > 0.0 && timeout_s <= MAX_TIMEOUT_S) {
        return Err((
            "timeout_s",
            format!("must be in (0, {MAX_TIMEOUT_S}] seconds, got {timeout_s}"),
        ));
    }
    let max_concurrency = e.max_concurrency.unwrap_or(4);
    if !(1..=MAX_CONCURRENCY as i64).contains(&max_concurrency) {
        return Err((
            "max_concurrency",
            format!("must be 1 to {MAX_CONCURRENCY}, got {max_concurrency}"),
        ));
    }
    let retries = e.retries.unwrap_or(3);
    if !(0..=MAX_RETRIES as i64).contains(&retries) {
        return Err((
            "retries",
            format!("must be 0 to {MAX_RETRIES}, got {retries}"),
        ));
    }
    let processed_logprobs = match (e.logprobs_mode.as_deref(), kind) {
        (None | Some("raw"), _) => false,
        (Some("processed"), RemoteKind::Vllm) => true,
        (Some("processed"), RemoteKind::LlamaServer) => {
            return Err((
                "logprobs_mode",
                "only vLLM entries have it (llama-server always reports the proposal)".into(),
            ));
        }
        (Some(other), _) => {
            return Err((
                "logprobs_mode",
                format!("{other:?} is not \"raw\" or \"processed\""),
            ));
        }
    };
    Ok(EntrySpec::Remote(RemoteSpec {
        name: name.into(),
        kind,
        urls,
        model: e.model.filter(|m| !m.is_empty()),
        api_key,
        timeout: std::time::Duration::from_secs_f64(timeout_s),
        max_concurrency: max_concurrency as usize,
        retries: retries as u32,
        processed_logprobs,
    }))
}

/// `http://host[:port][/prefix]` without a trailing slash.
fn check_url(u: &str) -> std::result::Result<String, String> {
    let rest = u
        .strip_prefix("http://")
        .ok_or_else(|| format!("{u:?} must start with http:// (TLS is left to a proxy)"))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.contains(char::is_whitespace) || host.contains('@') {
        return Err(format!("{u:?} has no usable host"));
    }
    if let Some((_, port)) = host.rsplit_once(':')
        && !host.ends_with(']')
        && port.parse::<u16>().is_err()
    {
        return Err(format!("{u:?} has a bad port"));
    }
    Ok(u.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ModelsFile> {
        ModelsFile::parse(text, Path::new("/etc/models.toml"))
    }

    fn message(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn the_documented_shape_parses() {
        let f = parse(
            r#"
            [models.kitchen]
            kind = "llama-server"
            urls = ["http://127.0.0.1:8081/", "http://127.0.0.1:8082"]
            model = "smollm2"
            timeout_s = 60
            max_concurrency = 4
            note = "extra fields are fine"

            [models.local]
            kind = "local"
            path = "model.gguf"

            [models.plain]
            kind = "local"
            "#,
        )
        .unwrap();
        match f.entry("kitchen").unwrap() {
            EntrySpec::Remote(r) => {
                assert_eq!(r.kind, RemoteKind::LlamaServer);
                assert_eq!(r.urls, ["http://127.0.0.1:8081", "http://127.0.0.1:8082"]);
                assert_eq!(r.model.as_deref(), Some("smollm2"));
                assert_eq!(r.timeout.as_secs(), 60);
                assert_eq!(r.max_concurrency, 4);
                assert_eq!(r.retries, 3);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            f.entry("local").unwrap(),
            &EntrySpec::Local {
                name: "local".into(),
                path: Some(PathBuf::from("/etc/model.gguf"))
            }
        );
        assert_eq!(
            f.entry("plain").unwrap(),
            &EntrySpec::Local {
                name: "plain".into(),
                path: None
            }
        );
        assert!(
            f.entry("nope")
                .unwrap_err()
                .to_string()
                .contains("entries: kitchen, local, plain")
        );
    }

    #[test]
    fn bad_entries_name_the_entry_and_the_field() {
        let cases = [
            (
                "[models.a]\nurls = [\"http://x:1\"]",
                "entry \"a\": field \"kind\"",
            ),
            (
                "[models.a]\nkind = \"tgi\"",
                "entry \"a\": field \"kind\": \"tgi\"",
            ),
            (
                "[models.a]\nkind = \"vllm\"",
                "entry \"a\": field \"urls\": missing",
            ),
            (
                "[models.a]\nkind = \"vllm\"\nurls = []",
                "field \"urls\": needs 1 to",
            ),
            (
                "[models.a]\nkind = \"vllm\"\nurls = [\"http://h:1\"]",
                "entry \"a\": field \"model\"",
            ),
            (
                "[models.a]\nkind = \"llama-server\"\nurls = [\"https://h:1\"]",
                "field \"urls\": \"https://h:1\" must start with http://",
            ),
            (
                "[models.a]\nkind = \"llama-server\"\nurls = [\"http://h:99999\"]",
                "bad port",
            ),
            (
                "[models.a]\nkind = \"llama-server\"\nurls = [\"http://h:1\"]\ntimeout_s = 0",
                "field \"timeout_s\"",
            ),
            (
                "[models.a]\nkind = \"llama-server\"\nurls = [\"http://h:1\"]\nmax_concurrency = -1",
                "field \"max_concurrency\"",
            ),
            (
                "[models.a]\nkind = \"llama-server\"\nurls = [\"http://h:1\"]\napi_key_env = \"LLM_AUCTION_SURELY_UNSET_VAR\"",
                "field \"api_key_env\": the environment variable \"LLM_AUCTION_SURELY_UNSET_VAR\" is not set",
            ),
            (
                "[models.a]\nkind = \"local\"\nurls = [\"http://h:1\"]",
                "field \"urls\"",
            ),
            (
                "[models.a]\nkind = \"llama-server\"\nurls = [\"http://h:1\"]\npath = \"x\"",
                "field \"path\"",
            ),
            ("[models.a]\nkind = 3", "/etc/models.toml: "),
            ("models = 1", "/etc/models.toml: "),
            (
                "[models.a]\nkind = \"vllm\"\nurls = [\"http://h:1\"]\nmodel = \"m\"\nlogprobs_mode = \"x\"",
                "field \"logprobs_mode\": \"x\"",
            ),
        ];
        for (text, want) in cases {
            let m = message(text);
            assert!(m.contains(want), "{text:?}: {m:?} lacks {want:?}");
            assert!(!m.contains('\n'), "one line: {m:?}");
        }
    }
}
