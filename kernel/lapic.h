/* The local APIC (xAPIC, memory-mapped): each core's timer, EOI and the start-up IPIs. */
#ifndef KERNEL_LAPIC_H
#define KERNEL_LAPIC_H
#include <stdint.h>

#define TIMER_VECTOR 32
#define NIC_VECTOR 33
#define WAKE_VECTOR 34
#define SPURIOUS_VECTOR 0xFF

void lapic_set_base(uint64_t base);
uint32_t lapic_id(void);
void lapic_enable(void);
/* Calibrate once (on the BSP) against the TSC, then start a periodic tick of tick_us on this core. */
void lapic_timer_calibrate(void);
void lapic_timer_start(unsigned tick_us);
void lapic_eoi(void);
void lapic_ipi_init(uint8_t apic_id);
/* Wake a core from hlt (a fixed IPI on WAKE_VECTOR). */
void lapic_ipi_wake(uint8_t apic_id);
/* Route an ISA IRQ (or PCI INTx on it) through the I/O APIC to this core on vector. */
struct cpus;
void ioapic_route(const struct cpus *found, unsigned irq, uint8_t vector);
void lapic_ipi_startup(uint8_t apic_id, uint8_t vector_page);
#endif
