//! zoology's BaseConv (Arora et al. 2023, "Zoology: Measuring and Improving Recall in Efficient Language
//! Models", arXiv 2312.04927): a linear projection gating a convolution.
//!
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

use crate::long_conv::{
    default_emb_dim, default_l_max, default_short_kernel, torch_default, FilterConfig, ImplicitFilter,
};
use crate::mixer::{SequenceMixer, State};
use crate::nn::{Linear, DECAY, INIT_STD, NO_DECAY};
use crate::registry::{BuildCtx, Built, Family, MixerSpec};
use kernels::long_conv::{flops_per_token as conv_flops, long_conv, long_conv_step};
use kernels::short_conv::{short_conv, short_conv_step, Activation};
use kernels::KernelPath;
use serde::{Deserialize, Serialize};
use tch::nn::{Init, Path};
use tch::Tensor;

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
/// 16: zoology's `ImplicitLongConvolution` default.
pub fn default_base_filter_order() -> i64 {
    16
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

    fn output_params() -> &'static [&'static str] {
        &["proj.weight", "proj.bias"]
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
    use tch::{Device, Kind};

    fn build(spec: &BaseConvSpec) -> (VarStore, BaseConv) {
        let mut vs = VarStore::new(Device::Cpu);
        let ctx = BuildCtx { d_model: 8, layer: 0, n_blocks: 1, kernel_path: KernelPath::Auto };
        let m = BaseConv::new(&vs.root(), spec, &ctx);
        vs.set_kind(Kind::Double);
        (vs, m)
    }

    /// forward is (u W + b_1) * (h * u + u + b_2), written out with the reference convolution.
    #[test]
    fn long_filter_forward_is_the_zoology_equation() {
        tch::manual_seed(5);
        for filter in [BaseConvFilter::Implicit, BaseConvFilter::Explicit] {
            let (_vs, mut m) = build(&BaseConvSpec { filter, l_max: 16, ..Default::default() });
            tch::no_grad(|| m.bias.copy_(&Tensor::randn([8], (Kind::Double, Device::Cpu))));
            let u = Tensor::randn([2, 11, 8], (Kind::Double, Device::Cpu));
            let h = m.long_filter(11);
            let conv = kernels::long_conv::reference(&u, &h) + &u + &m.bias;
            let want = (u.matmul(&m.proj.weight.tr()) + m.proj.bias.as_ref().unwrap()) * conv;
            let err = (tch::no_grad(|| m.forward(&u)) - want).abs().max().double_value(&[]);
            assert!(err < 1e-10, "{filter:?}: {err}");
        }
    }

    #[test]
    fn explicit_filter_is_standard_normal_as_zoology() {
        let (_vs, m) = build(&BaseConvSpec { filter: BaseConvFilter::Explicit, l_max: 512, ..Default::default() });
        let Conv::Explicit(w) = &m.conv else { panic!("explicit filter expected") };
        let std = w.std(true).double_value(&[]);
        assert!((std - 1.0).abs() < 0.05, "{std}");
    }
}
