//! Escalation of final answers: the checks a policy's `+program[:all]`, `+retry[:K[@T]]`
//! and `+agree[:K[@T]]` suffixes ask for ([`Escalation`]), and the climb to the next model
//! when one fails.
//!
//! Invariants this module upholds:
//! - **It climbs, never descends.** An answer from a model below the largest is checked on
//!   that same model; an empty answer or the first failed check asks the next model up,
//!   whose answer is checked in turn. The largest model's answer stands unchecked.
//! - **Checks run in a fixed order, each only while it can change the verdict**
//!   ([`Check::runs_after`]): program (maths answers only), then retry (only after the
//!   program check left the answer unconfirmed), then agree (only when all before passed).
//! - **Programs confirm an answer, never replace it.**
//! - **Every call is a traced, priced step**, and the step whose answer stands is the last
//!   trace (graders read it).
//! - **Samples never repeat the answer's call.** Sampled programs and answers are seeded
//!   with the answer's own seed (0 when greedy) plus k ≥ 1.
//! - **Only a policy's escalation asks for checks.** [`Executor::direct`] (`ask --direct`)
//!   never checks; label search's pinned routes carry no escalation; GRPO rollouts are
//!   checked only with `train grpo --escalate` (which rewards the checked route), and
//!   `calibrate` only when its policy has a suffix (each threshold is scored under it).

mod agree;
mod keep;
mod program;

use r2_allocator::Escalation;
use r2_decomposer::TaskFamily;
use r2_pool::{GenRequest, PoolCall, Sampling};

use crate::answer::final_answer;
use crate::run::{ExecError, Executor};
use crate::trace::StepTrace;
use agree::Agree;
use keep::KeepCheck;
use program::{ProgramCheck, Retry};

/// How a final answer is asked for: directly (step `1`) or as a plan's synthesis.
pub(crate) struct FinalCall<'a> {
    /// The step's id: `1` or `synthesis`. Calls for the same answer extend it: `:upN` for
    /// the Nth model up, then `:program`, `:retryK` or `:agreeK` for the checks.
    pub id: &'a str,
    /// What the step does, as its traces say.
    pub text: &'a str,
    /// The user's question, which checking programs are written for.
    pub question: &'a str,
    pub depends_on: Vec<String>,
    pub family: TaskFamily,
    /// The request that answers, the same on every model.
    pub request: &'a GenRequest,
}

/// A final answer under check: how it was asked, which call on which model gave it, and
/// what it says.
pub(crate) struct UnderCheck<'a> {
    pub asked: &'a FinalCall<'a>,
    /// The id of the call that answered (`1`, `1:up1`, ...).
    pub call_id: String,
    pub model: usize,
    pub answer: String,
    /// The answer's own seed (0 when greedy), which sample seeds count up from.
    pub base_seed: u64,
    /// Geometric-mean and least token probability of the answer (None: the backend gave none).
    pub confidence: Option<f64>,
    pub least_confidence: Option<f64>,
}

impl UnderCheck<'_> {
    /// The id of a check's call: `1:program`, `1:up1:agree2`.
    fn id(&self, check: &str) -> String {
        format!("{}:{check}", self.call_id)
    }

    /// One call of a check on the answering model, traced as part of the answer's step.
    async fn ask(
        &self,
        exec: &Executor<'_>,
        id: &str,
        request: &GenRequest,
        traces: &mut Vec<StepTrace>,
    ) -> Result<PoolCall, ExecError> {
        let call = exec.call(id, self.model, request).await?;
        traces.push(exec.trace(id, self.asked.text, self.asked.depends_on.clone(), &call));
        Ok(call)
    }

    /// The sampling of a check's `k`-th sampled call (k ≥ 1).
    fn sampling(&self, temperature: f32, k: usize) -> Sampling {
        Sampling::Temperature {
            temperature,
            seed: self.base_seed.wrapping_add(k as u64),
        }
    }
}

/// A final answer with every call made to reach it (escalations included).
pub(crate) struct Checked {
    pub traces: Vec<StepTrace>,
    pub answer: String,
    pub warnings: Vec<String>,
}

/// Where the checks of one answer stand.
enum Verdict {
    Pass,
    /// Programs were written and none confirmed the answer: why each one did not.
    Unconfirmed(Vec<String>),
    Fail(String),
}

impl Verdict {
    /// Why the answer escalates, if it does.
    fn failure(self) -> Option<String> {
        match self {
            Verdict::Pass => None,
            Verdict::Fail(why) => Some(why),
            Verdict::Unconfirmed(mut whys) => match whys.len() {
                0 | 1 => whys.pop(),
                n => Some(format!("{} ({n} programs)", whys.join("; "))),
            },
        }
    }
}

/// One check of an answer, on the model that gave it.
enum Check {
    /// `+program[:all]`: the program the model writes for the question computes the answer.
    Program(ProgramCheck),
    /// `+retry:K`: when that program does not, up to K sampled ones may.
    Retry(Retry),
    /// `+agree:K`: K sampled answers say the same.
    Agree(Agree),
    /// `+keep[@b]`: a fitted decision over the answer's signals (alone).
    Keep(KeepCheck),
}

impl Check {
    /// The checks `esc` asks for on an answer of `family`, in the order they run.
    fn list(esc: &Escalation, family: TaskFamily) -> Vec<Check> {
        if let Some(keep) = &esc.keep {
            return vec![Check::Keep(KeepCheck { keep: keep.clone() })];
        }
        let mut checks = Vec::new();
        if esc.program && family == TaskFamily::Math {
            let program = ProgramCheck {
                uses_all: esc.uses_all,
            };
            checks.push(Check::Program(program));
            if esc.retries > 0 {
                checks.push(Check::Retry(Retry {
                    program,
                    programs: esc.retries,
                    temperature: esc.retry_temperature,
                }));
            }
        }
        if esc.samples > 0 {
            checks.push(Check::Agree(Agree {
                samples: esc.samples,
                temperature: esc.temperature,
            }));
        }
        checks
    }

    /// Whether this check runs after the checks before it came to `so_far`.
    fn runs_after(&self, so_far: &Verdict) -> bool {
        match self {
            Check::Retry(_) => matches!(so_far, Verdict::Unconfirmed(_)),
            Check::Program(_) | Check::Agree(_) | Check::Keep(_) => {
                matches!(so_far, Verdict::Pass)
            }
        }
    }

    /// The verdict after this check, its calls traced into `traces`.
    async fn run(
        &self,
        exec: &Executor<'_>,
        under: &UnderCheck<'_>,
        so_far: Verdict,
        traces: &mut Vec<StepTrace>,
    ) -> Result<Verdict, ExecError> {
        match self {
            Check::Program(check) => check.run(exec, under, traces).await,
            Check::Retry(retry) => retry.run(exec, under, so_far, traces).await,
            Check::Agree(agree) => agree.run(exec, under, traces).await,
            Check::Keep(keep) => keep.run(exec, under, traces).await,
        }
    }
}

impl Executor<'_> {
    /// A final answer from `model`. With `escalation`, an answer from a model below the
    /// largest is checked on the same model (see [`Check`]); if a check fails (or no
    /// answer could be read), the next model up answers and is checked in turn.
    pub(crate) async fn checked_answer(
        &self,
        asked: FinalCall<'_>,
        mut model: usize,
        escalation: Option<Escalation>,
    ) -> Result<Checked, ExecError> {
        let checks = escalation
            .as_ref()
            .map_or_else(Vec::new, |esc| Check::list(esc, asked.family));
        let mut traces = Vec::new();
        let mut warnings = Vec::new();
        let mut call_id = asked.id.to_string();
        let mut rise = 0;
        let base_seed = match asked.request.sampling {
            Sampling::Temperature { seed, .. } => seed,
            Sampling::Greedy => 0,
        };
        loop {
            let call = self.call(&call_id, model, asked.request).await?;
            let answered = traces.len();
            traces.push(self.trace(&call_id, asked.text, asked.depends_on.clone(), &call));
            let answer = final_answer(asked.family, &call.response.text);
            let Some(esc) = escalation
                .as_ref()
                .filter(|_| model + 1 < self.pool().len())
            else {
                return Ok(Checked {
                    traces,
                    answer,
                    warnings,
                });
            };
            let mut verdict = Verdict::Pass;
            if answer.trim().is_empty() {
                verdict = Verdict::Fail("gave no answer".to_string());
            } else if esc.program && asked.family != TaskFamily::Math && rise == 0 {
                warnings.push(format!(
                    "{}: the program check applies to maths answers only; this {} answer is not program-checked",
                    asked.id,
                    asked.family.as_str()
                ));
            }
            let under = UnderCheck {
                asked: &asked,
                call_id,
                model,
                answer,
                base_seed,
                confidence: call.response.confidence(),
                least_confidence: call.response.least_confidence(),
            };
            for check in &checks {
                if check.runs_after(&verdict) {
                    verdict = check.run(self, &under, verdict, &mut traces).await?;
                }
            }
            let Some(why) = verdict.failure() else {
                // The step whose answer stands is the last one (what graders read).
                let kept = traces.remove(answered);
                traces.push(kept);
                return Ok(Checked {
                    traces,
                    answer: under.answer,
                    warnings,
                });
            };
            warnings.push(format!(
                "{}: {} {why}; escalated to {}",
                asked.id,
                self.pool().id(model),
                self.pool().id(model + 1)
            ));
            model += 1;
            rise += 1;
            call_id = format!("{}:up{rise}", asked.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(checks: &[Check]) -> Vec<&'static str> {
        checks
            .iter()
            .map(|c| match c {
                Check::Program(_) => "program",
                Check::Retry(_) => "retry",
                Check::Agree(_) => "agree",
                Check::Keep(_) => "keep",
            })
            .collect()
    }

    #[test]
    fn checks_run_in_order_and_only_where_they_apply() {
        let mut esc = Escalation {
            samples: 2,
            temperature: 0.7,
            program: true,
            uses_all: false,
            retries: 1,
            retry_temperature: 0.7,
            keep: None,
        };
        assert_eq!(
            names(&Check::list(&esc, TaskFamily::Math)),
            ["program", "retry", "agree"]
        );
        // Programs check maths answers only.
        assert_eq!(names(&Check::list(&esc, TaskFamily::General)), ["agree"]);
        esc.program = false;
        assert_eq!(names(&Check::list(&esc, TaskFamily::Math)), ["agree"]);
        esc.samples = 0;
        assert!(Check::list(&esc, TaskFamily::Math).is_empty());

        let [program, retry, agree] = [
            Check::Program(ProgramCheck { uses_all: false }),
            Check::Retry(Retry {
                program: ProgramCheck { uses_all: false },
                programs: 1,
                temperature: 0.7,
            }),
            Check::Agree(Agree {
                samples: 1,
                temperature: 0.7,
            }),
        ];
        let unconfirmed = Verdict::Unconfirmed(vec!["computed 21 with its program".into()]);
        let failed = Verdict::Fail("gave no answer".into());
        assert!(program.runs_after(&Verdict::Pass) && agree.runs_after(&Verdict::Pass));
        assert!(!retry.runs_after(&Verdict::Pass) && retry.runs_after(&unconfirmed));
        assert!(!program.runs_after(&failed) && !retry.runs_after(&failed));
        assert!(!agree.runs_after(&unconfirmed) && !agree.runs_after(&failed));
    }

    #[test]
    fn an_unconfirmed_answer_fails_with_every_program_named() {
        assert_eq!(Verdict::Pass.failure(), None);
        let one = Verdict::Unconfirmed(vec!["computed 21 with its program".into()]);
        assert_eq!(
            one.failure().as_deref(),
            Some("computed 21 with its program")
        );
        let two = Verdict::Unconfirmed(vec!["computed 21 with its program".into(), "x".into()]);
        assert_eq!(
            two.failure().as_deref(),
            Some("computed 21 with its program; x (2 programs)")
        );
    }
}
