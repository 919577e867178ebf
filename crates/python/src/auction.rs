//! The auctions end to end: an `Auction` holds the models its roles use (loaded once, kept across
//! calls) and runs MOSAIC or the token auction with the GIL released, returning the report as the
//! CLI's `--json` prints it.

use crate::mechanism::value_error;
use llm_auction_engine::EngineError;
use llm_auction_engine::auction_input::{MosaicInput, MosaicJob, TokenInput, TokenJob};
use llm_auction_engine::engine::EngineConfig;
use llm_auction_engine::limits::{MAX_ADVERTISERS, MAX_AGENTS};
use llm_auction_engine::mosaic::{MosaicModels, Phase, run_mosaic};
use llm_auction_engine::registry::{Registry, Serving, roles_of};
use llm_auction_engine::token_auction::run_token_auction;
use llm_auction_model::backend::cpu_device;
use llm_auction_model::model::Model;
use llm_auction_model::{CpuBackend, Kernels};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use std::path::PathBuf;
use std::sync::Mutex;

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeAuction>()?;
    Ok(())
}

/// Input errors (of the caller's arguments or files, [`EngineError::is_caller_error`]) are
/// `ValueError`s; model, server and engine failures are `RuntimeError`s. Both carry the CLI's
/// one-line message.
fn engine_error(e: EngineError) -> PyErr {
    if e.is_caller_error() {
        PyValueError::new_err(e.to_string())
    } else {
        PyRuntimeError::new_err(e.to_string())
    }
}

/// The auction's options from their JSON (built by `llm_auction.auction` from the keyword
/// arguments); errors name the field.
fn options<T: serde::de::DeserializeOwned>(json: &str) -> PyResult<T> {
    llm_auction_mechanism::json::parse(json).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// A progress callback from Python, called with the GIL held; its first exception is kept and
/// raised when the auction returns.
struct Progress {
    callback: Option<Py<PyAny>>,
    error: Option<PyErr>,
}

impl Progress {
    fn call(&mut self, phase: &str, done: usize, total: usize) {
        if let (Some(cb), None) = (&self.callback, &self.error)
            && let Err(e) = Python::attach(|py| cb.call1(py, (phase, done, total)).map(drop))
        {
            self.error = Some(e);
        }
    }

    fn finish<T>(self, out: PyResult<T>) -> PyResult<T> {
        match self.error {
            Some(e) => Err(e),
            None => out,
        }
    }
}

/// The models of the roles, loaded on first use, and the auctions on them.
#[pyclass(module = "llm_auction._native", name = "Auction")]
pub(crate) struct NativeAuction {
    registry: Mutex<Registry>,
    model: Option<PathBuf>,
    kernels: Kernels,
}

impl NativeAuction {
    /// Loads the entries `roles` name that are not loaded yet (GIL released).
    fn ensure(&self, py: Python<'_>, roles: &[(String, String)]) -> PyResult<()> {
        let (model, kernels) = (self.model.clone(), self.kernels);
        let mut guard = self.registry.lock().map_err(|_| poisoned())?;
        let reg: &mut Registry = &mut guard;
        py.detach(|| {
            reg.ensure::<CpuBackend>(roles, &mut |_, path| {
                let device = cpu_device();
                let mut quiet = |_: &str, _: usize, _: usize| {};
                let loaded = match path.or_else(|| model.clone()) {
                    Some(p) => Model::<CpuBackend>::load(&p, &device, &mut quiet)
                        .map_err(|e| format!("{}: {e}", p.display())),
                    None => Model::<CpuBackend>::load_default(
                        &device,
                        &mut |notice| eprintln!("{notice}"),
                        &mut quiet,
                    )
                    .map_err(|e| e.to_string()),
                };
                loaded.map(|mut m| {
                    m.llama.set_kernels(kernels);
                    m
                })
            })
        })
        .map_err(engine_error)
    }
}

fn poisoned() -> PyErr {
    PyRuntimeError::new_err("an earlier auction on this object panicked")
}

#[pymethods]
impl NativeAuction {
    #[new]
    #[pyo3(signature = (models=None, model=None, kernels="native", token_budget=None, max_seqs=None, kv_blocks=None, prefix_cache=true))]
    fn new(
        models: Option<PathBuf>,
        model: Option<PathBuf>,
        kernels: &str,
        token_budget: Option<usize>,
        max_seqs: Option<usize>,
        kv_blocks: Option<usize>,
        prefix_cache: bool,
    ) -> PyResult<Self> {
        let d = EngineConfig::default();
        let engine = EngineConfig {
            token_budget: token_budget.unwrap_or(d.token_budget),
            max_seqs: max_seqs.unwrap_or(d.max_seqs),
            num_blocks: kv_blocks.unwrap_or(d.num_blocks),
            prefix_caching: prefix_cache,
            ..d
        };
        let kernels: Kernels = kernels.parse().map_err(value_error)?;
        let registry =
            Registry::new(models.as_deref(), engine, Serving::PerSession).map_err(engine_error)?;
        Ok(Self {
            registry: Mutex::new(registry),
            model,
            kernels,
        })
    }

    /// The names of the entries loaded so far.
    fn loaded(&self) -> PyResult<Vec<String>> {
        let reg = self.registry.lock().map_err(|_| poisoned())?;
        Ok(reg.models().map(|m| m.info().name.clone()).collect())
    }

    /// MOSAIC on the options of `auction_input::MosaicInput` (JSON); the report as the CLI's
    /// `mosaic --json` prints it.
    #[pyo3(signature = (options, progress=None))]
    fn mosaic(
        &self,
        py: Python<'_>,
        options: &str,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<String> {
        // Checked before any model loads, as the CLI does.
        let job = self::options::<MosaicInput>(options)?
            .check(MAX_ADVERTISERS)
            .map_err(engine_error)?;
        let MosaicJob {
            query,
            ads,
            cfg,
            reference,
            generator: generator_model,
            advertisers: adv_entries,
        } = job;
        let names: Vec<&str> = ads.iter().map(|a| a.name.as_str()).collect();
        let mut roles = vec![
            ("reference".to_string(), reference.clone()),
            ("generator".to_string(), generator_model.clone()),
        ];
        roles.extend(roles_of("advertiser", &names, &adv_entries));
        self.ensure(py, &roles)?;
        let reg = self.registry.lock().map_err(|_| poisoned())?;
        let mut progress = Progress {
            callback: progress,
            error: None,
        };
        let out = py.detach(|| -> Result<String, EngineError> {
            let models = MosaicModels {
                reference: reg.get(&reference)?,
                generator: reg.get(&generator_model)?,
                advertisers: adv_entries
                    .iter()
                    .map(|e| reg.get(e))
                    .collect::<Result<_, _>>()?,
            };
            let report = run_mosaic(&models, &query, &ads, &cfg, &mut |phase, done, total| {
                let name = match phase {
                    Phase::Generating => "generating",
                    Phase::Candidate { .. } => "candidate",
                    Phase::Scoring => "scoring",
                };
                progress.call(name, done, total);
            })?;
            serde_json::to_string(&report).map_err(|e| EngineError::Internal(e.to_string()))
        });
        progress.finish(out.map_err(engine_error))
    }

    /// The token auction on the options of `auction_input::TokenInput` (JSON); the report as the
    /// CLI's `token-auction --json` prints it.
    #[pyo3(signature = (options, progress=None))]
    fn token(
        &self,
        py: Python<'_>,
        options: &str,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<String> {
        let TokenJob {
            query,
            agents,
            cfg,
            entries,
        } = self::options::<TokenInput>(options)?
            .check(MAX_AGENTS)
            .map_err(engine_error)?;
        let names: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
        self.ensure(py, &roles_of("agent", &names, &entries))?;
        let reg = self.registry.lock().map_err(|_| poisoned())?;
        let mut progress = Progress {
            callback: progress,
            error: None,
        };
        let out = py.detach(|| -> Result<String, EngineError> {
            let models = entries
                .iter()
                .map(|e| reg.get(e))
                .collect::<Result<Vec<_>, _>>()?;
            let report = run_token_auction(&models, &query, &agents, &cfg, &mut |done, total| {
                progress.call("decoding", done, total)
            })?;
            serde_json::to_string(&report).map_err(|e| EngineError::Internal(e.to_string()))
        });
        progress.finish(out.map_err(engine_error))
    }
}
