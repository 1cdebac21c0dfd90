//! The MQAR section: Zoology's two views of a multi-query associative recall sweep (Arora et al. 2023, figure 2).
//!
//! Trials are grouped by the task variant they ran on, `(seq_len, kv_pairs)` from `TrialResult::task_params`;
//! within a variant, a point is one (architecture, d_model): its best final `accuracy` over the completed trials
//! (budgets, seeds). Two figures, one panel per variant, one line per architecture:
//!
//! - accuracy against d_model (does width buy recall?);
//! - accuracy against recurrent state size (`StackSpec::state_size` at the variant's `seq_len`, elements per
//!   sequence: the KV cache for attention, the fixed state for recurrent mixers): the memory/recall trade-off,
//!   where attention's state grows with the sequence and a fixed-state mixer needs a larger state to keep up.

use crate::html::{escape, num_cell};
use crate::plot::{colour, colour_hex, positive, span, HEIGHT, WIDTH};
use crate::result::{Status, TrialResult};
use crate::ReportError;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One (architecture, d_model) of one variant.
#[derive(Debug, Clone, PartialEq)]
pub struct MqarPoint {
    pub d_model: u64,
    pub state_size: u64,
    /// Best final accuracy over the completed trials; None when none completed with one.
    pub accuracy: Option<f64>,
    /// Trials behind the point (any status).
    pub trials: usize,
}

/// One `(seq_len, kv_pairs)` variant: per architecture (sorted), its points by d_model.
#[derive(Debug, Clone, PartialEq)]
pub struct MqarVariant {
    pub seq_len: u64,
    pub kv_pairs: u64,
    pub arches: BTreeMap<String, Vec<MqarPoint>>,
}

impl MqarVariant {
    fn title(&self) -> String {
        format!("seq_len {}, kv_pairs {}", self.seq_len, self.kv_pairs)
    }
}

/// The MQAR trials that carry their variant, grouped as the figures draw them (sorted by seq_len, kv_pairs).
pub fn mqar_variants(results: &[TrialResult]) -> Vec<MqarVariant> {
    let mut groups: BTreeMap<(u64, u64), BTreeMap<String, BTreeMap<u64, MqarPoint>>> = BTreeMap::new();
    for r in results.iter().filter(|r| r.task == "mqar") {
        let (Some(&l), Some(&kv)) = (r.task_params.get("seq_len"), r.task_params.get("kv_pairs")) else { continue };
        let point = groups
            .entry((l, kv))
            .or_default()
            .entry(r.arch.clone())
            .or_default()
            .entry(r.d_model)
            .or_insert(MqarPoint { d_model: r.d_model, state_size: r.state_size, accuracy: None, trials: 0 });
        point.trials += 1;
        let acc = r.final_metrics.get("accuracy").copied().filter(|a| a.is_finite());
        if r.status == Status::Completed {
            if let Some(a) = acc {
                point.accuracy = Some(point.accuracy.map_or(a, |b: f64| b.max(a)));
            }
        }
    }
    groups
        .into_iter()
        .map(|((seq_len, kv_pairs), arches)| MqarVariant {
            seq_len,
            kv_pairs,
            arches: arches.into_iter().map(|(a, pts)| (a, pts.into_values().collect())).collect(),
        })
        .collect()
}

/// Which x axis a figure uses.
#[derive(Clone, Copy)]
enum Axis {
    Width,
    State,
}

impl Axis {
    fn x(self, p: &MqarPoint) -> f64 {
        match self {
            Axis::Width => p.d_model as f64,
            Axis::State => p.state_size as f64,
        }
    }
    fn desc(self) -> &'static str {
        match self {
            Axis::Width => "d_model (log scale)",
            Axis::State => "state size, elements per sequence (log scale)",
        }
    }
}

/// One figure: a panel per variant, a line per arch (colour by its index in `arch_order`).
fn panels_svg(variants: &[MqarVariant], arch_order: &[&str], axis: Axis) -> Result<String, ReportError> {
    let err = |e: &dyn std::fmt::Display| ReportError::Plot { task: "mqar".into(), message: e.to_string() };
    let n = variants.len().max(1);
    let per_row = n.min(3);
    let rows = n.div_ceil(per_row);
    let (w, h) = (WIDTH.max(380 * per_row as u32), (HEIGHT * 3 / 4) * rows as u32);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let panels = root.split_evenly((rows, per_row));
        for (v, area) in variants.iter().zip(&panels) {
            // A log axis: a zero state (a token-wise stack) cannot be placed and is left out of the plot.
            let xs = v.arches.values().flatten().map(|p| axis.x(p)).filter(|&x| positive(x));
            let (x_lo, x_hi) = span(xs, true).unwrap_or((1.0, 10.0));
            let mut chart = ChartBuilder::on(area)
                .caption(v.title(), ("sans-serif", 18))
                .margin(10)
                .x_label_area_size(40)
                .y_label_area_size(52)
                .build_cartesian_2d((x_lo..x_hi).log_scale(), 0.0..1.0)
                .map_err(|e| err(&e))?;
            chart
                .configure_mesh()
                .x_desc(axis.desc())
                .y_desc("accuracy")
                .x_label_formatter(&|x| if *x >= 1e4 { format!("{x:.0e}") } else { format!("{x:.0}") })
                .y_label_formatter(&|y| format!("{y:.1}"))
                .label_style(("sans-serif", 13))
                .axis_desc_style(("sans-serif", 14))
                .light_line_style(WHITE)
                .draw()
                .map_err(|e| err(&e))?;
            for (arch, points) in &v.arches {
                let c = colour(arch_order.iter().position(|a| a == arch).unwrap_or(0));
                let mut pts: Vec<(f64, f64)> = points
                    .iter()
                    .filter_map(|p| p.accuracy.map(|a| (axis.x(p), a)))
                    .filter(|p| positive(p.0))
                    .collect();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                chart
                    .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                    .map_err(|e| err(&e))?
                    .label(arch.as_str())
                    .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], c.filled()));
                chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled()))).map_err(|e| err(&e))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .label_font(("sans-serif", 13))
                .draw()
                .map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

/// Appends the MQAR section when any MQAR trial records its variant; `arch_order` fixes the colours (the same
/// as the task sections').
pub(crate) fn mqar_section(h: &mut String, results: &[TrialResult], arch_order: &[&str]) -> Result<(), ReportError> {
    let variants = mqar_variants(results);
    if variants.is_empty() {
        return Ok(());
    }
    h.push_str(
        "<section id=\"mqar\">\n<h2>MQAR: recall against width and state size</h2>\n<p>Multi-query associative \
         recall as in Zoology (Arora et al. 2023): one panel per (sequence length, key-value pairs), one line per \
         architecture; each point is the best final accuracy over that width's completed trials (budgets, seeds). \
         State size is the recurrent state per sequence at the panel's sequence length (attention: its KV cache, \
         which grows with the sequence; a recurrent mixer: its fixed state).</p>\n",
    );
    let _ = writeln!(
        h,
        "<figure class=\"plot mqar-width\">\n{}\n<figcaption>Accuracy against d_model.</figcaption>\n</figure>",
        panels_svg(&variants, arch_order, Axis::Width)?
    );
    let _ = writeln!(
        h,
        "<figure class=\"plot mqar-state\">\n{}\n<figcaption>Accuracy against state size.</figcaption>\n</figure>",
        panels_svg(&variants, arch_order, Axis::State)?
    );
    let widths: Vec<u64> = {
        let mut w: Vec<u64> = variants.iter().flat_map(|v| v.arches.values().flatten().map(|p| p.d_model)).collect();
        w.sort_unstable();
        w.dedup();
        w
    };
    h.push_str("<table class=\"sortable mqar\">\n<thead><tr>");
    let mut heads = vec![("seq_len".to_string(), "num"), ("kv_pairs".into(), "num"), ("arch".into(), "text")];
    heads.extend(widths.iter().map(|w| (format!("d_model {w}: accuracy (state)"), "num")));
    for (name, ty) in &heads {
        let _ = write!(h, "<th data-type=\"{ty}\" tabindex=\"0\" aria-sort=\"none\">{}</th>", escape(name));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for v in &variants {
        for (arch, points) in &v.arches {
            let c = colour_hex(arch_order.iter().position(|a| a == arch).unwrap_or(0));
            let _ = write!(
                h,
                "<tr><td data-v=\"{}\">{}</td><td data-v=\"{}\">{}</td><td><span class=\"swatch\" \
                 style=\"background:{c}\"></span>{}</td>",
                v.seq_len,
                v.seq_len,
                v.kv_pairs,
                v.kv_pairs,
                escape(arch)
            );
            for w in &widths {
                match points.iter().find(|p| p.d_model == *w) {
                    Some(p) => {
                        let state = p.state_size;
                        let shown = |a: f64| format!("{a:.3} ({state})");
                        let cell = num_cell(p.accuracy, shown);
                        if p.accuracy.is_none() {
                            let _ = write!(h, "<td class=\"na\">no completed trial ({state})</td>");
                        } else {
                            h.push_str(&cell);
                        }
                    }
                    None => h.push_str("<td class=\"na\"></td>"),
                }
            }
            h.push_str("</tr>\n");
        }
    }
    h.push_str("</tbody></table>\n</section>\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::minimal;

    /// A completed MQAR trial at (L, kv) with this width, state and accuracy.
    fn trial(arch: &str, l: u64, kv: u64, d: u64, state: u64, acc: f64) -> TrialResult {
        let mut r = minimal(&format!("{arch}-{l}-{kv}-{d}-{acc}"), "mqar", arch);
        r.d_model = d;
        r.state_size = state;
        r.seq_len = l;
        r.final_metrics.insert("accuracy".into(), acc);
        r.task_params = [("seq_len", l), ("kv_pairs", kv), ("vocab_size", 128)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        r
    }

    fn sweep() -> Vec<TrialResult> {
        let mut rs = Vec::new();
        for (l, kv) in [(64, 4), (128, 8)] {
            for d in [32, 64] {
                rs.push(trial("attention", l, kv, d, 4 * d * l, 0.5 + d as f64 / 200.0));
                rs.push(trial("mamba2", l, kv, d, 80 * d, 0.1 + d as f64 / 400.0));
            }
        }
        // A token-wise baseline has no state: it is in the table, not on the log axis (which it must not break).
        rs.push(trial("mlp", 64, 4, 32, 0, 0.05));
        // A second budget of one point: the best accuracy wins; a failed trial counts but adds no accuracy.
        rs.push(trial("mamba2", 64, 4, 32, 2560, 0.9));
        let mut failed = trial("mamba2", 64, 4, 32, 2560, 0.99);
        failed.status = Status::Failed;
        rs.push(failed);
        rs
    }

    #[test]
    fn variants_group_by_length_and_pairs_with_best_accuracy() {
        let v = mqar_variants(&sweep());
        assert_eq!(v.iter().map(|v| (v.seq_len, v.kv_pairs)).collect::<Vec<_>>(), [(64, 4), (128, 8)]);
        assert_eq!(v[0].arches.keys().collect::<Vec<_>>(), ["attention", "mamba2", "mlp"]);
        let m = &v[0].arches["mamba2"];
        assert_eq!((m[0].d_model, m[0].state_size, m[0].accuracy, m[0].trials), (32, 2560, Some(0.9), 3));
        assert_eq!(v[1].arches["attention"][1].state_size, 4 * 64 * 128);
        // Results without task_params (written before they existed) and other tasks are left out.
        let mut old = trial("attention", 64, 4, 32, 1, 0.5);
        old.task_params.clear();
        assert!(mqar_variants(&[old, minimal("b", "bytes", "attention")]).is_empty());
    }

    #[test]
    fn section_has_a_panel_per_variant_and_a_line_per_arch() {
        let results = sweep();
        let mut h = String::new();
        mqar_section(&mut h, &results, &["attention", "mamba2", "mlp"]).unwrap();
        assert!(h.contains("<section id=\"mqar\">"));
        for fig in ["mqar-width", "mqar-state"] {
            let start = h.find(&format!("class=\"plot {fig}\"")).unwrap();
            let svg = &h[start..start + h[start..].find("</figure>").unwrap()];
            assert_eq!(svg.matches("seq_len 64, kv_pairs 4").count(), 1, "{fig}");
            assert_eq!(svg.matches("seq_len 128, kv_pairs 8").count(), 1, "{fig}");
            // Two panels x two arches: each arch's name in each panel's legend, its line in its colour.
            // The text of every <text> element: each arch's name once per panel (its legend entry).
            let texts: Vec<&str> = svg
                .split("<text")
                .skip(1)
                .map(|t| t[t.find('>').unwrap() + 1..t.find("</text>").unwrap()].trim())
                .collect();
            let legend = |arch: &str| texts.iter().filter(|&&t| t == arch).count();
            assert_eq!((legend("attention"), legend("mamba2"), legend("mlp")), (2, 2, 1), "{fig}");
            assert!(
                svg.contains("stroke=\"#1F77B4\"") || svg.contains("stroke=\"#1f77b4\""),
                "{fig}: attention's colour"
            );
            assert!(svg.contains(if fig == "mqar-width" { "d_model (log scale)" } else { "state size" }));
        }
        assert_eq!(h.matches("<tr><td data-v=").count(), 5, "a table row per (variant, arch)");
        assert!(h.contains("0.900 (2560)"), "best accuracy with its state size");
        let mut none = String::new();
        mqar_section(&mut none, &[minimal("b", "bytes", "x")], &["x"]).unwrap();
        assert!(none.is_empty(), "no MQAR trials, no section");
    }

    #[test]
    fn the_report_places_the_section_and_splits_mqar_tasks() {
        let info = crate::SweepInfo { name: "mqar".into(), space_yaml: None, notes: Vec::new() };
        let html = crate::html::render_html(&sweep(), &info).unwrap();
        assert!(html.contains("<section id=\"mqar\">") && html.contains("href=\"#mqar\""));
        assert!(html.contains("Task: mqar (kv_pairs 4, seq_len 64, vocab_size 128)"), "one task section per variant");
        assert!(html.contains("Task: mqar (kv_pairs 8, seq_len 128, vocab_size 128)"));
    }
}
