// Mamba's selective scan: staging a chunk of a block's inputs in shared memory (stage_chunk), shared by the
// two-pass passes (selective_scan_twopass.cuh) and the one-pass forward (selective_scan.cuh). Host and device,
// like the rest, so the emulation runs it.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#include "dtype.cuh"
#include "selective_scan.h"

namespace wb {
namespace selective_scan {

// Staging chunk `seg` (kChunk steps, fewer at the end) of batch row b in shared memory, for a chain of
// dependent steps that would otherwise wait a global-memory round trip per step (the two-pass passes, the
// one-pass forward): two per-channel arrays c0, c1 ([B, T, D]) for the C channels from d0, as ch[a][s][c]
// ([2][kChunk][C]), and two rows r0, r1 ([B, T, N]; r1 may be null) as row[a][s][n] ([2][kChunk][NP]). Thread
// tid of THREADS copies its share, its loads before its stores: whole 16-byte words where the C channels are
// whole and aligned, else one element at a time; channels past D and states past N are 0.
template <typename T, int C, int NP, int THREADS, int KB = sizeof(T) == 2 ? 4 : 8>
__host__ __device__ __forceinline__ void stage_chunk(const Params& p, const T* c0, const T* c1, const T* r0,
                                                     const T* r1, int64_t b, int64_t seg, int64_t d0, int tid, T* ch,
                                                     T* row) {
    const int64_t D = p.D, N = p.N, T_ = p.T;
    const int64_t t0 = seg * kChunk, steps = (t0 + kChunk < T_ ? t0 + kChunk : T_) - t0;
    auto al = [](const void* x) { return reinterpret_cast<uintptr_t>(x) % 16 == 0; };
    constexpr int kPer = 16 / int(sizeof(T));  // elements per word
    const bool words = C % kPer == 0 && d0 + C <= D && D % kPer == 0 && al(c0) && al(c1);
    if (words) {
        // KB words in flight per round: by default 4 for bfloat16, 8 for float32 (the two-pass passes: 8 words
        // a thread in bfloat16, 16 in float32, 2 rounds; 8 for bfloat16 took 86 registers, 20 warps an SM, not
        // 36, and measured 5% slower)
        constexpr int kRowWords = C / kPer > 0 ? C / kPer : 1, kBatch = KB;
        const int64_t total = 2 * steps * kRowWords;  // words of both arrays
        for (int64_t w0 = tid; w0 < total; w0 += int64_t(kBatch) * THREADS) {
            uint4 v[kBatch];
#pragma unroll
            for (int j = 0; j < kBatch; ++j) {
                const int64_t w = w0 + int64_t(j) * THREADS;
                const int64_t a = w / (steps * kRowWords), r = w % (steps * kRowWords);
                const int64_t s = r / kRowWords, k = r % kRowWords;
                const T* g = (a == 0 ? c0 : c1) + (b * T_ + t0 + s) * D + d0 + k * kPer;
                if (w < total) {
#if defined(__CUDA_ARCH__)
                    v[j] = __ldg(reinterpret_cast<const uint4*>(g));
#else
                    memcpy(&v[j], g, sizeof(uint4));
#endif
                }
            }
#pragma unroll
            for (int j = 0; j < kBatch; ++j) {
                const int64_t w = w0 + int64_t(j) * THREADS;
                const int64_t a = w / (steps * kRowWords), r = w % (steps * kRowWords);
                if (w < total)
                    reinterpret_cast<uint4*>(ch + (a * kChunk + r / kRowWords) * C)[r % kRowWords] = v[j];
            }
        }
    } else {
        for (int64_t e = tid; e < steps * C; e += THREADS) {
            const int64_t s = e / C, c = e % C, d = d0 + c, at = (b * T_ + t0 + s) * D + d;
            const bool in = d < D;
            ch[s * C + c] = in ? c0[at] : from_float<T>(0.0f);
            ch[(kChunk + s) * C + c] = in ? c1[at] : from_float<T>(0.0f);
        }
    }
    // rows: steps x N elements, contiguous in [B, T, N]
    for (int64_t e = tid; e < steps * NP; e += THREADS) {
        const int64_t s = e / NP, n = e % NP, at = (b * T_ + t0 + s) * N + n;
        const bool in = n < N;
        const T z = from_float<T>(0.0f);
        const T v0 = in ? r0[at] : z, v1 = (in && r1 != nullptr) ? r1[at] : z;
        row[s * NP + n] = v0;
        row[(kChunk + s) * NP + n] = v1;
    }
}

}  // namespace selective_scan
}  // namespace wb
