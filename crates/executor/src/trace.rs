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
