//! GPU benchmark of Hyena's gated long convolution, `y = gate * (causal_conv(u, k) + D u)`: our path
//! (csrc/ext_long_conv.cpp: for bfloat16 up to 4096 steps the Toeplitz products on tensor cores of
//! csrc/long_conv_tc.*, otherwise cuFFT through libtorch with our kernels around it, also timed forced for
//! bfloat16 as "ours, cuFFT path") against
//! what `long_conv`'s Auto path ran before it (libtorch's FFT convolution on [B, T, C], then the skip and the
//! gate), the same libtorch math on input already laid out as [B, C, T] (no transposes: an optimistic
//! bound for any libtorch formulation), cuFFT's transforms alone (the part no kernel of ours can remove while
//! cuFFT does the FFTs), and the floors.
//!
//! Run on a GPU machine: `make bench-gpu`, or the bundle's `kernels-gpu-longconv-bench` (scripts/gpu-run.sh
//! longconv). Timing: benches/common (CUDA events, L2 flushed before every run, 10 warm-up runs, median of
//! `RUNS`). Forward+backward is the forward call plus torch::autograd::grad for u, k, D and gate with a
//! fixed output gradient. The libtorch paths compute in float32 for bfloat16 inputs, as autocast runs the
//! FFTs; their output is float32 then.
//!
//! Floors, per element of u (B*T*C of them, `s` bytes each): bytes, forward reads u and gate and writes y
//! (3s), backward reads u, gate and dy and writes du and dgate (5s), at 4.3 TB/s (the H200's measured
//! device-to-device copy rate); FLOPs, `long_conv::flops_per_token` (two real FFTs of N = 2T and the
//! spectral product; training 3x forward) at 67 TFLOP/s (the H200's float32 rate without tensor cores, what
//! cuFFT runs on). The floor is the larger of the two. (At 790 TFLOP/s, a tensor-core FFT's rate, the FLOPs
//! would take less time than the bytes: the bytes floor is then the floor.)

mod common;

use common::Timing;
use kernels::cuda_ext;
use kernels::long_conv::{fft, flops_per_token};
use tch::{Kind, Tensor};

const RUNS: usize = 50;
const WARMUP: usize = 10;
const BANDWIDTH: f64 = 4.3e12; // bytes/s
const FP32_FLOPS: f64 = 67e12; // FLOP/s

#[derive(Clone, Copy, PartialEq)]
enum Impl {
    Kernel,
    /// Our cuFFT path, forced (WORKBENCH_LONG_CONV_FFT=1): what bfloat16 ran before the tensor-core path.
    KernelFft,
    TorchAuto,
    TorchBct,
}

/// The inputs, and the same in [B, C, T] layout and float32 for the libtorch paths (prepared once, untimed).
struct Args {
    u: Tensor,
    u_bct: Tensor,
    k: Tensor,
    d: Tensor,
    gate: Tensor,
    gate_bct: Tensor,
    dy: Tensor,
    dy32: Tensor,
    dy_bct32: Tensor,
}

impl Impl {
    /// y, and the tensors whose gradients fwd+bwd asks for.
    fn run(self, a: &Args) -> (Tensor, Vec<Tensor>) {
        let t = a.u.size()[1];
        let n = 2 * t;
        match self {
            Impl::Kernel | Impl::KernelFft => {
                let y = cuda_ext::long_conv(&a.u, &a.k, Some(&a.d), Some(&a.gate)).expect("kernel");
                (y, vec![a.u.shallow_clone(), a.k.shallow_clone(), a.d.shallow_clone(), a.gate.shallow_clone()])
            }
            Impl::TorchAuto => {
                // long_conv's libtorch Auto path at T > 77, then the skip and Hyena's gate
                let u = a.u.to_kind(Kind::Float);
                let y = &a.gate * (fft(&u, &a.k.narrow(1, 0, t)) + &u * &a.d);
                (y, vec![a.u.shallow_clone(), a.k.shallow_clone(), a.d.shallow_clone(), a.gate.shallow_clone()])
            }
            Impl::TorchBct => {
                // the same math on [B, C, T] input and gate (the filter's spectrum broadcast over the batch)
                let u = a.u_bct.to_kind(Kind::Float);
                let kf = a.k.narrow(1, 0, t).fft_rfft(n, -1, "backward"); // [C, T + 1]
                let conv = (u.fft_rfft(n, -1, "backward") * kf).fft_irfft(n, -1, "backward").narrow(2, 0, t);
                let y = &a.gate_bct * (conv + &u * a.d.unsqueeze(1));
                (y, vec![a.u_bct.shallow_clone(), a.k.shallow_clone(), a.d.shallow_clone(), a.gate_bct.shallow_clone()])
            }
        }
    }
}

struct Bench(Timing);

/// Sets WORKBENCH_LONG_CONV_FFT=1 (read by the kernel library at every call) for `Impl::KernelFft`'s timing.
struct ForceFft(bool);

impl ForceFft {
    fn new(imp: Impl) -> ForceFft {
        let on = imp == Impl::KernelFft;
        if on {
            std::env::set_var("WORKBENCH_LONG_CONV_FFT", "1"); // single-threaded: nothing races it
        }
        ForceFft(on)
    }
}

impl Drop for ForceFft {
    fn drop(&mut self) {
        if self.0 {
            std::env::remove_var("WORKBENCH_LONG_CONV_FFT");
        }
    }
}

impl Bench {
    fn time(&mut self, f: impl FnMut()) -> f64 {
        self.0.median_ms(WARMUP, RUNS, f)
    }

    fn fwd(&mut self, imp: Impl, a: &Args) -> f64 {
        let _fft = ForceFft::new(imp);
        let _guard = tch::no_grad_guard();
        self.time(|| {
            let _ = imp.run(a);
        })
    }

    fn fwd_bwd(&mut self, imp: Impl, a: &Args) -> f64 {
        let _fft = ForceFft::new(imp);
        self.time(|| {
            let (y, ins) = imp.run(a);
            let dy = match imp {
                Impl::Kernel | Impl::KernelFft => &a.dy,
                Impl::TorchAuto => &a.dy32,
                Impl::TorchBct => &a.dy_bct32,
            };
            let refs: Vec<&Tensor> = ins.iter().collect();
            let _ = cuda_ext::grad(&[&y], &[dy], &refs).expect("backward");
        })
    }

    /// cuFFT alone on the shapes our path transforms: forward one rfft of [B, C, N] and one irfft; the
    /// backward pass adds one rfft of [2, B, C, N] and one irfft of [B, C, N/2 + 1].
    fn cufft(&mut self, b: i64, t: i64, c: i64, backward_too: bool, dev: tch::Device) -> f64 {
        let n = 2 * t;
        let x = Tensor::randn([b, c, n], (Kind::Float, dev));
        let x2 = Tensor::randn([2, b, c, n], (Kind::Float, dev));
        let _guard = tch::no_grad_guard();
        self.time(|| {
            let _ = x.fft_rfft(n, -1, "backward").fft_irfft(n, -1, "forward");
            if backward_too {
                let s = x2.fft_rfft(n, -1, "backward");
                let _ = s.select(0, 1).fft_irfft(n, -1, "forward");
            }
        })
    }
}

fn main() {
    let (timing, dev) = Timing::setup();
    let mut bench = Bench(timing);
    let b = 8;
    println!(
        "## gated long convolution y = gate * (k * u + D u), B = {b}, C = 16 heads x head dim; median of {RUNS} \
         runs, ms\n"
    );
    println!(
        "| dtype | T | C | pass | ours | ours, cuFFT path | libtorch Auto | libtorch [B,C,T] | cuFFT alone | \
         bytes floor | fp32 FLOP floor | ours / floor | cuFFT path / ours | Auto / ours | [B,C,T] / ours |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for kind in [Kind::BFloat16, Kind::Float] {
        for t in [2048, 4096] {
            for hd in [64, 128] {
                let c = 16 * hd;
                let opts = (Kind::Float, dev);
                let leaf = |x: Tensor| x.set_requires_grad(true);
                let u = Tensor::randn([b, t, c], opts).to_kind(kind);
                let gate = Tensor::randn([b, t, c], opts).to_kind(kind);
                let dy = Tensor::randn([b, t, c], opts).to_kind(kind);
                let bct = |x: &Tensor| x.transpose(1, 2).contiguous();
                // the libtorch paths' output is float32 for either input dtype (see the note)
                let dy32 = dy.to_kind(Kind::Float);
                let args = Args {
                    u_bct: leaf(bct(&u)),
                    u: leaf(u),
                    k: leaf(Tensor::randn([c, t], opts) / (t as f64).sqrt()),
                    d: leaf(Tensor::randn([c], opts)),
                    gate_bct: leaf(bct(&gate)),
                    gate: leaf(gate),
                    dy_bct32: bct(&dy32),
                    dy32,
                    dy,
                };
                let elems = (b * t * c) as f64;
                let s = kind.elt_size_in_bytes() as f64;
                let flops = elems * flops_per_token(t);
                for (pass, bytes, fl) in [("fwd", 3.0 * s * elems, flops), ("fwd+bwd", 8.0 * s * elems, 3.0 * flops)] {
                    let mut ms = Vec::new();
                    for imp in [Impl::Kernel, Impl::KernelFft, Impl::TorchAuto, Impl::TorchBct] {
                        ms.push(if pass == "fwd" { bench.fwd(imp, &args) } else { bench.fwd_bwd(imp, &args) });
                    }
                    let cufft = bench.cufft(b, t, c, pass != "fwd", dev);
                    let (floor_bytes, floor_flops) = (bytes / BANDWIDTH * 1e3, fl / FP32_FLOPS * 1e3);
                    let floor = floor_bytes.max(floor_flops);
                    println!(
                        "| {kind:?} | {t} | {c} | {pass} | {:.3} | {:.3} | {:.3} | {:.3} | {cufft:.3} | \
                         {floor_bytes:.3} | {floor_flops:.3} | {:.2}x | {:.2}x | {:.2}x | {:.2}x |",
                        ms[0],
                        ms[1],
                        ms[2],
                        ms[3],
                        ms[0] / floor,
                        ms[1] / ms[0],
                        ms[2] / ms[0],
                        ms[3] / ms[0]
                    );
                }
            }
        }
    }
}
