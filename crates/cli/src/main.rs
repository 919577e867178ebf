//! `llm-auction`: the command-line front end. It owns user interaction (parsing, progress bars,
//! printing, exit codes); the libraries return typed errors and log with `tracing` (`RUST_LOG`).
//! Every failure is printed as one line on stderr and exits with status 1 (2 for usage errors, as
//! clap does).

/// `println!` for the command's output on stdout: a write error (a closed pipe, a full disk) returns
/// it from the enclosing function as an `anyhow::Error`, where `println!` would panic. `main` ends
/// quietly on a broken pipe, as Unix tools do (`llm-auction ... | head`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            return Err(e.into());
        }
    }};
}

mod auction_cmd;
mod bench;
mod common;
mod experiment_cmd;
mod mechanism;
mod model_cmd;
mod models;
mod plot;
mod serve;
mod sweep;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Auctions over what an LLM writes: the token auction (Duetting et al.) and MOSAIC (Soumalias,
/// Curry, Seuken), on a Llama model in burn.
#[derive(Debug, Parser)]
#[command(name = "llm-auction", version, about)]
struct Cli {
    /// No progress bars.
    #[arg(long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The mechanisms as JSON filters: one JSON object on stdin (or --input), one on stdout.
    #[command(subcommand)]
    Mechanism(mechanism::MechanismCommand),
    /// Token ids of a text.
    Tokenize(model_cmd::TokenizeArgs),
    /// Log-probabilities of a continuation after a prompt.
    Score(model_cmd::ScoreArgs),
    /// Sample a continuation.
    Generate(model_cmd::GenerateArgs),
    /// A MOSAIC auction: candidate replies, advertiser rewards, truthful payments.
    Mosaic(auction_cmd::MosaicArgs),
    /// A token auction: agents' distributions aggregated by bids, token by token.
    TokenAuction(auction_cmd::TokenAuctionArgs),
    /// The papers' experiments: the MOSAIC grid, its figures, the token-auction sweep.
    #[command(subcommand)]
    Experiment(experiment_cmd::ExperimentCommand),
    /// Manage the default model.
    #[command(subcommand)]
    Model(model_cmd::ModelCommand),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The auctions as an HTTP service: JSON API, Server-Sent Events, metrics, a web playground.
    Serve(serve::ServeArgs),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Tokens per second of the forward pass (prefill and decode).
    Model(bench::BenchModelArgs),
    /// One MOSAIC auction through the scheduler and naively; prints both times and the ratio.
    Engine(bench::BenchEngineArgs),
    /// The HTTP service under load: concurrent MOSAIC auctions against the same run one by one.
    Serve(serve::bench::BenchServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("RUST_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let quiet = cli.quiet;
    let result = match cli.command {
        Command::Mechanism(cmd) => mechanism::run(cmd),
        Command::Tokenize(args) => model_cmd::tokenize(args, quiet),
        Command::Score(args) => model_cmd::score_cmd(args, quiet),
        Command::Generate(args) => model_cmd::generate_cmd(args, quiet),
        Command::Model(cmd) => model_cmd::run(cmd, quiet),
        Command::Mosaic(args) => auction_cmd::mosaic(args, quiet),
        Command::Experiment(cmd) => experiment_cmd::run(cmd, quiet),
        Command::TokenAuction(args) => auction_cmd::token_auction(args, quiet),
        Command::Bench(BenchCommand::Engine(args)) => bench::bench_engine(args, quiet),
        Command::Bench(BenchCommand::Model(args)) => bench::bench_model(args, quiet),
        Command::Bench(BenchCommand::Serve(args)) => serve::bench::bench_serve(args),
        Command::Serve(args) => serve::serve(args),
    };
    let result = result.and_then(|()| {
        use std::io::Write as _;
        std::io::stdout().flush().map_err(anyhow::Error::from)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
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

/// Whether `e` is (or was caused by) a write to a pipe whose reader has gone.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
