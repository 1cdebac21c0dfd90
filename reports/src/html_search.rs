//! The search section of the report (issue 6), from `DIR/search.json` ([`crate::search`]): how a strategy
//! spent its FLOPs. Shown when the directory has the file:
//! - the counts per fate and the FLOPs spent against an exhaustive grid's, as numbers and a bar;
//! - a rung chart (held-out loss at each rung a trial reached against training FLOPs, log x): a trial the
//!   search stopped ends early in a cross, a promoted one continues to the next rung;
//! - a table with one row per trial, stopped trials included (they have rung records, no `result.json`, so
//!   they are in no other part of the report): rungs reached, how it ended and where, loss at each rung;
//! - for evolution, the generations (evaluated, survivors, best loss) and, with several objectives, a scatter
//!   of the first two with the Pareto front marked and a table of the front.
//!
//! The plots are hand-written SVG like the grafting section's: a handful of elements, no plotting backend.

use crate::html::{escape, num_cell, si};
use crate::search::{Genome, SearchSummary, TrialFate, TrialSearch};
use std::fmt::Write as _;

const W: f64 = 720.0;
const H: f64 = 300.0;
const M: f64 = 56.0;

fn fate_colour(fate: TrialFate) -> &'static str {
    match fate {
        TrialFate::Completed => "#1f77b4",
        TrialFate::Stopped => "#d62728",
        TrialFate::Diverged | TrialFate::Failed => "#7f7f7f",
        _ => "#ff7f0e", // paused or running: the search is not over
    }
}

/// How a trial ended, in words: "stopped at rung 1 (2.2G FLOPs)", "completed after 3 rungs".
fn fate_text(t: &TrialSearch) -> String {
    let at = t.rungs.last().and_then(|r| r.flops.or(r.until_flops)).map(si).unwrap_or_default();
    match t.fate {
        TrialFate::Stopped => format!("stopped at rung {} ({at} FLOPs)", t.last_rung),
        TrialFate::Paused => format!("paused at rung {} ({at} FLOPs), may be promoted", t.last_rung),
        TrialFate::Completed if t.rungs.len() > 1 => format!("promoted {} times, completed", t.rungs.len() - 1),
        other => other.as_str().to_string(),
    }
}

/// Axes frame and labels; returns the SVG opening.
fn frame(class: &str, x_label: &str, y_label: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" class=\"{class}\">\
         <rect x=\"{M}\" y=\"{M}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#999\"/>\
         <text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"middle\">{}</text>\
         <text x=\"14\" y=\"{}\" font-size=\"12\" transform=\"rotate(-90 14 {})\" text-anchor=\"middle\">{}</text>",
        W - 2.0 * M,
        H - 2.0 * M,
        W / 2.0,
        H - 12.0,
        escape(x_label),
        H / 2.0,
        H / 2.0,
        escape(y_label)
    )
}

/// A linear or log axis mapping `[lo, hi]` onto `[a, b]` pixels.
fn axis(lo: f64, hi: f64, log: bool, a: f64, b: f64) -> impl Fn(f64) -> f64 {
    let f = move |v: f64| if log { v.max(f64::MIN_POSITIVE).log10() } else { v };
    let (l, h) = (f(lo), f(hi));
    let span = if h > l { h - l } else { 1.0 };
    move |v: f64| a + (f(v) - l) / span * (b - a)
}

/// Held-out loss at every rung against FLOPs (log x); stopped trials end in a cross.
fn rung_chart(s: &SearchSummary) -> Option<String> {
    let pts: Vec<(f64, f64)> =
        s.trials.iter().flat_map(|t| t.rungs.iter().filter_map(|r| r.flops.zip(r.eval_loss))).collect();
    let pts: Vec<(f64, f64)> = pts.into_iter().filter(|(x, y)| *x > 0.0 && x.is_finite() && y.is_finite()).collect();
    if pts.is_empty() {
        return None;
    }
    let (x0, x1) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let (x0, x1) = if x1 > x0 { (x0, x1) } else { (x0 / 2.0, x1 * 2.0) };
    let (y0, y1) = if y1 > y0 { (y0, y1) } else { (y0 - 0.5, y1 + 0.5) };
    let sx = axis(x0, x1, true, M + 8.0, W - M - 8.0);
    let sy = axis(y0, y1, false, H - M - 8.0, M + 8.0);
    let mut svg = frame(
        "search-rungs",
        &format!("training FLOPs, log scale ({} to {})", si(x0), si(x1)),
        &format!("eval loss ({y0:.3} to {y1:.3})"),
    );
    for t in &s.trials {
        let c = fate_colour(t.fate);
        let line: Vec<(f64, f64)> = t
            .rungs
            .iter()
            .filter_map(|r| r.flops.zip(r.eval_loss))
            .filter(|(x, y)| *x > 0.0 && x.is_finite() && y.is_finite())
            .map(|(x, y)| (sx(x), sy(y)))
            .collect();
        let Some(&(lx, ly)) = line.last() else { continue };
        let title = format!("{} ({}): {}", t.label, t.id, fate_text(t));
        let points: Vec<String> = line.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = write!(
            svg,
            "<g class=\"trial fate-{}\"><title>{}</title><polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"1.2\" \
             points=\"{}\"/>",
            t.fate.as_str(),
            escape(&title),
            points.join(" ")
        );
        for (x, y) in &line[..line.len() - 1] {
            let _ = write!(svg, "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.5\" fill=\"{c}\"/>");
        }
        if t.fate == TrialFate::Stopped {
            let _ = write!(
                svg,
                "<path d=\"M{:.1},{:.1}l8,8m0,-8l-8,8\" stroke=\"{c}\" stroke-width=\"2\"/>",
                lx - 4.0,
                ly - 4.0
            );
        } else {
            let _ = write!(svg, "<circle cx=\"{lx:.1}\" cy=\"{ly:.1}\" r=\"3.5\" fill=\"{c}\"/>");
        }
        svg.push_str("</g>");
    }
    for (i, (fate, label)) in [
        (TrialFate::Completed, "completed"),
        (TrialFate::Stopped, "stopped (x)"),
        (TrialFate::Paused, "paused or running"),
    ]
    .iter()
    .enumerate()
    {
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"{}\" text-anchor=\"end\">{label}</text>",
            W - M - 8.0,
            M + 14.0 + 13.0 * i as f64,
            fate_colour(*fate)
        );
    }
    svg.push_str("</svg>");
    Some(svg)
}

/// FLOPs spent against the full grid's as two bars.
fn flops_bar(spent: f64, grid: f64) -> String {
    let (w, bar) = (W, W - 2.0 * M - 120.0);
    let scale = bar / spent.max(grid).max(1.0);
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} 70\" class=\"search-flops\">\
         <text x=\"{M}\" y=\"24\" font-size=\"12\" text-anchor=\"end\">spent</text>\
         <rect x=\"{}\" y=\"12\" width=\"{:.1}\" height=\"16\" fill=\"#1f77b4\"/>\
         <text x=\"{:.1}\" y=\"24\" font-size=\"12\">{}</text>\
         <text x=\"{M}\" y=\"54\" font-size=\"12\" text-anchor=\"end\">full grid</text>\
         <rect x=\"{}\" y=\"42\" width=\"{:.1}\" height=\"16\" fill=\"#bbbbbb\"/>\
         <text x=\"{:.1}\" y=\"54\" font-size=\"12\">{}</text></svg>",
        M + 6.0,
        spent * scale,
        M + 12.0 + spent * scale,
        si(spent),
        M + 6.0,
        grid * scale,
        M + 12.0 + grid * scale,
        si(grid)
    )
}

/// The first two objectives of every evaluated genome, the Pareto front filled and joined.
fn pareto_scatter(s: &SearchSummary, front: &[&Genome]) -> Option<String> {
    let value = |g: &Genome, k: usize| g.objectives.get(k).copied().flatten().filter(|v| v.is_finite());
    let all: Vec<(Genome, f64, f64)> = s
        .genomes()
        .into_iter()
        .filter_map(|g| {
            let (x, y) = (value(&g, 0)?, value(&g, 1)?);
            Some((g, x, y))
        })
        .collect();
    if all.is_empty() || s.objectives.len() < 2 {
        return None;
    }
    let (x0, x1) = all.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let (y0, y1) = all.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.2), b.max(p.2)));
    let log_y = y0 > 0.0 && y1 / y0 > 10.0;
    let sx = axis(x0, x1, false, M + 8.0, W - M - 8.0);
    let sy = axis(y0, y1, log_y, H - M - 8.0, M + 8.0);
    let (ox, oy) = (&s.objectives[0], &s.objectives[1]);
    let mut svg = frame(
        "search-pareto",
        &format!("{ox} ({} to {})", fmt_obj(x0), fmt_obj(x1)),
        &format!("{oy}{} ({} to {})", if log_y { ", log scale" } else { "" }, fmt_obj(y0), fmt_obj(y1)),
    );
    let on_front = |g: &Genome| front.iter().any(|f| f.ids == g.ids);
    let mut line: Vec<(f64, f64)> = all.iter().filter(|p| on_front(&p.0)).map(|p| (sx(p.1), sy(p.2))).collect();
    line.sort_by(|a, b| a.0.total_cmp(&b.0));
    let pts: Vec<String> = line.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let _ = write!(
        svg,
        "<polyline fill=\"none\" stroke=\"#d62728\" stroke-dasharray=\"4 3\" points=\"{}\"/>",
        pts.join(" ")
    );
    for (g, x, y) in &all {
        let (fill, r) = if on_front(g) { ("#d62728", 4.5) } else { ("#9e9e9e", 3.0) };
        let _ = write!(
            svg,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"{r}\" fill=\"{fill}\" class=\"{}\"><title>{} d{} x{}: {ox} {}, {oy} {}</title></circle>",
            sx(*x),
            sy(*y),
            if on_front(g) { "front" } else { "dominated" },
            escape(&g.arch),
            g.d_model,
            g.depth,
            fmt_obj(*x),
            fmt_obj(*y)
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"#d62728\" text-anchor=\"end\">Pareto front (filled)</text></svg>",
        W - M - 8.0,
        M + 14.0
    );
    Some(svg)
}

/// An objective value: a loss with 4 decimals, a count with an SI suffix.
fn fmt_obj(v: f64) -> String {
    if v.abs() >= 1000.0 {
        si(v)
    } else {
        format!("{v:.4}")
    }
}

/// Appends the section to `h`.
pub(crate) fn search_section(h: &mut String, s: &SearchSummary) {
    let counts: Vec<String> = s.fate_counts().iter().map(|(f, n)| format!("{n} {f}")).collect();
    let rungs_max = s.trials.iter().map(|t| t.rungs.len()).max().unwrap_or(0);
    let _ = writeln!(
        h,
        "<h2 id=\"search\">Search: {}</h2>\n<p class=\"search-counts\" data-trials=\"{}\" data-stopped=\"{}\" \
         data-completed=\"{}\" data-generations=\"{}\" data-front=\"{}\">{} trials ({}); seed {}{}; {}.</p>",
        escape(&s.strategy),
        s.trials.len(),
        s.count(TrialFate::Stopped),
        s.count(TrialFate::Completed),
        s.generations.len(),
        s.pareto_front.as_ref().map_or(0, |f| f.len()),
        s.trials.len(),
        escape(&counts.join(", ")),
        s.seed,
        s.window.map(|w| format!(", decision window {w}")).unwrap_or_default(),
        if s.finished { "the search finished" } else { "the search had not finished when this report was written" }
    );
    match (s.full_grid_flops, s.fraction_of_grid) {
        (Some(grid), fraction) => {
            let _ = writeln!(
                h,
                "<figure>{}<figcaption>Training FLOPs spent: {} ({}), against {} for an exhaustive search of the \
                 same space{} (each trial counted to its furthest step; continuing from a checkpoint costs only the \
                 new steps).</figcaption></figure>",
                flops_bar(s.flops_spent, grid),
                si(s.flops_spent),
                fraction.map(|f| format!("{:.1}% of the grid's", 100.0 * f)).unwrap_or_default(),
                si(grid),
                s.full_grid_trials.map(|n| format!(" ({n:.0} trials)")).unwrap_or_default()
            );
        }
        (None, _) => {
            let _ = writeln!(h, "<p>Training FLOPs spent: {}.</p>", si(s.flops_spent));
        }
    }
    if let Some(svg) = rung_chart(s) {
        let _ = writeln!(
            h,
            "<figure>{svg}<figcaption>Held-out loss at each rung a trial reached against its training FLOPs. \
             {}</figcaption></figure>",
            if rungs_max > 1 {
                "A promoted trial continues from its checkpoint to the next rung; a trial the search stopped ends in \
                 a cross at the rung where it was stopped."
            } else {
                "Every trial ran in one go to its budget (a single-rung strategy)."
            }
        );
    }
    h.push_str(
        "<table class=\"sortable search-trials\"><thead><tr><th data-type=\"text\">trial</th>\
         <th data-type=\"text\">id</th><th data-type=\"text\">task</th><th data-type=\"num\">budget</th>\
         <th data-type=\"num\">rungs</th><th data-type=\"text\">how it ended</th>\
         <th data-type=\"num\">FLOPs spent</th><th data-type=\"num\">eval loss</th>\
         <th data-type=\"text\">loss at each rung (FLOPs)</th></tr></thead><tbody>\n",
    );
    for t in &s.trials {
        let per_rung: Vec<String> = t
            .rungs
            .iter()
            .map(|r| match (r.eval_loss, r.flops) {
                (Some(l), Some(f)) => format!("{l:.4} ({})", si(f)),
                _ => "running".to_string(),
            })
            .collect();
        let _ = writeln!(
            h,
            "<tr class=\"fate-{}\" data-id=\"{}\"><td>{}</td><td><code>{}</code></td><td>{}</td>{}{}<td>{}</td>{}{}<td>{}</td></tr>",
            t.fate.as_str(),
            escape(&t.id),
            escape(&t.label),
            escape(&t.id),
            escape(&t.task),
            num_cell(Some(t.budget_flops), si),
            num_cell(Some(t.rungs.len() as f64), |v| format!("{v}")),
            escape(&fate_text(t)),
            num_cell(Some(t.flops_spent), si),
            num_cell(t.eval_loss, |v| format!("{v:.4}")),
            escape(&per_rung.join(" \u{2192} "))
        );
    }
    h.push_str("</tbody></table>\n");
    if !s.generations.is_empty() {
        generations(h, s);
    }
}

/// Evolution's generations, and the Pareto front for several objectives.
fn generations(h: &mut String, s: &SearchSummary) {
    let loss_at = s.objectives.iter().position(|o| o == "loss").unwrap_or(0);
    let best = |gs: &[Genome]| {
        gs.iter()
            .filter_map(|g| g.objectives.get(loss_at).copied().flatten())
            .filter(|v| v.is_finite())
            .reduce(f64::min)
    };
    h.push_str(
        "<h3>Generations</h3>\n<table class=\"sortable search-generations\"><thead><tr>\
         <th data-type=\"num\">generation</th><th data-type=\"num\">evaluated</th><th data-type=\"num\">best loss \
         evaluated</th><th data-type=\"num\">survivors</th><th data-type=\"num\">best loss of survivors</th>\
         <th data-type=\"text\">best survivor</th></tr></thead><tbody>\n",
    );
    for g in &s.generation_records() {
        let top = g.population.iter().min_by(|a, b| {
            let l = |x: &Genome| x.objectives.get(loss_at).copied().flatten().unwrap_or(f64::INFINITY);
            l(a).total_cmp(&l(b))
        });
        let _ = writeln!(
            h,
            "<tr>{}{}{}{}{}<td>{}</td></tr>",
            num_cell(Some(g.generation as f64), |v| format!("{v}")),
            num_cell(Some(g.evaluated.len() as f64), |v| format!("{v}")),
            num_cell(best(&g.evaluated), |v| format!("{v:.4}")),
            num_cell(Some(g.population.len() as f64), |v| format!("{v}")),
            num_cell(best(&g.population), |v| format!("{v:.4}")),
            top.map(|t| escape(&format!("{} d{} x{}", t.arch, t.d_model, t.depth))).unwrap_or_default()
        );
    }
    h.push_str("</tbody></table>\n");
    let Some(front_ids) = &s.pareto_front else { return };
    let genomes = s.genomes();
    let front: Vec<&Genome> = genomes.iter().filter(|g| g.ids.iter().any(|id| front_ids.contains(id))).collect();
    let _ = writeln!(
        h,
        "<h3>Pareto front</h3>\n<p>Genomes no other genome beats on every objective ({}): {} of {} evaluated.</p>",
        escape(&s.objectives.join(", ")),
        front.len(),
        genomes.len()
    );
    if let Some(svg) = pareto_scatter(s, &front) {
        let _ = writeln!(
            h,
            "<figure>{svg}<figcaption>Every evaluated genome by its first two objectives (lower is better on both); \
             the front is filled and joined.</figcaption></figure>"
        );
    }
    h.push_str("<table class=\"sortable search-front\"><thead><tr><th data-type=\"text\">architecture</th>");
    for o in &s.objectives {
        let _ = write!(h, "<th data-type=\"num\">{}</th>", escape(o));
    }
    h.push_str("<th data-type=\"text\">trials</th></tr></thead><tbody>\n");
    for g in &front {
        let _ = write!(h, "<tr><td>{}</td>", escape(&format!("{} d{} x{}", g.arch, g.d_model, g.depth)));
        for k in 0..s.objectives.len() {
            h.push_str(&num_cell(g.objectives.get(k).copied().flatten(), fmt_obj));
        }
        let _ = writeln!(h, "<td><code>{}</code></td></tr>", escape(&g.ids.join(", ")));
    }
    h.push_str("</tbody></table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::{Generation, RungFate, RungVisit};

    fn trial(id: &str, fate: &str, rungs: &[(f64, f64)]) -> TrialSearch {
        TrialSearch {
            id: id.into(),
            label: format!("{id}<b>"),
            task: "mqar".into(),
            budget_flops: 9e9,
            fate: TrialFate::from(fate),
            last_rung: rungs.len().saturating_sub(1),
            flops_spent: rungs.last().map_or(0.0, |r| r.0),
            eval_loss: rungs.last().map(|r| r.1),
            rungs: rungs
                .iter()
                .enumerate()
                .map(|(k, &(f, l))| RungVisit {
                    rung: k,
                    until_flops: Some(f),
                    fate: Some(RungFate::Paused),
                    step: Some(k as u64),
                    flops: Some(f),
                    eval_loss: Some(l),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn halving_section_shows_stopped_trials_and_the_grid_fraction() {
        let s = SearchSummary {
            strategy: "asha".into(),
            finished: true,
            trials: vec![
                trial("a", "completed", &[(1e9, 3.0), (3e9, 2.5), (9e9, 2.0)]),
                trial("b", "stopped", &[(1e9, 3.5)]),
                trial("c", "stopped", &[(1e9, 3.2), (3e9, 2.9)]),
            ],
            flops_spent: 1.3e10,
            full_grid_flops: Some(2.7e10),
            full_grid_trials: Some(3.0),
            fraction_of_grid: Some(1.3 / 2.7),
            ..Default::default()
        };
        let mut h = String::new();
        search_section(&mut h, &s);
        assert!(h.contains("data-trials=\"3\" data-stopped=\"2\" data-completed=\"1\""), "{h}");
        assert!(h.contains("stopped at rung 1 (3.00G FLOPs)") && h.contains("promoted 2 times, completed"), "{h}");
        assert!(h.contains("48.1% of the grid's") && h.contains("class=\"search-flops\""), "{h}");
        assert_eq!(h.matches("l8,8m0,-8l-8,8").count(), 2, "one cross per stopped trial");
        assert!(h.contains("a&lt;b&gt;") && !h.contains("a<b>"), "unescaped label");
        assert!(!h.contains("Pareto"), "no front for a single-objective search");
    }

    #[test]
    fn evolution_section_marks_the_front() {
        let g = |id: &str, loss: Option<f64>, params: f64| Genome {
            ids: vec![id.into()],
            arch: "attention-swiglu".into(),
            d_model: 16,
            depth: 2,
            objectives: vec![loss, Some(params)],
        };
        let gens = [
            Generation {
                generation: 0,
                evaluated: vec![g("x", Some(2.0), 1e4), g("y", Some(3.0), 5e3), g("z", Some(3.5), 2e4)],
                population: vec![g("x", Some(2.0), 1e4), g("y", Some(3.0), 5e3)],
            },
            Generation {
                generation: 1,
                evaluated: vec![g("w", None, 1e3)],
                population: vec![g("x", Some(2.0), 1e4), g("y", Some(3.0), 5e3)],
            },
        ];
        let s = SearchSummary {
            strategy: "evolution".into(),
            trials: vec![trial("x", "completed", &[(9e9, 2.0)])],
            objectives: vec!["loss".into(), "params".into()],
            pareto_front: Some(vec!["x".into(), "y".into()]),
            generations: gens.iter().map(|g| serde_json::to_value(g).unwrap()).collect(),
            ..Default::default()
        };
        let mut h = String::new();
        search_section(&mut h, &s);
        assert!(h.contains("data-generations=\"2\" data-front=\"2\""), "{h}");
        assert!(h.contains("2 of 4 evaluated"), "{h}");
        assert_eq!(h.matches("class=\"front\"").count(), 2);
        assert_eq!(h.matches("class=\"dominated\"").count(), 1, "the failed genome has no loss to plot");
        assert!(h.contains("class=\"sortable search-generations\"") && h.contains("class=\"sortable search-front\""));
    }
}
