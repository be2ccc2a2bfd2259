/* PCI configuration space through the legacy 0xCF8/0xCFC ports (bus 0 is enough for QEMU's NICs). */
#ifndef KERNEL_PCI_H
#define KERNEL_PCI_H
#include <stdint.h>

struct pci_dev {
    uint8_t bus, slot, fn;
    uint16_t vendor, device;
};

uint32_t pci_read32(const struct pci_dev *d, uint8_t reg);
void pci_write32(const struct pci_dev *d, uint8_t reg, uint32_t v);
int pci_find(uint16_t vendor, uint16_t device, struct pci_dev *out);
#endif
