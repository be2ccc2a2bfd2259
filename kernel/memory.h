/* Memory as the paper gives it: each DIME owns a partition of 2 MiB chunks, each one 2 MiB page.
 * The shared map leaves the chunk region out; a DIME's own page tables map its chunks only, so
 * touching another DIME's chunk faults the DIME that tried. */
#ifndef KERNEL_MEMORY_H
#define KERNEL_MEMORY_H
#include <stdint.h>
#include "cpu.h"

#define CHUNK (2ull << 20)

/* Carve the partitions for n DIMEs of `chunks` chunks each; 0, or -1 when memory is short. */
int memory_partition(unsigned n, unsigned chunks);
/* Switch this core to its DIME's page tables. */
void memory_enter(struct cpu *c);
/* The first chunk of a DIME's partition (its physical = virtual address). */
uint64_t memory_chunk(unsigned dime, unsigned i);
#endif
