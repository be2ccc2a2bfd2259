/* Memory as the paper gives it: each DIME owns a partition of 2 MiB chunks, each one 2 MiB page.
 * The shared map leaves the chunk region out; a DIME's own page tables map only the chunks it
 * holds (MEM_ALLOC maps them, MEM_FREE returns them), so touching any other chunk, another
 * DIME's above all, faults the DIME that tried and no other. */
#ifndef KERNEL_MEMORY_H
#define KERNEL_MEMORY_H
#include <stdint.h>
#include "cpu.h"

#define CHUNK (2ull << 20)

/* Carve the partitions for n DIMEs of `chunks` chunks each; 0, or -1 when memory is short. */
int memory_partition(unsigned n, unsigned chunks);
/* Switch this core to its DIME's page tables. */
void memory_enter(struct cpu *c);
/* Chunks in each partition. */
unsigned memory_partition_chunks(void);
/* Map (present = 1) or unmap chunks [first, first + count) of the running core's own DIME. */
void memory_map(struct cpu *c, unsigned first, unsigned count, int present);
/* Chunk i of a DIME's partition (its physical = virtual address). */
uint64_t memory_chunk(unsigned dime, unsigned i);
#endif
