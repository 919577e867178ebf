//! Error paths of the remote client against a scripted HTTP responder on 127.0.0.1 (a mock for error
//! paths only; the real servers are tested in `remote.rs`): malformed JSON, non-finite or impossible
//! log-probabilities, ids outside the vocabulary, wrong lengths, retries on 503 and none on 400, a
//! refused connection. Each is a one-line error naming the URL, never a panic or a hang.

use llm_auction_engine::EngineError;
use llm_auction_engine::lm::LanguageModel;
use llm_auction_engine::models_file::{RemoteKind, RemoteSpec};
use llm_auction_engine::remote::RemoteModel;
use llm_auction_engine::request::ScoreRequest;
use llm_auction_engine::served::Ticket;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A reply: status and body.
type Reply = (u16, String);
/// Decides the reply from the path, the request body and the number of requests so far.
type Script = dyn Fn(&str, &Value, usize) -> Reply + Send + Sync;
/// Decides the `/completion` replies after the self-test.
type Completion = Arc<dyn Fn(&Value) -> Reply + Send + Sync>;

/// Serves `script` on a free loopback port until the test ends; returns the base URL and a request
/// counter.
fn serve(script: Arc<Script>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let (script, c) = (script.clone(), c.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; len];
                let _ = reader.read_exact(&mut body);
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let n = c.fetch_add(1, Ordering::SeqCst);
                let (status, text) = script(&path, &body, n);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
            });
        }
    });
    (url, count)
}

fn spec(url: &str) -> RemoteSpec {
    RemoteSpec {
        name: "mock".into(),
        kind: RemoteKind::LlamaServer,
        urls: vec![url.into()],
        model: None,
        api_key: None,
        timeout: Duration::from_secs(5),
        max_concurrency: 2,
        retries: 2,
        processed_logprobs: false,
    }
}

/// A llama-server that answers the probe and the self-test correctly; `completion` decides the
/// `/completion` replies after the self-test.
fn llama(completion: Completion) -> Arc<Script> {
    let selftest_done = Arc::new(Mutex::new(0usize));
    Arc::new(move |path: &str, body: &Value, _n: usize| -> Reply {
        let ok = |v: Value| (200, v.to_string());
        match path {
            "/health" => ok(json!({"status": "ok"})),
            "/v1/models" => {
                ok(json!({"data": [{"id": "m", "meta": {"n_vocab": 100, "n_ctx_train": 512}}]}))
            }
            "/props" => {
                ok(json!({"default_generation_settings": {"n_ctx": 512}, "eos_token": "</s>"}))
            }
            "/tokenize" => {
                if body["content"] == "</s>" {
                    ok(json!({"tokens": [2]}))
                } else {
                    ok(json!({"tokens": [10, 11, 12, 13]}))
                }
            }
            "/completion" => {
                let mut done = selftest_done.lock().unwrap();
                if *done < 2 {
                    // The self-test: two forced tokens.
                    *done += 1;
                    let t = body["logit_bias"][0][0].clone();
                    return ok(json!({"completion_probabilities": [{"id": t, "logprob": -1.5}]}));
                }
                completion(body)
            }
            _ => (
                404,
                json!({"error": {"message": "File Not Found"}}).to_string(),
            ),
        }
    })
}

fn score_err(completion: Completion) -> String {
    let (url, _) = serve(llama(completion));
    let m = RemoteModel::connect(spec(&url)).expect("the probe and the self-test pass");
    let err = m
        .session()
        .unwrap()
        .score(
            vec![ScoreRequest {
                prompt: vec![10],
                continuation: vec![11, 12],
            }],
            &mut |_| {},
        )
        .expect_err("a bad answer");
    let msg = err.to_string();
    assert!(msg.contains(&url), "names the URL: {msg}");
    assert!(!msg.contains('\n'), "one line: {msg}");
    msg
}

#[test]
fn bad_scoring_answers_are_errors() {
    let forced = |body: &Value| body["logit_bias"][0][0].clone();
    let cases: Vec<(Completion, &str)> = vec![
        (Arc::new(|_: &Value| (200, "{not json".into())), "not JSON"),
        (
            Arc::new(move |b: &Value| {
                (
                    200,
                    json!({"completion_probabilities": [{"id": forced(b), "logprob": 5.0}]})
                        .to_string(),
                )
            }),
            "is not a log-probability",
        ),
        (
            Arc::new(move |b: &Value| {
                (
                    200,
                    json!({"completion_probabilities": [{"id": forced(b), "logprob": "NaN"}]})
                        .to_string(),
                )
            }),
            "is not a number",
        ),
        (
            Arc::new(|_: &Value| {
                (
                    200,
                    json!({"completion_probabilities": [{"id": 7, "logprob": -1.0}]}).to_string(),
                )
            }),
            "where logit_bias forced",
        ),
        (
            Arc::new(|_: &Value| {
                (
                    200,
                    json!({"completion_probabilities": [{"id": 100000, "logprob": -1.0}]})
                        .to_string(),
                )
            }),
            "outside the vocabulary",
        ),
        (
            Arc::new(|_: &Value| (200, json!({"completion_probabilities": []}).to_string())),
            "empty",
        ),
        (
            Arc::new(|_: &Value| {
                (
                    400,
                    json!({"error": {"message": "Prompt contains invalid tokens"}}).to_string(),
                )
            }),
            "HTTP 400: Prompt contains invalid tokens",
        ),
    ];
    for (reply, want) in cases {
        let msg = score_err(reply);
        assert!(msg.contains(want), "{msg:?} lacks {want:?}");
    }
}

#[test]
fn a_short_next_token_row_is_refused_not_truncated() {
    let (url, _) = serve(llama(Arc::new(|_: &Value| {
        (
            200,
            json!({"completion_probabilities": [{"id": 3, "prob": 0.5, "top_probs": [{"id": 3, "prob": 0.5}, {"id": 4, "prob": 0.5}]}]}).to_string(),
        )
    })));
    let m = RemoteModel::connect(spec(&url)).unwrap();
    let msg = m
        .session()
        .unwrap()
        .next_token_logprobs(&[vec![10, 11]])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("returned 2 of 100 next-token probabilities"),
        "{msg}"
    );
}

#[test]
fn a_503_is_retried_and_a_400_is_not() {
    // Every other /completion answer is a 503 first: the request succeeds after a retry.
    let flip = Arc::new(AtomicUsize::new(0));
    let f = flip.clone();
    let (url, count) = serve(llama(Arc::new(move |b: &Value| {
        if f.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
            (503, json!({"error": {"message": "busy"}}).to_string())
        } else {
            (200, json!({"completion_probabilities": [{"id": b["logit_bias"][0][0].clone(), "logprob": -0.5}]}).to_string())
        }
    })));
    let m = RemoteModel::connect(spec(&url)).unwrap();
    let s = m
        .session()
        .unwrap()
        .score(
            vec![ScoreRequest {
                prompt: vec![10],
                continuation: vec![11],
            }],
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(s[0].token_logprobs, vec![-0.5]);
    assert_eq!(flip.load(Ordering::SeqCst), 2, "one 503, one retry");
    let before = count.load(Ordering::SeqCst);
    let (url2, count2) = serve(llama(Arc::new(|_: &Value| (400, "{}".into()))));
    let m2 = RemoteModel::connect(spec(&url2)).unwrap();
    let probe_requests = count2.load(Ordering::SeqCst);
    let _ = m2.session().unwrap().score(
        vec![ScoreRequest {
            prompt: vec![10],
            continuation: vec![11],
        }],
        &mut |_| {},
    );
    assert_eq!(
        count2.load(Ordering::SeqCst),
        probe_requests + 1,
        "a 400 is not retried"
    );
    assert!(before > 0);
}

#[test]
fn a_refused_connection_is_a_clear_error_after_bounded_retries() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let t = std::time::Instant::now();
    let msg = match RemoteModel::connect(spec(&url)) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("nothing listens there"),
    };
    assert!(
        msg.contains(&url) && msg.contains("after 3 attempts"),
        "{msg}"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[test]
fn malformed_probes_are_errors() {
    let cases: Vec<(Arc<Script>, &str)> = vec![
        (
            Arc::new(|p: &str, _: &Value, _| match p {
                "/health" => (200, "{}".into()),
                _ => (200, "[]".into()),
            }),
            "has no field \"data\"",
        ),
        (
            Arc::new(|p: &str, _: &Value, _| match p {
                "/health" => (200, "{}".into()),
                "/v1/models" => (
                    200,
                    json!({"data": [{"meta": {"n_vocab": -3}}]}).to_string(),
                ),
                _ => (
                    200,
                    json!({"default_generation_settings": {"n_ctx": 512}, "eos_token": "x"})
                        .to_string(),
                ),
            }),
            "n_vocab",
        ),
        (
            Arc::new(|p: &str, _: &Value, _| match p {
                "/health" => (200, "{}".into()),
                "/v1/models" => (
                    200,
                    json!({"data": [{"meta": {"n_vocab": 100}}]}).to_string(),
                ),
                "/props" => (
                    200,
                    json!({"default_generation_settings": {"n_ctx": 512}, "eos_token": "x"})
                        .to_string(),
                ),
                _ => (200, json!({"tokens": [5000]}).to_string()),
            }),
            "outside the vocabulary",
        ),
    ];
    for (script, want) in cases {
        let (url, _) = serve(script);
        let msg = match RemoteModel::connect(spec(&url)) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a malformed probe was accepted"),
        };
        assert!(
            msg.contains(want) && msg.contains(&url),
            "{msg:?} lacks {want:?}"
        );
    }
}

#[test]
fn a_stopped_ticket_stops_further_remote_requests() {
    // Each /completion answer is slow enough that the cancellation lands between requests.
    let (url, count) = serve(llama(Arc::new(|b: &Value| {
        std::thread::sleep(Duration::from_millis(50));
        (
            200,
            json!({"completion_probabilities": [{"id": b["logit_bias"][0][0].clone(), "logprob": -0.5}]})
                .to_string(),
        )
    })));
    let m = RemoteModel::connect(spec(&url)).unwrap();
    let before = count.load(Ordering::SeqCst);
    let ticket = Ticket::default();
    ticket.cancel();
    let err = m
        .session_for(&ticket)
        .unwrap()
        .score(
            vec![ScoreRequest {
                prompt: vec![10],
                continuation: vec![11, 12, 13],
            }],
            &mut |_| {},
        )
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::Aborted(r) if r == "cancelled"),
        "{err}"
    );
    assert_eq!(count.load(Ordering::SeqCst), before, "nothing was sent");
    // An expired deadline stops a long scoring part-way: 40 scorings of one token, 2 in flight at a
    // time, 50 ms each would take a second; the deadline passes after 120 ms.
    let ticket = Ticket::new(Some(Duration::from_millis(120)));
    let before = count.load(Ordering::SeqCst);
    let err = m
        .session_for(&ticket)
        .unwrap()
        .score(
            vec![
                ScoreRequest {
                    prompt: vec![10],
                    continuation: vec![11],
                };
                40
            ],
            &mut |_| {},
        )
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::Aborted(r) if r == "deadline exceeded"),
        "{err}"
    );
    let sent = count.load(Ordering::SeqCst) - before;
    assert!((1..40).contains(&sent), "{sent} requests sent");
}
