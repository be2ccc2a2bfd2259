/* The data channel (pxproto/dime/channel.py) for a bare-metal DIME: one way, one sender and one
 * receiver, over DATA frames built and checked by px_codec.h.  Sans I/O: frames go out through
 * an emit hook, time is an argument (ms); tests/c/plane_check.c runs it on the host against
 * the Python ends.
 *
 * Every message the kernel sends is one fragment (what waits for an output is packed into
 * messages that fit one, as the Linux node does), so a stream position is a message.  A
 * receiver takes any fragmentation the Linux sender makes, in order: an early fragment is
 * dropped and answered with the current ack (the sender's loss signal), a duplicate is
 * answered the same way.  Acks carry (next message, next fragment) and the credit: how many
 * fragments the sender may have past that point. */
#ifndef KERNEL_CHANNEL_H
#define KERNEL_CHANNEL_H
#include <stdint.h>
#include "px_codec.h"

#define CHAN_FRAME_MAX 1514
#define CHAN_FRAG (CHAN_FRAME_MAX - PX_BODY_OFFSET - PX_DATA_LEN) /* payload bytes of one fragment */
#define CHAN_TX_RING 32                                              /* messages held until acknowledged */
#define CHAN_RX_MSG_MAX 16384                                        /* a message reassembled, at most */
#define CHAN_RTO_MS 100
#define CHAN_RTO_MAX_MS 2000
#define CHAN_MAX_RETRIES 12
#define CHAN_DUPACKS 3

struct chan_peer {
    uint8_t mac[6];
    uint16_t dime, thread;
};

/* How a channel end sends a DATA body: (fixed part, payload); returns <0 when it could not. */
typedef int (*chan_emit)(void *ctx, const struct chan_peer *to, const PxDataFixed *d, const uint8_t *payload,
                         unsigned len);

struct chan_tx {
    struct chan_peer peer;
    uint16_t channel;
    uint32_t first_id; /* the msg id of stream position 0 */
    uint32_t una, nxt, end, limit;
    unsigned dupacks, timeouts, recover_on;
    uint32_t recover;
    uint64_t deadline_ms; /* 0: no timer */
    unsigned rto_ms;
    int broken;
    uint16_t len[CHAN_TX_RING];
    uint8_t fin[CHAN_TX_RING];
    uint8_t msg[CHAN_TX_RING][CHAN_FRAG];
    uint64_t sent, retransmitted, acks, bad_acks, probes;
};

struct chan_rx {
    struct chan_peer peer;
    uint16_t channel;
    uint32_t next_msg;
    uint16_t next_frag, window, credit_sent;
    int paused, ack_due;
    uint32_t have; /* bytes of the message being reassembled */
    int too_big;
    uint8_t buf[CHAN_RX_MSG_MAX];
    uint64_t fragments, duplicates, early, messages, dropped, acks_sent, refused;
};

/* A whole message, in order, once (too_big: it was acknowledged and not kept).  Nonzero refuses it
 * (no room yet): its last fragment stays unacknowledged, and the sender sends it again. */
typedef int (*chan_deliver)(void *ctx, struct chan_rx *rx, uint32_t msg_id, const uint8_t *payload, unsigned len,
                             int fin, int too_big);

void chan_tx_init(struct chan_tx *t, const struct chan_peer *peer, uint16_t channel, uint16_t credit);
/* Room for another message (credit aside: messages wait in the ring until it allows them). */
int chan_tx_room(const struct chan_tx *t);
/* Queue a message of at most CHAN_FRAG bytes and send what credit allows; <0 if there is no room. */
int chan_tx_send(struct chan_tx *t, const uint8_t *payload, unsigned len, int fin, uint64_t now, chan_emit emit,
                 void *ctx);
/* An ack-only DATA frame from the receiver. */
void chan_tx_ack(struct chan_tx *t, const PxView *v, uint64_t now, chan_emit emit, void *ctx);
/* The retransmission / window-probe timer; sets broken after too many. */
void chan_tx_timer(struct chan_tx *t, uint64_t now, chan_emit emit, void *ctx);
static inline uint32_t chan_tx_in_flight(const struct chan_tx *t) { return t->nxt - t->una; }
static inline uint32_t chan_tx_queued(const struct chan_tx *t) { return t->end - t->una; }

void chan_rx_init(struct chan_rx *r, const struct chan_peer *peer, uint16_t channel, uint16_t window);
/* A DATA frame from the sender (a fragment, or a window probe). */
void chan_rx_frame(struct chan_rx *r, const uint8_t *raw, const PxView *v, chan_deliver deliver, void *ctx);
/* Send the ack now if one is due (the caller batches: one per turn of its loop). */
void chan_rx_flush(struct chan_rx *r, chan_emit emit, void *ctx);
/* Change the credit (0 pauses the sender); an ack goes out when it reopens. */
void chan_rx_credit(struct chan_rx *r, uint16_t window);
#endif
