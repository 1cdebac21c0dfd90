//! Scaled dot-product attention over grouped key/value heads, causal with an optional sliding window.
//!
//! Shapes: q `[B, H, Tq, D]`, k and v `[B, KV, Tk, D]` with `H % KV == 0` (KV < H is grouped-query
//! attention; KV = 1 multi-query). Head `h` reads key/value head `h / (H / KV)`.
//!
//! ```text
//! y_i = sum_j softmax_j(q_i . k_j / sqrt(D) over allowed j) v_j
//! causal:          j allowed iff j <= i
//! sliding window:  j allowed iff i - w < j <= i
//! ```
//! The fast path is libtorch's fused `scaled_dot_product_attention` (flash / memory-efficient / cuDNN
//! backends on CUDA, a fused CPU kernel on CPU); the reference materialises the scores.

use crate::flop_count;
use crate::KernelPath;
use tch::{Kind, Tensor};

/// Which query-key pairs may interact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mask {
    /// Query `i` sees keys `j <= i` (and `j > i - w` with a window `w`). Requires Tq == Tk.
    Causal { window: Option<i64> },
    /// Every query sees every key (one decoding step against a KV cache).
    Full,
}

/// Attention with the given mask; see the module note for shapes.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Mask, path: KernelPath) -> Tensor {
    let (h, kv) = (q.size()[1], k.size()[1]);
    assert!(h % kv == 0, "query heads ({h}) must be a multiple of key/value heads ({kv})");
    match path {
        KernelPath::Auto => fused(q, k, v, mask),
        KernelPath::Reference => reference(q, k, v, mask),
    }
}

fn fused(q: &Tensor, k: &Tensor, v: &Tensor, mask: Mask) -> Tensor {
    let gqa = q.size()[1] != k.size()[1];
    match mask {
        Mask::Causal { window: None } => {
            Tensor::scaled_dot_product_attention(q, k, v, None::<Tensor>, 0.0, true, None, gqa)
        }
        Mask::Causal { window: Some(w) } => {
            let allowed = allowed_pairs(q.size()[2], k.size()[2], Some(w), q.device());
            Tensor::scaled_dot_product_attention(q, k, v, Some(allowed), 0.0, false, None, gqa)
        }
        Mask::Full => Tensor::scaled_dot_product_attention(q, k, v, None::<Tensor>, 0.0, false, None, gqa),
    }
}

/// `[Tq, Tk]` boolean: true where query i may read key j (causal, optionally windowed).
pub fn allowed_pairs(tq: i64, tk: i64, window: Option<i64>, device: tch::Device) -> Tensor {
    let i = Tensor::arange(tq, (Kind::Int64, device)).unsqueeze(1); // [Tq, 1]
    let j = Tensor::arange(tk, (Kind::Int64, device)).unsqueeze(0); // [1, Tk]
    let causal = j.le_tensor(&i);
    match window {
        Some(w) => causal.logical_and(&j.gt_tensor(&(i - w))),
        None => causal,
    }
}

/// The definition: explicit scores, mask, softmax, weighted sum. Records the FLOPs of the pairs it allows.
pub fn reference(q: &Tensor, k: &Tensor, v: &Tensor, mask: Mask) -> Tensor {
    let (b, h, tq, d) = q.size4().expect("q must be [B, H, T, D]");
    let (_, kv, tk, _) = k.size4().expect("k must be [B, KV, T, D]");
    let group = h / kv;
    let k = k.repeat_interleave_self_int(group, 1, None); // [B, H, Tk, D]
    let v = v.repeat_interleave_self_int(group, 1, None); // [B, H, Tk, D]
    let scores = q.matmul(&k.transpose(-2, -1)) / (d as f64).sqrt(); // [B, H, Tq, Tk]
    let pairs = match mask {
        Mask::Causal { window } => {
            let allowed = allowed_pairs(tq, tk, window, q.device());
            let n = allowed.sum(Kind::Int64).int64_value(&[]);
            let scores = scores.masked_fill(&allowed.logical_not(), f64::NEG_INFINITY);
            let out = scores.softmax(-1, scores.kind()).matmul(&v);
            record_pairs(b, h, d, n);
            return out;
        }
        Mask::Full => tq * tk,
    };
    record_pairs(b, h, d, pairs);
    scores.softmax(-1, scores.kind()).matmul(&v)
}

/// q.k and p.v over `pairs` query-key pairs per head: 2 products x 2 FLOPs x D.
fn record_pairs(b: i64, h: i64, d: i64, pairs: i64) {
    flop_count::record(4.0 * (b * h * d) as f64 * pairs as f64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn rand(shape: &[i64]) -> Tensor {
        Tensor::randn(shape, (Kind::Double, Device::Cpu))
    }

    #[test]
    fn fused_matches_reference_in_float64() {
        tch::manual_seed(0);
        for (h, kv, t, window) in [(4, 4, 9, None), (4, 2, 7, None), (6, 1, 5, Some(3)), (2, 2, 1, None)] {
            let (q, k, v) = (rand(&[2, h, t, 8]), rand(&[2, kv, t, 8]), rand(&[2, kv, t, 8]));
            let mask = Mask::Causal { window };
            let a = attention(&q, &k, &v, mask, KernelPath::Auto);
            let r = attention(&q, &k, &v, mask, KernelPath::Reference);
            let err = (&a - &r).abs().max().double_value(&[]);
            assert!(err < 1e-10, "h={h} kv={kv} t={t} window={window:?}: max error {err}");
        }
    }

    #[test]
    fn window_limits_what_a_query_sees() {
        let a = allowed_pairs(5, 5, Some(2), Device::Cpu);
        let rows: Vec<i64> = a.sum_dim_intlist(1, false, Kind::Int64).try_into().unwrap();
        assert_eq!(rows, vec![1, 2, 2, 2, 2]);
    }

    #[test]
    fn reference_counts_allowed_pairs() {
        let (q, k, v) = (rand(&[1, 2, 4, 3]), rand(&[1, 2, 4, 3]), rand(&[1, 2, 4, 3]));
        let c = flop_count::Counter::start();
        let _ = reference(&q, &k, &v, Mask::Causal { window: None });
        // 10 allowed pairs (1+2+3+4) x 2 heads x 4 FLOPs per pair per dim x 3 dims.
        assert_eq!(c.total(), 10.0 * 2.0 * 4.0 * 3.0);
    }
}
