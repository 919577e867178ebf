//! The role flags through the binary against a real llama-server (started by
//! `scripts/remote-tests.sh`, which sets `LLM_AUCTION_LLAMA_SERVER_URL`): a MOSAIC auction whose
//! second advertiser is remote, and a token auction whose agents are remote, both recorded in the
//! `--json` report. `#[ignore]`d without the server.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_llm-auction"))
        .args(args)
        .env("CI", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn models_file(dir: &tempfile::TempDir) -> String {
    let url = std::env::var("LLM_AUCTION_LLAMA_SERVER_URL")
        .expect("LLM_AUCTION_LLAMA_SERVER_URL (run scripts/remote-tests.sh)");
    let path = dir.path().join("models.toml");
    std::fs::write(
        &path,
        format!("[models.kitchen]\nkind = \"llama-server\"\nurls = [\"{url}\"]\ntimeout_s = 60\n"),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
#[ignore = "needs a llama-server (scripts/remote-tests.sh)"]
fn llama_server_mosaic_with_a_remote_advertiser_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let f = models_file(&dir);
    let (code, out, err) = run(&[
        "mosaic",
        "--query",
        "How do I bake cookies?",
        "--advertiser",
        "EasyBake: producing baking ingredients",
        "--advertiser",
        "KitchenFix: producing kitchen appliances",
        "-M",
        "3",
        "--max-new-tokens",
        "8",
        "--models",
        &f,
        "--advertiser-model",
        "KitchenFix=kitchen",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["models"][3]["entry"], "kitchen");
    assert_eq!(r["models"][3]["kind"], "llama-server");
    assert_eq!(r["candidates"].as_array().unwrap().len(), 3);
    assert!(r["revenue"].as_f64().unwrap().is_finite());
}

#[test]
#[ignore = "needs a llama-server (scripts/remote-tests.sh)"]
fn llama_server_token_auction_with_remote_agents_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let f = models_file(&dir);
    let (code, out, err) = run(&[
        "token-auction",
        "--query",
        "Vacations in Hawaii",
        "--agent",
        "Alpha Airlines: an airline: 1",
        "--agent",
        "Beta Resort: a resort: 1",
        "--max-new-tokens",
        "4",
        "--models",
        &f,
        "--agent-model",
        "Alpha Airlines=kitchen",
        "--agent-model",
        "Beta Resort=kitchen",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["models"][0]["kind"], "llama-server");
    assert_eq!(r["steps"].as_array().unwrap().len(), 4);
}
