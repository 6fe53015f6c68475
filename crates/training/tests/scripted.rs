//! The router end to end on a scripted pool where model `k` gets a step right only when
//! the step's marker asks for level ≤ k: label search must find the known cheapest
//! allocation, SFT must learn it, GRPO must improve a deliberately bad policy.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use r2_bench::run::RunSettings;
use r2_bench::{Gold, Item};
use r2_decomposer::TaskFamily;
use r2_executor::ExecOptions;
use r2_pool::{Backend, GenRequest, Pool, PoolConfig, ScriptedBackend};
use r2_router::features::{Featurizer, HashEncoder};
use r2_router::net::RouterNet;
use r2_router::policy::LearnedPolicy;
use r2_training::grpo::{Grpo, GrpoOptions, Normaliser};
use r2_training::labels::{append_label, read_labels, QuestionLabel};
use r2_training::pinned::PinnedRoute;
use r2_training::search::{label_question, ExecRunner, RouteRunner, SearchOptions};
use r2_training::sft::{train_sft, SftOptions};

const MARKERS: [&str; 3] = ["alpha", "beta", "gamma"];

fn level_of(text: &str) -> usize {
    MARKERS.iter().position(|m| text.contains(m)).unwrap_or(0)
}

/// Model `me` of the pool.
fn backend(me: usize) -> Arc<dyn Backend> {
    ScriptedBackend::new(move |req: &GenRequest| {
        let system = &req.messages[0].content;
        let last = &req.messages.last().unwrap().content;
        Ok(if system.starts_with("You break a question") {
            // The plan lists the question's markers in order.
            let q = last.rsplit("Question:").next().unwrap_or(last);
            let words: Vec<&str> = q
                .split_whitespace()
                .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()))
                .filter(|w| MARKERS.contains(w))
                .collect();
            words
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    format!(
                        "{}. Work out part {} of the puzzle, the {w} part.",
                        i + 1,
                        i + 1
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        } else if system.starts_with("You are working on one step") {
            let this = last.rsplit("This step: ").next().unwrap_or("");
            if me >= level_of(this) {
                "checked\nRESULT: fine".into()
            } else {
                "guessing\nRESULT: broken".into()
            }
        } else if last.contains("Notes from working through it") {
            if last.contains("broken") {
                "ANSWER: 0".into()
            } else {
                "ANSWER: 42".into()
            }
        } else if me == 2 {
            // The largest model answers every question directly, but at length: answering
            // directly on it costs more than a decomposition with the steps on the models
            // their markers need (so decomposing sits before it in the route order).
            format!(
                "{}ANSWER: 42",
                "let me think this through carefully once more ".repeat(60)
            )
        } else {
            "ANSWER: 0".into()
        })
    })
}

fn pool() -> Pool {
    pool_from(PoolConfig::embedded())
}

/// Scripted backends for `cfg`'s models, model `i` of the pool behaving as `backend(i)`.
fn pool_from(cfg: PoolConfig) -> Pool {
    scripted_pool(cfg, backend)
}

/// `cfg`'s models, model `i` answering as `script(i)`.
fn scripted_pool(cfg: PoolConfig, script: fn(usize) -> Arc<dyn Backend>) -> Pool {
    let map: HashMap<String, Arc<dyn Backend>> = cfg
        .models
        .iter()
        .enumerate()
        .map(|(i, m)| (m.id.clone(), script(i)))
        .collect();
    Pool::new(cfg, map).unwrap()
}

fn ids(pool: &Pool) -> Vec<String> {
    (0..pool.len()).map(|m| pool.id(m).to_string()).collect()
}

/// Question `i` has three steps with markers chosen by `i`.
fn items(range: std::ops::Range<usize>) -> Vec<Item> {
    range
        .map(|i| {
            let levels = [i % 3, (i / 3) % 3, (i / 9) % 3];
            let words: Vec<&str> = levels.iter().map(|l| MARKERS[*l]).collect();
            Item {
                id: format!("q{i}"),
                question: format!("Puzzle {i}: handle {} then report.", words.join(" and ")),
                family: TaskFamily::Math,
                gold: Gold::Number("42".into()),
                reference: None,
                meta: BTreeMap::new(),
            }
        })
        .collect()
}

fn settings(dir: &std::path::Path) -> RunSettings {
    RunSettings {
        out_dir: dir.to_path_buf(),
        concurrency: 1,
        exec: ExecOptions::default(),
        decomposer: 2,
        judge: 2,
        limits: Default::default(),
    }
}

async fn labels_for(pool: &Pool, items: &[Item], s: &RunSettings) -> Vec<QuestionLabel> {
    let runner = ExecRunner { pool, settings: s };
    let opts = SearchOptions {
        budget: 12,
        confident: 0.9,
    };
    let mut out = Vec::new();
    for item in items {
        out.push(label_question(&runner, item, &ids(pool), &opts).await);
    }
    out
}

#[tokio::test]
async fn label_search_finds_the_cheapest_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool();
    let s = settings(dir.path());
    let labels = labels_for(&pool, &items(0..27), &s).await;
    let pool_ids = ids(&pool);
    for (q, item) in labels.iter().zip(items(0..27)) {
        assert_eq!(q.steps.len(), 4, "three subtasks and the synthesis: {q:?}");
        let i: usize = item.id[1..].parse().unwrap();
        let want = [i % 3, (i / 3) % 3, (i / 9) % 3, 0];
        let got: Vec<usize> = q
            .steps
            .iter()
            .map(|s| {
                pool_ids
                    .iter()
                    .position(|p| Some(p) == s.label.as_ref())
                    .unwrap()
            })
            .collect();
        assert_eq!(got, want, "{}", item.question);
        assert!(q.steps.iter().all(|s| s.success));
        assert_eq!(q.direct_correct(&pool_ids[2]), Some(true));
        assert_eq!(q.direct_correct(&pool_ids[0]), Some(false));
        // The oracle's route is the cheapest correct one that was tried.
        assert!(q.cheapest_correct(&pool.config).is_some());
    }

    // Labels survive the file round trip, malformed lines are reported, foreign models refused.
    let path = dir.path().join("labels.jsonl");
    let mut f = std::fs::File::create(&path).unwrap();
    for q in &labels[..3] {
        append_label(&mut f, q).unwrap();
    }
    use std::io::Write;
    writeln!(f, "{{not json").unwrap();
    drop(f);
    let set = read_labels(&path, &pool_ids).unwrap();
    assert_eq!(set.questions, labels[..3].to_vec());
    assert_eq!(set.malformed.total(), 1);
    assert_eq!(set.malformed.kept()[0].0, 4);
    let err = read_labels(&path, &["a".into(), "b".into(), "c".into()])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 1") && err.contains("not in the pool"),
        "{err}"
    );
}

#[tokio::test]
async fn sft_learns_the_labels_and_the_learned_policy_routes_by_them() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool();
    let s = settings(dir.path());
    let labels = labels_for(&pool, &items(0..27), &s).await;
    let features = Arc::new(Featurizer::new(Arc::new(HashEncoder::new(128))));
    // Where decomposing sits among the routes is measured from the labels' costs and kept in
    // the manifest (checked by the round trip below).
    let decompose_at = r2_training::labels::decompose_position(&labels, &pool.config);
    assert_eq!(
        decompose_at,
        pool.len() - 1,
        "decomposing is dearer than direct on 0, 1"
    );
    let opts = SftOptions {
        holdout: 0.0,
        decompose_at: Some(decompose_at),
        ..Default::default()
    };
    let (net, metrics) = train_sft(&labels, &ids(&pool), &features, &opts).unwrap();
    assert!(metrics.final_train_loss < 0.2, "{metrics:?}");
    assert_eq!(net.manifest.decompose_at, Some(decompose_at));

    // Seeded: the same data and seed give the same weights.
    let (again, _) = train_sft(&labels, &ids(&pool), &features, &opts).unwrap();
    let w = |n: &RouterNet| {
        n.step
            .w2
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(w(&net), w(&again));

    // Save/load round trip.
    let path = dir.path().join("allocator.safetensors");
    net.save(&path).unwrap();
    let loaded = RouterNet::load(&path).unwrap();
    assert_eq!(loaded.manifest, net.manifest);
    assert_eq!(w(&loaded), w(&net));

    // Unseen questions (new marker combinations reuse the same step texts) are routed by marker.
    let policy = LearnedPolicy {
        net: Arc::new(loaded),
        features: features.clone(),
        threshold: 0.5,
        query_level: false,
        keep: None,
    };
    let exec = r2_executor::Executor::new(&pool, ExecOptions::default());
    let mut right = 0;
    let test = items(27..40);
    for item in &test {
        let a = exec
            .run(&item.question, item.family, &policy, 2)
            .await
            .unwrap();
        let steps: Vec<&r2_executor::StepTrace> = a
            .steps
            .iter()
            .filter(|s| s.id.parse::<usize>().is_ok())
            .collect();
        let want: Vec<usize> = steps.iter().map(|s| level_of(&s.text)).collect();
        let got: Vec<usize> = steps
            .iter()
            .map(|s| ids(&pool).iter().position(|p| *p == s.model).unwrap())
            .collect();
        right += usize::from(got == want && a.answer == "42");
    }
    assert!(right >= test.len() - 1, "{right}/{}", test.len());

    // Trained on math questions only, the router answers other families directly on the
    // largest model, for both policies; the same question as math is routed (decomposed).
    assert_eq!(policy.net.manifest.families, Some(vec![TaskFamily::Math]));
    let question = &test[0].question;
    let largest = pool.len() - 1;
    for query_level in [false, true] {
        let p = LearnedPolicy {
            query_level,
            net: policy.net.clone(),
            features: features.clone(),
            threshold: 0.5,
            keep: None,
        };
        for family in [TaskFamily::MultipleChoice, TaskFamily::General] {
            let route = r2_allocator::Policy::route(&p, question, family, &pool)
                .await
                .unwrap();
            assert!(
                matches!(route, r2_allocator::Route::Direct { model, .. } if model == largest),
                "{family:?}, query_level {query_level}: {route:?}"
            );
        }
    }
    let route = r2_allocator::Policy::route(&policy, question, TaskFamily::Math, &pool)
        .await
        .unwrap();
    assert!(matches!(route, r2_allocator::Route::Decompose), "{route:?}");
    // A manifest without the field (routers made before it) routes every family.
    let mut old = policy.net.snapshot().unwrap();
    old.manifest.families = None;
    assert!(old.manifest.routes_family(TaskFamily::MultipleChoice));
}

#[tokio::test]
async fn grpo_improves_a_bad_initial_policy() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool();
    let s = settings(dir.path());
    let features = Arc::new(Featurizer::new(Arc::new(HashEncoder::new(128))));
    // Deliberately bad: every step leans to the cheapest model; the route head leans to
    // decomposing.
    let bad_net = || {
        let net = RouterNet::new(ids(&pool), features.layout(), 32, 3).unwrap();
        let bias = |v: &[f32]| {
            candle_core::Tensor::from_vec(v.to_vec(), v.len(), &candle_core::Device::Cpu).unwrap()
        };
        net.step.b2.set(&bias(&[1.5, 1.5, 1.5])).unwrap();
        net.route.b2.set(&bias(&[-4.0, -4.0, 4.0, 0.0])).unwrap();
        net
    };
    let net = bad_net();
    let reference = net.snapshot().unwrap();
    let opts = GrpoOptions {
        group: 8,
        lambda: 0.2,
        iterations: 25,
        batch: 6,
        epochs: 4,
        lr: 1e-2,
        kl: 0.001,
        patience: 25,
        ..Default::default()
    };
    let grpo = Grpo::new(&pool, &s, features.clone(), opts.clone());
    let out = dir.path().join("grpo.safetensors");
    let report = grpo
        .train(net, &reference, &items(0..27), &items(27..40), &out, |_| {})
        .await
        .unwrap();
    // Rollouts run several at a time finish in another order; training must not notice.
    let concurrent = RunSettings {
        concurrency: 5,
        ..settings(dir.path())
    };
    let again = Grpo::new(&pool, &concurrent, features.clone(), opts)
        .train(
            bad_net(),
            &reference,
            &items(0..27),
            &items(27..40),
            // A directory that does not exist yet is created.
            &dir.path().join("concurrent/grpo.safetensors"),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_string(&again.log).unwrap(),
        serde_json::to_string(&report.log).unwrap()
    );
    assert!(
        report.best_dev.reward > report.initial_dev.reward + 0.2,
        "dev reward {} → {}",
        report.initial_dev.reward,
        report.best_dev.reward
    );
    // The per-head KL means add up to the overall mean, weighted by each head's decisions;
    // the route head decides once per rollout, so every updating batch has route decisions.
    for l in report
        .log
        .iter()
        .filter(|l| l.decisions > 0 && l.loss != 0.0)
    {
        let steps = l.decisions - l.route_decisions;
        assert!(l.route_decisions > 0 && l.kl_route.is_some(), "{l:?}");
        assert_eq!(l.kl_step.is_some(), steps > 0, "{l:?}");
        let weighted = l.kl_route.unwrap() * l.route_decisions as f64
            + l.kl_step.unwrap_or(0.0) * steps as f64;
        assert!((weighted / l.decisions as f64 - l.kl).abs() < 1e-6, "{l:?}");
        assert!(l.kl_route.unwrap() >= -1e-9 && l.kl_step.unwrap_or(0.0) >= -1e-9);
    }
    assert!(report.log.iter().any(|l| l.kl_step.is_some()));
    assert!(dir.path().join("grpo.log.jsonl").exists());
    assert!(dir.path().join("concurrent/grpo.log.jsonl").exists());
    let best = RouterNet::load(&out).unwrap();
    assert_eq!(best.manifest.stage, "grpo");
}

/// The oracle reads its labels when its name is parsed; every other name is the router's.
#[tokio::test]
async fn oracle_names_without_labels_are_input_errors() {
    let pool = pool();
    let env = r2_router::RouterEnv::new(None, false);
    for bad in [
        "oracle:",
        "oracle:/nonexistent.jsonl",
        "oracle:x.jsonl+agree:0",
        "bogus",
    ] {
        let e = r2_training::parse_policy(bad, &pool, &env).err().unwrap();
        assert!(e.is_input_error(), "{bad}: {e}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("labels.jsonl");
    std::fs::write(&path, "").unwrap();
    let name = format!("oracle:{}+program", path.display());
    let oracle = r2_training::parse_policy(&name, &pool, &env).unwrap();
    assert_eq!(oracle.name(), name);
    assert!(r2_training::parse_policy("fixed:qwen2.5-coder-0.5b", &pool, &env).is_ok());
}

#[allow(dead_code)]
fn _runner_is_object_safe(r: &dyn RouteRunner, _: PinnedRoute) -> &dyn RouteRunner {
    r
}

/// Model `me` for the escalation test: the middle model answers even-numbered puzzles
/// right, and its program then computes the same; every other answer below the largest is
/// wrong and its program disagrees. The largest model is always right, at length.
fn checked_backend(me: usize) -> Arc<dyn Backend> {
    ScriptedBackend::new(move |req: &GenRequest| {
        let first = &req.messages[0].content;
        let last = &req.messages.last().unwrap().content;
        let easy = last
            .split_whitespace()
            .find_map(|w| w.trim_end_matches(':').parse::<usize>().ok())
            .is_some_and(|n| n % 2 == 0);
        Ok(if first.starts_with("You break a question") {
            "1. Answer the question.".into()
        } else if first.contains("Write Python code") {
            if me == 1 && easy {
                "answer = 6 * 7".into()
            } else {
                "answer = 7".into()
            }
        } else if me == 2 {
            format!(
                "{}ANSWER: 42",
                "let me think this through carefully once more ".repeat(60)
            )
        } else if me == 1 && easy {
            "ANSWER: 42".into()
        } else {
            "ANSWER: 0".into()
        })
    })
}

/// A fresh router whose route head has `bias` (one logit per route candidate:
/// direct on each model, with decomposing third) and so routes every question alike.
fn biased_router(pool: &Pool, features: &Featurizer, bias: [f32; 4]) -> RouterNet {
    let net = RouterNet::new(ids(pool), features.layout(), 32, 3).unwrap();
    let bias = candle_core::Tensor::from_vec(bias.to_vec(), 4, &candle_core::Device::Cpu).unwrap();
    net.route.b2.set(&bias).unwrap();
    net
}

/// Puzzles whose wording says nothing of which models can answer them.
fn plain_items(range: std::ops::Range<usize>) -> Vec<Item> {
    range
        .map(|i| Item {
            id: format!("p{i}"),
            question: format!("Puzzle {i}: what number is the answer?"),
            family: TaskFamily::Math,
            gold: Gold::Number("42".into()),
            reference: None,
            meta: BTreeMap::new(),
        })
        .collect()
}

#[tokio::test]
async fn grpo_with_a_check_learns_to_try_a_cheaper_model_first() {
    let dir = tempfile::tempdir().unwrap();
    let pool = scripted_pool(PoolConfig::embedded(), checked_backend);
    let s = settings(dir.path());
    let features = Arc::new(Featurizer::new(Arc::new(HashEncoder::new(128))));
    // Starts out answering every question directly on the largest model.
    let start = || biased_router(&pool, &features, [-1.5, -1.5, -1.5, 3.0]);
    let reference = start().snapshot().unwrap();
    let program = r2_allocator::Escalation::split("learned+program")
        .unwrap()
        .1;
    let opts = GrpoOptions {
        group: 8,
        lambda: 0.5,
        iterations: 12,
        batch: 6,
        epochs: 4,
        lr: 1e-2,
        kl: 0.001,
        patience: 12,
        escalation: program,
        ..Default::default()
    };
    let out = dir.path().join("checked.safetensors");
    let report = Grpo::new(&pool, &s, features.clone(), opts.clone())
        .train(
            start(),
            &reference,
            &plain_items(0..24),
            &plain_items(24..36),
            &out,
            |_| {},
        )
        .await
        .unwrap();
    // Half the answers of the middle model are wrong, but its program check sends those
    // up: trying it first costs little and loses nothing.
    assert_eq!(report.initial_dev.accuracy, 1.0);
    assert_eq!(report.best_dev.accuracy, 1.0);
    assert!(
        report.best_dev.reward > report.initial_dev.reward + 0.1,
        "dev reward {} → {}",
        report.initial_dev.reward,
        report.best_dev.reward
    );
    let best = RouterNet::load(&out).unwrap();
    assert_eq!(best.manifest.notes["grpo_escalation"], "+program");
    let policy = LearnedPolicy {
        net: Arc::new(best),
        features: features.clone(),
        threshold: 0.5,
        query_level: false,
        keep: None,
    };
    let mut cheaper = 0;
    for item in plain_items(24..36) {
        let route = r2_allocator::Policy::route(&policy, &item.question, item.family, &pool)
            .await
            .unwrap();
        if matches!(route, r2_allocator::Route::Direct { model, .. } if model < 2) {
            cheaper += 1;
        }
    }
    assert!(
        cheaper >= 6,
        "{cheaper} of 12 dev questions try a cheaper model"
    );

    // The same training without the check sees the middle model wrong on half the
    // questions, with nothing to tell which: answering on the largest model stays best.
    let unchecked = GrpoOptions {
        escalation: None,
        ..opts
    };
    let plain = Grpo::new(&pool, &s, features.clone(), unchecked)
        .train(
            start(),
            &reference,
            &plain_items(0..24),
            &plain_items(24..36),
            &dir.path().join("unchecked.safetensors"),
            |_| {},
        )
        .await
        .unwrap();
    assert!(
        plain.best_dev.reward < report.best_dev.reward,
        "unchecked {} vs checked {}",
        plain.best_dev.reward,
        report.best_dev.reward
    );
}

#[tokio::test]
async fn the_direct_normaliser_measures_cost_against_the_direct_answer_on_the_largest_model() {
    let dir = tempfile::tempdir().unwrap();
    let pool = scripted_pool(PoolConfig::embedded(), checked_backend);
    let s = settings(dir.path());
    let features = Arc::new(Featurizer::new(Arc::new(HashEncoder::new(128))));
    // Answers every question directly on the largest model (the last route candidate).
    let net = Arc::new(biased_router(&pool, &features, [-5., -5., -5., 5.]));
    let items = plain_items(0..6);
    let score = |normaliser| {
        let opts = GrpoOptions {
            normaliser,
            ..Default::default()
        };
        let grpo = Grpo::new(&pool, &s, features.clone(), opts);
        let net = net.clone();
        let items = items.clone();
        async move { grpo.evaluate(&net, &items).await }
    };
    let direct = score(Normaliser::Direct).await;
    assert!((direct.accuracy - 1.0).abs() < 1e-9, "{}", direct.accuracy);
    assert!(
        (direct.relative_cost - 1.0).abs() < 1e-9,
        "{}",
        direct.relative_cost
    );
    assert!((direct.reward - 0.5).abs() < 1e-9, "{}", direct.reward);
    // Against the decomposed plan on the largest model (a plan call, a step and the
    // synthesis) the same direct answers cost less than the whole.
    let decomposed = score(Normaliser::Decomposed).await;
    assert!(
        decomposed.relative_cost < 1.0,
        "{}",
        decomposed.relative_cost
    );
    assert_eq!("direct".parse::<Normaliser>(), Ok(Normaliser::Direct));
    assert_eq!(
        "decomposed".parse::<Normaliser>(),
        Ok(Normaliser::Decomposed)
    );
    assert!("largest"
        .parse::<Normaliser>()
        .unwrap_err()
        .contains("'largest'"));
}

#[tokio::test]
async fn calibration_scores_each_threshold_under_the_check_the_policy_runs_with() {
    let dir = tempfile::tempdir().unwrap();
    let pool = scripted_pool(PoolConfig::embedded(), checked_backend);
    let s = settings(dir.path());
    let features = Arc::new(Featurizer::new(Arc::new(HashEncoder::new(128))));
    // Tries the middle model first at every threshold of the grid.
    let net = Arc::new(biased_router(&pool, &features, [-5., 5., -5., -5.]));
    let items = plain_items(0..6);
    let grid = [0.3, 0.5, 0.9];
    let router = |escalation| r2_training::calibrate::Calibrated {
        net: net.clone(),
        features: features.clone(),
        escalation,
    };
    let plain =
        r2_training::calibrate::sweep(&pool, &s, &router(None), &items, &grid, |_| {}).await;
    let program = r2_allocator::Escalation::split("learned+program")
        .unwrap()
        .1;
    let checked =
        r2_training::calibrate::sweep(&pool, &s, &router(program), &items, &grid, |_| {}).await;
    for (p, c) in plain.iter().zip(&checked) {
        // The middle model is right on half the puzzles; its check sends the rest up.
        assert!((p.accuracy - 0.5).abs() < 1e-9, "{p:?}");
        assert!((c.accuracy - 1.0).abs() < 1e-9, "{c:?}");
        assert!(c.cost_per_item > p.cost_per_item, "{p:?} {c:?}");
    }
}
