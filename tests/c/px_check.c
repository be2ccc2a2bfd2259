/* Hosted driver for tests/test_px_codec_c.py: one frame per line of hex on stdin; for each prints
 *   ok <class> <re-encoded?>    (re-encoded: 1 when px_encode_* rebuilt the same bytes, - when not tried)
 *   err <field> <offset>
 * using nothing but px_codec.h, so the test compares the C layer with the reference codec. */
#include <stdio.h>
#include <string.h>

#include "px_codec.h"

static const PxEtherTypes ET = PX_ETHERTYPES_DEFAULT;

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static void addr_of(const unsigned char *buf, const PxView *v, PxAddr *a) {
    memcpy(a->dst_mac, buf + PX_ETH_DST, 6);
    memcpy(a->src_mac, buf + PX_ETH_SRC, 6);
    a->scope = v->scope;
    a->src_dime = (uint16_t)v->src_dime;
    a->src_thread = (uint16_t)v->src_thread;
    a->dst_dime = (uint16_t)v->dst_dime;
    a->dst_thread = (uint16_t)v->dst_thread;
    a->seq = v->seq;
}

/* Rebuild a valid frame from its view with the encoders; 1 when the bytes are the same. */
static int reencode(const unsigned char *buf, px_ssize n, const PxView *v) {
    static unsigned char out[70000];
    PxAddr a;
    PxAuth au, *pa = 0;
    px_ssize m = -1;
    addr_of(buf, v, &a);
    if (v->has_auth) {
        au.key_id = (uint16_t)v->auth_key_id;
        au.counter = v->auth_counter;
        memcpy(au.tag, buf + v->auth + PX_AUTH_TAG, PX_TAG_LEN);
        pa = &au;
    }
    if (v->encrypted) { /* the AEAD mode: the ciphertext as it is, around the same header and trailer */
        m = px_encode_sealed(out, sizeof out, &ET, &a, v->cls, buf + PX_BODY_OFFSET, (px_ssize)v->length, pa);
    } else if (v->cls == PX_CLASS_HEARTBEAT) {
        PxHeartbeatBody hb = { v->hb_epoch, (uint8_t)v->hb_state, (uint16_t)v->hb_period_ms,
                               (uint16_t)v->hb_cpu_permille, (uint16_t)v->hb_stage, v->hb_mem_used,
                               v->hb_mem_limit, v->hb_rx_queue, v->hb_tx_queue, v->hb_service };
        m = px_encode_heartbeat(out, sizeof out, &ET, &a, &hb, pa);
    } else if (v->cls == PX_CLASS_DATA) {
        PxDataFixed d = { (uint16_t)v->channel, (uint8_t)v->data_flags, v->msg_id, v->msg_len, v->frag_offset,
                          (uint16_t)v->frag_index, (uint16_t)v->frag_count, v->ack, (uint16_t)v->credit };
        m = px_encode_data(out, sizeof out, &ET, &a, &d, buf + v->payload, v->payload_len, pa);
    } else if (v->cls == PX_CLASS_SIGNALING) {
        px_ssize tl = (px_ssize)v->length - PX_SIG_LEN;
        m = px_encode_signaling(out, sizeof out, &ET, &a, v->req_id, (int)v->cmd, (int)v->op, (int)v->status,
                                (int)v->tlv_count, buf + PX_BODY_OFFSET + PX_SIG_LEN, tl, pa);
    } else if (v->cls == PX_CLASS_DISCOVERY) {
        m = px_encode_discovery(out, sizeof out, &ET, &a, (int)v->disc_op, (int)v->state_filter, v->probe_id,
                                v->sw_version, v->caps, (int)v->disc_count, buf + PX_BODY_OFFSET + PX_DISC_LEN, pa);
    } else {
        return -1;
    }
    /* the encoders pad to PX_MIN_ETHERNET_FRAME; a shorter valid frame (sent unpadded) is its prefix */
    if (m == PX_MIN_ETHERNET_FRAME && n < m) return memcmp(out, buf, (size_t)n) == 0;
    return m == n && memcmp(out, buf, (size_t)n) == 0;
}

int main(void) {
    static char line[140000];
    static unsigned char buf[70000];
    while (fgets(line, sizeof line, stdin)) {
        px_ssize n = 0, i;
        PxView v;
        int r;
        for (i = 0; line[i] && line[i + 1] && hexval(line[i]) >= 0; i += 2)
            buf[n++] = (unsigned char)(hexval(line[i]) * 16 + hexval(line[i + 1]));
        r = px_decode(buf, n, &ET, &v);
        if (r) {
            printf("err %s %ld\n", px_error_name(r), (long)v.error_offset);
        } else {
            int e = reencode(buf, n, &v);
            printf("ok %d %s\n", v.cls, e < 0 ? "-" : (e ? "1" : "0"));
        }
    }
    return 0;
}
