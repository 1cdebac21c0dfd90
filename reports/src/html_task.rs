//! One task's section of the report: plots, leaderboard, fitted laws, extrapolation, isoFLOP fits, frontier,
//! and every candidate.
//!
//! Numeric cells carry their value in `data-v` so the page's sort script orders them numerically; a value with a
//! bootstrap interval shows as `0.150 [0.142, 0.158]` and sorts by its point estimate. A fit that did not
//! converge is shown with a visible warning, a missing fit with the reason (never a blank or a silent number).

use crate::fit::{sig4, Estimate, FitError};
use crate::html::{escape, num_cell, si, status_text};
use crate::plot::{colour_hex, loss_vs_flops_svg};
use crate::plot_scaling::{frontier_svg, isoflop_svg};
use crate::result::TrialResult;
use crate::summary::{ArchSummary, TaskSummary, EXTRAPOLATION_FACTORS};
use crate::ReportError;
use std::fmt::Write as _;

/// A numeric cell for an estimate: the value with its interval, sorted by the value.
fn est_cell(e: Option<Estimate>) -> String {
    num_cell(e.map(|e| e.value), |_| e.map(|e| e.to_string()).unwrap_or_default())
}

/// A sortable table's header row; `(name, numeric)` per column.
fn sortable_head(h: &mut String, class: &str, heads: &[(&str, bool)]) {
    let _ = write!(h, "<table class=\"sortable {class}\">\n<thead><tr>");
    for (name, numeric) in heads {
        let ty = if *numeric { "num" } else { "text" };
        let _ = write!(
            h,
            "<th data-type=\"{ty}\" tabindex=\"0\" aria-sort=\"none\" title=\"click to sort\">{}</th>",
            escape(name)
        );
    }
    h.push_str("</tr></thead>\n<tbody>\n");
}

/// The arch's name with its colour swatch.
fn arch_cell(a: &ArchSummary) -> String {
    format!("<td><span class=\"swatch\" style=\"background:{}\"></span>{}</td>", colour_hex(a.colour), escape(&a.arch))
}

/// Why a fit is missing, for a table cell.
fn why_missing(e: &FitError) -> String {
    match e {
        FitError::TooFewPoints { got, need, .. } => format!("needs {need} budgets, has {got}"),
        e => format!("no fit: {e}"),
    }
}

pub(crate) fn task_section(h: &mut String, i: usize, t: &TaskSummary) -> Result<(), ReportError> {
    let _ = writeln!(h, "<section id=\"task-{i}\">\n<h2>Task: {}</h2>", escape(&t.task));
    let svg = loss_vs_flops_svg(t)?;
    let _ = writeln!(
        h,
        "<figure class=\"plot loss-vs-flops\">\n{svg}\n<figcaption>Eval loss of every completed trial against \
         training FLOPs (thin lines), final points (dots), each architecture's fitted law (dashed) with its 95% \
         bootstrap band (shaded), and the law extrapolated to 10x and 100x the largest budget (hollow circles with \
         their intervals, in the grey extrapolation region).</figcaption>\n</figure>"
    );
    leaderboard(h, t);
    power_fits(h, t);
    extrapolation(h, t);
    isoflop_section(h, t)?;
    candidates(h, t);
    h.push_str("</section>\n");
    Ok(())
}

/// One row per arch: its best run at its largest budget, and its fitted exponents.
fn leaderboard(h: &mut String, t: &TaskSummary) {
    h.push_str(
        "<h3>Leaderboard</h3>\n<p>Per architecture, its best completed trial (lowest final eval loss) at its \
         largest budget; &alpha; is the power law's exponent in compute, a and b the isoFLOP exponents of \
         N*&nbsp;&prop;&nbsp;C<sup>a</sup> and D*&nbsp;&prop;&nbsp;C<sup>b</sup>, with 95% bootstrap intervals. \
         Sorted by final loss; click a header to sort.</p>\n",
    );
    sortable_head(
        h,
        "leaderboard",
        &[
            ("arch", false),
            ("params (best)", true),
            ("FLOPs/token", true),
            ("state size", true),
            ("budget (FLOPs)", true),
            ("final loss", true),
            ("\u{3b1} (power law)", true),
            ("a (N* exponent)", true),
            ("b (D* exponent)", true),
        ],
    );
    let best = |a: &ArchSummary| -> Option<&TrialResult> {
        a.best_trial_id().and_then(|id| t.trials.iter().copied().find(|r| r.id == id))
    };
    let mut rows: Vec<(&ArchSummary, Option<&TrialResult>)> = t.arches.iter().map(|a| (a, best(a))).collect();
    rows.sort_by(|x, y| {
        let loss = |r: Option<&TrialResult>| r.and_then(|r| r.final_eval_loss).unwrap_or(f64::INFINITY);
        loss(x.1).total_cmp(&loss(y.1))
    });
    for (a, r) in rows {
        let iso = a.isoflop.as_ref().ok();
        let _ = writeln!(
            h,
            "<tr>{}{}{}{}{}{}{}{}{}</tr>",
            arch_cell(a),
            num_cell(r.map(|r| r.params as f64), si),
            num_cell(r.map(|r| r.flops_per_token), |v| format!("{v:.3e}")),
            num_cell(r.map(|r| r.state_size as f64), si),
            num_cell(r.map(|r| r.budget_flops), |v| format!("{v:.2e}")),
            num_cell(r.and_then(|r| r.final_eval_loss), |v| format!("{v:.4}")),
            est_cell(a.fit.as_ref().ok().map(|f| f.alpha)),
            est_cell(iso.map(|f| f.a)),
            est_cell(iso.map(|f| f.b)),
        );
    }
    h.push_str("</tbody>\n</table>\n");
}

/// The power law per arch, with intervals and its convergence.
fn power_fits(h: &mut String, t: &TaskSummary) {
    h.push_str(
        "<h3>Fitted laws: L(C) = E + A &middot; C<sup>&minus;&alpha;</sup></h3>\n<p>Fitted to the lowest \
         final eval loss per budget of each architecture (completed trials only), C in FLOPs spent; least squares \
         on log loss, L-BFGS.</p>\n<table class=\"fits\">\n<thead><tr><th>arch</th><th>E</th><th>A</th>\
         <th>&alpha;</th><th>points</th><th>converged</th><th>RSS of ln L</th><th>bootstrap</th></tr></thead>\n\
         <tbody>\n",
    );
    for a in &t.arches {
        h.push_str("<tr>");
        h.push_str(&arch_cell(a));
        match &a.fit {
            Ok(f) => {
                let conv = if f.converged { "yes".to_string() } else { warn("no: not an optimum") };
                let boot = f.bootstrap.as_ref().map_or(String::new(), |b| {
                    format!("{} of {} resamples", b.n_resamples - b.n_failed, b.n_resamples)
                });
                let _ = write!(
                    h,
                    "<td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                     <td class=\"num\">{}</td><td>{conv}</td><td class=\"num\">{:.2e}</td><td>{boot}</td>",
                    f.e, f.a, f.alpha, f.n_points, f.rss
                );
            }
            Err(e) => {
                let _ = write!(h, "<td colspan=\"7\" class=\"na\">{}</td>", escape(&why_missing(e)));
            }
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table>\n");
}

fn warn(text: &str) -> String {
    format!("<span class=\"warn\">&#9888; {}</span>", escape(text))
}

/// The power law's loss at 10x and 100x the task's largest budget.
fn extrapolation(h: &mut String, t: &TaskSummary) {
    let Some(max_budget) =
        t.trials.iter().map(|r| r.budget_flops).filter(|b| b.is_finite() && *b > 0.0).reduce(f64::max)
    else {
        return;
    };
    let _ = writeln!(
        h,
        "<h3>Extrapolation</h3>\n<p class=\"extrapolation\">Extrapolated, not measured: each architecture's \
         fitted law at {} the largest budget of this task ({} FLOPs), with the 95% bootstrap interval of the \
         prediction. Architectures without a fitted law are left out.</p>",
        EXTRAPOLATION_FACTORS.map(|k| format!("{k}x")).join(" and "),
        sig4(max_budget)
    );
    let heads: Vec<String> = EXTRAPOLATION_FACTORS
        .iter()
        .map(|k| format!("loss at {} FLOPs ({k}x, extrapolated)", sig4(k * max_budget)))
        .collect();
    let mut cols = vec![("arch", false)];
    cols.extend(heads.iter().map(|s| (s.as_str(), true)));
    sortable_head(h, "extrapolated", &cols);
    for a in t.arches.iter().filter(|a| !a.extrapolated.is_empty()) {
        h.push_str("<tr>");
        h.push_str(&arch_cell(a));
        for (_, e) in &a.extrapolated {
            h.push_str(&est_cell(Some(*e)));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table>\n");
}

/// isoFLOP curves per arch, the approach-2 fits, and the compute-optimal frontier.
fn isoflop_section(h: &mut String, t: &TaskSummary) -> Result<(), ReportError> {
    h.push_str(
        "<h3>isoFLOP curves (Chinchilla approach 2)</h3>\n<p>Per FLOP budget, a least-squares parabola of the \
         final loss in ln N (N = all trainable parameters) over the trials of that budget; its minimum (cross) is \
         the compute-optimal size N*(C), and D*(C) = C / (6 N*). Drawn for each architecture with at least three \
         sizes in some budget.</p>\n",
    );
    for a in t.arches.iter().filter(|a| a.has_isoflop_curve()) {
        let svg = isoflop_svg(&t.task, a)?;
        let _ = writeln!(
            h,
            "<figure class=\"plot isoflop\">\n{svg}\n<figcaption>{}: final loss against parameters, one colour \
             per budget, with each budget's parabola and its minimum.</figcaption>\n</figure>",
            escape(&a.arch)
        );
    }
    h.push_str(
        "<table class=\"fits isoflop-fits\">\n<thead><tr><th>arch</th><th>a</th><th>b</th><th>k</th><th>k&prime;</th>\
         <th>budgets (C: N*)</th><th>warnings</th></tr></thead>\n<tbody>\n",
    );
    for a in &t.arches {
        h.push_str("<tr>");
        h.push_str(&arch_cell(a));
        match &a.isoflop {
            Ok(f) => {
                let minima: Vec<String> = f.minima.iter().map(|m| format!("{}: {}", sig4(m.flops), m.n_opt)).collect();
                let warnings: Vec<String> = f.warnings.iter().map(|w| warn(w)).collect();
                let _ = write!(
                    h,
                    "<td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                     <td>{}</td><td>{}</td>",
                    f.a,
                    f.b,
                    f.k,
                    f.k_prime,
                    escape(&minima.join("; ")),
                    warnings.join("<br>")
                );
            }
            Err(e) => {
                let _ = write!(h, "<td colspan=\"6\" class=\"na\">{}</td>", escape(&e.to_string()));
            }
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table>\n<h3>Compute-optimal frontier</h3>\n");
    if t.arches.iter().any(|a| a.isoflop.is_ok()) {
        let svg = frontier_svg(t)?;
        let _ = writeln!(
            h,
            "<figure class=\"plot frontier\">\n{svg}\n<figcaption>N*(C) and D*(C) per architecture: isoFLOP minima \
             (dots, 95% bootstrap intervals as bars) and the fitted power laws (lines; dashed where extrapolated \
             beyond the largest budget, up to 100x).</figcaption>\n</figure>"
        );
    } else {
        h.push_str(
            "<p class=\"na\">No architecture has an isoFLOP fit on this task, so there is no frontier to draw \
             (it needs two budgets with three sizes each).</p>\n",
        );
    }
    Ok(())
}

/// Every trial of the task.
fn candidates(h: &mut String, t: &TaskSummary) {
    // Candidates: every trial of the task.
    let has_acc = t.trials.iter().any(|r| r.final_metrics.contains_key("accuracy"));
    let mut heads = vec![
        ("label", false),
        ("arch", false),
        ("params", true),
        ("FLOPs/token", true),
        ("state size", true),
        ("budget (FLOPs)", true),
        ("final eval loss", true),
    ];
    if has_acc {
        heads.push(("accuracy", true));
    }
    heads.push(("status", false));
    h.push_str("<h3>Candidates</h3>\n");
    sortable_head(h, "candidates", &heads);
    let mut rows = t.trials.clone();
    rows.sort_by(|a, b| {
        (a.arch.as_str(), a.budget_flops, a.params)
            .partial_cmp(&(b.arch.as_str(), b.budget_flops, b.params))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    for r in rows {
        let status_class = format!("status-{:?}", r.status).to_lowercase();
        let _ = write!(
            h,
            "<tr><td title=\"{}\">{}</td><td>{}</td>{}{}{}{}{}",
            escape(&r.id),
            escape(&r.label),
            escape(&r.arch),
            num_cell(Some(r.params as f64), si),
            num_cell(Some(r.flops_per_token), |v| format!("{v:.3e}")),
            num_cell(Some(r.state_size as f64), si),
            num_cell(Some(r.budget_flops), |v| format!("{v:.2e}")),
            num_cell(r.final_eval_loss, |v| format!("{v:.4}")),
        );
        if has_acc {
            h.push_str(&num_cell(r.final_metrics.get("accuracy").copied(), |v| format!("{v:.4}")));
        }
        let _ = writeln!(h, "<td class=\"{status_class}\">{}</td></tr>", escape(&status_text(r)));
    }
    h.push_str("</tbody>\n</table>\n");
}
