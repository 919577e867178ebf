//! Tokenizer tests: GGUF-built tokenizer against the SmolLM2 golden ids, special
//! tokens, error cases and a tiny synthetic byte-level vocabulary.

use std::path::Path;

use llm_auction_model::tokenizer::{
    GgufTokenizerSpec, TOKEN_TYPE_CONTROL, TOKEN_TYPE_NORMAL, TOKEN_TYPE_USER_DEFINED,
    TextTokenizer, TokenizerError, byte_level_alphabet,
};
use serde_json::Value;

const REFERENCE_TOKENIZER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/tokenizer.digits-fixed.json"
);
const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/smollm2_golden_public.json"
);

fn read_json(path: &str) -> Value {
    let text = std::fs::read_to_string(path).expect("fixture readable");
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// Builds the GGUF metadata SmolLM2's GGUF would carry from the reference tokenizer.json.
fn spec_from_reference(pre: Option<&str>) -> GgufTokenizerSpec {
    let json = read_json(REFERENCE_TOKENIZER);
    let model = &json["model"];
    let vocab = model["vocab"].as_object().expect("vocab object");
    let mut by_id: Vec<(u64, String)> = vocab
        .iter()
        .map(|(piece, id)| (id.as_u64().expect("id"), piece.clone()))
        .collect();
    by_id.sort();
    for (index, (id, _)) in by_id.iter().enumerate() {
        assert_eq!(*id, index as u64, "vocab ids are contiguous");
    }
    let tokens: Vec<String> = by_id.into_iter().map(|(_, piece)| piece).collect();

    let merges: Vec<String> = model["merges"]
        .as_array()
        .expect("merges array")
        .iter()
        .map(|m| match m {
            Value::String(s) => s.clone(),
            Value::Array(pair) => format!(
                "{} {}",
                pair[0].as_str().expect("left"),
                pair[1].as_str().expect("right")
            ),
            other => panic!("unexpected merge {other}"),
        })
        .collect();

    let mut token_types = vec![TOKEN_TYPE_NORMAL; tokens.len()];
    for added in json["added_tokens"].as_array().expect("added_tokens") {
        let id = added["id"].as_u64().expect("added id") as usize;
        token_types[id] = if added["special"].as_bool() == Some(true) {
            TOKEN_TYPE_CONTROL
        } else {
            TOKEN_TYPE_USER_DEFINED
        };
    }

    GgufTokenizerSpec {
        model: "gpt2".to_string(),
        pre: pre.map(str::to_string),
        tokens,
        merges,
        token_types: Some(token_types),
    }
}

fn ids_of(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .expect("id list")
        .iter()
        .map(|v| v.as_u64().expect("id") as u32)
        .collect()
}

/// (text, expected ids) pairs from the golden file.
fn golden_cases() -> Vec<(String, Vec<u32>)> {
    let golden = read_json(GOLDEN);
    let mut cases = Vec::new();
    for key in ["tokenizer_tests", "tokenizer_tests_pretokenizer_sensitive"] {
        for case in golden[key].as_array().expect("test list") {
            cases.push((
                case["text"].as_str().expect("text").to_string(),
                ids_of(&case["ids"]),
            ));
        }
    }
    for prompt in golden["prompts"].as_array().expect("prompts") {
        cases.push((
            prompt["prompt_text"]
                .as_str()
                .expect("prompt_text")
                .to_string(),
            ids_of(&prompt["prompt_ids"]),
        ));
    }
    assert!(cases.len() >= 16, "golden file has the expected cases");
    cases
}

#[test]
fn gguf_tokenizer_matches_golden_ids() {
    let from_gguf = TextTokenizer::from_gguf(spec_from_reference(Some("smollm"))).unwrap();
    let from_file = TextTokenizer::from_file(Path::new(REFERENCE_TOKENIZER)).unwrap();
    assert_eq!(from_gguf.vocab_size(), 49152);
    assert_eq!(from_file.vocab_size(), 49152);
    assert_eq!(from_gguf.special_ids(), (0..=16).collect::<Vec<u32>>());
    assert_eq!(from_file.special_ids(), from_gguf.special_ids());

    let mut failures = Vec::new();
    for (text, expected) in golden_cases() {
        let got = from_gguf.encode(&text).unwrap();
        if got != expected {
            failures.push(format!("gguf {text:?}: got {got:?}, expected {expected:?}"));
        }
        let got_file = from_file.encode(&text).unwrap();
        if got_file != expected {
            failures.push(format!(
                "file {text:?}: got {got_file:?}, expected {expected:?}"
            ));
        }
        assert_eq!(from_gguf.decode(&got).unwrap(), text);
        assert_eq!(from_file.decode(&got_file).unwrap(), text);
    }
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}

#[test]
fn golden_pieces_and_continuations() {
    let tok = TextTokenizer::from_gguf(spec_from_reference(Some("smollm"))).unwrap();
    let golden = read_json(GOLDEN);
    for case in golden["tokenizer_tests"].as_array().unwrap() {
        let ids = ids_of(&case["ids"]);
        let pieces: Vec<String> = ids.iter().map(|&id| tok.token_str(id).unwrap()).collect();
        let expected: Vec<String> = case["pieces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect();
        assert_eq!(pieces, expected);
        for (piece, id) in expected.iter().zip(&ids) {
            assert_eq!(tok.token_id(piece), Some(*id));
        }
        assert_eq!(tok.decode(&ids).unwrap(), case["decoded"].as_str().unwrap());
    }
    // Continuations are tokenized separately; the golden keeps their first 20 ids.
    for prompt in golden["prompts"].as_array().unwrap() {
        let text = prompt["continuation_text"].as_str().unwrap();
        let expected = ids_of(&prompt["continuation_ids"]);
        let got = tok.encode(text).unwrap();
        assert!(got.len() >= expected.len());
        assert_eq!(got[..expected.len()], expected[..], "{text:?}");
    }
}

#[test]
fn gpt2_pre_tokenizer_does_not_split_digits() {
    // Without the digit split, " ²" becomes "Ġ²" bytes as in the transformers
    // GGUF-derived tokenizer recorded in the golden file.
    let tok = TextTokenizer::from_gguf(spec_from_reference(Some("gpt2"))).unwrap();
    let golden = read_json(GOLDEN);
    for case in golden["tokenizer_tests_pretokenizer_sensitive"]
        .as_array()
        .unwrap()
    {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            tok.encode(text).unwrap(),
            ids_of(&case["gguf_transformers_tokenizer_ids"]),
            "{text:?}"
        );
    }
    let none = TextTokenizer::from_gguf(spec_from_reference(None)).unwrap();
    assert_eq!(none.encode("2024").unwrap(), tok.encode("2024").unwrap());
}

#[test]
fn special_tokens_are_recognised_in_text() {
    let tok = TextTokenizer::from_gguf(spec_from_reference(Some("smollm"))).unwrap();
    let text = "<|im_start|>user\nhi<|im_end|>";
    let ids = tok.encode(text).unwrap();
    assert_eq!(ids.first(), Some(&1));
    assert!(ids.contains(&2));
    assert_eq!(ids.iter().filter(|&&id| id <= 16).count(), 2);
    assert_eq!(tok.decode(&ids).unwrap(), text);
    assert!(tok.is_special(1) && tok.is_special(2) && !tok.is_special(17));
    assert_eq!(tok.token_id("<|im_end|>"), Some(2));
    assert_eq!(tok.token_str(1).as_deref(), Some("<|im_start|>"));
    // Plain text never gets BOS/EOS added.
    assert_eq!(tok.encode("Hello world").unwrap(), vec![19556, 905]);
    assert_eq!(tok.encode("").unwrap(), Vec::<u32>::new());
}

#[test]
fn error_cases() {
    let base = spec_from_reference(Some("smollm"));

    let mut spec = base.clone();
    spec.model = "llama".to_string();
    let err = TextTokenizer::from_gguf(spec).unwrap_err();
    assert!(matches!(err, TokenizerError::UnsupportedModel { ref model } if model == "llama"));

    let mut spec = base.clone();
    spec.pre = Some("qwen2".to_string());
    let err = TextTokenizer::from_gguf(spec).unwrap_err();
    assert!(matches!(err, TokenizerError::UnsupportedPreTokenizer { ref pre } if pre == "qwen2"));
    let message = err.to_string();
    assert!(
        message.contains("qwen2") && message.contains("smollm"),
        "{message}"
    );

    let mut spec = base.clone();
    spec.merges.push("abc".to_string());
    let err = TextTokenizer::from_gguf(spec).unwrap_err();
    assert!(matches!(err, TokenizerError::InvalidVocab { .. }), "{err}");

    let mut spec = base.clone();
    spec.merges.push("Ġ notatoken".to_string());
    let err = TextTokenizer::from_gguf(spec).unwrap_err();
    assert!(matches!(err, TokenizerError::InvalidVocab { .. }), "{err}");

    let mut spec = base.clone();
    if let Some(types) = spec.token_types.as_mut() {
        types.pop();
    }
    let err = TextTokenizer::from_gguf(spec).unwrap_err();
    assert!(matches!(err, TokenizerError::InvalidVocab { .. }), "{err}");

    let mut spec = base.clone();
    spec.tokens[100] = spec.tokens[101].clone();
    let err = TextTokenizer::from_gguf(spec).unwrap_err();
    assert!(matches!(err, TokenizerError::InvalidVocab { .. }), "{err}");

    let tok = TextTokenizer::from_gguf(base).unwrap();
    let err = tok.decode(&[999_999]).unwrap_err();
    assert!(matches!(
        err,
        TokenizerError::UnknownTokenId {
            id: 999_999,
            vocab: 49152
        }
    ));
    let err = tok.decode(&[1, 49152]).unwrap_err();
    assert!(matches!(
        err,
        TokenizerError::UnknownTokenId { id: 49152, .. }
    ));

    let err = TextTokenizer::from_file(Path::new("/nonexistent/tokenizer.json")).unwrap_err();
    assert!(matches!(err, TokenizerError::Load { .. }));
    let err = TextTokenizer::from_file(Path::new(GOLDEN)).unwrap_err();
    assert!(matches!(err, TokenizerError::Load { .. }));
}

/// 256 byte pieces + a few merges + one control token + one user-defined token.
fn synthetic_spec() -> GgufTokenizerSpec {
    let mut tokens = byte_level_alphabet();
    let mut merges = Vec::new();
    for (left, right) in [("Ġ", "w"), ("o", "r"), ("Ġw", "or"), ("1", "2"), ("Ã", "©")] {
        merges.push(format!("{left} {right}"));
        tokens.push(format!("{left}{right}"));
    }
    tokens.push("<|end|>".to_string());
    tokens.push("<tool>".to_string());
    let mut token_types = vec![TOKEN_TYPE_NORMAL; tokens.len()];
    token_types[tokens.len() - 2] = TOKEN_TYPE_CONTROL;
    token_types[tokens.len() - 1] = TOKEN_TYPE_USER_DEFINED;
    GgufTokenizerSpec {
        model: "gpt2".to_string(),
        pre: Some("smollm".to_string()),
        tokens,
        merges,
        token_types: Some(token_types),
    }
}

#[test]
fn synthetic_byte_level_tokenizer() {
    let alphabet = byte_level_alphabet();
    assert_eq!(alphabet.len(), 256);
    assert_eq!(alphabet[32], "Ġ");

    let tok = TextTokenizer::from_gguf(synthetic_spec()).unwrap();
    assert_eq!(tok.vocab_size(), 256 + 5 + 2);
    let end_id = 261;
    let tool_id = 262;
    assert_eq!(tok.token_id("<|end|>"), Some(end_id));
    assert_eq!(tok.special_ids(), &[end_id]);

    // Merges apply: " wor" -> "Ġwor".
    assert_eq!(tok.encode(" wor").unwrap(), vec![258]);
    assert_eq!(tok.token_str(258).as_deref(), Some("Ġwor"));
    // "smollm" splits digits, so "12" stays two tokens despite the "1 2" merge.
    assert_eq!(
        tok.encode("12").unwrap(),
        vec![u32::from(b'1'), u32::from(b'2')]
    );
    // The "gpt2" pre-tokenizer keeps the digit run, so the merge applies.
    let mut gpt2 = synthetic_spec();
    gpt2.pre = Some("gpt2".to_string());
    let gpt2 = TextTokenizer::from_gguf(gpt2).unwrap();
    assert_eq!(gpt2.encode("12").unwrap(), vec![259]);
    // Non-ASCII: "é" is bytes C3 A9 -> "Ã©", merged.
    assert_eq!(tok.encode("é").unwrap(), vec![260]);
    // Control and user-defined tokens are matched in text.
    let ids = tok.encode("a<|end|>b<tool>").unwrap();
    assert_eq!(ids, vec![u32::from(b'a'), end_id, u32::from(b'b'), tool_id]);
    assert!(tok.is_special(end_id) && !tok.is_special(tool_id));

    for text in [
        "hello world",
        " wor 12 é",
        "日本語 テキスト 😀",
        "tabs\tand\nnewlines  ",
        "x=10+20*3; ½ ² ٣٤٥",
        "a<|end|>b<tool>",
        "",
    ] {
        let ids = tok.encode(text).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), text, "{text:?} -> {ids:?}");
        let ids = gpt2.encode(text).unwrap();
        assert_eq!(gpt2.decode(&ids).unwrap(), text, "{text:?} -> {ids:?}");
    }

    // A lone continuation byte decodes lossily instead of failing.
    let lone = u32::try_from(alphabet.iter().position(|p| p == "©").unwrap()).unwrap();
    assert_eq!(tok.decode(&[lone]).unwrap(), "\u{FFFD}");
}

#[test]
fn synthetic_error_cases() {
    let mut spec = synthetic_spec();
    spec.merges.push("a b c".to_string());
    assert!(matches!(
        TextTokenizer::from_gguf(spec),
        Err(TokenizerError::InvalidVocab { .. })
    ));

    // Both sides known, but the merged token is missing: must not panic.
    let mut spec = synthetic_spec();
    spec.merges.push("Ġwor Ġwor".to_string());
    assert!(matches!(
        TextTokenizer::from_gguf(spec),
        Err(TokenizerError::InvalidVocab { .. })
    ));

    let mut spec = synthetic_spec();
    spec.tokens.clear();
    spec.token_types = None;
    spec.merges.clear();
    assert!(matches!(
        TextTokenizer::from_gguf(spec),
        Err(TokenizerError::InvalidVocab { .. })
    ));

    // No token types: everything is a normal BPE token, no special ids.
    let mut spec = synthetic_spec();
    spec.token_types = None;
    let tok = TextTokenizer::from_gguf(spec).unwrap();
    assert!(tok.special_ids().is_empty());
}
