//! Gated linear recurrences with a matrix state per head, both on `kernels::chunk_linear`:
//! RetNet's multi-scale retention (Sun et al. 2023, arXiv 2307.08621) and Gated Linear Attention (Yang et
//! al. 2023, arXiv 2312.06635).
//!
//! ```text
//! q = x W_q / sqrt(Dk), k = x W_k, v = x W_v        q, k [B, H, T, Dk];  v [B, H, T, Dv]
//! S_t = diag(a_t) S_{t-1} + k_t^T v_t,  o_t = q_t S_t                   (kernels::chunk_linear)
//! y = norm_h(o) * swish(x W_g)                       per-head normalisation, output gate   [B, T, H Dv]
//! out = y W_o                                                                               [B, T, d]
//! ```
//! - `retnet`: a fixed decay per head, `a = gamma_h = 1 - 2^(-5-h)`, h = 0..H-1 (the paper's eq. 8 and its
//!   multi-scale rule; a constant, not a parameter). Key width d (Dk = d/H), value width `expand_v` d (the
//!   paper's 2d). `norm_h` is the paper's GroupNorm over heads: per head (x - mean) / sqrt(var + 1e-6) without
//!   affine parameters, as the authors' torchscale code. The scale 1/sqrt(Dk) is torchscale's. The paper's
//!   retention-score normalisations (dividing rows of `QK^T * D` by positive numbers) are skipped: the
//!   GroupNorm is invariant to them up to its epsilon. `rotary` (default off) applies RoPE (theta 10000) to
//!   q and k, the rotation part of the paper's xPos; off by default because the decay already encodes
//!   relative position and the paper's xPos is an extrapolation aid for long contexts.
//! - `gla`: data-dependent per-key decay `a_t = sigmoid(x W_a1 W_a2 + b)^(1/tau)` (low-rank gate of rank 16,
//!   tau = 16: the paper's eq. in section 4.4), key width `expand_k` d (0.5), value width `expand_v` d (1).
//!   `norm_h` is a per-head RMSNorm with a learned gain shared by the heads (eps 1e-5), as the authors'
//!   flash-linear-attention layer (the paper writes LayerNorm); the gain and the gate bias are not decayed.
//!
//! Accounting (Kd = key width, Vd = value width, Dk = Kd/H, Dv = Vd/H, r = gate_rank, lin(T) =
//! ceil(T/C') (2 C'^2 (Dk + Dv) + 4 C' Dk Dv) / T with C' = min(chunk, T), see `kernels::chunk_linear`):
//! - retnet params: 2 d^2 + 3 d Vd; FLOPs per token: 4 d^2 + 6 d Vd + H lin(T); state: H Dk Dv.
//! - gla params: 2 d Kd + 3 d Vd + r (d + Kd) + Kd + Dv; FLOPs per token: 4 d Kd + 6 d Vd + 2 r (d + Kd)
//!   + H lin(T); state: H Dk Dv.
//!
//! Init: projections N(0, 0.02^2); the output projection N(0, (0.02/sqrt(2 n_blocks))^2); the gate bias 0
//! (so a_t starts near 0.5^(1/16) = 0.96); norm gains 1.

use crate::linear_attention::{check_chunk, check_heads, default_chunk, default_heads};
use crate::mixer::{SequenceMixer, State};
use crate::nn::{self, residual_std, Linear, RmsNorm, INIT_STD};
use crate::registry::{BuildCtx, Built, Family, MixerSpec};
use kernels::chunk_linear::{chunk_linear, chunk_linear_flops, linear_step, Decay};
use kernels::KernelPath;
use serde::{Deserialize, Serialize};
use tch::nn::Path;
use tch::{Kind, Tensor};

/// `retnet` parameters (YAML: `retnet: {heads: 4}`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetnetSpec {
    #[serde(default = "default_heads")]
    pub heads: i64,
    /// Value width as a multiple of d_model.
    #[serde(default = "default_retnet_expand_v")]
    pub expand_v: f64,
    /// RoPE on q and k.
    #[serde(default)]
    pub rotary: bool,
    /// Chunk length of the chunked parallel form.
    #[serde(default = "default_chunk")]
    pub chunk: i64,
}

/// 2: the paper's value dimension 2d.
pub fn default_retnet_expand_v() -> f64 {
    2.0
}

impl Default for RetnetSpec {
    fn default() -> Self {
        RetnetSpec {
            heads: default_heads(),
            expand_v: default_retnet_expand_v(),
            rotary: false,
            chunk: default_chunk(),
        }
    }
}

/// `gla` parameters (YAML: `gla: {heads: 4, expand_k: 0.5}`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GlaSpec {
    #[serde(default = "default_heads")]
    pub heads: i64,
    /// Key width as a multiple of d_model.
    #[serde(default = "default_expand_k")]
    pub expand_k: f64,
    /// Value width as a multiple of d_model.
    #[serde(default = "default_gla_expand_v")]
    pub expand_v: f64,
    /// Rank of the low-rank gate projection.
    #[serde(default = "default_gate_rank")]
    pub gate_rank: i64,
    /// Temperature: a_t = sigmoid(.)^(1/tau).
    #[serde(default = "default_gate_tau")]
    pub gate_tau: f64,
    /// Chunk length of the chunked parallel form.
    #[serde(default = "default_gla_chunk")]
    pub chunk: i64,
}

/// 0.5, the paper's.
pub fn default_expand_k() -> f64 {
    0.5
}
/// 1, the paper's.
pub fn default_gla_expand_v() -> f64 {
    1.0
}
/// 16, the paper's.
pub fn default_gate_rank() -> i64 {
    16
}
/// 16, the paper's.
pub fn default_gate_tau() -> f64 {
    16.0
}
/// 16: as fast as 64 on CPU (fwd+bwd at B=8, T=256, d=128), fewer FLOPs, and a small `[C, C, Dk]` buffer when
/// the kernel falls back to exact per-key ratios under very strong decay.
pub fn default_gla_chunk() -> i64 {
    16
}

impl Default for GlaSpec {
    fn default() -> Self {
        GlaSpec {
            heads: default_heads(),
            expand_k: default_expand_k(),
            expand_v: default_gla_expand_v(),
            gate_rank: default_gate_rank(),
            gate_tau: default_gate_tau(),
            chunk: default_gla_chunk(),
        }
    }
}

fn err<T>(p: &str, m: String) -> Result<T, (String, String)> {
    Err((p.to_string(), m))
}

/// round(expand * d), which must be a positive multiple of `heads`.
fn width(expand: f64, d: i64) -> i64 {
    (expand * d as f64).round() as i64
}

fn check_width(param: &str, expand: f64, d: i64, heads: i64) -> Result<(), (String, String)> {
    let w = width(expand, d);
    if !(expand > 0.0) || !expand.is_finite() || w < heads || w % heads != 0 {
        return err(
            param,
            format!("round(d_model {d} * {param} {expand}) = {w} must be a positive multiple of heads {heads}"),
        );
    }
    Ok(())
}

impl MixerSpec for RetnetSpec {
    const NAME: &'static str = "retnet";
    const FAMILY: Family = Family::GatedRnn;
    const DESCRIPTION: &'static str =
        "RetNet multi-scale retention: fixed per-head decay 1 - 2^(-5-h), GroupNorm, swish gate (chunked)";
    const PARAMS: crate::registry::ParamTable = &[
        ("heads", "int", "heads; each gets its own decay gamma_h = 1 - 2^(-5-h)"),
        ("expand_v", "float", "value width as a multiple of d_model (the paper's 2)"),
        ("rotary", "bool", "RoPE (theta 10000) on q and k, the rotation of the paper's xPos"),
        ("chunk", "int", "chunk length of the chunked parallel form"),
    ];
    const FLOPS_FORMULA: &'static str =
        "4*d^2 + 6*d*Vd + H*ceil(T/C')*(2C'^2(Dk+Dv) + 4C'*Dk*Dv)/T, Dk = d/H, Dv = Vd/H, C' = min(chunk, T)";
    const STATE_FORMULA: &'static str = "H*Dk*Dv";

    fn check(&self, d: i64) -> Result<(), (String, String)> {
        check_heads("heads", self.heads, d, true)?;
        check_width("expand_v", self.expand_v, d, self.heads)?;
        if self.rotary && (d / self.heads) % 2 != 0 {
            return err(
                "rotary",
                format!("RoPE needs an even key width per head, got d_model/heads = {}", d / self.heads),
            );
        }
        check_chunk(self.chunk)
    }
    fn params(&self, d: i64) -> i64 {
        2 * d * d + 3 * d * width(self.expand_v, d)
    }
    fn flops_per_token(&self, d: i64, seq_len: i64) -> f64 {
        let (h, vd) = (self.heads, width(self.expand_v, d));
        let kernel = chunk_linear_flops(h, seq_len, d / h, vd / h, self.chunk) / seq_len as f64;
        (4 * d * d + 6 * d * vd) as f64 + kernel
    }
    fn state_size(&self, d: i64, _seq_len: i64) -> i64 {
        d * width(self.expand_v, d) / self.heads
    }
    fn output_params() -> &'static [&'static str] {
        &["o_proj.weight"]
    }
    fn build(&self, p: &Path, ctx: &BuildCtx) -> Built {
        Built::Sequence(Box::new(self.build_retnet(p, ctx)))
    }
}

impl RetnetSpec {
    pub fn build_retnet(&self, p: &Path, ctx: &BuildCtx) -> GatedLinear {
        let (d, h) = (ctx.d_model, self.heads);
        let log_gamma = retnet_gammas(h).iter().map(|g| g.ln()).collect();
        let kind = GateKind::Retention { log_gamma, rotary: self.rotary };
        GatedLinear::new(p, kind, h, d, width(self.expand_v, d), self.chunk, ctx)
    }
}

/// The paper's decays: gamma_h = 1 - 2^(-5-h) for h = 0..H-1.
pub fn retnet_gammas(heads: i64) -> Vec<f64> {
    (0..heads).map(|h| 1.0 - 2f64.powi(-5 - h as i32)).collect()
}

impl MixerSpec for GlaSpec {
    const NAME: &'static str = "gla";
    const FAMILY: Family = Family::GatedRnn;
    const DESCRIPTION: &'static str =
        "gated linear attention: per-key decay sigmoid(low-rank gate)^(1/tau), RMSNorm, swish gate (chunked)";
    const PARAMS: crate::registry::ParamTable = &[
        ("heads", "int", "heads"),
        ("expand_k", "float", "key width as a multiple of d_model"),
        ("expand_v", "float", "value width as a multiple of d_model"),
        ("gate_rank", "int", "rank of the low-rank decay-gate projection"),
        ("gate_tau", "float", "gate temperature: a_t = sigmoid(x W_a1 W_a2 + b)^(1/tau)"),
        ("chunk", "int", "chunk length of the chunked parallel form"),
    ];
    const FLOPS_FORMULA: &'static str = "4*d*Kd + 6*d*Vd + 2*r*(d+Kd) + H*ceil(T/C')*(2C'^2(Dk+Dv) + 4C'*Dk*Dv)/T, \
         Dk = Kd/H, Dv = Vd/H, C' = min(chunk, T)";
    const STATE_FORMULA: &'static str = "H*Dk*Dv";

    fn check(&self, d: i64) -> Result<(), (String, String)> {
        check_heads("heads", self.heads, 1, false)?;
        check_width("expand_k", self.expand_k, d, self.heads)?;
        check_width("expand_v", self.expand_v, d, self.heads)?;
        if self.gate_rank < 1 {
            return err("gate_rank", format!("must be at least 1, got {}", self.gate_rank));
        }
        if !(self.gate_tau > 0.0) || !self.gate_tau.is_finite() {
            return err("gate_tau", format!("must be a positive number, got {}", self.gate_tau));
        }
        check_chunk(self.chunk)
    }
    fn params(&self, d: i64) -> i64 {
        let (kd, vd, r) = (width(self.expand_k, d), width(self.expand_v, d), self.gate_rank);
        2 * d * kd + 3 * d * vd + r * (d + kd) + kd + vd / self.heads
    }
    fn flops_per_token(&self, d: i64, seq_len: i64) -> f64 {
        let (h, kd, vd, r) = (self.heads, width(self.expand_k, d), width(self.expand_v, d), self.gate_rank);
        let kernel = chunk_linear_flops(h, seq_len, kd / h, vd / h, self.chunk) / seq_len as f64;
        (4 * d * kd + 6 * d * vd + 2 * r * (d + kd)) as f64 + kernel
    }
    fn state_size(&self, d: i64, _seq_len: i64) -> i64 {
        width(self.expand_k, d) * width(self.expand_v, d) / self.heads
    }
    fn output_params() -> &'static [&'static str] {
        &["o_proj.weight"]
    }
    fn build(&self, p: &Path, ctx: &BuildCtx) -> Built {
        Built::Sequence(Box::new(self.build_gla(p, ctx)))
    }
}

impl GlaSpec {
    pub fn build_gla(&self, p: &Path, ctx: &BuildCtx) -> GatedLinear {
        let (d, h) = (ctx.d_model, self.heads);
        let kd = width(self.expand_k, d);
        let gate_down = Linear::new(&(p / "gate_down"), d, self.gate_rank, INIT_STD, false);
        let gate_up = Linear::new(&(p / "gate_up"), self.gate_rank, kd, INIT_STD, true);
        let kind = GateKind::Gated { gate_down, gate_up, tau: self.gate_tau };
        GatedLinear::new(p, kind, h, kd, width(self.expand_v, d), self.chunk, ctx)
    }
}

/// Where the decay comes from, and the matching per-head normalisation.
#[derive(Debug)]
enum GateKind {
    /// RetNet: fixed log-decays per head, GroupNorm without affine, optional RoPE.
    Retention { log_gamma: Vec<f64>, rotary: bool },
    /// GLA: `log a = logsigmoid(x W_down W_up + b) / tau` per key; RMSNorm with a gain.
    Gated { gate_down: Linear, gate_up: Linear, tau: f64 },
}

/// The built `retnet` or `gla` mixer.
#[derive(Debug)]
pub struct GatedLinear {
    kind: GateKind,
    heads: i64,
    dk: i64,
    dv: i64,
    chunk: i64,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    g_proj: Linear,
    o_proj: Linear,
    /// GLA's per-head RMSNorm gain `[Dv]`.
    g_norm: Option<RmsNorm>,
    path: KernelPath,
}

impl GatedLinear {
    fn new(p: &Path, kind: GateKind, heads: i64, kd: i64, vd: i64, chunk: i64, ctx: &BuildCtx) -> GatedLinear {
        let d = ctx.d_model;
        let g_norm = matches!(kind, GateKind::Gated { .. }).then(|| RmsNorm::new(&(p / "g_norm"), vd / heads, 1e-5));
        GatedLinear {
            kind,
            heads,
            dk: kd / heads,
            dv: vd / heads,
            chunk,
            q_proj: Linear::new(&(p / "q_proj"), d, kd, INIT_STD, false),
            k_proj: Linear::new(&(p / "k_proj"), d, kd, INIT_STD, false),
            v_proj: Linear::new(&(p / "v_proj"), d, vd, INIT_STD, false),
            g_proj: Linear::new(&(p / "g_proj"), d, vd, INIT_STD, false),
            o_proj: Linear::new(&(p / "o_proj"), vd, d, residual_std(ctx.n_blocks), false),
            g_norm,
            path: ctx.kernel_path,
        }
    }

    /// `x [B, T, d]` at positions `start..` -> q, k `[B, H, T, Dk]`, v `[B, H, T, Dv]`, log-decay (`[B, H, T]`
    /// for RetNet, `[B, H, T, Dk]` for GLA).
    fn inputs(&self, x: &Tensor, start: i64) -> (Tensor, Tensor, Tensor, Tensor) {
        let (b, t, _) = x.size3().expect("gated linear input must be [B, T, d]");
        let h = self.heads;
        let split = |y: Tensor, w: i64| y.view([b, t, h, w]).transpose(1, 2); // [B, H, T, w]
        let q = split(self.q_proj.forward(x), self.dk) / (self.dk as f64).sqrt();
        let k = split(self.k_proj.forward(x), self.dk);
        let v = split(self.v_proj.forward(x), self.dv);
        match &self.kind {
            GateKind::Retention { log_gamma, rotary } => {
                let g = Tensor::from_slice(log_gamma).to_kind(x.kind()).to_device(x.device());
                let g = g.view([1, h, 1]).expand([b, h, t], false); // [B, H, T]
                let (q, k) = if *rotary { (rope(&q, start), rope(&k, start)) } else { (q, k) };
                (q, k, v, g)
            }
            GateKind::Gated { gate_down, gate_up, tau } => {
                let logit = gate_up.forward(&gate_down.forward(x)); // [B, T, Kd]
                let g = split(logit.log_sigmoid() / *tau, self.dk); // log a_t: [B, H, T, Dk]
                (q, k, v, g)
            }
        }
    }

    /// `o [B, H, T, Dv] -> norm, gate, project -> [B, T, d]`.
    fn out(&self, o: &Tensor, x: &Tensor) -> Tensor {
        let (b, h, t, dv) = o.size4().expect("gated linear output must be [B, H, T, Dv]");
        let y = match &self.g_norm {
            Some(norm) => norm.forward(o),
            None => {
                let centred = o - o.mean_dim(-1, true, o.kind());
                let var = centred.square().mean_dim(-1, true, o.kind());
                centred * (var + 1e-6).rsqrt() // GroupNorm over heads, no affine
            }
        };
        let y = y.transpose(1, 2).contiguous().view([b, t, h * dv]); // [B, T, Vd]
        self.o_proj.forward(&(self.g_proj.forward(x).silu() * y))
    }
}

/// Rotary embedding (rotate-half, theta 10000) of `x [B, H, T, D]` at positions `start..start+T`.
fn rope(x: &Tensor, start: i64) -> Tensor {
    let d = x.size4().expect("rope input must be [B, H, T, D]").3;
    let inv_freq =
        (Tensor::arange_start_step(0, d, 2, (Kind::Double, x.device())) * (-(10000f64.ln()) / d as f64)).exp();
    nn::rope(x, start, 1.0, &inv_freq) // [D/2] inverse frequencies, theta 10000
}

fn decay_of<'a>(kind: &GateKind, g: &'a Tensor) -> Decay<'a> {
    match kind {
        GateKind::Retention { .. } => Decay::Scalar(g),
        GateKind::Gated { .. } => Decay::PerKey(g),
    }
}

impl SequenceMixer for GatedLinear {
    fn forward(&self, x: &Tensor) -> Tensor {
        let (q, k, v, g) = self.inputs(x, 0);
        let (o, _) = chunk_linear(&q, &k, &v, decay_of(&self.kind, &g), None, self.chunk, self.path);
        self.out(&o, x)
    }

    /// The matrix state `[B, H, Dk, Dv]`, zeros.
    fn init_state(&self, batch: i64) -> State {
        let like = &self.o_proj.weight;
        let s = Tensor::zeros([batch, self.heads, self.dk, self.dv], (like.kind(), like.device()));
        State { tensors: vec![s], position: 0 }
    }

    fn step(&self, x: &Tensor, state: &mut State) -> Tensor {
        let x = x.unsqueeze(1); // [B, 1, d]
        let (q, k, v, g) = self.inputs(&x, state.position);
        let g = g.select(2, 0);
        let (o, s) =
            linear_step(&q.select(2, 0), &k.select(2, 0), &v.select(2, 0), decay_of(&self.kind, &g), &state.tensors[0]);
        state.tensors[0] = s;
        state.position += 1;
        self.out(&o.unsqueeze(2), &x).squeeze_dim(1)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::LayerSpec;
    use tch::nn::VarStore;
    use tch::{Device, Kind};

    const D: i64 = 16;

    /// One mixer in float64 on CPU with the given kernel path; the same `seed` gives the same weights.
    pub(crate) fn build_f64(spec: &LayerSpec, path: KernelPath, seed: i64) -> (VarStore, Box<dyn SequenceMixer>) {
        tch::manual_seed(seed);
        let mut vs = VarStore::new(Device::Cpu);
        let ctx = BuildCtx { d_model: D, layer: 0, n_blocks: 2, kernel_path: path };
        let Built::Sequence(m) = spec.build(&vs.root(), &ctx) else { panic!("{spec:?} is not a sequence mixer") };
        vs.set_kind(Kind::Double);
        (vs, m)
    }

    /// Autograd gradient of the chunked (Auto) forward with respect to the input against central differences
    /// of the per-token (Reference) forward, in float64 on a tiny shape.
    pub(crate) fn input_gradient_matches_finite_differences(spec: &LayerSpec) {
        let (va, auto) = build_f64(spec, KernelPath::Auto, 7);
        // The global seed is shared by tests running on other threads, so the same seed does not promise the
        // same weights: copy them.
        let (mut vr, reference) = build_f64(spec, KernelPath::Reference, 7);
        vr.copy(&va).unwrap();
        let opts = (Kind::Double, Device::Cpu);
        let (x, w) = (Tensor::randn([1, 5, D], opts), Tensor::randn([1, 5, D], opts));
        let xv = x.copy().set_requires_grad(true);
        (auto.forward(&xv) * &w).sum(Kind::Double).backward();
        let grad = xv.grad().view([-1]);
        let loss = |delta: f64, e: i64| {
            let x2 = x.copy();
            let _ = x2.view([-1]).get(e).g_add_scalar_(delta);
            tch::no_grad(|| (reference.forward(&x2) * &w).sum(Kind::Double).double_value(&[]))
        };
        for e in 0..x.numel() as i64 {
            let eps = 1e-6;
            let numeric = (loss(eps, e) - loss(-eps, e)) / (2.0 * eps);
            let analytic = grad.double_value(&[e]);
            assert!(
                (numeric - analytic).abs() < 1e-6 * (1.0 + numeric.abs()),
                "{spec:?} x[{e}]: {analytic} vs {numeric}"
            );
        }
    }

    #[test]
    fn retnet_decays_follow_the_paper() {
        let g = retnet_gammas(4);
        assert_eq!(g, vec![1.0 - 1.0 / 32.0, 1.0 - 1.0 / 64.0, 1.0 - 1.0 / 128.0, 1.0 - 1.0 / 256.0]);
    }

    #[test]
    fn gla_gate_starts_near_half_to_the_one_over_tau() {
        let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let ctx = BuildCtx { d_model: 16, layer: 0, n_blocks: 2, kernel_path: KernelPath::Auto };
        let m = GlaSpec::default().build_gla(&vs.root(), &ctx);
        vs.set_kind(Kind::Double);
        let x = Tensor::randn([2, 5, 16], (Kind::Double, tch::Device::Cpu));
        let (_, _, _, g) = m.inputs(&x, 0);
        let a = g.exp();
        assert!(a.max().double_value(&[]) <= 1.0 && a.min().double_value(&[]) > 0.0);
        // Bias 0 and small weights: a = sigmoid(~0)^(1/16) = 0.5^(1/16) ~ 0.958.
        assert!((a.mean(Kind::Double).double_value(&[]) - 0.5f64.powf(1.0 / 16.0)).abs() < 0.01);
    }

    #[test]
    fn bad_parameters_name_the_parameter() {
        let retnet = |json: &str| serde_json::from_str::<RetnetSpec>(json).unwrap().check(16).unwrap_err().0;
        assert_eq!(retnet(r#"{"heads":3}"#), "heads");
        assert_eq!(retnet(r#"{"heads":16,"rotary":true}"#), "rotary");
        assert_eq!(retnet(r#"{"expand_v":0.1}"#), "expand_v");
        let gla = |json: &str| serde_json::from_str::<GlaSpec>(json).unwrap().check(16).unwrap_err().0;
        assert_eq!(gla(r#"{"expand_k":0.3}"#), "expand_k"); // 5 keys over 4 heads
        assert_eq!(gla(r#"{"gate_tau":0.0}"#), "gate_tau");
        assert_eq!(gla(r#"{"gate_rank":0}"#), "gate_rank");
        assert_eq!(gla(r#"{"chunk":0}"#), "chunk");
        assert!(serde_json::from_str::<GlaSpec>(r#"{"expand_q":1.0}"#).is_err());
    }

    #[test]
    fn gradients_match_finite_differences() {
        for json in [
            r#"{"mixer":"gla","params":{"heads":2,"chunk":3}}"#,
            r#"{"mixer":"retnet","params":{"heads":2,"rotary":true,"chunk":3}}"#,
        ] {
            input_gradient_matches_finite_differences(&serde_json::from_str(json).unwrap());
        }
    }
}
