//! Tests common to the six MAD tasks: YAML forms, determinism, train/test disjointness, epochs, validation
//! errors, the protocol's settings, and generating every setting. (Row layouts: `tests_layout.rs`.)

use std::collections::HashSet;

use serde::de::DeserializeOwned;

use super::settings::{BATCH_SIZE, EPOCHS, SEED};
use super::*;
use crate::tasks::{Batch, TaskSpec, IGNORE};

/// A spec with every field at its default but a small training (300) and test (100) set.
pub(super) fn small<S: DeserializeOwned>() -> S {
    serde_json::from_str(r#"{"train_examples": 300, "test_examples": 100}"#).unwrap()
}

/// Builds a MAD task as a concrete [`MadTask`].
pub(super) fn mad_task(spec: &TaskSpec, seed: u64) -> Result<MadTask, TaskError> {
    match spec {
        TaskSpec::MadInContextRecall(s) => s.build(seed),
        TaskSpec::MadFuzzyRecall(s) => s.build(seed),
        TaskSpec::MadNoisyRecall(s) => s.build(seed),
        TaskSpec::MadSelectiveCopying(s) => s.build(seed),
        TaskSpec::MadCompression(s) => s.build(seed),
        TaskSpec::MadMemorization(s) => s.build(seed),
        other => panic!("not a MAD task: {other:?}"),
    }
}

/// Rows as `(inputs, targets)`.
pub(super) type Rows = Vec<(Vec<i64>, Vec<i64>)>;

/// The rows of some batches.
pub(super) fn rows(batches: &[Batch]) -> Rows {
    let rows = batches.iter().flat_map(|b| (0..b.batch).map(move |i| b.row(i)));
    rows.map(|(x, y)| (x.to_vec(), y.to_vec())).collect()
}

/// Every training example as `(inputs, targets)`, in index order.
pub(super) fn train_rows(task: &MadTask) -> Rows {
    let l = task.seq_len();
    let draw = |i| {
        let (mut x, mut y) = (vec![0; l], vec![0; l]);
        task.draw_train(i, &mut x, &mut y);
        (x, y)
    };
    (0..task.train_examples()).map(draw).collect()
}

/// The baseline of each task with a small training and test set.
fn small_baselines() -> Vec<TaskSpec> {
    vec![
        TaskSpec::MadInContextRecall(small()),
        TaskSpec::MadFuzzyRecall(small()),
        TaskSpec::MadNoisyRecall(small()),
        TaskSpec::MadSelectiveCopying(small()),
        TaskSpec::MadCompression(small()),
        TaskSpec::MadMemorization(small()),
    ]
}

#[test]
fn yaml_kinds_default_to_the_baseline_and_reject_unknown_keys() {
    for kind in MadTaskKind::ALL {
        let spec: TaskSpec = serde_json::from_str(&format!(r#"{{"kind": "{}"}}"#, kind.name())).unwrap();
        assert_eq!(spec, kind.baseline());
        assert_eq!((spec.name(), MadTaskKind::of(&spec)), (kind.name(), Some(kind)));
        let text = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<TaskSpec>(&text).unwrap(), spec, "{text}");
        let err = serde_json::from_str::<TaskSpec>(&format!(r#"{{"kind": "{}", "seqlen": 8}}"#, kind.name()));
        assert!(err.unwrap_err().to_string().contains("unknown field `seqlen`"));
        let expected =
            if kind == MadTaskKind::Compression { TaskHead::Compression { positions: 32 } } else { TaskHead::Next };
        assert_eq!(spec.head(), expected);
    }
    let spec: TaskSpec =
        serde_json::from_str(r#"{"kind": "mad_noisy_recall", "frac_noise": 0.6, "multi_query": false}"#).unwrap();
    let TaskSpec::MadNoisyRecall(s) = &spec else { panic!("{spec:?}") };
    assert_eq!((s.vocab_size, s.noise_vocab_size, s.frac_noise, s.multi_query), (32, 16, 0.6, false));
    assert_eq!((spec.vocab_size(), spec.seq_len()), (32, 128));
    assert_eq!(MadTaskKind::of(&TaskSpec::Mqar(Default::default())), None);
}

#[test]
fn baselines_are_the_mad_defaults() {
    let expect = [
        ("mad_in_context_recall", 16, 128, 12_800),
        ("mad_fuzzy_recall", 16, 128, 12_800),
        ("mad_noisy_recall", 32, 128, 12_800),
        ("mad_selective_copying", 16, 256, 12_800),
        ("mad_compression", 16, 32, 12_800),
        ("mad_memorization", 256, 32, 256),
    ];
    for (kind, (name, v, l, n)) in MadTaskKind::ALL.into_iter().zip(expect) {
        let spec = kind.baseline();
        let value = serde_json::to_value(&spec).unwrap();
        assert_eq!((spec.name(), spec.vocab_size(), spec.seq_len()), (name, v, l));
        assert_eq!((value["train_examples"].as_u64(), value["test_examples"].as_u64()), (Some(n), Some(1280)));
    }
    assert_eq!(FuzzyRecallSpec::default().max_key_tokens, 3);
    assert_eq!(SelectiveCopyingSpec::default().num_tokens_to_copy, 16);
    assert!(InContextRecallSpec::default().multi_query && NoisyRecallSpec::default().frac_noise == 0.2);
    assert_eq!((BATCH_SIZE, EPOCHS, SEED), (128, 200, 12345));
}

#[test]
fn same_seed_same_data_other_seed_other_data() {
    for spec in small_baselines() {
        let tasks: Vec<MadTask> = [9, 9, 10].iter().map(|&seed| mad_task(&spec, seed).unwrap()).collect();
        let (a, b, c) = (&tasks[0], &tasks[1], &tasks[2]);
        assert_eq!(train_rows(a), train_rows(b), "{spec:?}");
        assert_ne!(train_rows(a), train_rows(c), "{spec:?}");
        assert_eq!(a.eval_set(32), b.eval_set(32));
        assert_ne!(a.eval_set(32), c.eval_set(32));
        for step in [0, 1, 17, 1_000_000] {
            assert_eq!(a.train_batch(step, 12), b.train_batch(step, 12));
        }
        assert_ne!(a.train_batch(0, 12), a.train_batch(1, 12));
        assert_ne!(a.train_batch(0, 12), c.train_batch(0, 12));
        let first = a.eval_set(7);
        assert_eq!(first.iter().map(|b| b.batch).sum::<usize>(), 100);
        assert!(first.iter().all(|b| b.seq_len == spec.seq_len() && b.inputs.len() == b.batch * b.seq_len));
        assert_eq!((a.name(), a.vocab_size(), a.seq_len()), (spec.name(), spec.vocab_size(), spec.seq_len()));
    }
}

#[test]
fn no_test_example_is_a_training_example() {
    // The baselines at their full size, N = 12,800 (memorization, which overlaps by design, is tested in
    // tests_layout.rs).
    for kind in &MadTaskKind::ALL[..5] {
        let task = mad_task(&kind.baseline(), SEED).unwrap();
        let train: HashSet<Vec<i64>> = train_rows(&task).into_iter().map(|(x, _)| x).collect();
        let test = rows(&task.eval_set(BATCH_SIZE));
        assert_eq!(test.len(), 1280);
        assert!(test.iter().all(|(x, _)| !train.contains(x)), "{kind:?}");
    }
    // Compression with V = 3, L = 3 has only 4 distinct examples: collisions are frequent and must be redrawn.
    let tiny = CompressionSpec { vocab_size: 3, seq_len: 3, train_examples: 3, test_examples: 30 };
    let task = tiny.build(1).unwrap();
    let train: HashSet<Vec<i64>> = train_rows(&task).into_iter().map(|(x, _)| x).collect();
    let test: HashSet<Vec<i64>> = rows(&task.eval_set(8)).into_iter().map(|(x, _)| x).collect();
    assert!(train.is_disjoint(&test) && !test.is_empty(), "{train:?} {test:?}");
    // With every distinct example in the training set, building fails and says why.
    let err = CompressionSpec { train_examples: 100, ..tiny }.build(1).err().unwrap().to_string();
    assert!(err.contains("test_examples") && err.contains("too few distinct examples"), "{err}");
}

#[test]
fn epochs_visit_every_training_example_once() {
    let spec = CompressionSpec { train_examples: 10, test_examples: 2, ..CompressionSpec::default() };
    let task = spec.build(5).unwrap();
    let train = train_rows(&task);
    let batches: Vec<Batch> = (0..10).map(|step| task.train_batch(step, 3)).collect();
    let visited: Vec<usize> = rows(&batches).iter().map(|row| train.iter().position(|t| t == row).unwrap()).collect();
    for epoch in visited.chunks(10) {
        assert_eq!(epoch.iter().collect::<HashSet<_>>().len(), 10, "epoch {epoch:?}");
    }
    assert_ne!(visited[..10], visited[10..20], "each epoch has its own order");
}

#[test]
fn every_setting_is_valid_and_generates() {
    let counts: Vec<usize> = MadTaskKind::ALL.iter().map(|k| k.settings().len()).collect();
    assert_eq!(counts, [11, 11, 14, 13, 11, 6]);
    for kind in MadTaskKind::ALL {
        let settings = kind.settings();
        assert_eq!((settings[0].name.as_str(), &settings[0].spec), ("baseline", &kind.baseline()));
        let names: HashSet<&str> = settings.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names.len(), settings.len(), "unique names");
        let base = serde_json::to_value(kind.baseline()).unwrap();
        for setting in &settings[1..] {
            // Exactly the named field differs from the baseline, and has the named value.
            let value = serde_json::to_value(&setting.spec).unwrap();
            let changed: Vec<&String> =
                value.as_object().unwrap().iter().filter(|(k, v)| base[k.as_str()] != **v).map(|(k, _)| k).collect();
            assert_eq!(changed.len(), 1, "{}: {changed:?}", setting.name);
            assert_eq!(format!("{}={}", changed[0], value[changed[0].as_str()]), setting.name);
        }
        for setting in settings {
            setting.spec.validate().unwrap_or_else(|e| panic!("{}: {e}", setting.name));
            // Every size the protocol asks for generates (with a small N here; the baselines are built at full
            // size in `baselines_generate_in_full`).
            let mut value = serde_json::to_value(&setting.spec).unwrap();
            (value["train_examples"], value["test_examples"]) = (64.into(), 16.into());
            let spec: TaskSpec = serde_json::from_value(value).unwrap();
            let task = mad_task(&spec, SEED).unwrap();
            assert!(task.train_batch(3, 8).labelled() > 0 && task.eval_set(16)[0].labelled() > 0, "{}", setting.name);
        }
    }
}

#[test]
fn baselines_generate_in_full() {
    // Each baseline at its protocol size: fingerprint the training set, draw the test set, draw one epoch.
    for kind in MadTaskKind::ALL {
        let task = kind.baseline().build(SEED).unwrap();
        let eval = task.eval_set(BATCH_SIZE);
        assert_eq!(eval.iter().map(|b| b.batch).sum::<usize>(), 1280);
        assert!(eval.iter().all(|b| b.labelled() > 0), "{kind:?}");
        let n = serde_json::to_value(kind.baseline()).unwrap()["train_examples"].as_u64().unwrap();
        for step in 0..n.div_ceil(BATCH_SIZE as u64) {
            let batch = task.train_batch(step, BATCH_SIZE);
            let v = task.vocab_size() as i64;
            assert!(batch.inputs.iter().all(|t| (0..v).contains(t)), "{kind:?}");
            assert!(batch.targets.iter().all(|&t| t == IGNORE || (0..v).contains(&t)), "{kind:?}");
        }
    }
}

#[test]
fn validation_names_the_field() {
    let icr = InContextRecallSpec::default;
    let noisy = NoisyRecallSpec::default;
    let fuzzy = FuzzyRecallSpec::default;
    let copy = SelectiveCopyingSpec::default;
    let comp = CompressionSpec::default;
    let memo = MemorizationSpec::default;
    let cases: Vec<(TaskSpec, &str, &str)> = vec![
        (TaskSpec::MadInContextRecall(InContextRecallSpec { seq_len: 127, ..icr() }), "seq_len", "even"),
        (TaskSpec::MadInContextRecall(InContextRecallSpec { seq_len: 2, ..icr() }), "seq_len", "at least 4"),
        (TaskSpec::MadInContextRecall(InContextRecallSpec { vocab_size: 1, ..icr() }), "vocab_size", "at least 2"),
        (
            TaskSpec::MadInContextRecall(InContextRecallSpec { vocab_size: 2, multi_query: false, ..icr() }),
            "vocab_size",
            "copy token",
        ),
        (TaskSpec::MadInContextRecall(InContextRecallSpec { train_examples: 0, ..icr() }), "train_examples", "empty"),
        (TaskSpec::MadInContextRecall(InContextRecallSpec { test_examples: 0, ..icr() }), "test_examples", "empty"),
        (TaskSpec::MadNoisyRecall(NoisyRecallSpec { vocab_size: 17, ..noisy() }), "vocab_size", "at least 18"),
        (
            TaskSpec::MadNoisyRecall(NoisyRecallSpec { noise_vocab_size: 0, ..noisy() }),
            "noise_vocab_size",
            "at least 1",
        ),
        (TaskSpec::MadNoisyRecall(NoisyRecallSpec { frac_noise: 1.0, ..noisy() }), "frac_noise", "[0, 1)"),
        (TaskSpec::MadNoisyRecall(NoisyRecallSpec { frac_noise: f64::NAN, ..noisy() }), "frac_noise", "[0, 1)"),
        (TaskSpec::MadFuzzyRecall(FuzzyRecallSpec { vocab_size: 6, ..fuzzy() }), "vocab_size", "at least 7"),
        (TaskSpec::MadFuzzyRecall(FuzzyRecallSpec { seq_len: 10, ..fuzzy() }), "seq_len", "at least 11"),
        (TaskSpec::MadFuzzyRecall(FuzzyRecallSpec { seq_len: 11, multi_query: false, ..fuzzy() }), "seq_len", "12"),
        (TaskSpec::MadFuzzyRecall(FuzzyRecallSpec { max_key_tokens: 0, ..fuzzy() }), "max_key_tokens", "1..=8"),
        (TaskSpec::MadFuzzyRecall(FuzzyRecallSpec { max_value_tokens: 9, ..fuzzy() }), "max_value_tokens", "1..=8"),
        (
            TaskSpec::MadSelectiveCopying(SelectiveCopyingSpec { num_tokens_to_copy: 128, ..copy() }),
            "seq_len",
            "at least 258",
        ),
        (
            TaskSpec::MadSelectiveCopying(SelectiveCopyingSpec { num_tokens_to_copy: 0, ..copy() }),
            "num_tokens_to_copy",
            "at least 1",
        ),
        (TaskSpec::MadSelectiveCopying(SelectiveCopyingSpec { vocab_size: 2, ..copy() }), "vocab_size", "at least 3"),
        (TaskSpec::MadCompression(CompressionSpec { vocab_size: 2, ..comp() }), "vocab_size", "at least 3"),
        (TaskSpec::MadCompression(CompressionSpec { seq_len: 1, ..comp() }), "seq_len", "at least 2"),
        (TaskSpec::MadMemorization(MemorizationSpec { seq_len: 31, ..memo() }), "seq_len", "even"),
        (TaskSpec::MadMemorization(MemorizationSpec { vocab_size: 2, ..memo() }), "vocab_size", "at least 3"),
        (TaskSpec::MadMemorization(MemorizationSpec { train_examples: 0, ..memo() }), "train_examples", "empty"),
    ];
    for (spec, field, says) in cases {
        let err = spec.validate().unwrap_err();
        assert!(matches!(&err, TaskError::Invalid { field: f, .. } if f == field), "{spec:?}: {err}");
        assert!(err.to_string().contains(says), "{spec:?}: {err}");
        assert!(matches!(spec.build(0), Err(TaskError::Invalid { .. })), "{spec:?}");
    }
    // The boundary cases are valid.
    let ok = [
        TaskSpec::MadSelectiveCopying(SelectiveCopyingSpec { seq_len: 34, ..copy() }),
        TaskSpec::MadFuzzyRecall(FuzzyRecallSpec { vocab_size: 7, seq_len: 11, ..fuzzy() }),
        TaskSpec::MadNoisyRecall(NoisyRecallSpec { vocab_size: 18, frac_noise: 0.0, ..noisy() }),
    ];
    for spec in ok {
        spec.validate().unwrap_or_else(|e| panic!("{spec:?}: {e}"));
    }
}

#[test]
fn golden_values_are_stable() {
    // Pins the whole derivation (sub-seeds, ChaCha8, draw primitives, layouts) for seed 0: the first training
    // example and the first test example, each as (inputs, targets).
    let first = |spec: TaskSpec| {
        let task = mad_task(&spec, 0).unwrap();
        (train_rows(&task).remove(0), rows(&task.eval_set(1)).remove(0))
    };
    const I: i64 = IGNORE;
    // Content [0, 4), blank 4, copy 5; the targets are the content tokens in order.
    let copy = SelectiveCopyingSpec { vocab_size: 6, seq_len: 8, num_tokens_to_copy: 2, ..small() };
    let (train, test) = first(TaskSpec::MadSelectiveCopying(copy));
    assert_eq!(train, (vec![4, 4, 0, 4, 1, 5, 4, 4], vec![I, I, I, I, I, I, 0, 1]));
    assert_eq!(test, (vec![4, 4, 4, 0, 2, 5, 4, 4], vec![I, I, I, I, I, I, 0, 2]));
    // Content [0, 4), compression token 4.
    let comp = CompressionSpec { vocab_size: 5, seq_len: 6, ..small() };
    let (train, test) = first(TaskSpec::MadCompression(comp));
    assert_eq!(train, (vec![0, 1, 1, 2, 1, 4], vec![0, 1, 1, 2, 1, I]));
    assert_eq!(test, (vec![3, 0, 1, 1, 0, 4], vec![3, 0, 1, 1, 0, I]));
    // Keys [0, 3), values [3, 6); train: every next token; test: the values of keys seen before.
    let icr = InContextRecallSpec { vocab_size: 6, seq_len: 8, ..small() };
    let (train, test) = first(TaskSpec::MadInContextRecall(icr));
    assert_eq!(train, (vec![0, 4, 0, 4, 2, 4, 0, 4], vec![4, 0, 4, 2, 4, 0, 4, I]));
    assert_eq!(test, (vec![0, 4, 2, 3, 2, 3, 2, 3], vec![I, I, I, I, 3, I, 3, I]));
}
