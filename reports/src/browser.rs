//! Rendering a report in headless Chromium, for the tests that check the report as a person would see it
//! (every plot present, the page's own self-test passing, no console errors). Chromium comes from
//! Debian's `chromium` package (`make setup` installs it); the `CHROMIUM` environment variable overrides
//! the binary. No network is involved: the page is a local file with everything inline.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What Chromium saw: the DOM after the page's scripts ran, and its log (console messages included).
pub struct Chromium {
    pub dom: String,
    pub stderr: String,
}

/// A fresh folder under the system temp dir.
pub fn unique_tmp(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let d = std::env::temp_dir().join(format!("reports-{tag}-{}-{nanos}", std::process::id()));
    fs::create_dir_all(&d).unwrap();
    d
}

/// Loads `page` with `#selftest` in headless Chromium (`--dump-dom`), with `work` as a scratch folder for its
/// output. Panics with a message naming `make setup` when Chromium cannot be started.
pub fn run_chromium(page: &Path, work: &Path) -> Chromium {
    let bin = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string());
    let profile = unique_tmp("chromium-profile");
    let (out_path, err_path) = (work.join("chromium.stdout"), work.join("chromium.stderr"));
    let url = format!("file://{}#selftest", page.display());
    let spawned = Command::new(&bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.display()),
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=3000",
            "--dump-dom",
            &url,
        ])
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(&err_path).unwrap())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let _ = fs::remove_dir_all(&profile);
            let _ = fs::remove_dir_all(work);
            panic!(
                "cannot start chromium at {bin:?} ({e}); the browser test needs it: run `make setup` \
             (or point the CHROMIUM environment variable at a Chromium binary)"
            )
        }
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 120 s on {url}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let dom = fs::read_to_string(&out_path).unwrap();
    let stderr = fs::read_to_string(&err_path).unwrap();
    let _ = fs::remove_dir_all(&profile);
    assert!(status.success(), "chromium exited with {status}\nstderr:\n{stderr}");
    Chromium { dom, stderr }
}

/// The value of the first `name="..."` attribute in `dom`.
pub fn attr<'a>(dom: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("{name}=\"");
    let start = dom.find(&key)? + key.len();
    dom[start..].find('"').map(|end| &dom[start..start + end])
}

/// Console lines that report an error from the page.
pub fn console_errors(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains("CONSOLE") && (l.contains("Uncaught") || l.contains("Error"))).collect()
}
