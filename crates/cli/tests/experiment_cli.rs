//! `experiment mosaic | plot | token-sweep` through the binary on a tiny model: the grid runs,
//! resumes without recomputing finished instances, and draws its figures.

mod common;

use common::{run, tiny_gguf};

#[test]
fn grid_resumes_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_gguf(dir.path(), 512, 2);
    let data = dir.path().join("instances.json");
    std::fs::write(
        &data,
        r#"[{"id": 1, "query": "Tea?", "advertisers": [{"name": "Leafy", "description": "tea"}, {"name": "Kettle", "description": "kettles"}]},
            {"id": 2, "query": "Bread?", "advertisers": [{"name": "Flour", "description": "flour"}, {"name": "Oven", "description": "ovens"}]}]"#,
    )
    .unwrap();
    let out = dir.path().join("run");
    let (m, d, o) = (
        model.to_str().unwrap(),
        data.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let args = |queries: &'static str| {
        vec![
            "experiment",
            "mosaic",
            "--instances",
            d,
            "--queries",
            queries,
            "--seeds",
            "2",
            "--m",
            "1,2,4",
            "--max-new-tokens",
            "4",
            "--z-samples",
            "3",
            "--out",
            o,
            "--model",
            m,
        ]
    };
    let (code, _, err) = run(&args("1"));
    assert_eq!(code, 0, "{err}");
    let first = std::fs::read_to_string(out.join("results.csv")).unwrap();
    // 1 query × 2 seeds × 2 generators × 3 M × 2 advertisers.
    assert_eq!(first.lines().count(), 1 + 24);
    // Growing the grid resumes: the finished instances are not recomputed.
    let (code, _, err) = run(&args("2"));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("resuming: 4 of 8"), "{err}");
    let second = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert!(
        second.starts_with(&first),
        "earlier rows are kept as they were"
    );
    assert_eq!(second.lines().count(), 1 + 48);
    assert_eq!(
        std::fs::read_to_string(out.join("done.csv"))
            .unwrap()
            .lines()
            .count(),
        8
    );
    // Running it again does nothing new.
    let (code, _, err) = run(&args("2"));
    assert_eq!(code, 0);
    assert!(err.contains("resuming: 8 of 8"), "{err}");
    assert_eq!(
        std::fs::read_to_string(out.join("results.csv")).unwrap(),
        second
    );
    // --no-resume refuses to overwrite.
    let mut fresh = args("2");
    fresh.push("--no-resume");
    assert_eq!(run(&fresh).0, 1);
    // Another importance weighting is another run: refused in this directory.
    let mut raw = args("2");
    raw.extend(["--importance", "raw"]);
    let (code, _, err) = run(&raw);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("another configuration"), "{err}");

    let (code, md, err) = run(&["experiment", "plot", o]);
    assert_eq!(code, 0, "{err}");
    assert!(
        md.contains("log π_r of the returned reply") && md.contains("| context |"),
        "{md}"
    );
    for f in [
        "fig1a_logprob_optimal",
        "fig1b_reward_gain",
        "fig2a_payments",
        "fig2b_utility_gain",
        "fig3a_pearson",
    ] {
        let png = out.join("figures").join(format!("{f}.png"));
        assert!(
            std::fs::metadata(&png)
                .map(|m| m.len() > 1000)
                .unwrap_or(false),
            "{}",
            png.display()
        );
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    for proxy in ["ref_proxy", "opt_proxy"] {
        assert!(
            summary[proxy]["mean"].as_f64().is_some_and(f64::is_finite),
            "{proxy}: {summary}"
        );
    }
    assert!(md.contains("footnote 8"), "{md}");

    let sweep = dir.path().join("sweep");
    let (code, md, err) = run(&[
        "experiment",
        "token-sweep",
        "--k",
        "3",
        "--max-new-tokens",
        "3",
        "--out",
        sweep.to_str().unwrap(),
        "--model",
        m,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(md.contains("## Linear aggregation") && md.contains("## LogLinear aggregation"));
    assert!(sweep.join("token-auction-demo.md").exists());
}
