//! The MOSAIC experiments of Soumalias, Curry and Seuken (§6, Figures 1–5), on this model.
//!
//! For every query, seed and generator, one auction generates the largest `M` once; every smaller
//! `M` is evaluated on a prefix of the same candidate list, so a grid costs one auction per
//! `(query, seed, generator)`. Per instance and `M` the runner records, for each advertiser, one CSV
//! row (see [`Row`]); rows are appended per instance and a run can be killed and resumed without
//! recomputing finished instances (see [`Store`]).
//!
//! The module holds the data set, the grid and its loop; `estimators.rs` the per-query and
//! per-instance metrics (their equations live in the mechanism crate), `store.rs` the run's files.
//!
//! **Log-probability under the optimal policy.** `log π_r(y) = log π_ref(y) + r(y)/τ − log Z` with
//! `r = Σ_i r_i` and `Z = E_{π_ref}[exp(r/τ)]`. `Z` is estimated once per query from `K` replies
//! sampled from `π_ref` itself (temperature 1, no truncation) and scored under every advertiser:
//! `log Ẑ = LSE_k(r(y_k)/τ) − log K`. `Ẑ` is unbiased for `Z`; `log Ẑ` is biased low by Jensen's
//! inequality (so log-probabilities are biased high by the same, query-level, amount for both
//! generators). The same samples give a self-normalised estimate of `E_{π_r}[log π_r]`:
//! `Σ_k w_k log π_r(y_k)`, `w_k ∝ exp(r(y_k)/τ)` (`opt_proxy`).
//!
//! **The paper's proxy for sampling from the optimum (footnote 8).** Replies sampled from `π_ref`
//! with the candidates' own settings (temperature, top-p) and scored under `π_ref`, "for which the
//! reference LLM is the optimal one": `ref_proxy = mean_k log π_ref(y'_k)` over `K` further samples.
//! Unlike `opt_proxy` it is on the same footing as the candidates (tempered sampling), which is what
//! Figure 1a compares against.
//!
//! **Reward gain (Eq. 19, footnote 9).** `Σ_j π_j r_i(y_j)` minus the expected reward without
//! advertiser `i`, estimated as the paper does from the already generated candidates that do not
//! mention `i` by name (case-insensitive), allocated by the mechanism without `i`
//! (`softmax_j(β_{−i,j})` restricted to them). When every candidate mentions `i`, the allocation
//! without `i` over all candidates is used and the row records `n_without = 0`.

mod estimators;
mod store;

pub use estimators::{estimate_z, instance_rows};
pub use store::{CSV_HEADER, Store, read_rows};

use crate::error::{EngineError, Result};
use crate::lm::LanguageModel;
use crate::mosaic::{Advertiser, Generator, Importance, MosaicConfig, MosaicModels, run_mosaic};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;

/// One query of the data set with its advertisers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Stable id.
    pub id: u32,
    /// The user query.
    pub query: String,
    /// Its advertisers.
    pub advertisers: Vec<AdvertiserSpec>,
}

/// An advertiser as stored in the data set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvertiserSpec {
    /// Brand name.
    pub name: String,
    /// What it does.
    pub description: String,
}

/// Reads and validates a data set (`data/instances.json`).
///
/// # Errors
/// [`EngineError::Auction`] naming the file and the problem.
pub fn load_instances(path: &Path) -> Result<Vec<Instance>> {
    let bad = |m: String| EngineError::Auction {
        field: "instances".into(),
        message: format!("{}: {m}", path.display()),
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let v: Vec<Instance> = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if v.is_empty() {
        return Err(bad("no instances".into()));
    }
    let mut ids = HashSet::new();
    for i in &v {
        if !ids.insert(i.id) {
            return Err(bad(format!("duplicate id {}", i.id)));
        }
        if i.query.trim().is_empty() || i.advertisers.is_empty() {
            return Err(bad(format!(
                "instance {} needs a query and advertisers",
                i.id
            )));
        }
    }
    Ok(v)
}

/// The experiment grid.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExperimentConfig {
    /// Use the first this many queries.
    pub queries: usize,
    /// Seeds `0..seeds` per query.
    pub seeds: u64,
    /// Candidate counts evaluated (the largest is generated).
    pub ms: Vec<usize>,
    /// Generators compared.
    pub generators: Vec<Generator>,
    /// Tokens per candidate.
    pub max_new_tokens: usize,
    /// `τ`.
    pub tau: f64,
    /// Sampling temperature of candidates.
    pub temperature: f64,
    /// Top-p of candidates.
    pub top_p: f64,
    /// Reference samples per query for `log Ẑ`.
    pub z_samples: usize,
    /// Importance weights of the auctions (omitted from `config.json` when it is the default, so
    /// runs written before the field existed still resume).
    #[serde(skip_serializing_if = "is_proposal")]
    pub importance: Importance,
    /// `τ_i` of every advertiser in Eq. 11 (`r_i = τ_i log(π_i/π_ref)`), in the auctions and in the
    /// estimate of `log Z` alike (omitted from `config.json` when it is 1, as for `importance`).
    #[serde(skip_serializing_if = "is_one")]
    pub advertiser_tau: f64,
}

fn is_proposal(i: &Importance) -> bool {
    *i == Importance::Proposal
}

fn is_one(x: &f64) -> bool {
    *x == 1.0
}

impl ExperimentConfig {
    /// The CPU-sized default: 10 queries × 3 seeds × M up to 16, both generators, 64 new tokens.
    pub fn cpu() -> Self {
        Self {
            queries: 10,
            seeds: 3,
            ms: vec![1, 2, 4, 8, 16],
            generators: vec![Generator::ContextAware, Generator::Reference],
            max_new_tokens: 64,
            tau: 1.0,
            temperature: 0.8,
            top_p: 0.95,
            z_samples: 32,
            importance: Importance::Proposal,
            advertiser_tau: 1.0,
        }
    }

    /// The paper's grid: 50 queries × 25 seeds, M up to 20 (for a GPU).
    pub fn full() -> Self {
        Self {
            queries: 50,
            seeds: 25,
            ms: vec![1, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20],
            ..Self::cpu()
        }
    }
}

/// One CSV row: an advertiser of one instance at one `M`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Query id.
    pub query_id: u32,
    /// Seed.
    pub seed: u64,
    /// The generator, written `context` or `reference` (see [`generator_name`]).
    #[serde(with = "store::generator_column")]
    pub generator: Generator,
    /// Candidates used (a prefix of the generated list).
    pub m: usize,
    /// Advertiser index.
    pub agent: usize,
    /// Advertiser name.
    pub agent_name: String,
    /// Index of the returned candidate.
    pub winner: usize,
    /// `log π_r` of the returned reply.
    pub logprob_opt_reply: f64,
    /// `Σ_j π_j log π_r(y_j)`: the same, in expectation over the draw.
    pub expected_logprob_opt: f64,
    /// `log Ẑ` of the query.
    pub log_z: f64,
    /// `E_{π_r}[log π_r]`, self-normalised from the untempered reference samples.
    pub opt_proxy: f64,
    /// The paper's proxy (footnote 8): tempered `π_ref` samples scored under `π_ref`.
    pub ref_proxy: f64,
    /// `Σ_j π_j r_i(y_j)`.
    pub reward_with: f64,
    /// Expected reward without the advertiser (footnote 9).
    pub reward_without: f64,
    /// Candidates not mentioning the advertiser.
    pub n_without: usize,
    /// Reward gain (Eq. 19).
    pub reward_gain: f64,
    /// Payment with the offset (Eq. 13).
    pub payment: f64,
    /// Payment without the offset.
    pub payment_no_offset: f64,
    /// `reward_gain − payment`.
    pub utility_gain: f64,
    /// `reward_gain − payment_no_offset`.
    pub utility_gain_no_offset: f64,
    /// `Σ_i p_i` with the offset.
    pub revenue: f64,
    /// `Σ_i p_i` without the offset.
    pub revenue_no_offset: f64,
    /// Whether the returned reply mentions the advertiser (written `1` or `0`).
    #[serde(with = "store::bit")]
    pub mentioned: bool,
}

/// The per-query estimate of `log Z` and of the optimal-sampling proxy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ZEstimate {
    /// Query id.
    pub query_id: u32,
    /// `log Ẑ`.
    pub log_z: f64,
    /// `Σ_k w_k log π_r(y_k)`.
    pub opt_proxy: f64,
    /// `mean_k log π_ref(y'_k)`, `y'_k` sampled from `π_ref` with the candidates' settings.
    pub ref_proxy: f64,
    /// Samples used.
    pub samples: usize,
}

/// `context` or `reference`: the generator as the run's files and progress name it.
pub fn generator_name(g: Generator) -> &'static str {
    match g {
        Generator::ContextAware => "context",
        Generator::Reference => "reference",
    }
}

fn advertisers(i: &Instance) -> Vec<Advertiser> {
    i.advertisers
        .iter()
        .map(|a| Advertiser {
            name: a.name.clone(),
            description: a.description.clone(),
        })
        .collect()
}

/// The models behind the experiment's roles: `π_ref`, `π_gen`, and the advertisers' LLM (every
/// advertiser of every instance is this model with its own system prompt).
#[derive(Clone, Copy)]
pub struct ExperimentModels<'a> {
    /// `π_ref`.
    pub reference: &'a dyn LanguageModel,
    /// `π_gen`.
    pub generator: &'a dyn LanguageModel,
    /// `π_i`.
    pub advertiser: &'a dyn LanguageModel,
}

impl<'a> ExperimentModels<'a> {
    /// Every role on `model`.
    pub fn single(model: &'a dyn LanguageModel) -> Self {
        Self {
            reference: model,
            generator: model,
            advertiser: model,
        }
    }
}

/// Progress of a run: `(instances finished, instances in the grid, description)`.
pub type ExperimentProgress<'a> = &'a mut dyn FnMut(usize, usize, &str);

/// Runs (or resumes) the grid, writing into `store`.
///
/// # Errors
/// Model, mechanism and I/O errors.
pub fn run_experiment(
    models: &ExperimentModels<'_>,
    instances: &[Instance],
    cfg: &ExperimentConfig,
    store: &mut Store,
    progress: ExperimentProgress<'_>,
) -> Result<()> {
    let largest = cfg.ms.iter().copied().max().unwrap_or(1);
    let insts = &instances[..cfg.queries.min(instances.len())];
    let total = insts.len() * cfg.seeds as usize * cfg.generators.len();
    let mut finished = 0;
    for inst in insts {
        for seed in 0..cfg.seeds {
            for &g in &cfg.generators {
                if store.is_done(inst.id, seed, g) {
                    finished += 1;
                    continue;
                }
                progress(
                    finished,
                    total,
                    &format!("query {} seed {seed} {}", inst.id, generator_name(g)),
                );
                let z = match store.z(inst.id) {
                    Some(z) => z,
                    None => {
                        let z = estimate_z(models, inst, cfg)?;
                        store.put_z(z)?;
                        z
                    }
                };
                let mcfg = MosaicConfig {
                    m: largest,
                    tau: cfg.tau,
                    temperature: cfg.temperature,
                    top_p: cfg.top_p,
                    max_new_tokens: cfg.max_new_tokens,
                    seed: seed.wrapping_mul(1_000_003).wrapping_add(inst.id as u64),
                    generator: g,
                    importance: cfg.importance,
                    tau_i: vec![cfg.advertiser_tau; inst.advertisers.len()],
                    ..MosaicConfig::default()
                };
                let ads = advertisers(inst);
                let roles = MosaicModels {
                    reference: models.reference,
                    generator: models.generator,
                    advertisers: vec![models.advertiser; ads.len()],
                };
                let report = run_mosaic(&roles, &inst.query, &ads, &mcfg, &mut |_, _, _| {})?;
                let rows = instance_rows(inst, seed, g, &report.candidates, &z, cfg)?;
                store.put_instance(inst.id, seed, g, &rows)?;
                finished += 1;
            }
        }
    }
    progress(finished, total, "done");
    Ok(())
}
