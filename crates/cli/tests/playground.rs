//! The web playground in a real browser: `serve` on 127.0.0.1 with a tiny random model, driven by
//! scripts/playground.test.mjs (playwright-core and Debian's chromium), which fills the form, runs
//! a MOSAIC and a token auction, checks the payments shown against the JSON API's, fails on any
//! console error, and saves screenshots under target/playground/. Ignored by `cargo test`:
//! scripts/browser-test.sh installs the browser and runs it (CI does).

mod common;

use common::{Server, tiny_model};
use std::path::Path;
use std::process::Command;

#[test]
#[ignore = "needs chromium and playwright-core: run scripts/browser-test.sh"]
fn playground_runs_auctions_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let server = Server::start(&model, &[], &[]);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let shot = root.join("target/playground/mosaic.png");
    let status = Command::new("node")
        .arg(root.join("scripts/playground.test.mjs"))
        .arg(&server.base)
        .arg(&shot)
        .status()
        .expect("node runs");
    assert!(status.success(), "the browser test failed (see above)");
    assert!(shot.exists(), "no screenshot at {}", shot.display());
    println!("screenshot: {}", shot.display());
}
