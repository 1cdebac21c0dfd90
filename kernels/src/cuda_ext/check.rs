//! Validation of the kernels' arguments (device, dtype, layout and shape), checked on plain metadata so the
//! rules are testable anywhere: every error names the argument and the shape it should have.

use super::CudaKernelError;
use tch::{Device, Kind, Tensor};

/// What validation looks at.
#[derive(Clone, Debug, PartialEq)]
pub struct Meta {
    pub device: Device,
    pub kind: Kind,
    pub size: Vec<i64>,
    pub contiguous: bool,
}

impl Meta {
    pub fn of(t: &Tensor) -> Meta {
        Meta { device: t.device(), kind: t.kind(), size: t.size(), contiguous: t.is_contiguous() }
    }
}

pub(super) fn bad(op: &'static str, arg: &'static str, msg: String) -> CudaKernelError {
    CudaKernelError::BadArgument { op, arg, msg }
}

/// The dtypes the kernels take.
pub fn supported_kind(kind: Kind) -> bool {
    matches!(kind, Kind::Float | Kind::BFloat16)
}

/// What every kernel asks of its leading tensor `m` (argument `arg`, shape `dims` such as `[B, T, C]`): on
/// CUDA, float32 or bfloat16, contiguous.
pub(super) fn check_lead(op: &'static str, arg: &'static str, m: &Meta, dims: &str) -> Result<(), CudaKernelError> {
    if !m.device.is_cuda() {
        return Err(bad(op, arg, format!("expected a CUDA tensor, got device {:?}", m.device)));
    }
    if !supported_kind(m.kind) {
        return Err(bad(op, arg, format!("expected dtype Float or BFloat16, got {:?}", m.kind)));
    }
    if !m.contiguous {
        return Err(bad(op, arg, format!("expected a contiguous {dims} = {:?} tensor (call .contiguous())", m.size)));
    }
    Ok(())
}

/// `m` (argument `arg`) sits on the leading tensor's device in its dtype.
pub(super) fn same_device_and_kind(
    op: &'static str,
    arg: &'static str,
    (lead_name, lead): (&str, &Meta),
    m: &Meta,
) -> Result<(), CudaKernelError> {
    if m.device != lead.device {
        return Err(bad(
            op,
            arg,
            format!("expected device {:?} (that of {lead_name}), got {:?}", lead.device, m.device),
        ));
    }
    if m.kind != lead.kind {
        return Err(bad(op, arg, format!("expected dtype {:?} (that of {lead_name}), got {:?}", lead.kind, m.kind)));
    }
    Ok(())
}

/// One further argument: its name, its metadata, the size it must have and that size's dimension names.
type Follower<'a> = (&'static str, &'a Meta, Vec<i64>, &'static str);

/// Every follower has its size, is contiguous and matches the leading tensor in device and dtype.
fn check_followers(op: &'static str, lead: (&str, &Meta), args: Vec<Follower>) -> Result<(), CudaKernelError> {
    for (arg, m, want, dims) in args {
        if m.size != want {
            return Err(bad(op, arg, format!("expected shape {dims} = {want:?}, got {:?}", m.size)));
        }
        same_device_and_kind(op, arg, lead, m)?;
        if !m.contiguous {
            return Err(bad(op, arg, format!("expected a contiguous {dims} = {want:?} tensor (call .contiguous())")));
        }
    }
    Ok(())
}

/// Checks `x` ([B, T, C], CUDA, float32 or bfloat16, contiguous) and that `w` ([C, k], 1 <= k <= 4) and
/// `bias` ([C]) match it in device and dtype.
pub fn check_short_conv(x: &Meta, w: &Meta, bias: Option<&Meta>) -> Result<(), CudaKernelError> {
    const OP: &str = "short_conv";
    let &[b, t, c] = x.size.as_slice() else {
        return Err(bad(OP, "x", format!("expected shape [B, T, C], got {:?}", x.size)));
    };
    check_lead(OP, "x", x, "[B, T, C]")?;
    if b < 1 || t < 1 || c < 1 {
        return Err(bad(OP, "x", format!("expected shape [B, T, C] with B, T, C >= 1, got {:?}", x.size)));
    }
    if b > 65535 {
        return Err(bad(OP, "x", format!("expected B <= 65535 (one grid dimension), got shape {:?}", x.size)));
    }
    let k_ok = w.size.len() == 2 && w.size[0] == c && (1..=4).contains(&w.size[1]);
    if !k_ok {
        return Err(bad(OP, "w", format!("expected shape [C, k] = [{c}, 1..=4], got {:?}", w.size)));
    }
    same_device_and_kind(OP, "w", ("x", x), w)?;
    if let Some(bias) = bias {
        if bias.size != [c] {
            return Err(bad(OP, "bias", format!("expected shape [C] = [{c}], got {:?}", bias.size)));
        }
        same_device_and_kind(OP, "bias", ("x", x), bias)?;
    }
    Ok(())
}

/// The largest state size N the selective-scan kernel takes (16 lanes x 4 states per lane).
pub const SELECTIVE_SCAN_MAX_STATE: i64 = 64;

/// Checks the selective scan's arguments (shapes in [`crate::selective_scan`]'s note): `x` [B, T, D] (CUDA,
/// float32 or bfloat16, contiguous, B <= 65535), `dt` [B, T, D], `a` [D, N] with 1 <= N <= 64, `b` and `c`
/// [B, T, N], `d` [D], `h0` [B, D, N]; every one contiguous, on x's device, in x's dtype, except that `a`,
/// `d` and `h0` may also be float32 (the kernel reads them as float32: autocast's parameters beside bfloat16
/// activations).
pub fn check_selective_scan(
    x: &Meta,
    dt: &Meta,
    a: &Meta,
    b: &Meta,
    c: &Meta,
    d: Option<&Meta>,
    h0: Option<&Meta>,
) -> Result<(), CudaKernelError> {
    const OP: &str = "selective_scan";
    let &[bs, t, di] = x.size.as_slice() else {
        return Err(bad(OP, "x", format!("expected shape [B, T, D], got {:?}", x.size)));
    };
    check_lead(OP, "x", x, "[B, T, D]")?;
    if bs < 1 || t < 1 || di < 1 {
        return Err(bad(OP, "x", format!("expected shape [B, T, D] with B, T, D >= 1, got {:?}", x.size)));
    }
    if bs > 65535 {
        return Err(bad(OP, "x", format!("expected B <= 65535 (one grid dimension), got shape {:?}", x.size)));
    }
    let n_ok = a.size.len() == 2 && a.size[0] == di && (1..=SELECTIVE_SCAN_MAX_STATE).contains(&a.size[1]);
    if !n_ok {
        return Err(bad(OP, "A", format!("expected shape [D, N] = [{di}, 1..=64], got {:?}", a.size)));
    }
    let n = a.size[1];
    let args: Vec<Follower> = vec![
        ("dt", dt, vec![bs, t, di], "[B, T, D]"),
        ("B", b, vec![bs, t, n], "[B, T, N]"),
        ("C", c, vec![bs, t, n], "[B, T, N]"),
    ];
    check_followers(OP, ("x", x), args)?;
    let mut f32_ok: Vec<Follower> = vec![("A", a, vec![di, n], "[D, N]")];
    if let Some(d) = d {
        f32_ok.push(("D", d, vec![di], "[D]"));
    }
    if let Some(h0) = h0 {
        f32_ok.push(("h0", h0, vec![bs, di, n], "[B, D, N]"));
    }
    check_followers_or_f32(OP, ("x", x), f32_ok)
}

/// The largest head dimension (Dk and Dv) the chunked linear-attention kernel takes.
pub const CHUNK_LINEAR_MAX_DIM: i64 = 128;
/// With per-key decays the value width may reach this where the kernel's blocks fit in shared memory (the
/// library decides: [`super::chunk_linear_fits`]).
pub const CHUNK_LINEAR_MAX_VALUE_DIM_PER_KEY: i64 = 256;

/// Checks the chunked linear-attention kernel's arguments (shapes in [`crate::chunk_linear`]'s note): `q`
/// [B, H, T, Dk] (CUDA, float32 or bfloat16, contiguous, B * H <= 65535, 1 <= Dk <= 128), `k` [B, H, T, Dk],
/// `v` [B, H, T, Dv] with 1 <= Dv <= 128, `g` (log-decays) [B, H, T] (scalar) or [B, H, T, Dk] (per key,
/// bfloat16 q, k, v only), `s0` [B, H, Dk, Dv]; every one contiguous, on q's device, in q's dtype, except that
/// `g` and `s0` may also be float32 (bfloat16 q, k, v with a float32 decay and state, as under autocast).
pub fn check_chunk_linear(
    q: &Meta,
    k: &Meta,
    v: &Meta,
    g: Option<&Meta>,
    s0: Option<&Meta>,
) -> Result<(), CudaKernelError> {
    const OP: &str = "chunk_linear";
    let &[b, h, t, dk] = q.size.as_slice() else {
        return Err(bad(OP, "q", format!("expected shape [B, H, T, Dk], got {:?}", q.size)));
    };
    check_lead(OP, "q", q, "[B, H, T, Dk]")?;
    if b < 1 || h < 1 || t < 1 || !(1..=CHUNK_LINEAR_MAX_DIM).contains(&dk) {
        return Err(bad(
            OP,
            "q",
            format!("expected shape [B, H, T, Dk] with B, H, T >= 1 and 1 <= Dk <= 128, got {:?}", q.size),
        ));
    }
    if b * h > 65535 {
        return Err(bad(OP, "q", format!("expected B * H <= 65535 (one grid dimension), got shape {:?}", q.size)));
    }
    let per_key = g.is_some_and(|g| g.size.len() == 4);
    let max_dv = if per_key { CHUNK_LINEAR_MAX_VALUE_DIM_PER_KEY } else { CHUNK_LINEAR_MAX_DIM };
    let dv_ok = v.size.len() == 4 && v.size[..3] == [b, h, t] && (1..=max_dv).contains(&v.size[3]);
    if !dv_ok {
        let msg = format!("expected shape [B, H, T, Dv] = [{b}, {h}, {t}, 1..={max_dv}], got {:?}", v.size);
        return Err(bad(OP, "v", msg));
    }
    let dv = v.size[3];
    let args: Vec<Follower> =
        vec![("k", k, vec![b, h, t, dk], "[B, H, T, Dk]"), ("v", v, vec![b, h, t, dv], "[B, H, T, Dv]")];
    check_followers(OP, ("q", q), args)?;
    let mut f32_ok: Vec<Follower> = Vec::new();
    if let Some(g) = g {
        if g.size.len() == 4 {
            if q.kind != Kind::BFloat16 {
                let msg = format!("per-key log-decays [B, H, T, Dk] need bfloat16 q, k, v, got q of {:?}", q.kind);
                return Err(bad(OP, "g", msg));
            }
            f32_ok.push(("g", g, vec![b, h, t, dk], "[B, H, T, Dk]"));
        } else {
            f32_ok.push(("g", g, vec![b, h, t], "[B, H, T]"));
        }
    }
    if let Some(s0) = s0 {
        f32_ok.push(("s0", s0, vec![b, h, dk, dv], "[B, H, Dk, Dv]"));
    }
    check_followers_or_f32(OP, ("q", q), f32_ok)
}

/// [`check_followers`] for arguments that may also be float32 whatever the lead's dtype (a float32
/// parameter or state beside bfloat16 activations, as under autocast).
fn check_followers_or_f32(op: &'static str, lead: (&str, &Meta), args: Vec<Follower>) -> Result<(), CudaKernelError> {
    let (name, q) = lead;
    for (arg, m, want, dims) in args {
        // the lead's dtype or float32: checked as a follower of a float32 stand-in for the lead when it is float32
        let stand_in = if m.kind == Kind::Float { Meta { kind: Kind::Float, ..q.clone() } } else { q.clone() };
        check_followers(op, (name, &stand_in), vec![(arg, m, want, dims)]).map_err(|e| match e {
            CudaKernelError::BadArgument { op, arg, msg }
                if msg.starts_with("expected dtype") && q.kind != Kind::Float =>
            {
                let msg = format!("expected dtype {:?} (that of {name}) or Float, got {:?}", q.kind, m.kind);
                CudaKernelError::BadArgument { op, arg, msg }
            }
            other => other,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(device: Device, kind: Kind, size: &[i64]) -> Meta {
        Meta { device, kind, size: size.to_vec(), contiguous: true }
    }

    fn arg_of(e: CudaKernelError) -> (&'static str, String) {
        match e {
            CudaKernelError::BadArgument { arg, .. } => (arg, e.to_string()),
            other => panic!("expected a bad-argument error, got {other}"),
        }
    }

    #[test]
    fn validation_names_the_argument_and_the_expected_shape() {
        let gpu = Device::Cuda(0);
        let x = meta(gpu, Kind::BFloat16, &[2, 9, 5]);
        let w = meta(gpu, Kind::BFloat16, &[5, 4]);
        let b = meta(gpu, Kind::BFloat16, &[5]);
        assert_eq!(check_short_conv(&x, &w, Some(&b)), Ok(()));
        assert_eq!(check_short_conv(&x, &w, None), Ok(()));

        let cases: Vec<(Meta, Meta, Option<Meta>, &str, &str)> = vec![
            (meta(gpu, Kind::BFloat16, &[9, 5]), w.clone(), None, "x", "[B, T, C]"),
            (meta(Device::Cpu, Kind::BFloat16, &[2, 9, 5]), w.clone(), None, "x", "CUDA"),
            (meta(gpu, Kind::Double, &[2, 9, 5]), w.clone(), None, "x", "Float or BFloat16"),
            (Meta { contiguous: false, ..x.clone() }, w.clone(), None, "x", "contiguous"),
            (meta(gpu, Kind::Float, &[2, 0, 5]), w.clone(), None, "x", ">= 1"),
            (meta(gpu, Kind::Float, &[70000, 1, 5]), w.clone(), None, "x", "B <= 65535"),
            (x.clone(), meta(gpu, Kind::BFloat16, &[6, 4]), None, "w", "[C, k] = [5, 1..=4]"),
            (x.clone(), meta(gpu, Kind::BFloat16, &[5, 5]), None, "w", "[C, k] = [5, 1..=4]"),
            (x.clone(), meta(gpu, Kind::BFloat16, &[5]), None, "w", "[C, k]"),
            (x.clone(), meta(Device::Cpu, Kind::BFloat16, &[5, 4]), None, "w", "device"),
            (x.clone(), meta(gpu, Kind::Float, &[5, 4]), None, "w", "dtype BFloat16"),
            (x.clone(), w.clone(), Some(meta(gpu, Kind::BFloat16, &[4])), "bias", "[C] = [5]"),
            (x.clone(), w.clone(), Some(meta(Device::Cuda(1), Kind::BFloat16, &[5])), "bias", "device"),
            (x.clone(), w.clone(), Some(meta(gpu, Kind::Float, &[5])), "bias", "dtype"),
        ];
        for (x, w, b, want_arg, want_text) in cases {
            let (arg, text) = arg_of(check_short_conv(&x, &w, b.as_ref()).unwrap_err());
            assert_eq!(arg, want_arg, "{text}");
            assert!(text.contains(want_text), "`{text}` should mention `{want_text}`");
            assert!(text.starts_with("short_conv: argument"), "{text}");
        }
    }

    #[test]
    fn selective_scan_validation_names_the_argument_and_the_expected_shape() {
        let gpu = Device::Cuda(0);
        let k = Kind::BFloat16;
        let x = meta(gpu, k, &[2, 9, 5]);
        let a = meta(gpu, k, &[5, 16]);
        let bc = meta(gpu, k, &[2, 9, 16]);
        let d = meta(gpu, k, &[5]);
        let h0 = meta(gpu, k, &[2, 5, 16]);
        let ok = |x: &Meta, dt: &Meta, a: &Meta, b: &Meta, c: &Meta, d: Option<&Meta>, h: Option<&Meta>| {
            check_selective_scan(x, dt, a, b, c, d, h)
        };
        assert_eq!(ok(&x, &x, &a, &bc, &bc, Some(&d), Some(&h0)), Ok(()));
        assert_eq!(ok(&x, &x, &a, &bc, &bc, None, None), Ok(()));
        // bfloat16 activations with float32 A, D, h0 (autocast's parameters)
        let (a32, d32, h032) =
            (meta(gpu, Kind::Float, &[5, 16]), meta(gpu, Kind::Float, &[5]), meta(gpu, Kind::Float, &[2, 5, 16]));
        assert_eq!(ok(&x, &x, &a32, &bc, &bc, Some(&d32), Some(&h032)), Ok(()));
        type Args = (Meta, Meta, Meta, Meta, Meta, Option<Meta>, Option<Meta>);
        let base: Args = (x.clone(), x.clone(), a.clone(), bc.clone(), bc.clone(), Some(d.clone()), Some(h0.clone()));
        let with = |f: &dyn Fn(&mut Args)| {
            let mut v = base.clone();
            f(&mut v);
            v
        };
        let cases: Vec<(Args, &str, &str)> = vec![
            (with(&|v| v.0 = meta(gpu, k, &[9, 5])), "x", "[B, T, D]"),
            (with(&|v| v.0 = meta(Device::Cpu, k, &[2, 9, 5])), "x", "CUDA"),
            (with(&|v| v.0 = meta(gpu, Kind::Half, &[2, 9, 5])), "x", "Float or BFloat16"),
            (with(&|v| v.0.contiguous = false), "x", "contiguous"),
            (with(&|v| v.0 = meta(gpu, k, &[2, 0, 5])), "x", ">= 1"),
            (with(&|v| v.1 = meta(gpu, k, &[2, 9, 4])), "dt", "[B, T, D] = [2, 9, 5]"),
            (with(&|v| v.1 = meta(gpu, Kind::Float, &[2, 9, 5])), "dt", "dtype BFloat16"),
            (with(&|v| v.2 = meta(gpu, k, &[5, 65])), "A", "[D, N] = [5, 1..=64]"),
            (with(&|v| v.2 = meta(gpu, k, &[4, 16])), "A", "[D, N] = [5, 1..=64]"),
            (with(&|v| v.2 = meta(Device::Cpu, k, &[5, 16])), "A", "device"),
            (with(&|v| v.3 = meta(gpu, k, &[2, 9, 15])), "B", "[B, T, N] = [2, 9, 16]"),
            (with(&|v| v.3.contiguous = false), "B", "contiguous"),
            (with(&|v| v.4 = meta(gpu, k, &[2, 8, 16])), "C", "[B, T, N] = [2, 9, 16]"),
            (with(&|v| v.5 = Some(meta(gpu, k, &[6]))), "D", "[D] = [5]"),
            (with(&|v| v.6 = Some(meta(gpu, k, &[2, 16, 5]))), "h0", "[B, D, N] = [2, 5, 16]"),
            (with(&|v| v.6 = Some(meta(gpu, Kind::Half, &[2, 5, 16]))), "h0", "(that of x) or Float"),
            (with(&|v| v.2 = meta(gpu, Kind::Half, &[5, 16])), "A", "(that of x) or Float"),
        ];
        for (v, want_arg, want_text) in cases {
            let e = check_selective_scan(&v.0, &v.1, &v.2, &v.3, &v.4, v.5.as_ref(), v.6.as_ref()).unwrap_err();
            let (arg, text) = arg_of(e);
            assert_eq!(arg, want_arg, "{text}");
            assert!(text.contains(want_text), "`{text}` should mention `{want_text}`");
            assert!(text.starts_with("selective_scan: argument"), "{text}");
        }
    }

    #[test]
    fn chunk_linear_validation_names_the_argument_and_the_expected_shape() {
        let gpu = Device::Cuda(0);
        let kd = Kind::BFloat16;
        let q = meta(gpu, kd, &[2, 3, 9, 5]);
        let v = meta(gpu, kd, &[2, 3, 9, 7]);
        let g = meta(gpu, kd, &[2, 3, 9]);
        let s0 = meta(gpu, kd, &[2, 3, 5, 7]);
        assert_eq!(check_chunk_linear(&q, &q, &v, Some(&g), Some(&s0)), Ok(()));
        assert_eq!(check_chunk_linear(&q, &q, &v, None, None), Ok(()));
        // bfloat16 q, k, v with a float32 decay and state (autocast)
        let (g32, s032) = (meta(gpu, Kind::Float, &[2, 3, 9]), meta(gpu, Kind::Float, &[2, 3, 5, 7]));
        assert_eq!(check_chunk_linear(&q, &q, &v, Some(&g32), Some(&s032)), Ok(()));
        // per-key log-decays (GLA), bfloat16 or float32
        let gk = meta(gpu, Kind::Float, &[2, 3, 9, 5]);
        assert_eq!(check_chunk_linear(&q, &q, &v, Some(&gk), Some(&s032)), Ok(()));
        let (q32, v32) = (meta(gpu, Kind::Float, &[2, 3, 9, 5]), meta(gpu, Kind::Float, &[2, 3, 9, 7]));
        let e = check_chunk_linear(&q32, &q32, &v32, Some(&gk), None).unwrap_err();
        assert!(e.to_string().contains("per-key log-decays [B, H, T, Dk] need bfloat16"), "{e}");
        type Args = (Meta, Meta, Meta, Option<Meta>, Option<Meta>);
        let base: Args = (q.clone(), q.clone(), v.clone(), Some(g.clone()), Some(s0.clone()));
        let with = |f: &dyn Fn(&mut Args)| {
            let mut a = base.clone();
            f(&mut a);
            a
        };
        let cases: Vec<(Args, &str, &str)> = vec![
            (with(&|a| a.0 = meta(gpu, kd, &[2, 9, 5])), "q", "[B, H, T, Dk]"),
            (with(&|a| a.0 = meta(Device::Cpu, kd, &[2, 3, 9, 5])), "q", "CUDA"),
            (with(&|a| a.0 = meta(gpu, Kind::Half, &[2, 3, 9, 5])), "q", "Float or BFloat16"),
            (with(&|a| a.0.contiguous = false), "q", "contiguous"),
            (with(&|a| a.0 = meta(gpu, kd, &[2, 3, 0, 5])), "q", "T >= 1"),
            (with(&|a| a.0 = meta(gpu, kd, &[2, 3, 9, 129])), "q", "1 <= Dk <= 128"),
            (with(&|a| a.0 = meta(gpu, kd, &[300, 300, 9, 5])), "q", "B * H <= 65535"),
            (with(&|a| a.1 = meta(gpu, kd, &[2, 3, 9, 4])), "k", "[B, H, T, Dk] = [2, 3, 9, 5]"),
            (with(&|a| a.1 = meta(gpu, Kind::Float, &[2, 3, 9, 5])), "k", "dtype BFloat16 (that of q)"),
            (with(&|a| a.1.contiguous = false), "k", "contiguous"),
            (with(&|a| a.2 = meta(gpu, kd, &[2, 3, 8, 7])), "v", "[B, H, T, Dv] = [2, 3, 9, 1..=128]"),
            (with(&|a| a.2 = meta(gpu, kd, &[2, 3, 9, 200])), "v", "[B, H, T, Dv] = [2, 3, 9, 1..=128]"),
            (with(&|a| a.2 = meta(Device::Cuda(1), kd, &[2, 3, 9, 7])), "v", "device"),
            (with(&|a| a.3 = Some(meta(gpu, kd, &[2, 3, 8]))), "g", "[B, H, T] = [2, 3, 9]"),
            (with(&|a| a.3 = Some(meta(gpu, kd, &[2, 3, 9, 4]))), "g", "[B, H, T, Dk] = [2, 3, 9, 5]"),
            // per-key decays take value widths up to 256
            (
                with(&|a| {
                    a.2 = meta(gpu, kd, &[2, 3, 9, 300]);
                    a.3 = Some(meta(gpu, kd, &[2, 3, 9, 5]));
                }),
                "v",
                "[B, H, T, Dv] = [2, 3, 9, 1..=256]",
            ),
            (with(&|a| a.3 = Some(meta(gpu, Kind::Half, &[2, 3, 9]))), "g", "dtype BFloat16 (that of q) or Float"),
            (with(&|a| a.4 = Some(meta(gpu, Kind::Double, &[2, 3, 5, 7]))), "s0", "or Float, got Double"),
            (with(&|a| a.4 = Some(meta(gpu, kd, &[2, 3, 7, 5]))), "s0", "[B, H, Dk, Dv] = [2, 3, 5, 7]"),
        ];
        for (a, want_arg, want_text) in cases {
            let e = check_chunk_linear(&a.0, &a.1, &a.2, a.3.as_ref(), a.4.as_ref()).unwrap_err();
            let (arg, text) = arg_of(e);
            assert_eq!(arg, want_arg, "{text}");
            assert!(text.contains(want_text), "`{text}` should mention `{want_text}`");
            assert!(text.starts_with("chunk_linear: argument"), "{text}");
        }
    }
}
