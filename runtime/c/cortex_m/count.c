/*
 * Cortex-M instruction counter: runs the model over the recorded steps of ncc_test_data.h
 * (as main.c does, the state reset at the start of each sequence) and prints by
 * semihosting how many SysTick ticks the steps took and how many a loop of known length
 * took. Under QEMU's -icount shift=0 every guest instruction advances virtual time by
 * 1 ns and SysTick counts the 25 MHz processor clock, so a tick is 40 instructions; the
 * calibration loop (2 instructions per pass) measures that ratio instead of assuming it.
 * The int8 dense layers are counted on their own too: the firmware is linked with
 * --wrap=ncc_fully_connected_s8, so the model's calls reach __wrap_ncc_fully_connected_s8
 * below, which counts the ticks and MACs of each call (a tick's rounding per call averages
 * out over many calls; the wrapper's own few instructions are counted with the layer).
 * Output lines: "calibration_instructions N", "calibration_ticks N", "steps N",
 * "step_ticks N", "dense_ticks N", "dense_macs N", "end".
 */
#include "model.h"
#include "ncc_test_data.h"
#include "semihost.h"

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define SYST_MASK 0xFFFFFFu    /* a 24-bit down counter */
#define CALIBRATION_PASSES 100000u

static ncc_ctx ctx;
static uint32_t dense_ticks, dense_macs;
static unsigned char out[NCC_OUTPUTS_BYTES + 1];

/* ticks elapsed since *last (the counter counts down and wraps), and *last moved on */
static uint32_t ticks_since(uint32_t *last) {
    uint32_t now = SYST_CVR;
    uint32_t elapsed = (*last - now) & SYST_MASK;
    *last = now;
    return elapsed;
}

static void put_line(const char *label, uint32_t value) {
    char text[48];
    char digits[11];
    int32_t n = 0, at = 0;
    while (label[at] != '\0') {
        text[at] = label[at];
        ++at;
    }
    text[at++] = ' ';
    do {
        digits[n++] = (char)('0' + value % 10u);
        value /= 10u;
    } while (value != 0u);
    while (n > 0) {
        text[at++] = digits[--n];
    }
    text[at++] = '\n';
    text[at] = '\0';
    semihost_write0(text);
}

void __real_ncc_fully_connected_s8(const int8_t *x, const int8_t *w, const int32_t *bias,
                                   int32_t rows, int32_t depth, int32_t units,
                                   const ncc_fc_params *p, int8_t *y);
void __wrap_ncc_fully_connected_s8(const int8_t *x, const int8_t *w, const int32_t *bias,
                                   int32_t rows, int32_t depth, int32_t units,
                                   const ncc_fc_params *p, int8_t *y);

void __wrap_ncc_fully_connected_s8(const int8_t *x, const int8_t *w, const int32_t *bias,
                                   int32_t rows, int32_t depth, int32_t units,
                                   const ncc_fc_params *p, int8_t *y) {
    uint32_t last = SYST_CVR;
    __real_ncc_fully_connected_s8(x, w, bias, rows, depth, units, p, y);
    dense_ticks += ticks_since(&last);
    dense_macs += (uint32_t)(rows * depth * units);
}

int main(void) {
    uint32_t last, calibration, total = 0u;
    int32_t t;
    SYST_RVR = SYST_MASK;
    SYST_CVR = 0u;
    SYST_CSR = 5u; /* enabled, processor clock, no interrupt */
    last = SYST_CVR;
    {
        register uint32_t passes __asm__("r0") = CALIBRATION_PASSES;
        __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(passes));
    }
    calibration = ticks_since(&last);
    ncc_init(&ctx);
    for (t = 0; t < NCC_TEST_STEPS; ++t) {
        const unsigned char *step = ncc_test_steps[t];
        if (t > 0 && t % (NCC_TEST_STEPS / NCC_TEST_SEQUENCES) == 0) {
            ncc_reset(&ctx);
        }
        (void)ticks_since(&last); /* the reset and the loop are not the step's */
        ncc_step_bytes(&ctx, step, NCC_DT_BYTES ? step + NCC_INPUT_BYTES : 0, out);
        total += ticks_since(&last); /* read every step: the 24-bit counter cannot wrap */
    }
    put_line("calibration_instructions", 2u * CALIBRATION_PASSES);
    put_line("calibration_ticks", calibration);
    put_line("steps", (uint32_t)NCC_TEST_STEPS);
    put_line("step_ticks", total);
    put_line("dense_ticks", dense_ticks);
    put_line("dense_macs", dense_macs);
    semihost_write0("end\n");
    return 0;
}
