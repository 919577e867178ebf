//! Text tokenization: a thin wrapper over a HuggingFace [`tokenizers::Tokenizer`].
//!
//! A [`TextTokenizer`] is built either from a HuggingFace `tokenizer.json` file
//! ([`TextTokenizer::from_file`]) or from the tokenizer metadata stored in a GGUF
//! file ([`TextTokenizer::from_gguf`], fed with a [`GgufTokenizerSpec`]).
//!
//! Only byte-level BPE vocabularies (`tokenizer.ggml.model = "gpt2"`) are supported
//! from GGUF metadata. Encoding never adds BOS/EOS or other template tokens, but the
//! text of a special token inside the input (e.g. `<|im_start|>`) is recognised as
//! that token, which is what chat templates rely on.

use std::path::{Path, PathBuf};

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Merges, Vocab};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

/// GGUF `tokenizer.ggml.token_type` value of a normal token.
pub const TOKEN_TYPE_NORMAL: i32 = 1;
/// GGUF `tokenizer.ggml.token_type` value of the unknown token.
pub const TOKEN_TYPE_UNKNOWN: i32 = 2;
/// GGUF `tokenizer.ggml.token_type` value of a control (special) token.
pub const TOKEN_TYPE_CONTROL: i32 = 3;
/// GGUF `tokenizer.ggml.token_type` value of a user-defined token.
pub const TOKEN_TYPE_USER_DEFINED: i32 = 4;
/// GGUF `tokenizer.ggml.token_type` value of an unused token.
pub const TOKEN_TYPE_UNUSED: i32 = 5;
/// GGUF `tokenizer.ggml.token_type` value of a byte token.
pub const TOKEN_TYPE_BYTE: i32 = 6;

/// The `tokenizer.ggml.pre` values accepted by [`TextTokenizer::from_gguf`].
pub const SUPPORTED_PRE_TOKENIZERS: &[&str] = &["smollm", "gpt2", "default"];

/// Errors raised while loading a tokenizer or while encoding/decoding text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    /// A `tokenizer.json` file could not be read or parsed.
    #[error("cannot load tokenizer from {}: {message}", path.display())]
    Load {
        /// The file that was being loaded.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// `tokenizer.ggml.model` names a tokenizer family that is not supported.
    #[error("unsupported tokenizer model {model:?}: only \"gpt2\" (byte-level BPE) is supported")]
    UnsupportedModel {
        /// The value of `tokenizer.ggml.model`.
        model: String,
    },
    /// `tokenizer.ggml.pre` names a pre-tokenizer that is not supported.
    #[error(
        "unsupported pre-tokenizer {pre:?} (tokenizer.ggml.pre); supported: smollm, gpt2, default (or absent)"
    )]
    UnsupportedPreTokenizer {
        /// The value of `tokenizer.ggml.pre`.
        pre: String,
    },
    /// The vocabulary, merges or token types are inconsistent.
    #[error("invalid tokenizer vocabulary: {message}")]
    InvalidVocab {
        /// What is inconsistent.
        message: String,
    },
    /// Encoding text failed.
    #[error("encoding failed: {message}")]
    Encode {
        /// The underlying error.
        message: String,
    },
    /// Decoding ids failed.
    #[error("decoding failed: {message}")]
    Decode {
        /// The underlying error.
        message: String,
    },
    /// A token id outside the vocabulary was given to decode.
    #[error("unknown token id {id} (vocabulary size {vocab})")]
    UnknownTokenId {
        /// The offending id.
        id: u32,
        /// The vocabulary size, added tokens included.
        vocab: usize,
    },
}

/// Tokenizer metadata as stored in a GGUF file.
///
/// The caller reads these keys from the GGUF metadata and passes them in.
#[derive(Debug, Clone, Default)]
pub struct GgufTokenizerSpec {
    /// `tokenizer.ggml.model`, e.g. `"gpt2"`.
    pub model: String,
    /// `tokenizer.ggml.pre`, e.g. `"smollm"`; `None` when the key is absent.
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`; a token's id is its index.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.merges`, each `"left right"` separated by one space, in rank order.
    pub merges: Vec<String>,
    /// `tokenizer.ggml.token_type`, one per token: 1 normal, 2 unknown, 3 control,
    /// 4 user-defined, 5 unused, 6 byte.
    pub token_types: Option<Vec<i32>>,
}

/// A text tokenizer: a HuggingFace [`Tokenizer`] plus the ids of its special tokens.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    /// The same tokenizer with special-token text encoded as ordinary characters, for user text.
    plain: Tokenizer,
    special_ids: Vec<u32>,
}

/// The ids of `text` under `tokenizer`, nothing added.
fn encode_with(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>, TokenizerError> {
    let encoding = tokenizer
        .encode_fast(text, false)
        .map_err(|e| TokenizerError::Encode {
            message: e.to_string(),
        })?;
    Ok(encoding.get_ids().to_vec())
}

impl TextTokenizer {
    /// Loads a HuggingFace `tokenizer.json` file.
    pub fn from_file(path: &Path) -> Result<Self, TokenizerError> {
        let load = |message: String| TokenizerError::Load {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| load(e.to_string()))?;
        // The tokenizers crate panics (rather than erring) on some malformed JSON inside its
        // sections (found by fuzzing: a syntax error within "decoder"); well-formed JSON first.
        serde_json::from_str::<serde::de::IgnoredAny>(&text)
            .map_err(|e| load(format!("not valid JSON: {e}")))?;
        let inner: Tokenizer = text
            .parse()
            .map_err(|e: tokenizers::Error| load(e.to_string()))?;
        let mut special_ids: Vec<u32> = inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, tok)| tok.special)
            .map(|(id, _)| id)
            .collect();
        special_ids.sort_unstable();
        Ok(Self::with_plain(inner, special_ids))
    }

    /// Builds a tokenizer from GGUF tokenizer metadata.
    ///
    /// Only `model = "gpt2"` (byte-level BPE) is supported. The pre-tokenizer is
    /// chosen by `pre`: `"smollm"` splits every numeric character into its own piece
    /// before the GPT-2 regex; `"gpt2"`, `"default"` or `None` use the GPT-2 regex
    /// alone. CONTROL tokens become special added tokens and USER_DEFINED tokens
    /// non-special added tokens, both keeping their ids.
    pub fn from_gguf(spec: GgufTokenizerSpec) -> Result<Self, TokenizerError> {
        let GgufTokenizerSpec {
            model,
            pre,
            tokens,
            merges,
            token_types,
        } = spec;

        if model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel { model });
        }
        let pre_tokenizer = pre_tokenizer_for(pre.as_deref())?;

        if tokens.is_empty() {
            return Err(invalid("the token list is empty".to_string()));
        }
        if u32::try_from(tokens.len()).is_err() {
            return Err(invalid(format!("too many tokens ({})", tokens.len())));
        }
        if let Some(types) = &token_types
            && types.len() != tokens.len()
        {
            return Err(invalid(format!(
                "token_type has {} entries but there are {} tokens",
                types.len(),
                tokens.len()
            )));
        }

        let mut vocab = Vocab::default();
        for (id, token) in (0u32..).zip(tokens.iter()) {
            if let Some(previous) = vocab.insert(token.clone(), id) {
                return Err(invalid(format!(
                    "duplicate token {token:?} (ids {previous} and {id})"
                )));
            }
        }

        let mut pairs: Merges = Vec::with_capacity(merges.len());
        let mut merged = String::new();
        for (rank, merge) in merges.iter().enumerate() {
            let (left, right) = split_merge(merge).ok_or_else(|| {
                invalid(format!(
                    "merge #{rank} {merge:?} is not two tokens separated by one space"
                ))
            })?;
            for part in [left, right] {
                if !vocab.contains_key(part) {
                    return Err(invalid(format!(
                        "merge #{rank} {merge:?} refers to unknown token {part:?}"
                    )));
                }
            }
            merged.clear();
            merged.push_str(left);
            merged.push_str(right);
            if !vocab.contains_key(merged.as_str()) {
                return Err(invalid(format!(
                    "merge #{rank} {merge:?} produces unknown token {merged:?}"
                )));
            }
            pairs.push((left.to_string(), right.to_string()));
        }

        let mut special = Vec::new();
        let mut user_defined = Vec::new();
        if let Some(types) = &token_types {
            for ((id, token), ty) in (0u32..).zip(tokens.iter()).zip(types.iter()) {
                if token.is_empty() {
                    continue;
                }
                match *ty {
                    TOKEN_TYPE_CONTROL => special.push((id, token.clone())),
                    TOKEN_TYPE_USER_DEFINED => user_defined.push((id, token.clone())),
                    _ => {}
                }
            }
        }

        let bpe = BPE::builder()
            .vocab_and_merges(vocab, pairs)
            .build()
            .map_err(|e| invalid(e.to_string()))?;

        let mut inner = Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(pre_tokenizer));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        inner
            .add_special_tokens(
                special
                    .iter()
                    .map(|(_, content)| AddedToken::from(content.clone(), true)),
            )
            .map_err(|e| invalid(e.to_string()))?;
        inner
            .add_tokens(
                user_defined
                    .iter()
                    .map(|(_, content)| AddedToken::from(content.clone(), false)),
            )
            .map_err(|e| invalid(e.to_string()))?;

        // Added tokens already present in the model vocabulary keep the model's id;
        // check it rather than trusting it.
        for (id, content) in special.iter().chain(user_defined.iter()) {
            let got = inner.token_to_id(content);
            if got != Some(*id) {
                return Err(invalid(format!(
                    "added token {content:?} got id {got:?} instead of {id}"
                )));
            }
        }

        let special_ids = special.iter().map(|(id, _)| *id).collect();
        Ok(Self::with_plain(inner, special_ids))
    }

    fn with_plain(inner: Tokenizer, special_ids: Vec<u32>) -> Self {
        let mut plain = inner.clone();
        plain.set_encode_special_tokens(true);
        Self {
            inner,
            plain,
            special_ids,
        }
    }

    /// Encodes user-supplied `text` as plain text: the text of a special token inside it (e.g.
    /// `<|im_end|>`) becomes ordinary tokens, never the control token, so a query cannot forge a
    /// turn of the chat template. No tokens are added.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        encode_with(&self.plain, text)
    }

    /// Encodes `text` into token ids.
    ///
    /// No BOS/EOS or other tokens are added, but the text of a special token inside
    /// `text` (e.g. `<|im_start|>`) is encoded as that special token.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        encode_with(&self.inner, text)
    }

    /// Decodes token ids into text, keeping the text of special tokens.
    ///
    /// Fails with [`TokenizerError::UnknownTokenId`] on an id outside the vocabulary.
    /// Byte sequences that are not valid UTF-8 are replaced by U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        if let Some(&id) = ids.iter().find(|&&id| self.inner.id_to_token(id).is_none()) {
            return Err(TokenizerError::UnknownTokenId {
                id,
                vocab: self.vocab_size(),
            });
        }
        self.inner
            .decode(ids, false)
            .map_err(|e| TokenizerError::Decode {
                message: e.to_string(),
            })
    }

    /// The raw vocabulary piece of `id` (e.g. `"Ġworld"`), or `None` if unknown.
    pub fn token_str(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of the raw vocabulary piece `piece` (e.g. `"Ġworld"`), if any.
    pub fn token_id(&self, piece: &str) -> Option<u32> {
        self.inner.token_to_id(piece)
    }

    /// The vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The ids of the special (control) tokens, sorted ascending.
    pub fn special_ids(&self) -> &[u32] {
        &self.special_ids
    }

    /// Whether `id` is a special (control) token.
    pub fn is_special(&self, id: u32) -> bool {
        self.special_ids.binary_search(&id).is_ok()
    }

    /// The wrapped HuggingFace tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}

/// The 256 single-character pieces of the GPT-2 byte-level alphabet.
///
/// Element `i` is the piece that stands for byte `i`: printable Latin-1 bytes
/// (`!`..=`~`, `¡`..=`¬`, `®`..=`ÿ`) map to themselves, the others to U+0100 and up
/// in byte order (so byte `b' '` is `"Ġ"` and `b'\n'` is `"Ċ"`).
pub fn byte_level_alphabet() -> Vec<String> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut next_shifted: u32 = 256;
    (0..=255u8)
        .map(|b| {
            let c = if printable(b) {
                char::from(b)
            } else {
                let c = char::from_u32(next_shifted).unwrap_or(char::REPLACEMENT_CHARACTER);
                next_shifted += 1;
                c
            };
            c.to_string()
        })
        .collect()
}

fn invalid(message: String) -> TokenizerError {
    TokenizerError::InvalidVocab { message }
}

/// Splits a GGUF merge entry `"left right"` at its single space.
fn split_merge(merge: &str) -> Option<(&str, &str)> {
    let (left, right) = merge.split_once(' ')?;
    if left.is_empty() || right.is_empty() || right.contains(' ') {
        return None;
    }
    Some((left, right))
}

fn pre_tokenizer_for(pre: Option<&str>) -> Result<PreTokenizerWrapper, TokenizerError> {
    let byte_level = ByteLevel::new(false, true, true);
    match pre {
        Some("smollm") => Ok(PreTokenizerWrapper::Sequence(Sequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            PreTokenizerWrapper::ByteLevel(byte_level),
        ]))),
        None | Some("gpt2") | Some("default") => Ok(PreTokenizerWrapper::ByteLevel(byte_level)),
        Some(other) => Err(TokenizerError::UnsupportedPreTokenizer {
            pre: other.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn alphabet_matches_byte_level() {
        let ours: HashSet<char> = byte_level_alphabet()
            .iter()
            .filter_map(|s| s.chars().next())
            .collect();
        assert_eq!(ours.len(), 256);
        let theirs: HashSet<char> = ByteLevel::alphabet().into_iter().collect();
        assert_eq!(ours, theirs);
        let alphabet = byte_level_alphabet();
        assert_eq!(alphabet[usize::from(b' ')], "Ġ");
        assert_eq!(alphabet[usize::from(b'\n')], "Ċ");
        assert_eq!(alphabet[usize::from(b'\t')], "ĉ");
        assert_eq!(alphabet[usize::from(b'a')], "a");
    }

    #[test]
    fn split_merge_rules() {
        assert_eq!(split_merge("Ġ t"), Some(("Ġ", "t")));
        assert_eq!(split_merge("abc"), None);
        assert_eq!(split_merge("a  b"), None);
        assert_eq!(split_merge(" a"), None);
        assert_eq!(split_merge("a b c"), None);
    }
}
