// Hyena's long convolution on tensor cores: the pack and unpack kernels' per-thread code, the tiled
// transposes between [B, T, C] and the products' [G, C, Tp, 8] layout, fused with the skip, the gate, dgate
// and dD (long_conv_tc.cuh has the products and the layouts). Written once for the GPU and the CPU
// (tests/emulate_long_conv_tc.cu runs it thread by thread, phase 1 of a block's threads, then phase 2).
#pragma once

#include "long_conv_tc.cuh"

namespace wb {
namespace long_conv {
namespace tc {

// ---------------------------------------------------------------------------------------------------------
// Pack and unpack: blocks of kTile x kRows threads (tx, ty) over (time tile bx of kXT steps, channel tile by of
// kXC channels, group bz). Thread (tx, ty) reads and writes [B, T, C] at batch row 8 bz + ty and the 4
// channels 4 tx .. 4 tx + 3 of the tile (one 8-byte access where aligned): a warp covers 256 contiguous bytes
// of a row, which DRAM serves far better than the 64 bytes of a 32-channel tile (the first version's packs and
// unpacks took 1.8-2.7x the time of a copy of their bytes).
constexpr int kXT = 8;  // steps per pack/unpack block
constexpr int kXC = 4 * kTile;  // channels per pack/unpack block
constexpr int kPackRow = 66;  // bfloat16 per channel row of a pack tile: kXT x 8 and a pad (33 words: odd)
constexpr int kZB = 132, kZT = 8 * kZB + 4;  // unpack tile strides (floats): per row and per step

static_assert(kXT == 8, "tc_time_tiles (long_conv.h) counts 8-step tiles");
WB_TC_HD int64_t x_tiles_t(int64_t len) { return tc_time_tiles(len); }
WB_TC_HD int64_t x_tiles_c(int64_t C) { return (C + kXC - 1) / kXC; }

// 4 consecutive channels of a [B, T, C]-strided tensor: one 8-byte access when every offset keeps the
// alignment, else 4 scalar accesses; channels >= C read as 0 and are not written.
template <typename T>
WB_TC_HD bool quad_aligned(const void* base, int64_t sb, int64_t st, int64_t C) {
    return sizeof(T) == 2 && reinterpret_cast<uintptr_t>(base) % 8 == 0 && sb % 4 == 0 && st % 4 == 0 && C % 4 == 0;
}
// The loads keep the raw bfloat16 bits (two words), so that a thread can hold a whole tile's worth of them and
// issue them all before its first store: the compiler may not move a load past a store to memory it cannot
// prove distinct, and one memory round trip per step had kept the unpacks at 1.4-1.6x a copy.
template <typename T>
WB_TC_HD uint2 load_quad(const T* x, int64_t off, int64_t c, int64_t C, bool vec) {
    static_assert(sizeof(T) == 2, "the tensor-core path is bfloat16");
    if (vec && c + 3 < C) return *reinterpret_cast<const uint2*>(x + off);
    const uint16_t* h = reinterpret_cast<const uint16_t*>(x + off);
    uint32_t v[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) v[i] = c + i < C ? h[i] : 0u;
    return make_uint2(v[0] | v[1] << 16, v[2] | v[3] << 16);
}
WB_TC_HD void unquad(uint2 w, float (&v)[4]) {
    v[0] = bits_to_float(w.x & 0xffffu), v[1] = bits_to_float(w.x >> 16);
    v[2] = bits_to_float(w.y & 0xffffu), v[3] = bits_to_float(w.y >> 16);
}
template <typename T>
WB_TC_HD void load4(const T* x, int64_t off, int64_t c, int64_t C, bool vec, float (&v)[4]) {
    unquad(load_quad(x, off, c, C, vec), v);
}
// q[tl] = channels c .. c + 3 of batch row b of x (strides sb, st) at step bx kXT + tl of a tile, for every
// step before T; zeros past T, or everywhere when !on (the tensor is absent or not needed).
template <typename T>
WB_TC_HD void tile_quads(const Params& p, const T* x, int64_t sb, int64_t st, int64_t b, int64_t c, int64_t bx, bool on,
                         uint2 (&q)[kXT]) {
    const bool vec = on && quad_aligned<T>(x, sb, st, p.C);
#pragma unroll
    for (int tl = 0; tl < kXT; ++tl) {
        const int64_t t = bx * kXT + tl;
        q[tl] = on && t < p.T && b < p.B ? load_quad(x, b * sb + t * st + c, c, p.C, vec) : make_uint2(0u, 0u);
    }
}
template <typename T>
WB_TC_HD void store4(T* x, int64_t off, int64_t c, int64_t C, bool vec, const float (&v)[4]) {
    if (vec && c + 3 < C) {
        *reinterpret_cast<uint2*>(x + off) =
            make_uint2(bf16_bits(v[0]) | bf16_bits(v[1]) << 16, bf16_bits(v[2]) | bf16_bits(v[3]) << 16);
        return;
    }
#pragma unroll
    for (int i = 0; i < 4; ++i)
        if (c + i < C) x[off + i] = from_float<T>(v[i]);
}

// A pack tile: per channel kXT steps x 8 rows of bfloat16 bits, kPackRow apart.
using PackTile = uint16_t[kXC * kPackRow];

// Phase 2 of both packs: the tile's rows to the [G, C, Tp, 8] buffer, 16 bytes per step and channel (4 words
// from shared memory: the rows are only 4-byte aligned, which keeps phase 1's stores conflict-free).
WB_TC_HD void pack_store(const Params& p, const PackTile& tile, void* dst, int tx, int ty, int64_t bx, int64_t by,
                         int64_t bz) {
    uint4* out = static_cast<uint4*>(dst);
    const int tid = ty * kTile + tx;
    const uint32_t* w = reinterpret_cast<const uint32_t*>(tile);
#pragma unroll
    for (int k = 0; k < kXC * kXT / kThreads; ++k) {
        const int id = tid + k * kThreads, cc = id / kXT, tl = id % kXT;
        const int64_t c = by * kXC + cc, t = bx * kXT + tl;
        const uint32_t* r = w + (cc * kPackRow + tl * 8) / 2;
        if (c < p.C && t < p.Tp) out[(bz * p.C + c) * p.Tp + t] = make_uint4(r[0], r[1], r[2], r[3]);
    }
}

// Forward pack phase 1: row ty of the group, channels 4 tx.., steps of the tile.
template <typename T>
WB_TC_HD void forward_pack_load(const Params& p, PackTile& tile, int tx, int ty, int64_t bx, int64_t by, int64_t bz) {
    const T* u = static_cast<const T*>(p.u);
    const int64_t c = by * kXC + 4 * tx, b = bz * 8 + ty;
    const bool vec = quad_aligned<T>(u, p.su_b, p.su_t, p.C);
#pragma unroll
    for (int tl = 0; tl < kXT; ++tl) {
        const int64_t t = bx * kXT + tl;
        float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        if (t < p.T && b < p.B) load4(u, b * p.su_b + t * p.su_t + c, c, p.C, vec, v);
#pragma unroll
        for (int i = 0; i < 4; ++i) tile[(4 * tx + i) * kPackRow + tl * 8 + ty] = uint16_t(bf16_bits(v[i]));
    }
}

// Backward pack phase 1: e = dy * gate into the tile (u was packed by the forward pass, which keeps ut); dgate
// = dy * w stored.
template <typename T>
WB_TC_HD void backward_pack_load(const Params& p, PackTile& tile, int tx, int ty, int64_t bx, int64_t by, int64_t bz) {
    const T* dy = static_cast<const T*>(p.dy);
    const T* gate = static_cast<const T*>(p.gate);
    const int64_t c = by * kXC + 4 * tx, b = bz * 8 + ty;
    const bool vdg = p.dgate != nullptr && quad_aligned<T>(p.dgate, p.T * p.C, p.C, p.C);
    // every load of the tile first (see load_quad)
    uint2 dq[kXT], gq[kXT], wq[kXT];
    tile_quads(p, dy, p.T * p.C, p.C, b, c, bx, true, dq);
    tile_quads(p, gate, p.sg_b, p.sg_t, b, c, bx, gate != nullptr, gq);
    tile_quads(p, static_cast<const T*>(p.w), p.T * p.C, p.C, b, c, bx, gate != nullptr, wq);
#pragma unroll
    for (int tl = 0; tl < kXT; ++tl) {
        const int64_t t = bx * kXT + tl;
        float xe[4];
        unquad(dq[tl], xe);
        if (gate != nullptr && t < p.T && b < p.B) {
            float gt[4], w[4], dg[4];
            unquad(gq[tl], gt);
            unquad(wq[tl], w);
#pragma unroll
            for (int i = 0; i < 4; ++i) dg[i] = xe[i] * w[i], xe[i] *= gt[i];
            store4(static_cast<T*>(p.dgate), (b * p.T + t) * p.C + c, c, p.C, vdg, dg);
        }
#pragma unroll
        for (int i = 0; i < 4; ++i) tile[(4 * tx + i) * kPackRow + tl * 8 + ty] = uint16_t(bf16_bits(xe[i]));
    }
}

// Unpack phase 1: zt's rows of kXC channels x kXT steps (16 bytes of bfloat16 each, 8 lanes per channel's 128
// bytes) into tile[step][row][channel] as float32 (strides kZT, kZB).
using ZTile = float[kXT * kZT];

WB_TC_HD void unpack_load(const Params& p, ZTile& tile, int tx, int ty, int64_t bx, int64_t by, int64_t bz) {
    const int tid = ty * kTile + tx;
    const uint4* z = static_cast<const uint4*>(p.zt);
#pragma unroll
    for (int k = 0; k < kXC * kXT / kThreads; ++k) {
        const int f = tid + k * kThreads, cc = f / kXT, tl = f % kXT;
        const int64_t c = by * kXC + cc, t = bx * kXT + tl;
        uint4 v = make_uint4(0u, 0u, 0u, 0u);
        if (c < p.C && t < p.T) v = z[(bz * p.C + c) * p.Tp + t];
        const uint32_t w[4] = {v.x, v.y, v.z, v.w};
        float* o = tile + tl * kZT + cc;
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            o[2 * r * kZB] = bits_to_float(w[r] & 0xffffu);
            o[(2 * r + 1) * kZB] = bits_to_float(w[r] >> 16);
        }
    }
}

// Both unpacks' phase 2 helpers: D for channels c .. c + 3 (0 past C or without D), and the thread's 4
// channels of row ty at step tl of the tile.
WB_TC_HD void skip4(const Params& p, int64_t c, float (&d)[4]) {
#pragma unroll
    for (int i = 0; i < 4; ++i) d[i] = 0.0f;
    if (p.D != nullptr)
#pragma unroll
        for (int i = 0; i < 4; ++i) d[i] = c + i < p.C ? p.D[c + i] : 0.0f;
}
WB_TC_HD float4 z4_at(const ZTile& tile, int tl, int ty, int tx) {
    return *reinterpret_cast<const float4*>(tile + tl * kZT + ty * kZB + 4 * tx);
}

// Forward unpack phase 2: thread (channels 4 tx.., row ty of the group): w = z + D u, y = gate * w.
template <typename T>
WB_TC_HD void forward_unpack_store(const Params& p, const ZTile& tile, int tx, int ty, int64_t bx, int64_t by,
                                   int64_t bz) {
    const int64_t c = by * kXC + 4 * tx, b = bz * 8 + ty;
    if (c >= p.C || b >= p.B) return;
    const T* u = static_cast<const T*>(p.u);
    const T* gate = static_cast<const T*>(p.gate);
    const bool vy = quad_aligned<T>(p.y, p.T * p.C, p.C, p.C);
    const bool vw = p.w != nullptr && quad_aligned<T>(p.w, p.T * p.C, p.C, p.C);
    float d[4];
    skip4(p, c, d);
    // every load of the tile first (see load_quad)
    uint2 uq[kXT], gq[kXT];
    tile_quads(p, u, p.su_b, p.su_t, b, c, bx, p.D != nullptr, uq);
    tile_quads(p, gate, p.sg_b, p.sg_t, b, c, bx, gate != nullptr, gq);
#pragma unroll
    for (int tl = 0; tl < kXT; ++tl) {
        const int64_t t = bx * kXT + tl;
        if (t >= p.T) break;
        const int64_t idx = (b * p.T + t) * p.C + c;
        const float4 z = z4_at(tile, tl, ty, tx);
        float w[4] = {z.x, z.y, z.z, z.w}, y[4];
        if (p.D != nullptr) {
            float uu[4];
            unquad(uq[tl], uu);
#pragma unroll
            for (int i = 0; i < 4; ++i) w[i] = fmaf(d[i], uu[i], w[i]);
        }
        if (p.w != nullptr) store4(static_cast<T*>(p.w), idx, c, p.C, vw, w);
        if (gate != nullptr) {
            float g[4];
            unquad(gq[tl], g);
#pragma unroll
            for (int i = 0; i < 4; ++i) y[i] = g[i] * w[i];
        } else {
#pragma unroll
            for (int i = 0; i < 4; ++i) y[i] = w[i];
        }
        store4(static_cast<T*>(p.y), idx, c, p.C, vy, y);
    }
}

// Backward unpack phase 2: du = z + D e, e = dy * gate recomputed.
template <typename T>
WB_TC_HD void backward_unpack_store(const Params& p, const ZTile& tile, int tx, int ty, int64_t bx, int64_t by,
                                    int64_t bz) {
    const int64_t c = by * kXC + 4 * tx, b = bz * 8 + ty;
    if (c >= p.C || b >= p.B) return;
    const T* dy = static_cast<const T*>(p.dy);
    const T* gate = static_cast<const T*>(p.gate);
    const bool vx = quad_aligned<T>(p.du, p.T * p.C, p.C, p.C);
    float d[4];
    skip4(p, c, d);
    // every load of the tile first (see load_quad); dy and gate only for the skip
    uint2 dq[kXT], gq[kXT];
    tile_quads(p, dy, p.T * p.C, p.C, b, c, bx, p.D != nullptr, dq);
    tile_quads(p, gate, p.sg_b, p.sg_t, b, c, bx, p.D != nullptr && gate != nullptr, gq);
#pragma unroll
    for (int tl = 0; tl < kXT; ++tl) {
        const int64_t t = bx * kXT + tl;
        if (t >= p.T) break;
        const float4 z = z4_at(tile, tl, ty, tx);
        float v[4] = {z.x, z.y, z.z, z.w};
        if (p.D != nullptr) {
            float g[4], gt[4] = {1.0f, 1.0f, 1.0f, 1.0f};
            unquad(dq[tl], g);
            if (gate != nullptr) unquad(gq[tl], gt);
#pragma unroll
            for (int i = 0; i < 4; ++i) v[i] = fmaf(d[i], g[i] * gt[i], v[i]);
        }
        store4(static_cast<T*>(p.du), (b * p.T + t) * p.C + c, c, p.C, vx, v);
    }
}

}  // namespace tc
}  // namespace long_conv
}  // namespace wb
