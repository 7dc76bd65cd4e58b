/*
 * ARM semihosting, the two calls the test firmware needs: write a string to the host's
 * stdout and end the program. On Cortex-M the request is `bkpt 0xAB` with the operation
 * number in r0 and its argument in r1 (QEMU: -semihosting-config enable=on,target=native).
 */
#ifndef NCC_SEMIHOST_H
#define NCC_SEMIHOST_H

#include <stdint.h>

#define SEMIHOST_SYS_WRITE0 0x04u /* r1: NUL-terminated string */
#define SEMIHOST_SYS_EXIT 0x18u   /* r1: reason code */
#define SEMIHOST_EXIT_SUCCESS 0x20026u /* ADP_Stopped_ApplicationExit: QEMU exits 0 */
#define SEMIHOST_EXIT_FAILURE 0x20023u /* ADP_Stopped_RunTimeErrorUnknown: exits 1 */

static inline uint32_t semihost_call(uint32_t op, const void *arg) {
    register uint32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static inline void semihost_write0(const char *text) {
    (void)semihost_call(SEMIHOST_SYS_WRITE0, text);
}

static inline void semihost_exit(int success) {
    (void)semihost_call(SEMIHOST_SYS_EXIT,
                        (const void *)(uintptr_t)(success ? SEMIHOST_EXIT_SUCCESS
                                                          : SEMIHOST_EXIT_FAILURE));
    for (;;) {
    }
}

#endif /* NCC_SEMIHOST_H */
