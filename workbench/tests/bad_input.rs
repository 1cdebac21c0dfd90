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

/// A space whose one task is `task` (a YAML flow map), for the data cases below.
fn data_space(task: &str) -> String {
    format!(
        "name: d\ntasks:\n  - {task}\nbudgets: [1e9]\ncandidates:\n  - name: t\n    layout: [attention, swiglu]\n    \
         depth: 2\n    d_model: 16\n    mixers: {{attention: {{heads: 2}}}}\n"
    )
}

#[test]
fn a_token_file_of_the_wrong_width_is_refused_naming_it() {
    let data = scratch("odd-tokens-data");
    let file = write(&data, "odd.bin", &"x".repeat(1001));
    let task = format!("{{kind: tokens, path: {}, dtype: uint16, vocab_size: 256, seq_len: 8}}", file.display());
    refused(
        "odd-tokens",
        &data_space(&task),
        &["tasks[0] (tokens)", "odd.bin", "1001 bytes, is not a multiple of the token width (2 bytes"],
    );
}

#[test]
fn token_ids_beyond_the_vocabulary_are_refused_naming_the_file() {
    let data = scratch("big-ids-data");
    // 'x' bytes read as uint16 are 0x7878 = 30840, beyond a vocabulary of 256.
    let file = write(&data, "ids.bin", &"x".repeat(4000));
    let task = format!("{{kind: tokens, path: {}, dtype: uint16, vocab_size: 256, seq_len: 8}}", file.display());
    refused(
        "big-ids",
        &data_space(&task),
        &["tasks[0] (tokens)", "ids.bin", "token id 30840", "beyond the vocabulary"],
    );
}

#[test]
fn a_tokenizer_that_does_not_parse_is_refused_naming_it() {
    let data = scratch("bad-tokenizer-data");
    let tok = write(&data, "tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": 3}}");
    let text = write(&data, "a.txt", "hello\n");
    let task = format!(
        "{{kind: text, paths: [{}], tokenizer: {}, vocab_size: 100, seq_len: 8}}",
        text.display(),
        tok.display()
    );
    refused("bad-tokenizer", &data_space(&task), &["tasks[0] (text)", "tokenizer.json", "does not parse"]);
    // And `data prepare` says the same, exit 2.
    let out = run(&["data", "prepare", "--tokenizer", "tokenizer.json", "--input", "a.txt", "--out", "o.bin"], &data);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("tokenizer.json: does not parse"), "{}", stderr(&out));
    assert!(!data.join("o.bin").exists());
}

#[test]
fn a_missing_token_field_points_at_its_line() {
    refused(
        "tokens-no-dtype",
        &data_space("{kind: tokens, path: x.bin, vocab_size: 256}"),
        &["space.yaml:3", "missing field `dtype`"],
    );
}
