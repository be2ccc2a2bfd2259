/* ACPI: the MADT's enabled processors (their local APIC ids) and the local APIC's address. */
#ifndef KERNEL_ACPI_H
#define KERNEL_ACPI_H
#include <stdint.h>

#define MAX_CPUS 16

struct cpus {
    unsigned count;
    uint8_t apic_id[MAX_CPUS];
    uint64_t lapic_base;
    uint64_t ioapic_base;    /* 0 = none listed */
    uint32_t ioapic_gsi_base;
    uint32_t isa_gsi[16];    /* ISA IRQ -> GSI (interrupt source overrides; identity otherwise) */
    uint16_t isa_flags[16];  /* MPS INTI flags of the override: polarity bits 0-1, trigger bits 2-3 */
};

int acpi_cpus(struct cpus *out);
#endif
