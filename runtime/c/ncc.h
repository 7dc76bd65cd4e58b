/*
 * ncc C runtime: the integer kernels of ncc's golden model (compiler/golden.py).
 *
 * Portable C99: no malloc, no libm, no floating point, no libc calls. Every kernel
 * computes exactly the bits of its golden.py counterpart; the rounding is TFLite's
 * MultiplyByQuantizedMultiplier (gemmlowp SaturatingRoundingDoublingHighMul followed by
 * RoundingDivideByPOT, "double rounding", the default TFLite build).
 *
 * Conventions (as in the TFLite Micro reference kernels):
 * - tensors are flat, row-major arrays; `n` counts elements;
 * - an elementwise binary kernel reads a[i * a_step], b[i * b_step] with a step of
 *   1 (same shape as the output) or 0 (a scalar broadcast); the emitter materializes
 *   any other broadcast with ncc_strided_copy first;
 * - bool tensors are uint8_t holding 0 or 1;
 * - multipliers are Q31 in [0, 2^31), shifts in [-31, 30] (positive: left);
 * - the integer ops come in two widths: `_s8` (int8 activations) and `_s16` (TFLite's
 *   16x8 mode: int16 activations, zero point 0, int8 weights, int32 biases). Both widths
 *   share one definition per kernel in ncc_kernels.c; the 16x8 dense layers accumulate in
 *   int64 and requantize with TFLite's int64 MultiplyByQuantizedMultiplier.
 *
 * On cores with the Arm DSP extension (__ARM_FEATURE_DSP: Cortex-M4, M7, M33) the int8 and
 * 16x8 dense layers use SMLAD (two 16 x 16 multiply-accumulates per instruction); the
 * bits are those of the portable loops, which -DNCC_PORTABLE_KERNELS keeps.
 *
 * Signed right shifts and signed overflow are never relied upon: floor division by a
 * power of two and two's complement wraparound are written out with defined operations.
 */
#ifndef NCC_H
#define NCC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NCC_RUNTIME_VERSION 3 /* 2: the 16x8 (_s16) integer kernels; 3: dense weights
                                  as [units][depth] rows, int8 x_zp folded in the bias */
#define NCC_MAX_RANK 6

/* element types of ncc_cast (integer IR dtypes the runtime stores) */
typedef enum {
    NCC_BOOL = 0, /* uint8_t, 0 or 1 */
    NCC_UINT8 = 1,
    NCC_INT8 = 2,
    NCC_INT16 = 3,
    NCC_INT32 = 4
} ncc_dtype;

typedef enum {
    NCC_GREATER = 0,
    NCC_GREATER_EQUAL = 1,
    NCC_LESS = 2,
    NCC_LESS_EQUAL = 3,
    NCC_EQUAL = 4
} ncc_comparison;

/* fully_connected: per output channel requantization (multiplier[n], shift[n]) */
typedef struct {
    int32_t x_zp;             /* input zero point: [-128, 127] (int8), 0 (int16) */
    const int32_t *multiplier; /* [units], Q31 in [0, 2^31) */
    const int32_t *shift;      /* [units], [-31, 30] (int8); [-31, 14] (int16, see below) */
    int32_t out_zp;           /* output zero point: [-128, 127] (int8), 0 (int16) */
} ncc_fc_params;

/* qadd / qsub: TFLite ADD/SUB (inputs << left_shift, three multipliers) */
typedef struct {
    int32_t a_zp, b_zp;               /* [-128, 127] (int8), 0 (int16) */
    int32_t a_multiplier, a_shift;    /* rescale a to the common scale */
    int32_t b_multiplier, b_shift;    /* rescale b to the common scale */
    int32_t multiplier, shift;        /* common scale -> output scale */
    int32_t out_zp;                   /* [-128, 127] (int8), 0 (int16) */
    int32_t left_shift;               /* 20 for int8, 15 for int16, [0, 30] */
} ncc_add_params;

/* qmul and requantize: one multiplier */
typedef struct {
    int32_t a_zp, b_zp;  /* [-128, 127] (int8), 0 (int16) (requantize: a_zp = in_zp) */
    int32_t multiplier, shift;
    int32_t out_zp;
} ncc_mul_params;

/* --- fixed-point arithmetic (exposed for tests) ------------------------------------- */

/* low 32 bits of v as a two's complement int32 (numpy's int64 -> int32 wrap) */
int32_t ncc_wrap32(int64_t v);
/* gemmlowp SaturatingRoundingDoublingHighMul: round(a * b / 2^31), nudge away from 0 */
int32_t ncc_srdhm(int32_t a, int32_t b);
/* x / 2^exponent rounded half away from zero; exponent in [0, 31] */
int32_t ncc_rounding_divide_by_pot(int32_t x, int32_t exponent);
/* TFLite MultiplyByQuantizedMultiplier: x * multiplier * 2^(shift - 31), rounded.
   x is wrapped to int32 after the left shift (C int32 behaviour, as golden.py). */
int32_t ncc_multiply_by_quantized_multiplier(int64_t x, int32_t multiplier, int32_t shift);
/* TFLite's int64 MultiplyByQuantizedMultiplier (16x8 dense layers): the multiplier reduced
   to 16 bits, m16 = m < 0x7FFF0000 ? (m + 2^15) >> 16 : 0x7FFF, then one rounding:
   floor((x * m16 + 2^(14 - shift)) / 2^(15 - shift)). x in [-2^47, 2^47) (the quantizer
   proves it; a value outside is clamped to it, so the product stays below 2^62), shift in
   [-31, 14]. Returned as int64, not narrowed: golden.py saturates it straight to int16. */
int64_t ncc_multiply_by_quantized_multiplier_int64(int64_t x, int32_t multiplier,
                                                   int32_t shift);

/* --- integer ops of the IR ---------------------------------------------------------- */

/* y[r, n] = sat8(MBQM(sum_k (x[r, k] - x_zp) W[k, n] + B[n]) + out_zp) for the IR's weights
   W (depth, units) and bias B. Arguments as the emitter lays them out at compile time:
   x: [rows, depth] int8; w: [units][depth] int8, one contiguous row per output
   (w[n * depth + k] = W[k, n]); bias: [units] int32, the input zero point folded in:
   bias[n] = B[n] - x_zp * sum_k W[k, n] modulo 2^32 (p->x_zp is not read again).
   depth <= 2^16. int32 accumulator modulo 2^32 (the quantizer proves |acc| < 2^31; past
   it, it wraps exactly as the golden model's multiply does). */
void ncc_fully_connected_s8(const int8_t *x, const int8_t *w, const int32_t *bias,
                            int32_t rows, int32_t depth, int32_t units,
                            const ncc_fc_params *p, int8_t *y);
/* 16x8: x, y int16, w int8 [units][depth] rows as above, bias int32 B (not folded: the
   kernel subtracts x_zp); int64 accumulator (|acc| < 2^47, proven by the quantizer),
   y = sat16(ncc_multiply_by_quantized_multiplier_int64(acc, m, s) + out_zp) */
void ncc_fully_connected_s16(const int16_t *x, const int8_t *w, const int32_t *bias,
                             int32_t rows, int32_t depth, int32_t units,
                             const ncc_fc_params *p, int16_t *y);

/* The same on a sparse weight matrix (CSR by output neuron): the synapses of output
   n are s in [post_start[n], post_start[n + 1]), each reading input pre[s] with weight
   weight[s]. Absent synapses are exact zeros of the dense matrix: same bits. */
void ncc_sparse_fully_connected_s8(const int8_t *x, const int32_t *post_start,
                                   const uint16_t *pre, const int8_t *weight,
                                   const int32_t *bias, int32_t rows, int32_t depth,
                                   int32_t units, const ncc_fc_params *p, int8_t *y);
void ncc_sparse_fully_connected_s16(const int16_t *x, const int32_t *post_start,
                                    const uint16_t *pre, const int8_t *weight,
                                    const int32_t *bias, int32_t rows, int32_t depth,
                                    int32_t units, const ncc_fc_params *p, int16_t *y);

/* y = sat(MBQM(MBQM((a - a_zp) << ls, am, as) +/- MBQM((b - b_zp) << ls, bm, bs), m, s)
   + out_zp), sat to the width of y; a, b and y of one width */
void ncc_add_s8(const int8_t *a, int32_t a_step, const int8_t *b, int32_t b_step, int32_t n,
                const ncc_add_params *p, int8_t *y);
void ncc_sub_s8(const int8_t *a, int32_t a_step, const int8_t *b, int32_t b_step, int32_t n,
                const ncc_add_params *p, int8_t *y);
void ncc_add_s16(const int16_t *a, int32_t a_step, const int16_t *b, int32_t b_step,
                 int32_t n, const ncc_add_params *p, int16_t *y);
void ncc_sub_s16(const int16_t *a, int32_t a_step, const int16_t *b, int32_t b_step,
                 int32_t n, const ncc_add_params *p, int16_t *y);

/* y = sat(MBQM((a - a_zp)(b - b_zp), m, s) + out_zp); |product| <= 255^2 (int8),
   2^30 (int16, zero points 0) */
void ncc_mul_s8(const int8_t *a, int32_t a_step, const int8_t *b, int32_t b_step, int32_t n,
                const ncc_mul_params *p, int8_t *y);
void ncc_mul_s16(const int16_t *a, int32_t a_step, const int16_t *b, int32_t b_step,
                 int32_t n, const ncc_mul_params *p, int16_t *y);

/* y = sat(MBQM(x - a_zp, m, s) + out_zp), named by input then output width when they
   differ (ncc_requantize_s8_s16: int8 x -> int16 y) */
void ncc_requantize_s8(const int8_t *x, int32_t n, const ncc_mul_params *p, int8_t *y);
void ncc_requantize_s16(const int16_t *x, int32_t n, const ncc_mul_params *p, int16_t *y);
void ncc_requantize_s8_s16(const int8_t *x, int32_t n, const ncc_mul_params *p, int16_t *y);
void ncc_requantize_s16_s8(const int16_t *x, int32_t n, const ncc_mul_params *p, int8_t *y);

/* y = table[x + 128]: table has 256 entries */
void ncc_lut_s8(const int8_t *x, int32_t n, const int8_t *table, int8_t *y);
/* y = table[x + 32768]: table has 65536 entries */
void ncc_lut_s16(const int16_t *x, int32_t n, const int16_t *table, int16_t *y);
/* compact form: table has 513 entries, y linearly interpolated between T[(x + 32768) >> 7]
   and the next entry (ncc.numerics.interpolated_lookup) */
void ncc_lut_interp_s16(const int16_t *x, int32_t n, const int16_t *table, int16_t *y);

/* --- compare / select / min / max / cast ------------------------------------------- */

void ncc_max_s8(const int8_t *a, int32_t a_step, const int8_t *b, int32_t b_step, int32_t n,
                int8_t *y);
void ncc_min_s8(const int8_t *a, int32_t a_step, const int8_t *b, int32_t b_step, int32_t n,
                int8_t *y);
void ncc_max_s16(const int16_t *a, int32_t a_step, const int16_t *b, int32_t b_step,
                 int32_t n, int16_t *y);
void ncc_min_s16(const int16_t *a, int32_t a_step, const int16_t *b, int32_t b_step,
                 int32_t n, int16_t *y);
void ncc_max_s32(const int32_t *a, int32_t a_step, const int32_t *b, int32_t b_step,
                 int32_t n, int32_t *y);
void ncc_min_s32(const int32_t *a, int32_t a_step, const int32_t *b, int32_t b_step,
                 int32_t n, int32_t *y);

/* y[i] = a[i] <op> b[i] as 0/1 */
void ncc_compare_s8(ncc_comparison op, const int8_t *a, int32_t a_step, const int8_t *b,
                    int32_t b_step, int32_t n, uint8_t *y);
void ncc_compare_s16(ncc_comparison op, const int16_t *a, int32_t a_step, const int16_t *b,
                     int32_t b_step, int32_t n, uint8_t *y);
void ncc_compare_s32(ncc_comparison op, const int32_t *a, int32_t a_step, const int32_t *b,
                     int32_t b_step, int32_t n, uint8_t *y);

/* y[i] = cond[i] ? a[i] : b[i], elements of elem_size bytes (any dtype) */
void ncc_select(const uint8_t *cond, int32_t c_step, const void *a, int32_t a_step,
                const void *b, int32_t b_step, int32_t n, int32_t elem_size, void *y);

/* y[i] = !x[i] (bool) */
void ncc_logical_not(const uint8_t *x, int32_t n, uint8_t *y);

/* numpy astype between integer dtypes: to bool is x != 0, narrowing wraps modulo 2^bits */
void ncc_cast(const void *x, ncc_dtype from, void *y, ncc_dtype to, int32_t n);

/* --- data movement (index copies; reshape is a no-op the emitter elides) ------------ */

/* bytes [0, size) of x to y (x and y must not overlap) */
void ncc_copy(const void *x, int32_t size, void *y);

/* y (contiguous, `shape` of `rank` <= NCC_MAX_RANK dims) gathered from x: element
   (i_0, ..., i_r) is x[offset + sum_d i_d * strides[d]], strides in elements, possibly 0
   (broadcast) or negative. Serves slice, transpose and broadcast. */
void ncc_strided_copy(const void *x, int32_t elem_size, int32_t rank, const int32_t *shape,
                      const int32_t *strides, int32_t offset, void *y);

/* y viewed as [outer, n, inner] picks x viewed as [outer, x_axis, inner] at `indices`
   (n of them, each in [0, x_axis)) along the middle axis. Sizes in elements. */
void ncc_gather(const void *x, int32_t elem_size, int32_t outer, int32_t x_axis,
                int32_t inner, int32_t n, const int16_t *indices, void *y);

/* One input of a concatenation: y viewed as [outer, y_inner], x as [outer, x_inner];
   x's rows go to columns [at, at + x_inner) of y. Inner sizes in elements. */
void ncc_concat_part(const void *x, int32_t elem_size, int32_t outer, int32_t x_inner,
                     int32_t y_inner, int32_t at, void *y);

#ifdef __cplusplus
}
#endif

#endif /* NCC_H */
