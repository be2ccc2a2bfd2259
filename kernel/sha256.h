/* SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104), for the authentication trailer. */
#ifndef KERNEL_SHA256_H
#define KERNEL_SHA256_H
#include <stddef.h>
#include <stdint.h>

struct sha256 {
    uint32_t h[8];
    uint64_t bytes;
    uint8_t block[64];
    unsigned fill;
};

void sha256_init(struct sha256 *s);
void sha256_update(struct sha256 *s, const uint8_t *data, size_t n);
void sha256_final(struct sha256 *s, uint8_t out[32]);
void hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *msg, size_t n, uint8_t out[32]);
#endif
