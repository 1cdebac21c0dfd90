//! The search space a researcher writes in YAML, parsed with positions (`file:line:column`) and
//! validated completely before any training starts, then expanded into trials.
//!
//! ```yaml
//! name: quickstart
//! tasks: [{kind: mqar, vocab_size: 64, seq_len: 64, kv_pairs: 8}]
//! budgets: [3e11, 1e12]           # training FLOPs per trial
//! candidates:
//!   - name: transformer
//!     layout: [attention, swiglu]  # repeated until the stack has `depth` blocks
//!     depth: 4                     # or a list: [2, 4]
//!     d_model: [64, 96]            # one model per (d_model, depth)
//!     mixers: {attention: {heads: 4}}
//!   - name: explicit
//!     layers: [attention, {mlp: {expand: 2}}, attention, swiglu]
//!     d_model: 64
//! ```

use crate::error::UsageError;
use crate::exec::ExecutorSpec;
use crate::search::SearchSpec;
use crate::tasks::TaskSpec;
use crate::trial::{OptimSpec, TrainSpec, TrialSpec};
use crate::yaml;
use operators::registry::MixerKind;
use operators::{LayerSpec, SpecError, StackSpec};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// The whole space file.
#[derive(Deserialize, Serialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct SpaceFile {
    /// Names the sweep; the default output folder is `runs/<name>`.
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// One trial per seed for every (candidate, size, task, budget).
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    /// Required by `sweep` and `plan`; a space only for `workbench mad` may leave it out.
    #[serde(default)]
    pub tasks: Vec<TaskSpec>,
    /// Training FLOP budgets, one trial each (required by `sweep` and `plan`, like `tasks`).
    #[serde(default)]
    pub budgets: Vec<Budget>,
    /// The architectures (a genome search, `search.genome`, builds its own instead).
    #[serde(default)]
    pub candidates: Vec<Candidate>,
    #[serde(default)]
    pub optim: OptimSpec,
    #[serde(default)]
    pub train: TrainSpec,
    /// How `workbench mad` runs the MAD protocol on the candidates (unused by `sweep`); see [`crate::mad`].
    #[serde(default)]
    pub mad: Option<crate::mad::MadSpec>,
    /// Which trials run and how far (default: the whole grid); see `search`.
    #[serde(default)]
    pub search: SearchSpec,
    /// Where trials run (default: local); command-line flags override it. See `exec`.
    #[serde(default)]
    pub executor: Option<ExecutorSpec>,
}

/// Seed 0 alone.
pub fn default_seeds() -> Vec<u64> {
    vec![0]
}

/// A positive FLOP budget (YAML: `1e12` or `1000000000000`).
#[derive(Serialize, Clone, Copy, Debug, PartialEq)]
pub struct Budget(pub f64);

impl<'de> Deserialize<'de> for Budget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d).map_err(|_| de::Error::custom("a FLOP budget must be a number such as 1e12"))?;
        if !(v > 0.0) || !v.is_finite() {
            return Err(de::Error::custom(format!("a FLOP budget must be positive, got {v}")));
        }
        Ok(Budget(v))
    }
}

/// One architecture and the sizes to train it at.
#[derive(Deserialize, Serialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct Candidate {
    /// The architecture's name: one fitted scaling law per name.
    pub name: String,
    /// A pattern of mixers repeated until the stack has `depth` blocks.
    #[serde(default)]
    pub layout: Option<Vec<LayerEntry>>,
    /// An explicit list of blocks (instead of `layout` and `depth`).
    #[serde(default)]
    pub layers: Option<Vec<LayerEntry>>,
    /// Blocks in the stack (each layout entry is one block); default: the layout's length.
    #[serde(default)]
    pub depth: Option<Sizes>,
    /// Model width(s).
    pub d_model: Sizes,
    /// Parameters per mixer name for every layer of that mixer, e.g. `{attention: {heads: 2}}`.
    #[serde(default)]
    pub mixers: MixerParams,
    /// Permit a stack with no sequence mixer (a token-wise baseline that cannot use context).
    #[serde(default)]
    pub allow_no_mixing: bool,
    /// Start every trial of this candidate from these weights (safetensors keyed by parameter path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<std::path::PathBuf>,
    /// Graft points: change the architecture mid-training (see `graft`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grafts: Vec<crate::graft::GraftPoint>,
}

/// A positive integer or a list of them.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Sizes(pub Vec<i64>);

impl<'de> Deserialize<'de> for Sizes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Sizes;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a positive integer or a list of positive integers")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Sizes, E> {
                if v < 1 {
                    return Err(E::custom(format!("must be a positive integer, got {v}")));
                }
                Ok(Sizes(vec![v]))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Sizes, E> {
                self.visit_i64(v as i64)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Sizes, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<i64>()? {
                    if v < 1 {
                        return Err(de::Error::custom(format!("sizes must be positive integers, got {v}")));
                    }
                    out.push(v);
                }
                if out.is_empty() {
                    return Err(de::Error::custom("the list of sizes is empty"));
                }
                Ok(Sizes(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A mixer name checked against the registry while parsing (so a misspelling points at its line).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct MixerName(pub MixerKind);

impl<'de> Deserialize<'de> for MixerName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        MixerKind::from_name(&s).map(MixerName).map_err(de::Error::custom)
    }
}

/// Parses one mixer's parameters with the registry's typed schema.
struct ParamsSeed(MixerKind);

impl<'de> DeserializeSeed<'de> for ParamsSeed {
    type Value = LayerSpec;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<LayerSpec, D::Error> {
        self.0.deserialize_spec(d)
    }
}

/// `{mixer_name: {param: value}}` for several mixers.
#[derive(Serialize, Clone, Debug, Default)]
pub struct MixerParams(pub BTreeMap<MixerName, LayerSpec>);

impl<'de> Deserialize<'de> for MixerParams {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MixerParams;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map from mixer name to its parameters")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MixerParams, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(name) = map.next_key::<MixerName>()? {
                    let spec = map.next_value_seed(ParamsSeed(name.0))?;
                    out.insert(name, spec);
                }
                Ok(MixerParams(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// One layer: a mixer name (`attention`) or a mixer with its own parameters (`{attention: {heads: 2}}`).
#[derive(Serialize, Clone, Debug)]
pub struct LayerEntry {
    pub kind: MixerKind,
    pub spec: Option<LayerSpec>,
}

impl<'de> Deserialize<'de> for LayerEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LayerEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mixer name or a one-key map `{mixer: {params}}`")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<LayerEntry, E> {
                let kind = MixerKind::from_name(s).map_err(E::custom)?;
                Ok(LayerEntry { kind, spec: None })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LayerEntry, A::Error> {
                let Some(name) = map.next_key::<MixerName>()? else {
                    return Err(de::Error::custom("an empty map is not a layer; write a mixer name"));
                };
                let spec = map.next_value_seed(ParamsSeed(name.0))?;
                if map.next_key::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::custom("a layer map has exactly one key, the mixer name"));
                }
                Ok(LayerEntry { kind: name.0, spec: Some(spec) })
            }
        }
        d.deserialize_any(V)
    }
}

/// A parsed, validated space and the text it came from.
#[derive(Debug, Clone)]
pub struct Space {
    pub file: SpaceFile,
    pub text: String,
    pub path: std::path::PathBuf,
}

impl Space {
    /// Reads, parses and validates a space file: every error is a [`UsageError`] with the file, and the
    /// line where it can be found.
    pub fn load(path: &Path) -> Result<Space, UsageError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| UsageError::new(format!("{}: cannot read the file: {e}", path.display())))?;
        let space = Space::from_text(&text, path)?;
        space.check_files()?;
        Ok(space)
    }

    /// Opens and checks every task's data files (a token file's length and ids, a tokenizer that parses, a
    /// corpus large enough for its windows), so a bad corpus is refused with exit code 2 before training rather
    /// than failing every trial. Once per load: a token file without a sidecar is scanned in full.
    pub fn check_files(&self) -> Result<(), UsageError> {
        for (ti, task) in self.file.tasks.iter().enumerate() {
            task.check_files().map_err(|e| self.err_at("tasks", 1, format!("tasks[{ti}] ({}): {e}", task.name())))?;
        }
        Ok(())
    }

    /// Parses a space from text (tests and the report's settings).
    pub fn from_text(text: &str, path: &Path) -> Result<Space, UsageError> {
        let sections: [(&str, yaml::SectionCheck); 3] = [
            ("tasks", yaml::fits::<Vec<TaskSpec>>),
            ("search", yaml::fits::<SearchSpec>),
            ("executor", yaml::fits::<ExecutorSpec>),
        ];
        let file: SpaceFile = yaml::parse(text, path).map_err(|e| yaml::relocate(e, text, path, &sections))?;
        let space = Space { file, text: text.to_string(), path: path.to_path_buf() };
        crate::search::check(&space)?;
        Ok(space)
    }

    /// An error pointing at the line where `key` first appears (after `from_line`).
    pub(crate) fn err_at(&self, key: &str, from_line: usize, msg: String) -> UsageError {
        match yaml::line_of_key(&self.text, key, from_line) {
            Some(line) => UsageError::new(format!("{}:{line}: {msg}", self.path.display())),
            None => UsageError::new(format!("{}: {msg}", self.path.display())),
        }
    }

    /// The line of candidate `name`'s entry.
    pub(crate) fn candidate_line(&self, name: &str) -> usize {
        self.text
            .lines()
            .position(|l| {
                let t = l.trim_start().trim_start_matches("- ").trim();
                t.strip_prefix("name:").map(|v| v.trim().trim_matches(|c| c == '"' || c == '\'')) == Some(name)
            })
            .map_or(1, |i| i + 1)
    }

    /// The stacks of one candidate: one per (d_model, depth), with labels.
    pub fn stacks(&self, c: &Candidate, vocab: i64) -> Result<Vec<(String, StackSpec)>, UsageError> {
        let line = self.candidate_line(&c.name);
        let entries = match (&c.layout, &c.layers) {
            (Some(l), None) => l,
            (None, Some(l)) => {
                if c.depth.is_some() {
                    return Err(self.err_at("depth", line, format!("candidate `{}`: `depth` applies to `layout`; with an explicit `layers` list the depth is its length", c.name)));
                }
                l
            }
            _ => {
                return Err(self.err_at("name", line, format!("candidate `{}`: give either `layout` (a pattern repeated to `depth`) or `layers` (an explicit list), not both or neither", c.name)))
            }
        };
        if entries.is_empty() {
            return Err(self.err_at("name", line, format!("candidate `{}`: the layout is empty", c.name)));
        }
        let depths = match (&c.layers, &c.depth) {
            (Some(l), _) => vec![l.len() as i64],
            (None, Some(d)) => d.0.clone(),
            (None, None) => vec![entries.len() as i64],
        };
        let layer_spec = |e: &LayerEntry| -> LayerSpec {
            e.spec
                .clone()
                .or_else(|| c.mixers.0.get(&MixerName(e.kind)).cloned())
                .unwrap_or_else(|| e.kind.default_spec())
        };
        let mut out = Vec::new();
        for &d_model in &c.d_model.0 {
            for &depth in &depths {
                let layers: Vec<LayerSpec> =
                    (0..depth as usize).map(|i| layer_spec(&entries[i % entries.len()])).collect();
                let stack = StackSpec {
                    vocab,
                    d_model,
                    layers,
                    norm_eps: operators::spec::default_norm_eps(),
                    head: Default::default(),
                };
                stack.validate(c.allow_no_mixing).map_err(|e| {
                    let key = match &e {
                        SpecError::Param { mixer, .. } => mixer.to_string(),
                        _ => "name".to_string(),
                    };
                    let found = yaml::line_of_key(&self.text, &key, line).is_some();
                    self.err_at(
                        if found { &key } else { "name" },
                        line,
                        format!("candidate `{}` (d_model {d_model}, depth {depth}): {e}", c.name),
                    )
                })?;
                out.push((format!("{} d{d_model} x{depth}", c.name), stack));
            }
        }
        Ok(out)
    }

    /// `--init-from FILE`: every candidate without its own `init_from` starts from `file`; re-validates.
    pub fn set_init_from(&mut self, file: &Path) -> Result<(), UsageError> {
        for c in &mut self.file.candidates {
            c.init_from.get_or_insert_with(|| file.to_path_buf());
        }
        self.trials().map(|_| ())
    }

    /// A candidate's graft points resolved for trial `t` (its stack, budget and step size).
    fn grafts(&self, c: &Candidate, t: &TrialSpec) -> Result<Vec<crate::graft::ResolvedGraft>, UsageError> {
        if c.grafts.is_empty() {
            return Ok(Vec::new());
        }
        let line = self.candidate_line(&c.name);
        let at = |msg: String| self.err_at("grafts", line, format!("candidate `{}` ({}): {msg}", c.name, t.label));
        // A step's FLOPs at the stack and length of that point of the trial (extend_context changes the length).
        let per_step = |s: &StackSpec, len: i64| t.step_flops(s, len);
        let target_of = |g: &crate::graft::GraftTarget| -> Result<StackSpec, UsageError> {
            // The candidate's `mixers` apply to the target too; the target's own override them.
            let mut mixers = c.mixers.clone();
            mixers.0.extend(g.mixers.0.clone());
            let pseudo = Candidate {
                name: c.name.clone(),
                layout: g.layout.clone(),
                layers: g.layers.clone(),
                depth: g.depth.map(|d| Sizes(vec![d])),
                d_model: Sizes(vec![g.d_model.unwrap_or(t.stack.d_model)]),
                mixers,
                allow_no_mixing: c.allow_no_mixing,
                init_from: None,
                grafts: Vec::new(),
            };
            let mut stacks = self.stacks(&pseudo, t.stack.vocab)?;
            Ok(stacks.remove(0).1)
        };
        crate::graft::resolve(&c.grafts, &t.stack, &t.task, t.budget_flops, &per_step, &target_of, &at)
    }

    /// Checks what every search uses: tasks, budgets, seeds, optimiser and training settings.
    pub(crate) fn check_common(&self) -> Result<(), UsageError> {
        let f = &self.file;
        let at = |key: &str, msg: String| self.err_at(key, 1, msg);
        if f.tasks.is_empty() {
            return Err(at(
                "tasks",
                "`tasks` is missing or empty; give at least one task (a space of candidates alone can run `workbench mad`)"
                    .into(),
            ));
        }
        if f.budgets.is_empty() {
            return Err(at("budgets", "`budgets` is empty; give at least one FLOP budget".into()));
        }
        if f.seeds.is_empty() {
            return Err(at("seeds", "`seeds` is empty".into()));
        }
        f.optim.check().map_err(|(field, msg)| at(field, format!("optim.{field}: {msg}")))?;
        f.train.check().map_err(|(field, msg)| at(field, format!("train.{field}: {msg}")))?;
        for (ti, task) in f.tasks.iter().enumerate() {
            task.validate().map_err(|e| at("tasks", format!("tasks[{ti}] ({}): {e}", task.name())))?;
        }
        Ok(())
    }

    /// Every trial of the space, validated: tasks, stacks, and that each budget buys at least one step.
    pub fn trials(&self) -> Result<Vec<TrialSpec>, UsageError> {
        let f = &self.file;
        let at = |key: &str, msg: String| self.err_at(key, 1, msg);
        self.check_common()?;
        if f.candidates.is_empty() {
            return Err(at("candidates", "`candidates` is empty".into()));
        }
        let mut names = std::collections::BTreeSet::new();
        for c in &f.candidates {
            if !names.insert(c.name.as_str()) {
                return Err(self.err_at(
                    "name",
                    self.candidate_line(&c.name) + 1,
                    format!("candidate name `{}` is used twice", c.name),
                ));
            }
        }
        let mut trials = Vec::new();
        for (ti, task) in f.tasks.iter().enumerate() {
            for c in &f.candidates {
                for (label, stack) in self.stacks(c, task.vocab_size() as i64)? {
                    let stack = StackSpec { head: task.head().into(), ..stack };
                    stack.head.check(stack.d_model).map_err(|e| {
                        self.err_at(
                            "d_model",
                            self.candidate_line(&c.name),
                            format!("`{label}` on tasks[{ti}] ({}): {e}", task.name()),
                        )
                    })?;
                    for (bi, budget) in f.budgets.iter().enumerate() {
                        for &seed in &f.seeds {
                            let mut t = TrialSpec {
                                arch: c.name.clone(),
                                label: label.clone(),
                                task: task.clone(),
                                stack: stack.clone(),
                                budget_flops: budget.0,
                                optim: f.optim.clone(),
                                train: f.train.clone(),
                                seed,
                                grafts: Vec::new(),
                                init_from: None,
                                inherit: None,
                            };
                            t.grafts = self.grafts(c, &t)?;
                            if let Some(f) = &c.init_from {
                                t.init_from = Some(crate::graft::InitFrom::check(f, &t.stack).map_err(|e| {
                                    self.err_at(
                                        "init_from",
                                        self.candidate_line(&c.name),
                                        format!("candidate `{}`: {e}", c.name),
                                    )
                                })?);
                            }
                            if t.steps() < 1 {
                                return Err(at(
                                    "budgets",
                                    format!(
                                        "budgets[{bi}] = {:.3e} FLOPs is too small for one training step of `{label}` on {} ({:.3e} FLOPs per step at batch {} x seq_len {}); use at least {:.3e}",
                                        budget.0,
                                        task.name(),
                                        t.flops_per_step(),
                                        t.train.batch_size,
                                        task.seq_len(),
                                        t.flops_per_step()
                                    ),
                                ));
                            }
                            trials.push(t);
                        }
                    }
                }
            }
        }
        Ok(trials)
    }
}
