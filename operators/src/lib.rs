//! # operators
//!
//! The building blocks every candidate architecture is made of: sequence mixers (attention today; the
//! linear, recurrent, state-space and long-convolution families join the same registry), channel mixers,
//! the pre-norm residual block, and the stack that turns a [`StackSpec`] into a trainable model.
//!
//! Key design decision: the specification is the source of truth for accounting. Parameters, FLOPs per
//! token and state size are pure functions of a [`LayerSpec`] and the model width, so a sweep can be
//! planned (and its budgets checked) without allocating a tensor; the built mixers delegate to the same
//! functions, and tests check those formulas against counted operations and against the state that
//! `step` really holds.

pub mod attention;
pub mod base_conv;
pub mod based;
pub mod block;
pub mod channel;
pub mod flops;
pub mod gated_rnn;
pub mod h3;
pub mod head;
pub mod hyena;
pub mod linear_attention;
pub mod long_conv;
pub mod mixer;
pub mod moe;
pub mod nn;
pub mod registry;
pub mod rnn;
pub mod spec;
pub mod ssm;
pub mod stack;

pub use mixer::{ChannelMixer, SequenceMixer, State};
pub use registry::{Family, MixerKind};
pub use spec::{HeadSpec, LayerSpec, SpecError, StackSpec};
pub use stack::Stack;
