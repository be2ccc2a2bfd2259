/* Sending frames: every encoder is px_codec.h's; this only addresses, numbers and signs them. */
#ifndef KERNEL_WIRE_H
#define KERNEL_WIRE_H
#include <stdint.h>
#include "px_codec.h"
#include "keyring.h"

#define FRAME_MAX 1514

/* One source of frames: a DIME (its id) or the server itself (PX_DIME_ALL). */
struct sender {
    uint16_t dime;
    uint64_t seq;
    uint64_t auth_counter;
    uint64_t frames_tx, bytes_tx;
    struct keyring *ring; /* what it signs with (when auth is on) */
};

extern const PxEtherTypes ethertypes;
extern const uint8_t broadcast_mac[6];
extern uint32_t boot_epoch;

void sender_init(struct sender *s, uint16_t dime, struct keyring *ring);
int send_signaling(struct sender *s, const uint8_t *dst_mac, unsigned dst_dime, unsigned dst_thread,
                   unsigned src_thread, uint32_t req_id, unsigned cmd, unsigned status, unsigned tlv_count,
                   const uint8_t *tlvs, px_ssize tlvs_len);
int send_heartbeat(struct sender *s, uint64_t seq, const PxHeartbeatBody *hb);
/* DATA (unsigned, as the Linux node's data channels): a fragment or an ack-only frame to a peer DIME. */
int send_data(struct sender *s, const uint8_t *dst_mac, unsigned dst_dime, unsigned dst_thread, const PxDataFixed *f,
              const uint8_t *payload, unsigned len);
/* Discovery: an ANNOUNCE to a prober or a GRATUITOUS broadcast, with count DIME records of PX_DIME_LEN bytes. */
int send_discovery(struct sender *s, const uint8_t *dst_mac, unsigned op, uint32_t probe_id, unsigned state_filter,
                   unsigned count, const uint8_t *records);
#endif
