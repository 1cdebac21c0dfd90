//! Small layers shared by the mixers: a linear map that records its FLOPs, RMSNorm, and the optimiser
//! groups. Each layer decides its parameter's name, initialisation and weight-decay group where it
//! creates it (STYLE.md 5); there is no model-wide re-initialisation pass.

use kernels::flop_count;
use tch::nn::{Init, Path};
use tch::Tensor;

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
