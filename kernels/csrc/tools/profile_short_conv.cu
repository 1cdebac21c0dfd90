// The short convolution's kernels alone, without torch: times the forward launch and the backward pair (main
// kernel and finishing kernel) with CUDA events, L2 flushed before each run, over the automatic plan and a
// sweep of time steps per thread, beside a device-to-device copy of the forward's bytes (what the memory
// system gives a kernel of this size). A diagnostic, not a test: it checks no values (the GPU tests and the
// host emulation do). kernels/build.rs compiles it (target/release/profile-short-conv), scripts/gpu-bundle.sh
// carries it and `gpu-run.sh BUNDLE convprof` runs it:
//   profile-short-conv [B=8] [K=4]
#include "../short_conv.cu"
#include "profile_common.h"

#include <cstdio>
#include <cstdlib>

using namespace wb::short_conv;

namespace prof {

// bfloat16 bit patterns (or halves of float32 ones) in a tame range: sign, exponent 126..128, random mantissa.
__global__ void fill_bits(uint16_t* x, int64_t n, uint32_t seed) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        uint32_t h = uint32_t(i) * 2654435761u ^ seed;
        h ^= h >> 15;
        h *= 2246822519u;
        h ^= h >> 13;
        x[i] = uint16_t((h & 0x807f) | ((126u + (h >> 16) % 3u) << 7));
    }
}

struct Timer : FlushTimer {
    template <class F>
    float median(F&& f) {
        return FlushTimer::median(f, 30, 5);
    }
};

void run(Timer& tm, DType dt, int64_t B, int64_t T, int64_t C, int K) {
    const int64_t n = B * T * C, es = dtype_bytes(dt);
    void *x, *y, *gy, *gx, *w, *bias, *dw, *db;
    CK(cudaMalloc(&x, n * es));
    CK(cudaMalloc(&y, n * es));
    CK(cudaMalloc(&gy, n * es));
    CK(cudaMalloc(&gx, n * es));
    CK(cudaMalloc(&w, C * K * es));
    CK(cudaMalloc(&bias, C * es));
    CK(cudaMalloc(&dw, C * K * es));
    CK(cudaMalloc(&db, C * es));
    for (auto [p, m] : {std::pair{x, n}, {gy, n}, {w, C * K}, {bias, C}})
        fill_bits<<<1024, 256>>>(static_cast<uint16_t*>(p), m * es / 2, uint32_t(m));
    CK(cudaDeviceSynchronize());

    Params p;
    p.x = x;
    p.y = y;
    p.gy = gy;
    p.gx = gx;
    p.w = w;
    p.bias = bias;
    p.dw = dw;
    p.dbias = db;
    p.B = B;
    p.T = T;
    p.C = C;
    const double bytes = double(n) * es;
    const float copy = tm.median([&] { CK(cudaMemcpyAsync(y, x, n * es, cudaMemcpyDeviceToDevice)); });
    std::printf("| %s | %lld | %lld | copy x -> y | | | %.4f | %.2f |\n", dt == DType::F32 ? "f32" : "bf16",
                (long long)T, (long long)C, copy, 2 * bytes / copy / 1e9);
    for (int64_t chunk : {0, 8, 16, 32, 64, 128, 256}) {
        set_chunk_override(chunk);
        const Plan fp = forward_plan(dt, B, T, C, true), bp = backward_plan(dt, B, T, C, true);
        p.chunk = fp.chunk;
        const float f = tm.median([&] {
            const char* e = forward(p, fp, dt, K, true, 0);
            if (e) std::fprintf(stderr, "forward: %s\n", e), std::exit(1);
        });
        float* partial = nullptr;
        CK(cudaMalloc(&partial, bp.partial_rows * (K + 1) * C * sizeof(float)));
        p.partial = partial;
        p.partial_rows = bp.partial_rows;
        p.chunk = bp.chunk;
        const float b = tm.median([&] {
            const char* e = backward(p, bp, dt, K, true, 0);
            if (e) std::fprintf(stderr, "backward: %s\n", e), std::exit(1);
        });
        CK(cudaFree(partial));
        char name[32];
        std::snprintf(name, sizeof name, chunk == 0 ? "auto (%lld)" : "%lld", (long long)fp.chunk);
        // forward moves 2 tensors, backward 3 (x, dy read, dx written)
        std::printf("| %s | %lld | %lld | chunk %s, bwd %lld | %.4f | %.4f | %.4f | %.2f / %.2f |\n",
                    dt == DType::F32 ? "f32" : "bf16", (long long)T, (long long)C, name, (long long)bp.chunk, f, b,
                    f + b, 2 * bytes / f / 1e9, 3 * bytes / b / 1e9);
    }
    set_chunk_override(0);
    for (void* q : {x, y, gy, gx, w, bias, dw, db}) CK(cudaFree(q));
}

}  // namespace prof

int main(int argc, char** argv) {
    const int64_t B = argc > 1 ? std::atoll(argv[1]) : 8;
    const int K = argc > 2 ? std::atoi(argv[2]) : 4;
    prof::Timer tm;
    std::printf("## short_conv kernels alone: B = %lld, K = %d, SiLU, bias; median of 30 runs, L2 flushed, ms\n\n",
                (long long)B, K);
    std::printf("| dtype | T | C | launch | fwd | bwd | fwd+bwd | TB/s fwd / bwd |\n|---|---|---|---|---|---|---|---|\n");
    for (DType dt : {DType::BF16, DType::F32})
        for (int64_t T : {2048, 4096})
            for (int64_t C : {1024, 2048}) prof::run(tm, dt, B, T, C, K);
    return 0;
}
