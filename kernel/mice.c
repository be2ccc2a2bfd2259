/* A bare-metal DIME's MICE commands: LOAD a built-in stage (the image's package, its digest,
 * size and signature checked), START and STOP it, CONNECT and DISCONNECT its data channels.
 * The Linux node's handlers are pxproto/node/fcaps.py's. */
#include "px_codec.h"
#include "request.h"
#include "auth.h"
#include "bootargs.h"
#include "builtin_pkg.h"
#include "clock.h"
#include "console.h"
#include "ed25519.h"
#include "io.h"
#include "sha256.h"
#include "spinlock.h"
#include "store.h"

static int digest_ok(const uint8_t *want) {
    static uint8_t have[32];
    static int done;
    if (!done) { /* once: the archive does not change */
        struct sha256 s;
        sha256_init(&s);
        sha256_update(&s, builtin_pkg, BUILTIN_PKG_SIZE);
        sha256_final(&s, have);
        done = 1;
    }
    return !memcmp(have, want, 32);
}

/* PACKAGE_SIG (2-byte big-endian key id + Ed25519 signature) over the built-in archive, under a vk=
 * key: NULL when it verifies, else why not. The archive is fixed, so a signature that verified once is
 * remembered (by key id and signature) and not checked again. */
#define SIG_CACHE 4
static struct {
    uint16_t id;
    uint8_t sig[64];
} sig_ok[SIG_CACHE];
static unsigned sig_ok_n;
static struct spinlock sig_lock;

static const char *package_sig_error(const uint8_t *sig, unsigned len) {
    const struct verify_key *k = 0;
    uint16_t id;
    unsigned i;
    int ok;
    if (!bootargs.vk_count)
        return "no verification key (vk=) given at boot: PACKAGE_SIG cannot be checked";
    if (!sig || len != 66)
        return "PACKAGE_SIG missing or not 66 bytes (key id + Ed25519 signature)";
    id = (uint16_t)(sig[0] << 8 | sig[1]);
    for (i = 0; i < bootargs.vk_count; i++)
        if (bootargs.vk[i].id == id)
            k = &bootargs.vk[i];
    if (!k)
        return "PACKAGE_SIG's key id matches no vk= given at boot";
    spin_lock(&sig_lock);
    for (i = 0; i < sig_ok_n; i++)
        if (sig_ok[i].id == id && !memcmp(sig_ok[i].sig, sig + 2, 64)) {
            spin_unlock(&sig_lock);
            return 0;
        }
    spin_unlock(&sig_lock);
    ok = ed25519_verify(sig + 2, builtin_pkg, BUILTIN_PKG_SIZE, k->pub);
    if (!ok)
        return "PACKAGE_SIG does not verify over the built-in archive";
    spin_lock(&sig_lock);
    i = sig_ok_n < SIG_CACHE ? sig_ok_n++ : SIG_CACHE - 1;
    sig_ok[i].id = id;
    memcpy(sig_ok[i].sig, sig + 2, 64);
    spin_unlock(&sig_lock);
    return 0;
}

void h_load(struct dime *d, const struct request *r, struct reply *y) {
    uint64_t service = 0, stage = 0, size = 0;
    unsigned dlen = 0, nlen = 0;
    const uint8_t *dig = tlv_find(r, PX_TLV_PACKAGE_DIGEST, &dlen);
    const uint8_t *name = tlv_find(r, PX_TLV_MICE_NAME, &nlen);
    unsigned slen = 0;
    const uint8_t *psig = tlv_find(r, PX_TLV_PACKAGE_SIG, &slen);
    const char *why;
    const struct builtin_stage *fn;
    struct source_spec src;
    tlv_uint(r, PX_TLV_SERVICE_ID, &service);
    tlv_uint(r, PX_TLV_STAGE, &stage);
    tlv_uint(r, PX_TLV_PACKAGE_SIZE, &size);
    put_uint(y, PX_TLV_SERVICE_ID, service);
    put_uint(y, PX_TLV_STAGE, stage);
    if (d->plane.running) {
        y->status = PX_STATUS_BUSY;
        put_text(y, "a MICE is running; STOP it first");
        return;
    }
    if (!dig || dlen != 32 || size != BUILTIN_PKG_SIZE || !digest_ok(dig)) {
        y->status = PX_STATUS_NOT_FOUND;
        put_text(y, "that package is not the one built into this bare-metal image (digest or size differ)");
        return;
    }
    /* The image runs only the archive built into it (matched by digest above), only on a LOAD that came
     * authenticated under the cluster key, and only with the operator's Ed25519 PACKAGE_SIG over it. */
    if (!auth_enabled()) {
        d->counters[CID_REJECTED_AUTH]++;
        y->status = PX_STATUS_DENIED;
        put_text(y, "a keyless bare-metal kernel loads nothing (its LOADs cannot be authenticated)");
        return;
    }
    if ((why = package_sig_error(psig, slen))) {
        d->counters[CID_REJECTED_AUTH]++;
        y->status = PX_STATUS_DENIED;
        put_text(y, why);
        return;
    }
    if (stage >= BUILTIN_PKG_STAGES || !name || nlen != strlen(builtin_pkg_stages[stage].name) ||
        memcmp(name, builtin_pkg_stages[stage].name, nlen)) {
        y->status = PX_STATUS_BAD_PARAM;
        put_text(y, "MICE_NAME is not the package's stage of that index");
        return;
    }
    if (!(fn = builtin_stage((const char *)name, nlen))) {
        y->status = PX_STATUS_UNSUPPORTED;
        put_text(y, "no built-in C version of that stage in this image (it has source, parse, transform and sink)");
        return;
    }
    if (fn->kind == STAGE_SINK && !store_present()) { /* as a Linux kernel without --store */
        y->status = PX_STATUS_UNSUPPORTED;
        put_text(y, "this bare-metal server has no store for a sink (boot it with a second serial port)");
        return;
    }
    src.text = builtin_corpus;
    src.at = builtin_corpus_at;
    src.lines = BUILTIN_CORPUS_LINES;
    src.passes = builtin_pkg_stages[stage].passes;
    src.rate = builtin_pkg_stages[stage].rate;
    plane_load(&d->plane, (uint32_t)service, (uint32_t)stage, fn,
               fn->kind == STAGE_ITEM && bootargs.work_us ? bootargs.work_us : builtin_pkg_stages[stage].work_us,
               fn->kind == STAGE_SOURCE ? &src : 0);
    kprintf("dime %u: loaded service %u stage %u (%s, built in)\n", d->id, (unsigned)service, (unsigned)stage,
            fn->name);
}

static int loaded_as(const struct dime *d, const struct request *r) {
    uint64_t service = 0, stage = 0;
    tlv_uint(r, PX_TLV_SERVICE_ID, &service);
    tlv_uint(r, PX_TLV_STAGE, &stage);
    return d->plane.loaded && d->plane.service == service && d->plane.stage == stage;
}

void h_start(struct dime *d, const struct request *r, struct reply *y) {
    uint64_t first = 0;
    tlv_uint(r, PX_TLV_VALUE, &first); /* a replacement source: the item to resume from */
    if (!loaded_as(d, r)) {
        y->status = PX_STATUS_NOT_FOUND;
        put_text(y, "that service stage is not loaded");
        return;
    }
    if (d->plane.running) {
        y->status = PX_STATUS_BUSY;
        put_text(y, "the MICE is running");
        return;
    }
    plane_start(&d->plane, first, now_ms());
    d->mice_busy_mark_us = d->busy_us;
    dime_set_state(d, PX_STATE_BUSY);
    put_uint(y, PX_TLV_EPOCH, d->epoch);
}

void h_stop(struct dime *d, const struct request *r, struct reply *y) {
    if (!d->plane.running || !loaded_as(d, r)) {
        y->status = PX_STATUS_NOT_FOUND;
        put_uint(y, PX_TLV_CPU_NS, 0);
        put_text(y, "that MICE is not running");
        return;
    }
    put_uint(y, PX_TLV_CPU_NS, (d->busy_us - d->mice_busy_mark_us) * 1000);
    plane_reset(&d->plane, d->id);
    dime_set_state(d, PX_STATE_FREE);
    kprintf("dime %u: MICE stopped\n", d->id);
}

static void wiring(const struct request *r, struct reply *y, uint64_t *ch, int *output) {
    uint64_t dir = 0;
    tlv_uint(r, PX_TLV_CHANNEL, ch);
    tlv_uint(r, PX_TLV_DIRECTION, &dir);
    *output = dir == DIR_OUTPUT;
    put_uint(y, PX_TLV_CHANNEL, *ch);
}

void h_connect(struct dime *d, const struct request *r, struct reply *y) {
    uint64_t ch = 0, dime = 0, thread = 0;
    unsigned mlen = 0;
    const uint8_t *mac = tlv_find(r, PX_TLV_PEER_MAC, &mlen);
    struct chan_peer peer;
    int output;
    wiring(r, y, &ch, &output);
    tlv_uint(r, PX_TLV_PEER_DIME, &dime);
    tlv_uint(r, PX_TLV_PEER_THREAD, &thread);
    if (ch >= COMPLETION_BIT || !mac || mlen != 6 || dime >= PX_DIME_ALL) {
        y->status = PX_STATUS_BAD_PARAM;
        put_text(y, "a channel below 0x8000 and a peer DIME (MAC and id, not 0xffff)");
        return;
    }
    memcpy(peer.mac, mac, 6);
    peer.dime = (uint16_t)dime;
    peer.thread = (uint16_t)thread;
    if (plane_connect(&d->plane, (uint16_t)ch, output, &peer, now_ms(), &d->io)) {
        y->status = PX_STATUS_NO_MEMORY;
        put_text(y, output ? "every output of this DIME is wired" : "every input of this DIME is wired");
    }
}

void h_disconnect(struct dime *d, const struct request *r, struct reply *y) {
    uint64_t ch = 0;
    int output;
    wiring(r, y, &ch, &output);
    if (plane_disconnect(&d->plane, (uint16_t)ch, output)) y->status = PX_STATUS_NOT_FOUND;
}
