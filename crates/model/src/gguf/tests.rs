//! Tests of the GGUF reader (and of the writer against it).

use super::writer::GgufWriter;
use super::*;

mod hostile;

/// Small deterministic PRNG (splitmix64) so tests need no extra crates.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in [-1, 1).
    fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

fn all_meta() -> Vec<(&'static str, MetaValue)> {
    use MetaValue::*;
    vec![
        ("t.u8", U8(200)),
        ("t.i8", I8(-100)),
        ("t.u16", U16(60000)),
        ("t.i16", I16(-30000)),
        ("t.u32", U32(4_000_000_000)),
        ("t.i32", I32(-2_000_000_000)),
        ("t.f32", F32(-3.25e-5)),
        ("t.bool_true", Bool(true)),
        ("t.bool_false", Bool(false)),
        ("t.string", String("héllo wörld ✓ 日本語 🦀".into())),
        ("t.empty_string", String(std::string::String::new())),
        ("t.u64", U64(u64::MAX)),
        ("t.i64", I64(i64::MIN)),
        ("t.f64", F64(-1.5e300)),
        ("t.arr_u8", Array(vec![U8(0), U8(255)])),
        ("t.arr_i32", Array(vec![I32(-1), I32(7), I32(i32::MAX)])),
        ("t.arr_f32", Array(vec![F32(0.5), F32(-1.0)])),
        ("t.arr_bool", Array(vec![Bool(true), Bool(false)])),
        (
            "t.arr_str",
            Array(vec![
                String("a".into()),
                String("Ġthe".into()),
                String("日本".into()),
            ]),
        ),
        ("t.arr_empty", Array(vec![])),
        (
            "t.arr_nested",
            Array(vec![
                Array(vec![U16(1), U16(2)]),
                Array(vec![String("ü".into())]),
                Array(vec![]),
                Array(vec![Array(vec![F64(2.5)])]),
            ]),
        ),
        ("t.arr_u64", Array(vec![U64(1), U64(u64::MAX)])),
        ("t.arr_i64", Array(vec![I64(-5), I64(5)])),
        ("t.arr_f64", Array(vec![F64(1e-300)])),
        ("t.arr_i8", Array(vec![I8(-128)])),
        ("t.arr_i16", Array(vec![I16(-2)])),
        ("t.arr_u16", Array(vec![U16(9)])),
        ("t.arr_u32", Array(vec![U32(3), U32(4)])),
        ("ключ.日本", String("non-ASCII key".into())),
    ]
}

const TYPES: [GgmlType; 6] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
];

/// Asserts `got` reconstructs `orig` within the precision of `ty`.
fn assert_close(ty: GgmlType, name: &str, orig: &[f32], got: &[f32]) {
    assert_eq!(orig.len(), got.len(), "{name}");
    match ty {
        GgmlType::F32 => assert_eq!(orig, got, "{name}"),
        GgmlType::F16 | GgmlType::BF16 => {
            let rel = if ty == GgmlType::F16 {
                2f32.powi(-11)
            } else {
                2f32.powi(-8)
            };
            for (a, b) in orig.iter().zip(got) {
                assert!((a - b).abs() <= a.abs() * rel + 1e-7, "{name}: {a} vs {b}");
            }
        }
        _ => {
            for (bi, (xs, ys)) in orig.chunks(32).zip(got.chunks(32)).enumerate() {
                let min = xs.iter().copied().fold(f32::INFINITY, f32::min);
                let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
                let extreme = xs
                    .iter()
                    .fold(0f32, |e, &v| if v.abs() > e.abs() { v } else { e });
                for (x, y) in xs.iter().zip(ys) {
                    let tol = match ty {
                        GgmlType::Q8_0 => amax / 127.0 / 2.0 * 1.002 + 1e-6,
                        GgmlType::Q4_0 => {
                            let d = extreme / -8.0;
                            // The value opposite to the extreme may be clamped to +7.
                            let step = if d != 0.0 && x / d > 7.5 { 1.0 } else { 0.5 };
                            d.abs() * step * 1.002 + 1e-6
                        }
                        _ => (max - min) / 15.0 / 2.0 * 1.002 + min.abs() * 1e-3 + 1e-6,
                    };
                    assert!(
                        (x - y).abs() <= tol,
                        "{name} block {bi}: {x} vs {y} (tol {tol})"
                    );
                }
            }
        }
    }
}

#[test]
fn round_trip_all_metadata_and_tensor_types() {
    let mut w = GgufWriter::new();
    for (k, v) in all_meta() {
        w.add_meta(k, v);
    }
    let mut rng = Rng(42);
    let mut expected = Vec::new();
    for ty in TYPES {
        for shape in [vec![64], vec![3, 96], vec![2, 2, 32]] {
            let n: usize = shape.iter().product();
            let mut data: Vec<f32> = (0..n).map(|_| rng.f32() * 3.0).collect();
            if n >= 96 {
                // an all-zero block, a constant block and a tiny-valued block
                data[..32].fill(0.0);
                data[32..64].fill(1.5);
                for v in &mut data[64..96] {
                    *v *= 1e-3;
                }
            }
            let name = format!("{}.{}d", ty.name(), shape.len());
            w.add_tensor(&name, &shape, &data, ty).unwrap();
            expected.push((name, shape, data, ty));
        }
    }
    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 32);
    assert_eq!(f.data_offset() % 32, 0);

    let meta = all_meta();
    assert_eq!(f.metadata().len(), meta.len());
    for (k, v) in &meta {
        assert_eq!(f.metadata().get(*k), Some(v), "{k}");
    }

    let names: Vec<&str> = f.tensors().iter().map(|t| t.name.as_str()).collect();
    let expected_names: Vec<&str> = expected.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names, expected_names);
    for (name, shape, data, ty) in &expected {
        let info = f.tensor_info(name).unwrap();
        assert_eq!(&info.shape(), shape);
        let ne: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        assert_eq!(info.dims, ne);
        assert_eq!(info.ggml_type, *ty);
        assert_eq!(info.n_elements(), data.len() as u64);
        assert_eq!(info.offset % 32, 0);
        let bytes = f.tensor_bytes(name).unwrap();
        assert_eq!(Some(bytes.len() as u64), ty.bytes_for(info.n_elements()));
        let got = f.tensor_f32(name).unwrap();
        assert_close(*ty, name, data, &got);
        if data.len() >= 96 {
            assert_eq!(&got[..32], &data[..32], "{name}: zero block");
            if *ty != GgmlType::Q8_0 {
                // Q8_0 stores 1.5 as 127 * f16(1.5 / 127), which is inexact.
                assert_eq!(&got[32..64], &data[32..64], "{name}: constant block");
            }
        }
    }
}

#[test]
fn file_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<GgufFile>();
    assert_send_sync::<GgufError>();
}

#[test]
fn shape_reverses_ne() {
    let t = TensorInfo {
        name: "token_embd.weight".into(),
        dims: vec![576, 49152],
        ggml_type: GgmlType::Q8_0,
        offset: 0,
    };
    assert_eq!(t.shape(), vec![49152, 576]);
    assert_eq!(t.n_elements(), 576 * 49152);
}

#[test]
fn two_d_layout_is_row_major() {
    // shape [2, 3] = [[0, 1, 2], [3, 4, 5]] -> ne = [3, 2]
    let data = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
    let mut w = GgufWriter::new();
    w.add_tensor("m", &[2, 3], &data, GgmlType::F32).unwrap();
    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
    assert_eq!(f.tensor_info("m").unwrap().dims, vec![3, 2]);
    assert_eq!(f.tensor_f32("m").unwrap(), data);
    let raw = f.tensor_bytes("m").unwrap();
    assert_eq!(&raw[4..8], &1.0f32.to_le_bytes());
}

#[test]
fn custom_alignment_round_trips() {
    let mut w = GgufWriter::new();
    w.add_meta(ALIGNMENT_KEY, MetaValue::U32(64));
    w.add_tensor("a", &[3], &[1.0, 2.0, 3.0], GgmlType::F32)
        .unwrap();
    // amax = 127 -> d = 1, so every integer value is exact
    let b: Vec<f32> = (0..32)
        .map(|j| if j == 0 { 127.0 } else { j as f32 - 16.0 })
        .collect();
    w.add_tensor("b", &[32], &b, GgmlType::Q8_0).unwrap();
    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.data_offset() % 64, 0);
    assert_eq!(f.tensor_info("b").unwrap().offset, 64);
    assert_eq!(f.tensor_f32("a").unwrap(), [1.0, 2.0, 3.0]);
    assert_eq!(f.tensor_f32("b").unwrap(), b);
}

fn sample_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add_meta("general.architecture", MetaValue::String("llama".into()));
    w.add_meta("llama.block_count", MetaValue::U32(2));
    w.add_meta("llama.rope.freq_base", MetaValue::F32(10000.0));
    w.add_meta(
        "tokenizer.ggml.tokens",
        MetaValue::Array(vec![
            MetaValue::String("<s>".into()),
            MetaValue::String("é".into()),
        ]),
    );
    w.add_meta(
        "tokenizer.ggml.scores",
        MetaValue::Array(vec![MetaValue::F32(0.0), MetaValue::F32(-1.0)]),
    );
    w.add_meta(
        "nested",
        MetaValue::Array(vec![MetaValue::Array(vec![MetaValue::I64(3)])]),
    );
    w.add_meta("flag", MetaValue::Bool(true));
    let data: Vec<f32> = (0..64).map(|i| i as f32 / 8.0 - 4.0).collect();
    w.add_tensor("norm.weight", &[8], &data[..8], GgmlType::F32)
        .unwrap();
    w.add_tensor("blk.0.attn_q.weight", &[2, 32], &data, GgmlType::Q8_0)
        .unwrap();
    w.add_tensor("blk.0.ffn.weight", &[32], &data[..32], GgmlType::Q4_1)
        .unwrap();
    w.to_bytes()
}

#[test]
fn versions_2_and_3_readable_others_rejected() {
    for v in [2, 3] {
        let mut w = GgufWriter::new().with_version(v);
        w.add_meta("k", MetaValue::U8(1));
        w.add_tensor("t", &[4], &[1.0, 2.0, 3.0, 4.0], GgmlType::F16)
            .unwrap();
        let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
        assert_eq!(f.version(), v);
        assert_eq!(f.tensor_f32("t").unwrap(), [1.0, 2.0, 3.0, 4.0]);
    }
    for v in [0, 1, 4, 0x0300_0000] {
        let bytes = GgufWriter::new().with_version(v).to_bytes();
        match GgufFile::from_bytes(bytes) {
            Err(GgufError::UnsupportedVersion { version }) => assert_eq!(version, v),
            other => panic!("version {v}: {other:?}"),
        }
    }
    let msg = GgufError::UnsupportedVersion { version: 1 }.to_string();
    assert!(msg.contains("version 1"), "{msg}");
}

#[test]
fn bad_magic_rejected() {
    let mut bytes = sample_file();
    bytes[..4].copy_from_slice(b"GGML");
    match GgufFile::from_bytes(bytes) {
        Err(e @ GgufError::BadMagic { found }) => {
            assert_eq!(&found, b"GGML");
            assert!(e.to_string().contains("not a GGUF file"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unsupported_tensor_type_reported_on_access() {
    let mut w = GgufWriter::new();
    w.add_tensor("ok", &[2], &[1.0, 2.0], GgmlType::F32)
        .unwrap();
    w.add_raw_tensor(
        "blk.0.ffn_down.weight",
        &[256, 2],
        GgmlType::from_id(12),
        vec![7; 288],
    )
    .unwrap();
    w.add_raw_tensor("weird", &[3], GgmlType::from_id(99), vec![1, 2, 3])
        .unwrap();
    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
    let info = f.tensor_info("blk.0.ffn_down.weight").unwrap();
    assert_eq!(info.ggml_type, GgmlType::Other(12));
    assert_eq!(info.ggml_type.name(), "Q4_K");
    let err = f.tensor_f32("blk.0.ffn_down.weight").unwrap_err();
    match &err {
        GgufError::UnsupportedTensorType {
            name,
            ggml_type,
            type_name,
        } => {
            assert_eq!(name, "blk.0.ffn_down.weight");
            assert_eq!(*ggml_type, 12);
            assert_eq!(type_name, "Q4_K");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string()
            .contains("'blk.0.ffn_down.weight' has type Q4_K (12)")
    );
    // Raw bytes of a known layout are still available.
    assert_eq!(
        f.tensor_bytes("blk.0.ffn_down.weight").unwrap(),
        &[7; 288][..]
    );
    // Unknown layouts cannot even give bytes.
    for r in [
        f.tensor_f32("weird").map(|_| ()),
        f.tensor_bytes("weird").map(|_| ()),
    ] {
        match r {
            Err(GgufError::UnsupportedTensorType { type_name, .. }) => {
                assert_eq!(type_name, "type 99")
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(f.tensor_f32("ok").unwrap(), [1.0, 2.0]);
    assert!(matches!(
        f.tensor_f32("nope"),
        Err(GgufError::MissingTensor { name }) if name == "nope"
    ));
    assert!(matches!(
        f.tensor_bytes("nope"),
        Err(GgufError::MissingTensor { .. })
    ));
    assert!(f.tensor_info("nope").is_none());
}

#[test]
fn ggml_type_names_and_layouts() {
    let cases = [
        (0, "F32", Some(1), Some(4)),
        (1, "F16", Some(1), Some(2)),
        (2, "Q4_0", Some(32), Some(18)),
        (3, "Q4_1", Some(32), Some(20)),
        (4, "Q4_2", None, None),
        (8, "Q8_0", Some(32), Some(34)),
        (12, "Q4_K", Some(256), Some(144)),
        (13, "Q5_K", Some(256), Some(176)),
        (14, "Q6_K", Some(256), Some(210)),
        (30, "BF16", Some(1), Some(2)),
        (39, "MXFP4", Some(32), Some(17)),
        (40, "type 40", None, None),
        (u32::MAX, "type 4294967295", None, None),
    ];
    for (id, name, bs, bb) in cases {
        let t = GgmlType::from_id(id);
        assert_eq!(t.id(), id);
        assert_eq!(t.name(), name);
        assert_eq!(t.to_string(), name);
        assert_eq!(t.block_size(), bs, "{name}");
        assert_eq!(t.block_bytes(), bb, "{name}");
    }
    for id in 0..64 {
        assert_eq!(GgmlType::from_id(id).id(), id);
    }
    assert_eq!(GgmlType::from_id(8), GgmlType::Q8_0);
    assert_eq!(GgmlType::from_id(30), GgmlType::BF16);
    assert!(GgmlType::Other(1).is_supported());
    assert!(!GgmlType::Other(12).is_supported());
    assert_eq!(GgmlType::Q4_0.bytes_for(64), Some(36));
    assert_eq!(GgmlType::Q4_0.bytes_for(33), None);
}

#[test]
fn typed_getters() {
    let mut w = GgufWriter::new();
    for (k, v) in all_meta() {
        w.add_meta(k, v);
    }
    w.add_meta("neg", MetaValue::I32(-1));
    w.add_meta("pos_i8", MetaValue::I8(5));
    w.add_meta("f64_arr", MetaValue::Array(vec![MetaValue::F64(0.25)]));
    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();

    assert_eq!(f.get_str("t.string").unwrap(), "héllo wörld ✓ 日本語 🦀");
    assert_eq!(f.get_u64("t.u8").unwrap(), 200);
    assert_eq!(f.get_u64("t.u32").unwrap(), 4_000_000_000);
    assert_eq!(f.get_u64("t.u64").unwrap(), u64::MAX);
    assert_eq!(f.get_u64("pos_i8").unwrap(), 5);
    assert_eq!(f.get_f32("t.f32").unwrap(), -3.25e-5);
    assert_eq!(f.get_f32("t.f64").unwrap(), f32::NEG_INFINITY);
    assert!(f.get_bool("t.bool_true").unwrap());
    assert!(!f.get_bool("t.bool_false").unwrap());
    assert_eq!(f.get_str_array("t.arr_str").unwrap(), ["a", "Ġthe", "日本"]);
    assert!(f.get_str_array("t.arr_empty").unwrap().is_empty());
    assert_eq!(
        f.get_i64_array("t.arr_i32").unwrap(),
        [-1, 7, i32::MAX as i64]
    );
    assert_eq!(f.get_i64_array("t.arr_u8").unwrap(), [0, 255]);
    assert_eq!(f.get_f32_array("t.arr_f32").unwrap(), [0.5, -1.0]);
    assert_eq!(f.get_f32_array("f64_arr").unwrap(), [0.25]);

    for (r, exp, found) in [
        (f.get_str("t.u32").map(drop), "string", "u32"),
        (
            f.get_u64("t.string").map(drop),
            "unsigned integer",
            "string",
        ),
        (f.get_u64("t.f32").map(drop), "unsigned integer", "f32"),
        (f.get_f32("t.u32").map(drop), "f32", "u32"),
        (f.get_bool("t.u8").map(drop), "bool", "u8"),
        (
            f.get_str_array("t.string").map(drop),
            "array of string",
            "string",
        ),
        (
            f.get_str_array("t.arr_u32").map(drop),
            "array of string",
            "array of u32",
        ),
        (
            f.get_i64_array("t.arr_f32").map(drop),
            "array of integers",
            "array of f32",
        ),
        (
            f.get_f32_array("t.arr_i32").map(drop),
            "array of f32",
            "array of i32",
        ),
        (
            f.get_f32_array("t.arr_nested").map(drop),
            "array of f32",
            "array of array",
        ),
    ] {
        match r {
            Err(GgufError::WrongKeyType {
                expected, found: f, ..
            }) => assert_eq!((expected, f), (exp, found)),
            other => panic!("{other:?}"),
        }
    }

    assert!(matches!(f.get_u64("neg"), Err(GgufError::Invalid { .. })));
    assert!(matches!(f.get_u64("t.i64"), Err(GgufError::Invalid { .. })));
    assert!(matches!(
        f.get_i64_array("t.arr_u64"),
        Err(GgufError::Invalid { .. })
    ));

    for r in [
        f.get_str("missing").map(drop),
        f.get_u64("missing").map(drop),
        f.get_f32("missing").map(drop),
        f.get_bool("missing").map(drop),
        f.get_str_array("missing").map(drop),
        f.get_i64_array("missing").map(drop),
        f.get_f32_array("missing").map(drop),
    ] {
        assert!(matches!(r, Err(GgufError::MissingKey { ref key }) if key == "missing"));
    }
    let msg = f.get_str("t.u32").unwrap_err().to_string();
    assert_eq!(msg, "metadata key 't.u32' has type u32, expected string");
}

#[test]
fn meta_value_type_names() {
    let names: Vec<&str> = all_meta().iter().map(|(_, v)| v.type_name()).collect();
    assert_eq!(
        &names[..14],
        [
            "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "bool", "string", "string",
            "u64", "i64", "f64"
        ]
    );
    assert_eq!(MetaValue::Array(vec![]).type_name(), "array");
}

#[test]
fn open_reads_files_and_reports_io_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    std::fs::write(&path, sample_file()).unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(f.get_u64("llama.block_count").unwrap(), 2);
    assert_eq!(f.tensor_f32("norm.weight").unwrap().len(), 8);
    assert!(format!("{f:?}").contains("GgufFile"));

    let missing = dir.path().join("missing.gguf");
    let err = GgufFile::open(&missing).unwrap_err();
    assert!(matches!(err, GgufError::Io { ref path, .. } if path == &missing));
    assert!(
        err.to_string()
            .starts_with(&format!("cannot read {}: ", missing.display()))
    );

    let empty = dir.path().join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        GgufFile::open(&empty),
        Err(GgufError::Truncated { .. })
    ));
    assert!(matches!(
        GgufFile::open(dir.path()),
        Err(GgufError::Io { .. }) | Err(GgufError::Truncated { .. })
    ));
}
