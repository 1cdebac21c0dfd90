//! `workbench fit` on a CSV: recovers a known law, prints JSON keyed by parameter name, refuses bad files.

mod common;
use common::*;

#[test]
fn fit_power_law_from_csv_as_json() {
    let dir = scratch("fit");
    let mut csv = String::from("arch,flops,loss\n");
    for arch in ["a", "b"] {
        let (e, a, alpha) = if arch == "a" { (1.7, 400.0, 0.3) } else { (2.0, 90.0, 0.2) };
        for i in 0..8 {
            let c = 1e12 * 4f64.powi(i);
            csv.push_str(&format!("{arch},{c:e},{}\n", e + a * c.powf(-alpha)));
        }
    }
    let input = write(&dir, "points.csv", &csv);
    let out = run(&["fit", "--law", "power", "--input", input.to_str().unwrap(), "--json"], &dir);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let fits = v.as_array().unwrap();
    assert_eq!(fits.len(), 2);
    let a = fits.iter().find(|f| f["arch"] == "a").unwrap();
    for (key, truth) in [("E", 1.7), ("A", 400.0), ("alpha", 0.3)] {
        let got = a[key]["value"].as_f64().unwrap();
        assert!((got - truth).abs() <= 0.01 * truth, "{key}: {got} vs {truth}");
    }
}

#[test]
fn a_csv_without_loss_is_a_usage_error_naming_the_file() {
    let dir = scratch("fit-bad");
    let input = write(&dir, "bad.csv", "flops,params\n1e12,1e6\n");
    let out = run(&["fit", "--law", "power", "--input", input.to_str().unwrap()], &dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("bad.csv") && stderr(&out).contains("loss"), "{}", stderr(&out));
}
