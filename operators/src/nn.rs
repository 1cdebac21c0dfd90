//! Small layers shared by the mixers: a linear map that records its FLOPs, RMSNorm, and the optimiser
//! groups. Each layer decides its parameter's name, initialisation and weight-decay group where it
//! creates it (STYLE.md 5); there is no model-wide re-initialisation pass.

use kernels::flop_count;
use tch::nn::{Init, Path};
use tch::{Kind, Tensor};

/// Optimiser group of parameters that take weight decay (matrices of projections).
pub const DECAY: usize = 0;
/// Optimiser group of parameters that never decay: norms, biases, embeddings, and whatever a mixer marks
/// (decay rates, `A_log`, `dt` bias).
pub const NO_DECAY: usize = 1;

/// The standard deviation GPT-2 uses for projections: 0.02.
pub const INIT_STD: f64 = 0.02;

/// Scaled init for projections that write into the residual stream: 0.02 / sqrt(2 * n_blocks) (GPT-2),
/// so the residual's variance does not grow with depth.
pub fn residual_std(n_blocks: i64) -> f64 {
    INIT_STD / (2.0 * n_blocks.max(1) as f64).sqrt()
}

/// `x` cut along its last dimension into `N` consecutive views of the given widths, as one `split_with_sizes`
/// op: its backward pass concatenates the pieces' gradients, where `N` `narrow`s would each scatter theirs
/// into a zero tensor of x's full size and autograd would then sum those (two fills and an add of a
/// projection's width per call, measured in Mamba's training profile).
pub fn split_last<const N: usize>(x: &Tensor, widths: [i64; N]) -> [Tensor; N] {
    let parts = x.split_with_sizes(widths, -1);
    parts.try_into().unwrap_or_else(|p: Vec<Tensor>| panic!("split_with_sizes gave {} pieces for {N} widths", p.len()))
}

/// `f` with autocast off: its ops run in their inputs' dtypes. For an elementwise op on a bfloat16
/// activation that autocast would promote to float32 (softplus): libtorch's bfloat16 kernels compute in
/// float32 and round once, so the values are those of the float32 op rounded to bfloat16, without the
/// float32 copies and casts around it. Inside an autocast region only (elsewhere a no-op).
pub fn without_autocast<T>(f: impl FnOnce() -> T) -> T {
    tch::autocast(false, f)
}

/// `y = x W^T (+ b)` with `W: [out, in]`, path `<p>/weight` (decayed) and `<p>/bias` (not decayed).
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    /// A linear map with weights drawn from N(0, std^2) and a zero bias when `bias` is set.
    pub fn new(p: &Path, in_dim: i64, out_dim: i64, std: f64, bias: bool) -> Linear {
        let weight = p.set_group(DECAY).var("weight", &[out_dim, in_dim], Init::Randn { mean: 0.0, stdev: std });
        let bias = bias.then(|| p.set_group(NO_DECAY).var("bias", &[out_dim], Init::Const(0.0)));
        Linear { weight, bias }
    }

    /// `x [..., in] -> [..., out]`; records 2 * in * out FLOPs per row. One `linear` op: under bf16 autocast
    /// the output (bias included) is bf16, as torch's `nn.Linear` gives, not a float32 promotion.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        flop_count::linear(x, &self.weight, self.bias.as_ref())
    }

    /// Parameter count of a linear map.
    pub fn params(in_dim: i64, out_dim: i64, bias: bool) -> i64 {
        in_dim * out_dim + if bias { out_dim } else { 0 }
    }
}

/// Root-mean-square normalisation with a learned gain initialised to one (never decayed).
#[derive(Debug)]
pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f64,
}

impl RmsNorm {
    pub fn new(p: &Path, dim: i64, eps: f64) -> RmsNorm {
        let weight = p.set_group(NO_DECAY).var("weight", &[dim], Init::Const(1.0));
        RmsNorm { weight, eps }
    }

    /// `x / sqrt(mean(x^2) + eps) * g` over the last dimension. On CUDA through libtorch's fused kernel
    /// (`at::rms_norm`: one pass, and the backward keeps only the input and the inverse RMS instead of every
    /// intermediate); elsewhere written out, the definition the float64 tests check.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        if x.device().is_cuda() {
            return x.rms_norm([self.weight.size()[0]], Some(&self.weight), self.eps);
        }
        let ms = x.square().mean_dim(-1, true, x.kind()); // [..., 1]
        x * (ms + self.eps).rsqrt() * &self.weight
    }
}

/// Rotary position embedding (rotate-half form) of `x [B, heads, T, D]` at positions `(start..start + T) /
/// scale`, with inverse frequencies `inv_freq [D/2]`. The angles and their cos and sin are computed in
/// float32 (float64 for float64 x) and only cos and sin are rounded to x's dtype: in bfloat16 (x's dtype
/// under autocast) positions past 256 are no longer integers and an angle of 2000 rad is off by up to 8, so
/// a rope computed in x's dtype merged neighbouring positions and scrambled the high frequencies.
pub fn rope(x: &Tensor, start: i64, scale: f64, inv_freq: &Tensor) -> Tensor {
    let t = x.size()[2];
    let kind = if x.kind() == Kind::Double { Kind::Double } else { Kind::Float };
    let pos = Tensor::arange_start(start, start + t, (kind, x.device())) / scale; // [T]
    let angles = pos.unsqueeze(1) * inv_freq.to_kind(kind).unsqueeze(0); // [T, D/2]
    let angles = Tensor::cat(&[&angles, &angles], -1); // [T, D]
    let (cos, sin) = (angles.cos().to_kind(x.kind()), angles.sin().to_kind(x.kind()));
    let half = x.size()[3] / 2;
    let [x1, x2] = split_last(x, [half, half]);
    let rotated = Tensor::cat(&[&x2.neg(), &x1], -1); // [B, heads, T, D]
    x * cos + rotated * sin
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// A bfloat16 rope at positions past 256 agrees with the float64 one to bfloat16 rounding (computed in
    /// bfloat16 throughout, as before, its error was 4.7-5.1 against values of at most 4.3 here).
    #[test]
    fn rope_in_bfloat16_keeps_float32_angles() {
        let (d, t, start) = (16, 64, 1500);
        let x = Tensor::randn([1, 2, t, d], (Kind::Double, Device::Cpu));
        let inv_freq =
            (Tensor::arange_start_step(0, d, 2, (Kind::Double, Device::Cpu)) * (-(10000f64.ln()) / d as f64)).exp();
        let want = rope(&x, start, 1.0, &inv_freq);
        // the mixers keep inv_freq in the parameters' dtype (float32 master weights under autocast)
        let got = rope(&x.to_kind(Kind::BFloat16), start, 1.0, &inv_freq.to_kind(Kind::Float));
        assert_eq!(got.kind(), Kind::BFloat16);
        let err = (got.to_kind(Kind::Double) - &want).abs().max().double_value(&[]);
        let scale = want.abs().max().double_value(&[]);
        assert!(err <= 2e-2 * scale, "bfloat16 rope off by {err} (largest value {scale})");
        // position interpolation: one token at 2 s with scale 2 is rotated as at s with scale 1
        let x1 = x.narrow(2, 0, 1);
        let (a, b) = (rope(&x1, 2 * start, 2.0, &inv_freq), rope(&x1, start, 1.0, &inv_freq));
        assert!((a - b).abs().max().double_value(&[]) < 1e-12);
    }
}
