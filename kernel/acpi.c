/* RSDP ("RSD PTR ", on a 16-byte boundary in the EBDA's first KiB or in 0xE0000-0xFFFFF) ->
 * RSDT (32-bit entries) or XSDT (64-bit, ACPI 2+) -> the table signed "APIC" (MADT): local APIC
 * address at +36, then entries from +44 (type, length; type 0 = processor: ACPI id, APIC id, flags). */
#include "acpi.h"
#include "io.h"

static int checksum_ok(const uint8_t *p, unsigned n) {
    uint8_t sum = 0;
    while (n--) sum += *p++;
    return sum == 0;
}

static const uint8_t *find_rsdp(uintptr_t from, uintptr_t to) {
    for (; from + 20 <= to; from += 16)
        if (!memcmp((const void *)from, "RSD PTR ", 8) && checksum_ok((const uint8_t *)from, 20))
            return (const uint8_t *)from;
    return 0;
}

static uint32_t rd32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }

/* A physical address as a pointer, hidden from gcc's bounds checks on small constants. */
static const volatile uint16_t *phys16(uintptr_t a) {
    __asm__("" : "+r"(a));
    return (const volatile uint16_t *)a;
}

int acpi_cpus(struct cpus *out) {
    uintptr_t ebda = (uintptr_t)*phys16(0x40E) << 4; /* the BIOS data area's EBDA segment */
    const uint8_t *rsdp = ebda ? find_rsdp(ebda, ebda + 1024) : 0, *root, *madt = 0, *p, *end;
    unsigned entries, i, width;
    if (!rsdp) rsdp = find_rsdp(0xE0000, 0x100000);
    if (!rsdp) return -1;
    if (rsdp[15] >= 2 && rd32(rsdp + 24)) {
        root = (const uint8_t *)(uintptr_t)rd32(rsdp + 24); /* XSDT below 4 GiB on QEMU */
        width = 8;
    } else {
        root = (const uint8_t *)(uintptr_t)rd32(rsdp + 16);
        width = 4;
    }
    entries = (rd32(root + 4) - 36) / width;
    for (i = 0; i < entries && !madt; i++) {
        const uint8_t *t = (const uint8_t *)(uintptr_t)rd32(root + 36 + i * width);
        if (!memcmp(t, "APIC", 4)) madt = t;
    }
    if (!madt) return -1;
    out->lapic_base = rd32(madt + 36);
    out->count = 0;
    out->ioapic_base = 0;
    for (i = 0; i < 16; i++) out->isa_gsi[i] = i, out->isa_flags[i] = 0;
    end = madt + rd32(madt + 4);
    for (p = madt + 44; p + 2 <= end && p[1]; p += p[1]) {
        if (p[0] == 0 && (rd32(p + 4) & 1) && out->count < MAX_CPUS) out->apic_id[out->count++] = p[3];
        if (p[0] == 1 && !out->ioapic_base) out->ioapic_base = rd32(p + 4), out->ioapic_gsi_base = rd32(p + 8);
        if (p[0] == 2 && p[3] < 16) out->isa_gsi[p[3]] = rd32(p + 4), out->isa_flags[p[3]] = (uint16_t)(p[8] | p[9] << 8);
        if (p[0] == 5) out->lapic_base = rd32(p + 4) | (uint64_t)rd32(p + 8) << 32;
    }
    return out->count ? 0 : -1;
}
