//! GPU tests of our CUDA kernels against their plain-tch references in float64.
//!
//! Every test is `#[ignore]` and named `gpu_*`: run them on a GPU machine with
//! `make test-gpu` (cargo test --release -p kernels --features cuda --test gpu -- --ignored gpu_), or from
//! a bundle with scripts/gpu-run.sh. They fail (never skip) when there is no GPU or the library does not
//! load: a GPU test that silently used the reference would prove nothing.
//!
//! Method (as for every kernel here): fresh random inputs (never zeros), rounded to the tested dtype; the
//! reference runs in float64 on those same rounded values; the output gradient is random too, and the
//! kernel's gradients come from autograd through its C++ autograd function. Tolerance, per dtype, on
//! `max |kernel - reference| <= tol * max(max |reference|, 1)`:
//! - float32: 1e-4 (float32 arithmetic; the only difference is summation order);
//! - bfloat16: 1.6e-2 (outputs and gradients are rounded to bfloat16 once, 2^-9 relative, from float32
//!   arithmetic; the margin covers the scale of the largest element against smaller ones).

use kernels::cuda_ext::{self, CudaKernelError};
use kernels::short_conv::{short_conv, Activation};
use kernels::KernelPath;
use tch::{Device, Kind, Tensor};

fn gpu() -> Device {
    let loaded = kernels::cuda::load_torch_cuda();
    assert!(tch::Cuda::is_available(), "no CUDA device visible to libtorch: {loaded:?}");
    if let Err(e) = cuda_ext::extension() {
        panic!("the kernel library did not load: {e}");
    }
    Device::Cuda(0)
}

fn tolerance(kind: Kind) -> f64 {
    match kind {
        Kind::Float => 1e-4,
        Kind::BFloat16 => 1.6e-2,
        other => panic!("no tolerance for {other:?}"),
    }
}

/// max |a - r| / max(max |r|, 1), in float64.
fn rel_err(a: &Tensor, r: &Tensor) -> f64 {
    let a = a.to_kind(Kind::Double);
    let r = r.to_kind(Kind::Double);
    assert_eq!(a.size(), r.size());
    let scale = r.abs().max().double_value(&[]).max(1.0);
    (&a - &r).abs().max().double_value(&[]) / scale
}

struct Case {
    b: i64,
    t: i64,
    c: i64,
    k: i64,
}

/// Awkward shapes: T = 1, T not a multiple of any chunk or unroll, odd channel counts (scalar path), channel
/// counts that are multiples of 8 (vector path) but not of a warp's width, k from 1 to 4, and one training
/// shape.
const CASES: &[Case] = &[
    Case { b: 1, t: 1, c: 1, k: 1 },
    Case { b: 2, t: 1, c: 5, k: 4 },
    Case { b: 3, t: 7, c: 3, k: 2 },
    Case { b: 2, t: 37, c: 13, k: 3 },
    Case { b: 2, t: 100, c: 24, k: 4 },
    Case { b: 1, t: 257, c: 72, k: 4 },
    Case { b: 4, t: 1000, c: 136, k: 3 },
    Case { b: 1, t: 5, c: 16, k: 1 },
    Case { b: 2, t: 4099, c: 10, k: 2 },
    Case { b: 2, t: 2049, c: 1024, k: 4 },
];

/// Random x, w, bias, output gradient, rounded to `kind`, on the GPU.
fn inputs(case: &Case, kind: Kind, dev: Device) -> (Tensor, Tensor, Tensor, Tensor) {
    let opts = (Kind::Float, dev);
    let x = Tensor::randn([case.b, case.t, case.c], opts).to_kind(kind);
    let w = (Tensor::randn([case.c, case.k], opts) / (case.k as f64).sqrt()).to_kind(kind);
    let bias = Tensor::randn([case.c], opts).to_kind(kind);
    let gy = Tensor::randn([case.b, case.t, case.c], opts).to_kind(kind);
    (x, w, bias, gy)
}

/// Compares the kernel (through `f`) with the float64 reference: output and every gradient.
fn check(
    label: &str,
    case: &Case,
    kind: Kind,
    act: Activation,
    with_bias: bool,
    f: &dyn Fn(&Tensor, &Tensor, Option<&Tensor>) -> Tensor,
) {
    let dev = Device::Cuda(0);
    let (x, w, bias, gy) = inputs(case, kind, dev);
    let leaf = |t: &Tensor| t.detach().set_requires_grad(true);
    let (xk, wk, bk) = (leaf(&x), leaf(&w), leaf(&bias));
    let y = f(&xk, &wk, with_bias.then_some(&bk));
    assert_eq!(y.kind(), kind, "{label}: output dtype");
    assert!(y.requires_grad(), "{label}: the output must carry gradients");
    let mut ins = vec![&xk, &wk];
    if with_bias {
        ins.push(&bk);
    }
    let grads = cuda_ext::grad(&[&y], &[&gy], &ins).expect("kernel backward");

    let f64leaf = |t: &Tensor| t.detach().to_kind(Kind::Double).set_requires_grad(true);
    let (xr, wr, br) = (f64leaf(&x), f64leaf(&w), f64leaf(&bias));
    let yr = short_conv(&xr, &wr, with_bias.then_some(&br), act, KernelPath::Reference);
    let mut rins = vec![&xr, &wr];
    if with_bias {
        rins.push(&br);
    }
    let rgrads = Tensor::run_backward(&[(&yr * gy.to_kind(Kind::Double)).sum(Kind::Double)], &rins, false, false);

    let tol = tolerance(kind);
    let names = ["y", "dx", "dw", "dbias"];
    let mut got = vec![y];
    got.extend(grads);
    let mut want = vec![yr.detach()];
    want.extend(rgrads);
    for ((name, a), r) in names.iter().zip(&got).zip(&want) {
        assert_eq!(a.kind(), kind, "{label}: {name} dtype");
        let e = rel_err(a, r);
        assert!(
            e <= tol,
            "{label} {kind:?} {act:?} bias={with_bias} B={} T={} C={} k={}: {name} error {e:.3e} > {tol:.1e}",
            case.b,
            case.t,
            case.c,
            case.k
        );
    }
}

#[test]
#[ignore]
fn gpu_short_conv_matches_float64_reference() {
    gpu();
    tch::manual_seed(0);
    for kind in [Kind::Float, Kind::BFloat16] {
        for case in CASES {
            for act in [Activation::Identity, Activation::Silu] {
                for with_bias in [true, false] {
                    check("cuda_ext::short_conv", case, kind, act, with_bias, &|x, w, b| {
                        cuda_ext::short_conv(x, w, b, act).expect("kernel")
                    });
                }
            }
        }
    }
}

/// Any time chunk per thread gives the same answer (only the launch shape changes), including chunks
/// shorter than the halo of k-1 steps.
#[test]
#[ignore]
fn gpu_short_conv_any_chunk() {
    gpu();
    tch::manual_seed(1);
    for chunk in [1, 2, 3, 7, 64, 300] {
        cuda_ext::set_short_conv_chunk(chunk).unwrap();
        for kind in [Kind::Float, Kind::BFloat16] {
            for case in [&CASES[3], &CASES[6], &CASES[9]] {
                check(&format!("chunk {chunk}"), case, kind, Activation::Silu, true, &|x, w, b| {
                    cuda_ext::short_conv(x, w, b, Activation::Silu).expect("kernel")
                });
            }
        }
    }
    cuda_ext::set_short_conv_chunk(0).unwrap();
}

/// A contiguous x at an address that is not 16-byte aligned takes the scalar path and is still right.
#[test]
#[ignore]
fn gpu_short_conv_misaligned_storage() {
    let dev = gpu();
    tch::manual_seed(2);
    for kind in [Kind::Float, Kind::BFloat16] {
        let case = Case { b: 2, t: 33, c: 64, k: 4 };
        check("misaligned", &case, kind, Activation::Silu, true, &|x, w, b| {
            let n = x.numel() as i64;
            let big = Tensor::zeros([n + 1], (kind, dev));
            // offset by one element; the in-place copy keeps x in the autograd graph
            let mut shifted = big.narrow(0, 1, n).view([case.b, case.t, case.c]);
            shifted.copy_(x);
            assert!(shifted.is_contiguous() && shifted.requires_grad());
            cuda_ext::short_conv(&shifted, w, b, Activation::Silu).expect("kernel")
        });
    }
}

/// `short_conv(.., KernelPath::Auto)` reaches the kernel for CUDA float32/bfloat16 tensors, gives the same
/// values, and trains (gradients through `backward()`); `Reference` does not call it; float64 falls back.
#[test]
#[ignore]
fn gpu_short_conv_dispatch() {
    let dev = gpu();
    tch::manual_seed(3);
    let case = Case { b: 2, t: 50, c: 24, k: 4 };
    for kind in [Kind::Float, Kind::BFloat16] {
        let before = cuda_ext::short_conv_calls().unwrap();
        check("dispatch", &case, kind, Activation::Silu, true, &|x, w, b| {
            short_conv(x, w, b, Activation::Silu, KernelPath::Auto)
        });
        assert_eq!(cuda_ext::short_conv_calls().unwrap(), before + 1, "Auto must call the kernel");
    }
    let before = cuda_ext::short_conv_calls().unwrap();
    let (x, w, bias, _) = inputs(&case, Kind::Float, dev);
    let _ = short_conv(&x, &w, Some(&bias), Activation::Silu, KernelPath::Reference);
    let _ = short_conv(&x.to_kind(Kind::Double), &w.to_kind(Kind::Double), None, Activation::Silu, KernelPath::Auto);
    assert_eq!(cuda_ext::short_conv_calls().unwrap(), before, "Reference and float64 must not call the kernel");

    // A few steps of gradient descent through `backward()`, as training does.
    let mut w = w.detach().set_requires_grad(true);
    let target = Tensor::randn([case.b, case.t, case.c], (Kind::Float, dev));
    let mut losses = Vec::new();
    for _ in 0..5 {
        let y = short_conv(&x, &w, None, Activation::Silu, KernelPath::Auto);
        let loss = (y - &target).square().mean(Kind::Float);
        loss.backward();
        losses.push(loss.double_value(&[]));
        tch::no_grad(|| {
            let step = w.grad() * 0.5;
            w -= step;
        });
        let _ = w.grad().zero_();
    }
    assert!(losses[4] < losses[0], "loss must fall: {losses:?}");
}

/// Bad inputs give errors naming the argument, never a CUDA fault.
#[test]
#[ignore]
fn gpu_short_conv_bad_inputs() {
    let dev = gpu();
    let x = Tensor::randn([2, 8, 6], (Kind::Float, dev));
    let w = Tensor::randn([6, 3], (Kind::Float, dev));
    let arg = |r: Result<Tensor, CudaKernelError>| match r {
        Err(CudaKernelError::BadArgument { arg, .. }) => arg,
        Err(e) => panic!("expected a bad-argument error, got {e}"),
        Ok(_) => panic!("expected an error"),
    };
    let id = Activation::Identity;
    assert_eq!(arg(cuda_ext::short_conv(&x.to_device(Device::Cpu), &w, None, id)), "x");
    assert_eq!(arg(cuda_ext::short_conv(&x.to_kind(Kind::Double), &w, None, id)), "x");
    assert_eq!(arg(cuda_ext::short_conv(&x.to_kind(Kind::Half), &w.to_kind(Kind::Half), None, id)), "x");
    assert_eq!(arg(cuda_ext::short_conv(&x.transpose(0, 1), &w, None, id)), "x");
    assert_eq!(arg(cuda_ext::short_conv(&x, &Tensor::randn([7, 3], (Kind::Float, dev)), None, id)), "w");
    assert_eq!(arg(cuda_ext::short_conv(&x, &Tensor::randn([6, 5], (Kind::Float, dev)), None, id)), "w");
    assert_eq!(arg(cuda_ext::short_conv(&x, &w.to_device(Device::Cpu), None, id)), "w");
    assert_eq!(arg(cuda_ext::short_conv(&x, &w.to_kind(Kind::BFloat16), None, id)), "w");
    let b = Tensor::randn([5], (Kind::Float, dev));
    assert_eq!(arg(cuda_ext::short_conv(&x, &w, Some(&b), id)), "bias");
    // The device is still healthy afterwards.
    let _ = cuda_ext::short_conv(&x, &w, None, id).unwrap();
    cuda_ext::synchronize().unwrap();
}

/// The timing helper measures something plausible.
#[test]
#[ignore]
fn gpu_timer() {
    let dev = gpu();
    let a = Tensor::randn([4096, 4096], (Kind::Float, dev));
    let timer = cuda_ext::CudaTimer::new().unwrap();
    timer.start().unwrap();
    let _ = a.matmul(&a);
    timer.stop().unwrap();
    let ms = timer.elapsed_ms().unwrap();
    assert!(ms > 0.0 && ms < 1000.0, "{ms} ms");
}

// ---------------------------------------------------------------------------------------------------------
// Mamba's selective scan (csrc/selective_scan.*).
//
// Tolerances on `max |kernel - reference| / max(max |reference|, 1)` per dtype: float32 2e-4 (float32
// arithmetic over up to a few thousand steps, and sums over B*T of float32 terms for dA, dD); bfloat16
// 1.6e-2 (every output and gradient is rounded to bfloat16 once, 2^-9 relative, from float32 arithmetic;
// the margin covers the scale of the largest element against smaller ones).

fn scan_tolerance(kind: Kind) -> f64 {
    match kind {
        Kind::Float => 2e-4,
        Kind::BFloat16 => 1.6e-2,
        other => panic!("no tolerance for {other:?}"),
    }
}

#[derive(Clone, Copy, Debug)]
struct ScanCase {
    b: i64,
    t: i64,
    d: i64,
    n: i64,
}

/// Awkward shapes: T = 1, T not a multiple of the 8-step sub-chunk or the 32-step checkpoint interval,
/// T exactly one chunk, odd D that leaves most of a 256-thread block idle, N from 1 to 64 (odd N leaves
/// lanes idle; N <= 4, <= 16 and <= 64 take the three kernel shapes), and training-like shapes.
const SCAN_CASES: &[ScanCase] = &[
    ScanCase { b: 1, t: 1, d: 1, n: 1 },
    ScanCase { b: 2, t: 1, d: 3, n: 5 },
    ScanCase { b: 1, t: 7, d: 5, n: 3 },
    ScanCase { b: 2, t: 32, d: 6, n: 16 },
    ScanCase { b: 1, t: 70, d: 9, n: 17 },
    ScanCase { b: 2, t: 41, d: 7, n: 64 },
    ScanCase { b: 3, t: 100, d: 21, n: 4 },
    ScanCase { b: 1, t: 257, d: 40, n: 16 },
    ScanCase { b: 2, t: 1000, d: 64, n: 64 },
    ScanCase { b: 2, t: 2049, d: 130, n: 16 },
];

/// Fresh random x, dt (> 0, as after softplus), A (< 0), B, C, D, h0 and the output gradients for y and
/// h_T, rounded to `kind`, on the GPU.
fn scan_inputs(case: ScanCase, kind: Kind, dev: Device) -> Vec<Tensor> {
    let opts = (Kind::Float, dev);
    let ScanCase { b, t, d, n } = case;
    let v = [
        Tensor::randn([b, t, d], opts),
        (Tensor::randn([b, t, d], opts) - 1.0).softplus(),
        -Tensor::randn([d, n], opts).exp(),
        Tensor::randn([b, t, n], opts),
        Tensor::randn([b, t, n], opts),
        Tensor::randn([d], opts),
        Tensor::randn([b, d, n], opts),
        Tensor::randn([b, t, d], opts),
        Tensor::randn([b, d, n], opts),
    ];
    v.into_iter().map(|t| t.to_kind(kind)).collect()
}

const SCAN_NAMES: [&str; 7] = ["dx", "ddt", "dA", "dB", "dC", "dD", "dh0"];

type ScanFn<'a> = &'a dyn Fn(&[Tensor], Option<&Tensor>, Option<&Tensor>) -> (Tensor, Tensor);

/// Compares the kernel (through `f`) with the float64 reference: y, h_T and the gradient of every input.
fn check_scan(label: &str, case: ScanCase, kind: Kind, with_d: bool, with_h0: bool, f: ScanFn) {
    let dev = Device::Cuda(0);
    let v = scan_inputs(case, kind, dev);
    let (gy, ght) = (&v[7], &v[8]);
    let leaves: Vec<Tensor> = v[..7].iter().map(|t| t.detach().set_requires_grad(true)).collect();
    let (y, h) = f(&leaves[..5], with_d.then_some(&leaves[5]), with_h0.then_some(&leaves[6]));
    assert_eq!((y.kind(), h.kind()), (kind, kind), "{label}: output dtypes");
    assert!(y.requires_grad() && h.requires_grad(), "{label}: the outputs must carry gradients");
    let mut idx: Vec<usize> = (0..5).collect();
    if with_d {
        idx.push(5);
    }
    if with_h0 {
        idx.push(6);
    }
    let ins: Vec<&Tensor> = idx.iter().map(|&i| &leaves[i]).collect();
    let grads = cuda_ext::grad(&[&y, &h], &[gy, ght], &ins).expect("kernel backward");

    let r: Vec<Tensor> = v[..7].iter().map(|t| t.detach().to_kind(Kind::Double).set_requires_grad(true)).collect();
    let (yr, hr) = kernels::selective_scan::selective_scan(
        &r[0],
        &r[1],
        &r[2],
        &r[3],
        &r[4],
        with_d.then_some(&r[5]),
        with_h0.then_some(&r[6]),
        16,
        KernelPath::Reference,
    );
    let loss = (&yr * gy.to_kind(Kind::Double)).sum(Kind::Double) + (&hr * ght.to_kind(Kind::Double)).sum(Kind::Double);
    let rins: Vec<&Tensor> = idx.iter().map(|&i| &r[i]).collect();
    let rgrads = Tensor::run_backward(&[loss], &rins, false, false);

    let tol = scan_tolerance(kind);
    let mut report = Vec::new();
    let mut worst = 0.0f64;
    let named = [("y", &y, &yr), ("h_T", &h, &hr)];
    let grads_named = idx.iter().zip(grads.iter().zip(&rgrads)).map(|(&i, (a, r))| (SCAN_NAMES[i], a, r));
    for (name, a, r) in named.into_iter().chain(grads_named) {
        assert_eq!(a.kind(), kind, "{label}: {name} dtype");
        let e = rel_err(a, &r.detach());
        worst = worst.max(e);
        report.push(format!("{name} {e:.1e}"));
        assert!(
            e <= tol,
            "{label} {kind:?} D={with_d} h0={with_h0} {case:?}: {name} error {e:.3e} > {tol:.1e} ({})",
            report.join(", ")
        );
    }
    println!("{label} {kind:?} {case:?} D={with_d} h0={with_h0}: worst {worst:.2e} ({})", report.join(", "));
}

#[test]
#[ignore]
fn gpu_selective_scan_matches_float64_reference() {
    gpu();
    tch::manual_seed(10);
    for kind in [Kind::Float, Kind::BFloat16] {
        for (i, &case) in SCAN_CASES.iter().enumerate() {
            // every case with D and h0, and every other case without either (both optional paths)
            for (with_d, with_h0) in [(true, true), (i % 2 == 0, false)] {
                check_scan("cuda_ext::selective_scan", case, kind, with_d, with_h0, &|v, d, h0| {
                    cuda_ext::selective_scan(&v[0], &v[1], &v[2], &v[3], &v[4], d, h0).expect("kernel")
                });
            }
        }
    }
}

/// `selective_scan(.., KernelPath::Auto)` reaches the kernel for CUDA float32/bfloat16 tensors, also with
/// B and C sliced out of one projection (non-contiguous, as the Mamba mixer passes them), gives the same
/// values, and trains through `backward()`; `Reference`, float64 and N > 64 do not call it.
#[test]
#[ignore]
fn gpu_selective_scan_dispatch() {
    use kernels::selective_scan::selective_scan;
    let dev = gpu();
    tch::manual_seed(11);
    let case = ScanCase { b: 2, t: 45, d: 24, n: 16 };
    for kind in [Kind::Float, Kind::BFloat16] {
        let before = cuda_ext::selective_scan_calls().unwrap();
        check_scan("dispatch", case, kind, true, true, &|v, d, h0| {
            // B and C as views into one [B, T, 2N] tensor: the kernel path makes them contiguous
            let bc = Tensor::cat(&[&v[3], &v[4]], -1);
            let (b, c) = (bc.narrow(-1, 0, case.n), bc.narrow(-1, case.n, case.n));
            assert!(!b.is_contiguous());
            selective_scan(&v[0], &v[1], &v[2], &b, &c, d, h0, 16, KernelPath::Auto)
        });
        assert_eq!(cuda_ext::selective_scan_calls().unwrap(), before + 1, "Auto must call the kernel");
    }
    let before = cuda_ext::selective_scan_calls().unwrap();
    let v = scan_inputs(case, Kind::Float, dev);
    let _ = selective_scan(&v[0], &v[1], &v[2], &v[3], &v[4], Some(&v[5]), None, 16, KernelPath::Reference);
    let w: Vec<Tensor> = v.iter().map(|t| t.to_kind(Kind::Double)).collect();
    let _ = selective_scan(&w[0], &w[1], &w[2], &w[3], &w[4], Some(&w[5]), None, 16, KernelPath::Auto);
    let big = ScanCase { n: 65, ..case };
    let u = scan_inputs(big, Kind::Float, dev);
    let _ = selective_scan(&u[0], &u[1], &u[2], &u[3], &u[4], None, None, 16, KernelPath::Auto);
    assert_eq!(
        cuda_ext::selective_scan_calls().unwrap(),
        before,
        "Reference, float64 and N = 65 must not call the kernel"
    );

    // A few steps of gradient descent on A_log through `backward()`, as training does.
    let mut a_log = (-&v[2]).log().detach().set_requires_grad(true);
    let target = Tensor::randn([case.b, case.t, case.d], (Kind::Float, dev));
    let mut losses = Vec::new();
    for _ in 0..5 {
        let a = -a_log.exp();
        let (y, _) = selective_scan(&v[0], &v[1], &a, &v[3], &v[4], Some(&v[5]), None, 16, KernelPath::Auto);
        let loss = (y - &target).square().mean(Kind::Float);
        loss.backward();
        losses.push(loss.double_value(&[]));
        tch::no_grad(|| {
            let step = a_log.grad() * 0.5;
            a_log -= step;
        });
        let _ = a_log.grad().zero_();
    }
    assert!(losses[4] < losses[0], "loss must fall: {losses:?}");
}

/// Bad inputs give errors naming the argument, never a CUDA fault.
#[test]
#[ignore]
fn gpu_selective_scan_bad_inputs() {
    let dev = gpu();
    let v = scan_inputs(ScanCase { b: 2, t: 8, d: 6, n: 4 }, Kind::Float, dev);
    let arg = |r: Result<(Tensor, Tensor), CudaKernelError>| match r {
        Err(CudaKernelError::BadArgument { arg, .. }) => arg,
        Err(e) => panic!("expected a bad-argument error, got {e}"),
        Ok(_) => panic!("expected an error"),
    };
    let s = |x: &Tensor, dt: &Tensor, a: &Tensor, b: &Tensor, c: &Tensor, d: Option<&Tensor>, h: Option<&Tensor>| {
        cuda_ext::selective_scan(x, dt, a, b, c, d, h)
    };
    let (x, dt, a, b, c, d, h0) = (&v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6]);
    assert_eq!(arg(s(&x.to_device(Device::Cpu), dt, a, b, c, None, None)), "x");
    assert_eq!(arg(s(&x.to_kind(Kind::Double), dt, a, b, c, None, None)), "x");
    assert_eq!(arg(s(&x.transpose(0, 1), dt, a, b, c, None, None)), "x");
    assert_eq!(arg(s(x, &dt.narrow(1, 0, 7), a, b, c, None, None)), "dt");
    assert_eq!(arg(s(x, dt, &a.to_kind(Kind::BFloat16), b, c, None, None)), "A");
    assert_eq!(arg(s(x, dt, &Tensor::randn([6, 65], (Kind::Float, dev)), b, c, None, None)), "A");
    assert_eq!(arg(s(x, dt, a, &b.transpose(1, 2).contiguous().transpose(1, 2), c, None, None)), "B");
    assert_eq!(arg(s(x, dt, a, b, &c.to_device(Device::Cpu), None, None)), "C");
    assert_eq!(arg(s(x, dt, a, b, c, Some(&d.narrow(0, 0, 5)), None)), "D");
    assert_eq!(arg(s(x, dt, a, b, c, Some(d), Some(&h0.transpose(1, 2)))), "h0");
    // The device is still healthy afterwards.
    let _ = s(x, dt, a, b, c, Some(d), Some(h0)).unwrap();
    cuda_ext::synchronize().unwrap();
}

/// Without gradients (inference) the forward pass skips its checkpoints and gives the same outputs bit for
/// bit.
#[test]
#[ignore]
fn gpu_selective_scan_inference_matches_training_forward() {
    let dev = gpu();
    tch::manual_seed(12);
    for kind in [Kind::Float, Kind::BFloat16] {
        let v = scan_inputs(ScanCase { b: 2, t: 300, d: 40, n: 16 }, kind, dev);
        let leaves: Vec<Tensor> = v[..7].iter().map(|t| t.detach().set_requires_grad(true)).collect();
        let s = |v: &[Tensor]| cuda_ext::selective_scan(&v[0], &v[1], &v[2], &v[3], &v[4], Some(&v[5]), Some(&v[6]));
        let (y, h) = s(&leaves).unwrap();
        let (yi, hi) = tch::no_grad(|| s(&v[..7]).unwrap());
        assert!(!yi.requires_grad());
        assert!(y.detach().equal(&yi) && h.detach().equal(&hi), "{kind:?}: inference and training forward differ");
    }
}

// ---------------------------------------------------------------------------------------------------------
// Chunked linear attention with a scalar decay (csrc/chunk_linear.*).

use kernels::chunk_linear::{chunk_linear, Decay};

/// Tolerances on `max |kernel - reference| / max(max |reference|, 1)`: float32 2e-4 (float32 arithmetic
/// over sums of up to 64 + Dk terms per chunk plus the state pass; the host emulation measured <= 2e-6);
/// bfloat16 1.6e-2 (each output and gradient rounded to bfloat16 once from float32). The log-decay gradient
/// in float32 gets 1e-3: it is formed as sum(q . dq - k . dk), a difference of terms much larger than itself
/// under strong decay (the emulation measured 5.6e-5 at decay e^-30 per step).
fn cl_tolerance(kind: Kind, name: &str) -> f64 {
    match (kind, name) {
        (Kind::Float, "dg") => 1e-3,
        (Kind::Float, _) => 2e-4,
        (Kind::BFloat16, _) => 1.6e-2,
        (other, _) => panic!("no tolerance for {other:?}"),
    }
}

#[derive(Clone, Copy, Debug)]
struct ClCase {
    b: i64,
    h: i64,
    t: i64,
    dk: i64,
    dv: i64,
    /// 0: no decay; otherwise log-decays uniform in [-strength, -1e-3].
    strength: f64,
}

/// T = 1, T below / at / past one chunk of 64 and not a multiple of it, small and odd head dims, Dk != Dv,
/// no decay, mild and strong decay, and one training-sized shape.
const CL_CASES: &[ClCase] = &[
    ClCase { b: 1, h: 1, t: 1, dk: 1, dv: 1, strength: 0.5 },
    ClCase { b: 2, h: 3, t: 1, dk: 5, dv: 3, strength: 0.0 },
    ClCase { b: 1, h: 2, t: 7, dk: 3, dv: 5, strength: 0.5 },
    ClCase { b: 2, h: 2, t: 64, dk: 16, dv: 16, strength: 30.0 },
    ClCase { b: 1, h: 3, t: 65, dk: 8, dv: 6, strength: 0.5 },
    ClCase { b: 2, h: 1, t: 130, dk: 33, dv: 17, strength: 0.0 },
    ClCase { b: 1, h: 2, t: 200, dk: 64, dv: 64, strength: 0.1 },
    ClCase { b: 2, h: 2, t: 257, dk: 128, dv: 128, strength: 0.05 },
    ClCase { b: 1, h: 2, t: 100, dk: 96, dv: 128, strength: 30.0 },
    ClCase { b: 2, h: 4, t: 1000, dk: 64, dv: 128, strength: 0.02 },
];

/// q, k, v, log-decays (None without decay), s0, and the output gradients (of o and of S_T), all rounded to
/// `kind`, on the GPU. q and k are scaled by Dk^-1/4 each so that scores stay O(1).
fn cl_inputs(c: ClCase, kind: Kind, dev: Device) -> (Vec<Tensor>, Option<Tensor>, Tensor, Tensor) {
    let opts = (Kind::Float, dev);
    let s = (c.dk as f64).powf(-0.25);
    let qkv = vec![
        (Tensor::randn([c.b, c.h, c.t, c.dk], opts) * s).to_kind(kind),
        (Tensor::randn([c.b, c.h, c.t, c.dk], opts) * s).to_kind(kind),
        Tensor::randn([c.b, c.h, c.t, c.dv], opts).to_kind(kind),
        Tensor::randn([c.b, c.h, c.dk, c.dv], opts).to_kind(kind),
    ];
    let g = (c.strength > 0.0).then(|| (-(Tensor::rand([c.b, c.h, c.t], opts) * c.strength + 1e-3)).to_kind(kind));
    let go = Tensor::randn([c.b, c.h, c.t, c.dv], opts).to_kind(kind);
    let gs = Tensor::randn([c.b, c.h, c.dk, c.dv], opts).to_kind(kind);
    (qkv, g, go, gs)
}

/// Output, final state and the gradients of q, k, v, g, s0 of `f` against the float64 recurrence.
/// The implementation under test: (q, k, v, s0), the log-decays -> (o, S_T).
type ClFn<'a> = &'a dyn Fn(&[Tensor], Option<&Tensor>) -> (Tensor, Tensor);

fn check_chunk_linear(label: &str, c: ClCase, kind: Kind, f: ClFn) {
    let dev = Device::Cuda(0);
    let (qkv, g, go, gs) = cl_inputs(c, kind, dev);
    let leaf = |t: &Tensor| t.detach().set_requires_grad(true);
    let vars: Vec<Tensor> = qkv.iter().map(leaf).collect();
    let gv = g.as_ref().map(leaf);
    let (o, s) = f(&vars, gv.as_ref());
    assert_eq!(o.kind(), kind, "{label}: output dtype");
    assert!(o.requires_grad(), "{label}: the output must carry gradients");
    let mut ins: Vec<&Tensor> = vars.iter().collect();
    ins.extend(gv.as_ref());
    let grads = cuda_ext::grad(&[&o, &s], &[&go, &gs], &ins).expect("kernel backward");

    let f64leaf = |t: &Tensor| t.detach().to_kind(Kind::Double).set_requires_grad(true);
    let rv: Vec<Tensor> = qkv.iter().map(f64leaf).collect();
    let rg = g.as_ref().map(f64leaf);
    let decay = rg.as_ref().map_or(Decay::None, Decay::Scalar);
    let (or, sr) = chunk_linear(&rv[0], &rv[1], &rv[2], decay, Some(&rv[3]), 64, KernelPath::Reference);
    let loss = (&or * go.to_kind(Kind::Double)).sum(Kind::Double) + (&sr * gs.to_kind(Kind::Double)).sum(Kind::Double);
    let mut rins: Vec<&Tensor> = rv.iter().collect();
    rins.extend(rg.as_ref());
    let rgrads = Tensor::run_backward(&[loss], &rins, false, false);

    let names = ["o", "S_T", "dq", "dk", "dv", "ds0", "dg"];
    let mut got = vec![o.detach(), s.detach()];
    got.extend(grads);
    let mut want = vec![or.detach(), sr.detach()];
    want.extend(rgrads);
    let mut report = Vec::new();
    for ((name, a), r) in names.iter().zip(&got).zip(&want) {
        assert_eq!(a.kind(), kind, "{label}: {name} dtype");
        let e = rel_err(a, r);
        let tol = cl_tolerance(kind, name);
        assert!(e <= tol, "{label} {c:?} {kind:?}: {name} relative error {e:.3e} > {tol:.1e}");
        report.push(format!("{name} {e:.1e}"));
    }
    println!("{label} {c:?} {kind:?}: {}", report.join(", "));
}

#[test]
#[ignore]
fn gpu_chunk_linear_matches_float64_reference() {
    gpu();
    tch::manual_seed(11);
    for &c in CL_CASES {
        for kind in [Kind::Float, Kind::BFloat16] {
            check_chunk_linear("kernel", c, kind, &|v, g| {
                cuda_ext::chunk_linear(&v[0], &v[1], &v[2], g, Some(&v[3])).expect("kernel")
            });
        }
    }
}

/// `chunk_linear(.., KernelPath::Auto)` reaches the kernel for CUDA tensors with a scalar or no decay when
/// WORKBENCH_CHUNK_LINEAR_KERNEL=1 (gpu-run.sh sets it for the tests), also with mixed dtypes (bf16 q/k/v
/// with a float32 decay, as under autocast), and gives the reference's answer; per-key decays and
/// `KernelPath::Reference` do not reach it.
#[test]
#[ignore]
fn gpu_chunk_linear_dispatch() {
    gpu();
    assert!(
        cuda_ext::chunk_linear_enabled(),
        "set WORKBENCH_CHUNK_LINEAR_KERNEL=1 for this test (the kernel's temporary opt-in gate)"
    );
    tch::manual_seed(12);
    let c = ClCase { b: 2, h: 2, t: 70, dk: 8, dv: 12, strength: 0.3 };
    for (kind, gkind) in [(Kind::Float, Kind::Float), (Kind::BFloat16, Kind::BFloat16), (Kind::BFloat16, Kind::Float)] {
        let label = format!("Auto {kind:?} q/k/v, {gkind:?} decay");
        check_chunk_linear(&label, c, kind, &|v, g| {
            let before = cuda_ext::chunk_linear_calls().expect("library");
            let g = g.map(|g| g.to_kind(gkind));
            let (o, s) = chunk_linear(
                &v[0],
                &v[1],
                &v[2],
                g.as_ref().map_or(Decay::None, Decay::Scalar),
                Some(&v[3]),
                64,
                KernelPath::Auto,
            );
            assert_eq!(cuda_ext::chunk_linear_calls().expect("library"), before + 1, "{label}: kernel not reached");
            (o.to_kind(kind), s.to_kind(kind))
        });
    }
    let (qkv, _, _, _) = cl_inputs(c, Kind::Float, Device::Cuda(0));
    let before = cuda_ext::chunk_linear_calls().expect("library");
    let gk = Tensor::rand([c.b, c.h, c.t, c.dk], (Kind::Float, Device::Cuda(0))).neg();
    let _ = chunk_linear(&qkv[0], &qkv[1], &qkv[2], Decay::PerKey(&gk), None, 64, KernelPath::Auto);
    let _ = chunk_linear(&qkv[0], &qkv[1], &qkv[2], Decay::None, None, 64, KernelPath::Reference);
    assert_eq!(
        cuda_ext::chunk_linear_calls().expect("library"),
        before,
        "per-key decay or Reference reached the kernel"
    );
}

#[test]
#[ignore]
fn gpu_chunk_linear_bad_inputs() {
    let dev = gpu();
    let q = Tensor::randn([1, 2, 5, 4], (Kind::Float, dev));
    let v = Tensor::randn([1, 2, 5, 3], (Kind::Float, dev));
    let e = cuda_ext::chunk_linear(&q, &q, &q.to_kind(Kind::BFloat16), None, None).unwrap_err();
    assert!(matches!(e, CudaKernelError::BadArgument { arg: "v", .. }), "{e}");
    let e = cuda_ext::chunk_linear(&q, &q.transpose(2, 3), &v, None, None).unwrap_err();
    assert!(matches!(e, CudaKernelError::BadArgument { arg: "k", .. }), "{e}");
    let wide = Tensor::randn([1, 2, 5, 256], (Kind::Float, dev));
    let e = cuda_ext::chunk_linear(&wide, &wide, &v, None, None).unwrap_err();
    assert!(matches!(e, CudaKernelError::BadArgument { arg: "q", .. }), "{e}");
    let g = Tensor::zeros([1, 2, 4], (Kind::Float, dev));
    let e = cuda_ext::chunk_linear(&q, &q, &v, Some(&g), None).unwrap_err();
    assert!(e.to_string().contains("[B, H, T] = [1, 2, 5]"), "{e}");
}
