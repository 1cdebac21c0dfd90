//! # kernels
//!
//! Fast paths for the sequence mixers, each beside the plain-tch reference that defines its math.
//!
//! Key design decision: the reference is the specification. Every fast path (libtorch's fused
//! scaled-dot-product attention today, our own CUDA extensions as they land) is selected by
//! [`KernelPath`] and tested against its reference in float64; `KernelPath::Reference` forces the
//! plain path everywhere, so any result can be reproduced without the fast code.
//!
//! The crate also owns the FLOP counter ([`flop_count`]) that the accounting tests use: the references
//! record the multiply-adds they actually perform, and `operators` checks its formulas against them.

pub mod attention;
pub mod chunk_linear;
pub mod cuda;
pub mod cuda_ext;
pub mod delta_rule;
pub mod flop_count;
pub mod long_conv;
pub mod s4d;
pub mod selective_scan;
pub mod short_conv;
pub mod ssd;
pub mod train_ops;

/// Which implementation a mixer's hot loop uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum KernelPath {
    /// The fastest available path for the tensor's device (fused libtorch ops, CUDA kernels when built).
    #[default]
    Auto,
    /// The plain-tch reference: slow, simple, the definition of the math.
    Reference,
}

impl std::str::FromStr for KernelPath {
    type Err = KernelPathParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(KernelPath::Auto),
            "reference" => Ok(KernelPath::Reference),
            other => Err(KernelPathParseError(other.to_string())),
        }
    }
}

/// A kernel path name that is neither `auto` nor `reference`.
#[derive(Debug, thiserror::Error)]
#[error("unknown kernel path `{0}` (expected `auto` or `reference`)")]
pub struct KernelPathParseError(pub String);
