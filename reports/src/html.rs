//! The report: one self-contained HTML file (inline CSS, inline SVG, inline script; nothing is fetched).
//!
//! Layout: the sweep name, notes and how the intervals were made; per task (sorted by name, see `html_task`)
//! the loss-vs-FLOPs plot with each arch's fitted law, its bootstrap band and its extrapolation; a sortable
//! leaderboard; the fitted power laws; the extrapolated losses; the isoFLOP curves and fits (Chinchilla
//! approach 2); the compute-optimal frontier; a sortable table of the candidates. Then "Data" (every trial's
//! final numbers as a CSV download, a `data:` URI) and the search-space YAML under "Settings". Every piece of
//! text from the results is HTML-escaped.
//!
//! The script installs `window.onerror` (errors go into the hidden `#page-errors`), makes the sortable tables
//! sortable (click a header; numeric columns sort by the cell's `data-v`, empty cells stay last) and sets
//! `body[data-ready="1"]` when done. With the URL hash `#selftest` it also clicks the first numeric header of
//! every sortable table twice, checks ascending then descending order, and writes `body[data-selftest]` =
//! `"pass"` or `"fail: <why>"`, `body[data-selftest-tables]` = how many tables it checked and
//! `body[data-selftest-heat]` = `"painted/all"` heatmap cells of the MAD section (a cell with a value counts as
//! painted when the browser computes a background colour for it), so a headless browser can check the page (see
//! `tests/browser.rs`, `tests/browser_mad.rs`). With `mad.json` in the directory a MAD section comes first
//! (`html_mad`); with `search.json` a search section follows the tasks (`html_search`).

use crate::export::{data_uri, results_csv, CSV_COLUMNS};
use crate::html_mad::mad_section;
use crate::html_task::task_section;
use crate::mad::MadResults;
use crate::result::{Status, TrialResult};
use crate::search::SearchSummary;
use crate::summary::{summarise, REPORT_BOOTSTRAP, REPORT_SEED};
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
.warn { color: #9a5b00; font-weight: 600; }
p.extrapolation { background: #f3f3f3; border-left: 4px solid #999; padding: .4rem .6rem; }
table.extrapolated thead th { background: #ececec; font-style: italic; }
pre.yaml { background: #f7f7f7; padding: 1rem; overflow-x: auto; }
td.heat { min-width: 4.5rem; } td.heat small { opacity: .85; }
.ramp { display: inline-block; width: 10rem; height: .8rem; vertical-align: middle;
        background: linear-gradient(to right, #440154, #3b528b, #21918c, #5ec962, #fde725); }
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
    document.body.dataset.selftestTables = String(document.querySelectorAll("table.sortable").length);
    // Heatmap cells (MAD) that hold a value and are painted: "painted/all".
    var heat = document.querySelectorAll("td.heat"), painted = 0;
    Array.prototype.forEach.call(heat, function (td) {
      var bg = window.getComputedStyle(td).backgroundColor;
      if (td.getAttribute("data-v") !== "" && bg && bg !== "rgba(0, 0, 0, 0)" && bg !== "transparent") painted++;
    });
    document.body.dataset.selftestHeat = painted + "/" + heat.length;
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
pub(crate) fn si(x: f64) -> String {
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
pub(crate) fn num_cell(value: Option<f64>, shown: impl FnOnce(f64) -> String) -> String {
    match value.filter(|v| v.is_finite()) {
        Some(v) => format!("<td class=\"num\" data-v=\"{v:e}\">{}</td>", escape(&shown(v))),
        None => "<td class=\"num\" data-v=\"\"></td>".to_string(),
    }
}

pub(crate) fn status_text(r: &TrialResult) -> String {
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
    render_html_with_mad(results, info, None)
}

/// Renders the report with a MAD section (before the tasks) when `mad` is given.
pub fn render_html_with_mad(
    results: &[TrialResult],
    info: &SweepInfo,
    mad: Option<&MadResults>,
) -> Result<String, ReportError> {
    render_html_sections(results, info, mad, None)
}

/// Renders the report with the optional MAD section (before the tasks) and search section (after them).
pub fn render_html_sections(
    results: &[TrialResult],
    info: &SweepInfo,
    mad: Option<&MadResults>,
    search: Option<&SearchSummary>,
) -> Result<String, ReportError> {
    let tasks = summarise(results);
    let has_mqar = !crate::html_mqar::mqar_variants(results).is_empty();
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
    if results.is_empty() && mad.is_some() {
        h.push_str("<p>This directory holds a MAD run and no sweep trials.</p>\n");
    } else {
        let _ = writeln!(
            h,
            "<p>{} trials on {} task(s): {} completed, {} diverged, {} failed.</p>",
            results.len(),
            tasks.len(),
            count(Status::Completed),
            count(Status::Diverged),
            count(Status::Failed)
        );
        let _ = writeln!(
            h,
            "<p class=\"intervals\">Intervals are 95% bootstrap percentile intervals: every fit is repeated on \
             {REPORT_BOOTSTRAP} resamples of its points drawn with replacement (isoFLOP fits: within each budget), \
             seed {REPORT_SEED}; resamples whose fit fails are left out and counted.</p>"
        );
    }
    if !info.notes.is_empty() {
        h.push_str("<ul class=\"notes\">\n");
        for n in &info.notes {
            let _ = writeln!(h, "<li>{}</li>", escape(n));
        }
        h.push_str("</ul>\n");
    }
    if let Some(mad) = mad {
        h.push_str("<nav><a href=\"#mad\">MAD scores</a></nav>\n");
        mad_section(&mut h, mad, &tasks)?;
    }
    if !tasks.is_empty() {
        h.push_str("<nav><strong>Tasks:</strong>");
        for (i, t) in tasks.iter().enumerate() {
            let _ = write!(h, " <a href=\"#task-{i}\">{}</a>", escape(&t.task));
        }
        if search.is_some() {
            h.push_str(" | <a href=\"#search\">Search</a>");
        }
        if has_mqar {
            h.push_str(" | <a href=\"#mqar\">MQAR</a>");
        }
        h.push_str(" | <a href=\"#data\">Data</a> | <a href=\"#settings\">Settings</a></nav>\n");
    }
    for (i, t) in tasks.iter().enumerate() {
        task_section(&mut h, i, t)?;
    }
    if let Some(s) = search {
        crate::html_search::search_section(&mut h, s);
    }
    // Colours by the arch's index among all arches, as in the task sections.
    let mut arch_order: Vec<&str> = results.iter().map(|r| r.arch.as_str()).collect();
    arch_order.sort_unstable();
    arch_order.dedup();
    crate::html_mqar::mqar_section(&mut h, results, &arch_order)?;
    crate::html_graft::graft_section(&mut h, results);
    let file = format!("{}-results.csv", info.name.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_"));
    let _ = writeln!(
        h,
        "<h2 id=\"data\">Data</h2>\n<p><a id=\"download-csv\" download=\"{}\" href=\"{}\">Download every trial's \
         final numbers (CSV, {} rows)</a>: columns {}. It can be refitted with <code>workbench fit --law \
         power|isoflop|chinchilla --input FILE.csv</code>.</p>",
        escape(&file),
        data_uri("text/csv", &results_csv(results)),
        results.len(),
        CSV_COLUMNS.join(", ")
    );
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
