//! The mechanism JSON filters (`llm-auction mechanism mosaic|token`, `/v1/mechanism/*`): any text
//! gives an output without NaN (serde_json writes NaN as `null`) or a one-line error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_auction_mechanism::json::{mosaic_json, token_json};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for run in [mosaic_json, token_json] {
        match run(text) {
            Ok(out) => {
                let v: serde_json::Value = serde_json::from_str(&out).expect("the output is JSON");
                assert!(v.is_object());
            }
            Err(e) => assert!(!e.to_string().contains('\n'), "one line: {e}"),
        }
    }
});
