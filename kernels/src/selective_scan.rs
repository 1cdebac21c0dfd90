//! Element-wise (diagonal) linear recurrences: the generic scan `h_t = a_t ⊙ h_{t-1} + u_t` that HGRN and
//! Griffin's RG-LRU run, and Mamba's selective scan S6 (Gu & Dao 2023, arXiv 2312.00752, Algorithm 2) built on it.
//!
//! ```text
//! linear_scan:     h_t = exp(log_a_t) ⊙ h_{t-1} + u_t             log_a, u: [B, T, ...];  h_0 given or 0
//! selective_scan:  h_t = exp(dt_t A) ⊙ h_{t-1} + (dt_t x_t) B_t^T  h: [B, Dinner, N] (ZOH for A, Euler for B)
//!                  y_t = h_t C_t + D ⊙ x_t                         x, dt: [B, T, Dinner]; A: [Dinner, N];
//!                                                                  B, C: [B, T, N]; D: [Dinner]
//! ```
//! Both return the outputs and the final state; `Reference` is the per-token loop that defines them.
//!
//! `Auto` for `linear_scan` (HGRN, RG-LRU: states of `[B, D]`, where a per-token loop is all dispatch
//! overhead) is a two-level chunked scan: the sequence is cut into chunks of `chunk` tokens; the recurrence
//! runs inside every chunk at once from a zero state (one vectorised step per position, across all chunks),
//! a second recurrence carries the chunk-final states across chunks, and each position adds
//! `(prod of a since the chunk start) ⊙ carry`. That is `chunk + T/chunk` sequential steps instead of T
//! ([`auto_chunk`] = ceil(sqrt(T)) minimises it), with products of decays only (no division: stable in any
//! dtype).
//!
//! `Auto` for `selective_scan` is different, because its state `[B, Dinner, N]` is N times the input: every
//! parallel form materialises several `[B, T, Dinner, N]` tensors and is memory-bound on CPU (the two-level
//! scan above measured ~9x slower than the loop at B=8, T=256, Dinner=256, N=16). The fast CPU form is a
//! blocked loop: per block of [`SCAN_BLOCK`] tokens the discretisation `exp(dt A)` and the input `(dt x) B^T`
//! are formed in one op each (sized to stay in cache), the recurrence is one fused multiply-add per token,
//! and the readout `h C` is one batched matmul per block. Same arithmetic as the loop, about a fifth of
//! the ops and autograd nodes. Measured forward+backward at that shape (float32, a shared 2-core machine):
//! on one thread both cost the same (~250-290 ms: the elementwise work is the floor either way); with
//! libtorch's intra-op threads the blocked loop is 1.6-2.7x faster, as its larger ops split across threads
//! and the loop's 128 KB ops do not. `scan_speed` (ignored test) measures it.
//!
//! On CUDA tensors `Auto` runs our kernel (csrc/selective_scan.*, through [`crate::cuda_ext`]) when its
//! library is loaded and the arguments fit it (float32 or bfloat16 throughout, N <= 64): the state stays in
//! registers, one pass over the inputs forward, and the backward pass recomputes states from checkpoints
//! taken every 32 steps instead of storing all of them. Otherwise (and with `WORKBENCH_KERNELS=reference`
//! for the kernel) it takes the paths above.
//!
//! FLOPs (the convention's "state-update multiply-adds"): 2 per state element per token for the update
//! (forming `exp(dt A)` and `(dt x) B^T` is elementwise and not counted) and, for the selective scan, 2 per
//! state element per token for the readout `h C`: `4 * Dinner * N` per token. The chunked `linear_scan`
//! does about twice the update work of the loop; we count the recurrence, as for every element-wise
//! recurrence.

use crate::flop_count;
use crate::KernelPath;
use tch::{Kind, Tensor};

/// Tokens per block of the selective scan's blocked loop: `[B, 16, Dinner, N]` blocks stay in cache at the
/// bench shape.
pub const SCAN_BLOCK: i64 = 16;

/// Chunk length that minimises the sequential steps of the chunked scan: ceil(sqrt(T)).
pub fn auto_chunk(t: i64) -> i64 {
    ((t.max(1) as f64).sqrt().ceil() as i64).max(1)
}

/// `h_t = exp(log_a_t) ⊙ h_{t-1} + u_t` over dim 1 of `[B, T, ...]`; returns `(h [B, T, ...], h_T [B, ...])`.
pub fn linear_scan(
    log_a: &Tensor,
    u: &Tensor,
    initial_state: Option<&Tensor>,
    chunk: i64,
    path: KernelPath,
) -> (Tensor, Tensor) {
    assert_eq!(log_a.size(), u.size(), "linear_scan: log_a and u must have the same shape");
    flop_count::record(2.0 * u.numel() as f64);
    match path {
        KernelPath::Reference => scan_loop(log_a, u, initial_state),
        KernelPath::Auto => scan_chunked(log_a, u, initial_state, chunk),
    }
}

/// The definition: one step per token.
fn scan_loop(log_a: &Tensor, u: &Tensor, h0: Option<&Tensor>) -> (Tensor, Tensor) {
    // `unbind` rather than `select` in loops: its backward is one stack, not one full-size zero tensor per step.
    let mut h = h0.map_or_else(|| u.select(1, 0).zeros_like(), |h| h.shallow_clone());
    let mut hs = Vec::new();
    for (la, u) in log_a.unbind(1).iter().zip(u.unbind(1)) {
        h = la.exp() * &h + u;
        hs.push(h.shallow_clone());
    }
    (Tensor::stack(&hs, 1), h)
}

/// Appends `pad` zero positions along dim 1.
pub(crate) fn pad_time(x: &Tensor, pad: i64) -> Tensor {
    if pad == 0 {
        return x.shallow_clone();
    }
    let mut shape = x.size();
    shape[1] = pad;
    Tensor::cat(&[x, &Tensor::zeros(&shape, (x.kind(), x.device()))], 1)
}

/// The two-level chunked scan of the module note.
fn scan_chunked(log_a: &Tensor, u: &Tensor, h0: Option<&Tensor>, chunk: i64) -> (Tensor, Tensor) {
    let shape = u.size();
    let (b, t) = (shape[0], shape[1]);
    let rest = &shape[2..];
    let l = chunk.clamp(1, t);
    let nc = (t + l - 1) / l;
    // Padding with log_a = 0, u = 0 leaves the state unchanged, so the final carry is h_T.
    let to_chunks = |x: &Tensor| {
        let mut s = vec![b, nc, l];
        s.extend_from_slice(rest);
        let x = pad_time(x, nc * l - t).view(s.as_slice()); // [B, nc, L, ...]
        x.transpose(0, 2).transpose(1, 2).contiguous() // [L, B, nc, ...]
    };
    let (la, uc) = (to_chunks(log_a), to_chunks(u));
    let (a, uc_j) = (la.exp().unbind(0), uc.unbind(0));
    // 1. Inside every chunk, from a zero state: s_j = a_j s_{j-1} + u_j, and the decay since the chunk
    //    start p_j = a_j p_{j-1}.
    let (mut s, mut p) = (uc_j[0].shallow_clone(), a[0].shallow_clone());
    let (mut local, mut decay_in) = (vec![s.shallow_clone()], vec![p.shallow_clone()]);
    for j in 1..l as usize {
        s = uc_j[j].addcmul(&a[j], &s);
        p = &a[j] * &p;
        local.push(s.shallow_clone());
        decay_in.push(p.shallow_clone());
    }
    let (local, decay_in) = (Tensor::stack(&local, 0), Tensor::stack(&decay_in, 0)); // [L, B, nc, ...]
                                                                                     // 2. Across chunks: carry_{c+1} = p_{L-1, c} carry_c + s_{L-1, c}.
    let total = p; // [B, nc, ...]
    let mut carry = h0.map_or_else(|| s.select(1, 0).zeros_like(), |h| h.shallow_clone()); // [B, ...]
    let mut carries = Vec::with_capacity(nc as usize);
    for (total_c, s_c) in total.unbind(1).iter().zip(s.unbind(1)) {
        carries.push(carry.shallow_clone());
        carry = s_c.addcmul(total_c, &carry);
    }
    // 3. Every position adds its decayed incoming carry.
    let h = local + decay_in * Tensor::stack(&carries, 1).unsqueeze(0); // [L, B, nc, ...]
    let mut out = vec![b, nc * l];
    out.extend_from_slice(rest);
    let h = h.transpose(1, 2).transpose(0, 2).reshape(out.as_slice()).narrow(1, 0, t); // [B, T, ...]
    (h, carry)
}

/// FLOPs of the selective scan over `[B, T, Dinner]` with state size N: update + readout.
pub fn selective_scan_flops(b: i64, t: i64, d_inner: i64, n: i64) -> f64 {
    4.0 * (b * t * d_inner * n) as f64
}

/// Mamba's selective scan; see the module note for the shapes; `chunk` is the block length of the `Auto`
/// path ([`SCAN_BLOCK`]). Returns `(y [B, T, Dinner], h_T [B, Dinner, N])`.
#[allow(clippy::too_many_arguments)]
pub fn selective_scan(
    x: &Tensor,
    dt: &Tensor,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    d: Option<&Tensor>,
    initial_state: Option<&Tensor>,
    chunk: i64,
    path: KernelPath,
) -> (Tensor, Tensor) {
    let (bs, t, di) = x.size3().expect("selective_scan: x must be [B, T, Dinner]");
    let n = a.size()[1];
    assert_eq!(a.size(), [di, n], "selective_scan: A must be [Dinner, N]");
    flop_count::record(selective_scan_flops(bs, t, di, n));
    let path = crate::cuda_ext::resolve(path);
    // CUDA tensors on the Auto path: our kernel (csrc/selective_scan.cu) when its library is loaded and the
    // arguments fit it (dtypes, N <= 64); the blocked loop below otherwise.
    if path == KernelPath::Auto && x.device().is_cuda() {
        // Under bf16 autocast x, B and C arrive in bf16 (projections) while A, D (parameters) and dt (softplus
        // runs in float32, unless the mixer keeps it in bf16 as `mamba` does) may not. The kernel reads A, D and h0 as float32 whatever their dtype, so it runs in
        // bf16 then with dt rounded to bf16 (the precision mamba-ssm's kernel takes it in): no float32 copies of
        // x, B, C, and y stays bf16. Any other mix runs in float32 (the casts are differentiable).
        let parts = [x, dt, a, b, c].into_iter().chain(d).chain(initial_state);
        let mixed = parts.clone().any(|t| t.kind() != x.kind());
        let floats = parts.clone().all(|t| matches!(t.kind(), Kind::Float | Kind::BFloat16 | Kind::Half));
        let bf16 = |t: &Tensor| t.kind() == Kind::BFloat16;
        let param = |t: &Tensor| if bf16(t) { t.shallow_clone() } else { t.to_kind(Kind::Float) };
        let r = if mixed && floats && bf16(x) && bf16(b) && bf16(c) {
            let (a, d, h0) = (param(a), d.map(param), initial_state.map(param));
            crate::cuda_ext::selective_scan_auto(x, &dt.to_kind(Kind::BFloat16), &a, b, c, d.as_ref(), h0.as_ref())
        } else if mixed && floats {
            let f = |t: &Tensor| t.to_kind(Kind::Float);
            let (d, h0) = (d.map(f), initial_state.map(f));
            crate::cuda_ext::selective_scan_auto(&f(x), &f(dt), &f(a), &f(b), &f(c), d.as_ref(), h0.as_ref())
        } else {
            crate::cuda_ext::selective_scan_auto(x, dt, a, b, c, d, initial_state)
        };
        if let Some(r) = r {
            return r;
        }
    }
    let (y, h) = match path {
        KernelPath::Reference => {
            let mut h =
                initial_state.map_or_else(|| Tensor::zeros([bs, di, n], (x.kind(), x.device())), |h| h.shallow_clone());
            let mut ys = Vec::with_capacity(t as usize);
            let (xs, dts, bs_, cs) = (x.unbind(1), dt.unbind(1), b.unbind(1), c.unbind(1));
            for i in 0..t as usize {
                let (y, h_next) = step_core(&xs[i], &dts[i], a, &bs_[i], &cs[i], &h);
                h = h_next;
                ys.push(y);
            }
            (Tensor::stack(&ys, 1), h)
        }
        KernelPath::Auto => blocked(x, dt, a, b, c, initial_state, chunk),
    };
    match d {
        Some(d) => (y + x * d, h),
        None => (y, h),
    }
}

/// The blocked loop of the module note, in time-major layout so every per-token slice is contiguous; without
/// the skip term `D ⊙ x`. The `Auto` path on CPU, and on CUDA where the kernel does not apply; public so the
/// GPU benchmark can time it against the kernel (it is what CUDA tensors ran before the kernel existed).
pub fn blocked(
    x: &Tensor,
    dt: &Tensor,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    h0: Option<&Tensor>,
    blk: i64,
) -> (Tensor, Tensor) {
    let (bs, t, di) = x.size3().expect("selective_scan: x must be [B, T, Dinner]");
    let blk = blk.max(1);
    // Contiguous time-major copies (strided operands make the backward ~2x slower).
    let time_major = |v: &Tensor| v.transpose(0, 1).contiguous();
    let dt_t = time_major(dt); // [T, B, Dinner]
    let dtx = (&dt_t * time_major(x)).unsqueeze(-1); // [T, B, Dinner, 1]
    let b_t = time_major(b).unsqueeze(2); // [T, B, 1, N]
    let c_t = time_major(c).unsqueeze(-1); // [T, B, N, 1]
    let mut h = h0.map_or_else(|| Tensor::zeros([bs, di, a.size()[1]], (x.kind(), x.device())), |h| h.shallow_clone());
    let mut ys = Vec::with_capacity(((t + blk - 1) / blk) as usize);
    for start in (0..t).step_by(blk as usize) {
        let l = blk.min(t - start);
        let decay = (dt_t.narrow(0, start, l).unsqueeze(-1) * a).exp(); // [l, B, Dinner, N]
        let input = dtx.narrow(0, start, l) * b_t.narrow(0, start, l); // [l, B, Dinner, N]
        let mut hs = Vec::with_capacity(l as usize);
        for (decay, input) in decay.unbind(0).iter().zip(input.unbind(0)) {
            h = input.addcmul(decay, &h); // h = decay ⊙ h + input
            hs.push(h.shallow_clone());
        }
        ys.push(Tensor::stack(&hs, 0).matmul(&c_t.narrow(0, start, l))); // [l, B, Dinner, 1]
    }
    (Tensor::cat(&ys, 0).squeeze_dim(-1).transpose(0, 1), h) // [B, T, Dinner]
}

/// One token of the selective scan without the skip: `(y [B, Dinner], h [B, Dinner, N])`.
fn step_core(x: &Tensor, dt: &Tensor, a: &Tensor, b: &Tensor, c: &Tensor, h: &Tensor) -> (Tensor, Tensor) {
    let h = (dt.unsqueeze(-1) * a).exp() * h + (dt * x).unsqueeze(-1) * b.unsqueeze(1); // [B, Dinner, N]
    let y = h.matmul(&c.unsqueeze(-1)).squeeze_dim(-1); // [B, Dinner]
    (y, h)
}

/// One token: `x, dt [B, Dinner]`, `b, c [B, N]`, `state [B, Dinner, N]` -> `(y [B, Dinner], new state)`.
pub fn selective_scan_step(
    x: &Tensor,
    dt: &Tensor,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    d: Option<&Tensor>,
    state: &Tensor,
) -> (Tensor, Tensor) {
    let (y, h) = step_core(x, dt, a, b, c, state);
    match d {
        Some(d) => (y + x * d, h),
        None => (y, h),
    }
}

/// Max |a - b| (test helper shared by the kernel tests).
#[cfg(test)]
pub(crate) fn max_err(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn rand(shape: &[i64]) -> Tensor {
        Tensor::randn(shape, (Kind::Double, Device::Cpu))
    }

    #[test]
    fn chunked_linear_scan_matches_the_loop_with_gradients() {
        tch::manual_seed(0);
        for (t, chunk, with_h0) in [(1, 4, false), (7, 3, true), (16, 4, false), (10, 16, true), (9, 1, false)] {
            let la = (-rand(&[2, t, 3, 2]).abs()).set_requires_grad(true);
            let u = rand(&[2, t, 3, 2]).set_requires_grad(true);
            let h0 = rand(&[2, 3, 2]).set_requires_grad(true);
            let h0_opt = with_h0.then_some(&h0);
            // one loss weight for both paths, drawn here: re-seeding libtorch's process-wide generator
            // before each run let another test's draws on another thread slip in between (a flake in CI)
            let w = rand(&[2, t, 3, 2]);
            let run = |path| {
                let (h, last) = linear_scan(&la, &u, h0_opt, chunk, path);
                let loss = (&h * &w).sum(Kind::Double) + (&last * 1.7).sum(Kind::Double);
                let mut vars = vec![&la, &u];
                if with_h0 {
                    vars.push(&h0);
                }
                (h, last, Tensor::run_backward(&[loss], &vars, false, false))
            };
            let (ha, la_, ga) = run(KernelPath::Auto);
            let (hr, lr, gr) = run(KernelPath::Reference);
            assert!(max_err(&ha, &hr) < 1e-12, "t={t} chunk={chunk}");
            assert!(max_err(&la_, &lr) < 1e-12, "t={t} chunk={chunk}: final state");
            for (a, r) in ga.iter().zip(&gr) {
                assert!(max_err(a, r) < 1e-10, "t={t} chunk={chunk}: gradient");
            }
        }
    }

    fn inputs(t: i64, di: i64, n: i64) -> Vec<Tensor> {
        let x = rand(&[2, t, di]);
        let dt = (rand(&[2, t, di]) * 0.5).softplus();
        let a = -(Tensor::arange_start(1, n + 1, (Kind::Double, Device::Cpu)).repeat([di, 1]));
        let (b, c, d, h0) = (rand(&[2, t, n]), rand(&[2, t, n]), rand(&[di]), rand(&[2, di, n]));
        [x, dt, a, b, c, d, h0].into_iter().map(|v| v.set_requires_grad(true)).collect()
    }

    #[test]
    fn auto_matches_reference_outputs_states_and_gradients() {
        tch::manual_seed(2);
        for (t, di, n, chunk) in [(1, 3, 2, 4), (9, 5, 3, 4), (12, 2, 4, 3), (6, 4, 1, 16)] {
            let v = inputs(t, di, n);
            let run = |path| {
                let (y, h) = selective_scan(&v[0], &v[1], &v[2], &v[3], &v[4], Some(&v[5]), Some(&v[6]), chunk, path);
                let loss =
                    (&y * y.ones_like().cumsum(1, Kind::Double)).sum(Kind::Double) + h.square().sum(Kind::Double);
                let grads = Tensor::run_backward(&[loss], &v.iter().collect::<Vec<_>>(), false, false);
                (y, h, grads)
            };
            let (ya, ha, ga) = run(KernelPath::Auto);
            let (yr, hr, gr) = run(KernelPath::Reference);
            assert!(max_err(&ya, &yr) < 1e-10, "t={t}: outputs");
            assert!(max_err(&ha, &hr) < 1e-10, "t={t}: final state");
            for (i, (a, r)) in ga.iter().zip(&gr).enumerate() {
                assert!(max_err(a, r) < 1e-10, "t={t}: gradient of input {i}");
            }
        }
    }

    #[test]
    fn chunked_gradient_matches_finite_differences_of_the_loop() {
        tch::manual_seed(3);
        let v = inputs(5, 2, 3);
        let f = |v: &[Tensor], path| {
            let (y, h) = selective_scan(&v[0], &v[1], &v[2], &v[3], &v[4], Some(&v[5]), Some(&v[6]), 2, path);
            (y.square().sum(Kind::Double) + h.sum(Kind::Double)).double_value(&[])
        };
        let (y, h) = selective_scan(&v[0], &v[1], &v[2], &v[3], &v[4], Some(&v[5]), Some(&v[6]), 2, KernelPath::Auto);
        let loss = y.square().sum(Kind::Double) + h.sum(Kind::Double);
        let grads = Tensor::run_backward(&[loss], &v.iter().collect::<Vec<_>>(), false, false);
        let eps = 1e-6;
        for (i, g) in grads.iter().enumerate() {
            let flat = v[i].detach().flatten(0, -1);
            for j in 0..flat.size()[0] {
                let plus: Vec<Tensor> = v.iter().map(|t| t.detach().copy()).collect();
                let minus: Vec<Tensor> = v.iter().map(|t| t.detach().copy()).collect();
                let _ = plus[i].view(-1).get(j).g_add_scalar_(eps);
                let _ = minus[i].view(-1).get(j).g_add_scalar_(-eps);
                let fd = (f(&plus, KernelPath::Reference) - f(&minus, KernelPath::Reference)) / (2.0 * eps);
                let ad = g.flatten(0, -1).double_value(&[j]);
                assert!((fd - ad).abs() < 1e-6 * (1.0 + fd.abs()), "input {i}[{j}]: autograd {ad} vs fd {fd}");
            }
        }
    }

    #[test]
    fn step_matches_the_scan_and_flops_are_counted() {
        tch::manual_seed(4);
        let v = inputs(6, 3, 2);
        let counter = flop_count::Counter::start();
        let (y, h) = selective_scan(&v[0], &v[1], &v[2], &v[3], &v[4], Some(&v[5]), None, 4, KernelPath::Auto);
        assert_eq!(counter.total(), selective_scan_flops(2, 6, 3, 2));
        drop(counter);
        let mut state = Tensor::zeros([2, 3, 2], (Kind::Double, Device::Cpu));
        for i in 0..6 {
            let (yi, s) = selective_scan_step(
                &v[0].select(1, i),
                &v[1].select(1, i),
                &v[2],
                &v[3].select(1, i),
                &v[4].select(1, i),
                Some(&v[5]),
                &state,
            );
            assert!(max_err(&yi, &y.select(1, i)) < 1e-12);
            state = s;
        }
        assert!(max_err(&state, &h) < 1e-12);
    }

    /// CPU time of the current thread in ms (`/proc/thread-self/schedstat`): with THREADS=1 it is steadier
    /// than wall time on a shared machine.
    fn thread_cpu_ms() -> f64 {
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
        s.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 1e6
    }

    /// Best-of-7 forward+backward wall and thread-CPU milliseconds of `f` for each path, runs interleaved.
    pub(crate) fn time_paths(name: &str, f: &dyn Fn(KernelPath) -> Tensor) {
        if let Ok(n) = std::env::var("THREADS") {
            tch::set_num_threads(n.parse().unwrap());
        }
        let mut best = [[f64::INFINITY; 2]; 2];
        for _ in 0..7 {
            for (i, path) in [KernelPath::Reference, KernelPath::Auto].into_iter().enumerate() {
                let (start, cpu) = (std::time::Instant::now(), thread_cpu_ms());
                f(path).sum(Kind::Float).backward();
                best[i][0] = best[i][0].min(start.elapsed().as_secs_f64() * 1e3);
                best[i][1] = best[i][1].min(thread_cpu_ms() - cpu);
            }
        }
        println!(
            "{name}: forward+backward best of 7 (wall / thread cpu): reference {:.1} / {:.1} ms, auto {:.1} / {:.1} ms",
            best[0][0], best[0][1], best[1][0], best[1][1]
        );
    }

    /// `cargo test --release -p kernels -- --ignored --nocapture scan_speed`: forward + backward at the bench
    /// shape (B=8, T=256, d_model=128: Dinner=256, N=16 for Mamba; D=128 for the element-wise scan), float32.
    #[test]
    #[ignore]
    fn scan_speed() {
        let opts = (Kind::Float, Device::Cpu);
        let (b, t, di, n) = (8, 256, 256, 16);
        let x = Tensor::randn([b, t, di], opts).set_requires_grad(true);
        let dt = (Tensor::randn([b, t, di], opts) - 4.0).softplus().set_requires_grad(true);
        let a = (-Tensor::arange_start(1, n + 1, opts).repeat([di, 1])).set_requires_grad(true);
        let (bm, cm) = (Tensor::randn([b, t, n], opts), Tensor::randn([b, t, n], opts));
        let blk: i64 = std::env::var("BLK").map_or(SCAN_BLOCK, |s| s.parse().unwrap());
        time_paths("selective_scan", &|path| selective_scan(&x, &dt, &a, &bm, &cm, None, None, blk, path).0);
        let la = (-Tensor::rand([b, t, 128], opts)).set_requires_grad(true);
        let u = Tensor::randn([b, t, 128], opts).set_requires_grad(true);
        time_paths("linear_scan", &|path| linear_scan(&la, &u, None, auto_chunk(t), path).0);
    }
}
