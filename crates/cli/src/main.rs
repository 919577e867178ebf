//! `llm-auction`: the command-line front end. It owns user interaction (parsing, printing, exit codes);
//! the libraries return typed errors. Every failure is printed as one line on stderr and exits with
//! status 1 (2 for command-line usage errors, as clap does).

mod mechanism;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Auctions over what an LLM writes: the token auction (Duetting et al.) and MOSAIC (Soumalias,
/// Curry, Seuken).
#[derive(Debug, Parser)]
#[command(name = "llm-auction", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The mechanisms as JSON filters: one JSON object on stdin (or --input), one on stdout.
    #[command(subcommand)]
    Mechanism(mechanism::MechanismCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Mechanism(cmd) => mechanism::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes, joined.
            let msg = e
                .chain()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(": ");
            eprintln!("error: {}", msg.replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
