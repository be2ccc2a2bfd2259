/* A DIME's signaling handlers, as the Linux node's (pxproto/node/dime.py) for the commands a
 * bare-metal DIME supports; anything else gets UNKNOWN_COMMAND.  Frames reach here decoded,
 * and verified when a key is configured (server.c). */
#include "px_codec.h"
#include "dime.h"
#include "clock.h"
#include "console.h"
#include "cpu.h"
#include "bootargs.h"
#include "io.h"
#include "memory.h"
#include "store.h"

#include "request.h"

static const char *const state_names[] = { "FREE", "BUSY", "FAULTED", "BOOTING", "STOPPING" };

void dime_set_state(struct dime *d, uint8_t state) {
    if (d->state != state)
        kprintf("dime %u: %s -> %s (epoch %u)\n", d->id, state_names[d->state], state_names[state], d->epoch);
    d->state = state;
}

static int emit_data(void *ctx, const struct chan_peer *to, const PxDataFixed *f, const uint8_t *payload,
                     unsigned len) {
    struct dime *d = ctx;
    return send_data(&d->tx, to->mac, to->dime, to->thread, f, payload, len);
}

static int commit(void *ctx, uint64_t lineage, const uint8_t *item, unsigned len) {
    (void)ctx;
    return store_commit(lineage, item, len);
}

static void spin_us(unsigned us) {
    uint64_t end = now_us() + us;
    while (now_us() < end) cpu_relax();
}

static void heartbeat(struct dime *d, uint64_t now);

/* Between two items of a message: a heartbeat due goes out now, not after the whole mailbox. */
static void beat_if_due(void *ctx) {
    struct dime *d = ctx;
    uint64_t now = now_ms();
    if (now >= d->hb_next_ms) heartbeat(d, now);
}

void dime_init(struct dime *d, uint16_t id, unsigned hb_ms, unsigned chunks) {
    memset(d, 0, sizeof *d);
    d->plane.deferred = 1; /* the stage runs in the core's main context (dime_mice_step), not in the loop */
    d->id = id;
    d->state = PX_STATE_BOOTING;
    d->epoch = boot_epoch;
    d->hb_ms = hb_ms;
    d->mem_limit = chunks;
    keyring_init(&d->keys, bootargs.key_id, bootargs.key, bootargs.key_len);
    sender_init(&d->tx, id, &d->keys);
    plane_reset(&d->plane, id);
    d->io.emit = emit_data;
    d->io.ctx = d;
    d->io.spin_us = spin_us;
    d->io.between = beat_if_due;
    d->io.commit = commit;
    d->hb_mark_us = now_us();
    dime_set_state(d, PX_STATE_FREE);
}

void dime_record(const struct dime *d, uint8_t *out) {
    px_wr16(out + PX_DIME_DIME, d->id);
    px_wr16(out + PX_DIME_CORE, d->id);
    out[PX_DIME_STATE] = d->state;
    px_wr32(out + PX_DIME_MEM_TOTAL, d->mem_limit);
    px_wr32(out + PX_DIME_MEM_FREE, d->mem_limit - d->mem_reserved);
    px_wr32(out + PX_DIME_EPOCH, d->epoch);
}

void dime_fault(struct dime *d) {
    d->counters[CID_FAULTS]++;
    dime_set_state(d, PX_STATE_FAULTED);
    d->hb_next_ms = 0;
}

void dime_reject(struct dime *d, unsigned cid) { __atomic_add_fetch(&d->counters[cid], 1, __ATOMIC_RELAXED); }

int dime_post(struct dime *d, const uint8_t *raw, unsigned n) {
    uint32_t head = d->mail_head;
    struct mail *m;
    if (head - d->mail_tail >= MAILBOX || n > FRAME_MAX) return 0;
    m = &d->mail[head % MAILBOX];
    memcpy(m->frame, raw, n);
    m->len = (uint16_t)n;
    __atomic_store_n(&d->mail_head, head + 1, __ATOMIC_RELEASE);
    return 1;
}

/* ------------------------------------------------------------ TLVs in and out */

const uint8_t *tlv_find(const struct request *r, unsigned type, unsigned *len) {
    px_ssize pos = r->v.body + PX_SIG_LEN;
    unsigned i;
    for (i = 0; i < r->v.tlv_count; i++) {
        unsigned t = px_rd16(r->raw + pos + PX_TLV_TYPE), l = px_rd16(r->raw + pos + PX_TLV_LENGTH);
        if (t == type) {
            *len = l;
            return r->raw + pos + PX_TLV_LEN;
        }
        pos += PX_TLV_LEN + l;
    }
    return 0;
}

int tlv_uint(const struct request *r, unsigned type, uint64_t *out) {
    unsigned len, k;
    const uint8_t *p = tlv_find(r, type, &len);
    if (!p || len > 8) return 0;
    for (*out = 0, k = 0; k < len; k++) *out = *out << 8 | p[k];
    return 1;
}

void put_uint(struct reply *y, unsigned type, uint64_t value) {
    px_ssize n = px_encode_tlv_uint(y->tlvs + y->len, TLV_BUF - y->len, type, value, PX_TLVK_SIZE[PX_TLV_KIND[type]]);
    if (n > 0) y->len += n, y->count++;
}

void put_bytes(struct reply *y, unsigned type, const uint8_t *value, unsigned len) {
    px_ssize n = px_encode_tlv(y->tlvs + y->len, TLV_BUF - y->len, type, value, len);
    if (n > 0) y->len += n, y->count++;
}

void put_text(struct reply *y, const char *text) { put_bytes(y, PX_TLV_TEXT, (const uint8_t *)text, strlen(text)); }

/* ------------------------------------------------------------ handlers */

static void h_ping(struct dime *d, const struct request *r, struct reply *y) {
    unsigned len = 0;
    const uint8_t *echo = tlv_find(r, PX_TLV_ECHO, &len);
    put_bytes(y, PX_TLV_ECHO, echo ? echo : (const uint8_t *)"", echo ? len : 0);
    put_uint(y, PX_TLV_EPOCH, d->epoch);
}

static void h_fault_report(struct dime *d, const struct request *r, struct reply *y) {
    unsigned len = 0;
    const uint8_t *text = tlv_find(r, PX_TLV_TEXT, &len);
    char line[PX_TEXT_MAX + 1];
    (void)y;
    memcpy(line, text ? text : (const uint8_t *)"", len);
    line[len] = 0;
    d->counters[CID_FAULTS]++;
    kprintf("dime %u: fault report from dime %u: %s\n", d->id, r->v.src_dime, line);
}

static int param_value(const struct dime *d, uint64_t pid, uint64_t *value) {
    switch (pid) {
    case PARAM_HEARTBEAT_PERIOD_MS: *value = d->hb_ms; return 1;
    case PARAM_MEM_LIMIT_CHUNKS: *value = d->mem_limit; return 1;
    default: return 0;
    }
}

static void h_get_param(struct dime *d, const struct request *r, struct reply *y) {
    uint64_t pid = 0, value = 0;
    tlv_uint(r, PX_TLV_PARAM_ID, &pid);
    if (!param_value(d, pid, &value)) {
        y->status = PX_STATUS_UNSUPPORTED;
        put_uint(y, PX_TLV_PARAM_ID, pid);
        put_text(y, "a bare-metal DIME has HEARTBEAT_PERIOD_MS and MEM_LIMIT_CHUNKS");
        return;
    }
    put_uint(y, PX_TLV_PARAM_ID, pid);
    put_uint(y, PX_TLV_VALUE, value);
}

static void h_set_param(struct dime *d, const struct request *r, struct reply *y) {
    uint64_t pid = 0, value = 0;
    tlv_uint(r, PX_TLV_PARAM_ID, &pid);
    if (!tlv_uint(r, PX_TLV_VALUE, &value)) {
        y->status = PX_STATUS_BAD_PARAM;
        put_text(y, "SET_PARAM needs a VALUE");
        return;
    }
    if (pid == PARAM_HEARTBEAT_PERIOD_MS && value >= 1 && value <= 0xFFFF) {
        d->hb_ms = (unsigned)value;
        d->hb_next_ms = now_ms() + d->hb_ms;
    } else if (pid == PARAM_MEM_LIMIT_CHUNKS && value >= d->mem_reserved && value <= memory_partition_chunks()) {
        d->mem_limit = (uint32_t)value;
    } else {
        y->status = pid == PARAM_HEARTBEAT_PERIOD_MS || pid == PARAM_MEM_LIMIT_CHUNKS ? PX_STATUS_BAD_PARAM
                                                                                      : PX_STATUS_UNSUPPORTED;
        put_uint(y, PX_TLV_PARAM_ID, pid);
        put_text(y, "value out of range or parameter not supported here");
        return;
    }
    put_uint(y, PX_TLV_PARAM_ID, pid);
    put_uint(y, PX_TLV_VALUE, value);
}

static void mem_reply(const struct dime *d, struct reply *y) {
    put_uint(y, PX_TLV_MEM_CHUNKS, d->mem_reserved);
    put_uint(y, PX_TLV_MEM_USED, d->mem_reserved);
}

static void h_mem(struct dime *d, const struct request *r, struct reply *y) {
    uint64_t n = 0;
    tlv_uint(r, PX_TLV_MEM_CHUNKS, &n);
    if (r->v.cmd == PX_CMD_MEM_ALLOC) {
        if (d->mem_reserved + n > d->mem_limit) {
            y->status = PX_STATUS_NO_MEMORY;
            mem_reply(d, y);
            put_text(y, "more chunks than the limit");
            return;
        }
        memory_map(this_cpu(), d->mem_reserved, (unsigned)n, 1);
        d->mem_reserved += (uint32_t)n;
        if (d->mem_reserved > d->mem_peak) d->mem_peak = d->mem_reserved;
    } else if (r->v.cmd == PX_CMD_MEM_FREE) {
        if (n > d->mem_reserved) {
            y->status = PX_STATUS_BAD_PARAM;
            mem_reply(d, y);
            put_text(y, "fewer chunks are reserved");
            return;
        }
        d->mem_reserved -= (uint32_t)n;
        memory_map(this_cpu(), d->mem_reserved, (unsigned)n, 0);
    } else {
        if (n < d->mem_reserved || n > memory_partition_chunks()) {
            y->status = PX_STATUS_BAD_PARAM;
            put_text(y, "the limit is between the chunks held and the partition's size");
            return;
        }
        d->mem_limit = (uint32_t)n;
        put_uint(y, PX_TLV_MEM_CHUNKS, n);
        return;
    }
    mem_reply(d, y);
}

/* RESET: a new epoch (above the old one and the RTC's), FREE, every chunk returned; a faulted
 * DIME comes back this way.  The heartbeat of the new epoch goes out at once. */
static void h_reset(struct dime *d, const struct request *r, struct reply *y) {
    uint32_t rtc = rtc_epoch();
    (void)r;
    memory_map(this_cpu(), 0, d->mem_reserved, 0);
    d->mem_reserved = 0;
    plane_reset(&d->plane, d->id);
    d->acl_count = 0;
    d->epoch = rtc > d->epoch ? rtc : d->epoch + 1;
    d->hb_sent = 0;
    d->hb_next_ms = 0;
    d->state = PX_STATE_BOOTING;
    dime_set_state(d, PX_STATE_FREE);
    put_uint(y, PX_TLV_EPOCH, d->epoch);
}

static uint64_t cpu_ns(const struct dime *d) { return d->busy_us * 1000; }

static void h_usage(struct dime *d, const struct request *r, struct reply *y) {
    (void)r;
    put_uint(y, PX_TLV_CPU_NS, cpu_ns(d));
    put_uint(y, PX_TLV_MEM_USED, d->mem_reserved);
    put_uint(y, PX_TLV_FRAMES_RX, d->counters[CID_FRAMES_RX]);
    put_uint(y, PX_TLV_FRAMES_TX, d->tx.frames_tx);
    put_uint(y, PX_TLV_BYTES_RX, d->counters[CID_BYTES_RX]);
    put_uint(y, PX_TLV_BYTES_TX, d->tx.bytes_tx);
}

static void h_counters(struct dime *d, const struct request *r, struct reply *y) {
    uint64_t cid = 0, value;
    tlv_uint(r, PX_TLV_COUNTER_ID, &cid);
    switch (cid) {
    case CID_FRAMES_TX: value = d->tx.frames_tx; break;
    case CID_BYTES_TX: value = d->tx.bytes_tx; break;
    case CID_MEM_USED_CHUNKS: value = d->mem_reserved; break;
    case CID_MEM_PEAK_CHUNKS: value = d->mem_peak; break;
    case CID_CPU_NS: value = cpu_ns(d); break;
    case CID_FRAMES_RX:
    case CID_BYTES_RX:
    case CID_REJECTED_MALFORMED:
    case CID_REJECTED_AUTH:
    case CID_REJECTED_REPLAY:
    case CID_REJECTED_ACL:
    case CID_FAULTS:
    case CID_REJECTED_UNAUTHENTICATED: value = d->counters[cid]; break;
    default:
        y->status = PX_STATUS_NOT_FOUND;
        value = 0;
    }
    put_uint(y, PX_TLV_COUNTER_ID, cid);
    put_uint(y, PX_TLV_VALUE, value);
}

typedef void (*handler)(struct dime *, const struct request *, struct reply *);

static handler handler_of(unsigned cmd) {
    switch (cmd) {
    case PX_CMD_PING: return h_ping;
    case PX_CMD_FAULT_REPORT: return h_fault_report;
    case PX_CMD_RESET: return h_reset;
    case PX_CMD_GET_PARAM: return h_get_param;
    case PX_CMD_SET_PARAM: return h_set_param;
    case PX_CMD_MEM_ALLOC:
    case PX_CMD_MEM_FREE:
    case PX_CMD_MEM_LIMIT: return h_mem;
    case PX_CMD_USAGE: return h_usage;
    case PX_CMD_COUNTERS: return h_counters;
    case PX_CMD_LOAD: return h_load;
    case PX_CMD_START: return h_start;
    case PX_CMD_STOP: return h_stop;
    case PX_CMD_CONNECT: return h_connect;
    case PX_CMD_DISCONNECT: return h_disconnect;
    case PX_CMD_KEY_INSTALL: return h_key_install;
    case PX_CMD_KEY_ROTATE: return h_key_rotate;
    case PX_CMD_ACL_SET: return h_acl_set;
    case PX_CMD_ACL_GET: return h_acl_get;
    default: return 0;
    }
}

static struct answer *answered(struct dime *d, const struct request *r, uint64_t now) {
    unsigned i;
    for (i = 0; i < ANSWERS; i++) {
        struct answer *a = &d->answers[i];
        if (a->at_ms && now - a->at_ms < ANSWER_TTL_MS && a->req_id == r->v.req_id && a->dime == r->v.src_dime &&
            a->cmd == r->v.cmd && !memcmp(a->mac, r->raw + PX_ETH_SRC, 6))
            return a;
    }
    return 0;
}

static void remember(struct dime *d, const struct request *r, const struct reply *y, uint64_t now) {
    struct answer *a = &d->answers[d->next_answer++ % ANSWERS];
    memcpy(a->mac, r->raw + PX_ETH_SRC, 6);
    a->dime = (uint16_t)r->v.src_dime;
    a->req_id = r->v.req_id;
    a->at_ms = now ? now : 1;
    a->cmd = (uint8_t)r->v.cmd;
    a->status = (uint8_t)y->status;
    a->count = (uint8_t)y->count;
    a->len = (uint16_t)y->len;
    memcpy(a->tlvs, y->tlvs, (size_t)y->len);
}

static void on_frame(struct dime *d, const uint8_t *raw, unsigned n) {
    struct request r;
    struct reply y;
    struct answer *a;
    uint64_t now = now_ms();
    handler h;
    r.raw = raw;
    if (px_decode(raw, n, &ethertypes, &r.v)) return;
    if (r.v.cls == PX_CLASS_DATA) {
        plane_data(&d->plane, raw, &r.v, now, &d->io);
        return;
    }
    if (r.v.cls != PX_CLASS_SIGNALING || r.v.op != PX_OP_REQUEST) return;
    if (!acl_allows(d, raw + PX_ETH_SRC, r.v.cmd)) { /* refused before anything runs, and not remembered */
        static const char why[] = "access list";
        uint8_t tlv[16];
        px_ssize n = px_encode_tlv(tlv, sizeof tlv, PX_TLV_TEXT, (const uint8_t *)why, sizeof why - 1);
        d->counters[CID_REJECTED_ACL]++;
        send_signaling(&d->tx, raw + PX_ETH_SRC, r.v.src_dime, r.v.src_thread, r.v.dst_thread, r.v.req_id, r.v.cmd,
                       PX_STATUS_DENIED, n > 0, tlv, n > 0 ? n : 0);
        return;
    }
    if ((a = answered(d, &r, now)) != 0) { /* a retransmission: the same answer, the command not run again */
        d->duplicates++;
        send_signaling(&d->tx, raw + PX_ETH_SRC, r.v.src_dime, r.v.src_thread, r.v.dst_thread, r.v.req_id, a->cmd,
                       a->status, a->count, a->tlvs, a->len);
        return;
    }
    y.status = PX_STATUS_OK;
    y.count = 0;
    y.len = 0;
    h = handler_of(r.v.cmd);
    if (h) {
        h(d, &r, &y);
    } else {
        y.status = PX_STATUS_UNKNOWN_COMMAND;
        put_text(&y, "not supported by the bare-metal DIME");
    }
    remember(d, &r, &y, now);
    send_signaling(&d->tx, raw + PX_ETH_SRC, r.v.src_dime, r.v.src_thread, r.v.dst_thread, r.v.req_id, r.v.cmd,
                   y.status, y.count, y.tlvs, y.len);
}

static void heartbeat(struct dime *d, uint64_t now) {
    PxHeartbeatBody hb;
    uint64_t us = now_us(), span = us - d->hb_mark_us;
    d->cpu_permille = span ? (unsigned)((d->busy_us - d->busy_mark_us) * 1000 / span) : 0;
    d->busy_mark_us = d->busy_us;
    if (d->cpu_permille > PX_CPU_PERMILLE_MAX) d->cpu_permille = PX_CPU_PERMILLE_MAX;
    d->hb_mark_us = us;
    memset(&hb, 0, sizeof hb);
    hb.epoch = d->epoch;
    hb.state = d->state;
    hb.period_ms = (uint16_t)d->hb_ms;
    hb.cpu_permille = (uint16_t)d->cpu_permille;
    hb.mem_used = d->mem_reserved;
    hb.mem_limit = d->mem_limit;
    hb.rx_queue = d->mail_head - d->mail_tail;
    hb.tx_queue = plane_waiting(&d->plane);
    hb.stage = d->plane.loaded ? (uint16_t)d->plane.stage : 0;
    hb.service = d->plane.loaded ? d->plane.service : 0;
    send_heartbeat(&d->tx, ++d->hb_sent, &hb);
    d->hb_next_ms = now + d->hb_ms;
}

int dime_mice_step(struct dime *d) {
    struct mice_job job;
    uint8_t out[PLANE_ITEM_MAX];
    uint64_t t0;
    int n;
    if (!plane_mice_take(&d->plane, &job)) return 0;
    t0 = now_us();
    __asm__ volatile("sti" ::: "memory");
    n = plane_mice_run(&job, out, &d->io); /* the DIME loop preempts this as its timer says */
    __asm__ volatile("cli" ::: "memory");
    plane_mice_done(&d->plane, &job, out, n, &d->io);
    d->busy_us += now_us() - t0;
    return 1;
}

void dime_turn(struct dime *d) {
    uint64_t now = now_ms();
    while (d->mail_tail != __atomic_load_n(&d->mail_head, __ATOMIC_ACQUIRE)) {
        struct mail *m = &d->mail[d->mail_tail % MAILBOX];
        uint64_t t0 = now_us();
        d->counters[CID_FRAMES_RX]++;
        d->counters[CID_BYTES_RX] += m->len;
        on_frame(d, m->frame, m->len);
        __atomic_store_n(&d->mail_tail, d->mail_tail + 1, __ATOMIC_RELEASE);
        d->busy_us += now_us() - t0;
        if ((now = now_ms()) >= d->hb_next_ms) heartbeat(d, now); /* on time, however long the mailbox */
    }
    if (d->plane.loaded) {
        uint64_t t0 = now_us();
        plane_turn(&d->plane, now_ms(), &d->io);
        if (d->plane.running) d->busy_us += now_us() - t0;
    }
    if (now >= d->hb_next_ms) heartbeat(d, now);
}
