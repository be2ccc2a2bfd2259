/* The authentication trailer: sign what we send, verify what we receive (pxproto/wire/auth.py,
 * pxproto/dime/replay.py): the tag is HMAC-SHA256 over the frame up to the counter, truncated to
 * PX_TAG_LEN; each sender (MAC, DIME, key id) has a 64-counter sliding window, moved only by a
 * frame whose tag verified.  Keys come from a key ring (keyring.h): the DIME's, or the server's. */
#ifndef KERNEL_AUTH_H
#define KERNEL_AUTH_H
#include <stdint.h>
#include "px_codec.h"
#include "keyring.h"

enum auth_verdict { AUTH_OK, AUTH_UNSIGNED, AUTH_BAD_KEY, AUTH_RETIRED_KEY, AUTH_BAD_TAG, AUTH_REPLAYED, AUTH_TOO_OLD };

int auth_enabled(void);
/* Put a valid tag (under key) into an encoded frame whose trailer (key id, counter) is in place. */
void auth_seal(uint8_t *frame, const PxView *v, const uint8_t *key, unsigned key_len);
/* Verify a received frame's trailer against ring; the sender's window moves only if AUTH_OK. */
enum auth_verdict auth_check(struct keyring *ring, const uint8_t *raw, const PxView *v);
#endif
