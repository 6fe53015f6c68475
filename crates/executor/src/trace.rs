//! The answer and its per-step trace: the schema `ask --json` prints and the server returns.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepTrace {
    /// `"decompose"`, a subtask number (`"1"`, `"2"`...), `"synthesis"`, or an auxiliary
    /// call such as `"rate:2"` (a policy rating step 2).
    pub id: String,
    pub text: String,
    pub depends_on: Vec<String>,
    pub model: String,
    pub input_tokens: u32,
    pub output_tokens: u32,
    pub cost_usd: f64,
    pub latency_ms: f64,
    /// Geometric-mean token probability of the output, when the backend reports log-probabilities.
    pub confidence: Option<f64>,
    pub output: String,
}

impl StepTrace {
    /// The trace of one finished pool call (`model` is the pool id of `call.model`).
    pub fn from_call(
        id: &str,
        text: &str,
        depends_on: Vec<String>,
        model: &str,
        call: &r2_pool::PoolCall,
    ) -> Self {
        StepTrace {
            id: id.to_string(),
            text: text.to_string(),
            depends_on,
            model: model.to_string(),
            input_tokens: call.response.input_tokens,
            output_tokens: call.response.output_tokens,
            cost_usd: call.cost_usd,
            latency_ms: call.latency.as_secs_f64() * 1000.0,
            confidence: call.response.confidence(),
            output: call.response.text.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Answer {
    pub answer: String,
    pub total_cost_usd: f64,
    pub steps: Vec<StepTrace>,
    pub warnings: Vec<String>,
}

impl Answer {
    pub fn total_tokens(&self) -> (u64, u64) {
        self.steps.iter().fold((0, 0), |(i, o), s| {
            (i + s.input_tokens as u64, o + s.output_tokens as u64)
        })
    }
}
