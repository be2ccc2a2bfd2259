/* The bare-metal server's local store, for a sink's commits: one object (the demo's
 * "wordcount/results"), appended to the second serial port (COM2), which the host points at a file
 * (qemu -serial file:LOG -serial file:WORKDIR/serverN/store/objects/wordcount/results). Records are
 * pxproto.package.LocalStore's: u32 length | lineage u64 | host monotonic seconds f64 | item, each
 * lineage once for the life of the server (pxproto.node.mice.Context.commit), whichever DIME commits. */
#ifndef KERNEL_STORE_H
#define KERNEL_STORE_H
#include <stdint.h>

#define STORE_LINEAGES 32768 /* lineages remembered (a demo run commits 2400) */

/* Look for COM2; 0 if it is there. */
int store_init(void);
int store_present(void);
/* Commit item (its lineage) once: 1 written, 0 already there, -1 no store or no room to remember it. */
int store_commit(uint64_t lineage, const uint8_t *item, unsigned len);
/* x / d as the bits of an IEEE 754 double (truncated, not rounded); x > 0, d > 0. */
uint64_t f64_bits_of_ratio(uint64_t x, uint64_t d);
#endif
