//! Tests of the chunked linear attention (kernels/src/chunk_linear.rs): the chunked form against the
//! per-token recurrence in float64, a sequence split in two through the state, the FLOP accounting, strong
//! decays in float32, and gradients against finite differences.

use super::*;
use tch::Device;

const OPTS: (Kind, Device) = (Kind::Double, Device::Cpu);

fn max_err(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// Log-decays in [-strength, 0).
fn log_decay(shape: &[i64], strength: f64) -> Tensor {
    -(Tensor::rand(shape, OPTS) * strength + 1e-3)
}

fn decays(b: i64, h: i64, t: i64, dk: i64, strength: f64) -> [(Tensor, &'static str); 3] {
    [
        (Tensor::zeros([0], OPTS), "none"),
        (log_decay(&[b, h, t], strength), "scalar"),
        (log_decay(&[b, h, t, dk], strength), "per_key"),
    ]
}

fn as_decay<'a>(g: &'a Tensor, kind: &str) -> Decay<'a> {
    match kind {
        "scalar" => Decay::Scalar(g),
        "per_key" => Decay::PerKey(g),
        _ => Decay::None,
    }
}

#[test]
fn chunked_matches_recurrence_in_float64() {
    tch::manual_seed(0);
    // (B, H, T, Dk, Dv, chunk): T not a multiple of the chunk, T = 1, odd dims, chunk > T, chunk = 1.
    // (1, 1, 70, ..., 1): 70 chunks, past STATE_PRODUCT_MAX_CHUNKS (the chunk states in two groups).
    for (b, h, t, dk, dv, chunk) in [
        (2, 3, 1, 5, 3, 4),
        (1, 2, 7, 3, 5, 3),
        (2, 1, 16, 4, 4, 5),
        (1, 2, 13, 5, 7, 64),
        (1, 1, 6, 3, 2, 1),
        (1, 1, 70, 2, 3, 1),
    ] {
        let (q, k, v) = (
            Tensor::randn([b, h, t, dk], OPTS),
            Tensor::randn([b, h, t, dk], OPTS),
            Tensor::randn([b, h, t, dv], OPTS),
        );
        let s0 = Tensor::randn([b, h, dk, dv], OPTS);
        for (strength, (g, kind)) in [0.5, 30.0].into_iter().flat_map(|s| decays(b, h, t, dk, s).map(|d| (s, d))) {
            for init in [None, Some(&s0)] {
                let d = as_decay(&g, kind);
                let (or, sr) = chunk_linear(&q, &k, &v, d, init, chunk, KernelPath::Reference);
                // Auto's own sub-chunks, then every sub-chunk length that divides the chunk (1: all pairs
                // through the factorised matmul; C: all through the exact ratios).
                let c = effective_chunk(t, chunk);
                for sub in std::iter::once(None).chain((1..=c).filter(|s| c % s == 0).map(Some)) {
                    let (oa, sa) = chunked(&q, &k, &v, d, init, chunk, sub);
                    let (eo, es) = (max_err(&oa, &or), max_err(&sa, &sr));
                    let shape = (b, h, t, dk, dv, chunk);
                    let case = format!("{kind} strength {strength} init {} sub {sub:?} {shape:?}", init.is_some());
                    assert!(eo < 1e-10 && es < 1e-10, "{case}: output error {eo}, state error {es}");
                }
            }
        }
    }
}

#[test]
fn splitting_a_sequence_with_the_state_changes_nothing() {
    tch::manual_seed(1);
    let (b, h, t, dk, dv) = (2, 2, 11, 3, 4);
    let (q, k, v) =
        (Tensor::randn([b, h, t, dk], OPTS), Tensor::randn([b, h, t, dk], OPTS), Tensor::randn([b, h, t, dv], OPTS));
    for (g, kind) in decays(b, h, t, dk, 1.0) {
        let (whole, s_whole) = chunk_linear(&q, &k, &v, as_decay(&g, kind), None, 4, KernelPath::Auto);
        let part = |x: &Tensor, s: i64, l: i64| x.narrow(2, s, l);
        let gp = |s, l| if kind == "none" { g.shallow_clone() } else { part(&g, s, l) };
        let (g1, g2) = (gp(0, 5), gp(5, 6));
        let (o1, s1) = chunk_linear(
            &part(&q, 0, 5),
            &part(&k, 0, 5),
            &part(&v, 0, 5),
            as_decay(&g1, kind),
            None,
            4,
            KernelPath::Auto,
        );
        let (o2, s2) = chunk_linear(
            &part(&q, 5, 6),
            &part(&k, 5, 6),
            &part(&v, 5, 6),
            as_decay(&g2, kind),
            Some(&s1),
            4,
            KernelPath::Auto,
        );
        assert!(max_err(&whole, &Tensor::cat(&[o1, o2], 2)) < 1e-10, "{kind}");
        assert!(max_err(&s_whole, &s2) < 1e-10, "{kind}");
    }
}

#[test]
fn both_paths_record_the_chunked_flops() {
    let (b, h, t, dk, dv, chunk) = (2, 3, 10, 5, 3, 4);
    let (q, k, v) =
        (Tensor::randn([b, h, t, dk], OPTS), Tensor::randn([b, h, t, dk], OPTS), Tensor::randn([b, h, t, dv], OPTS));
    for (g, kind) in decays(b, h, t, dk, 1.0) {
        for path in [KernelPath::Auto, KernelPath::Reference] {
            let counter = flop_count::Counter::start();
            let _ = chunk_linear(&q, &k, &v, as_decay(&g, kind), None, chunk, path);
            assert_eq!(counter.total(), chunk_linear_flops(b * h, t, dk, dv, chunk), "{kind} {path:?}");
        }
        for sub in [1, 2, 4] {
            let counter = flop_count::Counter::start();
            let _ = chunked(&q, &k, &v, as_decay(&g, kind), None, chunk, Some(sub));
            assert_eq!(counter.total(), chunk_linear_flops(b * h, t, dk, dv, chunk), "{kind} sub {sub}");
        }
    }
    // 3 chunks of 4 (the last padded): 2*16*8 + 4*4*15 = 496 per chunk.
    assert_eq!(chunk_linear_flops(1, 10, 5, 3, 4), 3.0 * 496.0);
}

#[test]
fn strong_decay_stays_finite_in_float32() {
    // log a = -40 per token: exp(-b) over a 64-token chunk would be exp(2560), far past f32's range.
    let opts = (Kind::Float, Device::Cpu);
    let (b, h, t, dk, dv) = (1, 2, 64, 4, 4);
    let (q, k, v) =
        (Tensor::randn([b, h, t, dk], opts), Tensor::randn([b, h, t, dk], opts), Tensor::randn([b, h, t, dv], opts));
    let g = Tensor::full([b, h, t, dk], -40.0, opts);
    let (oa, sa) = chunk_linear(&q, &k, &v, Decay::PerKey(&g), None, 64, KernelPath::Auto);
    let (or, sr) = chunk_linear(&q, &k, &v, Decay::PerKey(&g), None, 64, KernelPath::Reference);
    assert!(max_err(&oa, &or) < 1e-4 && max_err(&sa, &sr) < 1e-4);
    // With a decay this strong each output is (almost) q_t . k_t v_t alone.
    let local = (&q * &k).sum_dim_intlist(-1, true, Kind::Float) * &v;
    assert!(max_err(&oa, &local) < 1e-4);
    // Random per-key decays down to e^-6 per token: chunks decay by up to e^-380, far past the range of a
    // one-matmul factorisation; float32 still agrees with the float64 recurrence to rounding (outputs of order 1-10).
    let g = -(Tensor::rand([b, h, t, dk], opts) * 6.0);
    let (oa, sa) = chunk_linear(&q, &k, &v, Decay::PerKey(&g), None, 64, KernelPath::Auto);
    let d = |x: &Tensor| x.to_kind(Kind::Double);
    let (or, sr) = chunk_linear(&d(&q), &d(&k), &d(&v), Decay::PerKey(&d(&g)), None, 64, KernelPath::Reference);
    let (eo, es) = (max_err(&d(&oa), &or), max_err(&d(&sa), &sr));
    assert!(eo < 1e-4 && es < 1e-4, "output error {eo}, state error {es}");
}

/// Autograd gradients of the chunked form against central differences of the recurrence (float64).
#[test]
fn chunked_gradients_match_finite_differences_of_the_recurrence() {
    tch::manual_seed(2);
    let (b, h, t, dk, dv, chunk) = (1, 2, 5, 2, 3, 2);
    for kind in ["none", "scalar", "per_key"] {
        let g_shape: Vec<i64> = match kind {
            "scalar" => vec![b, h, t],
            "per_key" => vec![b, h, t, dk],
            _ => vec![0],
        };
        let inputs = [
            Tensor::randn([b, h, t, dk], OPTS),
            Tensor::randn([b, h, t, dk], OPTS),
            Tensor::randn([b, h, t, dv], OPTS),
            log_decay(&g_shape, 1.0),
            Tensor::randn([b, h, dk, dv], OPTS),
        ];
        let (w_out, w_state) = (Tensor::randn([b, h, t, dv], OPTS), Tensor::randn([b, h, dk, dv], OPTS));
        let weigh = |(o, s): (Tensor, Tensor)| (o * &w_out).sum(Kind::Double) + (s * &w_state).sum(Kind::Double);
        let reference = |x: &[Tensor]| {
            let d = as_decay(&x[3], kind);
            weigh(chunk_linear(&x[0], &x[1], &x[2], d, Some(&x[4]), chunk, KernelPath::Reference))
        };
        // Sub-chunks of 1 (all pairs factorised) and of the whole chunk (all exact ratios).
        for sub in [1, chunk] {
            let vars: Vec<Tensor> = inputs.iter().map(|x| x.copy().set_requires_grad(true)).collect();
            let d = as_decay(&vars[3], kind);
            weigh(chunked(&vars[0], &vars[1], &vars[2], d, Some(&vars[4]), chunk, Some(sub))).backward();
            for (i, var) in vars.iter().enumerate() {
                if kind == "none" && i == 3 {
                    continue;
                }
                let grad = var.grad().flatten(0, -1);
                for e in 0..inputs[i].numel() as i64 {
                    let shifted = |delta: f64| {
                        let x: Vec<Tensor> = inputs.iter().map(|x| x.copy()).collect();
                        let _ = x[i].view([-1]).get(e).g_add_scalar_(delta);
                        reference(&x).double_value(&[])
                    };
                    let eps = 1e-6;
                    let numeric = (shifted(eps) - shifted(-eps)) / (2.0 * eps);
                    let analytic = grad.double_value(&[e]);
                    assert!(
                        (numeric - analytic).abs() < 1e-6 * (1.0 + numeric.abs()),
                        "{kind} sub {sub} input {i}[{e}]: {analytic} vs {numeric}"
                    );
                }
            }
        }
    }
}
