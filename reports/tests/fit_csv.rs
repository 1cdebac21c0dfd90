//! `workbench fit` on CSV files: laws per arch, JSON keys, and errors that name the file, line and column.

use reports::fit::{Estimate, Law, PowerLawFit};
use reports::{fit_csv, render_text, run_fit, ArchFit, FitCsvError, LawFit};
use std::fs;
use std::path::PathBuf;

fn write(tag: &str, text: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let p = std::env::temp_dir().join(format!("reports-fitcsv-{tag}-{}-{nanos}.csv", std::process::id()));
    fs::write(&p, text).unwrap();
    p
}

/// Two arches following power laws in compute; each budget has a second, worse row (not on the envelope).
fn power_csv() -> String {
    let mut s = String::from("arch,flops,loss,params\n");
    for (arch, e, a, alpha) in [("mamba", 1.8, 1000.0, 0.15), ("attn", 1.7, 800.0, 0.14)] {
        for k in 0..8 {
            let c = 1e15 * 10f64.powf(0.75 * k as f64);
            let l = e + a * c.powf(-alpha);
            s += &format!("{arch},{c:e},{l},1e6\n{arch},{c:e},{},1e6\n", l + 0.3);
        }
    }
    s
}

#[test]
fn power_law_per_arch_as_json_and_text() {
    let p = write("power", &power_csv());
    let json = run_fit(&p, Law::Power, None, 0, true).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    assert_eq!(arr[0]["arch"], "mamba");
    assert_eq!(arr[0]["law"], "power");
    assert_eq!(arr[0]["n_points"], 8, "the envelope: one point per budget");
    assert!((arr[0]["alpha"]["value"].as_f64().unwrap() - 0.15).abs() < 1e-3, "{json}");
    assert!((arr[1]["E"]["value"].as_f64().unwrap() - 1.7).abs() < 1e-2, "{json}");
    assert!(arr[0]["A"]["value"].is_f64() && arr[0]["E"].get("ci").is_none());

    let boot = run_fit(&p, Law::Power, Some(40), 9, true).unwrap();
    let v: serde_json::Value = serde_json::from_str(&boot).unwrap();
    assert_eq!(v[1]["alpha"]["ci"].as_array().unwrap().len(), 2, "{boot}");
    assert_eq!(v[1]["bootstrap"]["n_resamples"], 40);
    assert_eq!(v[1]["bootstrap"]["seed"], 9);

    let text = run_fit(&p, Law::Power, Some(40), 9, false).unwrap();
    for needle in ["arch mamba: power fit", "arch attn: power fit", "alpha  = 0.14", "40 resamples (seed 9"] {
        assert!(text.contains(needle), "{needle:?} not in\n{text}");
    }
    fs::remove_file(p).unwrap();
}

#[test]
fn flops_default_to_six_n_d_and_isoflop_reads_budgets() {
    // No flops column: C = 6 N D. Three budgets, five sizes each, exact parabolas with N* = 0.1 C^0.5.
    let mut s = String::from("params,tokens,loss\n");
    for c in [1e18f64, 1e19, 1e20] {
        let n_star = 0.1 * c.sqrt();
        for k in -2..=2 {
            let n = n_star * 2f64.powi(k);
            s += &format!("{n},{},{}\n", c / (6.0 * n), 2.0 + 0.05 * (n / n_star).ln().powi(2));
        }
    }
    let p = write("iso", &s);
    let fits = fit_csv(&p, Law::Isoflop, Some(20), 1).unwrap();
    assert_eq!(fits.len(), 1);
    assert_eq!(fits[0].arch, None);
    let LawFit::Isoflop(f) = &fits[0].fit else { panic!("{fits:?}") };
    assert!((f.a.value - 0.5).abs() < 1e-6 && (f.k.value / 0.1 - 1.0).abs() < 1e-4, "{f:?}");
    assert_eq!(f.minima.len(), 3);
    assert!((f.minima[0].flops / 1e18 - 1.0).abs() < 1e-9);
    let json = serde_json::to_value(&fits).unwrap();
    for key in ["a", "b", "k", "k_prime"] {
        assert!(json[0][key]["value"].is_f64(), "{key}: {json}");
    }
    assert!(json[0]["minima"][2]["n_opt"]["ci"].is_array(), "{json}");
    assert!(json[0].get("arch").is_none());
    fs::remove_file(p).unwrap();
}

#[test]
fn chinchilla_from_csv_with_a_small_bootstrap() {
    let mut s = String::from("params,tokens,loss,arch\n");
    for n in [1e7, 1e8, 1e9, 1e10] {
        for d in [1e8, 1e9, 1e10, 1e11, 1e12] {
            s += &format!("{n},{d},{},x\n", 1.69 + 406.4 / f64::powf(n, 0.34) + 410.7 / f64::powf(d, 0.28));
        }
    }
    let p = write("chin", &s);
    let out = run_fit(&p, Law::Chinchilla, Some(4), 0, true).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    for key in ["E", "A", "B", "alpha", "beta", "a", "b", "G"] {
        assert!(v[0][key]["value"].is_f64() && v[0][key]["ci"].is_array(), "{key}: {out}");
    }
    assert!((v[0]["alpha"]["value"].as_f64().unwrap() - 0.34).abs() < 0.01, "{out}");
    assert!(v[0]["bootstrap"]["starts"].as_str().unwrap().contains("reduced grid"), "{out}");
    fs::remove_file(p).unwrap();
}

fn err(text: &str, law: Law) -> (FitCsvError, String) {
    let p = write("err", text);
    let e = fit_csv(&p, law, None, 0).unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with(&p.display().to_string()), "message does not name the file: {msg}");
    fs::remove_file(p).unwrap();
    (e, msg)
}

#[test]
fn bad_files_name_the_line_and_column() {
    let (e, m) = err("flops,params\n1e18,1e6\n", Law::Power);
    assert!(matches!(e, FitCsvError::MissingColumn { column: "loss", .. }), "{m}");
    assert!(m.contains("line 1: no column \"loss\"") && m.contains("columns found: flops, params"), "{m}");

    let (_, m) = err("loss,params\n3.0,1e6\n", Law::Power);
    assert!(m.contains("no column \"tokens\"") && m.contains("flops or params and tokens"), "{m}");
    let (_, m) = err("flops,loss\n1e18,3\n", Law::Chinchilla);
    assert!(m.contains("no column \"params\""), "{m}");

    let (e, m) = err("flops,loss\n1e18,3.0\n1e19,abc\n", Law::Power);
    assert!(matches!(e, FitCsvError::NotNumeric { line: 3, column: "loss", .. }), "{m}");
    assert!(m.contains("line 3, column \"loss\": \"abc\" is not a number"), "{m}");

    let (_, m) = err("flops,loss\n1e18,3.0\n,2.0\n", Law::Power);
    assert!(m.contains("line 3, column \"flops\": \"\" is not a number"), "{m}");

    let (e, m) = err("flops,loss\n1e18,3.0\n1e19,2.5\n-1e20,2.0\n", Law::Power);
    assert!(matches!(e, FitCsvError::NonPositive { line: 4, column: "flops", .. }), "{m}");
    let (_, m) = err("params,tokens,loss\n1e6,0,3.0\n", Law::Chinchilla);
    assert!(m.contains("line 2, column \"tokens\": 0 is not positive"), "{m}");

    let (_, m) = err("flops,loss\n1e18,3.0,7\n", Law::Power);
    assert!(m.contains("not a valid CSV"), "{m}");
    let (_, m) = err("flops,loss\n", Law::Power);
    assert!(m.contains("no data rows"), "{m}");
}

#[test]
fn too_few_points_name_the_arch_and_the_need() {
    let (e, m) = err("arch,flops,loss\nx,1e18,3.0\nx,1e19,2.5\n", Law::Power);
    assert!(matches!(e, FitCsvError::Fit { ref arch, .. } if arch.as_deref() == Some("x")), "{m}");
    assert!(m.contains("arch \"x\": a power fit needs at least 3 points"), "{m}");
    let (_, m) = err("params,tokens,loss\n1e6,1e9,3\n2e6,1e9,2.9\n", Law::Chinchilla);
    assert!(m.contains("needs at least 5 points"), "{m}");
    let (_, m) = err("params,flops,loss\n1e6,1e18,3\n2e6,1e18,2.9\n4e6,1e18,3.1\n", Law::Isoflop);
    assert!(m.contains("at least 2 FLOP budgets with at least 3 distinct model sizes each, got 1"), "{m}");
}

#[test]
fn rows_that_did_not_complete_are_skipped() {
    let text = "arch,flops,loss,status\nx,1e18,3.0,completed\nx,1e19,,failed\nx,1e19,2.5,\nx,1e20,2.2,completed\n";
    let p = write("status", text);
    let fits = fit_csv(&p, Law::Power, None, 0).unwrap();
    let LawFit::Power(f) = &fits[0].fit else { panic!() };
    assert_eq!(f.n_points, 3);
    fs::remove_file(p).unwrap();
    let (_, m) = err("flops,loss,status\n1e18,,failed\n", Law::Power);
    assert!(m.contains("no data rows to fit (1 row(s) skipped for their status)"), "{m}");
}

#[test]
fn text_marks_a_fit_that_did_not_converge() {
    let e = Estimate::point;
    let fit =
        PowerLawFit { e: e(1.0), a: e(2.0), alpha: e(0.3), converged: false, rss: 0.1, n_points: 3, bootstrap: None };
    let fits = [ArchFit { arch: Some("x".into()), law: Law::Power, fit: LawFit::Power(fit) }];
    let text = render_text(std::path::Path::new("f.csv"), &fits);
    assert!(text.contains("WARNING: the optimiser did not converge (converged: false)"), "{text}");
    let json = reports::render_json(&fits);
    assert!(json.contains("\"converged\": false"), "{json}");
}
