//! `GET /metrics`: the service's counters in the Prometheus text format (auctions started,
//! finished, failed and cancelled by kind; auctions in flight; the auction latency histogram) and
//! each shared engine's live figures (queue depth, running sequences, tokens/s, step batch sizes).

use super::AppState;
use llm_auction_engine::lm::LanguageModel;
use llm_auction_engine::served::BATCH_BUCKETS;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// The two kinds of auction.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Mosaic,
    Token,
}

impl Kind {
    const ALL: [Kind; 2] = [Kind::Mosaic, Kind::Token];

    fn label(self) -> &'static str {
        match self {
            Kind::Mosaic => "mosaic",
            Kind::Token => "token",
        }
    }
}

/// How an auction ended.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    Finished,
    Failed,
    Cancelled,
}

/// Upper bounds (seconds) of the latency histogram's buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

#[derive(Default)]
struct PerKind {
    started: AtomicU64,
    finished: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
    /// Non-cumulative bucket counts; the last takes what exceeds every bound.
    latency: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_us: AtomicU64,
}

/// The service's counters.
#[derive(Default)]
pub(crate) struct Metrics {
    kinds: [PerKind; 2],
}

impl Metrics {
    fn of(&self, k: Kind) -> &PerKind {
        &self.kinds[k as usize]
    }

    /// An auction of `kind` started.
    pub(crate) fn started(&self, kind: Kind) {
        self.of(kind).started.fetch_add(1, Ordering::Relaxed);
    }

    /// An auction of `kind` ended after `seconds`.
    pub(crate) fn finished(&self, kind: Kind, how: Outcome, seconds: f64) {
        let k = self.of(kind);
        match how {
            Outcome::Finished => &k.finished,
            Outcome::Failed => &k.failed,
            Outcome::Cancelled => &k.cancelled,
        }
        .fetch_add(1, Ordering::Relaxed);
        let b = LATENCY_BUCKETS
            .iter()
            .position(|&u| seconds <= u)
            .unwrap_or(LATENCY_BUCKETS.len());
        k.latency[b].fetch_add(1, Ordering::Relaxed);
        k.latency_sum_us
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// The text format.
    pub(crate) fn render(&self, st: &AppState) -> String {
        let mut out = String::new();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for (name, help, get) in [
            (
                "llm_auction_auctions_started_total",
                "Auctions started.",
                (|k: &PerKind| &k.started) as fn(&PerKind) -> &AtomicU64,
            ),
            (
                "llm_auction_auctions_finished_total",
                "Auctions that produced a report.",
                |k: &PerKind| &k.finished,
            ),
            (
                "llm_auction_auctions_failed_total",
                "Auctions that ended with an error.",
                |k: &PerKind| &k.failed,
            ),
            (
                "llm_auction_auctions_cancelled_total",
                "Auctions cancelled (client gone, deadline passed, shutdown).",
                |k: &PerKind| &k.cancelled,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for k in Kind::ALL {
                let _ = writeln!(
                    out,
                    "{name}{{kind=\"{}\"}} {}",
                    k.label(),
                    load(get(self.of(k)))
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP llm_auction_auctions_in_flight Auctions queued or running.\n\
             # TYPE llm_auction_auctions_in_flight gauge\nllm_auction_auctions_in_flight {}",
            st.in_flight.load(Ordering::Relaxed)
        );
        let name = "llm_auction_auction_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Auction latency.\n# TYPE {name} histogram"
        );
        for k in Kind::ALL {
            let p = self.of(k);
            let mut cum = 0;
            for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
                cum += load(&p.latency[i]);
                let _ = writeln!(
                    out,
                    "{name}_bucket{{kind=\"{}\",le=\"{le}\"}} {cum}",
                    k.label()
                );
            }
            cum += load(&p.latency[LATENCY_BUCKETS.len()]);
            let _ = writeln!(
                out,
                "{name}_bucket{{kind=\"{}\",le=\"+Inf\"}} {cum}",
                k.label()
            );
            let _ = writeln!(
                out,
                "{name}_sum{{kind=\"{}\"}} {}\n{name}_count{{kind=\"{}\"}} {cum}",
                k.label(),
                load(&p.latency_sum_us) as f64 / 1e6,
                k.label()
            );
        }
        if let Some(reg) = st.registry.get() {
            engine_metrics(&mut out, reg);
        }
        out
    }
}

fn engine_metrics(out: &mut String, reg: &crate::models::Registry) {
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let served = reg.served();
    let gauges: [(&str, &str, &str); 6] = [
        (
            "llm_auction_engine_steps_total",
            "counter",
            "Forward passes of the shared engine.",
        ),
        (
            "llm_auction_engine_tokens_total",
            "counter",
            "Tokens computed by the shared engine.",
        ),
        (
            "llm_auction_engine_sampled_tokens_total",
            "counter",
            "Tokens sampled or decided.",
        ),
        (
            "llm_auction_engine_queue_depth",
            "gauge",
            "Requests waiting for admission.",
        ),
        (
            "llm_auction_engine_running_sequences",
            "gauge",
            "Sequences in the running batch.",
        ),
        (
            "llm_auction_engine_tokens_per_second",
            "gauge",
            "Tokens computed per second (last second or more).",
        ),
    ];
    for (i, (name, ty, help)) in gauges.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {ty}");
        for m in served {
            let g = m.gauges();
            let v = match i {
                0 => load(&g.steps).to_string(),
                1 => load(&g.tokens).to_string(),
                2 => load(&g.sampled).to_string(),
                3 => load(&g.waiting).to_string(),
                4 => load(&g.running_seqs).to_string(),
                _ => format!("{:.1}", g.tokens_per_second()),
            };
            let _ = writeln!(out, "{name}{{model=\"{}\"}} {v}", escape(&m.info().name));
        }
    }
    let name = "llm_auction_engine_step_batch_sequences";
    let _ = writeln!(
        out,
        "# HELP {name} Sequences per forward pass.\n# TYPE {name} histogram"
    );
    for m in served {
        let g = m.gauges();
        let model = escape(&m.info().name);
        let mut cum = 0;
        for (i, le) in BATCH_BUCKETS.iter().enumerate() {
            cum += load(&g.batch_hist[i]);
            let _ = writeln!(out, "{name}_bucket{{model=\"{model}\",le=\"{le}\"}} {cum}");
        }
        cum += load(&g.batch_hist[BATCH_BUCKETS.len()]);
        let _ = writeln!(out, "{name}_bucket{{model=\"{model}\",le=\"+Inf\"}} {cum}");
        let _ = writeln!(
            out,
            "{name}_sum{{model=\"{model}\"}} {}\n{name}_count{{model=\"{model}\"}} {cum}",
            load(&g.batch_sum)
        );
    }
}

/// A label value in the text format.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
