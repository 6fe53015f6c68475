//! Turns candidate steps (from the line reader or the JSON reader) into a valid `Plan`:
//! cleans each step, drops echoes, solving and repeats, caps the count, maps the model's own
//! step numbers to plan ids and keeps only backward dependencies.

use std::collections::HashMap;
use std::sync::LazyLock;

use crate::deps::split_deps;
use crate::family::TaskFamily;
use crate::marker::strip_marker;
use crate::plan::{Plan, Subtask};
use crate::prompts::examples;
use crate::text::{
    cap_len, is_direct_step, is_echo, is_solving, looks_like_text, normalize, strip_markdown,
    Fingerprint,
};

/// A step as found in the output, before any judgement.
#[derive(Debug, Clone, Default)]
pub(crate) struct RawStep {
    /// The model's own number for it ("3." or `"id": 3`), when it gave one.
    pub label: Option<usize>,
    pub text: String,
    /// Dependencies from a JSON field, in the model's numbering.
    pub json_deps: Vec<usize>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    /// The plan is full: a further distinct step arrived after `max_subtasks`.
    Stop,
}

struct Kept {
    text: String,
    fp: Fingerprint,
    explicit: Vec<usize>,
    explicit_none: bool,
    hints: Vec<usize>,
}

pub(crate) struct Collector<'q> {
    question: &'q str,
    question_norm: String,
    max: usize,
    kept: Vec<Kept>,
    /// The model's step number → plan id (a repeat maps to the step it repeats).
    labels: HashMap<usize, usize>,
    position: usize,
    duplicates: usize,
    solving: usize,
    echoes: usize,
    long: usize,
    restated_question: bool,
    truncated: bool,
    warnings: Vec<String>,
}

impl<'q> Collector<'q> {
    pub fn new(question: &'q str, max: usize) -> Self {
        Collector {
            question,
            question_norm: normalize(question),
            max: max.max(1),
            kept: Vec::new(),
            labels: HashMap::new(),
            position: 0,
            duplicates: 0,
            solving: 0,
            echoes: 0,
            long: 0,
            restated_question: false,
            truncated: false,
            warnings: Vec::new(),
        }
    }

    pub fn has_steps(&self) -> bool {
        !self.kept.is_empty()
    }

    pub fn warn(&mut self, msg: impl Into<String>) {
        self.warnings.push(msg.into());
    }

    pub fn push(&mut self, raw: RawStep) -> Flow {
        self.position += 1;
        let text = strip_markdown(&raw.text);
        // A JSON string may carry its own "1. " or "Step 1:".
        let (inner_label, text) = match strip_marker(&text) {
            Some((label, rest)) if !rest.is_empty() => (label, rest.to_string()),
            _ => (None, text),
        };
        let label = raw.label.or(inner_label).unwrap_or(self.position);
        let (text, info) = split_deps(&text);
        let text = text.trim_end_matches([':', ' ']).trim();
        if text.is_empty() {
            return Flow::Continue;
        }
        if is_echo(text) {
            self.echoes += 1;
            return Flow::Continue;
        }
        // Before the text check: "16 - 3 = 13" has no words but is the model solving.
        if is_solving(text) {
            self.solving += 1;
            return Flow::Continue;
        }
        if !looks_like_text(text) {
            return Flow::Continue;
        }
        let text = match cap_len(text) {
            Some(t) => {
                self.long += 1;
                t
            }
            None => text.to_string(),
        };
        let fp = Fingerprint::new(&text);
        if !self.question_norm.is_empty() && fp.norm == self.question_norm {
            self.restated_question = true;
            return Flow::Continue;
        }
        if let Some(i) = self.kept.iter().position(|k| k.fp.near_duplicate(&fp)) {
            self.duplicates += 1;
            self.labels.entry(label).or_insert(i + 1);
            return Flow::Continue;
        }
        if self.kept.len() == self.max {
            self.truncated = true;
            return Flow::Stop;
        }
        let mut explicit = info.explicit;
        explicit.extend(raw.json_deps);
        self.kept.push(Kept {
            text,
            fp,
            explicit,
            explicit_none: info.explicit_none,
            hints: info.hints,
        });
        self.labels.entry(label).or_insert(self.kept.len());
        Flow::Continue
    }

    /// A one-step plan. With a reason (the output was unusable), that reason is the only
    /// warning: the details of what was dropped would only repeat it.
    fn direct(self, why: Option<String>) -> Plan {
        let mut plan = Plan::direct(self.question);
        plan.warnings = match why {
            Some(why) => vec![format!("{why}; answering the question directly")],
            None => self.warnings,
        };
        plan
    }

    pub fn finish(mut self) -> Plan {
        if self.duplicates > 0 {
            self.warn(format!(
                "dropped {} repeated step(s): the decomposer looped",
                self.duplicates
            ));
        }
        if self.echoes > 0 {
            self.warn(format!(
                "dropped {} line(s) echoing the instructions",
                self.echoes
            ));
        }
        if self.solving > 0 && self.has_steps() {
            self.warn(format!(
                "dropped {} line(s) where the decomposer computed instead of planning",
                self.solving
            ));
        }
        if self.long > 0 {
            self.warn(format!(
                "cut {} over-long step(s) to {} characters",
                self.long,
                crate::text::MAX_STEP_CHARS
            ));
        }
        if self.truncated {
            let max = self.max;
            self.warn(format!("plan truncated to {max} steps (max_subtasks)"));
        }

        if self.kept.is_empty() {
            let why = if self.solving > 0 {
                Some("the decomposer solved the question instead of planning it".to_string())
            } else if self.echoes > 0 {
                Some("the decomposer only echoed its instructions".to_string())
            } else if self.restated_question {
                None // restating the question is a one-step plan
            } else {
                Some("no usable steps in the decomposer output".to_string())
            };
            return self.direct(why);
        }
        if self.solving > 0 && self.solving >= self.kept.len() {
            let why = format!(
                "the decomposer solved the question instead of planning it ({} of {} lines computed results)",
                self.solving,
                self.solving + self.kept.len()
            );
            return self.direct(Some(why));
        }
        if is_direct_step(&self.kept[0].text) {
            let extra = self.kept.len() - 1;
            let why = (extra > 0)
                .then(|| format!("ignored {extra} step(s) after \"Answer the question directly\""));
            if let Some(w) = why {
                self.warn(w);
            }
            return self.direct(None);
        }
        if self.kept.len() >= 2 && copies_an_example(&self.question_norm, &self.kept) {
            return self.direct(Some(
                "the decomposer copied a few-shot example instead of planning this question"
                    .to_string(),
            ));
        }
        if self.kept.len() == 1 {
            return self.direct(None);
        }
        self.build()
    }

    /// Resolves dependencies (see `plan` module docs for the semantics) and builds the plan.
    fn build(mut self) -> Plan {
        let mut declared = Vec::with_capacity(self.kept.len());
        let mut any_declared = false;
        for (i, k) in self.kept.iter().enumerate() {
            let id = i + 1;
            let mut valid = Vec::new();
            let mut bad = Vec::new();
            for &n in &k.explicit {
                match self.labels.get(&n) {
                    Some(&d) if d < id => valid.push(d),
                    _ => bad.push(n),
                }
            }
            bad.sort_unstable();
            bad.dedup();
            if !bad.is_empty() {
                let list: Vec<String> = bad.iter().map(|b| b.to_string()).collect();
                self.warnings.push(format!(
                    "step {id}: dropped dependency on {} (not an earlier step)",
                    list.join(", ")
                ));
            }
            any_declared |= !valid.is_empty() || (k.explicit_none && id > 1);
            valid.extend(
                k.hints
                    .iter()
                    .filter_map(|n| self.labels.get(n).copied())
                    .filter(|&d| d < id),
            );
            valid.sort_unstable();
            valid.dedup();
            declared.push(valid);
        }
        let subtasks = self
            .kept
            .into_iter()
            .zip(declared)
            .enumerate()
            .map(|(i, (k, deps))| Subtask {
                id: i + 1,
                text: k.text,
                depends_on: if any_declared {
                    deps
                } else {
                    (1..i + 1).collect()
                },
            })
            .collect();
        Plan {
            subtasks,
            warnings: self.warnings,
        }
    }
}

/// Every multi-step few-shot example: its normalised question and steps.
static EXAMPLE_PLANS: LazyLock<Vec<(String, Vec<String>)>> = LazyLock::new(|| {
    TaskFamily::ALL
        .iter()
        .flat_map(|&f| examples(f))
        .map(|ex| {
            let steps = ex
                .plan
                .lines()
                .map(|l| {
                    let rest = strip_marker(l).map_or(l, |(_, r)| r);
                    normalize(&split_deps(rest).0)
                })
                .collect::<Vec<_>>();
            (normalize(ex.question), steps)
        })
        .filter(|(_, steps)| steps.len() >= 2)
        .collect()
});

/// Every kept step is a step of one and the same few-shot example, and the question is not
/// that example's: the model copied it.
fn copies_an_example(question_norm: &str, kept: &[Kept]) -> bool {
    EXAMPLE_PLANS
        .iter()
        .any(|(q, ex)| q != question_norm && kept.iter().all(|k| ex.contains(&k.fp.norm)))
}
