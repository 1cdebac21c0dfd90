//! Inline SVG plots drawn with plotters' `SVGBackend` into a `String`.
//!
//! plotters is built without a font feature, so it lays text out with a naive width estimate
//! (0.7 em per character); the SVG still carries every label as a `<text>` element and the browser renders it
//! with its own fonts. Axis ranges are computed here, never by plotters, so empty or degenerate data (one point,
//! all-equal values) gives a valid, if plain, plot instead of a panic.

use crate::summary::TaskSummary;
use crate::ReportError;
use plotters::prelude::*;

/// Plot width in SVG pixels (the HTML scales the plot to the page width).
pub const WIDTH: u32 = 760;
/// Plot height in SVG pixels.
pub const HEIGHT: u32 = 460;

/// Tableau 10: one colour per architecture, chosen by `ArchSummary::colour` (wrapping after ten).
pub const PALETTE: [(u8, u8, u8); 20] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    // A second ten, darker or lighter, so a zoo of up to 20 architectures keeps distinct colours.
    (0, 63, 92),
    (166, 86, 0),
    (0, 100, 0),
    (128, 0, 38),
    (84, 39, 143),
    (253, 174, 97),
    (102, 194, 165),
    (50, 50, 50),
    (128, 128, 0),
    (0, 128, 128),
];

/// Points of the fitted law drawn per arch (log-spaced over the x range).
const FIT_SAMPLES: usize = 64;

/// The palette colour for index `i`.
pub(crate) fn colour(i: usize) -> RGBColor {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    RGBColor(r, g, b)
}

/// The palette colour for index `i` as CSS `#rrggbb`.
pub fn colour_hex(i: usize) -> String {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// What gets drawn for one arch: eval-loss curves, final points, the fitted law.
struct ArchSeries {
    label: String,
    colour: RGBColor,
    /// One line per completed trial: (training FLOPs, eval loss), sorted by FLOPs.
    curves: Vec<Vec<(f64, f64)>>,
    /// (FLOPs spent, final eval loss) of each completed trial.
    finals: Vec<(f64, f64)>,
    fit: Option<crate::fit::PowerLawFit>,
    /// Bootstrap resamples of the fit, for its band.
    resamples: Option<crate::fit::Resamples<crate::fit::PowerLawFit>>,
    /// The fit's extrapolated losses: (FLOPs, loss, interval).
    extrapolated: Vec<(f64, f64, Option<[f64; 2]>)>,
}

pub(crate) fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

fn collect_series(task: &TaskSummary) -> Vec<ArchSeries> {
    use crate::result::Status;
    task.arches
        .iter()
        .map(|a| {
            let done = || task.trials.iter().filter(|r| r.arch == a.arch && r.status == Status::Completed);
            let curves = done()
                .map(|r| {
                    let mut c: Vec<(f64, f64)> = r
                        .curve
                        .iter()
                        .filter_map(|p| p.eval_loss.map(|l| (p.flops, l)))
                        .filter(|&(f, l)| positive(f) && l.is_finite())
                        .collect();
                    c.sort_by(|p, q| p.0.total_cmp(&q.0));
                    c
                })
                .filter(|c| !c.is_empty())
                .collect();
            let finals = done()
                .filter_map(|r| {
                    let f = if positive(r.flops_spent) { r.flops_spent } else { r.budget_flops };
                    r.final_eval_loss.map(|l| (f, l))
                })
                .filter(|&(f, l)| positive(f) && l.is_finite())
                .collect();
            ArchSeries {
                label: a.arch.clone(),
                colour: colour(a.colour),
                curves,
                finals,
                fit: a.fit.as_ref().ok().cloned(),
                resamples: a.fit_resamples.clone(),
                extrapolated: a.extrapolated.iter().map(|(c, e)| (*c, e.value, e.ci)).collect(),
            }
        })
        .collect()
}

/// `[lo, hi]` of `v` widened by `pad(lo, hi)`; `None` for no values. Equal values get a non-zero span.
pub(crate) fn span(v: impl Iterator<Item = f64>, log: bool) -> Option<(f64, f64)> {
    let (lo, hi) = v.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)));
    if !(lo.is_finite() && hi.is_finite()) {
        return None;
    }
    if log {
        // Pad 4% of the decades on each side, at least a quarter decade when all x are equal.
        let decades = (hi / lo).log10();
        let pad = if decades > 0.0 { 0.04 * decades } else { 0.25 };
        Some((lo / 10f64.powf(pad), hi * 10f64.powf(pad)))
    } else {
        let pad = if hi > lo { 0.06 * (hi - lo) } else { 0.05 * lo.abs().max(1.0) };
        Some((lo - pad, hi + pad))
    }
}

/// Loss against training FLOPs (log x) for one task: each completed trial's eval-loss curve as a thin line,
/// each arch's final points as dots, its fitted law as a dashed line inside its shaded 95% bootstrap band, and
/// the law's extrapolations to 10x and 100x the largest budget as hollow circles with interval bars in a grey
/// region labelled "extrapolation"; one colour per arch; legend.
/// Returns a standalone `<svg>` element (`WIDTH` x `HEIGHT`).
pub fn loss_vs_flops_svg(task: &TaskSummary) -> Result<String, ReportError> {
    let err = |e: &dyn std::fmt::Display| ReportError::Plot { task: task.task.clone(), message: e.to_string() };
    let series = collect_series(task);
    let data_xs = || series.iter().flat_map(|s| s.curves.iter().flatten().chain(&s.finals).map(|p| p.0));
    let xs = || data_xs().chain(series.iter().flat_map(|s| s.extrapolated.iter().map(|p| p.0)));
    let ys = || {
        let extra = series.iter().flat_map(|s| s.extrapolated.iter().map(|p| p.1));
        series.iter().flat_map(|s| s.curves.iter().flatten().chain(&s.finals).map(|p| p.1)).chain(extra)
    };
    // Where the data end and extrapolation begins.
    let data_hi = data_xs().fold(0.0, f64::max);

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let (Some((x_lo, x_hi)), Some((y_lo, y_hi))) = (span(xs(), true), span(ys(), false)) else {
            let style = ("sans-serif", 18).into_font().color(&BLACK).pos(text_anchor_center());
            let msg = format!("{}: no completed trial with an eval loss yet", task.task);
            root.draw_text(&msg, &style, (WIDTH as i32 / 2, HEIGHT as i32 / 2)).map_err(|e| err(&e))?;
            root.present().map_err(|e| err(&e))?;
            drop(root);
            return Ok(svg);
        };

        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{}: eval loss vs training FLOPs", task.task), ("sans-serif", 22))
            .margin(14)
            .x_label_area_size(48)
            .y_label_area_size(70)
            .build_cartesian_2d((x_lo..x_hi).log_scale(), y_lo..y_hi)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("training FLOPs (log scale)")
            .y_desc("eval loss (nats/token)")
            .x_label_formatter(&|v| format!("{v:.0e}"))
            .y_label_formatter(&|v| format!("{v:.3}"))
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 16))
            .light_line_style(WHITE)
            .draw()
            .map_err(|e| err(&e))?;

        let extrapolating = series.iter().any(|s| !s.extrapolated.is_empty());
        if extrapolating && data_hi > x_lo && data_hi < x_hi {
            let grey = BLACK.mix(0.06).filled();
            chart.draw_series([Rectangle::new([(data_hi, y_lo), (x_hi, y_hi)], grey)]).map_err(|e| err(&e))?;
            let style = ("sans-serif", 14).into_font().color(&BLACK.mix(0.6));
            let at = (data_hi * (x_hi / data_hi).powf(0.08), y_lo + 0.04 * (y_hi - y_lo));
            chart.draw_series([Text::new("extrapolation", at, style)]).map_err(|e| err(&e))?;
        }
        for s in &series {
            let c = s.colour;
            // An empty series that only carries the arch's legend entry.
            chart
                .draw_series(LineSeries::new(std::iter::empty::<(f64, f64)>(), c.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(s.label.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], c.filled()));
            for curve in &s.curves {
                let style = c.mix(0.45).stroke_width(1);
                chart.draw_series(LineSeries::new(curve.iter().copied(), style)).map_err(|e| err(&e))?;
            }
            let dots = s.finals.iter().map(|&p| Circle::new(p, 4, c.filled()));
            chart.draw_series(dots).map_err(|e| err(&e))?;
            let grid = || (0..FIT_SAMPLES).map(|i| x_lo * (x_hi / x_lo).powf(i as f64 / (FIT_SAMPLES - 1) as f64));
            if let Some(boot) = &s.resamples {
                // The 95% band: per x, the percentile interval of the resampled laws' predictions (clipped).
                let band: Vec<(f64, [f64; 2])> = grid()
                    .filter_map(|x| boot.interval(|f| f.predict(x)).map(|[lo, hi]| (x, [lo, hi])))
                    .map(|(x, [lo, hi])| (x, [lo.clamp(y_lo, y_hi), hi.clamp(y_lo, y_hi)]))
                    .collect();
                if band.len() >= 2 {
                    let outline: Vec<(f64, f64)> = band
                        .iter()
                        .map(|&(x, [lo, _])| (x, lo))
                        .chain(band.iter().rev().map(|&(x, [_, hi])| (x, hi)))
                        .collect();
                    chart.draw_series([Polygon::new(outline, c.mix(0.15).filled())]).map_err(|e| err(&e))?;
                }
            }
            for &(x, y, ci) in &s.extrapolated {
                if let Some([lo, hi]) = ci {
                    let bar = vec![(x, lo.clamp(y_lo, y_hi)), (x, hi.clamp(y_lo, y_hi))];
                    chart.draw_series([PathElement::new(bar, c.stroke_width(2))]).map_err(|e| err(&e))?;
                }
                let ring = Circle::new((x, y), 6, ShapeStyle { color: c.to_rgba(), filled: false, stroke_width: 2 });
                chart.draw_series([ring]).map_err(|e| err(&e))?;
            }
            if let Some(fit) = &s.fit {
                // The law over the plot's x range, kept where it lies inside the y range.
                let pts: Vec<(f64, f64)> = grid()
                    .map(|x| (x, fit.predict(x)))
                    .filter(|&(_, y)| y.is_finite() && y >= y_lo && y <= y_hi)
                    .collect();
                if pts.len() >= 2 {
                    let style = ShapeStyle { color: c.to_rgba(), filled: false, stroke_width: 2 };
                    chart
                        .draw_series(DashedLineSeries::new(pts, 7, 4, style))
                        .map_err(|e| err(&e))?
                        .label(format!("{} fit, alpha={:.3}", s.label, fit.alpha.value))
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 6, y)], c.stroke_width(2)));
                }
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font(("sans-serif", 15))
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

pub(crate) fn text_anchor_center() -> plotters::style::text_anchor::Pos {
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    Pos::new(HPos::Center, VPos::Center)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{CurvePoint, TrialResult};
    use crate::summary::summarise;

    fn with_curve(id: &str, arch: &str, budget: f64, loss: f64) -> TrialResult {
        let mut t = crate::test_support::minimal(id, "lm<&>", arch);
        t.budget_flops = budget;
        t.flops_spent = budget;
        t.final_eval_loss = Some(loss);
        t.curve = (1..=4)
            .map(|k| CurvePoint {
                step: k,
                flops: budget * k as f64 / 4.0,
                tokens: k * 100,
                train_loss: loss + 1.0 / k as f64,
                eval_loss: Some(loss + 0.5 / k as f64),
                metrics: Default::default(),
            })
            .collect();
        t
    }

    fn render(results: &[TrialResult]) -> String {
        let s = summarise(results);
        loss_vs_flops_svg(&s[0]).unwrap()
    }

    #[test]
    fn draws_curves_points_fit_and_legend_with_text() {
        let rs: Vec<TrialResult> = [(1e12, 3.0), (1e13, 2.6), (1e14, 2.4)]
            .iter()
            .enumerate()
            .flat_map(|(i, &(b, l))| {
                [with_curve(&format!("a{i}"), "mamba", b, l), with_curve(&format!("b{i}"), "gla", b, l + 0.1)]
            })
            .collect();
        let svg = render(&rs);
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("<text"), "no text elements");
        for needle in ["mamba", "gla fit", "training FLOPs", "eval loss", "lm&lt;&amp;&gt;", "1e12"] {
            assert!(svg.contains(needle), "missing {needle:?}");
        }
        assert!(svg.contains("<circle"), "no final points");
        assert!(svg.contains(&colour_hex(0).to_uppercase()) || svg.contains(&colour_hex(0)));
    }

    #[test]
    fn empty_single_and_flat_data_do_not_panic() {
        let mut empty = crate::test_support::minimal("x", "t", "a");
        empty.final_eval_loss = None;
        assert!(render(&[empty]).contains("no completed trial"));

        let mut single = crate::test_support::minimal("x", "t", "a");
        single.final_eval_loss = Some(2.0);
        single.flops_spent = 1e12;
        assert!(render(&[single.clone()]).contains("<circle"));

        let flat: Vec<TrialResult> = (0..3)
            .map(|i| {
                let mut t = with_curve(&format!("f{i}"), "a", 1e12, 2.0);
                t.curve.iter_mut().for_each(|p| (p.eval_loss, p.flops) = (Some(2.0), 1e12));
                t
            })
            .collect();
        assert!(render(&flat).contains("<svg"));

        let mut zero_flops = single;
        zero_flops.flops_spent = 0.0;
        zero_flops.budget_flops = 0.0;
        assert!(render(&[zero_flops]).contains("no completed trial"));
    }
}
