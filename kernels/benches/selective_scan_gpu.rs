//! GPU benchmark of Mamba's selective scan (bfloat16, with the skip term D, no initial state): our kernel
//! against the libtorch path that CUDA tensors ran before it (`selective_scan::blocked`, the blocked loop
//! of fused libtorch ops) and against floors.
//!
//! Run on a GPU machine: `cargo bench -p kernels --features cuda --bench selective_scan_gpu`, or the
//! bundle's `kernels-gpu-scan-bench` (scripts/gpu-run.sh). Shapes: B = 8, D = 16 heads x head dim (64, 128),
//! T in {2048, 4096}, state N in {16, 64}. Timing: CUDA events around each call on the current stream, the
//! L2 flushed before every run by writing a 256 MiB buffer, warm-up runs, then the median of `RUNS` runs for
//! the kernel and of `BASELINE_RUNS` for the libtorch path (10-600 ms a call: 50 runs of every shape would
//! take minutes of GPU time for a number that only needs to be right to a few percent).
//! Forward+backward is the forward call plus torch::autograd::grad for x, dt, A, B, C and D with a fixed
//! output gradient for y. Prints a Markdown table.
//!
//! Floors (computed, not measured):
//! - bytes at 4.3 TB/s (the H200's measured device-to-device copy rate), counting only what must move with
//!   s bytes per element: forward reads x, dt, B, C and writes y, `(3 BTD + 2 BTN) s`; forward+backward
//!   adds reading x, dt, B, C, dy and writing dx, ddt, dB, dC, `(8 BTD + 6 BTN) s` in all;
//! - exponentials: `exp(dt A)` is one special-function instruction per state element and step, B*T*D*N in
//!   the forward pass and at least as many again in the backward pass (which needs the decays and does not
//!   store them). At 16 per clock per multiprocessor (Hopper's SFU rate, a datasheet lead), 132
//!   multiprocessors and 1.98 GHz that is 4.18e12 per second;
//! - FLOPs: 4*D*N per token (the project's convention: update and readout), 3x for training, at 790 TFLOP/s.
//!   The scan has no matrix products, so this floor is far below the others; it is printed for completeness.

mod common;

use common::Timing;
use kernels::cuda_ext;
use kernels::selective_scan::{blocked, selective_scan_flops};
use tch::{Kind, Tensor};

const RUNS: usize = 50;
const BASELINE_RUNS: usize = 10;
const WARMUP: usize = 5;
const BANDWIDTH: f64 = 4.3e12; // bytes/s
const EXP_RATE: f64 = 132.0 * 16.0 * 1.98e9; // exponentials/s
const MATMUL_RATE: f64 = 790e12; // FLOP/s

#[derive(Clone, Copy, PartialEq)]
enum Impl {
    Kernel,
    Blocked,
}

impl Impl {
    fn runs(self) -> usize {
        match self {
            Impl::Kernel => RUNS,
            Impl::Blocked => BASELINE_RUNS,
        }
    }

    fn run(self, v: &[Tensor]) -> Tensor {
        let (x, dt, a, b, c, d) = (&v[0], &v[1], &v[2], &v[3], &v[4], &v[5]);
        match self {
            Impl::Kernel => cuda_ext::selective_scan(x, dt, a, b, c, Some(d), None).expect("kernel").0,
            Impl::Blocked => blocked(x, dt, a, b, c, None, kernels::selective_scan::SCAN_BLOCK).0 + x * d,
        }
    }
}

struct Bench(Timing);

impl Bench {
    /// Median milliseconds of `f` over `runs` runs after WARMUP (2 for long baselines), L2 flushed before each.
    fn time(&mut self, runs: usize, f: impl FnMut()) -> f64 {
        self.0.median_ms(if runs < RUNS { 2 } else { WARMUP }, runs, f)
    }

    fn fwd(&mut self, imp: Impl, v: &[Tensor]) -> f64 {
        let _guard = tch::no_grad_guard();
        self.time(imp.runs(), || {
            let _ = imp.run(v);
        })
    }

    fn fwd_bwd(&mut self, imp: Impl, v: &[Tensor], gy: &Tensor) -> f64 {
        let leaves: Vec<Tensor> = v.iter().map(|t| t.detach().set_requires_grad(true)).collect();
        let ins: Vec<&Tensor> = leaves.iter().collect();
        self.time(imp.runs(), || {
            let y = imp.run(&leaves);
            let _ = cuda_ext::grad(&[&y], &[gy], &ins).expect("backward");
        })
    }
}

fn main() {
    let (timing, dev) = Timing::setup();
    let mut bench = Bench(timing);
    let kind = Kind::BFloat16;
    let s = 2.0; // bytes per bfloat16
                 // SCAN_SKIP_BASELINE=1: time only the kernel (the libtorch path takes minutes over all shapes)
    let skip_baseline = std::env::var_os("SCAN_SKIP_BASELINE").is_some_and(|v| v == "1");

    println!(
        "## selective_scan (bfloat16, with D), B = 8, D = 16 heads x head dim; median of {RUNS} runs (libtorch: {BASELINE_RUNS}), ms\n"
    );
    println!("| T | D | N | pass | kernel | libtorch blocked | blocked / kernel | floor bytes | floor exp | floor FLOPs | kernel / max floor |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let b = 8i64;
    for t in [2048i64, 4096] {
        for hd in [64i64, 128] {
            let d = 16 * hd;
            for n in [16i64, 64] {
                let opts = (Kind::Float, dev);
                let v: Vec<Tensor> = [
                    Tensor::randn([b, t, d], opts),
                    (Tensor::randn([b, t, d], opts) - 3.0).softplus(),
                    -Tensor::arange_start(1, n + 1, opts).repeat([d, 1]),
                    Tensor::randn([b, t, n], opts),
                    Tensor::randn([b, t, n], opts),
                    Tensor::ones([d], opts),
                ]
                .into_iter()
                .map(|x| x.to_kind(kind))
                .collect();
                let gy = Tensor::randn([b, t, d], opts).to_kind(kind);
                let (btd, btn) = ((b * t * d) as f64, (b * t * n) as f64);
                let exps = (b * t * d * n) as f64;
                let flops = selective_scan_flops(b, t, d, n);
                for (pass, bytes, n_exp, fl) in [
                    ("fwd", (3.0 * btd + 2.0 * btn) * s, exps, flops),
                    ("fwd+bwd", (8.0 * btd + 6.0 * btn) * s, 2.0 * exps, 3.0 * flops),
                ] {
                    let mut ms = Vec::new();
                    for imp in [Impl::Kernel, Impl::Blocked] {
                        if imp == Impl::Blocked && skip_baseline {
                            ms.push(f64::NAN);
                            continue;
                        }
                        ms.push(if pass == "fwd" { bench.fwd(imp, &v) } else { bench.fwd_bwd(imp, &v, &gy) });
                    }
                    let fb = bytes / BANDWIDTH * 1e3;
                    let fe = n_exp / EXP_RATE * 1e3;
                    let ff = fl / MATMUL_RATE * 1e3;
                    println!(
                        "| {t} | {d} | {n} | {pass} | {:.3} | {:.3} | {:.1}x | {fb:.3} | {fe:.3} | {ff:.4} | {:.2}x |",
                        ms[0],
                        ms[1],
                        ms[1] / ms[0],
                        ms[0] / fb.max(fe).max(ff)
                    );
                }
            }
        }
    }
}
