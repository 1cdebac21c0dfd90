"""Times flash-linear-attention's (fla-core 0.6.0) Triton kernels with the protocol of our Rust GPU
benchmarks, so their numbers sit beside ours: bfloat16, B = 8, H = 16, T in {2048, 4096}, head dim in
{64, 128}; forward and forward+backward; CUDA events around each call, the L2 flushed before every run by
writing a 256 MiB buffer, warm-up runs first (they include fla's Triton autotuning, which takes minutes the
first time a shape is seen), then the median of RUNS runs. Prints a Markdown table; an op that fails (fla
0.6.0 refuses the gated chunk backward on Hopper with Triton >= 3.4, < 3.7.1) gets its error in the table.

On the GPU machine (no network), with the wheel carried in .whl (see scripts/gpu-run.sh `fla`):
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/fla_core-0.6.0-py3-none-any.whl
    PYTHONPATH=/tmp/site python3 kernels/benches/fla_bench.py [op ...]
ops: simple_gla (scalar decay per head and token: RetNet, Mamba2's SSD), gla (per-key gates),
linear_attn (no decay), retention (fixed per-head decay), causal_conv1d (the short causal convolution, its
own table: see causal_conv1d below). Default: the four chunk ops. FLA_SHAPES=TxD,... (e.g.
2048x128,4096x64) narrows the shapes (each new shape costs its own Triton autotuning).
"""

import os
import sys

import torch

from gpu_timing import RUNS, flush_buffer, timed

B, H = 8, 16


def inputs(op, t, d):
    dev, bf = "cuda", torch.bfloat16
    q = torch.randn(B, t, H, d, device=dev, dtype=bf)
    k = torch.randn(B, t, H, d, device=dev, dtype=bf) / d**0.5
    v = torch.randn(B, t, H, d, device=dev, dtype=bf)
    extra = {}
    if op == "simple_gla":
        # log-decays in (-0.1, 0): a scalar per head and token
        extra["g"] = -0.1 * torch.rand(B, t, H, device=dev, dtype=torch.float32)
    elif op == "gla":
        extra["g"] = torch.nn.functional.logsigmoid(torch.randn(B, t, H, d, device=dev, dtype=torch.float32) + 4)
    elif op == "linear_attn":
        extra["normalize"] = False  # the plain causal form, as our linear_attention computes it
    return q, k, v, extra


def call(op):
    if op == "simple_gla":
        from fla.ops.simple_gla import chunk_simple_gla as f
    elif op == "gla":
        from fla.ops.gla import chunk_gla as f
    elif op == "linear_attn":
        from fla.ops.linear_attn import chunk_linear_attn as f
    elif op == "retention":
        from fla.ops.retention import chunk_retention as f
    else:
        raise SystemExit(f"unknown op {op}")
    return f


def shapes():
    if os.environ.get("FLA_SHAPES"):
        return [tuple(int(x) for x in shape.split("x")) for shape in os.environ["FLA_SHAPES"].split(",")]
    return [(t, d) for t in (2048, 4096) for d in (64, 128)]


def causal_conv1d(flush):
    """fla's Triton short causal convolution (fla.modules.causal_conv1d, k = 4, SiLU, bias) at the shapes and
    with both protocols of kernels/benches/short_conv_gpu.rs: x [B, T, C], C = 16 x head dim."""
    from fla.modules.causal_conv1d import causal_conv1d as conv

    kw = 4
    print(f"## fla causal_conv1d (Triton), k = {kw}, SiLU, bias, B = {B}; median of {RUNS} runs, ms\n")
    print("| dtype | T | C | pass | queued | as called |")
    print("|---|---|---|---|---|---|")
    for dtype in (torch.bfloat16, torch.float32):
        for t in (2048, 4096):
            for d in (64, 128):
                c = 16 * d
                x = torch.randn(B, t, c, device="cuda").to(dtype)
                w = (torch.randn(c, kw, device="cuda") * 0.5).to(dtype)
                b = torch.randn(c, device="cuda").to(dtype)
                dy = torch.randn(B, t, c, device="cuda").to(dtype)
                xx, ww, bb = (a.detach().requires_grad_(True) for a in (x, w, b))

                def fwd():
                    with torch.no_grad():
                        conv(x, w, b, activation="silu", backend="triton")

                def fwd_bwd():
                    y = conv(xx, ww, bb, activation="silu", backend="triton")[0]
                    torch.autograd.grad(y, (xx, ww, bb), dy)

                for name, fn in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
                    try:
                        cells = [f"{timed(fn, flush, queued):.4f}" for queued in (True, False)]
                    except Exception as e:  # noqa: BLE001 - the table records why an op did not run
                        cells = [f"error: {type(e).__name__}: {str(e).splitlines()[0][:120]}", ""]
                    print(f"| {str(dtype).removeprefix('torch.')} | {t} | {c} | {name} | {cells[0]} | {cells[1]} |",
                          flush=True)
    print()


def main():
    ops = sys.argv[1:] or ["simple_gla", "gla", "linear_attn", "retention"]
    flush = flush_buffer()
    print(f"fla {__import__('fla').__version__}, torch {torch.__version__}, triton {__import__('triton').__version__}, "
          f"{torch.cuda.get_device_name()}\n")
    if "causal_conv1d" in ops:
        causal_conv1d(flush)
        ops = [op for op in ops if op != "causal_conv1d"]
        if not ops:
            return
    print(f"## fla chunk kernels, bfloat16, B = {B}, H = {H}; median of {RUNS} runs, ms\n")
    print("| op | T | head dim | fwd | fwd+bwd |")
    print("|---|---|---|---|---|")
    for op in ops:
        f = call(op)
        for t, d in shapes():
            q, k, v, extra = inputs(op, t, d)
            cells = []
            for backward in (False, True):
                try:
                    if backward:
                        qq, kk, vv = (x.detach().requires_grad_(True) for x in (q, k, v))
                        do = torch.randn_like(v)

                        def run():
                            o = f(qq, kk, vv, **extra)[0]
                            torch.autograd.grad(o, (qq, kk, vv), do)
                    else:

                        def run():
                            with torch.no_grad():
                                f(q, k, v, **extra)

                    cells.append(f"{timed(run, flush):.3f}")
                except Exception as e:  # noqa: BLE001 - the table records why an op did not run
                    cells.append(f"error: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
            print(f"| {op} | {t} | {d} | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    main()
