//! The plan: ordered subtasks with backward-only dependencies (so always a DAG).
//!
//! Invariants of every `Plan` built by this crate (`Plan::new`, `Plan::direct`, `parse_plan`):
//! - at least one subtask; ids are `1..=n` in order;
//! - every dependency names an earlier subtask (`dep < id`), sorted, without repeats.
//!
//! Dependency semantics: `depends_on` is always explicit. When the decomposer declared no
//! dependencies at all, `parse_plan` makes each subtask depend on every earlier one (a plain
//! numbered list is read as a chain); when it declared some, the declared ones are used as
//! given and a subtask with an empty list is independent. Downstream code never needs to
//! special-case either reading.

use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Subtask {
    /// 1-based position in the plan.
    pub id: usize,
    pub text: String,
    /// Ids of earlier subtasks whose answers this one needs.
    pub depends_on: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Plan {
    pub subtasks: Vec<Subtask>,
    /// What the parser had to repair or drop; empty for a clean decomposition.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("a plan needs at least one subtask")]
    Empty,
    #[error("subtask at position {position} has id {id}; ids must be 1, 2, 3, ... in order")]
    BadId { position: usize, id: usize },
    #[error("subtask {id} has empty text")]
    EmptyText { id: usize },
    #[error("subtask {id} depends on {dep}, which is not an earlier subtask")]
    BadDependency { id: usize, dep: usize },
    #[error("subtask {id} lists dependency {dep} twice or out of order")]
    UnsortedDependencies { id: usize, dep: usize },
}

impl Plan {
    /// A validated plan from subtasks built elsewhere (e.g. a stored exemplar).
    pub fn new(subtasks: Vec<Subtask>) -> Result<Self, PlanError> {
        let plan = Plan {
            subtasks,
            warnings: Vec::new(),
        };
        plan.validate()?;
        Ok(plan)
    }

    /// Checks the invariants listed in the module docs.
    pub fn validate(&self) -> Result<(), PlanError> {
        if self.subtasks.is_empty() {
            return Err(PlanError::Empty);
        }
        for (i, s) in self.subtasks.iter().enumerate() {
            if s.id != i + 1 {
                return Err(PlanError::BadId {
                    position: i + 1,
                    id: s.id,
                });
            }
            if s.text.trim().is_empty() && self.subtasks.len() > 1 {
                return Err(PlanError::EmptyText { id: s.id });
            }
            let mut prev = 0;
            for &dep in &s.depends_on {
                if dep == 0 || dep >= s.id {
                    return Err(PlanError::BadDependency { id: s.id, dep });
                }
                if dep <= prev {
                    return Err(PlanError::UnsortedDependencies { id: s.id, dep });
                }
                prev = dep;
            }
        }
        Ok(())
    }

    /// One subtask = the whole question (answer directly). A first-class plan, not an error.
    pub fn direct(question: &str) -> Self {
        Plan {
            subtasks: vec![Subtask {
                id: 1,
                text: question.trim().to_string(),
                depends_on: Vec::new(),
            }],
            warnings: Vec::new(),
        }
    }

    /// True for a one-step plan: the question is answered in a single call.
    pub fn is_direct(&self) -> bool {
        self.subtasks.len() == 1
    }

    pub fn len(&self) -> usize {
        self.subtasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.subtasks.is_empty()
    }

    pub fn get(&self, id: usize) -> Option<&Subtask> {
        id.checked_sub(1).and_then(|i| self.subtasks.get(i))
    }

    /// Subtask ids in an order where every dependency comes first; among ready subtasks the
    /// lowest id goes first, so a validated plan yields `1..=n`. The fields are public, so a
    /// hand-edited plan may break the invariants: unknown dependencies are then ignored and
    /// subtasks caught in a cycle are appended in id order rather than lost.
    pub fn topo_order(&self) -> Vec<usize> {
        let ids: BTreeSet<usize> = self.subtasks.iter().map(|s| s.id).collect();
        let mut done: BTreeSet<usize> = BTreeSet::new();
        let mut order = Vec::with_capacity(ids.len());
        loop {
            let next = self.subtasks.iter().find(|s| {
                !done.contains(&s.id)
                    && s.depends_on
                        .iter()
                        .all(|d| done.contains(d) || !ids.contains(d) || *d == s.id)
            });
            match next {
                Some(s) => {
                    done.insert(s.id);
                    order.push(s.id);
                }
                None => break,
            }
        }
        for id in ids {
            if !done.contains(&id) {
                order.push(id);
            }
        }
        order
    }

    /// True when every subtask depends on exactly all earlier ones (a plain chain).
    pub fn is_chain(&self) -> bool {
        self.subtasks
            .iter()
            .all(|s| s.depends_on.iter().copied().eq(1..s.id))
    }

    /// The plan as the numbered list the prompts ask for, so that `parse_plan` reads it back
    /// unchanged: no annotations for a chain, otherwise `(depends on ...)` on each subtask that
    /// has dependencies (and `(independent)` when no subtask has any).
    pub fn render(&self) -> String {
        let chain = self.is_chain();
        let none_declared = self.subtasks.iter().all(|s| s.depends_on.is_empty());
        let mut out = String::new();
        for s in &self.subtasks {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&format!("{}. {}", s.id, s.text));
            if chain {
                continue;
            }
            if !s.depends_on.is_empty() {
                let deps: Vec<String> = s.depends_on.iter().map(|d| d.to_string()).collect();
                out.push_str(&format!(" (depends on {})", deps.join(", ")));
            } else if none_declared && s.id > 1 {
                out.push_str(" (independent)");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(id: usize, text: &str, deps: &[usize]) -> Subtask {
        Subtask {
            id,
            text: text.to_string(),
            depends_on: deps.to_vec(),
        }
    }

    #[test]
    fn direct_plan_is_one_step_with_the_question() {
        let p = Plan::direct("  What is 2+2?\n");
        assert!(p.is_direct());
        assert_eq!(p.subtasks, vec![st(1, "What is 2+2?", &[])]);
        assert!(p.warnings.is_empty());
        assert_eq!(p.validate(), Ok(()));
        assert_eq!(p.topo_order(), vec![1]);
    }

    #[test]
    fn new_validates() {
        assert_eq!(Plan::new(vec![]), Err(PlanError::Empty));
        assert_eq!(
            Plan::new(vec![st(2, "a", &[])]),
            Err(PlanError::BadId { position: 1, id: 2 })
        );
        assert_eq!(
            Plan::new(vec![st(1, "a", &[]), st(2, "b", &[2])]),
            Err(PlanError::BadDependency { id: 2, dep: 2 })
        );
        assert_eq!(
            Plan::new(vec![st(1, "a", &[]), st(2, "b", &[0])]),
            Err(PlanError::BadDependency { id: 2, dep: 0 })
        );
        assert_eq!(
            Plan::new(vec![st(1, "a", &[]), st(2, "b", &[]), st(3, "c", &[2, 1])]),
            Err(PlanError::UnsortedDependencies { id: 3, dep: 1 })
        );
        assert_eq!(
            Plan::new(vec![st(1, "a", &[]), st(2, " ", &[])]),
            Err(PlanError::EmptyText { id: 2 })
        );
        let ok = Plan::new(vec![st(1, "a", &[]), st(2, "b", &[]), st(3, "c", &[1, 2])]).unwrap();
        assert_eq!(ok.topo_order(), vec![1, 2, 3]);
        assert_eq!(ok.get(3).map(|s| s.text.as_str()), Some("c"));
        assert_eq!(ok.get(0), None);
        assert_eq!(ok.get(4), None);
    }

    #[test]
    fn topo_order_copes_with_hand_edited_plans() {
        let p = Plan {
            subtasks: vec![
                st(1, "a", &[3]),
                st(2, "b", &[]),
                st(3, "c", &[2, 99]),
                st(4, "d", &[5]),
                st(5, "e", &[4]),
            ],
            warnings: vec![],
        };
        assert_eq!(p.topo_order(), vec![2, 3, 1, 4, 5]);
    }

    #[test]
    fn render_marks_only_what_is_needed() {
        let chain =
            Plan::new(vec![st(1, "a", &[]), st(2, "b", &[1]), st(3, "c", &[1, 2])]).unwrap();
        assert!(chain.is_chain());
        assert_eq!(chain.render(), "1. a\n2. b\n3. c");
        let dag = Plan::new(vec![st(1, "a", &[]), st(2, "b", &[]), st(3, "c", &[1, 2])]).unwrap();
        assert_eq!(dag.render(), "1. a\n2. b\n3. c (depends on 1, 2)");
        let flat = Plan::new(vec![st(1, "a", &[]), st(2, "b", &[])]).unwrap();
        assert_eq!(flat.render(), "1. a\n2. b (independent)");
    }

    #[test]
    fn serializes_for_traces() {
        let p = Plan::new(vec![st(1, "a", &[]), st(2, "b", &[1])]).unwrap();
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"subtasks": [
                {"id": 1, "text": "a", "depends_on": []},
                {"id": 2, "text": "b", "depends_on": [1]}
            ], "warnings": []})
        );
    }
}
