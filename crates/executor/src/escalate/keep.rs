//! `+keep[@b]`: one fitted decision keeps or escalates an answer. It reads the answer's
//! token probabilities and, when the decision was fitted with them, the greedy program's
//! outcome (one call; none for an answer that is no plain number) and, when that program
//! does not confirm the answer, up to 2 sampled ones until one does, and keeps the answer
//! when P(right) ≥ b. An answer it has no decision for (another model or task family), or
//! cannot score (a backend without token probabilities), escalates.

use r2_allocator::Keep;
use r2_signals::Observed;

use super::{program, UnderCheck, Verdict};
use crate::answer::is_plain_number;
use crate::run::{ExecError, Executor};
use crate::trace::StepTrace;

pub(super) struct KeepCheck {
    pub keep: Keep,
}

impl KeepCheck {
    pub async fn run(
        &self,
        exec: &Executor<'_>,
        under: &UnderCheck<'_>,
        traces: &mut Vec<StepTrace>,
    ) -> Result<Verdict, ExecError> {
        let family = under.asked.family;
        let Some(decision) = self
            .keep
            .set
            .for_answer(exec.pool().id(under.model), family)
        else {
            return Ok(Verdict::Fail(format!(
                "has no keep decision for its {} answers",
                family.as_str()
            )));
        };
        let program = if decision.needs_program() && is_plain_number(&under.answer) {
            Some(program::outcome(exec, under, decision.needs_retries(), traces).await?)
        } else {
            None
        };
        let observed = Observed {
            confidence: under.confidence,
            least_confidence: under.least_confidence,
            program,
        };
        let threshold = self.keep.at.unwrap_or(decision.threshold);
        Ok(match decision.probability(&observed) {
            Err(e) => Verdict::Fail(format!(
                "gave an answer the keep decision cannot score ({e})"
            )),
            Ok(p) if p >= threshold => Verdict::Pass,
            Ok(p) => Verdict::Fail(format!(
                "gave an answer right with probability {p:.2}, below the keep threshold {threshold}"
            )),
        })
    }
}
