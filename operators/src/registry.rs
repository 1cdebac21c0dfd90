//! The mixer registry: every mixer's name (its YAML and CLI name), family, parameter schema with
//! defaults, one-line description and accounting formulas. The `match` in [`build`] is the only place
//! a mixer is constructed.

use crate::attention::{Attention, AttentionSpec};
use crate::channel::{Mlp, MlpSpec, Swiglu, SwigluSpec};
use crate::mixer::{ChannelMixer, SequenceMixer};
use crate::spec::LayerSpec;
use serde::{Deserialize, Deserializer, Serialize};
use tch::nn::Path;

/// Every mixer the workbench knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MixerKind {
    Attention,
    Mlp,
    Swiglu,
}

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

/// Static documentation of a mixer's parameters: (name, type, doc). Defaults come from the spec's serde defaults.
pub type ParamTable = &'static [(&'static str, &'static str, &'static str)];

impl MixerKind {
    pub const ALL: &'static [MixerKind] = &[MixerKind::Attention, MixerKind::Mlp, MixerKind::Swiglu];

    pub fn name(self) -> &'static str {
        match self {
            MixerKind::Attention => "attention",
            MixerKind::Mlp => "mlp",
            MixerKind::Swiglu => "swiglu",
        }
    }

    pub fn family(self) -> Family {
        match self {
            MixerKind::Attention => Family::Attention,
            MixerKind::Mlp | MixerKind::Swiglu => Family::Channel,
        }
    }

    /// Sequence mixers move information between positions; channel mixers do not.
    pub fn is_sequence_mixer(self) -> bool {
        self.family() != Family::Channel
    }

    /// The mixer with its default parameters.
    pub fn default_spec(self) -> LayerSpec {
        match self {
            MixerKind::Attention => LayerSpec::Attention(AttentionSpec::default()),
            MixerKind::Mlp => LayerSpec::Mlp(MlpSpec::default()),
            MixerKind::Swiglu => LayerSpec::Swiglu(SwigluSpec::default()),
        }
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

    /// Deserialises this mixer's parameters straight from a serde source (so YAML errors keep their
    /// line and column); unknown parameter names are rejected.
    pub fn deserialize_spec<'de, D: Deserializer<'de>>(self, d: D) -> Result<LayerSpec, D::Error> {
        Ok(match self {
            MixerKind::Attention => LayerSpec::Attention(AttentionSpec::deserialize(d)?),
            MixerKind::Mlp => LayerSpec::Mlp(MlpSpec::deserialize(d)?),
            MixerKind::Swiglu => LayerSpec::Swiglu(SwigluSpec::deserialize(d)?),
        })
    }

    /// Registry entry with documentation and defaults.
    pub fn info(self) -> MixerInfo {
        let (description, table, flops_formula, state_formula): (&str, ParamTable, &str, &str) = match self {
            MixerKind::Attention => (
                AttentionSpec::DESCRIPTION,
                AttentionSpec::PARAMS,
                AttentionSpec::FLOPS_FORMULA,
                AttentionSpec::STATE_FORMULA,
            ),
            MixerKind::Mlp => (MlpSpec::DESCRIPTION, MlpSpec::PARAMS, MlpSpec::FLOPS_FORMULA, "0"),
            MixerKind::Swiglu => (SwigluSpec::DESCRIPTION, SwigluSpec::PARAMS, SwigluSpec::FLOPS_FORMULA, "0"),
        };
        let defaults = match serde_json::to_value(self.default_spec()) {
            Ok(serde_json::Value::Object(mut m)) => m.remove("params").unwrap_or_default(),
            _ => serde_json::Value::Null,
        };
        let params = table
            .iter()
            .map(|(name, ty, doc)| ParamDoc {
                name,
                ty,
                default: defaults.get(*name).cloned().unwrap_or(serde_json::Value::Null),
                doc,
            })
            .collect();
        MixerInfo { name: self.name(), family: self.family(), description, params, flops_formula, state_formula }
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

/// Builds the mixer a spec describes under the path `p` (its parameters are created, and initialised as
/// the mixer's paper says, right here). The spec must have been validated.
pub fn build(spec: &LayerSpec, p: &Path, ctx: &BuildCtx) -> Built {
    match spec {
        LayerSpec::Attention(s) => Built::Sequence(Box::new(Attention::new(p, s, ctx))),
        LayerSpec::Mlp(s) => Built::Channel(Box::new(Mlp::new(p, s, ctx))),
        LayerSpec::Swiglu(s) => Built::Channel(Box::new(Swiglu::new(p, s, ctx))),
    }
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
