/* virtio-net over the legacy (transitional) PCI I/O-port interface, polled, no interrupts. */
#ifndef KERNEL_VIRTIO_NET_H
#define KERNEL_VIRTIO_NET_H
#include <stdint.h>

extern uint8_t nic_mac[6];
int nic_init(void);
/* The PCI interrupt line (legacy IRQ) of the NIC, or -1. */
int nic_irq(void);
/* From the NIC's interrupt: read (and so clear) the device's ISR status. */
void nic_ack(void);
/* Send one Ethernet frame (the caller pads it); safe from any core. */
int nic_send(const uint8_t *frame, unsigned len);
/* Copy the next received frame into buf (cap bytes); its length, or 0 when none is waiting. */
unsigned nic_recv(uint8_t *buf, unsigned cap);
#endif
