//! Invariants of `parse_plan` on arbitrary input: it never panics, always returns
//! 1..=max_subtasks subtasks with ids 1..=n and only backward dependencies.

use proptest::prelude::*;
use r2_decomposer::{parse_plan, Plan};

fn assert_invariants(plan: &Plan, max: usize) {
    assert!(
        (1..=max.max(1)).contains(&plan.len()),
        "{} steps",
        plan.len()
    );
    assert_eq!(plan.validate(), Ok(()));
    for s in &plan.subtasks {
        assert!(s.depends_on.iter().all(|&d| d >= 1 && d < s.id), "{s:?}");
    }
    assert_eq!(plan.topo_order(), (1..=plan.len()).collect::<Vec<_>>());
}

/// Lines that look like what models write, in random order and with random noise.
fn plan_like() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        "[0-9]{1,3}[.):] [A-Za-z ]{0,40}( \\(depends on [0-9]{1,3}(, [0-9]{1,3}){0,3}\\))?",
        "Step [0-9]{1,2}: [A-Za-z =+*0-9]{0,30}",
        "- [A-Za-z ]{1,30}( \\[deps: [0-9]\\])?",
        "(Answer|Question|Solution): [a-z0-9 ]{0,20}",
        "\\{\"id\": [0-9], \"text\": \"[a-z ]{0,20}\", \"depends_on\": \\[[0-9, ]{0,8}\\]\\}",
        "[\\[\\]{}\",:0-9a-z ]{0,30}",
        "```(json)?",
        ".{0,40}",
    ];
    prop::collection::vec(line, 0..30).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn never_panics_on_arbitrary_strings(output in ".{0,400}", question in ".{0,80}", max in 1usize..10) {
        let plan = parse_plan(&output, &question, max);
        assert_invariants(&plan, max);
    }

    #[test]
    fn never_panics_on_plan_like_text(output in plan_like(), max in 1usize..10) {
        let plan = parse_plan(&output, "How much does she make?", max);
        assert_invariants(&plan, max);
    }

    #[test]
    fn rendered_plans_parse_back_unchanged(
        texts in prop::collection::vec("[A-Z][a-z]{2,8}( [a-z]{2,8}){1,6}", 2..7),
        dep_bits in prop::collection::vec(any::<u8>(), 7),
    ) {
        // Distinct step texts (numbers keep near-duplicates apart) with random backward deps.
        let subtasks: Vec<r2_decomposer::Subtask> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| r2_decomposer::Subtask {
                id: i + 1,
                text: format!("{t} item {}", i + 1),
                depends_on: (1..i + 1).filter(|d| dep_bits[i] & (1 << (d - 1)) != 0).collect(),
            })
            .collect();
        let plan = Plan::new(subtasks).unwrap();
        let parsed = parse_plan(&plan.render(), "An unrelated question?", 8);
        prop_assert_eq!(&parsed.subtasks, &plan.subtasks, "rendered:\n{}", plan.render());
        prop_assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    }
}
