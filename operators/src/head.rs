//! Output heads: what turns the residual stream after the last block into the logits a task scores.
//!
//! - [`HeadSpec::Next`] (the default): the language-model head, `RMSNorm -> Linear(d, V)` at every position,
//!   `[B, T, d] -> [B, T, V]`. Paths `norm.weight` (never decayed) and `head.weight` (N(0, 0.02^2), decayed).
//!   Parameters `d + d V`; forward FLOPs per token `2 d V`.
//! - [`HeadSpec::Compression`]: the decoder of MAD's compression task (Poli et al. 2024, arXiv 2403.17844; the
//!   reference's `mad/model/auto_encoder.py` with `global_pool = 'last'`). The encoder is the stack; its code is
//!   the residual stream at the last position (the compression token), with no final norm, as in the reference:
//!
//!   ```text
//!   c = h[:, T-1]                               [B, d]      the code
//!   x_i = c + p_i,  i in 0..P                   [B, P, d]   p: fixed sin-cos embedding, not a parameter
//!   x = GELU(Linear(RMSNorm(x)))                [B, P, d]   decoder.norm1, decoder.fc1
//!   x = GELU(Linear(RMSNorm(x)))                [B, P, d]   decoder.norm2, decoder.fc2
//!   logits = Linear(RMSNorm(x))                 [B, P, V]   decoder.norm3, decoder.out
//!   ```
//!   `p_i = [sin(i w_0) .. sin(i w_{m-1}), cos(i w_0) .. cos(i w_{m-1})]` with `m = d/2` and
//!   `w_k = 10000^(-k / (m - 1))` (the reference's `posemb_sincos_1d`; it needs an even `d >= 4`).
//!   Every linear map has a bias, as `nn.Linear` in the reference; weights N(0, 0.02^2) and decayed, biases zero,
//!   norm gains one, neither decayed. Parameters `3 d + 2 (d^2 + d) + d V + V`. Forward FLOPs per sequence:
//!   `P (2 d^2 + 2 d^2 + 2 d V)` (the three matrix products at each decoder position; the position add, norms,
//!   GELUs and biases are elementwise, so not counted), i.e. `P / T (4 d^2 + 2 d V)` per token at length `T`.
//!   The decoder reads only the last position, so it has no recurrent form of its own: `Stack::step` is for the
//!   next-token head.

use crate::nn::{Linear, RmsNorm, INIT_STD};
use crate::spec::SpecError;
use serde::{Deserialize, Serialize};
use tch::nn::Path;
use tch::Tensor;

/// Which head a stack ends in. JSON: absent (next-token) or `{"kind": "compression", "positions": 32}`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum HeadSpec {
    /// Next-token logits at every position.
    #[default]
    Next,
    /// MAD compression's decoder: `positions` outputs reconstructed from the last position alone.
    Compression {
        /// Decoder positions `P` (MAD: the sequence length).
        positions: i64,
    },
}

impl HeadSpec {
    /// True for the default head (so `StackSpec` leaves it out of its JSON and old trial ids stay the same).
    pub fn is_next(&self) -> bool {
        matches!(self, HeadSpec::Next)
    }

    /// Checks the head against the model width.
    pub fn check(&self, d_model: i64) -> Result<(), SpecError> {
        match *self {
            HeadSpec::Next => Ok(()),
            HeadSpec::Compression { positions } => {
                if positions < 1 {
                    return Err(SpecError::Field {
                        field: "head.positions",
                        message: format!("must be at least 1, got {positions}"),
                    });
                }
                if d_model < 4 || d_model % 2 != 0 {
                    return Err(SpecError::Field {
                        field: "d_model",
                        message: format!(
                            "the compression head's sin-cos position embedding needs an even d_model of at least 4, got {d_model}"
                        ),
                    });
                }
                Ok(())
            }
        }
    }

    /// Parameters of the head, norms included.
    pub fn params(&self, d: i64, vocab: i64) -> i64 {
        match self {
            HeadSpec::Next => d + Linear::params(d, vocab, false),
            HeadSpec::Compression { .. } => 3 * d + 2 * Linear::params(d, d, true) + Linear::params(d, vocab, true),
        }
    }

    /// Parameters of the final projection onto the vocabulary (counted with the embedding as "embedding
    /// parameters").
    pub fn output_params(&self, d: i64, vocab: i64) -> i64 {
        match self {
            HeadSpec::Next => Linear::params(d, vocab, false),
            HeadSpec::Compression { .. } => Linear::params(d, vocab, true),
        }
    }

    /// Forward FLOPs per input token at `seq_len`.
    pub fn flops_per_token(&self, d: i64, vocab: i64, seq_len: i64) -> f64 {
        match *self {
            HeadSpec::Next => 2.0 * (d * vocab) as f64,
            HeadSpec::Compression { positions } => {
                positions as f64 * (4 * d * d + 2 * d * vocab) as f64 / seq_len.max(1) as f64
            }
        }
    }
}

/// The fixed sin-cos position embedding `[positions, d]` (see the module docs); `d` must be even and >= 4.
pub fn sincos_positions(positions: i64, d: i64) -> Vec<f64> {
    let m = d / 2;
    let mut out = Vec::with_capacity((positions * d) as usize);
    for i in 0..positions {
        let angle = |k: i64| i as f64 * 10000f64.powf(-(k as f64) / (m - 1) as f64);
        out.extend((0..m).map(|k| angle(k).sin()));
        out.extend((0..m).map(|k| angle(k).cos()));
    }
    out
}

/// A built head.
#[derive(Debug)]
pub(crate) enum Head {
    Next { norm: RmsNorm, head: Linear },
    Compression(Decoder),
}

/// MAD compression's decoder.
#[derive(Debug)]
pub(crate) struct Decoder {
    norms: [RmsNorm; 3],
    fc1: Linear,
    fc2: Linear,
    out: Linear,
    positions: i64,
}

impl Head {
    /// Creates the head's parameters under `p` (the stack's root).
    pub(crate) fn new(p: &Path, spec: HeadSpec, d: i64, vocab: i64, eps: f64) -> Head {
        match spec {
            HeadSpec::Next => Head::Next {
                norm: RmsNorm::new(&(p / "norm"), d, eps),
                head: Linear::new(&(p / "head"), d, vocab, INIT_STD, false),
            },
            HeadSpec::Compression { positions } => {
                let q = p / "decoder";
                let norm = |name: &str| RmsNorm::new(&(&q / name), d, eps);
                Head::Compression(Decoder {
                    norms: [norm("norm1"), norm("norm2"), norm("norm3")],
                    fc1: Linear::new(&(&q / "fc1"), d, d, INIT_STD, true),
                    fc2: Linear::new(&(&q / "fc2"), d, d, INIT_STD, true),
                    out: Linear::new(&(&q / "out"), d, vocab, INIT_STD, true),
                    positions,
                })
            }
        }
    }

    /// `h [B, T, d]` (the residual stream after the last block) -> logits `[B, T, V]` or `[B, P, V]`.
    pub(crate) fn forward(&self, h: &Tensor) -> Tensor {
        match self {
            Head::Next { norm, head } => head.forward(&norm.forward(h)),
            Head::Compression(dec) => dec.forward(h),
        }
    }

    /// One position of the next-token head: `h [B, d] -> [B, V]`.
    pub(crate) fn step(&self, h: &Tensor) -> Tensor {
        match self {
            Head::Next { norm, head } => head.forward(&norm.forward(h)),
            Head::Compression(_) => {
                panic!("the compression head has no recurrent form: it decodes only after the whole sequence")
            }
        }
    }
}

impl Decoder {
    fn forward(&self, h: &Tensor) -> Tensor {
        let (_b, t, d) = h.size3().expect("the decoder takes [B, T, d]");
        let code = h.select(1, t - 1).unsqueeze(1); // [B, 1, d]
        let pos = Tensor::from_slice(&sincos_positions(self.positions, d))
            .view([1, self.positions, d])
            .to_kind(h.kind())
            .to_device(h.device()); // [1, P, d]
        let x = code + pos; // [B, P, d]
        let x = self.fc1.forward(&self.norms[0].forward(&x)).gelu("none");
        let x = self.fc2.forward(&self.norms[1].forward(&x)).gelu("none");
        self.out.forward(&self.norms[2].forward(&x)) // [B, P, V]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sincos_matches_the_reference_formula() {
        let (p, d) = (5, 8);
        let table = sincos_positions(p, d);
        assert_eq!(table.len(), (p * d) as usize);
        // Position 0: sin 0 = 0 and cos 0 = 1.
        assert!(table[..4].iter().all(|&v| v == 0.0) && table[4..8].iter().all(|&v| v == 1.0));
        // Position 3, frequency k = 2 of m = 4: w = 10000^(-2/3).
        let w = 10000f64.powf(-2.0 / 3.0);
        assert!((table[(3 * d + 2) as usize] - (3.0 * w).sin()).abs() < 1e-15);
        assert!((table[(3 * d + 4 + 2) as usize] - (3.0 * w).cos()).abs() < 1e-15);
    }

    #[test]
    fn head_json_is_absent_for_next_and_tagged_for_compression() {
        assert!(HeadSpec::default().is_next());
        let c = HeadSpec::Compression { positions: 32 };
        assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"kind":"compression","positions":32}"#);
        assert_eq!(serde_json::from_str::<HeadSpec>(r#"{"kind":"compression","positions":32}"#).unwrap(), c);
        assert!(serde_json::from_str::<HeadSpec>(r#"{"kind":"compression","positions":32,"x":1}"#).is_err());
        assert!(c.check(6).is_ok());
        assert!(c.check(7).is_err() && c.check(2).is_err());
        assert!(HeadSpec::Compression { positions: 0 }.check(8).is_err());
    }
}
