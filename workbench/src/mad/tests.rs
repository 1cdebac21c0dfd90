//! The MAD plan without training: what is run, with which budget and optimiser, what differs from the protocol,
//! how the trials' results become scores, and every input error found before a trial starts.

use super::run::load;
use super::*;
use crate::tasks::mad::settings::{self, MadTaskKind};
use crate::tasks::TaskSpec;
use operators::HeadSpec;
use reports::{Status, TrialResult};
use std::path::Path;

fn space_text(mad: &str) -> String {
    format!(
        "name: madtest
candidates:
  - name: transformer
    layout: [attention, swiglu]
    depth: 2
    d_model: 128
  - name: conv
    layout: [base_conv, swiglu]
    depth: 2
    d_model: 128
{mad}"
    )
}

fn plan_of(text: &str, o: &MadOverrides) -> Result<MadPlan, crate::error::UsageError> {
    let dir = std::env::temp_dir().join(format!("mad-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // One file per call: tests run on parallel threads, and two texts may have the same length.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("space-{n}.yaml"));
    std::fs::write(&path, text).unwrap();
    run::prepare(&path, o).map(|(_, p)| p)
}

#[test]
fn the_published_protocol_is_every_setting_times_the_grid() {
    let p = plan_of(&space_text(""), &MadOverrides::default()).unwrap();
    let settings: usize = MadTaskKind::ALL.iter().map(|k| k.settings().len()).sum();
    assert_eq!(settings, 66);
    assert_eq!(p.trials.len(), 2 * 66 * 6);
    assert!(p.results.protocol.deviations.is_empty(), "{:?}", p.results.protocol.deviations);
    assert_eq!(p.results.protocol.metric, "macro_accuracy");
    let c = &p.results.candidates[1];
    assert_eq!((c.arch.as_str(), c.label.as_str(), c.tasks.len()), ("conv", "conv d128 x2", 6));
    assert_eq!(c.tasks[2].settings.len(), 14, "noisy recall");
    assert_eq!(c.tasks[2].settings[0].cells.len(), 6);
    assert_eq!(c.tasks[2].settings[13].setting, "frac_noise=0.8");
    // Every trial of the plan is named by exactly one cell.
    let mut named: Vec<String> = p
        .results
        .candidates
        .iter()
        .flat_map(|c| {
            c.tasks.iter().flat_map(|t| t.settings.iter().flat_map(|s| s.cells.iter().map(|x| x.trial_id.clone())))
        })
        .collect();
    named.sort();
    let mut ids: Vec<String> = p.trials.iter().map(|t| t.id()).collect();
    ids.sort();
    assert_eq!(named, ids);
}

#[test]
fn a_trial_trains_its_epochs_with_the_protocols_optimiser() {
    let o = MadOverrides { baseline_only: true, epochs: Some(3), train_fraction: Some(0.1) };
    let p = plan_of(&space_text(""), &o).unwrap();
    assert_eq!(p.trials.len(), 2 * 6 * 6);
    for t in &p.trials {
        let kind = MadTaskKind::of(&t.task).unwrap();
        let n = match &t.task {
            TaskSpec::MadMemorization(s) => {
                assert_eq!(s.train_examples, 256, "memorization keeps its facts");
                s.train_examples
            }
            TaskSpec::MadInContextRecall(s) => {
                assert_eq!((s.train_examples, s.test_examples), (1280, 1280));
                s.train_examples
            }
            TaskSpec::MadCompression(s) => s.train_examples,
            TaskSpec::MadFuzzyRecall(s) => s.train_examples,
            TaskSpec::MadNoisyRecall(s) => s.train_examples,
            TaskSpec::MadSelectiveCopying(s) => s.train_examples,
            _ => unreachable!(),
        };
        assert_eq!(t.steps(), (3 * n as u64).div_ceil(128), "{}", kind.name());
        assert!(t.budget_flops > t.steps() as f64 * t.flops_per_step());
        assert!(t.budget_flops < (t.steps() + 1) as f64 * t.flops_per_step());
        assert_eq!(t.seed, settings::SEED);
        assert_eq!(t.train.batch_size, 128);
        let o = &t.optim;
        assert_eq!((o.beta1, o.beta2, o.warmup, o.grad_clip), (0.9, 0.98, 0.0, 0.0));
        assert!((o.lr * o.min_lr_ratio - settings::FINAL_LR).abs() < 1e-18, "cosine ends at 1e-6");
        assert!(settings::LEARNING_RATES.contains(&o.lr) && settings::WEIGHT_DECAYS.contains(&o.weight_decay));
        let head = if kind == MadTaskKind::Compression {
            HeadSpec::Compression { positions: t.task.seq_len() as i64 }
        } else {
            HeadSpec::Next
        };
        assert_eq!(t.stack.head, head);
        assert_eq!(t.stack.vocab, t.task.vocab_size() as i64);
    }
    let dev = p.results.protocol.deviations.join("\n");
    for needle in ["3 epochs", "baseline settings only: 6 of the 66", "scaled to 0.1"] {
        assert!(dev.contains(needle), "{dev}");
    }
}

#[test]
fn the_section_narrows_the_run_and_says_so() {
    let mad = "mad:
  tasks: [mad_compression, mad_memorization]
  candidates: [conv]
  d_model: 32
  learning_rates: [1.0e-3]
  weight_decays: [0.1]
  epochs: 1
  baseline_only: true
";
    let p = plan_of(&space_text(mad), &MadOverrides::default()).unwrap();
    assert_eq!(p.trials.len(), 2);
    assert_eq!(p.results.candidates.len(), 1);
    assert_eq!(p.results.candidates[0].label, "conv d32 x2");
    let dev = p.results.protocol.deviations.join("\n");
    for needle in ["2 of the six tasks", "width (d_model) 32", "grid of learning rates [0.001]", "1 epoch per trial"] {
        assert!(dev.contains(needle), "{dev}");
    }
    // The command line overrides the section.
    let o = MadOverrides { epochs: Some(2), ..Default::default() };
    let p = plan_of(&space_text(mad), &o).unwrap();
    assert_eq!(p.results.protocol.epochs, 2);
}

#[test]
fn results_of_the_plans_trials_become_scores() {
    let mad = "mad: {tasks: [mad_compression, mad_memorization], baseline_only: true, weight_decays: [0.0]}\n";
    let mut p = plan_of(&space_text(mad), &MadOverrides::default()).unwrap();
    // Accuracy by learning rate: 1e-4 -> 0.2, 5e-4 -> 0.6, 1e-3 -> 0.4 on compression, half that on memorization.
    let results: Vec<TrialResult> = p
        .trials
        .iter()
        .map(|t| {
            let acc = [(1e-4, 0.2), (5e-4, 0.6), (1e-3, 0.4)].iter().find(|(lr, _)| *lr == t.optim.lr).unwrap().1;
            let acc = if t.task.name() == "mad_memorization" { acc / 2.0 } else { acc };
            let mut r = crate::train::empty_result(t, &t.id(), "cpu");
            r.status = Status::Completed;
            r.final_metrics.insert(METRIC.into(), acc);
            r
        })
        .collect();
    p.results.update_from(&results);
    for c in &p.results.candidates {
        let best = c.tasks[0].settings[0].best.as_ref().unwrap();
        assert_eq!((best.accuracy, best.lr), (0.6, 5e-4));
        assert_eq!(c.tasks[1].score, Some(0.3));
        assert!((c.score.unwrap() - 0.45).abs() < 1e-12);
    }
}

/// The error for `mad` text, which must name the file and line and contain every fragment.
fn refused(mad: &str, o: &MadOverrides, expect: &[&str]) {
    let err = plan_of(&space_text(mad), o).unwrap_err().to_string();
    for e in expect {
        assert!(err.contains(e), "lacks {e:?}: {err}");
    }
    assert!(err.contains(".yaml:"), "no file:line in {err}");
}

#[test]
fn bad_input_is_refused_with_its_line() {
    let none = MadOverrides::default();
    refused(
        "mad: {candidates: [transfomer]}\n",
        &none,
        &[":11:", "unknown candidate `transfomer`", "did you mean `transformer`"],
    );
    refused("mad:\n  epochs: 3\n  train_fraction: 0\n", &none, &[":13:", "mad.train_fraction", "(0, 1]"]);
    refused("", &MadOverrides { train_fraction: Some(1.5), ..none.clone() }, &["mad.train_fraction"]);
    refused(
        "mad: {tasks: [mad_compresion]}\n",
        &none,
        &["unknown MAD task `mad_compresion`", "did you mean `mad_compression`"],
    );
    refused("mad: {tasks: [mad_compression, mad_compression]}\n", &none, &["listed twice"]);
    refused("mad: {test_examples: 0}\n", &none, &["mad.test_examples"]);
    refused("mad: {learning_rates: [0.0]}\n", &none, &["mad.learning_rates"]);
    refused(
        "mad: {d_model: 7, candidates: [conv], tasks: [mad_compression]}\n",
        &none,
        &["mad.d_model", "even d_model"],
    );
    refused("mad: {d_model: 7}\n", &none, &["not divisible by heads", "mad.d_model's"]);
    refused("mad: {epoch: 3}\n", &none, &["unknown field `epoch`"]);
    let text = space_text("").replace("layout: [base_conv", "layout: [base_cnv");
    let err = plan_of(&text, &none).unwrap_err().to_string();
    assert!(err.contains("unknown mixer `base_cnv`") && err.contains(":8:"), "{err}");
}

#[test]
fn a_sweep_accepts_the_mad_section_and_a_mad_space_needs_no_tasks() {
    let text = format!(
        "{}tasks: [{{kind: mqar, vocab_size: 16, seq_len: 16, kv_pairs: 2}}]\nbudgets: [1e9]\n",
        space_text("mad: {epochs: 2}\n")
    );
    let space = crate::space::Space::from_text(&text, Path::new("s.yaml")).unwrap();
    assert_eq!(space.file.mad.as_ref().unwrap().epochs, 2);
    // A sweep on MAD compression builds the decoder head from the task, and checks the width for it.
    let text =
        text.replace("kind: mqar, vocab_size: 16, seq_len: 16, kv_pairs: 2", "kind: mad_compression, seq_len: 8");
    let trials = crate::space::Space::from_text(&text, Path::new("s.yaml")).unwrap().trials().unwrap();
    assert!(trials.iter().all(|t| t.stack.head == HeadSpec::Compression { positions: 8 }));
    let odd = text.replace("d_model: 128\nmad:", "d_model: 7\nmad:");
    let err = crate::space::Space::from_text(&odd, Path::new("s.yaml")).unwrap_err().to_string();
    assert!(err.contains("s.yaml:10:") && err.contains("even d_model"), "{err}");
    let err = crate::space::Space::from_text(&space_text(""), Path::new("s.yaml")).unwrap_err();
    assert!(err.to_string().contains("workbench mad"), "{err}");
    let dir = std::env::temp_dir().join(format!("mad-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("s.yaml"), space_text("")).unwrap();
    let (_, spec) = load(&dir.join("s.yaml"), &MadOverrides::default()).unwrap();
    assert_eq!(spec, MadSpec::default());
}
