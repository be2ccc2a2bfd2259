/* A bare-metal DIME's data plane (see plane.h; the Python reference is pxproto/node/channels.py
 * and pxproto/node/flow.py). */
#include "px_codec.h"
#include "plane.h"

#include <stddef.h>
#ifdef CHANNEL_HOSTED
#include <string.h>
#else
#include "io.h"
#endif

enum { ITEM_FREE, ITEM_QUEUED, ITEM_SENT, ITEM_INPUT };

#define LOW_BITS 48
#define LOW_MASK ((1ull << LOW_BITS) - 1)
#define ITEM_REC 12                            /* lineage u64 | length u32 */
#define ITEMS_PER_FRAG (CHAN_FRAG / ITEM_REC)  /* the most items one input fragment can carry */
#define CREDIT_MAX 16
#define LINEAGES_PER_MSG (CHAN_FRAG / 8)

static uint64_t rd64(const uint8_t *p) { return px_rd64(p); }

static int same_peer(const struct chan_peer *a, const uint8_t *mac, unsigned dime) {
    return a->dime == dime && !memcmp(a->mac, mac, 6);
}

void plane_reset(struct plane *p, uint16_t self) {
    int deferred = p->deferred;
    uint32_t gen = p->gen;
    memset(p, 0, offsetof(struct plane, inbuf));
    p->self = self;
    p->deferred = deferred;
    p->gen = gen + 1;
}

void plane_load(struct plane *p, uint32_t service, uint32_t stage, const struct builtin_stage *fn, unsigned work_us,
                const struct source_spec *src) {
    p->loaded = 1;
    p->service = service;
    p->stage = stage;
    p->fn = fn;
    p->work_us = work_us;
    if (src) p->src = *src;
}

void plane_start(struct plane *p, uint64_t first, uint64_t now) {
    p->running = 1;
    p->src_first = p->src_next = first;
    p->src_total = (uint64_t)p->src.lines * p->src.passes;
    p->src_start_ms = now;
}

/* ------------------------------------------------------------ lineages completed here */

static int completed_has(const struct plane *p, uint64_t lin) {
    unsigned i;
    for (i = 0; i < PLANE_MARKS; i++)
        if (p->marks[i].mark && p->marks[i].hi == lin >> LOW_BITS && (lin & LOW_MASK) <= p->marks[i].mark) return 1;
    for (i = 0; i < PLANE_DONE_ABOVE; i++)
        if (p->above[i] == lin) return 1;
    return 0;
}

static void completed_add(struct plane *p, uint64_t lin) {
    unsigned i, hi = (unsigned)(lin >> LOW_BITS), slot = PLANE_MARKS;
    int moved = 1;
    for (i = 0; i < PLANE_MARKS; i++) {
        if (p->marks[i].mark && p->marks[i].hi == hi) break;
        if (!p->marks[i].mark && slot == PLANE_MARKS) slot = i;
    }
    if (i == PLANE_MARKS && slot < PLANE_MARKS && (lin & LOW_MASK) == 1) { /* a source's first item */
        p->marks[slot].hi = (uint16_t)hi;
        p->marks[slot].mark = 1;
        i = slot;
    } else if (i == PLANE_MARKS || (lin & LOW_MASK) != p->marks[i].mark + 1) {
        p->above[p->above_next++ % PLANE_DONE_ABOVE] = lin; /* out of order: kept one by one (bounded) */
        return;
    } else {
        p->marks[i].mark++;
    }
    while (moved) { /* what waited above the mark joins it */
        unsigned k;
        moved = 0;
        for (k = 0; k < PLANE_DONE_ABOVE; k++)
            if (p->above[k] == ((uint64_t)hi << LOW_BITS | (p->marks[i].mark + 1))) {
                p->above[k] = 0;
                p->marks[i].mark++;
                moved = 1;
            }
    }
}

/* ------------------------------------------------------------ items */

static int find_item(const struct plane *p, uint64_t lin) {
    unsigned i;
    if (!p->live) return -1;
    for (i = 0; i < PLANE_ITEMS; i++)
        if (p->items[i].state != ITEM_FREE && p->items[i].lineage == lin) return (int)i;
    return -1;
}

static int alloc_item(struct plane *p) {
    unsigned i;
    for (i = 0; i < PLANE_ITEMS; i++)
        if (p->items[i].state == ITEM_FREE) return (int)i;
    return -1;
}

static void enqueue(struct plane *p, unsigned idx) {
    p->items[idx].state = ITEM_QUEUED;
    p->queue[p->q_tail++ % PLANE_ITEMS] = idx;
    p->queued++;
}

static void complete_to(struct plane *p, unsigned u, uint64_t lin) {
    struct plane_up *up = &p->ups[u];
    if (!up->used) return;
    if (up->npending < PLANE_COMPLETIONS) up->pending[up->npending++] = lin;
    else p->faults++; /* a completion lost: the upstream keeps the item and replays it on a re-wire */
}

/* ------------------------------------------------------------ the inputs' FIFO of deferred mode */

#define IN_REC 16 /* lineage u64 | item index u32 | length u32, then the bytes, to an 8-byte boundary */
#define IN_WRAP 0xFFFFFFFFu

static unsigned rec_size(unsigned len) { return (IN_REC + len + 7) & ~7u; }

static unsigned inbuf_room(const struct plane *p) { return PLANE_INBUF - (p->in_tail - p->in_head); }

/* One input at the tail (the caller checked the room: its size, and a skip to the start at most as big). */
static void inbuf_put(struct plane *p, uint64_t lin, unsigned idx, const uint8_t *data, unsigned len) {
    unsigned at = p->in_tail % PLANE_INBUF, need = rec_size(len);
    if (at + need > PLANE_INBUF) { /* not contiguous: a wrap mark (if one fits), then from the start */
        if (PLANE_INBUF - at >= IN_REC) px_wr32(p->inbuf + at + 12, IN_WRAP);
        p->in_tail += PLANE_INBUF - at;
        at = 0;
    }
    px_wr64(p->inbuf + at, lin);
    px_wr32(p->inbuf + at + 8, idx);
    px_wr32(p->inbuf + at + 12, len);
    memcpy(p->inbuf + at + IN_REC, data, len);
    p->in_tail += need;
}

int plane_mice_take(struct plane *p, struct mice_job *job) {
    while (p->in_head != p->in_tail) {
        unsigned at = p->in_head % PLANE_INBUF;
        if (PLANE_INBUF - at < IN_REC || px_rd32(p->inbuf + at + 12) == IN_WRAP) {
            p->in_head += PLANE_INBUF - at;
            continue;
        }
        job->lineage = rd64(p->inbuf + at);
        job->idx = px_rd32(p->inbuf + at + 8);
        job->len = px_rd32(p->inbuf + at + 12);
        job->in = p->inbuf + at + IN_REC;
        job->next_head = p->in_head + rec_size(job->len);
        job->gen = p->gen;
        job->fn = p->fn;
        job->work_us = p->work_us;
        return 1;
    }
    return 0;
}

int plane_mice_run(const struct mice_job *job, uint8_t *out, const struct plane_io *io) {
    int n = 0;
    if (job->fn->kind == STAGE_SINK) n = io->commit ? io->commit(io->ctx, job->lineage, job->in, job->len) : -1;
    else if (job->fn->fn) n = job->fn->fn(job->in, job->len, out, PLANE_ITEM_MAX);
    if (job->work_us && io->spin_us) io->spin_us(job->work_us);
    return n;
}

void plane_mice_done(struct plane *p, const struct mice_job *job, const uint8_t *out, int len,
                     const struct plane_io *io) {
    struct plane_item *it = &p->items[job->idx];
    unsigned u;
    (void)io;
    if (job->gen != p->gen) return; /* the plane was reset meanwhile: nothing of the old one stays */
    p->in_head = job->next_head;
    if (it->state != ITEM_INPUT || it->lineage != job->lineage) return;
    if (len < 0) { /* an output that does not fit an item, or a sink that could not commit: not completed */
        p->faults++;
        it->state = ITEM_FREE;
        p->live--;
        return;
    }
    p->items_in++;
    if (job->fn->kind == STAGE_SINK) {
        for (u = 0; u < PLANE_UPS; u++)
            if (it->ups & (1u << u)) complete_to(p, u, it->lineage);
        completed_add(p, it->lineage);
        it->state = ITEM_FREE;
        p->live--;
        p->items_out++;
        return;
    }
    memcpy(it->data, out, (unsigned)len);
    it->len = (uint16_t)len;
    enqueue(p, job->idx);
}

/* One item from upstream u: handed to the stage once; a copy of a finished one is completed at once. */
static void arrive(struct plane *p, unsigned u, uint64_t lin, const uint8_t *data, unsigned len,
                   const struct plane_io *io) {
    int idx;
    struct plane_item *it;
    if (completed_has(p, lin)) {
        p->duplicates++;
        complete_to(p, u, lin);
        return;
    }
    if ((idx = find_item(p, lin)) >= 0) {
        p->duplicates++;
        p->items[idx].ups |= (uint8_t)(1u << u);
        return;
    }
    if (p->deferred) { /* held for the MICE (plane_mice_take): on_items made room for it in both */
        idx = alloc_item(p);
        it = &p->items[idx];
        it->lineage = lin;
        it->ups = (uint8_t)(1u << u);
        it->state = ITEM_INPUT;
        p->live++;
        inbuf_put(p, lin, (unsigned)idx, data, len);
        return;
    }
    if (p->fn->kind == STAGE_SINK) { /* committed (once per lineage, by the store), then completed at once */
        if (!io->commit || io->commit(io->ctx, lin, data, len) < 0) {
            p->faults++; /* not completed: the upstream keeps it, and replays it on a re-wire */
            return;
        }
        complete_to(p, u, lin);
        completed_add(p, lin);
        p->items_in++;
        p->items_out++;
        if (io->between) io->between(io->ctx);
        return;
    }
    if ((idx = alloc_item(p)) < 0) { /* the credit should make this impossible */
        p->faults++;
        return;
    }
    it = &p->items[idx];
    len = (unsigned)p->fn->fn(data, len, it->data, PLANE_ITEM_MAX);
    if ((int)len < 0) { /* an output longer than an item slot: the stage cannot take it */
        p->faults++;
        return;
    }
    if (p->work_us && io->spin_us) io->spin_us(p->work_us);
    if (io->between) io->between(io->ctx);
    it->lineage = lin;
    it->len = (uint16_t)len;
    it->ups = (uint8_t)(1u << u);
    p->live++;
    p->items_in++;
    enqueue(p, (unsigned)idx);
}

/* Items upstream u may still send: the item table's room, less the completions owed to u (a sink holds
 * no items, but each of its inputs is a completion to send: they are bounded the same way). */
static unsigned room_for(const struct plane *p, unsigned u) {
    unsigned used = p->live + p->ups[u].npending;
    return used >= PLANE_ITEMS ? 0 : PLANE_ITEMS - used;
}

struct delivery {
    struct plane *p;
    unsigned index; /* the upstream, or the output */
    const struct plane_io *io;
};

/* A message of items (single ``lineage | item``, or a batch ``0 | (lineage | length | item)...``). */
/* The items of a batch (each record checked), or -1 when it is malformed. */
static int batch_items(const uint8_t *m, unsigned n) {
    unsigned pos = 8;
    int count = 0;
    while (pos < n) {
        uint32_t len;
        if (pos + ITEM_REC > n || (len = px_rd32(m + pos + 8)) > n - pos - ITEM_REC || !rd64(m + pos)) return -1;
        pos += ITEM_REC + len;
        count++;
    }
    return count;
}

static int on_items(void *ctx, struct chan_rx *rx, uint32_t msg_id, const uint8_t *m, unsigned n, int fin,
                    int too_big) {
    struct delivery *d = ctx;
    struct plane *p = d->p;
    unsigned pos = 8;
    int count;
    (void)rx, (void)msg_id, (void)fin;
    if (too_big || n < 8 || !p->running || !p->fn || p->fn->kind == STAGE_SOURCE) {
        p->bad_messages += too_big || n < 8;
        return 0;
    }
    count = rd64(m) ? 1 : batch_items(m, n);
    if (count < 0) {
        p->bad_messages++;
        return 0;
    }
    /* no room for them all (items held, or completions a sink owes upstream): the sender tries later */
    if (room_for(p, d->index) < (unsigned)count || (p->deferred && inbuf_room(p) < 2 * n + 24u * (unsigned)count + 24))
        return -1;
    if (rd64(m)) {
        arrive(p, d->index, rd64(m), m + 8, n - 8, d->io);
        return 0;
    }
    while (pos < n) {
        uint32_t len = px_rd32(m + pos + 8);
        arrive(p, d->index, rd64(m + pos), m + pos + ITEM_REC, len, d->io);
        pos += ITEM_REC + len;
    }
    return 0;
}

/* Downstream completed outputs of ours: each finishes its input, completed to its upstreams. */
static int on_completions(void *ctx, struct chan_rx *rx, uint32_t msg_id, const uint8_t *m, unsigned n, int fin,
                          int too_big) {
    struct delivery *d = ctx;
    struct plane *p = d->p;
    unsigned k, u;
    (void)rx, (void)msg_id, (void)fin;
    if (too_big) return 0;
    for (k = 0; k + 8 <= n; k += 8) {
        uint64_t lin = rd64(m + k);
        int idx = find_item(p, lin);
        struct plane_item *it;
        if (idx < 0 || p->items[idx].state != ITEM_SENT) continue;
        it = &p->items[idx];
        for (u = 0; u < PLANE_UPS; u++)
            if (it->ups & (1u << u)) complete_to(p, u, lin);
        completed_add(p, lin);
        it->state = ITEM_FREE;
        p->live--;
        p->items_out++;
    }
    return 0;
}

/* ------------------------------------------------------------ wiring */

static void requeue(struct plane *p, unsigned o) {
    unsigned i;
    for (i = 0; i < PLANE_ITEMS; i++)
        if (p->items[i].state == ITEM_SENT && p->items[i].out == o) {
            enqueue(p, i);
            p->replayed++;
        }
}

int plane_connect(struct plane *p, uint16_t ch, int output, const struct chan_peer *peer, uint64_t now,
                  const struct plane_io *io) {
    unsigned i, free_slot = output ? PLANE_OUTS : PLANE_UPS;
    (void)now, (void)io;
    if (output) {
        for (i = 0; i < PLANE_OUTS; i++) {
            if (p->outs[i].used && p->outs[i].ch == ch) break;
            if (!p->outs[i].used && free_slot == PLANE_OUTS) free_slot = i;
        }
        if (i == PLANE_OUTS && (i = free_slot) == PLANE_OUTS) return -1;
        p->outs[i].used = 1;
        p->outs[i].ch = ch;
        p->outs[i].peer = *peer;
        chan_tx_init(&p->outs[i].tx, peer, ch, CREDIT_MAX);
        chan_rx_init(&p->outs[i].done, peer, (uint16_t)(ch | COMPLETION_BIT), CREDIT_MAX);
        requeue(p, i); /* what it had not completed goes to whatever the channel reaches now */
        return 0;
    }
    for (i = 0; i < PLANE_UPS; i++) {
        if (p->ups[i].used && p->ups[i].ch == ch && same_peer(&p->ups[i].peer, peer->mac, peer->dime)) break;
        if (!p->ups[i].used && free_slot == PLANE_UPS) free_slot = i;
    }
    if (i == PLANE_UPS) {
        if ((i = free_slot) == PLANE_UPS) return -1;
        p->ups[i].npending = 0;
    }
    p->ups[i].used = 1;
    p->ups[i].ch = ch;
    p->ups[i].peer = *peer;
    chan_rx_init(&p->ups[i].rx, peer, ch, CREDIT_MAX);
    chan_tx_init(&p->ups[i].done, peer, (uint16_t)(ch | COMPLETION_BIT), CREDIT_MAX);
    return 0;
}

static void forget_up(struct plane *p, unsigned u) {
    unsigned i;
    p->ups[u].used = 0;
    for (i = 0; i < PLANE_ITEMS; i++) p->items[i].ups &= (uint8_t)~(1u << u);
}

int plane_disconnect(struct plane *p, uint16_t ch, int output) {
    unsigned i;
    int found = -1;
    for (i = 0; i < (output ? PLANE_OUTS : PLANE_UPS); i++) {
        if (output && p->outs[i].used && p->outs[i].ch == ch) {
            p->outs[i].used = 0;
            requeue(p, i);
            found = 0;
        } else if (!output && p->ups[i].used && p->ups[i].ch == ch) {
            forget_up(p, i);
            found = 0;
        }
    }
    return found;
}

/* ------------------------------------------------------------ frames */

static int ack_only(const PxView *v) { return (v->data_flags & PX_DFLAG_ACK) && v->frag_count == 0; }

void plane_data(struct plane *p, const uint8_t *raw, const PxView *v, uint64_t now, const struct plane_io *io) {
    const uint8_t *mac = raw + PX_ETH_SRC;
    unsigned ch = v->channel & ~COMPLETION_BIT, i;
    int completion = (v->channel & COMPLETION_BIT) != 0;
    struct delivery d = { p, 0, io };
    for (i = 0; i < PLANE_OUTS; i++) {
        struct plane_out *o = &p->outs[i];
        if (!o->used || o->ch != ch || !same_peer(&o->peer, mac, v->src_dime)) continue;
        d.index = i;
        if (!completion && ack_only(v)) chan_tx_ack(&o->tx, v, now, io->emit, io->ctx);
        else if (completion) chan_rx_frame(&o->done, raw, v, on_completions, &d);
        else break;
        return;
    }
    for (i = 0; i < PLANE_UPS; i++) {
        struct plane_up *u = &p->ups[i];
        if (!u->used || u->ch != ch || !same_peer(&u->peer, mac, v->src_dime)) continue;
        d.index = i;
        if (completion && ack_only(v)) chan_tx_ack(&u->done, v, now, io->emit, io->ctx);
        else if (!completion) chan_rx_frame(&u->rx, raw, v, on_items, &d);
        else break;
        return;
    }
    p->rejected_data++; /* DATA is not signed: only what CONNECT wired is taken */
}

static int can_send(const struct chan_tx *t) {
    return chan_tx_room(t) && t->end == t->nxt && (int32_t)(t->nxt - t->limit) < 0;
}

static void pump(struct plane *p, uint64_t now, const struct plane_io *io) {
    uint8_t msg[CHAN_FRAG];
    while (p->queued) {
        struct plane_out *o = 0;
        unsigned k, size = 8;
        for (k = 0; k < PLANE_OUTS; k++) {
            struct plane_out *c = &p->outs[(p->rr + k) % PLANE_OUTS];
            if (c->used && can_send(&c->tx)) {
                o = c;
                p->rr = (p->rr + k + 1) % PLANE_OUTS;
                break;
            }
        }
        if (!o) return;
        memset(msg, 0, 8);
        while (p->queued) {
            unsigned idx = p->queue[p->q_head % PLANE_ITEMS];
            struct plane_item *it = &p->items[idx];
            if (it->state == ITEM_QUEUED) {
                if (size + ITEM_REC + it->len > CHAN_FRAG) break;
                px_wr64(msg + size, it->lineage);
                px_wr32(msg + size + 8, it->len);
                memcpy(msg + size + ITEM_REC, it->data, it->len);
                size += ITEM_REC + it->len;
                it->state = ITEM_SENT;
                it->out = (uint8_t)(o - p->outs);
            }
            p->q_head++;
            p->queued--;
        }
        if (size > 8) chan_tx_send(&o->tx, msg, size, 0, now, io->emit, io->ctx);
    }
}

static void flush_completions(struct plane *p, uint64_t now, const struct plane_io *io) {
    uint8_t msg[LINEAGES_PER_MSG * 8];
    unsigned u, k, n;
    for (u = 0; u < PLANE_UPS; u++) {
        struct plane_up *up = &p->ups[u];
        while (up->used && up->npending && chan_tx_room(&up->done)) {
            n = up->npending < LINEAGES_PER_MSG ? up->npending : LINEAGES_PER_MSG;
            for (k = 0; k < n; k++) px_wr64(msg + 8 * k, up->pending[k]);
            chan_tx_send(&up->done, msg, 8 * n, 0, now, io->emit, io->ctx);
            memmove(up->pending, up->pending + n, (up->npending - n) * sizeof up->pending[0]);
            up->npending -= n;
        }
    }
}

/* A source's items due by now (item first at START, then rate a second), while the item table has room:
 * each is held until downstream completes it, and sent again to whatever a re-wired output reaches. */
static void source_turn(struct plane *p, uint64_t now, const struct plane_io *io) {
    uint64_t due = p->src_total;
    if (p->src.rate && now >= p->src_start_ms) {
        uint64_t paced = p->src_first + (now - p->src_start_ms) * p->src.rate / 1000 + 1;
        if (paced < due) due = paced;
    }
    while (p->src_next < due && p->live < PLANE_ITEMS) {
        int idx = alloc_item(p), len;
        struct plane_item *it = &p->items[idx];
        len = source_item(&p->src, p->src_next, it->data, PLANE_ITEM_MAX);
        if (len < 0) { /* a line longer than an item slot: the stage cannot send it */
            p->faults++;
            p->src_next++;
            continue;
        }
        it->lineage = (uint64_t)p->stage << LOW_BITS | (p->src_next + 1);
        it->len = (uint16_t)len;
        it->ups = 0; /* nothing upstream to complete */
        p->live++;
        p->items_in++;
        p->src_next++;
        enqueue(p, (unsigned)idx);
        if (io->between) io->between(io->ctx);
    }
}

void plane_turn(struct plane *p, uint64_t now, const struct plane_io *io) {
    unsigned i, credit;
    if (p->running && p->fn && p->fn->kind == STAGE_SOURCE) source_turn(p, now, io);
    pump(p, now, io);
    flush_completions(p, now, io);
    for (i = 0; i < PLANE_UPS; i++)
        if (p->ups[i].used) {
            credit = room_for(p, i) / ITEMS_PER_FRAG;
            if (credit > CREDIT_MAX) credit = CREDIT_MAX;
            chan_rx_credit(&p->ups[i].rx, (uint16_t)credit);
            chan_rx_flush(&p->ups[i].rx, io->emit, io->ctx);
            chan_tx_timer(&p->ups[i].done, now, io->emit, io->ctx);
        }
    for (i = 0; i < PLANE_OUTS; i++)
        if (p->outs[i].used) {
            chan_rx_flush(&p->outs[i].done, io->emit, io->ctx);
            chan_tx_timer(&p->outs[i].tx, now, io->emit, io->ctx);
        }
}
