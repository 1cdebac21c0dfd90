//! H3, "Hungry Hungry Hippos" (Fu, Dao et al. 2023, arXiv 2212.14052, Sec. 3): a shift SSM on the keys,
//! a multiplicative interaction with the values, a diagonal SSM, and a readout by the queries.
//!
//! ```text
//! q, k, v = u W_q + b_q, u W_k + b_k, u W_v + b_v          u: [B, T, d]; heads H, head dim p = d/H
//! k <- shift_S(k) + D_k * k                                  shift SSM = FIR filter of S taps (short conv)
//! kv[h, i, j] = k[h, i] * v[h, j]                            [B, T, H, p, p]   (p = 1: k * v)
//! s = diagSSM_h(kv) + D_h * kv                               one diagonal SSM per head, over its p^2 channels
//! y[h, j] = sum_i q[h, i] s[h, i, j]                         (p = 1: q * s)
//! out = y W_o + b_o
//! ```
//! Diagonal SSM (S4D, Gu et al. 2022, arXiv 2206.11893; zero-order hold): per head, N/2 complex modes
//! A_n = -exp(A_log_n) + i A_imag_n, step dt = exp(log_dt), dA = exp(dt A), dB = (dA - 1)/A * B, and
//! h_t = dA h_{t-1} + dB x_t,  y_t = 2 Re(C h_t).  Its convolution kernel, used by `forward`, is
//! K[l] = 2 Re(sum_n C_n dB_n dA_n^l), applied by `kernels::long_conv`; `step` runs the recurrence.
//!
//! Accounting (S = shift_size, N = d_state, conv(T) from `kernels::long_conv`):
//! - params: 4(d^2 + d) projections + S*d + d (shift filter, D_k) + H(2 + 3N) (log_dt, D, A_log, A_imag
//!   [N/2 each], B, C [N/2 complex each])
//! - FLOPs per token: 8d^2 + 2*S*d + d*p*conv(T) + (2*d*p if p > 1: the readout contraction; with p = 1
//!   it is an elementwise gate, not counted). The SSM kernel depends only on the parameters: not counted.
//! - state: (S-1)*d (shift filter) + d*p*N (N real numbers, i.e. N/2 complex modes, per SSM channel)
//!
//! Init (the H3/S4D reference code): S4D-Lin A_n = -1/2 + i pi n; B = 1; C complex standard normal;
//! log_dt ~ U(ln dt_min, ln dt_max); D, D_k ~ N(0, 1); the shift filter as PyTorch's Conv1d (U(+-1/sqrt(S)));
//! projections N(0, 0.02^2), output 0.02/sqrt(2 n_blocks), zero biases. A, B, dt and both D are not decayed.

use crate::long_conv::torch_default;
use crate::mixer::{SequenceMixer, State};
use crate::nn::{residual_std, Linear, DECAY, INIT_STD, NO_DECAY};
use crate::registry::{BuildCtx, Built, Family, MixerSpec};
use kernels::flop_count;
use kernels::long_conv::{flops_per_token as conv_flops, long_conv};
use kernels::short_conv::{short_conv, short_conv_step, Activation};
use kernels::KernelPath;
use serde::{Deserialize, Serialize};
use tch::nn::{Init, Path};
use tch::{Kind, Tensor};

/// `h3` parameters.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct H3Spec {
    /// State size N of the diagonal SSM (N/2 complex modes), even.
    #[serde(default = "default_d_state")]
    pub d_state: i64,
    /// Taps of the shift SSM (its state size).
    #[serde(default = "default_shift_size")]
    pub shift_size: i64,
    /// Heads; `d_model` when absent (head dim 1, the paper's default).
    #[serde(default)]
    pub heads: Option<i64>,
    #[serde(default = "default_dt_min")]
    pub dt_min: f64,
    #[serde(default = "default_dt_max")]
    pub dt_max: f64,
}

/// 64: the paper's state size (for both SSMs).
pub fn default_d_state() -> i64 {
    64
}
/// 64: the paper's shift SSM has the same state size as the diagonal one.
pub fn default_shift_size() -> i64 {
    64
}
/// 0.001: S4D's default.
pub fn default_dt_min() -> f64 {
    1e-3
}
/// 0.1: S4D's default.
pub fn default_dt_max() -> f64 {
    1e-1
}

impl Default for H3Spec {
    fn default() -> Self {
        H3Spec {
            d_state: default_d_state(),
            shift_size: default_shift_size(),
            heads: None,
            dt_min: default_dt_min(),
            dt_max: default_dt_max(),
        }
    }
}

impl H3Spec {
    pub fn heads(&self, d: i64) -> i64 {
        self.heads.unwrap_or(d)
    }
    pub fn head_dim(&self, d: i64) -> i64 {
        d / self.heads(d).max(1)
    }
}

impl MixerSpec for H3Spec {
    const NAME: &'static str = "h3";
    const FAMILY: Family = Family::LongConv;
    const DESCRIPTION: &'static str =
        "H3: shift SSM on the keys, key-value product, diagonal S4D SSM, readout by the queries";
    const PARAMS: crate::registry::ParamTable = &[
        ("d_state", "int", "state size N of the diagonal SSM (N/2 complex modes; even)"),
        ("shift_size", "int", "taps (state size) of the shift SSM on the keys"),
        ("heads", "int?", "heads; default: d_model (head dim 1)"),
        ("dt_min", "float", "smallest initial SSM step size"),
        ("dt_max", "float", "largest initial SSM step size"),
    ];
    const FLOPS_FORMULA: &'static str = "8*d^2 + 2*S*d + d*p*conv(T) + (2*d*p if p > 1), p = d/heads, \
         conv(T) = min(T+1, (5*M*log2 M + 6*(M/2+1))/T) with M = 2T";
    const STATE_FORMULA: &'static str = "(S-1)*d + d*p*N";

    fn check(&self, d: i64) -> Result<(), (String, String)> {
        let err = |p: &str, m: String| Err((p.to_string(), m));
        let h = self.heads(d);
        if h < 1 || d % h != 0 {
            let valid: Vec<String> = (1..=d).filter(|x| d % x == 0).map(|x| x.to_string()).collect();
            return err("heads", format!("must divide d_model {d}, got {h}; valid: {}", valid.join(", ")));
        }
        if self.d_state < 2 || self.d_state % 2 != 0 {
            return err("d_state", format!("must be a positive even number, got {}", self.d_state));
        }
        if self.shift_size < 1 {
            return err("shift_size", format!("must be at least 1, got {}", self.shift_size));
        }
        if !(self.dt_min > 0.0 && self.dt_min <= self.dt_max && self.dt_max.is_finite()) {
            return err("dt_min", format!("need 0 < dt_min <= dt_max, got {} and {}", self.dt_min, self.dt_max));
        }
        Ok(())
    }

    fn params(&self, d: i64) -> i64 {
        4 * Linear::params(d, d, true) + self.shift_size * d + d + self.heads(d) * (2 + 3 * self.d_state)
    }

    fn flops_per_token(&self, d: i64, seq_len: i64) -> f64 {
        let p = self.head_dim(d);
        let readout = if p > 1 { 2.0 * (d * p) as f64 } else { 0.0 };
        8.0 * (d * d) as f64 + 2.0 * (self.shift_size * d) as f64 + (d * p) as f64 * conv_flops(seq_len) + readout
    }

    fn state_size(&self, d: i64, _seq_len: i64) -> i64 {
        (self.shift_size - 1) * d + d * self.head_dim(d) * self.d_state
    }

    fn output_params() -> &'static [&'static str] {
        &["out_proj.weight", "out_proj.bias"]
    }
    fn build(&self, p: &Path, ctx: &BuildCtx) -> Built {
        Built::Sequence(Box::new(H3::new(p, self, ctx)))
    }
}

/// A complex tensor as (real, imaginary) parts.
type C = (Tensor, Tensor);

fn cmul(a: &C, b: &C) -> C {
    (&a.0 * &b.0 - &a.1 * &b.1, &a.0 * &b.1 + &a.1 * &b.0)
}

fn cdiv(a: &C, b: &C) -> C {
    let den = b.0.square() + b.1.square();
    ((&a.0 * &b.0 + &a.1 * &b.1) / &den, (&a.1 * &b.0 - &a.0 * &b.1) / &den)
}

/// The built H3 layer.
#[derive(Debug)]
pub struct H3 {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    /// `[d, S]` FIR taps of the shift SSM and its skip `[d]`.
    shift: Tensor,
    shift_d: Tensor,
    /// Diagonal SSM per head: `[H]`, `[H, N/2]`, `[H, N/2]`, `[H, N/2, 2]`, `[H, N/2, 2]`, `[H]`.
    log_dt: Tensor,
    a_log: Tensor,
    a_imag: Tensor,
    b: Tensor,
    c: Tensor,
    d_skip: Tensor,
    heads: i64,
    head_dim: i64,
    path: KernelPath,
}

impl H3 {
    pub fn new(p: &Path, spec: &H3Spec, ctx: &BuildCtx) -> H3 {
        let (d, h, half) = (ctx.d_model, spec.heads(ctx.d_model), spec.d_state / 2);
        let s = p / "shift";
        let ssm = (p / "ssm").set_group(NO_DECAY);
        let n = Tensor::arange(half, (Kind::Float, p.device())).unsqueeze(0).repeat([h, 1]); // [H, N/2]
        let (lo, hi) = (spec.dt_min.ln(), spec.dt_max.ln());
        let std_normal = Init::Randn { mean: 0.0, stdev: 1.0 };
        H3 {
            q_proj: Linear::new(&(p / "q_proj"), d, d, INIT_STD, true),
            k_proj: Linear::new(&(p / "k_proj"), d, d, INIT_STD, true),
            v_proj: Linear::new(&(p / "v_proj"), d, d, INIT_STD, true),
            out_proj: Linear::new(&(p / "out_proj"), d, d, residual_std(ctx.n_blocks), true),
            shift: s.set_group(DECAY).var("weight", &[d, spec.shift_size], torch_default(spec.shift_size)),
            shift_d: s.set_group(NO_DECAY).var("D", &[d], std_normal),
            log_dt: ssm.var("log_dt", &[h], Init::Uniform { lo, up: hi }),
            a_log: ssm.var("A_log", &[h, half], Init::Const(0.5f64.ln())),
            a_imag: ssm.var_copy("A_imag", &(n * std::f64::consts::PI)),
            b: ssm.var_copy("B", &Tensor::ones([h, half, 1], (Kind::Float, p.device())).constant_pad_nd([0, 1])), // 1 + 0i
            c: (p / "ssm").set_group(DECAY).var("C", &[h, half, 2], Init::Randn { mean: 0.0, stdev: 0.5f64.sqrt() }),
            d_skip: ssm.var("D", &[h], std_normal),
            heads: h,
            head_dim: d / h,
            path: ctx.kernel_path,
        }
    }

    /// ZOH discretisation per head: `(dt A, dA, dB)` as complex `[H, N/2]` pairs.
    fn discretise(&self) -> (C, C, C) {
        let dt = self.log_dt.exp().unsqueeze(1); // [H, 1]
        let a: C = (-self.a_log.exp(), self.a_imag.shallow_clone());
        let dta: C = (&a.0 * &dt, &a.1 * &dt);
        let mag = dta.0.exp();
        let da: C = (&mag * dta.1.cos(), &mag * dta.1.sin()); // exp(dt A)
        let b: C = (self.b.select(-1, 0), self.b.select(-1, 1));
        let db = cmul(&cdiv(&(&da.0 - 1.0, da.1.shallow_clone()), &a), &b); // (dA - 1) / A * B
        (dta, da, db)
    }

    /// The SSM convolution kernel `[H, len]`: K[l] = 2 Re(sum_n C_n dB_n dA_n^l), dA^l = exp(l dt A).
    fn kernel(&self, len: i64) -> Tensor {
        let (dta, _, db) = self.discretise();
        let w = cmul(&(self.c.select(-1, 0), self.c.select(-1, 1)), &db); // C dB  [H, N/2]
        let l = Tensor::arange(len, (dta.0.kind(), dta.0.device())); // [L]
        let mag = (dta.0.unsqueeze(-1) * &l).exp(); // |dA|^l  [H, N/2, L]
        let phase = dta.1.unsqueeze(-1) * &l;
        let re = mag * (w.0.unsqueeze(-1) * phase.cos() - w.1.unsqueeze(-1) * phase.sin());
        re.sum_dim_intlist(1, false, re.kind()) * 2.0 // [H, L]
    }

    /// Per-head tensor `[H, ...]` repeated over the head's p^2 channels: `[H*p*p, ...]`.
    fn per_channel(&self, x: &Tensor) -> Tensor {
        x.repeat_interleave_self_int(self.head_dim * self.head_dim, 0, None)
    }

    /// `k, v [.., d] -> kv [.., H*p*p]`.
    fn outer(&self, k: &Tensor, v: &Tensor) -> Tensor {
        let (h, p) = (self.heads, self.head_dim);
        let lead: Vec<i64> = k.size()[..k.dim() - 1].to_vec();
        let kv = k.reshape([&lead[..], &[h, p, 1]].concat().as_slice())
            * v.reshape([&lead[..], &[h, 1, p]].concat().as_slice());
        kv.reshape([&lead[..], &[h * p * p]].concat().as_slice())
    }

    /// `q [.., d]`, `s [.., H*p*p] -> y [.., d]`, y[h, j] = sum_i q[h, i] s[h, i, j].
    fn readout(&self, q: &Tensor, s: &Tensor) -> Tensor {
        let (h, p) = (self.heads, self.head_dim);
        if p == 1 {
            return q * s;
        }
        let lead: Vec<i64> = q.size()[..q.dim() - 1].to_vec();
        let q = q.reshape([&lead[..], &[h, 1, p]].concat().as_slice());
        let s = s.reshape([&lead[..], &[h, p, p]].concat().as_slice());
        flop_count::matmul(&q, &s).reshape([&lead[..], &[h * p]].concat().as_slice())
    }
}

impl SequenceMixer for H3 {
    fn forward(&self, u: &Tensor) -> Tensor {
        let t = u.size()[1]; // u: [B, T, d]
        let (q, k, v) = (self.q_proj.forward(u), self.k_proj.forward(u), self.v_proj.forward(u));
        let k = short_conv(&k, &self.shift, None, Activation::Identity, self.path) + &k * &self.shift_d;
        let kv = self.outer(&k, &v); // [B, T, H*p*p]
        let kernel = self.per_channel(&self.kernel(t)); // [H*p*p, T]
        let s = long_conv(&kv, &kernel, Some(&self.per_channel(&self.d_skip)), self.path);
        self.out_proj.forward(&self.readout(&q, &s))
    }

    /// `[B, S-1, d]` shift-filter inputs; the SSM state's real and imaginary parts `[B, H*p*p, N/2]`.
    fn init_state(&self, batch: i64) -> State {
        let opts = (self.c.kind(), self.c.device());
        let (d, s) = self.shift.size2().expect("shift filter is [d, S]");
        let ssm = [batch, self.heads * self.head_dim * self.head_dim, self.c.size()[1]];
        State {
            tensors: vec![Tensor::zeros([batch, s - 1, d], opts), Tensor::zeros(ssm, opts), Tensor::zeros(ssm, opts)],
            position: 0,
        }
    }

    fn step(&self, u: &Tensor, state: &mut State) -> Tensor {
        let (q, k, v) = (self.q_proj.forward(u), self.k_proj.forward(u), self.v_proj.forward(u)); // [B, d]
        let (ks, shift_state) = short_conv_step(&k, &state.tensors[0], &self.shift, None, Activation::Identity);
        let k = ks + &k * &self.shift_d;
        let kv = self.outer(&k, &v); // [B, H*p*p]
        let (_, da, db) = self.discretise();
        let da: C = (self.per_channel(&da.0), self.per_channel(&da.1)); // [H*p*p, N/2]
        let db: C = (self.per_channel(&db.0), self.per_channel(&db.1));
        let h: C = (state.tensors[1].shallow_clone(), state.tensors[2].shallow_clone());
        let x = kv.unsqueeze(-1); // [B, H*p*p, 1]
        let ah = cmul(&da, &h);
        let h = (ah.0 + &db.0 * &x, ah.1 + &db.1 * &x); // h_t = dA h_{t-1} + dB x_t
        let (cr, ci) = (self.per_channel(&self.c.select(-1, 0)), self.per_channel(&self.c.select(-1, 1)));
        let y =
            (&h.0 * cr - &h.1 * ci).sum_dim_intlist(-1, false, kv.kind()) * 2.0 + &kv * self.per_channel(&self.d_skip);
        state.tensors = vec![shift_state, h.0, h.1];
        state.position += 1;
        self.out_proj.forward(&self.readout(&q, &y))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::VarStore;
    use tch::Device;

    fn build(spec: &H3Spec, d: i64) -> (VarStore, H3) {
        let mut vs = VarStore::new(Device::Cpu);
        let ctx = BuildCtx { d_model: d, layer: 0, n_blocks: 1, kernel_path: KernelPath::Auto };
        let m = H3::new(&vs.root(), spec, &ctx);
        vs.set_kind(Kind::Double);
        (vs, m)
    }

    #[test]
    fn s4d_lin_init() {
        let spec = H3Spec { d_state: 8, heads: Some(4), ..Default::default() };
        let (_vs, m) = build(&spec, 8);
        let dt: Vec<f64> = m.log_dt.exp().try_into().unwrap();
        assert!(dt.iter().all(|&x| (1e-3..=1e-1).contains(&x)), "{dt:?}");
        let a_re: Vec<f64> = (-m.a_log.exp()).view([-1]).try_into().unwrap();
        assert!(a_re.iter().all(|&x| (x + 0.5).abs() < 1e-7));
        let a_im: Vec<f64> = m.a_imag.select(0, 2).try_into().unwrap();
        for (n, x) in a_im.iter().enumerate() {
            assert!((x - std::f64::consts::PI * n as f64).abs() < 1e-5);
        }
        assert_eq!(m.b.select(-1, 0).min().double_value(&[]), 1.0);
        assert_eq!(m.b.select(-1, 1).abs().max().double_value(&[]), 0.0);
    }

    /// The kernel of the SSM (the parallel form) against its recurrence, on a unit impulse.
    #[test]
    fn kernel_is_the_impulse_response_of_the_recurrence() {
        let (_vs, m) = build(&H3Spec { d_state: 6, heads: Some(2), ..Default::default() }, 4);
        let k = tch::no_grad(|| m.kernel(7)); // [H, 7]
        let (_, da, db) = tch::no_grad(|| m.discretise());
        let (cr, ci) = (m.c.select(-1, 0), m.c.select(-1, 1));
        let mut h: C = (db.0.shallow_clone(), db.1.shallow_clone()); // h_0 = dB * 1
        for l in 0..7 {
            let y = (&h.0 * &cr - &h.1 * &ci).sum_dim_intlist(-1, false, Kind::Double) * 2.0;
            assert!((y - k.select(1, l)).abs().max().double_value(&[]) < 1e-12);
            h = cmul(&da, &h);
        }
    }

    /// Autograd gradients of the parallel (kernel + convolution) form against central finite differences
    /// of the recurrent form, for every SSM and shift parameter.
    #[test]
    fn parallel_gradients_match_finite_differences_of_the_recurrence() {
        tch::manual_seed(7);
        let spec = H3Spec { d_state: 4, shift_size: 3, heads: Some(2), ..Default::default() };
        let (vs, m) = build(&spec, 4);
        let x = Tensor::randn([2, 5, 4], (Kind::Double, Device::Cpu));
        let w = Tensor::randn([2, 5, 4], (Kind::Double, Device::Cpu));
        let recurrent_loss = || {
            tch::no_grad(|| {
                let mut state = m.init_state(2);
                let ys: Vec<Tensor> = (0..5).map(|i| m.step(&x.select(1, i), &mut state)).collect();
                (Tensor::stack(&ys, 1) * &w).sum(Kind::Double).double_value(&[])
            })
        };
        (m.forward(&x) * &w).sum(Kind::Double).backward();
        let eps = 1e-6;
        for (name, p) in vs.variables() {
            if !(name.starts_with("ssm") || name.starts_with("shift")) {
                continue;
            }
            let g = p.grad();
            let flat = p.view([-1]);
            for i in 0..p.numel() as i64 {
                let orig = flat.double_value(&[i]);
                let _ = tch::no_grad(|| flat.get(i).fill_(orig + eps));
                let plus = recurrent_loss();
                let _ = tch::no_grad(|| flat.get(i).fill_(orig - eps));
                let minus = recurrent_loss();
                let _ = tch::no_grad(|| flat.get(i).fill_(orig));
                let fd = (plus - minus) / (2.0 * eps);
                let ad = g.view([-1]).double_value(&[i]);
                assert!(
                    (fd - ad).abs() < 1e-6 * (1.0 + ad.abs()),
                    "{name}[{i}]: autograd {ad} vs finite difference {fd}"
                );
            }
        }
    }
}
