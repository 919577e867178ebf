//! `llm-auction mechanism {mosaic, token}`: the mechanism crate as JSON filters. The input and output
//! shapes are a stable interface (other tools depend on them); see README.md.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use llm_auction_mechanism::aggregate::{Aggregation, Bids};
use llm_auction_mechanism::dist::Distribution;
use llm_auction_mechanism::mosaic::{Mosaic, RewardMatrix, draw_winner, importance_weights};
use llm_auction_mechanism::rng::rng_from_seed;
use llm_auction_mechanism::token_auction::{PaymentRule, TokenAuction};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::PathBuf;

/// The mechanism subcommands.
#[derive(Debug, Subcommand)]
pub enum MechanismCommand {
    /// MOSAIC on a reward matrix: allocation, payments, utilities (Soumalias et al., Eq. 8-13).
    Mosaic(InputArgs),
    /// One token-auction step: aggregate, stable sampling, payments (Duetting et al.).
    Token(InputArgs),
}

/// Where the JSON input comes from.
#[derive(Debug, Args)]
pub struct InputArgs {
    /// Read the JSON object from this file instead of stdin.
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
}

/// Input of `mechanism mosaic`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MosaicIn {
    rewards: Vec<Vec<f64>>,
    tau: f64,
    log_ref: Option<Vec<f64>>,
    log_gen: Option<Vec<f64>>,
    #[serde(default = "default_true")]
    offset: bool,
    seed: Option<u64>,
}

fn default_true() -> bool {
    true
}

/// Output of `mechanism mosaic`.
#[derive(Debug, Serialize)]
struct MosaicOut {
    allocation: Vec<f64>,
    payments: Vec<f64>,
    utilities: Vec<f64>,
    expected_rewards: Vec<f64>,
    revenue: f64,
    allocation_without: Vec<Vec<f64>>,
    welfare: f64,
    welfare_without: Vec<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    winner: Option<usize>,
}

/// Input of `mechanism token`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenIn {
    distributions: Vec<Vec<f64>>,
    bids: Vec<f64>,
    aggregation: Aggregation,
    payment: PaymentRule,
    seed: u64,
}

/// Output of `mechanism token`.
#[derive(Debug, Serialize)]
struct TokenOut {
    aggregate: Vec<f64>,
    token: usize,
    payments: Vec<f64>,
    winner: Option<usize>,
    critical_bids: Option<Vec<Option<f64>>>,
}

/// `mechanism mosaic` on a JSON text: the output JSON.
///
/// # Errors
/// As the subcommand: a bad input names its field.
pub fn mosaic_json(text: &str) -> Result<String> {
    Ok(serde_json::to_string(&mosaic(parse_json(text)?)?)?)
}

/// `mechanism token` on a JSON text: the output JSON.
///
/// # Errors
/// As the subcommand: a bad input names its field.
pub fn token_json(text: &str) -> Result<String> {
    Ok(serde_json::to_string(&token(parse_json(text)?)?)?)
}

/// Runs one mechanism subcommand.
pub fn run(cmd: MechanismCommand) -> Result<()> {
    let out = match cmd {
        MechanismCommand::Mosaic(args) => serde_json::to_string(&mosaic(read_input(&args)?)?)?,
        MechanismCommand::Token(args) => serde_json::to_string(&token(read_input(&args)?)?)?,
    };
    println!("{out}");
    Ok(())
}

fn read_input<T: DeserializeOwned>(args: &InputArgs) -> Result<T> {
    let text = match &args.input {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("--input: cannot read {}", path.display()))?,
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("stdin: cannot read")?;
            s
        }
    };
    parse_json(&text)
}

/// Parses a JSON object; errors name the offending field (`"advertisers[1].name: ..."`).
///
/// # Errors
/// Invalid JSON, a missing or unknown field, a value of the wrong type.
pub fn parse_json<T: DeserializeOwned>(text: &str) -> Result<T> {
    let de = &mut serde_json::Deserializer::from_str(text);
    match serde_path_to_error::deserialize(de) {
        Ok(v) => Ok(v),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." || path == "?" {
                bail!("invalid JSON input: {inner}")
            }
            bail!("{path}: {inner}")
        }
    }
}

fn mosaic(input: MosaicIn) -> Result<MosaicOut> {
    let rewards = RewardMatrix::from_rows(&input.rewards)?;
    let mechanism = Mosaic::new(input.tau)?.with_offset(input.offset);
    let lw = match (&input.log_ref, &input.log_gen) {
        (Some(r), Some(g)) => Some(importance_weights(r, g, rewards.candidates())?),
        (None, None) => None,
        (Some(_), None) => bail!("log_gen: importance weights need both log_ref and log_gen"),
        (None, Some(_)) => bail!("log_ref: importance weights need both log_ref and log_gen"),
    };
    let out = mechanism.run(&rewards, lw.as_deref())?;
    let winner = input
        .seed
        .map(|s| draw_winner(&out.allocation, &mut rng_from_seed(s)));
    Ok(MosaicOut {
        allocation: out.allocation,
        payments: out.payments,
        utilities: out.utilities,
        expected_rewards: out.expected_rewards,
        revenue: out.revenue,
        allocation_without: out.allocation_without,
        welfare: out.welfare,
        welfare_without: out.welfare_without,
        winner,
    })
}

fn token(input: TokenIn) -> Result<TokenOut> {
    let dists = input
        .distributions
        .into_iter()
        .enumerate()
        .map(|(i, p)| Distribution::from_probs(p, &format!("distributions[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let bids = Bids::new(input.bids)?;
    let rule = TokenAuction::new(input.aggregation, input.payment);
    let out = rule.step(&dists, &bids, &mut rng_from_seed(input.seed))?;
    Ok(TokenOut {
        aggregate: out.aggregate.probs().to_vec(),
        token: out.token,
        payments: out.payments,
        winner: out.winner,
        critical_bids: out.critical_bids,
    })
}
