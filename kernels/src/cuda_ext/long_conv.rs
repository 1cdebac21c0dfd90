//! The FFT long convolution fused with its skip and gate on the GPU (csrc/long_conv.*, csrc/ext_long_conv.cpp):
//! `y = gate * (causal_conv(u, k[:, :T]) + D u)`, see [`crate::long_conv`] for the math. cuFFT (through
//! libtorch) does the transforms; our kernels do the transposes, the zero padding, the spectral products, the
//! skip and the gate around them, one pass each.

use super::check::{bad, check_lead, same_device_and_kind};
use super::{extension, for_cuda_tensors, supported_kind, symbol, CudaKernelError, Extension, Meta, Msg, Raw};
use std::ffi::c_void;
use tch::Tensor;

/// The library's long-convolution entry points (csrc/ext_long_conv.cpp).
pub(super) struct Symbols {
    run: unsafe extern "C" fn(*const c_void, *const c_void, *const c_void, *const c_void, *mut Raw) -> Msg,
    calls: unsafe extern "C" fn() -> i64,
}

impl Symbols {
    /// # Safety
    /// `handle` is a live dlopen handle of the kernel library.
    pub(super) unsafe fn load(handle: *mut c_void) -> Result<Symbols, String> {
        Ok(Symbols { run: symbol(handle, "wb_long_conv")?, calls: symbol(handle, "wb_long_conv_calls")? })
    }
}

/// The largest channel count one launch covers (65535 tiles of 32 channels in grid.y).
pub const LONG_CONV_MAX_CHANNELS: i64 = 65535 * 32;

/// Checks the long convolution's arguments: `u` [B, T, C] (CUDA, float32 or bfloat16, B <= 65535, channels
/// contiguous: any batch and time strides, as when Hyena slices u out of one projection), `k` [C, L] with
/// L >= T, `d` [C] (both on u's device, float32 or bfloat16, any layout: they are converted to float32
/// inside), `gate` [B, T, C] (on u's device, in u's dtype, channels contiguous). Take the metadata of u and
/// the gate with [`channels_meta`].
pub fn check_long_conv(u: &Meta, k: &Meta, d: Option<&Meta>, gate: Option<&Meta>) -> Result<(), CudaKernelError> {
    const OP: &str = "long_conv";
    let &[b, t, c] = u.size.as_slice() else {
        return Err(bad(OP, "u", format!("expected shape [B, T, C], got {:?}", u.size)));
    };
    check_lead(OP, "u", u, "[B, T, C]")?;
    if b < 1 || t < 1 || c < 1 {
        return Err(bad(OP, "u", format!("expected shape [B, T, C] with B, T, C >= 1, got {:?}", u.size)));
    }
    if b > 65535 || c > LONG_CONV_MAX_CHANNELS {
        return Err(bad(OP, "u", format!("expected B <= 65535 and C <= {LONG_CONV_MAX_CHANNELS}, got {:?}", u.size)));
    }
    let param = |arg: &'static str, m: &Meta, ok: bool, want: String| {
        if !ok {
            return Err(bad(OP, arg, format!("expected shape {want}, got {:?}", m.size)));
        }
        if m.device != u.device {
            return Err(bad(OP, arg, format!("expected device {:?} (that of u), got {:?}", u.device, m.device)));
        }
        if !supported_kind(m.kind) {
            return Err(bad(OP, arg, format!("expected dtype Float or BFloat16, got {:?}", m.kind)));
        }
        Ok(())
    };
    let k_ok = k.size.len() == 2 && k.size[0] == c && k.size[1] >= t;
    param("k", k, k_ok, format!("[C, L] = [{c}, L >= T = {t}]"))?;
    if let Some(d) = d {
        param("D", d, d.size == [c], format!("[C] = [{c}]"))?;
    }
    if let Some(g) = gate {
        if g.size != u.size {
            return Err(bad(OP, "gate", format!("expected shape [B, T, C] = {:?}, got {:?}", u.size, g.size)));
        }
        same_device_and_kind(OP, "gate", ("u", u), g)?;
        if !g.contiguous {
            let msg = format!("expected contiguous channels (stride 1 in C) in the [B, T, C] = {:?} tensor", u.size);
            return Err(bad(OP, "gate", msg));
        }
    }
    Ok(())
}

/// [`Meta`] of u or the gate, where `contiguous` means what the kernel needs of them: contiguous channels
/// (batch and time may have any strides).
pub fn channels_meta(t: &Tensor) -> Meta {
    let (size, stride) = (t.size(), t.stride());
    let contiguous = size.len() != 3 || size[2] <= 1 || stride[2] == 1;
    Meta { contiguous, ..Meta::of(t) }
}

/// `gate * (causal_conv(u, k[:, :T]) + d * u)` on the GPU in u's dtype (float32 arithmetic inside),
/// differentiable in every input; `d` and `gate` may be absent. Arguments are checked first
/// ([`check_long_conv`]).
pub fn long_conv(u: &Tensor, k: &Tensor, d: Option<&Tensor>, gate: Option<&Tensor>) -> Result<Tensor, CudaKernelError> {
    let (dm, gm) = (d.map(Meta::of), gate.map(channels_meta));
    check_long_conv(&channels_meta(u), &Meta::of(k), dm.as_ref(), gm.as_ref())?;
    long_conv_unchecked(extension()?, u, k, d, gate)
}

fn long_conv_unchecked(
    ext: &Extension,
    u: &Tensor,
    k: &Tensor,
    d: Option<&Tensor>,
    gate: Option<&Tensor>,
) -> Result<Tensor, CudaKernelError> {
    let ptr = |t: &Tensor| t.as_ptr().cast::<c_void>();
    let opt = |t: Option<&Tensor>| t.map_or(std::ptr::null(), |t| t.as_ptr().cast::<c_void>());
    let mut out: Raw = std::ptr::null_mut();
    // SAFETY: the pointers are live tch tensors (at::Tensor*) for the duration of the call; on success `out`
    // is a new at::Tensor* whose ownership passes to the returned Tensor.
    let msg = unsafe { (ext.long_conv.run)(ptr(u), ptr(k), opt(d), opt(gate), &mut out) };
    ext.check("long_conv", msg)?;
    Ok(unsafe { Tensor::from_ptr(out.cast()) })
}

/// The `Auto` path of [`crate::long_conv`]'s convolutions for a CUDA `u`: the kernel when it applies (u and
/// gate float32 or bfloat16 in one dtype, k and D float32 or bfloat16, non-empty) and the library is loaded,
/// else `None` (the caller's libtorch path). u and gate are read in place when their channels are contiguous
/// (Hyena's slices of one projection), else copied. Shapes that do not fit together panic with the
/// validation message, as the reference's own checks do.
pub(crate) fn long_conv_auto(u: &Tensor, k: &Tensor, d: Option<&Tensor>, gate: Option<&Tensor>) -> Option<Tensor> {
    let kinds_ok = supported_kind(u.kind())
        && supported_kind(k.kind())
        && d.is_none_or(|d| supported_kind(d.kind()))
        && gate.is_none_or(|g| g.kind() == u.kind());
    if !kinds_ok || u.numel() == 0 {
        return None;
    }
    let ext = for_cuda_tensors()?;
    let rows = |t: &Tensor| if channels_meta(t).contiguous { t.shallow_clone() } else { t.contiguous() };
    let (u, gate) = (rows(u), gate.map(rows));
    let (dm, gm) = (d.map(Meta::of), gate.as_ref().map(channels_meta));
    let checked = check_long_conv(&channels_meta(&u), &Meta::of(k), dm.as_ref(), gm.as_ref());
    match checked.and_then(|()| long_conv_unchecked(ext, &u, k, d, gate.as_ref())) {
        Ok(y) => Some(y),
        Err(e) => panic!("{e}"),
    }
}

/// How many times the long-convolution kernel ran in this process (tests check that dispatch reached it).
pub fn long_conv_calls() -> Result<i64, CudaKernelError> {
    let ext = extension()?;
    Ok(unsafe { (ext.long_conv.calls)() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// ext_long_conv.cpp's formulation, written in libtorch ops on CPU in float64: libtorch's FFT
    /// conventions (rfft of the filter with norm "forward", the inverses with norm "forward" = unscaled), the
    /// conjugations and the batch sum of dK give the reference's output and autograd gradients. (The host
    /// emulation runs the kernels' own code with a hand-written DFT; this pins that DFT to libtorch's.)
    #[test]
    fn spectral_formulation_matches_the_reference_gradients() {
        tch::manual_seed(0);
        let (b, t, c, l) = (2, 37, 5, 40);
        let n = 80; // csrc/long_conv.h: fft_size(37) = 2 * 40
        let opts = (Kind::Double, Device::Cpu);
        let leaf = |s: &[i64]| Tensor::randn(s, opts).set_requires_grad(true);
        let (u, k, d, g) = (leaf(&[b, t, c]), leaf(&[c, l]), leaf(&[c]), leaf(&[b, t, c]));
        let dy = Tensor::randn([b, t, c], opts);
        let w_ref = crate::long_conv::reference(&u, &k.narrow(1, 0, t)) + &u * &d;
        let y_ref = &g * &w_ref;
        let want = Tensor::run_backward(&[(&y_ref * &dy).sum(Kind::Double)], &[&u, &k, &d, &g], false, false);
        let _guard = tch::no_grad_guard();
        // [B, T, C] -> zero-padded [B, C, N]
        let pack = |x: &Tensor| x.transpose(1, 2).constant_pad_nd([0, n - t]);
        let unpack = |z: &Tensor| z.narrow(2, 0, t).transpose(1, 2);
        let kf = k.narrow(1, 0, t).fft_rfft(n, 1, "forward"); // [C, F], carries 1/N
        let w = unpack(&(pack(&u).fft_rfft(n, -1, "backward") * &kf).fft_irfft(n, -1, "forward")) + &u * &d;
        let y = &g * &w;
        let e = &dy * &g;
        let (uf, ef) = (pack(&u).fft_rfft(n, -1, "backward"), pack(&e).fft_rfft(n, -1, "backward"));
        let du = unpack(&(&ef * kf.conj()).fft_irfft(n, -1, "forward")) + &d * &e;
        let dkf = (&ef * uf.conj()).sum_dim_intlist(0, false, None::<Kind>) / n as f64;
        let dk = dkf.fft_irfft(n, -1, "forward").narrow(1, 0, t).constant_pad_nd([0, l - t]);
        let dd = (&e * &u).sum_dim_intlist([0, 1].as_slice(), false, Kind::Double);
        let dgate = &dy * &w;
        let err = |a: &Tensor, r: &Tensor| (a - r).abs().max().double_value(&[]);
        assert!(err(&y, &y_ref) < 1e-10, "y {}", err(&y, &y_ref));
        for (name, a, r) in
            [("du", &du, &want[0]), ("dk", &dk, &want[1]), ("dD", &dd, &want[2]), ("dgate", &dgate, &want[3])]
        {
            assert!(err(a, r) < 1e-10, "{name} {}", err(a, r));
        }
    }

    fn meta(device: Device, kind: Kind, size: &[i64]) -> Meta {
        Meta { device, kind, size: size.to_vec(), contiguous: true }
    }

    #[test]
    fn long_conv_validation_names_the_argument_and_the_expected_shape() {
        let gpu = Device::Cuda(0);
        let bf = Kind::BFloat16;
        let u = meta(gpu, bf, &[2, 9, 5]);
        let k = meta(gpu, Kind::Float, &[5, 12]);
        let d = meta(gpu, Kind::Float, &[5]);
        assert_eq!(check_long_conv(&u, &k, Some(&d), Some(&u)), Ok(()));
        assert_eq!(check_long_conv(&u, &meta(gpu, bf, &[5, 9]), None, None), Ok(()));
        type Args = (Meta, Meta, Option<Meta>, Option<Meta>);
        let base: Args = (u.clone(), k.clone(), Some(d.clone()), Some(u.clone()));
        let with = |f: &dyn Fn(&mut Args)| {
            let mut a = base.clone();
            f(&mut a);
            a
        };
        let cases: Vec<(Args, &str, &str)> = vec![
            (with(&|a| a.0 = meta(gpu, bf, &[9, 5])), "u", "[B, T, C]"),
            (with(&|a| a.0 = meta(Device::Cpu, bf, &[2, 9, 5])), "u", "CUDA"),
            (with(&|a| a.0 = meta(gpu, Kind::Double, &[2, 9, 5])), "u", "Float or BFloat16"),
            (with(&|a| a.0.contiguous = false), "u", "contiguous"),
            (with(&|a| a.0 = meta(gpu, bf, &[2, 0, 5])), "u", ">= 1"),
            (with(&|a| a.1 = meta(gpu, Kind::Float, &[5, 8])), "k", "[C, L] = [5, L >= T = 9]"),
            (with(&|a| a.1 = meta(gpu, Kind::Float, &[4, 12])), "k", "[C, L] = [5, L >= T = 9]"),
            (with(&|a| a.1 = meta(Device::Cpu, Kind::Float, &[5, 12])), "k", "device"),
            (with(&|a| a.1 = meta(gpu, Kind::Double, &[5, 12])), "k", "Float or BFloat16"),
            (with(&|a| a.2 = Some(meta(gpu, Kind::Float, &[6]))), "D", "[C] = [5]"),
            (with(&|a| a.2 = Some(meta(Device::Cuda(1), Kind::Float, &[5]))), "D", "device"),
            (with(&|a| a.3 = Some(meta(gpu, bf, &[2, 9, 4]))), "gate", "[B, T, C] = [2, 9, 5]"),
            (with(&|a| a.3 = Some(meta(gpu, Kind::Float, &[2, 9, 5]))), "gate", "dtype BFloat16 (that of u)"),
            (with(&|a| a.3 = Some(Meta { contiguous: false, ..u.clone() })), "gate", "contiguous"),
        ];
        for (a, want_arg, want_text) in cases {
            let e = check_long_conv(&a.0, &a.1, a.2.as_ref(), a.3.as_ref()).unwrap_err();
            let CudaKernelError::BadArgument { arg, .. } = &e else { panic!("expected a bad-argument error, got {e}") };
            let text = e.to_string();
            assert_eq!(*arg, want_arg, "{text}");
            assert!(text.contains(want_text), "`{text}` should mention `{want_text}`");
            assert!(text.starts_with("long_conv: argument"), "{text}");
        }
    }
}
