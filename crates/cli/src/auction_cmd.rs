//! `mosaic` and `token-auction`: the two auctions on the model, end to end.

use crate::common::{ModelArgs, OnBackend, bar, on_device};
use crate::models::{ModelsArgs, Serving, build_registry, per_name, roles_of};
use anyhow::{Result, bail};
use clap::Args;
use llm_auction_engine::engine::EngineConfig;
use llm_auction_engine::models_file::DEFAULT_ENTRY;
use llm_auction_engine::mosaic::{
    Advertiser, Generator, Importance, MosaicConfig, MosaicModels, MosaicReport, Phase, run_mosaic,
};
use llm_auction_engine::token_auction::{
    Agent, SweepConfig, TokenAuctionConfig, TokenAuctionReport, run_token_auction,
};
use llm_auction_mechanism::aggregate::Aggregation;
use llm_auction_mechanism::token_auction::PaymentRule;
use llm_auction_model::backend::ModelBackend;

/// Scheduler limits shared by the auction commands.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Most tokens per forward pass.
    #[arg(long, default_value_t = 512)]
    pub token_budget: usize,
    /// Most sequences decoded together.
    #[arg(long, default_value_t = 64)]
    pub max_seqs: usize,
    /// KV blocks of 16 tokens (memory: ~0.75 MB per block for the default model).
    #[arg(long, default_value_t = 1024)]
    pub kv_blocks: usize,
    /// Turn off prefix sharing between sequences with equal prompts.
    #[arg(long)]
    pub no_prefix_cache: bool,
}

impl EngineArgs {
    /// The engine configuration.
    pub fn config(&self) -> EngineConfig {
        EngineConfig {
            token_budget: self.token_budget,
            max_seqs: self.max_seqs,
            block_size: 16,
            num_blocks: self.kv_blocks,
            prefix_caching: !self.no_prefix_cache,
        }
    }
}

/// `llm-auction mosaic`.
#[derive(Debug, Args)]
pub struct MosaicArgs {
    /// The user's query.
    #[arg(long)]
    query: String,
    /// An advertiser, as "Name: description" (repeat for each).
    #[arg(long = "advertiser", value_name = "NAME: DESCRIPTION", required = true)]
    advertisers: Vec<String>,
    /// Number of candidate replies M.
    #[arg(short = 'M', long = "m", default_value_t = 8)]
    m: usize,
    /// The platform's weight τ of the KL term (> 0).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    tau: f64,
    /// Per-advertiser τ_i, comma-separated (default: 1 for all).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    tau_i: Vec<f64>,
    /// Sampling temperature of the generator.
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
    temperature: f64,
    /// Top-p of the generator.
    #[arg(long, default_value_t = 0.95, allow_negative_numbers = true)]
    top_p: f64,
    /// Most tokens per candidate.
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Seed of the candidates and of the draw.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where candidates come from.
    #[arg(long, value_enum, default_value = "context-aware")]
    generator: Generator,
    /// Which generator log-probability enters the importance weights (see docs/mechanisms.md).
    #[arg(long, value_enum, default_value = "proposal")]
    importance: Importance,
    /// Drop the agent-specific payment offset (Eq. 13).
    #[arg(long)]
    no_offset: bool,
    /// Print the full report as JSON.
    #[arg(long)]
    json: bool,
    /// The models-file entry of the reference LLM π_ref (default: "default").
    #[arg(long, value_name = "NAME", default_value = DEFAULT_ENTRY)]
    reference: String,
    /// The models-file entry of the context-aware generator π_gen (default: "default").
    #[arg(long, value_name = "NAME", default_value = DEFAULT_ENTRY)]
    generator_model: String,
    /// An advertiser's LLM, as "Advertiser=NAME" (repeat; default: "default").
    #[arg(long = "advertiser-model", value_name = "ADVERTISER=NAME")]
    advertiser_models: Vec<String>,
    #[command(flatten)]
    models: ModelsArgs,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    model: ModelArgs,
}

fn print_mosaic(r: &MosaicReport) -> Result<()> {
    outln!("{}", r.reply.trim());
    outln!();
    outln!(
        "{:<20} {:>10} {:>16} {:>10} {:>10}",
        "advertiser",
        "reward",
        "expected reward",
        "payment",
        "utility"
    );
    for a in &r.results {
        outln!(
            "{:<20} {:>10.3} {:>16.3} {:>10.4} {:>10.3}",
            a.name,
            a.reward,
            a.expected_reward,
            a.payment,
            a.utility
        );
    }
    outln!("revenue: {:.4}", r.revenue);
    outln!(
        "candidate {} of {} (π = {:.3}); {:.1} s: generation {:.0} tok/s, scoring {:.0} tok/s",
        r.winner + 1,
        r.candidates.len(),
        r.allocation[r.winner],
        r.timings.total_seconds,
        r.timings.generation_tokens_per_second,
        r.timings.scoring_tokens_per_second,
    );
    Ok(())
}

/// Runs `mosaic`.
pub fn mosaic(args: MosaicArgs, quiet: bool) -> Result<()> {
    struct Cmd(MosaicArgs, bool);
    impl OnBackend for Cmd {
        type Output = ();
        fn run<B: ModelBackend>(self, device: &B::Device) -> Result<()> {
            let Cmd(a, quiet) = self;
            let ads = a
                .advertisers
                .iter()
                .map(|s| Advertiser::parse(s))
                .collect::<Result<Vec<_>, _>>()?;
            let cfg = MosaicConfig {
                m: a.m,
                tau: a.tau,
                tau_i: a.tau_i.clone(),
                temperature: a.temperature,
                top_p: a.top_p,
                max_new_tokens: a.max_new_tokens,
                seed: a.seed,
                generator: a.generator,
                importance: a.importance,
                offset: !a.no_offset,
            };
            if a.m == 0 {
                bail!("-M: at least one candidate is needed");
            }
            let names: Vec<&str> = ads.iter().map(|x| x.name.as_str()).collect();
            let adv_entries = per_name(
                "--advertiser-model",
                &a.advertiser_models,
                &names,
                DEFAULT_ENTRY,
            )?;
            let mut wanted = vec![
                ("reference".to_string(), a.reference.clone()),
                ("generator".to_string(), a.generator_model.clone()),
            ];
            wanted.extend(roles_of("advertiser", &names, &adv_entries));
            let registry = build_registry::<B>(
                &a.models,
                &wanted,
                &a.model,
                a.engine.config(),
                device,
                quiet,
                Serving::PerSession,
            )?;
            let models = MosaicModels {
                reference: registry.get(&a.reference)?,
                generator: registry.get(&a.generator_model)?,
                advertisers: adv_entries
                    .iter()
                    .map(|e| registry.get(e))
                    .collect::<Result<_, _>>()?,
            };
            let gen_bar = bar(
                a.m.saturating_mul(a.max_new_tokens) as u64,
                "generating",
                quiet,
            );
            let score_bar = bar(1, "scoring", quiet);
            let report =
                run_mosaic(
                    &models,
                    &a.query,
                    &ads,
                    &cfg,
                    &mut |phase, done, total| match phase {
                        Phase::Generating => gen_bar.set_position(done as u64),
                        Phase::Candidate { .. } => {}
                        Phase::Scoring => {
                            gen_bar.finish_and_clear();
                            score_bar.set_length(total as u64);
                            score_bar.set_position(done as u64);
                        }
                    },
                )?;
            gen_bar.finish_and_clear();
            score_bar.finish_and_clear();
            if a.json {
                outln!("{}", serde_json::to_string(&report)?);
            } else {
                print_mosaic(&report)?;
            }
            Ok(())
        }
    }
    let device = args.model.device;
    on_device(device, Cmd(args, quiet))
}

/// `llm-auction token-auction`.
#[derive(Debug, Args)]
pub struct TokenAuctionArgs {
    /// The user's query.
    #[arg(long)]
    query: String,
    /// An agent, as "Name: description: bid" (repeat for each).
    #[arg(long = "agent", value_name = "NAME: DESCRIPTION: BID", required = true)]
    agents: Vec<String>,
    /// A system prompt replacing "Write an ad for NAME, DESCRIPTION." (repeat, in agent order).
    #[arg(long = "agent-prompt", value_name = "TEXT")]
    agent_prompts: Vec<String>,
    /// How bids weight the agents' distributions.
    #[arg(long, value_enum, default_value = "linear")]
    aggregation: Aggregation,
    /// How agents pay per token.
    #[arg(long, value_enum, default_value = "second-price")]
    payment: PaymentRule,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 48)]
    max_new_tokens: usize,
    /// Seed of the stable sampling stream.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The two-advertiser demonstration: relative bid λ from 0 to 1 in K steps, both aggregations.
    #[arg(long, value_name = "K")]
    lambda_sweep: Option<usize>,
    /// Print the full report as JSON.
    #[arg(long)]
    json: bool,
    /// An agent's LLM, as "Agent=NAME" (repeat; default: "default"). Agents on different models
    /// must share one tokenizer.
    #[arg(long = "agent-model", value_name = "AGENT=NAME")]
    agent_models: Vec<String>,
    #[command(flatten)]
    models: ModelsArgs,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    model: ModelArgs,
}

fn print_token(r: &TokenAuctionReport) -> Result<()> {
    outln!("{}", r.text.trim());
    outln!();
    outln!(
        "{:<20} {:>8} {:>12} {:>8}",
        "agent",
        "bid",
        "total paid",
        "tokens won"
    );
    for (i, a) in r.agents.iter().enumerate() {
        let won = r.steps.iter().filter(|s| s.winner == Some(i)).count();
        outln!(
            "{:<20} {:>8.3} {:>12.4} {:>8}",
            a.name,
            a.bid,
            r.total_payments[i],
            won
        );
    }
    outln!("{} tokens in {:.1} s", r.steps.len(), r.seconds);
    Ok(())
}

/// Runs `token-auction`.
pub fn token_auction(args: TokenAuctionArgs, quiet: bool) -> Result<()> {
    struct Cmd(TokenAuctionArgs, bool);
    impl OnBackend for Cmd {
        type Output = ();
        fn run<B: ModelBackend>(self, device: &B::Device) -> Result<()> {
            let Cmd(a, quiet) = self;
            let mut agents = a
                .agents
                .iter()
                .map(|s| Agent::parse(s))
                .collect::<Result<Vec<_>, _>>()?;
            if a.agent_prompts.len() > agents.len() {
                bail!(
                    "--agent-prompt: {} prompts for {} agents",
                    a.agent_prompts.len(),
                    agents.len()
                );
            }
            for (agent, p) in agents.iter_mut().zip(&a.agent_prompts) {
                agent.system_prompt = Some(p.clone());
            }
            let cfg = TokenAuctionConfig {
                aggregation: a.aggregation,
                payment: a.payment,
                max_new_tokens: a.max_new_tokens,
                seed: a.seed,
            };
            let names: Vec<&str> = agents.iter().map(|x| x.name.as_str()).collect();
            let entries = per_name("--agent-model", &a.agent_models, &names, DEFAULT_ENTRY)?;
            let registry = build_registry::<B>(
                &a.models,
                &roles_of("agent", &names, &entries),
                &a.model,
                a.engine.config(),
                device,
                quiet,
                Serving::PerSession,
            )?;
            let models = entries
                .iter()
                .map(|e| registry.get(e))
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(k) = a.lambda_sweep {
                let cfg = SweepConfig {
                    points: k,
                    max_new_tokens: a.max_new_tokens,
                    seed: a.seed,
                };
                let rows = crate::sweep::run(&models, &a.query, &agents, cfg, quiet)?;
                if a.json {
                    outln!("{}", serde_json::to_string(&rows)?);
                } else {
                    outln!(
                        "Bids λ for {}, 1 − λ for {}.\n\n{}",
                        agents[0].name,
                        agents[1].name,
                        crate::sweep::tables(&agents, &rows)
                    );
                }
                return Ok(());
            }
            let pb = bar(a.max_new_tokens as u64, "decoding", quiet);
            let report = run_token_auction(&models, &a.query, &agents, &cfg, &mut |d, _| {
                pb.set_position(d as u64)
            })?;
            pb.finish_and_clear();
            if a.json {
                outln!("{}", serde_json::to_string(&report)?);
            } else {
                print_token(&report)?;
            }
            Ok(())
        }
    }
    let device = args.model.device;
    on_device(device, Cmd(args, quiet))
}
