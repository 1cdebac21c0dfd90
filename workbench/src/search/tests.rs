//! Every strategy through the real driver and trial store, with a fake executor that "trains" by writing
//! outcome files with a synthetic loss and finishes jobs in a seeded random order: decisions must not
//! depend on that order, must depend on the search seed, and must survive a driver killed mid-search.

use super::driver;
use super::summary::SearchSummary;
use super::*;
use crate::exec::Executor;
use crate::store::{RungRecord, Store};
use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;

const TASK: &str =
    "tasks: [{kind: mqar, vocab_size: 16, seq_len: 16, kv_pairs: 2, train_examples: 64, test_examples: 16}]
train: {batch_size: 4, eval_points: 2}
";

fn grid_space(search: &str) -> String {
    format!(
        "name: t\n{TASK}budgets: [1e9]\nseeds: [0, 1]\ncandidates:
  - {{name: a, layout: [attention, swiglu], depth: [2, 4], d_model: [16, 32], mixers: {{attention: {{heads: 2}}}}}}
  - {{name: m, layout: [mlp], depth: [1, 2], d_model: [16, 32], allow_no_mixing: true}}
search: {search}\n"
    )
}

fn genome_space(search: &str) -> String {
    format!(
        "name: t\n{TASK}budgets: [1e9]\nsearch: {{{search}, genome: {{d_model: [16, 32], depth: [1, 2, 3, 4],
  base: {{attention: {{heads: 2}}}}, params: {{attention: {{window: [2, 4, 8, null]}}}}}}}}\n"
    )
}

/// A loss that falls with training and differs by trial.
fn loss(id: &str, step: u64) -> f64 {
    let base = u64::from_str_radix(&id[..8], 16).unwrap() as f64 / u32::MAX as f64;
    1.0 + base + 5.0 / (1.0 + step as f64)
}

/// Finishes one running job per `wait`, chosen by a seeded generator; fails after `kill_after` jobs.
struct Fake {
    store: Store,
    slots: usize,
    running: Vec<(usize, Job)>,
    rng: ChaCha8Rng,
    kill_after: Option<usize>,
    executed: Vec<(String, usize)>,
}

impl Executor for Fake {
    fn free_slots(&self) -> usize {
        self.slots - self.running.len()
    }
    fn start(&mut self, jobs: &[(usize, Job)]) -> Result<()> {
        self.running.extend(jobs.iter().cloned());
        Ok(())
    }
    fn wait(&mut self) -> Result<Vec<usize>> {
        if self.kill_after == Some(self.executed.len()) {
            bail!("killed");
        }
        let (i, job) = self.running.remove(self.rng.random_range(0..self.running.len()));
        let step = job.stop_step();
        let flops = step as f64 * job.spec.flops_per_step();
        if step < job.spec.steps() {
            let r = RungRecord {
                step,
                steps: job.spec.steps(),
                until_flops: job.until_flops.unwrap(),
                flops,
                tokens: 0,
                eval_loss: loss(&job.id, step),
                metrics: Default::default(),
                wall_seconds: 0.0,
            };
            self.store.write_rung(&job.id, &r)?;
        } else {
            let mut r = crate::train::empty_result(&job.spec, &job.id, "fake");
            (r.status, r.steps, r.flops_spent) = (reports::Status::Completed, step, flops);
            r.final_eval_loss = Some(loss(&job.id, step));
            self.store.write_result(&r)?;
        }
        self.executed.push((job.id.clone(), job.rung));
        Ok(vec![i])
    }
    fn running(&self) -> usize {
        self.running.len()
    }
    fn cancel(&mut self) -> Result<()> {
        Ok(())
    }
}

struct Run {
    summary: Option<SearchSummary>,
    launches: Vec<(String, usize)>,
    executed: Vec<(String, usize)>,
}

fn run(dir: &PathBuf, text: &str, timing: u64, slots: usize, kill_after: Option<usize>, fresh: bool) -> Run {
    if fresh {
        let _ = std::fs::remove_dir_all(dir);
    }
    let space = Space::from_text(text, std::path::Path::new("space.yaml")).unwrap();
    let store = Store::new(dir);
    store.prepare("t", text, Vec::new(), true, true).unwrap();
    let mut strategy = build(&space).unwrap();
    let mut fake = Fake {
        store: store.clone(),
        slots,
        running: Vec::new(),
        rng: ChaCha8Rng::seed_from_u64(timing),
        kill_after,
        executed: Vec::new(),
    };
    let (name, seed) = (space.file.search.name(), space.file.search.seed());
    let summary = driver::run(&store, strategy.as_mut(), name, seed, slots, &mut fake, &driver::Files::SWEEP).ok();
    let log = std::fs::read_to_string(dir.join("search.jsonl")).unwrap();
    let launches = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event"] == "launch")
        .map(|v| (v["id"].as_str().unwrap().to_string(), v["rung"].as_u64().unwrap() as usize))
        .collect();
    Run { summary, launches, executed: fake.executed }
}

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("workbench-search-{name}-{}", std::process::id()))
}

fn spaces() -> Vec<(&'static str, String, String)> {
    vec![
        ("grid", grid_space("{strategy: grid}"), grid_space("{strategy: grid}")),
        ("random", grid_space("{strategy: random, n: 5, seed: 1}"), grid_space("{strategy: random, n: 5, seed: 2}")),
        (
            "sha",
            grid_space("{strategy: successive_halving, min_flops: 1e8, eta: 3, seed: 1}"),
            grid_space("{strategy: successive_halving, min_flops: 1e8, eta: 3, seed: 2}"),
        ),
        (
            "asha",
            grid_space("{strategy: asha, min_flops: 1e8, eta: 3, seed: 1}"),
            grid_space("{strategy: asha, min_flops: 1e8, eta: 3, seed: 2}"),
        ),
        (
            "random-genome",
            genome_space("strategy: random, n: 6, seed: 1"),
            genome_space("strategy: random, n: 6, seed: 2"),
        ),
        (
            "evolution",
            genome_space("strategy: evolution, population: 4, generations: 3, seed: 1"),
            genome_space("strategy: evolution, population: 4, generations: 3, seed: 2"),
        ),
        (
            "evolution-inherit",
            genome_space("strategy: evolution, population: 4, generations: 3, seed: 1, inherit_weights: true"),
            genome_space("strategy: evolution, population: 4, generations: 3, seed: 2, inherit_weights: true"),
        ),
        (
            "evolution-pareto",
            genome_space(
                "strategy: evolution, population: 4, generations: 3, seed: 1, objectives: [loss, params, state_size]",
            ),
            genome_space(
                "strategy: evolution, population: 4, generations: 3, seed: 2, objectives: [loss, params, state_size]",
            ),
        ),
    ]
}

#[test]
fn decisions_depend_on_the_seed_not_on_timing() {
    for (name, text, other_seed) in spaces() {
        let dir = scratch(name);
        let a = run(&dir, &text, 1, 3, None, true);
        let summary = a.summary.as_ref().unwrap_or_else(|| panic!("{name}: the search failed"));
        assert!(summary.finished && !a.launches.is_empty(), "{name}");
        for timing in [2, 3] {
            let b = run(&dir, &text, timing, 3, None, true);
            assert_eq!(a.launches, b.launches, "{name}: decisions changed with the order trials finished in");
            assert_eq!(a.summary, b.summary, "{name}");
        }
        let c = run(&dir, &other_seed, 1, 3, None, true);
        if name != "grid" {
            assert_ne!(a.launches, c.launches, "{name}: another seed made the same decisions");
        }
        // Multi-rung strategies stop some trials early; every strategy spends less than the grid but grid.
        let frac = summary.fraction_of_grid.unwrap();
        assert!(frac > 0.0 && frac <= 1.0 + 1e-12, "{name}: {frac}");
        if name == "sha" || name == "asha" {
            assert!(summary.trials.iter().any(|t| t.fate == super::summary::TrialFate::Stopped), "{name}");
            assert!(frac < 0.5, "{name}: spent {frac} of the grid");
            assert_eq!(summary.best.len(), 2, "{name}: one best per seed");
        }
        if name == "evolution-pareto" {
            assert!(!summary.pareto_front.as_ref().unwrap().is_empty());
            assert_eq!(summary.generations.len(), 3);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn a_killed_search_resumes_with_the_same_decisions_and_reruns_nothing_finished() {
    for (name, text, _) in spaces() {
        let dir = scratch(&format!("{name}-resume"));
        let reference = run(&dir, &text, 1, 2, None, true);
        let half = reference.executed.len() / 2;
        let killed = run(&dir, &text, 1, 2, Some(half), true);
        assert!(killed.summary.is_none(), "{name}: the fake kill did not stop the driver");
        let resumed = run(&dir, &text, 7, 2, None, false);
        assert_eq!(reference.launches, resumed.launches, "{name}: the resumed search decided differently");
        assert_eq!(reference.summary, resumed.summary, "{name}");
        // Nothing that finished before the kill ran again.
        for job in &killed.executed {
            assert!(!resumed.executed.contains(job), "{name}: {job:?} ran twice");
        }
        assert_eq!(killed.executed.len() + resumed.executed.len(), reference.executed.len(), "{name}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn asha_decisions_are_fixed_for_a_window() {
    // The window (the executor's parallelism) is part of ASHA's determinism; a resumed sweep keeps it.
    let text = grid_space("{strategy: asha, min_flops: 1e8, eta: 3, seed: 1}");
    let dir = scratch("asha-window");
    let one = run(&dir, &text, 1, 1, None, true);
    let four = run(&dir, &text, 1, 4, None, true);
    assert_eq!(one.summary.as_ref().unwrap().window, Some(1));
    assert_eq!(four.summary.as_ref().unwrap().window, Some(4));
    let four_again = run(&dir, &text, 5, 4, None, true);
    assert_eq!(four.launches, four_again.launches);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn inheritance_changes_the_children_ids_not_the_first_generation() {
    let ids = |inherit: bool| {
        let text = genome_space(&format!(
            "strategy: evolution, population: 4, generations: 3, seed: 1, inherit_weights: {inherit}"
        ));
        let dir = scratch(&format!("inherit-{inherit}"));
        let r = run(&dir, &text, 1, 3, None, true);
        let inheriting: Vec<String> = r
            .launches
            .iter()
            .filter(|(id, _)| {
                let spec = std::fs::read_to_string(dir.join("trials").join(id).join("spec.json")).unwrap();
                spec.contains("\"inherit\"")
            })
            .map(|(id, _)| id.clone())
            .collect();
        let _ = std::fs::remove_dir_all(&dir);
        (r.launches, inheriting)
    };
    let ((off, none), (on, some)) = (ids(false), ids(true));
    assert!(none.is_empty());
    assert!(!some.is_empty(), "no child inherited weights");
    assert_eq!(off[..4], on[..4], "generation 0 has no parents");
    for id in &some {
        assert!(!off.iter().any(|(o, _)| o == id), "{id}: an inheriting trial has a from-scratch trial's id");
    }
}

#[test]
fn grid_launches_the_longest_trials_first() {
    let text = format!(
        "name: t\n{TASK}budgets: [1e8, 1e9]\ncandidates:
  - {{name: a, layout: [attention, swiglu], depth: 2, d_model: [16, 32], mixers: {{attention: {{heads: 2}}}}}}\n"
    );
    let space = Space::from_text(&text, std::path::Path::new("space.yaml")).unwrap();
    let mut grid = grid::Grid::new(space.trials().unwrap());
    let mut order = Vec::new();
    while let Proposal::Run(job) = grid.propose() {
        order.push((job.spec.budget_flops, job.spec.stack.d_model, job.spec.steps()));
    }
    // Budget 1e9 before 1e8; within a budget the smaller model (more steps) first.
    let budgets: Vec<f64> = order.iter().map(|o| o.0).collect();
    assert_eq!(budgets, [1e9, 1e9, 1e8, 1e8]);
    assert!(order[0].1 == 16 && order[1].1 == 32 && order[0].2 > order[1].2, "{order:?}");
}
