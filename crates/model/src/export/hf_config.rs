//! The JSON files of an `hf` export (`config.json`, `generation_config.json`,
//! `tokenizer_config.json`) and its `tokenizer.json` ([`hf_tokenizer`]).

use crate::config::LlamaConfig;
use crate::tokenizer::TextTokenizer;
use tokenizers::Tokenizer;
use tokenizers::models::ModelWrapper;
use tokenizers::processors::template::TemplateProcessing;

/// An `f32` as the shortest decimal that reads back as the same `f32` (so `1e-5` is written
/// `1e-5`, not `9.999999747378752e-6`).
fn json_f32(x: f32) -> serde_json::Value {
    x.to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// One id as a number, several as a list, none as nothing.
fn ids_json(ids: &[u32]) -> Option<serde_json::Value> {
    match ids {
        [] => None,
        [one] => Some((*one).into()),
        many => Some(many.to_vec().into()),
    }
}

/// The `config.json` of `cfg` (`LlamaForCausalLM`, `float32`).
pub fn hf_config_json(cfg: &LlamaConfig, tie_word_embeddings: bool) -> serde_json::Value {
    let mut c = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": json_f32(cfg.rms_norm_eps),
        "rope_theta": json_f32(cfg.rope_theta),
        "rope_scaling": null,
        "max_position_embeddings": cfg.max_position,
        "vocab_size": cfg.vocab_size,
        "tie_word_embeddings": tie_word_embeddings,
        "attention_bias": false,
        "mlp_bias": false,
        "torch_dtype": "float32",
        "use_cache": true,
    });
    if let Some(id) = cfg.bos_token_id {
        c["bos_token_id"] = id.into();
    }
    if let Some(ids) = ids_json(&cfg.eos_token_ids) {
        c["eos_token_id"] = ids;
    }
    c
}

pub(super) fn generation_config_json(cfg: &LlamaConfig, pad: Option<u32>) -> serde_json::Value {
    let mut g = serde_json::json!({});
    if let Some(id) = cfg.bos_token_id {
        g["bos_token_id"] = id.into();
    }
    if let Some(ids) = ids_json(&cfg.eos_token_ids) {
        g["eos_token_id"] = ids;
    }
    if let Some(id) = pad {
        g["pad_token_id"] = id.into();
    }
    g
}

pub(super) fn tokenizer_config_json(
    cfg: &LlamaConfig,
    chat_template: Option<&str>,
    bos: &str,
    eos: &str,
    pad: Option<&str>,
    unk: Option<&str>,
) -> serde_json::Value {
    let mut t = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": false,
        "add_eos_token": false,
        "add_prefix_space": false,
        "clean_up_tokenization_spaces": false,
        "model_max_length": cfg.max_position,
        "bos_token": bos,
        "eos_token": eos,
    });
    if let Some(p) = pad {
        t["pad_token"] = p.into();
    }
    if let Some(u) = unk {
        t["unk_token"] = u.into();
    }
    if let Some(c) = chat_template {
        t["chat_template"] = c.into();
    }
    t
}

/// The Hugging Face tokenizer of `tok` as `tokenizer.json` stores it: the same model,
/// pre-tokenizer (e.g. `Digits(individual)` then `ByteLevel` for SmolLM2), decoder and added
/// tokens, with a post-processor that adds nothing (`$A`, pair `$A $B:1`), because the model never
/// adds special tokens when it encodes. For SmolLM2 this is exactly the reference `tokenizer.json`. `transformers` and vLLM then give the same ids as
/// [`TextTokenizer::encode`], with or without `add_special_tokens`.
pub fn hf_tokenizer(tok: &TextTokenizer) -> Tokenizer {
    let mut inner = tok.inner().clone();
    // A BPE built from GGUF metadata has no continuing-subword prefix or end-of-word suffix
    // (`null`); Hugging Face files spell that `""`, which encodes identically.
    if let ModelWrapper::BPE(bpe) = inner.get_model() {
        let mut bpe = bpe.clone();
        bpe.continuing_subword_prefix
            .get_or_insert_with(String::new);
        bpe.end_of_word_suffix.get_or_insert_with(String::new);
        inner.with_model(bpe);
    }
    // Both templates are fixed, valid strings, so the builder cannot fail; fall back to no
    // post-processor (which adds nothing either) rather than panicking.
    let plain = TemplateProcessing::builder()
        .try_single("$A")
        .and_then(|b| b.try_pair("$A $B:1"))
        .ok()
        .and_then(|b| b.build().ok());
    inner.with_post_processor(plain);
    inner
}
