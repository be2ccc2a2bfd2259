#include "lapic.h"
#include "clock.h"
#include "acpi.h"
#include "io.h"

#define REG_ID 0x20
#define REG_EOI 0xB0
#define REG_SVR 0xF0
#define REG_ICR_LO 0x300
#define REG_ICR_HI 0x310
#define REG_LVT_TIMER 0x320
#define REG_TIMER_INIT 0x380
#define REG_TIMER_CUR 0x390
#define REG_TIMER_DIV 0x3E0
#define LVT_MASKED (1u << 16)
#define LVT_PERIODIC (1u << 17)

static volatile uint8_t *lapic = (volatile uint8_t *)0xFEE00000;
static uint32_t ticks_per_ms;

static uint32_t rd(unsigned reg) { return *(volatile uint32_t *)(lapic + reg); }
static void wr(unsigned reg, uint32_t v) { *(volatile uint32_t *)(lapic + reg) = v; }

void lapic_set_base(uint64_t base) { lapic = (volatile uint8_t *)(uintptr_t)base; }
uint32_t lapic_id(void) { return rd(REG_ID) >> 24; }
void lapic_enable(void) { wr(REG_SVR, 0x100 | SPURIOUS_VECTOR); }
void lapic_eoi(void) { wr(REG_EOI, 0); }

void lapic_timer_calibrate(void) {
    uint64_t end;
    wr(REG_TIMER_DIV, 0x3); /* divide by 16 */
    wr(REG_LVT_TIMER, LVT_MASKED | TIMER_VECTOR);
    wr(REG_TIMER_INIT, 0xFFFFFFFF);
    end = rdtsc() + 10 * tsc_per_ms;
    while (rdtsc() < end) cpu_relax();
    ticks_per_ms = (0xFFFFFFFF - rd(REG_TIMER_CUR)) / 10;
    wr(REG_TIMER_INIT, 0);
    if (!ticks_per_ms) ticks_per_ms = 1000;
}

void lapic_timer_start(unsigned tick_us) {
    uint64_t count = (uint64_t)ticks_per_ms * tick_us / 1000;
    wr(REG_TIMER_DIV, 0x3);
    wr(REG_LVT_TIMER, LVT_PERIODIC | TIMER_VECTOR);
    wr(REG_TIMER_INIT, count ? (uint32_t)count : 1);
}

static void icr(uint8_t apic_id, uint32_t lo) {
    wr(REG_ICR_HI, (uint32_t)apic_id << 24);
    wr(REG_ICR_LO, lo);
    while (rd(REG_ICR_LO) & (1u << 12)) cpu_relax(); /* delivery pending */
}

void lapic_ipi_init(uint8_t apic_id) { icr(apic_id, 0x4500); }
void lapic_ipi_wake(uint8_t apic_id) { icr(apic_id, 0x4000 | WAKE_VECTOR); }

/* I/O APIC: IOREGSEL at +0, IOWIN at +0x10; redirection entry of pin p at registers 0x10 + 2p. */
void ioapic_route(const struct cpus *found, unsigned irq, uint8_t vector) {
    volatile uint32_t *io = (volatile uint32_t *)(uintptr_t)found->ioapic_base;
    unsigned gsi, pin, flags, polarity, trigger;
    uint32_t lo;
    if (!io || irq >= 16) return;
    gsi = found->isa_gsi[irq];
    flags = found->isa_flags[irq];
    polarity = flags & 3;        /* 0 = bus default, 1 = high, 3 = low */
    trigger = (flags >> 2) & 3;  /* 0 = bus default, 1 = edge, 3 = level */
    pin = gsi - found->ioapic_gsi_base;
    /* PCI INTx is level-triggered; without an override take QEMU's (active high) */
    lo = vector | (polarity == 3 ? 1u << 13 : 0) | (trigger == 1 ? 0 : 1u << 15);
    io[0] = 0x11 + 2 * pin;
    io[4] = (uint32_t)lapic_id() << 24;
    io[0] = 0x10 + 2 * pin;
    io[4] = lo;
}

void lapic_ipi_startup(uint8_t apic_id, uint8_t vector_page) { icr(apic_id, 0x4600 | vector_page); }
