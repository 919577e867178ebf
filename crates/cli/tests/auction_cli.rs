//! `mosaic` and `token-auction` through the binary: the README's main command on the default model
//! (twice, same output), its `--json` payments checked against `mechanism mosaic`, and bad input.

mod common;

use common::{run, tiny_gguf};
use std::io::Write;
use std::process::{Command, Stdio};

const MAIN: [&str; 7] = [
    "mosaic",
    "--query",
    "How do I bake cookies?",
    "--advertiser",
    "EasyBake: producing baking ingredients",
    "--advertiser",
    "KitchenFix: producing kitchen appliances",
];

/// The README's main job: a reply and a payment table; the same again with the same seed.
#[test]
fn readme_main_command_is_deterministic() {
    let (code, a, err) = run(&MAIN);
    assert_eq!(code, 0, "{err}");
    assert!(
        a.contains("advertiser")
            && a.contains("payment")
            && a.contains("EasyBake")
            && a.contains("KitchenFix"),
        "{a}"
    );
    assert!(a.contains("revenue:"));
    let (_, b, _) = run(&MAIN);
    // Everything but the timing line is identical.
    let strip = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with("candidate "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&a), strip(&b));
}

/// A models-file entry serves the role it is given, and the report says so.
#[test]
fn models_file_entries_serve_their_roles() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_gguf(dir.path(), 512, 2);
    let file = dir.path().join("models.toml");
    std::fs::write(
        &file,
        "[models.tiny]\nkind = \"local\"\npath = \"tiny.gguf\"\n",
    )
    .unwrap();
    let (m, f) = (path.to_str().unwrap(), file.to_str().unwrap());
    let (code, out, err) = run(&[
        "mosaic",
        "--query",
        "q",
        "--advertiser",
        "A: b",
        "--advertiser",
        "B: c",
        "-M",
        "2",
        "--max-new-tokens",
        "3",
        "--model",
        m,
        "--models",
        f,
        "--advertiser-model",
        "B=tiny",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    let entries: Vec<(&str, &str)> = r["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["role"].as_str().unwrap(), x["entry"].as_str().unwrap()))
        .collect();
    assert_eq!(
        entries,
        [
            ("reference", "default"),
            ("generator", "default"),
            ("advertiser A", "default"),
            ("advertiser B", "tiny")
        ]
    );
    assert!(
        r["models"][3]["location"]
            .as_str()
            .unwrap()
            .ends_with("tiny.gguf")
    );
    let (code, out, err) = run(&[
        "token-auction",
        "--query",
        "q",
        "--agent",
        "A: b: 1",
        "--agent",
        "B: c: 1",
        "--max-new-tokens",
        "3",
        "--model",
        m,
        "--models",
        f,
        "--agent-model",
        "A=tiny",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["models"][0]["entry"], "tiny");
    assert_eq!(r["models"][1]["entry"], "default");
}

/// `--json` payments equal what `mechanism mosaic` computes from the reported rewards and weights.
#[test]
fn json_payments_match_the_mechanism_cli() {
    let mut args = MAIN.to_vec();
    args.extend(["-M", "4", "--max-new-tokens", "12", "--seed", "3", "--json"]);
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    let cands = r["candidates"].as_array().unwrap();
    let rewards: Vec<Vec<f64>> = (0..2)
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
    let input =
        serde_json::json!({ "rewards": rewards, "tau": 1.0, "log_ref": log_ref, "log_gen": log_q });
    let mut child = Command::new(env!("CARGO_BIN_EXE_llm-auction"))
        .args(["mechanism", "mosaic"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let m: serde_json::Value =
        serde_json::from_slice(&child.wait_with_output().unwrap().stdout).unwrap();
    for i in 0..2 {
        let (a, b) = (
            r["results"][i]["payment"].as_f64().unwrap(),
            m["payments"][i].as_f64().unwrap(),
        );
        assert!(
            (a - b).abs() <= 1e-9 * (1.0 + a.abs()),
            "payment {i}: {a} vs {b}"
        );
        let (a, b) = (
            r["results"][i]["utility"].as_f64().unwrap(),
            m["utilities"][i].as_f64().unwrap(),
        );
        assert!(
            (a - b).abs() <= 1e-9 * (1.0 + a.abs()),
            "utility {i}: {a} vs {b}"
        );
    }
    for (j, p) in m["allocation"].as_array().unwrap().iter().enumerate() {
        assert!((p.as_f64().unwrap() - r["allocation"][j].as_f64().unwrap()).abs() < 1e-12);
    }
    for key in ["prompts", "timings", "winner", "reply"] {
        assert!(!r[key].is_null(), "report has {key}");
    }
}

#[test]
fn bad_input_exits_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_gguf(dir.path(), 512, 1);
    let m = path.to_str().unwrap();
    let long = "word ".repeat(600);
    // Models files: a bad field, an entry that does not exist, a role flag naming nobody.
    let bad_file = dir.path().join("bad.toml");
    std::fs::write(
        &bad_file,
        "[models.kitchen]\nkind = \"llama-server\"\nurls = [\"ftp://x\"]\n",
    )
    .unwrap();
    let good_file = dir.path().join("good.toml");
    std::fs::write(
        &good_file,
        format!("[models.tiny]\nkind = \"local\"\npath = {m:?}\n"),
    )
    .unwrap();
    let down_file = dir.path().join("down.toml");
    std::fs::write(
        &down_file,
        "[models.k]\nkind = \"llama-server\"\nurls = [\"http://127.0.0.1:1\"]\nretries = 1\n",
    )
    .unwrap();
    let (bad_file, good_file) = (bad_file.to_str().unwrap(), good_file.to_str().unwrap());
    let down_file = down_file.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "mosaic",
                "--query",
                "q",
                "--advertiser",
                "A: b",
                "--models",
                down_file,
                "--advertiser-model",
                "A=k",
                "--model",
                m,
            ],
            "advertiser A (model k): llama-server at http://127.0.0.1:1: ",
        ),
        (
            vec![
                "mosaic",
                "--query",
                "q",
                "--advertiser",
                "A: b",
                "--models",
                bad_file,
            ],
            "entry \"kitchen\": field \"urls\": \"ftp://x\" must start with http://",
        ),
        (
            vec![
                "mosaic",
                "--query",
                "q",
                "--advertiser",
                "A: b",
                "--models",
                good_file,
                "--reference",
                "nope",
            ],
            "no entry \"nope\" (entries: tiny)",
        ),
        (
            vec![
                "mosaic",
                "--query",
                "q",
                "--advertiser",
                "A: b",
                "--advertiser-model",
                "B=tiny",
                "--models",
                good_file,
            ],
            "--advertiser-model: \"B\" is none of \"A\"",
        ),
        (
            vec![
                "mosaic",
                "--query",
                "q",
                "--advertiser",
                "A: b",
                "--generator-model",
                "tiny",
            ],
            "no models file given",
        ),
        (
            vec![
                "token-auction",
                "--query",
                "q",
                "--agent",
                "A: b: 1",
                "--agent-model",
                "A:tiny",
                "--models",
                good_file,
            ],
            "must look like \"Name=ENTRY\"",
        ),
        (
            vec![
                "mosaic",
                "--query",
                "q",
                "--advertiser",
                "NoColon",
                "--model",
                m,
            ],
            "Name: description",
        ),
        (
            vec![
                "mosaic",
                "--query",
                "q",
                "--advertiser",
                "A: b",
                "-M",
                "0",
                "--model",
                m,
            ],
            "-M",
        ),
        // Hardening regressions: u64::MAX panicked ("capacity overflow"), 10^12 aborted, 10^5 ran
        // on at 1.2 GB; u64::MAX new tokens overflowed past the context check.
        (
            vec![
                "mosaic",
                "--query",
                "q",
                "--advertiser",
                "A: b",
                "-M",
                "18446744073709551615",
                "--model",
                m,
            ],
            "M: 18446744073709551615 is above the limit of 4096",
        ),
        (
            vec![
                "mosaic",
                "--query",
                "q",
                "--advertiser",
                "A: b",
                "-M",
                "100000",
                "--model",
                m,
            ],
            "M: 100000 is above the limit",
        ),
        (
            vec![
                "mosaic",
                "--query",
                "q",
                "--advertiser",
                "A: b",
                "--max-new-tokens",
                "18446744073709551615",
                "--model",
                m,
            ],
            "max_new_tokens: 18446744073709551615 is above the limit",
        ),
        (
            vec![
                "token-auction",
                "--query",
                "q",
                "--agent",
                "A: b: 1",
                "--max-new-tokens",
                "18446744073709551615",
                "--model",
                m,
            ],
            "max_new_tokens: 18446744073709551615 is above the limit",
        ),
        (
            vec![
                "token-auction",
                "--query",
                "q",
                "--agent",
                "A: b: 1",
                "--agent",
                "B: c: 1",
                "--lambda-sweep",
                "18446744073709551615",
                "--model",
                m,
            ],
            "lambda-sweep: 18446744073709551615 is above the limit",
        ),
        (
            vec![
                "mosaic",
                "--query",
                "q",
                "--advertiser",
                "A: b",
                "--tau",
                "0",
                "--model",
                m,
            ],
            "tau",
        ),
        (
            vec![
                "mosaic",
                "--query",
                "q",
                "--advertiser",
                "A: b",
                "--tau",
                "-2",
                "--model",
                m,
            ],
            "tau",
        ),
        (
            vec![
                "mosaic",
                "--query",
                &long,
                "--advertiser",
                "A: b",
                "--model",
                m,
            ],
            "exceeds",
        ),
        (
            vec![
                "mosaic",
                "--query",
                "q",
                "--advertiser",
                "A: b",
                "--device",
                "cuda",
                "--model",
                m,
            ],
            "cuda",
        ),
        (
            vec![
                "token-auction",
                "--query",
                "q",
                "--agent",
                "A: b",
                "--model",
                m,
            ],
            "bid",
        ),
        (
            vec![
                "token-auction",
                "--query",
                "q",
                "--agent",
                "A: b: 0",
                "--model",
                m,
            ],
            "bids",
        ),
        (
            vec![
                "token-auction",
                "--query",
                "q",
                "--agent",
                "A: b: 1",
                "--aggregation",
                "log-linear",
                "--model",
                m,
            ],
            "second_price",
        ),
    ];
    for (args, needle) in cases {
        let (code, out, err) = run(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(out.is_empty());
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: {err:?} should mention {needle}"
        );
    }
    // Usage errors (clap): no advertiser at all, an unknown device.
    assert_eq!(run(&["mosaic", "--query", "q", "--model", m]).0, 2);
    assert_eq!(
        run(&[
            "mosaic",
            "--query",
            "q",
            "--advertiser",
            "A: b",
            "--device",
            "tpu"
        ])
        .0,
        2
    );
    // A tiny run of each auction works and prints JSON.
    let (code, out, err) = run(&[
        "token-auction",
        "--query",
        "q",
        "--agent",
        "A: x: 1",
        "--agent",
        "B: y: 2",
        "--max-new-tokens",
        "4",
        "--json",
        "--model",
        m,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["total_payments"].is_array());
    let (code, out, _) = run(&[
        "token-auction",
        "--query",
        "q",
        "--agent",
        "A: x: 1",
        "--agent",
        "B: y: 2",
        "--max-new-tokens",
        "3",
        "--lambda-sweep",
        "3",
        "--model",
        m,
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("Linear") && out.contains("LogLinear"));
}
