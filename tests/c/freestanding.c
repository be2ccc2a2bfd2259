/* px_codec.h in a freestanding program: no libc, no Python; built by tests/test_px_codec_c.py with
 *   gcc -ffreestanding -nostdlib -fno-builtin -c freestanding.c
 * and, on x86-64 Linux, linked -nostdlib -static with the _start below and run: exit status 0
 * means every check passed, else the number of the first that failed. */
#include "px_codec.h"

/* GCC may emit calls to these even when freestanding; a kernel provides them, so does this test. */
void *memset(void *d, int c, size_t n) {
    unsigned char *p = d;
    while (n--) *p++ = (unsigned char)c;
    return d;
}
void *memcpy(void *d, const void *s, size_t n) {
    unsigned char *p = d;
    const unsigned char *q = s;
    while (n--) *p++ = *q++;
    return d;
}

static const PxEtherTypes ET = PX_ETHERTYPES_DEFAULT;

static int run(void) {
    unsigned char buf[256];
    unsigned char tlvs[64];
    unsigned char text[PX_TEXT_MAX + 1];
    unsigned char big[PX_TLV_LEN + PX_TEXT_MAX + 1];
    unsigned char out[PX_BODY_OFFSET + PX_SIG_LEN + sizeof big];
    PxAddr a = { { 0x02, 0xbb, 0, 0, 0, 2 }, { 0x02, 0xaa, 0, 0, 0, 1 }, 0, 7, 1, PX_DIME_ALL, 0, 42 };
    PxHeartbeatBody hb = { 9, PX_STATE_BUSY, 250, 500, 3, 1, 2, 3, 4, 5 };
    PxDataFixed d = { 1, 0, 77, 5, 0, 0, 1, 0, 0 };
    PxView v;
    px_ssize n, t;

    /* heartbeat: encode, decode, fields back */
    n = px_encode_heartbeat(buf, sizeof buf, &ET, &a, &hb, 0);
    if (n != PX_BODY_OFFSET + PX_HB_LEN) return 1;
    if (px_decode(buf, n, &ET, &v) != 0) return 2;
    if (v.cls != PX_CLASS_HEARTBEAT || v.hb_cpu_permille != 500 || v.hb_period_ms != 250 || v.seq != 42) return 3;
    /* cpu_permille over the maximum: rejected by the encoder and by the decoder, at its field */
    hb.cpu_permille = PX_CPU_PERMILLE_MAX + 1;
    if (px_encode_heartbeat(buf, sizeof buf, &ET, &a, &hb, 0) != -PX_ERR_HB_CPU_PERMILLE) return 4;
    if (px_decode(buf, n, &ET, &v) != PX_ERR_HB_CPU_PERMILLE) return 5;
    if (v.error_offset != PX_BODY_OFFSET + PX_HB_CPU_PERMILLE) return 6;
    /* data: DIME scope, payload */
    a.scope = 1;
    a.dst_dime = 8;
    n = px_encode_data(buf, sizeof buf, &ET, &a, &d, (const unsigned char *)"hello", 5, 0);
    if (n != PX_BODY_OFFSET + PX_DATA_LEN + 5 || px_decode(buf, n, &ET, &v) != 0) return 7;
    if (v.cls != PX_CLASS_DATA || v.payload_len != 5 || buf[v.payload] != 'h' || v.msg_id != 77) return 8;
    /* signaling with one u16 TLV */
    t = px_encode_tlv_uint(tlvs, sizeof tlvs, PX_TLV_PEER_DIME, 5, 2);
    if (t != PX_TLV_LEN + 2) return 9;
    n = px_encode_signaling(buf, sizeof buf, &ET, &a, 1, PX_CMD_PING, PX_OP_REQUEST, PX_STATUS_OK, 1, tlvs, t, 0);
    if (n <= 0 || px_decode(buf, n, &ET, &v) != 0 || v.cmd != PX_CMD_PING || v.tlv_count != 1) return 10;
    /* a TEXT TLV of PX_TEXT_MAX + 1 bytes: rejected at the TLV's length field; PX_TEXT_MAX bytes pass */
    px_zero(text, sizeof text);
    for (t = 0; t <= PX_TEXT_MAX; t++) text[t] = 'a';
    t = px_encode_tlv(big, sizeof big, PX_TLV_MICE_NAME, text, PX_TEXT_MAX + 1);
    n = px_encode_signaling(out, sizeof out, &ET, &a, 1, PX_CMD_LOAD, PX_OP_REQUEST, PX_STATUS_OK, 1, big, t, 0);
    if (n != -PX_ERR_TLV_MICE_NAME) return 13;
    t = px_encode_tlv(big, sizeof big, PX_TLV_MICE_NAME, text, PX_TEXT_MAX);
    n = px_encode_signaling(out, sizeof out, &ET, &a, 1, PX_CMD_LOAD, PX_OP_REQUEST, PX_STATUS_OK, 1, big, t, 0);
    if (n != PX_BODY_OFFSET + PX_SIG_LEN + PX_TLV_LEN + PX_TEXT_MAX) return 14;
    n = px_encode_signaling(buf, sizeof buf, &ET, &a, 1, PX_CMD_PING, PX_OP_REQUEST, PX_STATUS_OK, 1, tlvs,
                            PX_TLV_LEN + 2, 0);
    /* an unknown EtherType: class 0 */
    buf[PX_ETH_TYPE] = 0x08;
    buf[PX_ETH_TYPE + 1] = 0x00;
    if (px_decode(buf, n, &ET, &v) != PX_ERR_ETH_TYPE || v.cls != 0) return 11;
    if (px_error_name(PX_ERR_HB_CPU_PERMILLE)[0] != 'h') return 12;
    /* an encrypted (AEAD) DATA frame: header and trailer checked, the body opaque; never without a trailer */
    {
        PxAuth au;
        unsigned char ct[3]; /* shorter than any clear DATA body: no body rule applies */
        au.key_id = 7;
        au.counter = 99;
        px_zero(au.tag, PX_TAG_LEN);
        ct[0] = 0xde;
        ct[1] = 0xad;
        ct[2] = 0x01;
        n = px_encode_sealed(buf, sizeof buf, &ET, &a, PX_CLASS_DATA, ct, 3, &au);
        if (n != PX_BODY_OFFSET + 3 + PX_AUTH_LEN || px_decode(buf, n, &ET, &v) != 0) return 15;
        if (!v.encrypted || v.cls != PX_CLASS_DATA || v.length != 3 || v.auth_key_id != 7 || v.channel) return 16;
        if (px_encode_sealed(buf, sizeof buf, &ET, &a, PX_CLASS_DATA, ct, 3, 0) != -PX_ERR_FLAGS) return 17;
        buf[PX_ETH_LEN + PX_HDR_FLAGS] &= (unsigned char)~PX_HFLAG_AUTH;
        if (px_decode(buf, PX_BODY_OFFSET + 3, &ET, &v) != PX_ERR_FLAGS) return 18;
        if (v.error_offset != PX_ETH_LEN + PX_HDR_FLAGS) return 19;
    }
    return 0;
}

#if defined(PX_WITH_START) && defined(__x86_64__) && defined(__linux__)
__attribute__((noreturn)) void _start(void) {
    long status = run();
    __asm__ volatile("syscall" : : "a"(60), "D"(status) : "rcx", "r11", "memory");
    for (;;) {
    }
}
#else
int px_freestanding_selftest(void) { return run(); }
#endif
