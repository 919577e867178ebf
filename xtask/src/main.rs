//! Project automation. `cargo xtask verify [--cases N] [--seed S]` runs the mechanism crate's
//! property proofs (`crates/mechanism/tests/lemmas`) in release mode with `N` base cases and prints
//! one row per property of `docs/mechanisms.md` §3: id, property, source, cases, result. The expected ids are
//! read from the proofs' catalog (`catalog.rs`); it exits non-zero, naming them, if any property
//! fails, did not run, or is not in the catalog. Without `--seed` every run draws a fresh proptest
//! seed and prints it, so a failure can be replayed with `--seed`; failing cases also persist in
//! `crates/mechanism/tests/lemmas/*.proptest-regressions`, replayed first by every later run.
//! `cargo xtask bench-peers` measures our forward pass beside llama.cpp (`peers.rs`).

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Instant, SystemTime};

mod peers;
mod tidy;

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
        /// Proptest RNG seed (default: a fresh random seed, printed so the run can be replayed).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Checks no compiler makes: cited docs and sections exist, the property catalog matches
    /// docs/mechanisms.md §3, source files stay small (`tidy.rs`).
    Tidy,
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
        Cmd::Tidy => {
            let problems = tidy::check(&tidy::repo_root());
            for p in &problems {
                eprintln!("{p}");
            }
            eprintln!("xtask tidy: {} problem(s)", problems.len());
            Ok(problems.is_empty())
        }
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

/// The proof suite's catalog of properties, the source of the expected ids.
const CATALOG_RS: &str = include_str!("../../crates/mechanism/tests/lemmas/catalog.rs");

/// The ids of the catalog's entries: the first string literal after each `p(` call.
fn catalog_ids(src: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut rest = src;
    while let Some(pos) = rest.find("p(") {
        rest = &rest[pos + 2..];
        let after = rest.trim_start();
        if let Some(lit) = after.strip_prefix('"')
            && let Some(end) = lit.find('"')
            && !lit[..end].is_empty()
            && lit[..end].is_ascii()
            && property_id(&lit[..end]).as_deref() == Some(&lit[..end])
        {
            ids.push(lit[..end].to_string());
        }
    }
    ids
}

/// A fresh seed: std's per-process random hasher keys, mixed with the clock.
fn fresh_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(now);
    h.write_u32(std::process::id());
    h.finish()
}

/// Where the proofs persist failing cases (`support::config`: next to each test source).
fn regressions_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/mechanism/tests/lemmas");
    std::fs::canonicalize(&dir).unwrap_or(dir)
}

/// `*.proptest-regressions` files in the proofs' directory with their sizes.
fn regression_files() -> BTreeMap<PathBuf, u64> {
    let Ok(dir) = std::fs::read_dir(regressions_dir()) else {
        return BTreeMap::new();
    };
    dir.filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "proptest-regressions"))
        .filter_map(|p| Some((p.clone(), std::fs::metadata(&p).ok()?.len())))
        .collect()
}

fn verify(cases: u32, seed: Option<u64>) -> Result<bool> {
    let expected = catalog_ids(CATALOG_RS);
    if expected.is_empty() {
        bail!("no property ids found in crates/mechanism/tests/lemmas/catalog.rs");
    }
    let seed = seed.unwrap_or_else(fresh_seed);
    let replay = format!("cargo xtask verify --cases {cases} --seed {seed}");
    let regressions_before = regression_files();
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
    .env("PROPTEST_RNG_SEED", seed.to_string())
    .env_remove("PROPTEST_CASES")
    .env_remove("PROPTEST_DISABLE_FAILURE_PERSISTENCE");
    eprintln!(
        "xtask verify: {cases} base cases per property, proptest seed {seed} (replay: {replay}); \
         release build, this takes a while"
    );
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
    // Every catalog id gets a row, so a property whose test did not run shows as MISSING.
    for id in &expected {
        rows.entry(id.clone()).or_default();
    }

    let mut ids: Vec<&String> = rows.keys().collect();
    ids.sort_by_key(|id| sort_key(id));
    println!(
        "{:<4} {:<46} {:<28} {:>7}  result",
        "id", "property", "source", "cases"
    );
    println!("{}", "-".repeat(96));
    let mut all_ok = out.status.success() && stray_failures.is_empty();
    let (mut missing, mut uncatalogued) = (Vec::new(), Vec::new());
    for id in ids {
        let row = &rows[id];
        let result = if row.tests.is_empty() {
            all_ok = false;
            missing.push(id.as_str());
            "MISSING (no test ran)"
        } else if !expected.contains(id) {
            all_ok = false;
            uncatalogued.push(id.as_str());
            "MISSING (not in catalog)"
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
        "{passed} of {} properties pass ({:.0} s, seed {seed})",
        rows.len(),
        start.elapsed().as_secs_f64()
    );
    if !missing.is_empty() {
        println!(
            "properties that did not run: {} (expected from catalog.rs: {})",
            missing.join(", "),
            expected.len()
        );
    }
    if !uncatalogued.is_empty() {
        println!(
            "tests named after ids that are not in catalog.rs: {}",
            uncatalogued.join(", ")
        );
    }
    let regressions_after = regression_files();
    let grown: Vec<&PathBuf> = regressions_after
        .iter()
        .filter(|(p, len)| regressions_before.get(*p).is_none_or(|before| before < len))
        .map(|(p, _)| p)
        .collect();
    for p in &grown {
        println!(
            "proptest saved failing seeds in {}: commit it, every later run replays them",
            p.display()
        );
    }
    if !all_ok {
        println!("replay this run: {replay}");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_ids_are_the_proofs_properties() {
        let ids = catalog_ids(CATALOG_RS);
        let expected: Vec<String> = (1..=18)
            .map(|k| format!("M{k}"))
            .chain((1..=15).map(|k| format!("T{k}")))
            .collect();
        assert_eq!(ids, expected);
        assert_eq!(
            catalog_ids("const fn p(id: &str) {}\n    p(\n        \"M2\",\n x)\n p(\"junk\")"),
            ["M2"]
        );
    }

    #[test]
    fn fresh_seeds_differ() {
        assert_ne!(fresh_seed(), fresh_seed());
    }
}
