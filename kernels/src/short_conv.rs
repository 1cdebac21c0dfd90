//! Short causal depthwise convolution, fused with its activation: the local token mixing in front of
//! Mamba's scan, Hyena's and H3's projections and zoology's BaseConv.
//!
//! ```text
//! y[b, t, c] = act( bias[c] + sum_{j=0..k-1} w[c, j] * x[b, t - (k-1) + j, c] )    (x before 0 is 0)
//! ```
//! Shapes: x `[B, T, C]`, w `[C, k]`, bias `[C]` (optional). FLOPs: 2*k*C per token (multiply-adds of
//! the taps). Recurrent form: the state is the last k-1 inputs `[B, k-1, C]`.

use crate::flop_count;
use crate::KernelPath;
use tch::{Kind, Tensor};

/// The activation fused after the convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Identity,
    Silu,
}

fn activate(y: Tensor, act: Activation) -> Tensor {
    match act {
        Activation::Identity => y,
        Activation::Silu => y.silu(),
    }
}

/// Causal depthwise convolution over time; see the module note.
pub fn short_conv(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, act: Activation, path: KernelPath) -> Tensor {
    let (b, t, c) = x.size3().expect("short_conv: x must be [B, T, C]");
    let k = w.size()[1];
    assert_eq!(w.size()[0], c, "short_conv: weight must be [C, k] with C = {c}");
    flop_count::record(2.0 * (b * t * c * k) as f64);
    let path = crate::cuda_ext::resolve(path);
    // CUDA tensors on the Auto path: our fused kernel (csrc/short_conv.cu) when its library is loaded.
    if path == KernelPath::Auto && x.device().is_cuda() {
        // Under bf16 autocast the input arrives in bf16 while the weights stay float32: run in the input's
        // precision, as autocast runs conv1d (the casts are differentiable, so the float32 weights get
        // their gradients).
        let (w, bias) = match x.kind() {
            k @ (Kind::BFloat16 | Kind::Half) if w.kind() != k => (w.to_kind(k), bias.map(|b| b.to_kind(k))),
            _ => (w.shallow_clone(), bias.map(|b| b.shallow_clone())),
        };
        if let Some(y) = crate::cuda_ext::short_conv_auto(x, &w, bias.as_ref(), act) {
            return y;
        }
    }
    let y = match path {
        KernelPath::Auto => {
            // conv1d wants [B, C, T]; left-pad k-1 zeros for causality.
            let xt = x.transpose(1, 2).constant_pad_nd([k - 1, 0]); // [B, C, T + k - 1]
            xt.conv1d(&w.unsqueeze(1), bias, [1], [0], [1], c).transpose(1, 2) // [B, T, C]
        }
        KernelPath::Reference => {
            let padded = x.constant_pad_nd([0, 0, k - 1, 0]); // [B, T + k - 1, C]
            let mut y = match bias {
                Some(bias) => bias.expand([b, t, c], false).copy(),
                None => x.zeros_like(),
            };
            for j in 0..k {
                y += padded.narrow(1, j, t) * w.select(1, j); // tap j reads x[t - (k-1) + j]
            }
            y
        }
    };
    activate(y, act)
}

/// One step: `x [B, C]` with `state [B, k-1, C]` (the previous k-1 inputs) -> `(y [B, C], new state)`.
pub fn short_conv_step(
    x: &Tensor,
    state: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    act: Activation,
) -> (Tensor, Tensor) {
    let k = w.size()[1];
    let window = Tensor::cat(&[state, &x.unsqueeze(1)], 1); // [B, k, C]
    let mut y = (window * w.transpose(0, 1).unsqueeze(0)).sum_dim_intlist(1, false, x.kind()); // [B, C]
    if let Some(bias) = bias {
        y += bias;
    }
    let new_state =
        if k > 1 { Tensor::cat(&[state, &x.unsqueeze(1)], 1).narrow(1, 1, k - 1) } else { state.shallow_clone() };
    (activate(y, act), new_state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn fused_reference_and_step_agree_in_float64() {
        tch::manual_seed(0);
        for (t, c, k) in [(1, 3, 4), (7, 5, 3), (9, 2, 1), (4, 6, 4)] {
            let opts = (Kind::Double, Device::Cpu);
            let (x, w, bias) = (Tensor::randn([2, t, c], opts), Tensor::randn([c, k], opts), Tensor::randn([c], opts));
            for act in [Activation::Identity, Activation::Silu] {
                let a = short_conv(&x, &w, Some(&bias), act, KernelPath::Auto);
                let r = short_conv(&x, &w, Some(&bias), act, KernelPath::Reference);
                assert!((&a - &r).abs().max().double_value(&[]) < 1e-12);
                let mut state = Tensor::zeros([2, k - 1, c], opts);
                let mut ys = Vec::new();
                for i in 0..t {
                    let (y, s) = short_conv_step(&x.select(1, i), &state, &w, Some(&bias), act);
                    ys.push(y);
                    state = s;
                }
                assert!((Tensor::stack(&ys, 1) - &r).abs().max().double_value(&[]) < 1e-12);
            }
        }
    }

    #[test]
    fn causal() {
        let opts = (Kind::Double, Device::Cpu);
        let (x, w) = (Tensor::randn([1, 6, 2], opts), Tensor::randn([2, 3], opts));
        let y = short_conv(&x, &w, None, Activation::Identity, KernelPath::Auto);
        let x2 = x.copy();
        x2.narrow(1, 4, 2).copy_(&Tensor::randn([1, 2, 2], opts));
        let y2 = short_conv(&x2, &w, None, Activation::Identity, KernelPath::Auto);
        assert_eq!((y.narrow(1, 0, 4) - y2.narrow(1, 0, 4)).abs().max().double_value(&[]), 0.0);
    }
}
