//! `bench-train --profile DIR`: where a training step's time goes on the GPU. After the timed windows, one
//! more window of steps runs under libtorch's Kineto profiler (`kernels::train_ops::profile_start`, what
//! `torch.profiler` runs); its Chrome trace is written to `DIR/ARCH.trace.json` (open it in Perfetto or
//! chrome://tracing) and summarised here:
//! - GPU kernel time per step against the step's wall time: well below 100% means the GPU waits for the
//!   host (kernel launches, autograd bookkeeping, a synchronisation), not for arithmetic or memory;
//! - kernels and host-side ops per step (launch pressure);
//! - the kernels with the most GPU time per step.
//!
//! The trace format: `{"traceEvents": [{"ph": "X", "cat": "kernel", "name": ..., "ts": us, "dur": us}, ...]}`;
//! `cat` is `kernel` for CUDA kernels, `gpu_memcpy`/`gpu_memset` for copies and fills, `cpu_op` for ATen ops.

use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;

/// How many kernels [`ProfileSummary::top`] lists.
pub const TOP_KERNELS: usize = 12;

/// One kernel name's share of a step.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KernelTime {
    /// The kernel's name, cut to 100 characters.
    pub name: String,
    pub ms_per_step: f64,
    pub calls_per_step: f64,
}

/// A profiled window, per step.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProfileSummary {
    pub trace: String,
    pub steps: u64,
    pub wall_ms_per_step: f64,
    /// Time inside CUDA kernels, copies and fills (summed; one stream runs them one after another).
    pub gpu_ms_per_step: f64,
    pub kernels_per_step: f64,
    /// ATen ops the host dispatched (each may launch zero or more kernels).
    pub host_ops_per_step: f64,
    pub top: Vec<KernelTime>,
}

impl ProfileSummary {
    /// GPU time over wall time.
    pub fn gpu_busy(&self) -> f64 {
        self.gpu_ms_per_step / self.wall_ms_per_step
    }
}

/// Summarises the trace at `path` of `steps` steps that took `wall_s` seconds.
pub fn summarize(path: &Path, steps: u64, wall_s: f64) -> Result<ProfileSummary> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the trace {}", path.display()))?;
    let trace: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not a JSON trace", path.display()))?;
    let events = trace.get("traceEvents").and_then(|e| e.as_array()).map(Vec::as_slice).unwrap_or_default();
    let per = |x: f64| x / steps.max(1) as f64;
    let (mut gpu_us, mut kernels, mut host_ops) = (0.0, 0usize, 0usize);
    let mut by_name: HashMap<&str, (f64, usize)> = HashMap::new();
    for e in events {
        let cat = e.get("cat").and_then(|c| c.as_str()).unwrap_or("");
        let dur = e.get("dur").and_then(|d| d.as_f64()).unwrap_or(0.0);
        match cat {
            "kernel" | "gpu_memcpy" | "gpu_memset" => {
                gpu_us += dur;
                if cat == "kernel" {
                    kernels += 1;
                }
                let name = e.get("name").and_then(|n| n.as_str()).unwrap_or("?");
                let entry = by_name.entry(name).or_default();
                entry.0 += dur;
                entry.1 += 1;
            }
            "cpu_op" => host_ops += 1,
            _ => {}
        }
    }
    let mut top: Vec<KernelTime> = by_name
        .into_iter()
        .map(|(name, (us, calls))| KernelTime {
            name: name.chars().take(100).collect(),
            ms_per_step: per(us) / 1e3,
            calls_per_step: per(calls as f64),
        })
        .collect();
    top.sort_by(|a, b| b.ms_per_step.total_cmp(&a.ms_per_step).then(a.name.cmp(&b.name)));
    top.truncate(TOP_KERNELS);
    Ok(ProfileSummary {
        trace: path.display().to_string(),
        steps,
        wall_ms_per_step: per(wall_s) * 1e3,
        gpu_ms_per_step: per(gpu_us) / 1e3,
        kernels_per_step: per(kernels as f64),
        host_ops_per_step: per(host_ops as f64),
        top,
    })
}

/// One architecture's summary as Markdown.
pub fn markdown(arch: &str, p: &ProfileSummary) -> String {
    let mut s = format!(
        "\n### {arch}: profile of {} steps ({})\n\nwall {:.1} ms per step, GPU busy {:.1} ms ({:.0}%), {:.0} kernels and {:.0} host ops per step\n\n",
        p.steps,
        p.trace,
        p.wall_ms_per_step,
        p.gpu_ms_per_step,
        100.0 * p.gpu_busy(),
        p.kernels_per_step,
        p.host_ops_per_step
    );
    s.push_str("| kernel | ms per step | calls per step |\n|---|---:|---:|\n");
    for k in &p.top {
        s.push_str(&format!("| `{}` | {:.2} | {:.0} |\n", k.name.replace('|', "/"), k.ms_per_step, k.calls_per_step));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh file path per test (tests run on parallel threads).
    fn scratch(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("bench-profile-{}-{name}", std::process::id()))
    }

    #[test]
    fn a_trace_is_summarised_per_step() {
        let path = scratch("t.trace.json");
        let ev = |cat: &str, name: &str, dur: f64| serde_json::json!({"ph": "X", "cat": cat, "name": name, "ts": 0, "dur": dur});
        let events = vec![
            ev("kernel", "gemm", 300.0),
            ev("kernel", "gemm", 300.0),
            ev("kernel", "exp", 100.0),
            ev("gpu_memset", "Memset (Device)", 50.0),
            ev("cpu_op", "aten::mm", 5.0),
            ev("cpu_op", "aten::exp", 5.0),
            ev("cuda_runtime", "cudaLaunchKernel", 3.0),
        ];
        std::fs::write(&path, serde_json::json!({"traceEvents": events}).to_string()).unwrap();
        let s = summarize(&path, 2, 0.002).unwrap();
        assert_eq!(s.wall_ms_per_step, 1.0);
        assert!((s.gpu_ms_per_step - 0.375).abs() < 1e-12, "{s:?}");
        assert_eq!((s.kernels_per_step, s.host_ops_per_step), (1.5, 1.0));
        assert_eq!(s.top[0], KernelTime { name: "gemm".into(), ms_per_step: 0.3, calls_per_step: 1.0 });
        assert_eq!(s.top.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(), ["gemm", "exp", "Memset (Device)"]);
        assert!((s.gpu_busy() - 0.375).abs() < 1e-12);
        assert!(markdown("gla", &s).contains("| `gemm` | 0.30 | 1 |"));
        std::fs::remove_file(&path).ok();
    }

    #[test]
    fn a_file_that_is_not_a_trace_is_an_error_naming_it() {
        let path = scratch("bad.json");
        std::fs::write(&path, "not json").unwrap();
        let e = format!("{:#}", summarize(&path, 1, 1.0).unwrap_err());
        assert!(e.contains("bad.json") && e.contains("not a JSON trace"), "{e}");
        std::fs::remove_file(&path).ok();
    }
}
