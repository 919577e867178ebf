//! The auctions end to end: an `Auction` holds the models its roles use (loaded once, kept across
//! calls) and runs MOSAIC or the token auction with the GIL released, returning the report as the
//! CLI's `--json` prints it.

use crate::mechanism::{parse_name, value_error};
use llm_auction_engine::EngineError;
use llm_auction_engine::engine::EngineConfig;
use llm_auction_engine::models_file::DEFAULT_ENTRY;
use llm_auction_engine::mosaic::{Advertiser, MosaicConfig, MosaicModels, Phase, run_mosaic};
use llm_auction_engine::registry::{Registry, Serving, roles_of};
use llm_auction_engine::token_auction::{Agent, TokenAuctionConfig, run_token_auction};
use llm_auction_model::backend::cpu_device;
use llm_auction_model::model::Model;
use llm_auction_model::{CpuBackend, Kernels, ModelError};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeAuction>()?;
    Ok(())
}

/// Input errors (of the caller's arguments or files) are `ValueError`s; model, server and engine
/// failures are `RuntimeError`s. Both carry the CLI's one-line message.
fn engine_error(e: EngineError) -> PyErr {
    fn is_input(e: &EngineError) -> bool {
        match e {
            EngineError::Role { error, .. } => is_input(error),
            EngineError::Model(m) => matches!(
                m,
                ModelError::Parameter { .. }
                    | ModelError::PromptTooLong { .. }
                    | ModelError::UnknownToken { .. }
            ),
            EngineError::Auction { .. }
            | EngineError::Mechanism(_)
            | EngineError::PromptTooLong { .. }
            | EngineError::InvalidRequest(_)
            | EngineError::KvCapacity { .. }
            | EngineError::Entry { .. }
            | EngineError::ModelsFile { .. }
            | EngineError::Config(_) => true,
            _ => false,
        }
    }
    if is_input(&e) {
        PyValueError::new_err(e.to_string())
    } else {
        PyRuntimeError::new_err(e.to_string())
    }
}

/// `{"Name": "entry"}` as one entry per name (default: the default entry); errors name `field`.
fn per_name(field: &str, map: BTreeMap<String, String>, names: &[&str]) -> PyResult<Vec<String>> {
    if let Some(unknown) = map.keys().find(|k| !names.contains(&k.as_str())) {
        return Err(PyValueError::new_err(format!(
            "{field}.{unknown}: no such name among {names:?}"
        )));
    }
    Ok(names
        .iter()
        .map(|n| map.get(*n).cloned().unwrap_or_else(|| DEFAULT_ENTRY.into()))
        .collect())
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

    /// MOSAIC; the report as the CLI's `mosaic --json` prints it.
    #[pyo3(signature = (query, advertisers, m=None, tau=None, tau_i=None, temperature=None, top_p=None, max_new_tokens=None, seed=None, generator=None, importance=None, offset=None, reference=None, generator_model=None, advertiser_models=None, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn mosaic(
        &self,
        py: Python<'_>,
        query: String,
        advertisers: Vec<String>,
        m: Option<usize>,
        tau: Option<f64>,
        tau_i: Option<Vec<f64>>,
        temperature: Option<f64>,
        top_p: Option<f64>,
        max_new_tokens: Option<usize>,
        seed: Option<u64>,
        generator: Option<String>,
        importance: Option<String>,
        offset: Option<bool>,
        reference: Option<String>,
        generator_model: Option<String>,
        advertiser_models: Option<BTreeMap<String, String>>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<String> {
        let ads = advertisers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Advertiser::parse(s)
                    .map_err(|e| PyValueError::new_err(format!("advertisers[{i}]: {e}")))
            })
            .collect::<PyResult<Vec<_>>>()?;
        let d = MosaicConfig::default();
        let cfg = MosaicConfig {
            m: m.unwrap_or(d.m),
            tau: tau.unwrap_or(d.tau),
            tau_i: tau_i.unwrap_or_default(),
            temperature: temperature.unwrap_or(d.temperature),
            top_p: top_p.unwrap_or(d.top_p),
            max_new_tokens: max_new_tokens.unwrap_or(d.max_new_tokens),
            seed: seed.unwrap_or(d.seed),
            generator: match generator {
                Some(g) => parse_name("generator", &g)?,
                None => d.generator,
            },
            importance: match importance {
                Some(i) => parse_name("importance", &i)?,
                None => d.importance,
            },
            offset: offset.unwrap_or(d.offset),
        };
        // Checked before any model loads, as the CLI does.
        llm_auction_engine::mosaic::check_input(&cfg, &query, &ads).map_err(engine_error)?;
        let reference = reference.unwrap_or_else(|| DEFAULT_ENTRY.into());
        let generator_model = generator_model.unwrap_or_else(|| DEFAULT_ENTRY.into());
        let names: Vec<&str> = ads.iter().map(|a| a.name.as_str()).collect();
        let adv_entries = per_name(
            "advertiser_models",
            advertiser_models.unwrap_or_default(),
            &names,
        )?;
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
            serde_json::to_string(&report).map_err(|e| EngineError::Config(e.to_string()))
        });
        progress.finish(out.map_err(engine_error))
    }

    /// The token auction; the report as the CLI's `token-auction --json` prints it.
    #[pyo3(signature = (query, agents, aggregation=None, payment=None, max_new_tokens=None, seed=None, agent_models=None, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn token(
        &self,
        py: Python<'_>,
        query: String,
        agents: Vec<(String, Option<String>)>,
        aggregation: Option<String>,
        payment: Option<String>,
        max_new_tokens: Option<usize>,
        seed: Option<u64>,
        agent_models: Option<BTreeMap<String, String>>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<String> {
        let agents = agents
            .into_iter()
            .enumerate()
            .map(|(i, (spec, system_prompt))| {
                Agent::parse(&spec)
                    .map(|mut a| {
                        a.system_prompt = system_prompt;
                        a
                    })
                    .map_err(|e| PyValueError::new_err(format!("agents[{i}]: {e}")))
            })
            .collect::<PyResult<Vec<_>>>()?;
        let d = TokenAuctionConfig::default();
        let cfg = TokenAuctionConfig {
            aggregation: match aggregation {
                Some(a) => parse_name("aggregation", &a)?,
                None => d.aggregation,
            },
            payment: match payment {
                Some(p) => parse_name("payment", &p)?,
                None => d.payment,
            },
            max_new_tokens: max_new_tokens.unwrap_or(d.max_new_tokens),
            seed: seed.unwrap_or(d.seed),
        };
        let names: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
        let entries = per_name("agent_models", agent_models.unwrap_or_default(), &names)?;
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
            serde_json::to_string(&report).map_err(|e| EngineError::Config(e.to_string()))
        });
        progress.finish(out.map_err(engine_error))
    }
}
