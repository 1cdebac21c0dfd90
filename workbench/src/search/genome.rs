//! Architecture genomes: a width and a list of layers, each a mixer from the registry with a choice for
//! each of its searched parameters (state sizes, windows, heads...). New mixers join automatically: the
//! default mixer set is every registry entry of the chosen families.
//!
//! ```yaml
//! genome:
//!   families: [attention, channel]        # or `mixers: [attention, swiglu]`; default: the whole registry
//!   d_model: [32, 64]
//!   depth: [2, 4, 6]
//!   base: {attention: {heads: 2}}         # fixed parameters per mixer
//!   params: {attention: {window: [8, 32, null]}}   # searched parameters: one value is chosen per layer
//! ```
//!
//! Operators: a random genome; mutation (one of: change one layer's mixer, change one layer's parameter
//! choice, change the width, change the depth by inserting or removing random layers); one-point crossover
//! over layers. A genome is valid when every task's stack validates (it needs a sequence mixer) and the
//! budget buys a training step.

use crate::error::UsageError;
use crate::space::{Budget, MixerName, MixerParams, Sizes, Space};
use crate::tasks::TaskSpec;
use crate::trial::TrialSpec;
use operators::{Family, LayerSpec, MixerKind, StackSpec};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The `genome:` section.
#[derive(Deserialize, Serialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct GenomeSpec {
    /// The mixers a layer may be; default: every registry mixer of `families`.
    #[serde(default)]
    pub mixers: Option<Vec<MixerName>>,
    /// Registry families to draw mixers from when `mixers` is absent; default: all.
    #[serde(default)]
    pub families: Option<Vec<Family>>,
    /// Widths to choose from.
    pub d_model: Sizes,
    /// Layer counts to choose from.
    pub depth: Sizes,
    /// Fixed parameters per mixer (defaults otherwise).
    #[serde(default)]
    pub base: MixerParams,
    /// Searched parameters per mixer: a list of values for each; every layer picks one.
    #[serde(default)]
    pub params: BTreeMap<MixerName, BTreeMap<String, Vec<Value>>>,
}

impl PartialEq for GenomeSpec {
    fn eq(&self, other: &Self) -> bool {
        serde_json::to_value(self).ok() == serde_json::to_value(other).ok()
    }
}

/// One layer: its mixer and, for each searched parameter of that mixer, the index of the chosen value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Gene {
    pub mixer: MixerKind,
    pub choice: Vec<usize>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Genome {
    pub d_model: i64,
    pub layers: Vec<Gene>,
}

/// A mixer's fixed parameters (JSON) and its searched parameters with their values.
#[derive(Clone, Debug)]
struct MixerOptions {
    base: Value,
    choices: Vec<(String, Vec<Value>)>,
}

/// A validated genome space and what turns a genome into trials.
#[derive(Clone, Debug)]
pub struct GenomeSpace {
    mixers: Vec<MixerKind>,
    options: BTreeMap<MixerKind, MixerOptions>,
    d_model: Vec<i64>,
    depth: Vec<i64>,
    tasks: Vec<TaskSpec>,
    seeds: Vec<u64>,
    pub budget: f64,
    space: Space,
}

impl GenomeSpace {
    /// Validates `spec` against the registry and the space; errors name the line of the offending key.
    pub fn new(space: &Space, spec: &GenomeSpec, budget: Option<Budget>) -> Result<GenomeSpace, UsageError> {
        space.check_common()?;
        let at = |key: &str, msg: String| super::err_in(space, "search", key, format!("genome: {msg}"));
        let budget = match (budget, space.file.budgets.as_slice()) {
            (Some(b), _) => b.0,
            (None, [b]) => b.0,
            (None, bs) => {
                return Err(space.err_at(
                    "budgets",
                    1,
                    format!(
                        "a genome search trains every genome at one budget, and the space has {}; set `search.budget`",
                        bs.len()
                    ),
                ))
            }
        };
        let mixers: Vec<MixerKind> = match (&spec.mixers, &spec.families) {
            (Some(_), Some(_)) => return Err(at("mixers", "give `mixers` or `families`, not both".into())),
            (Some(m), None) => m.iter().map(|n| n.0).collect(),
            (None, fams) => MixerKind::ALL
                .iter()
                .copied()
                .filter(|k| fams.as_ref().is_none_or(|f| f.contains(&k.family())))
                .collect(),
        };
        if mixers.is_empty() {
            return Err(at("families", "no registry mixer belongs to these families".into()));
        }
        if !mixers.iter().any(|k| k.is_sequence_mixer()) {
            return Err(at("mixers", "the mixer set has no sequence mixer, so no genome could use context".into()));
        }
        let mut options = BTreeMap::new();
        for &kind in &mixers {
            let base = spec.base.0.get(&MixerName(kind)).cloned().unwrap_or_else(|| kind.default_spec());
            let base = serde_json::to_value(base).expect("layer spec serialises");
            let mut choices = Vec::new();
            for (param, values) in spec.params.get(&MixerName(kind)).into_iter().flatten() {
                let known: Vec<&String> = base["params"].as_object().map(|o| o.keys().collect()).unwrap_or_default();
                if !known.contains(&param) {
                    let names: Vec<&str> = known.iter().map(|s| s.as_str()).collect();
                    return Err(at(
                        kind.name(),
                        format!("`{}` has no parameter `{param}`; it has: {}", kind.name(), names.join(", ")),
                    ));
                }
                if values.is_empty() {
                    return Err(at(kind.name(), format!("`{}.{param}`: the list of values is empty", kind.name())));
                }
                for v in values {
                    let mut j = base.clone();
                    j["params"][param.as_str()] = v.clone();
                    serde_json::from_value::<LayerSpec>(j)
                        .map_err(|e| at(kind.name(), format!("`{}.{param}` = {v}: {e}", kind.name())))?;
                }
                choices.push((param.clone(), values.clone()));
            }
            options.insert(kind, MixerOptions { base, choices });
        }
        if let Some(k) = spec.params.keys().find(|k| !mixers.contains(&k.0)) {
            return Err(at(k.0.name(), format!("`params` names `{}`, which is not in the mixer set", k.0.name())));
        }
        let g = GenomeSpace {
            mixers,
            options,
            d_model: spec.d_model.0.clone(),
            depth: spec.depth.0.clone(),
            tasks: space.file.tasks.clone(),
            seeds: space.file.seeds.clone(),
            budget,
            space: space.clone(),
        };
        // A space with no valid genome is a mistake to report now, not after a thousand retries.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        if g.random_valid(&mut rng).is_none() {
            let err = g.trials(&g.random(&mut rng)).err().unwrap_or_default();
            return Err(at("genome", format!("no valid genome found in 1000 random draws; e.g. {err}")));
        }
        Ok(g)
    }

    fn layer(&self, gene: &Gene) -> LayerSpec {
        let opt = &self.options[&gene.mixer];
        let mut j = opt.base.clone();
        for ((param, values), &c) in opt.choices.iter().zip(&gene.choice) {
            j["params"][param.as_str()] = values[c].clone();
        }
        serde_json::from_value(j).expect("choices were validated")
    }

    /// The layout as a name, e.g. `attention[window=8]-swiglu-attention-mlp`.
    pub fn arch(&self, g: &Genome) -> String {
        let names: Vec<String> = g
            .layers
            .iter()
            .map(|gene| {
                let opt = &self.options[&gene.mixer];
                let params: Vec<String> =
                    opt.choices.iter().zip(&gene.choice).map(|((p, vs), &c)| format!("{p}={}", vs[c])).collect();
                if params.is_empty() {
                    gene.mixer.name().to_string()
                } else {
                    format!("{}[{}]", gene.mixer.name(), params.join(","))
                }
            })
            .collect();
        names.join("-")
    }

    /// One trial per (task, seed), or why the genome is invalid.
    pub fn trials(&self, g: &Genome) -> Result<Vec<TrialSpec>, String> {
        let arch = self.arch(g);
        let label = format!("{arch} d{} x{}", g.d_model, g.layers.len());
        let layers: Vec<LayerSpec> = g.layers.iter().map(|x| self.layer(x)).collect();
        let mut out = Vec::new();
        for task in &self.tasks {
            let stack = StackSpec {
                vocab: task.vocab_size() as i64,
                d_model: g.d_model,
                layers: layers.clone(),
                norm_eps: operators::spec::default_norm_eps(),
                head: task.head().into(),
            };
            stack.validate(false).map_err(|e| format!("{label}: {e}"))?;
            for &seed in &self.seeds {
                let f = &self.space.file;
                let t = TrialSpec {
                    arch: arch.clone(),
                    label: label.clone(),
                    task: task.clone(),
                    stack: stack.clone(),
                    budget_flops: self.budget,
                    optim: f.optim.clone(),
                    train: f.train.clone(),
                    seed,
                    grafts: Vec::new(),
                    init_from: None,
                    inherit: None, // set by evolution when the child inherits (search::inherit)
                };
                if t.steps() < 1 {
                    return Err(format!("{label}: the budget buys no training step on {}", task.name()));
                }
                out.push(t);
            }
        }
        Ok(out)
    }

    fn random_gene(&self, rng: &mut impl Rng) -> Gene {
        let mixer = self.mixers[rng.random_range(0..self.mixers.len())];
        let choice = self.options[&mixer].choices.iter().map(|(_, vs)| rng.random_range(0..vs.len())).collect();
        Gene { mixer, choice }
    }

    pub fn random(&self, rng: &mut impl Rng) -> Genome {
        let depth = self.depth[rng.random_range(0..self.depth.len())];
        let d_model = self.d_model[rng.random_range(0..self.d_model.len())];
        Genome { d_model, layers: (0..depth).map(|_| self.random_gene(rng)).collect() }
    }

    /// A random genome that is valid, if one turns up in 1000 draws.
    pub fn random_valid(&self, rng: &mut impl Rng) -> Option<Genome> {
        (0..1000).map(|_| self.random(rng)).find(|g| self.trials(g).is_ok())
    }

    /// One random mutation; returns the child and what changed.
    pub fn mutate(&self, g: &Genome, rng: &mut impl Rng) -> (Genome, &'static str) {
        let with_choices: Vec<usize> = (0..g.layers.len())
            .filter(|&i| self.options[&g.layers[i].mixer].choices.iter().any(|c| c.1.len() > 1))
            .collect();
        let mut ops = Vec::new();
        if self.mixers.len() > 1 {
            ops.push("mixer");
        }
        if !with_choices.is_empty() {
            ops.push("param");
        }
        if self.d_model.len() > 1 {
            ops.push("width");
        }
        if self.depth.len() > 1 {
            ops.push("depth");
        }
        let mut c = g.clone();
        let Some(&op) = ops.get(rng.random_range(0..ops.len().max(1))) else { return (c, "none") };
        match op {
            "mixer" => {
                let i = rng.random_range(0..c.layers.len());
                let others: Vec<MixerKind> = self.mixers.iter().copied().filter(|&m| m != c.layers[i].mixer).collect();
                let mixer = others[rng.random_range(0..others.len())];
                let choice = self.options[&mixer].choices.iter().map(|(_, vs)| rng.random_range(0..vs.len())).collect();
                c.layers[i] = Gene { mixer, choice };
            }
            "param" => {
                let i = with_choices[rng.random_range(0..with_choices.len())];
                let choices = &self.options[&c.layers[i].mixer].choices;
                let ps: Vec<usize> = (0..choices.len()).filter(|&p| choices[p].1.len() > 1).collect();
                let p = ps[rng.random_range(0..ps.len())];
                let n = choices[p].1.len();
                let cur = c.layers[i].choice[p];
                c.layers[i].choice[p] = (cur + rng.random_range(1..n)) % n;
            }
            "width" => {
                let others: Vec<i64> = self.d_model.iter().copied().filter(|&d| d != c.d_model).collect();
                c.d_model = others[rng.random_range(0..others.len())];
            }
            _ => {
                let others: Vec<i64> = self.depth.iter().copied().filter(|&d| d != c.layers.len() as i64).collect();
                let depth = others[rng.random_range(0..others.len())] as usize;
                while c.layers.len() > depth {
                    let i = rng.random_range(0..c.layers.len());
                    c.layers.remove(i);
                }
                while c.layers.len() < depth {
                    let i = rng.random_range(0..=c.layers.len());
                    let gene = self.random_gene(rng);
                    c.layers.insert(i, gene);
                }
            }
        }
        (c, op)
    }

    /// One-point crossover over layers: `a`'s layers before a random cut, `b`'s from it on (so the child
    /// has `b`'s depth), and either parent's width.
    pub fn crossover(&self, a: &Genome, b: &Genome, rng: &mut impl Rng) -> Genome {
        let n = a.layers.len().min(b.layers.len());
        if n < 2 {
            return a.clone();
        }
        let cut = rng.random_range(1..n);
        let mut layers = a.layers[..cut].to_vec();
        layers.extend_from_slice(&b.layers[cut..]);
        Genome { d_model: if rng.random_bool(0.5) { a.d_model } else { b.d_model }, layers }
    }

    /// Genomes in the space (valid or not): an upper bound on an exhaustive search's trials.
    pub fn size(&self) -> f64 {
        let per_layer: f64 =
            self.options.values().map(|o| o.choices.iter().map(|c| c.1.len() as f64).product::<f64>()).sum();
        self.depth.iter().map(|&d| per_layer.powi(d as i32)).sum::<f64>() * self.d_model.len() as f64
    }

    /// Trials per genome.
    pub fn trials_per_genome(&self) -> usize {
        self.tasks.len() * self.seeds.len()
    }
}
