//! GGUF bytes: the container parser and every accessor, then the model and tokenizer descriptions
//! read from it. Nothing may panic, abort or allocate beyond what the input's own size allows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_auction_model::gguf::{GgufFile, read_every_accessor};
use llm_auction_model::model::{gguf_config, gguf_tokenizer_spec};

fuzz_target!(|data: &[u8]| {
    let Ok(f) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    read_every_accessor(&f);
    let _ = gguf_config(&f);
    let _ = gguf_tokenizer_spec(&f);
});
