#include "idt.h"
#include "console.h"
#include "cpu.h"
#include "io.h"
#include "lapic.h"
#include "spinlock.h"
#include "virtio_net.h"

struct gate {
    uint16_t off0, sel;
    uint8_t ist, type;
    uint16_t off1;
    uint32_t off2, zero;
} __attribute__((packed));

struct iframe {
    uint64_t ip, cs, flags, sp, ss;
};

static struct gate idt[256];
static struct {
    uint16_t limit;
    uint64_t base;
} __attribute__((packed)) idtr = { sizeof idt - 1, (uint64_t)idt };

static void set_gate(unsigned v, void *fn) {
    uint64_t a = (uint64_t)fn;
    idt[v] = (struct gate){ (uint16_t)a, 0x08, 0, 0x8E, (uint16_t)(a >> 16), (uint32_t)(a >> 32), 0 };
}

__attribute__((interrupt)) static void on_timer(struct iframe *f) {
    (void)f;
    this_cpu()->ticks++;
    lapic_eoi();
    cpu_tick();
}

__attribute__((interrupt)) static void on_nic(struct iframe *f) {
    (void)f;
    nic_ack(); /* lowers the level-triggered line; core 0's loop polls the queue */
    lapic_eoi();
    cpu_tick();
}

__attribute__((interrupt)) static void on_wake(struct iframe *f) {
    (void)f;
    lapic_eoi();
    cpu_tick();
}

__attribute__((interrupt)) static void on_spurious(struct iframe *f) { (void)f; }

static uint64_t read_cr2(void) {
    uint64_t v;
    __asm__ volatile("mov %%cr2, %0" : "=r"(v));
    return v;
}

/* An exception: the core's DIME is FAULTED, and the core resumes in its fault loop on a fresh stack. */
static void fault(struct iframe *f, unsigned vector, uint64_t error) {
    struct cpu *c = this_cpu();
    spin_release_mine();
    kprintf("cpu %u: exception %u (error %x) at %lx, address %lx: DIME %u faulted\n", c->index, vector,
            (unsigned)error, (unsigned long)f->ip, (unsigned long)(vector == 14 ? read_cr2() : 0), c->index);
    f->ip = (uint64_t)cpu_fault_loop;
    f->sp = c->stack_top;
    f->flags &= ~(1ull << 10);
}

#define EXC(n)                                                                                      \
    __attribute__((interrupt)) static void exc##n(struct iframe *f) { fault(f, n, 0); }
#define EXC_ERR(n)                                                                                  \
    __attribute__((interrupt)) static void exc##n(struct iframe *f, uint64_t e) { fault(f, n, e); }
EXC(0) EXC(1) EXC(2) EXC(3) EXC(4) EXC(5) EXC(6) EXC(7) EXC_ERR(8) EXC(9) EXC_ERR(10) EXC_ERR(11)
EXC_ERR(12) EXC_ERR(13) EXC_ERR(14) EXC(16) EXC_ERR(17) EXC(18) EXC(19) EXC(20)

void idt_init(void) {
    void *exc[21] = { exc0, exc1, exc2, exc3, exc4, exc5, exc6, exc7, exc8, exc9, exc10, exc11, exc12, exc13, exc14,
                      0, exc16, exc17, exc18, exc19, exc20 };
    unsigned v;
    for (v = 0; v < 21; v++)
        if (exc[v]) set_gate(v, exc[v]);
    set_gate(TIMER_VECTOR, on_timer);
    set_gate(NIC_VECTOR, on_nic);
    set_gate(WAKE_VECTOR, on_wake);
    set_gate(SPURIOUS_VECTOR, on_spurious);
}

void idt_load(void) { __asm__ volatile("lidt %0" ::"m"(idtr)); }
