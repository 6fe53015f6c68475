//! The self-consistency check (`+agree:K[@T]`): K answers sampled from the same request on
//! the same model must each say what the answer says ([`same_answer`]).

use super::{UnderCheck, Verdict};
use crate::answer::{final_answer, same_answer};
use crate::run::{ExecError, Executor};
use crate::trace::StepTrace;

#[derive(Debug, Clone, Copy)]
pub(super) struct Agree {
    pub samples: usize,
    pub temperature: f32,
}

impl Agree {
    /// [`Verdict::Fail`] at the first sample that disagrees (later ones are not asked).
    pub async fn run(
        &self,
        exec: &Executor<'_>,
        under: &UnderCheck<'_>,
        traces: &mut Vec<StepTrace>,
    ) -> Result<Verdict, ExecError> {
        let asked = under.asked;
        for sample in 1..=self.samples {
            let mut again = asked.request.clone();
            again.sampling = under.sampling(self.temperature, sample);
            let id = under.id(&format!("agree{sample}"));
            let call = under.ask(exec, &id, &again, traces).await?;
            let said = final_answer(asked.family, &call.response.text);
            if !same_answer(asked.family, &said, &under.answer) {
                return Ok(Verdict::Fail(format!(
                    "disagreed with itself on sample {sample}"
                )));
            }
        }
        Ok(Verdict::Pass)
    }
}
