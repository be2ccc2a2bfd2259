/* ACPI: the MADT's enabled processors (their local APIC ids) and the local APIC's address. */
#ifndef KERNEL_ACPI_H
#define KERNEL_ACPI_H
#include <stdint.h>

#define MAX_CPUS 16

struct cpus {
    unsigned count;
    uint8_t apic_id[MAX_CPUS];
    uint64_t lapic_base;
};

int acpi_cpus(struct cpus *out);
#endif
