//! Label search: per question, answer directly with every pool model, then decompose and
//! search for the cheapest allocation of the steps that still answers correctly.
//!
//! The search starts from a confidence-based allocation (steps the largest model answered
//! confidently start on the smallest model), upgrades the least confident downgraded step
//! while the answer is wrong, then downgrades steps one model at a time while it stays
//! right. It does not search further when the all-largest allocation
//! answers wrong (upgrading would only lead back to it). Every execution goes through the
//! pool, so with the call cache repeated prefixes of a plan cost nothing. The number of
//! decomposed executions is bounded.

use std::collections::BTreeMap;

use async_trait::async_trait;
use r2_bench::run::{ModelUsage, RunSettings};
use r2_bench::Item;
use r2_decomposer::Plan;
use r2_pool::Pool;
use r2_router::features::StepInfo;

use crate::labels::{QuestionLabel, RouteLabel, StepLabel, TriedRoute};
use crate::pinned::{PinnedPolicy, PinnedRoute};

/// The outcome of executing one pinned route on one question.
#[derive(Debug, Clone, Default)]
pub struct RunOutcome {
    pub correct: bool,
    pub usage: BTreeMap<String, ModelUsage>,
    pub cost_usd: f64,
    pub error: Option<String>,
    /// The plan the executor ran (decomposed routes).
    pub plan: Option<Plan>,
    /// Confidence of each plan position's call (synthesis last), when reported.
    pub confidences: Vec<Option<f64>>,
    /// The answer the grader read, and the confidence of the call it came from.
    pub answer: Option<String>,
    pub answer_confidence: Option<f64>,
}

#[async_trait]
pub trait RouteRunner: Send + Sync {
    async fn run(&self, item: &Item, route: &PinnedRoute) -> RunOutcome;
}

/// Executes routes with the real executor and grades them with the benchmark graders.
pub struct ExecRunner<'a> {
    pub pool: &'a Pool,
    pub settings: &'a RunSettings,
}

#[async_trait]
impl RouteRunner for ExecRunner<'_> {
    async fn run(&self, item: &Item, route: &PinnedRoute) -> RunOutcome {
        let policy = PinnedPolicy::new(route.clone());
        let r = r2_bench::run::run_item(self.pool, &policy, self.settings, item).await;
        let plan = policy.plan();
        let len = plan.as_ref().map(|p| p.len()).unwrap_or(0);
        let mut confidences = vec![None; len + 1];
        for s in &r.steps {
            let pos = match s.id.as_str() {
                "synthesis" => Some(len),
                id => id.parse::<usize>().ok().and_then(|n| n.checked_sub(1)),
            };
            if let Some(slot) = pos.and_then(|p| confidences.get_mut(p)) {
                *slot = s.confidence;
            }
        }
        RunOutcome {
            answer: r.error.is_none().then(|| r.prediction.clone()),
            answer_confidence: r.steps.last().and_then(|s| s.confidence),
            correct: r.correct && r.error.is_none(),
            usage: r.usage,
            cost_usd: r.cost_usd,
            error: r.error,
            plan,
            confidences,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SearchOptions {
    /// Most decomposed executions per question (the all-largest run included); 0 labels
    /// the direct answers only (one call per pool model: the cheap labels to collect by
    /// the thousand).
    pub budget: usize,
    /// A step the largest model answered with at least this confidence starts on the
    /// smallest model.
    pub confident: f64,
}

impl Default for SearchOptions {
    fn default() -> Self {
        Self {
            budget: 8,
            confident: 0.9,
        }
    }
}

struct Search<'a> {
    runner: &'a dyn RouteRunner,
    item: &'a Item,
    ids: &'a [String],
    tried: Vec<TriedRoute>,
    executions: usize,
    budget: usize,
}

impl Search<'_> {
    async fn try_route(&mut self, route: PinnedRoute) -> RunOutcome {
        let out = self.runner.run(self.item, &route).await;
        let label = match &route {
            PinnedRoute::Direct(m) => RouteLabel::Direct {
                model: self.ids[*m].clone(),
            },
            PinnedRoute::Decompose(a) => {
                self.executions += 1;
                RouteLabel::Decompose {
                    allocation: a.iter().map(|m| self.ids[*m].clone()).collect(),
                }
            }
        };
        self.tried.push(TriedRoute {
            route: label,
            correct: out.correct,
            usage: out.usage.clone(),
            error: out.error.clone(),
            answer: out.answer.clone(),
            confidence: out.answer_confidence,
        });
        out
    }

    fn can_run(&self) -> bool {
        self.executions < self.budget
    }

    /// Run `alloc` unless it was already tried; returns whether it answered correctly.
    async fn check(&mut self, alloc: &[usize]) -> Option<bool> {
        let ids: Vec<String> = alloc.iter().map(|m| self.ids[*m].clone()).collect();
        if let Some(t) = self.tried.iter().find(
            |t| matches!(&t.route, RouteLabel::Decompose { allocation } if *allocation == ids),
        ) {
            return Some(t.correct);
        }
        if !self.can_run() {
            return None;
        }
        Some(
            self.try_route(PinnedRoute::Decompose(alloc.to_vec()))
                .await
                .correct,
        )
    }
}

/// Label one question.
pub async fn label_question(
    runner: &dyn RouteRunner,
    item: &Item,
    pool_ids: &[String],
    options: &SearchOptions,
) -> QuestionLabel {
    let n = pool_ids.len();
    let largest = n - 1;
    let mut s = Search {
        runner,
        item,
        ids: pool_ids,
        tried: Vec::new(),
        executions: 0,
        budget: options.budget,
    };
    for m in 0..n {
        s.try_route(PinnedRoute::Direct(m)).await;
    }
    if options.budget == 0 {
        return finish(s, item, Vec::new(), None);
    }
    // The all-largest run fixes the plan (greedy decoding and the call cache keep it
    // identical in every later run) and gives each step's confidence.
    let all = s.try_route(PinnedRoute::Decompose(Vec::new())).await;
    let plan = match (&all.plan, &all.error) {
        (Some(p), None) => p.clone(),
        _ => return finish(s, item, Vec::new(), None),
    };
    // Record the run under its full allocation.
    let positions = if plan.is_direct() { 1 } else { plan.len() + 1 };
    if let Some(last) = s.tried.last_mut() {
        last.route = RouteLabel::Decompose {
            allocation: vec![pool_ids[largest].clone(); positions],
        };
    }
    if plan.is_direct() {
        // A one-step plan is answered like a direct route: nothing to allocate per step.
        return finish(s, item, Vec::new(), None);
    }
    let infos: Vec<StepInfo> = plan
        .subtasks
        .iter()
        .enumerate()
        .map(|(i, st)| StepInfo {
            text: st.text.clone(),
            position: i,
            plan_len: plan.len(),
            depends_on: st.depends_on.len(),
            synthesis: false,
        })
        .chain(std::iter::once(StepInfo {
            text: r2_executor::prompts::SYNTHESIS_TEXT.to_string(),
            position: plan.len(),
            plan_len: plan.len(),
            depends_on: plan.len(),
            synthesis: true,
        }))
        .collect();
    // A plan wrong with every step on the largest model is not searched further: on the
    // first 17 labelled GSM8K train questions no allocation rescued one (0 of 30
    // executions, 42% of the decomposed ones; docs/experiments/2026-11-30-router-46-labels.md).
    if !all.correct {
        return finish(s, item, infos, None);
    }
    let conf: Vec<f64> = (0..positions)
        .map(|p| all.confidences.get(p).copied().flatten().unwrap_or(0.0))
        .collect();

    let mut best: Option<Vec<usize>> = all.correct.then(|| vec![largest; positions]);
    let start: Vec<usize> = conf
        .iter()
        .map(|c| if *c >= options.confident { 0 } else { largest })
        .collect();
    let mut cur = start;
    loop {
        match s.check(&cur).await {
            Some(true) => {
                best = Some(cur.clone());
                break;
            }
            Some(false) => {
                // Upgrade the least confident step that is not yet on the largest model.
                let Some(i) = (0..positions)
                    .filter(|&i| cur[i] < largest)
                    .min_by(|&a, &b| conf[a].total_cmp(&conf[b]))
                else {
                    break;
                };
                cur[i] += 1;
            }
            None => break,
        }
    }
    if let Some(mut alloc) = best.clone() {
        // Downgrade while right, the most confident steps first.
        let mut order: Vec<usize> = (0..positions).collect();
        order.sort_by(|&a, &b| conf[b].total_cmp(&conf[a]).then(a.cmp(&b)));
        'steps: for i in order {
            while alloc[i] > 0 {
                let mut cand = alloc.clone();
                cand[i] -= 1;
                match s.check(&cand).await {
                    Some(true) => alloc = cand,
                    Some(false) => break,
                    None => break 'steps,
                }
            }
        }
        best = Some(alloc);
    }
    finish(s, item, infos, best)
}

fn finish(
    s: Search<'_>,
    item: &Item,
    infos: Vec<StepInfo>,
    best: Option<Vec<usize>>,
) -> QuestionLabel {
    let steps = infos
        .into_iter()
        .enumerate()
        .map(|(i, info)| StepLabel {
            info,
            label: best.as_ref().map(|b| s.ids[b[i]].clone()),
            success: best.is_some(),
        })
        .collect();
    QuestionLabel {
        id: item.id.clone(),
        question: item.question.clone(),
        family: item.family,
        pool: s.ids.to_vec(),
        steps,
        tried: s.tried,
        executions: s.executions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use r2_bench::Gold;
    use r2_decomposer::{Subtask, TaskFamily};
    use std::sync::Mutex;

    /// Every decomposed run answers wrong; the largest model answers directly. Each step
    /// reports full confidence, so a search would start from the all-smallest allocation.
    struct AlwaysWrongPlan {
        runs: Mutex<Vec<PinnedRoute>>,
    }

    #[async_trait]
    impl RouteRunner for AlwaysWrongPlan {
        async fn run(&self, _item: &Item, route: &PinnedRoute) -> RunOutcome {
            self.runs.lock().unwrap().push(route.clone());
            let step = |id: usize| Subtask {
                id,
                text: format!("step {id}"),
                depends_on: (1..id).collect(),
            };
            match route {
                PinnedRoute::Direct(m) => RunOutcome {
                    correct: *m == 2,
                    ..Default::default()
                },
                PinnedRoute::Decompose(_) => RunOutcome {
                    plan: Some(Plan::new(vec![step(1), step(2)]).unwrap()),
                    confidences: vec![Some(1.0); 3],
                    ..Default::default()
                },
            }
        }
    }

    async fn label(budget: usize) -> (QuestionLabel, usize) {
        let runner = AlwaysWrongPlan {
            runs: Mutex::new(Vec::new()),
        };
        let item = Item {
            id: "q".into(),
            question: "What is 6 times 7?".into(),
            family: TaskFamily::Math,
            gold: Gold::Number("42".into()),
            reference: None,
            meta: Default::default(),
        };
        let ids: Vec<String> = ["s", "m", "l"].map(String::from).to_vec();
        let options = SearchOptions {
            budget,
            confident: 0.9,
        };
        let q = label_question(&runner, &item, &ids, &options).await;
        let runs = runner.runs.lock().unwrap().len();
        (q, runs)
    }

    #[tokio::test]
    async fn a_plan_wrong_on_the_largest_model_is_not_searched_further() {
        let (q, runs) = label(6).await;
        // Three direct answers and the all-largest run.
        assert_eq!((runs, q.executions), (4, 1));
        assert_eq!(
            q.steps.len(),
            3,
            "two steps and the synthesis, labelled as failed"
        );
        assert!(q.steps.iter().all(|s| !s.success && s.label.is_none()));
        assert_eq!(q.direct_correct("l"), Some(true));
    }

    #[tokio::test]
    async fn a_zero_budget_labels_the_direct_answers_only() {
        let (q, runs) = label(0).await;
        assert_eq!((runs, q.executions), (3, 0));
        assert_eq!(q.tried.len(), 3);
        assert!(q.steps.is_empty());
        assert_eq!(q.direct_correct("l"), Some(true));
    }
}
