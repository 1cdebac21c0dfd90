//! The two mixer interfaces. A sequence mixer moves information between positions (causally); a channel
//! mixer transforms each position on its own. Both map `[B, T, d_model] -> [B, T, d_model]`.

use tch::Tensor;

/// The recurrent state a sequence mixer carries between `step` calls, batch-first tensors.
/// For attention it is the KV cache, which grows with every step.
#[derive(Debug, Default)]
pub struct State {
    pub tensors: Vec<Tensor>,
    /// Tokens stepped so far (the next token's position, for position-dependent mixers such as RoPE).
    pub position: i64,
}

impl State {
    /// State elements held per sequence (what `state_size` must predict).
    pub fn elements_per_sequence(&self, batch: i64) -> i64 {
        self.tensors.iter().map(|t| t.numel() as i64).sum::<i64>() / batch.max(1)
    }
}

/// A causal token mixer with a parallel (training) form and a recurrent form.
pub trait SequenceMixer: std::fmt::Debug + Send {
    /// Parallel form: `x [B, T, d] -> [B, T, d]`; output `t` depends only on inputs `<= t`.
    fn forward(&self, x: &Tensor) -> Tensor;
    /// An empty state for `batch` sequences, on the mixer's device and dtype.
    fn init_state(&self, batch: i64) -> State;
    /// Recurrent form: one token `x [B, d] -> [B, d]`, updating `state`. Running it over a sequence
    /// equals `forward` on that sequence.
    fn step(&self, x: &Tensor, state: &mut State) -> Tensor;
}

/// A position-wise mixer (MLP, SwiGLU, mixture of experts).
pub trait ChannelMixer: std::fmt::Debug + Send {
    /// `x [B, T, d] -> [B, T, d]`, each position independently.
    fn forward(&self, x: &Tensor) -> Tensor;
    /// An auxiliary training loss from the last `forward` (the load-balancing loss of a mixture of
    /// experts), already scaled by its coefficient; `None` for most mixers.
    fn aux_loss(&self) -> Option<Tensor> {
        None
    }
}
