//! The keep decision: whether a small model's answer stands or the next model up answers,
//! from signals read off that answer (its token probabilities and its program check),
//! combined by one fitted [`Logistic`] and cut at one threshold.
//!
//! The same [`Observed`] → row code serves fitting (`train signals`) and the executor's
//! `+keep` check, so a saved model scores at run time exactly what it was fitted on.

use serde::{Deserialize, Serialize};

use crate::{Logistic, SignalsError};

/// Sampled programs written when the greedy one does not confirm an answer (as `+retry:2`).
pub const RETRIES: usize = 2;

/// The program check of a maths answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProgramOutcome {
    /// The greedy program's value equals the answer's.
    pub confirms: bool,
    /// ... and depends on every number the question writes (`+program:all`).
    pub uses_all: bool,
    /// The greedy program did not confirm the answer and one of up to [`RETRIES`] sampled
    /// programs did.
    pub sampled_confirms: bool,
}

/// What the keep decision reads off one answer.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Observed {
    /// Geometric-mean token probability of the answer.
    pub confidence: Option<f64>,
    /// Least token probability of the answer.
    pub least_confidence: Option<f64>,
    /// The greedy program check; `None` when no program was written (the answer is no
    /// plain number, which no program can confirm: it scores as unconfirmed).
    pub program: Option<ProgramOutcome>,
}

/// One input of a keep decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeepFeature {
    Confidence,
    LeastConfidence,
    /// 1 when the greedy program confirms the answer.
    Program,
    /// 1 when it confirms it using every number of the question.
    ProgramUsesAll,
    /// 1 when the greedy program or, after it did not, one of up to [`RETRIES`] sampled
    /// programs confirms the answer.
    Confirmed,
}

impl KeepFeature {
    /// Whether reading this feature needs the program call.
    pub fn needs_program(self) -> bool {
        matches!(
            self,
            KeepFeature::Program | KeepFeature::ProgramUsesAll | KeepFeature::Confirmed
        )
    }

    fn value(self, o: &Observed) -> Result<f64, SignalsError> {
        let missing = |what| SignalsError::Missing { what };
        let program = o.program.unwrap_or_default();
        Ok(match self {
            KeepFeature::Confidence => o.confidence.ok_or(missing("token probabilities"))?,
            KeepFeature::LeastConfidence => {
                o.least_confidence.ok_or(missing("token probabilities"))?
            }
            KeepFeature::Program => f64::from(u8::from(program.confirms)),
            KeepFeature::ProgramUsesAll => {
                f64::from(u8::from(program.confirms && program.uses_all))
            }
            KeepFeature::Confirmed => {
                f64::from(u8::from(program.confirms || program.sampled_confirms))
            }
        })
    }
}

/// A fitted keep decision for one model's answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeepModel {
    /// The pool model whose answers it was fitted on.
    pub model: String,
    pub features: Vec<KeepFeature>,
    pub logistic: Logistic,
    /// Keep the answer when P(right) is at least this.
    pub threshold: f64,
}

impl KeepModel {
    /// The row of `features` for one answer (an error names a signal the answer lacks).
    pub fn row(features: &[KeepFeature], o: &Observed) -> Result<Vec<f64>, SignalsError> {
        features.iter().map(|f| f.value(o)).collect()
    }

    /// Whether the decision needs the answer's program written.
    pub fn needs_program(&self) -> bool {
        self.features.iter().any(|f| f.needs_program())
    }

    /// Whether it needs sampled programs when the greedy one does not confirm the answer.
    pub fn needs_retries(&self) -> bool {
        self.features.contains(&KeepFeature::Confirmed)
    }

    /// P(the answer is right).
    pub fn probability(&self, o: &Observed) -> Result<f64, SignalsError> {
        self.logistic.predict(&Self::row(&self.features, o)?)
    }

    /// Refuse a model whose parts do not fit together (a hand-edited or corrupt manifest).
    pub fn validate(&self) -> Result<(), String> {
        let d = self.features.len();
        let l = &self.logistic;
        if d == 0 {
            return Err(format!(
                "the keep decision for {} reads no feature",
                self.model
            ));
        }
        if l.weights.len() != d || l.mean.len() != d || l.scale.len() != d {
            return Err(format!(
                "the keep decision for {} has {d} features but {} weights, {} means and {} scales",
                self.model,
                l.weights.len(),
                l.mean.len(),
                l.scale.len()
            ));
        }
        let finite = l
            .weights
            .iter()
            .chain(&l.mean)
            .chain([&l.bias])
            .all(|v| v.is_finite())
            && l.scale.iter().all(|s| s.is_finite() && *s > 0.0);
        if !finite {
            return Err(format!(
                "the keep decision for {} has a weight that is not a finite number",
                self.model
            ));
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(format!(
                "the keep decision for {} has threshold {}, not in [0, 1]",
                self.model, self.threshold
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(conf: f64, confirms: bool) -> Observed {
        Observed {
            confidence: Some(conf),
            least_confidence: Some(conf / 2.0),
            program: Some(ProgramOutcome {
                confirms,
                uses_all: true,
                sampled_confirms: false,
            }),
        }
    }

    #[test]
    fn a_fitted_model_scores_what_it_was_fitted_on() {
        let features = vec![KeepFeature::Confidence, KeepFeature::Program];
        // Right exactly when the program confirms; confidence is noise.
        let obs: Vec<Observed> = (0..40)
            .map(|i| observed(0.5 + f64::from(i % 7) / 20.0, i % 3 == 0))
            .collect();
        let labels: Vec<bool> = obs.iter().map(|o| o.program.unwrap().confirms).collect();
        let rows: Vec<Vec<f64>> = obs
            .iter()
            .map(|o| KeepModel::row(&features, o).unwrap())
            .collect();
        let model = KeepModel {
            model: "small".into(),
            features,
            logistic: Logistic::fit(&rows, &labels, 1.0).unwrap(),
            threshold: 0.5,
        };
        model.validate().unwrap();
        assert!(model.needs_program());
        assert!(model.probability(&observed(0.6, true)).unwrap() > 0.8);
        assert!(model.probability(&observed(0.6, false)).unwrap() < 0.2);
        // No plain-number answer, no program: scored as unconfirmed.
        let no_program = Observed {
            program: None,
            ..observed(0.6, true)
        };
        assert!(model.probability(&no_program).unwrap() < 0.2);
        // Round trip through JSON scores the same (to the last bits JSON keeps).
        let back: KeepModel =
            serde_json::from_str(&serde_json::to_string(&model).unwrap()).unwrap();
        for o in [observed(0.6, true), observed(0.9, false)] {
            let (p, q) = (
                model.probability(&o).unwrap(),
                back.probability(&o).unwrap(),
            );
            assert!((p - q).abs() < 1e-12, "{p} {q}");
        }
    }

    #[test]
    fn a_missing_signal_or_a_broken_model_is_an_error() {
        let model = KeepModel {
            model: "small".into(),
            features: vec![KeepFeature::LeastConfidence],
            logistic: Logistic {
                mean: vec![0.5],
                scale: vec![0.1],
                weights: vec![1.0],
                bias: 0.0,
            },
            threshold: 0.5,
        };
        model.validate().unwrap();
        assert!(!model.needs_program());
        let err = model.probability(&Observed::default()).unwrap_err();
        assert!(err.to_string().contains("token probabilities"), "{err}");

        let mut bad = model.clone();
        bad.logistic.weights.push(1.0);
        assert!(bad
            .validate()
            .unwrap_err()
            .contains("1 features but 2 weights"));
        let mut bad = model.clone();
        bad.threshold = 1.5;
        assert!(bad.validate().is_err());
        let mut bad = model;
        bad.logistic.scale[0] = 0.0;
        assert!(bad.validate().is_err());
    }
}
