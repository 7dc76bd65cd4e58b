/*
 * Minimal Cortex-M4 startup for the ncc test firmware: the vector table (initial stack
 * pointer, reset handler, fault handlers) and a reset handler that copies .data from
 * flash, zeroes .bss, runs main() and reports its result to the host by semihosting.
 * No C library start-up code, no heap.
 */
#include <stdint.h>

#include "semihost.h"

int main(void);

/* symbols of link.ld */
extern uint32_t _data_load, _data_start, _data_end, _bss_start, _bss_end, _stack_top;

void ncc_reset_handler(void);
void ncc_fault_handler(void);

void ncc_reset_handler(void) {
    const uint32_t *src = &_data_load;
    uint32_t *dst;
    for (dst = &_data_start; dst < &_data_end; ++dst) {
        *dst = *src++;
    }
    for (dst = &_bss_start; dst < &_bss_end; ++dst) {
        *dst = 0u;
    }
    semihost_exit(main() == 0);
}

/* any fault ends the run as a failure instead of hanging QEMU until its timeout */
void ncc_fault_handler(void) {
    semihost_write0("ncc firmware: fault\n");
    semihost_exit(0);
}

typedef void (*vector)(void);

/* entries 0-15 of the Cortex-M vector table; no peripheral interrupts are used. The
   initial stack pointer is an address, stored through a union to stay ISO C. */
typedef union {
    uint32_t *stack;
    vector handler;
} vector_entry;

__attribute__((section(".isr_vector"), used))
static const vector_entry vectors[16] = {
    {&_stack_top},
    {.handler = ncc_reset_handler},
    {.handler = ncc_fault_handler}, /* NMI */
    {.handler = ncc_fault_handler}, /* HardFault */
    {.handler = ncc_fault_handler}, /* MemManage */
    {.handler = ncc_fault_handler}, /* BusFault */
    {.handler = ncc_fault_handler}, /* UsageFault */
    {0}, {0}, {0}, {0},
    {.handler = ncc_fault_handler}, /* SVCall */
    {.handler = ncc_fault_handler}, /* DebugMonitor */
    {0},
    {.handler = ncc_fault_handler}, /* PendSV */
    {.handler = ncc_fault_handler}, /* SysTick */
};
