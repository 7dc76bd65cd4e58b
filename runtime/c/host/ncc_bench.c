/*
 * Timing loop for a C artifact (target c): the cost of ncc_step inside C, with no
 * host-language call in between.
 *
 *   cc -std=c99 -O2 -I ARTIFACT ARTIFACT/model.c ARTIFACT/ncc_kernels.c ncc_bench.c -o bench
 *   bench STEPS < steps.bin     (steps.bin: as for ncc_main, up to MAX_STEPS steps)
 *
 * Runs STEPS steps (default 100000), cycling over the input steps read from stdin, and
 * prints "<ns per step> <checksum of output byte 0>" (the checksum keeps the compiler
 * from discarding the work). Processor time from C99 clock().
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "model.h"

#define STEP_IN (NCC_INPUT_BYTES + NCC_DT_BYTES)
#define MAX_STEPS 256

static unsigned char in[MAX_STEPS][STEP_IN + 1];
static unsigned char out[NCC_OUTPUTS_BYTES + 1];
static ncc_ctx ctx;

int main(int argc, char **argv) {
    long total = argc > 1 ? atol(argv[1]) : 100000L;
    long i;
    int n = 0;
    unsigned long checksum = 0;
    clock_t t0, t1;
    while (n < MAX_STEPS && fread(in[n], 1, (size_t)STEP_IN, stdin) == (size_t)STEP_IN) {
        ++n;
    }
    if (n == 0 || total <= 0) {
        fprintf(stderr, "ncc_bench: needs at least one input step on stdin and STEPS > 0\n");
        return 1;
    }
    ncc_init(&ctx);
    t0 = clock();
    for (i = 0; i < total; ++i) {
        const unsigned char *x = in[i % n];
        ncc_step_bytes(&ctx, x, NCC_DT_BYTES ? x + NCC_INPUT_BYTES : NULL, out);
        checksum += out[0];
    }
    t1 = clock();
    printf("%.3f %lu\n", 1e9 * (double)(t1 - t0) / (double)CLOCKS_PER_SEC / (double)total,
           checksum);
    return 0;
}
