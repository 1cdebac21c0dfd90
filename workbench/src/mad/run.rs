//! `workbench mad`: load and check everything, lay out the trials, run the ones not done through the local
//! executor (one process per trial, as a sweep), then write `DIR/mad.json` from the trial files.

use super::plan::{plan, MadPlan};
use super::spec::{MadOverrides, MadSpec};
use crate::error::UsageError;
use crate::exec::local::{LocalOptions, LocalPool};
use crate::search::{driver, grid::Grid};
use crate::space::{Space, SpaceFile};
use crate::store::{write_atomic, Store};
use crate::yaml;
use anyhow::Result;
use reports::mad::{MadResults, MAD_FILE};
use std::path::{Path, PathBuf};

/// The MAD run's copy of the space file (the sweep's `space.yaml` may share the directory).
pub const SPACE_FILE: &str = "mad-space.yaml";

/// What `workbench mad` was asked to do.
#[derive(Debug, Clone)]
pub struct MadOptions {
    pub out: Option<PathBuf>,
    pub overrides: MadOverrides,
    pub jobs: usize,
    pub resume: bool,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// `auto` or `reference`.
    pub kernels: String,
    /// Print the plan and stop.
    pub dry_run: bool,
}

/// Reads a space for `workbench mad`: the sweep format, where `tasks` and `budgets` may be left out and the
/// `mad:` section (default: the published protocol) is combined with the command line's overrides.
pub fn load(path: &Path, overrides: &MadOverrides) -> Result<(Space, MadSpec), UsageError> {
    let (file, text): (SpaceFile, String) = yaml::read(path)?;
    let spec = file.mad.clone().unwrap_or_default().with(overrides);
    Ok((Space { file, text, path: path.to_path_buf() }, spec))
}

/// Loads and plans; everything that can be wrong with the input is found here, before any training.
pub fn prepare(path: &Path, overrides: &MadOverrides) -> Result<(Space, MadPlan), UsageError> {
    let (space, spec) = load(path, overrides)?;
    let plan = plan(&space, &spec)?;
    Ok((space, plan))
}

fn write_results(dir: &Path, results: &MadResults) -> Result<()> {
    write_atomic(&dir.join(MAD_FILE), &serde_json::to_vec_pretty(results)?)
}

/// Runs the protocol; returns the directory (its `mad.json` written) for the caller to render the report.
pub fn run(path: &Path, opts: &MadOptions) -> Result<Option<PathBuf>> {
    let (space, mut plan) = prepare(path, &opts.overrides)?;
    if opts.jobs < 1 {
        return Err(UsageError::new("--jobs must be at least 1").into());
    }
    if opts.dry_run {
        print_plan(&plan);
        return Ok(None);
    }
    let out = opts.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(&space.file.name));
    if out.join(MAD_FILE).exists() && !opts.resume {
        return Err(UsageError::new(format!(
            "{} already holds a MAD run; pass --resume to continue it (finished trials are kept), or choose another --out",
            out.display()
        ))
        .into());
    }
    std::fs::create_dir_all(out.join("trials"))?;
    write_atomic(&out.join(SPACE_FILE), space.text.as_bytes())?;
    let store = Store::new(&out);
    let mut pending = Vec::new();
    for t in &plan.trials {
        let id = store.write_spec(t)?;
        if !store.is_done(&id) {
            pending.push((id, t.clone()));
        }
    }
    plan.results.update_from(&reports::load_results(&out)?);
    write_results(&out, &plan.results)?;
    let p = &plan.results.protocol;
    eprintln!(
        "mad `{}`: {} candidates x {} tasks, {} trials ({} to run), {} epochs each, into {}",
        space.file.name,
        plan.results.candidates.len(),
        p.tasks.len(),
        plan.trials.len(),
        pending.len(),
        p.epochs,
        out.display()
    );
    for d in &p.deviations {
        eprintln!("  not as published: {d}");
    }
    let local = LocalOptions::on(&opts.device, opts.jobs, &opts.kernels);
    // The protocol's trials run as a grid through the same driver and executor as `sweep` (so a killed
    // run resumes, and finished trials are found in the store rather than rerun).
    let mut pool = LocalPool::new(&store, local, Some(plan.trials.len()))?;
    let mut grid = Grid::new(plan.trials.clone());
    // Its own log and summary, and no change to sweep.json: a MAD run may share the directory with a sweep.
    let files = driver::Files { log: "mad-search.jsonl", summary: "mad-search.json", list_trials: false };
    driver::run(&store, &mut grid, "grid", 0, opts.jobs, &mut pool, &files)?;
    let summary = pool.summary;
    plan.results.update_from(&reports::load_results(&out)?);
    write_results(&out, &plan.results)?;
    eprintln!(
        "done: {} completed, {} diverged, {} failed this run",
        summary.completed, summary.diverged, summary.failed
    );
    print_scores(&plan.results);
    Ok(Some(out))
}

/// The scores as a table on stdout.
pub fn print_scores(r: &MadResults) {
    let tasks = r.candidates.first().map(|c| c.tasks.iter().map(|t| t.task.as_str()).collect::<Vec<_>>());
    let tasks = tasks.unwrap_or_default();
    let short: Vec<String> = tasks.iter().map(|t| t.trim_start_matches("mad_").chars().take(12).collect()).collect();
    print!("{:<28}", "candidate");
    for s in &short {
        print!(" {s:>12}");
    }
    println!(" {:>9}", "MAD");
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    for c in &r.candidates {
        print!("{:<28}", c.label);
        for t in &c.tasks {
            print!(" {:>12}", fmt(t.score));
        }
        println!(" {:>9}", fmt(c.score));
    }
}

/// The trials and their cost, without training.
fn print_plan(plan: &MadPlan) {
    println!("{:<44} {:<22} {:>11} {:>8} {:>12}", "trial", "task", "params", "steps", "FLOPs");
    let mut total = 0.0;
    for t in &plan.trials {
        let flops = t.steps() as f64 * t.flops_per_step();
        total += flops;
        println!("{:<44} {:<22} {:>11} {:>8} {:>12.3e}", t.label, t.task.name(), t.stack.params(), t.steps(), flops);
    }
    for d in &plan.results.protocol.deviations {
        println!("not as published: {d}");
    }
    println!("{} trials, {total:.4e} training FLOPs in total", plan.trials.len());
}

/// The report of a directory that holds a MAD run and no sweep (`workbench report` on it).
pub fn write_report_without_sweep(dir: &Path) -> Result<PathBuf> {
    let mad = MadResults::load(dir)?.ok_or_else(|| UsageError::new(format!("{}: no {MAD_FILE}", dir.display())))?;
    let info = reports::SweepInfo {
        name: mad.name,
        space_yaml: std::fs::read_to_string(dir.join(SPACE_FILE)).ok(),
        notes: Vec::new(),
    };
    Ok(reports::write_report(dir, &[], &info)?)
}
