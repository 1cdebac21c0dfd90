//! Every kind of bad input is refused before any training: exit code 2, the file and line, the field,
//! what was expected, and for a name the closest valid ones. Never a panic or a backtrace.

mod common;
use common::*;

/// Runs `workbench plan` and `workbench sweep` on `text` and checks both fail with exit 2 and every
/// expected fragment in the message; returns the message.
fn refused(name: &str, text: &str, expect: &[&str]) -> String {
    let dir = scratch(name);
    let space = write(&dir, "space.yaml", text);
    let space = space.to_str().unwrap();
    let mut last = String::new();
    for args in [vec!["plan", space], vec!["sweep", space, "--out", "out"]] {
        let out = run(&args, &dir);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: expected exit 2, got {:?}\n{err}", out.status);
        for e in expect {
            assert!(err.contains(e), "{args:?}: message lacks `{e}`:\n{err}");
        }
        assert!(
            !err.contains("panicked") && !err.contains("RUST_BACKTRACE") && !err.contains("internal error"),
            "{err}"
        );
        assert!(
            !dir.join("out/trials").exists() || std::fs::read_dir(dir.join("out/trials")).unwrap().next().is_none(),
            "trained before refusing"
        );
        last = err;
    }
    last
}

#[test]
fn yaml_syntax_error_points_at_line_and_column() {
    let text = tiny_space("s", "[1e9]", 2).replace("kv_pairs: 2", "kv_pairs: [2");
    let err = refused("syntax", &text, &["space.yaml:"]);
    assert!(err.lines().next().unwrap().matches(':').count() >= 3, "no line:column in {err}");
}

#[test]
fn unknown_key_is_named_with_its_position() {
    let text = tiny_space("s", "[1e9]", 2).replace("    depth: 2\n", "    depth: 2\n    dpeth: 3\n");
    refused("unknown-key", &text, &["space.yaml:", "unknown field `dpeth`", "expected one of"]);
}

#[test]
fn unknown_mixer_parameter_is_named() {
    let text = tiny_space("s", "[1e9]", 2).replace("{heads: 2}", "{heads: 2, hedz: 1}");
    refused("unknown-param", &text, &["unknown field `hedz`", "heads"]);
}

#[test]
fn misspelt_mixer_gets_the_closest_names() {
    let text = tiny_space("s", "[1e9]", 2).replace("layout: [attention, swiglu]", "layout: [atention, swiglu]");
    refused("misspelt", &text, &["space.yaml:", "unknown mixer `atention`", "did you mean `attention`"]);
}

#[test]
fn zero_and_negative_budgets_are_refused() {
    refused("zero-budget", &tiny_space("s", "[1e9, 0]", 2), &["space.yaml:", "budget must be positive, got 0"]);
    refused("neg-budget", &tiny_space("s", "[-5e9]", 2), &["budget must be positive, got -5000000000"]);
}

#[test]
fn budget_too_small_for_one_step_says_the_minimum() {
    refused(
        "tiny-budget",
        &tiny_space("s", "[1000]", 2),
        &["budgets[0]", "too small for one training step", "use at least"],
    );
}

#[test]
fn heads_not_dividing_d_model_names_layer_mixer_and_valid_values() {
    let text = tiny_space("s", "[1e9]", 2).replace("{heads: 2}", "{heads: 3}");
    refused("heads", &text, &["layer 0 (attention)", "parameter `heads`", "valid head counts: 1, 2, 4, 8, 16"]);
}

#[test]
fn a_layout_without_a_sequence_mixer_is_refused_unless_allowed() {
    let text = tiny_space("s", "[1e9]", 2).replace("    allow_no_mixing: true\n", "");
    refused("no-mixing", &text, &["candidate `mlp`", "no sequence mixer", "allow_no_mixing"]);
}

#[test]
fn task_settings_out_of_range_are_refused() {
    let text = tiny_space("s", "[1e9]", 2).replace("kv_pairs: 2", "kv_pairs: 9");
    refused("kv", &text, &["tasks[0] (mqar)", "kv_pairs"]);
}

#[test]
fn a_sweep_directory_of_another_space_is_refused() {
    let dir = scratch("other-space");
    let a = write(&dir, "a.yaml", &tiny_space("a", "[1e7]", 1));
    let out = run(&["sweep", a.to_str().unwrap(), "--out", "out"], &dir);
    assert!(out.status.success(), "{}", stderr(&out));
    let b = write(&dir, "b.yaml", &tiny_space("b", "[2e7]", 1));
    let out = run(&["sweep", b.to_str().unwrap(), "--out", "out"], &dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("different space"), "{}", stderr(&out));
    // The same space again needs --resume, and then has nothing to do.
    let out = run(&["sweep", a.to_str().unwrap(), "--out", "out"], &dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--resume"), "{}", stderr(&out));
    let out = run(&["sweep", a.to_str().unwrap(), "--out", "out", "--resume"], &dir);
    assert!(out.status.success());
    assert!(stderr(&out).contains("0 to run"), "{}", stderr(&out));
}

#[test]
fn usage_errors_exit_2() {
    let dir = scratch("usage");
    let out = run(&["sweep"], &dir);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["plan", "does-not-exist.yaml"], &dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("does-not-exist.yaml"));
    let out = run(&["report", "no-such-dir"], &dir);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
