use super::*;

fn value(code: &str) -> f64 {
    run_program(code).unwrap_or_else(|e| panic!("{code:?}: {e}"))
}

fn inputs(code: &str) -> Vec<f64> {
    evaluate(code)
        .unwrap_or_else(|e| panic!("{code:?}: {e}"))
        .inputs
}

#[test]
fn the_value_remembers_the_numbers_it_comes_from() {
    // Through assignments, augmented ones and calls; not from a dead end.
    let code = "a = 4 * 3\nunused = 7\nb = round(a / 8, 1)\nb += 1.5\nanswer = max(b, 2)";
    assert_eq!(inputs(code), [1.0, 1.5, 2.0, 3.0, 4.0, 8.0]);
    // A reassignment forgets the old inputs; `answer` wins over what is printed.
    assert_eq!(inputs("x = 5\nx = 6\nprint(x)"), [6.0]);
    assert_eq!(inputs("x = 5\nanswer = x\nprint(9)"), [5.0]);
    assert_eq!(inputs("answer = 0"), [0.0]);
}

#[test]
fn runs_what_small_models_write() {
    let text = "```python\n# Define the number of eggs per day\neggs_per_day = 16\n\n\
                eggs_sold = eggs_per_day - 3 - 4  # eaten and baked\nrevenue = eggs_sold * 2\n\
                answer = revenue\nprint(answer)\n```\n```output\n99\n```";
    assert_eq!(value(text), 18.0);
    // No `answer`: the last printed value, else the last assigned.
    assert_eq!(value("a = 2\nb = a / 2\nprint(a + b)\nc = 100"), 3.0);
    assert_eq!(value("a = 2\nb = a * 21"), 42.0);
    assert_eq!(value("x = 10 / 3\nx -= 1\nx *= 3\nanswer = x"), 7.0);
    assert_eq!(
        value("import math\ntotal = (1_000 +\n   500)\nanswer = math.ceil(total / 7)"),
        215.0
    );
    assert_eq!(
        value("a = 5; b = 2\nprint(\"Total:\", a)\nanswer = a // b"),
        2.0
    );
    // A print of text after a printed number: the last assignment speaks instead.
    assert_eq!(
        value("total = 20\nprint(total)\neach = total / 4\nprint(f\"Each pays {each}\")"),
        5.0
    );
    // Indented blank and comment lines are fine; so are 1_000_000 and 0.
    assert_eq!(value("a = 1_000_000\n   \n  # note\nanswer = a + 0"), 1e6);
}

#[test]
fn follows_python_arithmetic() {
    let cases = [
        ("-2 ** 2", -4.0),
        ("2 ** -1", 0.5),
        ("2 ** 3 ** 2", 512.0),
        ("7 // 2", 3.0),
        ("-7 // 2", -4.0),
        ("-7 % 3", 2.0),
        ("7 % -3", -2.0),
        ("1 + 2 * 3 - 4 / 2", 5.0),
        ("(1 + 2) * 3", 9.0),
        ("round(2.5)", 2.0),
        ("round(3.5)", 4.0),
        ("round(2.675, 1)", 2.7),
        ("round(0.015, 2)", 0.01),
        ("round(0.005, 2)", 0.01),
        ("round(0.05, 1)", 0.1),
        ("round(1234.5, -2)", 1200.0),
        ("0.5 // 0.1", 4.0),
        ("1 // 0.1", 9.0),
        ("1 % 0.1", 0.09999999999999995),
        ("-7.5 // 2", -4.0),
        ("7.5 % -2", -0.5),
        ("int(-3.7)", -3.0),
        ("min(4, 2, 9) + max(1, 5)", 7.0),
        ("abs(-3) + float(2)", 5.0),
        ("math.floor(2.9) + math.sqrt(16)", 6.0),
        ("1e3 + .5 + 2.", 1002.5),
        ("1.5e-1 * 10", 1.5),
    ];
    for (expr, want) in cases {
        let got = value(&format!("import math\nanswer = {expr}"));
        assert!((got - want).abs() < 1e-9, "{expr}: got {got}, want {want}");
    }
}

#[test]
fn refuses_what_it_cannot_run_safely() {
    let refused = [
        "if a > 1:\n    answer = 2",
        "for i in range(3):\n    total += i",
        "def f():\n    return 1\nanswer = f()",
        "import os\nanswer = 1",
        "answer = open('x')",
        "answer = undefined_thing * 2",
        "total += 1",
        "answer = 1 / 0",
        "answer = 5 % 0",
        "answer = 2 ** 100000",
        "answer = (-8) ** 0.5",
        "answer = 1e308 * 10",
        "a, b = 1, 2",
        "answer = [1, 2]",
        "answer = x.y",
        "answer = \"18\"",
        "answer = (1 + 2",
        "answer = 1 2",
        "answer =",
        "Let's solve it: 2 + 2 = 4.",
        "",
        "# only a comment",
        "print(f\"The answer is {x}\")",
        "answer = 'unterminated",
        "answer = round(1, 2, 3)",
        "answer = sqrt(4)",
        "answer = 1e999",
        "x = -1e400\nanswer = x",
        "answer = 2 ** 60 + 1 - 2 ** 60",
        "answer = 007",
        "answer = 1__0",
        "answer = 1_",
        "round = 3\nanswer = round(2.5)",
        "answer = min(5)",
        "print(1 / 0, 5)",
        "a = 1\n  answer = 2",
        "```python\nanswer = 2\nanswer = answer + (",
        "```python\nanswer = 2\n",
    ];
    for code in refused {
        assert!(
            run_program(code).is_err(),
            "ran {code:?}: {:?}",
            run_program(code)
        );
    }
    let deep = format!("answer = {}1{}", "(".repeat(500), ")".repeat(500));
    assert!(run_program(&deep).is_err());
    let signs = format!("answer = {}1", "-".repeat(500));
    assert!(run_program(&signs).is_err());
    let err = run_program("a = 1\nanswer = b + 1").unwrap_err();
    assert_eq!(
        err,
        ProgramError::Undefined {
            line: 2,
            name: "b".into()
        }
    );
}

proptest::proptest! {
    /// Model output is untrusted: any text gives a value or an error, never a panic or
    /// a non-finite value.
    #[test]
    fn never_panics_on_program_like_text(
        code in "([a-z_]{1,3}|[0-9.e_]{1,4}|[-+*/%=(),#'\"`$\\ \n]|\\*\\*|//|print|math\\.|round|min|é|×){0,40}"
    ) {
        if let Ok(v) = run_program(&code) {
            proptest::prop_assert!(v.is_finite());
        }
    }

    #[test]
    fn never_panics_on_any_text(code in "\\PC{0,200}") {
        if let Ok(v) = run_program(&code) {
            proptest::prop_assert!(v.is_finite());
        }
    }

}
