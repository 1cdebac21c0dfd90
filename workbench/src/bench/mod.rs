//! `workbench bench-train`: how fast the training step trials run is, per architecture, on this machine.
//!
//! Each architecture is a preset of about 125M parameters (d_model 768, vocabulary 32000, untied head, the
//! sizes the flash-linear-attention models use, so `scripts/bench_train_torch.py` can build the same models
//! in PyTorch). The step is [`crate::train::optimizer_step`], the very function trials call: bf16 autocast
//! on CUDA, fused AdamW, batches prefetched through pinned memory. After `warmup` steps, `steps` steps run
//! between two device synchronisations, in `windows` windows; the median window gives:
//! - tokens per second: batch x sequence length x steps / seconds;
//! - model FLOP utilisation: our FLOP accounting ([`operators::StackSpec::flops_per_token`], x3 for the
//!   backward pass) per second over the bf16 matmul ceiling measured in the same process (8192^3 products);
//! - peak memory: the CUDA caching allocator's peak allocated bytes over the timed steps (what
//!   `torch.cuda.max_memory_allocated` reads).
//!
//! An architecture that fails (out of memory included) gets a row with the reason; the others still run.

use crate::tasks::{Batch, Task};
use crate::train::optim::AdamW;
use crate::train::step::{Feeder, Precision};
use crate::train::{optimizer_step, StepParts};
use crate::trial::OptimSpec;
use anyhow::{bail, Context, Result};
use kernels::KernelPath;
use operators::{Stack, StackSpec};
use rand::{Rng, SeedableRng};
use std::time::Instant;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// The architectures `bench-train` knows, in its default order.
pub const ARCHS: [&str; 5] = ["transformer", "gla", "mamba", "hyena", "striped"];

/// The layers of preset `arch` at width `d` for sequences of `seq_len`: 12 blocks of mixer + SwiGLU (24
/// Mamba layers, no MLP, as in the Mamba paper); `striped` alternates Hyena and attention blocks.
pub fn preset(arch: &str, d: i64, vocab: i64, seq_len: i64) -> Result<StackSpec> {
    let attention = serde_json::json!({"mixer": "attention", "params": {"heads": (d / 64).max(1)}});
    let gla = serde_json::json!({"mixer": "gla", "params": {"heads": 4}});
    let hyena = serde_json::json!({"mixer": "hyena", "params": {"l_max": seq_len}});
    let mamba = serde_json::json!({"mixer": "mamba", "params": {}});
    let swiglu = serde_json::json!({"mixer": "swiglu", "params": {}});
    let blocks = |mixer: &dyn Fn(usize) -> serde_json::Value, n: usize, mlp: bool| -> Vec<serde_json::Value> {
        (0..n).flat_map(|i| if mlp { vec![mixer(i), swiglu.clone()] } else { vec![mixer(i)] }).collect()
    };
    let layers = match arch {
        "transformer" => blocks(&|_| attention.clone(), 12, true),
        "gla" => blocks(&|_| gla.clone(), 12, true),
        "mamba" => blocks(&|_| mamba.clone(), 24, false),
        "hyena" => blocks(&|_| hyena.clone(), 12, true),
        "striped" => blocks(&|i| if i % 2 == 0 { hyena.clone() } else { attention.clone() }, 12, true),
        other => bail!("unknown architecture `{other}` (expected one of {})", ARCHS.join(", ")),
    };
    let spec: StackSpec = serde_json::from_value(serde_json::json!({"vocab": vocab, "d_model": d, "layers": layers}))
        .with_context(|| format!("building the {arch} preset"))?;
    spec.validate(false).map_err(|e| anyhow::anyhow!("{arch} preset: {e}"))?;
    Ok(spec)
}

/// Uniform random tokens, a fresh batch per step (deterministic by step): throughput does not depend on
/// the data, and the host work of making a batch is paid as a real task pays it.
struct RandomTokens {
    vocab: usize,
    seq_len: usize,
}

impl Task for RandomTokens {
    fn name(&self) -> &'static str {
        "random"
    }
    fn vocab_size(&self) -> usize {
        self.vocab
    }
    fn seq_len(&self) -> usize {
        self.seq_len
    }
    fn train_batch(&self, step: u64, batch_size: usize) -> Batch {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(step);
        let n = batch_size * self.seq_len;
        let v = self.vocab as i64;
        let inputs: Vec<i64> = (0..n).map(|_| rng.random_range(0..v)).collect();
        let targets: Vec<i64> = (0..n).map(|_| rng.random_range(0..v)).collect();
        Batch { inputs, targets, batch: batch_size, seq_len: self.seq_len }
    }
    fn eval_set(&self, _batch_size: usize) -> Vec<Batch> {
        Vec::new()
    }
}

pub mod profile;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub archs: Vec<String>,
    pub d_model: i64,
    pub vocab: i64,
    pub seq_len: i64,
    pub batch_size: usize,
    pub warmup: u64,
    pub steps: u64,
    pub windows: usize,
    pub device: Device,
    pub kernel_path: KernelPath,
    pub precision: Precision,
    /// Profile one more window per architecture into this folder (CUDA only; see [`profile`]).
    pub profile: Option<std::path::PathBuf>,
}

/// One architecture's measurements.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchRow {
    pub arch: String,
    pub params: i64,
    pub layers: usize,
    /// Forward + backward FLOPs of one step by our accounting.
    pub flops_per_step: f64,
    pub step_ms: Option<f64>,
    pub tokens_per_s: Option<f64>,
    pub tflops: Option<f64>,
    pub mfu: Option<f64>,
    pub peak_memory_gib: Option<f64>,
    pub precision: String,
    pub fused_adamw: bool,
    pub final_loss: Option<f64>,
    pub error: Option<String>,
    /// `--profile`: the profiled window's summary, or why there is none.
    pub profile: Option<Result<profile::ProfileSummary, String>>,
}

/// The whole run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    pub device: String,
    pub matmul_ceiling_tflops: Option<f64>,
    pub seq_len: i64,
    pub batch_size: usize,
    pub steps: u64,
    pub windows: usize,
    pub rows: Vec<BenchRow>,
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// bf16 (CUDA) or float32 (CPU) matmul throughput at `n`^3, mean of 10 products after 3 warm-ups, TFLOP/s.
pub fn matmul_ceiling(device: Device, n: i64) -> f64 {
    let kind = if device.is_cuda() { Kind::BFloat16 } else { Kind::Float };
    let a = Tensor::randn([n, n], (kind, device));
    let b = Tensor::randn([n, n], (kind, device));
    for _ in 0..3 {
        let _ = a.matmul(&b);
    }
    sync(device);
    let t = Instant::now();
    for _ in 0..10 {
        let _ = a.matmul(&b);
    }
    sync(device);
    10.0 * 2.0 * (n as f64).powi(3) / t.elapsed().as_secs_f64() / 1e12
}

fn bench_one(arch: &str, o: &BenchOptions, precision: Precision, ceiling: Option<f64>) -> Result<BenchRow> {
    let spec = preset(arch, o.d_model, o.vocab, o.seq_len)?;
    let tokens_per_step = (o.batch_size as i64 * o.seq_len) as f64;
    let flops_per_step = operators::flops::TRAIN_MULTIPLIER * spec.flops_per_token(o.seq_len) * tokens_per_step;
    let mut row = BenchRow {
        arch: arch.to_string(),
        params: spec.params(),
        layers: spec.layers.len(),
        flops_per_step,
        step_ms: None,
        tokens_per_s: None,
        tflops: None,
        mfu: None,
        peak_memory_gib: None,
        precision: precision.label().into(),
        fused_adamw: false,
        final_loss: None,
        error: None,
        profile: None,
    };
    type Profiled = Option<Result<profile::ProfileSummary, String>>;
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<(Vec<f64>, f64, bool, Profiled)> {
            tch::manual_seed(0);
            let vs = VarStore::new(o.device);
            let stack = Stack::new(&vs.root(), &spec, o.kernel_path);
            let mut opt = AdamW::new(&vs, &OptimSpec::default());
            let fused = opt.is_fused();
            let task = RandomTokens { vocab: o.vocab as usize, seq_len: o.seq_len as usize };
            let mut feed = Feeder::new(o.device, o.batch_size);
            let mut step = 0u64;
            let run = |n: u64, opt: &mut AdamW, feed: &mut Feeder, step: &mut u64| -> Tensor {
                let mut last = Tensor::zeros([], (Kind::Float, o.device));
                for _ in 0..n {
                    let parts = StepParts { stack: &stack, opt, precision, feed };
                    last = optimizer_step(parts, &task, *step, 1e-4, 1.0, true);
                    *step += 1;
                }
                last
            };
            let _ = run(o.warmup, &mut opt, &mut feed, &mut step);
            sync(o.device);
            if o.device.is_cuda() {
                kernels::train_ops::reset_peak(o.device).ok();
            }
            let mut times = Vec::new();
            let mut last = Tensor::zeros([], (Kind::Float, o.device));
            for _ in 0..o.windows {
                let t = Instant::now();
                last = run(o.steps, &mut opt, &mut feed, &mut step);
                sync(o.device);
                times.push(t.elapsed().as_secs_f64() / o.steps as f64);
            }
            let loss = last.double_value(&[]);
            let profiled = o.profile.as_ref().filter(|_| o.device.is_cuda()).map(|dir| -> Result<_, String> {
                let path = dir.join(format!("{arch}.trace.json"));
                kernels::train_ops::profile_start().map_err(|e| e.to_string())?;
                let t = Instant::now();
                let _ = run(o.steps, &mut opt, &mut feed, &mut step);
                sync(o.device);
                let wall = t.elapsed().as_secs_f64();
                kernels::train_ops::profile_stop(&path).map_err(|e| e.to_string())?;
                profile::summarize(&path, o.steps, wall).map_err(|e| format!("{e:#}"))
            });
            Ok((times, loss, fused, profiled))
        }));
    match outcome {
        Ok(Ok((mut times, loss, fused, profiled))) => {
            row.profile = profiled;
            times.sort_by(f64::total_cmp);
            let step_s = times[times.len() / 2];
            row.step_ms = Some(step_s * 1e3);
            row.tokens_per_s = Some(tokens_per_step / step_s);
            row.tflops = Some(flops_per_step / step_s / 1e12);
            row.mfu = ceiling.map(|c| flops_per_step / step_s / 1e12 / c);
            row.final_loss = Some(loss);
            row.fused_adamw = fused;
            if o.device.is_cuda() {
                row.peak_memory_gib =
                    kernels::train_ops::memory_stats(o.device).ok().map(|m| m.peak as f64 / (1u64 << 30) as f64);
            }
        }
        Ok(Err(e)) => row.error = Some(format!("{e:#}")),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".into());
            let first = crate::train::first_line(&msg);
            row.error = Some(if first.contains("out of memory") {
                format!("out of memory at batch size {} x {}: {first}", o.batch_size, o.seq_len)
            } else {
                first
            });
            if o.device.is_cuda() {
                kernels::train_ops::empty_cache().ok();
            }
        }
    }
    Ok(row)
}

/// Measures every architecture of `o`; progress on stderr.
pub fn run(o: &BenchOptions) -> Result<BenchReport> {
    let precision = o.precision.resolve(o.device).map_err(anyhow::Error::msg)?;
    let ceiling = o.device.is_cuda().then(|| matmul_ceiling(o.device, 8192));
    if let Some(c) = ceiling {
        eprintln!("bf16 matmul ceiling (8192^3): {c:.0} TFLOP/s");
    }
    let mut rows = Vec::new();
    for arch in &o.archs {
        eprintln!("bench-train: {arch} ...");
        let row = bench_one(arch, o, precision, ceiling)?;
        match (&row.error, row.tokens_per_s) {
            (Some(e), _) => eprintln!("  {arch}: failed: {e}"),
            (None, Some(tps)) => eprintln!("  {arch}: {tps:.0} tokens/s"),
            _ => {}
        }
        rows.push(row);
    }
    let device = match o.device {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".into(),
    };
    Ok(BenchReport {
        device,
        matmul_ceiling_tflops: ceiling,
        seq_len: o.seq_len,
        batch_size: o.batch_size,
        steps: o.steps,
        windows: o.windows,
        rows,
    })
}

/// The report as a Markdown table (and each architecture's profile, when there is one).
pub fn markdown(r: &BenchReport) -> String {
    let mut s = format!(
        "device {}, batch {} x {} tokens, {} steps per window, median of {} windows{}\n\n",
        r.device,
        r.batch_size,
        r.seq_len,
        r.steps,
        r.windows,
        r.matmul_ceiling_tflops.map(|c| format!(", bf16 matmul ceiling {c:.0} TFLOP/s")).unwrap_or_default()
    );
    s.push_str("| arch | params | precision | fused AdamW | step ms | tokens/s | TFLOP/s | MFU | peak GiB | note |\n");
    s.push_str("|---|---:|---|---|---:|---:|---:|---:|---:|---|\n");
    let f = |v: Option<f64>, digits: usize| v.map(|x| format!("{x:.digits$}")).unwrap_or_else(|| "-".into());
    for row in &r.rows {
        s.push_str(&format!(
            "| {} | {:.1}M | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.arch,
            row.params as f64 / 1e6,
            row.precision,
            if row.fused_adamw { "yes" } else { "no" },
            f(row.step_ms, 1),
            f(row.tokens_per_s, 0),
            f(row.tflops, 1),
            row.mfu.map(|m| format!("{:.1}%", 100.0 * m)).unwrap_or_else(|| "-".into()),
            f(row.peak_memory_gib, 2),
            row.error.as_deref().unwrap_or("")
        ));
    }
    for row in &r.rows {
        match &row.profile {
            Some(Ok(p)) => s.push_str(&profile::markdown(&row.arch, p)),
            Some(Err(e)) => s.push_str(&format!("\n{}: no profile: {e}\n", row.arch)),
            None => {}
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_about_125m_parameters() {
        for arch in ARCHS {
            let spec = preset(arch, 768, 32000, 2048).unwrap();
            let p = spec.params() as f64 / 1e6;
            assert!((100.0..160.0).contains(&p), "{arch}: {p:.1}M parameters");
        }
        assert!(preset("rwkv", 768, 32000, 2048).unwrap_err().to_string().contains("expected one of"));
    }

    #[test]
    fn a_cpu_run_measures_every_row() {
        let o = BenchOptions {
            archs: vec!["transformer".into(), "mamba".into()],
            d_model: 32,
            vocab: 64,
            seq_len: 16,
            batch_size: 2,
            warmup: 1,
            steps: 2,
            windows: 1,
            device: Device::Cpu,
            kernel_path: KernelPath::Auto,
            precision: Precision::Auto,
            profile: None,
        };
        let r = run(&o).unwrap();
        assert_eq!(r.rows.len(), 2);
        for row in &r.rows {
            assert!(row.error.is_none(), "{row:?}");
            assert!(row.tokens_per_s.unwrap() > 0.0 && row.final_loss.unwrap().is_finite());
            assert_eq!(row.precision, "fp32");
        }
        assert!(markdown(&r).contains("| transformer |"));
    }
}
