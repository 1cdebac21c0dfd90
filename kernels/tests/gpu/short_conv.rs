//! The short causal depthwise convolution (csrc/short_conv.*), and the CUDA timer.

use super::{gpu, rel_err};
use kernels::cuda_ext::{self, CudaKernelError};
use kernels::short_conv::{short_conv, Activation};
use kernels::KernelPath;
use tch::{Device, Kind, Tensor};

fn tolerance(kind: Kind) -> f64 {
    match kind {
        Kind::Float => 1e-4,
        Kind::BFloat16 => 1.6e-2,
        other => panic!("no tolerance for {other:?}"),
    }
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
