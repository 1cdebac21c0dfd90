//! GPU benchmark of the short causal depthwise convolution (k = 4, SiLU, bias): our kernel against
//! libtorch's conv1d (what `Auto` ran before the kernel), the plain-tch reference, and the floor set by the
//! bytes that must move at 4.3 TB/s (the H200's measured device-to-device copy rate).
//!
//! Run on a GPU machine: `make bench-gpu`, or the bundle's `kernels-gpu-bench` (scripts/gpu-run.sh).
//! Timing: CUDA events around each call on the current stream (csrc/extension.cpp), the L2 flushed before
//! every run by writing a 256 MiB buffer, 10 warm-up runs, then the median of `RUNS` runs. Forward+backward
//! is the forward call plus torch::autograd::grad for x, w and bias with a fixed output gradient. Each call
//! is timed twice: queued (a ~1 ms GPU spin before the timer starts, so the host has queued the call and the
//! time is the GPU's: kernels plus the gaps between them, the case inside a training step) and as called
//! (the timer starts right after the flush, so host dispatch the flush does not hide counts too). The main
//! columns are queued; fla_bench.py's `causal_conv1d` times fla's Triton kernel with the same two protocols.
//! Prints Markdown tables.
//!
//! Bytes floor, per element of x (B*T*C of them, `s` bytes each): forward reads x and writes y (2s);
//! backward reads x and dy and writes dx (3s); w, bias and their gradients are negligible.

mod common;

use common::Timing;
use kernels::cuda_ext;
use kernels::short_conv::{short_conv, Activation};
use kernels::KernelPath;
use tch::{Kind, Tensor};

const RUNS: usize = 60;
const WARMUP: usize = 10;
const BANDWIDTH: f64 = 4.3e12; // bytes/s
const K: i64 = 4;

#[derive(Clone, Copy, PartialEq)]
enum Impl {
    Kernel,
    Conv1d,
    Reference,
}

impl Impl {
    fn run(self, x: &Tensor, w: &Tensor, b: &Tensor) -> Tensor {
        match self {
            Impl::Kernel => cuda_ext::short_conv(x, w, Some(b), Activation::Silu).expect("kernel"),
            Impl::Conv1d => {
                // libtorch's depthwise conv1d (cuDNN), as short_conv's Auto path did before the kernel
                let c = w.size()[0];
                let xt = x.transpose(1, 2).constant_pad_nd([K - 1, 0]);
                xt.conv1d(&w.unsqueeze(1), Some(b), [1], [0], [1], c).transpose(1, 2).silu()
            }
            Impl::Reference => short_conv(x, w, Some(b), Activation::Silu, KernelPath::Reference),
        }
    }
}

struct Bench {
    timing: Timing,
    /// Time with the host queued ahead (true) or as called (false); see the module comment.
    queued: bool,
}

impl Bench {
    /// Median milliseconds of `f` over RUNS runs after WARMUP, L2 flushed before each.
    fn time(&mut self, f: impl FnMut()) -> f64 {
        if self.queued {
            self.timing.median_ms_queued(WARMUP, RUNS, f)
        } else {
            self.timing.median_ms(WARMUP, RUNS, f)
        }
    }

    fn fwd(&mut self, imp: Impl, x: &Tensor, w: &Tensor, b: &Tensor) -> f64 {
        let _guard = tch::no_grad_guard();
        self.time(|| {
            let _ = imp.run(x, w, b);
        })
    }

    fn fwd_bwd(&mut self, imp: Impl, x: &Tensor, w: &Tensor, b: &Tensor, gy: &Tensor) -> f64 {
        let (x, w, b) = (
            x.detach().set_requires_grad(true),
            w.detach().set_requires_grad(true),
            b.detach().set_requires_grad(true),
        );
        self.time(|| {
            let y = imp.run(&x, &w, &b);
            let _ = cuda_ext::grad(&[&y], &[gy], &[&x, &w, &b]).expect("backward");
        })
    }

    fn pass(&mut self, pass: &str, imp: Impl, x: &Tensor, w: &Tensor, b: &Tensor, gy: &Tensor) -> f64 {
        if pass == "fwd" {
            self.fwd(imp, x, w, b)
        } else {
            self.fwd_bwd(imp, x, w, b, gy)
        }
    }
}

fn main() {
    let (timing, dev) = Timing::setup();
    let mut bench = Bench { timing, queued: true };

    println!("## short_conv (k = {K}, SiLU, bias), B = 8, C = 16 heads x head dim; median of {RUNS} runs, ms\n");
    println!("Queued times (the host ahead of the GPU) unless the column says \"as called\".\n");
    println!("| dtype | T | C | pass | kernel | conv1d | reference | floor @ 4.3 TB/s | kernel / floor | conv1d / kernel | reference / kernel | kernel, as called | conv1d, as called |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let b = 8;
    for kind in [Kind::BFloat16, Kind::Float] {
        for t in [2048, 4096] {
            for d in [64, 128] {
                let c = 16 * d;
                let opts = (Kind::Float, dev);
                let x = Tensor::randn([b, t, c], opts).to_kind(kind);
                let w = (Tensor::randn([c, K], opts) * 0.5).to_kind(kind);
                let bias = Tensor::randn([c], opts).to_kind(kind);
                let gy = Tensor::randn([b, t, c], opts).to_kind(kind);
                let bytes = (b * t * c) as f64 * x.kind().elt_size_in_bytes() as f64;
                for (pass, floor_bytes) in [("fwd", 2.0 * bytes), ("fwd+bwd", 5.0 * bytes)] {
                    let mut ms = Vec::new();
                    for imp in [Impl::Kernel, Impl::Conv1d, Impl::Reference] {
                        ms.push(bench.pass(pass, imp, &x, &w, &bias, &gy));
                    }
                    bench.queued = false;
                    let called = [
                        bench.pass(pass, Impl::Kernel, &x, &w, &bias, &gy),
                        bench.pass(pass, Impl::Conv1d, &x, &w, &bias, &gy),
                    ];
                    bench.queued = true;
                    let floor = floor_bytes / BANDWIDTH * 1e3;
                    println!(
                        "| {kind:?} | {t} | {c} | {pass} | {:.4} | {:.4} | {:.4} | {floor:.4} | {:.2}x | {:.2}x | {:.2}x | {:.4} | {:.4} |",
                        ms[0],
                        ms[1],
                        ms[2],
                        ms[0] / floor,
                        ms[1] / ms[0],
                        ms[2] / ms[0],
                        called[0],
                        called[1]
                    );
                }
            }
        }
    }

    // The time chunk per thread (launch shape) against speed, for tuning the automatic choice.
    println!("\n## kernel time (ms, queued) against time steps per thread, bfloat16, B = 8\n");
    let chunks = [0i64, 8, 16, 32, 64, 128];
    let head: Vec<String> = chunks.iter().map(|c| if *c == 0 { "auto".to_string() } else { c.to_string() }).collect();
    println!("| T | C | pass | {} |", head.join(" | "));
    println!("|---|---|---|{}", "---|".repeat(chunks.len()));
    for t in [2048, 4096] {
        for d in [64, 128] {
            let c = 16 * d;
            let opts = (Kind::Float, dev);
            let x = Tensor::randn([b, t, c], opts).to_kind(Kind::BFloat16);
            let w = (Tensor::randn([c, K], opts) * 0.5).to_kind(Kind::BFloat16);
            let bias = Tensor::randn([c], opts).to_kind(Kind::BFloat16);
            let gy = Tensor::randn([b, t, c], opts).to_kind(Kind::BFloat16);
            for pass in ["fwd", "fwd+bwd"] {
                let mut cells = Vec::new();
                for &chunk in &chunks {
                    cuda_ext::set_short_conv_chunk(chunk).unwrap();
                    cells.push(format!("{:.4}", bench.pass(pass, Impl::Kernel, &x, &w, &bias, &gy)));
                }
                cuda_ext::set_short_conv_chunk(0).unwrap();
                println!("| {t} | {c} | {pass} | {} |", cells.join(" | "));
            }
        }
    }
}
