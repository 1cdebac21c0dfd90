//! The state-space family: `mamba` (selective scan S6), `mamba2` (SSD, scalar decay per head, chunked) and
//! `s4d` (diagonal, time-invariant, convolution form). One file per mixer under `ssm/`; this module holds
//! what they share: the short depthwise convolution layer and Mamba's `dt` initialisation (also used by
//! Gated DeltaNet's Mamba-2-style decay).

pub mod mamba;
pub mod mamba2;
pub mod s4d;

use crate::nn::{DECAY, NO_DECAY};
use kernels::short_conv::{short_conv, short_conv_step, Activation};
use kernels::KernelPath;
use tch::nn::{Init, Path};
use tch::{Kind, Tensor};

/// A short causal depthwise convolution with its parameters (`<p>/weight [C, k]`, `<p>/bias [C]`), initialised
/// as PyTorch's `Conv1d` (which Mamba, Mamba-2 and fla use): weight and bias U(±1/sqrt(k)), fan-in = k for a
/// depthwise filter.
#[derive(Debug)]
pub struct ShortConv {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub act: Activation,
}

impl ShortConv {
    pub fn new(p: &Path, channels: i64, k: i64, bias: bool, act: Activation) -> ShortConv {
        let bound = 1.0 / (k as f64).sqrt();
        let weight = p.set_group(DECAY).var("weight", &[channels, k], Init::Uniform { lo: -bound, up: bound });
        let bias =
            bias.then(|| p.set_group(NO_DECAY).var("bias", &[channels], Init::Uniform { lo: -bound, up: bound }));
        ShortConv { weight, bias, act }
    }

    /// Parameters of a `channels`-wide filter of `k` taps.
    pub fn params(channels: i64, k: i64, bias: bool) -> i64 {
        channels * k + if bias { channels } else { 0 }
    }

    /// `x [B, T, C] -> [B, T, C]`; records 2 k C FLOPs per token.
    pub fn forward(&self, x: &Tensor, path: KernelPath) -> Tensor {
        short_conv(x, &self.weight, self.bias.as_ref(), self.act, path)
    }

    /// One token `x [B, C]` with the last k-1 inputs `state [B, k-1, C]`: `(y [B, C], new state)`.
    pub fn step(&self, x: &Tensor, state: &Tensor) -> (Tensor, Tensor) {
        short_conv_step(x, state, &self.weight, self.bias.as_ref(), self.act)
    }

    /// The empty state for `batch` sequences.
    pub fn init_state(&self, batch: i64) -> Tensor {
        let (c, k) = self.weight.size2().expect("conv weight is [C, k]");
        Tensor::zeros([batch, k - 1, c], (self.weight.kind(), self.weight.device()))
    }
}

/// Mamba's `dt` initialisation (Gu & Dao 2023, section 3.6 and the reference code): `dt` log-uniform in
/// `[dt_min, dt_max]`, floored at 1e-4, stored as the bias `<p>/bias` of `softplus(· + bias)` through the
/// inverse softplus `dt + log(-expm1(-dt))`, so `softplus(bias) = dt` exactly. Never decayed.
pub fn dt_bias(p: &Path, size: i64, dt_min: f64, dt_max: f64) -> Tensor {
    let u = Tensor::rand([size], (Kind::Double, p.device()));
    let dt = (u * (dt_max.ln() - dt_min.ln()) + dt_min.ln()).exp().clamp_min(1e-4);
    let inv_softplus = &dt + (-(-&dt).expm1()).log();
    p.set_group(NO_DECAY).var_copy("bias", &inv_softplus)
}

/// Validates a `dt_min`/`dt_max` pair.
pub fn check_dt_range(dt_min: f64, dt_max: f64) -> Result<(), (String, String)> {
    if !(dt_min > 0.0 && dt_min.is_finite()) {
        return Err(("dt_min".into(), format!("must be a positive number, got {dt_min}")));
    }
    if !(dt_max >= dt_min && dt_max.is_finite()) {
        return Err(("dt_max".into(), format!("must be a number >= dt_min ({dt_min}), got {dt_max}")));
    }
    Ok(())
}

/// `Err((param, ...))` unless `value >= min`.
pub fn check_at_least(param: &str, value: i64, min: i64) -> Result<(), (String, String)> {
    if value < min {
        return Err((param.to_string(), format!("must be at least {min}, got {value}")));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod testing {
    //! Checks shared by the state-space and recurrent mixers' unit tests.
    use crate::mixer::SequenceMixer;
    use crate::registry::{BuildCtx, Built, LayerSpec};
    use kernels::KernelPath;
    use tch::nn::VarStore;
    use tch::{Device, Kind, Tensor};

    pub const D: i64 = 16;

    /// Builds `spec` at d_model 16 in float64 with the given kernel path.
    pub fn build(spec: &LayerSpec, path: KernelPath) -> (VarStore, Box<dyn SequenceMixer>) {
        let mut vs = VarStore::new(Device::Cpu);
        let ctx = BuildCtx { d_model: D, layer: 0, n_blocks: 2, kernel_path: path };
        let Built::Sequence(m) = spec.build(&vs.root(), &ctx) else { panic!("not a sequence mixer") };
        vs.set_kind(Kind::Double);
        (vs, m)
    }

    /// The value of a named parameter.
    pub fn param(vs: &VarStore, name: &str) -> Tensor {
        vs.variables().remove(name).unwrap_or_else(|| panic!("no parameter {name}")).detach()
    }

    /// Autograd input gradient of the fast (`Auto`) forward against central finite differences of the
    /// `Reference` forward, on a `[1, 5, 16]` input in float64.
    pub fn input_gradient_matches_finite_differences(spec: &LayerSpec) {
        tch::manual_seed(7);
        let (vs, fast) = build(spec, KernelPath::Auto);
        let (vs_ref, reference) = build(spec, KernelPath::Reference);
        let mut dst = vs_ref;
        dst.copy(&vs).unwrap();
        let x = Tensor::randn([1, 5, D], (Kind::Double, Device::Cpu));
        let w = Tensor::randn([1, 5, D], (Kind::Double, Device::Cpu));
        let xg = x.copy().set_requires_grad(true);
        let g = Tensor::run_backward(&[(fast.forward(&xg) * &w).sum(Kind::Double)], &[&xg], false, false).remove(0);
        let eps = 1e-6;
        let f = |x: &Tensor| tch::no_grad(|| (reference.forward(x) * &w).sum(Kind::Double).double_value(&[]));
        for j in 0..x.numel() as i64 {
            let (plus, minus) = (x.copy(), x.copy());
            let _ = plus.view(-1).get(j).g_add_scalar_(eps);
            let _ = minus.view(-1).get(j).g_add_scalar_(-eps);
            let fd = (f(&plus) - f(&minus)) / (2.0 * eps);
            let ad = g.reshape(-1).double_value(&[j]);
            assert!((fd - ad).abs() < 1e-6 * (1.0 + fd.abs()), "{spec:?}: d/dx[{j}]: autograd {ad} vs fd {fd}");
        }
    }
}
