//! Evolution over architecture genomes ([`genome`](super::genome)), and random sampling of the same space.
//!
//! Generation 0 is `population` random valid genomes. Each later generation breeds `population` children:
//! a parent by tournament (`tournament` members drawn with replacement, the best wins), with probability
//! `crossover` a second parent and a one-point crossover, then one mutation; a child that is invalid or
//! already evaluated is bred again (up to 20 times). Survivors are the best `population` of parents and
//! children together (mu + lambda): by loss for one objective, by NSGA-II's front and crowding distance for
//! several (loss, params, state_size, flops_per_token). A genome's loss is the mean final held-out loss of
//! its trials (one per task and seed); a failed or diverged trial makes it infinite.
//!
//! With `inherit_weights: true` a child's trials start from its (first) parent's trained weights through
//! grafting's `transfer` where the genomes allow it ([`super::inherit`]); a genome is still evaluated once,
//! whichever parent it came from.
//!
//! Everything random comes from one ChaCha stream seeded with `seed`, and a generation is bred only after
//! every outcome of the previous one is known, so a seed gives the same genomes in the same order.

use super::genome::{Genome, GenomeSpace, GenomeSpec};
use super::{inherit, pareto, Job, Outcome, Proposal, RandomSpec, Strategy, StrategyReport};
use crate::space::Budget;
use crate::trial::TrialSpec;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet, VecDeque};

/// The `evolution` settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EvolutionSpec {
    pub genome: GenomeSpec,
    /// Genomes kept per generation (and children bred per generation).
    #[serde(default = "default_population")]
    pub population: usize,
    /// Generations in all, the random first one included: at most `population * generations` genomes.
    #[serde(default = "default_generations")]
    pub generations: usize,
    /// Tournament size for choosing parents.
    #[serde(default = "default_tournament")]
    pub tournament: usize,
    /// Probability that a child is a crossover of two parents (it is always mutated).
    #[serde(default = "default_crossover")]
    pub crossover: f64,
    /// What to minimise: `[loss]`, or several for a Pareto front.
    #[serde(default = "default_objectives")]
    pub objectives: Vec<Objective>,
    #[serde(default)]
    pub seed: u64,
    /// Training FLOPs of each trial; default: the space's budget, if it has one.
    #[serde(default)]
    pub budget: Option<Budget>,
    /// Stop once the trials proposed would spend more than this many FLOPs in total.
    #[serde(default)]
    pub max_flops: Option<Budget>,
    /// Children start from their first parent's final weights where `transfer` can map them. Off by default:
    /// an inheriting trial's loss is not a from-scratch loss at its budget (see `search::inherit`).
    #[serde(default)]
    pub inherit_weights: bool,
}

/// 8 genomes.
pub fn default_population() -> usize {
    8
}
/// 4 generations.
pub fn default_generations() -> usize {
    4
}
/// Binary tournaments.
pub fn default_tournament() -> usize {
    2
}
/// Half the children are crossovers.
pub fn default_crossover() -> f64 {
    0.5
}
/// Held-out loss alone.
pub fn default_objectives() -> Vec<Objective> {
    vec![Objective::Loss]
}

/// A quantity to minimise.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Mean final held-out loss over the genome's trials.
    Loss,
    /// Trainable parameters.
    Params,
    /// Recurrent state (KV cache for attention) at the task's sequence length.
    StateSize,
    /// Forward FLOPs per token at the task's sequence length.
    FlopsPerToken,
}

struct Member {
    genome: Genome,
    jobs: Vec<Job>,
    losses: Vec<Option<f64>>,
}

impl Member {
    fn ids(&self) -> Vec<String> {
        self.jobs.iter().map(|j| j.id.clone()).collect()
    }
    fn evaluated(&self) -> bool {
        self.losses.iter().all(Option::is_some)
    }
    fn loss(&self) -> f64 {
        let ls: Vec<f64> = self.losses.iter().map(|l| l.unwrap_or(f64::INFINITY)).collect();
        ls.iter().sum::<f64>() / ls.len().max(1) as f64
    }
}

/// Members, their lookup by trial id, and the jobs not yet proposed: shared by evolution and random.
struct Pool {
    g: GenomeSpace,
    members: Vec<Member>,
    keys: HashSet<Vec<String>>,
    by_id: HashMap<String, (usize, usize)>,
    queue: VecDeque<Job>,
    pending: usize,
    proposed_flops: f64,
    max_flops: f64,
    exhausted: bool,
}

impl Pool {
    fn new(g: GenomeSpace, max_flops: Option<Budget>) -> Pool {
        Pool {
            g,
            members: Vec::new(),
            keys: HashSet::new(),
            by_id: HashMap::new(),
            queue: VecDeque::new(),
            pending: 0,
            proposed_flops: 0.0,
            max_flops: max_flops.map_or(f64::INFINITY, |b| b.0),
            exhausted: false,
        }
    }

    /// Adds a genome unless it is invalid or already there (as a genome: its from-scratch trial ids);
    /// its trials inherit from member `parent`'s where [`inherit::plan`] allows. Returns its index.
    fn add(&mut self, genome: Genome, parent: Option<usize>) -> Option<usize> {
        let mut trials = self.g.trials(&genome).ok()?;
        if !self.keys.insert(trials.iter().map(TrialSpec::id).collect()) {
            return None;
        }
        if let Some(p) = parent {
            for (k, t) in trials.iter_mut().enumerate() {
                let (job, loss) = (&self.members[p].jobs[k], self.members[p].losses[k]);
                // Only a parent that completed has final weights worth starting from.
                if loss.is_some_and(f64::is_finite) {
                    t.inherit = inherit::plan(&job.id, &job.spec, t);
                }
            }
        }
        let jobs: Vec<Job> = trials.into_iter().map(|t| Job::new(t, None, 0)).collect();
        let m = Member { genome, losses: vec![None; jobs.len()], jobs };
        let i = self.members.len();
        for (k, j) in m.jobs.iter().enumerate() {
            self.by_id.insert(j.id.clone(), (i, k));
            self.queue.push_back(j.clone());
        }
        self.members.push(m);
        Some(i)
    }

    /// The next queued job within the FLOP cap.
    fn next(&mut self) -> Option<Job> {
        let job = self.queue.front()?;
        if self.proposed_flops + job.flops() > self.max_flops {
            self.exhausted = true;
            self.queue.clear();
            return None;
        }
        self.proposed_flops += job.flops();
        self.pending += 1;
        self.queue.pop_front()
    }

    fn tell(&mut self, job: &Job, outcome: &Outcome) {
        self.pending -= 1;
        if let Some(&(m, k)) = self.by_id.get(&job.id) {
            self.members[m].losses[k] = Some(outcome.loss());
        }
    }

    fn objectives(&self, m: usize, objectives: &[Objective]) -> Vec<f64> {
        let member = &self.members[m];
        let t = &member.jobs[0].spec;
        objectives
            .iter()
            .map(|o| match o {
                Objective::Loss => member.loss(),
                Objective::Params => t.stack.params() as f64,
                Objective::StateSize => t.stack.state_size(t.seq_len()) as f64,
                Objective::FlopsPerToken => t.stack.flops_per_token(t.seq_len()),
            })
            .collect()
    }

    fn describe(&self, m: usize, objectives: &[Objective]) -> Value {
        let member = &self.members[m];
        json!({"ids": member.ids(), "arch": self.g.arch(&member.genome), "d_model": member.genome.d_model,
               "depth": member.genome.layers.len(), "objectives": self.objectives(m, objectives)})
    }

    fn report(&self, objectives: &[Objective], generations: Vec<Value>) -> StrategyReport {
        let per_genome = self.g.trials_per_genome() as f64;
        let done: Vec<usize> = (0..self.members.len())
            .filter(|&m| self.members[m].evaluated() && self.members[m].loss().is_finite())
            .collect();
        let pts: Vec<Vec<f64>> = done.iter().map(|&m| self.objectives(m, objectives)).collect();
        let front = pareto::fronts(&pts).first().cloned().unwrap_or_default();
        StrategyReport {
            pareto_front: (objectives.len() > 1)
                .then(|| front.iter().flat_map(|&i| self.members[done[i]].ids()).collect()),
            objectives: objectives
                .iter()
                .map(|o| serde_json::to_value(o).expect("name").as_str().unwrap_or("").to_string())
                .collect(),
            full_grid_trials: Some(self.g.size() * per_genome),
            full_grid_flops: Some(self.g.size() * per_genome * self.g.budget),
            generations,
        }
    }
}

/// The genetic search.
pub struct Evolution {
    pool: Pool,
    spec: EvolutionSpec,
    rng: ChaCha8Rng,
    population: Vec<usize>,
    generation: usize,
    /// Members bred for the generation being evaluated.
    current: Vec<usize>,
    finished: bool,
    events: Vec<Value>,
    log: Vec<Value>,
}

impl Evolution {
    pub fn new(g: GenomeSpace, spec: &EvolutionSpec) -> Result<Evolution, (&'static str, String)> {
        if spec.population < 2 {
            return Err(("population", "`population` must be at least 2".into()));
        }
        if spec.generations < 1 {
            return Err(("generations", "`generations` must be at least 1".into()));
        }
        if spec.tournament < 1 {
            return Err(("tournament", "`tournament` must be at least 1".into()));
        }
        if !(0.0..=1.0).contains(&spec.crossover) {
            return Err(("crossover", format!("`crossover` is a probability in [0, 1], got {}", spec.crossover)));
        }
        if spec.objectives.is_empty() || !spec.objectives.contains(&Objective::Loss) {
            return Err(("objectives", "`objectives` must include `loss`".into()));
        }
        let mut e = Evolution {
            pool: Pool::new(g, spec.max_flops),
            spec: spec.clone(),
            rng: ChaCha8Rng::seed_from_u64(spec.seed),
            population: Vec::new(),
            generation: 0,
            current: Vec::new(),
            finished: false,
            events: Vec::new(),
            log: Vec::new(),
        };
        for _ in 0..100 * spec.population {
            if e.current.len() == spec.population {
                break;
            }
            let genome = e.pool.g.random(&mut e.rng);
            if let Some(m) = e.pool.add(genome, None) {
                e.current.push(m);
            }
        }
        Ok(e)
    }

    /// Indices of `pool` in selection order (best first).
    fn rank(&self, pool: &[usize]) -> Vec<usize> {
        let pts: Vec<Vec<f64>> = pool.iter().map(|&m| self.pool.objectives(m, &self.spec.objectives)).collect();
        if self.spec.objectives.len() == 1 {
            let mut order: Vec<usize> = (0..pool.len()).collect();
            order.sort_by(|&a, &b| pts[a][0].total_cmp(&pts[b][0]).then(pool[a].cmp(&pool[b])));
            order.into_iter().map(|i| pool[i]).collect()
        } else {
            pareto::select(&pts, pool.len()).into_iter().map(|i| pool[i]).collect()
        }
    }

    /// Survivor selection over the population and the evaluated children; logs the generation.
    fn finish_generation(&mut self) {
        let mut pool: Vec<usize> = self.population.clone();
        pool.extend(self.current.iter().copied().filter(|&m| self.pool.members[m].evaluated()));
        let ranked = self.rank(&pool);
        self.population = ranked.into_iter().take(self.spec.population).collect();
        let objectives = &self.spec.objectives;
        let line = json!({
            "event": "generation",
            "generation": self.generation,
            "evaluated": self.current.iter().map(|&m| self.pool.describe(m, objectives)).collect::<Vec<_>>(),
            "population": self.population.iter().map(|&m| self.pool.describe(m, objectives)).collect::<Vec<_>>(),
        });
        self.events.push(line.clone());
        self.log.push(line);
    }

    /// The best of `tournament` population members drawn with replacement.
    fn tournament(&mut self, order: &[usize]) -> usize {
        (0..self.spec.tournament)
            .map(|_| self.rng.random_range(0..order.len()))
            .min()
            .map(|pos| order[pos])
            .expect("tournament of at least one")
    }

    fn breed(&mut self) {
        let order = self.rank(&self.population.clone());
        self.current.clear();
        for _ in 0..self.spec.population {
            for _attempt in 0..20 {
                let a = self.tournament(&order);
                let (genome, parents, how) = if order.len() > 1 && self.rng.random_bool(self.spec.crossover) {
                    let b = self.tournament(&order);
                    let (ga, gb) = (&self.pool.members[a].genome, &self.pool.members[b].genome);
                    let child = self.pool.g.crossover(ga, gb, &mut self.rng);
                    let (child, op) = self.pool.g.mutate(&child, &mut self.rng);
                    (child, vec![a, b], format!("crossover+{op}"))
                } else {
                    let (child, op) = self.pool.g.mutate(&self.pool.members[a].genome, &mut self.rng);
                    (child, vec![a], op.to_string())
                };
                let from = self.spec.inherit_weights.then_some(a);
                if let Some(m) = self.pool.add(genome, from) {
                    self.current.push(m);
                    let weights: Vec<Value> = self.pool.members[m]
                        .jobs
                        .iter()
                        .map(|j| j.spec.inherit.as_ref().map_or(json!("fresh"), |i| json!({"parent": i.parent})))
                        .collect();
                    self.events.push(json!({
                        "event": "child", "generation": self.generation, "ids": self.pool.members[m].ids(),
                        "parents": parents.iter().map(|&p| self.pool.members[p].ids()).collect::<Vec<_>>(),
                        "operator": how, "weights": weights,
                    }));
                    break;
                }
            }
        }
    }
}

impl Strategy for Evolution {
    fn propose(&mut self) -> Proposal {
        loop {
            if let Some(job) = self.pool.next() {
                return Proposal::Run(Box::new(job));
            }
            if self.pool.pending > 0 {
                return Proposal::Wait;
            }
            if self.finished {
                return Proposal::Done;
            }
            self.finish_generation();
            if self.pool.exhausted || self.generation + 1 >= self.spec.generations {
                self.finished = true;
                return Proposal::Done;
            }
            self.generation += 1;
            self.breed();
        }
    }

    fn tell(&mut self, job: &Job, outcome: &Outcome) {
        self.pool.tell(job, outcome);
    }

    fn take_events(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.events)
    }

    fn report(&self) -> StrategyReport {
        self.pool.report(&self.spec.objectives, self.log.clone())
    }
}

/// `random` with a `genome`: `n` distinct valid genomes drawn with a seeded stream.
pub struct RandomGenomes {
    pool: Pool,
}

impl RandomGenomes {
    pub fn new(g: GenomeSpace, spec: &RandomSpec) -> RandomGenomes {
        let mut pool = Pool::new(g, spec.max_flops);
        let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
        let mut added = 0;
        for _ in 0..100 * spec.n {
            if added == spec.n {
                break;
            }
            let genome = pool.g.random(&mut rng);
            added += pool.add(genome, None).is_some() as usize;
        }
        RandomGenomes { pool }
    }
}

impl Strategy for RandomGenomes {
    fn propose(&mut self) -> Proposal {
        match self.pool.next() {
            Some(job) => Proposal::Run(Box::new(job)),
            None if self.pool.pending > 0 => Proposal::Wait,
            None => Proposal::Done,
        }
    }

    fn tell(&mut self, job: &Job, outcome: &Outcome) {
        self.pool.tell(job, outcome);
    }

    fn report(&self) -> StrategyReport {
        self.pool.report(&[Objective::Loss], Vec::new())
    }
}
