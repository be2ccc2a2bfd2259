/* SHA-512 (FIPS 180-4), for Ed25519 signature verification (ed25519.h). */
#ifndef KERNEL_SHA512_H
#define KERNEL_SHA512_H
#include <stddef.h>
#include <stdint.h>

struct sha512 {
    uint64_t h[8];
    uint64_t bytes;
    uint8_t block[128];
    unsigned fill;
};

void sha512_init(struct sha512 *s);
void sha512_update(struct sha512 *s, const uint8_t *data, size_t n);
void sha512_final(struct sha512 *s, uint8_t out[64]);
#endif
