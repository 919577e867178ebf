//! vLLM's OpenAI-compatible server (0.32), as measured (docs/remote.md):
//!
//! * scoring: one batched `POST /v1/completions` with token-id prompts (prompt + continuation),
//!   `max_tokens: 1`, `prompt_logprobs: 0`; `choices[i].prompt_logprobs[k]` maps the id of position
//!   `k`'s token to `{logprob, rank}` (the first position is `null`);
//! * a sample: `n: 1`, `seed`, `logprobs: 0`, `return_token_ids: true`; the sampled tokens'
//!   log-probabilities are the raw model's, or the proposal's when the server runs
//!   `--logprobs-mode processed_logprobs` (the entry then says `logprobs_mode = "processed"`);
//! * a full next-token row: `max_tokens: 1`, `logprobs: -1` (the server needs `--max-logprobs -1`),
//!   ids as keys with `return_tokens_as_token_ids: true`.

use super::Probe;
use super::http::Http;
use super::json::{self, Bad};
use crate::lm::Sample;
use crate::request::{GenerateRequest, Scored};
use llm_auction_model::generation::FinishReason;
use serde_json::{Value, json};

/// Scorings per request.
pub const SCORE_BATCH: usize = 8;

fn model(http: &Http) -> &str {
    http.spec().model.as_deref().unwrap_or_default()
}

/// `token_id:N` (vLLM's key with `return_tokens_as_token_ids`) or a bare id.
fn key_id(k: &str, vocab: usize) -> Result<u32, Bad> {
    let n = k.strip_prefix("token_id:").unwrap_or(k);
    let id: u64 = n.parse().map_err(|_| format!("{k:?} is not a token id"))?;
    if id >= vocab as u64 {
        return Err(format!("token {id} is outside the vocabulary of {vocab}"));
    }
    Ok(id as u32)
}

/// Health, served model, context, vocabulary and end-of-sequence token of replica `i`.
pub fn probe(http: &Http, i: usize) -> crate::error::Result<Probe> {
    let url = http.spec().urls[i].clone();
    http.get_on(i, "/health").or_else(|e| match e {
        // /health answers with an empty body.
        crate::error::EngineError::Remote { ref message, .. } if message.contains("not JSON") => {
            Ok(Value::Null)
        }
        e => Err(e),
    })?;
    let models = http.get_on(i, "/v1/models")?;
    let name = model(http);
    let context_length = (|| -> Result<usize, Bad> {
        let data = json::array(&models, "data")?;
        let m = data
            .iter()
            .find(|m| m.get("id").and_then(Value::as_str) == Some(name))
            .ok_or_else(|| {
                format!(
                    "the server does not serve {name:?} (it serves {})",
                    data.iter()
                        .filter_map(|m| m.get("id").and_then(Value::as_str))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        json::size(m, "max_model_len")
    })()
    .map_err(|m| http.error(&url, m))?;
    // The vocabulary: one full next-token row (this also checks --max-logprobs -1).
    let v = http.post_on(i, "/v1/completions", &row_body(name, &[1]))?;
    let vocab_size = (|| -> Result<usize, Bad> {
        let top = first_top(&v)?;
        Ok(top.len())
    })()
    .map_err(|m| http.error(&url, m))?;
    if vocab_size == 0 || vocab_size > 1 << 24 || context_length == 0 {
        return Err(http.error(
            &url,
            format!("implausible vocabulary {vocab_size} or context {context_length}"),
        ));
    }
    let eos_ids = eos(http, i, vocab_size)?;
    Ok(Probe {
        vocab_size,
        context_length,
        eos_ids,
    })
}

/// The end-of-sequence token: the last token of a chat turn's end, i.e. what the chat template puts
/// after an assistant message (the tokenizer's eos for chat models).
fn eos(http: &Http, i: usize, vocab: usize) -> crate::error::Result<Vec<u32>> {
    let url = http.spec().urls[i].clone();
    let v = http.post_on(
        i,
        "/tokenize",
        &json!({"model": model(http), "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
                "add_generation_prompt": false, "add_special_tokens": false}),
    )?;
    let ids = json::get(&v, "tokens")
        .and_then(|t| json::tokens(t, "tokens", vocab))
        .map_err(|m| http.error(&url, m))?;
    // The template ends the assistant turn with its end token, possibly followed by a newline.
    let nl = encode(http, "\n", vocab).unwrap_or_default();
    let mut end = ids.as_slice();
    if !nl.is_empty() && end.ends_with(&nl) {
        end = &end[..end.len() - nl.len()];
    }
    end.last()
        .map(|&t| vec![t])
        .ok_or_else(|| http.error(&url, "the chat template renders nothing"))
}

fn row_body(name: &str, context: &[u32]) -> Value {
    json!({
        "model": name, "prompt": [context], "max_tokens": 1, "logprobs": -1,
        "return_tokens_as_token_ids": true, "temperature": 1.0, "seed": 0,
    })
}

fn first_top(v: &Value) -> Result<&serde_json::Map<String, Value>, Bad> {
    let choices = json::array(v, "choices")?;
    let c = choices.first().ok_or("no choices")?;
    let lp = json::get(c, "logprobs")?;
    let tops = json::array(lp, "top_logprobs")?;
    tops.first()
        .and_then(Value::as_object)
        .ok_or_else(|| "top_logprobs[0] is not an object".into())
}

/// The chat prompt of `[system, user]` with the generation prompt (tokenized by the server with its
/// template, then detokenized).
pub fn chat_turn(
    http: &Http,
    system: &str,
    user: &str,
    vocab: usize,
) -> crate::error::Result<String> {
    let (url, v) = http.post(
        "/tokenize",
        &json!({"model": model(http), "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
                "add_generation_prompt": true, "add_special_tokens": false}),
    )?;
    let ids = json::get(&v, "tokens")
        .and_then(|t| json::tokens(t, "tokens", vocab))
        .map_err(|m| http.error(&url, m))?;
    decode(http, &ids)
}

/// Token ids of `text` (no special tokens added).
pub fn encode(http: &Http, text: &str, vocab: usize) -> crate::error::Result<Vec<u32>> {
    let (url, v) = http.post(
        "/tokenize",
        &json!({"model": model(http), "prompt": text, "add_special_tokens": false}),
    )?;
    json::get(&v, "tokens")
        .and_then(|t| json::tokens(t, "tokens", vocab))
        .map_err(|m| http.error(&url, m))
}

/// Token ids of user-supplied `text` as plain text. vLLM's `/tokenize` always reads special-token
/// text as the control token, so text holding one of `controls` (the chat template's own control
/// tokens, [`control_tokens`]) is refused instead.
pub fn encode_plain(
    http: &Http,
    text: &str,
    vocab: usize,
    controls: &[String],
) -> crate::error::Result<Vec<u32>> {
    if let Some(c) = controls.iter().find(|c| text.contains(c.as_str())) {
        return Err(crate::error::EngineError::ControlToken {
            field: "text".into(),
            token: c.clone(),
            backend: "a vLLM server".into(),
        });
    }
    encode(http, text, vocab)
}

/// The control tokens the chat template writes: tokens of its markup (rendered around the marks of
/// `llm_auction_model::chat`) that appear verbatim in it and are bracketed as every chat format's
/// control tokens are (`<|im_end|>`, `</s>`, `[INST]`).
pub fn control_tokens(http: &Http, vocab: usize) -> crate::error::Result<Vec<String>> {
    use llm_auction_model::chat::{SYSTEM_MARK, TurnPiece, USER_MARK, split_turn};
    let rendered = chat_turn(http, SYSTEM_MARK, USER_MARK, vocab)?;
    let mut out: Vec<String> = Vec::new();
    for piece in split_turn(&rendered)? {
        let TurnPiece::Markup(text) = piece else {
            continue;
        };
        // Each markup token's own text, one detokenization per token (a handful, once per model).
        let mut strs = Vec::new();
        for id in encode(http, text, vocab)? {
            strs.push(decode(http, &[id])?);
        }
        for s in strs.iter().map(String::as_str) {
            let bracketed = (s.starts_with('<') && s.ends_with('>'))
                || (s.starts_with('[') && s.ends_with(']'));
            if bracketed && s.len() >= 3 && text.contains(s) && !out.iter().any(|o| o == s) {
                out.push(s.to_string());
            }
        }
    }
    Ok(out)
}

/// Text of `ids` (special tokens kept).
pub fn decode(http: &Http, ids: &[u32]) -> crate::error::Result<String> {
    if ids.is_empty() {
        return Ok(String::new());
    }
    let (url, v) = http.post("/detokenize", &json!({"model": model(http), "tokens": ids}))?;
    Ok(json::string(&v, "prompt")
        .map_err(|m| http.error(&url, m))?
        .to_string())
}

/// The sample in a `/v1/completions` answer `v` to `g` (`processed`: the server runs
/// `--logprobs-mode processed_logprobs`).
///
/// # Errors
/// What is missing or malformed in `v`.
pub fn parse_generate(
    v: &Value,
    g: &GenerateRequest,
    vocab: usize,
    processed: bool,
) -> Result<Sample, Bad> {
    let p = &g.params;
    let choices = json::array(v, "choices")?;
    let c = choices.first().ok_or("no choices")?;
    let tokens = json::tokens(json::get(c, "token_ids")?, "token_ids", vocab)?;
    if tokens.len() > g.max_new_tokens {
        return Err(format!(
            "{} tokens for a limit of {}",
            tokens.len(),
            g.max_new_tokens
        ));
    }
    let lps = json::array(json::get(c, "logprobs")?, "token_logprobs")?;
    if lps.len() != tokens.len() {
        return Err(format!(
            "{} log-probabilities for {} tokens",
            lps.len(),
            tokens.len()
        ));
    }
    let lp = lps
        .iter()
        .map(|x| {
            x.as_f64()
                .ok_or_else(|| "token_logprobs holds a non-number".to_string())
                .and_then(|x| json::check_logprob(x, "token_logprobs"))
        })
        .collect::<Result<Vec<f64>, Bad>>()?;
    let stopped = tokens.last().is_some_and(|t| g.stop.contains(t));
    let finish = if stopped || c.get("finish_reason").and_then(Value::as_str) == Some("stop") {
        FinishReason::Stop
    } else {
        FinishReason::Length
    };
    // With temperature 1 and no truncation the proposal is the raw model.
    let untempered = !p.greedy && p.temperature == 1.0 && p.top_p >= 1.0 && p.top_k == 0;
    let (raw, proposal) = if processed {
        (untempered.then(|| lp.clone()), Some(lp))
    } else {
        (Some(lp.clone()), untempered.then_some(lp))
    };
    Ok(Sample {
        logprobs_raw: raw,
        logprobs_proposal: proposal,
        tokens,
        finish,
    })
}

/// One sample.
pub fn generate(http: &Http, g: &GenerateRequest, vocab: usize) -> crate::error::Result<Sample> {
    let p = &g.params;
    let body = json!({
        "model": model(http), "prompt": [g.prompt], "n": 1, "max_tokens": g.max_new_tokens,
        "seed": g.seed & (i64::MAX as u64),
        "temperature": if p.greedy { 0.0 } else { p.temperature }, "top_p": p.top_p,
        "top_k": if p.top_k == 0 { -1 } else { p.top_k as i64 }, "min_p": 0.0,
        "repetition_penalty": 1.0, "logprobs": 0, "return_token_ids": true,
        "stop_token_ids": g.stop, "skip_special_tokens": false,
    });
    let (url, v) = http.post("/v1/completions", &body)?;

    parse_generate(&v, g, vocab, http.spec().processed_logprobs)
        .map_err(|m| http.error(&url, format!("/v1/completions: {m}")))
}

/// The scorings in a `/v1/completions` answer `v` with `prompt_logprobs` for `items`.
///
/// # Errors
/// What is missing or malformed in `v`.
pub fn parse_score(
    v: &Value,
    items: &[(Vec<u32>, Vec<u32>)],
    vocab: usize,
) -> Result<Vec<Scored>, Bad> {
    let prompts: Vec<Vec<u32>> = items
        .iter()
        .map(|(p, c)| [p.as_slice(), c].concat())
        .collect();

    let choices = json::array(v, "choices")?;
    if choices.len() != items.len() {
        return Err(format!(
            "{} choices for {} prompts",
            choices.len(),
            items.len()
        ));
    }
    let mut out: Vec<Option<Scored>> = vec![None; items.len()];
    for (k, c) in choices.iter().enumerate() {
        let i = c
            .get("index")
            .and_then(Value::as_u64)
            .map_or(k, |i| i as usize);
        let (prompt, cont) = items.get(i).ok_or("choice index out of range")?;
        let full = &prompts[i];
        let plp = json::array(c, "prompt_logprobs")?;
        if plp.len() != full.len() {
            return Err(format!(
                "prompt_logprobs has {} positions for {} tokens",
                plp.len(),
                full.len()
            ));
        }
        let mut token_logprobs = Vec::with_capacity(cont.len());
        for pos in prompt.len()..full.len() {
            let entry = plp[pos]
                .as_object()
                .ok_or("prompt_logprobs holds a non-object")?;
            let want = full[pos];
            let lp = entry
                .iter()
                .find(|(k, _)| key_id(k, vocab).ok() == Some(want))
                .ok_or_else(|| format!("prompt_logprobs lacks token {want}"))?
                .1;
            let x = json::logprob(lp, "logprob")? as f32;
            if !x.is_finite() {
                return Err(format!(
                    "prompt_logprobs: {x} does not fit an f32 log-probability"
                ));
            }
            token_logprobs.push(x);
        }
        let total_logprob = token_logprobs.iter().map(|&x| x as f64).sum();
        out[i] = Some(Scored {
            token_logprobs,
            total_logprob,
        });
    }
    out.into_iter()
        .map(|s| s.ok_or_else(|| "a prompt has no choice".to_string()))
        .collect()
}

/// Teacher-forced log-probabilities of each `(prompt, continuation)`, in one request.
pub fn score(
    http: &Http,
    items: &[(Vec<u32>, Vec<u32>)],
    vocab: usize,
) -> crate::error::Result<Vec<Scored>> {
    let prompts: Vec<Vec<u32>> = items
        .iter()
        .map(|(p, c)| [p.as_slice(), c].concat())
        .collect();
    let body = json!({
        "model": model(http), "prompt": prompts, "max_tokens": 1, "prompt_logprobs": 0,
        "temperature": 0.0,
    });
    let (url, v) = http.post("/v1/completions", &body)?;

    parse_score(&v, items, vocab).map_err(|m| http.error(&url, format!("/v1/completions: {m}")))
}

/// The full next-token row in a `/v1/completions` answer `v` with `logprobs: -1`.
///
/// # Errors
/// What is missing or malformed in `v`.
pub fn parse_next_row(v: &Value, vocab: usize) -> Result<Vec<f32>, Bad> {
    let top = first_top(v)?;
    if top.len() != vocab {
        return Err(format!(
            "the server returned {} of {vocab} next-token log-probabilities; start vLLM with \
             --max-logprobs -1",
            top.len()
        ));
    }
    let mut row = vec![f32::NAN; vocab];
    for (k, lp) in top {
        let id = key_id(k, vocab)? as usize;
        let x = lp.as_f64().ok_or("top_logprobs holds a non-number")?;
        row[id] = if x == f64::NEG_INFINITY {
            f32::NEG_INFINITY
        } else {
            json::check_logprob(x, "top_logprobs")? as f32
        };
    }
    if row.iter().any(|x| x.is_nan()) {
        return Err("top_logprobs repeats some ids and misses others".into());
    }
    Ok(row)
}

/// The full next-token log-probability row after `context`.
pub fn next_row(http: &Http, context: &[u32], vocab: usize) -> crate::error::Result<Vec<f32>> {
    let (url, v) = http.post("/v1/completions", &row_body(model(http), context))?;

    parse_next_row(&v, vocab).map_err(|m| http.error(&url, format!("/v1/completions: {m}")))
}
