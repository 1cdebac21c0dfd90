//! From a space and its `mad:` section to the MAD trials and the skeleton of `mad.json` that names them.
//!
//! One trial per (candidate size, task, setting, learning rate, weight decay), each an ordinary [`TrialSpec`]
//! (so the store, the executors and `--resume` work as for a sweep):
//! - the stack: the candidate at its `d_model` (or `mad.d_model`), the setting's vocabulary, the task's head
//!   (MAD compression's decoder for `mad_compression`);
//! - the task: the setting, with `train_examples` scaled by `train_fraction` (rounded, at least 1; memorization
//!   keeps its 256 facts) and `test_examples` from the section;
//! - the budget: `epochs` passes over the training set, `steps = ceil(epochs * train_examples / 128)` optimiser
//!   steps of batch 128 (the reference's last batch of an epoch is partial; ours are all full, so a trial sees at
//!   least `epochs` passes), as FLOPs: `budget = (steps + 1/2) * 3 * flops_per_token * 128 * seq_len` (half a
//!   step of slack, so rounding can never cost a step; the trial spends exactly `steps` steps);
//! - the optimiser: AdamW with the grid's peak learning rate and weight decay, betas (0.9, 0.98), eps 1e-8, no
//!   warmup, cosine decay to 1e-6 (`min_lr_ratio = 1e-6 / lr`), no gradient clipping (the reference clips none);
//! - seed 12345 (data and initialisation).

use super::spec::{closest, MadSpec};
use crate::error::UsageError;
use crate::space::{Candidate, Sizes, Space};
use crate::tasks::mad::settings::{self, MadTaskKind};
use crate::tasks::TaskSpec;
use crate::trial::{OptimSpec, TrainSpec, TrialSpec};
use crate::yaml;
use operators::StackSpec;
use reports::mad::{MadCandidate, MadCell, MadProtocol, MadResults, MadSettingScore, MadTaskScore};

/// The trial metric MAD scores: per-class accuracy (see `train::metrics`).
pub const METRIC: &str = "macro_accuracy";

/// Everything `workbench mad` will run.
#[derive(Debug, Clone)]
pub struct MadPlan {
    /// `mad.json` before any result: every cell names its trial.
    pub results: MadResults,
    /// The trials, in plan order, each once.
    pub trials: Vec<TrialSpec>,
}

/// `space.path:LINE: mad.KEY: msg`, at the line of `key` inside the `mad:` section (or of `mad:`, or no line).
fn mad_err(space: &Space, key: &str, msg: String) -> UsageError {
    let section = yaml::line_of_key(&space.text, "mad", 1);
    let line = section.and_then(|s| yaml::line_of_key(&space.text, key, s)).or(section);
    let at = line.map_or(String::new(), |l| format!(":{l}"));
    UsageError::new(format!("{}{at}: mad.{key}: {msg}", space.path.display()))
}

/// The training and test set sizes of a MAD setting.
fn sizes(task: &TaskSpec) -> (usize, usize) {
    match task {
        TaskSpec::MadInContextRecall(s) => (s.train_examples, s.test_examples),
        TaskSpec::MadFuzzyRecall(s) => (s.train_examples, s.test_examples),
        TaskSpec::MadNoisyRecall(s) => (s.train_examples, s.test_examples),
        TaskSpec::MadSelectiveCopying(s) => (s.train_examples, s.test_examples),
        TaskSpec::MadCompression(s) => (s.train_examples, s.test_examples),
        TaskSpec::MadMemorization(s) => (s.train_examples, s.test_examples),
        TaskSpec::Mqar(_) | TaskSpec::Bytes(_) | TaskSpec::Tokens(_) | TaskSpec::Text(_) => {
            unreachable!("not a MAD task")
        }
    }
}

/// The setting with other set sizes.
fn with_sizes(task: &TaskSpec, train: usize, test: usize) -> TaskSpec {
    let mut t = task.clone();
    match &mut t {
        TaskSpec::MadInContextRecall(s) => (s.train_examples, s.test_examples) = (train, test),
        TaskSpec::MadFuzzyRecall(s) => (s.train_examples, s.test_examples) = (train, test),
        TaskSpec::MadNoisyRecall(s) => (s.train_examples, s.test_examples) = (train, test),
        TaskSpec::MadSelectiveCopying(s) => (s.train_examples, s.test_examples) = (train, test),
        TaskSpec::MadCompression(s) => (s.train_examples, s.test_examples) = (train, test),
        TaskSpec::MadMemorization(s) => (s.train_examples, s.test_examples) = (train, test),
        TaskSpec::Mqar(_) | TaskSpec::Bytes(_) | TaskSpec::Tokens(_) | TaskSpec::Text(_) => {
            unreachable!("not a MAD task")
        }
    }
    t
}

/// The settings of `kind` as run: baseline only or all, with the section's set sizes.
pub fn settings_of(kind: MadTaskKind, spec: &MadSpec) -> Vec<(String, TaskSpec)> {
    let all = kind.settings();
    let take = if spec.baseline_only { 1 } else { all.len() };
    all.into_iter()
        .take(take)
        .map(|s| {
            let (train, _) = sizes(&s.spec);
            let train = if kind == MadTaskKind::Memorization {
                train
            } else {
                ((train as f64 * spec.train_fraction).round() as usize).max(1)
            };
            (s.name, with_sizes(&s.spec, train, spec.test_examples))
        })
        .collect()
}

/// The optimiser of one grid cell.
pub fn optim(lr: f64, weight_decay: f64) -> OptimSpec {
    OptimSpec {
        lr,
        weight_decay,
        beta1: settings::ADAM_BETAS.0,
        beta2: settings::ADAM_BETAS.1,
        eps: 1e-8,
        warmup: 0.0,
        min_lr_ratio: (settings::FINAL_LR / lr).min(1.0),
        grad_clip: 0.0,
    }
}

/// The trial of one cell: `epochs` passes over the setting's training set (see the module docs).
pub fn trial(
    arch: &str,
    label: String,
    task: TaskSpec,
    stack: StackSpec,
    lr: f64,
    wd: f64,
    spec: &MadSpec,
) -> TrialSpec {
    let (train_examples, _) = sizes(&task);
    let batch = settings::BATCH_SIZE;
    let steps = (spec.epochs * train_examples as u64).div_ceil(batch as u64);
    let mut t = TrialSpec {
        arch: arch.to_string(),
        label,
        task,
        stack,
        budget_flops: 0.0,
        optim: optim(lr, wd),
        train: TrainSpec { batch_size: batch, eval_points: spec.eval_points },
        seed: settings::SEED,
        grafts: Vec::new(),
        init_from: None,
        inherit: None,
    };
    t.budget_flops = (steps as f64 + 0.5) * t.flops_per_step();
    debug_assert_eq!(t.steps(), steps);
    t
}

/// The candidates the section selects, in the space's order.
fn selected<'a>(space: &'a Space, spec: &MadSpec) -> Result<Vec<&'a Candidate>, UsageError> {
    let all = &space.file.candidates;
    if all.is_empty() {
        return Err(UsageError::new(format!("{}: `candidates` is missing or empty", space.path.display())));
    }
    let mut seen = std::collections::BTreeSet::new();
    for c in all {
        if !seen.insert(c.name.as_str()) {
            let line = yaml::line_of_key(&space.text, "candidates", 1).unwrap_or(1);
            return Err(UsageError::new(format!(
                "{}:{line}: candidate name `{}` is used twice",
                space.path.display(),
                c.name
            )));
        }
    }
    let Some(names) = &spec.candidates else { return Ok(all.iter().collect()) };
    if names.is_empty() {
        return Err(mad_err(space, "candidates", "is empty; name at least one candidate of the space".into()));
    }
    let known: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
    names
        .iter()
        .map(|n| {
            all.iter().find(|c| &c.name == n).ok_or_else(|| {
                let msg = format!(
                    "unknown candidate `{n}`{}; the space's candidates: {}",
                    closest(n, &known),
                    known.join(", ")
                );
                mad_err(space, "candidates", msg)
            })
        })
        .collect()
}

/// What differs from the published protocol, one sentence each.
fn deviations(spec: &MadSpec, widths: &[i64], published_settings: usize, run_settings: usize) -> Vec<String> {
    let mut out = Vec::new();
    let d = MadSpec::default();
    if spec.epochs != d.epochs {
        let epochs = if spec.epochs == 1 { "1 epoch".to_string() } else { format!("{} epochs", spec.epochs) };
        out.push(format!("{epochs} per trial instead of the published {}", d.epochs));
    }
    if run_settings != published_settings {
        out.push(format!("baseline settings only: {run_settings} of the {published_settings} task settings"));
    }
    if spec.train_fraction != d.train_fraction {
        out.push(format!(
            "training sets scaled to {} of the published sizes (12,800 examples become {}); memorization keeps its 256",
            spec.train_fraction,
            ((12_800.0 * spec.train_fraction).round() as usize).max(1)
        ));
    }
    if spec.test_examples != d.test_examples {
        out.push(format!("{} test examples per setting instead of {}", spec.test_examples, d.test_examples));
    }
    if spec.tasks.len() != d.tasks.len() {
        let names: Vec<&str> = spec.tasks.iter().map(|t| t.0.name()).collect();
        out.push(format!("{} of the six tasks ({}); the MAD score averages those", names.len(), names.join(", ")));
    }
    let other: Vec<String> = widths.iter().filter(|&&w| w != settings::WIDTH as i64).map(|w| w.to_string()).collect();
    if !other.is_empty() {
        out.push(format!("width (d_model) {} instead of the published {}", other.join(", "), settings::WIDTH));
    }
    if spec.learning_rates != d.learning_rates || spec.weight_decays != d.weight_decays {
        out.push(format!(
            "grid of learning rates {:?} x weight decays {:?} instead of {:?} x {:?}",
            spec.learning_rates, spec.weight_decays, d.learning_rates, d.weight_decays
        ));
    }
    out
}

/// Validates the section against the space and lays out every trial; every error is a [`UsageError`] with the
/// file and, where it can be found, the line.
pub fn plan(space: &Space, spec: &MadSpec) -> Result<MadPlan, UsageError> {
    spec.check().map_err(|(key, msg)| mad_err(space, key, msg))?;
    let mut candidates = Vec::new();
    let mut trials: Vec<TrialSpec> = Vec::new();
    let mut ids = std::collections::HashSet::new();
    let mut widths = Vec::new();
    let kinds: Vec<MadTaskKind> = spec.tasks.iter().map(|t| t.0).collect();
    let (mut published, mut run_settings) = (0, 0);
    for &kind in &kinds {
        published += kind.settings().len();
        for (name, task) in settings_of(kind, spec) {
            task.validate().map_err(|e| mad_err(space, "train_fraction", format!("{} {name}: {e}", kind.name())))?;
            run_settings += 1;
        }
    }
    for c in selected(space, spec)? {
        let c = match spec.d_model {
            Some(d) => Candidate { d_model: Sizes(vec![d]), ..c.clone() },
            None => c.clone(),
        };
        // One row per (d_model, depth) of the candidate; rows are filled task by task.
        let mut rows: Vec<MadCandidate> = Vec::new();
        for &kind in &kinds {
            for (setting, task) in settings_of(kind, spec) {
                let stacks = space.stacks(&c, task.vocab_size() as i64).map_err(|e| match spec.d_model {
                    Some(d) => UsageError::new(format!("{e} (the width {d} is mad.d_model's)")),
                    None => e,
                })?;
                for (ri, (label, stack)) in stacks.into_iter().enumerate() {
                    let stack = StackSpec { head: task.head().into(), ..stack };
                    stack.validate(c.allow_no_mixing).map_err(|e| {
                        let msg = format!("candidate `{}` on {}: {e}", c.name, kind.name());
                        match spec.d_model {
                            Some(_) => mad_err(space, "d_model", msg),
                            None => space.err_at("d_model", space.candidate_line(&c.name), msg),
                        }
                    })?;
                    if rows.len() <= ri {
                        widths.push(stack.d_model);
                        rows.push(MadCandidate {
                            arch: c.name.clone(),
                            label: label.clone(),
                            d_model: stack.d_model as u64,
                            depth: stack.layers.len() as u64,
                            tasks: Vec::new(),
                            score: None,
                            missing: 0,
                        });
                    }
                    let row = &mut rows[ri];
                    if row.tasks.last().is_none_or(|t| t.task != kind.name()) {
                        row.tasks.push(MadTaskScore {
                            task: kind.name().into(),
                            settings: Vec::new(),
                            score: None,
                            missing: 0,
                        });
                    }
                    let mut cells = Vec::new();
                    for &lr in &spec.learning_rates {
                        for &wd in &spec.weight_decays {
                            let t_label = format!("{label} {setting} lr={lr:e} wd={wd}");
                            let t = trial(&c.name, t_label, task.clone(), stack.clone(), lr, wd, spec);
                            let id = t.id();
                            cells.push(MadCell {
                                lr,
                                weight_decay: wd,
                                trial_id: id.clone(),
                                status: None,
                                accuracy: None,
                                example_accuracy: None,
                                loss: None,
                            });
                            if ids.insert(id) {
                                trials.push(t);
                            }
                        }
                    }
                    let scores = &mut row.tasks.last_mut().expect("pushed above").settings;
                    scores.push(MadSettingScore { setting: setting.clone(), cells, best: None });
                }
            }
        }
        candidates.extend(rows);
    }
    widths.sort_unstable();
    widths.dedup();
    let protocol = MadProtocol {
        epochs: spec.epochs,
        baseline_only: spec.baseline_only,
        train_fraction: spec.train_fraction,
        test_examples: spec.test_examples as u64,
        tasks: kinds.iter().map(|k| k.name().to_string()).collect(),
        learning_rates: spec.learning_rates.clone(),
        weight_decays: spec.weight_decays.clone(),
        batch_size: settings::BATCH_SIZE as u64,
        seed: settings::SEED,
        metric: METRIC.into(),
        deviations: deviations(spec, &widths, published, run_settings),
    };
    let mut results = MadResults { name: space.file.name.clone(), protocol, candidates };
    results.aggregate();
    Ok(MadPlan { results, trials })
}
