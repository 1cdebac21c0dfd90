//! The GPU training path, on a CUDA machine: `make test-gpu` (or the bundle's `gpu-run.sh`). Every test is
//! `#[ignore]` and named `gpu_*`, so `make test` on a machine without a GPU skips them.
//!
//! What they hold the step to: libtorch's fused AdamW makes the same update as our plain one; bf16 autocast
//! trains to the float32 losses within bf16 tolerance; prefetched batches through pinned memory are the
//! batches a plain copy gives; a trial that runs out of GPU memory becomes a failed result naming its batch
//! size, not a crash.

use operators::{Stack, StackSpec};
use std::path::Path;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};
use workbench::space::Space;
use workbench::store::Store;
use workbench::tasks::Task;
use workbench::train::optim::AdamW;
use workbench::train::step::{upload, Feeder, Precision};
use workbench::train::{optimizer_step, run_trial, RunOptions, StepParts, TrialEnd};
use workbench::trial::OptimSpec;

fn cuda() -> Device {
    kernels::cuda::load_torch_cuda().expect("libtorch_cuda");
    assert!(tch::Cuda::is_available(), "these tests need a CUDA GPU");
    Device::Cuda(0)
}

/// The bytes task reads `data/kjv.txt` from the working directory: the repository root, which is where the
/// GPU bundle runs from; under cargo, the workspace this test was built in.
fn in_repo_root() {
    if !Path::new("data/kjv.txt").is_file() {
        std::env::set_current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).unwrap();
    }
}

fn small_stack() -> StackSpec {
    serde_json::from_value(serde_json::json!({
        "vocab": 256, "d_model": 128,
        "layers": [{"mixer": "attention", "params": {"heads": 4}}, {"mixer": "swiglu", "params": {}},
                   {"mixer": "gla", "params": {"heads": 2}}, {"mixer": "swiglu", "params": {}}]
    }))
    .unwrap()
}

fn bytes_task(seq_len: usize) -> Box<dyn Task> {
    in_repo_root();
    let yaml = format!(
        "name: t\ntasks: [{{kind: bytes, seq_len: {seq_len}, eval_sequences: 8}}]\nbudgets: [1.0e9]\n\
         candidates: [{{name: a, layout: [attention, swiglu], depth: 2, d_model: 32}}]\n"
    );
    let space = Space::from_text(&yaml, Path::new("t.yaml")).unwrap();
    space.trials().unwrap()[0].task.build(0).unwrap()
}

/// Parameters of `vs` by name, copied.
fn snapshot(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(n, t)| (n, t.detach().copy())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
#[ignore]
fn gpu_fused_adamw_matches_the_plain_update() {
    let device = cuda();
    let spec = small_stack();
    let task = bytes_task(64);
    let optim = OptimSpec { weight_decay: 0.1, ..OptimSpec::default() };
    let mut finals = Vec::new();
    for fused in [true, false] {
        tch::manual_seed(0);
        let vs = VarStore::new(device);
        let stack = Stack::new(&vs.root(), &spec, kernels::KernelPath::Auto);
        let mut opt = AdamW::new(&vs, &optim);
        assert!(opt.is_fused(), "the training helpers did not load");
        if !fused {
            opt = opt.unfused();
        }
        let mut feed = Feeder::new(device, 4);
        for step in 0..5 {
            let parts = StepParts { stack: &stack, opt: &mut opt, precision: Precision::Fp32, feed: &mut feed };
            let _ = optimizer_step(parts, &*task, step, 1e-3, 1.0, true);
        }
        finals.push(snapshot(&vs));
    }
    let mut worst = 0f64;
    for ((name, a), (_, b)) in finals[0].iter().zip(&finals[1]) {
        let err = (a - b).abs().max().double_value(&[]);
        let scale = b.abs().max().double_value(&[]).max(1e-3);
        assert!(err / scale < 1e-4, "{name}: fused and plain AdamW differ by {err} (scale {scale})");
        worst = worst.max(err / scale);
    }
    eprintln!("fused vs plain AdamW after 5 steps: worst relative difference {worst:.2e}");
}

#[test]
#[ignore]
fn gpu_bf16_autocast_trains_like_float32() {
    let device = cuda();
    let spec = small_stack();
    let task = bytes_task(128);
    let mut curves = Vec::new();
    for precision in [Precision::Fp32, Precision::Bf16] {
        let precision = precision.resolve(device).unwrap();
        tch::manual_seed(0);
        let vs = VarStore::new(device);
        let stack = Stack::new(&vs.root(), &spec, kernels::KernelPath::Auto);
        let mut opt = AdamW::new(&vs, &OptimSpec::default());
        let mut feed = Feeder::new(device, 16);
        let losses: Vec<f64> = (0..60)
            .map(|step| {
                let parts = StepParts { stack: &stack, opt: &mut opt, precision, feed: &mut feed };
                optimizer_step(parts, &*task, step, 3e-3, 1.0, true).double_value(&[])
            })
            .collect();
        curves.push(losses);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (f32_end, bf16_end) = (mean(&curves[0][50..]), mean(&curves[1][50..]));
    eprintln!("loss over steps 50-59: fp32 {f32_end:.4}, bf16 {bf16_end:.4} (start {:.4})", curves[0][0]);
    assert!(f32_end < curves[0][0] - 1.0, "fp32 did not learn: {:?}", curves[0]);
    assert!((bf16_end - f32_end).abs() < 0.03 * f32_end, "bf16 {bf16_end} vs fp32 {f32_end}");
}

#[test]
#[ignore]
fn gpu_prefetched_batches_are_the_plain_copies() {
    let device = cuda();
    let task = bytes_task(64);
    let mut feed = Feeder::new(device, 8);
    for step in 0..4u64 {
        let (x, y) = feed.take(&*task, step);
        feed.prefetch(&*task, step + 1);
        let b = task.train_batch(step, 8);
        let (cx, cy) = upload(&b, Device::Cpu);
        assert!(x.to_device(Device::Cpu).equal(&cx) && y.to_device(Device::Cpu).equal(&cy), "step {step}");
        assert_eq!((x.device(), x.kind()), (device, Kind::Int64));
    }
}

#[test]
#[ignore]
fn gpu_out_of_memory_is_a_failed_result_with_the_batch_size() {
    let device = cuda();
    in_repo_root();
    // Logits alone would be 32768 x 2048 x 256 floats (64 GiB), with their gradient and the cross-entropy's
    // copies far past the H200's 141 GB.
    let yaml = "name: oom\ntasks: [{kind: bytes, seq_len: 2048, eval_sequences: 2}]\nbudgets: [1.0e18]\n\
                candidates: [{name: a, layout: [attention, swiglu], depth: 2, d_model: 64}]\n\
                train: {batch_size: 32768}\n";
    let space = Space::from_text(yaml, Path::new("oom.yaml")).unwrap();
    let dir = std::env::temp_dir().join(format!("gpu-oom-{}", std::process::id()));
    let store = Store::new(&dir);
    store.prepare("oom", yaml, Vec::new(), false, true).unwrap();
    let spec = space.trials().unwrap().remove(0);
    let id = store.write_spec(&spec).unwrap();
    let opts = RunOptions { device, ..RunOptions::cpu() };
    let TrialEnd::Finished(r) = run_trial(&store, &id, opts, &mut |_| {}).unwrap() else { panic!("paused") };
    let reason = r.reason.clone().unwrap_or_default();
    eprintln!("{:?}: {reason}", r.status);
    assert_eq!(r.status, reports::Status::Failed);
    assert!(reason.contains("out of GPU memory at batch size 32768"), "{reason}");
    // The process goes on and the GPU is usable again.
    let t = Tensor::ones([1024, 1024], (Kind::Float, device)).sum(Kind::Float).double_value(&[]);
    assert_eq!(t, 1048576.0);
}

#[test]
#[ignore]
fn gpu_fused_rms_norm_matches_the_definition() {
    let device = cuda();
    let vs = VarStore::new(Device::Cpu);
    let norm = operators::nn::RmsNorm::new(&vs.root(), 48, 1e-5);
    let gain = Tensor::randn([48], (Kind::Double, Device::Cpu)) + 1.0;
    let x = Tensor::randn([3, 7, 48], (Kind::Double, Device::Cpu));
    let w = Tensor::randn([3, 7, 48], (Kind::Double, Device::Cpu));
    let mut grads = Vec::new();
    for d in [Device::Cpu, device] {
        let on = operators::nn::RmsNorm { weight: gain.to_device(d).detach().set_requires_grad(true), eps: norm.eps };
        let xd = x.to_device(d).detach().set_requires_grad(true); // a fresh leaf on each device
        let y = on.forward(&xd);
        (&y * w.to_device(d)).sum(Kind::Double).backward();
        grads.push((
            y.to_device(Device::Cpu),
            xd.grad().to_device(Device::Cpu),
            on.weight.grad().to_device(Device::Cpu),
        ));
    }
    let (a, b) = (&grads[0], &grads[1]);
    for (name, u, v) in [("output", &a.0, &b.0), ("input gradient", &a.1, &b.1), ("gain gradient", &a.2, &b.2)] {
        let err = (u - v).abs().max().double_value(&[]);
        assert!(err < 1e-10, "{name}: fused (CUDA) vs written out (CPU) differ by {err}");
    }
}
