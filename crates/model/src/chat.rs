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

/// Instructions one rendering may execute (minijinja fuel). A chat template of a few messages
/// takes a few thousand; a template with runaway nested loops stops here with an error.
pub const RENDER_FUEL: u64 = 2_000_000;

/// Nesting depth of template calls, loops and includes.
pub const RENDER_RECURSION: usize = 64;

/// Bytes one rendering may write: a prompt beyond this cannot fit any context.
pub const RENDER_MAX_BYTES: usize = 4 << 20;

/// The text rendered in place of the system message by [`ChatTemplate::render`] callers that encode
/// the user-supplied parts on their own (see [`split_turn`]); private-use code points, so no
/// template writes them by itself.
pub const SYSTEM_MARK: &str = "\u{E000}llm-auction:system\u{E001}";

/// As [`SYSTEM_MARK`], for the user message.
pub const USER_MARK: &str = "\u{E000}llm-auction:user\u{E001}";

/// A piece of a chat turn rendered with [`SYSTEM_MARK`] and [`USER_MARK`] as the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnPiece<'a> {
    /// The template's own markup: its control tokens are meant (encode with special tokens).
    Markup(&'a str),
    /// Where the system message goes (user-supplied: encode as plain text).
    System,
    /// Where the user message goes (user-supplied: encode as plain text).
    User,
}

/// Splits a turn rendered with the marks into markup and message pieces, so that only the
/// template's markup can make control tokens: a query holding `<|im_end|>` stays text.
///
/// # Errors
/// [`ChatError::Render`] when the template did not write the user message verbatim (it changed
/// or dropped it), so no prompt with the user's text could be built.
pub fn split_turn(rendered: &str) -> Result<Vec<TurnPiece<'_>>, ChatError> {
    let mut pieces = Vec::new();
    let mut rest = rendered;
    let mut users = 0;
    loop {
        let next = [
            (SYSTEM_MARK, TurnPiece::System),
            (USER_MARK, TurnPiece::User),
        ]
        .into_iter()
        .filter_map(|(mark, piece)| rest.find(mark).map(|at| (at, mark, piece)))
        .min_by_key(|&(at, ..)| at);
        let Some((at, mark, piece)) = next else {
            break;
        };
        if at > 0 {
            pieces.push(TurnPiece::Markup(&rest[..at]));
        }
        users += usize::from(piece == TurnPiece::User);
        pieces.push(piece);
        rest = &rest[at + mark.len()..];
    }
    if !rest.is_empty() {
        pieces.push(TurnPiece::Markup(rest));
    }
    if users == 0 {
        return Err(ChatError::Render {
            message: "the chat template does not write the user message verbatim".into(),
        });
    }
    Ok(pieces)
}

/// The token ids of one chat turn whose `system` and `user` texts are encoded by `plain` (no
/// special-token parsing) and whose markup (from `rendered`, a turn rendered with the marks) by
/// `markup`.
///
/// # Errors
/// As [`split_turn`] (converted into `E`), and the encoders' errors.
pub fn encode_turn<E: From<ChatError>>(
    rendered: &str,
    system: &str,
    user: &str,
    mut markup: impl FnMut(&str) -> Result<Vec<u32>, E>,
    mut plain: impl FnMut(&str) -> Result<Vec<u32>, E>,
) -> Result<Vec<u32>, E> {
    let mut ids = Vec::new();
    for piece in split_turn(rendered)? {
        match piece {
            TurnPiece::Markup(text) => ids.extend(markup(text)?),
            TurnPiece::System => ids.extend(plain(system)?),
            TurnPiece::User => ids.extend(plain(user)?),
        }
    }
    Ok(ids)
}

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
        env.set_fuel(Some(RENDER_FUEL));
        env.set_recursion_limit(RENDER_RECURSION);
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
        let mut out = Bounded(Vec::new());
        template
            .render_captured_to(
                context! {
                    messages => messages,
                    add_generation_prompt => add_generation_prompt,
                    bos_token => bos_token,
                    eos_token => eos_token,
                },
                &mut out,
            )
            .map_err(|e| render_error(&e))?;
        String::from_utf8(out.0).map_err(|_| ChatError::Render {
            message: "the template wrote invalid UTF-8".into(),
        })
    }
}

/// A buffer that refuses to grow past [`RENDER_MAX_BYTES`].
struct Bounded(Vec<u8>);

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > RENDER_MAX_BYTES {
            return Err(std::io::Error::other(format!(
                "the rendered prompt exceeds {RENDER_MAX_BYTES} bytes"
            )));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
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
    let message = match err.kind() {
        ErrorKind::OutOfFuel => {
            format!("the chat template took more than {RENDER_FUEL} steps (a runaway loop?)")
        }
        ErrorKind::WriteFailure => {
            std::error::Error::source(err).map_or_else(|| err.to_string(), |s| s.to_string())
        }
        _ => err.to_string(),
    };
    ChatError::Render { message }
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
