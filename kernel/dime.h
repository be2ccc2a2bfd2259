/* One DIME: a core's state, counters, heartbeat schedule and signaling handlers. */
#ifndef KERNEL_DIME_H
#define KERNEL_DIME_H
#include <stdint.h>
#include "codes.h"
#include "px_codec.h"
#include "wire.h"
#include "plane.h"
#include "keyring.h"

#define MAILBOX 64
#define ANSWERS 16          /* requests remembered, so a retransmission is answered, not re-executed */
#define ANSWER_TTL_MS 10000
#define ANSWER_TLVS 512

/* One executed request and its answer (the Linux node's Responder cache, smaller). */
struct answer {
    uint8_t mac[6];
    uint16_t dime;
    uint32_t req_id;
    uint64_t at_ms;         /* 0 = empty */
    uint8_t cmd, status, count;
    uint16_t len;
    uint8_t tlvs[ANSWER_TLVS];
};

#define ACL_MAX 48 /* peer MACs in a DIME's access list (ACL_GET's answer fits an answer's TLVs) */

struct acl_entry {
    uint8_t mac[6];
    uint8_t mask; /* bit a: commands of FCAPS area a (F=0 .. S=4) */
};

struct mail {
    uint16_t len;
    uint8_t frame[FRAME_MAX];
};

struct dime {
    uint16_t id;
    uint8_t state;
    uint32_t epoch;
    unsigned hb_ms;
    uint64_t hb_next_ms, hb_sent, hb_mark_us, busy_us, busy_mark_us;
    unsigned cpu_permille;
    uint32_t mem_limit, mem_reserved, mem_peak;
    uint64_t counters[CID_MAX + 1];
    struct sender tx;
    /* frames for this DIME, from the core that polls the NIC (single producer, single consumer) */
    volatile uint32_t mail_head, mail_tail;
    struct mail mail[MAILBOX];
    struct answer answers[ANSWERS];
    unsigned next_answer;
    uint64_t duplicates;
    struct plane plane; /* the data channels and the built-in MICE (plane.h, mice.c) */
    struct plane_io io; /* how the plane sends (this DIME's sender) */
    uint64_t mice_busy_mark_us;
    struct keyring keys;               /* what it verifies and signs with (KEY_INSTALL, KEY_ROTATE) */
    struct acl_entry acl[ACL_MAX];     /* ACL_SET; RESET empties it */
    unsigned acl_count;
};

void dime_init(struct dime *d, uint16_t id, unsigned hb_ms, unsigned chunks);
/* Hand a frame (already decoded into v, and verified) to the DIME's mailbox; 0 if it was full. */
int dime_post(struct dime *d, const uint8_t *raw, unsigned n);
/* One turn of the DIME's loop: its mailbox, then its heartbeat if due (from the core's timer interrupt). */
void dime_turn(struct dime *d);
/* The core's MICE, apart from the loop: run the stage on one waiting input (interrupts on while it runs,
 * so the loop preempts it; off on entry and on return); 0 if there was none. */
int dime_mice_step(struct dime *d);
/* The DIME's record for a discovery announce (PX_DIME_LEN bytes). */
void dime_record(const struct dime *d, uint8_t *out);
/* The core took an exception: the DIME is FAULTED (and says so in its next heartbeat, at once). */
void dime_fault(struct dime *d);
/* A state change, logged on the console. */
void dime_set_state(struct dime *d, uint8_t state);
/* Count a rejected frame addressed to this DIME. */
void dime_reject(struct dime *d, unsigned cid);
#endif
