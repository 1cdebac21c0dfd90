//! End to end as a researcher runs it: a sweep trains, writes report.html, and the report renders in
//! headless Chromium with every plot, a passing self-test (tables sort) and no console errors; then
//! `workbench report` rebuilds the same report from the trial files alone.

mod common;
use common::*;
use reports::browser::{attr, console_errors, run_chromium, unique_tmp};

#[test]
fn sweep_report_renders_in_chromium_and_rebuilds_from_trial_files() {
    let dir = scratch("report-e2e");
    let space = write(&dir, "space.yaml", &tiny_space("e2e", "[1e7, 2e7, 4e7]", 2));
    let out = run(&["sweep", space.to_str().unwrap(), "--out", "out"], &dir);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let page = dir.join("out/report.html");
    assert!(
        stdout.contains(&format!("report: {}", page.display())) || stdout.contains("report: out/report.html"),
        "{stdout}"
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("transformer") && html.contains("mlp"));
    for fetch in ["src=\"http", "href=\"http", "url(http", "@import"] {
        assert!(!html.contains(fetch), "the report must not reach the network ({fetch})");
    }
    let svgs = html.matches("<svg").count();
    assert!(svgs >= 1);

    let seen = run_chromium(&page, &unique_tmp("e2e-chromium"));
    assert_eq!(attr(&seen.dom, "data-ready"), Some("1"), "page script did not finish:\n{}", seen.stderr);
    assert_eq!(attr(&seen.dom, "data-selftest"), Some("pass"), "table sort self-test failed");
    assert_eq!(seen.dom.matches("<svg").count(), svgs, "a plot did not render");
    assert!(console_errors(&seen.stderr).is_empty(), "console errors: {:?}", console_errors(&seen.stderr));

    // Rebuild from the trial files alone: same page.
    std::fs::remove_file(&page).unwrap();
    let out = run(&["report", "out"], &dir);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&page).unwrap(), html);
}
