//! The OpenAI chat-completions request as the gateway accepts it, its validation, and the
//! response/chunk bodies it returns.

use r2_executor::{Answer, StepTrace};
use r2_pool::{ChatMessage, Role};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub model: Option<String>,
    pub messages: Option<Vec<InMessage>>,
    #[serde(default)]
    pub stream: Option<bool>,
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub seed: Option<u64>,
    pub stop: Option<Stop>,
    pub logprobs: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub n: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct InMessage {
    pub role: String,
    pub content: Option<Content>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
pub struct Part {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

/// A request that passed validation.
#[derive(Debug)]
pub struct Chat {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub stream: bool,
    pub include_usage: bool,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub logprobs: bool,
}

pub fn parse(body: &[u8]) -> Result<Chat, ApiError> {
    let req: ChatRequest = serde_json::from_slice(body).map_err(|e| {
        let code = if e.is_syntax() || e.is_eof() {
            "invalid_json"
        } else {
            "invalid_request"
        };
        ApiError::bad_request(code, format!("invalid request body: {e}"))
    })?;
    let model = req
        .model
        .filter(|m| !m.trim().is_empty())
        .ok_or_else(|| ApiError::bad_request("missing_model", "`model` is required"))?;
    let raw = req
        .messages
        .ok_or_else(|| ApiError::bad_request("missing_messages", "`messages` is required"))?;
    if raw.is_empty() {
        return Err(ApiError::bad_request(
            "missing_messages",
            "`messages` must contain at least one message",
        ));
    }
    let mut messages = Vec::with_capacity(raw.len());
    for (i, m) in raw.into_iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(ApiError::bad_request(
                    "invalid_role",
                    format!("messages[{i}].role: unsupported role '{other}' (system, developer, user, assistant)"),
                ))
            }
        };
        let content = match m.content {
            None => String::new(),
            Some(Content::Text(t)) => t,
            Some(Content::Parts(parts)) => {
                let mut text = Vec::new();
                for (j, p) in parts.into_iter().enumerate() {
                    match (p.kind.as_str(), p.text) {
                        ("text", Some(t)) => text.push(t),
                        _ => {
                            return Err(ApiError::bad_request(
                                "unsupported_content",
                                format!(
                                    "messages[{i}].content[{j}]: only text parts are supported"
                                ),
                            ))
                        }
                    }
                }
                text.join("\n")
            }
        };
        messages.push(ChatMessage { role, content });
    }
    match messages.iter().rev().find(|m| m.role == Role::User) {
        None => {
            return Err(ApiError::bad_request(
                "missing_messages",
                "`messages` needs at least one user message",
            ))
        }
        Some(m) if m.content.trim().is_empty() => {
            return Err(ApiError::bad_request(
                "empty_content",
                "the last user message is empty",
            ))
        }
        Some(_) => {}
    }
    if let Some(t) = req.temperature {
        if !(t.is_finite() && (0.0..=2.0).contains(&t)) {
            return Err(ApiError::bad_request(
                "invalid_temperature",
                "`temperature` must be between 0 and 2",
            ));
        }
    }
    match req.n {
        None | Some(1) => {}
        Some(0) => {
            return Err(ApiError::bad_request(
                "invalid_n",
                "`n` must be at least 1",
            ))
        }
        Some(n) => {
            return Err(ApiError::bad_request(
                "invalid_n",
                format!("`n` = {n} is not supported: this server returns one choice per request; send {n} requests (with different seeds) instead"),
            ))
        }
    }
    let max_tokens = req.max_completion_tokens.or(req.max_tokens);
    if max_tokens == Some(0) {
        return Err(ApiError::bad_request(
            "invalid_max_tokens",
            "`max_tokens` must be at least 1",
        ));
    }
    Ok(Chat {
        model,
        messages,
        stream: req.stream.unwrap_or(false),
        include_usage: req
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
        max_tokens,
        temperature: req.temperature,
        seed: req.seed,
        stop: match req.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
        },
        logprobs: req.logprobs.unwrap_or(false),
    })
}

/// For routed requests: the last user message is the question; earlier turns become a
/// compact transcript placed before it, so the pipeline sees the conversation.
pub fn question_with_context(messages: &[ChatMessage]) -> String {
    let last = messages
        .iter()
        .rposition(|m| m.role == Role::User)
        .unwrap_or(messages.len().saturating_sub(1));
    let question = messages.get(last).map(|m| m.content.trim()).unwrap_or("");
    let earlier: Vec<String> = messages[..last]
        .iter()
        .filter(|m| !m.content.trim().is_empty())
        .map(|m| {
            let who = match m.role {
                Role::System => "System",
                Role::User => "User",
                Role::Assistant => "Assistant",
            };
            format!("{who}: {}", m.content.trim())
        })
        .collect();
    if earlier.is_empty() {
        question.to_string()
    } else {
        format!(
            "Conversation so far:\n{}\n\nQuestion: {question}",
            earlier.join("\n")
        )
    }
}

/// The documented extension field: the `ask --json` object plus the trace id and policy.
pub const EXTENSION: &str = "r2reasoner";

pub fn extension(trace_id: &str, policy: &str, answer: &Answer) -> Value {
    let mut v = serde_json::to_value(answer).unwrap_or_else(|_| json!({}));
    v["trace_id"] = json!(trace_id);
    v["policy"] = json!(policy);
    v
}

pub fn usage(answer: &Answer) -> Value {
    let (i, o) = answer.total_tokens();
    json!({"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o})
}

pub fn logprobs_value(lps: Option<&[f32]>) -> Value {
    match lps {
        // Per-token text is not tracked; each entry carries its log-probability.
        Some(l) => {
            json!({"content": l.iter().map(|lp| json!({"token": "", "logprob": lp, "bytes": null, "top_logprobs": []})).collect::<Vec<_>>(), "refusal": null})
        }
        None => Value::Null,
    }
}

#[allow(clippy::too_many_arguments)]
pub fn completion(
    id: &str,
    created: u64,
    model: &str,
    content: &str,
    finish: &str,
    logprobs: Value,
    ext: Value,
    answer: &Answer,
) -> Value {
    json!({
        "id": id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "logprobs": logprobs, "finish_reason": finish}],
        "usage": usage(answer),
        EXTENSION: ext,
    })
}

pub fn chunk(id: &str, created: u64, model: &str, delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
    })
}

pub fn progress_chunk(id: &str, created: u64, model: &str, step: &StepTrace) -> Value {
    let mut c = chunk(id, created, model, json!({}), None);
    c[EXTENSION] = json!({"step": step});
    c
}
