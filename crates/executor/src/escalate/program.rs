//! The program checks (`+program[:all]`, `+retry:K`): the answering model writes a
//! program for the question, which [`crate::program`] interprets (never executes); its
//! value must equal the answer ([`same_value`]), and with `:all` depend on every number
//! the question writes. A program cut off at the token limit confirms nothing.

use r2_pool::{FinishReason, Sampling};
use r2_signals::ProgramOutcome;

use super::{UnderCheck, Verdict};
use crate::answer::{is_plain_number, same_value, show_value};
use crate::program::{evaluate, unused_quantities, Computed, ProgramError};
use crate::prompts;
use crate::run::{ExecError, Executor};
use crate::trace::StepTrace;

/// `+program[:all]`: one program, sampled as the answer was (greedy by default).
#[derive(Debug, Clone, Copy)]
pub(super) struct ProgramCheck {
    /// `:all`: the program's value must depend on every number the question writes.
    pub uses_all: bool,
}

impl ProgramCheck {
    /// [`Verdict::Unconfirmed`] when the program does not confirm the answer; a failure
    /// without a call when no program could (the answer is no plain number).
    pub async fn run(
        &self,
        exec: &Executor<'_>,
        under: &UnderCheck<'_>,
        traces: &mut Vec<StepTrace>,
    ) -> Result<Verdict, ExecError> {
        if !is_plain_number(&under.answer) {
            // No program value can equal `3/4` or `18 dollars`: spare the call.
            return Ok(Verdict::Fail(format!(
                "answered '{}', not a plain number its program could confirm",
                under.answer
            )));
        }
        let sampling = under.asked.request.sampling;
        let verdict = match self
            .attempt(exec, under, &under.id("program"), sampling, traces)
            .await?
        {
            None => Verdict::Pass,
            Some(why) => Verdict::Unconfirmed(vec![why]),
        };
        Ok(verdict)
    }

    /// One program written with `sampling` under call id `id`: `None` when it confirms the
    /// answer, else why not.
    async fn attempt(
        &self,
        exec: &Executor<'_>,
        under: &UnderCheck<'_>,
        id: &str,
        sampling: Sampling,
        traces: &mut Vec<StepTrace>,
    ) -> Result<Option<String>, ExecError> {
        let computed = written(exec, under, id, sampling, traces).await?;
        let failure = match computed {
            Err(e) => Some(format!("wrote a program that gives no value ({e})")),
            Ok(c) if !same_value(&under.answer, c.value) => {
                Some(format!("computed {} with its program", show_value(c.value)))
            }
            Ok(c) if self.uses_all => {
                let unused = unused_quantities(under.asked.question, &c.inputs);
                (!unused.is_empty()).then(|| {
                    format!(
                        "wrote a program that never uses {} from the question",
                        unused.join(", ")
                    )
                })
            }
            Ok(_) => None,
        };
        Ok(failure)
    }
}

/// The program the answering model writes for the question with `sampling`, under call id
/// `id`, and what the interpreter makes of it (a program cut off at the token limit gives
/// nothing).
pub(super) async fn written(
    exec: &Executor<'_>,
    under: &UnderCheck<'_>,
    id: &str,
    sampling: Sampling,
    traces: &mut Vec<StepTrace>,
) -> Result<Result<Computed, ProgramError>, ExecError> {
    let mut request = under.asked.request.clone();
    request.messages = prompts::program(under.asked.question);
    request.sampling = sampling;
    let call = under.ask(exec, id, &request, traces).await?;
    Ok(match call.response.finish {
        FinishReason::Length => Err(ProgramError::CutOff),
        _ => evaluate(&call.response.text),
    })
}

/// The program check as the keep decision reads it: whether the greedy program computes the
/// answer and uses every number of the question; with `retries`, when it does not, whether
/// one of up to [`r2_signals::keep::RETRIES`] sampled programs (seeded as `+retry`'s)
/// computes it.
pub(super) async fn outcome(
    exec: &Executor<'_>,
    under: &UnderCheck<'_>,
    retries: bool,
    traces: &mut Vec<StepTrace>,
) -> Result<ProgramOutcome, ExecError> {
    let sampling = under.asked.request.sampling;
    let computed = written(exec, under, &under.id("program"), sampling, traces).await?;
    let mut outcome = match computed {
        Ok(c) if same_value(&under.answer, c.value) => ProgramOutcome {
            confirms: true,
            uses_all: unused_quantities(under.asked.question, &c.inputs).is_empty(),
            sampled_confirms: false,
        },
        _ => ProgramOutcome::default(),
    };
    if retries && !outcome.confirms {
        for k in 1..=r2_signals::keep::RETRIES {
            let sampling = under.sampling(r2_allocator::Escalation::TEMPERATURE, k);
            let id = under.id(&format!("retry{k}"));
            if written(exec, under, &id, sampling, traces)
                .await?
                .is_ok_and(|c| same_value(&under.answer, c.value))
            {
                outcome.sampled_confirms = true;
                break;
            }
        }
    }
    Ok(outcome)
}

/// `+retry:K[@T]`: after the program check left the answer unconfirmed, up to K programs
/// sampled at temperature T; the first that passes the same check confirms the answer.
#[derive(Debug, Clone, Copy)]
pub(super) struct Retry {
    pub program: ProgramCheck,
    pub programs: usize,
    pub temperature: f32,
}

impl Retry {
    /// [`Verdict::Pass`] at the first confirming program; else `so_far`'s failures with
    /// each sampled program's added.
    pub async fn run(
        &self,
        exec: &Executor<'_>,
        under: &UnderCheck<'_>,
        so_far: Verdict,
        traces: &mut Vec<StepTrace>,
    ) -> Result<Verdict, ExecError> {
        let Verdict::Unconfirmed(mut failures) = so_far else {
            return Ok(so_far);
        };
        for k in 1..=self.programs {
            let sampling = under.sampling(self.temperature, k);
            let id = under.id(&format!("retry{k}"));
            match self
                .program
                .attempt(exec, under, &id, sampling, traces)
                .await?
            {
                None => return Ok(Verdict::Pass),
                Some(why) => failures.push(why),
            }
        }
        Ok(Verdict::Unconfirmed(failures))
    }
}
