//! Mixture of SwiGLU experts with top-k routing (Shazeer et al. 2017, arXiv 1701.06538; top-k softmax
//! combine as Mixtral, Jiang et al. 2024, arXiv 2401.04088; load balancing as the Switch Transformer,
//! Fedus et al. 2021, arXiv 2101.03961).
//!
//! ```text
//! x: [B, T, d] -> N = B*T tokens x_i
//! logits_i = x_i W_r                                  W_r: [d, E], no bias
//! S_i = top-k experts of logits_i;  g_ie = softmax_{e in S_i}(logits_ie)
//!   (top_k = 1: g_ie = softmax(logits_i)_e, the Switch Transformer's gate; a softmax over one logit
//!   would be 1 and cut the router off from the task loss)
//! y_i = sum_{e in S_i} g_ie SwiGLU_e(x_i)             SwiGLU_e as the `swiglu` channel mixer
//! aux = coef * E * sum_e f_e P_e                      f_e = share of the N*k assignments routed to e,
//!                                                     P_e = mean_i softmax(logits_i)_e
//! ```
//! Tokens are dispatched: each expert runs only on the tokens routed to it (`index_select`), and its
//! weighted outputs are added back (`index_add`). The auxiliary loss of the last `forward` is kept and
//! returned by `aux_loss` (f_e is a count and carries no gradient; P_e carries the router's). With this
//! f_e a perfectly balanced router gives aux = coef.
//!
//! Accounting (h = roundup(expand*d, multiple_of) per expert): params d*E + E*3*d*h; FLOPs per token
//! 2*d*E (router) + k*6*d*h (the active experts only: the counted work is over the routed tokens, k per
//! token); no state.
//! Init: router N(0, 0.02^2); each expert as `swiglu` (N(0, 0.02^2), down projection 0.02/sqrt(2 n_blocks)).

use crate::channel::SwigluSpec;
use crate::mixer::ChannelMixer;
use crate::nn::{residual_std, Linear, INIT_STD};
use crate::registry::{BuildCtx, Built, Family, MixerSpec};
use kernels::flop_count;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use tch::nn::Path;
use tch::Tensor;

/// `moe` parameters.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MoeSpec {
    /// Experts E.
    #[serde(default = "default_experts")]
    pub experts: i64,
    /// Experts each token is routed to.
    #[serde(default = "default_top_k")]
    pub top_k: i64,
    /// Each expert's hidden width as a multiple of d_model before rounding.
    #[serde(default = "crate::channel::default_swiglu_expand")]
    pub expand: f64,
    /// Each expert's hidden width is rounded up to a multiple of this.
    #[serde(default = "crate::channel::default_multiple_of")]
    pub multiple_of: i64,
    /// Coefficient of the load-balancing loss.
    #[serde(default = "default_aux_loss_coef")]
    pub aux_loss_coef: f64,
}

/// 4: small enough for CPU sweeps.
pub fn default_experts() -> i64 {
    4
}
/// 2: Mixtral's top-2.
pub fn default_top_k() -> i64 {
    2
}
/// 0.01: the Switch Transformer's alpha.
pub fn default_aux_loss_coef() -> f64 {
    0.01
}

impl Default for MoeSpec {
    fn default() -> Self {
        MoeSpec {
            experts: default_experts(),
            top_k: default_top_k(),
            expand: crate::channel::default_swiglu_expand(),
            multiple_of: crate::channel::default_multiple_of(),
            aux_loss_coef: default_aux_loss_coef(),
        }
    }
}

impl MoeSpec {
    fn expert(&self) -> SwigluSpec {
        SwigluSpec { expand: self.expand, multiple_of: self.multiple_of }
    }
}

impl MixerSpec for MoeSpec {
    const NAME: &'static str = "moe";
    const FAMILY: Family = Family::Channel;
    const DESCRIPTION: &'static str =
        "top-k routed SwiGLU experts with the Switch load-balancing loss; FLOPs of the active experts only";
    const PARAMS: crate::registry::ParamTable = &[
        ("experts", "int", "number of SwiGLU experts E"),
        ("top_k", "int", "experts per token (combined by a softmax over their router logits)"),
        ("expand", "float", "each expert's hidden width as a multiple of d_model before rounding"),
        ("multiple_of", "int", "round each expert's hidden width up to a multiple of this"),
        ("aux_loss_coef", "float", "coefficient of the load-balancing loss coef * E * sum_e f_e P_e"),
    ];
    const FLOPS_FORMULA: &'static str = "2*d*E + top_k*6*d*h, h = roundup(expand*d, multiple_of)";
    const STATE_FORMULA: &'static str = "0";

    fn check(&self, d: i64) -> Result<(), (String, String)> {
        if self.experts < 1 {
            return Err(("experts".into(), format!("must be at least 1, got {}", self.experts)));
        }
        if self.top_k < 1 || self.top_k > self.experts {
            return Err((
                "top_k".into(),
                format!("must lie in 1..={} (the experts), got {}", self.experts, self.top_k),
            ));
        }
        if !(self.aux_loss_coef >= 0.0) || !self.aux_loss_coef.is_finite() {
            return Err(("aux_loss_coef".into(), format!("must be a non-negative number, got {}", self.aux_loss_coef)));
        }
        self.expert().check(d)
    }

    fn params(&self, d: i64) -> i64 {
        Linear::params(d, self.experts, false) + self.experts * self.expert().params(d)
    }

    fn flops_per_token(&self, d: i64, seq_len: i64) -> f64 {
        2.0 * (d * self.experts) as f64 + self.top_k as f64 * self.expert().flops_per_token(d, seq_len)
    }

    fn state_size(&self, _d: i64, _seq_len: i64) -> i64 {
        0
    }

    fn output_params() -> &'static [&'static str] {
        &["down.weight"]
    }
    fn build(&self, p: &Path, ctx: &BuildCtx) -> Built {
        Built::Channel(Box::new(Moe::new(p, self, ctx)))
    }
}

/// The built mixture of experts.
#[derive(Debug)]
pub struct Moe {
    router: Linear,
    experts: Vec<Expert>,
    top_k: i64,
    aux_loss_coef: f64,
    /// The load-balancing loss of the last `forward` (scaled by its coefficient).
    last_aux: Mutex<Option<Tensor>>,
}

/// Rows of an expert's input are padded to a multiple of this (see `forward`).
const ROW_TILE: i64 = 16;

/// One SwiGLU expert, `silu(x W_gate^T) * (x W_up^T) -> W_down^T`, with the `swiglu` channel mixer's
/// parameter names and init. Its products are not recorded here: the caller records the routed rows.
#[derive(Debug)]
struct Expert {
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

impl Expert {
    fn new(p: &Path, d: i64, h: i64, n_blocks: i64) -> Expert {
        Expert {
            gate: Linear::new(&(p / "gate"), d, h, INIT_STD, false).weight,
            up: Linear::new(&(p / "up"), d, h, INIT_STD, false).weight,
            down: Linear::new(&(p / "down"), h, d, residual_std(n_blocks), false).weight,
        }
    }

    /// `x [n, d] -> [n, d]`.
    fn forward(&self, x: &Tensor) -> Tensor {
        let hidden = x.matmul(&self.gate.tr()).silu() * x.matmul(&self.up.tr()); // [n, h]
        hidden.matmul(&self.down.tr())
    }

    /// 6*d*h: three products of d x h.
    fn flops_per_row(&self) -> f64 {
        6.0 * self.gate.numel() as f64
    }
}

/// How the router sends tokens: top-k expert ids and their combine weights (`[N, k]` each), and the
/// router's full softmax `[N, E]`.
struct Routing {
    experts: Tensor,
    weights: Tensor,
    probs: Tensor,
}

impl Moe {
    pub fn new(p: &Path, spec: &MoeSpec, ctx: &BuildCtx) -> Moe {
        let h = spec.expert().hidden(ctx.d_model);
        let experts =
            (0..spec.experts).map(|e| Expert::new(&(p / "experts" / e), ctx.d_model, h, ctx.n_blocks)).collect();
        Moe {
            router: Linear::new(&(p / "router"), ctx.d_model, spec.experts, INIT_STD, false),
            experts,
            top_k: spec.top_k,
            aux_loss_coef: spec.aux_loss_coef,
            last_aux: Mutex::new(None),
        }
    }

    fn route(&self, x: &Tensor) -> Routing {
        let logits = self.router.forward(x); // [N, E]
        let (top, experts) = logits.topk(self.top_k, -1, true, true); // [N, k]
        let probs = logits.softmax(-1, logits.kind());
        // Top-1 (Switch) weighs by the full softmax: renormalised over one expert it would always be 1.
        let weights = if self.top_k == 1 { probs.gather(1, &experts, false) } else { top.softmax(-1, top.kind()) };
        Routing { experts, weights, probs }
    }

    /// coef * E * sum_e f_e P_e (Switch Transformer), f_e over the N*k assignments.
    fn balance_loss(&self, r: &Routing) -> Tensor {
        let e = self.experts.len() as i64;
        let counts = Tensor::zeros([e], (r.probs.kind(), r.probs.device())).index_add(
            0,
            &r.experts.view([-1]),
            &Tensor::ones([r.experts.numel() as i64], (r.probs.kind(), r.probs.device())),
        );
        let f = &counts / r.experts.numel() as f64; // [E], no gradient
        let p = r.probs.mean_dim(0, false, r.probs.kind()); // [E]
        (f * p).sum(r.probs.kind()) * (self.aux_loss_coef * e as f64)
    }

    /// The dense definition (every expert on every token, combined with the top-k weights); for tests.
    pub fn forward_dense(&self, x: &Tensor) -> Tensor {
        let d = *x.size().last().expect("moe input has no dimensions");
        let flat = x.reshape([-1, d]); // [N, d]
        let r = self.route(&flat);
        let n = flat.size()[0];
        let zeros = Tensor::zeros([n, self.experts.len() as i64], (flat.kind(), flat.device()));
        let gates = zeros.scatter(1, &r.experts, &r.weights); // [N, E]: top-k weights, 0 elsewhere
        let mut y = flat.zeros_like();
        for (e, expert) in self.experts.iter().enumerate() {
            y += expert.forward(&flat) * gates.narrow(1, e as i64, 1);
        }
        y.view(x.size().as_slice())
    }
}

impl ChannelMixer for Moe {
    fn forward(&self, x: &Tensor) -> Tensor {
        let d = *x.size().last().expect("moe input has no dimensions");
        let flat = x.reshape([-1, d]); // [N, d]
        let r = self.route(&flat);
        *self.last_aux.lock().expect("aux loss lock") = Some(self.balance_loss(&r));
        let mut y = flat.zeros_like();
        for (e, expert) in self.experts.iter().enumerate() {
            let hit = r.experts.eq(e as i64); // [N, k]
            let rows = hit.any_dim(1, false).nonzero().squeeze_dim(1); // tokens routed to e
            if rows.numel() == 0 {
                continue;
            }
            let weight = (&r.weights * hit.to_kind(r.weights.kind())).sum_dim_intlist(1, false, r.weights.kind());
            let n = rows.size()[0];
            flop_count::record(n as f64 * expert.flops_per_row());
            // Zero rows up to a multiple of ROW_TILE, so that BLAS treats this token's row the same way
            // whatever the number of other tokens routed here (the last rows of a matrix that is not a
            // multiple of the kernel's tile take another code path and differ by ~1e-17).
            let pad = (ROW_TILE - n % ROW_TILE) % ROW_TILE;
            let xs = flat.index_select(0, &rows).constant_pad_nd([0, 0, 0, pad]); // [n + pad, d]
            let out = expert.forward(&xs).narrow(0, 0, n) * weight.index_select(0, &rows).unsqueeze(1);
            y = y.index_add(0, &rows, &out); // [N, d]
        }
        y.view(x.size().as_slice())
    }

    fn aux_loss(&self) -> Option<Tensor> {
        self.last_aux.lock().expect("aux loss lock").as_ref().map(|t| t.shallow_clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernels::flop_count::Counter;
    use kernels::KernelPath;
    use tch::nn::VarStore;
    use tch::{Device, Kind};

    fn build(spec: &MoeSpec) -> (VarStore, Moe) {
        let mut vs = VarStore::new(Device::Cpu);
        let ctx = BuildCtx { d_model: 8, layer: 0, n_blocks: 2, kernel_path: KernelPath::Auto };
        let m = Moe::new(&vs.root(), spec, &ctx);
        vs.set_kind(Kind::Double);
        (vs, m)
    }

    #[test]
    fn dispatched_output_equals_the_dense_definition_in_float64() {
        tch::manual_seed(11);
        for (experts, top_k) in [(4, 2), (3, 1), (5, 5)] {
            let (_vs, m) = build(&MoeSpec { experts, top_k, ..Default::default() });
            let x = Tensor::randn([3, 7, 8], (Kind::Double, Device::Cpu));
            let err = (m.forward(&x) - m.forward_dense(&x)).abs().max().double_value(&[]);
            assert!(err < 1e-12, "E={experts} k={top_k}: {err}");
        }
    }

    #[test]
    fn counted_flops_are_the_router_and_the_routed_tokens_only() {
        let spec = MoeSpec { experts: 6, top_k: 2, ..Default::default() };
        let (_vs, m) = build(&spec);
        let x = Tensor::randn([2, 5, 8], (Kind::Double, Device::Cpu));
        let c = Counter::start();
        let _ = tch::no_grad(|| m.forward(&x));
        let h = spec.expert().hidden(8) as f64;
        assert_eq!(c.total(), 10.0 * (2.0 * 8.0 * 6.0 + 2.0 * 6.0 * 8.0 * h));
        assert_eq!(c.total(), spec.flops_per_token(8, 5) * 10.0);
    }

    #[test]
    fn balance_loss_reaches_the_router_and_is_coef_when_balanced() {
        tch::manual_seed(12);
        let spec = MoeSpec { aux_loss_coef: 0.5, ..Default::default() };
        let (vs, m) = build(&spec);
        let x = Tensor::randn([4, 16, 8], (Kind::Double, Device::Cpu));
        let _ = m.forward(&x);
        let aux = m.aux_loss().expect("moe keeps its aux loss");
        aux.backward();
        let mut router = vs.variables().into_iter().find(|(n, _)| n == "router.weight").unwrap().1;
        assert!(router.grad().abs().sum(Kind::Double).double_value(&[]) > 0.0);
        // A uniform router (zero weights): P_e = 1/E and f_e = 1/E whatever the ties, so aux = coef.
        let _ = tch::no_grad(|| router.zero_());
        let _ = m.forward(&x);
        let aux = m.aux_loss().unwrap().double_value(&[]);
        assert!((aux - 0.5).abs() < 1e-12, "{aux}");
    }
}
