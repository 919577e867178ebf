//! GGUF bytes: the container parser and every accessor, then the model and tokenizer descriptions
//! read from it. Nothing may panic, abort or allocate beyond what the input's own size allows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_auction_model::gguf::GgufFile;
use llm_auction_model::model::{gguf_config, gguf_tokenizer_spec};

fuzz_target!(|data: &[u8]| {
    let Ok(f) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    let _ = (f.version(), f.alignment(), f.data_offset());
    let keys: Vec<String> = f.metadata().keys().cloned().collect();
    for key in &keys {
        let _ = f.get_str(key);
        let _ = f.get_u64(key);
        let _ = f.get_f32(key);
        let _ = f.get_bool(key);
        let _ = f.get_str_array(key);
        let _ = f.get_i64_array(key);
        let _ = f.get_f32_array(key);
    }
    for t in f.tensors() {
        let _ = (t.shape(), t.n_elements(), f.tensor_info(&t.name));
        let _ = f.tensor_bytes(&t.name);
        let _ = f.tensor_f32(&t.name);
    }
    let _ = gguf_config(&f);
    let _ = gguf_tokenizer_spec(&f);
});
