//! The Slurm executor against a real one-node Slurm on loopback (scripts/slurm-up.sh: its own munge key
//! and socket, slurmctld and slurmd started by hand, no systemd). A successive-halving sweep through job
//! arrays ends exactly as through the local executor (same decisions, same losses and steps), a task that
//! fails is resubmitted, Ctrl-C cancels the arrays, and bad submissions are clear errors, never hangs.
//! Every daemon the test starts is stopped by a guard, also when it fails.
//!
//! Needs root and Debian's slurmctld, slurmd, slurm-client and munge (scripts/setup-slurm.sh, which
//! `make test` runs). Without root the test says so and passes; set WORKBENCH_SKIP_SLURM=1 to skip it.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Runs a command to its end, killing it (and failing the test) after `secs`.
fn run_for(cmd: &mut Command, secs: u64) -> Output {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawning");
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(out) => out.expect("waiting"),
        Err(_) => {
            unsafe { libc::kill(id as i32, libc::SIGKILL) };
            panic!("{cmd:?} did not finish within {secs} s");
        }
    }
}

/// The cluster; dropping it stops every daemon it started.
struct Cluster {
    state: PathBuf,
    conf: PathBuf,
}

impl Cluster {
    fn up(state: &Path) -> Cluster {
        let start = Instant::now();
        let out = run_for(Command::new("bash").arg(repo().join("scripts/slurm-up.sh")).arg(state), 90);
        let cluster = Cluster { state: state.to_path_buf(), conf: state.join("slurm.conf") };
        assert!(out.status.success(), "slurm-up.sh failed:\n{}", String::from_utf8_lossy(&out.stderr));
        eprintln!("slurm came up in {:.1} s", start.elapsed().as_secs_f64());
        cluster
    }

    fn cmd(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", &self.conf);
        c
    }

    /// Job ids in the queue.
    fn queue(&self) -> String {
        let out = run_for(self.cmd(Path::new("squeue")).args(["-h", "-o", "%i %T"]), 30);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_empty_queue(&self, secs: u64) {
        let start = Instant::now();
        while !self.queue().trim().is_empty() {
            assert!(start.elapsed() < Duration::from_secs(secs), "jobs left in the queue:\n{}", self.queue());
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = run_for(Command::new("bash").arg(repo().join("scripts/slurm-down.sh")).arg(&self.state), 60);
    }
}

fn space(dir: &Path, budget: &str) -> String {
    let fail_once = dir.join("failed-once");
    format!(
        "name: slurm-test
tasks:
  - {{kind: mqar, vocab_size: 16, seq_len: 16, kv_pairs: 2, train_examples: 256, test_examples: 32}}
train: {{batch_size: 8, eval_points: 3}}
budgets: [{budget}]
candidates:
  - {{name: transformer, layout: [attention, swiglu], depth: 2, d_model: [16, 32], mixers: {{attention: {{heads: 2}}}}}}
  - {{name: mlp, layout: [mlp], depth: 1, d_model: [16, 32], allow_no_mixing: true}}
search: {{strategy: successive_halving, min_flops: 3e7, eta: 3, seed: 1}}
executor:
  kind: slurm
  cpus_per_task: 1
  throttle: 2
  poll_seconds: 0.5
  probe_timeout: 60
  # The first task to start fails once (before its trial), so the executor must resubmit it.
  setup: ['if mkdir {} 2>/dev/null; then echo failing on purpose >&2; exit 3; fi']
",
        fail_once.display()
    )
}

fn launches(dir: &Path) -> Vec<(String, u64)> {
    std::fs::read_to_string(dir.join("search.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["event"] == "launch")
        .map(|v| (v["id"].as_str().unwrap().to_string(), v["rung"].as_u64().unwrap()))
        .collect()
}

fn json(path: PathBuf) -> Value {
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn close(a: &Value, b: &Value, what: &str) {
    let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
    assert!((a - b).abs() <= 1e-6 * a.abs(), "{what}: {a} (local) vs {b} (slurm)");
}

#[test]
fn slurm_sweep_matches_the_local_executor() {
    if std::env::var_os("WORKBENCH_SKIP_SLURM").is_some() {
        eprintln!("WORKBENCH_SKIP_SLURM is set: skipping the Slurm test");
        return;
    }
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping the Slurm test: it needs root to run slurmd (CI runs as root)");
        return;
    }
    for cmd in ["slurmctld", "slurmd", "sbatch", "squeue", "scancel", "munged"] {
        let found = run_for(Command::new("sh").args(["-c", &format!("command -v {cmd}")]), 10).status.success();
        assert!(
            found,
            "`{cmd}` is missing: run scripts/setup-slurm.sh as root (make test does), or set WORKBENCH_SKIP_SLURM=1"
        );
    }
    let dir = scratch("slurm");
    let cluster = Cluster::up(&dir.join("slurm-state"));
    let text = write(&dir, "space.yaml", &space(&dir, "3e8"));
    let sweep = |out: &str, extra: &[&str]| {
        let mut c = cluster.cmd(&bin());
        c.args(["sweep", text.to_str().unwrap(), "--out", out]).args(extra).current_dir(&dir);
        c
    };

    // The same sweep on this machine (two processes of one thread, as Slurm runs two one-CPU tasks).
    let local = run_for(&mut sweep("local", &["--executor", "local", "--jobs", "2"]), 300);
    assert!(local.status.success(), "{}", stderr(&local));
    let through = run_for(&mut sweep("slurm", &[]), 300);
    let err = stderr(&through);
    assert!(through.status.success(), "{err}");
    assert!(err.contains("resubmitting 1 failed tasks"), "the failed task was not resubmitted:\n{err}");
    let (l, s) = (dir.join("local"), dir.join("slurm"));
    let decisions = launches(&l);
    assert_eq!(decisions, launches(&s), "Slurm and local made different decisions");
    assert!(decisions.iter().any(|(_, r)| *r > 0), "nothing was promoted");
    let mut ids: Vec<&String> = decisions.iter().map(|(id, _)| id).collect();
    ids.dedup();
    for id in ids {
        let (a, b) = (l.join("trials").join(id), s.join("trials").join(id));
        for rung in std::fs::read_dir(a.join("rungs")).unwrap() {
            let name = rung.unwrap().file_name();
            let (ra, rb) = (json(a.join("rungs").join(&name)), json(b.join("rungs").join(&name)));
            assert_eq!(ra["step"], rb["step"], "{id}");
            close(&ra["eval_loss"], &rb["eval_loss"], &format!("{id} paused at {name:?}"));
        }
        if a.join("result.json").exists() {
            let (ra, rb) = (json(a.join("result.json")), json(b.join("result.json")));
            assert_eq!(ra["status"], rb["status"], "{id}");
            assert_eq!(ra["steps"], rb["steps"], "{id}");
            close(&ra["final_eval_loss"], &rb["final_eval_loss"], id);
        }
    }
    cluster.wait_empty_queue(30);

    // Ctrl-C cancels the arrays: a longer sweep, interrupted while its tasks run.
    let text_long = write(&dir, "long.yaml", &space(&dir, "3e10").replace("name: slurm-test", "name: slurm-long"));
    let mut child = cluster.cmd(&bin());
    child.args(["sweep", text_long.to_str().unwrap(), "--out", "long"]).current_dir(&dir);
    let mut child = child.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    while !cluster.queue().contains("RUNNING") {
        assert!(start.elapsed() < Duration::from_secs(60), "no task started");
        assert!(child.try_wait().unwrap().is_none(), "the sweep ended before it could be interrupted");
        std::thread::sleep(Duration::from_millis(200));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the driver did not stop after SIGINT");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(130));
    cluster.wait_empty_queue(30);

    // Faults are errors with exit code 2, never hangs: a rejected array (no GPU on this node), a probe
    // that cannot write into the sweep directory, a probe that never runs.
    let gpu = run_for(&mut sweep("gpu", &["--gpus-per-task", "1"]), 120);
    assert_eq!(gpu.status.code(), Some(2), "{}", stderr(&gpu));
    assert!(stderr(&gpu).contains("sbatch rejected the array"), "{}", stderr(&gpu));
    std::fs::create_dir_all(dir.join("hidden")).unwrap();
    std::fs::set_permissions(dir.join("hidden"), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let hidden = run_for(&mut sweep("hidden", &["--sbatch=--uid=nobody"]), 120);
    assert_eq!(hidden.status.code(), Some(2), "{}", stderr(&hidden));
    assert!(stderr(&hidden).contains("not visible (or not writable) from the compute nodes"), "{}", stderr(&hidden));
    let queued = run_for(&mut sweep("queued", &["--sbatch=--begin=now+3600", "--probe-timeout", "3"]), 120);
    assert_eq!(queued.status.code(), Some(2), "{}", stderr(&queued));
    assert!(stderr(&queued).contains("did not write into"), "{}", stderr(&queued));
    cluster.wait_empty_queue(30);
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}
