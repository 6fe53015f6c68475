//! A fault-injecting OpenAI-compatible upstream on loopback, shared by the `openai`
//! backend's fault tests (crates/openai/tests/faults.rs), the gateway's end-to-end ones
//! (crates/cli/tests/faults.rs) and `ask`'s output snapshots (crates/cli/tests/ask.rs).
//!
//! Plain `std` threads (one per connection), so it runs beside any async runtime or none.
//! The i-th request gets `script[i]` (the last entry repeats); `set_script` starts a new
//! script and resets the request count. Answers are streamed chat-completion chunks with
//! usage and log-probabilities; the text is `greedy` for a request with temperature 0 and
//! `sampled` otherwise, so a test can make a model disagree with itself, or whatever
//! `with_answer`'s function makes of the request.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// What the upstream does with one request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    /// A streamed answer.
    Ok,
    /// A plain JSON (non-streamed) answer.
    OkJson,
    /// This status with an OpenAI-shaped error body and, when given, this `Retry-After`.
    Status(u16, Option<&'static str>),
    /// Close the connection with the request unread: the kernel answers with a TCP reset.
    Reset,
    /// Read the request and send nothing until the client goes away (at most a minute).
    Hang,
    /// Send the headers and the first chunk, then nothing until the client goes away.
    StallMidStream,
    /// Promise the whole stream (content-length), send half of it, close.
    Truncated,
    /// A stream whose second chunk is not JSON.
    MalformedChunk,
    /// A plain JSON body that is not JSON.
    MalformedBody,
    /// A complete 200 stream with nothing in it (how llama-cpp-python reports an error
    /// found after the headers, e.g. a prompt over the context).
    EmptyStream,
    /// 400 with llama-cpp-python's body for a prompt over a 512-token context.
    ContextOverflow,
    /// The streamed answer in `pieces` equal parts with `gap` between them: slow but
    /// steady, never silent for longer than `gap`.
    Trickle { gap: Duration, pieces: usize },
}

/// One request the upstream received.
#[derive(Clone, Debug)]
pub struct Received {
    pub authorization: Option<String>,
    /// The JSON body (`Null` when it was not read, e.g. for `Reset`).
    pub body: Value,
}

pub struct Upstream {
    /// The base URL, ending in `/v1`.
    pub url: String,
    hits: Arc<AtomicUsize>,
    script: Arc<Mutex<Vec<Fault>>>,
    received: Arc<Mutex<Vec<Received>>>,
    texts: Arc<Mutex<Texts>>,
}

/// The answer text: greedy and sampled, or a function of the request body.
struct Texts {
    greedy: String,
    sampled: String,
    answer: Option<Answer>,
}

type Answer = Arc<dyn Fn(&Value) -> String + Send + Sync>;

/// Longest any connection is kept open by `Hang` or `StallMidStream`.
const MAX_STALL: Duration = Duration::from_secs(60);

impl Upstream {
    /// Start serving `script` on a free loopback port; answers say `ANSWER: 42`.
    pub fn start(script: Vec<Fault>) -> Self {
        assert!(!script.is_empty());
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let up = Upstream {
            url,
            hits: Arc::default(),
            script: Arc::new(Mutex::new(script)),
            received: Arc::default(),
            texts: Arc::new(Mutex::new(Texts {
                greedy: "6 * 7 = 42.\nANSWER: 42".into(),
                sampled: "6 * 7 = 42.\nANSWER: 42".into(),
                answer: None,
            })),
        };
        let (hits, script, received, texts) = (
            up.hits.clone(),
            up.script.clone(),
            up.received.clone(),
            up.texts.clone(),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let i = hits.fetch_add(1, Ordering::SeqCst);
                let fault = {
                    let s = script.lock().unwrap();
                    s[i.min(s.len() - 1)]
                };
                let (received, texts) = (received.clone(), texts.clone());
                std::thread::spawn(move || serve(stream, fault, &received, &texts));
            }
        });
        up
    }

    /// The answer text for greedy requests and for sampled ones.
    pub fn with_texts(self, greedy: &str, sampled: &str) -> Self {
        {
            let mut t = self.texts.lock().unwrap();
            t.greedy = greedy.into();
            t.sampled = sampled.into();
        }
        self
    }

    /// The answer text for every request: `answer` of the request's JSON body.
    pub fn with_answer(self, answer: impl Fn(&Value) -> String + Send + Sync + 'static) -> Self {
        self.texts.lock().unwrap().answer = Some(Arc::new(answer));
        self
    }

    /// Serve `script` from now on, counting requests from zero.
    pub fn set_script(&self, script: Vec<Fault>) {
        assert!(!script.is_empty());
        let mut s = self.script.lock().unwrap();
        *s = script;
        self.received.lock().unwrap().clear();
        self.hits.store(0, Ordering::SeqCst);
    }

    /// Requests (connections) received since the script was set.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// The streamed answer: a role chunk, the text in up to three content chunks (each with a
/// log-probability), a finish chunk, a usage chunk, `[DONE]`.
pub fn sse_answer(text: &str) -> String {
    let mut events = vec![json!({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})];
    let chars: Vec<char> = text.chars().collect();
    let parts: Vec<String> = chars
        .chunks(chars.len().div_ceil(3).max(1))
        .map(|c| c.iter().collect())
        .collect();
    let n = parts.len();
    for (i, p) in parts.into_iter().enumerate() {
        let mut e = json!({"choices": [{"index": 0, "delta": {"content": p},
            "logprobs": {"content": [{"token": p, "logprob": -0.1 * (i + 1) as f64}]}}]});
        if i + 1 == n {
            e["choices"][0]["finish_reason"] = json!("stop");
        }
        events.push(e);
    }
    events.push(json!({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": n, "total_tokens": 9 + n}}));
    let mut out: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    out.push_str("data: [DONE]\n\n");
    out
}

fn response(status: &str, ctype: &str, extra: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n{body}",
        body.len()
    )
}

/// Read one request: its head (lower-cased header names) and its JSON body.
fn read_request(s: &mut TcpStream) -> Option<Received> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let n = s.read(&mut tmp).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < end + 4 + len {
            let n = s.read(&mut tmp).ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&tmp[..n]);
        }
        let body = serde_json::from_slice(&buf[end + 4..end + 4 + len]).unwrap_or(Value::Null);
        return Some(Received {
            authorization: header("authorization"),
            body,
        });
    }
}

/// Block until the client closes the connection (or `MAX_STALL` passes).
fn wait_for_close(s: &mut TcpStream) {
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let start = Instant::now();
    let mut tmp = [0u8; 1024];
    while start.elapsed() < MAX_STALL {
        match s.read(&mut tmp) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

fn serve(mut s: TcpStream, fault: Fault, received: &Mutex<Vec<Received>>, texts: &Mutex<Texts>) {
    if fault == Fault::Reset {
        // Read one byte and close with the rest of the request unread: Linux then sends
        // RST instead of FIN. The pause lets the whole request arrive first.
        let _ = s.read(&mut [0u8; 1]);
        std::thread::sleep(Duration::from_millis(50));
        received.lock().unwrap().push(Received {
            authorization: None,
            body: Value::Null,
        });
        return;
    }
    let Some(req) = read_request(&mut s) else {
        return;
    };
    let sampled = req.body["temperature"].as_f64().is_some_and(|t| t > 0.0);
    let text = {
        let t = texts.lock().unwrap();
        match &t.answer {
            Some(answer) => answer(&req.body),
            None if sampled => t.sampled.clone(),
            None => t.greedy.clone(),
        }
    };
    received.lock().unwrap().push(req);
    let sse = sse_answer(&text);
    let out = match fault {
        Fault::Ok => response("200 OK", "text/event-stream", "", &sse),
        Fault::OkJson => {
            let body = json!({"id": "x", "object": "chat.completion", "choices": [{"index": 0,
                "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}});
            response("200 OK", "application/json", "", &body.to_string())
        }
        Fault::Status(code, retry_after) => {
            let extra = retry_after
                .map(|r| format!("retry-after: {r}\r\n"))
                .unwrap_or_default();
            response(
                &format!("{code} Injected"),
                "application/json",
                &extra,
                r#"{"error":{"message":"injected failure","type":"server_error","code":"injected"}}"#,
            )
        }
        Fault::Hang => {
            wait_for_close(&mut s);
            return;
        }
        Fault::StallMidStream => {
            let first = sse.split_inclusive("\n\n").next().unwrap_or("");
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{first}",
                sse.len()
            );
            if s.write_all(head.as_bytes()).is_ok() {
                wait_for_close(&mut s);
            }
            return;
        }
        Fault::Truncated => {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                sse.len()
            );
            format!("{head}{}", &sse[..sse.len() / 2])
        }
        Fault::MalformedChunk => {
            let mut events = sse.split_inclusive("\n\n");
            let first = events.next().unwrap_or("");
            let rest: String = events.collect();
            let body = format!("{first}data: {{\"choices\": [{{\"delta\": nope}}\n\n{rest}");
            response("200 OK", "text/event-stream", "", &body)
        }
        Fault::MalformedBody => response("200 OK", "application/json", "", "{\"choices\": [nope"),
        Fault::EmptyStream => response("200 OK", "text/event-stream", "", ""),
        Fault::ContextOverflow => response(
            "400 Bad Request",
            "application/json",
            "",
            r#"{"error":{"message":"This model's maximum context length is 512 tokens. However, you requested 739 tokens (731 in the messages, 8 in the completion). Please reduce the length of the messages or completion.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
        ),
        Fault::Trickle { gap, pieces } => {
            let all = response("200 OK", "text/event-stream", "", &sse).into_bytes();
            // The head at once, the body in `pieces` parts.
            let body_at = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            if s.write_all(&all[..body_at]).is_err() {
                return;
            }
            let body = &all[body_at..];
            for part in body.chunks(body.len().div_ceil(pieces.max(1))) {
                std::thread::sleep(gap);
                if s.write_all(part).and_then(|_| s.flush()).is_err() {
                    return;
                }
            }
            let _ = s.shutdown(Shutdown::Write);
            return;
        }
        Fault::Reset => unreachable!(),
    };
    let _ = s.write_all(out.as_bytes());
    let _ = s.shutdown(Shutdown::Write);
}
