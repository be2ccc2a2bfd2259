#include "pci.h"
#include "io.h"

static uint32_t address(const struct pci_dev *d, uint8_t reg) {
    return 0x80000000u | (uint32_t)d->bus << 16 | (uint32_t)d->slot << 11 | (uint32_t)d->fn << 8 | (reg & 0xFC);
}

uint32_t pci_read32(const struct pci_dev *d, uint8_t reg) {
    outl(0xCF8, address(d, reg));
    return inl(0xCFC);
}

void pci_write32(const struct pci_dev *d, uint8_t reg, uint32_t v) {
    outl(0xCF8, address(d, reg));
    outl(0xCFC, v);
}

int pci_find(uint16_t vendor, uint16_t device, struct pci_dev *out) {
    struct pci_dev d = { 0, 0, 0, 0, 0 };
    for (d.slot = 0; d.slot < 32; d.slot++) {
        uint32_t id = pci_read32(&d, 0);
        if ((id & 0xFFFF) == vendor && (id >> 16) == device) {
            d.vendor = vendor;
            d.device = device;
            *out = d;
            return 0;
        }
    }
    return -1;
}
