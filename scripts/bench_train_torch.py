#!/usr/bin/env python3
"""The PyTorch side of `workbench bench-train`: the same five ~125M architectures, trained the way their
users train them in PyTorch, timed with the same protocol, on the same GPU.

  transformer  Hugging Face transformers' Llama (RMSNorm, RoPE, SwiGLU 2048, SDPA attention), 12 x 768
  gla          flash-linear-attention's GLAForCausalLM (Triton chunk_gla, fused norm/SwiGLU/cross-entropy)
  mamba        flash-linear-attention's MambaForCausalLM, 24 x 768 (its own torch path when the machine
               has no mamba_ssm kernels, which is how it runs without them)
  hyena        a plain PyTorch Hyena (order 2, implicit filter, FFT convolution) + SwiGLU, written here
               since no maintained public package fits
  striped      the same Hyena blocks alternating with SDPA attention blocks

Step: torch.autocast(cuda, bfloat16), float32 master weights, torch.optim.AdamW(fused=True), cross-entropy
on random tokens (vocabulary 32000, untied head), batch 8 x 2048. After --warmup steps, --windows windows of
--steps steps each between two synchronisations; the median window is reported; peak memory is
torch.cuda.max_memory_allocated over the timed windows. --compile wraps the model in torch.compile.

  python3 scripts/bench_train_torch.py --arch transformer,gla --compile both --json out.json
"""
import argparse
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

D, VOCAB = 768, 32000


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(d))

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class SwiGLU(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.gate, self.up, self.down = nn.Linear(d, hidden, bias=False), nn.Linear(d, hidden, bias=False), nn.Linear(hidden, d, bias=False)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


def rope(x, base=10000.0):
    t, hd = x.shape[-2], x.shape[-1]
    inv = 1.0 / base ** (torch.arange(0, hd, 2, device=x.device, dtype=torch.float32) / hd)
    ang = torch.outer(torch.arange(t, device=x.device, dtype=torch.float32), inv)
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), -1).flatten(-2)


class Attention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.h = heads
        self.qkv, self.o = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(rope(q), rope(k), v, is_causal=True)
        return self.o(y.transpose(1, 2).reshape(b, t, d))


class Sin(nn.Module):
    def __init__(self, width, freq=1.0):
        super().__init__()
        self.freq = nn.Parameter(freq * torch.ones(1, width))

    def forward(self, x):
        return torch.sin(self.freq * x)


class Hyena(nn.Module):
    """Order-2 Hyena: projections, a short depthwise convolution, two implicit long filters (an FFN of
    positional features times an exponential window), FFT convolutions and elementwise gates."""

    def __init__(self, d, l_max, order=2, filter_width=64, emb_dim=3, short=3):
        super().__init__()
        self.d, self.order = d, order
        self.in_proj, self.out_proj = nn.Linear(d, (order + 1) * d), nn.Linear(d, d)
        self.short = nn.Conv1d((order + 1) * d, (order + 1) * d, short, padding=short - 1, groups=(order + 1) * d)
        t = torch.linspace(0, 1, l_max)[:, None]
        w = 2 * math.pi * torch.linspace(1e-4, (emb_dim - 1) // 2 - 1e-4 + 1, (emb_dim - 1) // 2)[None]
        self.register_buffer("z", torch.cat([t, torch.cos(t * w), torch.sin(t * w)], -1), persistent=False)
        self.ffn = nn.Sequential(nn.Linear(emb_dim, filter_width), Sin(filter_width), nn.Linear(filter_width, filter_width), Sin(filter_width), nn.Linear(filter_width, order * d, bias=False))
        decay = torch.linspace(math.log(1e-2) / 0.3, math.log(1e-2) / 1.5, order * d)
        self.register_buffer("window", torch.exp(decay[None] * t), persistent=False)
        self.bias = nn.Parameter(torch.randn(order, d))

    def forward(self, u):
        b, t, d = u.shape
        z = self.short(self.in_proj(u).transpose(1, 2))[..., :t]  # [B, (N+1)d, T]
        *gates, v = z.split(d, dim=1)
        h = (self.ffn(self.z[:t]) * self.window[:t]).transpose(0, 1).reshape(self.order, d, t).float()
        n = 2 * t
        hf = torch.fft.rfft(h, n=n)
        for o in range(self.order):
            v = v * gates[o]
            y = torch.fft.irfft(torch.fft.rfft(v.float(), n=n) * hf[o], n=n)[..., :t]
            v = (y + v.float() * self.bias[o][:, None]).to(v.dtype)
        return self.out_proj(v.transpose(1, 2))


class Block(nn.Module):
    def __init__(self, mixer, d, hidden):
        super().__init__()
        self.n1, self.mixer, self.n2, self.mlp = RMSNorm(d), mixer, RMSNorm(d), SwiGLU(d, hidden)

    def forward(self, x):
        x = x + self.mixer(self.n1(x))
        return x + self.mlp(self.n2(x))


class LM(nn.Module):
    def __init__(self, mixers, d=D, vocab=VOCAB, hidden=2048):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(m, d, hidden) for m in mixers)
        self.norm, self.head = RMSNorm(d), nn.Linear(d, vocab, bias=False)

    def forward(self, tokens, labels):
        x = self.embed(tokens)
        for blk in self.blocks:
            x = blk(x)
        logits = self.head(self.norm(x))
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), labels.view(-1))


class HFLoss(nn.Module):
    """A transformers-style causal LM as (tokens, labels) -> loss, the labels already aligned."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, tokens, labels):
        logits = self.model(input_ids=tokens).logits
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), labels.view(-1))


def build(arch, seq_len):
    if arch == "transformer":
        from transformers import LlamaConfig, LlamaForCausalLM
        cfg = LlamaConfig(hidden_size=D, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=12,
                          vocab_size=VOCAB, max_position_embeddings=seq_len, tie_word_embeddings=False, rms_norm_eps=1e-5)
        cfg._attn_implementation = "sdpa"
        return HFLoss(LlamaForCausalLM(cfg)), "transformers Llama (SDPA)"
    if arch == "gla":
        from fla.models import GLAConfig, GLAForCausalLM
        cfg = GLAConfig(hidden_size=D, num_hidden_layers=12, num_heads=4, expand_k=0.5, expand_v=1.0, vocab_size=VOCAB,
                        tie_word_embeddings=False, fuse_cross_entropy=False)
        return HFLoss(GLAForCausalLM(cfg)), "fla GLAForCausalLM (chunk_gla Triton)"
    if arch == "mamba":
        from fla.models import MambaConfig, MambaForCausalLM
        cfg = MambaConfig(hidden_size=D, num_hidden_layers=24, state_size=16, expand=2, conv_kernel=4, vocab_size=VOCAB, tie_word_embeddings=False)
        try:
            import mamba_ssm  # noqa: F401
            how = "fla MambaForCausalLM (mamba_ssm kernels)"
        except ImportError:
            how = "fla MambaForCausalLM (torch path: no mamba_ssm here)"
        return HFLoss(MambaForCausalLM(cfg)), how
    if arch == "hyena":
        return LM([Hyena(D, seq_len) for _ in range(12)]), "plain PyTorch Hyena (this script)"
    if arch == "striped":
        return LM([Hyena(D, seq_len) if i % 2 == 0 else Attention(D, 12) for i in range(12)]), "plain PyTorch Hyena + SDPA attention (this script)"
    raise SystemExit(f"unknown arch {arch}")


def measure(arch, mode, a):
    torch.manual_seed(0)
    model, how = build(arch, a.seq_len)
    model = model.cuda()
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=True)
    fwd = torch.compile(model) if mode == "compile" else model
    gen = torch.Generator(device="cuda").manual_seed(0)

    def step():
        x = torch.randint(0, VOCAB, (a.batch_size, a.seq_len), device="cuda", generator=gen)
        y = torch.randint(0, VOCAB, (a.batch_size, a.seq_len), device="cuda", generator=gen)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = fwd(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    t0 = time.time()
    for _ in range(a.warmup):
        step()
    torch.cuda.synchronize()
    warm_s = time.time() - t0
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(a.windows):
        t = time.time()
        for _ in range(a.steps):
            loss = step()
        torch.cuda.synchronize()
        times.append((time.time() - t) / a.steps)
    s = sorted(times)[len(times) // 2]
    tokens = a.batch_size * a.seq_len
    return dict(arch=arch, mode=mode, implementation=how, params=params, steps=a.steps, windows=a.windows, step_ms=1e3 * s, tokens_per_s=tokens / s,
                peak_memory_gib=torch.cuda.max_memory_allocated() / 2**30, final_loss=float(loss), warmup_s=warm_s)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="transformer,gla,mamba,hyena,striped")
    p.add_argument("--compile", choices=["no", "yes", "both"], default="both")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--windows", type=int, default=3)
    p.add_argument("--skip-compile", default="mamba", help="archs not compiled (a Python loop over time compiles for ages)")
    p.add_argument("--few-steps", default="mamba", help="archs timed with 1 warm-up step and one window of 2 steps (a Python loop over time takes seconds per step)")
    p.add_argument("--json")
    a = p.parse_args()
    modes = {"no": ["eager"], "yes": ["compile"], "both": ["eager", "compile"]}[a.compile]
    rows = []
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}", file=sys.stderr)
    for arch in a.arch.split(","):
        for mode in modes:
            if mode == "compile" and arch in a.skip_compile.split(","):
                continue
            try:
                few = arch in a.few_steps.split(",")
                r = measure(arch, mode, argparse.Namespace(**{**vars(a), **(dict(warmup=1, steps=2, windows=1) if few else {})}))
            except Exception as e:  # one failure (an OOM, a compile error) must not end the table
                r = dict(arch=arch, mode=mode, error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300])
            torch.cuda.empty_cache()
            print(json.dumps(r), file=sys.stderr, flush=True)
            rows.append(r)
    print("| arch | mode | implementation | params | step ms | tokens/s | peak GiB | note |")
    print("|---|---|---|---:|---:|---:|---:|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['arch']} | {r['mode']} | | | | | | {r['error']} |")
        else:
            print(f"| {r['arch']} | {r['mode']} | {r['implementation']} | {r['params']/1e6:.1f}M | {r['step_ms']:.1f} | {r['tokens_per_s']:.0f} | {r['peak_memory_gib']:.2f} | |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
