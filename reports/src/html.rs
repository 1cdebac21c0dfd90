//! The report: one self-contained HTML file (inline CSS, inline SVG, inline script; nothing is fetched).
//!
//! Layout: the sweep name and notes; per task (sorted by name) the loss-vs-FLOPs plot, the fitted laws per arch
//! (fitted to each arch's compute-optimal envelope, see `summary`) and a sortable table of the candidates;
//! then the search-space YAML under "Settings". Every piece of text from the results is HTML-escaped.
//!
//! The script installs `window.onerror` (errors go into the hidden `#page-errors`), makes the candidate tables
//! sortable (click a header; numeric columns sort by the cell's `data-v`, empty cells stay last) and sets
//! `body[data-ready="1"]` when done. With the URL hash `#selftest` it also clicks the first numeric header of
//! every sortable table twice, checks ascending then descending order, and writes `body[data-selftest]` =
//! `"pass"` or `"fail: <why>"`, so a headless browser can check the page (see `tests/browser.rs`).

use crate::fit::FitError;
use crate::plot::{colour_hex, loss_vs_flops_svg};
use crate::result::{Status, TrialResult};
use crate::summary::{summarise, TaskSummary};
use crate::{ReportError, SweepInfo};
use std::fmt::Write as _;

const CSS: &str = r#"
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 72rem;
       padding: 0 1rem; color: #222; line-height: 1.4; }
h1 { margin-bottom: .2rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2.5rem; }
figure { margin: 1rem 0; } figure svg { width: 100%; max-width: 960px; height: auto; }
figcaption { color: #555; font-size: .9rem; }
table { border-collapse: collapse; margin: .5rem 0 1.5rem; font-size: .9rem; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
thead th { background: #f4f4f4; }
table.sortable th[data-type] { cursor: pointer; user-select: none; }
th[data-dir="asc"]::after { content: " \25B2"; } th[data-dir="desc"]::after { content: " \25BC"; }
.swatch { display: inline-block; width: .8rem; height: .8rem; margin-right: .4rem; vertical-align: middle; }
.na { color: #777; font-style: italic; }
.status-failed, .status-diverged { color: #b00020; }
pre.yaml { background: #f7f7f7; padding: 1rem; overflow-x: auto; }
"#;

const SCRIPT: &str = r##"
(function () {
  "use strict";
  var errBox = document.getElementById("page-errors");
  window.onerror = function (msg, src, line, col) {
    if (errBox) {
      errBox.textContent += String(msg) + " (" + src + ":" + line + ":" + col + ")\n";
      errBox.setAttribute("data-count", String(Number(errBox.getAttribute("data-count") || "0") + 1));
    }
    return false;
  };

  // A cell's sort key: number (numeric columns) or lower-case text; null for an empty cell.
  function cellKey(row, idx, numeric) {
    var td = row.cells[idx];
    if (!td) return null;
    var raw = td.hasAttribute("data-v") ? td.getAttribute("data-v") : td.textContent.trim();
    if (raw === "") return null;
    if (!numeric) return raw.toLowerCase();
    var v = parseFloat(raw);
    return isFinite(v) ? v : null;
  }
  function compare(a, b) { return a < b ? -1 : (a > b ? 1 : 0); }

  // Sorts th's table by th's column: ascending first, then toggles. Empty cells stay last either way.
  function sortBy(th) {
    var table = th.closest("table");
    var idx = th.cellIndex;
    var numeric = th.getAttribute("data-type") === "num";
    var dir = th.getAttribute("data-dir") === "asc" ? "desc" : "asc";
    var heads = table.tHead.rows[0].cells;
    for (var i = 0; i < heads.length; i++) {
      heads[i].removeAttribute("data-dir");
      if (heads[i].hasAttribute("data-type")) heads[i].setAttribute("aria-sort", "none");
    }
    th.setAttribute("data-dir", dir);
    th.setAttribute("aria-sort", dir === "asc" ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (ra, rb) {
      var a = cellKey(ra, idx, numeric), b = cellKey(rb, idx, numeric);
      if (a === null || b === null) return (a === null) - (b === null);
      return dir === "asc" ? compare(a, b) : compare(b, a);
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }

  var heads = document.querySelectorAll("table.sortable thead th[data-type]");
  Array.prototype.forEach.call(heads, function (th) {
    th.addEventListener("click", function () { sortBy(th); });
    th.addEventListener("keydown", function (ev) {
      if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); sortBy(th); }
    });
  });

  // "" when column idx of table is in dir order (empty cells last), else why not.
  function checkOrder(table, idx, dir) {
    var rows = table.tBodies[0].rows, prev = null, seenEmpty = false;
    for (var i = 0; i < rows.length; i++) {
      var k = cellKey(rows[i], idx, true);
      if (k === null) { seenEmpty = true; continue; }
      if (seenEmpty) return "row " + i + " has a value after an empty cell";
      var c = prev === null ? 0 : compare(prev, k);
      if ((dir === "asc" && c > 0) || (dir === "desc" && c < 0)) {
        return "row " + i + " (" + k + ") is out of " + dir + " order after " + prev;
      }
      prev = k;
    }
    return "";
  }

  function selftest() {
    var tables = document.querySelectorAll("table.sortable");
    if (tables.length === 0) return "no sortable table";
    for (var t = 0; t < tables.length; t++) {
      var table = tables[t];
      var th = table.querySelector("thead th[data-type='num']");
      if (!th) return "table " + t + " has no numeric column";
      var name = "table " + t + " column '" + th.textContent.trim() + "'";
      var n = table.tBodies[0].rows.length;
      var dirs = ["asc", "desc"];
      for (var d = 0; d < dirs.length; d++) {
        th.click();
        if (th.getAttribute("data-dir") !== dirs[d]) return name + ": header not marked " + dirs[d];
        var why = checkOrder(table, th.cellIndex, dirs[d]);
        if (why) return name + " " + dirs[d] + ": " + why;
      }
      if (table.tBodies[0].rows.length !== n) return name + ": sorting changed the row count";
    }
    if (errBox && errBox.textContent) return "page errors: " + errBox.textContent;
    return "";
  }

  if (window.location.hash === "#selftest") {
    var why;
    try { why = selftest(); } catch (e) { why = "exception: " + e; }
    document.body.dataset.selftest = why ? "fail: " + why : "pass";
  }
  document.body.dataset.ready = "1";
})();
"##;

/// HTML-escapes `s` for text and for double- or single-quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A count with an SI suffix and three significant digits: 950 -> "950", 1_234_567 -> "1.23M".
fn si(x: f64) -> String {
    const UNITS: [(f64, &str); 4] = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")];
    let (v, unit) = match UNITS.iter().find(|(scale, _)| x.abs() >= *scale) {
        Some((scale, unit)) => (x / scale, *unit),
        None => (x, ""),
    };
    let decimals = if unit.is_empty() || v.abs() >= 100.0 {
        0
    } else if v.abs() >= 10.0 {
        1
    } else {
        2
    };
    format!("{v:.decimals$}{unit}")
}

/// A numeric table cell: shows `shown`, sorts by `value` (empty when absent).
fn num_cell(value: Option<f64>, shown: impl FnOnce(f64) -> String) -> String {
    match value.filter(|v| v.is_finite()) {
        Some(v) => format!("<td class=\"num\" data-v=\"{v:e}\">{}</td>", escape(&shown(v))),
        None => "<td class=\"num\" data-v=\"\"></td>".to_string(),
    }
}

fn status_text(r: &TrialResult) -> String {
    let s = match r.status {
        Status::Completed => "completed",
        Status::Diverged => "diverged",
        Status::Failed => "failed",
    };
    match &r.reason {
        Some(why) if !why.is_empty() => format!("{s}: {why}"),
        _ => s.to_string(),
    }
}

/// Renders the whole report as one HTML document.
pub fn render_html(results: &[TrialResult], info: &SweepInfo) -> Result<String, ReportError> {
    let tasks = summarise(results);
    let mut h = String::new();
    let title = format!("Sweep {}: scaling report", info.name);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n\
         <pre id=\"page-errors\" hidden></pre>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    let count = |s: Status| results.iter().filter(|r| r.status == s).count();
    let _ = writeln!(
        h,
        "<p>{} trials on {} task(s): {} completed, {} diverged, {} failed.</p>",
        results.len(),
        tasks.len(),
        count(Status::Completed),
        count(Status::Diverged),
        count(Status::Failed)
    );
    if !info.notes.is_empty() {
        h.push_str("<ul class=\"notes\">\n");
        for n in &info.notes {
            let _ = writeln!(h, "<li>{}</li>", escape(n));
        }
        h.push_str("</ul>\n");
    }
    if !tasks.is_empty() {
        h.push_str("<nav><strong>Tasks:</strong>");
        for (i, t) in tasks.iter().enumerate() {
            let _ = write!(h, " <a href=\"#task-{i}\">{}</a>", escape(&t.task));
        }
        h.push_str(" | <a href=\"#settings\">Settings</a></nav>\n");
    }
    for (i, t) in tasks.iter().enumerate() {
        task_section(&mut h, i, t)?;
    }
    h.push_str("<h2 id=\"settings\">Settings</h2>\n");
    match &info.space_yaml {
        Some(y) => {
            let _ = writeln!(h, "<pre class=\"yaml\">{}</pre>", escape(y));
        }
        None => h.push_str("<p class=\"na\">No search-space YAML was recorded.</p>\n"),
    }
    let _ = write!(h, "<script>{SCRIPT}</script>\n</body>\n</html>\n");
    Ok(h)
}

fn task_section(h: &mut String, i: usize, t: &TaskSummary) -> Result<(), ReportError> {
    let _ = writeln!(h, "<section id=\"task-{i}\">\n<h2>Task: {}</h2>", escape(&t.task));
    let svg = loss_vs_flops_svg(t)?;
    let _ = writeln!(
        h,
        "<figure>\n{svg}\n<figcaption>Eval loss of every completed trial against training FLOPs (thin \
         lines), final points (dots) and each architecture's fitted law (dashed).</figcaption>\n</figure>"
    );

    // Fitted laws, one row per arch.
    h.push_str(
        "<h3>Fitted laws: L(C) = E + A &middot; C<sup>&minus;&alpha;</sup></h3>\n<p>Fitted to the lowest \
         final eval loss per budget of each architecture (completed trials only), C in FLOPs spent.</p>\n\
         <table class=\"fits\">\n<thead><tr><th>arch</th><th>E</th><th>A</th><th>&alpha;</th>\
         <th>points</th><th>converged</th><th>RSS of ln L</th></tr></thead>\n<tbody>\n",
    );
    for a in &t.arches {
        let _ = write!(
            h,
            "<tr><td><span class=\"swatch\" style=\"background:{}\"></span>{}</td>",
            colour_hex(a.colour),
            escape(&a.arch)
        );
        match &a.fit {
            Ok(f) => {
                let _ = write!(
                    h,
                    "<td class=\"num\">{:.4}</td><td class=\"num\">{:.3e}</td><td class=\"num\">{:.4}</td>\
                     <td class=\"num\">{}</td><td>{}</td><td class=\"num\">{:.2e}</td>",
                    f.e.value,
                    f.a.value,
                    f.alpha.value,
                    f.n_points,
                    if f.converged { "yes" } else { "no" },
                    f.rss
                );
            }
            Err(FitError::TooFewPoints { got, need, .. }) => {
                let _ = write!(h, "<td colspan=\"6\" class=\"na\">needs {need} budgets, has {got}</td>");
            }
            Err(e) => {
                let _ = write!(h, "<td colspan=\"6\" class=\"na\">no fit: {}</td>", escape(&e.to_string()));
            }
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table>\n");

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
    h.push_str("<h3>Candidates</h3>\n<table class=\"sortable candidates\">\n<thead><tr>");
    for (name, numeric) in heads {
        let ty = if numeric { "num" } else { "text" };
        let _ = write!(
            h,
            "<th data-type=\"{ty}\" tabindex=\"0\" aria-sort=\"none\" title=\"click to sort\">{}</th>",
            escape(name)
        );
    }
    h.push_str("</tr></thead>\n<tbody>\n");
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
    h.push_str("</tbody>\n</table>\n</section>\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(escape(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }

    #[test]
    fn si_formats_counts() {
        assert_eq!(si(950.0), "950");
        assert_eq!(si(1_234_567.0), "1.23M");
        assert_eq!(si(229_376.0), "229k");
        assert_eq!(si(45_600.0), "45.6k");
    }

    #[test]
    fn report_is_self_contained_escaped_and_explains_missing_fits() {
        let mut a = crate::test_support::minimal("id1", "task<1>", "arch&x");
        a.final_eval_loss = Some(2.0);
        a.flops_spent = 1e12;
        a.final_metrics.insert("accuracy".into(), 0.5);
        let mut b = crate::test_support::minimal("id2", "task<1>", "arch&x");
        b.status = Status::Failed;
        b.reason = Some("CUDA <oom>".into());
        let info =
            SweepInfo { name: "s<1>".into(), space_yaml: Some("a: <b>\n".into()), notes: vec!["note & more".into()] };
        let html = render_html(&[a, b], &info).unwrap();
        for needle in [
            "Sweep s&lt;1&gt;",
            "Task: task&lt;1&gt;",
            "arch&amp;x",
            "needs 3 budgets, has 1",
            "failed: CUDA &lt;oom&gt;",
            "a: &lt;b&gt;",
            "note &amp; more",
            ">accuracy</th>",
            "window.onerror",
            "dataset.ready",
            "<svg",
        ] {
            assert!(html.contains(needle), "missing {needle:?}");
        }
        assert!(!html.contains("task<1>") && !html.contains("<b>"), "unescaped text");
        for external in ["src=\"http", "href=\"http", "@import", "url("] {
            assert!(!html.contains(external), "external reference {external:?}");
        }
    }
}
