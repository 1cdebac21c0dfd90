//! Forward+backward time per mixer on CPU at B=8, T=256, d_model=128 (issue: "CPU paths fast enough for CPU
//! sweeps"). Run: `cargo bench -p operators --bench mixers` (add `-- NAME` to run one mixer). Prints a
//! Markdown table for BENCHMARKS.md: median of 10 timed runs after 2 warm-up runs, per kernel path.

use kernels::KernelPath;
use operators::registry::{build, BuildCtx, Built};
use operators::MixerKind;
use std::time::Instant;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

const B: i64 = 8;
const T: i64 = 256;
const D: i64 = 128;

fn time_fwd_bwd(m: &Built, x: &Tensor) -> f64 {
    let run = || {
        let y = match m {
            Built::Sequence(s) => s.forward(x),
            Built::Channel(c) => c.forward(x),
        };
        y.square().mean(Kind::Float).backward();
    };
    for _ in 0..2 {
        run();
    }
    let mut times: Vec<f64> = (0..10)
        .map(|_| {
            let t0 = Instant::now();
            run();
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let threads = tch::get_num_threads();
    println!("CPU threads: {threads}; B={B} T={T} d_model={D}; median of 10 after 2 warm-up runs\n");
    println!("| mixer | family | params | GFLOP fwd | fwd+bwd ms (auto) | fwd+bwd ms (reference) |");
    println!("|---|---|---:|---:|---:|---:|");
    for kind in MixerKind::ALL {
        if filter.as_deref().is_some_and(|f| f != kind.name()) {
            continue;
        }
        let spec = kind.default_spec();
        if spec.check(D).is_err() {
            println!("| {} | invalid default at d_model {D} | | | | |", kind.name());
            continue;
        }
        let mut ms = Vec::new();
        for path in [KernelPath::Auto, KernelPath::Reference] {
            tch::manual_seed(0);
            let vs = VarStore::new(Device::Cpu);
            let ctx = BuildCtx { d_model: D, layer: 0, n_blocks: 4, kernel_path: path };
            let m = build(&spec, &vs.root(), &ctx);
            let x = Tensor::randn([B, T, D], (Kind::Float, Device::Cpu));
            ms.push(time_fwd_bwd(&m, &x));
        }
        let gflop = spec.flops_per_token(D, T) * (B * T) as f64 / 1e9;
        println!(
            "| {} | {:?} | {} | {gflop:.3} | {:.2} | {:.2} |",
            kind.name(),
            kind.family(),
            spec.params(D),
            ms[0],
            ms[1]
        );
    }
}
