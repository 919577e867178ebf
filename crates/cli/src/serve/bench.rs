//! `llm-auction bench serve`: the service under load. A server starts in-process on 127.0.0.1 with
//! the shared engine; N clients post MOSAIC auctions at once (bounded in count and time); then the
//! same auctions (a prefix of them, `--sequential`) run one after another through the same server
//! and engine. Reported: auctions per minute of both, their ratio (measured in the same run),
//! latency p50/p99 under load, failed or dropped auctions, and whether every report is
//! self-consistent (its payments recomputed by the mechanism from its rewards and weights).

use super::{Limits, bind, load, router};
use crate::auction_cmd::EngineArgs;
use crate::common::{ModelArgs, OnBackend, on_device};
use crate::models::ModelsArgs;
use anyhow::{Context, Result, bail};
use clap::Args;
use llm_auction_mechanism::mosaic::{Mosaic, RewardMatrix, importance_weights};
use llm_auction_model::backend::ModelBackend;
use serde::Serialize;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// `llm-auction bench serve`.
#[derive(Debug, Args)]
pub struct BenchServeArgs {
    /// Concurrent auctions (one client each).
    #[arg(long, default_value_t = 100)]
    auctions: usize,
    /// Of those, how many run again one after another (the baseline).
    #[arg(long, default_value_t = 100)]
    sequential: usize,
    /// Candidates per auction.
    #[arg(short = 'M', long = "m", default_value_t = 4)]
    m: usize,
    /// New tokens per candidate.
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    /// Seconds the whole benchmark may take (clients give up after it).
    #[arg(long, default_value_t = 1800.0)]
    time_limit_s: f64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    model: ModelArgs,
}

/// One phase's figures.
#[derive(Debug, Serialize)]
struct Phase {
    auctions: usize,
    failed: usize,
    inconsistent: usize,
    seconds: f64,
    auctions_per_minute: f64,
    latency_p50_s: f64,
    latency_p99_s: f64,
    /// Useful work of the phase's forward passes, in GFLOP (`Llama::flops`).
    gflop: f64,
    /// That work at the GEMM peak measured before the runs (native CPU pass only).
    seconds_at_peak: Option<f64>,
}

fn body(k: usize, m: usize, tokens: usize) -> String {
    const QUERIES: [&str; 4] = [
        "How do I bake cookies?",
        "What should I cook for dinner tonight?",
        "How can I keep my kitchen clean?",
        "Which cake is easiest for a beginner?",
    ];
    json!({
        "query": QUERIES[k % QUERIES.len()],
        "advertisers": [
            "EasyBake: producing baking ingredients",
            "KitchenFix: producing kitchen appliances",
        ],
        "m": m,
        "max_new_tokens": tokens,
        "seed": k,
    })
    .to_string()
}

/// Whether a report's allocation and payments are what the mechanism computes from its rewards
/// and importance weights (relative 1e-9).
fn consistent(r: &Value) -> bool {
    let check = || -> Option<bool> {
        let cands = r["candidates"].as_array()?;
        let n = r["advertisers"].as_array()?.len();
        let rows: Vec<Vec<f64>> = (0..n)
            .map(|i| cands.iter().map(|c| c["rewards"][i].as_f64()).collect())
            .collect::<Option<_>>()?;
        let log_ref: Vec<f64> = cands
            .iter()
            .map(|c| c["log_ref"].as_f64())
            .collect::<Option<_>>()?;
        let log_q: Vec<f64> = cands
            .iter()
            .map(|c| c["log_q"].as_f64())
            .collect::<Option<_>>()?;
        let lw = importance_weights(&log_ref, &log_q, cands.len()).ok()?;
        let out = Mosaic::new(r["config"]["tau"].as_f64()?)
            .ok()?
            .with_offset(r["config"]["offset"].as_bool()?)
            .run(&RewardMatrix::from_rows(&rows).ok()?, Some(&lw))
            .ok()?;
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
        let results = r["results"].as_array()?;
        let pay_ok = results
            .iter()
            .zip(&out.payments)
            .all(|(x, p)| x["payment"].as_f64().is_some_and(|v| close(v, *p)));
        let alloc_ok = r["allocation"]
            .as_array()?
            .iter()
            .zip(&out.allocation)
            .all(|(x, a)| x.as_f64().is_some_and(|v| close(v, *a)));
        Some(pay_ok && alloc_ok && r["revenue"].as_f64().is_some_and(|v| close(v, out.revenue)))
    };
    check().unwrap_or(false)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// One posted auction: its latency, and its report when it came back.
type Posted = (f64, Option<Value>);

/// Posts one auction.
fn post(url: &str, body: &str, timeout: Duration) -> Posted {
    let t = Instant::now();
    let report = ureq::post(url)
        .timeout(timeout)
        .send_string(body)
        .ok()
        .and_then(|resp| resp.into_string().ok())
        .and_then(|s| serde_json::from_str::<Value>(&s).ok());
    (t.elapsed().as_secs_f64(), report)
}

/// The reply, the winner and the payments of a report (compared bit for bit).
fn outcome(r: &Value) -> Value {
    let payments: Vec<&Value> = r["results"]
        .as_array()
        .map(|a| a.iter().map(|x| &x["payment"]).collect())
        .unwrap_or_default();
    json!({ "reply": r["reply"], "winner": r["winner"], "payments": payments })
}

fn phase(posted: &[Posted], seconds: f64, flops: u64, peak: Option<f64>) -> Phase {
    let results: Vec<(f64, Option<bool>)> = posted
        .iter()
        .map(|(t, r)| (*t, r.as_ref().map(consistent)))
        .collect();
    let mut lat: Vec<f64> = results.iter().map(|r| r.0).collect();
    lat.sort_by(f64::total_cmp);
    Phase {
        auctions: results.len(),
        failed: results.iter().filter(|r| r.1.is_none()).count(),
        inconsistent: results.iter().filter(|r| r.1 == Some(false)).count(),
        seconds,
        auctions_per_minute: results.len() as f64 * 60.0 / seconds,
        latency_p50_s: percentile(&lat, 0.5),
        latency_p99_s: percentile(&lat, 0.99),
        gflop: flops as f64 / 1e9,
        seconds_at_peak: crate::bench::seconds_at_peak(flops, peak),
    }
}

/// Runs `bench serve`.
pub fn bench_serve(args: BenchServeArgs) -> Result<()> {
    struct Cmd(BenchServeArgs);
    impl OnBackend for Cmd {
        type Output = ();
        fn run<B: ModelBackend>(self, device: &B::Device) -> Result<()> {
            let Cmd(a) = self;
            if a.auctions == 0 || a.sequential > a.auctions {
                bail!("--sequential: must be at most --auctions (and --auctions at least 1)");
            }
            let limits = Limits {
                max_body_bytes: 1 << 20,
                max_m: a.m,
                max_new_tokens: a.max_new_tokens,
                max_advertisers: 2,
                max_queue: a.auctions,
                deadline_s: a.time_limit_s,
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let started = rt.block_on(bind("127.0.0.1:0".parse()?, limits, None))?;
            let (addr, state) = (started.addr, started.state.clone());
            load::<B>(
                &state,
                &ModelsArgs { file: None },
                &a.model,
                &a.engine,
                device,
            )?;
            let registry = state.registry.get().context("the models did not load")?;
            let served = registry.served();
            let flops = || served.iter().map(|m| m.flops()).sum::<u64>();
            let peak = crate::bench::gemm_peak_gflops(
                !served.is_empty() && served.iter().all(|m| m.batch_invariant()),
            );
            let app = router(state.clone());
            let server = rt.spawn(async move { axum::serve(started.listener, app).await });
            let url = format!("http://{addr}/v1/mosaic");
            let limit = Duration::from_secs_f64(a.time_limit_s);
            let bodies: Vec<String> = (0..a.auctions)
                .map(|k| body(k, a.m, a.max_new_tokens))
                .collect();
            let (f, t) = (flops(), Instant::now());
            let posted: Vec<Posted> = std::thread::scope(|s| {
                let hs: Vec<_> = bodies
                    .iter()
                    .map(|b| s.spawn(|| post(&url, b, limit)))
                    .collect();
                hs.into_iter()
                    .map(|h| h.join().unwrap_or((f64::NAN, None)))
                    .collect()
            });
            let concurrent = phase(&posted, t.elapsed().as_secs_f64(), flops() - f, peak);
            let (f, t) = (flops(), Instant::now());
            let left = |t: &Instant| limit.saturating_sub(t.elapsed());
            let alone: Vec<Posted> = bodies[..a.sequential]
                .iter()
                .map(|b| post(&url, b, left(&t).max(Duration::from_secs(1))))
                .collect();
            let sequential = phase(&alone, t.elapsed().as_secs_f64(), flops() - f, peak);
            // The same seed alone and beside 99 other auctions: rows batched with others may
            // differ in the last bits of f32, which can move a payment's last digits or a draw.
            let identical = posted
                .iter()
                .zip(&alone)
                .filter(|(c, s)| match (&c.1, &s.1) {
                    (Some(c), Some(s)) => outcome(c) == outcome(s),
                    _ => false,
                })
                .count();
            server.abort();
            let ratio = concurrent.auctions_per_minute / sequential.auctions_per_minute;
            // The most batching could give: the concurrent work done at the GEMM peak.
            let ratio_at_bound = concurrent
                .seconds_at_peak
                .map(|b| concurrent.auctions as f64 * 60.0 / b / sequential.auctions_per_minute);
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            if a.json {
                outln!(
                    "{}",
                    json!({
                        "m": a.m, "max_new_tokens": a.max_new_tokens, "threads": threads,
                        "concurrent": concurrent, "sequential": sequential,
                        "throughput_ratio": ratio, "gemm_peak_gflops": peak,
                        "throughput_ratio_at_bound": ratio_at_bound,
                        "identical_alone_and_concurrent": identical,
                    })
                );
            } else {
                outln!(
                    "bench serve: MOSAIC, M = {}, {} new tokens, 2 advertisers; {threads} threads",
                    a.m,
                    a.max_new_tokens
                );
                for (name, p) in [("concurrent", &concurrent), ("sequential", &sequential)] {
                    outln!(
                        "{name:<11} {:>4} auctions in {:>7.1} s: {:>6.1} auctions/min; latency p50 \
                         {:.1} s, p99 {:.1} s; failed {}, inconsistent {}",
                        p.auctions,
                        p.seconds,
                        p.auctions_per_minute,
                        p.latency_p50_s,
                        p.latency_p99_s,
                        p.failed,
                        p.inconsistent
                    );
                }
                for (name, p) in [("concurrent", &concurrent), ("sequential", &sequential)] {
                    match (peak, p.seconds_at_peak) {
                        (Some(peak), Some(b)) => outln!(
                            "{name:<11} {:.0} GFLOP of forward passes; at the measured GEMM peak \
                             of {peak:.1} GFLOP/s that is {b:.1} s, the phase took {:.2}x that",
                            p.gflop,
                            p.seconds / b
                        ),
                        _ => outln!("{name:<11} {:.0} GFLOP of forward passes", p.gflop),
                    }
                }
                outln!("throughput ratio (concurrent / sequential): {ratio:.2}x");
                if let Some(r) = ratio_at_bound {
                    outln!(
                        "the concurrent work at the GEMM peak would be {r:.2}x the sequential rate \
                         (the most batching across auctions can give here)"
                    );
                }
                outln!(
                    "reply, winner and payments bit-identical alone and under load: {identical} of {}",
                    a.sequential
                );
            }
            let bad = concurrent.failed
                + concurrent.inconsistent
                + sequential.failed
                + sequential.inconsistent;
            if bad > 0 {
                bail!("{bad} auctions failed or came back inconsistent");
            }
            Ok(())
        }
    }
    let device = args.model.device;
    on_device(device, Cmd(args))
}
