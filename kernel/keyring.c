/* The semantics are pxproto.dime.replay.KeyStore's, line for line; one lock for every ring (the
 * server's core verifies against a DIME's ring while that DIME's core may be changing it). */
#include "keyring.h"
#include "io.h"
#include "spinlock.h"

static struct spinlock ring_lock;

static struct ring_key *slot(struct keyring *k, unsigned id) {
    unsigned i;
    for (i = 0; i < RING_KEYS; i++)
        if (k->keys[i].id == id) return &k->keys[i];
    return 0;
}

static int is_retired(const struct keyring *k, unsigned id) { return k->retired[id >> 3] >> (id & 7) & 1; }

static void complete_rotation(struct keyring *k) {
    struct ring_key *s;
    if (!k->rot_old) return;
    if ((s = slot(k, k->rot_old)) != 0) memset(s, 0, sizeof *s);
    k->retired[k->rot_old >> 3] |= (uint8_t)(1 << (k->rot_old & 7));
    k->rot_old = 0;
}

static void put(struct keyring *k, struct ring_key *s, unsigned id, const uint8_t *key, unsigned len) {
    s->id = (uint16_t)id;
    s->len = (uint8_t)len;
    memcpy(s->key, key, len);
    if (!k->current) k->current = (uint16_t)id;
}

void keyring_init(struct keyring *k, unsigned id, const uint8_t *key, unsigned len) {
    memset(k, 0, sizeof *k);
    if (id && len) put(k, &k->keys[0], id, key, len);
}

int keyring_lookup(struct keyring *k, unsigned id, uint64_t now_ms, uint8_t *out) {
    struct ring_key *s;
    int n;
    spin_lock(&ring_lock);
    if (k->rot_old && now_ms >= k->rot_retire_ms) complete_rotation(k);
    s = id ? slot(k, id) : 0;
    if (s) {
        memcpy(out, s->key, s->len);
        n = s->len;
    } else {
        n = is_retired(k, id) ? RING_RETIRED : RING_UNKNOWN;
    }
    spin_unlock(&ring_lock);
    return n;
}

const char *keyring_install(struct keyring *k, unsigned id, const uint8_t *key, unsigned len) {
    struct ring_key *s;
    const char *why = 0;
    if (!id || id > 0xFFFF) return "key id is not in 1..65535";
    if (len < RING_MIN_KEY) return "the unwrapped key has fewer than 16 bytes";
    if (len > KEY_MAX) return "the unwrapped key is longer than 64 bytes";
    spin_lock(&ring_lock);
    if (is_retired(k, id)) {
        why = "key id was retired and cannot come back";
    } else if ((s = slot(k, id)) != 0 || (s = slot(k, 0)) != 0) {
        put(k, s, id, key, len);
    } else {
        why = "the key ring is full (8 keys): rotate and let a key retire first";
    }
    spin_unlock(&ring_lock);
    return why;
}

int keyring_rotate(struct keyring *k, unsigned id, uint64_t now_ms) {
    int ok;
    spin_lock(&ring_lock);
    if (k->rot_old && now_ms >= k->rot_retire_ms) complete_rotation(k); /* as a lookup would first */
    ok = id && slot(k, id) != 0;
    if (ok) {
        if (k->rot_old) {
            if (k->rot_old == id) k->rot_old = 0; /* back to the key still in its grace: it stays */
            else complete_rotation(k);
        }
        if (k->current && k->current != id) {
            k->rot_old = k->current;
            k->rot_retire_ms = now_ms + ROTATION_GRACE_MS;
        }
        k->current = (uint16_t)id;
    }
    spin_unlock(&ring_lock);
    return ok ? 0 : -1;
}

unsigned keyring_signing(struct keyring *k, uint8_t *out, unsigned *len) {
    struct ring_key *s;
    unsigned id;
    spin_lock(&ring_lock);
    id = k->current;
    s = id ? slot(k, id) : 0;
    *len = s ? s->len : 0;
    if (s) memcpy(out, s->key, s->len);
    spin_unlock(&ring_lock);
    return s ? id : 0;
}
