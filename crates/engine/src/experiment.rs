//! The MOSAIC experiments of Soumalias, Curry and Seuken (§6, Figures 1–5), on this model.
//!
//! For every query, seed and generator, one auction generates the largest `M` once; every smaller
//! `M` is evaluated on a prefix of the same candidate list, so a grid costs one auction per
//! `(query, seed, generator)`. Per instance and `M` the runner records, for each advertiser, one CSV
//! row (see [`Row`]); rows are appended per instance and a run can be killed and resumed without
//! recomputing finished instances (see [`Store`]).
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

use crate::error::{EngineError, Result};
use crate::lm::{LanguageModel, reply_text};
use crate::mosaic::{
    Advertiser, Candidate, Generator, Importance, MosaicConfig, MosaicModels, continuation_for,
    run_mosaic,
};
use crate::request::{GenerateSpec, ScoreSpec};
use crate::roles::Sessions;
use llm_auction_mechanism::dist::inverse_cdf;
use llm_auction_mechanism::logspace::{log_sum_exp, softmax};
use llm_auction_mechanism::metrics::reward_gain;
use llm_auction_mechanism::mosaic::{Mosaic, RewardMatrix};
use llm_auction_mechanism::rng::{rng_from_seed, uniform_open01};
use llm_auction_model::model::DEFAULT_SYSTEM_PROMPT;
use llm_auction_model::sampling::SamplingParams;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

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
}

fn is_proposal(i: &Importance) -> bool {
    *i == Importance::Proposal
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
    /// `context` or `reference`.
    pub generator: String,
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
    /// Whether the returned reply mentions the advertiser.
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

/// Estimates `log Z` and both optimal-sampling proxies of one query from `k` untempered and `k`
/// tempered reference samples (see the module docs).
///
/// # Errors
/// Model errors.
pub fn estimate_z(
    models: &ExperimentModels<'_>,
    inst: &Instance,
    cfg: &ExperimentConfig,
) -> Result<ZEstimate> {
    let ads = advertisers(inst);
    let (reference, adv_model) = (models.reference, models.advertiser);
    let roles: Vec<(String, &dyn LanguageModel)> = vec![
        ("reference".into(), reference),
        ("advertisers".into(), adv_model),
    ];
    let mut sessions = Sessions::open(&roles)?;
    let (ref_s, adv_s) = (sessions.of(0), sessions.of(1));
    let ref_ids = reference
        .chat_turn_ids(DEFAULT_SYSTEM_PROMPT, &inst.query)
        .map_err(sessions.err(ref_s))?;
    let adv_ids: Vec<Vec<u32>> = ads
        .iter()
        .map(|a| adv_model.chat_turn_ids(&crate::mosaic::advertiser_system_prompt(a), &inst.query))
        .collect::<Result<_>>()
        .map_err(sessions.err(adv_s))?;
    let mut seeds = rng_from_seed(0x5EED_0000 + inst.id as u64);
    let tempered = SamplingParams {
        temperature: cfg.temperature,
        top_p: cfg.top_p,
        ..SamplingParams::default()
    };
    // K untempered samples (for log Ẑ), then K tempered ones (footnote 8); seeds drawn in that order.
    let eos = reference.info().eos_ids.clone();
    let gens: Vec<GenerateSpec> = [SamplingParams::default(), tempered]
        .into_iter()
        .flat_map(|params| std::iter::repeat_n(params, cfg.z_samples))
        .map(|params| GenerateSpec {
            prompt: ref_ids.clone(),
            params,
            max_new_tokens: cfg.max_new_tokens,
            stop: eos.clone(),
            seed: rand::Rng::next_u64(&mut seeds),
        })
        .collect();
    let n = gens.len();
    let samples = sessions
        .get(ref_s)
        .generate(gens, &mut |_| {})
        .and_then(|g| crate::lm::expect_len(reference.info(), "generate", g, n))
        .map_err(sessions.err(ref_s))?;
    // log π_ref of every sample: reported while sampling, or else scored under π_ref.
    let raw: Option<Vec<f64>> = samples
        .iter()
        .map(|g| g.logprobs_raw.as_ref().map(|lp| lp.iter().sum()))
        .collect();
    let log_ref_all = match raw {
        Some(v) => v,
        None => {
            let reqs = samples
                .iter()
                .map(|g| ScoreSpec {
                    prompt: ref_ids.clone(),
                    continuation: g.tokens.clone(),
                })
                .collect();
            sessions
                .get(ref_s)
                .score(reqs, &mut |_| {})
                .and_then(|s| crate::lm::expect_len(reference.info(), "score", s, n))
                .map_err(sessions.err(ref_s))?
                .into_iter()
                .map(|s| s.total_logprob)
                .collect()
        }
    };
    let k = cfg.z_samples.min(samples.len());
    let (log_ref, tempered_ref) = log_ref_all.split_at(k);
    let ref_proxy = tempered_ref.iter().sum::<f64>() / tempered_ref.len().max(1) as f64;
    let samples = &samples[..k];
    let conts = samples
        .iter()
        .map(|g| {
            continuation_for(adv_model, reference, g, &|| {
                reply_text(reference, &g.tokens)
            })
        })
        .collect::<Result<Vec<_>>>()
        .map_err(sessions.err(adv_s))?;
    let reqs: Vec<ScoreSpec> = adv_ids
        .iter()
        .flat_map(|p| {
            conts.iter().map(|c| ScoreSpec {
                prompt: p.clone(),
                continuation: c.clone(),
            })
        })
        .collect();
    let n = reqs.len();
    let scores: Vec<f64> = sessions
        .get(adv_s)
        .score(reqs, &mut |_| {})
        .and_then(|s| crate::lm::expect_len(adv_model.info(), "score", s, n))
        .map_err(sessions.err(adv_s))?
        .into_iter()
        .map(|s| s.total_logprob)
        .collect();
    let r: Vec<f64> = (0..k)
        .map(|s| (0..ads.len()).map(|i| scores[i * k + s] - log_ref[s]).sum())
        .collect();
    let scaled: Vec<f64> = r.iter().map(|x| x / cfg.tau).collect();
    let log_z = log_sum_exp(&scaled) - (k as f64).ln();
    let w = softmax(&scaled);
    let opt_proxy = (0..k)
        .map(|s| w[s] * (log_ref[s] + scaled[s] - log_z))
        .sum();
    Ok(ZEstimate {
        query_id: inst.id,
        log_z,
        opt_proxy,
        ref_proxy,
        samples: k,
    })
}

/// Every row of one instance (all `M` of the grid, every advertiser), from one auction's candidates.
///
/// # Errors
/// Mechanism errors.
pub fn instance_rows(
    inst: &Instance,
    seed: u64,
    generator: Generator,
    candidates: &[Candidate],
    z: &ZEstimate,
    cfg: &ExperimentConfig,
) -> Result<Vec<Row>> {
    let n = inst.advertisers.len();
    let tau = cfg.tau;
    let u = uniform_open01(&mut rng_from_seed(
        seed ^ 0xD4A3_u64.rotate_left(32) ^ inst.id as u64,
    ));
    let mut rows = Vec::new();
    for &m in &cfg.ms {
        let m = m.min(candidates.len());
        let c = &candidates[..m];
        let rewards: Vec<Vec<f64>> = (0..n)
            .map(|i| c.iter().map(|x| x.rewards[i]).collect())
            .collect();
        let lw: Vec<f64> = c.iter().map(|x| x.log_weight).collect();
        let matrix = RewardMatrix::from_rows(&rewards)?;
        let with = Mosaic::new(tau)?.run(&matrix, Some(&lw))?;
        let without_offset = Mosaic::new(tau)?
            .with_offset(false)
            .run(&matrix, Some(&lw))?;
        let winner = inverse_cdf(&with.allocation, u);
        let log_opt = |x: &Candidate| x.log_ref + x.rewards.iter().sum::<f64>() / tau - z.log_z;
        let expected_logprob_opt = c
            .iter()
            .zip(&with.allocation)
            .map(|(x, p)| p * log_opt(x))
            .sum();
        for (i, ad) in inst.advertisers.iter().enumerate() {
            let name = ad.name.to_lowercase();
            let keep: Vec<usize> = (0..m)
                .filter(|&j| !c[j].text.to_lowercase().contains(&name))
                .collect();
            let pool: Vec<usize> = if keep.is_empty() {
                (0..m).collect()
            } else {
                keep.clone()
            };
            // The allocation without i, restricted to the pool: softmax of β_{−i}.
            let beta: Vec<f64> = pool
                .iter()
                .map(|&j| {
                    (0..n)
                        .filter(|&k| k != i)
                        .map(|k| rewards[k][j] / tau)
                        .sum::<f64>()
                        + lw[j]
                })
                .collect();
            let alloc_without = softmax(&beta);
            let r_without: Vec<f64> = pool.iter().map(|&j| rewards[i][j]).collect();
            let gain = reward_gain(&rewards[i], &with.allocation, &r_without, &alloc_without)?;
            let reward_without: f64 = r_without
                .iter()
                .zip(&alloc_without)
                .map(|(r, p)| r * p)
                .sum();
            rows.push(Row {
                query_id: inst.id,
                seed,
                generator: generator_name(generator).into(),
                m,
                agent: i,
                agent_name: ad.name.clone(),
                winner,
                logprob_opt_reply: log_opt(&c[winner]),
                expected_logprob_opt,
                log_z: z.log_z,
                opt_proxy: z.opt_proxy,
                ref_proxy: z.ref_proxy,
                reward_with: with.expected_rewards[i],
                reward_without,
                n_without: keep.len(),
                reward_gain: gain,
                payment: with.payments[i],
                payment_no_offset: without_offset.payments[i],
                utility_gain: gain - with.payments[i],
                utility_gain_no_offset: gain - without_offset.payments[i],
                revenue: with.revenue,
                revenue_no_offset: without_offset.revenue,
                mentioned: c[winner].text.to_lowercase().contains(&name),
            });
        }
    }
    Ok(rows)
}

/// `context` or `reference`.
pub fn generator_name(g: Generator) -> &'static str {
    match g {
        Generator::ContextAware => "context",
        Generator::Reference => "reference",
    }
}

/// The on-disk state of a run: `results.csv` (rows), `done.csv` (finished instances),
/// `logz.csv` (per-query `Ẑ`) and `config.json`.
///
/// Rows of an instance are appended and flushed to disk *before* the instance is recorded as done;
/// on opening, rows of instances that are not recorded as done (a run killed between the two writes)
/// are dropped by rewriting `results.csv` atomically (temporary file + rename). So a resumed run
/// recomputes exactly the unfinished instances and loses nothing.
pub struct Store {
    dir: PathBuf,
    done: HashSet<(u32, u64, String)>,
    z: BTreeMap<u32, ZEstimate>,
}

fn io_err(path: &Path, e: std::io::Error) -> EngineError {
    EngineError::Auction {
        field: "out".into(),
        message: format!("{}: {e}", path.display()),
    }
}

/// Whether a CSV file holds a line after its header.
fn has_rows(path: &Path) -> Result<bool> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.lines().skip(1).any(|l| !l.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(path, e)),
    }
}

/// Drops a torn last line (no final newline: a crash mid-write), so that the next append starts on
/// a line of its own and readers see only whole rows.
fn drop_torn_tail(path: &Path) -> Result<()> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(path, e)),
    };
    if text.is_empty() || text.ends_with(b"\n") {
        return Ok(());
    }
    let keep = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    tracing::warn!(path = %path.display(), bytes = text.len() - keep, "dropping a torn last line");
    write_atomic(path, &text[..keep])
}

fn append_line(path: &Path, line: &str) -> Result<()> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io_err(path, e))?;
    f.write_all(line.as_bytes()).map_err(|e| io_err(path, e))?;
    f.sync_all().map_err(|e| io_err(path, e))
}

impl Store {
    /// Opens (or creates) the run directory; with `resume` false an existing run is an error.
    ///
    /// # Errors
    /// I/O errors; [`EngineError::Auction`] when `resume` is false and results exist, or when the
    /// directory holds a run of another configuration.
    pub fn open(dir: &Path, cfg: &ExperimentConfig, resume: bool) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let cfg_path = dir.join("config.json");
        let cfg_text = serde_json::to_string_pretty(cfg)
            .map_err(|e| io_err(&cfg_path, std::io::Error::other(e)))?;
        let results = dir.join("results.csv");
        for file in ["results.csv", "logz.csv", "done.csv"] {
            drop_torn_tail(&dir.join(file))?;
        }
        if has_rows(&results)? && !resume {
            return Err(EngineError::Auction {
                field: "out".into(),
                message: format!(
                    "{} already holds results; use --resume or another --out",
                    dir.display()
                ),
            });
        }
        if let Ok(old) = std::fs::read_to_string(&cfg_path) {
            let same = |a: &str, b: &str| {
                let strip = |s: &str| -> serde_json::Value {
                    let mut v: serde_json::Value = serde_json::from_str(s).unwrap_or_default();
                    if let Some(o) = v.as_object_mut() {
                        // The grid may grow between runs (more queries or seeds); the rest must match.
                        o.remove("queries");
                        o.remove("seeds");
                    }
                    v
                };
                strip(a) == strip(b)
            };
            if !same(&old, &cfg_text) {
                return Err(EngineError::Auction {
                    field: "out".into(),
                    message: format!(
                        "{} holds a run with another configuration (see its config.json)",
                        dir.display()
                    ),
                });
            }
        }
        for (file, header) in [
            ("results.csv", CSV_HEADER),
            ("logz.csv", LOGZ_HEADER.trim_end()),
        ] {
            let path = dir.join(file);
            if let Ok(f) = File::open(&path) {
                let mut first = String::new();
                BufReader::new(f)
                    .read_line(&mut first)
                    .map_err(|e| io_err(&path, e))?;
                let columns = |l: &str| l.trim_end().split(',').count();
                // A data row starts with a query id; a header of another version with a name.
                let is_row = first
                    .split(',')
                    .next()
                    .is_some_and(|f| f.parse::<u64>().is_ok())
                    && columns(&first) == columns(header);
                if first.trim_end() != header && is_row {
                    // Rows without their header (written after a crash left an empty file): repair.
                    tracing::warn!(path = %path.display(), "restoring the missing CSV header");
                    let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
                    write_atomic(&path, format!("{header}\n{text}").as_bytes())?;
                } else if !first.is_empty() && first.trim_end() != header {
                    return Err(EngineError::Auction {
                        field: "out".into(),
                        message: format!(
                            "{} was written by another version of the runner (its columns differ); use another --out",
                            path.display()
                        ),
                    });
                }
            }
        }
        // Each CSV file is created holding its header, atomically: a crash or a full disk never
        // leaves one empty or headerless.
        for (file, header) in [
            ("results.csv", CSV_HEADER),
            ("logz.csv", LOGZ_HEADER.trim_end()),
        ] {
            let path = dir.join(file);
            let empty = std::fs::metadata(&path).map_or(true, |m| m.len() == 0);
            if empty {
                write_atomic(&path, format!("{header}\n").as_bytes())?;
            }
        }
        write_atomic(&cfg_path, cfg_text.as_bytes())?;
        let mut done = HashSet::new();
        let done_path = dir.join("done.csv");
        if let Ok(f) = File::open(&done_path) {
            for line in BufReader::new(f).lines().map_while(std::result::Result::ok) {
                let parts: Vec<&str> = line.split(',').collect();
                if let [q, s, g] = parts[..]
                    && let (Ok(q), Ok(s)) = (q.parse(), s.parse())
                {
                    done.insert((q, s, g.to_string()));
                }
            }
        }
        let mut z = BTreeMap::new();
        if let Ok(f) = File::open(dir.join("logz.csv")) {
            let mut rdr = BufReader::new(f);
            let mut header = String::new();
            let _ = rdr.read_line(&mut header);
            for line in rdr.lines().map_while(std::result::Result::ok) {
                let p: Vec<&str> = line.split(',').collect();
                if let [q, lz, op, rp, k] = p[..]
                    && let (Ok(q), Ok(lz), Ok(op), Ok(rp), Ok(k)) =
                        (q.parse(), lz.parse(), op.parse(), rp.parse(), k.parse())
                {
                    z.insert(
                        q,
                        ZEstimate {
                            query_id: q,
                            log_z: lz,
                            opt_proxy: op,
                            ref_proxy: rp,
                            samples: k,
                        },
                    );
                }
            }
        }
        let store = Self {
            dir: dir.to_path_buf(),
            done,
            z,
        };
        store.drop_unfinished_rows()?;
        Ok(store)
    }

    fn drop_unfinished_rows(&self) -> Result<()> {
        let path = self.dir.join("results.csv");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(());
        };
        let mut lines = text.lines();
        let Some(header) = lines.next() else {
            return Ok(());
        };
        let mut kept = vec![header.to_string()];
        let mut dropped = 0;
        for line in lines {
            let p: Vec<&str> = line.splitn(4, ',').collect();
            let key = match p[..] {
                [q, s, g, _] => q
                    .parse()
                    .ok()
                    .zip(s.parse().ok())
                    .map(|(q, s)| (q, s, g.to_string())),
                _ => None,
            };
            if key.is_some_and(|k| self.done.contains(&k)) {
                kept.push(line.to_string());
            } else {
                dropped += 1;
            }
        }
        if dropped > 0 {
            tracing::info!(dropped, "dropping rows of unfinished instances");
            write_atomic(&path, (kept.join("\n") + "\n").as_bytes())?;
        }
        Ok(())
    }

    /// Whether an instance is finished.
    pub fn is_done(&self, query_id: u32, seed: u64, generator: Generator) -> bool {
        self.done
            .contains(&(query_id, seed, generator_name(generator).to_string()))
    }

    /// The stored `Ẑ` of a query.
    pub fn z(&self, query_id: u32) -> Option<ZEstimate> {
        self.z.get(&query_id).copied()
    }

    /// Stores a query's `Ẑ`.
    ///
    /// # Errors
    /// I/O errors.
    pub fn put_z(&mut self, z: ZEstimate) -> Result<()> {
        let path = self.dir.join("logz.csv");
        if !path.exists() {
            append_line(&path, LOGZ_HEADER)?;
        }
        append_line(
            &path,
            &format!(
                "{},{},{},{},{}\n",
                z.query_id, z.log_z, z.opt_proxy, z.ref_proxy, z.samples
            ),
        )?;
        self.z.insert(z.query_id, z);
        Ok(())
    }

    /// Appends an instance's rows, then records it as done.
    ///
    /// # Errors
    /// I/O errors.
    pub fn put_instance(
        &mut self,
        query_id: u32,
        seed: u64,
        generator: Generator,
        rows: &[Row],
    ) -> Result<()> {
        let path = self.dir.join("results.csv");
        let new = !path.exists();
        let mut w = csv_writer(new);
        for r in rows {
            w.push_str(&csv_line(r));
        }
        append_line(&path, &w)?;
        let g = generator_name(generator);
        append_line(
            &self.dir.join("done.csv"),
            &format!("{query_id},{seed},{g}\n"),
        )?;
        self.done.insert((query_id, seed, g.to_string()));
        Ok(())
    }

    /// Finished instances.
    pub fn done_count(&self) -> usize {
        self.done.len()
    }
}

/// The header of `logz.csv`.
const LOGZ_HEADER: &str = "query_id,log_z,opt_proxy,ref_proxy,samples\n";

/// The CSV header.
pub const CSV_HEADER: &str = "query_id,seed,generator,m,agent,agent_name,winner,logprob_opt_reply,expected_logprob_opt,log_z,opt_proxy,ref_proxy,reward_with,reward_without,n_without,reward_gain,payment,payment_no_offset,utility_gain,utility_gain_no_offset,revenue,revenue_no_offset,mentioned";

fn csv_writer(with_header: bool) -> String {
    if with_header {
        format!("{CSV_HEADER}\n")
    } else {
        String::new()
    }
}

fn csv_line(r: &Row) -> String {
    format!(
        "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
        r.query_id,
        r.seed,
        r.generator,
        r.m,
        r.agent,
        r.agent_name.replace(',', " "),
        r.winner,
        r.logprob_opt_reply,
        r.expected_logprob_opt,
        r.log_z,
        r.opt_proxy,
        r.ref_proxy,
        r.reward_with,
        r.reward_without,
        r.n_without,
        r.reward_gain,
        r.payment,
        r.payment_no_offset,
        r.utility_gain,
        r.utility_gain_no_offset,
        r.revenue,
        r.revenue_no_offset,
        u8::from(r.mentioned),
    )
}

/// Parses `results.csv` back into rows.
///
/// # Errors
/// [`EngineError::Auction`] for a malformed file.
pub fn read_rows(path: &Path) -> Result<Vec<Row>> {
    let bad = |m: String| EngineError::Auction {
        field: "results".into(),
        message: format!("{}: {m}", path.display()),
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    // A torn last line (a crash mid-write, before the store repaired it) is not a row.
    let whole = match text.rfind('\n') {
        Some(i) if !text.ends_with('\n') => &text[..=i],
        _ => text.as_str(),
    };
    let mut lines = whole.lines();
    if lines.next() != Some(CSV_HEADER) {
        return Err(bad("unexpected header".into()));
    }
    lines
        .enumerate()
        .map(|(k, line)| {
            let p: Vec<&str> = line.split(',').collect();
            if p.len() != 23 {
                return Err(bad(format!("line {}: {} fields", k + 2, p.len())));
            }
            let f = |i: usize| {
                p[i].parse::<f64>()
                    .map_err(|_| bad(format!("line {}: field {} is not a number", k + 2, i + 1)))
            };
            let u = |i: usize| {
                p[i].parse::<u64>()
                    .map_err(|_| bad(format!("line {}: field {} is not an integer", k + 2, i + 1)))
            };
            Ok(Row {
                query_id: u(0)? as u32,
                seed: u(1)?,
                generator: p[2].to_string(),
                m: u(3)? as usize,
                agent: u(4)? as usize,
                agent_name: p[5].to_string(),
                winner: u(6)? as usize,
                logprob_opt_reply: f(7)?,
                expected_logprob_opt: f(8)?,
                log_z: f(9)?,
                opt_proxy: f(10)?,
                ref_proxy: f(11)?,
                reward_with: f(12)?,
                reward_without: f(13)?,
                n_without: u(14)? as usize,
                reward_gain: f(15)?,
                payment: f(16)?,
                payment_no_offset: f(17)?,
                utility_gain: f(18)?,
                utility_gain_no_offset: f(19)?,
                revenue: f(20)?,
                revenue_no_offset: f(21)?,
                mentioned: u(22)? == 1,
            })
        })
        .collect()
}

/// Writes a file atomically: a temporary file in the same directory, flushed, then renamed.
///
/// # Errors
/// I/O errors.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
    f.write_all(bytes).map_err(|e| io_err(&tmp, e))?;
    f.sync_all().map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
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
