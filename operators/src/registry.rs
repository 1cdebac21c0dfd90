//! The mixer registry: every mixer's name (its YAML and CLI name), family, parameter schema with
//! defaults, one-line description and accounting formulas.
//!
//! Adding a mixer: write its file (a `*Spec` implementing [`MixerSpec`] and the built mixer), add
//! `pub mod` in lib.rs and one line to the `registry!` list at the bottom of this file. The macro
//! generates [`MixerKind`], [`LayerSpec`] and every dispatch; [`LayerSpec::build`] is the only place a
//! mixer is constructed.

use crate::mixer::{ChannelMixer, SequenceMixer};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use tch::nn::Path;

/// The families researchers compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Attention,
    LinearAttention,
    GatedRnn,
    Ssm,
    LongConv,
    Channel,
}

/// One documented parameter of a mixer.
#[derive(Serialize, Debug, Clone)]
pub struct ParamDoc {
    pub name: &'static str,
    #[serde(rename = "type")]
    pub ty: &'static str,
    pub default: serde_json::Value,
    pub doc: &'static str,
}

/// What `workbench mixers` prints for one mixer.
#[derive(Serialize, Debug, Clone)]
pub struct MixerInfo {
    pub name: &'static str,
    pub family: Family,
    pub description: &'static str,
    pub params: Vec<ParamDoc>,
    pub flops_formula: &'static str,
    pub state_formula: &'static str,
}

/// Static documentation of a mixer's parameters: (name, type, doc). Defaults come from the spec's serde defaults.
pub type ParamTable = &'static [(&'static str, &'static str, &'static str)];

/// What every mixer's parameter struct provides: its registry entry, validation, accounting and construction.
/// The accounting functions are the formulas in the mixer file's header; tests check them against counted
/// operations, allocated parameters and the state `step` holds.
pub trait MixerSpec: Serialize + DeserializeOwned + Default + Clone + std::fmt::Debug + PartialEq {
    /// The YAML/CLI name (must equal the registry variant's snake_case name).
    const NAME: &'static str;
    const FAMILY: Family;
    /// One line for `workbench mixers`.
    const DESCRIPTION: &'static str;
    const PARAMS: ParamTable;
    const FLOPS_FORMULA: &'static str;
    const STATE_FORMULA: &'static str;
    /// `Err((param, message))` naming the parameter and what would be valid at this width.
    fn check(&self, d_model: i64) -> Result<(), (String, String)>;
    /// Trainable parameters of the mixer (the block's norm is counted by the stack).
    fn params(&self, d_model: i64) -> i64;
    /// Forward FLOPs per token at `seq_len` (see `flops` for the convention).
    fn flops_per_token(&self, d_model: i64, seq_len: i64) -> f64;
    /// Recurrent state elements per sequence held after `seq_len` tokens (0 for channel mixers).
    fn state_size(&self, d_model: i64, seq_len: i64) -> i64;
    /// Creates the mixer's parameters under `p`, initialised as its paper says.
    fn build(&self, p: &Path, ctx: &BuildCtx) -> Built;
    /// The parameters (paths relative to the mixer, matched as a suffix, so `down.weight` also names
    /// `experts.3.down.weight`) through which the mixer writes into the residual stream: zeroing them makes
    /// the block the identity. Grafting's `grow_depth` uses it; empty (the default) means not declared.
    fn output_params() -> &'static [&'static str] {
        &[]
    }
}

/// A mixer name that is not in the registry, with the closest valid ones.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unknown mixer `{name}`{}; valid mixers: {}", suggest(.suggestions), MixerKind::ALL.iter().map(|k| k.name()).collect::<Vec<_>>().join(", "))]
pub struct UnknownMixer {
    pub name: String,
    pub suggestions: Vec<&'static str>,
}

fn suggest(s: &[&'static str]) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!(" (did you mean `{}`?)", s.join("` or `"))
    }
}

fn info_of<S: MixerSpec>() -> MixerInfo {
    let defaults = serde_json::to_value(S::default()).unwrap_or_default();
    let params = S::PARAMS
        .iter()
        .map(|(name, ty, doc)| ParamDoc {
            name,
            ty,
            default: defaults.get(*name).cloned().unwrap_or(serde_json::Value::Null),
            doc,
        })
        .collect();
    MixerInfo {
        name: S::NAME,
        family: S::FAMILY,
        description: S::DESCRIPTION,
        params,
        flops_formula: S::FLOPS_FORMULA,
        state_formula: S::STATE_FORMULA,
    }
}

macro_rules! registry {
    ($($variant:ident => $spec:ty),* $(,)?) => {
        /// Every mixer the workbench knows.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum MixerKind { $($variant),* }

        /// One block of a stack: the mixer and its parameters (the block adds the pre-norm and the residual).
        /// JSON form: `{"mixer": "attention", "params": {"heads": 4, ...}}`.
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
        #[serde(tag = "mixer", content = "params", rename_all = "snake_case")]
        pub enum LayerSpec { $($variant($spec)),* }

        impl MixerKind {
            pub const ALL: &'static [MixerKind] = &[$(MixerKind::$variant),*];

            pub fn name(self) -> &'static str {
                match self { $(MixerKind::$variant => <$spec as MixerSpec>::NAME),* }
            }
            pub fn family(self) -> Family {
                match self { $(MixerKind::$variant => <$spec as MixerSpec>::FAMILY),* }
            }
            /// The mixer with its default parameters.
            pub fn default_spec(self) -> LayerSpec {
                match self { $(MixerKind::$variant => LayerSpec::$variant(<$spec>::default())),* }
            }
            /// Deserialises this mixer's parameters straight from a serde source (so YAML errors keep their
            /// line and column); unknown parameter names are rejected.
            pub fn deserialize_spec<'de, D: Deserializer<'de>>(self, d: D) -> Result<LayerSpec, D::Error> {
                Ok(match self { $(MixerKind::$variant => LayerSpec::$variant(<$spec>::deserialize(d)?)),* })
            }
            /// Registry entry with documentation and defaults.
            pub fn info(self) -> MixerInfo {
                match self { $(MixerKind::$variant => info_of::<$spec>()),* }
            }
        }

        impl LayerSpec {
            pub fn kind(&self) -> MixerKind {
                match self { $(LayerSpec::$variant(_) => MixerKind::$variant),* }
            }
            /// Checks the parameters against the model width: `Err((param, message))`; the caller adds the layer.
            pub fn check(&self, d_model: i64) -> Result<(), (String, String)> {
                match self { $(LayerSpec::$variant(s) => s.check(d_model)),* }
            }
            /// Trainable parameters of the mixer (the block's norm is counted by the stack).
            pub fn params(&self, d_model: i64) -> i64 {
                match self { $(LayerSpec::$variant(s) => s.params(d_model)),* }
            }
            /// Forward FLOPs per token at `seq_len`.
            pub fn flops_per_token(&self, d_model: i64, seq_len: i64) -> f64 {
                match self { $(LayerSpec::$variant(s) => s.flops_per_token(d_model, seq_len)),* }
            }
            /// Recurrent state elements per sequence after `seq_len` tokens.
            pub fn state_size(&self, d_model: i64, seq_len: i64) -> i64 {
                match self { $(LayerSpec::$variant(s) => s.state_size(d_model, seq_len)),* }
            }
            /// Parameters writing into the residual stream (see [`MixerSpec::output_params`]).
            pub fn output_params(&self) -> &'static [&'static str] {
                match self { $(LayerSpec::$variant(_) => <$spec as MixerSpec>::output_params()),* }
            }
            /// Builds the mixer under `p`; the spec must have been validated. The only place mixers are built.
            pub fn build(&self, p: &Path, ctx: &BuildCtx) -> Built {
                match self { $(LayerSpec::$variant(s) => s.build(p, ctx)),* }
            }
        }
    };
}

impl MixerKind {
    /// Sequence mixers move information between positions; channel mixers do not.
    pub fn is_sequence_mixer(self) -> bool {
        self.family() != Family::Channel
    }

    /// Parses a registry name; the error lists the closest valid names.
    pub fn from_name(name: &str) -> Result<MixerKind, UnknownMixer> {
        if let Some(k) = MixerKind::ALL.iter().find(|k| k.name() == name) {
            return Ok(*k);
        }
        let mut scored: Vec<(f64, &'static str)> = MixerKind::ALL
            .iter()
            .map(|k| (strsim::jaro_winkler(name, k.name()), k.name()))
            .filter(|(s, _)| *s > 0.7)
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        Err(UnknownMixer { name: name.to_string(), suggestions: scored.into_iter().take(3).map(|(_, n)| n).collect() })
    }
}

/// Where a block sits in its stack; mixers use it for depth-scaled initialisation.
#[derive(Clone, Copy, Debug)]
pub struct BuildCtx {
    pub d_model: i64,
    pub layer: usize,
    pub n_blocks: i64,
    pub kernel_path: kernels::KernelPath,
}

/// A constructed mixer of either kind.
#[derive(Debug)]
pub enum Built {
    Sequence(Box<dyn SequenceMixer>),
    Channel(Box<dyn ChannelMixer>),
}

/// Builds the mixer a spec describes under the path `p`. The spec must have been validated.
pub fn build(spec: &LayerSpec, p: &Path, ctx: &BuildCtx) -> Built {
    spec.build(p, ctx)
}

// The registry. One line per mixer: `Variant => its Spec type` (the variant's snake_case name is the mixer's
// YAML name and must equal `Spec::NAME`).
registry! {
    Attention => crate::attention::AttentionSpec,
    LinearAttention => crate::linear_attention::LinearAttentionSpec,
    Based => crate::based::BasedSpec,
    Retnet => crate::gated_rnn::RetnetSpec,
    Gla => crate::gated_rnn::GlaSpec,
    Hgrn => crate::rnn::hgrn::HgrnSpec,
    Rglru => crate::rnn::rglru::RglruSpec,
    Deltanet => crate::rnn::deltanet::DeltaNetSpec,
    GatedDeltanet => crate::rnn::deltanet::GatedDeltaNetSpec,
    Mamba => crate::ssm::mamba::MambaSpec,
    Mamba2 => crate::ssm::mamba2::Mamba2Spec,
    S4d => crate::ssm::s4d::S4dSpec,
    Hyena => crate::hyena::HyenaSpec,
    H3 => crate::h3::H3Spec,
    BaseConv => crate::base_conv::BaseConvSpec,
    Mlp => crate::channel::MlpSpec,
    Swiglu => crate::channel::SwigluSpec,
    Moe => crate::moe::MoeSpec,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misspelt_name_gets_the_closest() {
        let e = MixerKind::from_name("atention").unwrap_err();
        assert_eq!(e.suggestions.first(), Some(&"attention"));
        assert!(e.to_string().contains("did you mean `attention`"), "{e}");
    }

    #[test]
    fn documented_params_match_the_spec_fields() {
        for kind in MixerKind::ALL {
            let info = kind.info();
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::json!(kind.name()),
                "variant name and NAME differ"
            );
            let v = serde_json::to_value(kind.default_spec()).unwrap();
            let fields: Vec<String> = v["params"].as_object().unwrap().keys().cloned().collect();
            let mut documented: Vec<String> = info.params.iter().map(|p| p.name.to_string()).collect();
            documented.sort();
            let mut fields = fields;
            fields.sort();
            assert_eq!(documented, fields, "{}: PARAMS table and spec fields differ", kind.name());
        }
    }
}
