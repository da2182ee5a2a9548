// The fused CPU backend's shared helpers (optdsl.cpp_runtime copies this header beside every
// generated source it builds, and keys the build cache by its text too): torch's semantics for
// the ops the builtins table's `cpp` column names, and the bf16/fp16 stream conversions.
#pragma once
#include <cmath>
#include <cstdint>

namespace {

enum : int64_t { _ABSENT = -1, _FP32 = 0, _FP16 = 1, _BF16 = 2 };

// torch.sign: 0 for NaN and for -0.0
inline float _sign(float x) { return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : 0.0f); }
// torch.maximum / torch.minimum propagate NaN from either side
inline float _maximum(float x, float y) { return x != x ? x : (y != y ? y : (x > y ? x : y)); }
inline float _minimum(float x, float y) { return x != x ? x : (y != y ? y : (x < y ? x : y)); }
// torch.lerp's formula: exact at w = 0 and w = 1
inline float _lerp(float a, float b, float w) {
    return std::fabs(w) < 0.5f ? a + w * (b - a) : b - (b - a) * (1.0f - w);
}
// C's powf has torch.pow's rules for a negative base, zero and infinite exponents
inline float _pow(float x, float y) { return y == 2.0f ? x * x : std::pow(x, y); }
// 1 / (1 + e^-x): 0 as x goes to -inf (e^-x overflows to inf), 1 as it goes to +inf
inline float _sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
// log(1 + e^x) as max(x, 0) + log1p(e^-|x|): to rounding everywhere, never overflowing
inline float _softplus(float x) { return (x > 0.0f ? x : 0.0f) + std::log1p(std::exp(-std::fabs(x))); }
// floor-mod, as torch.remainder: the divisor's sign; a zero divisor or an infinite dividend gives NaN
inline float _mod(float a, float b) {
    float r = std::fmod(a, b);
    return (r != 0.0f && ((r < 0.0f) != (b < 0.0f))) ? r + b : r;
}

// A chunk's partial of a reduction from its elements' contributions, in a fixed order that
// depends on n only: 16 lanes (element i to lane i % 16: independent sums GCC vectorises without
// reassociating), then a fixed tree over the lanes. 0 for no element.
inline float _fold_sum(const float* x, int64_t n) {
    float lane[16] = {0.0f};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; ++j) lane[j] += x[i + j];
    for (int j = 0; i + j < n; ++j) lane[j] += x[i + j];
    for (int w = 8; w >= 1; w /= 2)
        for (int j = 0; j < w; ++j) lane[j] += lane[j + w];
    return lane[0];
}

// The same for a max fold (of |x|, the only max folds: 0 is the identity); NaN propagates, as
// torch.amax and the combine's fold.
inline float _fold_max(const float* x, int64_t n) {
    float lane[16] = {0.0f};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; ++j) lane[j] = _maximum(lane[j], x[i + j]);
    for (int j = 0; i + j < n; ++j) lane[j] = _maximum(lane[j], x[i + j]);
    for (int w = 8; w >= 1; w /= 2)
        for (int j = 0; j < w; ++j) lane[j] = _maximum(lane[j], lane[j + w]);
    return lane[0];
}

inline float _bf16_to_float(uint16_t h) {
    uint32_t bits = uint32_t(h) << 16;
    float x;
    std::memcpy(&x, &bits, sizeof x);
    return x;
}

inline uint16_t _float_to_bf16(float x) {   // round to nearest even, NaN kept quiet
    uint32_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
    return x != x ? uint16_t(0x7FC0) : uint16_t(rounded);
}

// A chunk's fp32 view of one stream: the memory itself (fp32), or `buf` filled by upcasting
// (bf16, fp16). An absent stream (an optional state this group does not keep) reads and
// writes `buf`, which nothing reads back.
inline float* _stream_in(void* base, int64_t start, int64_t n, int64_t dtype, float* buf) {
    if (dtype == _FP32) return static_cast<float*>(base) + start;
    if (dtype == _BF16) {
        const uint16_t* src = static_cast<const uint16_t*>(base) + start;
        for (int64_t i = 0; i < n; ++i) buf[i] = _bf16_to_float(src[i]);
    } else if (dtype == _FP16) {
        const _Float16* src = static_cast<const _Float16*>(base) + start;
        for (int64_t i = 0; i < n; ++i) buf[i] = float(src[i]);
    }
    return buf;
}

inline void _stream_out(void* base, int64_t start, int64_t n, int64_t dtype, const float* buf) {
    if (dtype == _BF16) {
        uint16_t* dst = static_cast<uint16_t*>(base) + start;
        for (int64_t i = 0; i < n; ++i) dst[i] = _float_to_bf16(buf[i]);
    } else if (dtype == _FP16) {
        _Float16* dst = static_cast<_Float16*>(base) + start;
        for (int64_t i = 0; i < n; ++i) dst[i] = _Float16(buf[i]);
    }
}

}  // namespace
