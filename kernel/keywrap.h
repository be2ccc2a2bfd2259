/* KEY_INSTALL's unwrap (pxproto/dime/keys.py unwrap_key): the KEK is HKDF-SHA256 (RFC 5869, no salt)
 * of an installed cluster key with info "pxproto KEY_INSTALL wrap v1" || new key id (2 bytes, big
 * endian); the new key is under AES-256 key wrap with padding (RFC 5649, over RFC 3394's W^-1). */
#ifndef KERNEL_KEYWRAP_H
#define KERNEL_KEYWRAP_H
#include <stddef.h>
#include <stdint.h>

#define KEYWRAP_MAX 64 /* the longest key unwrapped (the key ring's KEY_MAX) */

/* FIPS 197: the inverse cipher of AES-256 on one block, in place. */
void aes256_decrypt(const uint8_t key[32], uint8_t block[16]);
/* RFC 5869 with SHA-256, no salt, 32 bytes of output. */
void hkdf_sha256(const uint8_t *ikm, size_t ikm_len, const uint8_t *info, size_t info_len, uint8_t out[32]);
/* RFC 5649 unwrap of wrapped (len bytes) under kek: the key's length (1..cap) into out, or -1 if the
 * integrity check fails, the length is not a valid wrapping, or the key is longer than cap. */
int aes_kw_unwrap_pad(const uint8_t kek[32], const uint8_t *wrapped, size_t len, uint8_t *out, size_t cap);
/* The KEK of pxproto's KEY_INSTALL wrapping for new_id, from the wrapping key. */
void keywrap_kek(const uint8_t *wrapping_key, size_t len, unsigned new_id, uint8_t kek[32]);
#endif
