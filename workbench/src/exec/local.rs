//! The local executor keeps `jobs` trial processes running, each with a fixed number of CPU threads and
//! one device of the pool's list (round robin over slots: with `cuda:0,cuda:1` and two jobs, one trial per
//! GPU; queued trials wait for a slot),
//! shows a bar for the sweep and one per running trial (plain log lines when stderr is not a terminal),
//! and records a failed result for a trial process that died without writing an outcome.

use super::{describe_outcome, ended_outcome, job_label, last_line, record_crash, Executor};
use crate::search::Job;
use crate::store::Store;
use crate::train::Event;
use anyhow::{Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
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
    /// Devices (`cpu`, `cuda:N`): slot `i` runs its trials on `devices[i % len]`.
    pub devices: Vec<String>,
    /// `auto` or `reference`.
    pub kernels: String,
    /// `auto`, `fp32` or `bf16`.
    pub precision: String,
}

impl LocalOptions {
    /// `jobs` trials at once on one device (the CPU pools' usual case), `auto` kernels and precision.
    pub fn on(device: &str, jobs: usize, kernels: &str) -> LocalOptions {
        LocalOptions {
            jobs,
            threads: default_threads(jobs),
            devices: vec![device.to_string()],
            kernels: kernels.to_string(),
            precision: "auto".into(),
        }
    }

    /// The device of slot `slot`.
    pub fn device_of(&self, slot: usize) -> &str {
        self.devices.get(slot % self.devices.len().max(1)).map_or("cpu", String::as_str)
    }
}

/// Cores to use by default: all of them, split between `jobs` trial processes.
pub fn default_threads(jobs: usize) -> usize {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    (cores / jobs.max(1)).max(1)
}

struct Running {
    child: Child,
    index: usize,
    /// The pool slot it occupies (which picks its device).
    slot: usize,
    job: Job,
    bar: ProgressBar,
    started: Instant,
}

/// A pool of trial processes on this machine.
pub struct LocalPool {
    store: Store,
    opts: LocalOptions,
    exe: PathBuf,
    tty: bool,
    multi: MultiProgress,
    sweep_bar: ProgressBar,
    trial_style: ProgressStyle,
    tx: mpsc::Sender<(usize, Event)>,
    rx: mpsc::Receiver<(usize, Event)>,
    running: Vec<Running>,
    /// Jobs ended (or found done), and the number expected in all when known.
    ended: usize,
    expected: Option<usize>,
    pub summary: Summary,
}

/// Counts of how the jobs this run ended.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    pub completed: usize,
    pub paused: usize,
    pub diverged: usize,
    pub failed: usize,
}

impl LocalPool {
    pub fn new(store: &Store, opts: LocalOptions, expected: Option<usize>) -> Result<LocalPool> {
        let exe = std::env::current_exe().context("locating the workbench binary")?;
        let tty = std::io::stderr().is_terminal();
        let target = if tty { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let multi = MultiProgress::with_draw_target(target);
        let sweep_bar = multi.add(ProgressBar::new(expected.unwrap_or(0) as u64));
        sweep_bar.set_style(
            ProgressStyle::with_template(
                "sweep  [{bar:30}] {pos}/{len} jobs  {elapsed_precise} elapsed, ETA {eta_precise}",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        let trial_style = ProgressStyle::with_template("  {prefix:<34} [{bar:20}] step {pos}/{len}  {msg}")
            .expect("template")
            .progress_chars("=> ");
        let (tx, rx) = mpsc::channel();
        Ok(LocalPool {
            store: store.clone(),
            opts,
            exe,
            tty,
            multi,
            sweep_bar,
            trial_style,
            tx,
            rx,
            running: Vec::new(),
            ended: 0,
            expected,
            summary: Summary::default(),
        })
    }

    fn log(&self, msg: String) {
        if self.tty {
            self.multi.suspend(|| eprintln!("{msg}"));
        } else {
            eprintln!("{msg}");
        }
    }

    fn counter(&self) -> String {
        match self.expected {
            Some(n) => format!("[{}/{n}]", self.ended),
            None => format!("[{}]", self.ended),
        }
    }

    /// The lowest slot no running trial occupies.
    fn free_slot(&self) -> usize {
        (0..).find(|s| self.running.iter().all(|r| r.slot != *s)).expect("an unbounded range has a free slot")
    }

    fn spawn(&self, job: &Job, slot: usize) -> Result<Child> {
        let dir = self.store.trial_dir(&job.id);
        let stderr = std::fs::File::create(dir.join("stderr.log"))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("trial").arg("--sweep").arg(&self.store.root).arg("--id").arg(&job.id);
        if let Some(f) = job.until_flops {
            cmd.arg("--until-flops").arg(format!("{f:e}"));
        }
        cmd.arg("--device")
            .arg(self.opts.device_of(slot))
            .arg("--precision")
            .arg(&self.opts.precision)
            .arg("--threads")
            .arg(self.opts.threads.to_string())
            .arg("--kernels")
            .arg(&self.opts.kernels)
            .arg("--events")
            .env("OMP_NUM_THREADS", self.opts.threads.to_string())
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
        cmd.spawn().with_context(|| format!("starting {} trial", self.exe.display()))
    }

    fn finish(&mut self, r: Running, exit: std::process::ExitStatus) -> Result<()> {
        r.bar.finish_and_clear();
        self.multi.remove(&r.bar);
        self.ended += 1;
        self.sweep_bar.set_position(self.ended as u64);
        let label = job_label(&r.job);
        let secs = r.started.elapsed().as_secs_f64();
        let outcome = match ended_outcome(&self.store, &r.job) {
            Some(o) => o,
            None => {
                let reason = died_reason(&self.store, &r.job.id, exit);
                record_crash(&self.store, &r.job.id, &reason)?;
                ended_outcome(&self.store, &r.job).context("reading the failed result just written")?
            }
        };
        let why = match outcome.fate {
            crate::search::Fate::Paused => {
                self.summary.paused += 1;
                String::new()
            }
            crate::search::Fate::Completed => {
                self.summary.completed += 1;
                String::new()
            }
            crate::search::Fate::Diverged | crate::search::Fate::Failed => {
                let failed = outcome.fate == crate::search::Fate::Failed;
                if failed {
                    self.summary.failed += 1;
                } else {
                    self.summary.diverged += 1;
                }
                let reason = self.store.read_result(&r.job.id).and_then(|x| x.reason).unwrap_or_default();
                format!(": {reason}")
            }
        };
        self.log(format!("{} {} {label} in {secs:.1}s{why}", self.counter(), describe_outcome(&outcome)));
        Ok(())
    }
}

impl Executor for LocalPool {
    fn free_slots(&self) -> usize {
        self.opts.jobs.max(1).saturating_sub(self.running.len())
    }

    fn start(&mut self, jobs: &[(usize, Job)]) -> Result<()> {
        for (index, job) in jobs {
            let slot = self.free_slot();
            let mut child = self.spawn(job, slot)?;
            let bar = self.multi.insert_before(&self.sweep_bar, ProgressBar::new(1));
            bar.set_style(self.trial_style.clone());
            bar.set_prefix(job_label(job));
            if self.expected.is_none() {
                self.sweep_bar.inc_length(1);
            }
            let on =
                if self.opts.devices.len() > 1 { format!(" on {}", self.opts.device_of(slot)) } else { String::new() };
            self.log(format!("{} start     {} ({}){on}", self.counter(), job_label(job), job.id));
            let stdout = child.stdout.take().expect("piped stdout");
            let (tx, i) = (self.tx.clone(), *index);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Ok(ev) = serde_json::from_str::<Event>(&line) {
                        if tx.send((i, ev)).is_err() {
                            break;
                        }
                    }
                }
            });
            self.running.push(Running { child, index: *index, slot, job: job.clone(), bar, started: Instant::now() });
        }
        Ok(())
    }

    fn wait(&mut self) -> Result<Vec<usize>> {
        let deadline = Instant::now() + Duration::from_millis(500);
        let mut ended = Vec::new();
        while ended.is_empty() && Instant::now() < deadline && !super::interrupted() {
            while let Ok((i, ev)) = self.rx.recv_timeout(Duration::from_millis(50)) {
                let Some(r) = self.running.iter().find(|r| r.index == i) else { continue };
                match ev {
                    Event::Progress { step, steps, loss, flops } => {
                        r.bar.set_length(r.job.stop_step().min(steps));
                        r.bar.set_position(step);
                        r.bar.set_message(format!("loss {loss:.4}  {flops:.2e} FLOPs"));
                    }
                    Event::Eval { step, eval_loss, accuracy } if !self.tty => {
                        let acc = accuracy.map(|a| format!(" accuracy {a:.3}")).unwrap_or_default();
                        self.log(format!("       {} step {step}: eval loss {eval_loss:.4}{acc}", job_label(&r.job)));
                    }
                    Event::Eval { .. } => {}
                }
            }
            if super::interrupted() {
                // Ctrl-C reached the trials too: their deaths are not failures; the driver cancels the rest.
                break;
            }
            let mut k = 0;
            while k < self.running.len() {
                if let Some(exit) = self.running[k].child.try_wait()? {
                    let r = self.running.swap_remove(k);
                    ended.push(r.index);
                    self.finish(r, exit)?;
                } else {
                    k += 1;
                }
            }
        }
        Ok(ended)
    }

    fn running(&self) -> usize {
        self.running.len()
    }

    fn known(&mut self, _job: &Job) {
        self.ended += 1;
        if self.expected.is_none() {
            self.sweep_bar.inc_length(1);
        }
        self.sweep_bar.set_position(self.ended as u64);
    }

    fn cancel(&mut self) -> Result<()> {
        for r in &mut self.running {
            let _ = r.child.kill();
            let _ = r.child.wait();
            r.bar.finish_and_clear();
        }
        self.running.clear();
        self.sweep_bar.finish_and_clear();
        Ok(())
    }
}

impl Drop for LocalPool {
    fn drop(&mut self) {
        self.sweep_bar.finish_and_clear();
    }
}

fn died_reason(store: &Store, id: &str, exit: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    let tail = last_line(&store.trial_dir(id).join("stderr.log"));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_take_devices_round_robin() {
        let mut o = LocalOptions::on("cpu", 4, "auto");
        o.devices = vec!["cuda:0".into(), "cuda:1".into()];
        let got: Vec<&str> = (0..4).map(|s| o.device_of(s)).collect();
        assert_eq!(got, ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]);
        assert_eq!(LocalOptions::on("cpu", 2, "auto").device_of(1), "cpu");
    }
}
