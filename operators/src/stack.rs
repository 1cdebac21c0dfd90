//! A [`StackSpec`] built into a trainable language model:
//!
//! ```text
//! tokens [B, T] -> embed [B, T, d] -> blocks (x + mixer(norm(x))) -> RMSNorm -> head [B, T, V]
//! ```
//! Parameter paths (also checkpoint keys and grafting addresses): `embed.weight`,
//! `layers.{i}.norm.weight`, `layers.{i}.mixer.*`, `norm.weight`, `head.weight`.
//! Embedding init N(0, 0.02^2), not decayed; head N(0, 0.02^2), decayed.

use crate::block::Block;
use crate::mixer::State;
use crate::nn::{Linear, RmsNorm, INIT_STD, NO_DECAY};
use crate::registry::BuildCtx;
use crate::spec::StackSpec;
use kernels::KernelPath;
use tch::nn::{Init, Path};
use tch::Tensor;

#[derive(Debug)]
pub struct Stack {
    pub spec: StackSpec,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: RmsNorm,
    head: Linear,
}

impl Stack {
    /// Creates and initialises every parameter under `p`. The spec must have been validated.
    pub fn new(p: &Path, spec: &StackSpec, kernel_path: KernelPath) -> Stack {
        let d = spec.d_model;
        let n_blocks = spec.layers.len() as i64;
        let embed = p.sub("embed").set_group(NO_DECAY).var(
            "weight",
            &[spec.vocab, d],
            Init::Randn { mean: 0.0, stdev: INIT_STD },
        );
        let layers = p / "layers";
        let blocks = spec
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let ctx = BuildCtx { d_model: d, layer: i, n_blocks, kernel_path };
                Block::new(&(&layers / i), l, &ctx, spec.norm_eps)
            })
            .collect();
        Stack {
            spec: spec.clone(),
            embed,
            blocks,
            norm: RmsNorm::new(&(p / "norm"), d, spec.norm_eps),
            head: Linear::new(&(p / "head"), d, spec.vocab, INIT_STD, false),
        }
    }

    /// The token embedding: `tokens [B, T] -> [B, T, d]` (the blocks' input; grafting stages use it).
    pub fn embed(&self, tokens: &Tensor) -> Tensor {
        Tensor::embedding(&self.embed, tokens, -1, false, false)
    }

    /// The residual blocks, in order (grafting stages run them one by one).
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// The final hidden states before the head: `tokens [B, T] -> [B, T, d]`.
    pub fn hidden(&self, tokens: &Tensor) -> Tensor {
        let mut x = Tensor::embedding(&self.embed, tokens, -1, false, false); // [B, T, d]
        for block in &self.blocks {
            x = block.forward(&x);
        }
        self.norm.forward(&x)
    }

    /// Logits: `tokens [B, T] -> [B, T, V]`.
    pub fn forward(&self, tokens: &Tensor) -> Tensor {
        self.head.forward(&self.hidden(tokens))
    }

    /// The sum of the blocks' auxiliary losses from the last forward (mixture-of-experts balancing), if any.
    pub fn aux_loss(&self) -> Option<Tensor> {
        self.blocks.iter().filter_map(|b| b.aux_loss()).reduce(|a, b| a + b)
    }

    /// Empty recurrent states, one per block.
    pub fn init_states(&self, batch: i64) -> Vec<State> {
        self.blocks.iter().map(|b| b.init_state(batch)).collect()
    }

    /// One token per sequence: `tokens [B] -> logits [B, V]`, advancing `states`.
    pub fn step(&self, tokens: &Tensor, states: &mut [State]) -> Tensor {
        let mut x = Tensor::embedding(&self.embed, tokens, -1, false, false); // [B, d]
        for (block, state) in self.blocks.iter().zip(states.iter_mut()) {
            x = block.step(&x, state);
        }
        self.head.forward(&self.norm.forward(&x))
    }
}
