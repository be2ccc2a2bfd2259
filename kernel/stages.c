/* The built-in stages (see stages.h). */
#include "stages.h"

static const struct builtin_stage table[] = {
    { "source", 0, STAGE_SOURCE },
    { "parse", stage_parse, STAGE_ITEM },
    { "transform", stage_transform, STAGE_ITEM },
    { "sink", 0, STAGE_SINK },
};

static unsigned span_to_tab(const uint8_t *in, unsigned n) {
    unsigned i = 0;
    while (i < n && in[i] != '\t') i++;
    return i;
}

static int put(uint8_t *out, unsigned cap, unsigned *at, const uint8_t *p, unsigned n) {
    unsigned i;
    if (*at + n > cap) return -1;
    for (i = 0; i < n; i++) out[*at + i] = p[i];
    *at += n;
    return 0;
}

static int letter(uint8_t c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }

int stage_parse(const uint8_t *in, unsigned n, uint8_t *out, unsigned cap) {
    unsigned tab = span_to_tab(in, n), i, at = 0, words = 0;
    if (put(out, cap, &at, in, tab) || put(out, cap, &at, (const uint8_t *)"\t", 1)) return -1;
    for (i = tab + 1; i < n;) {
        if (!letter(in[i])) {
            i++;
            continue;
        }
        if (words++ && put(out, cap, &at, (const uint8_t *)" ", 1)) return -1;
        for (; i < n && letter(in[i]); i++) {
            uint8_t low = in[i] | 0x20; /* A-Z -> a-z */
            if (put(out, cap, &at, &low, 1)) return -1;
        }
    }
    return (int)at;
}

uint32_t crc32_bytes(const uint8_t *p, unsigned n) {
    uint32_t c = 0xFFFFFFFFu;
    unsigned i, k;
    for (i = 0; i < n; i++) {
        c ^= p[i];
        for (k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
    }
    return ~c;
}

/* str.split()'s whitespace, the ASCII part */
static int space(uint8_t c) { return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f); }

static int put_uint(uint8_t *out, unsigned cap, unsigned *at, uint64_t v) {
    uint8_t digits[20];
    unsigned k = 0;
    do digits[k++] = (uint8_t)('0' + v % 10), v /= 10;
    while (v);
    while (k)
        if (put(out, cap, at, &digits[--k], 1)) return -1;
    return 0;
}

int stage_transform(const uint8_t *in, unsigned n, uint8_t *out, unsigned cap) {
    unsigned tab = span_to_tab(in, n), i, at = 0, words = 0;
    uint32_t sum = 0;
    for (i = tab + 1; i < n;) {
        unsigned start;
        if (space(in[i])) {
            i++;
            continue;
        }
        for (start = i; i < n && !space(in[i]); i++) continue;
        words++;
        sum += crc32_bytes(in + start, i - start);
    }
    if (put(out, cap, &at, in, tab) || put(out, cap, &at, (const uint8_t *)"\t", 1) ||
        put_uint(out, cap, &at, words) || put(out, cap, &at, (const uint8_t *)"\t", 1) ||
        put_uint(out, cap, &at, sum))
        return -1;
    return (int)at;
}

int source_item(const struct source_spec *s, uint64_t i, uint8_t *out, unsigned cap) {
    unsigned at = 0, k = s->lines ? (unsigned)(i % s->lines) : 0;
    if (!s->lines || put_uint(out, cap, &at, i) || put(out, cap, &at, (const uint8_t *)"\t", 1) ||
        put(out, cap, &at, s->text + s->at[k], s->at[k + 1] - s->at[k]))
        return -1;
    return (int)at;
}

const struct builtin_stage *builtin_stage(const char *name, unsigned len) {
    unsigned i, k;
    for (i = 0; i < sizeof table / sizeof table[0]; i++) {
        for (k = 0; k < len && table[i].name[k] == name[k]; k++) continue;
        if (k == len && table[i].name[k] == 0) return &table[i];
    }
    return 0;
}
