/* Ed25519 signature verification (RFC 8032 section 5.1.7), for PACKAGE_SIG on LOAD. */
#ifndef KERNEL_ED25519_H
#define KERNEL_ED25519_H
#include <stddef.h>
#include <stdint.h>

/* 1 when sig (R || S, 64 bytes) is pub's (32 bytes) signature of msg, else 0: S >= L, a
 * non-canonical or off-curve A or R, and a failed [S]B == R + [k]A all give 0. */
int ed25519_verify(const uint8_t sig[64], const uint8_t *msg, size_t n, const uint8_t pub[32]);
#endif
