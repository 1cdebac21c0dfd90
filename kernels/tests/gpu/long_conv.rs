//! The long convolution fused with its skip and gate (csrc/long_conv*, csrc/ext_long_conv.cpp):
//! `y = gate * (causal_conv(u, k[:, :T]) + D u)` against the float64 reference, output and every gradient.
//! float32 runs the cuFFT path at every length; bfloat16 the tensor-core path up to T = 4096 (the cases
//! below but T = 4099), cuFFT beyond.
//!
//! The float64 reference is the loop over lags (`long_conv::reference`) up to T = 300 and, beyond, libtorch's
//! float64 FFT convolution (`long_conv::fft`, itself tested against the loop to 1e-10 on CPU): the loop's
//! autograd graph grows with T. Tolerances are the crate's (main.rs): float32 1e-4 (cuFFT's float32
//! rounding, about 1e-6 relative here, with margin), bfloat16 1.6e-2 (one rounding of each [B, T, C] output;
//! dgate reads w saved in bfloat16, a second rounding of the same size).

use super::{gpu, rel_err};
use kernels::cuda_ext::{self, CudaKernelError};
use kernels::long_conv::{fft, long_conv, long_conv_gated, reference};
use kernels::KernelPath;
use tch::{Device, Kind, Tensor};

fn tolerance(kind: Kind) -> f64 {
    match kind {
        Kind::Float => 1e-4,
        Kind::BFloat16 => 1.6e-2,
        other => panic!("no tolerance for {other:?}"),
    }
}

#[derive(Clone, Copy)]
struct Case {
    b: i64,
    t: i64,
    c: i64,
    l: i64,
}

/// Awkward shapes: T = 1, odd channel counts below and across the 32-wide tile, T not a multiple of the tile
/// (nor, for the tensor-core path, of its 16-step tiles),
/// T whose FFT length is not 2T (37 -> 80, 1000 -> 2000 is, 4099 -> 8232), filters longer than T, and a
/// training-sized slice.
const CASES: &[Case] = &[
    Case { b: 1, t: 1, c: 1, l: 1 },
    Case { b: 2, t: 1, c: 5, l: 3 },
    Case { b: 3, t: 7, c: 3, l: 7 },
    Case { b: 2, t: 37, c: 13, l: 40 },
    Case { b: 2, t: 100, c: 24, l: 100 },
    Case { b: 1, t: 257, c: 72, l: 300 },
    Case { b: 2, t: 1000, c: 33, l: 1000 },
    Case { b: 2, t: 2048, c: 64, l: 2048 },
    Case { b: 1, t: 4099, c: 10, l: 4099 },
    Case { b: 2, t: 512, c: 1024, l: 512 },
    // bfloat16 takes the tensor-core path up to 4096 steps: two batch groups of 8 (the second partial), and
    // its longest length
    Case { b: 9, t: 130, c: 5, l: 130 },
    Case { b: 3, t: 4096, c: 4, l: 4096 },
];

struct Inputs {
    u: Tensor,
    k: Tensor,
    d: Tensor,
    gate: Tensor,
    dy: Tensor,
}

/// Random inputs on the GPU: u, gate, dy in `kind`, k (scaled by 1/sqrt(T) so outputs stay O(1)) and D in
/// `param_kind`.
fn inputs(case: Case, kind: Kind, param_kind: Kind, dev: Device) -> Inputs {
    let opts = (Kind::Float, dev);
    let shape = [case.b, case.t, case.c];
    Inputs {
        u: Tensor::randn(shape, opts).to_kind(kind),
        k: (Tensor::randn([case.c, case.l], opts) / (case.t as f64).sqrt()).to_kind(param_kind),
        d: Tensor::randn([case.c], opts).to_kind(param_kind),
        gate: Tensor::randn(shape, opts).to_kind(kind),
        dy: Tensor::randn(shape, opts).to_kind(kind),
    }
}

/// The float64 definition on the same (rounded) values.
fn reference64(u: &Tensor, k: &Tensor, d: Option<&Tensor>, gate: Option<&Tensor>) -> Tensor {
    let t = u.size()[1];
    let kt = k.narrow(1, 0, t);
    let mut y = if t <= 300 { reference(u, &kt) } else { fft(u, &kt) };
    if let Some(d) = d {
        y += u * d;
    }
    match gate {
        Some(g) => g * y,
        None => y,
    }
}

/// A way of calling the kernel: (u, k, D, gate) -> y.
type ConvFn<'a> = dyn Fn(&Tensor, &Tensor, Option<&Tensor>, Option<&Tensor>) -> Tensor + 'a;

/// Compares `f` (the kernel, some way) with the float64 reference: y and the gradients of u, k, D, gate.
fn check(label: &str, case: Case, kind: Kind, param_kind: Kind, with_d: bool, with_gate: bool, f: &ConvFn) {
    let x = inputs(case, kind, param_kind, Device::Cuda(0));
    let leaf = |t: &Tensor| t.detach().set_requires_grad(true);
    let (u, k, d, g) = (leaf(&x.u), leaf(&x.k), leaf(&x.d), leaf(&x.gate));
    let (dopt, gopt) = (with_d.then_some(&d), with_gate.then_some(&g));
    let y = f(&u, &k, dopt, gopt);
    assert_eq!(y.kind(), kind, "{label}: output dtype");
    let mut ins = vec![&u, &k];
    ins.extend(dopt);
    ins.extend(gopt);
    let got_grads = cuda_ext::grad(&[&y], &[&x.dy], &ins).expect("kernel backward");

    let f64leaf = |t: &Tensor| t.detach().to_kind(Kind::Double).set_requires_grad(true);
    let (ur, kr, dr, gr) = (f64leaf(&x.u), f64leaf(&x.k), f64leaf(&x.d), f64leaf(&x.gate));
    let (drop, grop) = (with_d.then_some(&dr), with_gate.then_some(&gr));
    let yr = reference64(&ur, &kr, drop, grop);
    let mut rins = vec![&ur, &kr];
    rins.extend(drop);
    rins.extend(grop);
    let want_grads = Tensor::run_backward(&[(&yr * x.dy.to_kind(Kind::Double)).sum(Kind::Double)], &rins, false, false);

    let mut names = vec!["y", "du", "dk"];
    if with_d {
        names.push("dD");
    }
    if with_gate {
        names.push("dgate");
    }
    let mut got = vec![y];
    got.extend(got_grads);
    let mut want = vec![yr.detach()];
    want.extend(want_grads);
    for ((name, a), r) in names.iter().zip(&got).zip(&want) {
        assert_eq!(a.size(), r.size(), "{label}: {name} shape");
        // A gradient comes back in its input's dtype: dk of a bfloat16 filter is rounded to bfloat16 even
        // when the activations are float32.
        let tol = tolerance(kind).max(tolerance(a.kind()));
        let e = rel_err(a, r);
        let Case { b, t, c, l } = case;
        assert!(
            e <= tol,
            "{label} {kind:?} params {param_kind:?} D={with_d} gate={with_gate} B={b} T={t} C={c} L={l}: \
             {name} error {e:.3e} > {tol:.1e}"
        );
    }
}

fn kernel(u: &Tensor, k: &Tensor, d: Option<&Tensor>, g: Option<&Tensor>) -> Tensor {
    cuda_ext::long_conv(u, k, d, g).expect("kernel")
}

#[test]
#[ignore]
fn gpu_long_conv_matches_float64_reference() {
    gpu();
    tch::manual_seed(0);
    for kind in [Kind::Float, Kind::BFloat16] {
        for &case in CASES {
            for (with_d, with_gate) in [(true, true), (true, false), (false, true), (false, false)] {
                check("cuda_ext::long_conv", case, kind, Kind::Float, with_d, with_gate, &kernel);
            }
        }
    }
}

/// A bfloat16 filter and skip (the kernel reads them as float32 and returns their gradients in bfloat16).
#[test]
#[ignore]
fn gpu_long_conv_bfloat16_filter() {
    gpu();
    tch::manual_seed(1);
    for kind in [Kind::Float, Kind::BFloat16] {
        for case in [CASES[3], CASES[6]] {
            check("bf16 filter", case, kind, Kind::BFloat16, true, true, &kernel);
        }
    }
}

/// `long_conv_gated` / `long_conv` with `KernelPath::Auto` reach the kernel for CUDA float32/bfloat16 tensors,
/// including a gate that is a strided slice of a projection (Hyena's) and mixed dtypes (autocast); give the
/// reference's values; train through `backward()`. `Reference` and float64 do not call the kernel.
#[test]
#[ignore]
fn gpu_long_conv_dispatch() {
    let dev = gpu();
    tch::manual_seed(2);
    let case = Case { b: 2, t: 300, c: 24, l: 320 };
    for kind in [Kind::Float, Kind::BFloat16] {
        let before = cuda_ext::long_conv_calls().unwrap();
        check("dispatch gated", case, kind, Kind::Float, true, true, &|u, k, d, g| {
            // u and the gate as Hyena slices them out of one projection: channels contiguous, rows 3C apart
            let wide = Tensor::cat(&[g.unwrap(), u, g.unwrap()], 2); // [B, T, 3C]
            let (us, gs) = (wide.narrow(2, case.c, case.c), wide.narrow(2, 2 * case.c, case.c));
            assert!(!us.is_contiguous() && !gs.is_contiguous());
            long_conv_gated(&us, k, d, &gs, KernelPath::Auto)
        });
        check("dispatch ungated", case, kind, Kind::Float, true, false, &|u, k, d, _| {
            long_conv(u, k, d, KernelPath::Auto)
        });
        assert_eq!(cuda_ext::long_conv_calls().unwrap(), before + 2, "Auto must call the kernel");
    }
    // Mixed dtypes (bf16 u, float32 gate, as under autocast): the kernel runs in float32.
    let before = cuda_ext::long_conv_calls().unwrap();
    let x = inputs(case, Kind::BFloat16, Kind::Float, dev);
    let y = long_conv_gated(&x.u, &x.k, Some(&x.d), &x.gate.to_kind(Kind::Float), KernelPath::Auto);
    assert_eq!(y.kind(), Kind::Float);
    assert_eq!(cuda_ext::long_conv_calls().unwrap(), before + 1, "mixed dtypes must call the kernel");
    let before = cuda_ext::long_conv_calls().unwrap();
    let _ = long_conv_gated(&x.u, &x.k, Some(&x.d), &x.gate, KernelPath::Reference);
    let d64 = |t: &Tensor| t.to_kind(Kind::Double);
    let _ = long_conv_gated(&d64(&x.u), &d64(&x.k), None, &d64(&x.gate), KernelPath::Auto);
    assert_eq!(cuda_ext::long_conv_calls().unwrap(), before, "Reference and float64 must not call the kernel");

    // Inference (no gradients): nothing is saved, the values are the same.
    let x = inputs(case, Kind::Float, Kind::Float, dev);
    let with_grad = long_conv_gated(&x.u, &x.k, Some(&x.d), &x.gate, KernelPath::Auto);
    let without = tch::no_grad(|| long_conv_gated(&x.u, &x.k, Some(&x.d), &x.gate, KernelPath::Auto));
    assert!(rel_err(&with_grad, &without) < 1e-6);

    // A few steps of gradient descent on the filter through `backward()`, as training does.
    let mut k = x.k.detach().set_requires_grad(true);
    let target = Tensor::randn([case.b, case.t, case.c], (Kind::Float, dev));
    let mut losses = Vec::new();
    for _ in 0..5 {
        let y = long_conv_gated(&x.u, &k, Some(&x.d), &x.gate, KernelPath::Auto);
        let loss = (y - &target).square().mean(Kind::Float);
        loss.backward();
        losses.push(loss.double_value(&[]));
        tch::no_grad(|| {
            let step = k.grad() * 0.5;
            k -= step;
        });
        let _ = k.grad().zero_();
    }
    assert!(losses[4] < losses[0], "loss must fall: {losses:?}");
}

/// Bad inputs give errors naming the argument, never a CUDA fault.
#[test]
#[ignore]
fn gpu_long_conv_bad_inputs() {
    let dev = gpu();
    let f = (Kind::Float, dev);
    let u = Tensor::randn([2, 8, 6], f);
    let k = Tensor::randn([6, 8], f);
    let arg = |r: Result<Tensor, CudaKernelError>| match r {
        Err(CudaKernelError::BadArgument { arg, .. }) => arg,
        Err(e) => panic!("expected a bad-argument error, got {e}"),
        Ok(_) => panic!("expected an error"),
    };
    assert_eq!(arg(cuda_ext::long_conv(&u.to_device(Device::Cpu), &k, None, None)), "u");
    assert_eq!(arg(cuda_ext::long_conv(&u.to_kind(Kind::Double), &k, None, None)), "u");
    assert_eq!(arg(cuda_ext::long_conv(&u.transpose(1, 2), &k, None, None)), "u");
    assert_eq!(arg(cuda_ext::long_conv(&u, &Tensor::randn([6, 7], f), None, None)), "k");
    assert_eq!(arg(cuda_ext::long_conv(&u, &Tensor::randn([5, 8], f), None, None)), "k");
    assert_eq!(arg(cuda_ext::long_conv(&u, &k.to_device(Device::Cpu), None, None)), "k");
    assert_eq!(arg(cuda_ext::long_conv(&u, &k, Some(&Tensor::randn([5], f)), None)), "D");
    assert_eq!(arg(cuda_ext::long_conv(&u, &k, None, Some(&u.to_kind(Kind::BFloat16)))), "gate");
    assert_eq!(arg(cuda_ext::long_conv(&u, &k, None, Some(&Tensor::randn([2, 8, 5], f)))), "gate");
    // The device is still healthy afterwards.
    let _ = cuda_ext::long_conv(&u, &k, None, Some(&u)).unwrap();
    cuda_ext::synchronize().unwrap();
}
