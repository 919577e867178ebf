//! `llm-auction bench model`: tokens per second of the forward pass on the chosen model and device,
//! for the workloads of `docs/performance.md`: prefill of one 512-token prompt, prefill of 16
//! prompts of 128 tokens in one packed pass, and decoding with batch 1 and batch 16 (after 128-token
//! prompts). Each figure is the median over repeats; the machine's thread count is printed with it.

use crate::common::{ModelArgs, OnBackend, load_model, on_device};
use anyhow::Result;
use clap::Args;
use llm_auction_model::Llama;
use llm_auction_model::backend::ModelBackend;
use llm_auction_model::batch::ForwardBatch;
use llm_auction_model::logits::logits_to_host;
use serde::Serialize;
use std::time::Instant;

/// `llm-auction bench model`.
#[derive(Debug, Args)]
pub struct BenchModelArgs {
    /// Repeats per workload (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Decoding steps timed per decode workload.
    #[arg(long, default_value_t = 32)]
    decode_steps: usize,
    /// Run only the workloads whose name contains this string (e.g. "decode").
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    model: ModelArgs,
}

/// One measured workload.
#[derive(Debug, Serialize)]
pub struct Measurement {
    /// Workload name.
    pub workload: String,
    /// Tokens processed per timed unit.
    pub tokens: usize,
    /// Median seconds per timed unit.
    pub median_seconds: f64,
    /// `tokens / median_seconds`.
    pub tokens_per_second: f64,
}

/// Deterministic, text-like token ids (avoid the 17 control tokens).
fn ids(n: usize, seed: usize, vocab: usize) -> Vec<u32> {
    (0..n)
        .map(|k| (17 + (k * 7919 + seed * 104_729) % (vocab.min(20_000) - 17)) as u32)
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Packed prefill of `seqs` prompts of `len` tokens each into a fresh cache; returns the cache,
/// the block tables and the elapsed seconds (the logits of each last row are read back).
fn prefill<B: ModelBackend>(
    llama: &Llama<B>,
    seqs: usize,
    len: usize,
    extra: usize,
) -> Result<(llm_auction_model::kv::KvCache<B>, Vec<Vec<u32>>, f64)> {
    let bs = 16;
    let per = (len + extra).div_ceil(bs);
    let mut cache = llama.new_cache(seqs * per * bs)?;
    let vocab = llama.config().vocab_size;
    let mut b = ForwardBatch {
        block_size: bs,
        seq_starts: vec![0],
        ..Default::default()
    };
    for s in 0..seqs {
        b.tokens.extend(ids(len, s, vocab));
        b.positions.extend(0..len as u32);
        b.seq_starts.push(b.tokens.len());
        b.block_tables
            .push((0..per as u32).map(|k| s as u32 * per as u32 + k).collect());
        b.logits_rows.push(b.tokens.len() - 1);
    }
    let start = Instant::now();
    logits_to_host(llama.forward(&b, &mut cache)?)?;
    let secs = start.elapsed().as_secs_f64();
    Ok((cache, b.block_tables, secs))
}

fn decode<B: ModelBackend>(
    llama: &Llama<B>,
    batch: usize,
    prompt: usize,
    steps: usize,
) -> Result<Vec<f64>> {
    let (mut cache, tables, _) = prefill(llama, batch, prompt, steps)?;
    let vocab = llama.config().vocab_size;
    let mut times = Vec::with_capacity(steps);
    for step in 0..steps {
        let pos = (prompt + step) as u32;
        let b = ForwardBatch {
            tokens: (0..batch).map(|s| ids(1, s + step, vocab)[0]).collect(),
            positions: vec![pos; batch],
            seq_starts: (0..=batch).collect(),
            block_size: 16,
            block_tables: tables.clone(),
            logits_rows: (0..batch).collect(),
        };
        let start = Instant::now();
        logits_to_host(llama.forward(&b, &mut cache)?)?;
        times.push(start.elapsed().as_secs_f64());
    }
    Ok(times)
}

/// Runs the four workloads on a loaded network.
///
/// # Errors
/// Forward errors.
pub fn run_workloads<B: ModelBackend>(
    llama: &Llama<B>,
    repeats: usize,
    steps: usize,
    only: Option<&str>,
) -> Result<Vec<Measurement>> {
    let repeats = repeats.max(1);
    let steps = steps.max(2);
    let m = |workload: &str, tokens: usize, secs: f64| Measurement {
        workload: workload.to_string(),
        tokens,
        median_seconds: secs,
        tokens_per_second: tokens as f64 / secs,
    };
    prefill(llama, 1, 64, 0)?; // warm-up
    let selected = |name: &str| only.is_none_or(|o| name.contains(o));
    let mut out = Vec::new();
    for (name, seqs, len) in [("prefill 1x512", 1, 512), ("prefill 16x128", 16, 128)] {
        if selected(name) {
            let t: Vec<f64> = (0..repeats)
                .map(|_| prefill(llama, seqs, len, 0).map(|r| r.2))
                .collect::<Result<_>>()?;
            out.push(m(name, seqs * len, median(t)));
        }
    }
    for (name, batch) in [("decode batch 1", 1), ("decode batch 16", 16)] {
        if selected(name) {
            out.push(m(name, batch, median(decode(llama, batch, 128, steps)?)));
        }
    }
    Ok(out)
}

/// Runs `bench model`.
pub fn bench_model(args: BenchModelArgs, quiet: bool) -> Result<()> {
    struct Cmd(BenchModelArgs, bool);
    impl OnBackend for Cmd {
        type Output = ();
        fn run<B: ModelBackend>(self, device: &B::Device) -> Result<()> {
            let Cmd(args, quiet) = self;
            let model = load_model::<B>(&args.model, device, quiet)?;
            let threads = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
            let backend = B::name(device);
            let results = run_workloads(
                &model.llama,
                args.repeats,
                args.decode_steps,
                args.only.as_deref(),
            )?;
            if args.json {
                let v = serde_json::json!({ "backend": backend, "threads": threads, "model": model.path(), "results": results });
                outln!("{v}");
            } else {
                outln!(
                    "model {} on {backend} ({threads} threads)",
                    model.path().display()
                );
                outln!(
                    "{:<18} {:>8} {:>12} {:>10}",
                    "workload",
                    "tokens",
                    "median s",
                    "tok/s"
                );
                for r in &results {
                    outln!(
                        "{:<18} {:>8} {:>12.4} {:>10.1}",
                        r.workload,
                        r.tokens,
                        r.median_seconds,
                        r.tokens_per_second
                    );
                }
            }
            Ok(())
        }
    }
    let device = args.model.device;
    on_device(device, Cmd(args, quiet))
}

/// `llm-auction bench engine`.
#[derive(Debug, Args)]
pub struct BenchEngineArgs {
    /// Candidates M.
    #[arg(short = 'M', long = "m", default_value_t = 16)]
    m: usize,
    /// Tokens per candidate.
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Compare the local scheduled run with every role on this models-file entry (instead of the
    /// naive baseline).
    #[arg(long, value_name = "ENTRY", requires = "file")]
    remote: Option<String>,
    #[command(flatten)]
    models: crate::models::ModelsArgs,
    #[command(flatten)]
    engine: crate::auction_cmd::EngineArgs,
    #[command(flatten)]
    model: ModelArgs,
}

/// The GEMM peak in GFLOP/s, measured now, when the models run the native CPU pass (`native`: the
/// pass whose kernel `measured_peak_gflops` measures); `None` on the other passes. Measured before
/// a benchmark's runs, it bounds each run's time from below.
pub(crate) fn gemm_peak_gflops(native: bool) -> Option<f64> {
    native.then(llm_auction_model::cpu::kernels::measured_peak_gflops)
}

/// Seconds that `flops` useful operations (`Llama::flops`) take at `peak` GFLOP/s.
pub(crate) fn seconds_at_peak(flops: u64, peak: Option<f64>) -> Option<f64> {
    peak.map(|p| flops as f64 / (p * 1e9))
}

/// Runs `bench engine`: the same MOSAIC auction through the scheduler and naively.
pub fn bench_engine(args: BenchEngineArgs, quiet: bool) -> Result<()> {
    struct Cmd(BenchEngineArgs, bool);
    impl OnBackend for Cmd {
        type Output = ();
        fn run<B: ModelBackend>(self, device: &B::Device) -> Result<()> {
            use llm_auction_engine::lm::LanguageModel;
            use llm_auction_engine::lm::local::{EngineModel, NaiveModel};
            use llm_auction_engine::models_file::DEFAULT_ENTRY;
            use llm_auction_engine::mosaic::{Advertiser, MosaicConfig, MosaicModels, run_mosaic};
            let Cmd(a, quiet) = self;
            let model = std::sync::Arc::new(load_model::<B>(&a.model, device, quiet)?);
            let counted = model.clone();
            let peak = gemm_peak_gflops(counted.llama.batch_invariant());
            let scheduled = EngineModel::new(DEFAULT_ENTRY, model.clone(), a.engine.config());
            let naive = NaiveModel::new(DEFAULT_ENTRY, model);
            let remote = match &a.remote {
                Some(entry) => Some(crate::models::build_registry::<B>(
                    &a.models,
                    &[("every role".to_string(), entry.clone())],
                    &a.model,
                    a.engine.config(),
                    device,
                    quiet,
                    crate::models::Serving::PerSession,
                )?),
                None => None,
            };
            let other: &dyn LanguageModel = match (&remote, &a.remote) {
                (Some(r), Some(entry)) => r.get(entry)?,
                _ => &naive,
            };
            let other_name = a.remote.clone().unwrap_or_else(|| "naive".into());
            let query = "How do I bake cookies?";
            let ads = vec![
                Advertiser::parse("EasyBake: producing baking ingredients")?,
                Advertiser::parse("KitchenFix: producing kitchen appliances")?,
            ];
            // A remote generator that cannot report log q is compared under the raw weights.
            let importance = if other.info().proposal_logprobs {
                llm_auction_engine::mosaic::Importance::Proposal
            } else {
                llm_auction_engine::mosaic::Importance::Raw
            };
            let cfg = MosaicConfig {
                m: a.m,
                max_new_tokens: a.max_new_tokens,
                seed: a.seed,
                importance,
                ..MosaicConfig::default()
            };
            let run = |lm: &dyn LanguageModel| -> Result<(f64, llm_auction_engine::mosaic::MosaicReport)> {
                let start = Instant::now();
                let models = MosaicModels::single(lm, ads.len());
                let r = run_mosaic(&models, query, &ads, &cfg, &mut |_, _, _| {})?;
                Ok((start.elapsed().as_secs_f64(), r))
            };
            let flops_before = counted.llama.flops();
            let (t_sched, sched) = run(&scheduled)?;
            let flops = counted.llama.flops() - flops_before;
            let bound = seconds_at_peak(flops, peak);
            let (t_naive, naive) = run(other)?;
            let same = sched
                .candidates
                .iter()
                .zip(&naive.candidates)
                .filter(|(x, y)| x.tokens == y.tokens)
                .count();
            let max_dp = sched
                .results
                .iter()
                .zip(&naive.results)
                .map(|(x, y)| (x.payment - y.payment).abs())
                .fold(0.0, f64::max);
            let generated = sched.timings.generated_tokens;
            if a.json {
                let v = serde_json::json!({
                    "m": a.m, "max_new_tokens": a.max_new_tokens, "scheduled_seconds": t_sched,
                    "other": other_name, "other_seconds": t_naive,
                    "speedup": t_naive / t_sched, "generated_tokens": generated,
                    "scheduled": sched.timings, "other_timings": naive.timings, "engine": sched.engine,
                    "identical_candidates": same, "max_payment_difference": max_dp,
                    "importance": cfg.importance,
                    "scheduled_flops": flops, "gemm_peak_gflops": peak,
                    "seconds_at_peak": bound, "scheduled_over_bound": bound.map(|b| t_sched / b),
                });
                outln!("{v}");
            } else {
                outln!(
                    "MOSAIC auction, M = {}, 2 advertisers, up to {} new tokens ({} generated)",
                    a.m,
                    a.max_new_tokens,
                    generated
                );
                outln!(
                    "{:<12} {:>10} {:>16} {:>16}",
                    "execution",
                    "seconds",
                    "generation tok/s",
                    "scoring tok/s"
                );
                for (name, t, r) in [
                    ("scheduled", t_sched, &sched),
                    (other_name.as_str(), t_naive, &naive),
                ] {
                    outln!(
                        "{:<12} {:>10.2} {:>16.1} {:>16.1}",
                        name,
                        t,
                        r.timings.generation_tokens_per_second,
                        r.timings.scoring_tokens_per_second
                    );
                }
                outln!("{other_name} / scheduled: {:.2}x", t_naive / t_sched);
                match (peak, bound) {
                    (Some(p), Some(b)) => outln!(
                        "scheduled auction: {:.1} GFLOP of forward passes; at the measured GEMM peak of {p:.1} GFLOP/s that is {b:.2} s, the run took {:.2}x that",
                        flops as f64 / 1e9,
                        t_sched / b
                    ),
                    _ => outln!(
                        "scheduled auction: {:.1} GFLOP of forward passes",
                        flops as f64 / 1e9
                    ),
                }
                outln!(
                    "engine: {} passes, {} tokens computed, {} KV blocks reused from the prefix cache, {} preemptions",
                    sched.engine.passes,
                    sched.engine.tokens,
                    sched.engine.cache_hit_blocks,
                    sched.engine.preemptions
                );
                outln!(
                    "same candidates in both runs: {same}/{}; largest payment difference {max_dp:.2e}",
                    a.m
                );
            }
            Ok(())
        }
    }
    let device = args.model.device;
    on_device(device, Cmd(args, quiet))
}
