//! The executor: decompose (or not, as the policy decides), allocate, run steps in
//! dependency order with independent steps concurrent, synthesise, and trace every call.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{join_all, BoxFuture, FutureExt, Shared};
use r2_allocator::{Allocation, Escalation, Policy, PolicyError, Route, StepContext, StepKind};
use r2_decomposer::{decompose_prompt, parse_plan, Plan, Subtask, TaskFamily};
use r2_pool::{BackendError, ChatMessage, FinishReason, GenRequest, Pool, PoolCall, Sampling};
use tracing::Instrument;

use crate::answer::{
    final_answer, is_plain_number, same_answer, same_value, show_value, step_result,
};
use crate::program::{evaluate, unused_quantities, Computed, ProgramError};
use crate::prompts;
use crate::trace::{Answer, StepTrace};

#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Plans longer than this are cut (with a warning).
    pub max_subtasks: usize,
    pub decompose_max_tokens: u32,
    pub step_max_tokens: u32,
    /// For direct answers and the synthesis step.
    pub answer_max_tokens: u32,
    /// Bounds each model call, including the wait for a free slot of that model.
    pub step_timeout: Option<Duration>,
    pub sampling: Sampling,
    /// Receives each model call's trace as soon as it finished (the server streams these
    /// as progress); sends to a closed receiver are ignored.
    pub progress: Option<tokio::sync::mpsc::UnboundedSender<StepTrace>>,
}

impl Default for ExecOptions {
    fn default() -> Self {
        Self {
            max_subtasks: 5,
            decompose_max_tokens: 256,
            step_max_tokens: 320,
            answer_max_tokens: 512,
            step_timeout: Some(Duration::from_secs(600)),
            sampling: Sampling::Greedy,
            progress: None,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ExecError {
    #[error("the question is empty")]
    EmptyQuestion,
    #[error("step {step}: {source}")]
    Backend { step: String, source: BackendError },
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

impl ExecError {
    /// The caller's input is at fault (exit code 2 in the CLI).
    pub fn is_input_error(&self) -> bool {
        match self {
            ExecError::EmptyQuestion => true,
            ExecError::Backend { source, .. } => source.is_input_error(),
            ExecError::Policy(p) => p.is_input_error(),
        }
    }
}

pub struct Executor<'p> {
    pool: &'p Pool,
    options: ExecOptions,
}

/// What one finished plan step hands to the steps that depend on it.
#[derive(Debug)]
struct StepOutcome {
    result: String,
    traces: Vec<StepTrace>,
    warnings: Vec<String>,
}

/// What every program of one checked answer shares.
struct ProgramCtx<'a> {
    text: &'a str,
    question: &'a str,
    depends_on: &'a [String],
    model: usize,
    request: &'a GenRequest,
}

/// A final answer with every call made to reach it (escalations included).
struct Checked {
    traces: Vec<StepTrace>,
    answer: String,
    warnings: Vec<String>,
}

type StepFuture<'a> = Shared<BoxFuture<'a, Result<Arc<StepOutcome>, ExecError>>>;

impl<'p> Executor<'p> {
    pub fn new(pool: &'p Pool, options: ExecOptions) -> Self {
        Self { pool, options }
    }

    pub fn options(&self) -> &ExecOptions {
        &self.options
    }

    fn request(&self, messages: Vec<ChatMessage>, max_tokens: u32) -> GenRequest {
        GenRequest {
            messages,
            max_tokens,
            sampling: self.options.sampling,
            stop: Vec::new(),
            ignore_eos: false,
        }
    }

    async fn call(
        &self,
        step: &str,
        model: usize,
        request: &GenRequest,
    ) -> Result<PoolCall, ExecError> {
        let span = tracing::info_span!("model_call", step, model = self.pool.id(model));
        self.pool
            .call(model, request, self.options.step_timeout)
            .instrument(span)
            .await
            .map_err(|source| ExecError::Backend {
                step: step.to_string(),
                source,
            })
    }

    fn trace(&self, id: &str, text: &str, depends_on: Vec<String>, call: &PoolCall) -> StepTrace {
        let trace = StepTrace::from_call(id, text, depends_on, self.pool.id(call.model), call);
        if let Some(tx) = &self.options.progress {
            let _ = tx.send(trace.clone());
        }
        trace
    }

    fn aux_traces(&self, alloc: &Allocation, step_id: usize) -> Vec<StepTrace> {
        alloc
            .aux_calls
            .iter()
            .map(|a| self.trace(&format!("rate:{step_id}"), &a.purpose, vec![], &a.call))
            .collect()
    }

    fn check_question(question: &str) -> Result<(), ExecError> {
        if question.trim().is_empty() {
            return Err(ExecError::EmptyQuestion);
        }
        Ok(())
    }

    /// Chain of thought on one model, no decomposition: the `--direct` baseline.
    pub async fn direct(
        &self,
        question: &str,
        family: TaskFamily,
        model: usize,
    ) -> Result<Answer, ExecError> {
        Self::check_question(question)?;
        self.direct_with(question, family, model, None).await
    }

    /// A direct answer as the whole result, checked when `escalation` asks for it.
    async fn direct_with(
        &self,
        question: &str,
        family: TaskFamily,
        model: usize,
        escalation: Option<Escalation>,
    ) -> Result<Answer, ExecError> {
        let checked = self
            .answer_directly(question, family, model, "1", escalation)
            .await?;
        Ok(finish(checked.answer, checked.traces, checked.warnings))
    }

    async fn answer_directly(
        &self,
        question: &str,
        family: TaskFamily,
        model: usize,
        id: &str,
        escalation: Option<Escalation>,
    ) -> Result<Checked, ExecError> {
        let request = self.request(
            prompts::direct(family, question),
            self.options.answer_max_tokens,
        );
        self.checked_answer(
            id,
            question.trim(),
            question,
            vec![],
            family,
            model,
            &request,
            escalation,
        )
        .await
    }

    /// A final answer (direct or synthesis) from `model`. With `escalation`, an answer from
    /// a model below the largest is checked on the same model: by the program it writes for
    /// `question` (maths, `+program`; with `+retry:K`, up to K sampled programs more until
    /// one confirms it), then by samples (`+agree`). If a check fails (or no answer could be
    /// read), the next model up answers and is checked in turn.
    #[allow(clippy::too_many_arguments)]
    async fn checked_answer(
        &self,
        id: &str,
        text: &str,
        question: &str,
        depends_on: Vec<String>,
        family: TaskFamily,
        mut model: usize,
        request: &GenRequest,
        escalation: Option<Escalation>,
    ) -> Result<Checked, ExecError> {
        let mut traces = Vec::new();
        let mut warnings = Vec::new();
        let mut call_id = id.to_string();
        let mut rise = 0;
        // Sample seeds follow the answer's own (0 when greedy), so no sample repeats it.
        let base_seed = match request.sampling {
            Sampling::Temperature { seed, .. } => seed,
            Sampling::Greedy => 0,
        };
        loop {
            let call = self.call(&call_id, model, request).await?;
            let answered = traces.len();
            traces.push(self.trace(&call_id, text, depends_on.clone(), &call));
            let answer = final_answer(family, &call.response.text);
            let Some(esc) = escalation.filter(|_| model + 1 < self.pool.len()) else {
                return Ok(Checked {
                    traces,
                    answer,
                    warnings,
                });
            };
            let mut why = None;
            if answer.trim().is_empty() {
                why = Some("gave no answer".to_string());
            }
            if esc.program && why.is_none() {
                if family == TaskFamily::Math && !is_plain_number(&answer) {
                    // No program value can equal `3/4` or `18 dollars`: spare the call.
                    why = Some(format!(
                        "answered '{answer}', not a plain number its program could confirm"
                    ));
                } else if family == TaskFamily::Math {
                    let ctx = ProgramCtx {
                        text,
                        question,
                        depends_on: &depends_on,
                        model,
                        request,
                    };
                    // The greedy program (as the answer was asked), then with `+retry` up to
                    // K sampled ones, until one confirms the answer.
                    let mut failures = Vec::new();
                    for k in 0..=esc.retries {
                        let (id, sampling) = match k {
                            0 => (format!("{call_id}:program"), request.sampling),
                            _ => (
                                format!("{call_id}:retry{k}"),
                                Sampling::Temperature {
                                    temperature: esc.retry_temperature,
                                    seed: base_seed.wrapping_add(k as u64),
                                },
                            ),
                        };
                        let (trace, value) = self.program_value(&ctx, &id, sampling).await?;
                        traces.push(trace);
                        let failure = match value {
                            Err(e) => Some(format!("wrote a program that gives no value ({e})")),
                            Ok(c) if !same_value(&answer, c.value) => {
                                Some(format!("computed {} with its program", show_value(c.value)))
                            }
                            Ok(c) if esc.uses_all => {
                                let unused = unused_quantities(question, &c.inputs);
                                (!unused.is_empty()).then(|| {
                                    format!(
                                        "wrote a program that never uses {} from the question",
                                        unused.join(", ")
                                    )
                                })
                            }
                            Ok(_) => None,
                        };
                        match failure {
                            Some(why) => failures.push(why),
                            None => {
                                failures.clear();
                                break;
                            }
                        }
                    }
                    why = match failures.len() {
                        0 => None,
                        1 => failures.pop(),
                        n => Some(format!("{} ({n} programs)", failures.join("; "))),
                    };
                } else if rise == 0 {
                    warnings.push(format!(
                        "{id}: the program check applies to maths answers only; this {} answer is not program-checked",
                        family.as_str()
                    ));
                }
            }
            let mut sample = 0;
            while why.is_none() && sample < esc.samples {
                sample += 1;
                let mut again = request.clone();
                again.sampling = Sampling::Temperature {
                    temperature: esc.temperature,
                    seed: base_seed.wrapping_add(sample as u64),
                };
                let sample_id = format!("{call_id}:agree{sample}");
                let call = self.call(&sample_id, model, &again).await?;
                traces.push(self.trace(&sample_id, text, depends_on.clone(), &call));
                if !same_answer(family, &final_answer(family, &call.response.text), &answer) {
                    why = Some(format!("disagreed with itself on sample {sample}"));
                }
            }
            let Some(why) = why else {
                // The step whose answer stands is the last one (what graders read).
                let kept = traces.remove(answered);
                traces.push(kept);
                return Ok(Checked {
                    traces,
                    answer,
                    warnings,
                });
            };
            warnings.push(format!(
                "{id}: {} {why}; escalated to {}",
                self.pool.id(model),
                self.pool.id(model + 1)
            ));
            model += 1;
            rise += 1;
            call_id = format!("{id}:up{rise}");
        }
    }

    /// One program for the question, written by `ctx.model` with `sampling`: its trace and
    /// what it computes (an error when it gives no value or was cut off).
    async fn program_value(
        &self,
        ctx: &ProgramCtx<'_>,
        id: &str,
        sampling: Sampling,
    ) -> Result<(StepTrace, Result<Computed, ProgramError>), ExecError> {
        let mut asked = ctx.request.clone();
        asked.messages = prompts::program(ctx.question);
        asked.sampling = sampling;
        let call = self.call(id, ctx.model, &asked).await?;
        let trace = self.trace(id, ctx.text, ctx.depends_on.to_vec(), &call);
        let program = match call.response.finish {
            FinishReason::Length => Err(ProgramError::CutOff),
            _ => evaluate(&call.response.text),
        };
        Ok((trace, program))
    }

    /// The routed pipeline under `policy`, with `decomposer` writing the plan.
    pub async fn run(
        &self,
        question: &str,
        family: TaskFamily,
        policy: &dyn Policy,
        decomposer: usize,
    ) -> Result<Answer, ExecError> {
        Self::check_question(question)?;
        let span = tracing::info_span!("request", policy = policy.name().as_str());
        let escalation = policy.escalation();
        async move {
            if let Route::Direct { model, .. } = policy.route(question, family, self.pool).await? {
                return self.direct_with(question, family, model, escalation).await;
            }
            let mut steps = Vec::new();
            let mut warnings = Vec::new();

            let request = self.request(
                decompose_prompt(family, question, self.options.max_subtasks),
                self.options.decompose_max_tokens,
            );
            let call = self.call("decompose", decomposer, &request).await?;
            steps.push(self.trace("decompose", "Split the question into steps", vec![], &call));
            let plan = parse_plan(&call.response.text, question, self.options.max_subtasks);
            warnings.extend(plan.warnings.iter().cloned());

            if plan.is_direct() {
                // A one-step plan is answered exactly like `--direct` on the allocated model.
                let only = &plan.subtasks[0];
                let alloc = self
                    .allocate(
                        policy,
                        question,
                        family,
                        &plan,
                        only,
                        StepKind::Subtask,
                        &[],
                    )
                    .await?;
                steps.extend(self.aux_traces(&alloc, only.id));
                warnings.extend(alloc.warnings);
                let checked = self
                    .answer_directly(question, family, alloc.model, "1", escalation)
                    .await?;
                steps.extend(checked.traces);
                warnings.extend(checked.warnings);
                return Ok(finish(checked.answer, steps, warnings));
            }

            let outcomes = self.run_plan(policy, question, family, &plan).await?;
            let mut results = Vec::with_capacity(plan.subtasks.len());
            for (subtask, outcome) in plan.subtasks.iter().zip(&outcomes) {
                steps.extend(outcome.traces.iter().cloned());
                warnings.extend(outcome.warnings.iter().cloned());
                results.push((subtask.id, subtask.text.clone(), outcome.result.clone()));
            }

            let synth = Subtask {
                id: plan.subtasks.len() + 1,
                text: prompts::SYNTHESIS_TEXT.to_string(),
                depends_on: plan.subtasks.iter().map(|s| s.id).collect(),
            };
            let answers: Vec<(usize, String)> =
                results.iter().map(|(id, _, r)| (*id, r.clone())).collect();
            let alloc = self
                .allocate(
                    policy,
                    question,
                    family,
                    &plan,
                    &synth,
                    StepKind::Synthesis,
                    &answers,
                )
                .await?;
            steps.extend(self.aux_traces(&alloc, synth.id));
            warnings.extend(alloc.warnings.iter().cloned());
            let request = self.request(
                prompts::synthesis(family, question, &results),
                self.options.answer_max_tokens,
            );
            let deps = synth.depends_on.iter().map(|d| d.to_string()).collect();
            let checked = self
                .checked_answer(
                    "synthesis",
                    &synth.text,
                    question,
                    deps,
                    family,
                    alloc.model,
                    &request,
                    escalation,
                )
                .await?;
            steps.extend(checked.traces);
            warnings.extend(checked.warnings);
            Ok(finish(checked.answer, steps, warnings))
        }
        .instrument(span)
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn allocate(
        &self,
        policy: &dyn Policy,
        question: &str,
        family: TaskFamily,
        plan: &Plan,
        subtask: &Subtask,
        kind: StepKind,
        answers: &[(usize, String)],
    ) -> Result<Allocation, ExecError> {
        let alloc = policy
            .allocate(StepContext {
                question,
                family,
                plan,
                subtask,
                kind,
                answers,
                pool: self.pool,
            })
            .await?;
        Ok(alloc)
    }
}

impl Executor<'_> {
    /// Run every subtask of `plan`. Each step is a shared future that first awaits the
    /// steps it depends on, so independent steps run concurrently (bounded per model by
    /// the pool) and each step starts as soon as its inputs exist. Outcomes are returned
    /// in plan order.
    async fn run_plan(
        &self,
        policy: &dyn Policy,
        question: &str,
        family: TaskFamily,
        plan: &Plan,
    ) -> Result<Vec<Arc<StepOutcome>>, ExecError> {
        let mut futures: HashMap<usize, StepFuture<'_>> = HashMap::new();
        for id in plan.topo_order() {
            let Some(subtask) = plan.subtasks.iter().find(|s| s.id == id) else {
                continue;
            };
            let deps: Vec<(usize, StepFuture<'_>)> = subtask
                .depends_on
                .iter()
                .filter_map(|d| futures.get(d).map(|f| (*d, f.clone())))
                .collect();
            let fut = async move {
                let mut inputs = Vec::with_capacity(deps.len());
                for (dep_id, dep) in deps {
                    let outcome = dep.await?;
                    let text = plan
                        .subtasks
                        .iter()
                        .find(|s| s.id == dep_id)
                        .map(|s| s.text.clone())
                        .unwrap_or_default();
                    inputs.push((dep_id, text, outcome.result.clone()));
                }
                let answers: Vec<(usize, String)> =
                    inputs.iter().map(|(i, _, r)| (*i, r.clone())).collect();
                let alloc = self
                    .allocate(
                        policy,
                        question,
                        family,
                        plan,
                        subtask,
                        StepKind::Subtask,
                        &answers,
                    )
                    .await?;
                let mut traces = self.aux_traces(&alloc, subtask.id);
                let request = self.request(
                    prompts::step(question, subtask, &inputs),
                    self.options.step_max_tokens,
                );
                let step_id = subtask.id.to_string();
                let call = self.call(&step_id, alloc.model, &request).await?;
                let deps = subtask.depends_on.iter().map(|d| d.to_string()).collect();
                traces.push(self.trace(&step_id, &subtask.text, deps, &call));
                let mut warnings = alloc.warnings;
                if call.response.finish == r2_pool::FinishReason::Repetition {
                    warnings.push(format!(
                        "step {step_id}: output started repeating itself and was cut"
                    ));
                }
                Ok(Arc::new(StepOutcome {
                    result: step_result(&call.response.text),
                    traces,
                    warnings,
                }))
            }
            .boxed()
            .shared();
            futures.insert(id, fut);
        }
        let ordered: Vec<StepFuture<'_>> = plan
            .subtasks
            .iter()
            .filter_map(|s| futures.get(&s.id).cloned())
            .collect();
        join_all(ordered).await.into_iter().collect()
    }
}

fn finish(answer: String, steps: Vec<StepTrace>, warnings: Vec<String>) -> Answer {
    let total_cost_usd = steps.iter().map(|s| s.cost_usd).sum();
    Answer {
        answer,
        total_cost_usd,
        steps,
        warnings,
    }
}
