//! The long-convolution family's shared parts: Hyena's implicit long filter (Poli et al. 2023, arXiv
//! 2302.10866, Sec. 3.3 and Algorithm 2), used by `hyena` (hyena.rs) and `base_conv` (base_conv.rs), and
//! the defaults those mixers share. `h3` (h3.rs) computes its own SSM kernel.
//!
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

use crate::nn::NO_DECAY;
use std::f64::consts::PI;
use tch::nn::{Init, Path};
use tch::{Kind, Tensor};

/// 256: the longest sequences of CPU sweeps; set it to the task's sequence length, as zoology does.
pub fn default_l_max() -> i64 {
    256
}
/// 3: (t, cos, sin), Hyena's and zoology's default.
pub fn default_emb_dim() -> i64 {
    3
}
/// 3: zoology's and Hyena's short filter.
pub fn default_short_kernel() -> i64 {
    3
}

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
        (h * self.window(&t).to_kind(kind)).tr() // [C, len]
    }

    /// The decay window `exp(-t |delta_c|) + shift` at times `t [len, 1]`: `[len, channels]`. Channel c
    /// reaches `decay_target` (before the shift) at t = ln(target)/delta_c, from `slow_decay_pct` for the
    /// first channel to `fast_decay_pct` for the last.
    fn window(&self, t: &Tensor) -> Tensor {
        let c = &self.cfg;
        let ln = c.decay_target.ln();
        let deltas =
            Tensor::linspace(ln / c.slow_decay_pct, ln / c.fast_decay_pct, c.channels, (Kind::Double, t.device()));
        (-(t * deltas.abs().unsqueeze(0))).exp() + c.decay_shift
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::VarStore;
    use tch::Device;

    fn cfg(emb_dim: i64) -> FilterConfig {
        FilterConfig {
            channels: 6,
            emb_dim,
            width: 16,
            l_max: 256,
            sin_freq: 1.0,
            fast_decay_pct: 0.3,
            slow_decay_pct: 1.5,
            decay_target: 1e-2,
            decay_shift: 0.0,
        }
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
        // The slowest channel reaches the target at t = slow_decay_pct, the fastest at t = fast_decay_pct.
        let f = ImplicitFilter::new(&(vs.root() / "w"), &cfg(3));
        let (_, t) = f.features(256, Device::Cpu);
        assert!((t.double_value(&[255, 0]) - 1.0).abs() < 1e-12);
        let at = |x: f64| f.window(&Tensor::from_slice(&[x]).unsqueeze(1));
        assert!((at(1.5).double_value(&[0, 0]) - 0.01).abs() < 1e-12);
        assert!((at(0.3).double_value(&[0, 5]) - 0.01).abs() < 1e-12);
        assert_eq!(at(0.0).min().double_value(&[]), 1.0);
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
