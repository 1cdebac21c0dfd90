//! Causal linear attention (Katharopoulos et al. 2020, "Transformers are RNNs", arXiv 2006.16236) with a
//! choice of feature maps. Its branch is also Based's linear branch (`crate::based`).
//!
//! ```text
//! q = phi(x W_q), k = phi(x W_k), v = x W_v        per head: q, k [B, H, T, F]; v [B, H, T, Dv]
//! S_t = S_{t-1} + k_t^T v_t,   z_t = z_{t-1} + k_t                   (kernels::chunk_linear, no decay)
//! y_t = q_t S_t / (q_t . z_t + eps)   (normalize: the paper's eq. 5)  or  y_t = q_t S_t
//! out = y W_o                                                          [B, T, d]
//! ```
//! The normaliser runs through the same kernel: `v` gets a column of ones, so the state holds `[S | z]` and
//! the read-out gives numerator and denominator together (`Dv' = Dv + 1`). Feature maps (D = head width of q, k):
//! - `identity` (F = D), `elu1`: elu(x) + 1 (F = D, the paper's choice), `relu` (F = D);
//! - `taylor2` (Based; Arora et al. 2023, arXiv 2312.04927): `[1, x / D^(1/4), vec(x x^T) / (sqrt(2) sqrt(D))]`,
//!   F = 1 + D + D^2, so `phi(q) . phi(k) = 1 + s + s^2 / 2` with `s = q.k / sqrt(D)`, the 2nd-order Taylor
//!   series of exp(s);
//! - `hedgehog` (Zhang et al. 2024, arXiv 2402.04347): `softmax([x W_h + b_h, -(x W_h + b_h)])` with a learned
//!   `[D, D]` map per head (separate for q and k), initialised to the identity with a zero bias; F = 2D.
//!
//! `normalize` defaults to true, as the paper writes it. It needs a non-negative feature map (the denominator
//! must not cross zero), so it is rejected with `identity`; `taylor2` makes every `phi(q).phi(k) >= 1/2`.
//!
//! Accounting (H heads, D = head_dim, F = feature dim, Dv' = Dv + normalize, C = chunk, see
//! `kernels::chunk_linear` for `lin(T) = ceil(T/C') (2 C'^2 (F + Dv') + 4 C' F Dv') / T`, C' = min(C, T)):
//! - linear_attention params: 4 d H D (q, k, v, o) + hedgehog 2 H (D^2 + D);
//!   FLOPs per token: 8 d H D + hedgehog 4 H D^2 + H lin(T); state: H F Dv'.
//!
//! Init: projections N(0, 0.02^2); output projections N(0, (0.02/sqrt(2 n_blocks))^2) (GPT-2).

use crate::mixer::{SequenceMixer, State};
use crate::nn::{residual_std, Linear, DECAY, INIT_STD, NO_DECAY};
use crate::registry::{BuildCtx, Built, Family, MixerSpec};
use kernels::chunk_linear::{chunk_linear, chunk_linear_flops, linear_step, Decay};
use kernels::{flop_count, KernelPath};
use serde::{Deserialize, Serialize};
use tch::nn::{Init, Path};
use tch::{Kind, Tensor};

/// The map applied to each head's queries and keys.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FeatureMap {
    Identity,
    Elu1,
    Relu,
    Taylor2,
    Hedgehog,
}

impl FeatureMap {
    /// Feature width F for a head width `d`.
    pub fn dim(self, d: i64) -> i64 {
        match self {
            FeatureMap::Identity | FeatureMap::Elu1 | FeatureMap::Relu => d,
            FeatureMap::Taylor2 => 1 + d + d * d,
            FeatureMap::Hedgehog => 2 * d,
        }
    }
}

/// `linear_attention` parameters (YAML: `linear_attention: {heads: 4, feature_map: elu1}`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LinearAttentionSpec {
    /// Heads.
    #[serde(default = "default_heads")]
    pub heads: i64,
    /// Width of each head's q, k and v; `d_model / heads` when absent.
    #[serde(default)]
    pub head_dim: Option<i64>,
    #[serde(default = "default_feature_map")]
    pub feature_map: FeatureMap,
    /// Divide by `phi(q) . sum phi(k)` (the paper's denominator).
    #[serde(default = "default_normalize")]
    pub normalize: bool,
    /// Added to the denominator.
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Chunk length of the chunked parallel form.
    #[serde(default = "default_chunk")]
    pub chunk: i64,
}

/// 4 heads, as `attention`.
pub fn default_heads() -> i64 {
    4
}
/// elu(x) + 1, the paper's map.
pub fn default_feature_map() -> FeatureMap {
    FeatureMap::Elu1
}
/// True: the paper's normalised form.
pub fn default_normalize() -> bool {
    true
}
/// 1e-6: negligible next to a denominator that grows with the number of tokens.
pub fn default_eps() -> f64 {
    1e-6
}
/// 64 tokens: the chunk matmuls are large enough to be efficient and the state is passed T/64 times.
pub fn default_chunk() -> i64 {
    64
}

impl Default for LinearAttentionSpec {
    fn default() -> Self {
        LinearAttentionSpec {
            heads: default_heads(),
            head_dim: None,
            feature_map: default_feature_map(),
            normalize: default_normalize(),
            eps: default_eps(),
            chunk: default_chunk(),
        }
    }
}

pub(crate) fn err<T>(p: &str, m: String) -> Result<T, (String, String)> {
    Err((p.to_string(), m))
}

/// `heads` must divide `d_model` (when the head width is derived from it).
pub(crate) fn check_heads(param: &str, heads: i64, d: i64, derived: bool) -> Result<(), (String, String)> {
    if heads < 1 {
        return err(param, format!("must be at least 1, got {heads}"));
    }
    if derived && d % heads != 0 {
        let valid: Vec<String> = (1..=d.min(64)).filter(|h| d % h == 0).map(|h| h.to_string()).collect();
        return err(param, format!("d_model {d} is not divisible by {param} {heads}; valid: {}", valid.join(", ")));
    }
    Ok(())
}

pub(crate) fn check_chunk(chunk: i64) -> Result<(), (String, String)> {
    if chunk < 1 {
        return err("chunk", format!("must be at least 1 token, got {chunk}"));
    }
    Ok(())
}

impl MixerSpec for LinearAttentionSpec {
    const NAME: &'static str = "linear_attention";
    const FAMILY: Family = Family::LinearAttention;
    const DESCRIPTION: &'static str =
        "causal linear attention phi(q) (sum phi(k)^T v), feature map identity/elu1/relu/taylor2/hedgehog (chunked)";
    const PARAMS: crate::registry::ParamTable = &[
        ("heads", "int", "heads"),
        ("head_dim", "int?", "width of each head's q, k, v; default: d_model / heads"),
        ("feature_map", "identity|elu1|relu|taylor2|hedgehog", "feature map on q and k"),
        ("normalize", "bool", "divide by phi(q) . sum phi(k) + eps (needs a non-negative feature map)"),
        ("eps", "float", "added to the denominator when normalize is set"),
        ("chunk", "int", "chunk length of the chunked parallel form"),
    ];
    const FLOPS_FORMULA: &'static str = "8*d*H*D + [hedgehog] 4*H*D^2 + H*ceil(T/C')*(2C'^2(F+Dv') + 4C'*F*Dv')/T, \
         C' = min(chunk, T), F = feature dim, Dv' = D + normalize";
    const STATE_FORMULA: &'static str = "H*F*(D + normalize)";

    fn check(&self, d: i64) -> Result<(), (String, String)> {
        check_heads("heads", self.heads, d, self.head_dim.is_none())?;
        if let Some(hd) = self.head_dim {
            if hd < 1 {
                return err("head_dim", format!("must be at least 1, got {hd}"));
            }
        }
        if self.normalize && self.feature_map == FeatureMap::Identity {
            return err(
                "normalize",
                "the identity map can make the denominator zero or negative; use elu1, relu, taylor2 or hedgehog, \
                 or normalize: false"
                    .into(),
            );
        }
        if self.normalize && !(self.eps >= 0.0 && self.eps.is_finite()) {
            return err("eps", format!("must be a finite non-negative number, got {}", self.eps));
        }
        check_chunk(self.chunk)
    }

    fn params(&self, d: i64) -> i64 {
        let (h, hd) = (self.heads, self.head_dim(d));
        let maps = if self.feature_map == FeatureMap::Hedgehog { 2 * h * (hd * hd + hd) } else { 0 };
        4 * d * h * hd + maps
    }

    fn flops_per_token(&self, d: i64, seq_len: i64) -> f64 {
        let (h, hd) = (self.heads, self.head_dim(d));
        let maps = if self.feature_map == FeatureMap::Hedgehog { 4 * h * hd * hd } else { 0 };
        let f = self.feature_map.dim(hd);
        let kernel = chunk_linear_flops(h, seq_len, f, hd + self.normalize as i64, self.chunk) / seq_len as f64;
        (8 * d * h * hd + maps) as f64 + kernel
    }

    fn state_size(&self, d: i64, _seq_len: i64) -> i64 {
        let hd = self.head_dim(d);
        self.heads * self.feature_map.dim(hd) * (hd + self.normalize as i64)
    }

    fn output_params() -> &'static [&'static str] {
        &["o_proj.weight"]
    }
    fn build(&self, p: &Path, ctx: &BuildCtx) -> Built {
        let hd = self.head_dim(ctx.d_model);
        let shape = BranchShape { heads: self.heads, qk_dim: hd, v_dim: hd };
        let norm = self.normalize.then_some(self.eps);
        Built::Sequence(Box::new(LinearBranch::new(p, shape, self.feature_map, norm, self.chunk, ctx)))
    }
}

impl LinearAttentionSpec {
    pub fn head_dim(&self, d: i64) -> i64 {
        self.head_dim.unwrap_or(d / self.heads.max(1))
    }
}

/// Hedgehog's learned map for one of q, k: `x [B, H, T, D] -> softmax([x W + b, -(x W + b)]) [B, H, T, 2D]`.
#[derive(Debug)]
struct Hedgehog {
    /// `[H, D, D]`, identity at init (decayed like every matrix).
    weight: Tensor,
    /// `[H, 1, D]`, zero at init.
    bias: Tensor,
}

impl Hedgehog {
    fn new(p: &Path, heads: i64, d: i64) -> Hedgehog {
        let eye = Tensor::eye(d, (Kind::Float, p.device())).expand([heads, d, d], false);
        let weight = p.set_group(DECAY).var_copy("weight", &eye);
        let bias = p.set_group(NO_DECAY).var("bias", &[heads, 1, d], Init::Const(0.0));
        Hedgehog { weight, bias }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let y = flop_count::matmul(x, &self.weight) + &self.bias; // [B, H, T, D]
        Tensor::cat(&[&y, &y.neg()], -1).softmax(-1, y.kind()) // [B, H, T, 2D]
    }
}

/// Sizes of a linear-attention branch: q, k of width `qk_dim` before the feature map; v of width `v_dim`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BranchShape {
    pub(crate) heads: i64,
    pub(crate) qk_dim: i64,
    pub(crate) v_dim: i64,
}

/// The built `linear_attention` mixer, also the linear branch of `based`.
#[derive(Debug)]
pub struct LinearBranch {
    shape: BranchShape,
    map: FeatureMap,
    /// `Some(eps)`: normalised by `phi(q) . z + eps`.
    normalize: Option<f64>,
    chunk: i64,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    /// Hedgehog's maps for q and k.
    maps: Option<(Hedgehog, Hedgehog)>,
    path: KernelPath,
}

impl LinearBranch {
    pub(crate) fn new(
        p: &Path,
        shape: BranchShape,
        map: FeatureMap,
        normalize: Option<f64>,
        chunk: i64,
        ctx: &BuildCtx,
    ) -> LinearBranch {
        let (d, h) = (ctx.d_model, shape.heads);
        let maps = (map == FeatureMap::Hedgehog)
            .then(|| (Hedgehog::new(&(p / "q_map"), h, shape.qk_dim), Hedgehog::new(&(p / "k_map"), h, shape.qk_dim)));
        LinearBranch {
            shape,
            map,
            normalize,
            chunk,
            q_proj: Linear::new(&(p / "q_proj"), d, h * shape.qk_dim, INIT_STD, false),
            k_proj: Linear::new(&(p / "k_proj"), d, h * shape.qk_dim, INIT_STD, false),
            v_proj: Linear::new(&(p / "v_proj"), d, h * shape.v_dim, INIT_STD, false),
            o_proj: Linear::new(&(p / "o_proj"), h * shape.v_dim, d, residual_std(ctx.n_blocks), false),
            maps,
            path: ctx.kernel_path,
        }
    }

    /// `x [B, H, T, D] -> phi(x) [B, H, T, F]`; `which` picks Hedgehog's q (0) or k (1) map.
    fn phi(&self, x: &Tensor, which: usize) -> Tensor {
        match self.map {
            FeatureMap::Identity => x.shallow_clone(),
            FeatureMap::Elu1 => x.elu() + 1.0,
            FeatureMap::Relu => x.relu(),
            FeatureMap::Taylor2 => {
                let d = x.size()[3] as f64;
                let outer = (x.unsqueeze(-1) * x.unsqueeze(-2)).flatten(-2, -1); // [B, H, T, D^2]
                let ones = Tensor::ones_like(&x.narrow(-1, 0, 1));
                Tensor::cat(&[ones, x / d.powf(0.25), outer / (2.0 * d).sqrt()], -1)
                // [B, H, T, 1 + D + D^2]
            }
            FeatureMap::Hedgehog => {
                let (q_map, k_map) = self.maps.as_ref().expect("hedgehog maps are built with the branch");
                [q_map, k_map][which].forward(x)
            }
        }
    }

    /// `x [B, T, d] -> phi(q), phi(k) [B, H, T, F], v [B, H, T, Dv'] (with the ones column when normalising)`.
    fn features(&self, x: &Tensor) -> (Tensor, Tensor, Tensor) {
        let (b, t, _) = x.size3().expect("linear attention input must be [B, T, d]");
        let BranchShape { heads, qk_dim, v_dim } = self.shape;
        let split = |y: Tensor, w: i64| y.view([b, t, heads, w]).transpose(1, 2); // [B, H, T, w]
        let q = self.phi(&split(self.q_proj.forward(x), qk_dim), 0);
        let k = self.phi(&split(self.k_proj.forward(x), qk_dim), 1);
        let v = split(self.v_proj.forward(x), v_dim);
        let v = match self.normalize {
            Some(_) => Tensor::cat(&[&v, &Tensor::ones_like(&v.narrow(-1, 0, 1))], -1), // [B, H, T, Dv + 1]
            None => v,
        };
        (q, k, v)
    }

    /// `o [B, H, T, Dv'] -> [B, T, d]`, dividing by the denominator column when normalising.
    fn out(&self, o: &Tensor) -> Tensor {
        let (b, h, t, _) = o.size4().expect("linear attention output must be [B, H, T, Dv']");
        let dv = self.shape.v_dim;
        let y = match self.normalize {
            Some(eps) => o.narrow(-1, 0, dv) / (o.narrow(-1, dv, 1) + eps), // q S / (q . z + eps)
            None => o.shallow_clone(),
        };
        self.o_proj.forward(&y.transpose(1, 2).contiguous().view([b, t, h * dv]))
    }
}

impl SequenceMixer for LinearBranch {
    fn forward(&self, x: &Tensor) -> Tensor {
        let (q, k, v) = self.features(x);
        let (o, _) = chunk_linear(&q, &k, &v, Decay::None, None, self.chunk, self.path);
        self.out(&o)
    }

    /// `[S | z]`: `[B, H, F, Dv']`, zeros.
    fn init_state(&self, batch: i64) -> State {
        let BranchShape { heads, qk_dim, v_dim } = self.shape;
        let dv = v_dim + self.normalize.is_some() as i64;
        let like = &self.o_proj.weight;
        let s = Tensor::zeros([batch, heads, self.map.dim(qk_dim), dv], (like.kind(), like.device()));
        State { tensors: vec![s], position: 0 }
    }

    fn step(&self, x: &Tensor, state: &mut State) -> Tensor {
        let (q, k, v) = self.features(&x.unsqueeze(1)); // [B, H, 1, *]
        let (o, s) = linear_step(&q.select(2, 0), &k.select(2, 0), &v.select(2, 0), Decay::None, &state.tensors[0]);
        state.tensors[0] = s;
        state.position += 1;
        self.out(&o.unsqueeze(2)).squeeze_dim(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gated_rnn::tests::input_gradient_matches_finite_differences;
    use crate::LayerSpec;
    use tch::nn::VarStore;
    use tch::Device;

    const D: i64 = 16;

    fn spec(json: &str) -> LayerSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn gradients_match_finite_differences() {
        for json in [
            r#"{"mixer":"linear_attention","params":{"heads":2,"chunk":3}}"#,
            r#"{"mixer":"linear_attention","params":{"heads":2,"feature_map":"hedgehog","chunk":2}}"#,
        ] {
            input_gradient_matches_finite_differences(&spec(json));
        }
    }

    #[test]
    fn taylor2_features_give_the_taylor_series_of_exp() {
        let (vs, d) = (VarStore::new(Device::Cpu), 5);
        let ctx = BuildCtx { d_model: D, layer: 0, n_blocks: 1, kernel_path: KernelPath::Auto };
        let shape = BranchShape { heads: 1, qk_dim: d, v_dim: d };
        let branch = LinearBranch::new(&vs.root(), shape, FeatureMap::Taylor2, None, 4, &ctx);
        let opts = (Kind::Double, Device::Cpu);
        let (q, k) = (Tensor::randn([1, 1, 3, d], opts), Tensor::randn([1, 1, 3, d], opts));
        let (fq, fk) = (branch.phi(&q, 0), branch.phi(&k, 1));
        assert_eq!(fq.size()[3], FeatureMap::Taylor2.dim(d));
        let s = (&q * &k).sum_dim_intlist(-1, false, Kind::Double) / (d as f64).sqrt();
        let expected = &s * &s / 2.0 + &s + 1.0;
        let got = (fq * fk).sum_dim_intlist(-1, false, Kind::Double);
        assert!((got - expected).abs().max().double_value(&[]) < 1e-12);
    }

    #[test]
    fn hedgehog_starts_as_softmax_of_plus_minus_x() {
        let vs = VarStore::new(Device::Cpu);
        let map = Hedgehog::new(&vs.root(), 3, 4);
        let x = Tensor::randn([2, 3, 5, 4], (Kind::Float, Device::Cpu));
        let expected = Tensor::cat(&[&x, &x.neg()], -1).softmax(-1, Kind::Float);
        assert!((map.forward(&x) - expected).abs().max().double_value(&[]) < 1e-6);
    }

    #[test]
    fn bad_parameters_name_the_parameter() {
        let la = |json: &str| serde_json::from_str::<LinearAttentionSpec>(json).unwrap().check(D).unwrap_err().0;
        assert_eq!(la(r#"{"heads":3}"#), "heads");
        assert_eq!(la(r#"{"feature_map":"identity"}"#), "normalize");
        assert_eq!(la(r#"{"chunk":0}"#), "chunk");
        assert!(serde_json::from_str::<LinearAttentionSpec>(r#"{"feature_map":"cosine"}"#).is_err());
    }
}
