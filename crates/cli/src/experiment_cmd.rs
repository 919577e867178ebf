//! `llm-auction experiment {mosaic, plot, token-sweep}`: the papers' experiments.

use crate::auction_cmd::EngineArgs;
use crate::common::{ModelArgs, OnBackend, bar, load_model, on_device};
use crate::models::{ModelsArgs, Serving, build_registry};
use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use llm_auction_engine::experiment::{
    ExperimentConfig, ExperimentModels, Store, load_instances, run_experiment,
};
use llm_auction_engine::lm::LanguageModel;
use llm_auction_engine::lm::local::EngineModel;
use llm_auction_engine::models_file::DEFAULT_ENTRY;
use llm_auction_engine::mosaic::{Generator, Importance};
use llm_auction_engine::token_auction::{Agent, SweepConfig};
use llm_auction_model::atomic_file::write_atomic;
use llm_auction_model::backend::ModelBackend;
use std::path::PathBuf;
use std::sync::Arc;

/// The experiment subcommands.
#[derive(Debug, Subcommand)]
pub enum ExperimentCommand {
    /// Run (or resume) the MOSAIC grid: one auction per query, seed and generator.
    Mosaic(MosaicExperimentArgs),
    /// Draw the figures and print the summary of a run.
    Plot(PlotArgs),
    /// The token auction's two-advertiser λ sweep, written as markdown.
    TokenSweep(TokenSweepArgs),
}

/// `experiment mosaic`.
#[derive(Debug, Args)]
pub struct MosaicExperimentArgs {
    /// The data set.
    #[arg(long, default_value = "data/instances.json")]
    instances: PathBuf,
    /// Use the first K queries (default: 10; 50 with --full).
    #[arg(long)]
    queries: Option<usize>,
    /// Seeds per query (default: 3; 25 with --full).
    #[arg(long)]
    seeds: Option<u64>,
    /// Candidate counts evaluated, comma-separated (the largest is generated once).
    #[arg(long, value_delimiter = ',')]
    m: Vec<usize>,
    /// Generators compared.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "context-aware,reference"
    )]
    generator: Vec<Generator>,
    /// Tokens per candidate.
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Reference samples per query for the estimate of log Z.
    #[arg(long, default_value_t = 32)]
    z_samples: usize,
    /// Importance weights: `proposal` (log π_ref − log q, q the tempered proposal actually sampled
    /// from) or `raw` (the untempered generator, as the paper's formula is written; no weights for
    /// the reference generator). A run directory holds one choice.
    #[arg(long, value_enum, default_value = "proposal")]
    importance: Importance,
    /// Every advertiser's τ_i in Eq. 11 (r_i = τ_i log(π_i/π_ref)), in the auctions and the estimate
    /// of log Z.
    #[arg(long, default_value_t = 1.0)]
    tau_i: f64,
    /// The paper's grid: 50 queries × 25 seeds, M up to 20 (a GPU job).
    #[arg(long)]
    full: bool,
    /// Start afresh instead of resuming (fails if DIR already holds results).
    #[arg(long)]
    no_resume: bool,
    /// Output directory (results.csv, done.csv, logz.csv, config.json).
    #[arg(long)]
    out: PathBuf,
    /// The models-file entry of the reference LLM π_ref.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_ENTRY)]
    reference: String,
    /// The models-file entry of the context-aware generator π_gen.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_ENTRY)]
    generator_model: String,
    /// The models-file entry of every advertiser's LLM.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_ENTRY)]
    advertiser_model: String,
    #[command(flatten)]
    models: ModelsArgs,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    model: ModelArgs,
}

/// `experiment plot`.
#[derive(Debug, Args)]
pub struct PlotArgs {
    /// A run directory of `experiment mosaic`.
    dir: PathBuf,
}

/// `experiment token-sweep`.
#[derive(Debug, Args)]
pub struct TokenSweepArgs {
    /// The query.
    #[arg(long, default_value = "Vacations in Hawaii")]
    query: String,
    /// The two agents, as "Name: description" (bids come from λ).
    #[arg(long = "agent", value_name = "NAME: DESCRIPTION")]
    agents: Vec<String>,
    /// Points of the sweep.
    #[arg(long, default_value_t = 6)]
    k: usize,
    /// Tokens per auction.
    #[arg(long, default_value_t = 40)]
    max_new_tokens: usize,
    /// Stable-sampling seed shared by every point.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output directory (token-auction-demo.md).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    model: ModelArgs,
}

/// Runs an experiment subcommand.
pub fn run(cmd: ExperimentCommand, quiet: bool) -> Result<()> {
    match cmd {
        ExperimentCommand::Mosaic(a) => {
            let device = a.model.device;
            on_device(device, MosaicCmd(a, quiet))
        }
        ExperimentCommand::Plot(a) => {
            let summary = crate::plot::plot(&a.dir)?;
            outln!("{}", crate::plot::markdown(&summary));
            eprintln!("figures in {}", a.dir.join("figures").display());
            Ok(())
        }
        ExperimentCommand::TokenSweep(a) => {
            let device = a.model.device;
            on_device(device, SweepCmd(a, quiet))
        }
    }
}

struct MosaicCmd(MosaicExperimentArgs, bool);

impl OnBackend for MosaicCmd {
    type Output = ();
    fn run<B: ModelBackend>(self, device: &B::Device) -> Result<()> {
        let MosaicCmd(a, quiet) = self;
        let mut cfg = if a.full {
            ExperimentConfig::full()
        } else {
            ExperimentConfig::cpu()
        };
        if let Some(q) = a.queries {
            cfg.queries = q;
        }
        if let Some(s) = a.seeds {
            cfg.seeds = s;
        }
        if !a.m.is_empty() {
            let mut ms = a.m.clone();
            ms.sort_unstable();
            ms.dedup();
            if ms[0] == 0 {
                bail!("--m: candidate counts must be at least 1");
            }
            cfg.ms = ms;
        }
        cfg.generators = a.generator.clone();
        cfg.max_new_tokens = a.max_new_tokens;
        cfg.z_samples = a.z_samples.max(1);
        cfg.importance = a.importance;
        if !(a.tau_i.is_finite() && a.tau_i > 0.0) {
            bail!("--tau-i: must be finite and > 0, got {}", a.tau_i);
        }
        cfg.advertiser_tau = a.tau_i;
        if cfg.queries == 0 || cfg.seeds == 0 || cfg.generators.is_empty() {
            bail!("--queries, --seeds and --generator must be non-empty");
        }
        let instances = load_instances(&a.instances)?;
        let mut store = Store::open(&a.out, &cfg, !a.no_resume)?;
        let wanted = vec![
            ("reference".to_string(), a.reference.clone()),
            ("generator".to_string(), a.generator_model.clone()),
            ("advertisers".to_string(), a.advertiser_model.clone()),
        ];
        let registry = build_registry::<B>(
            &a.models,
            &wanted,
            &a.model,
            a.engine.config(),
            device,
            quiet,
            Serving::PerSession,
        )?;
        let models = ExperimentModels {
            reference: registry.get(&a.reference)?,
            generator: registry.get(&a.generator_model)?,
            advertiser: registry.get(&a.advertiser_model)?,
        };
        let total = cfg.queries.min(instances.len()) * cfg.seeds as usize * cfg.generators.len();
        let pb = bar(total as u64, "instances", quiet);
        if store.done_count() > 0 {
            eprintln!(
                "resuming: {} of {total} instances already done",
                store.done_count().min(total)
            );
            // Start the bar at the finished count so that the ETA is not skewed by the jump.
            pb.set_position(store.done_count().min(total) as u64);
            pb.reset_eta();
        }
        run_experiment(
            &models,
            &instances,
            &cfg,
            &mut store,
            &mut |done, _, what| {
                pb.set_position(done as u64);
                pb.set_message(what.to_string());
                tracing::info!(done, total, what, "experiment progress");
            },
        )?;
        pb.finish_and_clear();
        eprintln!(
            "{total} instances in {}; draw the figures with `llm-auction experiment plot {}`",
            a.out.display(),
            a.out.display()
        );
        Ok(())
    }
}

struct SweepCmd(TokenSweepArgs, bool);

impl OnBackend for SweepCmd {
    type Output = ();
    fn run<B: ModelBackend>(self, device: &B::Device) -> Result<()> {
        let SweepCmd(a, quiet) = self;
        let specs = if a.agents.is_empty() {
            vec![
                "Alpha Airlines: an airline with direct flights to Hawaii".to_string(),
                "Beta Resort: a beachfront resort on Maui".to_string(),
            ]
        } else {
            a.agents.clone()
        };
        let agents = specs
            .iter()
            .map(|s| Agent::parse(&format!("{s}: 1")))
            .collect::<Result<Vec<_>, _>>()?;
        if agents.len() != 2 {
            bail!("--agent: the sweep needs exactly two agents");
        }
        let model = EngineModel::new(
            DEFAULT_ENTRY,
            Arc::new(load_model::<B>(&a.model, device, quiet)?),
            a.engine.config(),
        );
        let sweep = SweepConfig {
            points: a.k,
            max_new_tokens: a.max_new_tokens,
            seed: a.seed,
        };
        let rows = crate::sweep::run(
            &[&model as &dyn LanguageModel, &model],
            &a.query,
            &agents,
            sweep,
            quiet,
        )?;
        let mut md = format!(
            "# Token auction: the two-advertiser λ sweep\n\nGenerated by `llm-auction experiment token-sweep --k {} --max-new-tokens {} --seed {}` with the model `{}`.\n\nQuery: \"{}\". Agent 1: {} ({}); agent 2: {} ({}). Each agent is the model with the system message \"Write an ad for <name>, <description>.\". Bids are `(λ, 1 − λ)`; every row uses the same stable-sampling seed (common random numbers), so the text changes only where the bids move the draw. Linear aggregation charges second price (critical bids, summed over tokens); log-linear charges first price (each agent pays its bid per token), since it has no stable sampler over a large vocabulary.\n\n",
            a.k,
            a.max_new_tokens,
            a.seed,
            model.model().path().file_name().map_or_else(
                || model.model().path().display().to_string(),
                |n| n.to_string_lossy().into_owned()
            ),
            a.query,
            agents[0].name,
            agents[0].description,
            agents[1].name,
            agents[1].description
        );
        md.push_str(&crate::sweep::tables(&agents, &rows));
        std::fs::create_dir_all(&a.out)?;
        let path = a.out.join("token-auction-demo.md");
        write_atomic(&path, md.as_bytes())?;
        outln!("{md}");
        eprintln!("written to {}", path.display());
        Ok(())
    }
}
