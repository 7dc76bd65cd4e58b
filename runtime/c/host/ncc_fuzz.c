/*
 * Fuzz driver for a C artifact (target c): hostile inputs, generated here, for runs under
 * AddressSanitizer and UndefinedBehaviorSanitizer (ncc.runtime.c_fuzz builds it).
 *
 *   cc -std=c99 -fsanitize=address,undefined -fno-sanitize-recover=all -I ARTIFACT \
 *      ARTIFACT/model.c ARTIFACT/ncc_kernels.c ncc_fuzz.c -o fuzz
 *   fuzz STEPS SEED
 *
 * Every input byte pattern is a legal input (x and dt are raw integers on their grids).
 * The first steps walk x's extremes (every element at its type's minimum or maximum,
 * alternating each step, then every 10 steps, then zeros; dt random), the rest are
 * uniformly random bytes from a splitmix64 generator seeded by SEED; every 4,096 steps the
 * state is reset once, so fresh-state paths are fuzzed too. Prints "steps N checksum C" and exits 0;
 * a sanitizer report aborts with a non-zero status first.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

#define IN_BYTES (NCC_INPUT_BYTES + NCC_DT_BYTES + 1)
#define OUT_BYTES (NCC_OUTPUTS_BYTES + 1)
#define EXTREME_STEPS 300

static ncc_ctx ctx;
static unsigned char in[IN_BYTES];
static unsigned char out[OUT_BYTES];

static unsigned long long splitmix64(unsigned long long *s) {
    unsigned long long z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

int main(int argc, char **argv) {
    long steps, t;
    unsigned long long seed, checksum = 0;
    int32_t i, n = NCC_INPUT_BYTES + NCC_DT_BYTES;
    if (argc != 3) {
        fprintf(stderr, "usage: %s STEPS SEED\n", argv[0]);
        return 2;
    }
    steps = strtol(argv[1], NULL, 10);
    seed = strtoull(argv[2], NULL, 10);
    ncc_init(&ctx);
    for (t = 0; t < steps; ++t) {
        for (i = 0; i < n; ++i) {
            in[i] = (unsigned char)(splitmix64(&seed) >> 56);
        }
        if (t < EXTREME_STEPS) {
            int high = t < 100 ? (int)(t % 2) : t < 200 ? (int)((t / 10) % 2) : -1;
            for (i = 0; i < NCC_INPUT_SIZE; ++i) {
                if (NCC_INPUT_BYTES == 2 * NCC_INPUT_SIZE) {
                    int16_t v = high < 0 ? 0 : high ? INT16_MAX : INT16_MIN;
                    memcpy(in + 2 * i, &v, 2);
                } else {
                    int8_t v = high < 0 ? 0 : high ? INT8_MAX : INT8_MIN;
                    memcpy(in + i, &v, 1);
                }
            }
        }
        if (t % 4096 == 4095) {
            ncc_reset(&ctx);
        }
        ncc_step_bytes(&ctx, in, NCC_DT_BYTES ? in + NCC_INPUT_BYTES : NULL, out);
        for (i = 0; i < NCC_OUTPUTS_BYTES; ++i) {
            checksum = checksum * 31u + out[i];
        }
    }
    printf("steps %ld checksum %llu\n", steps, checksum);
    return 0;
}
