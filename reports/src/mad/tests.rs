//! The protocol's aggregation on synthetic results (no training): best-of per setting, means per task and over
//! tasks, what a failed, diverged or missing trial does, and the rendering of the MAD section.

use super::*;
use crate::test_support::minimal;

/// A cell whose trial id encodes where it sits: `cand/task/setting/lr/wd`.
fn cell(id: String, lr: f64, wd: f64) -> MadCell {
    MadCell { lr, weight_decay: wd, trial_id: id, status: None, accuracy: None, example_accuracy: None, loss: None }
}

/// Two candidates, tasks `mad_a` (settings `baseline`, `seq_len=64`) and `mad_b` (`baseline`), a 2 x 2 grid.
fn skeleton() -> MadResults {
    let tasks = [("mad_a", vec!["baseline", "seq_len=64"]), ("mad_b", vec!["baseline"])];
    let candidates = ["x", "y"]
        .iter()
        .map(|&c| MadCandidate {
            arch: c.into(),
            label: format!("{c} d8 x2"),
            d_model: 8,
            depth: 2,
            tasks: tasks
                .iter()
                .map(|(t, settings)| MadTaskScore {
                    task: t.to_string(),
                    settings: settings
                        .iter()
                        .map(|s| MadSettingScore {
                            setting: s.to_string(),
                            cells: [(1e-3, 0.0), (1e-3, 0.1), (1e-4, 0.0), (1e-4, 0.1)]
                                .iter()
                                .map(|&(lr, wd)| cell(format!("{c}/{t}/{s}/{lr}/{wd}"), lr, wd))
                                .collect(),
                            best: None,
                        })
                        .collect(),
                    score: None,
                    missing: 0,
                })
                .collect(),
            score: None,
            missing: 0,
        })
        .collect();
    MadResults {
        name: "demo".into(),
        protocol: MadProtocol {
            epochs: 200,
            baseline_only: false,
            train_fraction: 1.0,
            test_examples: 1280,
            tasks: vec!["mad_a".into(), "mad_b".into()],
            learning_rates: vec![1e-3, 1e-4],
            weight_decays: vec![0.0, 0.1],
            batch_size: 128,
            seed: 12345,
            metric: "macro_accuracy".into(),
            deviations: Vec::new(),
        },
        candidates,
    }
}

fn result(id: &str, acc: f64, status: Status) -> TrialResult {
    let mut r = minimal(id, "mad_a", "x");
    r.status = status;
    r.final_metrics.insert("macro_accuracy".into(), acc);
    r.final_metrics.insert("accuracy".into(), acc + 0.01);
    r.final_eval_loss = Some(1.0 - acc);
    r
}

#[test]
fn best_of_grid_then_mean_over_settings_then_over_tasks() {
    let mut m = skeleton();
    let rs = vec![
        // x, mad_a, baseline: best 0.8 at (1e-3, 0.1); the diverged 0.95 and the failed cell do not count.
        result("x/mad_a/baseline/0.001/0", 0.5, Status::Completed),
        result("x/mad_a/baseline/0.001/0.1", 0.8, Status::Completed),
        result("x/mad_a/baseline/0.0001/0", 0.95, Status::Diverged),
        result("x/mad_a/baseline/0.0001/0.1", 0.99, Status::Failed),
        // x, mad_a, seq_len=64: a tie at 0.6 goes to the first cell in grid order.
        result("x/mad_a/seq_len=64/0.001/0", 0.6, Status::Completed),
        result("x/mad_a/seq_len=64/0.0001/0", 0.6, Status::Completed),
        // x, mad_b, baseline: 0.3.
        result("x/mad_b/baseline/0.0001/0.1", 0.3, Status::Completed),
        // y: only mad_a's baseline has a result; mad_b has none at all.
        result("y/mad_a/baseline/0.0001/0", 1.0, Status::Completed),
    ];
    m.update_from(&rs);
    let x = &m.candidates[0];
    let best = x.tasks[0].settings[0].best.as_ref().unwrap();
    assert_eq!((best.accuracy, best.lr, best.weight_decay), (0.8, 1e-3, 0.1));
    assert_eq!(best.trial_id, "x/mad_a/baseline/0.001/0.1");
    let tie = x.tasks[0].settings[1].best.as_ref().unwrap();
    assert_eq!((tie.accuracy, tie.lr), (0.6, 1e-3));
    assert!((x.tasks[0].score.unwrap() - 0.7).abs() < 1e-12, "mean of 0.8 and 0.6");
    assert_eq!(x.tasks[0].missing, 0);
    assert_eq!(x.tasks[1].score, Some(0.3));
    assert!((x.score.unwrap() - 0.5).abs() < 1e-12, "mean of 0.7 and 0.3");
    assert_eq!(x.missing, 0);
    // Cells carry their trial's status and both accuracies; a cell with no result is pending.
    let c = &x.tasks[0].settings[0].cells;
    assert_eq!((c[0].status, c[0].accuracy, c[0].example_accuracy), (Some(Status::Completed), Some(0.5), Some(0.51)));
    assert_eq!((c[2].status, c[2].accuracy), (Some(Status::Diverged), None));
    assert_eq!(x.tasks[0].settings[1].cells[1].status, None);

    let y = &m.candidates[1];
    assert_eq!(y.tasks[0].score, Some(1.0), "the scored setting alone");
    assert_eq!(y.tasks[0].missing, 1);
    assert_eq!((y.tasks[1].score, y.tasks[1].missing), (None, 1));
    assert_eq!((y.score, y.missing), (Some(1.0), 1), "the task with a score alone, one missing");

    // Refreshing from fewer results resets the cells.
    m.update_from(&[]);
    assert!(m.candidates.iter().all(|c| c.score.is_none() && c.missing == 2));
}

#[test]
fn mad_json_round_trips_and_loads() {
    let mut m = skeleton();
    m.update_from(&[result("x/mad_b/baseline/0.001/0", 0.25, Status::Completed)]);
    let dir = crate::browser::unique_tmp("mad-json");
    assert_eq!(MadResults::load(&dir).unwrap(), None);
    std::fs::write(dir.join(MAD_FILE), serde_json::to_string_pretty(&m).unwrap()).unwrap();
    assert_eq!(MadResults::load(&dir).unwrap(), Some(m));
    std::fs::write(dir.join(MAD_FILE), "{\"name\": 1}").unwrap();
    let err = MadResults::load(&dir).unwrap_err();
    assert!(err.to_string().contains("mad.json"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn spearman_ranks_with_ties() {
    assert_eq!(spearman(&[(1.0, 2.0), (2.0, 1.0)]), None, "fewer than 3 pairs");
    assert_eq!(spearman(&[(1.0, 2.0), (2.0, 2.0), (3.0, 2.0)]), None, "constant side");
    let r = spearman(&[(1.0, 10.0), (2.0, 20.0), (3.0, 15.0), (4.0, 40.0)]).unwrap();
    assert!((r - 0.8).abs() < 1e-12, "{r}");
    let r = spearman(&[(3.0, 1.0), (2.0, 2.0), (1.0, 3.0)]).unwrap();
    assert!((r + 1.0).abs() < 1e-12);
    let r = spearman(&[(1.0, 1.0), (1.0, 2.0), (2.0, 3.0)]).unwrap();
    assert!((r - 0.866_025_403_784_438_6).abs() < 1e-12, "{r}");
}

#[test]
fn section_renders_heatmap_tables_deviations_and_lm_plot() {
    let mut m = skeleton();
    m.protocol.deviations = vec!["epochs 2 <instead of 200>".into()];
    m.candidates[0].label = "x<&>".into();
    m.update_from(&[
        result("x/mad_a/baseline/0.001/0", 0.9, Status::Completed),
        result("y/mad_a/baseline/0.001/0", 0.2, Status::Completed),
        result("y/mad_b/baseline/0.001/0", 0.4, Status::Completed),
    ]);
    let info = crate::SweepInfo { name: "demo".into(), ..Default::default() };
    // Without language-modelling trials: a note instead of the plot.
    let html = crate::render_html_with_mad(&[], &info, Some(&m)).unwrap();
    for needle in [
        "<table class=\"sortable mad-heatmap\">",
        "epochs 2 &lt;instead of 200&gt;",
        "x&lt;&amp;&gt;",
        ">a</th>",
        "MAD score</th>",
        "<h4>mad_a</h4>",
        "seq_len=64",
        "lr 1e-3, wd 0",
        "No language-modelling trials",
        "holds a MAD run and no sweep trials",
    ] {
        assert!(html.contains(needle), "missing {needle:?}");
    }
    assert!(html.contains(&format!("background:{}", crate::html_mad::heat(0.9).0)), "coloured cell");
    // With bytes trials of arch `x` and `y`: the plot, one point each.
    let lm: Vec<TrialResult> = [("x", 1.4), ("y", 1.9)]
        .iter()
        .enumerate()
        .map(|(i, &(arch, loss))| {
            let mut r = minimal(&format!("lm{i}"), "bytes", arch);
            r.final_eval_loss = Some(loss);
            r.flops_spent = 1e12;
            r
        })
        .collect();
    let html = crate::render_html_with_mad(&lm, &info, Some(&m)).unwrap();
    assert!(html.contains("<figure class=\"plot mad-vs-loss\">"), "no MAD-vs-loss plot");
    assert!(html.contains("best trial at the largest budget") && html.contains("needs 3 candidates"));
}

#[test]
fn heat_runs_from_dark_to_bright() {
    assert_eq!(crate::html_mad::heat(0.0), ("#440154".to_string(), "#fff"));
    assert_eq!(crate::html_mad::heat(1.0), ("#fde725".to_string(), "#111"));
    assert_eq!(crate::html_mad::heat(2.0).0, "#fde725");
    assert_eq!(crate::html_mad::heat(0.5).0, "#21918c");
}
