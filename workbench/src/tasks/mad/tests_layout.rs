//! Tests that every MAD example follows its definition: each row is parsed back into its parts, and the
//! targets are recomputed from the parse and compared position by position, so a target is where the
//! definition puts it and nowhere else. Also checks token ranges and the distributions' key facts.

use std::collections::{HashMap, HashSet};

use super::tests::{mad_task, rows, small, train_rows, Rows};
use super::*;
use crate::tasks::{TaskSpec, IGNORE};

/// Checks `y` against the expected targets, naming the first wrong position.
fn same_targets(y: &[i64], want: impl Fn(usize) -> i64) {
    for (i, &t) in y.iter().enumerate() {
        assert_eq!(t, want(i), "target at position {i} of {y:?}");
    }
}

/// Checks an in-context or noisy recall row; returns the number of noise slots.
fn check_pair_recall(v: usize, l: usize, mq: bool, z: usize, x: &[i64], y: &[i64], split: Split) -> usize {
    let c = (v - z - usize::from(!mq)) as i64;
    let (keys, values, noise, copy) = (0..c / 2, c / 2..c, c..c + z as i64, v as i64 - 1);
    assert!(x.iter().all(|t| (0..v as i64).contains(t)), "inputs in range: {x:?}");
    // The stream: the row, plus (single-query) the final value, which is the last target in both splits.
    let mut s = x.to_vec();
    if !mq {
        s.push(y[l - 1]);
    }
    let (mut map, mut labels, mut noise_slots) = (HashMap::new(), vec![IGNORE; s.len()], 0);
    for p in 0..(l - 2) / 2 {
        let (a, b) = (s[2 * p], s[2 * p + 1]);
        if noise.contains(&a) {
            assert!(noise.contains(&b), "noise comes in pairs: {s:?}");
            noise_slots += 1;
            continue;
        }
        assert!(keys.contains(&a) && values.contains(&b), "slot {p} = ({a}, {b}) of {s:?}");
        let repeated = map.contains_key(&a);
        assert_eq!(*map.entry(a).or_insert(b), b, "the key->value map is fixed within a sequence: {s:?}");
        if repeated && mq {
            labels[2 * p + 1] = b;
        }
    }
    assert!(noise_slots < (l - 2) / 2, "at least one real pair: {s:?}");
    let f = if mq { l - 2 } else { l - 1 };
    assert_eq!(s.iter().filter(|&&t| t == copy && !mq).count(), usize::from(!mq), "{s:?}");
    assert!(mq || s[l - 2] == copy, "copy token before the final query: {s:?}");
    assert_eq!(map.get(&s[f]), Some(&s[f + 1]), "the final query's key appeared, with this value: {s:?}");
    labels[f + 1] = s[f + 1];
    same_targets(y, |i| match (s.get(i + 1), split) {
        (None, _) => IGNORE,
        (Some(t), Split::Train) => {
            if noise.contains(t) {
                IGNORE
            } else {
                *t
            }
        }
        (Some(_), Split::Test) => labels[i + 1],
    });
    noise_slots
}

/// Checks a fuzzy recall row; returns (pads, key lengths in the context).
fn check_fuzzy(spec: &FuzzyRecallSpec, x: &[i64], y: &[i64], split: Split) -> (usize, Vec<usize>) {
    let (v, l, mq) = (spec.vocab_size as i64, spec.seq_len, spec.multi_query);
    let c = v - 1 - i64::from(!mq);
    let (pad, copy) = (c, v - 1);
    let (is_key, is_value) = (|t: i64| (0..c / 2).contains(&t), |t: i64| (c / 2..c).contains(&t));
    assert!(x.iter().all(|t| (0..v).contains(t)), "inputs in range: {x:?}");
    let mut s = x.to_vec();
    s.push(y[l - 1]); // the final value's last token, labelled in both splits
    let pads = s.iter().take_while(|&&t| t == pad).count();
    assert!(pads < spec.max_key_tokens + spec.max_value_tokens, "{pads} pads: {s:?}");
    let (mut pairs, mut copy_at, mut i) = (Vec::new(), None, pads);
    while i < s.len() {
        if !mq && s[i] == copy && copy_at.is_none() {
            (copy_at, i) = (Some(i), i + 1);
            continue;
        }
        let k = i..i + s[i..].iter().take_while(|&&t| is_key(t)).count();
        let val = k.end..k.end + s[k.end..].iter().take_while(|&&t| is_value(t)).count();
        assert!(!k.is_empty() && !val.is_empty(), "a key motif then a value motif at {i}: {s:?}");
        i = val.end;
        pairs.push((k, val));
    }
    let last = pairs.len() - 1;
    assert!(mq || copy_at == Some(pairs[last].0.start - 1), "copy token right before the final query: {s:?}");
    let (mut map, mut labels) = (HashMap::new(), vec![IGNORE; s.len()]);
    for (p, (k, val)) in pairs.iter().enumerate() {
        let (key, value) = (&s[k.clone()], &s[val.clone()]);
        let key_lens =
            if split == Split::Test { spec.max_key_tokens..=spec.max_key_tokens } else { 1..=spec.max_key_tokens };
        assert!(key_lens.contains(&key.len()) && value.len() <= spec.max_value_tokens, "pair {p}: {s:?}");
        for motif in [key, value] {
            assert_eq!(motif.iter().collect::<HashSet<_>>().len(), motif.len(), "distinct tokens in {motif:?}");
        }
        let repeated = map.contains_key(key);
        assert_eq!(*map.entry(key).or_insert(value), value, "the key->value map is fixed: {s:?}");
        if p == last {
            assert!(repeated, "the final query's key appeared in the context: {s:?}");
        }
        if p == last || (repeated && mq) {
            labels[val.clone()].copy_from_slice(value);
        }
    }
    same_targets(y, |i| if split == Split::Train { s[i + 1] } else { labels[i + 1] });
    (pads, pairs[..last].iter().map(|(k, _)| k.len()).collect())
}

/// Checks a selective-copying row.
fn check_copying(spec: &SelectiveCopyingSpec, x: &[i64], y: &[i64]) {
    let (v, l, n) = (spec.vocab_size as i64, spec.seq_len, spec.num_tokens_to_copy);
    let (blank, copy) = (v - 2, v - 1);
    let region = &x[..l - n - 1];
    let content: Vec<i64> = region.iter().copied().filter(|&t| t != blank).collect();
    assert!(content.iter().all(|t| (0..v - 2).contains(t)), "content tokens in range: {x:?}");
    assert_eq!(content.len(), n, "{n} content tokens among {} blanks: {x:?}", spec.blanks());
    assert_ne!(region[region.len() - 1], blank, "the region ends with the last content token (as the reference)");
    assert_eq!(x[l - n - 1], copy, "the copy token: {x:?}");
    assert!(x[l - n..].iter().all(|&t| t == blank), "blanks after the copy token: {x:?}");
    same_targets(y, |i| if i < l - n { IGNORE } else { content[i - (l - n)] });
}

/// Checks a compression row.
fn check_compression(spec: &CompressionSpec, x: &[i64], y: &[i64]) {
    let (v, l) = (spec.vocab_size as i64, spec.seq_len);
    assert!(x[..l - 1].iter().all(|t| (0..v - 1).contains(t)), "content tokens in range: {x:?}");
    assert_eq!(x[l - 1], v - 1, "the compression token ends the row: {x:?}");
    same_targets(y, |i| if i < l - 1 { x[i] } else { IGNORE });
}

/// Checks a memorization row against (and adds it to) the global map `facts`.
fn check_memorization(spec: &MemorizationSpec, x: &[i64], y: &[i64], facts: &mut HashMap<i64, i64>) {
    let c = spec.vocab_size as i64 - 1;
    for (p, (pair, label)) in x.chunks(2).zip(y.chunks(2)).enumerate() {
        assert!((0..c / 2).contains(&pair[0]) && pair[1] == c, "pair {p} is (key, insert): {x:?}");
        assert!(label[0] == IGNORE && (c / 2..c).contains(&label[1]), "pair {p}: only the insert is labelled");
        assert_eq!(*facts.entry(pair[0]).or_insert(label[1]), label[1], "one global map: key {}", pair[0]);
    }
}

/// Rows of a task's first 200 training examples and its whole test set.
fn both(task: &MadTask) -> [(Split, Rows); 2] {
    let mut train = train_rows(task);
    train.truncate(200);
    [(Split::Train, train), (Split::Test, rows(&task.eval_set(64)))]
}

#[test]
fn pair_recall_rows_follow_the_definition() {
    let icr = |v, l, mq| InContextRecallSpec { vocab_size: v, seq_len: l, multi_query: mq, ..small() };
    let noisy = |v, l, mq, f| NoisyRecallSpec { vocab_size: v, seq_len: l, multi_query: mq, frac_noise: f, ..small() };
    // The two tiny settings have only a few distinct examples: a small training set leaves some for testing.
    let tiny = |s: InContextRecallSpec| InContextRecallSpec { train_examples: 2, test_examples: 3, ..s };
    for s in
        [icr(16, 128, true), icr(16, 128, false), tiny(icr(4, 4, true)), tiny(icr(5, 6, false)), icr(128, 256, true)]
    {
        for (split, rows) in both(&mad_task(&TaskSpec::MadInContextRecall(s.clone()), 1).unwrap()) {
            for (x, y) in &rows {
                assert_eq!(check_pair_recall(s.vocab_size, s.seq_len, s.multi_query, 0, x, y, split), 0);
            }
        }
    }
    for s in [noisy(32, 128, true, 0.2), noisy(33, 128, false, 0.8), noisy(144, 64, true, 0.0), noisy(19, 8, true, 0.6)]
    {
        let (mut noise, mut slots) = (0, 0);
        for (split, rows) in both(&mad_task(&TaskSpec::MadNoisyRecall(s.clone()), 2).unwrap()) {
            for (x, y) in &rows {
                noise += check_pair_recall(s.vocab_size, s.seq_len, s.multi_query, s.noise_vocab_size, x, y, split);
                slots += s.seq_len / 2 - 1;
            }
        }
        // Slot `keep` is never noise: the expected share is frac_noise * (slots - 1) / slots.
        let expected = s.frac_noise * (1.0 - 2.0 / (s.seq_len as f64 - 2.0));
        let seen = noise as f64 / slots as f64;
        let tolerance = 4.0 * (expected * (1.0 - expected) / slots as f64).sqrt() + 1e-12;
        assert!((seen - expected).abs() <= tolerance, "frac_noise {}: {seen} vs {expected}", s.frac_noise);
    }
}

#[test]
fn recall_test_targets_are_the_values_of_seen_keys() {
    // At the baseline (8 keys, 63 context pairs) nearly every value is a repeat: about 56 labels per row in
    // multi-query mode, exactly 1 in single-query mode; in training every position but the last is labelled.
    let spec = TaskSpec::MadInContextRecall(small());
    let task = mad_task(&spec, 3).unwrap();
    let labelled: Vec<usize> = task
        .eval_set(1280)
        .iter()
        .flat_map(|b| (0..b.batch).map(|i| b.row(i).1.iter().filter(|&&t| t != IGNORE).count()))
        .collect();
    let mean = labelled.iter().sum::<usize>() as f64 / labelled.len() as f64;
    assert!((52.0..60.0).contains(&mean), "{mean} labels per test row");
    assert!(train_rows(&task).iter().all(|(_, y)| y[..127].iter().all(|&t| t != IGNORE) && y[127] == IGNORE));
    let single = TaskSpec::MadInContextRecall(InContextRecallSpec { multi_query: false, ..small() });
    let task = mad_task(&single, 3).unwrap();
    assert!(rows(&task.eval_set(64)).iter().all(|(_, y)| y.iter().filter(|&&t| t != IGNORE).count() == 1));
}

#[test]
fn fuzzy_rows_follow_the_definition() {
    let fuzzy = |v, l, mq, k, val| {
        let spec = FuzzyRecallSpec { vocab_size: v, seq_len: l, multi_query: mq, ..small() };
        FuzzyRecallSpec { max_key_tokens: k, max_value_tokens: val, ..spec }
    };
    for spec in [
        fuzzy(16, 128, true, 3, 3),
        fuzzy(16, 128, false, 3, 3),
        fuzzy(7, 11, true, 3, 3),
        fuzzy(8, 12, false, 3, 3),
        fuzzy(128, 512, true, 3, 3),
        fuzzy(10, 20, true, 1, 4),
        fuzzy(12, 20, true, 5, 1),
    ] {
        let task = mad_task(&TaskSpec::MadFuzzyRecall(spec.clone()), 4).unwrap();
        let (mut key_lens, mut pads) = (HashSet::new(), HashSet::new());
        for (split, rows) in both(&task) {
            for (x, y) in &rows {
                let (p, lens) = check_fuzzy(&spec, x, y, split);
                pads.insert(p);
                key_lens.extend(lens);
            }
        }
        assert_eq!(key_lens, (1..=spec.max_key_tokens).collect(), "{spec:?}");
        assert!(pads.len() > 1, "pads vary: {pads:?}");
    }
}

#[test]
fn copying_compression_and_memorization_rows_follow_the_definition() {
    // (4, 6, 2) has only 2 * 4 * 4 distinct examples: a training set of 3 leaves some for testing.
    for (v, l, n, train) in [(16, 256, 16, 300), (4, 6, 2, 3), (128, 1024, 96, 300), (16, 256, 96, 300)] {
        let spec =
            SelectiveCopyingSpec { vocab_size: v, seq_len: l, num_tokens_to_copy: n, train_examples: train, ..small() };
        let task = mad_task(&TaskSpec::MadSelectiveCopying(spec.clone()), 5).unwrap();
        let mut first_blanks = HashSet::new();
        for (x, y) in both(&task).iter().flat_map(|(_, rows)| rows) {
            check_copying(&spec, x, y);
            first_blanks.insert(x.iter().take_while(|&&t| t == v as i64 - 2).count());
        }
        assert!(l < 8 || first_blanks.len() > 2, "blank positions vary: {first_blanks:?}");
    }
    // (3, 2) has 2 distinct examples, one for training, one for testing.
    for (v, l, train) in [(16, 32, 300), (3, 2, 1), (128, 256, 300)] {
        let spec = CompressionSpec { vocab_size: v, seq_len: l, train_examples: train, ..small() };
        let task = mad_task(&TaskSpec::MadCompression(spec.clone()), 6).unwrap();
        assert_eq!(task.head(), TaskHead::Compression { positions: l });
        for (x, y) in both(&task).iter().flat_map(|(_, rows)| rows) {
            check_compression(&spec, x, y);
        }
    }
    for v in [256, 3, 8192] {
        let spec = MemorizationSpec { vocab_size: v, ..MemorizationSpec::default() };
        let task = mad_task(&TaskSpec::MadMemorization(spec.clone()), 7).unwrap();
        let mut facts = HashMap::new();
        for (x, y) in both(&task).iter().flat_map(|(_, rows)| rows) {
            check_memorization(&spec, x, y, &mut facts);
        }
        let values: HashSet<_> = facts.values().collect();
        assert_eq!(values.len(), facts.len(), "distinct keys have distinct values");
    }
}

#[test]
fn memorization_tests_the_trained_facts() {
    // The test set overlaps the training set by design: every fact it asks about is the training map's, and at
    // the baseline every key it asks about was trained on.
    let task = mad_task(&MadTaskKind::Memorization.baseline(), 8).unwrap();
    let spec = MemorizationSpec::default();
    let mut facts = HashMap::new();
    for (x, y) in train_rows(&task) {
        check_memorization(&spec, &x, &y, &mut facts);
    }
    let trained = facts.clone();
    for (x, y) in rows(&task.eval_set(128)) {
        check_memorization(&spec, &x, &y, &mut facts);
    }
    assert_eq!(facts, trained, "no test key outside the training set at V = 256");
    assert!(task.train_hashes.is_empty(), "no disjointness check for memorization");
}
