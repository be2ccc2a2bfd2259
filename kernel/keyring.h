/* A key ring, as pxproto/dime/replay.py's KeyStore: keys by id (1..65535), the one to sign with,
 * and rotation (KEY_ROTATE: the key rotated out is accepted for ROTATION_GRACE_MS more, then retired
 * for good; a retired id never comes back).  Each DIME has one (KEY_INSTALL and KEY_ROTATE change
 * it); the server's is the boot key's and never changes, as on the Linux node. */
#ifndef KERNEL_KEYRING_H
#define KERNEL_KEYRING_H
#include <stdint.h>
#include "bootargs.h"

#define RING_KEYS 8
#define ROTATION_GRACE_MS 1000 /* pxproto.dime.keys.ROTATION_GRACE */
#define RING_MIN_KEY 16        /* pxproto.dime.replay.KEY_MIN_BYTES */

enum ring_miss { RING_UNKNOWN = -1, RING_RETIRED = -2 };

struct ring_key {
    uint16_t id; /* 0 = empty */
    uint8_t len;
    uint8_t key[KEY_MAX];
};

struct keyring {
    uint16_t current;  /* the key id frames are signed with (0: none) */
    uint16_t rot_old;  /* a rotation in its grace: the key rotated out (0: none) */
    uint64_t rot_retire_ms;
    struct ring_key keys[RING_KEYS];
    uint8_t retired[0x10000 / 8];
};

void keyring_init(struct keyring *k, unsigned id, const uint8_t *key, unsigned len);
/* The key of id at now_ms into out (KEY_MAX bytes): its length, or RING_UNKNOWN / RING_RETIRED. */
int keyring_lookup(struct keyring *k, unsigned id, uint64_t now_ms, uint8_t *out);
/* KEY_INSTALL: 0, or why not (a retired id, a bad length, a full ring). */
const char *keyring_install(struct keyring *k, unsigned id, const uint8_t *key, unsigned len);
/* KEY_ROTATE: 0 if id is installed (and unretired at now_ms), -1 if not. */
int keyring_rotate(struct keyring *k, unsigned id, uint64_t now_ms);
/* The key to sign with into out (KEY_MAX bytes) and its length in *len: its id (0: none). */
unsigned keyring_signing(struct keyring *k, uint8_t *out, unsigned *len);
#endif
