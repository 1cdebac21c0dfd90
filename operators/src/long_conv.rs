//! The long-convolution family's shared implicit filter (Hyena's, Poli et al. 2023, arXiv 2302.10866,
//! Sec. 3.3 and Algorithm 2) and zoology's `base_conv` (Arora et al. 2023, "Zoology", arXiv 2312.04927).
//! `hyena` and `h3` live in their own files.
//!
//! ## Implicit filter (used by `hyena` and `base_conv`)
//! ```text
//! z_i = [t_i, cos(2 pi k i / l_max), -sin(2 pi k i / l_max) for k = 1..K]   t_i = i / (l_max - 1)
//!       (emb_dim odd: t and K = (emb_dim - 1)/2 bands; even: K = emb_dim/2 bands without t)
//! h_i = FFN(z_i) = W_out sin(w (W_2 sin(w (W_1 sin(w (W_0 z_i + b_0)) + b_1)) + b_2))    [channels]
//! h_i <- h_i * (exp(-t_i |delta_c|) + shift)        delta_c = linspace(ln(target)/slow, ln(target)/fast)
//! ```
//! The FFN has width `filter_order`, two inner layers, and one trainable frequency vector `w` [width]
//! shared by its sine activations (initialised to `sin_freq`), as the reference code. Band k runs from 1:
//! the reference code's first band has frequency ~0, a constant feature that the first layer's bias
//! already provides. `l_max` fixes the time normalisation so that a filter tap depends only on its lag
//! (and `step` equals `forward`); longer sequences evaluate the FFN past t = 1.
//! Init: the FFN layers as PyTorch's `nn.Linear` (U(+-1/sqrt(fan_in)) for weights and biases), as the
//! reference; all filter parameters are in `NO_DECAY` (the reference trains them with weight decay 0).
//! The decay rates are constants. Generating the filter depends only on the parameters, once per forward
//! for the whole batch, and is not counted in FLOPs (see `kernels::long_conv`).
//!
//! ## base_conv
//! ```text
//! y = (u W + b_1) * (h * u + u + b_2)      long filter h (implicit or explicit [d, l_max]); the `+ u` is
//!                                          zoology's fft_conv skip
//! y = (u W + b_1) * (shortconv_k(u) + b_2) short filter
//! with `act`: silu on both factors.
//! ```
//! Shapes: u `[B, T, d]`. There is no output projection and, unlike zoology's module, no internal `+ u`
//! residual: the block adds the residual.
//! Accounting: params d^2 + d (projection) + d (b_2) + filter (implicit: e*F + F + 2(F^2 + F) + F*d + F;
//! explicit: d*l_max; short: d*k). FLOPs per token: 2d^2 + d*conv(T) (long; conv(T) from
//! `kernels::long_conv::flops_per_token`) or 2d^2 + 2kd (short). State: long: T*d (the exact recurrent
//! form keeps every input), short: (k-1)*d.
//! Init: projection N(0, 0.02^2); explicit filter N(0, 1) as zoology's `LongConvolution`; short filter and
//! its bias as PyTorch's `Conv1d` (U(+-1/sqrt(k))); b_2 of the long filters 0.

use crate::mixer::{SequenceMixer, State};
use crate::nn::{Linear, DECAY, INIT_STD, NO_DECAY};
use crate::registry::{BuildCtx, Built, Family, MixerSpec};
use kernels::long_conv::{flops_per_token as conv_flops, long_conv, long_conv_step};
use kernels::short_conv::{short_conv, short_conv_step, Activation};
use kernels::KernelPath;
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;
use tch::nn::{Init, Path};
use tch::{Kind, Tensor};

/// Settings of an implicit filter.
#[derive(Clone, Debug, PartialEq)]
pub struct FilterConfig {
    pub channels: i64,
    pub emb_dim: i64,
    /// FFN width (`filter_order`).
    pub width: i64,
    pub l_max: i64,
    pub sin_freq: f64,
    pub fast_decay_pct: f64,
    pub slow_decay_pct: f64,
    pub decay_target: f64,
    pub decay_shift: f64,
}

impl FilterConfig {
    /// Trainable parameters: the FFN (three biased layers, an unbiased output layer) and the sine frequencies.
    pub fn params(&self) -> i64 {
        let (e, f, c) = (self.emb_dim, self.width, self.channels);
        e * f + f + 2 * (f * f + f) + f * c + f
    }

    /// Validates the shape parameters: `Err((param, message))`.
    pub fn check(&self) -> Result<(), (String, String)> {
        let err = |p: &str, m: String| Err((p.to_string(), m));
        if self.emb_dim < 1 {
            return err("emb_dim", format!("must be at least 1 (t alone), got {}", self.emb_dim));
        }
        if self.width < 1 {
            return err("filter_order", format!("the filter FFN width must be at least 1, got {}", self.width));
        }
        if self.l_max < 2 {
            return err("l_max", format!("must be at least 2, got {}", self.l_max));
        }
        if !(self.sin_freq > 0.0) || !self.sin_freq.is_finite() {
            return err("sin_freq", format!("must be a positive number, got {}", self.sin_freq));
        }
        for (name, v) in [("fast_decay_pct", self.fast_decay_pct), ("slow_decay_pct", self.slow_decay_pct)] {
            if !(v > 0.0) || !v.is_finite() {
                return err(name, format!("must be a positive number, got {v}"));
            }
        }
        if !(self.decay_target > 0.0 && self.decay_target < 1.0) {
            return err("decay_target", format!("must lie strictly between 0 and 1, got {}", self.decay_target));
        }
        if !self.decay_shift.is_finite() {
            return err("decay_shift", format!("must be finite, got {}", self.decay_shift));
        }
        Ok(())
    }
}

/// Hyena's implicit long filter: a sine-activated FFN over positional features, times a decay window.
#[derive(Debug)]
pub struct ImplicitFilter {
    cfg: FilterConfig,
    /// `(weight [out, in], bias [out])` of the three biased layers.
    layers: Vec<(Tensor, Tensor)>,
    /// `[channels, width]`, no bias.
    out: Tensor,
    /// `[width]` frequency of the sine activations.
    freq: Tensor,
}

/// PyTorch's default `nn.Linear`/`nn.Conv1d` init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
pub(crate) fn torch_default(fan_in: i64) -> Init {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Init::Uniform { lo: -bound, up: bound }
}

impl ImplicitFilter {
    /// Parameters under `p`: `l0..l2.{weight,bias}`, `out.weight`, `freq`; all in `NO_DECAY`.
    pub fn new(p: &Path, cfg: &FilterConfig) -> ImplicitFilter {
        let p = p.set_group(NO_DECAY);
        let (e, f) = (cfg.emb_dim, cfg.width);
        let layers = [(e, f), (f, f), (f, f)]
            .iter()
            .enumerate()
            .map(|(i, &(fan_in, out))| {
                let l = &p / format!("l{i}");
                (l.var("weight", &[out, fan_in], torch_default(fan_in)), l.var("bias", &[out], torch_default(fan_in)))
            })
            .collect();
        ImplicitFilter {
            layers,
            out: (&p / "out").var("weight", &[cfg.channels, f], torch_default(f)),
            freq: p.var("freq", &[f], Init::Const(cfg.sin_freq)),
            cfg: cfg.clone(),
        }
    }

    /// Positional features `z [len, emb_dim]` and normalised times `t [len, 1]` (float64, on `device`).
    fn features(&self, len: i64, device: tch::Device) -> (Tensor, Tensor) {
        let opts = (Kind::Double, device);
        let i = Tensor::arange(len, opts).unsqueeze(1); // [len, 1]
        let t = &i / (self.cfg.l_max - 1) as f64;
        let bands = self.cfg.emb_dim / 2;
        let mut parts = Vec::new();
        if self.cfg.emb_dim % 2 == 1 {
            parts.push(t.shallow_clone());
        }
        if bands > 0 {
            let k = Tensor::arange_start(1, bands + 1, opts).unsqueeze(0); // [1, K]
            let angle = &i * k * (2.0 * PI / self.cfg.l_max as f64); // [len, K]
            parts.push(angle.cos());
            parts.push(-angle.sin());
        }
        (Tensor::cat(&parts, 1), t)
    }

    /// The filter over positions `0..len`: `[channels, len]`, in the parameters' dtype.
    pub fn filter(&self, len: i64) -> Tensor {
        let (device, kind) = (self.out.device(), self.out.kind());
        let (z, t) = self.features(len, device);
        let mut h = z.to_kind(kind); // [len, e]
        for (w, b) in &self.layers {
            h = (h.matmul(&w.tr()) + b).multiply(&self.freq).sin(); // [len, F]
        }
        let h = h.matmul(&self.out.tr()); // [len, C]
        let c = &self.cfg;
        let ln = c.decay_target.ln();
        let deltas = Tensor::linspace(ln / c.slow_decay_pct, ln / c.fast_decay_pct, c.channels, (Kind::Double, device));
        let window = (-(t * deltas.abs().unsqueeze(0))).exp() + c.decay_shift; // [len, C]
        (h * window.to_kind(kind)).tr() // [C, len]
    }
}

/// Which filter `base_conv` convolves with.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BaseConvFilter {
    /// Hyena's implicit filter (zoology's `ImplicitLongConvolution`).
    Implicit,
    /// A free `[d, l_max]` filter (zoology's `LongConvolution`).
    Explicit,
    /// A short depthwise causal convolution of `short_kernel` taps (zoology's `ShortConvolution`).
    Short,
}

/// `base_conv` parameters.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BaseConvSpec {
    #[serde(default = "default_filter")]
    pub filter: BaseConvFilter,
    /// Time normalisation of the implicit filter; length of the explicit one (the longest sequence).
    #[serde(default = "default_l_max")]
    pub l_max: i64,
    /// Width of the implicit filter's FFN.
    #[serde(default = "default_base_filter_order")]
    pub filter_order: i64,
    /// Positional features of the implicit filter.
    #[serde(default = "default_emb_dim")]
    pub emb_dim: i64,
    /// Taps of the short filter.
    #[serde(default = "default_short_kernel")]
    pub short_kernel: i64,
    /// SiLU on both factors of the product.
    #[serde(default)]
    pub act: bool,
}

/// Implicit: the long-convolution form zoology's paper analyses.
pub fn default_filter() -> BaseConvFilter {
    BaseConvFilter::Implicit
}
/// 256: the longest sequences of CPU sweeps; set it to the task's sequence length, as zoology does.
pub fn default_l_max() -> i64 {
    256
}
/// 16: zoology's `ImplicitLongConvolution` default.
pub fn default_base_filter_order() -> i64 {
    16
}
/// 3: (t, cos, sin), Hyena's and zoology's default.
pub fn default_emb_dim() -> i64 {
    3
}
/// 3: zoology's and Hyena's short filter.
pub fn default_short_kernel() -> i64 {
    3
}

impl Default for BaseConvSpec {
    fn default() -> Self {
        BaseConvSpec {
            filter: default_filter(),
            l_max: default_l_max(),
            filter_order: default_base_filter_order(),
            emb_dim: default_emb_dim(),
            short_kernel: default_short_kernel(),
            act: false,
        }
    }
}

impl BaseConvSpec {
    fn filter_config(&self, d: i64) -> FilterConfig {
        FilterConfig {
            channels: d,
            emb_dim: self.emb_dim,
            width: self.filter_order,
            l_max: self.l_max,
            sin_freq: 1.0,
            fast_decay_pct: 0.3,
            slow_decay_pct: 1.5,
            decay_target: 1e-2,
            decay_shift: 0.0,
        }
    }
}

impl MixerSpec for BaseConvSpec {
    const NAME: &'static str = "base_conv";
    const FAMILY: Family = Family::LongConv;
    const DESCRIPTION: &'static str =
        "zoology's BaseConv: a linear projection gating a long (implicit or explicit) or short convolution";
    const PARAMS: crate::registry::ParamTable = &[
        (
            "filter",
            "implicit|explicit|short",
            "the convolution: Hyena's implicit filter, a free [d, l_max] filter, or a short one",
        ),
        ("l_max", "int", "longest sequence: time normalisation of the implicit filter, length of the explicit one"),
        ("filter_order", "int", "width of the implicit filter's FFN"),
        ("emb_dim", "int", "positional features of the implicit filter (odd: t and (emb_dim-1)/2 sin/cos bands)"),
        ("short_kernel", "int", "taps of the short filter"),
        ("act", "bool", "SiLU on both factors of the product"),
    ];
    const FLOPS_FORMULA: &'static str =
        "2*d^2 + d*conv(T) (long filters; conv(T) = min(T+1, (5N log2 N + 6(N/2+1))/T), \
         N = 2T) or 2*d^2 + 2*k*d (short)";
    const STATE_FORMULA: &'static str = "T*d (long filters: every past input) or (k-1)*d (short)";

    fn check(&self, d: i64) -> Result<(), (String, String)> {
        match self.filter {
            BaseConvFilter::Implicit => self.filter_config(d).check(),
            BaseConvFilter::Explicit if self.l_max < 1 => {
                Err(("l_max".into(), format!("must be at least 1, got {}", self.l_max)))
            }
            BaseConvFilter::Short if self.short_kernel < 1 => {
                Err(("short_kernel".into(), format!("must be at least 1, got {}", self.short_kernel)))
            }
            _ => Ok(()),
        }
    }

    fn params(&self, d: i64) -> i64 {
        let filter = match self.filter {
            BaseConvFilter::Implicit => self.filter_config(d).params(),
            BaseConvFilter::Explicit => d * self.l_max,
            BaseConvFilter::Short => d * self.short_kernel,
        };
        Linear::params(d, d, true) + filter + d
    }

    fn flops_per_token(&self, d: i64, seq_len: i64) -> f64 {
        let conv = match self.filter {
            BaseConvFilter::Short => 2.0 * (self.short_kernel * d) as f64,
            _ => d as f64 * conv_flops(seq_len),
        };
        2.0 * (d * d) as f64 + conv
    }

    fn state_size(&self, d: i64, seq_len: i64) -> i64 {
        match self.filter {
            BaseConvFilter::Short => (self.short_kernel - 1) * d,
            _ => seq_len * d,
        }
    }

    fn build(&self, p: &Path, ctx: &BuildCtx) -> Built {
        Built::Sequence(Box::new(BaseConv::new(p, self, ctx)))
    }
}

/// The convolution a built `base_conv` runs.
#[derive(Debug)]
enum Conv {
    Implicit(ImplicitFilter),
    Explicit(Tensor),
    Short(Tensor),
}

/// The built BaseConv.
#[derive(Debug)]
pub struct BaseConv {
    proj: Linear,
    conv: Conv,
    /// `[d]` b_2, the bias of the convolution branch.
    bias: Tensor,
    act: bool,
    l_max: i64,
    path: KernelPath,
}

impl BaseConv {
    pub fn new(p: &Path, spec: &BaseConvSpec, ctx: &BuildCtx) -> BaseConv {
        let d = ctx.d_model;
        let c = p / "conv";
        let (conv, bias_init) = match spec.filter {
            BaseConvFilter::Implicit => {
                (Conv::Implicit(ImplicitFilter::new(&c, &spec.filter_config(d))), Init::Const(0.0))
            }
            BaseConvFilter::Explicit => {
                let w = c.set_group(DECAY).var("filter", &[d, spec.l_max], Init::Randn { mean: 0.0, stdev: 1.0 });
                (Conv::Explicit(w), Init::Const(0.0))
            }
            BaseConvFilter::Short => {
                let k = spec.short_kernel;
                (Conv::Short(c.set_group(DECAY).var("weight", &[d, k], torch_default(k))), torch_default(k))
            }
        };
        BaseConv {
            proj: Linear::new(&(p / "proj"), d, d, INIT_STD, true),
            conv,
            bias: c.set_group(NO_DECAY).var("bias", &[d], bias_init),
            act: spec.act,
            l_max: spec.l_max,
            path: ctx.kernel_path,
        }
    }

    /// The long filter over `len` positions: `[d, len]`.
    fn long_filter(&self, len: i64) -> Tensor {
        match &self.conv {
            Conv::Implicit(f) => f.filter(len),
            Conv::Explicit(w) => {
                assert!(len <= self.l_max, "base_conv: sequence length {len} exceeds the explicit filter's l_max");
                w.narrow(1, 0, len)
            }
            Conv::Short(_) => unreachable!("short filters have no long filter"),
        }
    }

    fn gate(&self, conv: Tensor, proj: Tensor) -> Tensor {
        if self.act {
            conv.silu() * proj.silu()
        } else {
            conv * proj
        }
    }
}

impl SequenceMixer for BaseConv {
    fn forward(&self, u: &Tensor) -> Tensor {
        let t = u.size()[1]; // u: [B, T, d]
        let conv = match &self.conv {
            Conv::Short(w) => short_conv(u, w, Some(&self.bias), Activation::Identity, self.path),
            _ => long_conv(u, &self.long_filter(t), None, self.path) + u + &self.bias,
        };
        self.gate(conv, self.proj.forward(u))
    }

    /// Short filter: its last k-1 inputs `[B, k-1, d]`; long filters: every input so far `[B, t, d]`.
    fn init_state(&self, batch: i64) -> State {
        let d = self.bias.size()[0];
        let rows = match &self.conv {
            Conv::Short(w) => w.size()[1] - 1,
            _ => 0,
        };
        State { tensors: vec![Tensor::zeros([batch, rows, d], (self.bias.kind(), self.bias.device()))], position: 0 }
    }

    fn step(&self, u: &Tensor, state: &mut State) -> Tensor {
        let conv = match &self.conv {
            Conv::Short(w) => {
                let (y, s) = short_conv_step(u, &state.tensors[0], w, Some(&self.bias), Activation::Identity);
                state.tensors[0] = s;
                y
            }
            _ => {
                let history = Tensor::cat(&[&state.tensors[0], &u.unsqueeze(1)], 1); // [B, t+1, d]
                let y = long_conv_step(&history, &self.long_filter(state.position + 1), None) + u + &self.bias;
                state.tensors[0] = history;
                y
            }
        };
        state.position += 1;
        self.gate(conv, self.proj.forward(u))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::VarStore;
    use tch::Device;

    fn cfg(emb_dim: i64) -> FilterConfig {
        BaseConvSpec { emb_dim, ..Default::default() }.filter_config(6)
    }

    #[test]
    fn filter_taps_depend_only_on_their_lag_and_decay_as_the_window() {
        let vs = VarStore::new(Device::Cpu);
        for e in [1, 3, 4, 5] {
            let f = ImplicitFilter::new(&(vs.root() / e), &cfg(e));
            let (z, _) = f.features(10, Device::Cpu);
            assert_eq!(z.size(), [10, e]);
            let (long, short) = (f.filter(12), f.filter(5));
            assert_eq!(long.size(), [6, 12]);
            assert!((long.narrow(1, 0, 5) - short).abs().max().double_value(&[]) < 1e-6);
        }
        // Window at t = 1 (i = l_max - 1): exp(-|delta|) runs from target^(1/1.5) to target^(1/0.3).
        let f = ImplicitFilter::new(&(vs.root() / "w"), &cfg(3));
        let (_, t) = f.features(256, Device::Cpu);
        assert!((t.double_value(&[255, 0]) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn filter_init_follows_torch_linear_and_every_filter_parameter_is_not_decayed() {
        let vs = VarStore::new(Device::Cpu);
        let _f = ImplicitFilter::new(&(vs.root() / "f"), &FilterConfig { width: 64, ..cfg(3) });
        for (name, t) in vs.variables() {
            let max = t.abs().max().double_value(&[]);
            if name.ends_with("freq") {
                assert_eq!(max, 1.0);
            } else {
                let fan_in = if name.starts_with("f.l0") { 3.0 } else { 64.0 };
                assert!(max <= 1.0 / f64::sqrt(fan_in), "{name}: {max}");
            }
        }
        let vars = vs.variables_.lock().unwrap();
        assert!(vars.trainable_variables.iter().all(|v| v.group == NO_DECAY));
    }
}
