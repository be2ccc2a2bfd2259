/* Per-core state: every core is one DIME. */
#ifndef KERNEL_CPU_H
#define KERNEL_CPU_H
#include <stdint.h>
#include "acpi.h"

struct cpu {
    unsigned index;           /* = the DIME id */
    uint8_t apic_id;
    volatile int online;
    volatile int looping;     /* in cpu_dime_loop: its interrupts run the DIME loop (cpu_tick) */
    volatile uint64_t ticks;
    uint64_t stack_top;
    uint64_t cr3;             /* this DIME's page tables */
};

extern struct cpu cpus[MAX_CPUS];
extern unsigned ncpus;
struct cpu *this_cpu(void);
/* Bring up every application processor the MADT lists; the number of cores online. */
unsigned smp_boot(const struct cpus *found);
/* Where a core goes when its DIME faults: it reports FAULTED and keeps heartbeating. */
void cpu_fault_loop(void) __attribute__((noreturn));
/* A core's life as its DIME: its MICE in the main context, the DIME loop from its own LAPIC timer. */
void cpu_dime_loop(void) __attribute__((noreturn));
/* The DIME loop's turn (interrupt handlers call it, interrupts off). */
void cpu_tick(void);
#endif
