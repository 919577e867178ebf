//! A full model load from a GGUF file (config, tokenizer, chat template, every tensor), and, when
//! it loads, one chat prompt encoded: every failure must be a typed error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_auction_model::backend::FlexBackend;
use llm_auction_model::model::Model;
use std::io::Write;

fuzz_target!(|data: &[u8]| {
    let mut file = tempfile::NamedTempFile::new().expect("temporary file");
    file.write_all(data).expect("write");
    let Ok(model) = Model::<FlexBackend>::load(file.path(), &Default::default(), &mut |_, _, _| {})
    else {
        return;
    };
    let _ = model.chat_turn_ids("system <|im_end|>", "user <|im_start|>");
    let _ = model.decode(&[0, 1, 2]);
});
