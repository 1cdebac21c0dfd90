//! The MAD section in a browser: a directory with `mad.json` (its cells not yet filled: the report refreshes them
//! from the trial files) and language-modelling trials of the same architectures. Headless Chromium loads the
//! report with `#selftest`: the tables sort (the heatmap is sortable), every heatmap cell with a value is painted
//! (`body[data-selftest-heat]`), the MAD-vs-loss plot is there, and nothing logs an error.

use reports::browser::{attr, console_errors, run_chromium, unique_tmp};
use reports::mad::{MadCandidate, MadCell, MadProtocol, MadResults, MadSettingScore, MadTaskScore, MAD_FILE};
use reports::{load_results, write_report, Status, SweepInfo, TrialResult};
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

const ARCHES: [&str; 3] = ["transformer", "hyena", "sliding-window"];
const TASKS: [&str; 6] = [
    "mad_in_context_recall",
    "mad_fuzzy_recall",
    "mad_noisy_recall",
    "mad_selective_copying",
    "mad_compression",
    "mad_memorization",
];
const SETTINGS: [&str; 2] = ["baseline", "vocab_size=32"];
const GRID: [(f64, f64); 2] = [(1e-3, 0.0), (5e-4, 0.1)];

fn result(id: &str, task: &str, arch: &str, status: Status, loss: f64, budget: f64) -> TrialResult {
    TrialResult {
        id: id.into(),
        arch: arch.into(),
        label: format!("{arch} d32 x4"),
        task: task.into(),
        status,
        reason: (status != Status::Completed).then(|| "CUDA out of memory".to_string()),
        d_model: 32,
        depth: 4,
        layers: vec![arch.into(), "swiglu".into()],
        params: 30_000,
        non_embedding_params: 20_000,
        flops_per_token: 6e4,
        state_size: 1024,
        seq_len: 128,
        batch_size: 128,
        budget_flops: budget,
        flops_spent: budget,
        tokens_seen: 1000,
        steps: 100,
        final_eval_loss: Some(loss),
        final_metrics: BTreeMap::new(),
        learning_rate: 1e-3,
        seed: 12345,
        curve: Vec::new(),
        wall_seconds: 3.0,
        device: "cpu".into(),
        grafts: Vec::new(),
        inherited: None,
        task_params: Default::default(),
    }
}

fn put(dir: &Path, r: &TrialResult) {
    let d = dir.join("trials").join(&r.id);
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("result.json"), serde_json::to_string_pretty(r).unwrap()).unwrap();
}

/// mad.json with empty cells, and the trial results behind them: accuracy rises with the arch's index, the task
/// and the setting; hyena's compression baseline failed in both cells.
fn mad_run(dir: &Path) -> MadResults {
    let mut candidates = Vec::new();
    for (ai, arch) in ARCHES.iter().enumerate() {
        let mut tasks = Vec::new();
        for (ti, task) in TASKS.iter().enumerate() {
            let mut settings = Vec::new();
            for (si, setting) in SETTINGS.iter().enumerate() {
                let mut cells = Vec::new();
                for (gi, &(lr, wd)) in GRID.iter().enumerate() {
                    let id = format!("{arch}-{task}-{si}-{gi}");
                    let failed = *arch == "hyena" && *task == "mad_compression" && si == 0;
                    let status = if failed { Status::Failed } else { Status::Completed };
                    let mut r = result(&id, task, arch, status, 1.0, 1e11);
                    let acc =
                        (0.1 + 0.25 * ai as f64 + 0.08 * ti as f64 + 0.05 * si as f64 + 0.02 * gi as f64).min(1.0);
                    if !failed {
                        r.final_metrics.insert("macro_accuracy".into(), acc);
                        r.final_metrics.insert("accuracy".into(), acc);
                    }
                    put(dir, &r);
                    cells.push(MadCell {
                        lr,
                        weight_decay: wd,
                        trial_id: id,
                        status: None,
                        accuracy: None,
                        example_accuracy: None,
                        loss: None,
                    });
                }
                settings.push(MadSettingScore { setting: setting.to_string(), cells, best: None });
            }
            tasks.push(MadTaskScore { task: task.to_string(), settings, score: None, missing: 0 });
        }
        candidates.push(MadCandidate {
            arch: arch.to_string(),
            label: format!("{arch} d32 x4"),
            d_model: 32,
            depth: 4,
            tasks,
            score: None,
            missing: 0,
        });
    }
    MadResults {
        name: "mad <demo>".into(),
        protocol: MadProtocol {
            epochs: 20,
            baseline_only: false,
            train_fraction: 0.05,
            test_examples: 256,
            tasks: TASKS.iter().map(|t| t.to_string()).collect(),
            learning_rates: vec![1e-3, 5e-4],
            weight_decays: vec![0.0, 0.1],
            batch_size: 128,
            seed: 12345,
            metric: "macro_accuracy".into(),
            deviations: vec!["20 epochs per trial instead of the published 200".into()],
        },
        candidates,
    }
}

#[test]
fn mad_heatmap_and_mad_vs_loss_render_in_chromium() {
    let work = unique_tmp("browser-mad");
    let dir = work.join("sweep");
    fs::create_dir_all(&dir).unwrap();
    let mad = mad_run(&dir);
    fs::write(dir.join(MAD_FILE), serde_json::to_string_pretty(&mad).unwrap()).unwrap();
    // The sweep's language-modelling trials: three budgets per arch, the better MAD score the lower the loss.
    let mut lm = Vec::new();
    for (ai, arch) in ARCHES.iter().enumerate() {
        for (bi, budget) in [1e12, 1e13, 1e14].iter().enumerate() {
            let loss = 2.0 - 0.2 * ai as f64 + 0.3 * (2 - bi) as f64;
            let r = result(&format!("lm-{arch}-{bi}"), "bytes", arch, Status::Completed, loss, *budget);
            put(&dir, &r);
            lm.push(r);
        }
    }
    let info = SweepInfo { name: "mad <demo>".into(), space_yaml: None, notes: Vec::new() };
    let page = write_report(&dir, &lm, &info).unwrap();
    let html = fs::read_to_string(&page).unwrap();
    assert_eq!(html.matches("<table class=\"sortable mad-heatmap\">").count(), 1);
    assert_eq!(html.matches("<table class=\"mad-task\">").count(), TASKS.len());
    assert_eq!(html.matches("<figure class=\"plot mad-vs-loss\">").count(), 1);
    for needle in
        ["20 epochs per trial", "mad &lt;demo&gt;", "in context recall", "vocab_size=32", "Spearman &rho; = -1.00"]
    {
        assert!(html.contains(needle), "report lacks {needle:?}");
    }
    assert!(html.contains("title=\"1 settings without a result\">*</sup>"), "hyena's failed setting is not marked");
    // The report refreshed the cells from the trial files; mad.json itself is left as it was.
    assert_eq!(MadResults::load(&dir).unwrap().unwrap(), mad);
    assert_eq!(load_results(&dir).unwrap().len(), ARCHES.len() * (TASKS.len() * SETTINGS.len() * GRID.len() + 3));

    let run = run_chromium(&page, &work);
    let dom = &run.dom;
    assert_eq!(attr(dom, "data-ready"), Some("1"), "script did not finish; stderr:\n{}", run.stderr);
    assert_eq!(attr(dom, "data-selftest"), Some("pass"), "console errors: {:?}", console_errors(&run.stderr));
    // Sortable: the bytes task's leaderboard, extrapolation and candidates, and the heatmap.
    assert_eq!(attr(dom, "data-selftest-tables"), Some("4"));
    // Heatmap: 3 x (6 tasks + MAD); per task: 3 x (2 settings + task score). One setting has no value.
    let all = ARCHES.len() * (TASKS.len() + 1) + TASKS.len() * ARCHES.len() * (SETTINGS.len() + 1);
    assert_eq!(attr(dom, "data-selftest-heat"), Some(format!("{}/{all}", all - 1).as_str()));
    let svgs = html.matches("<svg").count();
    assert_eq!(dom.matches("<svg").count(), svgs, "an <svg> went missing in the DOM");
    let errors = console_errors(&run.stderr);
    assert!(errors.is_empty(), "console errors from the page:\n{}", errors.join("\n"));
    fs::remove_dir_all(&work).unwrap();
}
