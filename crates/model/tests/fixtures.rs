//! The golden fixtures under `tests/fixtures` are copies of the project's reference files (the
//! `reference/` folder of the shared project data beside the checkout, `../shared/reference`): a
//! copy that drifted from its source would make the golden tests check the wrong numbers.
//! `LLM_AUCTION_REFERENCE` names another folder; where none exists (a clone without the shared
//! data), the test says so and checks that the fixtures parse.

use std::path::{Path, PathBuf};

const FIXTURES: [&str; 2] = ["smollm2_golden_public.json", "tokenizer.digits-fixed.json"];

fn reference_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("LLM_AUCTION_REFERENCE") {
        return Some(PathBuf::from(d));
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let d = repo.join("../shared/reference");
    d.is_dir().then_some(d)
}

#[test]
fn golden_fixtures_are_copies_of_the_reference() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for name in FIXTURES {
        let fixture = std::fs::read(here.join(name)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&fixture).unwrap();
        assert!(v.is_object(), "{name} is a JSON object");
    }
    let Some(reference) = reference_dir() else {
        eprintln!(
            "no reference folder (../shared/reference or LLM_AUCTION_REFERENCE): fixtures not compared"
        );
        return;
    };
    for name in FIXTURES {
        let source = reference.join(name);
        let Ok(original) = std::fs::read(&source) else {
            panic!("{} is missing from the reference folder", source.display());
        };
        let fixture = std::fs::read(here.join(name)).unwrap();
        assert!(
            fixture == original,
            "tests/fixtures/{name} differs from {} (copy it again)",
            source.display()
        );
    }
}
