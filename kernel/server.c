#include "px_codec.h"
#include "server.h"
#include "auth.h"
#include "bootargs.h"
#include "clock.h"
#include "console.h"
#include "cpu.h"
#include "io.h"
#include "lapic.h"
#include "virtio_net.h"

struct dime dimes[MAX_DIMES];
unsigned ndimes;
static struct sender self;
static struct keyring ring; /* the server's: the boot key, never rotated (as the Linux node's server) */
static uint64_t counters[SCID_MAX + 1]; /* by ServerCounterId */
static uint64_t bytes_rx;
static uint8_t rx[FRAME_MAX + 64];

void server_init(unsigned n) {
    ndimes = n;
    keyring_init(&ring, bootargs.key_id, bootargs.key, bootargs.key_len);
    sender_init(&self, PX_DIME_ALL, &ring);
}

static unsigned records(unsigned state_filter, uint8_t *out) {
    unsigned i, count = 0;
    for (i = 0; i < ndimes; i++) {
        if (state_filter != PX_STATE_ANY && dimes[i].state != state_filter) continue;
        dime_record(&dimes[i], out + count * PX_DIME_LEN);
        count++;
    }
    return count;
}

#define BOOT_ANNOUNCES 3
#define BOOT_ANNOUNCE_MS 50

static unsigned announces_left;
static uint64_t next_announce_ms;
static uint32_t epochs[MAX_DIMES];

static void announce(void) {
    uint8_t recs[MAX_DIMES * PX_DIME_LEN];
    unsigned count = records(PX_STATE_ANY, recs), i;
    for (i = 0; i < ndimes; i++) epochs[i] = dimes[i].epoch;
    send_discovery(&self, broadcast_mac, PX_DISC_OP_GRATUITOUS, 0, PX_STATE_ANY, count, recs);
}

void server_announce(void) {
    announce();
    announces_left = BOOT_ANNOUNCES - 1;
    next_announce_ms = now_ms() + BOOT_ANNOUNCE_MS;
    kprintf("server: gratuitous announce of %u DIME(s)\n", ndimes);
}

void server_tick(void) {
    uint64_t now = now_ms();
    unsigned i;
    if (announces_left && now >= next_announce_ms) {
        announces_left--;
        next_announce_ms = now + BOOT_ANNOUNCE_MS;
        announce();
        return;
    }
    for (i = 0; i < ndimes; i++)
        if (dimes[i].epoch != epochs[i]) {
            kprintf("server: DIME %u reborn in epoch %u: announcing\n", i, dimes[i].epoch);
            announce();
            return;
        }
}

static void on_probe(const uint8_t *raw, const PxView *v) {
    uint8_t recs[MAX_DIMES * PX_DIME_LEN];
    unsigned count;
    if (v->disc_op != PX_DISC_OP_PROBE) return;
    count = records(v->state_filter, recs);
    if (!count) return; /* nothing to offer: stay quiet, as the Linux node does */
    send_discovery(&self, raw + PX_ETH_SRC, PX_DISC_OP_ANNOUNCE, v->probe_id, v->state_filter, count, recs);
}

/* System-scope signaling: the server answers PING and COUNTERS (its own: frames that reached no
 * DIME, such as malformed ones) and says UNSUPPORTED to the rest, as the node does. */
/* A TLV's unsigned value in a request whose TLV list px_decode validated; 0 if absent. */
static uint64_t tlv_uint(const uint8_t *raw, const PxView *v, unsigned type, const uint8_t **bytes, unsigned *len) {
    px_ssize pos = v->body + PX_SIG_LEN;
    unsigned i, k, l;
    uint64_t x = 0;
    for (i = 0; i < v->tlv_count; i++, pos += PX_TLV_LEN + l) {
        l = px_rd16(raw + pos + PX_TLV_LENGTH);
        if (px_rd16(raw + pos + PX_TLV_TYPE) != type) continue;
        if (bytes) *bytes = raw + pos + PX_TLV_LEN, *len = l;
        for (k = 0; k < l && k < 8; k++) x = x << 8 | raw[pos + PX_TLV_LEN + k];
        return x;
    }
    if (bytes) *bytes = (const uint8_t *)"", *len = 0;
    return 0;
}

struct sys_reply {
    unsigned status, count;
    px_ssize len;
    uint8_t tlvs[320];
};

static void put(struct sys_reply *y, unsigned type, uint64_t value) {
    px_ssize n = px_encode_tlv_uint(y->tlvs + y->len, (px_ssize)sizeof y->tlvs - y->len, type, value,
                                    PX_TLVK_SIZE[PX_TLV_KIND[type]]);
    if (n > 0) y->len += n, y->count++;
}

static void put_bytes(struct sys_reply *y, unsigned type, const uint8_t *value, unsigned len) {
    px_ssize n = px_encode_tlv(y->tlvs + y->len, (px_ssize)sizeof y->tlvs - y->len, type, value, len);
    if (n > 0) y->len += n, y->count++;
}

static uint64_t server_counter(unsigned cid) {
    uint64_t v = counters[cid];
    unsigned i;
    if (cid == SCID_WIRE_TX)
        for (v = self.frames_tx, i = 0; i < ndimes; i++) v += dimes[i].tx.frames_tx;
    return v;
}

/* System-scope signaling: the server answers PING, USAGE, COUNTERS (its own, ServerCounterId) and
 * FAULT_REPORT, and says UNSUPPORTED to the rest, as the Linux node's server does. */
static void on_system_signaling(const uint8_t *raw, const PxView *v) {
    static const char text[] =
        "the server (0xffff) answers PING, USAGE, COUNTERS and FAULT_REPORT; address a DIME (0..N-1) for the rest";
    struct sys_reply y = { PX_STATUS_OK, 0, 0, { 0 } };
    const uint8_t *bytes;
    unsigned len, i;
    uint64_t cid, cpu = 0, mem = 0, bytes_tx = self.bytes_tx;
    if (v->op != PX_OP_REQUEST) return;
    switch (v->cmd) {
    case PX_CMD_PING:
        tlv_uint(raw, v, PX_TLV_ECHO, &bytes, &len);
        put_bytes(&y, PX_TLV_ECHO, bytes, len);
        break;
    case PX_CMD_COUNTERS:
        cid = tlv_uint(raw, v, PX_TLV_COUNTER_ID, 0, 0);
        if (cid < 1 || cid > SCID_MAX) y.status = PX_STATUS_NOT_FOUND;
        put(&y, PX_TLV_COUNTER_ID, cid);
        put(&y, PX_TLV_VALUE, y.status ? 0 : server_counter((unsigned)cid));
        break;
    case PX_CMD_USAGE:
        for (i = 0; i < ndimes; i++) {
            cpu += dimes[i].busy_us * 1000;
            mem += dimes[i].mem_reserved;
            bytes_tx += dimes[i].tx.bytes_tx;
        }
        put(&y, PX_TLV_CPU_NS, cpu);
        put(&y, PX_TLV_MEM_USED, mem);
        put(&y, PX_TLV_FRAMES_RX, counters[SCID_WIRE_RX]);
        put(&y, PX_TLV_FRAMES_TX, server_counter(SCID_WIRE_TX));
        put(&y, PX_TLV_BYTES_RX, bytes_rx);
        put(&y, PX_TLV_BYTES_TX, bytes_tx);
        break;
    case PX_CMD_FAULT_REPORT: {
        char line[PX_TEXT_MAX + 1];
        tlv_uint(raw, v, PX_TLV_TEXT, &bytes, &len);
        memcpy(line, bytes, len);
        line[len] = 0;
        counters[SCID_FAULT_REPORTS]++;
        kprintf("server: fault report from dime %u: %s\n", v->src_dime, line);
        break;
    }
    default:
        y.status = PX_STATUS_UNSUPPORTED;
        put_bytes(&y, PX_TLV_TEXT, (const uint8_t *)text, sizeof text - 1);
    }
    send_signaling(&self, raw + PX_ETH_SRC, v->src_dime, v->src_thread, v->dst_thread, v->req_id, v->cmd, y.status,
                   y.count, y.tlvs, y.len);
}

/* An authentication failure: the addressed DIME's counter (CounterId), or the server's (ServerCounterId). */
static void reject_auth(const PxView *v, enum auth_verdict a) {
    int replay = a == AUTH_REPLAYED || a == AUTH_TOO_OLD;
    if (v->scope && v->dst_dime < ndimes)
        dime_reject(&dimes[v->dst_dime], a == AUTH_UNSIGNED ? CID_REJECTED_UNAUTHENTICATED
                                                           : replay ? CID_REJECTED_REPLAY : CID_REJECTED_AUTH);
    else
        counters[a == AUTH_UNSIGNED ? SCID_REJECTED_UNAUTHENTICATED : replay ? SCID_REJECTED_REPLAY : SCID_REJECTED_AUTH]++;
}

/* DATA is not signed (as on the Linux node): a DIME takes it only from the channel ends CONNECT wired. */
static void dispatch(const uint8_t *raw, unsigned n) {
    PxView v;
    enum auth_verdict a;
    if (n >= PX_ETH_LEN && px_class_of(&ethertypes, px_rd16(raw + PX_ETH_TYPE)) == PX_CLASS_HEARTBEAT) return;
    if (px_decode(raw, n, &ethertypes, &v)) {
        /* malformed: the DIME id in it cannot be trusted, so the server counts it */
        counters[v.cls ? SCID_MALFORMED : SCID_DROPPED]++;
        return;
    }
    if (v.encrypted) { /* the AEAD mode (header flag ENCRYPTED): no AES here, so no body to read */
        counters[SCID_DROPPED]++;
        return;
    }
    if (v.cls != PX_CLASS_DATA && auth_enabled() &&
        (a = auth_check(v.scope && v.dst_dime < ndimes ? &dimes[v.dst_dime].keys : &ring, raw, &v)) != AUTH_OK) {
        reject_auth(&v, a);
        return;
    }
    if (v.cls == PX_CLASS_DISCOVERY) on_probe(raw, &v);
    else if (!v.scope) on_system_signaling(raw, &v);
    else if (v.dst_dime >= ndimes) counters[SCID_UNKNOWN_DIME]++;
    else {
        if (!dime_post(&dimes[v.dst_dime], raw, n)) counters[SCID_DIME_BUSY]++;
        else if (v.dst_dime != 0) lapic_ipi_wake(cpus[v.dst_dime].apic_id); /* now, not at its next tick */
    }
}

unsigned server_poll(void) {
    unsigned n, handled = 0;
    while ((n = nic_recv(rx, sizeof rx)) > 0) {
        counters[SCID_WIRE_RX]++;
        bytes_rx += n;
        dispatch(rx, n);
        handled++;
    }
    return handled;
}
