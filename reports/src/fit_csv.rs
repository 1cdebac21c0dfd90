//! `workbench fit`: scaling-law fits of any CSV, printed as text or JSON.
//!
//! The CSV has a header row and columns among `params`, `tokens`, `flops`, `loss` (names trimmed, any case),
//! plus an optional `arch` column (one fit per architecture, in order of first appearance) and an optional
//! `status` column (rows whose status is set and is not `completed` are skipped, so the CSV a report offers
//! for download can be fitted as is). Other columns are ignored. What each law reads:
//!
//! | law | columns | points |
//! |---|---|---|
//! | power | `loss`, and `flops` or `params` + `tokens` | the lowest loss per FLOP budget (the compute-optimal envelope; FLOPs within 5%, [`crate::fit::isoflop::BUDGET_REL_TOL`], are one budget) |
//! | isoflop | `params`, `loss`, and `flops` or `tokens` | every row; rows grouped into budgets by FLOPs |
//! | chinchilla | `params`, `tokens`, `loss` | every row |
//!
//! When `flops` is absent it is `6 * params * tokens`. Every value a law reads must be a positive finite number;
//! errors name the file, the line and the column.

use crate::fit::isoflop::budget_groups;
use crate::fit::{
    fit_chinchilla, fit_chinchilla_bootstrap, fit_isoflop, fit_isoflop_bootstrap, fit_power_law,
    fit_power_law_bootstrap, sig4, BootstrapInfo, ChinchillaFit, ChinchillaPoint, Estimate, FitError, IsoflopFit,
    IsoflopPoint, Law, PowerLawFit,
};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Seed of the bootstrap when the caller has none to give.
pub const DEFAULT_SEED: u64 = 0;

/// Why a CSV could not be fitted. Every message starts with the file; row errors name the line and column.
#[derive(Debug, thiserror::Error)]
pub enum FitCsvError {
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: std::io::Error },
    /// Not readable as CSV (for example a row with a different number of fields).
    #[error("{}: not a valid CSV: {error}", path.display())]
    Csv { path: PathBuf, error: csv::Error },
    #[error("{}: line 1: no column {column:?}; the {law} law needs {needs} (columns found: {found})", path.display())]
    MissingColumn { path: PathBuf, law: Law, column: &'static str, needs: &'static str, found: String },
    #[error("{}: line {line}, column {column:?}: {value:?} is not a number", path.display())]
    NotNumeric { path: PathBuf, line: u64, column: &'static str, value: String },
    #[error("{}: line {line}, column {column:?}: {value} is not positive (it must be a positive, finite number)", path.display())]
    NonPositive { path: PathBuf, line: u64, column: &'static str, value: f64 },
    #[error("{}: no data rows to fit{}", path.display(), if *skipped > 0 { format!(" ({skipped} row(s) skipped for their status)") } else { String::new() })]
    NoRows { path: PathBuf, skipped: usize },
    #[error("{}: {}{source}", path.display(), arch.as_ref().map(|a| format!("arch {a:?}: ")).unwrap_or_default())]
    Fit { path: PathBuf, arch: Option<String>, source: FitError },
}

/// One law's fit, serialised without a tag (its keys are the parameter names).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum LawFit {
    Power(PowerLawFit),
    Isoflop(IsoflopFit),
    Chinchilla(ChinchillaFit),
}

/// The fit of one architecture: `{"arch": ..., "law": ..., <the law's keys>}` in JSON (`arch` absent when the
/// CSV has no `arch` column).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArchFit {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    pub law: Law,
    #[serde(flatten)]
    pub fit: LawFit,
}

/// One data row, with the columns the law reads.
#[derive(Debug, Clone)]
struct Row {
    arch: Option<String>,
    params: f64,
    tokens: f64,
    flops: f64,
    loss: f64,
}

/// The single entry point of `workbench fit`: reads `path`, fits `law` per arch (with `bootstrap` resamples
/// when given and non-zero, seeded by `seed`) and returns what to print: text, or a JSON array with one object
/// per arch when `json`.
pub fn run_fit(path: &Path, law: Law, bootstrap: Option<usize>, seed: u64, json: bool) -> Result<String, FitCsvError> {
    let fits = fit_csv(path, law, bootstrap, seed)?;
    Ok(if json { render_json(&fits) } else { render_text(path, &fits) })
}

/// Reads `path` and fits `law` to each arch's rows, see the module notes.
pub fn fit_csv(path: &Path, law: Law, bootstrap: Option<usize>, seed: u64) -> Result<Vec<ArchFit>, FitCsvError> {
    let rows = read_rows(path, law)?;
    let mut arches: Vec<Option<String>> = Vec::new();
    for r in &rows {
        if !arches.contains(&r.arch) {
            arches.push(r.arch.clone());
        }
    }
    let boot = bootstrap.filter(|&n| n > 0);
    arches
        .into_iter()
        .map(|arch| {
            let mine: Vec<&Row> = rows.iter().filter(|r| r.arch == arch).collect();
            fit_rows(&mine, law, boot, seed)
                .map(|fit| ArchFit { arch: arch.clone(), law, fit })
                .map_err(|source| FitCsvError::Fit { path: path.to_path_buf(), arch, source })
        })
        .collect()
}

fn fit_rows(rows: &[&Row], law: Law, boot: Option<usize>, seed: u64) -> Result<LawFit, FitError> {
    Ok(match law {
        Law::Power => {
            let pts = envelope(rows);
            LawFit::Power(match boot {
                Some(n) => fit_power_law_bootstrap(&pts, n, seed)?.0,
                None => fit_power_law(&pts)?,
            })
        }
        Law::Isoflop => {
            let pts: Vec<IsoflopPoint> =
                rows.iter().map(|r| IsoflopPoint { flops: r.flops, params: r.params, loss: r.loss }).collect();
            LawFit::Isoflop(match boot {
                Some(n) => fit_isoflop_bootstrap(&pts, n, seed)?.0,
                None => fit_isoflop(&pts)?,
            })
        }
        Law::Chinchilla => {
            let pts: Vec<ChinchillaPoint> =
                rows.iter().map(|r| ChinchillaPoint { params: r.params, tokens: r.tokens, loss: r.loss }).collect();
            LawFit::Chinchilla(match boot {
                Some(n) => fit_chinchilla_bootstrap(&pts, n, seed)?.0,
                None => fit_chinchilla(&pts)?,
            })
        }
    })
}

/// The lowest loss per FLOP budget, as `(flops, loss)` by increasing FLOPs.
fn envelope(rows: &[&Row]) -> Vec<(f64, f64)> {
    let pts: Vec<IsoflopPoint> =
        rows.iter().map(|r| IsoflopPoint { flops: r.flops, params: 1.0, loss: r.loss }).collect();
    budget_groups(&pts)
        .into_iter()
        .filter_map(|g| g.into_iter().map(|i| (pts[i].flops, pts[i].loss)).min_by(|a, b| a.1.total_cmp(&b.1)))
        .collect()
}

/// Column indices of the header; `None` for an absent column.
struct Columns {
    params: Option<usize>,
    tokens: Option<usize>,
    flops: Option<usize>,
    loss: Option<usize>,
    arch: Option<usize>,
    status: Option<usize>,
}

fn read_rows(path: &Path, law: Law) -> Result<Vec<Row>, FitCsvError> {
    let file = path.to_path_buf();
    let text = std::fs::read(path).map_err(|error| FitCsvError::Io { path: file.clone(), error })?;
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(text.as_slice());
    let csv_err = |error| FitCsvError::Csv { path: file.clone(), error };
    let header: Vec<String> = reader.headers().map_err(csv_err)?.iter().map(|h| h.to_ascii_lowercase()).collect();
    let find = |name: &str| header.iter().position(|h| h == name);
    let cols = Columns {
        params: find("params"),
        tokens: find("tokens"),
        flops: find("flops"),
        loss: find("loss"),
        arch: find("arch"),
        status: find("status"),
    };
    let needs = match law {
        Law::Power => "loss, and flops or params and tokens",
        Law::Isoflop => "params, loss, and flops or tokens",
        Law::Chinchilla => "params, tokens and loss",
    };
    let missing = |column: &'static str| FitCsvError::MissingColumn {
        path: file.clone(),
        law,
        column,
        needs,
        found: if header.is_empty() { "none".into() } else { header.join(", ") },
    };
    let has_flops = cols.flops.is_some();
    let need = |col: Option<usize>, name: &'static str| col.map(|_| ()).ok_or_else(|| missing(name));
    need(cols.loss, "loss")?;
    match law {
        Law::Power if !has_flops => {
            need(cols.params, "params")?;
            need(cols.tokens, "tokens")?;
        }
        Law::Power => {}
        Law::Isoflop => {
            need(cols.params, "params")?;
            if !has_flops {
                need(cols.tokens, "tokens")?;
            }
        }
        Law::Chinchilla => {
            need(cols.params, "params")?;
            need(cols.tokens, "tokens")?;
        }
    }
    let uses_params = law != Law::Power || !has_flops;
    let uses_tokens = law == Law::Chinchilla || !has_flops;
    let uses_flops = law != Law::Chinchilla && has_flops;

    let (mut rows, mut skipped) = (Vec::new(), 0);
    for record in reader.records() {
        let record = record.map_err(csv_err)?;
        let line = record.position().map_or(0, |p| p.line());
        if let Some(status) = cols.status.and_then(|i| record.get(i)) {
            if !status.is_empty() && !status.eq_ignore_ascii_case("completed") {
                skipped += 1;
                continue;
            }
        }
        let value = |col: Option<usize>, column: &'static str, used: bool| -> Result<f64, FitCsvError> {
            let Some(i) = col.filter(|_| used) else { return Ok(f64::NAN) };
            let raw = record.get(i).unwrap_or("");
            let v: f64 = raw.parse().map_err(|_| FitCsvError::NotNumeric {
                path: file.clone(),
                line,
                column,
                value: raw.to_string(),
            })?;
            if !(v.is_finite() && v > 0.0) {
                return Err(FitCsvError::NonPositive { path: file.clone(), line, column, value: v });
            }
            Ok(v)
        };
        let params = value(cols.params, "params", uses_params)?;
        let tokens = value(cols.tokens, "tokens", uses_tokens)?;
        let loss = value(cols.loss, "loss", true)?;
        let flops = if uses_flops { value(cols.flops, "flops", true)? } else { 6.0 * params * tokens };
        let arch = cols.arch.map(|i| record.get(i).unwrap_or("").to_string());
        rows.push(Row { arch, params, tokens, flops, loss });
    }
    if rows.is_empty() {
        return Err(FitCsvError::NoRows { path: file, skipped });
    }
    Ok(rows)
}

/// The fits as a pretty-printed JSON array, one object per arch (see [`crate::fit`] for the shape).
pub fn render_json(fits: &[ArchFit]) -> String {
    serde_json::to_string_pretty(fits).expect("fits serialise") + "\n"
}

/// The fits as text for a person: per arch the law, every parameter with its interval, warnings first.
pub fn render_text(path: &Path, fits: &[ArchFit]) -> String {
    let mut out = String::new();
    for f in fits {
        let arch = f.arch.as_deref().map(|a| format!("arch {a}: ")).unwrap_or_default();
        let _ = writeln!(out, "{}: {arch}{} fit", path.display(), f.law);
        match &f.fit {
            LawFit::Power(p) => {
                warn_unconverged(&mut out, p.converged);
                let _ =
                    writeln!(out, "  L(C) = E + A * C^(-alpha), fitted to {} budget(s) (lowest loss each)", p.n_points);
                params(&mut out, &[("E", p.e), ("A", p.a), ("alpha", p.alpha)]);
                let _ = writeln!(out, "  sum of squared log residuals: {:.3e}", p.rss);
                boot_line(&mut out, &p.bootstrap);
            }
            LawFit::Isoflop(p) => {
                for w in &p.warnings {
                    let _ = writeln!(out, "  WARNING: {w}");
                }
                let _ = writeln!(
                    out,
                    "  N* = k C^a, D* = k' C^b through {} budget minima ({} points)",
                    p.minima.len(),
                    p.n_points
                );
                params(&mut out, &[("a", p.a), ("b", p.b), ("k", p.k), ("k'", p.k_prime)]);
                let _ = writeln!(out, "  {:>11}  {:>28}  {:>28}  {:>26}  sizes", "C (FLOPs)", "N*", "D*", "L*");
                for m in &p.minima {
                    let _ = writeln!(
                        out,
                        "  {:>11}  {:>28}  {:>28}  {:>26}  {}{}",
                        sig4(m.flops),
                        m.n_opt.to_string(),
                        m.d_opt.to_string(),
                        m.loss_min.to_string(),
                        m.n_sizes,
                        if m.interior { "" } else { " (N* extrapolated)" }
                    );
                }
                boot_line(&mut out, &p.bootstrap);
            }
            LawFit::Chinchilla(p) => {
                warn_unconverged(&mut out, p.converged);
                let _ = writeln!(
                    out,
                    "  L(N, D) = E + A/N^alpha + B/D^beta, {} points, best of {} L-BFGS starts (Huber delta 1e-3 on log loss)",
                    p.n_points, p.n_starts
                );
                params(&mut out, &[("E", p.E), ("A", p.A), ("B", p.B), ("alpha", p.alpha), ("beta", p.beta)]);
                let _ = writeln!(out, "  frontier: N_opt(C) = G (C/6)^a, D_opt(C) = (C/6)^b / G");
                params(&mut out, &[("a", p.a), ("b", p.b), ("G", p.G)]);
                let _ = writeln!(out, "  summed Huber objective: {:.4e}", p.objective);
                boot_line(&mut out, &p.bootstrap);
            }
        }
    }
    out
}

fn warn_unconverged(out: &mut String, converged: bool) {
    if !converged {
        out.push_str(
            "  WARNING: the optimiser did not converge (converged: false); these numbers are not an optimum\n",
        );
    }
}

fn params(out: &mut String, ps: &[(&str, Estimate)]) {
    for (name, e) in ps {
        let _ = writeln!(out, "  {name:<6} = {e}");
    }
}

fn boot_line(out: &mut String, info: &Option<BootstrapInfo>) {
    match info {
        Some(b) => {
            let _ = writeln!(
                out,
                "  intervals: {:.0}% bootstrap percentile, {} resamples (seed {}, {} failed), {}; starts: {}",
                100.0 * b.level,
                b.n_resamples,
                b.seed,
                b.n_failed,
                b.resampling,
                b.starts
            );
        }
        None => out.push_str("  (point estimates; --bootstrap N adds intervals)\n"),
    }
}
