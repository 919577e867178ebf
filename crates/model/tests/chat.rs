//! Chat-template tests: the SmolLM2 golden template and error handling.

use llm_auction_model::chat::{ChatError, ChatTemplate, Message, from_tokenizer_config};

const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/smollm2_golden_public.json"
);

fn golden_template() -> String {
    let text = std::fs::read_to_string(GOLDEN).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["chat_template"].as_str().unwrap().to_string()
}

#[test]
fn smollm2_template_with_system_prompt() {
    let template = ChatTemplate::new(&golden_template()).unwrap();
    let messages = [
        Message::new("system", "You are a helpful assistant."),
        Message::new("user", "Hi"),
    ];
    let rendered = template
        .render(&messages, true, "<|im_start|>", "<|im_end|>")
        .unwrap();
    assert_eq!(
        rendered,
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    let without_prompt = template
        .render(&messages, false, "<|im_start|>", "<|im_end|>")
        .unwrap();
    assert_eq!(
        without_prompt,
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n"
    );
}

#[test]
fn smollm2_template_injects_default_system_prompt() {
    let template = ChatTemplate::new(&golden_template()).unwrap();
    let rendered = template
        .render(&[Message::new("user", "Hi")], true, "", "")
        .unwrap();
    assert_eq!(
        rendered,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn raise_exception_is_a_render_error() {
    let template = ChatTemplate::new(
        "{% if messages[0]['role'] != 'system' %}{{ raise_exception('System message required') }}{% endif %}ok",
    )
    .unwrap();
    let err = template
        .render(&[Message::new("user", "Hi")], false, "", "")
        .unwrap_err();
    match err {
        ChatError::Render { message } => assert_eq!(message, "System message required"),
        other => panic!("unexpected error {other:?}"),
    }
    let ok = template
        .render(&[Message::new("system", "S")], false, "", "")
        .unwrap();
    assert_eq!(ok, "ok");
}

#[test]
fn syntax_error_is_a_template_error() {
    let err =
        ChatTemplate::new("{% for message in messages %}{{ message['content'] }}").unwrap_err();
    assert!(matches!(err, ChatError::Template { .. }), "{err:?}");
    let err = ChatTemplate::new("{{ 'unclosed }}").unwrap_err();
    assert!(matches!(err, ChatError::Template { .. }), "{err:?}");
}

#[test]
fn other_render_errors() {
    let template = ChatTemplate::new("{{ messages[0]['content'] + 1 }}").unwrap();
    let err = template
        .render(&[Message::new("user", "Hi")], false, "", "")
        .unwrap_err();
    assert!(matches!(err, ChatError::Render { .. }), "{err:?}");
}

#[test]
fn python_string_methods_and_block_trimming() {
    let source = concat!(
        "{{ bos_token }}\n",
        "{% for message in messages %}\n",
        "    {% if message['role'].startswith('us') %}\n",
        "[{{ message['content'].strip() }}|{{ message.content.upper().strip() }}]\n",
        "    {% else %}\n",
        "<{{ message['content'] | trim }}>\n",
        "    {% endif %}\n",
        "{% endfor %}\n",
        "{% if add_generation_prompt %}{{ eos_token }}{% endif %}\n",
    );
    let template = ChatTemplate::new(source).unwrap();
    let messages = [
        Message::new("user", "  hello there \n"),
        Message::new("assistant", " yo "),
    ];
    let rendered = template.render(&messages, true, "<s>", "</s>").unwrap();
    // trim_blocks drops the newline after a block tag, lstrip_blocks the indentation
    // before it; the final newline of the template is not kept.
    assert_eq!(rendered, "<s>\n[hello there|HELLO THERE]\n<yo>\n</s>");
}

#[test]
fn loop_controls_and_tojson() {
    let template = ChatTemplate::new(
        "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m | tojson }}{% endfor %}",
    )
    .unwrap();
    let rendered = template
        .render(
            &[Message::new("user", "a"), Message::new("user", "b")],
            false,
            "",
            "",
        )
        .unwrap();
    let value: serde_json::Value = serde_json::from_str(&rendered).unwrap();
    assert_eq!(value, serde_json::json!({"role": "user", "content": "a"}));
}

#[test]
fn tokenizer_config_variants() {
    let dir = std::env::temp_dir().join(format!("llm_auction_chat_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let plain = dir.join("plain.json");
    std::fs::write(
        &plain,
        r#"{"chat_template": "{{ 1 }}", "bos_token": "<s>", "eos_token": {"content": "</s>", "lstrip": false}}"#,
    )
    .unwrap();
    let (template, bos, eos) = from_tokenizer_config(&plain).unwrap();
    assert_eq!(template.as_deref(), Some("{{ 1 }}"));
    assert_eq!(bos.as_deref(), Some("<s>"));
    assert_eq!(eos.as_deref(), Some("</s>"));

    let named = dir.join("named.json");
    std::fs::write(
        &named,
        r#"{"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}], "eos_token": null}"#,
    )
    .unwrap();
    let (template, bos, eos) = from_tokenizer_config(&named).unwrap();
    assert_eq!(template.as_deref(), Some("D"));
    assert_eq!(bos, None);
    assert_eq!(eos, None);

    let empty = dir.join("empty.json");
    std::fs::write(&empty, "{}").unwrap();
    assert_eq!(from_tokenizer_config(&empty).unwrap(), (None, None, None));

    let broken = dir.join("broken.json");
    std::fs::write(&broken, "{not json").unwrap();
    assert!(matches!(
        from_tokenizer_config(&broken),
        Err(ChatError::Config { .. })
    ));
    assert!(matches!(
        from_tokenizer_config(&dir.join("missing.json")),
        Err(ChatError::Config { .. })
    ));

    let _ = std::fs::remove_dir_all(&dir);
}
