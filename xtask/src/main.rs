//! Project automation. `cargo xtask verify [--cases N]` runs the mechanism crate's property proofs
//! (`crates/mechanism/tests/lemmas`) in release mode with `N` base cases and prints one row per
//! property of `math.md` §3: id, property, source, cases, result. It exits non-zero if any property
//! fails or is missing. `cargo xtask bench-peers` measures our forward pass beside llama.cpp
//! (`peers.rs`).

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::collections::BTreeMap;
use std::process::{Command, ExitCode};
use std::time::Instant;

mod peers;

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every property proof with many cases and print a table.
    Verify {
        /// Base number of proptest cases per property (statistical properties run a fraction).
        #[arg(long, default_value_t = 10_000)]
        cases: u32,
        /// Proptest RNG seed (default: the fixed seed in the test suite).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Our forward pass side by side with llama.cpp on this machine (docs/performance.md): builds
    /// llama.cpp's benchmarks once into target/peers, then interleaves the runs and prints a table.
    BenchPeers {
        /// Rounds of (llama.cpp, ours native, ours burn).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Threads for llama.cpp (ours uses every core).
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Do not rebuild our release binary first.
        #[arg(long)]
        skip_build: bool,
    },
}

/// One row of the report.
#[derive(Default)]
struct Row {
    property: String,
    source: String,
    cases: u32,
    tests: Vec<(String, bool)>,
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<bool> {
    match Cli::parse().command {
        Cmd::Verify { cases, seed } => verify(cases, seed),
        Cmd::BenchPeers {
            rounds,
            threads,
            skip_build,
        } => peers::bench_peers(peers::Options {
            rounds: rounds.max(1),
            threads,
            skip_build,
        })
        .map(|()| true),
    }
}

/// `M02` / `m2` / `T10` → `M2` / `M2` / `T10`; `None` for names that are not property ids.
fn property_id(test_fn: &str) -> Option<String> {
    let head = test_fn.split('_').next()?;
    let (letter, digits) = head.split_at(1);
    let letter = letter.to_ascii_uppercase();
    if !(letter == "M" || letter == "T") || digits.is_empty() {
        return None;
    }
    let n: u32 = digits.parse().ok()?;
    Some(format!("{letter}{n}"))
}

fn sort_key(id: &str) -> (char, u32) {
    let (l, n) = id.split_at(1);
    (
        l.chars().next().unwrap_or('Z'),
        n.parse().unwrap_or(u32::MAX),
    )
}

fn verify(cases: u32, seed: Option<u64>) -> Result<bool> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "test",
        "--release",
        "-p",
        "llm-auction-mechanism",
        "--test",
        "lemmas",
    ])
    .args(["--", "--nocapture", "--test-threads", "2"])
    .env("LLM_AUCTION_CASES", cases.to_string())
    .env_remove("PROPTEST_CASES");
    match seed {
        Some(s) => cmd.env("PROPTEST_RNG_SEED", s.to_string()),
        None => cmd.env_remove("PROPTEST_RNG_SEED"),
    };
    eprintln!("xtask verify: {cases} base cases per property (release build; this takes a while)");
    let start = Instant::now();
    let out = cmd.output().context("failed to run cargo test")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);

    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for line in stderr.lines() {
        let Some(pos) = line.find("@@prop|") else {
            continue;
        };
        let parts: Vec<&str> = line[pos + 7..].splitn(4, '|').collect();
        if let [id, n, property, source] = parts[..] {
            let row = rows.entry(id.to_string()).or_default();
            row.cases = n.parse().unwrap_or(0);
            row.property = property.to_string();
            row.source = source.to_string();
        }
    }
    let mut stray_failures = Vec::new();
    for line in stdout.lines() {
        let Some(rest) = line.trim_start().strip_prefix("test ") else {
            continue;
        };
        let Some((name, result)) = rest.split_once(" ... ") else {
            continue;
        };
        let passed = match result.trim() {
            "ok" => true,
            r if r.starts_with("FAILED") => false,
            _ => continue,
        };
        let test_fn = name.rsplit("::").next().unwrap_or(name);
        match property_id(test_fn) {
            Some(id) => rows
                .entry(id)
                .or_default()
                .tests
                .push((name.to_string(), passed)),
            None if !passed => stray_failures.push(name.to_string()),
            None => {}
        }
    }
    if rows.is_empty() {
        eprintln!("{stdout}\n{stderr}");
        bail!("no property results were found; did the test binary build?");
    }

    let mut ids: Vec<&String> = rows.keys().collect();
    ids.sort_by_key(|id| sort_key(id));
    println!(
        "{:<4} {:<46} {:<28} {:>7}  result",
        "id", "property", "source", "cases"
    );
    println!("{}", "-".repeat(96));
    let mut all_ok = out.status.success() && stray_failures.is_empty();
    for id in ids {
        let row = &rows[id];
        let result = if row.tests.is_empty() {
            all_ok = false;
            "MISSING (no test ran)"
        } else if row.property.is_empty() {
            all_ok = false;
            "MISSING (not in catalog)"
        } else if row.tests.iter().all(|t| t.1) {
            "pass"
        } else {
            all_ok = false;
            "FAIL"
        };
        println!(
            "{:<4} {:<46} {:<28} {:>7}  {}",
            id, row.property, row.source, row.cases, result
        );
    }
    println!("{}", "-".repeat(96));
    for name in &stray_failures {
        println!("failed (not a property): {name}");
    }
    let passed = rows
        .values()
        .filter(|r| !r.tests.is_empty() && r.tests.iter().all(|t| t.1))
        .count();
    println!(
        "{passed} of {} properties pass ({:.0} s)",
        rows.len(),
        start.elapsed().as_secs_f64()
    );
    if !all_ok {
        // Show the failing tests' output (proptest prints the minimal failing input there).
        for block in stdout.split("\n---- ").skip(1) {
            println!(
                "---- {}",
                block.lines().take(30).collect::<Vec<_>>().join("\n")
            );
        }
        if !out.status.success() && stdout.trim().is_empty() {
            println!("{stderr}");
        }
    }
    Ok(all_ok)
}
