/* Hex arguments of the hosted kernel-code drivers (tests/c/NAME_check.c): "-" is empty; a bad or too
 * long value ends the driver with status 2 and a line on stderr naming the driver. */
#ifndef TESTS_C_HEXARG_H
#define TESTS_C_HEXARG_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t unhex_as(const char *who, const char *s, uint8_t *out, size_t cap) {
    size_t n;
    if (!s) {
        fprintf(stderr, "%s: missing argument\n", who);
        exit(2);
    }
    if (strcmp(s, "-") == 0) return 0;
    n = strlen(s) / 2;
    if (n > cap || strlen(s) % 2) {
        fprintf(stderr, "%s: bad hex %.20s\n", who, s);
        exit(2);
    }
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(s + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
    return n;
}
#endif
