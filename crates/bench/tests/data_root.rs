//! `data_root()`: found from the crate without configuration, overridable with
//! `R2REASONER_DATA`, and a clear error when the override is wrong. (Its own test binary:
//! it changes the process environment.)

use r2_bench::datasets::{data_root, load};

#[test]
fn data_root_resolution() {
    std::env::remove_var("R2REASONER_DATA");
    let found = data_root().expect("shared/data beside the repository");
    assert!(found.join("DATA.md").is_file(), "{}", found.display());

    std::env::set_var("R2REASONER_DATA", "/nonexistent/r2-data");
    let err = load("gsm8k", None).unwrap_err().to_string();
    assert!(
        err.contains("R2REASONER_DATA") && err.contains("/nonexistent/r2-data"),
        "{err}"
    );

    std::env::set_var("R2REASONER_DATA", &found);
    assert_eq!(load("paper-scan", None).unwrap().items.len(), 200);
    std::env::remove_var("R2REASONER_DATA");
}
