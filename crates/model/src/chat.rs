//! Chat templates: renders a conversation into a prompt string with the model's Jinja
//! chat template, the way HuggingFace `transformers` does.
//!
//! The template source comes from `tokenizer_config.json` (`"chat_template"`, see
//! [`from_tokenizer_config`]) or from the GGUF key `tokenizer.chat_template`. It is
//! compiled once by [`ChatTemplate::new`] with `trim_blocks` and `lstrip_blocks` on,
//! as in `transformers`, and rendered by [`ChatTemplate::render`].

use std::path::{Path, PathBuf};

use minijinja::{Environment, Error as JinjaError, ErrorKind, context};

/// The name under which the template is registered in the environment.
const TEMPLATE_NAME: &str = "chat_template";

/// Errors raised while loading, compiling or rendering a chat template.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChatError {
    /// The template source does not compile (e.g. a syntax error).
    #[error("invalid chat template: {message}")]
    Template {
        /// The compiler's message.
        message: String,
    },
    /// Rendering failed, including a template calling `raise_exception(msg)`
    /// (then `message` is `msg` exactly).
    #[error("chat template rendering failed: {message}")]
    Render {
        /// The renderer's message, or the argument of `raise_exception`.
        message: String,
    },
    /// A `tokenizer_config.json` file could not be read or parsed.
    #[error("cannot read tokenizer config {}: {message}", path.display())]
    Config {
        /// The file that was being read.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Message {
    /// The speaker: `"system"`, `"user"` or `"assistant"` (templates may accept others).
    pub role: String,
    /// The message text.
    pub content: String,
}

impl Message {
    /// A message with the given role and content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").finish_non_exhaustive()
    }
}

/// The error source attached by `raise_exception`, so that its message can be
/// recovered verbatim.
#[derive(Debug)]
struct RaisedException(String);

impl std::fmt::Display for RaisedException {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedException {}

fn raise_exception(message: String) -> Result<String, JinjaError> {
    Err(
        JinjaError::new(ErrorKind::InvalidOperation, message.clone())
            .with_source(RaisedException(message)),
    )
}

impl ChatTemplate {
    /// Compiles a chat template.
    ///
    /// Fails with [`ChatError::Template`] when the source does not compile.
    pub fn new(source: &str) -> Result<Self, ChatError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|e| ChatError::Template {
                message: e.to_string(),
            })?;
        Ok(Self { env })
    }

    /// Renders `messages` into a prompt.
    ///
    /// The template sees `messages` (a list of `{role, content}`),
    /// `add_generation_prompt`, `bos_token` and `eos_token`, and may call
    /// `raise_exception(msg)`, which makes rendering fail with
    /// [`ChatError::Render`] carrying `msg`. Python string/dict/list methods used by
    /// HuggingFace templates (`.strip()`, `.startswith()`, `.items()`, ...) work.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<String, ChatError> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| render_error(&e))?;
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => bos_token,
                eos_token => eos_token,
            })
            .map_err(|e| render_error(&e))
    }
}

fn render_error(err: &JinjaError) -> ChatError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(current) = source {
        if let Some(raised) = current.downcast_ref::<RaisedException>() {
            return ChatError::Render {
                message: raised.0.clone(),
            };
        }
        source = current.source();
    }
    ChatError::Render {
        message: err.to_string(),
    }
}

/// `(chat_template, bos_token, eos_token)` as read by [`from_tokenizer_config`].
pub type ChatConfig = (Option<String>, Option<String>, Option<String>);

/// Reads the chat template and the BOS/EOS token texts from a HuggingFace
/// `tokenizer_config.json`.
///
/// Returns `(chat_template, bos_token, eos_token)`, each `None` when absent.
/// `chat_template` may be a string or a list of `{"name", "template"}` objects, of
/// which the one named `"default"` is taken (`None` if there is none). `bos_token`
/// and `eos_token` may be strings or objects with a `"content"` string.
/// Fails with [`ChatError::Config`] when the file cannot be read or is not JSON.
pub fn from_tokenizer_config(path: &Path) -> Result<ChatConfig, ChatError> {
    let config_error = |message: String| ChatError::Config {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| config_error(e.to_string()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| config_error(e.to_string()))?;

    let template = match json.get("chat_template") {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .find(|item| item.get("name").and_then(|n| n.as_str()) == Some("default"))
            .and_then(|item| item.get("template"))
            .and_then(|t| t.as_str())
            .map(str::to_string),
        _ => None,
    };
    Ok((
        template,
        token_text(json.get("bos_token")),
        token_text(json.get("eos_token")),
    ))
}

/// A token given as `"text"` or as `{"content": "text", ...}`.
fn token_text(value: Option<&serde_json::Value>) -> Option<String> {
    match value? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(map) => map
            .get("content")
            .and_then(|c| c.as_str())
            .map(str::to_string),
        _ => None,
    }
}
