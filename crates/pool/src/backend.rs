//! The one trait every model backend implements, and the request/response types it speaks.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: Role::System,
            content: content.into(),
        }
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Sampling {
    /// Always the most likely token: deterministic.
    Greedy,
    /// Temperature sampling from a seeded generator: reproducible for a fixed seed.
    Temperature { temperature: f32, seed: u64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenRequest {
    pub messages: Vec<ChatMessage>,
    /// Hard bound on generated tokens: a looping model cannot hang a request.
    pub max_tokens: u32,
    pub sampling: Sampling,
    /// Generation stops before the first occurrence of any of these strings.
    pub stop: Vec<String>,
    /// Keep generating past end-of-generation tokens and never cut repetitive output, so
    /// exactly `max_tokens` tokens are produced (context permitting): for throughput
    /// benchmarks that must generate a fixed number of tokens. Stop strings still apply.
    #[serde(default)]
    pub ignore_eos: bool,
}

impl GenRequest {
    pub fn new(messages: Vec<ChatMessage>, max_tokens: u32) -> Self {
        Self {
            messages,
            max_tokens,
            sampling: Sampling::Greedy,
            stop: Vec::new(),
            ignore_eos: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model emitted its end-of-generation token.
    Stop,
    /// A stop string was produced (and removed from the text).
    StopString,
    /// `max_tokens` was reached.
    Length,
    /// The output started repeating itself and was cut.
    Repetition,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenResponse {
    pub text: String,
    /// Exact prompt tokens after the chat template was applied.
    pub input_tokens: u32,
    /// Exact generated tokens (including any cut by a stop string).
    pub output_tokens: u32,
    /// Natural-log probability of each generated token, when the backend offers them.
    pub token_logprobs: Option<Vec<f32>>,
    pub finish: FinishReason,
}

impl GenResponse {
    /// Per-step confidence: the geometric-mean probability of the generated tokens, in [0, 1].
    pub fn confidence(&self) -> Option<f64> {
        let lps = self.token_logprobs.as_ref()?;
        if lps.is_empty() {
            return None;
        }
        let mean = lps.iter().map(|&l| l as f64).sum::<f64>() / lps.len() as f64;
        let c = mean.exp();
        c.is_finite().then_some(c.clamp(0.0, 1.0))
    }

    /// The least probability of any generated token, in [0, 1].
    pub fn least_confidence(&self) -> Option<f64> {
        let least = self
            .token_logprobs
            .as_ref()?
            .iter()
            .copied()
            .reduce(f32::min)?;
        let p = f64::from(least).exp();
        p.is_finite().then_some(p.clamp(0.0, 1.0))
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    #[error(
        "prompt has {needed} tokens but model '{model}' has a context length of {limit} tokens"
    )]
    ContextOverflow {
        model: String,
        needed: u32,
        limit: u32,
    },
    #[error("model '{model}' could not be loaded: {reason}")]
    Load { model: String, reason: String },
    #[error("model '{model}' failed: {reason}")]
    Inference { model: String, reason: String },
    #[error("model '{model}' timed out after {seconds:.1}s")]
    Timeout { model: String, seconds: f64 },
}

impl BackendError {
    /// True when the caller's input (not the machine) is at fault: the CLI maps these to exit code 2.
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            BackendError::ContextOverflow { .. } | BackendError::Load { .. }
        )
    }
}

/// A model that turns chat messages into text. Implementations must be safe to call from
/// several tasks at once; they serialise or batch calls to one model themselves.
#[async_trait]
pub trait Backend: Send + Sync {
    async fn generate(&self, request: &GenRequest) -> Result<GenResponse, BackendError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignore_eos_defaults_to_false_and_round_trips() {
        let req = GenRequest::new(vec![ChatMessage::user("hi")], 8);
        assert!(!req.ignore_eos);
        let mut json = serde_json::to_value(&req).unwrap();
        json.as_object_mut().unwrap().remove("ignore_eos");
        let old: GenRequest = serde_json::from_value(json).unwrap();
        assert_eq!(
            old, req,
            "requests serialised before the field existed still load"
        );
        let bench = GenRequest {
            ignore_eos: true,
            ..req
        };
        let back: GenRequest =
            serde_json::from_str(&serde_json::to_string(&bench).unwrap()).unwrap();
        assert!(back.ignore_eos);
    }
}
