/* The built-in MICE stages: C versions of the demo workflow's Python stages
 * (pxproto/orch/workflows/wordcount/stages.py), item for item the same bytes for ASCII text.
 * A bare-metal DIME runs one of them when LOAD names, in the package built into the image
 * (builtin_pkg.h, generated), a stage that has one here. */
#ifndef KERNEL_STAGES_H
#define KERNEL_STAGES_H
#include <stdint.h>

/* One item in, one item out (its length), or -1 when out (cap bytes) is too small. */
typedef int (*stage_fn)(const uint8_t *in, unsigned n, uint8_t *out, unsigned cap);

/* An item stage runs fn on each input; a source makes items (source_item); a sink commits each input
 * to the server's store (plane_io.commit) and makes nothing. */
enum stage_kind { STAGE_ITEM, STAGE_SOURCE, STAGE_SINK };

struct builtin_stage {
    const char *name;
    stage_fn fn; /* an item stage's */
    enum stage_kind kind;
};

/* A source's corpus and pacing (the demo's source: "I<TAB>LINE" for line I % lines, lines * passes items,
 * rate a second, 0: as fast as the channel takes them). Line k is text[at[k] .. at[k + 1]). */
struct source_spec {
    const uint8_t *text;
    const uint32_t *at;
    unsigned lines, passes, rate;
};

/* Item i of a source into out: its length, or -1 when it does not fit cap bytes. */
int source_item(const struct source_spec *s, uint64_t i, uint8_t *out, unsigned cap);

/* "LINENO<TAB>LINE" -> "LINENO<TAB>word word ..." (lower case, letters only) */
int stage_parse(const uint8_t *in, unsigned n, uint8_t *out, unsigned cap);
/* "LINENO<TAB>words" -> "LINENO<TAB>WORDS<TAB>CHECKSUM" (CRC-32 of each word, summed mod 2^32) */
int stage_transform(const uint8_t *in, unsigned n, uint8_t *out, unsigned cap);
uint32_t crc32_bytes(const uint8_t *p, unsigned n);
/* The built-in stage of that name, or 0. */
const struct builtin_stage *builtin_stage(const char *name, unsigned len);
#endif
