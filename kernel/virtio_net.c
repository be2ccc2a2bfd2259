/* Legacy virtio-pci: BAR0 is an I/O window; queue 0 receives, queue 1 transmits.
 * Each queue is laid out as the legacy spec says: descriptors, then the available ring,
 * then (at the next 4 KiB boundary) the used ring; its page frame number goes to QUEUE_PFN. */
#include "virtio_net.h"
#include "console.h"
#include "io.h"
#include "pci.h"
#include "spinlock.h"

#define VIRTIO_VENDOR 0x1AF4
#define VIRTIO_NET_LEGACY 0x1000

#define REG_HOST_FEATURES 0x00
#define REG_GUEST_FEATURES 0x04
#define REG_QUEUE_PFN 0x08
#define REG_QUEUE_SIZE 0x0C
#define REG_QUEUE_SELECT 0x0E
#define REG_QUEUE_NOTIFY 0x10
#define REG_STATUS 0x12
#define REG_CONFIG 0x14 /* device config without MSI-X: the MAC first */

#define STATUS_ACK 1
#define STATUS_DRIVER 2
#define STATUS_DRIVER_OK 4
#define FEATURE_MAC (1u << 5)

#define DESC_NEXT 1
#define DESC_WRITE 2

#define QMAX 256      /* largest queue we lay out */
#define NBUF 64       /* buffers in use per queue */
#define BUF_SIZE 2048
#define NET_HDR 10    /* struct virtio_net_hdr without MRG_RXBUF */

struct desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
} __attribute__((packed));

struct queue {
    uint16_t size, last_used, free_head;
    struct desc *desc;
    volatile uint16_t *avail; /* flags, idx, ring[size] */
    volatile uint8_t *used;   /* flags, idx, {id, len}[size] */
    uint8_t mem[3 * 4096 * 2] __attribute__((aligned(4096)));
};

static struct queue rxq, txq;
static uint8_t rxbuf[NBUF][BUF_SIZE] __attribute__((aligned(16)));
static uint8_t txbuf[NBUF][BUF_SIZE] __attribute__((aligned(16)));
static uint16_t iobase;
static int irq_line = -1;
static struct spinlock nic_lock;
uint8_t nic_mac[6];

static int setup_queue(struct queue *q, uint16_t index) {
    uint32_t used_off;
    outw(iobase + REG_QUEUE_SELECT, index);
    q->size = inw(iobase + REG_QUEUE_SIZE);
    if (q->size == 0 || q->size > QMAX) return -1;
    q->desc = (struct desc *)q->mem;
    q->avail = (volatile uint16_t *)(q->mem + 16u * q->size);
    used_off = (16u * q->size + 6u + 2u * q->size + 4095u) & ~4095u;
    q->used = q->mem + used_off;
    outl(iobase + REG_QUEUE_PFN, (uint32_t)((uintptr_t)q->mem >> 12));
    return 0;
}

static uint16_t used_idx(const struct queue *q) { return *(volatile const uint16_t *)(q->used + 2); }

static void post_rx(uint16_t d) {
    uint16_t idx = rxq.avail[1];
    rxq.desc[d].addr = (uintptr_t)rxbuf[d];
    rxq.desc[d].len = BUF_SIZE;
    rxq.desc[d].flags = DESC_WRITE;
    rxq.avail[2 + idx % rxq.size] = d;
    barrier();
    rxq.avail[1] = (uint16_t)(idx + 1);
}

int nic_init(void) {
    struct pci_dev dev;
    uint32_t features;
    uint16_t i;
    if (pci_find(VIRTIO_VENDOR, VIRTIO_NET_LEGACY, &dev)) {
        kprintf("net: no virtio-net-pci (legacy) device\n");
        return -1;
    }
    iobase = (uint16_t)(pci_read32(&dev, 0x10) & ~3u);
    irq_line = (int)(pci_read32(&dev, 0x3C) & 0xFF);
    if (irq_line == 0xFF) irq_line = -1;
    pci_write32(&dev, 0x04, pci_read32(&dev, 0x04) | 0x5); /* I/O space + bus master */
    outb(iobase + REG_STATUS, 0);
    outb(iobase + REG_STATUS, STATUS_ACK);
    outb(iobase + REG_STATUS, STATUS_ACK | STATUS_DRIVER);
    features = inl(iobase + REG_HOST_FEATURES);
    outl(iobase + REG_GUEST_FEATURES, features & FEATURE_MAC);
    for (i = 0; i < 6; i++) nic_mac[i] = inb(iobase + REG_CONFIG + i);
    if (setup_queue(&rxq, 0) || setup_queue(&txq, 1)) {
        kprintf("net: bad virtqueue size\n");
        return -1;
    }
    for (i = 0; i < NBUF; i++) post_rx(i);
    outb(iobase + REG_STATUS, STATUS_ACK | STATUS_DRIVER | STATUS_DRIVER_OK);
    outw(iobase + REG_QUEUE_NOTIFY, 0);
    kprintf("net: virtio-net at io %x, mac %02x:%02x:%02x:%02x:%02x:%02x, queues %u/%u\n", iobase, nic_mac[0],
            nic_mac[1], nic_mac[2], nic_mac[3], nic_mac[4], nic_mac[5], rxq.size, txq.size);
    return 0;
}

static void lock(void) { spin_lock(&nic_lock); }
static void unlock(void) { spin_unlock(&nic_lock); }

int nic_irq(void) { return irq_line; }

void nic_ack(void) {
    if (iobase) (void)inb(iobase + 0x13);
}

int nic_send(const uint8_t *frame, unsigned len) {
    uint16_t idx, d;
    if (!iobase || len + NET_HDR > BUF_SIZE) return -1;
    lock();
    idx = txq.avail[1];
    /* at most NBUF in flight: wait for the device to give the oldest back */
    while ((uint16_t)(idx - used_idx(&txq)) >= NBUF) cpu_relax();
    d = idx % NBUF;
    memset(txbuf[d], 0, NET_HDR);
    memcpy(txbuf[d] + NET_HDR, frame, len);
    txq.desc[d].addr = (uintptr_t)txbuf[d];
    txq.desc[d].len = NET_HDR + len;
    txq.desc[d].flags = 0;
    txq.avail[2 + idx % txq.size] = d;
    barrier();
    txq.avail[1] = (uint16_t)(idx + 1);
    barrier();
    outw(iobase + REG_QUEUE_NOTIFY, 1);
    unlock();
    return 0;
}

unsigned nic_recv(uint8_t *buf, unsigned cap) {
    const volatile uint32_t *elem;
    uint32_t id, len;
    unsigned n = 0;
    if (!iobase) return 0;
    lock();
    if (used_idx(&rxq) != rxq.last_used) {
        barrier();
        elem = (const volatile uint32_t *)(rxq.used + 4 + 8u * (rxq.last_used % rxq.size));
        id = elem[0];
        len = elem[1];
        rxq.last_used++;
        if (id < NBUF && len > NET_HDR) {
            n = len - NET_HDR;
            if (n > cap) n = cap;
            memcpy(buf, rxbuf[id] + NET_HDR, n);
        }
        if (id < NBUF) post_rx((uint16_t)id);
        barrier();
        outw(iobase + REG_QUEUE_NOTIFY, 0);
    }
    unlock();
    return n;
}
