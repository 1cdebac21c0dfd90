//! The pre-norm residual block: `x + mixer(RMSNorm(x))`, for a sequence or a channel mixer.

use crate::mixer::State;
use crate::nn::RmsNorm;
use crate::registry::{build, BuildCtx, Built};
use crate::spec::LayerSpec;
use tch::nn::Path;
use tch::Tensor;

#[derive(Debug)]
pub struct Block {
    norm: RmsNorm,
    mixer: Built,
}

impl Block {
    /// Parameters live under `p/norm` and `p/mixer`.
    pub fn new(p: &Path, spec: &LayerSpec, ctx: &BuildCtx, norm_eps: f64) -> Block {
        Block { norm: RmsNorm::new(&(p / "norm"), ctx.d_model, norm_eps), mixer: build(spec, &(p / "mixer"), ctx) }
    }

    /// `x [B, T, d] -> [B, T, d]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let h = self.norm.forward(x);
        let y = match &self.mixer {
            Built::Sequence(m) => m.forward(&h),
            Built::Channel(m) => m.forward(&h),
        };
        x + y
    }

    /// The block's pre-norm: the mixer's input for the residual stream `x`.
    pub fn normed(&self, x: &Tensor) -> Tensor {
        self.norm.forward(x)
    }

    /// The mixer alone on its (normed) input `h [B, T, d]`: what the block adds to the residual.
    pub fn mix(&self, h: &Tensor) -> Tensor {
        match &self.mixer {
            Built::Sequence(m) => m.forward(h),
            Built::Channel(m) => m.forward(h),
        }
    }

    /// The mixer's auxiliary loss from the last forward, if it has one.
    pub fn aux_loss(&self) -> Option<Tensor> {
        match &self.mixer {
            Built::Channel(m) => m.aux_loss(),
            Built::Sequence(_) => None,
        }
    }

    pub fn init_state(&self, batch: i64) -> State {
        match &self.mixer {
            Built::Sequence(m) => m.init_state(batch),
            Built::Channel(_) => State::default(),
        }
    }

    /// One token: `x [B, d] -> [B, d]`.
    pub fn step(&self, x: &Tensor, state: &mut State) -> Tensor {
        let h = self.norm.forward(x);
        let y = match &self.mixer {
            Built::Sequence(m) => m.step(&h, state),
            Built::Channel(m) => m.forward(&h.unsqueeze(1)).squeeze_dim(1),
        };
        x + y
    }
}
