//! `llm-auction serve` through the binary on 127.0.0.1 with a tiny random model: 100 concurrent
//! auctions (none dropped, every report self-consistent with the mechanism), the error answers
//! (400 naming the field, 404, 413, 429, 504), the API key, and a graceful shutdown on SIGTERM.

mod common;

use common::{Server, answer, run, tiny_model};
use serde_json::{Value, json};
use std::process::Command;
use std::time::{Duration, Instant};

fn mosaic_body(seed: u64, m: usize, tokens: usize) -> String {
    json!({
        "query": format!("Where should I eat tonight? ({seed})"),
        "advertisers": [
            {"name": "Luigi", "description": "a pizzeria"},
            "Burger Hub: a burger restaurant",
        ],
        "m": m,
        "max_new_tokens": tokens,
        "seed": seed,
    })
    .to_string()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// The report's allocation, payments, utilities and revenue equal what the mechanism computes from
/// its rewards and its importance weights (recomputed from `log_ref` and `log_q`).
fn check_consistent(r: &Value) {
    let cands = r["candidates"].as_array().unwrap();
    let n_ads = r["advertisers"].as_array().unwrap().len();
    let rows: Vec<Vec<f64>> = (0..n_ads)
        .map(|i| {
            cands
                .iter()
                .map(|c| c["rewards"][i].as_f64().unwrap())
                .collect()
        })
        .collect();
    let log_ref: Vec<f64> = cands
        .iter()
        .map(|c| c["log_ref"].as_f64().unwrap())
        .collect();
    let log_q: Vec<f64> = cands.iter().map(|c| c["log_q"].as_f64().unwrap()).collect();
    let lw: Vec<f64> = log_ref.iter().zip(&log_q).map(|(r, q)| r - q).collect();
    for (c, w) in cands.iter().zip(&lw) {
        let got = c["log_weight"].as_f64().unwrap();
        assert!(
            (got - w).abs() <= 1e-12 * w.abs().max(1.0),
            "log weight {got} vs {w}"
        );
    }
    let tau = r["config"]["tau"].as_f64().unwrap();
    assert_eq!(
        r["config"]["offset"], true,
        "the oracle is for the offset of Eq. 13"
    );
    // The allocation (Eq. 8) and the payments by an oracle that shares no code with the mechanism:
    // softmax written out here, payments from the Rochet envelope integral.
    let s: Vec<f64> = (0..cands.len())
        .map(|j| rows.iter().map(|row| row[j] / tau).sum::<f64>() + lw[j])
        .collect();
    let top = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let z: f64 = s.iter().map(|x| (x - top).exp()).sum();
    let allocation: Vec<f64> = s.iter().map(|x| (x - top).exp() / z).collect();
    let (payments, utilities) =
        llm_auction_mechanism::testing::rochet_payments(&rows, &lw, tau, 20_000);
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-7 * b.abs().max(1.0);
    for (a, b) in floats(&r["allocation"]).iter().zip(&allocation) {
        assert!(close(*a, *b), "allocation {a} vs {b}");
    }
    for (i, res) in r["results"].as_array().unwrap().iter().enumerate() {
        let p = res["payment"].as_f64().unwrap();
        assert!(close(p, payments[i]), "payment {p} vs {}", payments[i]);
        let u = res["utility"].as_f64().unwrap();
        assert!(close(u, utilities[i]), "utility {u} vs {}", utilities[i]);
    }
    let rev = r["revenue"].as_f64().unwrap();
    let expected: f64 = payments.iter().sum();
    assert!(close(rev, expected), "revenue {rev} vs {expected}");
    let w = r["winner"].as_u64().unwrap() as usize;
    assert_eq!(r["reply"], cands[w]["text"]);
}

fn answer_text(r: Result<ureq::Response, ureq::Error>) -> (u16, String) {
    match r {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap()),
        Err(e) => panic!("request failed: {e}"),
    }
}

/// Reads a metric's value (first line that starts with `name`).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
}

#[test]
fn hundred_concurrent_auctions_none_dropped_all_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let server = Server::start(&model, &["--max-seqs", "128"], &[]);
    let results: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..100u64)
            .map(|k| {
                let server = &server;
                s.spawn(move || server.post("/v1/mosaic", &mosaic_body(k, 2 + (k % 3) as usize, 6)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (k, (code, r)) in results.iter().enumerate() {
        assert_eq!(*code, 200, "auction {k}: {r}");
        assert_eq!(r["config"]["seed"], k as u64);
        check_consistent(r);
    }
    let (_, text) = server.get("/metrics");
    assert_eq!(
        metric(
            &text,
            "llm_auction_auctions_finished_total{kind=\"mosaic\"}"
        ),
        100.0
    );
    assert_eq!(
        metric(&text, "llm_auction_auctions_failed_total{kind=\"mosaic\"}"),
        0.0
    );
    assert_eq!(metric(&text, "llm_auction_auctions_in_flight"), 0.0);
    // Batching across auctions happened: more sequences than one auction's per forward pass.
    let seqs = metric(&text, "llm_auction_engine_step_batch_sequences_sum");
    let steps = metric(&text, "llm_auction_engine_step_batch_sequences_count");
    assert!(seqs / steps > 4.0, "mean batch {}", seqs / steps);
    // Server-Sent Events: progress, each candidate once generated (before any scoring), then the
    // report, equal to the JSON answer's checks.
    let text = ureq::post(&server.url("/v1/mosaic"))
        .set("Accept", "text/event-stream")
        .send_string(&mosaic_body(7, 3, 6))
        .unwrap()
        .into_string()
        .unwrap();
    let events: Vec<(&str, Value)> = text
        .split("\n\n")
        .filter_map(|block| {
            let name = block.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data: String = block
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect();
            Some((name, serde_json::from_str(&data).unwrap()))
        })
        .collect();
    let names: Vec<&str> = events.iter().map(|e| e.0).collect();
    assert_eq!(names.last(), Some(&"report"), "{names:?}");
    assert_eq!(
        names.iter().filter(|n| **n == "candidate").count(),
        3,
        "{names:?}"
    );
    let first_scoring = events
        .iter()
        .position(|e| e.0 == "progress" && e.1["phase"] == "scoring")
        .unwrap_or(names.len());
    let last_candidate = names.iter().rposition(|n| *n == "candidate").unwrap();
    assert!(last_candidate < first_scoring, "{names:?}");
    let report = &events.last().unwrap().1;
    check_consistent(report);
    for (name, data) in &events {
        if *name == "candidate" {
            let k = data["index"].as_u64().unwrap() as usize;
            assert_eq!(data["text"], report["candidates"][k]["text"]);
        }
    }
    // A token auction and the pure mechanisms answer too.
    let (code, t) = server.post(
        "/v1/token-auction",
        &json!({"query": "An ad", "agents": ["A: pizza: 2", {"name": "B", "description": "burgers", "bid": 1}], "max_new_tokens": 5}).to_string(),
    );
    assert_eq!(code, 200, "{t}");
    let steps = t["steps"].as_array().unwrap().len();
    assert!((1..=5).contains(&steps), "{t}");
    assert_eq!(t["total_payments"].as_array().unwrap().len(), 2);
    let (code, m) = server.post(
        "/v1/mechanism/mosaic",
        &json!({"rewards": [[1.0, 0.0], [0.0, 2.0]], "tau": 1.0}).to_string(),
    );
    assert_eq!(code, 200, "{m}");
    assert_eq!(m["payments"].as_array().unwrap().len(), 2);
}

#[test]
fn bad_input_and_limits_get_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let server = Server::start(
        &model,
        &[
            "--max-m",
            "64",
            "--max-body-bytes",
            "4096",
            "--max-queue",
            "1",
            "--deadline-s",
            "0.5",
        ],
        &[],
    );
    let cases = [
        ("{", "invalid JSON"),
        (
            r#"{"query": "q", "advertisers": ["A: b"], "m": "two"}"#,
            "m: invalid type",
        ),
        (
            r#"{"query": "q", "advertisers": ["A: b"], "colour": 1}"#,
            "colour: unknown field",
        ),
        (
            r#"{"query": "q", "advertisers": ["A: b"], "m": 65}"#,
            "m: 65 is more than",
        ),
        (
            r#"{"query": "q", "advertisers": ["A: b"], "tau": -1}"#,
            "tau: must be",
        ),
        (
            r#"{"query": "q", "advertisers": ["no colon"]}"#,
            "advertisers[0]",
        ),
        (
            r#"{"query": "q", "advertisers": ["A: b"], "reference": "nope"}"#,
            "reference: no model \"nope\"",
        ),
        (
            r#"{"query": "q", "advertisers": ["A: b"], "advertiser_models": {"Z": "default"}}"#,
            "advertiser_models.Z",
        ),
    ];
    for (body, want) in cases {
        let (code, v) = server.post("/v1/mosaic", body);
        assert_eq!(code, 400, "{body}: {v}");
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains(want), "{body}: {msg:?} lacks {want:?}");
        assert!(!msg.contains('\n'), "one line: {msg:?}");
    }
    let (code, v) = server.post(
        "/v1/token-auction",
        r#"{"query": "q", "agents": ["A: b: -1"]}"#,
    );
    assert_eq!(code, 400, "{v}");
    assert!(v["error"].as_str().unwrap().starts_with("agents[0]"), "{v}");
    let (code, v) = server.post("/v1/mechanism/token", r#"{"bids": [1]}"#);
    assert_eq!(code, 400, "{v}");
    let (code, v) = server.post(
        "/v1/mosaic",
        &format!(r#"{{"query": "{}"}}"#, "x".repeat(5000)),
    );
    assert_eq!(code, 413, "{v}");
    let (code, body) = server.get("/nowhere");
    assert_eq!(code, 404);
    assert!(body.contains("\"error\""), "{body}");
    // An auction too long for its deadline is cancelled (504); while it runs the queue is full.
    std::thread::scope(|s| {
        let long = s.spawn(|| server.post("/v1/mosaic", &mosaic_body(1, 64, 500)));
        let start = Instant::now();
        loop {
            let (_, m) = server.get("/metrics");
            if metric(&m, "llm_auction_auctions_in_flight") >= 1.0 {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30));
            std::thread::sleep(Duration::from_millis(5));
        }
        let r = ureq::post(&server.url("/v1/mosaic")).send_string(&mosaic_body(2, 2, 2));
        match r {
            Err(ureq::Error::Status(429, resp)) => {
                assert_eq!(resp.header("Retry-After"), Some("1"));
                let v: Value = serde_json::from_str(&resp.into_string().unwrap()).unwrap();
                assert!(v["error"].as_str().unwrap().contains("--max-queue"), "{v}");
            }
            other => panic!("expected 429, got {other:?}"),
        }
        let (code, v) = long.join().unwrap();
        assert_eq!(code, 504, "{v}");
        assert!(
            v["error"].as_str().unwrap().contains("deadline exceeded"),
            "{v}"
        );
    });
    let (_, m) = server.get("/metrics");
    assert_eq!(
        metric(&m, "llm_auction_auctions_cancelled_total{kind=\"mosaic\"}"),
        1.0
    );
    // The engine still serves after the cancellation.
    let (code, v) = server.post("/v1/mosaic", &mosaic_body(3, 2, 3));
    assert_eq!(code, 200, "{v}");
}

#[test]
fn api_key_is_required_and_sigterm_shuts_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    // Beyond loopback without a key: refused at start.
    let out = Command::new(env!("CARGO_BIN_EXE_llm-auction"))
        .args(["serve", "--bind", "0.0.0.0:0", "--model"])
        .arg(&model)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("--bind") && err.contains("--api-key-env"),
        "{err}"
    );

    const KEY: &str = "s3cret-key-for-tests";
    let key = KEY;
    let server = Server::start(&model, &["--api-key-env", "KEY"], &[("KEY", key)]);
    for auth in [None, Some("Bearer wrong"), Some("s3cret-key-for-tests")] {
        let mut req = ureq::get(&server.url("/v1/models"));
        if let Some(a) = auth {
            req = req.set("Authorization", a);
        }
        let (code, v) = answer(req.call());
        assert_eq!(code, 401, "{auth:?}: {v}");
        assert!(!v.to_string().contains(key));
    }
    let authed = |r: ureq::Request| r.set("Authorization", &format!("Bearer {KEY}"));
    let (code, v) = answer(authed(ureq::get(&server.url("/v1/models"))).call());
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["models"][0]["name"], "default");
    // The page itself is public (it holds no data); the API behind it is not.
    assert_eq!(server.get("/").0, 200);
    // SIGTERM while an auction runs: it finishes within the grace period, then the process exits 0.
    let (tx, rx) = std::sync::mpsc::channel();
    let url = server.url("/v1/mosaic");
    let client = std::thread::spawn(move || {
        let r = authed(ureq::post(&url)).send_string(&mosaic_body(5, 16, 400));
        tx.send(()).unwrap();
        answer(r)
    });
    let start = Instant::now();
    loop {
        let (_, m) = answer_text(authed(ureq::get(&server.url("/metrics"))).call());
        if metric(&m, "llm_auction_auctions_in_flight") >= 1.0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(rx.try_recv().is_err(), "the auction was still running");
    let (code, stderr) = server.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains(key), "the key is never logged");
    let (code, v) = client.join().unwrap();
    assert_eq!(code, 200, "{v}");
    check_consistent(&v);
}

/// `bench serve` on the tiny model: no auction fails or comes back inconsistent, every auction is
/// bit-identical alone and under load (the native pass is batch-invariant), each phase's forward
/// passes are counted, and the compute bound it derives is consistent with its own timings.
#[test]
fn bench_serve_counts_each_phase_and_bounds_the_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let (code, out, err) = run(&[
        "bench",
        "serve",
        "--auctions",
        "6",
        "--sequential",
        "3",
        "-M",
        "2",
        "--max-new-tokens",
        "4",
        "--json",
        "--model",
        model.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let r: Value = serde_json::from_str(out.trim()).unwrap_or_else(|_| panic!("not JSON: {out}"));
    let peak = r["gemm_peak_gflops"]
        .as_f64()
        .expect("the native pass measures its peak");
    assert!(peak > 0.0, "{r}");
    for (name, n) in [("concurrent", 6), ("sequential", 3)] {
        let p = &r[name];
        assert_eq!(p["auctions"], n, "{name}: {p}");
        assert_eq!(p["failed"], 0, "{name}: {p}");
        assert_eq!(p["inconsistent"], 0, "{name}: {p}");
        let gflop = p["gflop"].as_f64().unwrap();
        assert!(gflop > 0.0, "{name}: no forward pass counted: {p}");
        let at_peak = p["seconds_at_peak"].as_f64().unwrap();
        assert!(
            (at_peak - gflop / peak).abs() <= 1e-9 * at_peak,
            "{name}: {at_peak} s at the peak for {gflop} GFLOP at {peak} GFLOP/s"
        );
        // No phase can beat the machine's measured peak.
        assert!(p["seconds"].as_f64().unwrap() > at_peak, "{name}: {p}");
    }
    // The concurrent phase ran twice as many auctions as the sequential one (the same queries
    // and seeds), so it did more work; how much more depends on what the prefix cache kept.
    let (c, s) = (
        r["concurrent"]["gflop"].as_f64().unwrap(),
        r["sequential"]["gflop"].as_f64().unwrap(),
    );
    assert!(c > s, "concurrent {c} GFLOP, sequential {s}");
    let ratio = r["throughput_ratio"].as_f64().unwrap();
    let bound = r["throughput_ratio_at_bound"].as_f64().unwrap();
    assert!(
        ratio > 0.0 && bound > ratio,
        "ratio {ratio}, at the bound {bound}"
    );
    assert_eq!(r["identical_alone_and_concurrent"], 3, "{r}");
}
