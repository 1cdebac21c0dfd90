"""The timing protocol of our Rust GPU benchmarks (kernels/benches/common), for the Python benchmarks of public
kernels (fla_bench.py, mamba_ssm/bench.py): CUDA events around each call, the L2 flushed before every run by
writing a 256 MiB buffer, WARMUP runs first, then the median of RUNS runs, in ms."""

import torch

RUNS = 50
WARMUP = 5

# GPU clock cycles of the spin before a queued timing (about 1 ms at 1.98 GHz), as kernels/benches/common.
QUEUE_CYCLES = 2_000_000


def flush_buffer():
    """The buffer whose every byte `timed` writes before a run (larger than the H200's 50 MB L2)."""
    return torch.empty(256 << 20, dtype=torch.uint8, device="cuda")


def timed(fn, flush, queued=False):
    """Median ms of fn. queued: a GPU spin between the flush and the start event, so the host has queued the
    whole call when the GPU reaches it (GPU time without host dispatch); else timed as called."""
    for _ in range(WARMUP):
        fn()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ms = []
    for _ in range(RUNS):
        flush.fill_(1)
        if queued:
            torch.cuda._sleep(QUEUE_CYCLES)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        ms.append(start.elapsed_time(stop))
    ms.sort()
    return ms[len(ms) // 2]
