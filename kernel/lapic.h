/* The local APIC (xAPIC, memory-mapped): each core's timer, EOI and the start-up IPIs. */
#ifndef KERNEL_LAPIC_H
#define KERNEL_LAPIC_H
#include <stdint.h>

#define TIMER_VECTOR 32
#define SPURIOUS_VECTOR 0xFF

void lapic_set_base(uint64_t base);
uint32_t lapic_id(void);
void lapic_enable(void);
/* Calibrate once (on the BSP) against the TSC, then start a periodic tick of tick_us on this core. */
void lapic_timer_calibrate(void);
void lapic_timer_start(unsigned tick_us);
void lapic_eoi(void);
void lapic_ipi_init(uint8_t apic_id);
void lapic_ipi_startup(uint8_t apic_id, uint8_t vector_page);
#endif
