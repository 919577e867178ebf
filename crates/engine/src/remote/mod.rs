//! Models on remote OpenAI-compatible servers behind the [`LanguageModel`] interface: vLLM
//! ([`vllm`]) and llama.cpp's `llama-server` ([`llama_server`]). docs/remote.md has the measured
//! facts of both dialects.
//!
//! At connection every replica is probed (health, model, vocabulary size, context length, the
//! end-of-sequence token) and a self-test scores two known tokens through the path auctions use,
//! so that a parameter the server silently ignores is caught before an auction relies on it.
//! Requests of a session run concurrently, at most `max_concurrency` at a time, spread over the
//! replicas ([`http`]). Everything a server returns is checked ([`json`]): malformed JSON, wrong
//! lengths, non-finite log-probabilities and ids outside the vocabulary are errors naming the URL.

pub mod http;
pub mod json;
pub mod llama_server;
pub mod vllm;

use crate::engine::StepStats;
use crate::error::{EngineError, Result};
use crate::lm::{LanguageModel, ModelInfo, ModelSession, OnStep, Sample, SessionCounters};
use crate::models_file::{RemoteKind, RemoteSpec};
use crate::request::{GenerateRequest, ScoreRequest, Scored};
use crate::served::Ticket;
use http::Http;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

/// What a replica's probe learns.
pub struct Probe {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Context length of one sequence.
    pub context_length: usize,
    /// End-of-sequence token.
    pub eos_ids: Vec<u32>,
}

/// A model on a server (one entry of the models file, possibly several replicas).
pub struct RemoteModel {
    http: Http,
    info: ModelInfo,
    /// vLLM: the chat template's control tokens, learned on first use ([`vllm::control_tokens`]).
    controls: std::sync::OnceLock<Vec<String>>,
}

impl RemoteModel {
    /// Connects to every replica of `spec`, probes it and runs the self-test.
    ///
    /// # Errors
    /// [`EngineError::Remote`] naming the replica that failed, or replicas that disagree.
    pub fn connect(spec: RemoteSpec) -> Result<Self> {
        let kind = spec.kind;
        let http = Http::new(spec);
        // Every replica is probed; one that fails is skipped (and named in the log) while another
        // one answers.
        let mut probes: Vec<(usize, Probe)> = Vec::new();
        let mut first_error = None;
        for i in 0..http.spec().urls.len() {
            let probe = match kind {
                RemoteKind::LlamaServer => llama_server::probe(&http, i),
                RemoteKind::Vllm => vllm::probe(&http, i),
            };
            match probe {
                Ok(p) => probes.push((i, p)),
                Err(e) => {
                    tracing::warn!(entry = %http.spec().name, url = %http.spec().urls[i], error = %e, "replica skipped");
                    http.mark_down(i);
                    first_error.get_or_insert(e);
                }
            }
        }
        let Some((i0, first)) = probes.first() else {
            return Err(first_error
                .unwrap_or_else(|| EngineError::Internal("a remote entry without URLs".into())));
        };
        for (i, p) in probes.iter().skip(1) {
            if (p.vocab_size, p.context_length, &p.eos_ids)
                != (first.vocab_size, first.context_length, &first.eos_ids)
            {
                return Err(http.error(
                    &http.spec().urls[*i],
                    format!(
                        "this replica serves another model than {} (vocabulary {} vs {}, context \
                         {} vs {})",
                        http.spec().urls[*i0],
                        p.vocab_size,
                        first.vocab_size,
                        p.context_length,
                        first.context_length
                    ),
                ));
            }
        }
        let info = ModelInfo {
            name: http.spec().name.clone(),
            kind: kind.name().into(),
            location: http.spec().urls.join(", "),
            vocab_size: first.vocab_size,
            context_length: first.context_length,
            eos_ids: first.eos_ids.clone(),
            raw_logprobs: kind == RemoteKind::Vllm && !http.spec().processed_logprobs,
            proposal_logprobs: kind == RemoteKind::LlamaServer || http.spec().processed_logprobs,
        };
        let up: Vec<usize> = probes.iter().map(|(i, _)| *i).collect();
        let model = Self {
            http,
            info,
            controls: std::sync::OnceLock::new(),
        };
        for i in up {
            model.self_test(i)?;
        }
        Ok(model)
    }

    /// Scores two known tokens and checks the answer's shape (replica `i` names the error).
    fn self_test(&self, i: usize) -> Result<()> {
        let url = self.http.spec().urls[i].clone();
        let ids = self.encode("Hello, world")?;
        if ids.len() < 3 {
            return Err(self.http.error(
                &url,
                "self-test: \"Hello, world\" tokenized to fewer than 3 tokens",
            ));
        }
        let s = self.score_one(&ids[..1], &ids[1..3])?;
        if s.token_logprobs.len() != 2 || !s.total_logprob.is_finite() || s.total_logprob > 0.0 {
            return Err(self.http.error(
                &url,
                format!("self-test: scoring two tokens gave {:?}", s.token_logprobs),
            ));
        }
        Ok(())
    }

    fn score_one(&self, prompt: &[u32], continuation: &[u32]) -> Result<Scored> {
        match self.http.spec().kind {
            RemoteKind::LlamaServer => {
                llama_server::score(&self.http, prompt, continuation, self.info.vocab_size)
            }
            RemoteKind::Vllm => vllm::score(
                &self.http,
                &[(prompt.to_vec(), continuation.to_vec())],
                self.info.vocab_size,
            )?
            .pop()
            .ok_or_else(|| self.http.error(&self.http.spec().urls[0], "no score")),
        }
    }

    fn check_len(&self, len: usize) -> Result<()> {
        if len > self.info.context_length {
            return Err(EngineError::PromptTooLong {
                len,
                max: self.info.context_length,
            });
        }
        Ok(())
    }
}

impl LanguageModel for RemoteModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn chat_turn(&self, system: &str, user: &str) -> Result<String> {
        match self.http.spec().kind {
            RemoteKind::LlamaServer => llama_server::chat_turn(&self.http, system, user),
            RemoteKind::Vllm => vllm::chat_turn(&self.http, system, user, self.info.vocab_size),
        }
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self.http.spec().kind {
            RemoteKind::LlamaServer => llama_server::encode(&self.http, text, self.info.vocab_size),
            RemoteKind::Vllm => vllm::encode(&self.http, text, self.info.vocab_size),
        }
    }

    fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        let vocab = self.info.vocab_size;
        match self.http.spec().kind {
            RemoteKind::LlamaServer => llama_server::encode_plain(&self.http, text, vocab),
            RemoteKind::Vllm => {
                let controls = match self.controls.get() {
                    Some(c) => c,
                    None => {
                        let found = vllm::control_tokens(&self.http, vocab)?;
                        self.controls.get_or_init(|| found)
                    }
                };
                vllm::encode_plain(&self.http, text, vocab, controls)
            }
        }
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        if let Some(&t) = ids.iter().find(|&&t| t as usize >= self.info.vocab_size) {
            return Err(EngineError::TokenOutOfVocab {
                field: "tokens".into(),
                token: t.into(),
                vocab: self.info.vocab_size,
            });
        }
        match self.http.spec().kind {
            RemoteKind::LlamaServer => llama_server::decode(&self.http, ids),
            RemoteKind::Vllm => vllm::decode(&self.http, ids),
        }
    }

    fn session(&self) -> Result<Box<dyn ModelSession + '_>> {
        self.session_for(&Ticket::default())
    }

    fn session_for(&self, ticket: &Ticket) -> Result<Box<dyn ModelSession + '_>> {
        Ok(Box::new(RemoteSession {
            model: self,
            ticket: ticket.clone(),
            counters: SessionCounters::default(),
        }))
    }
}

/// A session: requests run concurrently up to the entry's `max_concurrency`; once its ticket is
/// cancelled or expired, no further request starts (those in flight end within `timeout_s`).
struct RemoteSession<'m> {
    model: &'m RemoteModel,
    ticket: Ticket,
    counters: SessionCounters,
}

/// Runs `f` on every item with up to `threads` in flight; results in item order. The first error,
/// or a stopped `ticket`, stops the others from starting new items. `on_done` is called on this
/// thread per finished item.
fn parallel<T: Sync, R: Send>(
    threads: usize,
    ticket: &Ticket,
    items: &[T],
    f: &(dyn Fn(&T) -> Result<R> + Sync),
    on_done: &mut dyn FnMut(usize),
) -> Result<Vec<R>> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    let first_error: Mutex<Option<EngineError>> = Mutex::new(None);
    let (tx, rx) = mpsc::channel::<usize>();
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, items.len().max(1)) {
            let tx = tx.clone();
            let (next, failed, results, first_error) = (&next, &failed, &results, &first_error);
            scope.spawn(move || {
                loop {
                    if failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    match ticket.check().and_then(|()| f(item)) {
                        Ok(r) => {
                            if let Ok(mut v) = results.lock() {
                                v[i] = Some(r);
                            }
                            let _ = tx.send(i);
                        }
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            if let Ok(mut slot) = first_error.lock()
                                && slot.is_none()
                            {
                                *slot = Some(e);
                            }
                            break;
                        }
                    }
                }
            });
        }
        drop(tx);
        for i in rx {
            on_done(i);
        }
    });
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    let results = results.into_inner().unwrap_or_default();
    results
        .into_iter()
        .map(|r| {
            r.ok_or_else(|| EngineError::Internal("a remote request produced no result".into()))
        })
        .collect()
}

impl ModelSession for RemoteSession<'_> {
    fn generate(&mut self, reqs: Vec<GenerateRequest>, on_step: OnStep<'_>) -> Result<Vec<Sample>> {
        let m = self.model;
        for r in &reqs {
            r.params.validate()?;
            m.check_len(r.prompt.len().saturating_add(r.max_new_tokens))?;
        }
        let vocab = m.info.vocab_size;
        let f = |g: &GenerateRequest| match m.http.spec().kind {
            RemoteKind::LlamaServer => llama_server::generate(&m.http, g, vocab),
            RemoteKind::Vllm => vllm::generate(&m.http, g, vocab),
        };
        let out = parallel(
            m.http.spec().max_concurrency,
            &self.ticket,
            &reqs,
            &f,
            &mut |_| {
                on_step(&StepStats {
                    finished: 1,
                    ..Default::default()
                })
            },
        )?;
        self.counters.passes += reqs.len() as u64;
        for (r, s) in reqs.iter().zip(&out) {
            self.counters.tokens += (r.prompt.len() + s.tokens.len()) as u64;
            on_step(&StepStats {
                sampled: s.tokens.len(),
                ..Default::default()
            });
        }
        Ok(out)
    }

    fn score(&mut self, reqs: Vec<ScoreRequest>, on_step: OnStep<'_>) -> Result<Vec<Scored>> {
        let m = self.model;
        for r in &reqs {
            if r.prompt.is_empty() {
                return Err(EngineError::EmptyInput {
                    field: "prompt".into(),
                });
            }
            m.check_len(r.prompt.len().saturating_add(r.continuation.len()))?;
        }
        let vocab = m.info.vocab_size;
        let out = match m.http.spec().kind {
            RemoteKind::LlamaServer => {
                let f = |r: &ScoreRequest| {
                    llama_server::score(&m.http, &r.prompt, &r.continuation, vocab)
                };
                parallel(
                    m.http.spec().max_concurrency,
                    &self.ticket,
                    &reqs,
                    &f,
                    &mut |_| {
                        on_step(&StepStats {
                            finished: 1,
                            ..Default::default()
                        })
                    },
                )?
            }
            RemoteKind::Vllm => {
                let chunks: Vec<Vec<(Vec<u32>, Vec<u32>)>> = reqs
                    .chunks(vllm::SCORE_BATCH)
                    .map(|c| {
                        c.iter()
                            .map(|r| (r.prompt.clone(), r.continuation.clone()))
                            .collect()
                    })
                    .collect();
                let f = |c: &Vec<(Vec<u32>, Vec<u32>)>| vllm::score(&m.http, c, vocab);
                let sizes: Vec<usize> = chunks.iter().map(Vec::len).collect();
                parallel(
                    m.http.spec().max_concurrency,
                    &self.ticket,
                    &chunks,
                    &f,
                    &mut |i| {
                        on_step(&StepStats {
                            finished: sizes[i],
                            ..Default::default()
                        })
                    },
                )?
                .into_iter()
                .flatten()
                .collect()
            }
        };
        let out = crate::lm::expect_len(&m.info, "score", out, reqs.len())?;
        for (r, s) in reqs.iter().zip(&out) {
            if s.token_logprobs.len() != r.continuation.len() {
                return Err(EngineError::Backend {
                    model: m.info.name.clone(),
                    message: format!(
                        "{} log-probabilities for {} continuation tokens",
                        s.token_logprobs.len(),
                        r.continuation.len()
                    ),
                });
            }
            self.counters.tokens += (r.prompt.len() + r.continuation.len()) as u64;
        }
        self.counters.passes += reqs.len() as u64;
        Ok(out)
    }

    fn next_token_logprobs(&mut self, contexts: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let m = self.model;
        for c in contexts {
            if c.is_empty() {
                return Err(EngineError::EmptyInput {
                    field: "context".into(),
                });
            }
            m.check_len(c.len() + 1)?;
        }
        let vocab = m.info.vocab_size;
        let f = |c: &Vec<u32>| match m.http.spec().kind {
            RemoteKind::LlamaServer => llama_server::next_row(&m.http, c, vocab),
            RemoteKind::Vllm => vllm::next_row(&m.http, c, vocab),
        };
        let rows = parallel(
            m.http.spec().max_concurrency,
            &self.ticket,
            contexts,
            &f,
            &mut |_| {},
        )?;
        self.counters.passes += contexts.len() as u64;
        self.counters.tokens += contexts.iter().map(|c| c.len() as u64).sum::<u64>();
        Ok(rows)
    }

    fn counters(&self) -> SessionCounters {
        self.counters
    }
}
