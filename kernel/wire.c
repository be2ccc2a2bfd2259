#include "px_codec.h"
#include "wire.h"
#include "auth.h"
#include "codes.h"
#include "virtio_net.h"

#define SW_VERSION_WIRE SW_VERSION
#define CAPS_WIRE (auth_enabled() ? CAP_AUTH : 0)

const PxEtherTypes ethertypes = PX_ETHERTYPES_DEFAULT;
const uint8_t broadcast_mac[6] = { 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF };
uint32_t boot_epoch = 1;

void sender_init(struct sender *s, uint16_t dime, struct keyring *ring) {
    s->dime = dime;
    s->ring = ring;
    s->seq = 0;
    s->auth_counter = (uint64_t)boot_epoch << 32; /* above anything sent in an earlier epoch */
    s->frames_tx = s->bytes_tx = 0;
}

static void address(PxAddr *a, const struct sender *s, const uint8_t *dst_mac, unsigned dst_dime,
                     unsigned dst_thread, unsigned src_thread, uint64_t seq) {
    px_copy(a->dst_mac, dst_mac, 6);
    px_copy(a->src_mac, nic_mac, 6);
    a->scope = dst_dime != PX_DIME_ALL;
    a->src_dime = s->dime;
    a->src_thread = (uint16_t)src_thread;
    a->dst_dime = (uint16_t)dst_dime;
    a->dst_thread = (uint16_t)dst_thread;
    a->seq = seq;
}

/* A trailer and the key that seals it: the ring's signing key, the sender's next counter. */
struct seal {
    PxAuth a;
    uint8_t key[KEY_MAX];
    unsigned len;
};

static const PxAuth *trailer(struct sender *s, struct seal *z) {
    if (!auth_enabled()) return 0;
    z->a.key_id = (uint16_t)keyring_signing(s->ring, z->key, &z->len);
    z->a.counter = __atomic_add_fetch(&s->auth_counter, 1, __ATOMIC_RELAXED);
    px_zero(z->a.tag, PX_TAG_LEN);
    return &z->a;
}

/* Seal (tag) and transmit an encoded frame of n bytes, or report the encoder's refusal. */
static int transmit(struct sender *s, uint8_t *frame, px_ssize n, const struct seal *z) {
    PxView v;
    if (n < 0) return (int)n;
    if (auth_enabled()) {
        if (px_decode(frame, n, &ethertypes, &v)) return -1;
        auth_seal(frame, &v, z->key, z->len);
    }
    s->frames_tx++;
    s->bytes_tx += (uint64_t)n;
    return nic_send(frame, (unsigned)n);
}

static int transmit_unsigned(struct sender *s, uint8_t *frame, px_ssize n) {
    if (n < 0) return (int)n;
    s->bytes_tx += (uint64_t)n;
    return nic_send(frame, (unsigned)n);
}

int send_signaling(struct sender *s, const uint8_t *dst_mac, unsigned dst_dime, unsigned dst_thread,
                   unsigned src_thread, uint32_t req_id, unsigned cmd, unsigned status, unsigned tlv_count,
                   const uint8_t *tlvs, px_ssize tlvs_len) {
    uint8_t frame[FRAME_MAX];
    PxAddr a;
    struct seal au;
    address(&a, s, dst_mac, dst_dime, dst_thread, src_thread, ++s->seq);
    return transmit(s, frame,
                    px_encode_signaling(frame, sizeof frame, &ethertypes, &a, req_id, (int)cmd, PX_OP_RESPONSE,
                                        (int)status, (int)tlv_count, tlvs, tlvs_len, trailer(s, &au)),
                    &au);
}

int send_heartbeat(struct sender *s, uint64_t seq, const PxHeartbeatBody *hb) {
    uint8_t frame[FRAME_MAX];
    PxAddr a;
    struct seal au;
    address(&a, s, broadcast_mac, PX_DIME_ALL, 0, 0, seq);
    return transmit(s, frame, px_encode_heartbeat(frame, sizeof frame, &ethertypes, &a, hb, trailer(s, &au)), &au);
}

int send_discovery(struct sender *s, const uint8_t *dst_mac, unsigned op, uint32_t probe_id, unsigned state_filter,
                   unsigned count, const uint8_t *records) {
    uint8_t frame[FRAME_MAX];
    PxAddr a;
    struct seal au;
    const PxAuth *t = trailer(s, &au);
    address(&a, s, dst_mac, PX_DIME_ALL, 0, 0, ++s->seq);
    return transmit(s, frame, px_encode_discovery(frame, sizeof frame, &ethertypes, &a, (int)op, (int)state_filter,
                                                  probe_id, SW_VERSION_WIRE, CAPS_WIRE, (int)count, records, t),
                    &au);
}

int send_data(struct sender *s, const uint8_t *dst_mac, unsigned dst_dime, unsigned dst_thread, const PxDataFixed *f,
              const uint8_t *payload, unsigned len) {
    uint8_t frame[FRAME_MAX];
    PxAddr a;
    address(&a, s, dst_mac, dst_dime, dst_thread, 0, ++s->seq);
    s->frames_tx++;
    return transmit_unsigned(s, frame, px_encode_data(frame, sizeof frame, &ethertypes, &a, f, payload, len, 0));
}
