//! Chunked linear attention with a scalar or per-key decay on the GPU (csrc/chunk_linear*, its autograd function in
//! csrc/extension.cpp): the checked entry point, the `Auto` path's dispatch and when it takes the kernel
//! ([`ChunkLinearGate`]).

use super::{check_chunk_linear, extension, for_cuda_tensors, supported_kind, CudaKernelError, Extension, Meta};
use super::{Raw, CHUNK_LINEAR_MAX_DIM, CHUNK_LINEAR_MAX_VALUE_DIM_PER_KEY};
use std::ffi::c_void;
use std::sync::OnceLock;
use tch::{Kind, Tensor};

/// Chunked linear attention with a scalar per-head or a per-key decay on the GPU (see [`crate::chunk_linear`]
/// for the math): `q`, `k` [B, H, T, Dk], `v` [B, H, T, Dv], `g` the log-decays [B, H, T] or, with bfloat16
/// q, k, v, [B, H, T, Dk] per key (None: no decay), `s0` the
/// initial state [B, H, Dk, Dv]; with bfloat16 q, k, v, `g` and `s0` may be float32 (as under autocast).
/// Returns `(o [B, H, T, Dv], S_T [B, H, Dk, Dv])`, o in q's dtype, S_T in q's dtype or float32 when `g` or
/// `s0` is float32; differentiable in every input. Arguments are checked first ([`check_chunk_linear`]).
/// Float32 inputs are computed in float32; bfloat16 inputs on tensor cores (bfloat16 products, float32
/// sums).
pub fn chunk_linear(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    g: Option<&Tensor>,
    s0: Option<&Tensor>,
) -> Result<(Tensor, Tensor), CudaKernelError> {
    let (gm, sm) = (g.map(Meta::of), s0.map(Meta::of));
    check_chunk_linear(&Meta::of(q), &Meta::of(k), &Meta::of(v), gm.as_ref(), sm.as_ref())?;
    chunk_linear_unchecked(extension()?, q, k, v, g, s0)
}

fn chunk_linear_unchecked(
    ext: &Extension,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    g: Option<&Tensor>,
    s0: Option<&Tensor>,
) -> Result<(Tensor, Tensor), CudaKernelError> {
    let ptr = |t: &Tensor| t.as_ptr().cast::<c_void>();
    let opt = |t: Option<&Tensor>| t.map_or(std::ptr::null(), |t| t.as_ptr().cast::<c_void>());
    let (mut o, mut s): (Raw, Raw) = (std::ptr::null_mut(), std::ptr::null_mut());
    // SAFETY: the pointers are live tch tensors (at::Tensor*) for the duration of the call; on success `o`
    // and `s` are new at::Tensor*s whose ownership passes to the returned Tensors.
    let msg = unsafe { (ext.chunk_linear)(ptr(q), ptr(k), ptr(v), opt(g), opt(s0), &mut o, &mut s) };
    ext.check("chunk_linear", msg)?;
    Ok(unsafe { (Tensor::from_ptr(o.cast()), Tensor::from_ptr(s.cast())) })
}

/// When the `Auto` path takes the chunked linear-attention kernel (`WORKBENCH_CHUNK_LINEAR_KERNEL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkLinearGate {
    /// `1`: wherever the kernel applies (the GPU tests use this).
    Always,
    /// `0`: never; the libtorch chunked form.
    Never,
    /// Unset: where the kernel measured faster than the libtorch form on the H200 (BENCHMARKS.md, issue 8):
    /// bfloat16 q, k, v (tensor cores), every decay and head dim (forward+backward 1.6-2.4x with a scalar
    /// decay, 5.5-5.9x with per-key decays, 1.5-2.5x without a decay, session 5); not float32 inputs (no
    /// tensor cores: the first version, on FMA tiles, was slower).
    Measured,
}

impl ChunkLinearGate {
    /// Whether to take the kernel for q of `kind` (the head dims, the decay's form and whether gradients are
    /// needed no longer matter: bfloat16 measured faster at all of them).
    pub fn takes(self, kind: Kind) -> bool {
        match self {
            ChunkLinearGate::Always => true,
            ChunkLinearGate::Never => false,
            ChunkLinearGate::Measured => kind == Kind::BFloat16,
        }
    }
}

fn parse_chunk_linear_gate(value: Option<&str>) -> ChunkLinearGate {
    match value.map(str::trim) {
        Some("1") => ChunkLinearGate::Always,
        Some("0") => ChunkLinearGate::Never,
        _ => ChunkLinearGate::Measured,
    }
}

/// `WORKBENCH_CHUNK_LINEAR_KERNEL` (read once); see [`ChunkLinearGate`].
pub fn chunk_linear_gate() -> ChunkLinearGate {
    static GATE: OnceLock<ChunkLinearGate> = OnceLock::new();
    *GATE.get_or_init(|| parse_chunk_linear_gate(std::env::var("WORKBENCH_CHUNK_LINEAR_KERNEL").ok().as_deref()))
}

/// The `Auto` path of [`crate::chunk_linear::chunk_linear`] for a CUDA `q`: the kernel when
/// [`chunk_linear_gate`] takes it, applies (every tensor float32 or bfloat16 in q's dtype, `g` and `s0`
/// possibly float32, all on q's device, per-key `g` with bfloat16 q only, 1 <= Dk <= 128, B * H <= 65535,
/// non-empty; Dv > 128 in column slices, [`value_slices`])
/// and the library is loaded, else
/// `None` (the caller's libtorch path). Non-contiguous inputs are made contiguous. Shapes that do not fit
/// together panic with the validation message, as the reference's own checks do.
pub(crate) fn chunk_linear_auto(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    g: Option<&Tensor>,
    s0: Option<&Tensor>,
) -> Option<(Tensor, Tensor)> {
    let (qs, vs) = (q.size(), v.size());
    let per_key = g.is_some_and(|g| g.dim() == 4);
    if per_key && q.kind() != Kind::BFloat16 {
        return None; // the per-key kernel is bfloat16 only
    }
    if !chunk_linear_gate().takes(q.kind()) {
        return None;
    }
    // (value widths past the kernel's 128 go in column slices below)
    let dims_ok = qs.len() == 4
        && vs.len() == 4
        && (1..=CHUNK_LINEAR_MAX_DIM).contains(&qs[3])
        && vs[3] >= 1
        && qs[0] * qs[1] <= 65535;
    let fits = |t: &Tensor| t.kind() == q.kind() && t.device() == q.device();
    let fits_or_f32 = |t: &Tensor| fits(t) || (t.kind() == Kind::Float && t.device() == q.device());
    let all_fit = [k, v].into_iter().all(fits) && g.into_iter().chain(s0).all(fits_or_f32);
    if !supported_kind(q.kind()) || !dims_ok || q.numel() == 0 || !all_fit {
        return None;
    }
    let ext = for_cuda_tensors()?;
    // per key, value widths up to 256 in one call where the library's blocks fit them
    let whole = vs[3] <= CHUNK_LINEAR_MAX_DIM
        || (per_key && vs[3] <= CHUNK_LINEAR_MAX_VALUE_DIM_PER_KEY && lib_fits(ext, qs[3], vs[3], per_key));
    if !whole {
        return Some(value_slices(ext, q, k, v, g, s0));
    }
    let cont = |t: &Tensor| t.contiguous();
    let (g, s0) = (g.map(cont), s0.map(cont));
    Some(checked_call(ext, &cont(q), &cont(k), &cont(v), g.as_ref(), s0.as_ref()))
}

/// The kernel on contiguous arguments, checked first; shapes that do not fit together panic with the
/// validation message, as the reference's own checks do.
fn checked_call(
    ext: &Extension,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    g: Option<&Tensor>,
    s0: Option<&Tensor>,
) -> (Tensor, Tensor) {
    let (gm, sm) = (g.map(Meta::of), s0.map(Meta::of));
    let checked = check_chunk_linear(&Meta::of(q), &Meta::of(k), &Meta::of(v), gm.as_ref(), sm.as_ref());
    match checked.and_then(|()| chunk_linear_unchecked(ext, q, k, v, g, s0)) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    }
}

/// Value widths the kernel does not take in one call ([`chunk_linear_fits`]): the state's
/// columns never mix (`S = diag(a) S + k^T v` and `o = q S` act on each column of v alone), so the kernel runs
/// on equal slices of v's columns (and of s0's) and the outputs are concatenated. Each slice recomputes the
/// scores `q . k`, which is cheap next to the libtorch form this replaces.
fn value_slices(
    ext: &Extension,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    g: Option<&Tensor>,
    s0: Option<&Tensor>,
) -> (Tensor, Tensor) {
    let dv = v.size()[3];
    let parts = (dv + CHUNK_LINEAR_MAX_DIM - 1) / CHUNK_LINEAR_MAX_DIM;
    let width = (dv + parts - 1) / parts;
    let cont = |t: &Tensor| t.contiguous();
    let (q, k, g) = (cont(q), cont(k), g.map(cont));
    let (vp, sp) = (v.split(width, 3), s0.map(|s| s.split(width, 3)));
    let (os, ss): (Vec<Tensor>, Vec<Tensor>) = vp
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let s0 = sp.as_ref().map(|s| cont(&s[i]));
            checked_call(ext, &q, &k, &cont(v), g.as_ref(), s0.as_ref())
        })
        .unzip();
    (Tensor::cat(&os, 3), Tensor::cat(&ss, 3))
}

fn lib_fits(ext: &Extension, dk: i64, dv: i64, per_key: bool) -> bool {
    // SAFETY: a plain function of three integers.
    unsafe { (ext.chunk_linear_fits)(dk, dv, i32::from(per_key)) != 0 }
}

/// Whether the kernel takes head dims `dk`, `dv` in one call: 1..=128 each, or with per-key decays value
/// widths up to 256 where its blocks fit in shared memory (Dk = 96 with Dv = 192 does, Dk = 128 with Dv = 256
/// does not). Wider ones go through the Auto path in column slices.
pub fn chunk_linear_fits(dk: i64, dv: i64, per_key: bool) -> Result<bool, CudaKernelError> {
    Ok(lib_fits(extension()?, dk, dv, per_key))
}

/// How many times the chunked linear-attention kernel ran in this process (tests check that dispatch
/// reached it).
pub fn chunk_linear_calls() -> Result<i64, CudaKernelError> {
    let ext = extension()?;
    Ok(unsafe { (ext.chunk_linear_calls)() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_linear_gate_values() {
        use ChunkLinearGate::*;
        for (value, gate) in
            [(None, Measured), (Some(""), Measured), (Some("0"), Never), (Some("1"), Always), (Some(" 1\n"), Always)]
        {
            assert_eq!(parse_chunk_linear_gate(value), gate, "{value:?}");
        }
        // The measured default: bfloat16 always, float32 never.
        assert!(Measured.takes(Kind::BFloat16) && !Measured.takes(Kind::Float) && !Measured.takes(Kind::Half));
        assert!(Always.takes(Kind::Float) && !Never.takes(Kind::BFloat16));
    }
}
