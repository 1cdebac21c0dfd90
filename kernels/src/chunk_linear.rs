//! Chunked (gated) linear attention: the one recurrence behind `linear_attention`, `based`, `retnet`, `gla`
//! and Mamba2's SSD.
//!
//! Per batch element and head, with a state `S` of shape `[Dk, Dv]`:
//! ```text
//! S_t = diag(a_t) S_{t-1} + k_t^T v_t         a_t = exp(log_decay_t) in (0, 1]
//! o_t = q_t S_t                               (so o_t = sum_{j<=t} (q_t . (prod_{j<s<=t} a_s) k_j) v_j)
//! ```
//! The decay comes in three forms ([`Decay`]): none (`a_t = 1`: causal linear attention), one scalar per head
//! and token (`[B, H, T]`: RetNet's fixed gamma broadcast over tokens, Mamba2's `dt * A`), or one per key
//! (`[B, H, T, Dk]`: GLA's gates). Shapes: q, k `[B, H, T, Dk]`, v `[B, H, T, Dv]`, state `[B, H, Dk, Dv]`.
//!
//! Mamba2's SSD (Dao & Gu 2024, arXiv 2405.21060) is the scalar case: per head `q = C_t`, `k = B_t`,
//! `v = dt_t x_t`, `log a_t = dt_t A` (`Decay::Scalar`, `[B, H, T]`); the caller adds the `D x_t` skip and
//! expands shared B/C groups to heads.
//!
//! `KernelPath::Reference` runs the per-token recurrence above ([`linear_step`] in a loop). `KernelPath::Auto`
//! runs the chunked parallel form (Yang et al. 2023, arXiv 2312.06635, section 3): the sequence is cut into
//! chunks of `C = min(chunk, T)` tokens (the last one zero-padded: `k = v = 0`, `log a = 0`, which leaves the
//! state unchanged). With `b_i = sum_{s<=i} log a_s` the log-decay from the chunk's start to position `i`:
//! ```text
//! intra:  A_ij = sum_d q_id k_jd exp(b_id - b_jd)  for j <= i, else 0      [C, C]   o_intra = A V
//! inter:  o_inter = (Q * exp(b)) S_start                                    [C, Dv]
//! state:  S_end = diag(exp(b_last)) S_start + (K * exp(b_last - b))^T V    [Dk, Dv]
//! ```
//! The inter-chunk and state factors are exponentials of non-positive numbers. Without decay `A = (Q K^T)`
//! masked; with a scalar decay `A = (Q K^T) * exp(b_i - b_j)` (one matmul), the ratios formed in log space
//! for `j <= i` only (future pairs are masked to `-inf` before `exp`). With a per-key decay the ratio sits
//! inside the sum over keys, and the one-matmul factorisation `(Q * exp(b)) (K * exp(-b))^T` would overflow
//! once a chunk decays by more than about e^-88: the scores are built from sub-chunks instead
//! ([`per_key_scores`]), every exponential at most 1, the same work whatever the decays (no data-dependent
//! branch, so no host synchronisation on CUDA). The
//! chunk states are passed along in a loop over the `ceil(T / C)` chunks (elementwise work only).
//!
//! On CUDA tensors, `Auto` runs our kernel (csrc/chunk_linear*, through [`crate::cuda_ext`]; forward and
//! backward, head dims <= 128; with no or a scalar decay bfloat16 on tensor cores and float32 on FMA tiles,
//! with per-key decays bfloat16 q, k, v on tensor cores, sub-chunks as above: csrc/chunk_linear_pk.cuh)
//! where it measured faster than the libtorch form on the H200 ([`crate::cuda_ext::ChunkLinearGate`]);
//! everything else takes the libtorch forms below.
//!
//! FLOPs (a multiply-add is 2; the decay factors and the state's decay are elementwise and not counted): per
//! head and chunk `2 C^2 Dk` (scores, every pair of the chunk) + `2 C^2 Dv` (A V) + `2 C Dk Dv` (inter-chunk
//! read-out) + `2 C Dk Dv` (state update), so [`chunk_linear_flops`] = `B H ceil(T/C) (2 C^2 (Dk + Dv) + 4 C
//! Dk Dv)`. The Auto path records them from its operands' shapes; the Reference path records the same number
//! up front, because the accounting charges the algorithm training runs (the chunked form), not the
//! definition.

use crate::flop_count;
use crate::KernelPath;
use tch::{Kind, Tensor};

/// The state's decay between tokens, as log-decays `log a_t <= 0`. Shapes are for the sequence form; in
/// [`linear_step`] the time axis is absent (`[B, H]` and `[B, H, Dk]`).
#[derive(Clone, Copy, Debug)]
pub enum Decay<'a> {
    /// `a_t = 1`: plain causal linear attention.
    None,
    /// One log-decay per head and token, shared by every key: `[B, H, T]` (RetNet, Mamba2's SSD).
    Scalar(&'a Tensor),
    /// One log-decay per head, token and key: `[B, H, T, Dk]` (GLA).
    PerKey(&'a Tensor),
}

impl Decay<'_> {
    /// The log-decay with a trailing key axis (`[.., Dk]` or `[.., 1]`), `None` without decay.
    fn with_key_axis(&self) -> Option<Tensor> {
        match self {
            Decay::None => None,
            Decay::Scalar(g) => Some(g.unsqueeze(-1)),
            Decay::PerKey(g) => Some(g.shallow_clone()),
        }
    }
}

/// The chunk length actually used at sequence length `t`: `min(chunk, t)`.
pub fn effective_chunk(t: i64, chunk: i64) -> i64 {
    chunk.min(t).max(1)
}

/// Forward FLOPs of the chunked form over `heads` (batch x heads) sequences of length `t` (see the module note).
pub fn chunk_linear_flops(heads: i64, t: i64, dk: i64, dv: i64, chunk: i64) -> f64 {
    let c = effective_chunk(t, chunk);
    let n = (t + c - 1) / c;
    (heads * n) as f64 * (2 * c * c * (dk + dv) + 4 * c * dk * dv) as f64
}

/// Causal (gated) linear attention over a sequence; see the module note. Returns `(o [B, H, T, Dv], final
/// state [B, H, Dk, Dv])`; `initial_state` (zeros when absent) lets a sequence continue from an earlier call.
/// `chunk` (>= 1) is the chunk length of the Auto path.
pub fn chunk_linear(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    decay: Decay,
    initial_state: Option<&Tensor>,
    chunk: i64,
    path: KernelPath,
) -> (Tensor, Tensor) {
    let (b, h, t, dk) = q.size4().expect("chunk_linear: q must be [B, H, T, Dk]");
    let dv = v.size()[3];
    assert_eq!(k.size(), q.size(), "chunk_linear: k must have q's shape [B, H, T, Dk]");
    assert_eq!(v.size()[..3], [b, h, t], "chunk_linear: v must be [B, H, T, Dv]");
    assert!(t >= 1 && chunk >= 1, "chunk_linear: needs T >= 1 and chunk >= 1 (T = {t}, chunk = {chunk})");
    let path = crate::cuda_ext::resolve(path);
    if path == KernelPath::Auto && q.device().is_cuda() {
        if let Some(r) = cuda_kernel(q, k, v, decay, initial_state) {
            flop_count::record(chunk_linear_flops(b * h, t, dk, dv, chunk));
            return r;
        }
    }
    match path {
        KernelPath::Auto => chunked(q, k, v, decay, initial_state, chunk, None),
        KernelPath::Reference => {
            flop_count::record(chunk_linear_flops(b * h, t, dk, dv, chunk));
            recurrent(q, k, v, decay, initial_state)
        }
    }
}

/// CUDA tensors on the Auto path: our kernel (csrc/chunk_linear.cu, chunk length 64 whatever `chunk` says:
/// the results agree up to rounding) where it measured faster than the libtorch form
/// ([`crate::cuda_ext::ChunkLinearGate`]; `WORKBENCH_CHUNK_LINEAR_KERNEL=1` always, `=0` never), its library
/// is loaded and the arguments fit it (dtypes, head dims <= 128; per-key decays with bfloat16 q, k, v only);
/// `None` otherwise (the chunked libtorch form).
pub(crate) fn cuda_kernel(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    decay: Decay,
    s0: Option<&Tensor>,
) -> Option<(Tensor, Tensor)> {
    let g = match decay {
        Decay::None => None,
        Decay::Scalar(g) => Some(g),
        // the per-key kernel is bfloat16 only (tensor cores); float32 keeps the libtorch form
        Decay::PerKey(g) if [q, k, v].iter().all(|t| t.kind() == Kind::BFloat16) => Some(g),
        Decay::PerKey(_) => return None,
    };
    // Under bf16 autocast q, k, v arrive in bf16 while the decay (a float32 parameter times dt) and the state
    // do not: the kernel takes exactly that mix (bf16 q, k, v on tensor cores; a float32 g and s0; o in bf16,
    // the final state in float32). Any other mix of float dtypes is computed in float32 (the casts are
    // differentiable), outputs in float32, as libtorch's own mixed-dtype ops would give.
    let qkv_same = [k, v].iter().all(|t| t.kind() == q.kind());
    let decay_ok = g.into_iter().chain(s0).all(|t| t.kind() == q.kind() || t.kind() == Kind::Float);
    let parts = [q, k, v].into_iter().chain(g).chain(s0);
    let floats = parts.clone().all(|t| matches!(t.kind(), Kind::Float | Kind::BFloat16 | Kind::Half));
    if !(qkv_same && decay_ok) && floats {
        let f = |t: &Tensor| t.to_kind(Kind::Float);
        let (g, s0) = (g.map(f), s0.map(f));
        crate::cuda_ext::chunk_linear_auto(&f(q), &f(k), &f(v), g.as_ref(), s0.as_ref())
    } else {
        crate::cuda_ext::chunk_linear_auto(q, k, v, g, s0)
    }
}

/// One token: q, k `[B, H, Dk]`, v `[B, H, Dv]`, decay `[B, H]` or `[B, H, Dk]`, state `[B, H, Dk, Dv]`
/// -> `(o [B, H, Dv], new state)`. This is the definition the chunked form is tested against.
pub fn linear_step(q: &Tensor, k: &Tensor, v: &Tensor, decay: Decay, state: &Tensor) -> (Tensor, Tensor) {
    let kv = k.unsqueeze(-1) * v.unsqueeze(-2); // k_t^T v_t: [B, H, Dk, Dv]
    let state = match decay.with_key_axis() {
        None => state + kv,
        Some(g) => state * g.exp().unsqueeze(-1) + kv, // diag(a_t) S_{t-1} + k_t^T v_t
    };
    let o = q.unsqueeze(-2).matmul(&state).squeeze_dim(-2); // q_t S_t: [B, H, Dv]
    (o, state)
}

fn zero_state(q: &Tensor, dv: i64) -> Tensor {
    let (b, h, _, dk) = q.size4().expect("q must be [B, H, T, Dk]");
    Tensor::zeros([b, h, dk, dv], (q.kind(), q.device()))
}

/// The definition: the per-token recurrence.
fn recurrent(q: &Tensor, k: &Tensor, v: &Tensor, decay: Decay, s0: Option<&Tensor>) -> (Tensor, Tensor) {
    let t = q.size()[2];
    let mut state = s0.map_or_else(|| zero_state(q, v.size()[3]), |s| s.shallow_clone());
    let mut outs = Vec::with_capacity(t as usize);
    for i in 0..t {
        let g = match decay {
            Decay::None => None,
            Decay::Scalar(g) | Decay::PerKey(g) => Some(g.select(2, i)),
        };
        let d = match (decay, &g) {
            (Decay::Scalar(_), Some(g)) => Decay::Scalar(g),
            (Decay::PerKey(_), Some(g)) => Decay::PerKey(g),
            _ => Decay::None,
        };
        let (o, s) = linear_step(&q.select(2, i), &k.select(2, i), &v.select(2, i), d, &state);
        outs.push(o);
        state = s;
    }
    (Tensor::stack(&outs, 2), state)
}

/// The sub-chunk length of the per-key scores at chunk length `c`: the divisor of `c` nearest its square root
/// (from below), which balances the two intermediates of [`per_key_scores`] (`S` and `C / S` times the size
/// of q).
fn sub_chunk(c: i64) -> i64 {
    let root = (c as f64).sqrt().floor() as i64;
    (1..=root.max(1)).rev().find(|s| c % s == 0).unwrap_or(1)
}

/// The intra-chunk scores with one log-decay per key, `A_ij = sum_d q_id k_jd exp(b_id - b_jd)` for `j <= i`
/// (0 above the diagonal), `[B, H, N, C, C]`, from chunked q, k and within-chunk cumulative log-decays `cum`
/// (`[B, H, N, C, Dk]`, non-increasing along C), without forming an exponential larger than 1 and without
/// looking at the data (no host synchronisation, the same work whatever the decays are).
///
/// The chunk is cut into `M = C / S` sub-chunks of `S` rows ([`sub_chunk`], or `sub` when given). With `r_I`
/// the cumulative log-decay at the first row of sub-chunk `I`:
/// - rows of sub-chunk `I` against columns of earlier sub-chunks (`j < I S <= i`): `exp(b_i - b_j) =
///   exp(b_i - r_I) exp(r_I - b_j)`, both factors <= 1, so one matmul per sub-chunk row block:
///   `(Q_I * exp(b_I - r_I)) (K * exp(r_I - b))^T`, the second factor masked to the earlier columns
///   (`[B, H, N, M, C, Dk]`, M times k's size);
/// - pairs within a sub-chunk (`I S <= j <= i`): the exact ratios `exp(b_i - b_j)`, `[B, H, N, M, S, S, Dk]`
///   (S times q's size), summed over the keys.
///
/// FLOPs: the row blocks' matmul records `2 C^2 Dk` per chunk (every pair, the masked ones included), the
/// pairs within sub-chunks are among those and record nothing more.
fn per_key_scores(qc: &Tensor, kc: &Tensor, cum: &Tensor, sub: Option<i64>) -> Tensor {
    let (b, h, n, c, dk) = qc.size5().expect("chunked q must be [B, H, N, C, Dk]");
    let s = sub.unwrap_or_else(|| sub_chunk(c));
    assert!(s >= 1 && c % s == 0, "per_key_scores: sub-chunk {s} must divide the chunk {c}");
    let m = c / s;
    let dev = qc.device();
    let split = |x: &Tensor| x.reshape([b, h, n, m, s, dk]);
    let (q6, k6, cum6) = (split(qc), split(kc), split(cum));
    let r = cum6.narrow(4, 0, 1); // r_I: [B, H, N, M, 1, Dk]

    // Earlier sub-chunks: column j counts for row block I when j < I S.
    let rows = Tensor::arange(m, (Kind::Int64, dev)).unsqueeze(1) * s; // [M, 1]: I S
    let cols = Tensor::arange(c, (Kind::Int64, dev)).unsqueeze(0); // [1, C]: j
    let not_earlier = cols.ge_tensor(&rows).unsqueeze(-1); // [M, C, 1]
    let k_scale = (&r - cum.unsqueeze(3)).masked_fill(&not_earlier, f64::NEG_INFINITY).exp(); // [B, H, N, M, C, Dk]
    let q_off = &q6 * (&cum6 - &r).exp(); // [B, H, N, M, S, Dk]
    let off = flop_count::matmul(&q_off, &(kc.unsqueeze(3) * k_scale).transpose(-2, -1)); // [B, H, N, M, S, C]

    // Within a sub-chunk: exact ratios, j <= i.
    let future = Tensor::ones([s, s], (Kind::Bool, dev)).triu(1).unsqueeze(-1); // [S(i), S(j), 1]
    let ratio = (cum6.unsqueeze(5) - cum6.unsqueeze(4)).masked_fill(&future, f64::NEG_INFINITY).exp();
    let diag = (q6.unsqueeze(5) * k6.unsqueeze(4) * ratio).sum_dim_intlist(-1, false, off.kind()); // [.., M, S, S]
                                                                                                   // Placed at columns [I S, (I + 1) S) of row block I.
    let eye = Tensor::eye(m, (off.kind(), dev)).reshape([m, 1, m, 1]);
    let diag = (diag.unsqueeze(5) * eye).reshape([b, h, n, m, s, c]);
    (off + diag).reshape([b, h, n, c, c])
}

/// [`chunk_states`]'s closed form covers up to this many chunks at once (an `[N + 1, N]` weight matrix per
/// key); longer sequences go group by group.
const STATE_PRODUCT_MAX_CHUNKS: i64 = 64;

/// The state entering each chunk and the final state, from each chunk's update `U_m = (K * exp(b_last -
/// b))^T V` (`[B, H, N, Dk, Dv]`), the chunk's total log-decay `lambda_m` (`[B, H, N, Dk or 1]`, none
/// without decay) and the initial state `S_0`:
/// ```text
/// S_start(n) = exp(E_n) S_0 + sum_{m<n} exp(E_n - L_m) U_m     L_m = sum_{l<=m} lambda_l,  E_n = L_{n-1}
/// ```
/// (`E_0 = 0`; `n = N` gives the final state). Every exponent is a sum of log-decays, so <= 0.
/// Up to [`STATE_PRODUCT_MAX_CHUNKS`] chunks this is one batched product with the masked weights
/// `exp(E_n - L_m)` (a handful of kernels whatever N is, instead of a loop of N steps with their backward
/// passes; on a GPU the loop's launches, not its arithmetic, were the cost); longer sequences run it per
/// group of that many chunks, passing the state from group to group.
/// Neither records FLOPs: the state pass is the recurrence's elementwise work (module note).
fn chunk_states(updates: &Tensor, log_across: Option<&Tensor>, s0: Option<&Tensor>) -> (Tensor, Tensor) {
    let n = updates.size()[2];
    if n <= STATE_PRODUCT_MAX_CHUNKS {
        return chunk_states_product(updates, log_across, s0);
    }
    // Groups of STATE_PRODUCT_MAX_CHUNKS chunks, each by the product, each starting from the state the
    // group before it ended with: ceil(N / 64) steps instead of N.
    let mut state = s0.map(Tensor::shallow_clone);
    let mut starts = Vec::new();
    let (groups, lambdas) =
        (updates.split(STATE_PRODUCT_MAX_CHUNKS, 2), log_across.map(|l| l.split(STATE_PRODUCT_MAX_CHUNKS, 2)));
    for (i, u) in groups.iter().enumerate() {
        let (st, end) = chunk_states_product(u, lambdas.as_ref().map(|l| &l[i]), state.as_ref());
        starts.push(st);
        state = Some(end);
    }
    (Tensor::cat(&starts, 2), state.expect("at least one group"))
}

/// [`chunk_states`] for up to [`STATE_PRODUCT_MAX_CHUNKS`] chunks: the masked product.
fn chunk_states_product(updates: &Tensor, log_across: Option<&Tensor>, s0: Option<&Tensor>) -> (Tensor, Tensor) {
    let (b, h, n, dk, dv) = updates.size5().expect("updates must be [B, H, N, Dk, Dv]");
    let dev = updates.device();
    let lambda = log_across.map_or_else(|| Tensor::zeros([b, h, n, 1], (updates.kind(), dev)), |l| l.shallow_clone());
    let per_key = lambda.size()[3] != 1;
    // L_m: [B, H, N, D']. E_n = L_{n-1} for n = 0..=N (E_0 = 0), as a shifted copy, not L_n - lambda_n, so
    // that E_n reads no decay of chunk n or later (exact causality, not just up to rounding).
    let inclusive = lambda.cumsum(2, lambda.kind());
    let exclusive = Tensor::cat(&[lambda.zeros_like().narrow(2, 0, 1), inclusive.shallow_clone()], 2);
    let not_before = Tensor::ones([n + 1, n], (Kind::Bool, dev)).triu(0); // m >= n
    let weights = (exclusive.transpose(2, 3).unsqueeze(-1) - inclusive.transpose(2, 3).unsqueeze(-2)) // [B, H, D', N+1, N]
        .masked_fill(&not_before, f64::NEG_INFINITY)
        .exp();
    let states = if per_key {
        weights.matmul(&updates.permute([0, 1, 3, 2, 4])).permute([0, 1, 3, 2, 4])
    // [B, H, N+1, Dk, Dv]
    } else {
        weights.matmul(&updates.reshape([b, h, 1, n, dk * dv])).reshape([b, h, n + 1, dk, dv])
    };
    let states = match s0 {
        Some(s0) => states + exclusive.exp().unsqueeze(-1) * s0.unsqueeze(2),
        None => states,
    };
    (states.narrow(2, 0, n), states.select(2, n))
}

/// The chunked parallel form (module note). `sub` overrides the per-key scores' sub-chunk length (tests
/// try several).
fn chunked(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    decay: Decay,
    s0: Option<&Tensor>,
    chunk: i64,
    sub: Option<i64>,
) -> (Tensor, Tensor) {
    let (b, h, t, _) = q.size4().expect("q must be [B, H, T, Dk]");
    let dv = v.size()[3];
    let c = effective_chunk(t, chunk);
    let n = (t + c - 1) / c;
    let pad = n * c - t;
    // [B, H, T, D] -> zero-pad T to N*C -> [B, H, N, C, D]
    let blocks = |x: &Tensor| {
        let d = x.size()[3];
        x.constant_pad_nd([0, 0, 0, pad]).reshape([b, h, n, c, d])
    };
    let (qc, kc, vc) = (blocks(q), blocks(k), blocks(v));
    // [C, C]: true where j > i (the per-key scores mask their own sub-chunks)
    let future = || Tensor::ones([c, c], (Kind::Bool, q.device())).triu(1);
    // b_i = sum_{s<=i} log a_s within the chunk: [B, H, N, C, Dk or 1]
    let cum = decay.with_key_axis().map(|g| blocks(&g).cumsum(3, g.kind()));

    // Intra-chunk scores A [B, H, N, C, C], zero for j > i.
    let scores = match (decay, &cum) {
        (Decay::PerKey(_), Some(cum)) => per_key_scores(&qc, &kc, cum, sub),
        (Decay::Scalar(_), Some(cum)) => {
            let ratio = (cum - cum.transpose(-2, -1)).masked_fill(&future(), f64::NEG_INFINITY).exp(); // [.., C, C]
            flop_count::matmul(&qc, &kc.transpose(-2, -1)) * ratio
        }
        _ => flop_count::matmul(&qc, &kc.transpose(-2, -1)).masked_fill(&future(), 0.0),
    };
    let intra = flop_count::matmul(&scores, &vc); // [B, H, N, C, Dv]

    // Inter-chunk: what each chunk adds to the state, and the decay of the state across a chunk.
    let (q_in, k_out, log_across) = match &cum {
        None => (qc, kc, None),
        Some(cum) => {
            let last = cum.narrow(3, c - 1, 1); // b_last: [B, H, N, 1, Dk or 1]
            (&qc * cum.exp(), &kc * (&last - cum).exp(), Some(last.squeeze_dim(3)))
            // log-decay across: [B, H, N, Dk or 1]
        }
    };
    let updates = flop_count::matmul(&k_out.transpose(-2, -1), &vc); // [B, H, N, Dk, Dv]
    let (starts, state) = chunk_states(&updates, log_across.as_ref(), s0);
    let inter = flop_count::matmul(&q_in, &starts); // [B, H, N, C, Dv]
    let out = (intra + inter).reshape([b, h, n * c, dv]).narrow(2, 0, t); // [B, H, T, Dv]
    (out, state)
}

#[cfg(test)]
#[path = "chunk_linear_tests.rs"]
mod tests;
