//! The bodies of the fuzz targets: one `pub fn <target>(data: &[u8])` per parser of
//! untrusted input. `fuzz/fuzz_targets/<target>.rs` calls it under libFuzzer (nightly,
//! `cargo fuzz`); `tests/replay.rs` replays `fuzz/corpus/<target>/` and
//! `fuzz/artifacts/<target>/` through it on stable, so CI checks exactly what was fuzzed.
//!
//! A panic is a bug: either in the parser, or a property asserted here that the parser
//! breaks. Inputs that carry several fields split them at the first byte 0x1F (ASCII unit
//! separator); a leading byte, when a target reads one, picks a mode (a digit `'0'..='9'`
//! reads as itself, so seeds stay readable).

use std::io::Read;
use std::path::Path;
use std::sync::LazyLock;

use r2_bench::grade::{self as bench_grade, expr, latex};
use r2_bench::Gold;
use r2_decomposer::{parse_plan, Plan, TaskFamily, MAX_STEP_CHARS};
use r2_executor::answer;
use r2_executor::program::{self, ProgramError};
use r2_files::{limits, Lines, MALFORMED_KEPT};
use r2_openai::{body as openai_body, parse_retry_after, SseParser};
use r2_pool::{ChatMessage, GenRequest, PoolConfig, Role, SourcePart};
use r2_training::labels::{self as training_labels, LabelSet, RouteLabel};

/// The separator between the fields of one input.
pub const SEP: u8 = 0x1F;

/// The names of the targets, as in `fuzz/fuzz_targets/` and `fuzz/corpus/`.
pub const TARGETS: [&str; 8] = [
    "plan",
    "program",
    "answer",
    "grade",
    "config",
    "chat_request",
    "sse",
    "labels",
];

/// Runs target `name` on `data`; `false` for an unknown name.
pub fn run(name: &str, data: &[u8]) -> bool {
    let f: fn(&[u8]) = match name {
        "plan" => plan,
        "program" => program,
        "answer" => answer,
        "grade" => grade,
        "config" => config,
        "chat_request" => chat_request,
        "sse" => sse,
        "labels" => labels,
        _ => return false,
    };
    f(data);
    true
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `data` split at the first separator (all of it and nothing when there is none).
fn two(data: &[u8]) -> (String, String) {
    match data.iter().position(|&b| b == SEP) {
        Some(i) => (text(&data[..i]), text(&data[i + 1..])),
        None => (text(data), String::new()),
    }
}

/// A leading mode byte in `0..n`, and the rest.
fn mode(data: &[u8], n: u8) -> Option<(usize, &[u8])> {
    let (&first, rest) = data.split_first()?;
    let m = if first.is_ascii_digit() {
        first - b'0'
    } else {
        first
    };
    Some(((m % n) as usize, rest))
}

/// `parse_plan`: mode = `max_subtasks` (0-9), then `output` SEP `question`.
///
/// The plan is valid (`Plan::validate`: ids 1..=n, backward sorted dependencies) with
/// `1 ≤ n ≤ max(max_subtasks, 1)`; a one-step plan is the question itself; the steps of a
/// longer plan are non-empty and at most `MAX_STEP_CHARS` (+ the ellipsis of a cut);
/// parsing is deterministic.
pub fn plan(data: &[u8]) {
    let Some((max, rest)) = mode(data, 10) else {
        return;
    };
    let (output, question) = two(rest);
    let plan = parse_plan(&output, &question, max);
    if let Err(e) = plan.validate() {
        panic!("invalid plan ({e}): {plan:?}");
    }
    assert!(
        (1..=max.max(1)).contains(&plan.len()),
        "{} steps with max_subtasks {max}",
        plan.len()
    );
    if plan.len() == 1 {
        assert_eq!(plan.subtasks, Plan::direct(&question).subtasks);
    } else {
        for s in &plan.subtasks {
            assert!(!s.text.trim().is_empty(), "empty step {}", s.id);
            let chars = s.text.chars().count();
            assert!(
                chars <= MAX_STEP_CHARS + 1,
                "step {} has {chars} chars",
                s.id
            );
        }
    }
    let order = plan.topo_order();
    assert!(order.iter().copied().eq(1..=plan.len()), "{order:?}");
    assert_eq!(
        parse_plan(&output, &question, max),
        plan,
        "not deterministic"
    );
}

/// `program::run_program` / `evaluate` on `program`, then `unused_quantities` on
/// `question` (`program` SEP `question`).
///
/// Both entry points agree; a value is finite and at most 2^53 in magnitude; the inputs are
/// finite, sorted and without repeats; every unused quantity is a distinct piece of the
/// question.
pub fn program(data: &[u8]) {
    let (code, question) = two(data);
    let computed = program::evaluate(&code);
    assert_eq!(
        program::run_program(&code),
        computed.clone().map(|c| c.value)
    );
    let inputs = match computed {
        Ok(c) => {
            assert!(
                c.value.is_finite() && c.value.abs() <= 9_007_199_254_740_992.0,
                "{}",
                c.value
            );
            assert!(c.inputs.iter().all(|x| x.is_finite()), "{:?}", c.inputs);
            assert!(
                c.inputs.windows(2).all(|w| w[0] < w[1]),
                "inputs not sorted and distinct: {:?}",
                c.inputs
            );
            c.inputs
        }
        Err(e) => {
            if let ProgramError::Syntax { line, .. }
            | ProgramError::Undefined { line, .. }
            | ProgramError::Arithmetic { line, .. } = &e
            {
                assert!(*line >= 1, "{e:?}");
            }
            assert!(!e.to_string().is_empty());
            Vec::new()
        }
    };
    let unused = program::unused_quantities(&question, &inputs);
    for (i, q) in unused.iter().enumerate() {
        assert!(!q.is_empty() && question.contains(q), "{q:?}");
        assert!(!unused[..i].contains(q), "{q:?} listed twice");
    }
}

/// Answer extraction and comparison (`r2_executor::answer`): mode = task family (0-5),
/// then `a` SEP `b`.
///
/// `same_answer` is reflexive on non-empty answers and symmetric; `show_value` of an
/// integer is a plain number that `same_value` confirms; a choice letter is one of A-E.
pub fn answer(data: &[u8]) {
    let Some((f, rest)) = mode(data, TaskFamily::ALL.len() as u8) else {
        return;
    };
    let family = TaskFamily::ALL[f];
    let (a, b) = two(rest);
    let (fa, fb) = (
        answer::final_answer(family, &a),
        answer::final_answer(family, &b),
    );
    for x in [&fa, &fb] {
        if !x.trim().is_empty() {
            assert!(
                answer::same_answer(family, x, x),
                "{family:?}: {x:?} ≠ itself"
            );
        }
    }
    for (x, y) in [(&fa, &fb), (&a, &b)] {
        assert_eq!(
            answer::same_answer(family, x, y),
            answer::same_answer(family, y, x),
            "{family:?}: not symmetric on {x:?}, {y:?}"
        );
    }
    answer::step_result(&a);
    answer::last_boxed(&a);
    answer::last_code_block(&a);
    answer::after_marker(&a, &b);
    if let Some(n) = answer::last_number(&a) {
        assert!(n.bytes().any(|c| c.is_ascii_digit()), "{n:?}");
    }
    if let Some(l) = answer::choice_letter(&a) {
        assert!(["A", "B", "C", "D", "E"].contains(&l.as_str()), "{l:?}");
    }
    for x in [&a, &fa] {
        let plain = answer::is_plain_number(x);
        if let Ok(v) = x.trim().parse::<f64>() {
            // What a model writes as a number reads as that number.
            if v.is_finite() && !x.contains(['e', 'E', '+']) && x.trim().len() < 16 {
                assert!(plain && answer::same_value(x, v), "{x:?} is not {v}");
            }
            if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
                let shown = answer::show_value(v);
                assert!(answer::same_value(&shown, v), "{shown:?} is not {v}");
            }
        }
        assert!(!answer::same_value(x, f64::NAN));
    }
}

/// The bench graders (all but code execution): mode = gold kind (0 number, 1 MATH
/// expression, 2 choice, 3 yes/no, 4 SCAN actions, 5 CHAMP), then `gold` SEP `prediction`.
///
/// Each gold is graded by its method, and only a judge can pass a `needs-judge` grade;
/// whatever a prediction says before it, ending it with `ANSWER: <gold>` makes it correct
/// (for a plain-number gold, a choice letter, yes/no, and SCAN actions).
pub fn grade(data: &[u8]) {
    let Some((kind, rest)) = mode(data, 6) else {
        return;
    };
    let (g, pred) = two(rest);
    const ACTIONS: [&str; 6] = ["WALK", "RUN", "JUMP", "LOOK", "TURN_LEFT", "TURN_RIGHT"];
    let (gold, method, stated) = match kind {
        0 => {
            let plain = g.starts_with(|c: char| c.is_ascii_digit())
                && g.len() < 16
                && g.bytes().all(|c| c.is_ascii_digit() || c == b'.');
            let stated = (plain && bench_grade::parse_number(&g).is_some()).then(|| g.clone());
            (Gold::Number(g.clone()), "numeric", stated)
        }
        1 => (Gold::MathExpr(g.clone()), "math-equiv", None),
        2 => {
            let c = g.chars().next().unwrap_or('A');
            let stated = ('A'..='E').contains(&c).then(|| c.to_string());
            (Gold::Choice(c), "choice", stated)
        }
        3 => {
            let b = g.len() % 2 == 1;
            let stated = Some(if b { "yes" } else { "no" }.to_string());
            (Gold::YesNo(b), "yes-no", stated)
        }
        4 => {
            let words: Vec<String> = g.split_whitespace().map(str::to_string).collect();
            let known = words.iter().all(|w| ACTIONS.contains(&w.as_str()));
            let stated = (known && !words.is_empty()).then(|| words.join(" "));
            (Gold::Actions(words), "exact-actions", stated)
        }
        _ => (Gold::Champ(g.clone()), "", None),
    };
    let verdict = r2_bench::grade(&gold, &pred);
    if let Gold::Champ(_) = gold {
        assert!(["champ-numeric", "champ-yes-no", "needs-judge"].contains(&verdict.method));
        assert_eq!(
            bench_grade::champ_needs_judge(&g, &pred),
            verdict.needs_judge()
        );
    } else {
        assert_eq!(verdict.method, method);
    }
    assert!(!(verdict.correct && verdict.needs_judge()), "{verdict:?}");
    if let Some(answer) = stated {
        let text = format!("{pred}\nANSWER: {answer}");
        let v = r2_bench::grade(&gold, &text);
        assert!(v.correct, "{gold:?} not found in {text:?}: {v:?}");
    }
    for s in [&g, &pred] {
        if let Some(v) = bench_grade::parse_number(s) {
            assert!(!v.is_nan(), "{s:?} parsed as NaN");
        }
        if let Some(v) = expr::eval(s) {
            assert!(!v.is_nan(), "{s:?} evaluated to NaN");
        }
        latex::normalize(s);
        bench_grade::extract_literal(s);
        bench_grade::champ_gold_values(s);
    }
    expr::equivalent(&g, &pred);
    bench_grade::math_equiv(&g, &pred);
}

/// `PoolConfig::parse` on any text, with a base directory for relative paths.
///
/// Never panics; an error names the file; a parsed pool is non-empty with distinct valid
/// ids, sorted cheapest first, its decomposer in the pool, every model with the same
/// price profiles (finite, ≥ 0) including the active one, local paths resolved to
/// absolute ones; switching to each profile works.
pub fn config(data: &[u8]) {
    let text = text(data);
    const FILE: &str = "fuzz/pool.toml";
    let cfg = match PoolConfig::parse(&text, FILE, Some(Path::new("/fuzz/base"))) {
        Ok(cfg) => cfg,
        Err(e) => {
            assert!(e.to_string().contains(FILE), "{e}");
            return;
        }
    };
    assert!(!cfg.models.is_empty());
    assert!(cfg.index_of(&cfg.decomposer).is_some());
    cfg.policy_or_default();
    let profiles: Vec<&String> = cfg.models[0].prices.keys().collect();
    assert!(profiles.contains(&&cfg.price_profile));
    for (i, m) in cfg.models.iter().enumerate() {
        assert!(!m.id.is_empty(), "empty id");
        assert_eq!(cfg.index_of(&m.id), Some(i), "duplicate id {}", m.id);
        assert!(m.prices.keys().eq(profiles.iter().copied()), "{}", m.id);
        assert!(m.context_length >= 256 && m.max_concurrency >= 1 && m.parameters > 0);
        for p in m.prices.values() {
            assert!(p.input.is_finite() && p.input >= 0.0, "{p:?}");
            assert!(p.output.is_finite() && p.output >= 0.0, "{p:?}");
        }
        for part in &m.source.parts {
            if let SourcePart::Path(p) = part {
                assert!(p.is_absolute(), "{p:?} was not resolved");
            }
        }
    }
    for profile in profiles {
        let mut c = cfg.clone();
        c.set_price_profile(profile).unwrap();
        let totals: Vec<f64> = (0..c.models.len())
            .map(|i| c.price(i))
            .map(|p| p.input + p.output)
            .collect();
        assert!(
            totals.windows(2).all(|w| w[0] <= w[1]),
            "not cheapest first under {profile}: {totals:?}"
        );
    }
}

/// `r2_server::wire::parse` on any request body.
///
/// An error is a 400 with a message; an accepted request has a model, a non-empty last
/// user message (which `question_with_context` keeps), a temperature in [0, 2] and
/// `max_tokens` ≥ 1.
pub fn chat_request(data: &[u8]) {
    let chat = match r2_server::wire::parse(data) {
        Ok(chat) => chat,
        Err(e) => {
            assert_eq!(e.status.as_u16(), 400, "{e:?}");
            assert!(!e.message.is_empty());
            return;
        }
    };
    assert!(!chat.model.trim().is_empty());
    let last = chat
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .expect("a user message");
    assert!(!last.content.trim().is_empty());
    if let Some(t) = chat.temperature {
        assert!((0.0..=2.0).contains(&t), "{t}");
    }
    assert_ne!(chat.max_tokens, Some(0));
    let question = r2_server::wire::question_with_context(&chat.messages);
    assert!(question.contains(last.content.trim()), "{question:?}");
}

/// The openai backend's body parsing: mode = how many chunk lengths follow (0-7), those
/// lengths (one byte each), then the body.
///
/// `SseParser` yields the same events and leftover whether the body arrives in one piece,
/// byte by byte or in the given chunks, and at most one event per line; reading the stream
/// (`body::read_stream`) gives the same result each way. The JSON-body reader, the error
/// message (non-empty, at most 300 characters) and `Retry-After` parsing take the body
/// too.
pub fn sse(data: &[u8]) {
    let Some((k, rest)) = mode(data, 8) else {
        return;
    };
    let (lengths, body) = rest.split_at(k.min(rest.len()));
    let mut chunks: Vec<&[u8]> = Vec::new();
    let mut left = body;
    for &n in lengths.iter().cycle() {
        if left.is_empty() || lengths.iter().all(|&n| n == 0) {
            break;
        }
        let (chunk, tail) = left.split_at((n as usize).min(left.len()));
        chunks.push(chunk);
        left = tail;
    }
    chunks.push(left);
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    let splits: [&[&[u8]]; 3] = [&[body], &bytes, &chunks];

    let events = |pieces: &[&[u8]]| {
        let mut p = SseParser::new();
        let events: Vec<String> = pieces.iter().flat_map(|c| p.push(c)).collect();
        (events, p.has_partial())
    };
    let whole = events(splits[0]);
    for pieces in &splits[1..] {
        assert_eq!(events(pieces), whole, "split into {} pieces", pieces.len());
    }
    let lines = body.iter().filter(|&&b| b == b'\n').count();
    assert!(whole.0.len() <= lines);

    let request = GenRequest::new(vec![ChatMessage::user("What is 6 * 7?")], 64);
    let read = openai_body::read_stream(splits[0].iter().copied(), &request);
    for pieces in &splits[1..] {
        assert_eq!(
            openai_body::read_stream(pieces.iter().copied(), &request),
            read
        );
    }
    if let Ok(r) = openai_body::read_json(body, &request) {
        assert!(r.token_logprobs.is_none_or(|l| !l.is_empty()));
    }
    let body_text = text(body);
    let msg = openai_body::error_message(&body_text);
    assert!(!msg.is_empty() && msg.chars().count() <= 300, "{msg:?}");
    parse_retry_after(&body_text);
}

/// A byte source that hands out at most `chunk` bytes per read.
struct Trickle<'a> {
    bytes: &'a [u8],
    chunk: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.bytes.len().min(self.chunk).min(out.len());
        out[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Ok(n)
    }
}

/// The embedded pool, which the shipped labels were made for.
static POOL: LazyLock<(PoolConfig, Vec<String>)> = LazyLock::new(|| {
    let cfg = PoolConfig::embedded();
    let ids = cfg.ids().into_iter().map(str::to_string).collect();
    (cfg, ids)
});

/// Labels file limits small enough for a fuzz input to pass them.
const LABELS_MAX: u64 = 3000;
const LABELS_MAX_LINE: usize = 2500;

fn read_labels(bytes: &[u8], chunk: usize, max: u64, max_line: usize) -> Result<LabelSet, String> {
    let path = Path::new("fuzz/labels.jsonl");
    let lines = Lines::new(Trickle { bytes, chunk }, path, max, max_line);
    training_labels::parse_labels(lines, path, &POOL.1).map_err(|e| e.to_string())
}

/// The labels reader (`r2_training::labels::parse_labels` over an `r2_files::Lines` with
/// limits of 3000 bytes and 2500 per line): mode = bytes per read of the source (1-10), then
/// the file.
///
/// A file reads the same whether its source returns it whole or a few bytes at a time; an
/// accepted file names only pool models, counts no more lines than it has, and keeps at
/// most `MALFORMED_KEPT` malformed lines in order; the oracle only picks a correct route,
/// decomposing goes at most last, and every label written by `append_label` reads back
/// equal.
pub fn labels(data: &[u8]) {
    let Some((m, bytes)) = mode(data, 10) else {
        return;
    };
    let whole = read_labels(bytes, usize::MAX, LABELS_MAX, LABELS_MAX_LINE);
    let trickled = read_labels(bytes, m + 1, LABELS_MAX, LABELS_MAX_LINE);
    assert_eq!(
        format!("{whole:?}"),
        format!("{trickled:?}"),
        "read {} bytes at a time",
        m + 1
    );
    let set = match whole {
        Ok(set) => set,
        Err(e) => {
            assert!(e.contains("fuzz/labels.jsonl"), "{e}");
            return;
        }
    };
    let (cfg, ids) = &*POOL;
    let lines = bytes.split(|&b| b == b'\n').count() - usize::from(bytes.ends_with(b"\n"));
    assert!(set.questions.len() + set.malformed.total() <= lines);
    let kept = set.malformed.kept();
    assert!(kept.len() <= MALFORMED_KEPT.min(set.malformed.total()));
    assert!(kept.windows(2).all(|w| w[0].0 < w[1].0), "{kept:?}");
    assert!(
        kept.iter().all(|(n, _)| (1..=lines).contains(n)),
        "{kept:?}"
    );
    for q in &set.questions {
        for t in &q.tried {
            let models: Vec<&String> = match &t.route {
                RouteLabel::Direct { model } => vec![model],
                RouteLabel::Decompose { allocation } => allocation.iter().collect(),
            };
            assert!(models.iter().all(|m| ids.contains(m)), "{:?}", t.route);
        }
        if let Some(t) = q.cheapest_correct(cfg) {
            assert!(t.correct && t.error.is_none(), "{t:?}");
        }
        q.decomposed_success();
        let mut line = Vec::new();
        training_labels::append_label(&mut line, q).unwrap();
        let back = read_labels(&line, usize::MAX, limits::DATA, limits::LINE).unwrap();
        assert_eq!(
            back.questions,
            std::slice::from_ref(q),
            "does not read back"
        );
        assert!(back.malformed.is_empty());
    }
    assert!(training_labels::decompose_position(&set.questions, cfg) <= cfg.models.len());
}
