//! Test fixtures (feature `testing`): tiny random Llama models written by the tests themselves
//! (a Hugging Face folder with safetensors, config.json, tokenizer.json and a chat template; a GGUF
//! file with Q8_0/Q4_0/Q4_1/F32 tensors and the tokenizer in its metadata), a plain-Rust `f64`
//! reference forward pass, and a macro that instantiates a test module per compiled CPU backend.
//! Fixtures panic on I/O failure, as test fixtures do.

use crate::config::LlamaConfig;
use crate::gguf::dequant::dequantize;
use crate::gguf::quant::{quantize_q4_0, quantize_q4_1, quantize_q8_0};
use crate::gguf::writer::GgufWriter;
use crate::gguf::{GgmlType, MetaValue};
use crate::tokenizer::{GgufTokenizerSpec, TextTokenizer, byte_level_alphabet};
use crate::weights::{HostTensor, WeightSource, layer_name, llama_tensor_list, permute_rope_rows};
use crate::{ModelError, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::path::Path;

/// Named weights (HF names), row-major.
pub type Weights = BTreeMap<String, HostTensor>;

/// A tiny grouped-query Llama: vocab 300 (byte-level alphabet + merges + specials), d = 32.
pub fn tiny_config() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 300,
        hidden_size: 32,
        intermediate_size: 64,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 8,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-5,
        max_position: 128,
        tie_word_embeddings: true,
        bos_token_id: Some(1),
        eos_token_ids: vec![2],
    }
}

fn uniform(rng: &mut ChaCha8Rng) -> f32 {
    ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

/// Random weights of `cfg` (norm weights around 1, matrices of scale ~0.3), drawn in the order of
/// [`llama_tensor_list`].
pub fn random_weights(cfg: &LlamaConfig, seed: u64, with_lm_head: bool) -> Weights {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut w = Weights::new();
    for (name, shape) in llama_tensor_list(cfg, with_lm_head) {
        // (scale, offset) of each tensor's uniform values.
        let (scale, offset) = if name == "model.embed_tokens.weight" {
            (1.0, 0.0)
        } else if name == "lm_head.weight" {
            (0.5, 0.0)
        } else if name.ends_with("norm.weight") {
            (0.2, 1.0)
        } else if name.ends_with("q_proj.weight") || name.ends_with("k_proj.weight") {
            (0.4, 0.0)
        } else {
            (0.3, 0.0)
        };
        let n = shape.iter().product();
        let data = (0..n).map(|_| offset + scale * uniform(&mut rng)).collect();
        w.insert(name, HostTensor { shape, data });
    }
    w
}

/// A [`WeightSource`] over an in-memory map.
pub struct MapSource(pub Weights);

impl WeightSource for MapSource {
    fn tensor(&self, name: &str) -> Result<HostTensor> {
        self.0
            .get(name)
            .cloned()
            .ok_or_else(|| ModelError::MissingTensor { name: name.into() })
    }
    fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

/// The tiny tokenizer spec: 256 byte-level pieces, 40 merges of frequent pairs, 4 specials.
pub fn tiny_tokenizer_spec() -> GgufTokenizerSpec {
    let specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"];
    let mut tokens: Vec<String> = specials.iter().map(|s| s.to_string()).collect();
    tokens.extend(byte_level_alphabet());
    let pairs = [
        ("Ġ", "t"),
        ("h", "e"),
        ("i", "n"),
        ("Ġ", "a"),
        ("e", "r"),
        ("o", "n"),
        ("Ġt", "he"),
        ("r", "e"),
        ("a", "n"),
        ("Ġ", "s"),
        ("Ġ", "w"),
        ("o", "r"),
        ("e", "n"),
        ("a", "t"),
        ("Ġ", "c"),
        ("i", "s"),
        ("Ġ", "b"),
        ("o", "u"),
        ("l", "l"),
        ("Ġ", "f"),
        ("Ġ", "p"),
        ("Ġ", "o"),
        ("e", "s"),
        ("i", "t"),
        ("a", "r"),
        ("Ġ", "m"),
        ("e", "d"),
        ("Ġ", "d"),
        ("a", "l"),
        ("i", "c"),
        ("Ġa", "n"),
        ("Ġ", "h"),
        ("in", "g"),
        ("Ġ", "l"),
        ("o", "w"),
        ("l", "e"),
        ("Ġ", "e"),
        ("s", "t"),
        ("Ġw", "or"),
        ("Ġ", "n"),
    ];
    let mut merges = Vec::new();
    for (a, b) in pairs {
        merges.push(format!("{a} {b}"));
        tokens.push(format!("{a}{b}"));
    }
    let mut token_types = vec![1i32; tokens.len()];
    token_types[..specials.len()]
        .iter_mut()
        .for_each(|t| *t = 3);
    GgufTokenizerSpec {
        model: "gpt2".into(),
        pre: Some("smollm".into()),
        tokens,
        merges,
        token_types: Some(token_types),
    }
}

/// A ChatML template without a default system prompt.
pub const CHAT_TEMPLATE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

fn config_json(cfg: &LlamaConfig) -> String {
    serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "rope_theta": cfg.rope_theta,
        "rms_norm_eps": cfg.rms_norm_eps,
        "max_position_embeddings": cfg.max_position,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_ids[0],
        "hidden_act": "silu",
    })
    .to_string()
}

/// Element type of a safetensors file written by [`write_hf_folder`].
#[derive(Clone, Copy)]
pub enum StDtype {
    /// 32-bit floats.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
}

fn st_bytes(data: &[f32], dt: StDtype) -> (safetensors::Dtype, Vec<u8>) {
    match dt {
        StDtype::F32 => (
            safetensors::Dtype::F32,
            data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        StDtype::F16 => (
            safetensors::Dtype::F16,
            data.iter()
                .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                .collect(),
        ),
        StDtype::BF16 => (
            safetensors::Dtype::BF16,
            data.iter()
                .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                .collect(),
        ),
    }
}

/// Writes `dir/config.json`, the weights as safetensors (sharded in two files when `shards`), and a
/// tokenizer (`tokenizer.json`, `tokenizer_config.json` with a chat template).
pub fn write_hf_folder(dir: &Path, cfg: &LlamaConfig, w: &Weights, dt: StDtype, shards: bool) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), config_json(cfg)).unwrap();
    let names: Vec<&String> = w.keys().collect();
    let parts: Vec<Vec<&String>> = if shards {
        let half = names.len() / 2;
        vec![names[..half].to_vec(), names[half..].to_vec()]
    } else {
        vec![names]
    };
    let mut weight_map = serde_json::Map::new();
    for (k, part) in parts.iter().enumerate() {
        let file = if shards {
            format!("model-{:05}-of-{:05}.safetensors", k + 1, parts.len())
        } else {
            "model.safetensors".into()
        };
        let owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = part
            .iter()
            .map(|name| {
                let t = &w[*name];
                let (dtype, bytes) = st_bytes(&t.data, dt);
                ((*name).clone(), dtype, t.shape.clone(), bytes)
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = owned
            .iter()
            .map(|(n, d, s, b)| {
                (
                    n.clone(),
                    safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, None, &dir.join(&file)).unwrap();
        for name in part {
            weight_map.insert((*name).clone(), serde_json::Value::String(file.clone()));
        }
    }
    if shards {
        let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    }
    let tok = TextTokenizer::from_gguf(tiny_tokenizer_spec()).unwrap();
    tok.inner().save(dir.join("tokenizer.json"), false).unwrap();
    let tc = serde_json::json!({ "chat_template": CHAT_TEMPLATE, "bos_token": "<|im_start|>", "eos_token": "<|im_end|>" });
    std::fs::write(dir.join("tokenizer_config.json"), tc.to_string()).unwrap();
}

/// Quantises then dequantises a row-major matrix exactly as the GGUF writer + reader will.
pub fn roundtrip(data: &[f32], ty: GgmlType) -> Vec<f32> {
    let bytes = match ty {
        GgmlType::Q8_0 => quantize_q8_0(data).unwrap(),
        GgmlType::Q4_0 => quantize_q4_0(data).unwrap(),
        GgmlType::Q4_1 => quantize_q4_1(data).unwrap(),
        _ => return data.to_vec(),
    };
    dequantize(ty, &bytes, data.len(), "t").unwrap()
}

/// The GGUF type used for each tensor of the tiny GGUF model (like the real file: Q8_0 embedding,
/// Q4_1 layer matrices, F32 norms); Q4_0 for the down projections to cover it too.
pub fn gguf_type(name: &str) -> GgmlType {
    if name.ends_with("norm.weight") {
        GgmlType::F32
    } else if name == "model.embed_tokens.weight" {
        GgmlType::Q8_0
    } else if name.contains("down_proj") {
        GgmlType::Q4_0
    } else {
        GgmlType::Q4_1
    }
}

/// The weights a GGUF reader will see after quantisation (HF layout).
pub fn quantised_view(w: &Weights) -> Weights {
    w.iter()
        .map(|(n, t)| {
            (
                n.clone(),
                HostTensor {
                    shape: t.shape.clone(),
                    data: roundtrip(&t.data, gguf_type(n)),
                },
            )
        })
        .collect()
}

/// Writes a GGUF v3 file of `cfg`/`w` the way llama.cpp's converter does (llama.cpp names, q/k rows
/// permuted, quantised per [`gguf_type`], tokenizer and chat template in the metadata).
pub fn write_gguf(path: &Path, cfg: &LlamaConfig, w: &Weights) {
    let mut g = GgufWriter::new();
    let u32v = |x: usize| MetaValue::U32(x as u32);
    g.add_meta("general.architecture", MetaValue::String("llama".into()));
    g.add_meta("general.alignment", MetaValue::U32(32));
    g.add_meta("llama.block_count", u32v(cfg.num_layers));
    g.add_meta("llama.context_length", u32v(cfg.max_position));
    g.add_meta("llama.embedding_length", u32v(cfg.hidden_size));
    g.add_meta("llama.feed_forward_length", u32v(cfg.intermediate_size));
    g.add_meta("llama.attention.head_count", u32v(cfg.num_heads));
    g.add_meta("llama.attention.head_count_kv", u32v(cfg.num_kv_heads));
    g.add_meta("llama.rope.freq_base", MetaValue::F32(cfg.rope_theta));
    g.add_meta(
        "llama.attention.layer_norm_rms_epsilon",
        MetaValue::F32(cfg.rms_norm_eps),
    );
    g.add_meta("llama.rope.dimension_count", u32v(cfg.head_dim));
    let spec = tiny_tokenizer_spec();
    g.add_meta(
        "tokenizer.ggml.model",
        MetaValue::String(spec.model.clone()),
    );
    g.add_meta("tokenizer.ggml.pre", MetaValue::String("smollm".into()));
    g.add_meta(
        "tokenizer.ggml.tokens",
        MetaValue::Array(spec.tokens.iter().cloned().map(MetaValue::String).collect()),
    );
    g.add_meta(
        "tokenizer.ggml.merges",
        MetaValue::Array(spec.merges.iter().cloned().map(MetaValue::String).collect()),
    );
    g.add_meta(
        "tokenizer.ggml.token_type",
        MetaValue::Array(
            spec.token_types
                .clone()
                .unwrap()
                .into_iter()
                .map(MetaValue::I32)
                .collect(),
        ),
    );
    g.add_meta("tokenizer.ggml.bos_token_id", MetaValue::U32(1));
    g.add_meta("tokenizer.ggml.eos_token_id", MetaValue::U32(2));
    g.add_meta(
        "tokenizer.chat_template",
        MetaValue::String(CHAT_TEMPLATE.into()),
    );
    for (name, t) in w {
        let gname = gguf_name(name);
        let data = if name.contains("q_proj") {
            permute_rope_rows(&t.data, cfg.num_heads, cfg.head_dim, t.shape[1]).unwrap()
        } else if name.contains("k_proj") {
            permute_rope_rows(&t.data, cfg.num_kv_heads, cfg.head_dim, t.shape[1]).unwrap()
        } else {
            t.data.clone()
        };
        g.add_tensor(&gname, &t.shape, &data, gguf_type(name))
            .unwrap();
    }
    g.write(path).unwrap();
}

fn gguf_name(hf: &str) -> String {
    match hf {
        "model.embed_tokens.weight" => return "token_embd.weight".into(),
        "model.norm.weight" => return "output_norm.weight".into(),
        "lm_head.weight" => return "output.weight".into(),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.").unwrap();
    let (i, suffix) = rest.split_once('.').unwrap();
    let g = match suffix {
        "input_layernorm.weight" => "attn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        other => panic!("unknown {other}"),
    };
    format!("blk.{i}.{g}")
}

/// Independent `f64` reference of the Llama forward pass (HF semantics): logits of every position.
pub fn reference_logits(cfg: &LlamaConfig, w: &Weights, tokens: &[u32]) -> Vec<Vec<f64>> {
    let (d, hd, nh, nkv) = (
        cfg.hidden_size,
        cfg.head_dim,
        cfg.num_heads,
        cfg.num_kv_heads,
    );
    let get = |n: &str| &w[n].data;
    // y = W x for W [out, in]
    let lin = |wm: &[f32], x: &[f64], out: usize| -> Vec<f64> {
        (0..out)
            .map(|o| {
                (0..x.len())
                    .map(|i| wm[o * x.len() + i] as f64 * x[i])
                    .sum()
            })
            .collect()
    };
    let norm = |x: &[f64], g: &[f32]| -> Vec<f64> {
        let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
        let inv = 1.0 / (ms + cfg.rms_norm_eps as f64).sqrt();
        x.iter().zip(g).map(|(v, g)| v * inv * *g as f64).collect()
    };
    let rope = |v: &mut [f64], pos: usize| {
        for i in 0..hd / 2 {
            let f = 1.0 / (cfg.rope_theta as f64).powf((2 * i) as f64 / hd as f64);
            let (c, s) = ((pos as f64 * f).cos(), (pos as f64 * f).sin());
            let (a, b) = (v[i], v[i + hd / 2]);
            v[i] = a * c - b * s;
            v[i + hd / 2] = b * c + a * s;
        }
    };
    let emb = get("model.embed_tokens.weight");
    let mut xs: Vec<Vec<f64>> = tokens
        .iter()
        .map(|&t| {
            emb[t as usize * d..(t as usize + 1) * d]
                .iter()
                .map(|&v| v as f64)
                .collect()
        })
        .collect();
    for l in 0..cfg.num_layers {
        let n = |s: &str| layer_name(l, s);
        let mut ks = Vec::new();
        let mut vs = Vec::new();
        let mut qs = Vec::new();
        for (p, x) in xs.iter().enumerate() {
            let h = norm(x, get(&n("input_layernorm.weight")));
            let mut q = lin(get(&n("self_attn.q_proj.weight")), &h, nh * hd);
            let mut k = lin(get(&n("self_attn.k_proj.weight")), &h, nkv * hd);
            let v = lin(get(&n("self_attn.v_proj.weight")), &h, nkv * hd);
            for hh in 0..nh {
                rope(&mut q[hh * hd..(hh + 1) * hd], p);
            }
            for hh in 0..nkv {
                rope(&mut k[hh * hd..(hh + 1) * hd], p);
            }
            qs.push(q);
            ks.push(k);
            vs.push(v);
        }
        let rep = nh / nkv;
        let mut new_xs = Vec::new();
        for (p, x) in xs.iter().enumerate() {
            let mut att = vec![0.0; nh * hd];
            for hh in 0..nh {
                let g = hh / rep;
                let scores: Vec<f64> = (0..=p)
                    .map(|j| {
                        (0..hd)
                            .map(|c| qs[p][hh * hd + c] * ks[j][g * hd + c])
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for j in 0..=p {
                    for c in 0..hd {
                        att[hh * hd + c] += e[j] / z * vs[j][g * hd + c];
                    }
                }
            }
            let o = lin(get(&n("self_attn.o_proj.weight")), &att, d);
            let x1: Vec<f64> = x.iter().zip(&o).map(|(a, b)| a + b).collect();
            let h = norm(&x1, get(&n("post_attention_layernorm.weight")));
            let f = cfg.intermediate_size;
            let gt = lin(get(&n("mlp.gate_proj.weight")), &h, f);
            let up = lin(get(&n("mlp.up_proj.weight")), &h, f);
            let m: Vec<f64> = gt
                .iter()
                .zip(&up)
                .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            let dn = lin(get(&n("mlp.down_proj.weight")), &m, d);
            new_xs.push(x1.iter().zip(&dn).map(|(a, b)| a + b).collect());
        }
        xs = new_xs;
    }
    let head = if w.contains_key("lm_head.weight") {
        get("lm_head.weight")
    } else {
        emb
    };
    xs.iter()
        .map(|x| {
            let h = norm(x, get("model.norm.weight"));
            lin(head, &h, cfg.vocab_size)
        })
        .collect()
}

/// Largest absolute difference between two logit rows.
pub fn max_diff(a: &[f32], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - y).abs())
        .fold(0.0, f64::max)
}

/// Instantiates a test module once per compiled CPU backend (`flex`, `ndarray`): inside, `B` is the
/// backend. The `cfg(feature = ...)` checks are evaluated in the calling crate, which must forward
/// features of the same names.
#[macro_export]
macro_rules! for_each_backend {
    ($($body:tt)*) => {
        #[cfg(feature = "flex")]
        mod flex {
            #[allow(unused_imports)]
            use super::*;
            type B = $crate::backend::FlexBackend;
            $($body)*
        }
        #[cfg(feature = "ndarray")]
        mod ndarray {
            #[allow(unused_imports)]
            use super::*;
            type B = $crate::backend::NdArrayBackend;
            $($body)*
        }
    };
}
