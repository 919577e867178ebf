//! The routes: the auctions run in blocking tasks under a ticket with JSON or Server-Sent-Events
//! answers, the mechanism endpoints, health, readiness, metrics and the playground. Request bodies
//! are checked in [`super::input`], errors answered by [`super::error`].

use super::AppState;
use super::error::{ApiError, body_text};
use super::input;
use super::metrics::{Kind, Outcome};
use crate::mechanism::{mosaic_json, token_json};
use crate::models::Registry;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use llm_auction_engine::EngineError;
use llm_auction_engine::lm::LanguageModel;
use llm_auction_engine::lm::served::Ticketed;
use llm_auction_engine::models_file::DEFAULT_ENTRY;
use llm_auction_engine::mosaic::{MosaicModels, Phase, run_mosaic};
use llm_auction_engine::served::Ticket;
use llm_auction_engine::token_auction::run_token_auction;
use serde_json::json;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;

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
            Err(e) if ticket.stopped().is_some() && matches!(e.root(), EngineError::Aborted(_)) => {
                Outcome::Cancelled
            }
            Err(_) => Outcome::Failed,
        };
        worker_st
            .metrics
            .finished(kind, outcome, started.elapsed().as_secs_f64());
        let done = result.map_err(ApiError::from);
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

/// `POST /v1/mosaic`.
pub(crate) async fn mosaic(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let text = body_text(body)?;
    let reg = ready(&st)?;
    let job = input::mosaic(&text, &st, reg)?;
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
                .map_err(|e| EngineError::Internal(format!("the report does not serialise: {e}")))
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
    let job = input::token(&text, &st, reg)?;
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
                .map_err(|e| EngineError::Internal(format!("the report does not serialise: {e}")))
        },
    )
    .await)
}
