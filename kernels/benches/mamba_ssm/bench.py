"""Times mamba-ssm's own selective-scan CUDA kernels (the public kernel for Mamba's S6) with the protocol of
kernels/benches/selective_scan_gpu.rs, so its numbers sit beside ours: bfloat16 inputs with float32 A and D,
with the skip term D, no z gate, no delta bias or softplus (the math our kernel computes); B = 8, D = 16 heads x
head dim (64, 128), T in {2048, 4096}, state N in {16, 64}; forward, and forward plus torch.autograd.grad for
every input; CUDA events around each call, the L2 flushed before every run by writing a 256 MiB buffer, 5
warm-up runs, the median of 50. mamba-ssm runs in its own layout ([B, D, T] for x and dt, [B, 1, N, T] for B and
C), as a model built on it would; ours runs in [B, T, D].

First it checks that the module is called correctly: its outputs and every gradient against a float64
per-token loop (written here) at T = 2100 (past mamba-ssm's 2048-token chunks), N = 16 and 64.

The module: mamba-ssm's selective_scan.cpp (pybind) and our stubs.cpp compiled here with
torch.utils.cpp_extension (the GPU machine has nvcc and ninja), linked with the two kernel objects that
scripts/mamba-ssm-objects.sh compiled on the build machine. Run by scripts/gpu-run.sh `mamba`:
    python3 BUNDLE/mamba_ssm/bench.py
"""

import os
import time

import torch
from torch.utils.cpp_extension import load

from gpu_timing import RUNS, flush_buffer, timed

B = 8
HERE = os.path.dirname(os.path.abspath(__file__))


def build():
    start = time.time()
    build_dir = os.environ.get("MAMBA_SSM_BUILD", "/tmp/mamba-ssm-build")
    os.makedirs(build_dir, exist_ok=True)
    module = load(
        name="mamba_ssm_selective_scan",
        sources=[os.path.join(HERE, "selective_scan.cpp"), os.path.join(HERE, "stubs.cpp")],
        extra_cflags=["-O3", "-std=c++17"],
        extra_ldflags=[os.path.join(HERE, f) for f in ("selective_scan_fwd_bf16.o", "selective_scan_bwd_bf16_real.o")],
        extra_include_paths=[HERE],
        build_directory=build_dir,
        with_cuda=True,
    )
    print(f"(mamba-ssm module built in {time.time() - start:.0f} s)\n")
    return module


class Scan(torch.autograd.Function):
    """mamba-ssm's kernels as an autograd function: forward keeps its chunk checkpoints, backward recomputes
    from them (the calls mamba_ssm.ops.selective_scan_interface makes, without z and delta bias)."""

    @staticmethod
    def forward(ctx, module, u, delta, a, b, c, d):
        out, ckpt = module.fwd(u, delta, a, b, c, d, None, None, False)[:2]
        ctx.module = module
        ctx.save_for_backward(u, delta, a, b, c, d, ckpt)
        return out

    @staticmethod
    def backward(ctx, dout):
        u, delta, a, b, c, d, ckpt = ctx.saved_tensors
        du, ddelta, da, db, dc, dd = ctx.module.bwd(
            u, delta, a, b, c, d, None, None, dout.contiguous(), ckpt, None, None, False, False
        )[:6]
        return None, du, ddelta, da, db, dc, dd


def inputs(b, t, d, n, seed=0):
    """x, dt [b, d, t], A [d, n], B, C [b, 1, n, t], D [d] in float32 (the distributions of our benchmark)."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    rn = lambda *s: torch.randn(*s, device="cuda", generator=g)  # noqa: E731
    x, dt = rn(b, d, t), torch.nn.functional.softplus(rn(b, d, t) - 3.0)
    a = -torch.arange(1, n + 1, device="cuda", dtype=torch.float32).repeat(d, 1)
    return x, dt, a, rn(b, 1, n, t), rn(b, 1, n, t), torch.ones(d, device="cuda")


def reference(x, dt, a, bm, cm, dskip):
    """The definition, one step per token, in the inputs' dtype: h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t,
    y_t = h_t C_t + D x_t."""
    h = x.new_zeros(x.shape[0], x.shape[1], a.shape[1])
    ys = []
    for t in range(x.shape[2]):
        h = torch.exp(dt[:, :, t, None] * a) * h + (dt[:, :, t] * x[:, :, t])[..., None] * bm[:, 0, None, :, t]
        ys.append((h * cm[:, 0, None, :, t]).sum(-1) + dskip * x[:, :, t])
    return torch.stack(ys, -1)


def check(module):
    """Max |mamba-ssm - float64 reference| / max |reference| for y and each gradient."""
    for n in (16, 64):
        v = inputs(2, 2100, 24, n, seed=n)
        ref = [t.double().requires_grad_(True) for t in v]
        bf = [t.to(torch.bfloat16) if i in (0, 1, 3, 4) else t.clone() for i, t in enumerate(v)]
        ours = [t.detach().requires_grad_(True) for t in bf]
        gy = torch.randn(2, 24, 2100, device="cuda", dtype=torch.float64)
        y_ref = reference(*ref)
        g_ref = torch.autograd.grad(y_ref, ref, gy)
        y = Scan.apply(module, *ours)
        g = torch.autograd.grad(y, ours, gy.to(y.dtype))
        errs = []
        for name, got, want in zip(("y", "dx", "ddt", "dA", "dB", "dC", "dD"), (y, *g), (y_ref, *g_ref)):
            errs.append(f"{name} {((got.double() - want).abs().max() / want.abs().max()).item():.1e}")
        print(f"check against float64, T 2100, N {n} (relative max error): " + ", ".join(errs))
    print()


def main():
    print(f"mamba-ssm 2.3.2.post1 selective scan, torch {torch.__version__}, {torch.cuda.get_device_name()}\n")
    module = build()
    check(module)
    flush = flush_buffer()
    print(f"## mamba-ssm selective_scan (bfloat16, with D), B = {B}; median of {RUNS} runs, ms\n")
    print("| T | D | N | fwd | fwd+bwd |")
    print("|---|---|---|---|---|")
    for t in (2048, 4096):
        for hd in (64, 128):
            d = 16 * hd
            for n in (16, 64):
                v = inputs(B, t, d, n)
                v = [x.to(torch.bfloat16) if i in (0, 1, 3, 4) else x for i, x in enumerate(v)]
                gy = torch.randn(B, d, t, device="cuda", dtype=torch.bfloat16)
                leaves = [x.detach().requires_grad_(True) for x in v]

                def fwd():
                    with torch.no_grad():
                        Scan.apply(module, *v)

                def fwd_bwd():
                    torch.autograd.grad(Scan.apply(module, *leaves), leaves, gy)

                print(f"| {t} | {d} | {n} | {timed(fwd, flush):.3f} | {timed(fwd_bwd, flush):.3f} |", flush=True)


if __name__ == "__main__":
    main()
