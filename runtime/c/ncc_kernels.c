/*
 * ncc C runtime kernels: one function per integer op of compiler/golden.py, same bits.
 * See ncc.h for the conventions and the ranges of every parameter.
 */
#include "ncc.h"

#define NCC_INT32_MIN (-2147483647L - 1L)
#define NCC_INT32_MAX 2147483647L

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

int32_t ncc_srdhm(int32_t a, int32_t b) {
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

int32_t ncc_rounding_divide_by_pot(int32_t x, int32_t exponent) {
    int64_t mask = ((int64_t)1 << exponent) - 1;
    int64_t q = floor_shift(x, exponent);
    int64_t remainder = (int64_t)x - q * ((int64_t)1 << exponent); /* x & mask, in [0, mask] */
    int64_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (int32_t)(q + (remainder > threshold ? 1 : 0));
}

int32_t ncc_multiply_by_quantized_multiplier(int64_t x, int32_t multiplier, int32_t shift) {
    int32_t left = shift > 0 ? shift : 0;
    int32_t right = shift > 0 ? 0 : -shift;
    /* x << left modulo 2^64 (unsigned: defined), then wrapped to int32 */
    int32_t scaled = ncc_wrap32((int64_t)(((uint64_t)x << left) & 0xFFFFFFFFu));
    return ncc_rounding_divide_by_pot(ncc_srdhm(scaled, multiplier), right);
}

static int8_t sat8(int64_t v) {
    return (int8_t)(v < -128 ? -128 : (v > 127 ? 127 : v));
}

/* --- integer ops -------------------------------------------------------------------- */

void ncc_fully_connected_s8(const int8_t *x, const int8_t *w, const int32_t *bias,
                            int32_t rows, int32_t depth, int32_t units,
                            const ncc_fc_params *p, int8_t *y) {
    int32_t r, k, n;
    for (r = 0; r < rows; ++r) {
        const int8_t *xr = x + r * depth;
        for (n = 0; n < units; ++n) {
            /* unsigned accumulation: two's complement wraparound without UB */
            uint32_t acc = (uint32_t)bias[n];
            for (k = 0; k < depth; ++k) {
                int32_t term = ((int32_t)xr[k] - p->x_zp) * (int32_t)w[k * units + n];
                acc += (uint32_t)term;
            }
            y[r * units + n] = sat8(
                (int64_t)ncc_multiply_by_quantized_multiplier(ncc_wrap32((int64_t)acc),
                                                              p->multiplier[n], p->shift[n])
                + p->out_zp);
        }
    }
}

void ncc_sparse_fully_connected_s8(const int8_t *x, const int32_t *post_start,
                                   const uint16_t *pre, const int8_t *weight,
                                   const int32_t *bias, int32_t rows, int32_t depth,
                                   int32_t units, const ncc_fc_params *p, int8_t *y) {
    int32_t r, s, n;
    for (r = 0; r < rows; ++r) {
        const int8_t *xr = x + r * depth;
        for (n = 0; n < units; ++n) {
            uint32_t acc = (uint32_t)bias[n];
            for (s = post_start[n]; s < post_start[n + 1]; ++s) {
                int32_t term = ((int32_t)xr[pre[s]] - p->x_zp) * (int32_t)weight[s];
                acc += (uint32_t)term;
            }
            y[r * units + n] = sat8(
                (int64_t)ncc_multiply_by_quantized_multiplier(ncc_wrap32((int64_t)acc),
                                                              p->multiplier[n], p->shift[n])
                + p->out_zp);
        }
    }
}

static void add_sub_s8(const int8_t *a, int32_t a_step, const int8_t *b, int32_t b_step,
                       int32_t n, const ncc_add_params *p, int32_t sign, int8_t *y) {
    int32_t i;
    for (i = 0; i < n; ++i) {
        /* (a - a_zp) << 20: |.| <= 255 * 2^20 < 2^28 */
        int64_t as = ((int64_t)a[i * a_step] - p->a_zp) * ((int64_t)1 << p->left_shift);
        int64_t bs = ((int64_t)b[i * b_step] - p->b_zp) * ((int64_t)1 << p->left_shift);
        int64_t a_scaled = ncc_multiply_by_quantized_multiplier(as, p->a_multiplier, p->a_shift);
        int64_t b_scaled = ncc_multiply_by_quantized_multiplier(bs, p->b_multiplier, p->b_shift);
        int64_t raw = a_scaled + sign * b_scaled;
        y[i] = sat8((int64_t)ncc_multiply_by_quantized_multiplier(raw, p->multiplier, p->shift)
                    + p->out_zp);
    }
}

void ncc_add_s8(const int8_t *a, int32_t a_step, const int8_t *b, int32_t b_step, int32_t n,
                const ncc_add_params *p, int8_t *y) {
    add_sub_s8(a, a_step, b, b_step, n, p, 1, y);
}

void ncc_sub_s8(const int8_t *a, int32_t a_step, const int8_t *b, int32_t b_step, int32_t n,
                const ncc_add_params *p, int8_t *y) {
    add_sub_s8(a, a_step, b, b_step, n, p, -1, y);
}

void ncc_mul_s8(const int8_t *a, int32_t a_step, const int8_t *b, int32_t b_step, int32_t n,
                const ncc_mul_params *p, int8_t *y) {
    int32_t i;
    for (i = 0; i < n; ++i) {
        int64_t prod = ((int64_t)a[i * a_step] - p->a_zp) * ((int64_t)b[i * b_step] - p->b_zp);
        y[i] = sat8((int64_t)ncc_multiply_by_quantized_multiplier(prod, p->multiplier, p->shift)
                    + p->out_zp);
    }
}

void ncc_requantize_s8(const int8_t *x, int32_t n, const ncc_mul_params *p, int8_t *y) {
    int32_t i;
    for (i = 0; i < n; ++i) {
        int64_t centered = (int64_t)x[i] - p->a_zp;
        y[i] = sat8((int64_t)ncc_multiply_by_quantized_multiplier(centered, p->multiplier,
                                                                  p->shift) + p->out_zp);
    }
}

void ncc_lut_s8(const int8_t *x, int32_t n, const int8_t *table, int8_t *y) {
    int32_t i;
    for (i = 0; i < n; ++i) {
        y[i] = table[(int32_t)x[i] + 128];
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
