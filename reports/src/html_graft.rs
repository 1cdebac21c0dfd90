//! The grafting section of the report (issue 7), shown when some trial has graft points: per task and
//! budget, the held-out loss curves of the grafted trials and of the from-scratch trials of the same final
//! architecture, with each graft point marked; then a table with one row per graft: spike (loss after minus
//! loss before), FLOPs to recover the pre-graft loss, the stage's FLOPs, and the final loss against the same
//! target architecture trained from scratch at the same budget. A self-graft control (same operator, fresh
//! init) is a grafted trial whose final architecture is its starting one, so it is compared with that
//! architecture from scratch: its gap is the cost of the procedure alone.

use crate::html::{escape, num_cell, si};
use crate::plot::colour_hex;
use crate::result::TrialResult;
use std::fmt::Write as _;

/// The from-scratch trial of the same task, budget, width and final layers as `g`, if the sweep has one.
fn scratch_of<'a>(g: &TrialResult, all: &'a [TrialResult]) -> Option<&'a TrialResult> {
    all.iter().find(|r| {
        r.grafts.is_empty()
            && r.task == g.task
            && r.budget_flops == g.budget_flops
            && r.d_model == g.d_model
            && r.layers == g.layers
            && r.seed == g.seed
    })
}

/// Inline SVG: eval loss against FLOPs (linear axes) for `trials`, graft points as dashed vertical lines.
fn curves_svg(trials: &[&TrialResult]) -> String {
    let (w, h, m) = (720.0, 300.0, 50.0);
    let pts: Vec<(f64, f64)> =
        trials.iter().flat_map(|r| r.curve.iter().filter_map(|p| p.eval_loss.map(|l| (p.flops, l)))).collect();
    let finite: Vec<&(f64, f64)> = pts.iter().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
    if finite.is_empty() {
        return "<p class=\"na\">No evaluation points.</p>".into();
    }
    let x1 = finite.iter().map(|p| p.0).fold(0.0, f64::max).max(1.0);
    let (y0, y1) = finite.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let y1 = if y1 > y0 { y1 } else { y0 + 1.0 };
    let sx = |x: f64| m + x / x1 * (w - 2.0 * m);
    let sy = |y: f64| h - m - (y - y0) / (y1 - y0) * (h - 2.0 * m);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h}\" class=\"graft-curves\">\
         <rect x=\"{m}\" y=\"{m}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#999\"/>\
         <text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"middle\">training FLOPs (0 to {})</text>\
         <text x=\"12\" y=\"{}\" font-size=\"12\" transform=\"rotate(-90 12 {})\" text-anchor=\"middle\">eval loss ({:.3} to {:.3})</text>",
        w - 2.0 * m,
        h - 2.0 * m,
        w / 2.0,
        h - 12.0,
        si(x1),
        h / 2.0,
        h / 2.0,
        y0,
        y1
    );
    for (i, r) in trials.iter().enumerate() {
        let c = colour_hex(i);
        let line: Vec<String> = r
            .curve
            .iter()
            .filter_map(|p| p.eval_loss.filter(|l| l.is_finite()).map(|l| format!("{:.1},{:.1}", sx(p.flops), sy(l))))
            .collect();
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"1.5\" points=\"{}\"><title>{}</title></polyline>",
            line.join(" "),
            escape(&r.label)
        );
        for g in &r.grafts {
            let x = sx(g.at_flops);
            let _ = write!(
                s,
                "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{m}\" y2=\"{}\" stroke=\"{c}\" stroke-dasharray=\"4 3\"><title>{} at {}</title></line>",
                h - m,
                escape(&op_label(g)),
                si(g.at_flops)
            );
        }
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"{c}\" text-anchor=\"end\">{}{}</text>",
            w - m - 8.0,
            m + 14.0 + 13.0 * i as f64,
            escape(&r.arch),
            if r.grafts.is_empty() { " (from scratch)" } else { " (grafted; dashed: graft)" }
        );
    }
    s.push_str("</svg>");
    s
}

/// Appends the section to `h`; nothing when no trial was grafted.
pub(crate) fn graft_section(h: &mut String, results: &[TrialResult]) {
    let grafted: Vec<&TrialResult> = results.iter().filter(|r| !r.grafts.is_empty()).collect();
    if grafted.is_empty() {
        return;
    }
    h.push_str(
        "<h2 id=\"grafts\">Grafting</h2>\n<p>Each grafted trial changed its architecture mid-training; \
        every FLOP of its regress/distill stages (teacher forwards included) is inside its budget. Spike = held-out \
        loss when training resumes minus the loss just before the graft; recovery = FLOPs from the graft until an \
        evaluation is back at the pre-graft loss (empty: never). The last columns compare the final loss with the \
        same final architecture trained from scratch at the same budget; a self-graft control (same operator, \
        fresh init) ends in its starting architecture, so its gap is the cost of the procedure alone.</p>\n",
    );
    let mut keys: Vec<(String, f64)> = grafted.iter().map(|r| (r.task.clone(), r.budget_flops)).collect();
    keys.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    keys.dedup();
    for (task, budget) in &keys {
        let mut shown: Vec<&TrialResult> =
            grafted.iter().copied().filter(|r| &r.task == task && r.budget_flops == *budget).collect();
        for g in shown.clone() {
            if let Some(s) = scratch_of(g, results) {
                if !shown.iter().any(|r| r.id == s.id) {
                    shown.push(s);
                }
            }
        }
        let _ = writeln!(
            h,
            "<figure>{}<figcaption>{}, budget {} FLOPs: held-out loss of the grafted trials and of their \
             from-scratch targets.</figcaption></figure>",
            curves_svg(&shown),
            escape(task),
            si(*budget)
        );
    }
    h.push_str(
        "<table class=\"sortable grafts\"><thead><tr><th data-type=\"text\">trial</th><th data-type=\"text\">task</th>\
         <th data-type=\"num\">budget</th><th data-type=\"text\">op</th><th data-type=\"num\">at FLOPs</th>\
         <th data-type=\"num\">loss before</th><th data-type=\"num\">loss after</th><th data-type=\"num\">spike</th>\
         <th data-type=\"num\">recovery FLOPs</th><th data-type=\"num\">stage FLOPs</th>\
         <th data-type=\"num\">final loss</th><th data-type=\"num\">from scratch</th><th data-type=\"num\">gap</th>\
         </tr></thead><tbody>\n",
    );
    for r in &grafted {
        let scratch = scratch_of(r, results).and_then(|s| s.final_eval_loss);
        let gap = r.final_eval_loss.zip(scratch).map(|(a, b)| a - b);
        for g in &r.grafts {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td>{}<td>{}</td>{}{}{}{}{}{}{}{}{}</tr>",
                escape(&r.label),
                escape(&r.task),
                num_cell(Some(r.budget_flops), si),
                escape(&g.op),
                num_cell(Some(g.at_flops), si),
                num_cell(Some(g.loss_before), |v| format!("{v:.4}")),
                num_cell(Some(g.loss_after), |v| format!("{v:.4}")),
                num_cell(Some(g.spike), |v| format!("{v:+.4}")),
                num_cell(g.recovery_flops, si),
                num_cell(Some(g.stage_flops), si),
                num_cell(r.final_eval_loss, |v| format!("{v:.4}")),
                num_cell(scratch, |v| format!("{v:.4}")),
                num_cell(gap, |v| format!("{v:+.4}")),
            );
        }
    }
    h.push_str("</tbody></table>\n");
}

/// The op, with the sequence lengths when the graft changed them (`extend_context 64->128`): its loss before
/// and after are then measured at those two lengths.
fn op_label(g: &crate::result::GraftResult) -> String {
    match (g.seq_len_before, g.seq_len_after) {
        (Some(a), Some(b)) if a != b => format!("{} {a}\u{2192}{b}", g.op),
        _ => g.op.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{CurvePoint, GraftResult};

    #[test]
    fn section_compares_with_the_from_scratch_target_and_marks_grafts() {
        let curve = |l: f64| {
            (1..=3)
                .map(|k| CurvePoint {
                    step: k,
                    flops: k as f64 * 1e9,
                    tokens: k * 10,
                    train_loss: l,
                    eval_loss: Some(l / k as f64),
                    metrics: Default::default(),
                })
                .collect()
        };
        let mut g = crate::test_support::minimal("g", "bytes", "graft<x>");
        g.layers = vec!["hyena".into()];
        g.final_eval_loss = Some(1.0);
        g.curve = curve(3.0);
        g.grafts = vec![GraftResult {
            op: "regress".into(),
            at_flops: 1.5e9,
            loss_before: 2.0,
            loss_after: 2.5,
            spike: 0.5,
            recovery_flops: None,
            stage_flops: 1e8,
            params: Default::default(),
            seq_len_before: Some(64),
            seq_len_after: Some(128),
        }];
        let mut s = crate::test_support::minimal("s", "bytes", "hybrid");
        s.layers = vec!["hyena".into()];
        s.final_eval_loss = Some(1.25);
        s.curve = curve(2.5);
        let mut h = String::new();
        graft_section(&mut h, &[g, s]);
        assert!(h.contains("id=\"grafts\"") && h.contains("graft&lt;x&gt;"), "{h}");
        assert!(h.contains("stroke-dasharray"), "graft point not marked");
        assert!(h.contains("-0.2500"), "gap against the from-scratch target missing: {h}");
        assert!(h.contains("regress 64\u{2192}128"), "the lengths of a length-changing graft are missing: {h}");
        let mut none = String::new();
        graft_section(&mut none, &[crate::test_support::minimal("a", "t", "x")]);
        assert!(none.is_empty());
    }
}
