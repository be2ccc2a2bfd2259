#include "memory.h"
#include "console.h"
#include "io.h"

#define CHUNK_BASE (64ull << 20) /* above the kernel image and its tables */
#define PAGE_2M_FLAGS 0x83ull    /* present, writable, 2 MiB page */

extern uint64_t pml4[512], pdpt[512], pd[2048];

/* per DIME: a PML4, a PDPT and the first GiB's PD (the chunks live there); the other GiBs are shared */
struct tables {
    uint64_t pml4[512], pdpt[512], pd0[512];
} __attribute__((aligned(4096)));

static struct tables tables[MAX_CPUS];
static unsigned per_dime;

uint64_t memory_chunk(unsigned dime, unsigned i) { return CHUNK_BASE + ((uint64_t)dime * per_dime + i) * CHUNK; }

static unsigned pd_index(uint64_t addr) { return (unsigned)(addr >> 21); }

int memory_partition(unsigned n, unsigned chunks) {
    unsigned d, i;
    per_dime = chunks;
    if (memory_chunk(n, 0) > (1ull << 30)) {
        kprintf("memory: %u DIMEs x %u chunks do not fit the first GiB\n", n, chunks);
        return -1;
    }
    for (d = 0; d < n; d++) {
        struct tables *t = &tables[d];
        memcpy(t->pml4, pml4, sizeof t->pml4);
        memcpy(t->pdpt, pdpt, sizeof t->pdpt);
        memcpy(t->pd0, pd, sizeof t->pd0);
        t->pml4[0] = (uint64_t)t->pdpt | 3;
        t->pdpt[0] = (uint64_t)t->pd0 | 3;
        for (i = pd_index(memory_chunk(0, 0)); i < pd_index(memory_chunk(n, 0)); i++) t->pd0[i] = 0;
    }
    /* the shared map (the BSP before it becomes DIME 0) loses the chunks too */
    for (i = pd_index(memory_chunk(0, 0)); i < pd_index(memory_chunk(n, 0)); i++) pd[i] = 0;
    __asm__ volatile("mov %%cr3, %%rax; mov %%rax, %%cr3" ::: "rax", "memory");
    kprintf("memory: %u DIME(s) x %u chunk(s) of 2 MiB from %lx, mapped only in their DIME's page tables when held\n", n,
            chunks, (unsigned long)CHUNK_BASE);
    return 0;
}

unsigned memory_partition_chunks(void) { return per_dime; }

void memory_map(struct cpu *c, unsigned first, unsigned count, int present) {
    struct tables *t = &tables[c->index];
    unsigned i;
    for (i = first; i < first + count && i < per_dime; i++) {
        uint64_t a = memory_chunk(c->index, i);
        t->pd0[pd_index(a)] = present ? a | PAGE_2M_FLAGS : 0;
        __asm__ volatile("invlpg (%0)" ::"r"(a) : "memory");
    }
}

void memory_enter(struct cpu *c) {
    c->cr3 = (uint64_t)&tables[c->index];
    __asm__ volatile("mov %0, %%cr3" ::"r"(c->cr3) : "memory");
}
