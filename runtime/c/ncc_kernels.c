/*
 * ncc C runtime kernels: one function per integer op of compiler/golden.py, same bits.
 * See ncc.h for the conventions and the ranges of every parameter.
 */
#include "ncc.h"

#define NCC_INT32_MIN (-2147483647L - 1L)
#define NCC_INT32_MAX 2147483647L
/* GCC and Clang at -Os would call the requantization once per output element; inlined,
   a dense layer's output costs a third less on a Cortex-M4 */
#if defined(__GNUC__)
#define NCC_ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define NCC_ALWAYS_INLINE static inline
#endif

/* --- fixed-point arithmetic --------------------------------------------------------- */

int32_t ncc_wrap32(int64_t v) {
    /* int64 -> uint64 conversion is modulo 2^64 (defined); keep the low 32 bits and read
       them as two's complement without an implementation-defined conversion. */
    uint32_t u = (uint32_t)((uint64_t)v & 0xFFFFFFFFu);
    if (u <= 0x7FFFFFFFu) {
        return (int32_t)u;
    }
    return (int32_t)(u - 0x80000000u) + (int32_t)NCC_INT32_MIN;
}

/* floor(x / 2^e) for e in [0, 62], without right-shifting a negative value */
static int64_t floor_shift(int64_t x, int32_t e) {
    if (x >= 0) {
        return x >> e;
    }
    return -((-(x + 1)) >> e) - 1;
}

static int32_t srdhm(int32_t a, int32_t b) {
    int64_t ab;
    int64_t nudge;
    if (a == (int32_t)NCC_INT32_MIN && b == (int32_t)NCC_INT32_MIN) {
        return (int32_t)NCC_INT32_MAX;
    }
    ab = (int64_t)a * (int64_t)b;                      /* |ab| <= 2^62 */
    nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
    /* C99 division truncates toward zero, as gemmlowp's */
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

static int32_t rounding_divide_by_pot(int32_t x, int32_t exponent) {
    int64_t mask = ((int64_t)1 << exponent) - 1;
    int64_t q = floor_shift(x, exponent);
    int64_t remainder = (int64_t)x - q * ((int64_t)1 << exponent); /* x & mask, in [0, mask] */
    int64_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (int32_t)(q + (remainder > threshold ? 1 : 0));
}

/* Two exact forms of MBQM with a Q31 multiplier, the same bits (both tested against the
   numeric core): one rounding in int64 arithmetic, fastest where int64 shifts are single
   instructions (64-bit hosts), and 32-bit steps after the one 32 x 32 -> 64 multiply,
   fastest on 32-bit cores (a Cortex-M4 spends ~20 instructions on a variable int64
   shift). -DNCC_MBQM_32BIT / -DNCC_MBQM_64BIT choose one (the tests build both). */
#if !defined(NCC_MBQM_32BIT) && !defined(NCC_MBQM_64BIT)
#if UINTPTR_MAX > 0xFFFFFFFFu
#define NCC_MBQM_64BIT 1
#else
#define NCC_MBQM_32BIT 1
#endif
#endif

#if defined(NCC_MBQM_64BIT)
/* floor(y / 2^k) for any int64 y and k in [1, 62], branch-free and without a right shift
   of a negative value: y + 2^63 in uint64 (modulo 2^64, defined) is in [0, 2^64), its
   shift is floor(y / 2^k) + 2^(63 - k) < 2^63, which converts back to int64 exactly. */
static int64_t floor_shift_u(int64_t y, int32_t k) {
    uint64_t biased = (uint64_t)y + ((uint64_t)1 << 63);
    return (int64_t)(biased >> k) - ((int64_t)1 << (63 - k));
}

/* MBQM in one rounding step. ab = scaled * m (|ab| < 2^62 unless both are INT32_MIN, the
   one case where SRDHM saturates: done the long way). SRDHM = floor((ab + 2^30) / 2^31):
   its nudge 1 - 2^30 toward zero for negative ab, truncated, is exactly that floor.
   RoundingDivideByPOT(h, e), e >= 1, is floor((h + 2^(e-1) - [h < 0]) / 2^e), and
   h < 0 iff ab < -2^30. Nested floors by integers compose: MBQM = floor((ab + 2^30 +
   2^(30+e) - 2^31 [ab < -2^30]) / 2^(31+e)); with e = 0, floor((ab + 2^30) / 2^31).
   |ab| + 2^61 + 2^30 < 2^63: no overflow. */
static inline int32_t mbqm_q31(int64_t x, int32_t multiplier, int32_t shift) {
    int32_t left = shift > 0 ? shift : 0;
    int32_t right = shift > 0 ? 0 : -shift;
    /* x << left modulo 2^64 (unsigned: defined), then wrapped to int32 */
    int32_t scaled = ncc_wrap32((int64_t)(((uint64_t)x << left) & 0xFFFFFFFFu));
    int64_t ab = (int64_t)scaled * (int64_t)multiplier;
    int64_t y = ab + ((int64_t)1 << 30);
    if (right > 0) {
        y += ((int64_t)1 << (30 + right)) - (ab < -((int64_t)1 << 30) ? ((int64_t)1 << 31) : 0);
    }
    return (int32_t)floor_shift_u(y, 31 + right);
}

#else
/* MBQM with a Q31 multiplier in [0, 2^31), in 32-bit steps after one 32 x 32 -> 64
   multiply (cheap on 32-bit cores; the M4 has no 64-bit shifter):
   - SRDHM: |ab| < 2^62 (multiplier < 2^31), and gemmlowp's nudge (2^30, or 1 - 2^30 for
     negative ab) with a truncating division is h = floor((ab + 2^30) / 2^31), an int32:
     bits 31..62 of ab + 2^30 in two's complement, read with unsigned operations;
   - RoundingDivideByPOT(h, e), e in [0, 31]: q = floor(h / 2^e) is (h + 2^31) / 2^e -
     2^(31 - e) in uint32 (no right shift of a negative value), the remainder h mod 2^e is
     h's low e bits, and q rounds up when the remainder passes half (ties away from 0). */
NCC_ALWAYS_INLINE int32_t mbqm_q31(int64_t x, int32_t multiplier, int32_t shift) {
    int32_t left = shift > 0 ? shift : 0;
    int32_t right = shift > 0 ? 0 : -shift;
    /* x << left modulo 2^64 (unsigned: defined), then wrapped to int32 */
    int32_t scaled = ncc_wrap32((int64_t)(((uint64_t)x << left) & 0xFFFFFFFFu));
    uint64_t y = (uint64_t)((int64_t)scaled * (int64_t)multiplier) + ((uint64_t)1 << 30);
    uint32_t h = (uint32_t)(y >> 31);
    uint32_t mask = ((uint32_t)1 << right) - 1u;
    uint32_t q = ((h ^ 0x80000000u) >> right) - (0x80000000u >> right);
    uint32_t threshold = (mask >> 1) + (h >> 31);
    return ncc_wrap32((int64_t)(q + ((h & mask) > threshold ? 1u : 0u)));
}

#endif

/* MBQM for any int32 multiplier: the kernels' multipliers are Q31 in [0, 2^31) (ncc.h) and
   take mbqm_q31, inlined; a multiplier of INT32_MIN (exported form only) is done the long
   way. */
static int32_t mbqm(int64_t x, int32_t multiplier, int32_t shift) {
    if (multiplier == (int32_t)NCC_INT32_MIN) {
        int32_t left = shift > 0 ? shift : 0;
        int32_t scaled = ncc_wrap32((int64_t)(((uint64_t)x << left) & 0xFFFFFFFFu));
        return rounding_divide_by_pot(srdhm(scaled, multiplier), shift > 0 ? 0 : -shift);
    }
    return mbqm_q31(x, multiplier, shift);
}

/* the exported forms (tests) of the static ones the kernels inline */
int32_t ncc_srdhm(int32_t a, int32_t b) {
    return srdhm(a, b);
}

int32_t ncc_rounding_divide_by_pot(int32_t x, int32_t exponent) {
    return rounding_divide_by_pot(x, exponent);
}

int32_t ncc_multiply_by_quantized_multiplier(int64_t x, int32_t multiplier, int32_t shift) {
    return mbqm(x, multiplier, shift);
}

int64_t ncc_multiply_by_quantized_multiplier_int64(int64_t x, int32_t multiplier,
                                                   int32_t shift) {
    const int64_t limit = (int64_t)1 << 47;
    /* m in [0, 2^31): m + 2^15 < 2^31 + 2^15 and the shift is of a non-negative value */
    int64_t reduced = multiplier < 0x7FFF0000L
                          ? ((int64_t)multiplier + ((int64_t)1 << 15)) >> 16 : 0x7FFF;
    int32_t total_shift = 15 - shift; /* [1, 46] for shift in [-31, 14] */
    x = x < -limit ? -limit : (x >= limit ? limit - 1 : x);
    /* |x * reduced| < 2^47 * 2^15 = 2^62; the rounding term adds at most 2^45 */
    return floor_shift(x * reduced + ((int64_t)1 << (total_shift - 1)), total_shift);
}

static int8_t sat8(int64_t v) {
    return (int8_t)(v < -128 ? -128 : (v > 127 ? 127 : v));
}

static int16_t sat16(int64_t v) {
    return (int16_t)(v < -32768 ? -32768 : (v > 32767 ? 32767 : v));
}

/* --- integer ops --------------------------------------------------------------------
 * One definition per kernel serves both widths: a macro writes the loop over elements
 * for an element type, and the arithmetic of one element is a static function taking and
 * returning int64_t, shared by the widths. Only the dense layer's accumulator and
 * requantization differ between int8 and 16x8 (TFLite does the same). */

/* Cortex-M4/M7/M33 (ACLE __ARM_FEATURE_DSP): SMLAD adds two 16 x 16 products to the
   accumulator in one instruction, SXTB16 sign-extends bytes 0 and 2 of a word to two int16
   (bytes 1 and 3 after a rotation by 8). x and w are widened the same way, so the four
   products of a word pair are those of the portable loop and the sum is the same integer:
   |sum| <= 2^30 and SMLAD's additions wrap modulo 2^32 (they set the Q flag, never
   saturate). -DNCC_PORTABLE_KERNELS keeps the portable loops (the tests compare both). */
#if defined(__ARM_FEATURE_DSP) && !defined(NCC_PORTABLE_KERNELS)
#include <arm_acle.h>
#define NCC_DSP_KERNELS 1
/* 4 int8 as one word (an unaligned LDR on these cores) */
static int8x4_t load4_s8(const int8_t *p) {
    int8x4_t v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}
/* 2 int16 as one word: x[0] in the low half */
static int16x2_t load2_s16(const int16_t *p) {
    int16x2_t v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}
/* bytes 1 and 3 of v as two int16 */
static int16x2_t odd_bytes_s16(int8x4_t v) {
    int16x2_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}
#else
#define NCC_DSP_KERNELS 0
#endif

/* The dense layer's output n from its accumulator. int8: the int32 accumulator (held in a
   uint32_t, see below) through the int32 MBQM, then sat8(r + out_zp) in 32 bits: the
   bounds move to r's side (out_zp in [-128, 127]), so r + out_zp is formed only in range.
   The M4's QADD (saturating int32 add) and SSAT give the same value in two instructions. */
static int8_t fc_output_s8(uint32_t acc, const ncc_fc_params *p, int32_t n) {
    int32_t r = mbqm_q31(ncc_wrap32((int64_t)acc), p->multiplier[n], p->shift[n]);
#if NCC_DSP_KERNELS
    return (int8_t)__ssat(__qadd(r, p->out_zp), 8);
#else
    int32_t zp = p->out_zp;
    return (int8_t)(r < -128 - zp ? -128 : (r > 127 - zp ? 127 : r + zp));
#endif
}

/* 16x8: the int64 accumulator through TFLite's int64 MBQM; |result| < 2^62, + out_zp fits */
static int16_t fc_output_s16(int64_t acc, const ncc_fc_params *p, int32_t n) {
    return sat16(ncc_multiply_by_quantized_multiplier_int64(acc, p->multiplier[n],
                                                            p->shift[n]) + p->out_zp);
}

/* int8 dense: sum_k x[k] w[k] over one contiguous weight row. |x[k] w[k]| <= 2^14 and
   depth <= NCC_FC_MAX_DEPTH = 2^16, so |sum| <= 2^30: int32, no overflow. The loop is the
   shape compilers vectorise (int8 -> int16/int32 widening multiply-add). */
static int32_t dot_s8(const int8_t *restrict x, const int8_t *restrict w, int32_t depth) {
    int32_t acc = 0;
    int32_t k = 0;
#if NCC_DSP_KERNELS
    for (; k + 4 <= depth; k += 4) {
        int8x4_t xv = load4_s8(x + k), wv = load4_s8(w + k);
        acc = __smlad(__sxtb16(xv), __sxtb16(wv), acc);
        acc = __smlad(odd_bytes_s16(xv), odd_bytes_s16(wv), acc);
    }
#endif
    for (; k < depth; ++k) {
        acc += (int32_t)x[k] * (int32_t)w[k];
    }
    return acc;
}

/* Four rows at once: x is read once for four outputs. */
static void dot4_s8(const int8_t *restrict x, const int8_t *restrict w0,
                    const int8_t *restrict w1, const int8_t *restrict w2,
                    const int8_t *restrict w3, int32_t depth, int32_t *restrict out) {
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    int32_t k = 0;
#if NCC_DSP_KERNELS
    for (; k + 4 <= depth; k += 4) {
        int8x4_t xv = load4_s8(x + k);
        int16x2_t even = __sxtb16(xv), odd = odd_bytes_s16(xv);
        int8x4_t v0 = load4_s8(w0 + k), v1 = load4_s8(w1 + k);
        int8x4_t v2 = load4_s8(w2 + k), v3 = load4_s8(w3 + k);
        a0 = __smlad(odd, odd_bytes_s16(v0), __smlad(even, __sxtb16(v0), a0));
        a1 = __smlad(odd, odd_bytes_s16(v1), __smlad(even, __sxtb16(v1), a1));
        a2 = __smlad(odd, odd_bytes_s16(v2), __smlad(even, __sxtb16(v2), a2));
        a3 = __smlad(odd, odd_bytes_s16(v3), __smlad(even, __sxtb16(v3), a3));
    }
#endif
    for (; k < depth; ++k) {
        int32_t v = (int32_t)x[k];
        a0 += v * (int32_t)w0[k];
        a1 += v * (int32_t)w1[k];
        a2 += v * (int32_t)w2[k];
        a3 += v * (int32_t)w3[k];
    }
    out[0] = a0;
    out[1] = a1;
    out[2] = a2;
    out[3] = a3;
}

/* The accumulator of golden.py, bias[n] + sum_k (x[k] - x_zp) w[k, n] modulo 2^32, is
   folded_bias[n] + sum_k x[k] w[n][k] modulo 2^32 with folded_bias[n] = bias[n] - x_zp *
   sum_k w[n][k] (the emitter folds it at compile time): uint32_t arithmetic, defined
   wraparound, the same bits. */
void ncc_fully_connected_s8(const int8_t *x, const int8_t *w, const int32_t *bias,
                            int32_t rows, int32_t depth, int32_t units,
                            const ncc_fc_params *p, int8_t *y) {
    int32_t r, n, j;
    int32_t acc[4];
    for (r = 0; r < rows; ++r) {
        const int8_t *xr = x + r * depth;
        int8_t *yr = y + r * units;
        for (n = 0; n + 4 <= units; n += 4) {
            const int8_t *wn = w + n * depth;
            dot4_s8(xr, wn, wn + depth, wn + 2 * depth, wn + 3 * depth, depth, acc);
            for (j = 0; j < 4; ++j) {
                yr[n + j] = fc_output_s8((uint32_t)bias[n + j] + (uint32_t)acc[j], p, n + j);
            }
        }
        for (; n < units; ++n) {
            uint32_t sum = (uint32_t)dot_s8(xr, w + n * depth, depth);
            yr[n] = fc_output_s8((uint32_t)bias[n] + sum, p, n);
        }
    }
}

/* 16x8 dense: sum_k (x[k] - x_zp) w[k] in int64. A term is at most 65535 * 128 < 2^23 in
   magnitude, so a block of NCC_FC16_BLOCK = 128 terms sums in int32 (< 2^30) and the
   blocks add in int64: the exact sum, |acc| < 2^55 for any int32 depth. */
#define NCC_FC16_BLOCK 128
static int64_t dot_s16(const int16_t *restrict x, const int8_t *restrict w, int32_t depth,
                       int32_t x_zp) {
    int64_t acc = 0;
    int32_t k0, k;
    for (k0 = 0; k0 < depth; k0 += NCC_FC16_BLOCK) {
        int32_t stop = depth - k0 < NCC_FC16_BLOCK ? depth - k0 : NCC_FC16_BLOCK;
        int32_t block = 0;
        k = 0;
#if NCC_DSP_KERNELS
        /* int16 activations have zero point 0 (16x8): x's halfword pairs (x[k], x[k+1])
           meet the weights widened and repacked as (w[k], w[k+1]), (w[k+2], w[k+3]) */
        for (; x_zp == 0 && k + 4 <= stop; k += 4) {
            int8x4_t wv = load4_s8(w + k0 + k);
            int16x2_t even = __sxtb16(wv), odd = odd_bytes_s16(wv), w01, w23;
            __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(w01) : "r"(even), "r"(odd));
            __asm__("pkhtb %0, %1, %2, asr #16" : "=r"(w23) : "r"(odd), "r"(even));
            block = __smlad(load2_s16(x + k0 + k), w01, block);
            block = __smlad(load2_s16(x + k0 + k + 2), w23, block);
        }
#endif
        for (; k < stop; ++k) {
            block += ((int32_t)x[k0 + k] - x_zp) * (int32_t)w[k0 + k];
        }
        acc += block;
    }
    return acc;
}

void ncc_fully_connected_s16(const int16_t *x, const int8_t *w, const int32_t *bias,
                             int32_t rows, int32_t depth, int32_t units,
                             const ncc_fc_params *p, int16_t *y) {
    int32_t r, n;
    for (r = 0; r < rows; ++r) {
        const int16_t *xr = x + r * depth;
        for (n = 0; n < units; ++n) {
            int64_t acc = (int64_t)bias[n] + dot_s16(xr, w + n * depth, depth, p->x_zp);
            y[r * units + n] = fc_output_s16(acc, p, n);
        }
    }
}

/* sparse fully_connected (CSR by output), for activation type T. A term (x - x_zp) * w is
   at most 65535 * 128 < 2^23 in magnitude: int32 holds it for both widths. ACC is the
   accumulator:
   - int8, uint32_t: the sum modulo 2^32, two's complement wraparound without UB; the
     quantizer proves |acc| < 2^31, and past it the bits still match golden.py, whose MBQM
     wraps to int32 too;
   - int16, int64_t: |acc| <= depth * 2^23 + 2^31 < 2^55 for any int32 depth, never wraps;
     the quantizer proves |acc| < 2^47, the range of the int64 MBQM. */
#define NCC_SPARSE_FULLY_CONNECTED(SPARSE_NAME, T, ACC, OUTPUT)                             \
    void SPARSE_NAME(const T *x, const int32_t *post_start, const uint16_t *pre,           \
                     const int8_t *weight, const int32_t *bias, int32_t rows,              \
                     int32_t depth, int32_t units, const ncc_fc_params *p, T *y) {          \
        const ncc_fc_params q = *p; /* a local: stores to y cannot change it */             \
        int32_t r, s, n;                                                                    \
        for (r = 0; r < rows; ++r) {                                                        \
            const T *xr = x + r * depth;                                                    \
            for (n = 0; n < units; ++n) {                                                   \
                ACC acc = (ACC)bias[n];                                                     \
                for (s = post_start[n]; s < post_start[n + 1]; ++s) {                      \
                    acc += (ACC)(((int32_t)xr[pre[s]] - q.x_zp) * (int32_t)weight[s]);      \
                }                                                                           \
                y[r * units + n] = OUTPUT(acc, &q, n);                                      \
            }                                                                               \
        }                                                                                   \
    }

NCC_SPARSE_FULLY_CONNECTED(ncc_sparse_fully_connected_s8, int8_t, uint32_t, fc_output_s8)
NCC_SPARSE_FULLY_CONNECTED(ncc_sparse_fully_connected_s16, int16_t, int64_t, fc_output_s16)

/* One element of qadd (sign 1) or qsub (sign -1), before saturation. (a - a_zp) << ls is
   at most 255 * 2^20 < 2^28 (int8) or 32768 * 2^15 = 2^30 (int16, zero point 0) in
   magnitude; each rescaled side is an int32, so |raw| <= 2^32, which MBQM wraps to int32
   exactly as golden.py does; its int32 result + out_zp fits int64. */
static inline int64_t add_sub(int64_t a, int64_t b, const ncc_add_params *p, int32_t sign) {
    int64_t as = (a - p->a_zp) * ((int64_t)1 << p->left_shift);
    int64_t bs = (b - p->b_zp) * ((int64_t)1 << p->left_shift);
    int64_t a_scaled = mbqm_q31(as, p->a_multiplier, p->a_shift);
    int64_t b_scaled = mbqm_q31(bs, p->b_multiplier, p->b_shift);
    int64_t raw = a_scaled + sign * b_scaled;
    return (int64_t)mbqm_q31(raw, p->multiplier, p->shift)
           + p->out_zp;
}

static inline int64_t add_element(int64_t a, int64_t b, const ncc_add_params *p) {
    return add_sub(a, b, p, 1);
}

static inline int64_t sub_element(int64_t a, int64_t b, const ncc_add_params *p) {
    return add_sub(a, b, p, -1);
}

/* One element of qmul: |(a - a_zp)(b - b_zp)| <= 255^2 (int8) or 2^30 (int16, zero points
   0); any int16 zero points keep it below 2^32, which MBQM wraps as golden.py does. */
static inline int64_t mul_element(int64_t a, int64_t b, const ncc_mul_params *p) {
    return (int64_t)mbqm_q31((a - p->a_zp) * (b - p->b_zp),
                                                         p->multiplier, p->shift)
           + p->out_zp;
}

/* elementwise binary kernel over T: y[i] = SAT(ELEMENT(a[i * a_step], b[i * b_step])).
   The parameters are copied to a local first: y (int8_t is a char type) may alias *p as
   far as the compiler knows, which would reload them after every store. Steps of 1 (the
   common case) get their own loop, without index arithmetic. */
#define NCC_BINARY(NAME, T, PARAMS, ELEMENT, SAT)                                           \
    void NAME(const T *a, int32_t a_step, const T *b, int32_t b_step, int32_t n,           \
              const PARAMS *p, T *y) {                                                      \
        const PARAMS q = *p;                                                                \
        int32_t i;                                                                          \
        if (a_step == 1 && b_step == 1) {                                                   \
            for (i = 0; i < n; ++i) {                                                       \
                y[i] = SAT(ELEMENT((int64_t)a[i], (int64_t)b[i], &q));                      \
            }                                                                               \
            return;                                                                         \
        }                                                                                   \
        for (i = 0; i < n; ++i) {                                                           \
            y[i] = SAT(ELEMENT((int64_t)a[i * a_step], (int64_t)b[i * b_step], &q));        \
        }                                                                                   \
    }

NCC_BINARY(ncc_add_s8, int8_t, ncc_add_params, add_element, sat8)
NCC_BINARY(ncc_sub_s8, int8_t, ncc_add_params, sub_element, sat8)
NCC_BINARY(ncc_mul_s8, int8_t, ncc_mul_params, mul_element, sat8)
NCC_BINARY(ncc_add_s16, int16_t, ncc_add_params, add_element, sat16)
NCC_BINARY(ncc_sub_s16, int16_t, ncc_add_params, sub_element, sat16)
NCC_BINARY(ncc_mul_s16, int16_t, ncc_mul_params, mul_element, sat16)

/* One element of requantize: |x - in_zp| <= 65535; MBQM wraps (x - in_zp) << shift to
   int32 exactly as golden.py does; its int32 result + out_zp fits int64. */
static inline int64_t requantize_element(int64_t x, const ncc_mul_params *p) {
    return (int64_t)mbqm_q31(x - p->a_zp, p->multiplier,
                                                         p->shift)
           + p->out_zp;
}

#define NCC_REQUANTIZE(NAME, TX, TY, SAT)                                                   \
    void NAME(const TX *x, int32_t n, const ncc_mul_params *p, TY *y) {                     \
        const ncc_mul_params q = *p; /* a local: stores to y cannot change it */            \
        int32_t i;                                                                          \
        for (i = 0; i < n; ++i) {                                                           \
            y[i] = SAT(requantize_element((int64_t)x[i], &q));                              \
        }                                                                                   \
    }

NCC_REQUANTIZE(ncc_requantize_s8, int8_t, int8_t, sat8)
NCC_REQUANTIZE(ncc_requantize_s16, int16_t, int16_t, sat16)
NCC_REQUANTIZE(ncc_requantize_s8_s16, int8_t, int16_t, sat16)
NCC_REQUANTIZE(ncc_requantize_s16_s8, int16_t, int8_t, sat8)

/* table lookup: x + OFFSET (= -min(T)) is in [0, 2^bits), the table's index range */
#define NCC_LUT(NAME, T, OFFSET)                                                            \
    void NAME(const T *x, int32_t n, const T *table, T *y) {                                \
        int32_t i;                                                                          \
        for (i = 0; i < n; ++i) {                                                           \
            y[i] = table[(int32_t)x[i] + (OFFSET)];                                         \
        }                                                                                   \
    }

NCC_LUT(ncc_lut_s8, int8_t, 128)
NCC_LUT(ncc_lut_s16, int16_t, (int32_t)32768)

/* compact int16 table (ncc.numerics.interpolated_lookup): u = x + 32768 in [0, 65535],
   i = u >> 7 in [0, 511], f = u & 127; y = (T[i] * 128 + (T[i+1] - T[i]) * f + 64) >> 7.
   num = T[i] (128 - f) + T[i+1] f + 64, so |num| <= 2^22 + 64. The floor shift is written as a division of a
   non-negative value (C's >> of a negative value is implementation-defined). */
void ncc_lut_interp_s16(const int16_t *x, int32_t n, const int16_t *table, int16_t *y) {
    int32_t i;
    for (i = 0; i < n; ++i) {
        int32_t u = (int32_t)x[i] + 32768;
        int32_t k = u >> 7, f = u & 127;
        int32_t base = table[k];
        int32_t num = base * 128 + ((int32_t)table[k + 1] - base) * f + 64;
        y[i] = (int16_t)((num + (1L << 23)) / 128 - (1L << 16));
    }
}

/* --- compare / select / min / max / cast ------------------------------------------- */

#define NCC_MINMAX(NAME, T, CMP)                                                            \
    void NAME(const T *a, int32_t a_step, const T *b, int32_t b_step, int32_t n, T *y) {   \
        int32_t i;                                                                          \
        for (i = 0; i < n; ++i) {                                                           \
            T u = a[i * a_step];                                                            \
            T v = b[i * b_step];                                                            \
            y[i] = (u CMP v) ? u : v;                                                       \
        }                                                                                   \
    }

NCC_MINMAX(ncc_max_s8, int8_t, >=)
NCC_MINMAX(ncc_min_s8, int8_t, <=)
NCC_MINMAX(ncc_max_s16, int16_t, >=)
NCC_MINMAX(ncc_min_s16, int16_t, <=)
NCC_MINMAX(ncc_max_s32, int32_t, >=)
NCC_MINMAX(ncc_min_s32, int32_t, <=)

static uint8_t compare(ncc_comparison op, int32_t u, int32_t v) {
    switch (op) {
    case NCC_GREATER: return (uint8_t)(u > v);
    case NCC_GREATER_EQUAL: return (uint8_t)(u >= v);
    case NCC_LESS: return (uint8_t)(u < v);
    case NCC_LESS_EQUAL: return (uint8_t)(u <= v);
    default: return (uint8_t)(u == v);
    }
}

#define NCC_COMPARE(NAME, T)                                                                \
    void NAME(ncc_comparison op, const T *a, int32_t a_step, const T *b, int32_t b_step,   \
              int32_t n, uint8_t *y) {                                                      \
        int32_t i;                                                                          \
        for (i = 0; i < n; ++i) {                                                           \
            y[i] = compare(op, (int32_t)a[i * a_step], (int32_t)b[i * b_step]);             \
        }                                                                                   \
    }

NCC_COMPARE(ncc_compare_s8, int8_t)
NCC_COMPARE(ncc_compare_s16, int16_t)
NCC_COMPARE(ncc_compare_s32, int32_t)

void ncc_select(const uint8_t *cond, int32_t c_step, const void *a, int32_t a_step,
                const void *b, int32_t b_step, int32_t n, int32_t elem_size, void *y) {
    const unsigned char *pa = (const unsigned char *)a;
    const unsigned char *pb = (const unsigned char *)b;
    unsigned char *py = (unsigned char *)y;
    int32_t i, j;
    for (i = 0; i < n; ++i) {
        const unsigned char *src = cond[i * c_step] ? pa + i * a_step * elem_size
                                                    : pb + i * b_step * elem_size;
        for (j = 0; j < elem_size; ++j) {
            py[i * elem_size + j] = src[j];
        }
    }
}

void ncc_logical_not(const uint8_t *x, int32_t n, uint8_t *y) {
    int32_t i;
    for (i = 0; i < n; ++i) {
        y[i] = (uint8_t)(x[i] == 0);
    }
}

static int64_t load(const void *x, ncc_dtype t, int32_t i) {
    switch (t) {
    case NCC_BOOL:
    case NCC_UINT8: return ((const uint8_t *)x)[i];
    case NCC_INT8: return ((const int8_t *)x)[i];
    case NCC_INT16: return ((const int16_t *)x)[i];
    default: return ((const int32_t *)x)[i];
    }
}

/* two's complement wrap of v to `bits` bits, defined for every v */
static int32_t wrap_bits(int64_t v, int32_t bits) {
    uint32_t mod = (uint32_t)((uint64_t)v & ((bits == 32) ? 0xFFFFFFFFu
                                                         : ((1u << bits) - 1u)));
    uint32_t half = 1u << (bits - 1);
    if (mod < half) {
        return (int32_t)mod;
    }
    return (int32_t)(mod - half) - (int32_t)(half - 1u) - 1;
}

void ncc_cast(const void *x, ncc_dtype from, void *y, ncc_dtype to, int32_t n) {
    int32_t i;
    for (i = 0; i < n; ++i) {
        int64_t v = load(x, from, i);
        switch (to) {
        case NCC_BOOL: ((uint8_t *)y)[i] = (uint8_t)(v != 0); break;
        case NCC_UINT8: ((uint8_t *)y)[i] = (uint8_t)((uint64_t)v & 0xFFu); break;
        case NCC_INT8: ((int8_t *)y)[i] = (int8_t)wrap_bits(v, 8); break;
        case NCC_INT16: ((int16_t *)y)[i] = (int16_t)wrap_bits(v, 16); break;
        default: ((int32_t *)y)[i] = wrap_bits(v, 32); break;
        }
    }
}

/* --- data movement ------------------------------------------------------------------ */

void ncc_copy(const void *x, int32_t size, void *y) {
    const unsigned char *px = (const unsigned char *)x;
    unsigned char *py = (unsigned char *)y;
    int32_t i;
    for (i = 0; i < size; ++i) {
        py[i] = px[i];
    }
}

void ncc_strided_copy(const void *x, int32_t elem_size, int32_t rank, const int32_t *shape,
                      const int32_t *strides, int32_t offset, void *y) {
    const unsigned char *px = (const unsigned char *)x;
    unsigned char *py = (unsigned char *)y;
    int32_t index[NCC_MAX_RANK];
    int32_t total = 1;
    int32_t d, i, j;
    for (d = 0; d < rank; ++d) {
        index[d] = 0;
        total *= shape[d];
    }
    for (i = 0; i < total; ++i) {
        int32_t at = offset;
        for (d = 0; d < rank; ++d) {
            at += index[d] * strides[d];
        }
        for (j = 0; j < elem_size; ++j) {
            py[i * elem_size + j] = px[at * elem_size + j];
        }
        for (d = rank - 1; d >= 0; --d) { /* odometer: last index fastest */
            if (++index[d] < shape[d]) {
                break;
            }
            index[d] = 0;
        }
    }
}

void ncc_gather(const void *x, int32_t elem_size, int32_t outer, int32_t x_axis,
                int32_t inner, int32_t n, const int16_t *indices, void *y) {
    const unsigned char *px = (const unsigned char *)x;
    unsigned char *py = (unsigned char *)y;
    const int32_t row = inner * elem_size;
    int32_t o, i;
    for (o = 0; o < outer; ++o) {
        for (i = 0; i < n; ++i) {
            ncc_copy(px + (o * x_axis + indices[i]) * row, row, py + (o * n + i) * row);
        }
    }
}

void ncc_concat_part(const void *x, int32_t elem_size, int32_t outer, int32_t x_inner,
                     int32_t y_inner, int32_t at, void *y) {
    const unsigned char *px = (const unsigned char *)x;
    unsigned char *py = (unsigned char *)y;
    int32_t o;
    for (o = 0; o < outer; ++o) {
        ncc_copy(px + o * x_inner * elem_size, x_inner * elem_size,
                 py + (o * y_inner + at) * elem_size);
    }
}
