use super::{gpu, rel_err};
use kernels::cuda_ext::{self, CudaKernelError};
use kernels::KernelPath;
use tch::{Device, Kind, Tensor};

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
/// lanes idle; N <= 4, <= 16 and <= 64 take the three kernel shapes), and training-like shapes. The staging
/// (`stage_chunk`) copies 16-byte words only for whole, aligned channel tiles (128 channels in the two-pass
/// passes, D a multiple of 8): D 264 has two such tiles and a partial third, T 300 a short last chunk.
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
    ScanCase { b: 2, t: 300, d: 264, n: 16 },
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
    // Autocast's mix: x, B, C in bfloat16, dt, A, D, h0 in float32. The kernel runs in bfloat16 (dt rounded
    // to it), reads A, D, h0 as float32, and y comes back in bfloat16; against float64 on the same rounded
    // inputs, within the bfloat16 tolerance.
    let before = cuda_ext::selective_scan_calls().unwrap();
    let v = scan_inputs(case, Kind::Float, dev);
    let bf = |t: &Tensor| t.to_kind(Kind::BFloat16);
    let (y, h) = selective_scan(
        &bf(&v[0]),
        &v[1],
        &v[2],
        &bf(&v[3]),
        &bf(&v[4]),
        Some(&v[5]),
        Some(&v[6]),
        16,
        KernelPath::Auto,
    );
    assert_eq!(cuda_ext::selective_scan_calls().unwrap(), before + 1, "autocast's mix must call the kernel");
    assert_eq!((y.kind(), h.kind()), (Kind::BFloat16, Kind::BFloat16));
    let w: Vec<Tensor> = [bf(&v[0]), bf(&v[1]), v[2].shallow_clone(), bf(&v[3]), bf(&v[4]), v[5].shallow_clone()]
        .iter()
        .chain([&v[6]])
        .map(|t| t.to_kind(Kind::Double))
        .collect();
    let (yr, hr) =
        selective_scan(&w[0], &w[1], &w[2], &w[3], &w[4], Some(&w[5]), Some(&w[6]), 16, KernelPath::Reference);
    let tol = scan_tolerance(Kind::BFloat16);
    for (name, a, r) in [("y", &y, &yr), ("h_T", &h, &hr)] {
        let e = rel_err(a, r);
        assert!(e <= tol, "autocast mix: {name} error {e:.3e} > {tol:.1e}");
    }

    let before = cuda_ext::selective_scan_calls().unwrap();
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
