//! The workbench's one FLOP convention. Every number a report plots against is FLOPs, so this is part
//! of the science; each mixer's formula sits in its own file's header and is tested against counted
//! operations (see `kernels::flop_count`).
//!
//! 1. A multiply-add is 2 FLOPs.
//! 2. Counted: contractions, i.e. matrix products (every projection, the output head), the query-key and
//!    attention-value products, convolutions, and the multiply-adds of recurrent state updates.
//! 3. Not counted: elementwise work (activations, gating products, normalisation, softmax, residual
//!    adds, rotary embeddings). It is O(d) per token against the O(d^2) of the projections.
//! 4. Causal attention counts only the query-key pairs the mask allows: query `t` (1-based) reads
//!    `min(t, window)` keys, so over a sequence of length T the mean is `(T + 1) / 2` keys per token
//!    without a window. This is the work a fused kernel does; a dense implementation does about twice as much.
//! 5. The token embedding is a lookup: 0 FLOPs. The output head (d_model x vocab) is counted: 2 d V per token.
//! 6. Training costs 3 x forward per token (forward, plus backward with respect to activations and to
//!    weights). `flops_per_token` everywhere means forward FLOPs per token at a given sequence length.

pub use kernels::flop_count::{record, Counter};

/// Training FLOPs per token: forward plus a backward pass that costs twice the forward.
pub const TRAIN_MULTIPLIER: f64 = 3.0;

/// Mean number of keys a query reads in causal attention over `seq_len` positions with an optional window.
pub fn mean_causal_keys(seq_len: i64, window: Option<i64>) -> f64 {
    let t = seq_len.max(1);
    match window {
        None => (t + 1) as f64 / 2.0,
        Some(w) => {
            // sum_{i=1..T} min(i, w) / T
            let w = w.min(t);
            let ramp = w * (w + 1) / 2; // positions 1..w
            let flat = (t - w) * w; // positions w+1..T
            (ramp + flat) as f64 / t as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_keys_matches_direct_sum() {
        for t in 1..20 {
            for w in [None, Some(1), Some(3), Some(25)] {
                let direct: i64 = (1..=t).map(|i| w.map_or(i, |w: i64| i.min(w))).sum();
                assert!((mean_causal_keys(t, w) - direct as f64 / t as f64).abs() < 1e-12);
            }
        }
    }
}
