// Mamba's selective scan kernels alone, without torch: times the forward launch (with checkpoints, as under
// autograd) and the backward launch with CUDA events, L2 flushed before each run, at the benchmark's shapes
// and at the `mamba` training preset's (D = 1536, float32 under autocast). A diagnostic, not a test: it checks
// no values (the GPU tests and the host emulation do). kernels/build.rs compiles it (target/release/
// profile-selective-scan), scripts/gpu-bundle.sh carries it and `gpu-run.sh BUNDLE scanprof` runs it:
//   profile-selective-scan [B=8]
#include "../selective_scan.cu"
#include "profile_common.h"

#include <cstdio>
#include <cstdlib>

using namespace wb::selective_scan;

namespace prof {

// A[d, n] = -(n + 1), as the benchmark's (S4D-real initialisation)
__global__ void fill_a(float* a, int64_t D, int64_t N) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < D * N; i += int64_t(gridDim.x) * blockDim.x)
        a[i] = -float(i % N + 1);
}

struct Timer : FlushTimer {
    template <class F>
    float median(F&& f) {
        return FlushTimer::median(f, 10, 2);
    }
};

template <typename T>
void run(Timer& tm, int64_t B, int64_t T_, int64_t D, int64_t N) {
    const DType dt = sizeof(T) == 4 ? DType::F32 : DType::BF16;
    const int64_t btd = B * T_ * D, btn = B * T_ * N;
    Params p = plan(B, T_, D, N);
    T *x = alloc<T>(btd), *dtp = alloc<T>(btd), *bm = alloc<T>(btn), *cm = alloc<T>(btn), *y = alloc<T>(btd);
    T *gy = alloc<T>(btd), *dx = alloc<T>(btd), *ddt = alloc<T>(btd);
    float *A = alloc<float>(D * N), *Dk = alloc<float>(D), *hT = alloc<float>(B * D * N);
    // the segmented backward (N <= 16, as the glue runs it) writes a partial row of dA and dD per chunk
    const bool seg = segmentable(N, p.nchunks);
    const int64_t rows = seg ? B * p.nchunks : B;
    float *ck = alloc<float>(B * p.nchunks * D * N), *dA = alloc<float>(rows * D * N), *dD = alloc<float>(rows * D);
    float *dB = alloc<float>(p.tiles * btn), *dC = alloc<float>(p.tiles * btn), *dh0 = alloc<float>(B * D * N);
    // the two-pass forward's workspaces (used when N <= 16, as the glue gives them)
    float *seg_h = alloc<float>(B * p.nchunks * D * N), *seg_dt = alloc<float>(B * p.nchunks * D);
    float* seg_g = alloc<float>(B * p.nchunks * D * N);  // the segmented backward's
    fill<<<1024, 256>>>(x, btd, 1, -2.f, 2.f);
    fill<<<1024, 256>>>(dtp, btd, 2, 0.01f, 0.2f);
    fill<<<1024, 256>>>(bm, btn, 3, -2.f, 2.f);
    fill<<<1024, 256>>>(cm, btn, 4, -2.f, 2.f);
    fill<<<1024, 256>>>(gy, btd, 5, -1.f, 1.f);
    fill<<<64, 256>>>(Dk, D, 6, 0.5f, 1.5f);
    fill_a<<<64, 256>>>(A, D, N);
    CK(cudaDeviceSynchronize());
    p.x = x;
    p.dt = dtp;
    p.A = A;
    p.Bm = bm;
    p.Cm = cm;
    p.Dskip = Dk;
    p.y = y;
    p.hT = hT;
    p.ckpt = ck;
    p.gy = gy;
    p.dx = dx;
    p.ddt = ddt;
    p.dA_part = dA;
    p.dD_part = dD;
    p.dB_part = dB;
    p.dC_part = dC;
    p.dh0 = dh0;
    p.seg_h = seg_h;
    p.seg_dt = seg_dt;
    p.seg_g = seg ? seg_g : nullptr;
    const float f = tm.median([&] {
        if (const char* e = forward(p, dt, 0)) std::fprintf(stderr, "forward: %s\n", e), std::exit(1);
    });
    const float b = tm.median([&] {
        if (const char* e = backward(p, dt, 0)) std::fprintf(stderr, "backward: %s\n", e), std::exit(1);
    });
    std::printf("| %s | %lld | %lld | %lld | %.3f | %.3f |\n", sizeof(T) == 4 ? "f32" : "bf16", (long long)T_,
                (long long)D, (long long)N, f, b);
    for (void* q : {(void*)x, (void*)dtp, (void*)bm, (void*)cm, (void*)y, (void*)gy, (void*)dx, (void*)ddt, (void*)A,
                    (void*)Dk, (void*)hT, (void*)ck, (void*)dA, (void*)dD, (void*)dB, (void*)dC, (void*)dh0,
                    (void*)seg_h, (void*)seg_dt, (void*)seg_g})
        CK(cudaFree(q));
}

}  // namespace prof

int main(int argc, char** argv) {
    const int64_t B = argc > 1 ? std::atoll(argv[1]) : 8;
    prof::Timer tm;
    std::printf("## selective_scan kernels alone: B = %lld, with D, forward with checkpoints; median of 10, ms\n\n",
                (long long)B);
    std::printf("| dtype | T | D | N | fwd | bwd |\n|---|---|---|---|---|---|\n");
    prof::run<__nv_bfloat16>(tm, B, 2048, 1024, 16);
    prof::run<float>(tm, B, 2048, 1024, 16);
    prof::run<__nv_bfloat16>(tm, B, 2048, 1024, 64);
    prof::run<float>(tm, B, 2048, 1024, 64);
    prof::run<__nv_bfloat16>(tm, B, 2048, 1536, 16);
    prof::run<float>(tm, B, 2048, 1536, 16);  // the mamba preset's layer, float32 under autocast
    return 0;
}
