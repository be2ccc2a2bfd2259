/* Hosted driver for tests/test_baremetal_plane.py: the kernel's data plane (kernel/plane.c,
 * channel.c, stages.c) as one bare-metal DIME, driven line by line on stdin:
 *   load NAME WORK_US [FIRST [RATE]]        a built-in stage, started (a source from item FIRST, RATE a
 *                                           second: the image's corpus, one pass; RATE 0: unpaced)
 *   connect CH in|out MACHEX DIME           CONNECT
 *   disconnect CH in|out                    DISCONNECT
 *   frame MS HEX                            a DATA frame for the DIME (px_decode checks it)
 *   turn MS                                 one turn of the DIME's loop
 *   stage NAME HEX                          run a stage on one item: prints its output
 *   defer                                   deferred mode (the kernel's): inputs wait for the MICE, which
 *                                           runs them all at each turn, before the plane's own turn
 *   take / done                             take the oldest input for the MICE / run it and hand it back
 *   reset                                   plane_reset (a STOP), the loaded stage kept
 * After each command it prints every frame the DIME sent (hex, one a line), and each sink commit
 * ("commit LINEAGE HEX", every one the plane asks for: the store's once-per-lineage is the kernel's), then ".". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "builtin_pkg.h"
#include "px_codec.h"
#include "plane.h"

static const PxEtherTypes ET = PX_ETHERTYPES_DEFAULT;
static const uint8_t SELF_MAC[6] = { 0x52, 0x54, 0x00, 0xaa, 0x00, 0x01 };
static struct plane plane;
static uint64_t seq;

static int emit(void *ctx, const struct chan_peer *to, const PxDataFixed *d, const uint8_t *payload, unsigned len) {
    static uint8_t out[2048];
    PxAddr a;
    px_ssize n, i;
    (void)ctx;
    memcpy(a.dst_mac, to->mac, 6);
    memcpy(a.src_mac, SELF_MAC, 6);
    a.scope = 1;
    a.src_dime = 0;
    a.src_thread = 0;
    a.dst_dime = to->dime;
    a.dst_thread = to->thread;
    a.seq = ++seq;
    n = px_encode_data(out, sizeof out, &ET, &a, d, payload, len, NULL);
    if (n < 0) {
        printf("encode-error %ld\n", (long)-n);
        return -1;
    }
    for (i = 0; i < n; i++) printf("%02x", out[i]);
    printf("\n");
    return 0;
}

static int commit(void *ctx, uint64_t lineage, const uint8_t *item, unsigned len) {
    unsigned i;
    (void)ctx;
    printf("commit %llu ", (unsigned long long)lineage);
    for (i = 0; i < len; i++) printf("%02x", item[i]);
    printf("\n");
    return 1;
}

static const struct plane_io io = { emit, NULL, NULL, NULL, commit };
static struct mice_job job;
static int job_taken;

static void mice_done(void) {
    uint8_t out[PLANE_ITEM_MAX];
    plane_mice_done(&plane, &job, out, plane_mice_run(&job, out, &io), &io);
    job_taken = 0;
}

static unsigned unhex(const char *s, uint8_t *out, unsigned cap) {
    unsigned n = 0;
    while (s[0] && s[1] && n < cap && s[0] != '\n') {
        char b[3] = { s[0], s[1], 0 };
        out[n++] = (uint8_t)strtoul(b, NULL, 16);
        s += 2;
    }
    return n;
}

int main(void) {
    static char line[8192];
    static uint8_t buf[4096];
    plane_reset(&plane, 0);
    while (fgets(line, sizeof line, stdin)) {
        char cmd[16] = "", a1[64] = "", a2[4096] = "", a3[64] = "", a4[64] = "";
        int args = sscanf(line, "%15s %63s %4095s %63s %63s", cmd, a1, a2, a3, a4);
        if (!strcmp(cmd, "load")) {
            const struct builtin_stage *fn = builtin_stage(a1, (unsigned)strlen(a1));
            struct source_spec src = { builtin_corpus, builtin_corpus_at, BUILTIN_CORPUS_LINES, 1, 0 };
            if (args >= 5) src.rate = (unsigned)atoi(a4);
            if (!fn) printf("no-stage\n");
            else {
                plane_load(&plane, 42, fn->kind == STAGE_SOURCE ? 0 : 2, fn, (unsigned)atoi(a2), &src);
                plane_start(&plane, args >= 4 ? strtoull(a3, NULL, 10) : 0, 0);
            }
        } else if (!strcmp(cmd, "connect")) {
            struct chan_peer peer;
            unhex(a3, peer.mac, 6);
            peer.dime = (uint16_t)atoi(a4);
            peer.thread = 0;
            if (plane_connect(&plane, (uint16_t)atoi(a1), !strcmp(a2, "out"), &peer, 0, &io)) printf("full\n");
        } else if (!strcmp(cmd, "disconnect")) {
            if (plane_disconnect(&plane, (uint16_t)atoi(a1), !strcmp(a2, "out"))) printf("not-found\n");
        } else if (!strcmp(cmd, "frame")) {
            PxView v;
            unsigned n = unhex(a2, buf, sizeof buf);
            if (px_decode(buf, n, &ET, &v) || v.cls != PX_CLASS_DATA) printf("bad-frame\n");
            else plane_data(&plane, buf, &v, strtoull(a1, NULL, 10), &io);
        } else if (!strcmp(cmd, "turn")) {
            while (plane.deferred && plane_mice_take(&plane, &job)) mice_done();
            plane_turn(&plane, strtoull(a1, NULL, 10), &io);
        } else if (!strcmp(cmd, "defer")) {
            plane.deferred = 1;
        } else if (!strcmp(cmd, "take")) {
            job_taken = plane_mice_take(&plane, &job);
            printf("%s\n", job_taken ? "taken" : "none");
        } else if (!strcmp(cmd, "done")) {
            if (job_taken) mice_done();
        } else if (!strcmp(cmd, "reset")) {
            const struct builtin_stage *fn = plane.fn;
            unsigned work = plane.work_us;
            plane_reset(&plane, 0);
            plane_load(&plane, 42, 2, fn, work, NULL);
            plane_start(&plane, 0, 0);
        } else if (!strcmp(cmd, "stage")) {
            const struct builtin_stage *fn = builtin_stage(a1, (unsigned)strlen(a1));
            uint8_t out[4096];
            unsigned n = unhex(a2, buf, sizeof buf), i;
            int m = fn ? fn->fn(buf, n, out, sizeof out) : -1;
            for (i = 0; m > 0 && i < (unsigned)m; i++) printf("%02x", out[i]);
            printf("%s\n", m < 0 ? "fail" : "");
        } else if (!strcmp(cmd, "stats")) {
            printf("live %u queued %u in %llu out %llu dup %llu replayed %llu faults %u rejected %llu\n", plane.live,
                   plane.queued, (unsigned long long)plane.items_in, (unsigned long long)plane.items_out,
                   (unsigned long long)plane.duplicates, (unsigned long long)plane.replayed, plane.faults,
                   (unsigned long long)plane.rejected_data);
        }
        printf(".\n");
        fflush(stdout);
    }
    return 0;
}
