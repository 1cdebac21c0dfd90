// The tensor-core long convolution's kernels alone (long_conv_tc.cu), without torch: each launch of the
// forward and backward pass timed with CUDA events, L2 flushed before each run, beside a device-to-device
// copy of the bytes a pack or unpack moves, and the products' rate in TFLOP/s (the causal half's
// multiply-adds, T (T + 1) / 2 per batch row and channel, twice). A diagnostic, not a test: it checks no
// values (the GPU tests and the host emulation do). kernels/build.rs compiles it
// (target/release/profile-long-conv), scripts/gpu-bundle.sh carries it and `gpu-run.sh BUNDLE lcprof` runs it:
//   profile-long-conv [B=8]
#include "../long_conv_tc.cu"
#include "profile_common.h"

#include <cstdio>
#include <cstdlib>

using namespace wb::long_conv;

namespace prof {

struct Timer : FlushTimer {
    template <class F>
    float median(F&& f) {
        return FlushTimer::median(f, 30, 5);
    }
};

void check(const char* err) {
    if (err != nullptr) {
        std::fprintf(stderr, "launch: %s\n", err);
        std::exit(1);
    }
}

void run(Timer& tm, int64_t B, int64_t T, int64_t C) {
    using bf16 = __nv_bfloat16;
    const int64_t n = B * T * C, G = tc_groups(B), Tp = tc_padded(T), rows = G * C * Tp * 8;
    bf16 *u = alloc<bf16>(n), *gate = alloc<bf16>(n), *dy = alloc<bf16>(n), *y = alloc<bf16>(n), *w = alloc<bf16>(n);
    bf16 *du = alloc<bf16>(n), *dgate = alloc<bf16>(n);
    float *kf = alloc<float>(C * T), *D = alloc<float>(C), *dk = alloc<float>(G * C * T);
    bf16 *ut = alloc<bf16>(rows), *et = alloc<bf16>(rows), *zt = alloc<bf16>(rows);
    for (bf16* x : {u, gate, dy}) fill<<<1024, 256>>>(x, n, uint32_t(reinterpret_cast<uintptr_t>(x)), -1.0f, 1.0f);
    fill<<<1024, 256>>>(kf, C * T, 7u, -0.02f, 0.02f);
    fill<<<1024, 256>>>(D, C, 8u, -1.0f, 1.0f);
    CK(cudaDeviceSynchronize());
    Params p;
    p.B = B;
    p.T = T;
    p.C = C;
    p.G = G;
    p.Tp = Tp;
    p.u = u;
    p.su_b = T * C;
    p.su_t = C;
    p.gate = gate;
    p.sg_b = T * C;
    p.sg_t = C;
    p.dy = dy;
    p.y = y;
    p.w = w;
    p.du = du;
    p.dgate = dgate;
    p.D = D;
    p.kf = kf;
    p.ut = ut;
    p.et = et;
    p.zt = zt;
    p.dk_part = dk;
    const double mb = double(n) * 2 / 1e6, gflop = double(T) * double(T + 1) * B * C / 1e9;  // 2 x T(T+1)/2
    // A device-to-device copy of `bytes`: what the memory system gives a kernel moving as much.
    char *src = alloc<char>(8 * n), *dst = alloc<char>(8 * n);
    auto copy_ms = [&](double mbytes) {
        const size_t bytes = size_t(mbytes * 1e6 / 2) / 16 * 16;  // read once, written once
        return tm.median([&] { CK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice)); });
    };
    struct Row {
        const char* name;
        float ms;
        double mbytes, gflop;
    };
    // bytes: every [B, T, C] tensor and packed buffer is mb (bfloat16)
    const Row out[] = {
        {"forward pack (u -> ut)", tm.median([&] { check(tc_forward_pack(p, 0)); }), 2 * mb, 0},
        {"forward product (causal)", tm.median([&] { check(tc_conv(p, false, 0)); }), 2 * mb, gflop},
        {"forward unpack (y, w)", tm.median([&] { check(tc_forward_unpack(p, 0)); }), 5 * mb, 0},
        {"backward pack (et, dgate)", tm.median([&] { check(tc_backward_pack(p, 0)); }), 5 * mb, 0},
        {"backward product (anti-causal)", tm.median([&] { check(tc_conv(p, true, 0)); }), 2 * mb, gflop},
        {"backward unpack (du)", tm.median([&] { check(tc_backward_unpack(p, 0)); }), 4 * mb, 0},
        {"dk", tm.median([&] { check(tc_dk(p, 0)); }), 2 * mb, gflop},
    };
    float total = 0;
    for (const Row& r : out) {
        const float copy = r.mbytes > 0 ? copy_ms(r.mbytes) : 0.0f;
        total += r.ms;
        std::printf("| %lld | %lld | %lld | %s | %.4f | %.0f | %.4f | %.2fx | %.0f |\n", (long long)B, (long long)T,
                    (long long)C, r.name, r.ms, r.mbytes, copy, copy > 0 ? r.ms / copy : 0.0, r.gflop / r.ms);
    }
    std::printf("| %lld | %lld | %lld | all seven | %.4f | | | | |\n", (long long)B, (long long)T, (long long)C, total);
    for (void* x : {(void*)u, (void*)gate, (void*)dy, (void*)y, (void*)w, (void*)du, (void*)dgate, (void*)kf, (void*)D,
                    (void*)zt, (void*)dk, (void*)ut, (void*)et, (void*)src, (void*)dst})
        CK(cudaFree(x));
}

}  // namespace prof

int main(int argc, char** argv) {
    const int64_t B = argc > 1 ? std::atoll(argv[1]) : 8;
    prof::Timer tm;
    std::printf("## tensor-core long convolution, launches alone (bfloat16, gated, with D), median of 30, ms\n\n");
    std::printf("| B | T | C | launch | ms | MB moved | D2D copy of those MB | / copy | TFLOP/s |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|\n");
    for (int64_t T : {2048, 4096})
        for (int64_t C : {1024, 2048}) prof::run(tm, B, T, C);
    return 0;
}
