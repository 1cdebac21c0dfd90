//! Causal long convolution, per channel, with a filter as long as the sequence: the core of Hyena, H3
//! (its diagonal SSM, written as a convolution kernel) and zoology's BaseConv.
//!
//! ```text
//! y[b, t, c] = sum_{s=0..t} k[c, s] * u[b, t - s, c]  (+ D[c] * u[b, t, c])
//! ```
//! Shapes: u `[B, T, C]`, k `[C, L]` with `L >= T` (only the first T taps are read), D `[C]` (optional).
//!
//! Hyena's gated form [`long_conv_gated`] is `gate * long_conv(u, k, D)` (gate `[B, T, C]`), one call so
//! that the CUDA kernel can fuse the gate too.
//!
//! Paths:
//! - `Reference`: the definition, a loop over lags `s` adding `k[:, s] * u` shifted by `s`.
//! - `Auto` on CUDA tensors: our fused kernels (csrc/long_conv*, csrc/ext_long_conv.cpp) when their library is
//!   loaded, at every length (the FLOPs recorded stay those of the algorithm below): for bfloat16 up to 4096
//!   steps the causal Toeplitz products on tensor cores (bfloat16 operands, float32 sums; O(T^2) but faster
//!   there, BENCHMARKS.md), otherwise cuFFT for the transforms (zero-padded to an even 2,3,5,7-smooth length
//!   of at least 2T) with our kernels for the transposes, padding, spectral products, skip and gate around them,
//!   float32 inside; the result in u's dtype. WORKBENCH_LONG_CONV_FFT=1 forces the cuFFT path.
//! - `Auto` otherwise: of the two fast algorithms, the one with fewer FLOPs at this length ([`algorithm`]):
//!   - [`Algorithm::Direct`]: a depthwise `conv1d` with the reversed filter over the input left-padded
//!     with T - 1 zeros. Exactly causal: the padding contributes exact zeros.
//!   - [`Algorithm::Fft`]: zero-pad u and k to N = 2T, real FFT, multiply the spectra, inverse real FFT,
//!     keep the first T outputs (no wrap-around since 2T > 2T - 1). Causal only up to rounding: the
//!     outputs before position t depend on later inputs by about 1e-16 relative, through the transform.
//!
//! FLOP convention (on top of `flop_count`'s: a multiply-add is 2 FLOPs), per channel of one sequence:
//! - Direct: the multiply-adds over the causal pairs s <= t, T(T+1)/2, so `T + 1` FLOPs per token (the
//!   convention of causal attention's pairs; the products with the zero padding are not counted).
//! - FFT: a real FFT of size N costs `2.5 N log2 N` (half the `5 N log2 N` radix-2 count of a complex FFT,
//!   the convention of FFTW's benchmarks); the forward FFT of u and the inverse FFT of the product cost
//!   `2 * 2.5 N log2 N`, the complex product of the `N/2 + 1` bins costs `6 (N/2 + 1)`. Per token:
//!   `(5 N log2 N + 6 (N/2 + 1)) / T` with `N = 2T`.
//! - Not counted: the FFT of the filter and everything else that depends only on the parameters (it is
//!   done once per forward for the whole batch, so its share per token depends on the batch size and
//!   vanishes as B*T grows), the `D * u` skip and the gate (elementwise).
//!
//! Both paths record the `Auto` count ([`flops_per_token`] per channel), the work training actually runs.
//! The recurrent form has no finite state: [`long_conv_step`] reads the whole input history.

use crate::flop_count;
use crate::KernelPath;
use tch::{Kind, Tensor};

/// The fast algorithm `Auto` runs at a given length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// Depthwise convolution with the whole filter over the zero-padded input.
    Direct,
    /// Zero-padded real FFT of size 2T.
    Fft,
}

/// FLOPs per token per channel of the direct algorithm: `T + 1`.
pub fn direct_flops_per_token(seq_len: i64) -> f64 {
    (seq_len.max(1) + 1) as f64
}

/// FLOPs per token per channel of the FFT algorithm: `(5 N log2 N + 6 (N/2 + 1)) / T`, `N = 2T`.
pub fn fft_flops_per_token(seq_len: i64) -> f64 {
    let t = seq_len.max(1) as f64;
    let n = 2.0 * t;
    (5.0 * n * n.log2() + 6.0 * (n / 2.0 + 1.0)) / t
}

/// The algorithm `Auto` runs at length `seq_len`: the one with fewer FLOPs (direct up to T = 77).
pub fn algorithm(seq_len: i64) -> Algorithm {
    if direct_flops_per_token(seq_len) <= fft_flops_per_token(seq_len) {
        Algorithm::Direct
    } else {
        Algorithm::Fft
    }
}

/// FLOPs per token per channel that `long_conv` records at length `seq_len` (the `Auto` algorithm's).
pub fn flops_per_token(seq_len: i64) -> f64 {
    match algorithm(seq_len) {
        Algorithm::Direct => direct_flops_per_token(seq_len),
        Algorithm::Fft => fft_flops_per_token(seq_len),
    }
}

/// Causal long convolution `u [B, T, C]`, `k [C, L >= T]`, optional skip `d [C]`; see the module note.
pub fn long_conv(u: &Tensor, k: &Tensor, d: Option<&Tensor>, path: KernelPath) -> Tensor {
    fused(u, k, d, None, path)
}

/// Hyena's gated long convolution, `gate * long_conv(u, k, d)` with `gate [B, T, C]`: one call, so that the
/// CUDA kernel applies the gate in the pass that writes the convolution's result (and its backward pass
/// computes both gradients of the product in the pass that reads dy). FLOPs: those of `long_conv` (the gate
/// is elementwise).
pub fn long_conv_gated(u: &Tensor, k: &Tensor, d: Option<&Tensor>, gate: &Tensor, path: KernelPath) -> Tensor {
    fused(u, k, d, Some(gate), path)
}

fn fused(u: &Tensor, k: &Tensor, d: Option<&Tensor>, gate: Option<&Tensor>, path: KernelPath) -> Tensor {
    let (b, t, c) = u.size3().expect("long_conv: u must be [B, T, C]");
    let (kc, l) = k.size2().expect("long_conv: k must be [C, L]");
    assert_eq!(kc, c, "long_conv: filter has {kc} channels, input {c}");
    assert!(l >= t, "long_conv: filter length {l} is shorter than the sequence ({t})");
    if let Some(g) = gate {
        assert_eq!(g.size(), u.size(), "long_conv: gate must be shaped like u [B, T, C]");
    }
    flop_count::record((b * t * c) as f64 * flops_per_token(t));
    let path = crate::cuda_ext::resolve(path);
    if path == KernelPath::Auto && u.device().is_cuda() {
        if let Some(y) = cuda_auto(u, k, d, gate) {
            return y;
        }
    }
    let k = k.narrow(1, 0, t); // [C, T]
    let y = match path {
        KernelPath::Auto => match algorithm(t) {
            Algorithm::Direct => direct(u, &k),
            Algorithm::Fft => fft(u, &k),
        },
        KernelPath::Reference => reference(u, &k),
    };
    let y = match d {
        Some(d) => y + u * d,
        None => y,
    };
    match gate {
        Some(g) => g * y,
        None => y,
    }
}

/// The CUDA kernel for a CUDA `u`, or `None` (the libtorch path). Under bf16 autocast u and the gate may
/// arrive in different dtypes: the kernel reads both in one dtype, float32 then (the casts are
/// differentiable); float16 tensors are read as float32.
fn cuda_auto(u: &Tensor, k: &Tensor, d: Option<&Tensor>, gate: Option<&Tensor>) -> Option<Tensor> {
    let low = |t: &Tensor| matches!(t.kind(), Kind::Float | Kind::BFloat16 | Kind::Half);
    let f32 = |t: &Tensor| t.to_kind(Kind::Float);
    let no_half = |t: &Tensor| if t.kind() == Kind::Half { f32(t) } else { t.shallow_clone() };
    let (k, d) = (no_half(k), d.map(no_half));
    let (u, gate) = match gate {
        Some(g) if g.kind() != u.kind() && low(u) && low(g) => (f32(u), Some(f32(g))),
        _ => (no_half(u), gate.map(no_half)),
    };
    crate::cuda_ext::long_conv_auto(&u, &k, d.as_ref(), gate.as_ref())
}

/// The direct algorithm (no skip, no FLOP recording): `u [B, T, C]`, `k [C, T]`.
pub fn direct(u: &Tensor, k: &Tensor) -> Tensor {
    let (_, t, c) = u.size3().expect("u is [B, T, C]");
    // conv1d correlates: y[t] = sum_j w[j] x_pad[t + j] with x_pad[t + j] = u[t + j - (T-1)], so w = k reversed.
    let x = u.transpose(1, 2).constant_pad_nd([t - 1, 0]); // [B, C, 2T - 1]
    x.conv1d(&k.flip([1]).unsqueeze(1), None::<Tensor>, [1], [0], [1], c).transpose(1, 2)
    // [B, T, C]
}

/// The FFT algorithm (no skip, no FLOP recording): `u [B, T, C]`, `k [C, T]`.
pub fn fft(u: &Tensor, k: &Tensor) -> Tensor {
    let t = u.size()[1];
    let n = 2 * t;
    let uf = u.fft_rfft(n, 1, "backward"); // [B, T + 1, C] complex
    let kf = k.tr().fft_rfft(n, 0, "backward"); // [T + 1, C] complex
    (uf * kf).fft_irfft(n, 1, "backward").narrow(1, 0, t) // [B, T, C]
}

/// The definition: a loop over lags (no skip, no FLOP recording): `u [B, T, C]`, `k [C, T]`.
pub fn reference(u: &Tensor, k: &Tensor) -> Tensor {
    let t = u.size()[1];
    let mut y = u.zeros_like();
    for s in 0..t {
        // u[t - s] for t >= s: the first T - s inputs moved s places later.
        let shifted = u.narrow(1, 0, t - s).constant_pad_nd([0, 0, s, 0]); // [B, T, C]
        y += shifted * k.select(1, s);
    }
    y
}

/// One step of the exact recurrent form: `history [B, t+1, C]` holds every input so far, oldest first,
/// the current one last; returns `y [B, C]` at position t. FLOPs: 2 (t+1) C per sequence (not recorded:
/// only the parallel form is accounted).
pub fn long_conv_step(history: &Tensor, k: &Tensor, d: Option<&Tensor>) -> Tensor {
    let n = history.size()[1];
    let taps = k.narrow(1, 0, n).flip([1]).tr(); // [n, C]: tap for the input at position j is k[t - j]
    let y = (history * taps).sum_dim_intlist(1, false, history.kind()); // [B, C]
    match d {
        Some(d) => y + history.select(1, n - 1) * d,
        None => y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn rand(shape: &[i64]) -> Tensor {
        Tensor::randn(shape, (Kind::Double, Device::Cpu))
    }

    fn max_err(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    #[test]
    fn fast_paths_match_the_reference_in_float64() {
        tch::manual_seed(0);
        for (b, t, c, l) in [(2, 1, 3, 1), (1, 7, 5, 9), (3, 13, 2, 13), (2, 64, 3, 70), (2, 129, 4, 129)] {
            let (u, k, d) = (rand(&[b, t, c]), rand(&[c, l]), rand(&[c]));
            let r = long_conv(&u, &k, Some(&d), KernelPath::Reference);
            let a = long_conv(&u, &k, Some(&d), KernelPath::Auto);
            let kt = k.narrow(1, 0, t);
            assert!(max_err(&a, &r) < 1e-10, "auto T={t}: {}", max_err(&a, &r));
            let (dy, fy) = (direct(&u, &kt), fft(&u, &kt));
            let r0 = reference(&u, &kt);
            assert!(max_err(&dy, &r0) < 1e-10, "direct T={t}: {}", max_err(&dy, &r0));
            assert!(max_err(&fy, &r0) < 1e-10, "fft T={t}: {}", max_err(&fy, &r0));
        }
    }

    #[test]
    fn gated_paths_match_the_gated_reference_and_record_the_same_flops() {
        tch::manual_seed(3);
        for (b, t, c, l) in [(2, 1, 3, 1), (1, 7, 5, 9), (2, 100, 3, 104)] {
            let (u, k, d, g) = (rand(&[b, t, c]), rand(&[c, l]), rand(&[c]), rand(&[b, t, c]));
            let want = &g * long_conv(&u, &k, Some(&d), KernelPath::Reference);
            for path in [KernelPath::Auto, KernelPath::Reference] {
                let counter = flop_count::Counter::start();
                let y = long_conv_gated(&u, &k, Some(&d), &g, path);
                assert_eq!(counter.total(), (b * t * c) as f64 * flops_per_token(t), "{path:?} T={t}");
                assert!(max_err(&y, &want) < 1e-10, "{path:?} T={t}: {}", max_err(&y, &want));
            }
            let y = long_conv_gated(&u, &k, None, &g, KernelPath::Auto);
            assert!(max_err(&y, &(&g * long_conv(&u, &k, None, KernelPath::Reference))) < 1e-10);
        }
    }

    #[test]
    fn step_over_the_history_equals_the_parallel_form() {
        tch::manual_seed(1);
        let (u, k, d) = (rand(&[2, 6, 3]), rand(&[3, 8]), rand(&[3]));
        let y = long_conv(&u, &k, Some(&d), KernelPath::Reference);
        for t in 0..6 {
            let s = long_conv_step(&u.narrow(1, 0, t + 1), &k, Some(&d));
            assert!(max_err(&s, &y.select(1, t)) < 1e-12);
        }
    }

    #[test]
    fn auto_picks_the_cheaper_algorithm_and_records_its_flops() {
        assert_eq!(algorithm(1), Algorithm::Direct);
        assert_eq!(algorithm(77), Algorithm::Direct);
        assert_eq!(algorithm(78), Algorithm::Fft);
        assert_eq!(algorithm(4096), Algorithm::Fft);
        // N = 2T = 512: 5 * 512 * 9 + 6 * 257 = 24582 per channel, over 256 tokens.
        assert!((fft_flops_per_token(256) - 24582.0 / 256.0).abs() < 1e-12);
        let (u, k) = (rand(&[2, 5, 3]), rand(&[3, 5]));
        for path in [KernelPath::Auto, KernelPath::Reference] {
            let c = flop_count::Counter::start();
            let _ = long_conv(&u, &k, None, path);
            assert_eq!(c.total(), 2.0 * 5.0 * 3.0 * 6.0); // B * T * C * (T + 1)
        }
    }

    #[test]
    fn direct_is_exactly_causal() {
        let (u, k) = (rand(&[1, 9, 2]), rand(&[2, 9]));
        let y = direct(&u, &k);
        let u2 = u.copy();
        u2.narrow(1, 5, 4).copy_(&rand(&[1, 4, 2]));
        let y2 = direct(&u2, &k);
        assert_eq!(max_err(&y.narrow(1, 0, 5), &y2.narrow(1, 0, 5)), 0.0);
    }

    /// Autograd gradients of both fast algorithms against central finite differences of the reference.
    #[test]
    fn gradients_match_finite_differences_of_the_reference() {
        tch::manual_seed(2);
        let (t, c) = (5, 2);
        let u = rand(&[2, t, c]);
        let k = rand(&[c, t]);
        let w = rand(&[2, t, c]); // loss = sum(w * y)
        let loss_ref = |u: &Tensor, k: &Tensor| (reference(u, k) * &w).sum(Kind::Double).double_value(&[]);
        let eps = 1e-6;
        let fd = |x: &Tensor, f: &dyn Fn(&Tensor) -> f64| -> Tensor {
            let g = x.zeros_like();
            for i in 0..x.numel() as i64 {
                let flat = x.view([-1]);
                let (plus, minus) = (x.copy(), x.copy());
                let _ = plus.view([-1]).get(i).fill_(flat.double_value(&[i]) + eps);
                let _ = minus.view([-1]).get(i).fill_(flat.double_value(&[i]) - eps);
                let _ = g.view([-1]).get(i).fill_((f(&plus) - f(&minus)) / (2.0 * eps));
            }
            g
        };
        let gu_fd = fd(&u, &|u| loss_ref(u, &k));
        let gk_fd = fd(&k, &|k| loss_ref(&u, k));
        for algo in [Algorithm::Direct, Algorithm::Fft] {
            let (ua, ka) = (u.copy().set_requires_grad(true), k.copy().set_requires_grad(true));
            let y = match algo {
                Algorithm::Direct => direct(&ua, &ka),
                Algorithm::Fft => fft(&ua, &ka),
            };
            (y * &w).sum(Kind::Double).backward();
            assert!(max_err(&ua.grad(), &gu_fd) < 1e-7, "{algo:?} du");
            assert!(max_err(&ka.grad(), &gk_fd) < 1e-7, "{algo:?} dk");
        }
    }
}
