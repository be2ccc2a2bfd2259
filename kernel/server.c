#include "px_codec.h"
#include "server.h"
#include "auth.h"
#include "console.h"
#include "cpu.h"
#include "io.h"
#include "lapic.h"
#include "virtio_net.h"

struct dime dimes[MAX_DIMES];
unsigned ndimes;
static struct sender self;
static uint64_t counters[CID_MAX + 1];
static uint8_t rx[FRAME_MAX + 64];

void server_init(unsigned n) {
    ndimes = n;
    sender_init(&self, PX_DIME_ALL);
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

void server_announce(void) {
    uint8_t recs[MAX_DIMES * PX_DIME_LEN];
    unsigned count = records(PX_STATE_ANY, recs);
    send_discovery(&self, broadcast_mac, PX_DISC_OP_GRATUITOUS, 0, PX_STATE_ANY, count, recs);
    kprintf("server: gratuitous announce of %u DIME(s)\n", count);
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
/* The COUNTER_ID of a COUNTERS request (its TLV list was validated by px_decode). */
static unsigned counter_id(const uint8_t *raw, const PxView *v) {
    px_ssize pos = v->body + PX_SIG_LEN;
    unsigned i;
    for (i = 0; i < v->tlv_count; i++) {
        unsigned l = px_rd16(raw + pos + PX_TLV_LENGTH);
        if (px_rd16(raw + pos + PX_TLV_TYPE) == PX_TLV_COUNTER_ID && l == 2) return px_rd16(raw + pos + PX_TLV_LEN);
        pos += PX_TLV_LEN + l;
    }
    return CID_MAX + 1;
}

static void on_system_signaling(const uint8_t *raw, const PxView *v) {
    static const char text[] =
        "the bare-metal server (0xffff) answers PING and COUNTERS; address a DIME (0..N-1) for the rest";
    uint8_t tlvs[sizeof text + 2 * PX_TLV_LEN + 64];
    px_ssize len = 0, n;
    unsigned count = 0, status = PX_STATUS_OK;
    if (v->op != PX_OP_REQUEST) return;
    if (v->cmd == PX_CMD_PING) {
        n = px_encode_tlv(tlvs, sizeof tlvs, PX_TLV_ECHO, (const uint8_t *)"", 0);
        if (n > 0) len += n, count++;
    } else if (v->cmd == PX_CMD_COUNTERS) {
        unsigned cid = counter_id(raw, v);
        if (cid > CID_MAX) status = PX_STATUS_NOT_FOUND;
        n = px_encode_tlv_uint(tlvs, sizeof tlvs, PX_TLV_COUNTER_ID, cid, PX_TLVK_SIZE[PX_TLV_KIND[PX_TLV_COUNTER_ID]]);
        if (n > 0) len += n, count++;
        n = px_encode_tlv_uint(tlvs + len, (px_ssize)sizeof tlvs - len, PX_TLV_VALUE, cid > CID_MAX ? 0 : counters[cid],
                               PX_TLVK_SIZE[PX_TLV_KIND[PX_TLV_VALUE]]);
        if (n > 0) len += n, count++;
    } else {
        status = PX_STATUS_UNSUPPORTED;
        n = px_encode_tlv(tlvs, sizeof tlvs, PX_TLV_TEXT, (const uint8_t *)text, sizeof text - 1);
        if (n > 0) len += n, count++;
    }
    send_signaling(&self, raw + PX_ETH_SRC, v->src_dime, v->src_thread, v->dst_thread, v->req_id, v->cmd, status,
                   count, tlvs, len);
}

static void reject(const PxView *v, unsigned cid) {
    if (v && v->scope && v->dst_dime < ndimes) dime_reject(&dimes[v->dst_dime], cid);
    else counters[cid]++;
}

static unsigned verdict_counter(enum auth_verdict a) {
    switch (a) {
    case AUTH_UNSIGNED: return CID_REJECTED_UNAUTHENTICATED;
    case AUTH_REPLAYED:
    case AUTH_TOO_OLD: return CID_REJECTED_REPLAY;
    default: return CID_REJECTED_AUTH;
    }
}

static void dispatch(const uint8_t *raw, unsigned n) {
    PxView v;
    enum auth_verdict a;
    if (n >= PX_ETH_LEN && px_class_of(&ethertypes, px_rd16(raw + PX_ETH_TYPE)) == PX_CLASS_HEARTBEAT) return;
    if (px_decode(raw, n, &ethertypes, &v)) {
        if (v.cls) reject(0, CID_REJECTED_MALFORMED); /* other EtherTypes are not ours to count */
        return;
    }
    if (v.cls == PX_CLASS_DATA) return; /* no data channel on bare metal yet */
    if (auth_enabled() && (a = auth_check(raw, &v)) != AUTH_OK) {
        reject(&v, verdict_counter(a));
        return;
    }
    if (v.cls == PX_CLASS_DISCOVERY) on_probe(raw, &v);
    else if (!v.scope) on_system_signaling(raw, &v);
    else if (v.dst_dime < ndimes) {
        if (!dime_post(&dimes[v.dst_dime], raw, n)) counters[CID_REJECTED_MALFORMED]++;
        else if (v.dst_dime != 0) lapic_ipi_wake(cpus[v.dst_dime].apic_id); /* now, not at its next tick */
    }
}

unsigned server_poll(void) {
    unsigned n, handled = 0;
    while ((n = nic_recv(rx, sizeof rx)) > 0) {
        counters[CID_FRAMES_RX]++;
        counters[CID_BYTES_RX] += n;
        dispatch(rx, n);
        handled++;
    }
    return handled;
}
