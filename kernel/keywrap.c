/* Written from FIPS 197 (AES: key expansion 5.2, inverse cipher 5.3; the S-box is derived here from
 * its definition in 5.1.1, multiplicative inverse in GF(2^8) then the affine map, not tabled),
 * RFC 3394 section 2.2.2 (key unwrap, index based), RFC 5649 section 4.2 (the padded variant and
 * its alternative IV A65959A6 || MLI) and RFC 5869 (HKDF).  Unwrapping handles a secret, but the
 * table lookups are not constant time: the KEK is used once per KEY_INSTALL, over signed frames. */
#include "keywrap.h"
#include "sha256.h"

static uint8_t sbox[256], inv_sbox[256];
static int sbox_ready;

static uint8_t rotl8(uint8_t x, unsigned s) { return (uint8_t)(x << s | x >> (8 - s)); }

static void sbox_init(void) {
    uint8_t p = 1, q = 1;
    unsigned i;
    do { /* p runs over GF(2^8)* by powers of 3, q over the inverses by powers of 3^-1 */
        p = (uint8_t)(p ^ (p << 1) ^ (p & 0x80 ? 0x1B : 0));
        q ^= (uint8_t)(q << 1);
        q ^= (uint8_t)(q << 2);
        q ^= (uint8_t)(q << 4);
        if (q & 0x80) q ^= 0x09;
        sbox[p] = (uint8_t)(q ^ rotl8(q, 1) ^ rotl8(q, 2) ^ rotl8(q, 3) ^ rotl8(q, 4) ^ 0x63);
    } while (p != 1);
    sbox[0] = 0x63;
    for (i = 0; i < 256; i++) inv_sbox[sbox[i]] = (uint8_t)i;
    sbox_ready = 1;
}

static uint8_t xtime(uint8_t x) { return (uint8_t)(x << 1 ^ (x & 0x80 ? 0x1B : 0)); }

static uint8_t gmul(uint8_t a, uint8_t b) {
    uint8_t r = 0;
    while (b) {
        if (b & 1) r ^= a;
        a = xtime(a);
        b >>= 1;
    }
    return r;
}

#define NK 8
#define NR 14

static void expand(const uint8_t key[32], uint8_t w[4 * (NR + 1)][4]) {
    uint8_t rcon = 1, t[4], x;
    unsigned i, j;
    for (i = 0; i < NK; i++)
        for (j = 0; j < 4; j++) w[i][j] = key[4 * i + j];
    for (i = NK; i < 4 * (NR + 1); i++) {
        for (j = 0; j < 4; j++) t[j] = w[i - 1][j];
        if (i % NK == 0) {
            x = t[0];
            t[0] = (uint8_t)(sbox[t[1]] ^ rcon);
            t[1] = sbox[t[2]];
            t[2] = sbox[t[3]];
            t[3] = sbox[x];
            rcon = xtime(rcon);
        } else if (i % NK == 4) {
            for (j = 0; j < 4; j++) t[j] = sbox[t[j]];
        }
        for (j = 0; j < 4; j++) w[i][j] = w[i - NK][j] ^ t[j];
    }
}

static void add_round_key(uint8_t s[16], uint8_t w[][4], unsigned round) {
    unsigned c, r;
    for (c = 0; c < 4; c++)
        for (r = 0; r < 4; r++) s[4 * c + r] ^= w[4 * round + c][r];
}

/* InvShiftRows then InvSubBytes: row r of column c moves to column c + r. */
static void inv_shift_sub(uint8_t s[16]) {
    uint8_t t[16];
    unsigned c, r;
    for (c = 0; c < 4; c++)
        for (r = 0; r < 4; r++) t[4 * ((c + r) % 4) + r] = inv_sbox[s[4 * c + r]];
    for (c = 0; c < 16; c++) s[c] = t[c];
}

static void inv_mix_columns(uint8_t s[16]) {
    unsigned c;
    for (c = 0; c < 4; c++) {
        uint8_t *a = s + 4 * c, a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
        a[0] = gmul(a0, 14) ^ gmul(a1, 11) ^ gmul(a2, 13) ^ gmul(a3, 9);
        a[1] = gmul(a0, 9) ^ gmul(a1, 14) ^ gmul(a2, 11) ^ gmul(a3, 13);
        a[2] = gmul(a0, 13) ^ gmul(a1, 9) ^ gmul(a2, 14) ^ gmul(a3, 11);
        a[3] = gmul(a0, 11) ^ gmul(a1, 13) ^ gmul(a2, 9) ^ gmul(a3, 14);
    }
}

static void decrypt_with(uint8_t w[][4], uint8_t s[16]) {
    unsigned round;
    add_round_key(s, w, NR);
    for (round = NR - 1; round >= 1; round--) {
        inv_shift_sub(s);
        add_round_key(s, w, round);
        inv_mix_columns(s);
    }
    inv_shift_sub(s);
    add_round_key(s, w, 0);
}

void aes256_decrypt(const uint8_t key[32], uint8_t block[16]) {
    uint8_t w[4 * (NR + 1)][4];
    if (!sbox_ready) sbox_init();
    expand(key, w);
    decrypt_with(w, block);
}

void hkdf_sha256(const uint8_t *ikm, size_t ikm_len, const uint8_t *info, size_t info_len, uint8_t out[32]) {
    static const uint8_t zero_salt[32];
    uint8_t prk[32], msg[128 + 1];
    size_t i;
    hmac_sha256(zero_salt, sizeof zero_salt, ikm, ikm_len, prk); /* extract */
    if (info_len > sizeof msg - 1) info_len = sizeof msg - 1;
    for (i = 0; i < info_len; i++) msg[i] = info[i];
    msg[info_len] = 1; /* T(1) = HMAC(PRK, info || 0x01): 32 bytes are one block of output */
    hmac_sha256(prk, sizeof prk, msg, info_len + 1, out);
}

static const uint8_t WRAP_INFO[] = "pxproto KEY_INSTALL wrap v1";

void keywrap_kek(const uint8_t *wrapping_key, size_t len, unsigned new_id, uint8_t kek[32]) {
    uint8_t info[sizeof WRAP_INFO + 1];
    size_t n = sizeof WRAP_INFO - 1, i;
    for (i = 0; i < n; i++) info[i] = WRAP_INFO[i];
    info[n] = (uint8_t)(new_id >> 8);
    info[n + 1] = (uint8_t)new_id;
    hkdf_sha256(wrapping_key, len, info, n + 2, kek);
}

int aes_kw_unwrap_pad(const uint8_t kek[32], const uint8_t *wrapped, size_t len, uint8_t *out, size_t cap) {
    uint8_t w[4 * (NR + 1)][4], a[8], r[KEYWRAP_MAX + 8], b[16];
    size_t n = len / 8 - 1, i, k, mli;
    unsigned j;
    uint8_t bad = 0;
    if (len % 8 || len < 16 || n * 8 > sizeof r) return -1;
    if (!sbox_ready) sbox_init();
    expand(kek, w);
    if (n == 1) { /* one block: A | P = AES-D(K, C) */
        for (i = 0; i < 16; i++) b[i] = wrapped[i];
        decrypt_with(w, b);
        for (i = 0; i < 8; i++) a[i] = b[i], r[i] = b[8 + i];
    } else { /* RFC 3394 W^-1: six passes back over R[n..1] */
        for (i = 0; i < 8; i++) a[i] = wrapped[i];
        for (i = 0; i < n * 8; i++) r[i] = wrapped[8 + i];
        for (j = 6; j-- > 0;)
            for (i = n; i >= 1; i--) {
                uint64_t t = (uint64_t)n * j + i;
                for (k = 0; k < 8; k++) b[k] = a[k] ^ (uint8_t)(t >> (56 - 8 * k));
                for (k = 0; k < 8; k++) b[8 + k] = r[8 * (i - 1) + k];
                decrypt_with(w, b);
                for (k = 0; k < 8; k++) a[k] = b[k], r[8 * (i - 1) + k] = b[8 + k];
            }
    }
    /* RFC 5649 4.2: the AIV's constant, then 8(n-1) < MLI <= 8n, then zero padding */
    bad |= a[0] ^ 0xA6;
    bad |= a[1] ^ 0x59;
    bad |= a[2] ^ 0x59;
    bad |= a[3] ^ 0xA6;
    mli = (size_t)a[4] << 24 | (size_t)a[5] << 16 | (size_t)a[6] << 8 | a[7];
    if (bad || mli <= 8 * (n - 1) || mli > 8 * n) return -1;
    for (i = mli; i < 8 * n; i++) bad |= r[i];
    if (bad || mli > cap) return -1;
    for (i = 0; i < mli; i++) out[i] = r[i];
    return (int)mli;
}
