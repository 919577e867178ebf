//! llama.cpp's `llama-server` (b11xxx), as measured (docs/remote.md):
//!
//! * no prompt log-probabilities and `echo` is silently ignored, so a continuation is scored one
//!   token at a time: the prompt plus the tokens before it, `n_predict: 1`, the token forced with
//!   `logit_bias`, and its raw log-probability read from `completion_probabilities` (the server
//!   keeps each sequence's KV in a slot, so each request computes one token);
//! * a sample: `n_predict`, `seed`, the sampler chain set explicitly (`temperature` then `top_p`,
//!   `top_k: 0`, `min_p: 0`, `repeat_penalty: 1`) and `post_sampling_probs: true`, which reports
//!   each token's probability under the proposal sampled from;
//! * a full next-token row: `n_probs` = vocabulary with `post_sampling_probs: true` and only the
//!   temperature sampler at 1 (the raw `logprob` rows are normalised in f32 and sum to 1 + 1e-4).

use super::Probe;
use super::http::Http;
use super::json::{self, Bad};
use crate::lm::Sample;
use crate::request::{GenerateRequest, Scored};
use llm_auction_model::generation::FinishReason;
use serde_json::{Value, json};

/// A bias that makes the forced token the only choice.
const FORCE: f64 = 1.0e4;

/// Health, model, vocabulary, context and end-of-sequence token of replica `i`.
pub fn probe(http: &Http, i: usize) -> crate::error::Result<Probe> {
    let url = &http.spec().urls[i];
    http.get_on(i, "/health")?;
    let models = http.get_on(i, "/v1/models")?;
    let props = http.get_on(i, "/props")?;
    let parse = || -> Result<(usize, usize, String), Bad> {
        let data = json::array(&models, "data")?;
        let meta = data
            .first()
            .ok_or("/v1/models lists no model")?
            .get("meta")
            .ok_or("/v1/models: the model has no \"meta\"")?;
        let vocab = json::size(meta, "n_vocab")?;
        let settings = json::get(&props, "default_generation_settings")?;
        let ctx = json::size(settings, "n_ctx")?;
        let eos = json::string(&props, "eos_token")?.to_string();
        Ok((vocab, ctx, eos))
    };
    let (vocab_size, context_length, eos) = parse().map_err(|m| http.error(url, m))?;
    if vocab_size == 0 || vocab_size > 1 << 24 || context_length == 0 {
        return Err(http.error(
            url,
            format!("implausible vocabulary {vocab_size} or context {context_length}"),
        ));
    }
    let ids = http.post_on(i, "/tokenize", &json!({"content": eos}))?;
    let eos_ids = json::tokens(
        json::get(&ids, "tokens").map_err(|m| http.error(url, m))?,
        "eos",
        vocab_size,
    )
    .map_err(|m| http.error(url, m))?;
    if eos_ids.len() != 1 {
        return Err(http.error(
            url,
            format!(
                "the end-of-sequence token {eos:?} is {} tokens",
                eos_ids.len()
            ),
        ));
    }
    Ok(Probe {
        vocab_size,
        context_length,
        eos_ids,
    })
}

/// The chat prompt of `[system, user]` with the generation prompt.
pub fn chat_turn(http: &Http, system: &str, user: &str) -> crate::error::Result<String> {
    let (url, v) = http.post(
        "/apply-template",
        &json!({"messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
                "add_generation_prompt": true}),
    )?;
    Ok(json::string(&v, "prompt")
        .map_err(|m| http.error(&url, m))?
        .to_string())
}

/// Token ids of `text` (special-token text recognised, nothing added).
pub fn encode(http: &Http, text: &str, vocab: usize) -> crate::error::Result<Vec<u32>> {
    tokenize(http, text, vocab, true)
}

/// Token ids of user-supplied `text` as plain text (`parse_special: false`: special-token text is
/// encoded as ordinary characters), nothing added.
pub fn encode_plain(http: &Http, text: &str, vocab: usize) -> crate::error::Result<Vec<u32>> {
    tokenize(http, text, vocab, false)
}

/// `/tokenize` of `text`, nothing added; `parse_special` reads special-token text as the token.
fn tokenize(
    http: &Http,
    text: &str,
    vocab: usize,
    parse_special: bool,
) -> crate::error::Result<Vec<u32>> {
    let (url, v) = http.post(
        "/tokenize",
        &json!({"content": text, "add_special": false, "parse_special": parse_special}),
    )?;
    json::get(&v, "tokens")
        .and_then(|t| json::tokens(t, "tokens", vocab))
        .map_err(|m| http.error(&url, m))
}

/// Text of `ids`.
pub fn decode(http: &Http, ids: &[u32]) -> crate::error::Result<String> {
    if ids.is_empty() {
        return Ok(String::new());
    }
    let (url, v) = http.post("/detokenize", &json!({"tokens": ids}))?;
    Ok(json::string(&v, "content")
        .map_err(|m| http.error(&url, m))?
        .to_string())
}

fn with_model(http: &Http, mut body: Value) -> Value {
    if let (Some(m), Some(obj)) = (&http.spec().model, body.as_object_mut()) {
        obj.insert("model".into(), json!(m));
    }
    body
}

/// A llama.cpp seed from ours (`u32::MAX` means "random" there, so it is avoided).
fn seed32(seed: u64) -> u32 {
    let s = (seed ^ (seed >> 32)) as u32;
    if s == u32::MAX { s - 1 } else { s }
}

/// The sample in a `/completion` answer `v` to `g`.
///
/// # Errors
/// What is missing or malformed in `v`.
pub fn parse_generate(v: &Value, g: &GenerateRequest, vocab: usize) -> Result<Sample, Bad> {
    let p = &g.params;

    let steps = json::array(v, "completion_probabilities")?;
    if steps.len() > g.max_new_tokens {
        return Err(format!(
            "{} tokens for a limit of {}",
            steps.len(),
            g.max_new_tokens
        ));
    }
    let mut tokens = Vec::with_capacity(steps.len());
    let mut lp = Vec::with_capacity(steps.len());
    for s in steps {
        tokens.push(json::token(
            json::get(s, "id")?,
            "completion_probabilities.id",
            vocab,
        )?);
        lp.push(json::prob_as_logprob(s, "prob")?);
        if g.stop.contains(tokens.last().unwrap_or(&u32::MAX)) {
            break;
        }
    }
    let stopped = tokens.last().is_some_and(|t| g.stop.contains(t));
    let finish = if stopped {
        FinishReason::Stop
    } else if tokens.len() >= g.max_new_tokens {
        FinishReason::Length
    } else {
        match v.get("stop_type").and_then(Value::as_str) {
            Some("eos") | Some("word") => FinishReason::Stop,
            _ => FinishReason::Length,
        }
    };
    // With temperature 1 and no truncation the proposal is the raw model.
    let untempered = !p.greedy && p.temperature == 1.0 && p.top_p >= 1.0 && p.top_k == 0;
    Ok(Sample {
        logprobs_raw: untempered.then(|| lp.clone()),
        logprobs_proposal: Some(lp),
        tokens,
        finish,
    })
}

/// One sample.
pub fn generate(http: &Http, g: &GenerateRequest, vocab: usize) -> crate::error::Result<Sample> {
    let p = &g.params;
    let samplers: Vec<&str> = if p.greedy {
        vec![]
    } else {
        vec!["temperature", "top_p"]
    };
    let body = with_model(
        http,
        json!({
            "prompt": g.prompt, "n_predict": g.max_new_tokens, "seed": seed32(g.seed),
            "temperature": if p.greedy { 0.0 } else { p.temperature }, "top_p": p.top_p,
            "top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0, "samplers": samplers,
            "n_probs": 1, "post_sampling_probs": true, "return_tokens": true,
            "cache_prompt": true, "stream": false,
        }),
    );
    let (url, v) = http.post("/completion", &body)?;

    parse_generate(&v, g, vocab).map_err(|m| http.error(&url, format!("/completion: {m}")))
}

/// The log-probability of the forced token `t` in a `/completion` answer `v`.
///
/// # Errors
/// What is missing or malformed in `v`, or another token sampled.
pub fn parse_forced(v: &Value, t: u32, vocab: usize) -> Result<f64, Bad> {
    let steps = json::array(v, "completion_probabilities")?;
    let s = steps.first().ok_or("completion_probabilities is empty")?;
    let got = json::token(json::get(s, "id")?, "completion_probabilities.id", vocab)?;
    if got != t {
        return Err(format!(
            "the server sampled token {got} where logit_bias forced {t} (is logit_bias \
             ignored?)"
        ));
    }
    let lp = json::logprob(s, "logprob")?;
    if !(lp as f32).is_finite() {
        return Err(format!("logprob {lp} does not fit an f32 log-probability"));
    }
    Ok(lp)
}

/// Teacher-forced log-probabilities of `continuation` after `prompt`, one request per token.
pub fn score(
    http: &Http,
    prompt: &[u32],
    continuation: &[u32],
    vocab: usize,
) -> crate::error::Result<Scored> {
    let mut context = prompt.to_vec();
    let mut token_logprobs = Vec::with_capacity(continuation.len());
    for &t in continuation {
        let body = with_model(
            http,
            json!({
                "prompt": context, "n_predict": 1, "n_probs": 1, "post_sampling_probs": false,
                "logit_bias": [[t, FORCE]], "temperature": 0.0, "cache_prompt": true,
                "stream": false,
            }),
        );
        let (url, v) = http.post("/completion", &body)?;

        let lp = parse_forced(&v, t, vocab)
            .map_err(|m| http.error(&url, format!("/completion: {m}")))?;
        token_logprobs.push(lp as f32);
        context.push(t);
    }
    let total_logprob = token_logprobs.iter().map(|&x| x as f64).sum();
    Ok(Scored {
        token_logprobs,
        total_logprob,
    })
}

/// The full next-token row in a `/completion` answer `v` with `n_probs` = the vocabulary.
///
/// # Errors
/// What is missing or malformed in `v`.
pub fn parse_next_row(v: &Value, vocab: usize) -> Result<Vec<f32>, Bad> {
    let steps = json::array(v, "completion_probabilities")?;
    let s = steps.first().ok_or("completion_probabilities is empty")?;
    let top = json::array(s, "top_probs")?;
    if top.len() != vocab {
        return Err(format!(
            "the server returned {} of {vocab} next-token probabilities; it cannot give \
             full rows (n_probs is capped), so the token auction cannot run on it",
            top.len()
        ));
    }
    let mut row = vec![f32::NAN; vocab];
    for e in top {
        let id = json::token(json::get(e, "id")?, "top_probs.id", vocab)? as usize;
        let p = json::get(e, "prob")?
            .as_f64()
            .filter(|p| p.is_finite() && (0.0..=1.0 + 1e-6).contains(p))
            .ok_or("top_probs.prob is not a probability")?;
        row[id] = if p > 0.0 {
            p.ln() as f32
        } else {
            f32::NEG_INFINITY
        };
    }
    if row.iter().any(|x| x.is_nan()) {
        return Err("top_probs repeats some ids and misses others".into());
    }
    Ok(row)
}

/// The full next-token log-probability row after `context`.
pub fn next_row(http: &Http, context: &[u32], vocab: usize) -> crate::error::Result<Vec<f32>> {
    let body = with_model(
        http,
        json!({
            "prompt": context, "n_predict": 1, "n_probs": vocab, "post_sampling_probs": true,
            "samplers": ["temperature"], "temperature": 1.0, "top_k": 0, "top_p": 1.0,
            "min_p": 0.0, "cache_prompt": true, "stream": false,
        }),
    );
    let (url, v) = http.post("/completion", &body)?;

    parse_next_row(&v, vocab).map_err(|m| http.error(&url, format!("/completion: {m}")))
}
