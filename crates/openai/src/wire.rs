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

pub(crate) fn request_body(model: &str, request: &GenRequest) -> Value {
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
        "stream": true,
        "stream_options": {"include_usage": true},
        "logprobs": true,
    });
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
        let (input_tokens, output_tokens) = self
            .usage
            .unwrap_or_else(|| (estimate_input(request), estimate_tokens(&self.text)));
        GenResponse {
            text: self.text,
            input_tokens,
            output_tokens,
            token_logprobs: self.logprobs.filter(|l| !l.is_empty()),
            finish: self.finish.unwrap_or(FinishReason::Stop),
        }
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
        let b = request_body("m", &r);
        assert_eq!(b["stop"], json!(["a", "b", "c", "d"]));
        assert_eq!(b["seed"], json!(3));
        assert_eq!(b["messages"][0]["role"], "user");
        assert_eq!(b["stream"], json!(true));
    }
}
