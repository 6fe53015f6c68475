//! The executor: decompose (or not, as the policy decides), allocate, run steps in
//! dependency order with independent steps concurrent, synthesise, and trace every call.
//! Final answers (direct or synthesis) are asked for through `escalate`, which checks them
//! when the policy's escalation asks for it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{join_all, BoxFuture, FutureExt, Shared};
use r2_allocator::{Allocation, Escalation, Policy, PolicyError, Route, StepContext, StepKind};
use r2_decomposer::{decompose_prompt, parse_plan, Plan, Subtask, TaskFamily};
use r2_pool::{BackendError, ChatMessage, GenRequest, Pool, PoolCall, Sampling};
use tracing::Instrument;

use crate::answer::step_result;
use crate::escalate::{Checked, FinalCall};
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

type StepFuture<'a> = Shared<BoxFuture<'a, Result<Arc<StepOutcome>, ExecError>>>;

impl<'p> Executor<'p> {
    pub fn new(pool: &'p Pool, options: ExecOptions) -> Self {
        Self { pool, options }
    }

    pub fn options(&self) -> &ExecOptions {
        &self.options
    }

    pub(crate) fn pool(&self) -> &'p Pool {
        self.pool
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

    pub(crate) async fn call(
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

    pub(crate) fn trace(
        &self,
        id: &str,
        text: &str,
        depends_on: Vec<String>,
        call: &PoolCall,
    ) -> StepTrace {
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
        let asked = FinalCall {
            id,
            text: question.trim(),
            question,
            depends_on: vec![],
            family,
            request: &request,
        };
        self.checked_answer(asked, model, escalation).await
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
            let asked = FinalCall {
                id: "synthesis",
                text: &synth.text,
                question,
                depends_on: synth.depends_on.iter().map(|d| d.to_string()).collect(),
                family,
                request: &request,
            };
            let checked = self.checked_answer(asked, alloc.model, escalation).await?;
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
