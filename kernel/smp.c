/* Bringing up the application processors (INIT, then SIPI twice, per the MP start-up
 * protocol), and every core's DIME loop. */
#include "bootargs.h"
#include "clock.h"
#include "console.h"
#include "cpu.h"
#include "idt.h"
#include "io.h"
#include "lapic.h"
#include "memory.h"
#include "server.h"

#define AP_TRAMP 0x8000
#define STACK_SIZE 32768 /* the MICE's frames, and the DIME loop's on top when its timer preempts it */
#define TICK_US 1000

struct cpu cpus[MAX_CPUS];
unsigned ncpus = 1;
static uint8_t index_of_apic[256];
static uint8_t stacks[MAX_CPUS][STACK_SIZE] __attribute__((aligned(16)));

extern const uint8_t ap_tramp[], ap_tramp_end[];
extern uint64_t ap_stack;
extern uint32_t ap_index;

struct cpu *this_cpu(void) { return &cpus[index_of_apic[lapic_id() & 0xFF]]; }

static void wait_us(uint64_t us) {
    uint64_t end = rdtsc() + us * tsc_per_ms / 1000;
    while (rdtsc() < end) cpu_relax();
}

static void cpu_setup(unsigned index, uint8_t apic_id) {
    cpus[index].index = index;
    cpus[index].apic_id = apic_id;
    cpus[index].stack_top = (uint64_t)(stacks[index] + STACK_SIZE);
    index_of_apic[apic_id] = (uint8_t)index;
}

void ap_main(uint32_t index) {
    struct cpu *c = &cpus[index];
    idt_load();
    memory_enter(c);
    lapic_enable();
    lapic_timer_start(TICK_US);
    c->online = 1;
    cpu_dime_loop();
}

unsigned smp_boot(const struct cpus *found) {
    uint8_t bsp = (uint8_t)lapic_id();
    unsigned i, k;
    cpu_setup(0, bsp);
    cpus[0].online = 1;
    memcpy((void *)AP_TRAMP, ap_tramp, (size_t)(ap_tramp_end - ap_tramp));
    for (i = 0; i < found->count; i++) {
        uint8_t id = found->apic_id[i];
        if (id == bsp || ncpus >= MAX_CPUS) continue;
        k = ncpus;
        cpu_setup(k, id);
        ap_stack = cpus[k].stack_top;
        ap_index = k;
        barrier();
        lapic_ipi_init(id);
        wait_us(10000);
        lapic_ipi_startup(id, AP_TRAMP >> 12);
        wait_us(200);
        if (!cpus[k].online) lapic_ipi_startup(id, AP_TRAMP >> 12);
        for (uint64_t end = now_ms() + 2000; !cpus[k].online && now_ms() < end;) cpu_relax();
        if (!cpus[k].online) {
            kprintf("smp: cpu with APIC id %u did not start\n", id);
            index_of_apic[id] = 0;
            continue;
        }
        kprintf("smp: cpu %u (APIC id %u) online\n", k, id);
        ncpus++;
    }
    return ncpus;
}

/* The test hook: write our own first chunk (allowed), then the next DIME's (a page fault here). */
static void poke(unsigned index) {
    volatile uint64_t *own = (volatile uint64_t *)memory_chunk(index, 0);
    volatile uint64_t *other = (volatile uint64_t *)memory_chunk((index + 1) % ndimes, 0);
    bootargs.poke = 0xFFFF; /* once */
    if (dimes[index].mem_reserved) *own = 0xD1E;
    kprintf("dime %u: %s its own chunk at %lx; now the chunk of DIME %u at %lx\n", index,
            dimes[index].mem_reserved ? "wrote" : "holds no chunk, so skips",
            (unsigned long)(uintptr_t)own, (index + 1) % ndimes, (unsigned long)(uintptr_t)other);
    *other = 0xBAD;
    kprintf("dime %u: wrote another DIME's chunk: the partition leaks\n", index);
}

/* The DIME loop's turn, from the core's interrupts (its LAPIC timer, a wake IPI, the NIC's line on core 0),
 * so heartbeats and signaling keep their period whatever the MICE does. Interrupts are off throughout. */
void cpu_tick(void) {
    struct cpu *c = this_cpu();
    if (!c->looping) return; /* not yet in its loop (booting) */
    if (c->index == 0) {
        server_poll();
        server_tick();
        clock_refine();
    }
    dime_turn(&dimes[c->index]);
}

/* The core's main context: its MICE, one input at a time, preempted by the DIME loop; idle, it halts
 * until an interrupt (sti; hlt: a wake-up between the check and the halt is not lost). */
void cpu_dime_loop(void) {
    struct cpu *c = this_cpu();
    struct dime *d = &dimes[c->index];
    c->looping = 1;
    for (;;) {
        __asm__ volatile("cli");
        if (bootargs.poke == c->index && d->mem_reserved && d->state != PX_STATE_FAULTED) poke(c->index);
        if (!dime_mice_step(d)) __asm__ volatile("sti; hlt; cli" ::: "memory");
    }
}

void cpu_fault_loop(void) {
    __asm__ volatile("cli");
    dime_fault(&dimes[this_cpu()->index]);
    cpu_dime_loop();
}
