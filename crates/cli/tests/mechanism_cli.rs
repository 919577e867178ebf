//! The `llm-auction mechanism` JSON interface through the real binary: worked examples, and bad input
//! that must exit non-zero with a one-line error naming the field (never a panic).

use std::io::Write;
use std::process::{Command, Stdio};

fn run(sub: &str, input: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_llm-auction"))
        .args(["mechanism", sub])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).expect("stdout is one JSON object")
}

#[test]
fn mosaic_zero_reward_agent_pays_nothing() {
    let (code, out, _) = run("mosaic", r#"{"rewards":[[1,2,3],[0,0,0]],"tau":1}"#);
    assert_eq!(code, 0);
    let v = json(&out);
    assert_eq!(v["payments"][1], 0.0);
    assert_eq!(v["utilities"][1], 0.0);
    assert!(v.get("winner").is_none());
    let p0 = v["payments"][0].as_f64().unwrap();
    // p_0 = π·r_0 - log(mean exp(r_0)) for a lone advertiser against the uniform π^{-0}.
    let z: f64 = (1..=3).map(|k| (k as f64).exp()).sum();
    let er: f64 = (1..=3).map(|k| k as f64 * (k as f64).exp() / z).sum();
    assert!((p0 - (er - (z / 3.0).ln())).abs() < 1e-12);
}

#[test]
fn mosaic_with_seed_and_importance_weights() {
    let input = r#"{"rewards":[[1,-2,0.5]],"tau":0.5,"log_ref":[-10,-12,-11],"log_gen":[-9,-15,-11],"offset":false,"seed":7}"#;
    let (code, out, _) = run("mosaic", input);
    assert_eq!(code, 0);
    let v = json(&out);
    let w = v["winner"].as_u64().unwrap();
    assert!(w < 3);
    // Same seed, same winner.
    assert_eq!(json(&run("mosaic", input).1)["winner"], v["winner"]);
    let logits = [1.0 / 0.5 - 1.0, -2.0 / 0.5 + 3.0, 0.5 / 0.5];
    let z: f64 = logits.iter().map(|x: &f64| x.exp()).sum();
    for (j, l) in logits.iter().enumerate() {
        assert!((v["allocation"][j].as_f64().unwrap() - l.exp() / z).abs() < 1e-12);
    }
}

#[test]
fn token_blog_example() {
    let (code, out, _) = run(
        "token",
        r#"{"distributions":[[0.8,0.2],[1,0],[0,1]],"bids":[1,2,2],"aggregation":"linear","payment":"second_price","seed":3}"#,
    );
    assert_eq!(code, 0);
    let v = json(&out);
    assert!((v["aggregate"][0].as_f64().unwrap() - 0.56).abs() < 1e-12);
    assert!((v["aggregate"][1].as_f64().unwrap() - 0.44).abs() < 1e-12);
    let winner = v["winner"].as_u64().unwrap() as usize;
    let pay: Vec<f64> = v["payments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let theta = v["critical_bids"][winner].as_f64().unwrap();
    assert_eq!(pay[winner], theta);
    assert!(
        pay.iter()
            .enumerate()
            .all(|(i, &p)| i == winner || p == 0.0)
    );
}

#[test]
fn token_log_linear_first_price_has_no_critical_bids() {
    let (code, out, _) = run(
        "token",
        r#"{"distributions":[[0.2,0.3,0.5],[0.5,0.3,0.2]],"bids":[1,3],"aggregation":"log_linear","payment":"first_price","seed":1}"#,
    );
    assert_eq!(code, 0);
    let v = json(&out);
    assert!(v["winner"].is_null() && v["critical_bids"].is_null());
    assert_eq!(v["payments"], serde_json::json!([1.0, 3.0]));
}

#[test]
fn bad_input_is_one_line_naming_the_field() {
    let cases: &[(&str, &str, &str)] = &[
        ("mosaic", "{not json", "invalid JSON"),
        ("mosaic", r#"{"rewards":[[1,2]]"#, "invalid JSON"),
        ("mosaic", r#"{"rewards":[[1,2],[1]],"tau":1}"#, "rewards[1]"),
        ("mosaic", r#"{"rewards":[[1,2]],"tau":0}"#, "tau"),
        ("mosaic", r#"{"rewards":[[1,2]],"tau":-1}"#, "tau"),
        ("mosaic", r#"{"rewards":[[1,2]],"tau":1e999}"#, "tau"),
        (
            "mosaic",
            r#"{"rewards":[[1,1e999]],"tau":1}"#,
            "rewards[0][1]",
        ),
        ("mosaic", r#"{"rewards":[],"tau":1}"#, "rewards"),
        ("mosaic", r#"{"rewards":[[]],"tau":1}"#, "rewards[0]"),
        (
            "mosaic",
            r#"{"rewards":[[1,2]],"tau":1,"log_ref":[0,0]}"#,
            "log_gen",
        ),
        (
            "mosaic",
            r#"{"rewards":[[1,2]],"tau":1,"log_ref":[0],"log_gen":[0]}"#,
            "log_ref",
        ),
        ("mosaic", r#"{"rewards":[[1,2]]}"#, "tau"),
        (
            "token",
            r#"{"distributions":[[0.5,0.5]],"bids":[-1],"aggregation":"linear","payment":"none","seed":1}"#,
            "bids[0]",
        ),
        (
            "token",
            r#"{"distributions":[[0.5,0.5],[1,0]],"bids":[0,0],"aggregation":"linear","payment":"none","seed":1}"#,
            "bids",
        ),
        (
            "token",
            r#"{"distributions":[[0.5,0.6]],"bids":[1],"aggregation":"linear","payment":"none","seed":1}"#,
            "distributions[0]",
        ),
        (
            "token",
            r#"{"distributions":[[0.5,0.5],[1]],"bids":[1,1],"aggregation":"linear","payment":"none","seed":1}"#,
            "distributions[1]",
        ),
        (
            "token",
            r#"{"distributions":[[0.5,0.5]],"bids":[1,1],"aggregation":"linear","payment":"none","seed":1}"#,
            "bids",
        ),
        (
            "token",
            r#"{"distributions":[[0.2,0.3,0.5]],"bids":[1],"aggregation":"log_linear","payment":"second_price","seed":1}"#,
            "payment",
        ),
        (
            "token",
            r#"{"distributions":[[0.5,0.5]],"bids":[1],"aggregation":"quadratic","payment":"none","seed":1}"#,
            "aggregation",
        ),
        (
            "token",
            r#"{"distributions":[[0.5,0.5]],"bids":[1],"aggregation":"linear","payment":"none"}"#,
            "seed",
        ),
        (
            "token",
            r#"{"distributions":[[1,0],[0,1]],"bids":[1,1],"aggregation":"log_linear","payment":"none","seed":1}"#,
            "distributions",
        ),
    ];
    for (sub, input, field) in cases {
        let (code, out, err) = run(sub, input);
        assert_eq!(code, 1, "{input}: exit code");
        assert!(out.is_empty(), "{input}: no output on error");
        assert_eq!(err.lines().count(), 1, "{input}: one line, got {err:?}");
        assert!(
            err.starts_with("error: ") && err.contains(field),
            "{input}: {err:?} should name {field}"
        );
        assert!(!err.contains("panicked"), "{input}");
    }
}
