//! A full model load from a Hugging Face folder (config.json, tokenizer.json,
//! tokenizer_config.json with its chat template, the safetensors header and data), packed into one
//! input (see `llm_auction_fuzz::unpack`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_auction_fuzz::{HF_FILES, unpack};
use llm_auction_model::backend::FlexBackend;
use llm_auction_model::model::Model;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temporary folder");
    for (name, bytes) in HF_FILES.iter().zip(unpack(data)) {
        if !bytes.is_empty() {
            std::fs::write(dir.path().join(name), bytes).expect("write");
        }
    }
    let Ok(model) = Model::<FlexBackend>::load(dir.path(), &Default::default(), &mut |_, _, _| {})
    else {
        return;
    };
    let _ = model.chat_turn_ids("system", "user <|im_end|>");
});
