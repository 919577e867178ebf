//! The experiment runner's metrics on a hand-computed case, and its resumable store.

use llm_auction_engine::experiment::{
    AdvertiserSpec, ExperimentConfig, Instance, Row, Store, ZEstimate, instance_rows, read_rows,
};
use llm_auction_engine::mosaic::{Candidate, Generator, Importance};
use llm_auction_model::generation::FinishReason;

fn cand(text: &str, log_ref: f64, reward: f64) -> Candidate {
    Candidate {
        text: text.into(),
        tokens: vec![1, 2],
        finish: FinishReason::Length,
        log_ref,
        log_q: Some(log_ref),
        log_gen: log_ref,
        log_adv: vec![log_ref + reward],
        rewards: vec![reward],
        log_weight: 0.0,
    }
}

fn instance() -> Instance {
    Instance {
        id: 7,
        query: "q".into(),
        advertisers: vec![AdvertiserSpec {
            name: "Acme".into(),
            description: "d".into(),
        }],
    }
}

fn cfg() -> ExperimentConfig {
    ExperimentConfig {
        ms: vec![1, 2],
        tau: 1.0,
        ..ExperimentConfig::cpu()
    }
}

#[test]
fn metrics_on_a_hand_computed_case() {
    let cands = [cand("Buy ACME now", -10.0, 1.0), cand("plain", -12.0, 0.0)];
    let z = ZEstimate {
        query_id: 7,
        log_z: 0.5,
        opt_proxy: -9.0,
        ref_proxy: -8.0,
        samples: 4,
    };
    let rows = instance_rows(&instance(), 3, Generator::ContextAware, &cands, &z, &cfg()).unwrap();
    assert_eq!(rows.len(), 2);
    let e = 1f64.exp();
    let (p0, p1) = (e / (1.0 + e), 1.0 / (1.0 + e));
    // M = 2.
    let r = &rows[1];
    assert_eq!(
        (r.m, r.generator, r.query_id, r.seed),
        (2, Generator::ContextAware, 7, 3)
    );
    let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    close(r.reward_with, p0);
    // Footnote 9: only "plain" does not mention Acme (case-insensitive); without Acme it gets all mass.
    assert_eq!(r.n_without, 1);
    close(r.reward_without, 0.0);
    close(r.reward_gain, p0);
    close(r.payment, p0 - ((e + 1.0) / 2.0).ln());
    close(r.payment_no_offset, p0 - (e + 1.0).ln());
    close(r.utility_gain, ((e + 1.0) / 2.0).ln());
    close(r.utility_gain_no_offset, (e + 1.0).ln());
    close(r.revenue, r.payment);
    close(
        r.expected_logprob_opt,
        p0 * (-10.0 + 1.0 - 0.5) + p1 * (-12.0 - 0.5),
    );
    let want = if r.winner == 0 {
        -10.0 + 1.0 - 0.5
    } else {
        -12.0 - 0.5
    };
    close(r.logprob_opt_reply, want);
    assert_eq!(r.mentioned, r.winner == 0);
    close(r.log_z, 0.5);
    close(r.opt_proxy, -9.0);
    close(r.ref_proxy, -8.0);
    // M = 1: the only candidate mentions Acme, so the allocation without Acme over all candidates
    // is used (n_without = 0): no gain, no payment.
    let r = &rows[0];
    assert_eq!((r.m, r.n_without, r.winner), (1, 0, 0));
    close(r.reward_gain, 0.0);
    close(r.payment, 0.0);
    close(r.payment_no_offset, 0.0);
}

fn row(q: u32, seed: u64) -> Row {
    let cands = [cand("Acme", -1.0, 0.5), cand("x", -2.0, -0.5)];
    let z = ZEstimate {
        query_id: q,
        log_z: 0.0,
        opt_proxy: 0.0,
        ref_proxy: 0.0,
        samples: 1,
    };
    let mut inst = instance();
    inst.id = q;
    instance_rows(&inst, seed, Generator::Reference, &cands, &z, &cfg())
        .unwrap()
        .remove(0)
}

#[test]
fn store_resumes_without_losing_or_duplicating_instances() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg();
    {
        let mut s = Store::open(dir.path(), &c, true).unwrap();
        assert!(!s.is_done(1, 0, Generator::Reference));
        s.put_z(ZEstimate {
            query_id: 1,
            log_z: 1.5,
            opt_proxy: -3.0,
            ref_proxy: -2.5,
            samples: 8,
        })
        .unwrap();
        s.put_instance(1, 0, Generator::Reference, &[row(1, 0)])
            .unwrap();
        assert!(s.is_done(1, 0, Generator::Reference));
    }
    // A run killed after appending an instance's rows but before recording it as done.
    let results = dir.path().join("results.csv");
    let mut text = std::fs::read_to_string(&results).unwrap();
    let partial = std::fs::read_to_string(&results)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .replacen("1,0,reference", "2,0,reference", 1);
    text.push_str(&partial);
    text.push('\n');
    std::fs::write(&results, text).unwrap();
    let s = Store::open(dir.path(), &c, true).unwrap();
    assert!(s.is_done(1, 0, Generator::Reference));
    assert!(!s.is_done(2, 0, Generator::Reference));
    assert_eq!(s.z(1).unwrap().log_z, 1.5);
    assert_eq!(s.z(1).unwrap().ref_proxy, -2.5);
    let rows = read_rows(&results).unwrap();
    assert_eq!(rows.len(), 1, "the unfinished instance's rows were dropped");
    assert_eq!(rows[0], row(1, 0));
    // Starting afresh over existing results, or resuming with another configuration, is refused.
    assert!(Store::open(dir.path(), &c, false).is_err());
    let other = ExperimentConfig {
        tau: 2.0,
        ..c.clone()
    };
    assert!(Store::open(dir.path(), &other, true).is_err());
    let raw = ExperimentConfig {
        importance: Importance::Raw,
        ..c.clone()
    };
    assert!(Store::open(dir.path(), &raw, true).is_err());
    // More queries or seeds may be added to a run.
    let more = ExperimentConfig {
        queries: 20,
        seeds: 5,
        ..c
    };
    assert!(Store::open(dir.path(), &more, true).is_ok());
}

#[test]
fn a_crash_or_a_full_disk_leaves_a_usable_run() {
    // Regressions: a full disk left a 0-byte results.csv, after which the resume wrote rows without
    // a header that neither `plot` nor a further resume accepted; a torn last line (a crash
    // mid-write) made `plot` fail and the next append continue that line.
    let c = cfg();
    let header_of = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .to_string()
    };
    // 1. An empty results.csv and logz.csv: the resume writes the headers first.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("results.csv"), "").unwrap();
    std::fs::write(dir.path().join("logz.csv"), "").unwrap();
    let mut s = Store::open(dir.path(), &c, true).unwrap();
    s.put_instance(1, 0, Generator::Reference, &[row(1, 0)])
        .unwrap();
    let results = dir.path().join("results.csv");
    assert_eq!(read_rows(&results).unwrap(), vec![row(1, 0)]);
    assert!(header_of(&dir.path().join("logz.csv")).starts_with("query_id,log_z"));
    // 2. Rows written without a header by an earlier version: the header is restored.
    let text = std::fs::read_to_string(&results).unwrap();
    let body: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
    std::fs::write(&results, &body).unwrap();
    assert!(read_rows(&results).is_err());
    let s = Store::open(dir.path(), &c, true).unwrap();
    assert!(s.is_done(1, 0, Generator::Reference));
    assert_eq!(read_rows(&results).unwrap(), vec![row(1, 0)]);
    // 3. A torn last line in results.csv and done.csv: readers skip it, the store drops it, and
    //    the next instance is appended on lines of its own.
    let mut torn = std::fs::read_to_string(&results).unwrap();
    torn.push_str("2,0,refer");
    std::fs::write(&results, &torn).unwrap();
    assert_eq!(
        read_rows(&results).unwrap(),
        vec![row(1, 0)],
        "plot reads the whole rows"
    );
    let done = dir.path().join("done.csv");
    let mut d = std::fs::read_to_string(&done).unwrap();
    d.push_str("2,0,ref");
    std::fs::write(&done, d).unwrap();
    let mut s = Store::open(dir.path(), &c, true).unwrap();
    assert!(!s.is_done(2, 0, Generator::Reference));
    s.put_instance(2, 0, Generator::Reference, &[row(2, 0)])
        .unwrap();
    assert_eq!(read_rows(&results).unwrap(), vec![row(1, 0), row(2, 0)]);
    let s = Store::open(dir.path(), &c, true).unwrap();
    assert!(s.is_done(1, 0, Generator::Reference) && s.is_done(2, 0, Generator::Reference));
    assert_eq!(s.done_count(), 2);
    // 4. A fresh run with only headers on disk (it crashed before any row) may start again.
    let fresh = tempfile::tempdir().unwrap();
    drop(Store::open(fresh.path(), &c, false).unwrap());
    assert!(Store::open(fresh.path(), &c, false).is_ok());
}

#[test]
fn a_run_directory_of_another_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("results.csv"),
        "query_id,seed,generator,m\n1,0,context,1\n",
    )
    .unwrap();
    let err = Store::open(dir.path(), &cfg(), true).err().unwrap();
    assert!(err.to_string().contains("another version"), "{err}");
    // Nothing was rewritten.
    assert_eq!(
        std::fs::read_to_string(dir.path().join("results.csv")).unwrap(),
        "query_id,seed,generator,m\n1,0,context,1\n"
    );
}

#[test]
fn the_dataset_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/instances.json");
    let v = llm_auction_engine::experiment::load_instances(std::path::Path::new(path)).unwrap();
    assert_eq!(v.len(), 50);
    assert!(
        v.iter()
            .all(|i| i.advertisers.len() == 2 && i.query.ends_with('?'))
    );
}
