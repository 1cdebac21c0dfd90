use super::{gpu, rel_err};
use kernels::cuda_ext::{self, CudaKernelError};
use kernels::KernelPath;
use tch::{Device, Kind, Tensor};

// ---------------------------------------------------------------------------------------------------------
// Chunked linear attention with a scalar or per-key decay (csrc/chunk_linear*).

use kernels::chunk_linear::{chunk_linear, Decay};

/// Tolerances on `max |kernel - reference| / max(max |reference|, 1)`, by the dtype of q, k, v (the path
/// taken): float32 2e-4 (float32 arithmetic over sums of up to 64 + Dk terms per chunk plus the state pass;
/// the host emulation measured <= 2e-6); bfloat16 1.6e-2 (the tensor-core path: bfloat16 products of
/// operands rounded once, the chunk states and scaled rows included, float32 sums, each output and gradient
/// rounded to bfloat16 once; the emulation measured <= 6e-3, dg included). The log-decay gradient in
/// float32 gets 1e-3: it is formed as sum(q . dq - k . dk) plus <G, S_end>, a difference of terms much
/// larger than itself under strong decay (the emulation measured 5.6e-5 at decay e^-30 per step); the
/// bfloat16 path forms both sides from the same bfloat16 G, which keeps that cancellation at float32's
/// rounding.
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
    /// One log-decay per key (GLA: g [B, H, T, Dk]) instead of one per head and step.
    per_key: bool,
}

/// T = 1, T below / at / past one chunk of 64 and not a multiple of it, small and odd head dims, Dk != Dv,
/// no decay, mild and strong decay, and one training-sized shape.
const CL_CASES: &[ClCase] = &[
    ClCase { b: 1, h: 1, t: 1, dk: 1, dv: 1, strength: 0.5, per_key: false },
    ClCase { b: 2, h: 3, t: 1, dk: 5, dv: 3, strength: 0.0, per_key: false },
    ClCase { b: 1, h: 2, t: 7, dk: 3, dv: 5, strength: 0.5, per_key: false },
    ClCase { b: 2, h: 2, t: 64, dk: 16, dv: 16, strength: 30.0, per_key: false },
    ClCase { b: 1, h: 3, t: 65, dk: 8, dv: 6, strength: 0.5, per_key: false },
    ClCase { b: 2, h: 1, t: 130, dk: 33, dv: 17, strength: 0.0, per_key: false },
    ClCase { b: 1, h: 2, t: 200, dk: 64, dv: 64, strength: 0.1, per_key: false },
    ClCase { b: 2, h: 2, t: 257, dk: 128, dv: 128, strength: 0.05, per_key: false },
    ClCase { b: 1, h: 2, t: 100, dk: 96, dv: 128, strength: 30.0, per_key: false },
    ClCase { b: 2, h: 4, t: 1000, dk: 64, dv: 128, strength: 0.02, per_key: false },
];

/// The same shapes with per-key decays (the kernel takes them with bfloat16 q, k, v only), mild and strong
/// (e^-30 per step: a chunk decays far past float32's range, which the sub-chunks must keep finite).
/// Also value widths past 128 in one call (Dk = 96 with Dv = 192: GLA's 4 heads at d_model 768), and decays
/// near the bound of the mixes' tensor-core diagonal tiles (chunk_linear_pk.cuh's kDiagMaxExp: a sub-chunk's
/// 15 steps decay a key by up to ~37 units at 2.5, past the bound in some chunks and not others at 5.5).
fn per_key_cases() -> Vec<ClCase> {
    let mut cases: Vec<ClCase> =
        CL_CASES.iter().filter(|c| c.strength > 0.0).map(|&c| ClCase { per_key: true, ..c }).collect();
    cases.push(ClCase { b: 2, h: 2, t: 130, dk: 96, dv: 192, strength: 0.1, per_key: true });
    cases.push(ClCase { b: 1, h: 2, t: 70, dk: 64, dv: 256, strength: 30.0, per_key: true });
    cases.push(ClCase { b: 1, h: 2, t: 200, dk: 128, dv: 128, strength: 2.5, per_key: true });
    cases.push(ClCase { b: 2, h: 1, t: 256, dk: 32, dv: 48, strength: 5.5, per_key: true });
    cases
}

/// The dtypes of one run: `kind` for q, k, v (and o), `state` for the log-decays and s0 (`kind`, or float32
/// with bfloat16 q, k, v as under autocast).
#[derive(Clone, Copy, Debug)]
struct Kinds {
    kind: Kind,
    state: Kind,
}

impl Kinds {
    fn same(kind: Kind) -> Kinds {
        Kinds { kind, state: kind }
    }
    /// The final state's dtype: float32 when either is, else bfloat16 (torch's promotion).
    fn final_state(self) -> Kind {
        if self.kind == Kind::Float || self.state == Kind::Float {
            Kind::Float
        } else {
            self.kind
        }
    }
}

/// q, k, v, s0, log-decays (None without decay), and the output gradients (of o and of S_T), each rounded to
/// its dtype, on the GPU. q and k are scaled by Dk^-1/4 each so that scores stay O(1).
fn cl_inputs(c: ClCase, kinds: Kinds, dev: Device) -> (Vec<Tensor>, Option<Tensor>, Tensor, Tensor) {
    let (kind, state) = (kinds.kind, kinds.state);
    let opts = (Kind::Float, dev);
    let s = (c.dk as f64).powf(-0.25);
    let qkv = vec![
        (Tensor::randn([c.b, c.h, c.t, c.dk], opts) * s).to_kind(kind),
        (Tensor::randn([c.b, c.h, c.t, c.dk], opts) * s).to_kind(kind),
        Tensor::randn([c.b, c.h, c.t, c.dv], opts).to_kind(kind),
        Tensor::randn([c.b, c.h, c.dk, c.dv], opts).to_kind(state),
    ];
    let g_shape: &[i64] = if c.per_key { &[c.b, c.h, c.t, c.dk] } else { &[c.b, c.h, c.t] };
    let g = (c.strength > 0.0).then(|| (-(Tensor::rand(g_shape, opts) * c.strength + 1e-3)).to_kind(state));
    let go = Tensor::randn([c.b, c.h, c.t, c.dv], opts).to_kind(kind);
    let gs = Tensor::randn([c.b, c.h, c.dk, c.dv], opts).to_kind(kinds.final_state());
    (qkv, g, go, gs)
}

/// Output, final state and the gradients of q, k, v, g, s0 of `f` against the float64 recurrence.
/// The implementation under test: (q, k, v, s0), the log-decays -> (o, S_T).
type ClFn<'a> = &'a dyn Fn(&[Tensor], Option<&Tensor>) -> (Tensor, Tensor);

fn check_chunk_linear(label: &str, c: ClCase, kinds: Kinds, f: ClFn) {
    let dev = Device::Cuda(0);
    let kind = kinds.kind;
    let (qkv, g, go, gs) = cl_inputs(c, kinds, dev);
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
    let decay = match &rg {
        None => Decay::None,
        Some(g) if c.per_key => Decay::PerKey(g),
        Some(g) => Decay::Scalar(g),
    };
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
    let dtypes = [kind, kinds.final_state(), kind, kind, kind, kinds.state, kinds.state];
    for (((name, a), r), dtype) in names.iter().zip(&got).zip(&want).zip(dtypes) {
        assert_eq!(a.kind(), dtype, "{label} {kinds:?}: {name} dtype");
        let e = rel_err(a, r);
        let tol = cl_tolerance(kind, name);
        assert!(e <= tol, "{label} {c:?} {kinds:?}: {name} relative error {e:.3e} > {tol:.1e}");
        report.push(format!("{name} {e:.1e}"));
    }
    println!("{label} {c:?} {kinds:?}: {}", report.join(", "));
}

#[test]
#[ignore]
fn gpu_chunk_linear_matches_float64_reference() {
    gpu();
    tch::manual_seed(11);
    // float32, bfloat16, and bfloat16 q, k, v with a float32 decay and initial state (autocast)
    let runs =
        [Kinds::same(Kind::Float), Kinds::same(Kind::BFloat16), Kinds { kind: Kind::BFloat16, state: Kind::Float }];
    for &c in CL_CASES {
        for kinds in runs {
            check_chunk_linear("kernel", c, kinds, &|v, g| {
                cuda_ext::chunk_linear(&v[0], &v[1], &v[2], g, Some(&v[3])).expect("kernel")
            });
        }
    }
}

/// Per-key decays (GLA) on the tensor-core path: bfloat16 q, k, v with a bfloat16 or float32 decay and state.
#[test]
#[ignore]
fn gpu_chunk_linear_per_key_matches_float64_reference() {
    gpu();
    tch::manual_seed(13);
    for c in per_key_cases() {
        for kinds in [Kinds::same(Kind::BFloat16), Kinds { kind: Kind::BFloat16, state: Kind::Float }] {
            check_chunk_linear("per-key kernel", c, kinds, &|v, g| {
                cuda_ext::chunk_linear(&v[0], &v[1], &v[2], g, Some(&v[3])).expect("kernel")
            });
        }
    }
}

/// `chunk_linear(.., KernelPath::Auto)` reaches the kernel for CUDA tensors with a scalar or no decay when
/// WORKBENCH_CHUNK_LINEAR_KERNEL=1 (gpu-run.sh sets it for the tests), also with mixed dtypes (bf16 q/k/v
/// with a float32 decay, as under autocast), and with per-key decays on bfloat16 q, k, v, and gives the
/// reference's answer; float32 per-key decays and `KernelPath::Reference` do not reach it.
#[test]
#[ignore]
fn gpu_chunk_linear_dispatch() {
    gpu();
    assert_eq!(
        cuda_ext::chunk_linear_gate(),
        cuda_ext::ChunkLinearGate::Always,
        "set WORKBENCH_CHUNK_LINEAR_KERNEL=1 for this test (float32 inputs take the kernel only then)"
    );
    tch::manual_seed(12);
    let c = ClCase { b: 2, h: 2, t: 70, dk: 8, dv: 12, strength: 0.3, per_key: false };
    for (kind, gkind) in [(Kind::Float, Kind::Float), (Kind::BFloat16, Kind::BFloat16), (Kind::BFloat16, Kind::Float)] {
        let label = format!("Auto {kind:?} q/k/v, {gkind:?} decay");
        check_chunk_linear(&label, c, Kinds::same(kind), &|v, g| {
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
            // o in q's dtype; the final state float32 once the decay is (autocast's mix stays on the kernel)
            let state = Kinds { kind, state: gkind }.final_state();
            assert_eq!((o.kind(), s.kind()), (kind, state), "{label}: output dtypes");
            (o.to_kind(kind), s.to_kind(kind))
        });
    }
    // per-key decays with bfloat16 q, k, v (and a float32 decay, as under autocast) reach it too
    let pk = ClCase { per_key: true, ..c };
    for gkind in [Kind::BFloat16, Kind::Float] {
        let label = format!("Auto per-key BFloat16 q/k/v, {gkind:?} decay");
        check_chunk_linear(&label, pk, Kinds::same(Kind::BFloat16), &|v, g| {
            let before = cuda_ext::chunk_linear_calls().expect("library");
            let g = g.expect("a decay").to_kind(gkind);
            let (o, s) = chunk_linear(&v[0], &v[1], &v[2], Decay::PerKey(&g), Some(&v[3]), 16, KernelPath::Auto);
            assert_eq!(cuda_ext::chunk_linear_calls().expect("library"), before + 1, "{label}: kernel not reached");
            (o, s.to_kind(Kind::BFloat16))
        });
    }
    // value widths past 128: one call where the blocks fit (Dk = 8), else column slices of v and s0, one
    // call each (Dk = 128 with Dv = 256: two slices of 128)
    for (dk, dv, calls) in [(8, 200, 1), (128, 256, 2)] {
        assert_eq!(cuda_ext::chunk_linear_fits(dk, dv, true).expect("library"), calls == 1, "fits({dk}, {dv})");
        let wide = ClCase { dk, dv, ..pk };
        let label = format!("Auto per-key, Dk = {dk}, Dv = {dv} in {calls} call(s)");
        check_chunk_linear(&label, wide, Kinds::same(Kind::BFloat16), &|v, g| {
            let before = cuda_ext::chunk_linear_calls().expect("library");
            let g = g.expect("a decay");
            let r = chunk_linear(&v[0], &v[1], &v[2], Decay::PerKey(g), Some(&v[3]), 16, KernelPath::Auto);
            assert_eq!(cuda_ext::chunk_linear_calls().expect("library"), before + calls, "{label}");
            r
        });
    }
    // float32 per-key decays (no per-key float32 kernel) and the Reference path do not
    let (qkv, _, _, _) = cl_inputs(c, Kinds::same(Kind::Float), Device::Cuda(0));
    let before = cuda_ext::chunk_linear_calls().expect("library");
    let gk = Tensor::rand([c.b, c.h, c.t, c.dk], (Kind::Float, Device::Cuda(0))).neg();
    let _ = chunk_linear(&qkv[0], &qkv[1], &qkv[2], Decay::PerKey(&gk), None, 64, KernelPath::Auto);
    let _ = chunk_linear(&qkv[0], &qkv[1], &qkv[2], Decay::None, None, 64, KernelPath::Reference);
    assert_eq!(
        cuda_ext::chunk_linear_calls().expect("library"),
        before,
        "float32 per-key decay or Reference reached the kernel"
    );
}

/// Mamba-2's SSD (`kernels::ssd`, Auto) on CUDA runs the chunked linear-attention kernel (keys B_t, queries
/// C_t broadcast over the heads, values x_t, the scalar log-decay): y, h_T and the gradients of x, log_a, B,
/// C and h0 against SSD's own float64 token loop, in float32, bfloat16, and bfloat16 with a float32 log-decay
/// and state (autocast's mix). The chunk (16) is not the kernel's (64): the results agree up to rounding.
#[test]
#[ignore]
fn gpu_ssd_runs_on_the_chunk_kernel() {
    use kernels::ssd::ssd;
    let dev = gpu();
    tch::manual_seed(13);
    let (b, t, h, p, n) = (2, 70, 3, 8, 12);
    let opts = (Kind::Float, dev);
    for (kind, state) in [(Kind::Float, Kind::Float), (Kind::BFloat16, Kind::BFloat16), (Kind::BFloat16, Kind::Float)] {
        let label = format!("ssd Auto, {kind:?} x/B/C, {state:?} log_a/h0");
        let s = (n as f64).powf(-0.25);
        let ins = [
            Tensor::randn([b, t, h, p], opts).to_kind(kind),
            (-(Tensor::rand([b, t, h], opts) * 0.5 + 1e-3)).to_kind(state),
            (Tensor::randn([b, t, n], opts) * s).to_kind(kind),
            (Tensor::randn([b, t, n], opts) * s).to_kind(kind),
            Tensor::randn([b, h, p, n], opts).to_kind(state),
        ];
        let gy = Tensor::randn([b, t, h, p], opts).to_kind(kind);
        let final_kind = if kind == Kind::Float || state == Kind::Float { Kind::Float } else { kind };
        let gs = Tensor::randn([b, h, p, n], opts).to_kind(final_kind);
        let vars: Vec<Tensor> = ins.iter().map(|t| t.detach().set_requires_grad(true)).collect();
        let before = cuda_ext::chunk_linear_calls().expect("library");
        let (y, hn) = ssd(&vars[0], &vars[1], &vars[2], &vars[3], Some(&vars[4]), 16, KernelPath::Auto);
        assert_eq!(cuda_ext::chunk_linear_calls().expect("library"), before + 1, "{label}: kernel not reached");
        assert_eq!((y.kind(), hn.kind()), (kind, final_kind), "{label}: output dtypes");
        let refs: Vec<&Tensor> = vars.iter().collect();
        let grads = cuda_ext::grad(&[&y, &hn], &[&gy, &gs], &refs).expect("kernel backward");

        let rv: Vec<Tensor> = ins.iter().map(|t| t.detach().to_kind(Kind::Double).set_requires_grad(true)).collect();
        let (yr, hr) = ssd(&rv[0], &rv[1], &rv[2], &rv[3], Some(&rv[4]), 16, KernelPath::Reference);
        let loss =
            (&yr * gy.to_kind(Kind::Double)).sum(Kind::Double) + (&hr * gs.to_kind(Kind::Double)).sum(Kind::Double);
        let rrefs: Vec<&Tensor> = rv.iter().collect();
        let rgrads = Tensor::run_backward(&[loss], &rrefs, false, false);
        let mut got = vec![y.detach(), hn.detach()];
        got.extend(grads);
        let mut want = vec![yr.detach(), hr.detach()];
        want.extend(rgrads);
        for ((name, a), r) in ["y", "h_T", "dx", "dlog_a", "dB", "dC", "dh0"].iter().zip(&got).zip(&want) {
            let e = rel_err(a, r);
            // dlog_a is chunk_linear's dg: float32 gets its 1e-3
            let tol = cl_tolerance(kind, if *name == "dlog_a" { "dg" } else { name });
            assert!(e <= tol, "{label}: {name} relative error {e:.3e} > {tol:.1e}");
        }
    }
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
    // per-key decays: the right shape, and bfloat16 q, k, v only
    let gk = Tensor::zeros([1, 2, 5, 3], (Kind::Float, dev));
    let b = |t: &Tensor| t.to_kind(Kind::BFloat16);
    let e = cuda_ext::chunk_linear(&b(&q), &b(&q), &b(&v), Some(&gk), None).unwrap_err();
    assert!(e.to_string().contains("[B, H, T, Dk] = [1, 2, 5, 4]"), "{e}");
    let gk = Tensor::zeros([1, 2, 5, 4], (Kind::Float, dev));
    let e = cuda_ext::chunk_linear(&q, &q, &v, Some(&gk), None).unwrap_err();
    assert!(e.to_string().contains("need bfloat16"), "{e}");
}
