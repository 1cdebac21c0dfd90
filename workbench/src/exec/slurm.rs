//! The Slurm executor: each batch of jobs of one rung becomes a job array (`sbatch --parsable`, throttled
//! with `%N`) whose task i runs line i of a task file in the sweep directory (`ID UNTIL_FLOPS`) as
//! `workbench trial --sweep DIR --id ID`. It follows the arrays with `squeue`, reads outcomes from the
//! trial files (never from accounting, which many clusters disable), resubmits tasks that ended without
//! an outcome or with a failed one up to `max_retries` times, and on Ctrl-C cancels its arrays with
//! `scancel` unless detached.
//!
//! Before the first array it submits a probe job that writes a file into the sweep directory: a directory
//! the compute nodes cannot see is an error before any trial is queued, not a thousand failed tasks.
//! Files: `DIR/slurm/array-N.sh` (the batch script), `array-N.tasks`, `array-N-TASK.out`, `jobs.txt` (every
//! job id submitted, so a resumed sweep first waits for what a killed or detached driver left running).

pub use super::sbatch::{absolute, quote, ScriptContext, SlurmSpec};
use super::{ended_outcome, last_line, record_crash, Executor};
use crate::error::UsageError;
use crate::search::{Fate, Job};
use crate::store::Store;
use anyhow::{Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// States in which an array task may still write its outcome.
const ACTIVE: &[&str] = &[
    "PENDING",
    "RUNNING",
    "CONFIGURING",
    "COMPLETING",
    "SUSPENDED",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SIGNALING",
    "STAGE_OUT",
    "RESV_DEL_HOLD",
    "STOPPED",
];

/// Runs a Slurm command; a missing command or a non-zero exit is an error with its stderr.
fn slurm(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd).args(args).output().map_err(|e| {
        UsageError::new(format!(
            "cannot run `{cmd}` ({e}): the slurm executor needs Slurm's client commands in PATH (Debian: slurm-client)"
        ))
    })?;
    if !out.status.success() {
        anyhow::bail!("`{cmd} {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

struct Task {
    job: Job,
    array: usize,
    task: usize,
    attempts: u32,
}

pub struct SlurmExecutor {
    store: Store,
    ctx: ScriptContext,
    detach: bool,
    /// Slurm job id of each array submitted.
    arrays: Vec<String>,
    tasks: HashMap<usize, Task>,
    probed: bool,
    next_poll: Instant,
    squeue_failures: u32,
    /// (running, pending) at the last report, to say when it changes.
    last_counts: (usize, usize),
}

impl SlurmExecutor {
    /// Checks the Slurm commands are there and cancels whatever a killed driver of this sweep left queued.
    pub fn new(store: &Store, ctx: ScriptContext, detach: bool) -> Result<SlurmExecutor> {
        for cmd in ["sbatch", "squeue", "scancel"] {
            let found =
                std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()));
            if !found {
                return Err(UsageError::new(format!(
                    "`{cmd}` is not in PATH: the slurm executor needs Slurm's client commands (Debian: slurm-client)"
                ))
                .into());
            }
        }
        std::fs::create_dir_all(ctx.sweep.join("slurm"))?;
        let exec = SlurmExecutor {
            store: store.clone(),
            ctx,
            detach,
            arrays: Vec::new(),
            tasks: HashMap::new(),
            probed: false,
            next_poll: Instant::now(),
            squeue_failures: 0,
            last_counts: (0, 0),
        };
        exec.wait_for_leftovers()?;
        Ok(exec)
    }

    fn dir(&self) -> PathBuf {
        self.ctx.sweep.join("slurm")
    }

    /// Waits for array tasks that an earlier driver of this sweep left running (killed, or `--detach`):
    /// they write outcomes this run will find, and two processes must never train one trial.
    fn wait_for_leftovers(&self) -> Result<()> {
        let old = std::fs::read_to_string(self.dir().join("jobs.txt")).unwrap_or_default();
        let ids: Vec<&str> = old.split_whitespace().collect();
        let mut said = false;
        loop {
            let active = if ids.is_empty() { BTreeMap::new() } else { self.active(&ids)? };
            if active.is_empty() {
                return Ok(());
            }
            if !said {
                let mut jobs: Vec<&str> = active.keys().map(|(a, _)| a.as_str()).collect();
                jobs.dedup();
                eprintln!("slurm: waiting for {} array tasks an earlier driver of this sweep left running (jobs {}); `scancel {}` to stop them instead", active.len(), jobs.join(","), jobs.join(" "));
                said = true;
            }
            if super::interrupted() {
                return Err(super::Interrupted("while waiting for an earlier driver's arrays".into()).into());
            }
            std::thread::sleep(Duration::from_secs_f64(self.ctx.spec.poll_seconds.unwrap_or(5.0)));
        }
    }

    /// Active array tasks of these jobs: (array job id, task index) -> state. (`%F` is the array's id;
    /// `%A` would be the id a running task was given when it split off.)
    fn active(&self, ids: &[&str]) -> Result<BTreeMap<(String, usize), String>> {
        let mut out = BTreeMap::new();
        for id in ids {
            // One job per call: squeue refuses a whole list when one id has been purged.
            let text = match slurm("squeue", &["-h", "-r", "-j", id, "-o", "%F %K %T"]) {
                Ok(t) => t,
                Err(e) if e.to_string().contains("Invalid job id") => continue,
                Err(e) => return Err(e),
            };
            for l in text.lines() {
                let f: Vec<&str> = l.split_whitespace().collect();
                if let [a, k, st] = f[..] {
                    if ACTIVE.contains(&st) {
                        out.insert((a.to_string(), k.parse().unwrap_or(0)), st.to_string());
                    }
                }
            }
        }
        Ok(out)
    }

    fn sbatch(&self, script: &Path, what: &str) -> Result<String> {
        let out = Command::new("sbatch").arg("--parsable").arg(script).output().map_err(|e| {
            UsageError::new(format!(
                "cannot run `sbatch` ({e}): the slurm executor needs Slurm's client commands in PATH"
            ))
        })?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(
                UsageError::new(format!("sbatch rejected {what} ({}): {}", script.display(), err.trim())).into()
            );
        }
        let id = String::from_utf8_lossy(&out.stdout).trim().split(';').next().unwrap_or("").to_string();
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(self.dir().join("jobs.txt"))?;
        std::io::Write::write_all(&mut f, format!("{id}\n").as_bytes())?;
        Ok(id)
    }

    /// Submits a job that touches a file in the sweep directory and waits for the file.
    fn probe(&mut self) -> Result<()> {
        let nonce = format!("{}-{}", std::process::id(), self.arrays.len());
        let mark = self.dir().join(format!("probe-{nonce}"));
        let mut script =
            format!("#!/bin/bash\n#SBATCH --job-name=wb-{}-probe\n#SBATCH --output=/dev/null\n", self.ctx.name);
        // Where the arrays will run, and the extra lines (a cluster may need a QOS for any job at all).
        for (k, v) in [("partition", &self.ctx.spec.partition), ("account", &self.ctx.spec.account)] {
            if let Some(v) = v {
                script.push_str(&format!("#SBATCH --{k}={v}\n"));
            }
        }
        self.ctx.extra_lines(&mut script);
        script.push_str(&format!("#SBATCH --time=5\ntouch {}\n", quote(&mark.display().to_string())));
        let path = self.dir().join("probe.sh");
        std::fs::write(&path, script)?;
        let id = self.sbatch(&path, "the probe job")?;
        let timeout = self.ctx.spec.probe_timeout.unwrap_or(300.0);
        let start = Instant::now();
        let mut gone_since: Option<Instant> = None;
        loop {
            if mark.exists() {
                let _ = std::fs::remove_file(&mark);
                self.probed = true;
                return Ok(());
            }
            if super::interrupted() {
                let _ = slurm("scancel", &[&id]);
                return Err(super::Interrupted("before any trial was submitted".into()).into());
            }
            let dir = self.ctx.sweep.display();
            if self.active(&[&id])?.is_empty() {
                // Ended: allow a moment for a shared filesystem's attribute cache.
                if gone_since.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(5) {
                    return Err(UsageError::new(format!("the probe job {id} ended without writing {}: the sweep directory {dir} is not visible (or not writable) from the compute nodes; put --out on a filesystem they share", mark.display())).into());
                }
            }
            if start.elapsed().as_secs_f64() > timeout {
                let _ = slurm("scancel", &[&id]);
                return Err(UsageError::new(format!("the probe job {id} did not write into {dir} within {timeout:.0} s: either it is still queued (raise executor.probe_timeout) or the compute nodes do not see {dir}")).into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn submit(&mut self, jobs: &[(usize, Job)], attempts: u32) -> Result<()> {
        let n = self.arrays.len();
        let dir = self.dir();
        std::fs::write(dir.join(format!("array-{n}.tasks")), ScriptContext::task_file(jobs))?;
        let script = dir.join(format!("array-{n}.sh"));
        std::fs::write(&script, self.ctx.script(n, jobs.len()))?;
        let rung = jobs[0].1.rung;
        let id = self.sbatch(&script, &format!("the array of {} trials (rung {rung})", jobs.len()))?;
        eprintln!(
            "slurm: submitted array {id} ({} trials, rung {rung}, at most {} at once)",
            jobs.len(),
            self.ctx.spec.throttle()
        );
        for (task, (index, job)) in jobs.iter().enumerate() {
            self.tasks.insert(*index, Task { job: job.clone(), array: n, task, attempts });
        }
        self.arrays.push(id);
        Ok(())
    }
}

impl Executor for SlurmExecutor {
    fn free_slots(&self) -> usize {
        usize::MAX / 2
    }

    fn start(&mut self, jobs: &[(usize, Job)]) -> Result<()> {
        if !self.probed {
            self.probe()?;
        }
        let mut by_rung: BTreeMap<usize, Vec<(usize, Job)>> = BTreeMap::new();
        for (i, j) in jobs {
            by_rung.entry(j.rung).or_default().push((*i, j.clone()));
        }
        for group in by_rung.values() {
            self.submit(group, 0)?;
        }
        Ok(())
    }

    fn wait(&mut self) -> Result<Vec<usize>> {
        while Instant::now() < self.next_poll {
            if super::interrupted() {
                return Ok(Vec::new());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.next_poll = Instant::now() + Duration::from_secs_f64(self.ctx.spec.poll_seconds.unwrap_or(5.0));
        let mut ids: Vec<&str> = self.tasks.values().map(|t| self.arrays[t.array].as_str()).collect();
        ids.sort();
        ids.dedup();
        let active = match self.active(&ids) {
            Ok(a) => {
                self.squeue_failures = 0;
                a
            }
            Err(e) if self.squeue_failures < 10 => {
                self.squeue_failures += 1;
                eprintln!("slurm: squeue failed ({e:#}); trying again");
                return Ok(Vec::new());
            }
            Err(e) => return Err(e.context("squeue failed 10 times in a row")),
        };
        let running = active.values().filter(|s| s.as_str() != "PENDING").count();
        let counts = (running, active.len() - running);
        if counts != self.last_counts {
            eprintln!("slurm: {} tasks running, {} pending", counts.0, counts.1);
            self.last_counts = counts;
        }
        let ended: Vec<usize> = self
            .tasks
            .iter()
            .filter(|(_, t)| !active.contains_key(&(self.arrays[t.array].clone(), t.task)))
            .map(|(i, _)| *i)
            .collect();
        let (mut done, mut retry) = (Vec::new(), Vec::new());
        for i in ended {
            let t = self.tasks.remove(&i).expect("task");
            let outcome = ended_outcome(&self.store, &t.job);
            let max = self.ctx.spec.max_retries.unwrap_or(2);
            if outcome.as_ref().is_none_or(|o| o.fate == Fate::Failed) && t.attempts < max {
                retry.push((i, t));
                continue;
            }
            if outcome.is_none() {
                let log = self.dir().join(format!("array-{}-{}.out", t.array, t.task));
                let reason = format!(
                    "array task {}_{} ended without an outcome: {}",
                    self.arrays[t.array],
                    t.task,
                    last_line(&log)
                );
                record_crash(&self.store, &t.job.id, &reason)?;
            }
            let o = ended_outcome(&self.store, &t.job).context("reading the outcome")?;
            eprintln!("slurm: {} {}", super::describe_outcome(&o), super::job_label(&t.job));
            done.push(i);
        }
        if !retry.is_empty() {
            retry.sort_by_key(|(i, _)| *i);
            let attempts = retry.iter().map(|(_, t)| t.attempts).max().unwrap_or(0) + 1;
            eprintln!(
                "slurm: resubmitting {} failed tasks (attempt {} of {})",
                retry.len(),
                attempts + 1,
                self.ctx.spec.max_retries.unwrap_or(2) + 1
            );
            let jobs: Vec<(usize, Job)> = retry.into_iter().map(|(i, t)| (i, t.job)).collect();
            self.submit(&jobs, attempts)?;
        }
        Ok(done)
    }

    fn running(&self) -> usize {
        self.tasks.len()
    }

    fn cancel(&mut self) -> Result<()> {
        let mut ids: Vec<&str> = self.tasks.values().map(|t| self.arrays[t.array].as_str()).collect();
        ids.sort();
        ids.dedup();
        if ids.is_empty() {
            return Ok(());
        }
        if self.detach {
            eprintln!(
                "slurm: leaving arrays {} running (--detach); `workbench sweep ... --resume` picks up their results",
                ids.join(",")
            );
            return Ok(());
        }
        eprintln!("slurm: cancelling arrays {}", ids.join(","));
        slurm("scancel", &ids).map(|_| ())
    }
}
