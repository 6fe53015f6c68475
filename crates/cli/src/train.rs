//! `r2reasoner train label|sft|grpo|signals` and `r2reasoner calibrate`: argument handling,
//! progress and output around `r2-training`, which does the work.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use futures::{stream, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use r2_router::features::Featurizer;
use r2_router::net::sibling;
use r2_router::{parse_learned, RouterEnv, RouterError};
use r2_training::calibrate::{choose, sweep, Calibrated, Target, GRID};
use r2_training::grpo::{Grpo, GrpoOptions};
use r2_training::grpo_run::{self, DataNote};
use r2_training::labels::{append_label, read_labels, LabelSet};
use r2_training::search::{label_question, ExecRunner, SearchOptions};
use r2_training::sft::{self, report, save_with_metrics, train_sft, SftOptions};
use r2_training::TrainingError;

use crate::args::{CalibrateArgs, GrpoArgs, LabelArgs, SftArgs, SignalsArgs, TrainAction};
use crate::input_error;
use crate::setup::{load_config, select_items, Session};

pub async fn run(config_path: Option<&Path>, action: TrainAction) -> Result<()> {
    match action {
        TrainAction::Label(a) => label(config_path, a).await,
        TrainAction::Sft(a) => sft(config_path, a),
        TrainAction::Grpo(a) => grpo(config_path, a).await,
        TrainAction::Signals(a) => signals(config_path, a).await,
    }
}

fn bar(len: usize, prefix: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>10} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_string());
    bar
}

/// A router error, classified as [`train_error`] does.
fn router_error(e: RouterError) -> anyhow::Error {
    train_error(e.into())
}

/// An error caused by the user's files or arguments exits with code 2.
fn train_error(e: TrainingError) -> anyhow::Error {
    if e.is_input_error() {
        input_error(e.to_string())
    } else {
        anyhow::Error::new(e)
    }
}

/// A failed training run. On NaN (at `step` n, an epoch or an iteration) the last good
/// weights are saved to `out` first, and the error says where they are.
fn training_error(e: TrainingError, out: &Path, step: &str) -> anyhow::Error {
    match e {
        TrainingError::NotFinite { epoch, last_good } => match last_good.save(out) {
            Ok(()) => anyhow::anyhow!(
                "training diverged (NaN) at {step} {epoch}; the last good weights were saved to {}",
                out.display()
            ),
            Err(e) => router_error(e),
        },
        e => train_error(e),
    }
}

async fn label(config_path: Option<&Path>, args: LabelArgs) -> Result<()> {
    let selection = select_items(&args.data)?;
    let session = Session::open(config_path, &args.run)?;
    let ids = session.pool_ids();
    // Resume: questions already labelled are skipped.
    let done: HashSet<String> = if args.out.exists() {
        let set = read_labels(&args.out, &ids).map_err(train_error)?;
        set.questions.into_iter().map(|q| q.id).collect()
    } else {
        HashSet::new()
    };
    let mut file = open_append(&args.out)?;
    let todo: Vec<_> = selection
        .items
        .iter()
        .filter(|i| !done.contains(&i.id))
        .collect();
    let settings = session.settings(std::env::temp_dir());
    let runner = ExecRunner {
        pool: &session.pool,
        settings: &settings,
    };
    let options = SearchOptions {
        budget: args.budget,
        ..Default::default()
    };
    let bar = bar(selection.items.len(), "label");
    bar.set_position((selection.items.len() - todo.len()) as u64);
    let (mut labelled, mut succeeded) = (0usize, 0usize);
    // Questions are searched `--concurrency` at a time (their calls to one model decode
    // together); each label is appended as soon as its search ends.
    let mut searches = stream::iter(todo)
        .map(|item| label_question(&runner, item, &ids, &options))
        .buffer_unordered(args.run.concurrency.max(1));
    while let Some(q) = searches.next().await {
        labelled += 1;
        succeeded += usize::from(q.tried.iter().any(|t| t.correct));
        append_label(&mut file, &q).map_err(train_error)?;
        let (hits, misses) = session.cache_stats();
        bar.inc(1);
        bar.set_message(format!(
            "answered {:.0}% · calls {} ({} cached)",
            100.0 * succeeded as f64 / labelled as f64,
            hits + misses,
            hits
        ));
    }
    bar.finish();
    println!(
        "labelled {labelled} new questions ({} already in {}); {succeeded} had a correct route",
        done.len(),
        args.out.display()
    );
    Ok(())
}

async fn signals(config_path: Option<&Path>, args: SignalsArgs) -> Result<()> {
    use r2_training::signals::{self as sig, SignalRecord};
    let session = Session::open(config_path, &args.run)?;
    let ids = session.pool_ids();
    let largest = ids.len().saturating_sub(1);
    let models: Vec<usize> = if args.model.is_empty() {
        (0..largest).collect()
    } else {
        args.model
            .iter()
            .map(|m| {
                ids.iter().position(|id| id == m).ok_or_else(|| {
                    input_error(format!("--model {m}: not in the pool ({})", ids.join(", ")))
                })
            })
            .collect::<Result<_>>()?
    };
    let labels = read_all_labels(&args.labels, &ids)?;
    let mut records: Vec<SignalRecord> = if args.out.exists() {
        let (records, malformed) = sig::read(&args.out).map_err(train_error)?;
        crate::setup::warn_malformed(&args.out, &malformed);
        records
    } else {
        Vec::new()
    };
    let done: HashSet<(String, String)> = records
        .iter()
        .map(|r| (r.id.clone(), r.model.clone()))
        .collect();
    let limit = args.limit.unwrap_or(usize::MAX);
    let mut todo: Vec<(&r2_training::labels::QuestionLabel, usize)> = Vec::new();
    for &m in &models {
        todo.extend(
            labels
                .questions
                .iter()
                .filter(|q| {
                    q.direct_correct(&ids[m]).is_some()
                        && !done.contains(&(q.id.clone(), ids[m].clone()))
                })
                .take(limit)
                .map(|q| (q, m)),
        );
    }
    if !todo.is_empty() {
        let mut file = open_append(&args.out)?;
        let settings = session.settings(std::env::temp_dir());
        let bar = bar(todo.len(), "signals");
        let checks = if args.all_checks {
            sig::Checks::All
        } else {
            sig::Checks::Keep
        };
        let mut collecting = stream::iter(todo)
            .map(|(q, m)| sig::collect(&session.pool, &settings, q, m, checks))
            .buffer_unordered(args.run.concurrency.max(1));
        let mut differing = 0usize;
        while let Some(record) = collecting.next().await {
            match record.map_err(train_error)? {
                Some(record) => {
                    sig::append(&mut file, &record).map_err(train_error)?;
                    records.push(record);
                }
                None => differing += 1,
            }
            bar.inc(1);
        }
        bar.finish();
        if differing > 0 {
            println!(
                "{differing} answers left out: answered again, they differ from the answer the labels graded (batched greedy decoding is not bit-reproducible across machines; the call cache keeps answers stable on one machine)"
            );
        }
    }
    let encoders: Vec<(String, Arc<dyn r2_router::features::Encoder>)> =
        [r2_router::features::MINILM_DISTILLED, "all-minilm-l6-v2"]
            .iter()
            .map(|name| {
                Ok((
                    name.to_string(),
                    session.env.encoder(name).map_err(router_error)?,
                ))
            })
            .collect::<Result<_>>()?;
    let mut fits = Vec::new();
    for &m in &models {
        let positives = records
            .iter()
            .filter(|r| r.model == ids[m] && r.correct)
            .count();
        let total = records.iter().filter(|r| r.model == ids[m]).count();
        // Five folds need five questions of each kind.
        if positives < 5 || total - positives < 5 {
            println!(
                "{}: {total} questions with signals, {positives} answered right: too few to score (5-fold held-out scores need at least 5 right and 5 wrong)",
                ids[m]
            );
            continue;
        }
        let scores = sig::report::report(&sig::report::ReportInputs {
            labels: &labels.questions,
            signals: &records,
            model: &ids[m],
            encoders: &encoders,
            pool: &session.pool.config,
        })
        .map_err(train_error)?;
        println!("{}", sig::report::render(&ids[m], &scores, positives));
        let decision = sig::decision::decide(
            &labels.questions,
            &records,
            &ids[m],
            &ids[largest],
            &session.pool.config,
            args.tolerance,
        )
        .map_err(train_error)?;
        println!(
            "{}",
            sig::decision::render_decision(&ids[m], &ids[largest], &decision)
        );
        if let Some(router) = &args.router {
            let before = route_head_scores(&session, router, &labels.questions, m)?;
            let fit = sig::fit::fit_keep(&sig::fit::FitInputs {
                labels: &labels.questions,
                signals: &records,
                small: &ids[m],
                large: &ids[largest],
                pool: &session.pool.config,
                profile: &session.pool.config.price_profile,
                tolerance: args.tolerance,
                before: Some(&before),
            })
            .map_err(train_error)?;
            println!("{}", sig::fit::render_fit(&ids[m], &ids[largest], &fit));
            fits.push(fit);
        }
    }
    if let Some(router) = &args.router {
        write_keep(router, &labels.questions, &records, fits, &args)?;
    }
    Ok(())
}

/// The route head of `router`: P(model `m` answers right) for each labelled question of a
/// family it routes (what `learned+keep` compares with its try threshold).
fn route_head_scores(
    session: &Session,
    router: &Path,
    labels: &[r2_training::labels::QuestionLabel],
    m: usize,
) -> Result<std::collections::BTreeMap<String, f64>> {
    let path = router
        .to_str()
        .ok_or_else(|| input_error(format!("--router {}: not a UTF-8 path", router.display())))?;
    let (net, features) = session
        .env
        .load_router(path, &session.pool)
        .map_err(router_error)?;
    labels
        .iter()
        .filter(|l| net.manifest.routes_family(l.family))
        .map(|l| {
            r2_router::policy::direct_success(&net, &features, &l.question, l.family, m)
                .map(|p| (l.id.clone(), p))
                .map_err(|e| input_error(e.to_string()))
        })
        .collect()
}

/// Writes the fitted keep decisions into `router`'s manifest (atomically), with the task
/// families they were fitted on and what they were calibrated for.
fn write_keep(
    router: &Path,
    labels: &[r2_training::labels::QuestionLabel],
    records: &[r2_training::signals::SignalRecord],
    fits: Vec<r2_training::signals::fit::KeepFit>,
    args: &SignalsArgs,
) -> Result<()> {
    if fits.is_empty() {
        return Err(input_error(
            "no keep decision was fitted (too few signals); the router is unchanged",
        ));
    }
    let path = r2_router::net::RouterNet::manifest_path(router);
    let text = r2_files::read_to_string(&path, r2_files::limits::CONFIG)
        .map_err(|e| input_error(format!("--router {}: {e}", router.display())))?;
    let mut manifest: r2_router::net::Manifest = serde_json::from_str(&text)
        .map_err(|e| input_error(format!("{}: not a router manifest: {e}", path.display())))?;
    if let Some(f) = fits
        .iter()
        .find(|f| !manifest.pool.contains(&f.model.model))
    {
        return Err(input_error(format!(
            "--router {}: its pool ({}) has no {}",
            router.display(),
            manifest.pool.join(", "),
            f.model.model
        )));
    }
    let fitted: HashSet<&str> = fits.iter().map(|f| f.model.model.as_str()).collect();
    let by_id: std::collections::HashMap<&str, &r2_training::labels::QuestionLabel> =
        labels.iter().map(|l| (l.id.as_str(), l)).collect();
    let mut families: Vec<r2_decomposer::TaskFamily> = r2_decomposer::TaskFamily::ALL
        .iter()
        .copied()
        .filter(|f| {
            records.iter().any(|r| {
                fitted.contains(r.model.as_str())
                    && by_id.get(r.id.as_str()).is_some_and(|l| l.family == *f)
            })
        })
        .collect();
    families.dedup();
    let first = &fits[0];
    let calibrated_for = format!(
        "accuracy ≥ direct on {} − {} point{}, cheapest under {} prices; {} labelled questions ({})",
        manifest.pool.last().cloned().unwrap_or_default(),
        100.0 * args.tolerance,
        if (100.0 * args.tolerance - 1.0).abs() < 1e-9 { "" } else { "s" },
        first.profile,
        first.n,
        args.labels
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let (try_at, profile) = (first.chosen.try_at, first.profile.clone());
    manifest.keep.retain(|k| k.profile != profile);
    manifest.keep.push(r2_allocator::KeepSet {
        profile,
        try_at,
        families,
        models: fits.into_iter().map(|f| f.model).collect(),
        calibrated_for,
    });
    let json = serde_json::to_string_pretty(&manifest).context("cannot serialise the manifest")?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, json + "\n").with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "wrote the keep decisions for `{}` prices into {}",
        manifest.keep.last().map_or("", |k| k.profile.as_str()),
        path.display()
    );
    Ok(())
}

/// A resumable JSONL output opened for appending (its folder made if need be). A run killed
/// mid-line may have left a last line without its newline: it is ended, so the next record
/// starts on a line of its own.
fn open_append(path: &Path) -> Result<std::fs::File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    if !r2_files::ends_with_newline(path)? {
        use std::io::Write;
        file.write_all(b"\n")?;
    }
    Ok(file)
}

fn read_all_labels(paths: &[std::path::PathBuf], ids: &[String]) -> Result<LabelSet> {
    let mut all = LabelSet::default();
    for p in paths {
        let set = read_labels(p, ids).map_err(train_error)?;
        crate::setup::warn_malformed(p, &set.malformed);
        all.questions.extend(set.questions);
        all.malformed.extend(set.malformed);
    }
    Ok(all)
}

fn sft(config_path: Option<&Path>, args: SftArgs) -> Result<()> {
    let config = load_config(config_path, None)?;
    let ids: Vec<String> = config.ids().into_iter().map(String::from).collect();
    let labels = read_all_labels(&args.labels, &ids)?;
    if labels.questions.is_empty() {
        return Err(input_error(
            "the labels have no usable questions: nothing to train on",
        ));
    }
    let threshold_ok = args.threshold > 0.0 && args.threshold < 1.0;
    if !(0.0..1.0).contains(&args.holdout) || !threshold_ok {
        return Err(input_error(
            "--holdout must be in [0, 1) and --threshold in (0, 1)",
        ));
    }
    let env = RouterEnv::new(None, true);
    let features = Featurizer::new(env.encoder(&args.encoder).map_err(router_error)?);
    let opts = SftOptions {
        seed: args.seed,
        epochs: args.epochs,
        hidden: args.hidden.max(1),
        holdout: args.holdout,
        threshold: args.threshold,
        decompose_at: Some(r2_training::labels::decompose_position(
            &labels.questions,
            &config,
        )),
        ..Default::default()
    };
    let (mut net, metrics) = train_sft(&labels.questions, &ids, &features, &opts)
        .map_err(|e| training_error(e, &args.out, "epoch"))?;
    sft::note_run(
        &mut net.manifest,
        &args.labels,
        labels.questions.len(),
        args.seed,
        &config.price_profile,
    );
    save_with_metrics(&mut net, &metrics, &args.out).map_err(train_error)?;
    let metrics_path = sibling(&args.out, "metrics.json");
    std::fs::write(
        &metrics_path,
        serde_json::to_string_pretty(&metrics)? + "\n",
    )?;
    println!(
        "route candidates, cheapest first on these labels ({} prices): {}",
        config.price_profile,
        sft::route_order(&net, &ids).join(" < ")
    );
    print!("{}", report(&metrics, &ids));
    println!(
        "wrote {} and {}",
        args.out.display(),
        metrics_path.display()
    );
    Ok(())
}

async fn grpo(config_path: Option<&Path>, args: GrpoArgs) -> Result<()> {
    // A bad suffix fails before anything loads.
    let escalation = args
        .escalate
        .as_deref()
        .map(grpo_run::escalation)
        .transpose()
        .map_err(train_error)?;
    let selection = select_items(&args.data)?;
    let session = Session::open(config_path, &args.run)?;
    let (net, features) = session
        .env
        .load_router(&args.init.display().to_string(), &session.pool)
        .map_err(router_error)?;
    let reference = net.snapshot().map_err(router_error)?;
    let net = Arc::try_unwrap(net).map_err(|_| anyhow::anyhow!("the router is shared"))?;
    let (train, dev) = grpo_run::split_dev(&selection.items, args.dev).map_err(train_error)?;
    let settings = session.settings(std::env::temp_dir());
    let options = GrpoOptions {
        group: args.group,
        lambda: args.lambda,
        iterations: args.iterations,
        batch: args.batch,
        lr: args.lr,
        kl: args.kl,
        patience: args.patience,
        seed: args.seed,
        threshold: net.manifest.threshold,
        escalation,
        normaliser: args.normalise,
        ..Default::default()
    }
    .checked();
    let grpo = Grpo::new(&session.pool, &settings, features, options.clone());
    println!(
        "GRPO on {} training and {} dev questions",
        train.len(),
        dev.len()
    );
    let result = grpo
        .train(net, &reference, train, dev, &args.out, |l| {
            println!(
                "iter {:>3}: train reward {:+.3} acc {:.1}% rel.cost {:.3} | dev reward {:+.3} acc {:.1}% rel.cost {:.3} | loss {:+.4} kl {:.4} (route {}, step {}) route entropy {} | {} of {} questions differ{}",
                l.iteration,
                l.train.reward,
                100.0 * l.train.accuracy,
                l.train.relative_cost,
                l.dev.reward,
                100.0 * l.dev.accuracy,
                l.dev.relative_cost,
                l.loss,
                l.kl,
                or_dash(l.kl_route),
                or_dash(l.kl_step),
                or_dash(l.entropy_route),
                l.informative,
                l.questions,
                if l.best { "  (best)" } else { "" }
            )
        })
        .await;
    let report = result.map_err(|e| training_error(e, &args.out, "iteration"))?;
    let plot_path = sibling(&args.out, "curves.png");
    if let Err(e) = grpo_run::plot(&report, &plot_path) {
        eprintln!("warning: plot not written: {e}");
    }
    let data = DataNote {
        data: selection.label.clone(),
        split: args.data.split.clone(),
        offset: args.data.offset,
        limit: args.data.limit,
        shuffle: args.data.shuffle,
    };
    grpo_run::note(
        &args.out,
        &data,
        (train.len(), dev.len()),
        &options,
        &report,
    )
    .map_err(train_error)?;
    println!(
        "dev reward {:+.3} → {:+.3} (best at iteration {}{}); wrote {}, {}, {}",
        report.initial_dev.reward,
        report.best_dev.reward,
        report.best_iteration,
        if report.stopped_early {
            ", stopped early"
        } else {
            ""
        },
        args.out.display(),
        sibling(&args.out, "log.jsonl").display(),
        plot_path.display()
    );
    Ok(())
}

/// A head's KL for the progress line: "-" when the batch had no decision for that head.
/// A logged figure to four places, or "-" when the batch had none.
fn or_dash(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.4}"))
}

pub async fn calibrate(config_path: Option<&Path>, args: CalibrateArgs) -> Result<()> {
    let target = Target::new(args.target_cost, args.target_accuracy).ok_or_else(|| {
        input_error(
            "give one of --target-cost USD (≥ 0) or --target-accuracy (0-1 or a percentage)",
        )
    })?;
    // A suffix (+program, +retry, ...) scores every threshold with that check, the way
    // the policy will run.
    let (policy, mut escalation) = r2_allocator::Escalation::split(args.policy.trim())
        .map_err(|e| input_error(e.to_string()))?;
    // The threshold a name may carry is what calibration chooses anew.
    let path = match parse_learned(policy.trim()) {
        Some(Ok(learned)) if !learned.query_level => learned.path,
        Some(Err(e)) => return Err(input_error(e.to_string())),
        _ => {
            return Err(input_error(format!(
                "calibrate needs a learned policy (learned:<path>), not '{}'",
                args.policy
            )))
        }
    };
    let selection = select_items(&args.data)?;
    let session = Session::open(config_path, &args.run)?;
    let (net, features) = session
        .env
        .load_router(&path, &session.pool)
        .map_err(router_error)?;
    if let Some(keep) = escalation.as_mut().and_then(|e| e.keep.as_mut()) {
        let set = net
            .manifest
            .keep_for(&session.pool.config.price_profile)
            .map_err(|why| input_error(format!("router '{path}': {why}")))?;
        keep.set = std::sync::Arc::new(set.clone());
    }
    let settings = session.settings(std::env::temp_dir());
    println!(
        "calibrating on {} items of {}",
        selection.items.len(),
        selection.label
    );
    let points = sweep(
        &session.pool,
        &settings,
        &Calibrated {
            net,
            features,
            escalation: escalation.clone(),
        },
        &selection.items,
        &GRID,
        |p| {
            println!(
                "threshold {:.1}: accuracy {:.1}%, cost per item ${:.8}{}",
                p.threshold,
                100.0 * p.accuracy,
                p.cost_per_item,
                if p.errored > 0 {
                    format!(" ({} errored)", p.errored)
                } else {
                    String::new()
                }
            )
        },
    )
    .await;
    match choose(&points, target) {
        Some(p) => {
            println!(
                "threshold {} (accuracy {:.1}%, cost per item ${:.8}): use --policy learned:{}@{}{}",
                p.threshold,
                100.0 * p.accuracy,
                p.cost_per_item,
                path,
                p.threshold,
                escalation.as_ref().map(|e| e.suffix()).unwrap_or_default()
            );
            Ok(())
        }
        None => Err(input_error(
            "no threshold meets the target on these items; see the table above",
        )),
    }
}
