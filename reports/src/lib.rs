//! reports: from a sweep directory's trial results to one self-contained HTML report, and scaling-law fits of
//! any CSV.
//!
//! Reads every `DIR/trials/*/result.json` ([`TrialResult`]) and, per task and architecture ([`summary`]), fits
//! the laws of [`fit`] with bootstrap intervals: a saturating power law `L(C) = E + A * C^(-alpha)` to the
//! compute-optimal envelope, and Chinchilla's approach 2 (isoFLOP parabolas, `N* = k C^a`) to every trial;
//! [`fit::chinchilla`] (approach 3, `L(N, D) = E + A/N^alpha + B/D^beta`) is offered for CSV input. It draws
//! the plots as inline SVG ([`plot`], [`plot_scaling`]) and writes `DIR/report.html` ([`html`]): one file with
//! no network references (the trial table is a `data:` CSV link, [`export`]), readable offline and checkable
//! in a headless browser. [`fit_csv::run_fit`] is `workbench fit`: any CSV, any law, text or JSON. When the
//! directory holds a MAD run (`mad.json`, [`mad`]), the report opens with its heatmap and per-task tables, and
//! plots MAD scores against compute-optimal loss when the sweep has language-modelling trials of the same
//! candidates.
//!
//! Key design decision: this crate does not link libtorch (nor anything of the training stack). The trial
//! files are the only input, so the report can be rebuilt anywhere (a laptop, a login node, CI) from a copied
//! or shared sweep directory, while trials are still running or long after.

pub mod browser;
pub mod export;
pub mod fit;
pub mod fit_csv;
pub mod html;
mod html_graft;
mod html_mad;
mod html_mqar;
mod html_search;
mod html_task;
pub mod mad;
pub mod plot;
pub mod plot_scaling;
pub mod result;
pub mod search;
pub mod summary;

pub use fit::{fit_power_law, Estimate, FitError, Law, PowerLawFit};
pub use fit_csv::{fit_csv, render_json, render_text, run_fit, ArchFit, FitCsvError, LawFit};
pub use html::{render_html, render_html_with_mad};
pub use mad::{MadResults, MAD_FILE};
pub use plot::loss_vs_flops_svg;
pub use result::{CurvePoint, GraftResult, Inherited, Status, TrialResult};
pub use search::{SearchSummary, SEARCH_FILE};
pub use summary::{envelope, summarise, ArchSummary, EnvelopePoint, TaskSummary};

use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// What the report says about the sweep besides its results.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct SweepInfo {
    /// The sweep's name (the report's title).
    pub name: String,
    /// The search-space YAML as written by the user, shown verbatim under "Settings".
    pub space_yaml: Option<String>,
    /// Free-text notes shown under the title (one bullet each).
    #[serde(default)]
    pub notes: Vec<String>,
}

/// Why a report could not be loaded or written. Messages name the file and include the cause.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The sweep directory does not exist or is not a directory.
    #[error("{}: not a sweep directory (missing or not a folder)", path.display())]
    NotADir { path: PathBuf },
    /// Reading or writing a file failed.
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: std::io::Error },
    /// A `result.json` that is not a valid [`TrialResult`].
    #[error("{}: not a valid trial result: {error}", path.display())]
    Parse { path: PathBuf, error: serde_json::Error },
    /// A `search.json` that is not a valid search summary.
    #[error("{}: not a valid search summary: {error}", path.display())]
    Search { path: PathBuf, error: serde_json::Error },
    /// plotters failed to draw a task's plot.
    #[error("plotting task {task:?}: {message}")]
    Plot { task: String, message: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ReportError + '_ {
    move |error| ReportError::Io { path: path.to_path_buf(), error }
}

/// Loads every `dir/trials/*/result.json`, sorted by (task, arch, budget_flops, params), then id.
///
/// Trial folders without a `result.json` (still running, or died before writing it) are skipped, as is a
/// missing `trials` folder (nothing has run yet). A `result.json` that does not parse is an error naming it.
pub fn load_results(dir: &Path) -> Result<Vec<TrialResult>, ReportError> {
    if !dir.is_dir() {
        return Err(ReportError::NotADir { path: dir.to_path_buf() });
    }
    let trials = dir.join("trials");
    if !trials.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in fs::read_dir(&trials).map_err(io_err(&trials))? {
        let entry = entry.map_err(io_err(&trials))?;
        let path = entry.path().join("result.json");
        if !entry.path().is_dir() {
            continue;
        }
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(ReportError::Io { path, error }),
        };
        let result: TrialResult =
            serde_json::from_str(&text).map_err(|error| ReportError::Parse { path: path.clone(), error })?;
        out.push(result);
    }
    out.sort_by(|a, b| {
        (a.task.as_str(), a.arch.as_str())
            .cmp(&(b.task.as_str(), b.arch.as_str()))
            .then(a.budget_flops.total_cmp(&b.budget_flops))
            .then(a.params.cmp(&b.params))
            .then(a.id.cmp(&b.id))
    });
    Ok(out)
}

/// Renders the report and writes it to `dir/report.html` atomically (a temporary file in `dir`, synced, then
/// renamed over the old report), so a reader never sees half a file. Returns the report's path.
///
/// When `dir` holds a MAD run (`mad.json`), the report has its section, with every number refreshed from the trial
/// files ([`MadResults::update_from`]), so it also shows a MAD run that is still going. When it holds a search
/// summary (`search.json`), the report has a search section (rungs, stopped trials, Pareto front, FLOPs).
pub fn write_report(dir: &Path, results: &[TrialResult], info: &SweepInfo) -> Result<PathBuf, ReportError> {
    if !dir.is_dir() {
        return Err(ReportError::NotADir { path: dir.to_path_buf() });
    }
    let mut mad = MadResults::load(dir)?;
    if let Some(m) = &mut mad {
        m.update_from(&load_results(dir)?);
    }
    let search = SearchSummary::load(dir)?;
    let html = html::render_html_sections(results, info, mad.as_ref(), search.as_ref())?;
    let path = dir.join("report.html");
    let tmp = dir.join(format!(".report.html.tmp.{}", std::process::id()));
    let written = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(html.as_bytes())?;
        f.sync_all()
    })();
    if let Err(error) = written {
        let _ = fs::remove_file(&tmp);
        return Err(ReportError::Io { path: tmp, error });
    }
    fs::rename(&tmp, &path).map_err(|error| {
        let _ = fs::remove_file(&tmp);
        ReportError::Io { path: path.clone(), error }
    })?;
    Ok(path)
}

/// A minimal trial for unit tests: completed, no curve, no final loss, budget 1e12.
#[cfg(test)]
pub(crate) mod test_support {
    use crate::result::{Status, TrialResult};

    pub fn minimal(id: &str, task: &str, arch: &str) -> TrialResult {
        TrialResult {
            id: id.into(),
            arch: arch.into(),
            label: format!("{arch} d64 x2"),
            task: task.into(),
            status: Status::Completed,
            reason: None,
            d_model: 64,
            depth: 2,
            layers: vec![arch.into(), "swiglu".into()],
            params: 100_000,
            non_embedding_params: 80_000,
            flops_per_token: 6e5,
            state_size: 4096,
            seq_len: 128,
            batch_size: 8,
            budget_flops: 1e12,
            flops_spent: 0.0,
            tokens_seen: 0,
            steps: 0,
            final_eval_loss: None,
            final_metrics: Default::default(),
            learning_rate: 1e-3,
            seed: 0,
            curve: Vec::new(),
            wall_seconds: 1.0,
            device: "cpu".into(),
            grafts: Vec::new(),
            inherited: None,
            task_params: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp_dir(tag: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let d = std::env::temp_dir().join(format!("reports-{tag}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn put(dir: &Path, r: &TrialResult) {
        let t = dir.join("trials").join(&r.id);
        fs::create_dir_all(&t).unwrap();
        fs::write(t.join("result.json"), serde_json::to_string_pretty(r).unwrap()).unwrap();
    }

    #[test]
    fn load_sorts_skips_unfinished_and_names_bad_files() {
        let d = tmp_dir("load");
        assert!(load_results(&d).unwrap().is_empty(), "no trials folder yet");
        let mut x = test_support::minimal("x", "t", "b");
        x.budget_flops = 1e13;
        put(&d, &x);
        put(&d, &test_support::minimal("y", "t", "b"));
        put(&d, &test_support::minimal("z", "s", "c"));
        fs::create_dir_all(d.join("trials/running")).unwrap();
        let got: Vec<String> = load_results(&d).unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(got, ["z", "y", "x"]);

        fs::create_dir_all(d.join("trials/broken")).unwrap();
        fs::write(d.join("trials/broken/result.json"), "{\"id\": 3").unwrap();
        let err = load_results(&d).unwrap_err();
        assert!(matches!(err, ReportError::Parse { .. }));
        assert!(err.to_string().contains("broken/result.json"), "{err}");
        assert!(matches!(load_results(&d.join("nope")), Err(ReportError::NotADir { .. })));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn write_report_replaces_atomically() {
        let d = tmp_dir("write");
        let info = SweepInfo { name: "demo".into(), ..Default::default() };
        fs::write(d.join("report.html"), "old").unwrap();
        let p = write_report(&d, &[test_support::minimal("a", "t", "x")], &info).unwrap();
        assert_eq!(p, d.join("report.html"));
        assert!(fs::read_to_string(&p).unwrap().starts_with("<!DOCTYPE html>"));
        let leftovers: Vec<_> = fs::read_dir(&d).unwrap().filter_map(|e| e.ok()).collect();
        assert_eq!(leftovers.len(), 1, "temporary file left behind");
        fs::remove_dir_all(&d).unwrap();
    }
}
