//! The OpenAI chat-completions wire format: the request body, the streamed chunks and the
//! plain JSON response, and how one failed attempt is classified.

use std::time::Duration;

use r2_pool::{FinishReason, GenRequest, GenResponse, Role, Sampling};
use serde_json::{json, Value};

/// Why one attempt failed.
#[derive(Debug)]
pub(crate) enum Attempt {
    Timeout,
    Connect(String),
    Status {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    /// Truncated or unreadable body.
    Broken(String),
    /// A body that is not the expected JSON.
    Malformed(String),
    /// A 2xx stream that ended before sending anything.
    EmptyStream,
    /// The server says the prompt (with `max_tokens`) does not fit its context.
    ContextOverflow {
        needed: u32,
        limit: u32,
    },
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attempt::Timeout => f.write_str("the upstream server timed out"),
            Attempt::Connect(e) => write!(f, "cannot reach the upstream server: {e}"),
            Attempt::Status {
                status, message, ..
            } => write!(f, "upstream answered HTTP {status}: {message}"),
            Attempt::Broken(e) => write!(f, "broken upstream response: {e}"),
            Attempt::Malformed(e) => write!(f, "malformed upstream response: {e}"),
            Attempt::EmptyStream => f.write_str("the upstream stream ended before any data"),
            Attempt::ContextOverflow { needed, limit } => write!(
                f,
                "upstream context overflow: {needed} tokens asked of a {limit}-token context"
            ),
        }
    }
}

impl Attempt {
    pub(crate) fn from_reqwest(e: reqwest::Error) -> Self {
        // `without_url` keeps messages short; the URL never holds the key anyway.
        let e = e.without_url();
        if e.is_timeout() {
            Attempt::Timeout
        } else if e.is_connect() {
            Attempt::Connect(error_chain(&e))
        } else {
            Attempt::Broken(error_chain(&e))
        }
    }

    pub(crate) fn retryable(&self) -> bool {
        match self {
            Attempt::Status { status, .. } => crate::is_retryable_status(*status),
            Attempt::ContextOverflow { .. } => false,
            _ => true,
        }
    }

    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            Attempt::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The chat-completions body; `stream: false` asks for one plain JSON answer.
pub(crate) fn request_body(model: &str, request: &GenRequest, stream: bool) -> Value {
    let messages: Vec<Value> = request
        .messages
        .iter()
        .map(|m| {
            let role = match m.role {
                Role::System => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            json!({"role": role, "content": m.content})
        })
        .collect();
    // OpenAI accepts at most four stop strings.
    let stop: Vec<&str> = request
        .stop
        .iter()
        .filter(|s| !s.is_empty())
        .take(4)
        .map(String::as_str)
        .collect();
    let mut body = json!({
        "model": model,
        "messages": messages,
        "max_tokens": request.max_tokens,
        "stream": stream,
        "logprobs": true,
        // Servers built on llama.cpp (its server, llama-cpp-python) send log-probabilities
        // only when asked for at least one alternative per token.
        "top_logprobs": 1,
    });
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    match request.sampling {
        Sampling::Greedy => body["temperature"] = json!(0.0),
        Sampling::Temperature { temperature, seed } => {
            body["temperature"] = json!(temperature);
            body["seed"] = json!(seed);
        }
    }
    if !stop.is_empty() {
        body["stop"] = json!(stop);
    }
    body
}

/// The message of an OpenAI-shaped error body, else the start of the body.
pub(crate) fn error_message(body: &str) -> String {
    let from_json = serde_json::from_str::<Value>(body).ok().and_then(|v| {
        v.pointer("/error/message")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let msg = from_json.unwrap_or_else(|| body.trim().to_string());
    let mut short: String = msg.chars().take(300).collect();
    if short.is_empty() {
        short = "(empty body)".into();
    }
    short
}

/// `(needed, limit)` when an error body says the prompt does not fit the context: OpenAI's
/// `context_length_exceeded` code (also sent by llama-cpp-python), llama.cpp's
/// `exceed_context_size_error` (with `n_prompt_tokens` and `n_ctx`), or vLLM's message
/// ("maximum context length is N tokens. However, you requested M tokens ..."). `needed`
/// is what the server counted: the prompt, plus `max_tokens` where it adds them. `None` when it says something else or the numbers
/// cannot be read.
pub(crate) fn context_overflow(status: u16, body: &str) -> Option<(u32, u32)> {
    if !(400..500).contains(&status) {
        return None;
    }
    let v: Value = serde_json::from_str(body).ok()?;
    let e = v.get("error").unwrap_or(&v);
    let text = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("");
    let num = |k: &str| e.get(k).and_then(Value::as_u64).map(clamp_u32);
    if text("type") == "exceed_context_size_error" {
        if let (Some(needed), Some(limit)) = (num("n_prompt_tokens"), num("n_ctx")) {
            return Some((needed, limit));
        }
    }
    let message = text("message");
    if text("code") != "context_length_exceeded" && !message.contains("maximum context length") {
        return None;
    }
    let limit = number_after(message, "maximum context length is ")?;
    // What was asked for: the prompt, plus max_tokens where the server counts it.
    let needed = number_after(message, "you requested ")
        .or_else(|| number_after(message, "resulted in "))?;
    (needed > limit).then_some((needed, limit))
}

/// The whole number that directly follows the first `marker` in `text`.
fn number_after(text: &str, marker: &str) -> Option<u32> {
    let rest = &text[text.find(marker)? + marker.len()..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse::<u64>().ok().map(clamp_u32)
}

fn clamp_u32(n: u64) -> u32 {
    n.min(u32::MAX as u64) as u32
}

/// Token counts when the server reports no usage: a rough 4-characters-per-token estimate,
/// so cost is never silently zero.
fn estimate_tokens(text: &str) -> u32 {
    (text.chars().count() as u32).div_ceil(4)
}

fn finish_reason(s: &str) -> FinishReason {
    match s {
        "length" => FinishReason::Length,
        _ => FinishReason::Stop,
    }
}

fn logprobs_of(choice: &Value) -> Option<Vec<f32>> {
    let content = choice.pointer("/logprobs/content")?.as_array()?;
    Some(
        content
            .iter()
            .filter_map(|t| t.get("logprob").and_then(Value::as_f64))
            .map(|l| l as f32)
            .collect(),
    )
}

/// Collects streamed chunks into one response.
#[derive(Default)]
pub(crate) struct Accumulator {
    text: String,
    logprobs: Option<Vec<f32>>,
    finish: Option<FinishReason>,
    usage: Option<(u32, u32)>,
}

impl Accumulator {
    /// Take one event's data; `Ok(true)` at the end of the stream.
    pub(crate) fn push_event(&mut self, data: &str) -> Result<bool, Attempt> {
        if data.trim() == "[DONE]" {
            return Ok(true);
        }
        let v: Value = serde_json::from_str(data)
            .map_err(|e| Attempt::Malformed(format!("a stream chunk is not JSON ({e})")))?;
        if let Some(msg) = v.pointer("/error/message").and_then(Value::as_str) {
            return Err(Attempt::Status {
                status: 502,
                message: msg.chars().take(300).collect(),
                retry_after: None,
            });
        }
        if let Some(choice) = v.pointer("/choices/0") {
            if let Some(t) = choice.pointer("/delta/content").and_then(Value::as_str) {
                self.text.push_str(t);
            }
            if let Some(lps) = logprobs_of(choice) {
                self.logprobs.get_or_insert_with(Vec::new).extend(lps);
            }
            if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
                self.finish = Some(finish_reason(f));
            }
        }
        if let Some(u) = usage_of(&v) {
            self.usage = Some(u);
        }
        Ok(false)
    }

    pub(crate) fn finish(self, request: &GenRequest) -> GenResponse {
        // Without usage (llama-cpp-python sends none in streams), each log-probability is
        // one generated token; only the prompt is estimated.
        let counted = self.logprobs.as_ref().map(|l| l.len() as u32);
        let (input_tokens, output_tokens) = self.usage.unwrap_or_else(|| {
            (
                estimate_input(request),
                counted.unwrap_or_else(|| estimate_tokens(&self.text)),
            )
        });
        GenResponse {
            text: self.text,
            input_tokens,
            output_tokens,
            token_logprobs: self.logprobs.filter(|l| !l.is_empty()),
            finish: self.finish.unwrap_or(FinishReason::Stop),
        }
    }
}

/// A `text/event-stream` body read chunk by chunk, in whatever pieces it arrives.
#[derive(Default)]
pub(crate) struct StreamBody {
    parser: crate::SseParser,
    acc: Accumulator,
}

impl StreamBody {
    /// Feed one chunk; `Some` once `data: [DONE]` ends the stream.
    pub(crate) fn push(
        &mut self,
        chunk: &[u8],
        request: &GenRequest,
    ) -> Result<Option<GenResponse>, Attempt> {
        for data in self.parser.push(chunk) {
            if self.acc.push_event(&data)? {
                return Ok(Some(std::mem::take(&mut self.acc).finish(request)));
            }
        }
        Ok(None)
    }

    /// The failure of a body that ended before `data: [DONE]`.
    pub(crate) fn truncated() -> Attempt {
        Attempt::Broken("the stream ended before data: [DONE] (truncated response)".into())
    }
}

fn usage_of(v: &Value) -> Option<(u32, u32)> {
    let u = v.get("usage")?;
    let p = u.get("prompt_tokens")?.as_u64()?;
    let c = u.get("completion_tokens")?.as_u64()?;
    Some((p.min(u32::MAX as u64) as u32, c.min(u32::MAX as u64) as u32))
}

fn estimate_input(request: &GenRequest) -> u32 {
    request
        .messages
        .iter()
        .map(|m| estimate_tokens(&m.content) + 4)
        .sum()
}

/// A non-streamed `chat.completion` body.
pub(crate) fn parse_json_response(
    bytes: &[u8],
    request: &GenRequest,
) -> Result<GenResponse, Attempt> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| Attempt::Malformed(format!("the body is not JSON ({e})")))?;
    let choice = v
        .pointer("/choices/0")
        .ok_or_else(|| Attempt::Malformed("no choices in the response".into()))?;
    let text = choice
        .pointer("/message/content")
        .and_then(Value::as_str)
        .ok_or_else(|| Attempt::Malformed("no message content in the response".into()))?
        .to_string();
    let (input_tokens, output_tokens) =
        usage_of(&v).unwrap_or_else(|| (estimate_input(request), estimate_tokens(&text)));
    Ok(GenResponse {
        input_tokens,
        output_tokens,
        token_logprobs: logprobs_of(choice).filter(|l| !l.is_empty()),
        finish: choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .map(finish_reason)
            .unwrap_or(FinishReason::Stop),
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use r2_pool::ChatMessage;

    fn req() -> GenRequest {
        GenRequest::new(vec![ChatMessage::user("hello there")], 16)
    }

    #[test]
    fn stream_chunks_accumulate_text_logprobs_and_usage() {
        let mut acc = Accumulator::default();
        let chunks = [
            r#"{"choices":[{"delta":{"role":"assistant"}}]}"#,
            r#"{"choices":[{"delta":{"content":"4"},"logprobs":{"content":[{"logprob":-0.5}]}}]}"#,
            r#"{"choices":[{"delta":{"content":"2"},"logprobs":{"content":[{"logprob":-0.25}]},"finish_reason":"length"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2}}"#,
        ];
        for c in chunks {
            assert!(!acc.push_event(c).unwrap());
        }
        assert!(acc.push_event("[DONE]").unwrap());
        let r = acc.finish(&req());
        assert_eq!(r.text, "42");
        assert_eq!((r.input_tokens, r.output_tokens), (7, 2));
        assert_eq!(r.token_logprobs, Some(vec![-0.5, -0.25]));
        assert_eq!(r.finish, FinishReason::Length);
    }

    #[test]
    fn without_usage_each_log_probability_is_one_output_token() {
        let mut acc = Accumulator::default();
        // Two tokens whose 28 characters would be estimated as 7.
        for (t, lp) in [("forty-two and then some", -0.5), (" more", -0.25)] {
            let chunk = json!({"choices": [{"delta": {"content": t},
                "logprobs": {"content": [{"token": t, "logprob": lp}]}}]});
            acc.push_event(&chunk.to_string()).unwrap();
        }
        let r = acc.finish(&req());
        assert_eq!(r.output_tokens, 2);
        assert!(r.input_tokens > 0, "the prompt is estimated");
        // Without log-probabilities either, the text is estimated (4 characters a token).
        let mut acc = Accumulator::default();
        acc.push_event(r#"{"choices":[{"delta":{"content":"forty-two and then some more"}}]}"#)
            .unwrap();
        assert_eq!(acc.finish(&req()).output_tokens, 7);
    }

    #[test]
    fn bad_bodies_are_classified_not_panics() {
        let mut acc = Accumulator::default();
        assert!(matches!(
            acc.push_event("{not json"),
            Err(Attempt::Malformed(_))
        ));
        let e = acc.push_event(r#"{"error":{"message":"overloaded"}}"#);
        assert!(matches!(e, Err(Attempt::Status { status: 502, .. })));
        assert!(matches!(
            parse_json_response(b"[]", &req()),
            Err(Attempt::Malformed(_))
        ));
        let ok = parse_json_response(
            br#"{"choices":[{"message":{"content":"hi there"},"finish_reason":"stop"}]}"#,
            &req(),
        )
        .unwrap();
        assert_eq!(
            (ok.text.as_str(), ok.output_tokens),
            ("hi there", 2),
            "estimated without usage"
        );
        assert_eq!(
            error_message(r#"{"error":{"message":"bad key"}}"#),
            "bad key"
        );
        assert_eq!(error_message(""), "(empty body)");
    }

    #[test]
    fn request_body_maps_sampling_and_stops() {
        let mut r = req();
        r.stop = vec![
            "a".into(),
            "".into(),
            "b".into(),
            "c".into(),
            "d".into(),
            "e".into(),
        ];
        r.sampling = Sampling::Temperature {
            temperature: 0.7,
            seed: 3,
        };
        let b = request_body("m", &r, true);
        assert_eq!(b["stop"], json!(["a", "b", "c", "d"]));
        assert_eq!(b["seed"], json!(3));
        assert_eq!(b["messages"][0]["role"], "user");
        assert_eq!(b["stream"], json!(true));
        assert_eq!(b["stream_options"]["include_usage"], json!(true));
        assert_eq!(
            (&b["logprobs"], &b["top_logprobs"]),
            (&json!(true), &json!(1))
        );
        // OpenAI rejects stream_options on a request that does not stream.
        let plain = request_body("m", &r, false);
        assert_eq!(plain["stream"], json!(false));
        assert!(plain.get("stream_options").is_none(), "{plain}");
    }

    #[test]
    fn context_overflow_bodies_of_known_servers() {
        // llama-cpp-python 0.3.16 and OpenAI.
        let llama_cpp_python = r#"{"error":{"message":"This model's maximum context length is 512 tokens. However, you requested 739 tokens (731 in the messages, 8 in the completion). Please reduce the length of the messages or completion.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
        assert_eq!(context_overflow(400, llama_cpp_python), Some((739, 512)));
        let openai = r#"{"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 130011 tokens. Please reduce the length of the messages.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
        assert_eq!(context_overflow(400, openai), Some((130011, 128000)));
        // vLLM: the message alone; llama.cpp's server: its own type with the numbers.
        let vllm = r#"{"object":"error","message":"This model's maximum context length is 2048 tokens. However, you requested 2100 tokens (2000 in the messages, 100 in the completion). Please reduce the length of the messages or completion.","type":"BadRequestError","param":null,"code":400}"#;
        assert_eq!(context_overflow(400, vllm), Some((2100, 2048)));
        let llama_cpp = r#"{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error","n_prompt_tokens":5000,"n_ctx":4096}}"#;
        assert_eq!(context_overflow(400, llama_cpp), Some((5000, 4096)));
        // Anything else is not an overflow.
        assert_eq!(context_overflow(500, llama_cpp_python), None);
        assert_eq!(
            context_overflow(400, r#"{"error":{"message":"bad role","code":"invalid"}}"#),
            None
        );
        assert_eq!(context_overflow(400, "maximum context length"), None);
        let unreadable = r#"{"error":{"message":"too long","code":"context_length_exceeded"}}"#;
        assert_eq!(context_overflow(400, unreadable), None);
    }
}
