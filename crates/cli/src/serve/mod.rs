//! `llm-auction serve`: the auctions as an HTTP service (axum on tokio). Every local model runs on
//! one engine thread shared by all auctions (`llm_auction_engine::registry::Serving::Shared`), so concurrent
//! auctions share its forward passes; each auction runs in a blocking task with a ticket that is
//! cancelled when its client goes away or its deadline passes. The routes, limits and security
//! rules are in docs/serve.md.

mod api;
mod auth;
pub mod bench;
mod error;
mod input;
mod metrics;

use crate::auction_cmd::EngineArgs;
use crate::common::{ModelArgs, OnBackend, on_device};
use crate::models::{ModelsArgs, Registry, Serving, build_registry};
use anyhow::{Context, Result, bail};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use clap::Args;
use llm_auction_engine::models_file::{DEFAULT_ENTRY, ModelsFile};
use llm_auction_engine::served::Ticket;
use llm_auction_model::backend::ModelBackend;
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// `llm-auction serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port; the address is printed). Binding anything
    /// but a loopback address requires --api-key-env.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// An environment variable holding the API key: every request then needs
    /// `Authorization: Bearer <key>`.
    #[arg(long, value_name = "VAR")]
    pub api_key_env: Option<String>,
    /// Seconds that running auctions get to finish after SIGINT or SIGTERM before they are
    /// cancelled.
    #[arg(long, default_value_t = 10.0)]
    pub grace_s: f64,
    #[command(flatten)]
    pub limits: Limits,
    #[command(flatten)]
    pub models: ModelsArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// What one request may ask for.
#[derive(Debug, Clone, Args)]
pub struct Limits {
    /// Largest request body in bytes (larger: 413).
    #[arg(long, default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// Most candidates M of a MOSAIC auction.
    #[arg(long, default_value_t = 64)]
    pub max_m: usize,
    /// Most new tokens per candidate or token auction.
    #[arg(long, default_value_t = 512)]
    pub max_new_tokens: usize,
    /// Most advertisers (or token-auction agents) per auction.
    #[arg(long, default_value_t = 16)]
    pub max_advertisers: usize,
    /// Most auctions in flight (queued or running); more: 429 with Retry-After.
    #[arg(long, default_value_t = 256)]
    pub max_queue: usize,
    /// Seconds an auction may take (longer: cancelled, 504).
    #[arg(long, default_value_t = 300.0)]
    pub deadline_s: f64,
}

/// What the handlers share.
pub(crate) struct AppState {
    /// Set once the models are loaded and the remotes probed.
    registry: OnceLock<Registry>,
    limits: Limits,
    metrics: metrics::Metrics,
    api_key: Option<String>,
    in_flight: AtomicUsize,
    tickets: Mutex<HashMap<u64, Ticket>>,
    next_ticket: AtomicU64,
    shutting_down: AtomicBool,
}

impl AppState {
    fn new(limits: Limits, api_key: Option<String>) -> Self {
        Self {
            registry: OnceLock::new(),
            limits,
            metrics: metrics::Metrics::default(),
            api_key,
            in_flight: AtomicUsize::new(0),
            tickets: Mutex::new(HashMap::new()),
            next_ticket: AtomicU64::new(0),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Cancels every auction in flight.
    fn cancel_all(&self) {
        if let Ok(t) = self.tickets.lock() {
            for ticket in t.values() {
                ticket.cancel();
            }
        }
    }
}

/// The routes (shared by `serve` and `bench serve`).
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let limit = state.limits.max_body_bytes;
    Router::new()
        .route("/", get(api::playground))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(api::metrics))
        .route("/v1/models", get(api::models))
        .route("/v1/mosaic", post(api::mosaic))
        .route("/v1/token-auction", post(api::token_auction))
        .route("/v1/mechanism/mosaic", post(api::mechanism_mosaic))
        .route("/v1/mechanism/token", post(api::mechanism_token))
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// The API key from `--api-key-env`, and the rule that only loopback may go without one.
fn api_key(args: &ServeArgs) -> Result<Option<String>> {
    let key = match &args.api_key_env {
        Some(var) => {
            let key = std::env::var(var)
                .with_context(|| format!("--api-key-env: environment variable {var} is not set"))?;
            if key.trim().is_empty() {
                bail!("--api-key-env: environment variable {var} is empty");
            }
            Some(key)
        }
        None => None,
    };
    if key.is_none() && !args.bind.ip().is_loopback() {
        bail!(
            "--bind: {} is not a loopback address; serving beyond this machine needs \
             --api-key-env VAR",
            args.bind
        );
    }
    Ok(key)
}

/// Every entry a served auction may name: the models file's and the default one.
fn entries(models: &ModelsArgs) -> Result<Vec<(String, String)>> {
    let mut names = vec![DEFAULT_ENTRY.to_string()];
    if let Some(p) = &models.file {
        for name in ModelsFile::load(p)?.entries.into_keys() {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Ok(names
        .into_iter()
        .map(|n| ("served".to_string(), n))
        .collect())
}

/// Waits for SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// A started server: its address, its state, and how to load its models.
pub(crate) struct Started {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    pub listener: tokio::net::TcpListener,
}

/// Binds the listener and makes the state (models not loaded yet).
pub(crate) async fn bind(
    addr: SocketAddr,
    limits: Limits,
    api_key: Option<String>,
) -> Result<Started> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--bind: cannot listen on {addr}"))?;
    let addr = listener.local_addr()?;
    Ok(Started {
        addr,
        state: Arc::new(AppState::new(limits, api_key)),
        listener,
    })
}

/// Loads every entry (shared engines) into `state`.
///
/// # Errors
/// As [`build_registry`].
pub(crate) fn load<B: ModelBackend>(
    state: &AppState,
    args: &ModelsArgs,
    model: &ModelArgs,
    engine: &EngineArgs,
    device: &B::Device,
) -> Result<()>
where
    llm_auction_model::model::Model<B>: Send + Sync,
{
    let roles = entries(args)?;
    let registry = build_registry::<B>(
        args,
        &roles,
        model,
        engine.config(),
        device,
        true,
        Serving::Shared,
    )?;
    if state.registry.set(registry).is_err() {
        bail!("the models were loaded twice");
    }
    Ok(())
}

/// Runs `serve`.
pub fn serve(args: ServeArgs) -> Result<()> {
    struct Cmd(ServeArgs);
    impl OnBackend for Cmd {
        type Output = ();
        fn run<B: ModelBackend>(self, device: &B::Device) -> Result<()> {
            let Cmd(args) = self;
            let key = api_key(&args)?;
            if !(args.limits.deadline_s.is_finite() && args.limits.deadline_s > 0.0) {
                bail!("--deadline-s: must be a finite number > 0");
            }
            if !(args.grace_s.is_finite() && args.grace_s >= 0.0) {
                bail!("--grace-s: must be a finite number >= 0");
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(run_server::<B>(args, key, device.clone()))
        }
    }
    let device = args.model.device;
    on_device(device, Cmd(args))
}

async fn run_server<B: ModelBackend>(
    args: ServeArgs,
    key: Option<String>,
    device: B::Device,
) -> Result<()>
where
    llm_auction_model::model::Model<B>: Send + Sync,
{
    let Started {
        addr,
        state,
        listener,
    } = bind(args.bind, args.limits.clone(), key).await?;
    outln!("listening on http://{addr}");
    let _ = std::io::stdout().flush();
    tracing::info!(%addr, "listening; loading models");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Models load in the background: /healthz answers at once, /readyz once they are loaded.
    let failed: Arc<Mutex<Option<anyhow::Error>>> = Arc::default();
    {
        let (state, failed, stop_tx) = (state.clone(), failed.clone(), stop_tx.clone());
        let (models, model, engine) = (args.models.clone(), args.model.clone(), args.engine);
        tokio::task::spawn_blocking(move || {
            match load::<B>(&state, &models, &model, &engine, &device) {
                Ok(()) => {
                    tracing::info!("models loaded; ready");
                    eprintln!("ready");
                }
                Err(e) => {
                    if let Ok(mut f) = failed.lock() {
                        *f = Some(e);
                    }
                    let _ = stop_tx.send(true);
                }
            }
        });
    }
    {
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("signal received: shutting down");
            let _ = stop_tx.send(true);
        });
    }
    {
        // After the signal: refuse new auctions, give running ones the grace period, then cancel.
        let (state, mut rx) = (state.clone(), stop_rx.clone());
        let grace = Duration::from_secs_f64(args.grace_s);
        tokio::spawn(async move {
            if rx.wait_for(|s| *s).await.is_ok() {
                state.shutting_down.store(true, Ordering::Release);
                tokio::time::sleep(grace).await;
                state.cancel_all();
            }
        });
    }
    let mut rx = stop_rx;
    axum::serve(listener, router(state.clone()))
        .with_graceful_shutdown(async move {
            let _ = rx.wait_for(|s| *s).await;
        })
        .await
        .context("the server failed")?;
    let err = failed.lock().ok().and_then(|mut f| f.take());
    if let Some(e) = err {
        return Err(e);
    }
    tracing::info!("stopped");
    Ok(())
}
