#include "px_codec.h"
#include "auth.h"
#include "bootargs.h"
#include "clock.h"
#include "io.h"
#include "sha256.h"
#include "spinlock.h"

#define WINDOW 64
#define SENDERS 32

struct window {
    uint8_t mac[6];
    uint16_t dime, key_id;
    uint64_t highest, seen; /* bit i: counter highest - i accepted */
    uint64_t used;          /* for eviction: the last time it moved */
};

static struct window windows[SENDERS];
static uint64_t clock_tick;
static struct spinlock auth_lock;

int auth_enabled(void) { return bootargs.key_id != 0; }

void auth_seal(uint8_t *frame, const PxView *v, const uint8_t *key, unsigned key_len) {
    uint8_t tag[32];
    px_ssize t = v->auth + PX_AUTH_TAG;
    hmac_sha256(key, key_len, frame, (size_t)t, tag);
    px_copy(frame + t, tag, PX_TAG_LEN);
}

static struct window *window_of(const uint8_t *mac, unsigned dime, unsigned key_id, int create) {
    struct window *w, *oldest = &windows[0];
    unsigned i;
    for (i = 0; i < SENDERS; i++) {
        w = &windows[i];
        if (w->key_id == key_id && w->dime == dime && !memcmp(w->mac, mac, 6)) return w;
        if (w->used < oldest->used) oldest = w;
    }
    if (!create) return 0;
    px_copy(oldest->mac, mac, 6);
    oldest->dime = (uint16_t)dime;
    oldest->key_id = (uint16_t)key_id;
    oldest->highest = oldest->seen = 0;
    return oldest;
}

enum auth_verdict auth_check(struct keyring *ring, const uint8_t *raw, const PxView *v) {
    uint8_t tag[32], key[KEY_MAX], diff = 0;
    int key_len;
    struct window *w;
    uint64_t c = v->auth_counter, behind;
    enum auth_verdict verdict = AUTH_OK;
    unsigned i;
    if (!v->has_auth) return AUTH_UNSIGNED;
    key_len = keyring_lookup(ring, v->auth_key_id, now_ms(), key);
    if (key_len == RING_RETIRED) return AUTH_RETIRED_KEY;
    if (key_len < 0) return AUTH_BAD_KEY;
    spin_lock(&auth_lock);
    w = window_of(raw + PX_ETH_SRC, v->src_dime, v->auth_key_id, 0);
    if (w && c <= w->highest) {
        behind = w->highest - c;
        if (behind >= WINDOW) verdict = AUTH_TOO_OLD;
        else if (w->seen >> behind & 1) verdict = AUTH_REPLAYED;
    }
    if (verdict == AUTH_OK) {
        hmac_sha256(key, (size_t)key_len, raw, (size_t)(v->auth + PX_AUTH_TAG), tag);
        for (i = 0; i < PX_TAG_LEN; i++) diff |= tag[i] ^ raw[v->auth + PX_AUTH_TAG + i];
        if (diff) verdict = AUTH_BAD_TAG;
    }
    if (verdict == AUTH_OK) {
        if (!w) w = window_of(raw + PX_ETH_SRC, v->src_dime, v->auth_key_id, 1);
        if (c > w->highest) {
            behind = c - w->highest;
            w->seen = behind < WINDOW ? (w->seen << behind) | 1 : 1;
            w->highest = c;
        } else {
            w->seen |= 1ull << (w->highest - c);
        }
        w->used = ++clock_tick;
    }
    spin_unlock(&auth_lock);
    return verdict;
}
