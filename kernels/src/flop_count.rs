//! A thread-local counter of the floating-point operations the references actually perform.
//!
//! Convention (the one `operators::flops` documents for the whole workbench): a multiply-add is 2 FLOPs;
//! contractions (matrix products, the query-key and attention-value products over the pairs the mask
//! allows, convolutions, recurrent state updates) are counted; elementwise work (activations,
//! normalisation, softmax, residual adds, rotary embeddings) is not.
//!
//! Counting is off unless a [`Counter`] is alive on the current thread, so the hot path pays one
//! thread-local read.

use std::cell::Cell;

thread_local! {
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
    static TOTAL: Cell<f64> = const { Cell::new(0.0) };
}

/// Adds `flops` to the running count if a [`Counter`] is active on this thread.
#[inline]
pub fn record(flops: f64) {
    if ACTIVE.with(|a| a.get()) {
        TOTAL.with(|t| t.set(t.get() + flops));
    }
}

/// Records the FLOPs of `a.matmul(b)` from the operands' shapes (2 * batch * m * k * n) and returns the product.
pub fn matmul(a: &tch::Tensor, b: &tch::Tensor) -> tch::Tensor {
    let out = a.matmul(b);
    if ACTIVE.with(|x| x.get()) {
        let k = *a.size().last().expect("matmul operand has no dimensions");
        record(2.0 * k as f64 * out.numel() as f64);
    }
    out
}

/// Records the FLOPs of `x.linear(w, b)` (2 * rows * in * out, as [`matmul`]; the bias add is not counted) and
/// returns it. One op rather than a product and an add: under autocast libtorch runs `linear` in the autocast
/// dtype, bias included (what torch's `nn.Linear` does), where a bfloat16 product plus a float32 bias would
/// promote the result to float32.
pub fn linear(x: &tch::Tensor, w: &tch::Tensor, b: Option<&tch::Tensor>) -> tch::Tensor {
    let out = x.linear(w, b);
    if ACTIVE.with(|a| a.get()) {
        let k = *x.size().last().expect("linear input has no dimensions");
        record(2.0 * k as f64 * out.numel() as f64);
    }
    out
}

/// Counts FLOPs while alive; nested counters are not supported (the inner one would reset the total).
pub struct Counter {
    _private: (),
}

impl Counter {
    /// Starts counting from zero on the current thread.
    pub fn start() -> Counter {
        ACTIVE.with(|a| a.set(true));
        TOTAL.with(|t| t.set(0.0));
        Counter { _private: () }
    }

    /// FLOPs recorded since [`Counter::start`].
    pub fn total(&self) -> f64 {
        TOTAL.with(|t| t.get())
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        ACTIVE.with(|a| a.set(false));
    }
}
