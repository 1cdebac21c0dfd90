//! The order-N Hyena operator (Poli et al. 2023, "Hyena Hierarchy", arXiv 2302.10866, Definition 3.1 and
//! Algorithm 3).
//!
//! ```text
//! (x^1, ..., x^N, v) = split(shortconv_k(u W_in + b_in))     u: [B, T, d]; each part [B, T, d]
//! h^1..h^N = implicit filters (long_conv.rs), D^1..D^N biases  h^n: [d, T]
//! z^1 = v;  z^{n+1} = x^n * (h^n * z^n + D^n z^n)  for n = 1..N     (* = causal long convolution)
//! y = z^{N+1} W_out + b_out                                          [B, T, d]
//! ```
//! `order` is the paper's N: N long convolutions and N + 1 projections. (The safari/zoology code's
//! `order=2` is the paper's N = 1 with one more gate in front, x^0 * (h * (x^1 * v)).)
//!
//! Recurrent form: a long convolution has no finite state; `step` keeps every input of each long
//! convolution so that it equals `forward` exactly, and the state grows with T.
//!
//! Accounting (N = order, k = short_kernel, F = filter_order, e = emb_dim, conv(T) the per-channel
//! long-convolution FLOPs per token of `kernels::long_conv`):
//! - params: (N+1)(d^2 + d) in_proj + (N+1)d(k + 1) short conv + e*F + F + 2(F^2 + F) + F*N*d + F
//!   filter FFN + N*d biases D + d^2 + d out_proj
//! - FLOPs per token: 2d(N+1)d + 2k(N+1)d + N*d*conv(T) + 2d^2 (the filter FFN is not counted: it depends
//!   only on the parameters)
//! - state after T tokens: (k-1)(N+1)d (short conv) + T*N*d (long convolution inputs)
//!
//! Init: in/out projections N(0, 0.02^2) (out: 0.02/sqrt(2 n_blocks)) with zero biases; the short conv as
//! PyTorch's `Conv1d` (U(+-1/sqrt(k))); the filter as in long_conv.rs; D ~ N(0, 1) as the reference code.

use crate::long_conv::{torch_default, FilterConfig, ImplicitFilter};
use crate::mixer::{SequenceMixer, State};
use crate::nn::{residual_std, Linear, DECAY, INIT_STD, NO_DECAY};
use crate::registry::{BuildCtx, Built, Family, MixerSpec};
use kernels::long_conv::{flops_per_token as conv_flops, long_conv_gated, long_conv_step};
use kernels::short_conv::{short_conv, short_conv_step, Activation};
use kernels::KernelPath;
use serde::{Deserialize, Serialize};
use tch::nn::{Init, Path};
use tch::Tensor;

/// `hyena` parameters.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HyenaSpec {
    /// N: long convolutions (and N + 1 projections).
    #[serde(default = "default_order")]
    pub order: i64,
    /// Width of the filter FFN.
    #[serde(default = "default_filter_order")]
    pub filter_order: i64,
    /// Positional features fed to the filter FFN.
    #[serde(default = "crate::long_conv::default_emb_dim")]
    pub emb_dim: i64,
    /// Time normalisation of the filter: t = i / (l_max - 1).
    #[serde(default = "crate::long_conv::default_l_max")]
    pub l_max: i64,
    /// Taps of the short convolution on the projections.
    #[serde(default = "crate::long_conv::default_short_kernel")]
    pub short_kernel: i64,
    /// Initial frequency w of the filter's sine activations.
    #[serde(default = "default_sin_freq")]
    pub sin_freq: f64,
    /// The fastest-decaying channel reaches `decay_target` at this fraction of l_max.
    #[serde(default = "default_fast_decay_pct")]
    pub fast_decay_pct: f64,
    /// The slowest-decaying channel reaches `decay_target` at this fraction of l_max.
    #[serde(default = "default_slow_decay_pct")]
    pub slow_decay_pct: f64,
    /// Window value the decay rates are set to reach.
    #[serde(default = "default_decay_target")]
    pub decay_target: f64,
    /// Constant added to the decay window.
    #[serde(default)]
    pub decay_shift: f64,
}

/// 2: the paper's default depth of the recurrence.
pub fn default_order() -> i64 {
    2
}
/// 64: the paper's FFN width.
pub fn default_filter_order() -> i64 {
    64
}
/// 1: the paper's sine frequency.
pub fn default_sin_freq() -> f64 {
    1.0
}
/// 0.3: the reference ExponentialModulation.
pub fn default_fast_decay_pct() -> f64 {
    0.3
}
/// 1.5: the reference ExponentialModulation.
pub fn default_slow_decay_pct() -> f64 {
    1.5
}
/// 0.01: the reference ExponentialModulation.
pub fn default_decay_target() -> f64 {
    1e-2
}

impl Default for HyenaSpec {
    fn default() -> Self {
        HyenaSpec {
            order: default_order(),
            filter_order: default_filter_order(),
            emb_dim: crate::long_conv::default_emb_dim(),
            l_max: crate::long_conv::default_l_max(),
            short_kernel: crate::long_conv::default_short_kernel(),
            sin_freq: default_sin_freq(),
            fast_decay_pct: default_fast_decay_pct(),
            slow_decay_pct: default_slow_decay_pct(),
            decay_target: default_decay_target(),
            decay_shift: 0.0,
        }
    }
}

impl HyenaSpec {
    fn filter_config(&self, d: i64) -> FilterConfig {
        FilterConfig {
            channels: self.order * d,
            emb_dim: self.emb_dim,
            width: self.filter_order,
            l_max: self.l_max,
            sin_freq: self.sin_freq,
            fast_decay_pct: self.fast_decay_pct,
            slow_decay_pct: self.slow_decay_pct,
            decay_target: self.decay_target,
            decay_shift: self.decay_shift,
        }
    }
}

impl MixerSpec for HyenaSpec {
    const NAME: &'static str = "hyena";
    const FAMILY: Family = Family::LongConv;
    const DESCRIPTION: &'static str =
        "order-N Hyena: short convolutions on N+1 projections, N implicit long filters (FFT convolutions) and gates";
    const PARAMS: crate::registry::ParamTable = &[
        ("order", "int", "N: long convolutions and gates (N+1 projections)"),
        ("filter_order", "int", "width of the implicit filter's FFN"),
        (
            "emb_dim",
            "int",
            "positional features of the filter (odd: t and (emb_dim-1)/2 sin/cos bands; even: bands only)",
        ),
        ("l_max", "int", "time normalisation of the filter, t = i/(l_max-1); set to the sequence length"),
        ("short_kernel", "int", "taps of the short depthwise convolution on the projections"),
        ("sin_freq", "float", "initial frequency of the filter FFN's sine activations"),
        ("fast_decay_pct", "float", "fraction of l_max where the fastest channel's window reaches decay_target"),
        ("slow_decay_pct", "float", "fraction of l_max where the slowest channel's window reaches decay_target"),
        ("decay_target", "float", "window value that defines the decay rates"),
        ("decay_shift", "float", "constant added to the decay window"),
    ];
    const FLOPS_FORMULA: &'static str = "2*d*(N+1)*d + 2*k*(N+1)*d + N*d*conv(T) + 2*d^2, \
         conv(T) = min(T+1, (5*M*log2 M + 6*(M/2+1))/T) with M = 2T";
    const STATE_FORMULA: &'static str = "(k-1)*(N+1)*d + T*N*d (the exact recurrent form keeps every long-conv input)";

    fn check(&self, d: i64) -> Result<(), (String, String)> {
        if self.order < 1 {
            return Err(("order".into(), format!("must be at least 1, got {}", self.order)));
        }
        if self.short_kernel < 1 {
            return Err(("short_kernel".into(), format!("must be at least 1, got {}", self.short_kernel)));
        }
        self.filter_config(d).check()
    }

    fn params(&self, d: i64) -> i64 {
        let (n, k) = (self.order, self.short_kernel);
        Linear::params(d, (n + 1) * d, true)
            + (n + 1) * d * (k + 1)
            + self.filter_config(d).params()
            + n * d
            + Linear::params(d, d, true)
    }

    fn flops_per_token(&self, d: i64, seq_len: i64) -> f64 {
        let (n, k, d_) = (self.order as f64, self.short_kernel as f64, d as f64);
        2.0 * d_ * (n + 1.0) * d_ + 2.0 * k * (n + 1.0) * d_ + n * d_ * conv_flops(seq_len) + 2.0 * d_ * d_
    }

    fn state_size(&self, d: i64, seq_len: i64) -> i64 {
        (self.short_kernel - 1) * (self.order + 1) * d + seq_len * self.order * d
    }

    fn output_params() -> &'static [&'static str] {
        &["out_proj.weight", "out_proj.bias"]
    }
    fn build(&self, p: &Path, ctx: &BuildCtx) -> Built {
        Built::Sequence(Box::new(Hyena::new(p, self, ctx)))
    }
}

/// The built Hyena operator.
#[derive(Debug)]
pub struct Hyena {
    in_proj: Linear,
    /// `[(N+1)d, k]` and `[(N+1)d]`.
    conv_weight: Tensor,
    conv_bias: Tensor,
    filter: ImplicitFilter,
    /// `[N*d]`: D^1..D^N.
    filter_bias: Tensor,
    out_proj: Linear,
    order: i64,
    d: i64,
    path: KernelPath,
}

impl Hyena {
    pub fn new(p: &Path, spec: &HyenaSpec, ctx: &BuildCtx) -> Hyena {
        let (d, n, k) = (ctx.d_model, spec.order, spec.short_kernel);
        let conv = p / "short_conv";
        Hyena {
            in_proj: Linear::new(&(p / "in_proj"), d, (n + 1) * d, INIT_STD, true),
            conv_weight: conv.set_group(DECAY).var("weight", &[(n + 1) * d, k], torch_default(k)),
            conv_bias: conv.set_group(NO_DECAY).var("bias", &[(n + 1) * d], torch_default(k)),
            filter: ImplicitFilter::new(&(p / "filter"), &spec.filter_config(d)),
            filter_bias: (p / "filter").set_group(NO_DECAY).var(
                "bias",
                &[n * d],
                Init::Randn { mean: 0.0, stdev: 1.0 },
            ),
            out_proj: Linear::new(&(p / "out_proj"), d, d, residual_std(ctx.n_blocks), true),
            order: n,
            d,
            path: ctx.kernel_path,
        }
    }

    /// Filter n `[d, len]` and its bias D^n `[d]`.
    fn filter_n(&self, h: &Tensor, n: i64) -> (Tensor, Tensor) {
        (h.narrow(0, n * self.d, self.d), self.filter_bias.narrow(0, n * self.d, self.d))
    }
}

impl SequenceMixer for Hyena {
    fn forward(&self, u: &Tensor) -> Tensor {
        let t = u.size()[1]; // u: [B, T, d]
        let z = self.in_proj.forward(u); // [B, T, (N+1)d]
        let z = short_conv(&z, &self.conv_weight, Some(&self.conv_bias), Activation::Identity, self.path);
        let parts = z.split(self.d, -1); // x^1..x^N, v: each [B, T, d]
        let h = self.filter.filter(t); // [N*d, T]
        let mut v = parts[self.order as usize].shallow_clone();
        for n in 0..self.order {
            let (hn, dn) = self.filter_n(&h, n);
            v = long_conv_gated(&v, &hn, Some(&dn), &parts[n as usize], self.path);
            // [B, T, d]: x^n * (h^n * v + D^n v)
        }
        self.out_proj.forward(&v)
    }

    /// `[B, k-1, (N+1)d]` short-conv inputs, then N long-conv input histories `[B, t, d]` (empty).
    fn init_state(&self, batch: i64) -> State {
        let opts = (self.conv_weight.kind(), self.conv_weight.device());
        let (c, k) = self.conv_weight.size2().expect("conv weight is [C, k]");
        let mut tensors = vec![Tensor::zeros([batch, k - 1, c], opts)];
        tensors.extend((0..self.order).map(|_| Tensor::zeros([batch, 0, self.d], opts)));
        State { tensors, position: 0 }
    }

    fn step(&self, u: &Tensor, state: &mut State) -> Tensor {
        let z = self.in_proj.forward(u); // [B, (N+1)d]
        let (z, conv_state) =
            short_conv_step(&z, &state.tensors[0], &self.conv_weight, Some(&self.conv_bias), Activation::Identity);
        state.tensors[0] = conv_state;
        let parts = z.split(self.d, -1); // each [B, d]
        let h = self.filter.filter(state.position + 1); // [N*d, t+1]
        let mut v = parts[self.order as usize].shallow_clone();
        for n in 0..self.order {
            let (hn, dn) = self.filter_n(&h, n);
            let slot = 1 + n as usize;
            let history = Tensor::cat(&[&state.tensors[slot], &v.unsqueeze(1)], 1); // [B, t+1, d]
            v = &parts[n as usize] * long_conv_step(&history, &hn, Some(&dn));
            state.tensors[slot] = history;
        }
        state.position += 1;
        self.out_proj.forward(&v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::VarStore;
    use tch::{Device, Kind};

    #[test]
    fn order_n_has_n_long_convolutions_and_n_plus_1_projections() {
        for order in [1, 2, 3] {
            let spec = HyenaSpec { order, ..Default::default() };
            let vs = VarStore::new(Device::Cpu);
            let ctx = BuildCtx { d_model: 8, layer: 0, n_blocks: 1, kernel_path: KernelPath::Auto };
            let h = Hyena::new(&vs.root(), &spec, &ctx);
            assert_eq!(h.in_proj.weight.size(), [(order + 1) * 8, 8]);
            assert_eq!(h.filter.filter(5).size(), [order * 8, 5]);
            // State after 4 tokens: (k-1)(N+1)d + 4 N d.
            let mut state = h.init_state(1);
            for _ in 0..4 {
                let _ = tch::no_grad(|| h.step(&Tensor::randn([1, 8], (Kind::Float, Device::Cpu)), &mut state));
            }
            assert_eq!(state.elements_per_sequence(1), spec.state_size(8, 4));
        }
    }

    #[test]
    fn filter_bias_is_standard_normal_and_not_decayed() {
        let vs = VarStore::new(Device::Cpu);
        let ctx = BuildCtx { d_model: 64, layer: 0, n_blocks: 1, kernel_path: KernelPath::Auto };
        let h = Hyena::new(&vs.root(), &HyenaSpec::default(), &ctx);
        let std = h.filter_bias.std(true).double_value(&[]);
        assert!((std - 1.0).abs() < 0.15, "std {std}");
        let vars = vs.variables_.lock().unwrap();
        let bias = vars.trainable_variables.iter().find(|v| v.tensor.data_ptr() == h.filter_bias.data_ptr()).unwrap();
        assert_eq!(bias.group, NO_DECAY);
    }
}
