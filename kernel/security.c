/* A bare-metal DIME's security commands, as the Linux node's (pxproto/node/fcaps.py h_key_install,
 * h_key_rotate, h_acl_set, h_acl_get, and the access check of pxproto/node/machine.py): KEY_INSTALL
 * unwraps a WRAPPED_KEY (keywrap.c) under a key of the DIME's ring and installs it; KEY_ROTATE signs
 * with it from then on; the access list says which peer MACs may send commands of which FCAPS areas. */
#include "px_codec.h"
#include "request.h"
#include "auth.h"
#include "clock.h"
#include "io.h"
#include "keywrap.h"

/* "prefix<id>suffix" into out (a text TLV's worth). */
static const char *with_id(char *out, const char *prefix, unsigned id, const char *suffix) {
    char digits[6];
    unsigned n = 0, k = 0;
    do digits[n++] = (char)('0' + id % 10);
    while ((id /= 10) != 0 && n < sizeof digits);
    while (*prefix) out[k++] = *prefix++;
    while (n) out[k++] = digits[--n];
    while (*suffix) out[k++] = *suffix++;
    out[k] = 0;
    return out;
}

static void refuse(struct reply *y, unsigned status, uint64_t kid, const char *why) {
    y->status = status;
    put_uint(y, PX_TLV_KEY_ID, kid);
    put_text(y, why);
}

static void refuse_auth(struct dime *d, struct reply *y, uint64_t kid, const char *why) {
    dime_reject(d, CID_REJECTED_AUTH);
    refuse(y, PX_STATUS_BAD_PARAM, kid, why);
}

void h_key_install(struct dime *d, const struct request *r, struct reply *y) {
    uint64_t kid = 0;
    unsigned len = 0, wrapping_id, clear_len;
    const uint8_t *wrapped = tlv_find(r, PX_TLV_WRAPPED_KEY, &len);
    uint8_t wrapping_key[KEY_MAX], kek[32], key[KEYWRAP_MAX];
    char text[96];
    int n;
    tlv_uint(r, PX_TLV_KEY_ID, &kid);
    if (!wrapped || !tlv_find(r, PX_TLV_KEY_ID, &clear_len)) {
        y->status = PX_STATUS_BAD_PARAM;
        put_text(y, wrapped ? "KEY_INSTALL request lacks KEY_ID" : "KEY_INSTALL request lacks WRAPPED_KEY");
        return;
    }
    if (tlv_find(r, PX_TLV_KEY, &clear_len)) /* the old clear form: never accepted, the key is burnt anyway */
        return refuse(y, PX_STATUS_BAD_PARAM, kid, "a key in clear is refused: send WRAPPED_KEY");
    if (!auth_enabled())
        return refuse(y, PX_STATUS_UNSUPPORTED, kid, "no cluster key to unwrap under (booted without key=)");
    if (kid == 0 || kid > 0xFFFF) return refuse(y, PX_STATUS_BAD_PARAM, kid, "a key id 1..65535 and a WRAPPED_KEY");
    /* from here every refusal is counted in REJECTED_AUTH (wrong wrapping key, tampered, too short, retired) */
    if (len < 2 + 24) return refuse_auth(d, y, kid, "WRAPPED_KEY is too short");
    wrapping_id = (unsigned)(wrapped[0] << 8 | wrapped[1]);
    n = keyring_lookup(&d->keys, wrapping_id, now_ms(), wrapping_key);
    if (n < 0)
        return refuse_auth(d, y, kid,
                      with_id(text, "WRAPPED_KEY is wrapped under key ", wrapping_id, ", which this DIME does not hold"));
    keywrap_kek(wrapping_key, (size_t)n, (unsigned)kid, kek);
    n = aes_kw_unwrap_pad(kek, wrapped + 2, len - 2, key, sizeof key);
    if (n < 0) return refuse_auth(d, y, kid, with_id(text, "WRAPPED_KEY does not unwrap under key ", wrapping_id, ""));
    {
        const char *why = keyring_install(&d->keys, (unsigned)kid, key, (unsigned)n);
        memset(key, 0, sizeof key);
        if (why) return refuse_auth(d, y, kid, why);
    }
    put_uint(y, PX_TLV_KEY_ID, kid);
}

void h_key_rotate(struct dime *d, const struct request *r, struct reply *y) {
    uint64_t kid = 0;
    if (!tlv_uint(r, PX_TLV_KEY_ID, &kid)) {
        y->status = PX_STATUS_BAD_PARAM;
        put_text(y, "KEY_ROTATE request lacks KEY_ID");
        return;
    }
    if (kid > 0xFFFF || keyring_rotate(&d->keys, (unsigned)kid, now_ms())) y->status = PX_STATUS_NOT_FOUND;
    put_uint(y, PX_TLV_KEY_ID, kid);
}

/* ------------------------------------------------------------ the access list */

int acl_allows(const struct dime *d, const uint8_t *mac, unsigned cmd) {
    unsigned i;
    if (!d->acl_count) return 1; /* empty: everyone may do everything */
    for (i = 0; i < d->acl_count; i++)
        if (!memcmp(d->acl[i].mac, mac, 6)) return d->acl[i].mask >> (cmd >> 4) & 1; /* bit = FCAPS area */
    return 0;
}

void h_acl_set(struct dime *d, const struct request *r, struct reply *y) {
    unsigned len = 0, i, k, count = 0;
    const uint8_t *raw = tlv_find(r, PX_TLV_ACL, &len);
    struct acl_entry acl[ACL_MAX];
    if (!raw) {
        y->status = PX_STATUS_BAD_PARAM;
        put_text(y, "ACL_SET request lacks ACL");
        return;
    }
    for (i = 0; i + PX_ACL_ENTRY_SIZE <= len; i += PX_ACL_ENTRY_SIZE) { /* a MAC listed twice: the last entry */
        for (k = 0; k < count && memcmp(acl[k].mac, raw + i, 6); k++) continue;
        if (k == ACL_MAX) {
            y->status = PX_STATUS_NO_MEMORY;
            put_text(y, "a bare-metal DIME's access list holds 48 MACs");
            return;
        }
        memcpy(acl[k].mac, raw + i, 6);
        acl[k].mask = raw[i + PX_ACL_MASK];
        if (k == count) count++;
    }
    memcpy(d->acl, acl, count * sizeof acl[0]);
    d->acl_count = count;
}

void h_acl_get(struct dime *d, const struct request *r, struct reply *y) {
    uint8_t raw[ACL_MAX * PX_ACL_ENTRY_SIZE], *e;
    unsigned i, k;
    (void)r;
    for (i = 0; i < d->acl_count; i++) { /* sorted by MAC, as the Linux node lists them */
        for (k = i; k > 0 && memcmp(raw + (k - 1) * PX_ACL_ENTRY_SIZE, d->acl[i].mac, 6) > 0; k--)
            memcpy(raw + k * PX_ACL_ENTRY_SIZE, raw + (k - 1) * PX_ACL_ENTRY_SIZE, PX_ACL_ENTRY_SIZE);
        e = raw + k * PX_ACL_ENTRY_SIZE;
        memcpy(e, d->acl[i].mac, 6);
        e[PX_ACL_MASK] = d->acl[i].mask;
        e[PX_ACL_RESERVED] = 0;
    }
    put_bytes(y, PX_TLV_ACL, raw, d->acl_count * PX_ACL_ENTRY_SIZE);
}
