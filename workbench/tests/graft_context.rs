//! `extend_context` continues a trial at `seq_len x factor`: after the graft every step sees the longer
//! sequences (tokens per step double at factor 2) and costs the FLOPs of the longer length, and the FLOP
//! count of every curve point is (steps before) x (FLOPs per step at the old length) + (steps after) x
//! (FLOPs per step at the new one). A task that cannot change its length is refused before training.

mod common;
use common::*;
use workbench::trial::TrialSpec;

fn json(p: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn extend_context_trains_at_the_new_length_and_counts_its_flops() {
    let dir = scratch("ctx");
    let c = corpus(&dir, 40_000);
    let file =
        write(&dir, "space.yaml", &bytes_space(&c, "6.0e7", "      - {at: 0.4, op: extend_context, factor: 2}", 6));
    let out = run(&["sweep", file.to_str().unwrap(), "--out", "out"], &dir);
    assert!(out.status.success(), "{}", stderr(&out));
    let trial = std::fs::read_dir(dir.join("out/trials")).unwrap().next().unwrap().unwrap().path();
    let spec: TrialSpec = serde_json::from_value(json(&trial.join("spec.json"))).unwrap();
    let r = json(&trial.join("result.json"));
    assert_eq!(r["status"], "completed", "{r}");
    assert_eq!(r["seq_len"], 32);
    let g = &r["grafts"][0];
    assert_eq!(
        (g["op"].as_str(), g["seq_len_before"].as_u64(), g["seq_len_after"].as_u64()),
        (Some("extend_context"), Some(16), Some(32))
    );

    // FLOPs per step at each length, from the same accounting the trainer uses.
    let (short, long) = (spec.flops_per_step(), spec.step_flops(&spec.grafts[0].to, 32));
    assert!(long > 2.0 * short, "attention's cost per token grows with the length: {short} -> {long}");
    let curve = r["curve"].as_array().unwrap();
    // The graft happened after step `gs`: the point recording loss_before is at the graft's FLOPs.
    let at = g["at_flops"].as_f64().unwrap();
    let gs = curve.iter().find(|p| p["flops"].as_f64().unwrap() == at).expect("a point at the graft")["step"]
        .as_u64()
        .unwrap();
    let (mut before, mut after) = (0, 0);
    for p in curve {
        let (step, flops, tokens) =
            (p["step"].as_u64().unwrap(), p["flops"].as_f64().unwrap(), p["tokens"].as_u64().unwrap());
        let (want_flops, want_tokens) = if step <= gs {
            before += 1;
            (step as f64 * short, step * 4 * 16)
        } else {
            after += 1;
            (gs as f64 * short + (step - gs) as f64 * long, gs * 4 * 16 + (step - gs) * 4 * 32)
        };
        assert!((flops - want_flops).abs() <= 1e-9 * want_flops, "step {step}: {flops} FLOPs, want {want_flops}");
        assert_eq!(tokens, want_tokens, "step {step}: tokens per step after the graft must double");
    }
    assert!(before >= 2 && after >= 2, "points before/after the graft: {before}/{after}");
    let (steps, spent) = (r["steps"].as_u64().unwrap(), r["flops_spent"].as_f64().unwrap());
    let want = gs as f64 * short + (steps - gs) as f64 * long;
    assert!((spent - want).abs() <= 1e-9 * want, "flops_spent {spent}, want {want}");
    assert!(spent <= 6.0e7 && spent + long > 6.0e7, "trained to the budget: {spent}");
    assert_eq!(r["tokens_seen"].as_u64().unwrap(), gs * 64 + (steps - gs) * 128);
    assert!((r["flops_per_token"].as_f64().unwrap() - long / 3.0 / 128.0).abs() < 1e-6 * long, "{r}");
}

#[test]
fn extend_context_on_a_task_of_fixed_length_is_refused() {
    let dir = scratch("ctx-mqar");
    let text = "name: g
tasks: [{kind: mqar, vocab_size: 16, seq_len: 16, kv_pairs: 2, train_examples: 256, test_examples: 32}]
budgets: [4.0e7]
candidates:
  - name: grafted
    layout: [attention, swiglu]
    depth: 2
    d_model: 16
    mixers: {attention: {heads: 2}}
    grafts:
      - {at: 0.5, op: extend_context, factor: 2}
";
    let file = write(&dir, "space.yaml", text);
    let out = run(&["sweep", file.to_str().unwrap(), "--out", "out"], &dir);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for e in ["grafts[0] (extend_context)", "`mqar` cannot change its sequence length", "kind: bytes"] {
        assert!(err.contains(e), "message lacks `{e}`:\n{err}");
    }
    assert!(!dir.join("out/trials").exists() || std::fs::read_dir(dir.join("out/trials")).unwrap().next().is_none());
    // A factor that does not give a whole number of tokens, on a task that could change its length.
    let c = corpus(&dir, 40_000);
    let file =
        write(&dir, "bytes.yaml", &bytes_space(&c, "6.0e7", "      - {at: 0.5, op: extend_context, factor: 1.3}", 4));
    let out = run(&["sweep", file.to_str().unwrap(), "--out", "out2"], &dir);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("not a whole number of tokens"), "{err}");
}
