//! Tests of the MQAR task (workbench/src/tasks/mqar.rs).

use std::collections::HashSet;

use super::super::TaskSpec;

use super::*;

fn spec(vocab_size: usize, seq_len: usize, kv_pairs: usize, train_examples: usize) -> MqarSpec {
    MqarSpec { vocab_size, seq_len, kv_pairs, train_examples, test_examples: 30, ..MqarSpec::default() }
}

/// Every training example as `(inputs, targets)`, in index order.
fn train_set(task: &MqarTask) -> Vec<(Vec<i64>, Vec<i64>)> {
    let mut drawer = Drawer::new(&task.spec);
    let l = task.spec.seq_len;
    let draw = |i| {
        let (mut x, mut y) = (vec![0; l], vec![0; l]);
        task.draw_train(&mut drawer, i, &mut x, &mut y);
        (x, y)
    };
    (0..task.spec.train_examples).map(draw).collect()
}

fn rows(batches: &[Batch]) -> Vec<(Vec<i64>, Vec<i64>)> {
    let rows = batches.iter().flat_map(|b| (0..b.batch).map(move |i| b.row(i)));
    rows.map(|(x, y)| (x.to_vec(), y.to_vec())).collect()
}

/// Checks one example against the definition; returns the query slot of each key.
fn check(spec: &MqarSpec, x: &[i64], y: &[i64]) -> Vec<usize> {
    let (v, kv, l) = (spec.vocab_size as i64, spec.kv_pairs, spec.seq_len);
    assert_eq!((x.len(), y.len()), (l, l));
    let keys: Vec<i64> = (0..kv).map(|i| x[2 * i]).collect();
    let values: Vec<i64> = (0..kv).map(|i| x[2 * i + 1]).collect();
    assert!(keys.iter().all(|k| (1..v / 2).contains(k)), "keys {keys:?}");
    assert!(values.iter().all(|x| (v / 2..v).contains(x)), "values {values:?}");
    assert_eq!(keys.iter().collect::<HashSet<_>>().len(), kv, "keys distinct");
    assert_eq!(values.iter().collect::<HashSet<_>>().len(), kv, "values distinct");
    let labelled: Vec<usize> = (0..l).filter(|&p| y[p] != IGNORE).collect();
    assert_eq!(labelled.len(), kv, "one label per key");
    let mut slots = vec![usize::MAX; kv];
    for &p in &labelled {
        assert!(p >= 2 * kv && (p - 2 * kv) % 2 == 0 && p + 2 <= l, "label at non-query position {p}");
        let i = keys.iter().position(|&k| k == x[p]).expect("the query token is a key");
        assert_eq!(slots[i], usize::MAX, "key {} queried twice", keys[i]);
        slots[i] = (p - 2 * kv) / 2;
        assert_eq!(y[p], values[i], "the label is the key's value");
    }
    for p in (2 * kv..l).filter(|p| !labelled.contains(p)) {
        assert!(if spec.random_non_queries { (0..v).contains(&x[p]) } else { x[p] == 0 }, "filler at {p}");
    }
    slots
}

#[test]
fn examples_follow_the_definition() {
    for spec in [MqarSpec::default(), spec(64, 16, 4, 50), spec(64, 21, 3, 50), spec(64, 124, 31, 50)] {
        let task = MqarTask::new(spec.clone(), 3).unwrap();
        let eval = task.eval_set(7);
        assert_eq!(eval.iter().map(Batch::labelled).sum::<usize>(), spec.test_examples * spec.kv_pairs);
        for (x, y) in rows(&[task.train_batch(0, 40), task.train_batch(1, 40)]).iter().chain(&rows(&eval)) {
            check(&spec, x, y);
        }
    }
}

#[test]
fn random_filler_is_random_and_in_range() {
    let spec = MqarSpec { random_non_queries: true, ..spec(64, 64, 4, 50) };
    let mut filler = HashSet::new();
    for (x, y) in rows(&[MqarTask::new(spec.clone(), 1).unwrap().train_batch(0, 50)]) {
        check(&spec, &x, &y);
        filler.extend((8..64).filter(|&p| y[p] == IGNORE).map(|p| x[p]));
    }
    assert!(filler.len() > 60 && filler.contains(&0), "{} distinct filler tokens", filler.len());
}

#[test]
fn deterministic_in_seed_and_step() {
    let tasks: Vec<MqarTask> =
        [9, 9, 10].iter().map(|&seed| MqarTask::new(spec(64, 32, 4, 50), seed).unwrap()).collect();
    let (a, b, c) = (&tasks[0], &tasks[1], &tasks[2]);
    assert_eq!(train_set(a), train_set(b));
    assert_ne!(train_set(a), train_set(c));
    assert_eq!(a.eval_set(8), b.eval_set(8));
    assert_ne!(a.eval_set(8), c.eval_set(8));
    for step in [0, 1, 17, 1_000_000] {
        assert_eq!(a.train_batch(step, 12), b.train_batch(step, 12));
    }
    assert_ne!(a.train_batch(0, 12), a.train_batch(1, 12));
    assert_ne!(a.train_batch(0, 12), c.train_batch(0, 12));
}

#[test]
fn epochs_cover_the_training_set_without_repeats() {
    let task = MqarTask::new(spec(64, 8, 2, 10), 5).unwrap();
    let train = train_set(&task);
    let batches: Vec<Batch> = (0..10).map(|step| task.train_batch(step, 3)).collect();
    assert!(batches.iter().all(|b| (b.batch, b.seq_len, b.inputs.len()) == (3, 8, 24)));
    let visited: Vec<usize> = rows(&batches).iter().map(|row| train.iter().position(|t| t == row).unwrap()).collect();
    for epoch in visited.chunks(10) {
        assert_eq!(epoch.iter().collect::<HashSet<_>>().len(), 10, "epoch {epoch:?}");
    }
    assert_ne!(visited[..10], visited[10..20], "each epoch has its own order");
}

#[test]
fn test_set_never_repeats_a_training_example() {
    // V = 6, kv = 1, L = 4 has only 2 keys x 3 values x 1 slot = 6 distinct examples: collisions are frequent.
    let tiny = MqarSpec { test_examples: 40, ..spec(6, 4, 1, 2) };
    for spec in [tiny.clone(), MqarSpec::default()] {
        let task = MqarTask::new(spec.clone(), 2).unwrap();
        let train: HashSet<Vec<i64>> = train_set(&task).into_iter().map(|(x, _)| x).collect();
        for (x, y) in rows(&task.eval_set(64)) {
            check(&spec, &x, &y);
            assert!(!train.contains(&x), "test example {x:?} is in the training set");
        }
    }
    // With every distinct example in the training set, building fails and says why.
    let err = MqarTask::new(MqarSpec { train_examples: 300, ..tiny }, 2).err().unwrap().to_string();
    assert!(err.contains("test_examples") && err.contains("too few distinct examples"), "{err}");
}

#[test]
fn slot_distribution_follows_the_power_law() {
    // First draws against the exact p(g) = w_g / sum w; slot 0 the most frequent query slot when a < 1.
    for a in [0.01, 1.0, 2.0] {
        let mut drawer = Drawer::new(&MqarSpec { power_a: a, ..MqarSpec::default() });
        let total: f64 = drawer.log_weights.iter().map(|lw| lw.exp()).sum();
        let (mut first, mut any, trials) = ([0usize; 24], [0usize; 24], 20_000);
        let mut rng = stream(0, Stream::MqarTrain, 0);
        for _ in 0..trials {
            drawer.slots(&mut rng);
            first[drawer.slots[0].1] += 1;
            for &(_, g) in &drawer.slots {
                any[g] += 1;
            }
            assert_eq!(drawer.slots.iter().map(|s| s.1).collect::<HashSet<_>>().len(), 8);
        }
        for g in [0, 1, 5, 23] {
            let (seen, expected) = (first[g] as f64 / f64::from(trials), drawer.log_weights[g].exp() / total);
            assert!((seen - expected).abs() < 0.012, "a = {a}, slot {g}: {seen} vs {expected}");
        }
        if a < 1.0 {
            assert!(any[0] == *any.iter().max().unwrap() && any[0] > 2 * any[23], "{any:?}");
        }
    }
    let task = MqarTask::new(MqarSpec::default(), 4).unwrap();
    let mut count = [0usize; 24];
    for (x, y) in rows(&task.eval_set(100)) {
        for g in check(task.spec(), &x, &y) {
            count[g] += 1;
        }
    }
    assert_eq!(count.iter().max(), Some(&count[0]), "{count:?}");
}

#[test]
fn golden_values_are_stable() {
    // Pins the whole derivation (sub-seeds, ChaCha8, draw primitives, layout) for seed 0.
    let spec = MqarSpec { test_examples: 2, ..spec(16, 12, 2, 4) };
    let task = MqarTask::new(spec, 0).unwrap();
    let (train, test) = (task.train_batch(0, 1), task.eval_set(1).remove(0));
    assert_eq!(train.inputs, [1, 12, 4, 8, 4, 0, 1, 0, 0, 0, 0, 0]);
    assert_eq!(train.targets, [-100, -100, -100, -100, 8, -100, 12, -100, -100, -100, -100, -100]);
    assert_eq!(test.inputs, [5, 9, 7, 11, 0, 0, 7, 0, 5, 0, 0, 0]);
    assert_eq!(test.targets, [-100, -100, -100, -100, -100, -100, 11, -100, 9, -100, -100, -100]);
}

#[test]
fn validation_names_the_field() {
    let d = MqarSpec::default;
    let cases = [
        (MqarSpec { kv_pairs: 0, ..d() }, "kv_pairs"),
        (MqarSpec { vocab_size: 8191, ..d() }, "vocab_size"),
        (MqarSpec { vocab_size: 16, ..d() }, "vocab_size"),
        (MqarSpec { seq_len: 31, ..d() }, "seq_len"),
        (MqarSpec { train_examples: 0, ..d() }, "train_examples"),
        (MqarSpec { test_examples: 0, ..d() }, "test_examples"),
        (MqarSpec { power_a: 0.0, ..d() }, "power_a"),
        (MqarSpec { power_a: f64::NAN, ..d() }, "power_a"),
    ];
    for (spec, field) in cases {
        assert!(matches!(spec.validate(), Err(TaskError::Invalid { field: f, .. }) if f == field), "{spec:?}");
    }
    let err = MqarSpec { seq_len: 31, ..d() }.validate().unwrap_err().to_string();
    assert!(err.contains("at least 4 * kv_pairs = 32") && err.contains("kv_pairs = 8"), "{err}");
    assert!(MqarSpec { vocab_size: 18, seq_len: 32, ..d() }.validate().is_ok());
    assert!(matches!(TaskSpec::Mqar(MqarSpec { kv_pairs: 0, ..d() }).build(0), Err(TaskError::Invalid { .. })));
}
