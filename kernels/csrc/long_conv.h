// Hyena's long causal convolution, FFT-based and fused with its skip and gate: the host-side interface of
// long_conv.cu.
//
//   w[b, t, c] = sum_{s<=t} k[c, s] u[b, t - s, c] + D[c] u[b, t, c]      y = gate * w   (gate optional)
//
// The FFTs are cuFFT's, called through libtorch (ext_long_conv.cpp); these kernels do everything around
// them in one pass each, which is where a plain libtorch FFT convolution spends its extra passes:
//   forward:  pack (u [B, T, C] -> zero-padded, transposed x [B, C, N] float32)
//             rfft(x) -> X [B, C, F];  spectral: X[b] *= K (K = rfft(k) / N, broadcast over b)
//             irfft(X) -> z [B, C, N];  unpack: w = z[:, :, :T]^T + D u, y = gate * w (and w saved, gated only)
//   backward: pack (u, dy, gate, w -> x_u, x_e [B, C, N] with e = dy * gate; dgate = dy * w; dD partials)
//             rfft(x_u, x_e) -> U, E;  spectral: E[b] *= conj(K), dK += E[b] conj(U[b]) / N (summed over b)
//             irfft(E) -> du_conv;  unpack: du = du_conv^T + D dy gate;  dk = irfft(dK)[:, :T] (host side)
// N is the FFT length (even, >= 2T, so the circular convolution of the zero-padded signals is the linear
// one for t < T), F = N/2 + 1 bins. u, gate, dy, y, w, du, dgate: [B, T, C] in float32 or bfloat16 (one
// dtype), contiguous except u and gate, which only need contiguous channels (Hyena slices them out of one
// projection: strides (T * 3d, 3d, 1)); every other buffer is float32; the spectra are interleaved
// complex64 (float2).
//
// Plain C++ (no device code, no torch), shared by long_conv.cu, ext_long_conv.cpp and the host emulation
// test (tests/emulate_long_conv.cu).
#pragma once

#include <cuda_runtime_api.h>
#include <vector_types.h>

#include <cstdint>

// The small index helpers below run on both sides (the kernels call them).
#ifdef __CUDACC__
#define WB_LONG_CONV_HD __host__ __device__
#else
#define WB_LONG_CONV_HD
#endif

namespace wb {
namespace long_conv {

// A pack/unpack block transposes one tile of kTile time steps x kTile channels of one batch row through
// shared memory: kTile x kRows threads, each thread kTile / kRows elements per phase. Reads and writes
// are coalesced on both sides (channels are contiguous in [B, T, C], time in [B, C, N]).
constexpr int kTile = 32;
constexpr int kRows = 8;
constexpr int kThreads = kTile * kRows;
// The spectral kernels: one thread per (channel, bin), looping over the batch.
constexpr int kSpecThreads = 256;

enum class DType { F32, BF16 };

// The FFT length for T: 2 * (the smallest 2,3,5,7-smooth number >= T). cuFFT is fastest on such sizes; at
// powers of two it is 2T, what the plain libtorch path uses.
inline int64_t fft_size(int64_t T) {
    int64_t m = T < 1 ? 1 : T;
    for (;; ++m) {
        int64_t r = m;
        for (int64_t p : {2, 3, 5, 7})
            while (r % p == 0) r /= p;
        if (r == 1) return 2 * m;
    }
}

struct Params {
    int64_t B = 0, T = 0, C = 0, N = 0;
    // [B, T, C] in the tensor dtype; u and gate at element (b, t, c) = b * s?_b + t * s?_t + c
    const void* u = nullptr;
    const void* gate = nullptr;  // null: no gate (y = w)
    int64_t su_b = 0, su_t = 0, sg_b = 0, sg_t = 0;
    const void* dy = nullptr;  // backward
    void* y = nullptr;  // forward output
    void* w = nullptr;  // forward: the pre-gate value, saved for dgate (null: not saved); backward: read
    void* du = nullptr;  // backward outputs
    void* dgate = nullptr;
    const float* D = nullptr;  // [C] or null
    // [B, C, N] float32
    float* xu = nullptr;  // packed u (forward and backward)
    float* xe = nullptr;  // packed e = dy * gate (backward pack only)
    const float* z = nullptr;  // irfft output: the convolution (forward) or du's correlation (backward)
    // spectra, [B, C, F] and [C, F] complex64
    float2* X = nullptr;  // forward: rfft(xu), multiplied in place
    float2* U = nullptr;  // backward: rfft(xu)
    float2* E = nullptr;  // backward: rfft(xe), multiplied in place
    const float2* K = nullptr;  // rfft(k) / N
    float2* dK = nullptr;  // backward output: sum_b E conj(U) / N
    float* dD_part = nullptr;  // [B * time_tiles(T), C]: per-block sums of e * u (null: no D)
    float inv_n = 0.0f;  // 1 / N

    // The tensor-core path (long_conv_tc.cuh, bfloat16 only): G = ceil(B / 8) groups of 8 batch rows, Tp = T
    // rounded up to 16. It has no dD partials: dD is dk's lag 0 (the skip is the filter's tap 0 again).
    int64_t G = 0, Tp = 0;
    const float* kf = nullptr;  // the filter's first T taps, [C, T] float32
    void* ut = nullptr;  // [G, C, Tp, 8] bfloat16: u, zero-padded (forward pack; kept for the backward pass)
    void* et = nullptr;  // [G, C, Tp, 8] bfloat16: e = dy * gate, zero-padded (backward pack)
    void* zt = nullptr;  // [G, C, Tp, 8] bfloat16: the convolution (forward) or du's correlation (backward)
    float* dk_part = nullptr;  // [G, C, T] float32: dk per batch group
};

WB_LONG_CONV_HD inline int64_t bins(int64_t N) { return N / 2 + 1; }
WB_LONG_CONV_HD inline int64_t tiles(int64_t n) { return (n + kTile - 1) / kTile; }

// Launch on `stream`; return null or the CUDA error's text. The FFTs between them are the caller's.
const char* forward_pack(const Params& p, DType dt, cudaStream_t stream);
const char* forward_spectral(const Params& p, cudaStream_t stream);
const char* forward_unpack(const Params& p, DType dt, cudaStream_t stream);
const char* backward_pack(const Params& p, DType dt, cudaStream_t stream);
const char* backward_spectral(const Params& p, cudaStream_t stream);
const char* backward_unpack(const Params& p, DType dt, cudaStream_t stream);

// The tensor-core (Toeplitz) path for bfloat16 u, gate, dy (long_conv_tc.cuh): per channel, the causal
// convolution as a lower-triangular Toeplitz matrix of the filter times the [T, 8] block of 8 batch rows, on
// mma.m16n8k16 with float32 accumulators; O(T^2) work, so taken up to kTcMaxT.
//   forward:  tc_forward_pack (u -> ut), tc_conv (causal: ut -> zt), tc_forward_unpack (w, y)
//   backward: tc_backward_pack (e -> et, dgate), tc_conv (anti-causal: et -> zt), tc_backward_unpack (du),
//             tc_dk (the forward's ut, et -> dk_part; dD = dk's lag 0)
constexpr int64_t kTcMaxT = 4096;
WB_LONG_CONV_HD inline int64_t tc_groups(int64_t B) { return (B + 7) / 8; }
// Time tiles of the tensor-core pack and unpack (8 steps).
WB_LONG_CONV_HD inline int64_t tc_time_tiles(int64_t T) { return (T + 7) / 8; }
WB_LONG_CONV_HD inline int64_t tc_padded(int64_t T) { return (T + 15) / 16 * 16; }
// Dynamic shared memory of tc_conv and tc_dk at padded length Tp (bytes).
// (long_conv_tc.cuh: kTcPad zero rows of 16 bytes around the staged rows, a pair table of Tp + 256 words.)
constexpr int64_t kTcPad = 160;
WB_LONG_CONV_HD inline int64_t tc_conv_smem(int64_t Tp) { return 16 * (Tp + kTcPad) + 4 * (Tp + 256); }
WB_LONG_CONV_HD inline int64_t tc_dk_smem(int64_t Tp) {
    return 16 * (Tp + kTcPad) + 16 * (Tp + 2 * kTcPad) + 4 * Tp;
}
// Warps of a tc_dk block: 8 while two blocks fit on a multiprocessor (228 KiB of shared memory, 1 KiB of it
// reserved per block), else 16, so that one block's warps still hide each other's latency (Tp > 3000).
constexpr int64_t kSmemPerSm = 228 * 1024;
WB_LONG_CONV_HD inline int tc_dk_warps(int64_t Tp) { return 2 * (tc_dk_smem(Tp) + 1024) <= kSmemPerSm ? 8 : 16; }
const char* tc_forward_pack(const Params& p, cudaStream_t stream);
const char* tc_backward_pack(const Params& p, cudaStream_t stream);
// anti = false: zt = causal conv of ut; anti = true: zt = the transposed (anti-causal) product with et.
const char* tc_conv(const Params& p, bool anti, cudaStream_t stream);
const char* tc_forward_unpack(const Params& p, cudaStream_t stream);
const char* tc_backward_unpack(const Params& p, cudaStream_t stream);
const char* tc_dk(const Params& p, cudaStream_t stream);

}  // namespace long_conv
}  // namespace wb
