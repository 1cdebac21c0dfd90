//! The report's MAD section (when the directory holds `mad.json`): how the protocol was run and where it differs
//! from the published one; a candidates x tasks heatmap with the MAD score (an HTML table whose cells are
//! coloured by accuracy, sortable like the other tables); when the directory also holds language-modelling trials
//! of the same candidates, MAD score against compute-optimal loss; then one table per task, settings x candidates,
//! each cell the setting's best accuracy with the learning rate and weight decay that achieved it (the whole grid
//! in the cell's tooltip).
//!
//! Compute-optimal loss of an architecture on a language-modelling task: its best completed trial's final eval loss
//! at the task's largest budget (the last point of its compute-optimal envelope); when it has no completed trial
//! at that budget, its fitted power law's loss there (`L(C) = E + A C^-alpha`); otherwise it is left out. The table
//! under the plot says which applies.

use crate::html::{escape, num_cell};
use crate::mad::{spearman, MadCandidate, MadResults, MadSettingScore, LM_TASKS};
use crate::plot::{colour, span, text_anchor_center, HEIGHT, WIDTH};
use crate::summary::TaskSummary;
use crate::ReportError;
use plotters::prelude::*;
use std::fmt::Write as _;

/// Colour stops of the heatmap (viridis at 0, 1/4, 1/2, 3/4, 1).
const STOPS: [(u8, u8, u8); 5] = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)];

/// Background and text colour for an accuracy in [0, 1].
pub(crate) fn heat(v: f64) -> (String, &'static str) {
    let x = v.clamp(0.0, 1.0) * (STOPS.len() - 1) as f64;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f64;
    let mix = |a: u8, b: u8| (a as f64 + f * (b as f64 - a as f64)).round() as u8;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let bg = format!("#{:02x}{:02x}{:02x}", mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2));
    (bg, if v < 0.6 { "#fff" } else { "#111" })
}

/// A heatmap cell: coloured by `v`, sorted by `v`, `extra` HTML after the number, `title` as tooltip.
fn heat_cell(v: Option<f64>, extra: &str, title: &str) -> String {
    match v.filter(|v| v.is_finite()) {
        Some(v) => {
            let (bg, fg) = heat(v);
            format!(
                "<td class=\"num heat\" data-v=\"{v:e}\" style=\"background:{bg};color:{fg}\" title=\"{}\">{v:.3}{extra}</td>",
                escape(title)
            )
        }
        None => format!("<td class=\"num heat na\" data-v=\"\" title=\"{}\">&ndash;{extra}</td>", escape(title)),
    }
}

/// `*` with a tooltip when some parts were missing from a mean.
fn missing_mark(missing: usize, of: &str) -> String {
    if missing == 0 {
        String::new()
    } else {
        format!("<sup class=\"warn\" title=\"{missing} {of} without a result\">*</sup>")
    }
}

/// The short task name for headers: `mad_in_context_recall` -> `in context recall`.
fn short(task: &str) -> String {
    task.trim_start_matches("mad_").replace('_', " ")
}

pub(crate) fn mad_section(h: &mut String, mad: &MadResults, tasks: &[TaskSummary]) -> Result<(), ReportError> {
    let p = &mad.protocol;
    let _ = writeln!(
        h,
        "<section id=\"mad\">\n<h2>MAD: mechanistic architecture design</h2>\n<p>The MAD protocol (Poli et al. 2024): \
         each candidate trained on each task setting for {} epoch{} (batch {}, AdamW, cosine to 1e-6, seed {}) once per \
         learning rate in {{{}}} x weight decay in {{{}}}. A setting's score is the best test accuracy over that grid, \
         a task's score the mean over its settings, the MAD score the mean over the tasks. Accuracy is <code>{}</code> \
         on the positions the task labels{}.</p>",
        p.epochs,
        if p.epochs == 1 { "" } else { "s" },
        p.batch_size,
        p.seed,
        p.learning_rates.iter().map(|v| format!("{v:e}")).collect::<Vec<_>>().join(", "),
        p.weight_decays.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", "),
        escape(&p.metric),
        if p.metric == "macro_accuracy" {
            " (per class, then averaged over the classes, as the reference's torchmetrics default)"
        } else {
            ""
        }
    );
    if p.deviations.is_empty() {
        h.push_str("<p class=\"mad-protocol\">Run as published.</p>\n");
    } else {
        h.push_str("<p class=\"warn\">Not the published protocol; the scores are not comparable with published MAD scores:</p>\n<ul class=\"mad-deviations\">\n");
        for d in &p.deviations {
            let _ = writeln!(h, "<li>{}</li>", escape(d));
        }
        h.push_str("</ul>\n");
    }
    heatmap(h, mad);
    versus_lm(h, mad, tasks)?;
    h.push_str("<h3>Per task</h3>\n");
    for (ti, task) in mad.task_names().into_iter().enumerate() {
        task_table(h, mad, ti, task);
    }
    h.push_str("</section>\n");
    Ok(())
}

fn heatmap(h: &mut String, mad: &MadResults) {
    h.push_str(
        "<h3>Scores</h3>\n<p>Task scores and the MAD score of every candidate (0 to 1, higher is better; \
         <sup class=\"warn\">*</sup> marks a mean with missing parts: trials still running, failed or diverged). \
         Click a header to sort.</p>\n<table class=\"sortable mad-heatmap\">\n<thead><tr>\
         <th data-type=\"text\" tabindex=\"0\" aria-sort=\"none\">candidate</th>",
    );
    for task in mad.task_names() {
        let _ = write!(h, "<th data-type=\"num\" tabindex=\"0\" aria-sort=\"none\">{}</th>", escape(&short(task)));
    }
    h.push_str("<th data-type=\"num\" tabindex=\"0\" aria-sort=\"none\">MAD score</th></tr></thead>\n<tbody>\n");
    for c in &mad.candidates {
        let _ = write!(h, "<tr><td>{}</td>", escape(&c.label));
        for t in &c.tasks {
            let mark = missing_mark(t.missing, "settings");
            let title = format!("{}: {} of {} settings scored", t.task, t.settings.len() - t.missing, t.settings.len());
            h.push_str(&heat_cell(t.score, &mark, &title));
        }
        let mark = missing_mark(c.missing, "tasks");
        h.push_str(&heat_cell(c.score, &mark, &format!("mean of {} task scores", c.tasks.len() - c.missing)));
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table>\n<p class=\"legend\">accuracy <span class=\"ramp\"></span> 0 &rarr; 1</p>\n");
}

/// The grid of one setting as a tooltip.
fn grid_title(s: &MadSettingScore) -> String {
    let cells: Vec<String> = s
        .cells
        .iter()
        .map(|c| {
            let v = match (c.accuracy, c.status) {
                (Some(a), _) => format!("{a:.3}"),
                (None, Some(st)) => format!("{st:?}").to_lowercase(),
                (None, None) => "pending".into(),
            };
            format!("lr {:e}, wd {}: {v}", c.lr, c.weight_decay)
        })
        .collect();
    format!("{}; grid: {}", s.setting, cells.join("; "))
}

fn task_table(h: &mut String, mad: &MadResults, ti: usize, task: &str) {
    let _ = write!(h, "<h4>{}</h4>\n<table class=\"mad-task\">\n<thead><tr><th>setting</th>", escape(task));
    for c in &mad.candidates {
        let _ = write!(h, "<th>{}</th>", escape(&c.label));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    let settings: Vec<&str> = mad.candidates[0].tasks[ti].settings.iter().map(|s| s.setting.as_str()).collect();
    for (si, name) in settings.iter().enumerate() {
        let _ = write!(h, "<tr><td>{}</td>", escape(name));
        for c in &mad.candidates {
            let s = &c.tasks[ti].settings[si];
            let extra = s
                .best
                .as_ref()
                .map(|b| format!("<br><small>lr {:e}, wd {}</small>", b.lr, b.weight_decay))
                .unwrap_or_default();
            h.push_str(&heat_cell(s.best.as_ref().map(|b| b.accuracy), &extra, &grid_title(s)));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("<tr class=\"task-score\"><td><strong>task score</strong></td>");
    for c in &mad.candidates {
        let t = &c.tasks[ti];
        h.push_str(&heat_cell(t.score, &missing_mark(t.missing, "settings"), "mean over the settings"));
    }
    h.push_str("</tr>\n</tbody>\n</table>\n");
}

/// One point of the MAD-vs-loss plot.
struct LmPoint<'a> {
    cand: &'a MadCandidate,
    colour: usize,
    loss: f64,
    source: &'static str,
}

/// Compute-optimal loss per MAD candidate on one LM task (see the module docs).
fn lm_points<'a>(mad: &'a MadResults, t: &TaskSummary) -> Vec<LmPoint<'a>> {
    let max_budget = t.trials.iter().map(|r| r.budget_flops).filter(|b| b.is_finite()).fold(0.0, f64::max);
    mad.candidates
        .iter()
        .filter(|c| c.score.is_some())
        .filter_map(|cand| {
            let a = t.arch(&cand.arch)?;
            let at_max = a.envelope.last().filter(|p| (p.budget_flops - max_budget).abs() <= 1e-6 * max_budget);
            let (loss, source) = match (at_max, &a.fit) {
                (Some(p), _) => (p.loss, "best trial at the largest budget"),
                (None, Ok(f)) => (f.predict(max_budget), "fitted law at the largest budget"),
                (None, Err(_)) => return None,
            };
            loss.is_finite().then_some(LmPoint { cand, colour: a.colour, loss, source })
        })
        .collect()
}

fn versus_lm(h: &mut String, mad: &MadResults, tasks: &[TaskSummary]) -> Result<(), ReportError> {
    h.push_str("<h3>MAD score against compute-optimal loss</h3>\n");
    let lm: Vec<&TaskSummary> = tasks.iter().filter(|t| LM_TASKS.contains(&t.task.as_str())).collect();
    let mut drew = false;
    for t in lm {
        let pts = lm_points(mad, t);
        if pts.is_empty() {
            continue;
        }
        drew = true;
        let svg = versus_svg(&t.task, &pts)?;
        let pairs: Vec<(f64, f64)> = pts.iter().map(|p| (p.loss, p.cand.score.unwrap_or(f64::NAN))).collect();
        let rho = spearman(&pairs).map_or("needs 3 candidates".to_string(), |r| format!("{r:.2}"));
        let _ = writeln!(
            h,
            "<figure class=\"plot mad-vs-loss\">\n{svg}\n<figcaption>Each candidate's MAD score against its \
             compute-optimal loss on {} (its best completed trial's final eval loss at the task's largest budget, \
             or its fitted power law there when it has no trial at that budget). The MAD paper's check: a better \
             MAD score should go with a lower loss (Spearman &rho; negative). Spearman &rho; = {}.</figcaption>\n</figure>",
            escape(&t.task),
            escape(&rho)
        );
        h.push_str("<table class=\"mad-vs-loss\">\n<thead><tr><th>candidate</th><th>compute-optimal loss</th><th>from</th><th>MAD score</th></tr></thead>\n<tbody>\n");
        for p in &pts {
            let _ = writeln!(
                h,
                "<tr><td>{}</td>{}<td>{}</td>{}</tr>",
                escape(&p.cand.label),
                num_cell(Some(p.loss), |v| format!("{v:.4}")),
                p.source,
                num_cell(p.cand.score, |v| format!("{v:.3}"))
            );
        }
        h.push_str("</tbody>\n</table>\n");
    }
    if !drew {
        h.push_str(
            "<p class=\"na\">No language-modelling trials of these candidates in this directory. Run <code>workbench \
             sweep</code> on a space with a <code>bytes</code> task and the same candidate names into the same \
             directory to compare MAD scores with compute-optimal loss.</p>\n",
        );
    }
    Ok(())
}

/// MAD score (y) against compute-optimal loss (x), one labelled dot per candidate.
fn versus_svg(task: &str, pts: &[LmPoint]) -> Result<String, ReportError> {
    let err = |e: &dyn std::fmt::Display| ReportError::Plot { task: format!("MAD vs {task}"), message: e.to_string() };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let xs = span(pts.iter().map(|p| p.loss), false);
        let ys = span(pts.iter().filter_map(|p| p.cand.score), false);
        let (Some((x_lo, x_hi)), Some((y_lo, y_hi))) = (xs, ys) else {
            let style = ("sans-serif", 18).into_font().color(&BLACK).pos(text_anchor_center());
            root.draw_text("no points", &style, (WIDTH as i32 / 2, HEIGHT as i32 / 2)).map_err(|e| err(&e))?;
            root.present().map_err(|e| err(&e))?;
            drop(root);
            return Ok(svg);
        };
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("MAD score vs compute-optimal loss on {task}"), ("sans-serif", 22))
            .margin(14)
            .x_label_area_size(48)
            .y_label_area_size(70)
            .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc(format!("compute-optimal eval loss on {task} (nats/token)"))
            .y_desc("MAD score")
            .x_label_formatter(&|v| format!("{v:.3}"))
            .y_label_formatter(&|v| format!("{v:.2}"))
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 16))
            .light_line_style(WHITE)
            .draw()
            .map_err(|e| err(&e))?;
        for p in pts {
            let (c, y) = (colour(p.colour), p.cand.score.unwrap_or(f64::NAN));
            chart.draw_series([Circle::new((p.loss, y), 6, c.filled())]).map_err(|e| err(&e))?;
            let style = ("sans-serif", 14).into_font().color(&BLACK);
            let at = (p.loss + 0.015 * (x_hi - x_lo), y + 0.02 * (y_hi - y_lo));
            chart.draw_series([Text::new(p.cand.label.clone(), at, style)]).map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}
