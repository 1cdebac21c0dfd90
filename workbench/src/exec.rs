//! Executors run trials, each in its own process (`workbench trial --sweep DIR --id ID`), so a crash
//! or an out-of-memory error kills one trial, not the sweep.
//!
//! The local executor keeps `jobs` trial processes running, each with a fixed number of CPU threads,
//! shows a bar for the sweep and one per running trial (plain log lines when stderr is not a
//! terminal), and records a failed result for a trial process that died without writing one.

use crate::store::Store;
use crate::train::Event;
use crate::trial::TrialSpec;
use anyhow::{Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use reports::Status;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, IsTerminal};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How the local executor runs trials.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Trial processes at once.
    pub jobs: usize,
    /// CPU threads each trial process may use.
    pub threads: usize,
    /// `cpu`, `cuda`, or `cuda:N`, passed to every trial.
    pub device: String,
    /// `auto` or `reference`.
    pub kernels: String,
}

/// Cores to use by default: all of them, split between `jobs` trial processes.
pub fn default_threads(jobs: usize) -> usize {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    (cores / jobs.max(1)).max(1)
}

struct Running {
    child: Child,
    id: String,
    bar: ProgressBar,
    started: Instant,
}

enum Msg {
    Event(String, Event),
}

/// Counts of how the trials ended.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    pub completed: usize,
    pub diverged: usize,
    pub failed: usize,
}

/// Runs `pending` (ids whose spec.json is written) to completion.
pub fn run_local(store: &Store, pending: &[(String, TrialSpec)], total: usize, opts: &LocalOptions) -> Result<Summary> {
    let exe = std::env::current_exe().context("locating the workbench binary")?;
    let tty = std::io::stderr().is_terminal();
    let multi =
        MultiProgress::with_draw_target(if tty { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() });
    let sweep_bar = multi.add(ProgressBar::new(total as u64));
    sweep_bar.set_style(
        ProgressStyle::with_template(
            "sweep  [{bar:30}] {pos}/{len} trials  {elapsed_precise} elapsed, ETA {eta_precise}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    sweep_bar.set_position((total - pending.len()) as u64);
    let trial_style = ProgressStyle::with_template("  {prefix:<34} [{bar:20}] step {pos}/{len}  {msg}")
        .expect("template")
        .progress_chars("=> ");
    let log = |msg: String| {
        if tty {
            multi.suspend(|| eprintln!("{msg}"));
        } else {
            eprintln!("{msg}");
        }
    };

    let (tx, rx) = mpsc::channel::<Msg>();
    let mut queue: std::collections::VecDeque<&(String, TrialSpec)> = pending.iter().collect();
    let mut running: Vec<Running> = Vec::new();
    let mut summary = Summary::default();
    let mut done = total - pending.len();
    let labels: HashMap<&str, String> = pending
        .iter()
        .map(|(id, s)| (id.as_str(), format!("{} {} {:.1e}", s.label, s.task.name(), s.budget_flops)))
        .collect();

    while !queue.is_empty() || !running.is_empty() {
        while running.len() < opts.jobs.max(1) {
            let Some((id, _spec)) = queue.pop_front() else { break };
            let child = spawn(&exe, store, id, opts)?;
            let bar = multi.insert_before(&sweep_bar, ProgressBar::new(1));
            bar.set_style(trial_style.clone());
            bar.set_prefix(labels[id.as_str()].clone());
            log(format!("[{}/{}] start  {} ({id})", done + 1, total, labels[id.as_str()]));
            let mut child = child;
            let stdout = child.stdout.take().expect("piped stdout");
            let (tx, tid) = (tx.clone(), id.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Ok(ev) = serde_json::from_str::<Event>(&line) {
                        if tx.send(Msg::Event(tid.clone(), ev)).is_err() {
                            break;
                        }
                    }
                }
            });
            running.push(Running { child, id: id.clone(), bar, started: Instant::now() });
        }
        while let Ok(Msg::Event(id, ev)) = rx.recv_timeout(Duration::from_millis(100)) {
            if let Some(r) = running.iter().find(|r| r.id == id) {
                match ev {
                    Event::Progress { step, steps, loss, flops } => {
                        r.bar.set_length(steps);
                        r.bar.set_position(step);
                        r.bar.set_message(format!("loss {loss:.4}  {flops:.2e} FLOPs"));
                    }
                    Event::Eval { step, eval_loss, accuracy } => {
                        if !tty {
                            let acc = accuracy.map(|a| format!(" accuracy {a:.3}")).unwrap_or_default();
                            log(format!("       {} step {step}: eval loss {eval_loss:.4}{acc}", labels[id.as_str()]));
                        }
                    }
                }
            }
        }
        let mut i = 0;
        while i < running.len() {
            if let Some(exit) = running[i].child.try_wait()? {
                let r = running.swap_remove(i);
                r.bar.finish_and_clear();
                multi.remove(&r.bar);
                done += 1;
                sweep_bar.set_position(done as u64);
                let label = &labels[r.id.as_str()];
                let secs = r.started.elapsed().as_secs_f64();
                match store.read_result(&r.id) {
                    Some(res) => {
                        match res.status {
                            Status::Completed => summary.completed += 1,
                            Status::Diverged => summary.diverged += 1,
                            Status::Failed => summary.failed += 1,
                        }
                        let loss = res.final_eval_loss.map(|l| format!("eval loss {l:.4}")).unwrap_or_default();
                        let why = res.reason.map(|r| format!(": {r}")).unwrap_or_default();
                        log(format!(
                            "[{done}/{total}] {:<9} {label} {loss} in {secs:.1}s{why}",
                            format!("{:?}", res.status).to_lowercase()
                        ));
                    }
                    None => {
                        summary.failed += 1;
                        let reason = died_reason(store, &r.id, exit);
                        record_crash(store, &r.id, &reason)?;
                        log(format!("[{done}/{total}] failed    {label}: {reason}"));
                    }
                }
            } else {
                i += 1;
            }
        }
    }
    sweep_bar.finish_and_clear();
    Ok(summary)
}

fn spawn(exe: &PathBuf, store: &Store, id: &str, opts: &LocalOptions) -> Result<Child> {
    let dir = store.trial_dir(id);
    let stderr = std::fs::File::create(dir.join("stderr.log"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("trial")
        .arg("--sweep")
        .arg(&store.root)
        .arg("--id")
        .arg(id)
        .arg("--device")
        .arg(&opts.device)
        .arg("--threads")
        .arg(opts.threads.to_string())
        .arg("--kernels")
        .arg(&opts.kernels)
        .arg("--events")
        .env("OMP_NUM_THREADS", opts.threads.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    // The trial dies with the driver (SIGKILL included): no orphaned trials writing into the sweep.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().with_context(|| format!("starting {} trial", exe.display()))
}

fn died_reason(store: &Store, id: &str, exit: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    let tail = std::fs::read_to_string(store.trial_dir(id).join("stderr.log"))
        .ok()
        .and_then(|s| s.lines().rev().find(|l| !l.trim().is_empty()).map(str::to_string))
        .unwrap_or_default();
    let how = match (exit.code(), exit.signal()) {
        (Some(c), _) => format!("trial process exited with code {c}"),
        (_, Some(s)) => format!("trial process was killed by signal {s}"),
        _ => "trial process ended abnormally".into(),
    };
    if tail.is_empty() {
        how
    } else {
        format!("{how}: {tail}")
    }
}

/// A result for a trial whose process died before writing one.
fn record_crash(store: &Store, id: &str, reason: &str) -> Result<()> {
    let spec = store.read_spec(id)?;
    let mut r = crate::train::empty_result(&spec, id, "unknown");
    r.status = Status::Failed;
    r.reason = Some(reason.to_string());
    r.curve = store.curve_until(id, u64::MAX)?;
    store.write_result(&r)
}
