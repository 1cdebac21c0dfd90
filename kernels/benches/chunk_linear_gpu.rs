//! GPU benchmark of chunked linear attention with a scalar per-head decay (RetNet / Mamba2's SSD), with
//! per-key decays (GLA) and without a decay (plain causal linear attention) (bfloat16, log-decays float32 in
//! [-0.1, 0) cast to bf16 like q/k/v, no initial state): our kernel against the libtorch `Auto` path (the
//! chunked form of fused libtorch ops, chunk 64 for the scalar decay and none, GLA's default chunk 16 for
//! per-key decays) and against floors.
//!
//! Run on a GPU machine: `cargo bench -p kernels --features cuda --bench chunk_linear_gpu`, or the bundle's
//! `kernels-gpu-chunk-bench` (scripts/gpu-run.sh `chunk`). Shapes: B = 8, H = 16, T in {2048, 4096}, head
//! dim Dk = Dv in {64, 128}. Timing: CUDA events around each call on the current stream, the L2 flushed
//! before every run by writing a 256 MiB buffer, WARMUP runs, then the median of RUNS runs. The kernel is
//! called through `cuda_ext::chunk_linear` directly (no opt-in gate needed); the libtorch path with
//! `KernelPath::Auto` while the gate is off. Forward+backward is the forward call plus
//! torch::autograd::grad for q, k, v and g with fixed output gradients for o and the final state. Prints a
//! Markdown table per decay; fla's `chunk_simple_gla`, `chunk_gla` and `chunk_linear_attn` (the public
//! kernels for the same math) are timed by kernels/benches/fla_bench.py with the same protocol (gpu-run.sh
//! `fla`).
//!
//! `CHUNK_BENCH_FORMS=per_key` (a comma list of scalar, per_key, none) prints only those tables.
//!
//! With `CHUNK_BENCH_PROFILE=DIR` it also writes, per table and shape at T = 2048, a Chrome trace of 3
//! kernel forward+backward calls under libtorch's profiler (`DIR/{scalar,per_key,none}_{head dim}.trace.json`):
//! which of the kernel's launches the time goes to.
//!
//! Floors (computed, not measured):
//! - bytes at 4.3 TB/s (the H200's measured device-to-device copy rate), counting only what must move in
//!   bf16: forward reads q, k, v, g and writes o and the final state, backward adds reading dO and writing
//!   dq, dk, dv, dg (the inputs read again are not counted; g is [B, H, T] or, per key, [B, H, T, Dk]);
//! - FLOPs at 790 TFLOP/s (bf16 tensor cores): [`chunk_linear_flops`] with chunk 64 forward, 3x for
//!   forward+backward (the project's convention).

mod common;

use common::Timing;
use kernels::chunk_linear::{chunk_linear, chunk_linear_flops, Decay};
use kernels::cuda_ext;
use kernels::KernelPath;
use tch::{Kind, Tensor};

const RUNS: usize = 50;
const WARMUP: usize = 5;
const BANDWIDTH: f64 = 4.3e12; // bytes/s
const MATMUL_RATE: f64 = 790e12; // FLOP/s
const CHUNK: i64 = 64;
/// The libtorch form's chunk with per-key decays: GLA's default (operators' `default_gla_chunk`).
const CHUNK_PER_KEY: i64 = 16;

#[derive(Clone, Copy, PartialEq)]
enum Impl {
    Kernel,
    Libtorch,
}

impl Impl {
    /// q, k, v and g [B, H, T] (scalar decay), [B, H, T, Dk] (per key) or no g (no decay).
    fn run(self, v: &[Tensor]) -> (Tensor, Tensor) {
        let (q, k, vv, g) = (&v[0], &v[1], &v[2], v.get(3));
        let (decay, chunk) = match g {
            Some(g) if g.dim() == 4 => (Decay::PerKey(g), CHUNK_PER_KEY),
            Some(g) => (Decay::Scalar(g), CHUNK),
            None => (Decay::None, CHUNK),
        };
        match self {
            Impl::Kernel => cuda_ext::chunk_linear(q, k, vv, g, None).expect("kernel"),
            Impl::Libtorch => chunk_linear(q, k, vv, decay, None, chunk, KernelPath::Auto),
        }
    }
}

struct Bench(Timing);

impl Bench {
    /// Median milliseconds of `f` over RUNS runs after WARMUP, L2 flushed before each.
    fn time(&mut self, f: impl FnMut()) -> f64 {
        self.0.median_ms(WARMUP, RUNS, f)
    }

    fn fwd(&mut self, imp: Impl, v: &[Tensor]) -> f64 {
        let _guard = tch::no_grad_guard();
        self.time(|| {
            let _ = imp.run(v);
        })
    }

    fn fwd_bwd(&mut self, imp: Impl, v: &[Tensor], go: &Tensor, gs: &Tensor) -> f64 {
        let leaves: Vec<Tensor> = v.iter().map(|t| t.detach().set_requires_grad(true)).collect();
        let ins: Vec<&Tensor> = leaves.iter().collect();
        self.time(|| {
            let (o, s) = imp.run(&leaves);
            let _ = cuda_ext::grad(&[&o, &s], &[go, gs], &ins).expect("backward");
        })
    }
}

fn main() {
    // The libtorch column must time the libtorch form, which the Auto path would route to the kernel.
    std::env::set_var("WORKBENCH_CHUNK_LINEAR_KERNEL", "0");
    assert_eq!(cuda_ext::chunk_linear_gate(), cuda_ext::ChunkLinearGate::Never);
    let (timing, dev) = Timing::setup();
    let mut bench = Bench(timing);
    let kind = Kind::BFloat16;
    let s = 2.0; // bytes per bfloat16
    let (b, h) = (8i64, 16i64);
    // CHUNK_BENCH_FORMS=per_key,none (any of scalar, per_key, none): only those tables
    let forms = std::env::var("CHUNK_BENCH_FORMS").unwrap_or_else(|_| "scalar,per_key,none".into());
    for form in ["scalar", "per_key", "none"] {
        if !forms.split(',').any(|f| f.trim() == form) {
            continue;
        }
        let per_key = form == "per_key";
        let (what, chunk) = match form {
            "scalar" => ("scalar decay", CHUNK),
            "per_key" => ("per-key decays (GLA)", CHUNK_PER_KEY),
            _ => ("no decay (linear attention)", CHUNK),
        };
        println!(
            "## chunk_linear, {what} (bfloat16), B = 8, H = 16, Dk = Dv = head dim; libtorch chunk {chunk}; median of {RUNS} runs, ms\n"
        );
        println!("| T | head dim | pass | kernel | libtorch Auto | libtorch / kernel | floor bytes | floor FLOPs | kernel / max floor |");
        println!("|---|---|---|---|---|---|---|---|---|");
        for t in [2048i64, 4096] {
            for d in [64i64, 128] {
                let opts = (Kind::Float, dev);
                let sc = (d as f64).powf(-0.25);
                let g_shape: &[i64] = if per_key { &[b, h, t, d] } else { &[b, h, t] };
                let mut v: Vec<Tensor> = vec![
                    Tensor::randn([b, h, t, d], opts) * sc,
                    Tensor::randn([b, h, t, d], opts) * sc,
                    Tensor::randn([b, h, t, d], opts),
                ];
                if form != "none" {
                    v.push(-(Tensor::rand(g_shape, opts) * 0.1 + 1e-3));
                }
                let v: Vec<Tensor> = v.into_iter().map(|x| x.to_kind(kind)).collect();
                let go = Tensor::randn([b, h, t, d], opts).to_kind(kind);
                let gs = Tensor::randn([b, h, d, d], opts).to_kind(kind);
                let (btd, state) = ((b * h * t * d) as f64, (b * h * d * d) as f64);
                let gsize = v.get(3).map_or(0.0, |g| g.numel() as f64);
                // the kernel's chunk is 64 whatever the libtorch form's is
                let flops = chunk_linear_flops(b * h, t, d, d, CHUNK);
                if let (Some(dir), 2048) = (std::env::var_os("CHUNK_BENCH_PROFILE"), t) {
                    let name = format!("{form}_{d}.trace.json");
                    profile(&std::path::Path::new(&dir).join(name), &v, &go, &gs);
                }
                for (pass, bytes, fl) in [
                    ("fwd", (4.0 * btd + gsize + state) * s, flops),
                    ("fwd+bwd", (4.0 * btd + gsize + state + 4.0 * btd + gsize + state) * s, 3.0 * flops),
                ] {
                    let mut ms = Vec::new();
                    for imp in [Impl::Kernel, Impl::Libtorch] {
                        ms.push(if pass == "fwd" { bench.fwd(imp, &v) } else { bench.fwd_bwd(imp, &v, &go, &gs) });
                    }
                    let fb = bytes / BANDWIDTH * 1e3;
                    let ff = fl / MATMUL_RATE * 1e3;
                    println!(
                        "| {t} | {d} | {pass} | {:.3} | {:.3} | {:.2}x | {fb:.3} | {ff:.3} | {:.1}x |",
                        ms[0],
                        ms[1],
                        ms[1] / ms[0],
                        ms[0] / fb.max(ff)
                    );
                }
            }
        }
        println!();
    }
}

/// Three kernel forward+backward calls under libtorch's profiler, the trace to `path`.
fn profile(path: &std::path::Path, v: &[Tensor], go: &Tensor, gs: &Tensor) {
    let leaves: Vec<Tensor> = v.iter().map(|t| t.detach().set_requires_grad(true)).collect();
    let ins: Vec<&Tensor> = leaves.iter().collect();
    let step = || {
        let (o, s) = Impl::Kernel.run(&leaves);
        let _ = cuda_ext::grad(&[&o, &s], &[go, gs], &ins).expect("backward");
    };
    step(); // warm
    kernels::train_ops::profile_start().expect("profiler");
    for _ in 0..3 {
        step();
    }
    tch::Cuda::synchronize(0); // every kernel finished, so in the trace
    kernels::train_ops::profile_stop(path).expect("profiler trace");
}
