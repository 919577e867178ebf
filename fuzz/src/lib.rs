//! What the fuzz targets share: the packing of a Hugging Face model folder into one fuzz input.
//!
//! An input is up to four sections, each a little-endian `u32` length and that many bytes:
//! `config.json`, `tokenizer.json`, `tokenizer_config.json`, `model.safetensors`. A short input
//! leaves the later sections empty; an empty section is not written as a file.

/// The files of a packed folder, in section order.
pub const HF_FILES: [&str; 4] = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "model.safetensors",
];

/// Packs the four files into one input.
pub fn pack(sections: &[Vec<u8>; 4]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in sections {
        out.extend((s.len() as u32).to_le_bytes());
        out.extend(s);
    }
    out
}

/// Unpacks an input into the four sections (never panics; lengths are clamped to the input).
pub fn unpack(mut data: &[u8]) -> [Vec<u8>; 4] {
    let mut out: [Vec<u8>; 4] = Default::default();
    for section in &mut out {
        if data.len() < 4 {
            break;
        }
        let n = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
        data = &data[4..];
        let n = n.min(data.len());
        *section = data[..n].to_vec();
        data = &data[n..];
    }
    out
}
