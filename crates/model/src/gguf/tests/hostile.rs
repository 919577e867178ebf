//! Hostile and truncated inputs: every length and count is checked before anything is
//! allocated, and malformed structure is an error naming what is wrong, never a panic.

use super::*;

#[test]
fn every_prefix_is_truncated() {
    let bytes = sample_file();
    assert!(GgufFile::from_bytes(bytes.clone()).is_ok());
    for len in 0..bytes.len() {
        match GgufFile::from_bytes(bytes[..len].to_vec()) {
            Err(GgufError::Truncated {
                offset,
                needed,
                file_len,
                ..
            }) => {
                assert_eq!(file_len, len as u64);
                assert!(offset.saturating_add(needed) > file_len, "prefix {len}");
            }
            other => panic!("prefix {len}: {other:?}"),
        }
    }
}

#[test]
fn random_header_mutations_never_panic() {
    let original = sample_file();
    let header_len = GgufFile::from_bytes(original.clone())
        .unwrap()
        .data_offset() as usize;
    let mut rng = Rng(0x5EED);
    let mut ok = 0;
    let start = std::time::Instant::now();
    for _ in 0..4000 {
        let mut bytes = original.clone();
        for _ in 0..1 + rng.below(4) {
            let pos = rng.below(header_len);
            match rng.below(4) {
                0 => bytes[pos] = rng.next_u64() as u8,
                1 => bytes[pos] ^= 1 << rng.below(8),
                2 => bytes[pos] = 0xFF,
                _ => {
                    let v = [0, 1, 1 << 32, 1 << 60, u64::MAX, rng.next_u64()][rng.below(6)];
                    let pos = pos.min(header_len - 8);
                    bytes[pos..pos + 8].copy_from_slice(&v.to_le_bytes());
                }
            }
        }
        if let Ok(f) = GgufFile::from_bytes(bytes) {
            ok += 1;
            read_every_accessor(&f);
        }
    }
    assert!(
        ok > 0,
        "some mutations (e.g. in string bytes) should stay valid"
    );
    assert!(start.elapsed().as_secs() < 60, "fuzz loop too slow");
}

/// Hand-assembled GGUF bytes for hostile-input tests.
struct Raw(Vec<u8>);

impl Raw {
    fn new(version: u32, n_tensors: u64, n_kv: u64) -> Self {
        let mut v = b"GGUF".to_vec();
        v.extend(version.to_le_bytes());
        v.extend(n_tensors.to_le_bytes());
        v.extend(n_kv.to_le_bytes());
        Raw(v)
    }
    fn u8(mut self, x: u8) -> Self {
        self.0.push(x);
        self
    }
    fn u32(mut self, x: u32) -> Self {
        self.0.extend(x.to_le_bytes());
        self
    }
    fn u64(mut self, x: u64) -> Self {
        self.0.extend(x.to_le_bytes());
        self
    }
    fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend(b);
        self
    }
    fn str(self, s: &str) -> Self {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }
    fn tensor(mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> Self {
        self = self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self = self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    fn pad(mut self, align: usize) -> Self {
        while !self.0.len().is_multiple_of(align) {
            self.0.push(0);
        }
        self
    }
    fn parse(self) -> Result<GgufFile, GgufError> {
        GgufFile::from_bytes(self.0)
    }
}

fn assert_invalid(r: Result<GgufFile, GgufError>, needle: &str) {
    match r {
        Err(GgufError::Invalid { what }) => assert!(what.contains(needle), "{what}"),
        other => panic!("expected Invalid containing {needle:?}, got {other:?}"),
    }
}

fn assert_truncated(r: Result<GgufFile, GgufError>, needle: &str) {
    match r {
        Err(GgufError::Truncated { what, .. }) => assert!(what.contains(needle), "{what}"),
        other => panic!("expected Truncated containing {needle:?}, got {other:?}"),
    }
}

#[test]
fn overlapping_or_out_of_order_tensor_data_is_refused() {
    // Regression: a tensor whose data overlapped another's loaded, aliasing the two.
    let two = |second_offset: u64, first_offset: u64| {
        Raw::new(3, 2, 0)
            .tensor("a", &[8], 0, first_offset)
            .tensor("b", &[8], 0, second_offset)
            .pad(32)
            .bytes(&[0u8; 96])
            .parse()
    };
    assert!(two(32, 0).is_ok());
    assert_invalid(two(0, 0), "overlapping");
    assert_invalid(two(0, 32), "out-of-order");
}

#[test]
fn huge_lengths_and_counts_fail_fast() {
    // key length 2^60
    let r = Raw::new(3, 0, 1).u64(1 << 60).bytes(&[0; 64]).parse();
    match r {
        Err(GgufError::Truncated { what, needed, .. }) => {
            assert_eq!(what, "metadata key 0");
            assert_eq!(needed, 1 << 60);
        }
        other => panic!("{other:?}"),
    }
    // string value length u64::MAX
    let r = Raw::new(3, 0, 1).str("k").u32(8).u64(u64::MAX).parse();
    assert_truncated(r, "value of metadata key 'k'");
    // metadata count 2^60 / tensor count 2^60
    assert_truncated(
        Raw::new(3, 0, 1 << 60).bytes(&[0; 100]).parse(),
        "key/value",
    );
    assert_truncated(
        Raw::new(3, 1 << 60, 0).bytes(&[0; 100]).parse(),
        "tensor infos",
    );
    assert_truncated(Raw::new(3, u64::MAX, u64::MAX).parse(), "metadata");
    // array of 2^60 u64 / strings / arrays
    for elem in [10, 8, 9] {
        let r = Raw::new(3, 0, 1)
            .str("arr")
            .u32(9)
            .u32(elem)
            .u64(1 << 60)
            .parse();
        assert_truncated(r, "metadata key 'arr'");
    }
    // tensor name length 2^60
    assert_truncated(
        Raw::new(3, 1, 0).u64(1 << 60).bytes(&[0; 64]).parse(),
        "tensor 0 name",
    );
}

#[test]
fn deeply_nested_arrays_rejected_without_stack_overflow() {
    let mut raw = Raw::new(3, 0, 1).str("deep").u32(9);
    for _ in 0..100_000 {
        raw = raw.u32(9).u64(1);
    }
    raw = raw.u32(0).u64(0);
    assert_invalid(raw.parse(), "nests arrays deeper");
    // MAX_ARRAY_DEPTH levels are fine
    let mut raw = Raw::new(3, 0, 1).str("ok").u32(9);
    for _ in 0..MAX_ARRAY_DEPTH - 1 {
        raw = raw.u32(9).u64(1);
    }
    let f = raw.u32(0).u64(1).u8(7).parse().unwrap();
    let mut v = f.metadata().get("ok").unwrap();
    for _ in 0..MAX_ARRAY_DEPTH {
        match v {
            MetaValue::Array(items) => v = &items[0],
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(v, &MetaValue::U8(7));
}

#[test]
fn malformed_metadata_rejected() {
    assert_invalid(
        Raw::new(3, 0, 1).str("k").u32(17).u32(0).parse(),
        "unknown value type 17",
    );
    assert_invalid(
        Raw::new(3, 0, 1).str("k").u32(9).u32(13).u64(0).parse(),
        "unknown array element type 13",
    );
    assert_invalid(
        Raw::new(3, 0, 1).str("k").u32(7).u8(2).parse(),
        "bool value 2",
    );
    assert_invalid(
        Raw::new(3, 0, 1)
            .u64(2)
            .bytes(&[0xC3, 0x28])
            .u32(0)
            .u8(0)
            .parse(),
        "not valid UTF-8",
    );
    assert_invalid(
        Raw::new(3, 0, 1).str("k").u32(8).u64(1).u8(0xFF).parse(),
        "not valid UTF-8",
    );
    assert_invalid(
        Raw::new(3, 0, 2)
            .str("k")
            .u32(0)
            .u8(1)
            .str("k")
            .u32(0)
            .u8(2)
            .parse(),
        "duplicate metadata key 'k'",
    );
}

#[test]
fn bad_alignment_rejected() {
    for a in [0u32, 3, 48] {
        let r = Raw::new(3, 0, 1).str(ALIGNMENT_KEY).u32(4).u32(a).parse();
        assert_invalid(r, "power of two");
    }
    let r = Raw::new(3, 0, 1).str(ALIGNMENT_KEY).u32(10).u64(32).parse();
    assert_invalid(r, "expected u32");
}

#[test]
fn malformed_tensor_infos_rejected() {
    for n_dims in [0u32, 5] {
        let r = Raw::new(3, 1, 0)
            .str("t")
            .u32(n_dims)
            .bytes(&[0; 64])
            .parse();
        assert_invalid(r, "dimensions (must be 1..=4)");
    }
    let r = Raw::new(3, 1, 0)
        .tensor("t", &[1 << 32, 1 << 32, 1 << 32], 0, 0)
        .parse();
    assert_invalid(r, "overflow");
    let r = Raw::new(3, 1, 0).tensor("t", &[1 << 63], 0, 0).parse();
    assert_invalid(r, "overflow");
    let r = Raw::new(3, 1, 0)
        .tensor("t", &[4], 0, 4)
        .pad(32)
        .bytes(&[0; 64])
        .parse();
    assert_invalid(r, "not a multiple of the alignment");
    let r = Raw::new(3, 2, 0)
        .tensor("t", &[4], 0, 0)
        .tensor("t", &[4], 0, 32)
        .pad(32)
        .bytes(&[0; 64])
        .parse();
    assert_invalid(r, "duplicate tensor name 't'");
    let r = Raw::new(3, 1, 0)
        .tensor("q", &[16, 2], 8, 0)
        .pad(32)
        .bytes(&[0; 34])
        .parse();
    assert_invalid(r, "row length 16");
    let r = Raw::new(3, 1, 0)
        .tensor("t", &[4], 0, u64::MAX - 31)
        .parse();
    assert_invalid(r, "overflows");
    let r = Raw::new(3, 1, 0)
        .tensor("big", &[1 << 40], 0, 0)
        .pad(32)
        .bytes(&[0; 64])
        .parse();
    match r {
        Err(GgufError::Truncated { what, needed, .. }) => {
            assert_eq!(what, "tensor 'big' data");
            assert_eq!(needed, 4 << 40);
        }
        other => panic!("{other:?}"),
    }
    // bad UTF-8 tensor name
    let r = Raw::new(3, 1, 0)
        .u64(1)
        .u8(0x80)
        .u32(1)
        .u64(1)
        .u32(0)
        .u64(0)
        .parse();
    assert_invalid(r, "tensor 0 name is not valid UTF-8");
}

#[test]
fn zero_tensors_and_empty_tensors_ok() {
    let f = Raw::new(3, 0, 0).parse().unwrap();
    assert!(f.tensors().is_empty());
    assert!(f.metadata().is_empty());
    let f = Raw::new(3, 1, 0)
        .tensor("e", &[0, 5], 2, 0)
        .pad(32)
        .parse()
        .unwrap();
    assert!(f.tensor_f32("e").unwrap().is_empty());
    assert_eq!(f.tensor_info("e").unwrap().shape(), vec![5, 0]);
}
