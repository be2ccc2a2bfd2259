/* The data channel's two ends (see channel.h; the Python reference is pxproto/dime/channel.py). */
#include "px_codec.h"
#include "channel.h"

#ifdef CHANNEL_HOSTED
#include <string.h>
#else
#include "io.h"
#endif

static int serial_lt(uint32_t a, uint32_t b) { return (int32_t)(a - b) < 0; }

/* ------------------------------------------------------------ sender */

void chan_tx_init(struct chan_tx *t, const struct chan_peer *peer, uint16_t channel, uint16_t credit) {
    memset(t, 0, sizeof *t);
    t->peer = *peer;
    t->channel = channel;
    t->limit = credit;
    t->rto_ms = CHAN_RTO_MS;
}

int chan_tx_room(const struct chan_tx *t) { return !t->broken && t->end - t->una < CHAN_TX_RING; }

static void transmit(struct chan_tx *t, uint32_t pos, uint64_t now, chan_emit emit, void *ctx) {
    unsigned slot = pos % CHAN_TX_RING, len = t->len[slot];
    PxDataFixed d;
    memset(&d, 0, sizeof d);
    d.channel = t->channel;
    d.flags = t->fin[slot] ? PX_DFLAG_FIN : 0;
    d.msg_id = t->first_id + pos;
    d.msg_len = len;
    d.frag_count = 1;
    if (pos < t->nxt) t->retransmitted++;
    t->sent++;
    emit(ctx, &t->peer, &d, t->msg[slot], len);
    if (!t->deadline_ms) t->deadline_ms = now + t->rto_ms;
}

static void pump(struct chan_tx *t, uint64_t now, chan_emit emit, void *ctx) {
    while (!t->broken && t->nxt < t->end && serial_lt(t->nxt, t->limit)) {
        transmit(t, t->nxt, now, emit, ctx);
        t->nxt++;
    }
    if (t->una == t->end) t->deadline_ms = 0;
    else if (!t->deadline_ms) t->deadline_ms = now + t->rto_ms; /* held back by zero credit: probe later */
}

int chan_tx_send(struct chan_tx *t, const uint8_t *payload, unsigned len, int fin, uint64_t now, chan_emit emit,
                 void *ctx) {
    unsigned slot;
    if (!chan_tx_room(t) || len > CHAN_FRAG) return -1;
    slot = t->end % CHAN_TX_RING;
    memcpy(t->msg[slot], payload, len);
    t->len[slot] = (uint16_t)len;
    t->fin[slot] = (uint8_t)(fin != 0);
    t->end++;
    pump(t, now, emit, ctx);
    return 0;
}

static void retransmit_una(struct chan_tx *t, uint64_t now, chan_emit emit, void *ctx) {
    if (t->una < t->nxt && serial_lt(t->una, t->limit)) {
        t->deadline_ms = 0;
        transmit(t, t->una, now, emit, ctx);
    }
}

void chan_tx_ack(struct chan_tx *t, const PxView *v, uint64_t now, chan_emit emit, void *ctx) {
    uint32_t idx = v->msg_id - t->first_id, pos, old_limit = t->limit;
    if (t->broken) return;
    /* one fragment a message: the receiver acks (next message, 0), or (this message, 0 or 1) */
    if (v->ack > 1 || idx > t->end || (idx == t->end && v->ack) || (pos = idx + v->ack) > t->nxt) {
        t->bad_acks++;
        return;
    }
    if (pos < t->una) { /* older than what we know: stale */
        t->bad_acks++;
        return;
    }
    t->acks++;
    t->timeouts = 0;
    t->rto_ms = CHAN_RTO_MS;
    t->limit = pos + v->credit;
    if (pos > t->una) {
        t->una = pos;
        t->dupacks = 0;
        t->deadline_ms = 0;
        if (t->recover_on) {
            if (pos < t->recover) retransmit_una(t, now, emit, ctx); /* a partial ack: the next hole */
            else t->recover_on = 0;
        }
    } else if (pos == t->una && t->una < t->nxt && t->limit == old_limit) {
        if (++t->dupacks == CHAN_DUPACKS && !t->recover_on) {
            t->recover_on = 1;
            t->recover = t->nxt;
            retransmit_una(t, now, emit, ctx);
        }
    }
    pump(t, now, emit, ctx);
}

void chan_tx_timer(struct chan_tx *t, uint64_t now, chan_emit emit, void *ctx) {
    if (t->broken || !t->deadline_ms || now < t->deadline_ms) return;
    t->deadline_ms = 0;
    if (++t->timeouts > CHAN_MAX_RETRIES) {
        t->broken = 1;
        return;
    }
    t->rto_ms = t->rto_ms * 2 > CHAN_RTO_MAX_MS ? CHAN_RTO_MAX_MS : t->rto_ms * 2;
    if (t->una < t->nxt && serial_lt(t->una, t->limit)) {
        t->recover_on = 1;
        t->recover = t->nxt;
        retransmit_una(t, now, emit, ctx);
    } else if (t->una < t->end) { /* the window is shut: ask for the receiver's ack */
        PxDataFixed d;
        memset(&d, 0, sizeof d);
        d.channel = t->channel;
        d.flags = PX_DFLAG_ACK;
        t->probes++;
        emit(ctx, &t->peer, &d, 0, 0);
    }
    if (t->una < t->end && !t->deadline_ms) t->deadline_ms = now + t->rto_ms;
}

/* ------------------------------------------------------------ receiver */

void chan_rx_init(struct chan_rx *r, const struct chan_peer *peer, uint16_t channel, uint16_t window) {
    memset(r, 0, sizeof *r);
    r->peer = *peer;
    r->channel = channel;
    r->window = window;
}

void chan_rx_frame(struct chan_rx *r, const uint8_t *raw, const PxView *v, chan_deliver deliver, void *ctx) {
    int32_t d;
    if (v->frag_count == 0) { /* a window probe (or a stray ack): answer with where we are */
        r->ack_due = 1;
        return;
    }
    r->fragments++;
    d = (int32_t)(v->msg_id - r->next_msg);
    if (d < 0 || (d == 0 && v->frag_index < r->next_frag)) {
        r->duplicates++;
        r->ack_due = 1;
        return;
    }
    if (d > 0 || v->frag_index > r->next_frag) { /* early: the sender resends it after our ack */
        r->early++;
        r->ack_due = 1;
        return;
    }
    if (v->frag_index == 0) {
        r->have = 0;
        r->too_big = v->msg_len > CHAN_RX_MSG_MAX;
    }
    if (!r->too_big) {
        if (v->frag_offset != r->have) { /* fragments that do not join up: the message is dropped */
            r->too_big = 1;
        } else {
            memcpy(r->buf + r->have, raw + v->payload, (size_t)v->payload_len);
            r->have += (uint32_t)v->payload_len;
        }
    }
    r->ack_due = 1;
    if (v->frag_index + 1 < v->frag_count) {
        r->next_frag++;
        return;
    }
    if (deliver(ctx, r, v->msg_id, r->buf, r->have, (v->data_flags & PX_DFLAG_FIN) != 0, r->too_big)) {
        r->refused++; /* not now: the last fragment is taken again when it comes again */
        if (!r->too_big && v->frag_offset == r->have - (uint32_t)v->payload_len) r->have -= (uint32_t)v->payload_len;
        return;
    }
    r->next_frag = 0;
    r->next_msg++;
    if (r->too_big) r->dropped++;
    else r->messages++;
}

void chan_rx_flush(struct chan_rx *r, chan_emit emit, void *ctx) {
    PxDataFixed d;
    if (!r->ack_due) return;
    memset(&d, 0, sizeof d);
    d.channel = r->channel;
    d.flags = PX_DFLAG_ACK;
    d.msg_id = r->next_msg;
    d.ack = r->next_frag;
    d.credit = r->paused ? 0 : r->window;
    r->ack_due = 0;
    r->credit_sent = d.credit;
    r->acks_sent++;
    emit(ctx, &r->peer, &d, 0, 0);
}

void chan_rx_credit(struct chan_rx *r, uint16_t window) {
    r->paused = window == 0;
    if (window) r->window = window;
    if (!r->paused && r->credit_sent == 0) r->ack_due = 1; /* reopen the sender's window */
}
