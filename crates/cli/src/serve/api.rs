//! The routes: request bodies (the CLI's options as JSON fields), their checks against the limits,
//! the auctions run in blocking tasks under a ticket, JSON or Server-Sent-Events answers, and the
//! JSON errors (`{"error": "<one line naming the field>"}`) with their statuses.

use super::AppState;
use super::metrics::{Kind, Outcome};
use crate::mechanism::{mosaic_json, parse_json, token_json};
use crate::models::Registry;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use llm_auction_engine::EngineError;
use llm_auction_engine::lm::LanguageModel;
use llm_auction_engine::lm::served::Ticketed;
use llm_auction_engine::models_file::DEFAULT_ENTRY;
use llm_auction_engine::mosaic::{
    Advertiser, Generator, Importance, MosaicConfig, MosaicModels, Phase, check_input, run_mosaic,
};
use llm_auction_engine::served::{DEADLINE, Ticket};
use llm_auction_engine::token_auction::{Agent, TokenAuctionConfig, run_token_auction};
use llm_auction_mechanism::aggregate::Aggregation;
use llm_auction_mechanism::token_auction::PaymentRule;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;

/// An error answer: a status and a one-line message.
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(json!({ "error": self.message }))).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

/// The status of an auction's error.
fn status_of(e: &EngineError) -> StatusCode {
    match e {
        EngineError::Role { error, .. } => status_of(error),
        EngineError::Auction { .. }
        | EngineError::PromptTooLong { .. }
        | EngineError::InvalidRequest(_)
        | EngineError::KvCapacity { .. }
        | EngineError::Mechanism(_) => StatusCode::BAD_REQUEST,
        EngineError::Aborted(r) if r == DEADLINE => StatusCode::GATEWAY_TIMEOUT,
        EngineError::Aborted(_) => StatusCode::SERVICE_UNAVAILABLE,
        EngineError::Remote { .. } => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn body_text(body: Result<Bytes, BytesRejection>) -> Result<String, ApiError> {
    let body = body.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    String::from_utf8(body.to_vec()).map_err(|_| ApiError::bad("body: not UTF-8"))
}

fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ApiError> {
    parse_json(text).map_err(|e| ApiError::bad(format!("{e:#}")))
}

/// `GET /`: the playground.
pub(crate) async fn playground() -> Html<&'static str> {
    Html(include_str!("playground.html"))
}

/// `GET /healthz`: the process answers.
pub(crate) async fn healthz() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: models loaded and remotes probed, not shutting down.
pub(crate) async fn readyz(State(st): State<Arc<AppState>>) -> Response {
    if st.shutting_down.load(Ordering::Acquire) {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    match st.registry.get() {
        Some(_) => axum::Json(json!({ "status": "ready" })).into_response(),
        None => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "models are loading").into_response()
        }
    }
}

/// `GET /metrics`: Prometheus text format.
pub(crate) async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let text = st.metrics.render(&st);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// `GET /v1/models`: the entries and the default entry of each role.
pub(crate) async fn models(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let reg = ready(&st)?;
    let models: Vec<_> = reg.models().map(|m| m.info().clone()).collect();
    Ok(axum::Json(json!({
        "models": models,
        "defaults": {
            "reference": DEFAULT_ENTRY,
            "generator": DEFAULT_ENTRY,
            "advertiser": DEFAULT_ENTRY,
            "agent": DEFAULT_ENTRY,
        }
    }))
    .into_response())
}

/// Any other path.
pub(crate) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route (see docs/serve.md)")
}

/// `POST /v1/mechanism/mosaic`: `llm-auction mechanism mosaic` over HTTP.
pub(crate) async fn mechanism_mosaic(body: Result<Bytes, BytesRejection>) -> Response {
    mechanism(body, mosaic_json)
}

/// `POST /v1/mechanism/token`: `llm-auction mechanism token` over HTTP.
pub(crate) async fn mechanism_token(body: Result<Bytes, BytesRejection>) -> Response {
    mechanism(body, token_json)
}

fn mechanism(
    body: Result<Bytes, BytesRejection>,
    f: fn(&str) -> anyhow::Result<String>,
) -> Response {
    let run = || -> Result<String, ApiError> {
        f(&body_text(body)?).map_err(|e| ApiError::bad(format!("{e:#}")))
    };
    match run() {
        Ok(out) => ([(header::CONTENT_TYPE, "application/json")], out).into_response(),
        Err(e) => e.into_response(),
    }
}

fn ready(st: &AppState) -> Result<&Registry, ApiError> {
    st.registry
        .get()
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "models are loading"))
}

/// An advertiser: `{"name", "description"}` or `"Name: description"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum AdvertiserIn {
    Object { name: String, description: String },
    Text(String),
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum GeneratorIn {
    #[serde(alias = "context_aware")]
    ContextAware,
    Reference,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum ImportanceIn {
    Proposal,
    Raw,
}

/// `POST /v1/mosaic`: the options of `llm-auction mosaic`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MosaicBody {
    query: String,
    advertisers: Vec<AdvertiserIn>,
    m: Option<usize>,
    tau: Option<f64>,
    tau_i: Option<Vec<f64>>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    max_new_tokens: Option<usize>,
    seed: Option<u64>,
    generator: Option<GeneratorIn>,
    importance: Option<ImportanceIn>,
    offset: Option<bool>,
    reference: Option<String>,
    generator_model: Option<String>,
    #[serde(default)]
    advertiser_models: BTreeMap<String, String>,
}

/// A checked MOSAIC request.
struct MosaicJob {
    query: String,
    ads: Vec<Advertiser>,
    cfg: MosaicConfig,
    reference: String,
    generator: String,
    advertisers: Vec<String>,
}

/// Checks that `name` is a loaded entry (`field` names it in the error).
fn entry(reg: &Registry, field: &str, name: Option<String>) -> Result<String, ApiError> {
    let name = name.unwrap_or_else(|| DEFAULT_ENTRY.to_string());
    if reg.get(&name).is_err() {
        let names: Vec<String> = reg.models().map(|m| m.info().name.clone()).collect();
        return Err(ApiError::bad(format!(
            "{field}: no model {name:?} (models: {})",
            names.join(", ")
        )));
    }
    Ok(name)
}

/// One entry per name from a `{"Name": "entry"}` map (default: the default entry).
fn per_name(
    reg: &Registry,
    field: &str,
    map: BTreeMap<String, String>,
    names: &[&str],
) -> Result<Vec<String>, ApiError> {
    if let Some(unknown) = map.keys().find(|k| !names.contains(&k.as_str())) {
        return Err(ApiError::bad(format!(
            "{field}.{unknown}: no such name among {names:?}"
        )));
    }
    names
        .iter()
        .map(|n| entry(reg, &format!("{field}.{n}"), map.get(*n).cloned()))
        .collect()
}

fn check_count(field: &str, n: usize, max: usize, flag: &str) -> Result<(), ApiError> {
    if n > max {
        return Err(ApiError::bad(format!(
            "{field}: {n} is more than this server allows ({max}, {flag})"
        )));
    }
    Ok(())
}

/// Parses each of `items` (at most `max` of them, `--max-advertisers`) with `f`; errors name
/// `field[i]`.
fn parse_list<T, U>(
    field: &str,
    items: Vec<T>,
    max: usize,
    f: impl Fn(T) -> llm_auction_engine::Result<U>,
) -> Result<Vec<U>, ApiError> {
    check_count(field, items.len(), max, "--max-advertisers")?;
    items
        .into_iter()
        .enumerate()
        .map(|(i, x)| f(x).map_err(|e| ApiError::bad(format!("{field}[{i}]: {e}"))))
        .collect()
}

impl MosaicBody {
    fn check(self, st: &AppState, reg: &Registry) -> Result<MosaicJob, ApiError> {
        let lim = &st.limits;
        let d = MosaicConfig::default();
        let ads = parse_list(
            "advertisers",
            self.advertisers,
            lim.max_advertisers,
            |a| match a {
                AdvertiserIn::Text(s) => Advertiser::parse(&s),
                AdvertiserIn::Object { name, description } => {
                    Advertiser::parse(&format!("{name}: {description}"))
                }
            },
        )?;
        let cfg = MosaicConfig {
            m: self.m.unwrap_or(d.m),
            tau: self.tau.unwrap_or(d.tau),
            tau_i: self.tau_i.unwrap_or_default(),
            temperature: self.temperature.unwrap_or(d.temperature),
            top_p: self.top_p.unwrap_or(d.top_p),
            max_new_tokens: self.max_new_tokens.unwrap_or(d.max_new_tokens),
            seed: self.seed.unwrap_or(d.seed),
            generator: match self.generator {
                None => d.generator,
                Some(GeneratorIn::ContextAware) => Generator::ContextAware,
                Some(GeneratorIn::Reference) => Generator::Reference,
            },
            importance: match self.importance {
                None => d.importance,
                Some(ImportanceIn::Proposal) => Importance::Proposal,
                Some(ImportanceIn::Raw) => Importance::Raw,
            },
            offset: self.offset.unwrap_or(d.offset),
        };
        check_count("m", cfg.m, lim.max_m, "--max-m")?;
        check_count(
            "max_new_tokens",
            cfg.max_new_tokens,
            lim.max_new_tokens,
            "--max-new-tokens",
        )?;
        check_input(&cfg, &self.query, &ads).map_err(|e| ApiError::bad(e.to_string()))?;
        let names: Vec<&str> = ads.iter().map(|a| a.name.as_str()).collect();
        Ok(MosaicJob {
            reference: entry(reg, "reference", self.reference)?,
            generator: entry(reg, "generator_model", self.generator_model)?,
            advertisers: per_name(reg, "advertiser_models", self.advertiser_models, &names)?,
            query: self.query,
            ads,
            cfg,
        })
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum AggregationIn {
    Linear,
    #[serde(alias = "log_linear")]
    LogLinear,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum PaymentIn {
    #[serde(alias = "second_price")]
    SecondPrice,
    #[serde(alias = "first_price")]
    FirstPrice,
    None,
}

/// A token-auction agent: `{"name", "description", "bid", "system_prompt"?}` or
/// `"Name: description: bid"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum AgentIn {
    Object {
        name: String,
        description: String,
        bid: f64,
        #[serde(default)]
        system_prompt: Option<String>,
    },
    Text(String),
}

/// `POST /v1/token-auction`: the options of `llm-auction token-auction`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    query: String,
    agents: Vec<AgentIn>,
    aggregation: Option<AggregationIn>,
    payment: Option<PaymentIn>,
    max_new_tokens: Option<usize>,
    seed: Option<u64>,
    #[serde(default)]
    agent_models: BTreeMap<String, String>,
}

/// A checked token-auction request.
struct TokenJob {
    query: String,
    agents: Vec<Agent>,
    cfg: TokenAuctionConfig,
    entries: Vec<String>,
}

impl TokenBody {
    fn check(self, st: &AppState, reg: &Registry) -> Result<TokenJob, ApiError> {
        let lim = &st.limits;
        let d = TokenAuctionConfig::default();
        let agents = parse_list("agents", self.agents, lim.max_advertisers, |a| match a {
            AgentIn::Text(s) => Agent::parse(&s),
            AgentIn::Object {
                name,
                description,
                bid,
                system_prompt,
            } => Agent::parse(&format!("{name}: {description}: {bid}")).map(|mut a| {
                a.system_prompt = system_prompt;
                a
            }),
        })?;
        let cfg = TokenAuctionConfig {
            aggregation: match self.aggregation {
                None => d.aggregation,
                Some(AggregationIn::Linear) => Aggregation::Linear,
                Some(AggregationIn::LogLinear) => Aggregation::LogLinear,
            },
            payment: match self.payment {
                None => d.payment,
                Some(PaymentIn::SecondPrice) => PaymentRule::SecondPrice,
                Some(PaymentIn::FirstPrice) => PaymentRule::FirstPrice,
                Some(PaymentIn::None) => PaymentRule::None,
            },
            max_new_tokens: self.max_new_tokens.unwrap_or(d.max_new_tokens),
            seed: self.seed.unwrap_or(d.seed),
        };
        check_count(
            "max_new_tokens",
            cfg.max_new_tokens,
            lim.max_new_tokens,
            "--max-new-tokens",
        )?;
        let names: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
        Ok(TokenJob {
            entries: per_name(reg, "agent_models", self.agent_models, &names)?,
            query: self.query,
            agents,
            cfg,
        })
    }
}

/// What a running auction reports to its client.
enum Update {
    Event(&'static str, serde_json::Value),
    Done(Result<serde_json::Value, ApiError>),
}

/// An auction's place in flight: counted against `--max-queue`, its ticket registered for the
/// shutdown's cancellation, and cancelled when dropped (the client went away, or it is done).
struct Slot {
    st: Arc<AppState>,
    id: u64,
    ticket: Ticket,
}

impl Slot {
    fn take(st: &Arc<AppState>) -> Result<Self, ApiError> {
        if st.shutting_down.load(Ordering::Acquire) {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down",
            ));
        }
        let n = st.in_flight.fetch_add(1, Ordering::AcqRel);
        if n >= st.limits.max_queue {
            st.in_flight.fetch_sub(1, Ordering::AcqRel);
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "{} auctions are in flight, the most this server takes (--max-queue)",
                    st.limits.max_queue
                ),
            );
            e.retry_after = Some(1);
            return Err(e);
        }
        let ticket = Ticket::new(Some(Duration::from_secs_f64(st.limits.deadline_s)));
        let id = st.next_ticket.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut t) = st.tickets.lock() {
            t.insert(id, ticket.clone());
        }
        Ok(Self {
            st: st.clone(),
            id,
            ticket,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.ticket.cancel();
        if let Ok(mut t) = self.st.tickets.lock() {
            t.remove(&self.id);
        }
        self.st.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

fn wants_events(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

/// The models of `names` under `ticket`, in order.
fn views<'a>(reg: &'a Registry, names: &[String], ticket: &Ticket) -> Vec<Ticketed<'a>> {
    names
        .iter()
        .filter_map(|n| reg.get(n).ok())
        .map(|m| Ticketed::new(m, ticket.clone()))
        .collect()
}

/// Runs `job` in a blocking task and answers with its report (JSON) or its events (SSE).
async fn answer<F>(
    st: Arc<AppState>,
    headers: &HeaderMap,
    kind: Kind,
    slot: Slot,
    job: F,
) -> Response
where
    F: FnOnce(&Registry, &Ticket, &dyn Fn(Update)) -> Result<serde_json::Value, EngineError>
        + Send
        + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Update>();
    let ticket = slot.ticket.clone();
    let started = Instant::now();
    st.metrics.started(kind);
    let worker_st = st.clone();
    tokio::task::spawn_blocking(move || {
        let Some(reg) = worker_st.registry.get() else {
            return;
        };
        let send = |u: Update| {
            let _ = tx.send(u);
        };
        let result = job(reg, &ticket, &send);
        let outcome = match &result {
            Ok(_) => Outcome::Finished,
            Err(e) if ticket.stopped().is_some() && matches!(root(e), EngineError::Aborted(_)) => {
                Outcome::Cancelled
            }
            Err(_) => Outcome::Failed,
        };
        worker_st
            .metrics
            .finished(kind, outcome, started.elapsed().as_secs_f64());
        let done = result.map_err(|e| ApiError::new(status_of(&e), e.to_string()));
        let _ = tx.send(Update::Done(done));
    });
    if wants_events(headers) {
        let stream = UnboundedReceiverStream::new(rx).map(move |u| {
            // The slot lives as long as the stream: a client that goes away drops it and cancels.
            let _keep = &slot;
            let ev = match u {
                Update::Event(name, data) => Event::default().event(name).data(data.to_string()),
                Update::Done(Ok(report)) => {
                    Event::default().event("report").data(report.to_string())
                }
                Update::Done(Err(e)) => Event::default()
                    .event("error")
                    .data(json!({ "error": e.message }).to_string()),
            };
            Ok::<_, Infallible>(ev)
        });
        return Sse::new(stream)
            .keep_alive(KeepAlive::default())
            .into_response();
    }
    // JSON: the handler's future holds the slot; a client that goes away drops it and cancels.
    let _keep = slot;
    let mut rx = rx;
    while let Some(u) = rx.recv().await {
        if let Update::Done(r) = u {
            return match r {
                Ok(report) => axum::Json(report).into_response(),
                Err(e) => e.into_response(),
            };
        }
    }
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the auction stopped").into_response()
}

fn root(e: &EngineError) -> &EngineError {
    match e {
        EngineError::Role { error, .. } => root(error),
        e => e,
    }
}

/// `POST /v1/mosaic`.
pub(crate) async fn mosaic(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let text = body_text(body)?;
    let reg = ready(&st)?;
    let job = parse::<MosaicBody>(&text)?.check(&st, reg)?;
    let slot = Slot::take(&st)?;
    Ok(answer(
        st.clone(),
        &headers,
        Kind::Mosaic,
        slot,
        move |reg, ticket, send| {
            let mut names = vec![job.reference.clone(), job.generator.clone()];
            names.extend(job.advertisers.iter().cloned());
            let v = views(reg, &names, ticket);
            let models = MosaicModels {
                reference: &v[0],
                generator: &v[1],
                advertisers: v[2..].iter().map(|m| m as &dyn LanguageModel).collect(),
            };
            let mut last = Instant::now() - Duration::from_secs(1);
            let report = run_mosaic(
                &models,
                &job.query,
                &job.ads,
                &job.cfg,
                &mut |phase, done, total| {
                    let ev = match phase {
                        Phase::Candidate {
                            text,
                            tokens,
                            finish,
                        } => Some((
                            "candidate",
                            json!({ "index": done, "text": text, "tokens": tokens, "finish": finish }),
                        )),
                        // Progress at most every 50 ms, and always the last one.
                        _ if done < total && last.elapsed() < Duration::from_millis(50) => None,
                        Phase::Generating => Some((
                            "progress",
                            json!({ "phase": "generating", "done": done, "total": total }),
                        )),
                        Phase::Scoring => Some((
                            "progress",
                            json!({ "phase": "scoring", "done": done, "total": total }),
                        )),
                    };
                    if let Some((name, data)) = ev {
                        last = Instant::now();
                        send(Update::Event(name, data));
                    }
                },
            )?;
            serde_json::to_value(&report)
                .map_err(|e| EngineError::Config(format!("the report does not serialise: {e}")))
        },
    )
    .await)
}

/// `POST /v1/token-auction`.
pub(crate) async fn token_auction(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let text = body_text(body)?;
    let reg = ready(&st)?;
    let job = parse::<TokenBody>(&text)?.check(&st, reg)?;
    let slot = Slot::take(&st)?;
    Ok(answer(
        st.clone(),
        &headers,
        Kind::Token,
        slot,
        move |reg, ticket, send| {
            let v = views(reg, &job.entries, ticket);
            let models: Vec<&dyn LanguageModel> =
                v.iter().map(|m| m as &dyn LanguageModel).collect();
            let mut last = Instant::now() - Duration::from_secs(1);
            let report = run_token_auction(
                &models,
                &job.query,
                &job.agents,
                &job.cfg,
                &mut |done, total| {
                    if done >= total || last.elapsed() >= Duration::from_millis(50) {
                        last = Instant::now();
                        send(Update::Event(
                            "progress",
                            json!({ "phase": "decoding", "done": done, "total": total }),
                        ));
                    }
                },
            )?;
            serde_json::to_value(&report)
                .map_err(|e| EngineError::Config(format!("the report does not serialise: {e}")))
        },
    )
    .await)
}
