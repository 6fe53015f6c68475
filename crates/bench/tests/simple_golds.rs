//! Every gold answer of GSM8K, CSQA, SCAN, StrategyQA and CHAMP grades correct in the forms
//! a model writes it, and a perturbed answer grades incorrect.

mod common;

use r2_bench::datasets::Gold;
use r2_bench::grade::{champ_gold_values, grade};

fn with_commas(n: &str) -> String {
    let (sign, digits) = n.strip_prefix('-').map_or(("", n), |d| ("-", d));
    if digits.contains('.') || digits.len() <= 3 {
        return n.to_string();
    }
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

#[test]
fn gsm8k_golds() {
    for (split, expected) in [("test", 1319), ("train", 7473)] {
        let items = common::load("gsm8k", Some(split));
        assert_eq!(items.len(), expected);
        for it in &items {
            let Gold::Number(g) = &it.gold else {
                panic!("{}: {:?}", it.id, it.gold)
            };
            let v: f64 = g.parse().unwrap();
            let rationale = format!("{}\n#### {g}", it.reference.as_deref().unwrap_or(""));
            for text in [
                format!("ANSWER: {g}"),
                format!("So she makes this much.\nANSWER: ${}.", with_commas(g)),
                format!("The answer is {g}.0"),
                format!("ANSWER: {} dollars", with_commas(g)),
                rationale,
            ] {
                let r = grade(&it.gold, &text);
                assert!(
                    r.correct && r.method == "numeric",
                    "{}: {text:?} -> {r:?}",
                    it.id
                );
            }
            for wrong in [format!("{}", v + 1.0), format!("{}", v * 10.0 + 1.0)] {
                let r = grade(&it.gold, &format!("ANSWER: {wrong}"));
                assert!(!r.correct, "{}: gold {g} accepted {wrong}", it.id);
            }
        }
    }
}

#[test]
fn csqa_golds() {
    for (name, expected) in [("csqa", 1221), ("paper-csqa", 200)] {
        let items = common::load(name, None);
        assert_eq!(items.len(), expected);
        for it in &items {
            let Gold::Choice(c) = it.gold else {
                panic!("{}: {:?}", it.id, it.gold)
            };
            assert!(
                it.question.contains(&format!("({c}) ")),
                "{}: choices missing",
                it.id
            );
            for text in [
                format!("ANSWER: {c}"),
                format!("Thinking.\nANSWER: ({c}) something"),
                format!("**ANSWER:** **{c}**"),
            ] {
                assert!(grade(&it.gold, &text).correct, "{}: {text:?}", it.id);
            }
            let other = if c == 'E' { 'A' } else { (c as u8 + 1) as char };
            assert!(
                !grade(&it.gold, &format!("ANSWER: {other}")).correct,
                "{}",
                it.id
            );
        }
    }
}

#[test]
fn scan_golds() {
    let mut checked = 0;
    for (name, split) in [
        ("paper-scan", None),
        ("scan", Some("simple-test")),
        ("scan", Some("length-test")),
    ] {
        for it in common::load(name, split) {
            let Gold::Actions(actions) = &it.gold else {
                panic!("{}", it.id)
            };
            let raw: Vec<String> = actions.iter().map(|a| format!("I_{a}")).collect();
            for text in [
                format!("ANSWER: {}", actions.join(" ")),
                format!("Step by step...\nANSWER: {}", raw.join(" ")),
                format!("ANSWER: {}", actions.join(", ").to_lowercase()),
            ] {
                let r = grade(&it.gold, &text);
                assert!(
                    r.correct && r.method == "exact-actions",
                    "{}: {text:?} -> {r:?}",
                    it.id
                );
            }
            let shorter = &actions[..actions.len() - 1];
            let mut longer = actions.clone();
            longer.push("JUMP".into());
            let mut changed = actions.clone();
            changed[0] = if changed[0] == "WALK" {
                "RUN".into()
            } else {
                "WALK".into()
            };
            for wrong in [shorter.to_vec(), longer, changed] {
                let r = grade(&it.gold, &format!("ANSWER: {}", wrong.join(" ")));
                assert!(!r.correct, "{}: accepted {wrong:?}", it.id);
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 200 + 4182 + 3920);
}

#[test]
fn strategyqa_golds() {
    for (split, expected) in [("dev", 229), ("train", 2061)] {
        let items = common::load("strategyqa", Some(split));
        assert_eq!(items.len(), expected);
        for it in &items {
            let Gold::YesNo(b) = it.gold else {
                panic!("{}", it.id)
            };
            let (yes, no) = if b { ("Yes", "No") } else { ("No", "Yes") };
            for text in [
                format!("ANSWER: {yes}"),
                format!("So the answer is {}.", yes.to_lowercase()),
                format!("...\n{yes}, because of the facts above."),
            ] {
                let r = grade(&it.gold, &text);
                assert!(r.correct && r.method == "yes-no", "{}: {text:?}", it.id);
            }
            assert!(
                !grade(&it.gold, &format!("ANSWER: {no}")).correct,
                "{}",
                it.id
            );
            assert!(!grade(&it.gold, "ANSWER: it depends").correct, "{}", it.id);
        }
    }
}

/// CHAMP: numeric golds are graded deterministically (their value and their own wording
/// accepted, value + 1 rejected); yes/no golds as yes/no; the rest is left to a judge.
#[test]
fn champ_golds() {
    for (name, expected, numeric_min) in [("champ", 270, 110), ("paper-champ", 200, 80)] {
        let items = common::load(name, None);
        assert_eq!(items.len(), expected);
        let (mut numeric, mut yes_no, mut judge) = (0, 0, 0);
        for it in &items {
            let Gold::Champ(g) = &it.gold else {
                panic!("{}", it.id)
            };
            let values = champ_gold_values(g);
            let own = grade(&it.gold, &format!("ANSWER: {g}"));
            if let Some(v) = values.first() {
                numeric += 1;
                assert!(
                    own.correct && own.method == "champ-numeric",
                    "{}: {g:?} -> {own:?}",
                    it.id
                );
                let r = grade(&it.gold, &format!("Counting gives\nANSWER: {v}"));
                assert!(r.correct, "{}: {g:?} rejects its value {v}", it.id);
                // +1, or a relative 1e-6 beyond 2^53 where f64 cannot tell v from v + 1.
                let wrong = v + (v.abs() * 1e-6).max(1.0);
                let r = grade(&it.gold, &format!("ANSWER: {wrong}"));
                assert!(
                    !r.correct && r.method == "champ-numeric",
                    "{}: {g:?} accepts {wrong}",
                    it.id
                );
            } else if matches!(g.as_str(), "Yes" | "No") {
                yes_no += 1;
                assert!(own.correct && own.method == "champ-yes-no", "{}", it.id);
                let flip = if g == "Yes" { "No" } else { "Yes" };
                assert!(
                    !grade(&it.gold, &format!("ANSWER: {flip}")).correct,
                    "{}",
                    it.id
                );
            } else {
                judge += 1;
                assert!(
                    own.needs_judge() && !own.correct,
                    "{}: {g:?} -> {own:?}",
                    it.id
                );
                assert!(r2_bench::grade::champ_needs_judge(
                    g,
                    &format!("ANSWER: {g}")
                ));
            }
        }
        eprintln!("{name}: {numeric} numeric, {yes_no} yes/no, {judge} need a judge");
        assert!(
            numeric >= numeric_min,
            "{name}: only {numeric} numeric golds"
        );
    }
}
