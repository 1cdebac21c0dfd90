//! What the Slurm executor submits: its settings (`executor: {kind: slurm, ...}` and the command line)
//! and the batch scripts. An array's script reads line `SLURM_ARRAY_TASK_ID + 1` of its task file
//! (`ID UNTIL_FLOPS`, `-` for the budget) and runs `workbench trial` on the shared sweep directory.

use crate::search::Job;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// `executor: {kind: slurm, ...}`; the command line overrides each field.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct SlurmSpec {
    #[serde(default)]
    pub partition: Option<String>,
    #[serde(default)]
    pub account: Option<String>,
    /// Time limit per array task (`--time`, e.g. `2:00:00`).
    #[serde(default)]
    pub time: Option<String>,
    /// GPUs per task; with GPUs the trial runs on `cuda`.
    #[serde(default)]
    pub gpus_per_task: u32,
    /// CPU cores per task (the trial's thread count); default 1.
    #[serde(default)]
    pub cpus_per_task: Option<u32>,
    /// Memory per task (`--mem`, e.g. `8G`).
    #[serde(default)]
    pub mem: Option<String>,
    /// Extra `#SBATCH` lines, e.g. `--qos=short` or `--constraint=a100`.
    #[serde(default)]
    pub extra: Vec<String>,
    /// Array tasks running at once (`%N`); default 8. Also ASHA's decision window.
    #[serde(default)]
    pub throttle: Option<usize>,
    /// Resubmissions of a task that ended without an outcome or failed; default 2.
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// Seconds between `squeue` polls; default 5.
    #[serde(default)]
    pub poll_seconds: Option<f64>,
    /// Seconds to wait for the probe job to write into the sweep directory; default 300.
    #[serde(default)]
    pub probe_timeout: Option<f64>,
    /// Shell lines run before each trial (module loads, environment activation).
    #[serde(default)]
    pub setup: Vec<String>,
}

impl SlurmSpec {
    pub fn throttle(&self) -> usize {
        self.throttle.unwrap_or(8).max(1)
    }
}

/// Single-quotes a string for bash.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// An absolute path without requiring it to exist.
pub fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| std::env::current_dir().unwrap_or_default().join(p))
}

/// Everything a batch script needs besides its tasks.
#[derive(Debug, Clone)]
pub struct ScriptContext {
    pub spec: SlurmSpec,
    pub sweep: PathBuf,
    pub exe: PathBuf,
    pub name: String,
    pub device: String,
    pub kernels: String,
}

impl ScriptContext {
    /// The `#SBATCH` lines of the settings (partition, account, time, memory, CPUs, GPUs, extra lines).
    pub fn sbatch_lines(&self, out: &mut String) {
        let s = &self.spec;
        let mut line = |k: &str, v: &str| out.push_str(&format!("#SBATCH --{k}={v}\n"));
        for (k, v) in [("partition", &s.partition), ("account", &s.account), ("time", &s.time), ("mem", &s.mem)] {
            if let Some(v) = v {
                line(k, v);
            }
        }
        line("cpus-per-task", &s.cpus_per_task.unwrap_or(1).to_string());
        if s.gpus_per_task > 0 {
            line("gpus-per-task", &s.gpus_per_task.to_string());
        }
        self.extra_lines(out);
    }

    /// The extra `#SBATCH` lines (the probe job carries them too: a cluster may need a QOS for any job).
    pub fn extra_lines(&self, out: &mut String) {
        for e in &self.spec.extra {
            let e = e.trim();
            out.push_str(&if e.starts_with("#SBATCH") { format!("{e}\n") } else { format!("#SBATCH {e}\n") });
        }
    }

    /// The batch script of array `n` with `tasks` tasks (its task file is `array-N.tasks`).
    pub fn script(&self, n: usize, tasks: usize) -> String {
        let dir = self.sweep.join("slurm");
        let mut s = format!(
            "#!/bin/bash\n#SBATCH --job-name=wb-{}-{n}\n#SBATCH --array=0-{}%{}\n#SBATCH --output={}\n",
            self.name,
            tasks.saturating_sub(1),
            self.spec.throttle(),
            dir.join(format!("array-{n}-%a.out")).display()
        );
        self.sbatch_lines(&mut s);
        s.push_str(
            "# One workbench trial per array task: line SLURM_ARRAY_TASK_ID+1 of the task file is `ID UNTIL_FLOPS`\n",
        );
        s.push_str("# (`-`: train to the budget).\nset -euo pipefail\n");
        for l in &self.spec.setup {
            s.push_str(l);
            s.push('\n');
        }
        let tasks_file = quote(&dir.join(format!("array-{n}.tasks")).display().to_string());
        s.push_str(&format!("read -r id until < <(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" {tasks_file})\n"));
        s.push_str("limit=()\n[ \"$until\" != - ] && limit=(--until-flops \"$until\")\n");
        s.push_str("export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}\n");
        s.push_str(&format!(
            "exec {} trial --sweep {} --id \"$id\" \"${{limit[@]}}\" --device {} --threads \"$OMP_NUM_THREADS\" --kernels {}\n",
            quote(&self.exe.display().to_string()),
            quote(&self.sweep.display().to_string()),
            self.device,
            self.kernels
        ));
        s
    }

    /// The task file: one `ID UNTIL_FLOPS` line per task.
    pub fn task_file(jobs: &[(usize, Job)]) -> String {
        jobs.iter()
            .map(|(_, j)| format!("{} {}\n", j.id, j.until_flops.map_or("-".into(), |f| format!("{f:e}"))))
            .collect()
    }
}
