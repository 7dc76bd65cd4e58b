/*
 * Host driver for a C artifact (target c): a filter over stdin/stdout, for tests and
 * tools (sanitizers, valgrind) that want a plain executable rather than a library.
 *
 *   cc -std=c99 -I ARTIFACT ARTIFACT/model.c ARTIFACT/ncc_kernels.c ncc_main.c -o model
 *   model < steps.bin > trace.bin
 *
 * stdin, per step: NCC_INPUT_BYTES bytes of x, then NCC_DT_BYTES bytes of dt (none
 * when the model has no time delta). stdout, per step: NCC_OUTPUTS_BYTES bytes (every
 * output in manifest order), then every state after the step, state 0 first
 * (NCC_STATE_BYTES in all). The state starts from ncc_init. Exit status 0 when stdin
 * ended on a step boundary, 1 otherwise.
 */
#include <stdio.h>

#include "model.h"

/* the largest of the per-step buffers, at least 1 byte (C99 has no empty arrays) */
#define IN_BYTES (NCC_INPUT_BYTES + NCC_DT_BYTES + 1)
#define OUT_BYTES (NCC_OUTPUTS_BYTES + 1)

static ncc_ctx ctx;
static unsigned char in[IN_BYTES];
static unsigned char out[OUT_BYTES];

int main(void) {
    size_t want = (size_t)(NCC_INPUT_BYTES + NCC_DT_BYTES);
    size_t got;
    int32_t i;
    ncc_init(&ctx);
    for (;;) {
        got = fread(in, 1, want, stdin);
        if (got == 0 && feof(stdin)) {
            break;
        }
        if (got != want) {
            fprintf(stderr, "ncc_main: input ended inside a step (%lu of %lu bytes)\n",
                    (unsigned long)got, (unsigned long)want);
            return 1;
        }
        ncc_step_bytes(&ctx, in, NCC_DT_BYTES ? in + NCC_INPUT_BYTES : NULL, out);
        fwrite(out, 1, (size_t)NCC_OUTPUTS_BYTES, stdout);
        for (i = 0; i < NCC_STATE_COUNT; ++i) {
            fwrite(ncc_state(&ctx, i), 1, (size_t)ncc_state_bytes(i), stdout);
        }
    }
    return fflush(stdout) == 0 ? 0 : 1;
}
