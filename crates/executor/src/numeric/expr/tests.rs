use super::*;

fn ev(s: &str) -> Option<f64> {
    eval(s)
}

#[test]
fn arithmetic_and_latex() {
    assert_eq!(ev("1+2*3"), Some(7.0));
    assert_eq!(ev("-2^2"), Some(-4.0));
    assert_eq!(ev("2^10"), Some(1024.0));
    assert_eq!(ev("2^{10}"), Some(1024.0));
    assert_eq!(ev("\\frac{1}{2}"), Some(0.5));
    assert_eq!(ev("\\frac12"), Some(0.5));
    assert_eq!(ev("\\frac{\\sqrt{3}}{2}"), Some(3f64.sqrt() / 2.0));
    assert_eq!(ev("2\\sqrt{3}"), Some(2.0 * 3f64.sqrt()));
    assert_eq!(ev("\\sqrt[3]{8}"), Some(2.0));
    assert_eq!(ev("3\\pi"), Some(3.0 * std::f64::consts::PI));
    assert_eq!(ev("C(10, 5)"), Some(252.0));
    assert_eq!(ev("\\binom{10}{5}"), Some(252.0));
    assert_eq!(ev("5!"), Some(120.0));
    assert_eq!(ev("2^floor(5/2)*floor(5/2)!"), Some(8.0));
    assert_eq!(ev("(20*10^15-2)/17"), Some(1176470588235294.0));
    assert_eq!(ev("1.5\\times 10^{3}"), Some(1500.0));
    assert_eq!(ev("|-3|"), Some(3.0));
    assert_eq!(ev("\\log_2 8"), Some(3.0));
    assert_eq!(ev(".5"), Some(0.5));
    assert_eq!(ev("x"), None);
    assert_eq!(ev("1 2"), None);
    assert_eq!(ev("(1,2)"), None);
    assert_eq!(ev("hello"), None);
    assert_eq!(ev(""), None);
    assert_eq!(ev(&"(".repeat(5000)), None);
    assert_eq!(ev(&"(".repeat(300)), None);
}

#[test]
fn symbolic_by_sampling() {
    assert!(equivalent("2x+3", "3+2x"));
    assert!(equivalent("(x+1)(x-1)", "x^2-1"));
    assert!(equivalent("\\frac{n(n-3)}{2}", "n(n-3)/2"));
    assert!(!equivalent("2x+3", "2x+4"));
    assert!(!equivalent("2x", "2y"));
    assert!(equivalent("\\frac{1}{2}", "0.5"));
    assert!(!equivalent("\\pi", "3.14"));
}
