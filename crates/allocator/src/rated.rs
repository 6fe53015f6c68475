//! `llm-rated:<model>`: a pool model rates each step's difficulty on the pool's scale
//! (1 = cheapest model suffices ... N = needs the strongest), the zero-shot baseline of
//! Division-of-Thoughts. The rating call is a real model call and is traced and priced.

use async_trait::async_trait;
use r2_pool::{ChatMessage, GenRequest};

use crate::{Allocation, AuxCall, Policy, PolicyError, StepContext, StepKind};

pub struct LlmRatedPolicy {
    rater: usize,
}

impl LlmRatedPolicy {
    pub fn new(rater: usize) -> Self {
        Self { rater }
    }
}

/// The rating prompt for one step on a pool of `levels` models.
pub fn rating_request(question: &str, step: &str, levels: usize) -> GenRequest {
    let system = format!(
        "You estimate how hard a reasoning step is. Reply with one integer from 1 to {levels} and nothing else.\n\
         1 = trivial (copy a number, one small addition, restate a fact).\n\
         {levels} = hard (several operations, careful reasoning, easy to get wrong)."
    );
    let user = format!("Problem: {question}\n\nStep: {step}\n\nDifficulty (1-{levels}):");
    let mut req = GenRequest::new(
        vec![ChatMessage::system(system), ChatMessage::user(user)],
        8,
    );
    req.stop = vec!["\n".into()];
    req
}

/// The first integer in `1..=levels` in the reply, if any.
pub fn parse_rating(reply: &str, levels: usize) -> Option<usize> {
    reply
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .find_map(|s| s.parse::<usize>().ok().filter(|r| (1..=levels).contains(r)))
}

#[async_trait]
impl Policy for LlmRatedPolicy {
    fn name(&self) -> String {
        format!("llm-rated:{}", self.rater)
    }

    async fn allocate(&self, step: StepContext<'_>) -> Result<Allocation, PolicyError> {
        let levels = step.pool.len();
        let text = match step.kind {
            StepKind::Subtask => step.subtask.text.clone(),
            StepKind::Synthesis => format!(
                "Combine the results of the earlier steps into the final answer: {}",
                step.subtask.text
            ),
        };
        let request = rating_request(step.question, &text, levels);
        let call = step
            .pool
            .call(self.rater, &request, None)
            .await
            .map_err(|e| PolicyError::Call(e.to_string()))?;
        let mut warnings = Vec::new();
        let rating = match parse_rating(&call.response.text, levels) {
            Some(r) => r,
            None => {
                warnings.push(format!(
                    "llm-rated: no rating in {:?} for step {}; using the strongest model",
                    call.response.text.trim(),
                    step.subtask.id
                ));
                levels
            }
        };
        let aux = AuxCall {
            purpose: format!("rate step {}", step.subtask.id),
            request,
            call,
        };
        Ok(Allocation {
            model: rating - 1,
            score: rating as f64,
            aux_calls: vec![aux],
            warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::parse_rating;

    #[test]
    fn ratings_are_parsed_tolerantly() {
        assert_eq!(parse_rating("2", 3), Some(2));
        assert_eq!(parse_rating("Difficulty: 3/3", 3), Some(3));
        assert_eq!(parse_rating("I'd say 7... no, 1", 3), Some(1));
        assert_eq!(parse_rating("hard", 3), None);
        assert_eq!(parse_rating("0", 3), None);
        assert_eq!(parse_rating("", 3), None);
    }
}
