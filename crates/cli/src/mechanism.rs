//! `llm-auction mechanism {mosaic, token}`: the mechanism crate as JSON filters. The input and output
//! shapes are a stable interface (other tools depend on them); see README.md.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde::de::DeserializeOwned;
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

/// `mechanism mosaic` on a JSON text: the output JSON.
///
/// # Errors
/// As the subcommand: a bad input names its field.
pub fn mosaic_json(text: &str) -> Result<String> {
    Ok(llm_auction_mechanism::json::mosaic_json(text)?)
}

/// `mechanism token` on a JSON text: the output JSON.
///
/// # Errors
/// As the subcommand: a bad input names its field.
pub fn token_json(text: &str) -> Result<String> {
    Ok(llm_auction_mechanism::json::token_json(text)?)
}

/// Runs one mechanism subcommand.
pub fn run(cmd: MechanismCommand) -> Result<()> {
    let out = match cmd {
        MechanismCommand::Mosaic(args) => mosaic_json(&read_input(&args)?)?,
        MechanismCommand::Token(args) => token_json(&read_input(&args)?)?,
    };
    outln!("{out}");
    Ok(())
}

fn read_input(args: &InputArgs) -> Result<String> {
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
    Ok(text)
}

/// Parses exactly one JSON object; errors name the offending field (`"advertisers[1].name: ..."`).
///
/// # Errors
/// Invalid JSON, trailing text, a missing or unknown field, a value of the wrong type.
pub fn parse_json<T: DeserializeOwned>(text: &str) -> Result<T> {
    Ok(llm_auction_mechanism::json::parse(text)?)
}
