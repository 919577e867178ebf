//! Writes a tiny random Llama (the test fixture of `llm_auction_model::testing`) as a GGUF file,
//! for test suites outside Rust (the Python package's pytest):
//!
//! ```text
//! cargo run -p llm-auction-model --example tiny_model -- PATH [SEED]
//! ```

use llm_auction_model::config::LlamaConfig;
use llm_auction_model::testing::{random_weights, tiny_config, write_gguf};
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next().map(PathBuf::from) else {
        eprintln!("usage: tiny_model PATH [SEED]");
        return ExitCode::FAILURE;
    };
    let seed = match args.next().map(|s| s.parse::<u64>()) {
        None => 2,
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            eprintln!("SEED: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A context long enough for an auction's prompts (the advertisers' system turns).
    let cfg = LlamaConfig {
        max_position: 512,
        ..tiny_config()
    };
    write_gguf(&path, &cfg, &random_weights(&cfg, seed, false));
    ExitCode::SUCCESS
}
