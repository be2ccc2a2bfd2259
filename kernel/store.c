/* See store.h. The time of a record is the host's monotonic clock at the guest's start (mono=) plus
 * the guest's own clock since, so a reader's times of this store and of the Linux servers' compare
 * (to within the guest's boot time). No floating point in the kernel: the double is built from its
 * bits by long division. */
#include "store.h"
#include "bootargs.h"
#include "clock.h"
#include "console.h"
#include "io.h"
#include "spinlock.h"

#define COM2 0x2F8

static int present;
static struct spinlock store_lock;
static uint64_t seen[STORE_LINEAGES]; /* open addressing; 0 = empty (no lineage is 0) */
static unsigned seen_count;

int store_init(void) {
    outb(COM2 + 7, 0x5A); /* the scratch register reads back on a UART that is there */
    if (inb(COM2 + 7) != 0x5A) return -1;
    uart_init(COM2);
    present = 1;
    return 0;
}

int store_present(void) { return present; }

uint64_t f64_bits_of_ratio(uint64_t x, uint64_t d) {
    uint64_t m = x / d, r = x % d;
    int e = 52; /* value = m * 2^(e - 52) */
    if (!x) return 0;
    while (m >= 1ull << 53) m >>= 1, e++;
    while (m < 1ull << 52) { /* the next bit of the fraction */
        r <<= 1;
        m = m << 1 | (r >= d);
        if (r >= d) r -= d;
        e--;
    }
    return (uint64_t)(e + 1023) << 52 | (m & ((1ull << 52) - 1));
}

static int remember(uint64_t lineage) {
    unsigned h = (unsigned)((lineage * 0x9E3779B97F4A7C15ull) >> 49) % STORE_LINEAGES, k;
    for (k = 0; k < STORE_LINEAGES; k++, h = (h + 1) % STORE_LINEAGES) {
        if (seen[h] == lineage) return 0;
        if (!seen[h]) {
            if (seen_count + 1 >= STORE_LINEAGES) return -1;
            seen[h] = lineage;
            seen_count++;
            return 1;
        }
    }
    return -1;
}

static void put_byte(uint8_t b) {
    while (!(inb(COM2 + 5) & 0x20)) cpu_relax();
    outb(COM2, b);
}

static void put_be(uint64_t v, unsigned n) {
    while (n--) put_byte((uint8_t)(v >> (8 * n)));
}

int store_commit(uint64_t lineage, const uint8_t *item, unsigned len) {
    int fresh;
    unsigned i;
    if (!present) return -1;
    spin_lock(&store_lock);
    fresh = remember(lineage);
    if (fresh == 1) { /* in the file before the completion goes upstream: a record may be there twice, never lost */
        put_be(8 + 8 + len, 4);
        put_be(lineage, 8);
        put_be(f64_bits_of_ratio(bootargs.mono_ms * 1000 + now_us(), 1000000), 8);
        for (i = 0; i < len; i++) put_byte(item[i]);
    }
    spin_unlock(&store_lock);
    return fresh;
}
