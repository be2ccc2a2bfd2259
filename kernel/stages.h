/* The built-in MICE stages: C versions of the demo workflow's Python stages
 * (pxproto/orch/workflows/wordcount/stages.py), item for item the same bytes for ASCII text.
 * A bare-metal DIME runs one of them when LOAD names, in the package built into the image
 * (builtin_pkg.h, generated), a stage that has one here. */
#ifndef KERNEL_STAGES_H
#define KERNEL_STAGES_H
#include <stdint.h>

/* One item in, one item out (its length), or -1 when out (cap bytes) is too small. */
typedef int (*stage_fn)(const uint8_t *in, unsigned n, uint8_t *out, unsigned cap);

struct builtin_stage {
    const char *name;
    stage_fn fn;
};

/* "LINENO<TAB>LINE" -> "LINENO<TAB>word word ..." (lower case, letters only) */
int stage_parse(const uint8_t *in, unsigned n, uint8_t *out, unsigned cap);
/* "LINENO<TAB>words" -> "LINENO<TAB>WORDS<TAB>CHECKSUM" (CRC-32 of each word, summed mod 2^32) */
int stage_transform(const uint8_t *in, unsigned n, uint8_t *out, unsigned cap);
uint32_t crc32_bytes(const uint8_t *p, unsigned n);
/* The built-in stage of that name, or 0. */
const struct builtin_stage *builtin_stage(const char *name, unsigned len);
#endif
