/* A bare-metal DIME's data plane and its MICE: the channels CONNECT wires, the item flow of
 * pxproto/node/flow.py for a one-in-one-out stage (lineage kept, exactly once, completion
 * travelling back from the sink), and the built-in stage that runs between them.  A source makes
 * its items here (lineage stage << 48 | i + 1, from START's first item on, paced), a sink commits
 * each input through plane_io.commit and completes it upstream at once. */
#ifndef KERNEL_PLANE_H
#define KERNEL_PLANE_H
#include <stdint.h>
#include "channel.h"
#include "stages.h"

#define PLANE_ITEMS 2048
#define PLANE_ITEM_MAX 176
#define PLANE_UPS 4
#define PLANE_OUTS 4
#define PLANE_DONE_ABOVE 2048
#define PLANE_MARKS 8
#define PLANE_COMPLETIONS PLANE_ITEMS /* one per item held, at most (copies of finished ones aside) */
#define COMPLETION_BIT 0x8000u
#define PLANE_INBUF 65536 /* inputs waiting for a deferred MICE (deferred mode), bytes */

struct plane_item {
    uint64_t lineage;
    uint16_t len;
    uint8_t state; /* ITEM_FREE, ITEM_INPUT (waits for the MICE), ITEM_QUEUED (waits for an output),
                      ITEM_SENT (waits for its completion) */
    uint8_t ups;   /* bit u: upstream u gets its completion */
    uint8_t out;   /* the output it was sent on */
    uint8_t data[PLANE_ITEM_MAX];
};

struct plane_up {
    int used;
    uint16_t ch;
    struct chan_peer peer;
    struct chan_rx rx;   /* items, on ch */
    struct chan_tx done; /* completions, on ch | COMPLETION_BIT */
    unsigned npending;
    uint64_t pending[PLANE_COMPLETIONS];
};

struct plane_out {
    int used;
    uint16_t ch;
    struct chan_peer peer;
    struct chan_tx tx;   /* items, on ch */
    struct chan_rx done; /* completions from downstream, on ch | COMPLETION_BIT */
};

struct plane {
    int deferred; /* the stage runs outside the DIME loop (plane_mice_*), not inside plane_data */
    uint32_t gen; /* bumped by each plane_reset: a MICE job of an older plane is dropped */
    int loaded, running;
    uint32_t service, stage;
    const struct builtin_stage *fn;
    unsigned work_us;
    struct source_spec src;          /* a source's corpus and pacing */
    uint64_t src_first, src_next, src_total, src_start_ms;
    uint16_t self;
    struct plane_up ups[PLANE_UPS];
    struct plane_out outs[PLANE_OUTS];
    unsigned rr, live, queued, faults;
    struct plane_item items[PLANE_ITEMS];
    uint32_t queue[PLANE_ITEMS]; /* item indices waiting for an output, FIFO */
    uint32_t q_head, q_tail;
    struct { uint16_t hi; uint64_t mark; } marks[PLANE_MARKS];
    uint64_t above[PLANE_DONE_ABOVE];
    unsigned above_next;
    uint64_t items_in, items_out, duplicates, replayed, bad_messages, rejected_data;
    uint32_t in_head, in_tail; /* deferred mode: the inputs' FIFO in inbuf */
    uint8_t inbuf[PLANE_INBUF] __attribute__((aligned(8)));
};

/* One input taken for the MICE (deferred mode): what plane_mice_run needs, copied while the DIME loop
 * could not run, so a STOP or RESET meanwhile changes nothing of it. */
struct mice_job {
    uint64_t lineage;
    uint32_t gen, idx, len, next_head;
    const uint8_t *in;
    const struct builtin_stage *fn;
    unsigned work_us;
};

/* How the plane sends a DATA frame, spins for a stage's work and lets its DIME beat between items. */
struct plane_io {
    chan_emit emit;
    void *ctx;
    void (*spin_us)(unsigned us);
    void (*between)(void *ctx); /* after each item the stage ran: the DIME's heartbeat, when due */
    /* a sink's commit of one item: 1 written, 0 already in the store, -1 it could not be */
    int (*commit)(void *ctx, uint64_t lineage, const uint8_t *item, unsigned len);
};

void plane_reset(struct plane *p, uint16_t self);
/* LOAD's choice made: a built-in stage (with its work per item; a source's corpus) for (service, stage). */
void plane_load(struct plane *p, uint32_t service, uint32_t stage, const struct builtin_stage *fn, unsigned work_us,
                const struct source_spec *src);
/* START: the MICE runs; a source from item first (a replacement resumes there), paced from now. */
void plane_start(struct plane *p, uint64_t first, uint64_t now);
/* CONNECT: 0, or -1 when every channel end of that kind is in use. */
int plane_connect(struct plane *p, uint16_t ch, int output, const struct chan_peer *peer, uint64_t now,
                  const struct plane_io *io);
/* DISCONNECT: 0, or -1 when nothing was wired so. */
int plane_disconnect(struct plane *p, uint16_t ch, int output);
/* A DATA frame for this DIME (px_decode checked it). */
void plane_data(struct plane *p, const uint8_t *raw, const PxView *v, uint64_t now, const struct plane_io *io);
/* After each turn of the DIME's loop: send what waits (items, completions, acks) and run the timers. */
void plane_turn(struct plane *p, uint64_t now, const struct plane_io *io);
/* Deferred mode: the MICE of a core runs apart from its DIME loop (the loop preempts it), on one input at a
 * time.  take and done must run where the DIME loop cannot (interrupts off); run in between, with the loop
 * free to run: take gives the oldest input (0 if none), run is the stage on it (an item stage's output in
 * out, PLANE_ITEM_MAX bytes; a sink's commit), done hands the result back (dropped if the plane was reset). */
int plane_mice_take(struct plane *p, struct mice_job *job);
int plane_mice_run(const struct mice_job *job, uint8_t *out, const struct plane_io *io);
void plane_mice_done(struct plane *p, const struct mice_job *job, const uint8_t *out, int len,
                     const struct plane_io *io);
/* Items waiting to be sent, and handed over but not completed downstream (the heartbeat's queues). */
static inline unsigned plane_waiting(const struct plane *p) { return p->queued; }
static inline unsigned plane_held(const struct plane *p) { return p->live; }
#endif
