//! `llm-auction mechanism {mosaic, token}`: the mechanism crate as JSON filters. The input and output
//! shapes are a stable interface (other tools depend on them); see README.md.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use llm_auction_mechanism::aggregate::{Aggregation, Bids};
use llm_auction_mechanism::dist::from_prob_rows;
use llm_auction_mechanism::mosaic::{Mosaic, MosaicOutcome, RewardMatrix, draw_winner};
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

/// Output of `mechanism mosaic`: every field of the outcome, and the drawn candidate when seeded.
#[derive(Debug, Serialize)]
struct MosaicOut {
    #[serde(flatten)]
    outcome: MosaicOutcome,
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
    let out = Mosaic::new(input.tau)?
        .with_offset(input.offset)
        .run_from_logprobs(&rewards, input.log_ref.as_deref(), input.log_gen.as_deref())?;
    let winner = input
        .seed
        .map(|s| draw_winner(&out.allocation, &mut rng_from_seed(s)));
    Ok(MosaicOut {
        outcome: out,
        winner,
    })
}

fn token(input: TokenIn) -> Result<TokenOut> {
    let dists = from_prob_rows(input.distributions, "distributions")?;
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
