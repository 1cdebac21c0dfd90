//! End-to-end: trial files on disk -> `load_results` -> `write_report` -> headless Chromium.
//!
//! Chromium loads the report with `#selftest`, so the page's own script sorts every sortable table (per task:
//! the leaderboard, the extrapolation table, the candidates) by its first numeric column both ways and records
//! the verdict in `body[data-selftest]`; `--dump-dom` prints the DOM after the script ran. The test counts the
//! plots (per task: loss vs FLOPs, one isoFLOP plot per arch, the frontier) in the file and in the DOM, and
//! decodes the embedded CSV download. A tampered copy of the page (broken descending sort, a throwing script) checks that
//! the self-test and the console check can fail. Chromium must be installed (`make setup`); the binary can be
//! overridden with the `CHROMIUM` environment variable.

use reports::browser::{attr, console_errors, run_chromium, unique_tmp};
use reports::export::percent_decode;
use reports::{load_results, write_report, CurvePoint, Status, SweepInfo, TrialResult};
use std::collections::BTreeMap;
use std::fs;

const TASKS: [&str; 2] = ["mqar", "bytes"];
/// (arch, E, A, alpha) of the synthetic law each arch follows.
const ARCHES: [(&str, f64, f64, f64); 3] =
    [("transformer", 1.6, 300.0, 0.28), ("mamba", 1.7, 400.0, 0.3), ("hyena", 1.9, 250.0, 0.27)];
const BUDGETS: [f64; 3] = [1e12, 1e13, 1e14];
/// Four sizes per budget (d_model), so every budget has an isoFLOP curve and the envelope a choice to make.
const SIZES: [u64; 4] = [32, 64, 128, 256];
/// Plots per task: loss vs FLOPs, one isoFLOP plot per arch, the frontier.
const PLOTS_PER_TASK: usize = 1 + ARCHES.len() + 1;
/// Sortable tables per task: leaderboard, extrapolation, candidates.
const TABLES_PER_TASK: usize = 3;

fn trial(task: &str, arch: (&str, f64, f64, f64), budget: f64, d_model: u64) -> TrialResult {
    let (name, e, a, alpha) = arch;
    let params = 12 * d_model * d_model * 4 + 2 * 256 * d_model;
    // An isoFLOP parabola in ln N around N*(C) = k sqrt(C) (k by arch), on top of the arch's law in compute.
    let k = match name {
        "transformer" => 0.3,
        "mamba" => 0.5,
        _ => 0.2,
    };
    let extra = 0.08 * (params as f64 / (k * budget.sqrt())).ln().powi(2);
    let law = |c: f64| e + a * c.powf(-alpha) + extra;
    // Eval points at 0, 1/4 .. 4/4 of the budget (the point at 0 FLOPs must be skipped on the log axis).
    let curve: Vec<CurvePoint> = (0..=4u64)
        .map(|k| {
            let flops = budget * k as f64 / 4.0;
            let eval = if k == 0 { 256f64.ln() } else { law(flops) + 0.3 / k as f64 };
            CurvePoint {
                step: k * 100,
                flops,
                tokens: k * 100 * 4096,
                train_loss: eval + 0.02,
                eval_loss: Some(eval),
                metrics: BTreeMap::new(),
            }
        })
        .collect();
    let mut final_metrics = BTreeMap::new();
    if task == "mqar" {
        final_metrics.insert("accuracy".to_string(), (1.0 - 0.1 * law(budget)).clamp(0.0, 1.0));
    }
    TrialResult {
        id: format!("{task}-{name}-{budget:e}-d{d_model}"),
        arch: name.to_string(),
        label: format!("{name} d{d_model} x4"),
        task: task.to_string(),
        status: Status::Completed,
        reason: None,
        d_model,
        depth: 4,
        layers: vec![name.to_string(), "swiglu".to_string()],
        params,
        non_embedding_params: 12 * d_model * d_model * 4,
        flops_per_token: 2.0 * params as f64,
        state_size: 4 * d_model * 16,
        seq_len: 256,
        batch_size: 16,
        budget_flops: budget,
        flops_spent: budget,
        tokens_seen: (budget / (6.0 * params as f64)) as u64,
        steps: 400,
        final_eval_loss: Some(law(budget)),
        final_metrics,
        learning_rate: 1e-3,
        seed: 0,
        curve,
        wall_seconds: 12.5,
        device: "cpu".to_string(),
        grafts: Vec::new(),
        inherited: None,
        task_params: Default::default(),
    }
}

/// 72 trials; on `bytes`, hyena's largest budget fails (small sizes) and diverges (large), leaving it 2 budgets
/// (too few for the power law, enough for the isoFLOP fit).
fn synthetic_results() -> Vec<TrialResult> {
    let mut out = Vec::new();
    for task in TASKS {
        for arch in ARCHES {
            for budget in BUDGETS {
                for size in SIZES {
                    let mut t = trial(task, arch, budget, size);
                    if task == "bytes" && arch.0 == "hyena" && budget == 1e14 {
                        t.curve.truncate(2);
                        if size <= 64 {
                            t.status = Status::Failed;
                            t.reason = Some("CUDA out of memory <allocating 2.00 GiB>".to_string());
                            t.final_eval_loss = None;
                            t.curve.clear();
                        } else {
                            t.status = Status::Diverged;
                            t.reason = Some("loss became NaN at step 120".to_string());
                            t.final_eval_loss = Some(9.5); // exploded: must not enter the envelope
                        }
                    }
                    out.push(t);
                }
            }
        }
    }
    out
}

#[test]
fn report_renders_and_passes_its_selftest_in_chromium() {
    let work = unique_tmp("browser");
    let sweep = work.join("sweep");
    for r in synthetic_results() {
        let d = sweep.join("trials").join(&r.id);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("result.json"), serde_json::to_string_pretty(&r).unwrap()).unwrap();
    }
    fs::create_dir_all(sweep.join("trials/still-running")).unwrap(); // no result.json: skipped

    let results = load_results(&sweep).unwrap();
    assert_eq!(results.len(), 72);
    let info = SweepInfo {
        name: "demo <sweep>".to_string(),
        space_yaml: Some("tasks: [mqar, bytes]\n# budgets < 1e15 & three arches\nbudgets: [1e12, 1e13, 1e14]\n".into()),
        notes: vec!["synthetic results for the browser test".to_string()],
    };
    let page = write_report(&sweep, &results, &info).unwrap();
    let html = fs::read_to_string(&page).unwrap();
    let svgs_in_file = html.matches("<svg").count();
    assert_eq!(svgs_in_file, TASKS.len() * PLOTS_PER_TASK, "plots: loss vs FLOPs, isoFLOP per arch, frontier");
    for (class, per_task) in [("loss-vs-flops", 1), ("isoflop", ARCHES.len()), ("frontier", 1)] {
        let n = html.matches(&format!("<figure class=\"plot {class}\">")).count();
        assert_eq!(n, TASKS.len() * per_task, "{class} plots");
    }
    assert_eq!(html.matches("<table class=\"sortable leaderboard\">").count(), TASKS.len());
    for needle in [
        "needs 3 budgets, has 2",
        "CUDA out of memory &lt;allocating",
        "budgets &lt; 1e15 &amp;",
        "extrapolation",
        "(10x, extrapolated)",
        "200 resamples",
        "seed 0",
    ] {
        assert!(html.contains(needle), "report lacks {needle:?}");
    }
    // The CSV download: a data: URI with every trial.
    let href = attr(&html[html.find("id=\"download-csv\"").unwrap()..], "href").unwrap();
    let csv = percent_decode(href.strip_prefix("data:text/csv;charset=utf-8,").expect("a data: URI"));
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("arch,label,task,params,non_embedding_params,flops_per_token,tokens,flops,loss,status")
    );
    assert_eq!(lines.count(), 72);

    let run = run_chromium(&page, &work);
    let dom = &run.dom;
    assert_eq!(attr(dom, "data-ready"), Some("1"), "script did not finish; stderr:\n{}", run.stderr);
    assert_eq!(
        attr(dom, "data-selftest"),
        Some("pass"),
        "page self-test failed; console errors: {:?}",
        console_errors(&run.stderr)
    );
    let tables = attr(dom, "data-selftest-tables").and_then(|n| n.parse::<usize>().ok());
    assert_eq!(tables, Some(TASKS.len() * TABLES_PER_TASK), "the self-test did not sort every table");
    assert_eq!(dom.matches("<svg").count(), svgs_in_file, "an <svg> went missing in the DOM");
    assert_eq!(dom.matches("</svg>").count(), svgs_in_file);
    assert!(dom.contains("<pre id=\"page-errors\" hidden=\"\"></pre>"), "window.onerror recorded errors");
    let errors = console_errors(&run.stderr);
    assert!(errors.is_empty(), "console errors from the page:\n{}", errors.join("\n"));

    // Negative control: a descending sort that sorts ascending, and a script that throws after the main one.
    let broken = html
        .replace("compare(a, b) : compare(b, a)", "compare(a, b) : compare(a, b)")
        .replace("</body>", "<script>null.boom();</script>\n</body>");
    assert_ne!(broken, html, "tampering found nothing to change");
    let broken_page = work.join("broken.html");
    fs::write(&broken_page, broken).unwrap();
    let bad = run_chromium(&broken_page, &work);
    let verdict = attr(&bad.dom, "data-selftest").unwrap_or("");
    assert!(verdict.starts_with("fail: ") && verdict.contains("desc"), "self-test missed a broken sort: {verdict:?}");
    assert!(!console_errors(&bad.stderr).is_empty(), "console check missed an uncaught error");

    if std::env::var_os("REPORTS_KEEP_TMP").is_some() {
        eprintln!("kept {}", work.display());
    } else {
        fs::remove_dir_all(&work).unwrap();
    }
}
