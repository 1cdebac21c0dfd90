//! The scaling plots beside the loss-vs-FLOPs plot: isoFLOP curves per arch and the compute-optimal frontier.
//!
//! Same conventions as [`crate::plot`]: plotters' `SVGBackend` into a `String`, axis ranges computed here (so odd
//! data gives a plain plot, not a panic), one colour per arch across the report, text as `<text>` elements.

use crate::fit::isoflop::{budget_groups, fit_parabola};
use crate::fit::sig4;
use crate::plot::{colour, positive, span, text_anchor_center, HEIGHT, WIDTH};
use crate::summary::{ArchSummary, TaskSummary, EXTRAPOLATION_FACTORS};
use crate::ReportError;
use plotters::coord::Shift;
use plotters::prelude::*;

/// Points of each fitted curve.
const SAMPLES: usize = 64;

fn plot_err(task: &str) -> impl Fn(&dyn std::fmt::Display) -> ReportError + '_ {
    move |e| ReportError::Plot { task: task.to_string(), message: e.to_string() }
}

/// Loss against parameters (log x) for one arch on one task: one colour per FLOP budget, the trials as dots,
/// each budget's least-squares parabola in `ln N` (where it has 3 or more sizes) as a line, and its minimum
/// `N*` as a large cross. Returns a standalone `<svg>` element.
pub fn isoflop_svg(task: &str, arch: &ArchSummary) -> Result<String, ReportError> {
    let err = plot_err(task);
    let pts = &arch.iso_points;
    let groups = budget_groups(pts);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let (Some((x_lo, x_hi)), Some((y_lo, y_hi))) =
            (span(pts.iter().map(|p| p.params), true), span(pts.iter().map(|p| p.loss), false))
        else {
            return empty(root, &format!("{}: no completed trial to draw", arch.arch), &err).map(|_| svg);
        };
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{task}: {} isoFLOP curves", arch.arch), ("sans-serif", 22))
            .margin(14)
            .x_label_area_size(48)
            .y_label_area_size(70)
            .build_cartesian_2d((x_lo..x_hi).log_scale(), y_lo..y_hi)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("parameters N (log scale)")
            .y_desc("final eval loss")
            .x_label_formatter(&|v| format!("{v:.0e}"))
            .x_labels(6)
            .y_label_formatter(&|v| format!("{v:.3}"))
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 16))
            .light_line_style(WHITE)
            .draw()
            .map_err(|e| err(&e))?;
        for (gi, g) in groups.iter().enumerate() {
            let c = colour(gi);
            let budget = (g.iter().map(|&i| pts[i].flops.ln()).sum::<f64>() / g.len() as f64).exp();
            let dots = g.iter().map(|&i| Circle::new((pts[i].params, pts[i].loss), 4, c.filled()));
            chart
                .draw_series(dots)
                .map_err(|e| err(&e))?
                .label(format!("C = {}", sig4(budget)))
                .legend(move |(x, y)| Circle::new((x + 8, y), 4, c.filled()));
            let ns: Vec<f64> = g.iter().map(|&i| pts[i].params).collect();
            let ls: Vec<f64> = g.iter().map(|&i| pts[i].loss).collect();
            let Ok(parabola) = fit_parabola(&ns, &ls) else { continue };
            let (lo, hi) = ns.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &n| (lo.min(n), hi.max(n)));
            let (lo, hi) = ((lo / 1.3).max(x_lo), (hi * 1.3).min(x_hi));
            let curve: Vec<(f64, f64)> = (0..SAMPLES)
                .map(|k| lo * (hi / lo).powf(k as f64 / (SAMPLES - 1) as f64))
                .map(|n| (n, parabola.at(n)))
                .filter(|&(_, l)| l.is_finite() && l >= y_lo && l <= y_hi)
                .collect();
            chart.draw_series(LineSeries::new(curve, c.stroke_width(2))).map_err(|e| err(&e))?;
            if let Some((n, l)) = parabola.minimum().filter(|&(n, l)| n >= x_lo && n <= x_hi && l >= y_lo && l <= y_hi)
            {
                chart.draw_series([Cross::new((n, l), 8, c.stroke_width(3))]).map_err(|e| err(&e))?;
            }
        }
        legend(&mut chart, &err)?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

/// The compute-optimal frontier of every arch with an isoFLOP fit: `N*(C)` (left) and `D*(C)` (right), log-log.
/// Each arch's per-budget minima are dots with their bootstrap interval as a bar; its fitted power law is a line
/// over the budgets, dashed beyond them up to 100x the largest budget in a grey region labelled "extrapolation".
pub fn frontier_svg(task: &TaskSummary) -> Result<String, ReportError> {
    let err = plot_err(&task.task);
    let fitted: Vec<_> = task.arches.iter().filter_map(|a| a.isoflop.as_ref().ok().map(|f| (a, f))).collect();
    let budgets = || fitted.iter().flat_map(|(_, f)| f.minima.iter().map(|m| m.flops));
    let data_hi = budgets().fold(0.0, f64::max);
    let far = EXTRAPOLATION_FACTORS.iter().fold(1.0f64, |a, &b| a.max(b)) * data_hi;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let Some((x_lo, x_hi)) = span(budgets().chain([far]).filter(|c| positive(*c)), true) else {
            return empty(root, &format!("{}: no isoFLOP fit yet", task.task), &err).map(|_| svg);
        };
        let (left, right) = root.split_horizontally(WIDTH / 2);
        for (panel, which) in [(left, "N*"), (right, "D*")] {
            let value = |f: &crate::fit::IsoflopFit, c: f64| if which == "N*" { f.n_opt(c) } else { f.d_opt(c) };
            let y_vals = fitted.iter().flat_map(|(_, f)| {
                let ends = [x_lo, x_hi].map(|c| value(f, c));
                f.minima.iter().map(|m| if which == "N*" { m.n_opt.value } else { m.d_opt.value }).chain(ends)
            });
            let Some((y_lo, y_hi)) = span(y_vals.filter(|v| positive(*v)), true) else { continue };
            let desc = if which == "N*" { "N*(C): parameters" } else { "D*(C) = C/(6N*): tokens" };
            let mut chart = ChartBuilder::on(&panel)
                .caption(format!("{}: {desc}", task.task), ("sans-serif", 18))
                .margin(10)
                .x_label_area_size(44)
                .y_label_area_size(64)
                .build_cartesian_2d((x_lo..x_hi).log_scale(), (y_lo..y_hi).log_scale())
                .map_err(|e| err(&e))?;
            chart
                .configure_mesh()
                .x_desc("training FLOPs C")
                .y_desc(which)
                .x_label_formatter(&|v| format!("{v:.0e}"))
                .y_label_formatter(&|v| format!("{v:.0e}"))
                .x_labels(5)
                .label_style(("sans-serif", 13))
                .axis_desc_style(("sans-serif", 14))
                .light_line_style(WHITE)
                .draw()
                .map_err(|e| err(&e))?;
            if data_hi < x_hi {
                let grey = BLACK.mix(0.06).filled();
                chart.draw_series([Rectangle::new([(data_hi, y_lo), (x_hi, y_hi)], grey)]).map_err(|e| err(&e))?;
                let style = ("sans-serif", 13).into_font().color(&BLACK.mix(0.6));
                let at = (data_hi * 1.15, y_lo * (y_hi / y_lo).powf(0.04));
                chart.draw_series([Text::new("extrapolation", at, style)]).map_err(|e| err(&e))?;
            }
            for (arch, fit) in &fitted {
                let c = colour(arch.colour);
                let line = |from: f64, to: f64| -> Vec<(f64, f64)> {
                    (0..SAMPLES)
                        .map(|k| from * (to / from).powf(k as f64 / (SAMPLES - 1) as f64))
                        .map(|x| (x, value(fit, x)))
                        .filter(|&(_, y)| y >= y_lo && y <= y_hi)
                        .collect()
                };
                let solid = line(x_lo, data_hi);
                let style = ShapeStyle { color: c.to_rgba(), filled: false, stroke_width: 2 };
                chart
                    .draw_series(LineSeries::new(solid, style))
                    .map_err(|e| err(&e))?
                    .label(format!(
                        "{} (exponent {:.3})",
                        arch.arch,
                        if which == "N*" { fit.a.value } else { fit.b.value }
                    ))
                    .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], c.filled()));
                chart.draw_series(DashedLineSeries::new(line(data_hi, x_hi), 6, 4, style)).map_err(|e| err(&e))?;
                for m in &fit.minima {
                    let e = if which == "N*" { m.n_opt } else { m.d_opt };
                    if let Some([lo, hi]) = e.ci {
                        let bar = vec![(m.flops, lo.clamp(y_lo, y_hi)), (m.flops, hi.clamp(y_lo, y_hi))];
                        chart.draw_series([PathElement::new(bar, c.stroke_width(2))]).map_err(|e| err(&e))?;
                    }
                    chart.draw_series([Circle::new((m.flops, e.value), 4, c.filled())]).map_err(|e| err(&e))?;
                }
            }
            legend(&mut chart, &err)?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

fn legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    err: &impl Fn(&dyn std::fmt::Display) -> ReportError,
) -> Result<(), ReportError>
where
    CT::From: Clone,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(|e| err(&e))
}

/// A blank plot with a centred message.
fn empty<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    msg: &str,
    err: &impl Fn(&dyn std::fmt::Display) -> ReportError,
) -> Result<(), ReportError> {
    let style = ("sans-serif", 18).into_font().color(&BLACK).pos(text_anchor_center());
    root.draw_text(msg, &style, (WIDTH as i32 / 2, HEIGHT as i32 / 2)).map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}
