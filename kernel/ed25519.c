/* Written from RFC 8032 (sections 5.1.3 decoding, 5.1.4 point addition, 5.1.7 verification).
 * Field elements mod p = 2^255 - 19 are five 51-bit limbs, products in unsigned __int128 (no
 * division, so no libgcc). The curve constants are derived here, not tabled: d = -121665/121666,
 * sqrt(-1) = 2^((p-1)/4), and B is decoded from its encoding (y = 4/5, x even). Verification handles
 * public data only, so none of this is constant time. */
#include "ed25519.h"
#include "sha512.h"

typedef uint64_t fe[5];
typedef unsigned __int128 u128;
#define MASK51 ((1ULL << 51) - 1)

struct pt {
    fe x, y, z, t;
};

struct consts {
    fe d, d2, sqrtm1;
};

static void fe_copy(fe h, const fe f) {
    for (int i = 0; i < 5; i++)
        h[i] = f[i];
}

static void fe_set(fe h, uint64_t v) {
    h[0] = v, h[1] = h[2] = h[3] = h[4] = 0;
}

/* Limbs back under 2^51 (limb 0 maybe a little over): the carry out of limb 4 is 2^255 = 19. */
static void fe_carry(fe h) {
    uint64_t c;
    for (int i = 0; i < 4; i++) {
        c = h[i] >> 51, h[i] &= MASK51, h[i + 1] += c;
    }
    c = h[4] >> 51, h[4] &= MASK51, h[0] += 19 * c;
    c = h[0] >> 51, h[0] &= MASK51, h[1] += c;
}

static void fe_add(fe h, const fe f, const fe g) {
    for (int i = 0; i < 5; i++)
        h[i] = f[i] + g[i];
    fe_carry(h);
}

/* f - g + 4p, so no limb goes negative for carried inputs (limbs below 2^52). */
static void fe_sub(fe h, const fe f, const fe g) {
    h[0] = f[0] + 4 * (MASK51 - 18) - g[0];
    for (int i = 1; i < 5; i++)
        h[i] = f[i] + 4 * MASK51 - g[i];
    fe_carry(h);
}

static void fe_mul(fe h, const fe f, const fe g) {
    uint64_t a0 = f[0], a1 = f[1], a2 = f[2], a3 = f[3], a4 = f[4];
    uint64_t b0 = g[0], b1 = g[1], b2 = g[2], b3 = g[3], b4 = g[4];
    uint64_t b1_19 = 19 * b1, b2_19 = 19 * b2, b3_19 = 19 * b3, b4_19 = 19 * b4;
    u128 r0 = (u128)a0 * b0 + (u128)a1 * b4_19 + (u128)a2 * b3_19 + (u128)a3 * b2_19 + (u128)a4 * b1_19;
    u128 r1 = (u128)a0 * b1 + (u128)a1 * b0 + (u128)a2 * b4_19 + (u128)a3 * b3_19 + (u128)a4 * b2_19;
    u128 r2 = (u128)a0 * b2 + (u128)a1 * b1 + (u128)a2 * b0 + (u128)a3 * b4_19 + (u128)a4 * b3_19;
    u128 r3 = (u128)a0 * b3 + (u128)a1 * b2 + (u128)a2 * b1 + (u128)a3 * b0 + (u128)a4 * b4_19;
    u128 r4 = (u128)a0 * b4 + (u128)a1 * b3 + (u128)a2 * b2 + (u128)a3 * b1 + (u128)a4 * b0;
    r1 += (uint64_t)(r0 >> 51);
    r2 += (uint64_t)(r1 >> 51);
    r3 += (uint64_t)(r2 >> 51);
    r4 += (uint64_t)(r3 >> 51);
    h[0] = (uint64_t)r0 & MASK51;
    h[1] = (uint64_t)r1 & MASK51;
    h[2] = (uint64_t)r2 & MASK51;
    h[3] = (uint64_t)r3 & MASK51;
    h[4] = (uint64_t)r4 & MASK51;
    h[0] += 19 * (uint64_t)(r4 >> 51);
    fe_carry(h);
}

/* f^e, e a 256-bit little-endian exponent: plain square-and-multiply from the top bit. */
static void fe_pow(fe h, const fe f, const uint8_t e[32]) {
    fe r;
    fe_set(r, 1);
    for (int i = 255; i >= 0; i--) {
        fe_mul(r, r, r);
        if (e[i / 8] >> (i % 8) & 1)
            fe_mul(r, r, f);
    }
    fe_copy(h, r);
}

/* An exponent 2^bit - sub (sub < 256) as 32 little-endian bytes. */
static void exponent(uint8_t e[32], unsigned bit, unsigned sub) {
    for (int i = 0; i < 32; i++)
        e[i] = 0;
    /* 2^bit - sub = (2^bit - 256) + (256 - sub): all ones from byte 1 up to bit, then 256 - sub */
    for (unsigned b = 8; b < bit; b++)
        e[b / 8] |= (uint8_t)(1u << (b % 8));
    e[0] = (uint8_t)(256 - sub);
}

static void fe_load(fe h, const uint8_t s[32]) {
    uint64_t w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = 0;
        for (int j = 7; j >= 0; j--)
            w[i] = w[i] << 8 | s[8 * i + j];
    }
    h[0] = w[0] & MASK51;
    h[1] = (w[0] >> 51 | w[1] << 13) & MASK51;
    h[2] = (w[1] >> 38 | w[2] << 26) & MASK51;
    h[3] = (w[2] >> 25 | w[3] << 39) & MASK51;
    h[4] = (w[3] >> 12) & MASK51; /* bit 255 is not part of the element */
}

/* The canonical encoding (value fully reduced below p). */
static void fe_store(uint8_t s[32], const fe f) {
    fe h;
    uint64_t q, w[4];
    fe_copy(h, f);
    fe_carry(h);
    /* h < 2^255 + small; q = 1 exactly when h >= p (h + 19 carries out of bit 255) */
    q = (h[0] + 19) >> 51;
    for (int i = 1; i < 5; i++)
        q = (h[i] + q) >> 51;
    h[0] += 19 * q;
    for (int i = 0; i < 4; i++) {
        h[i + 1] += h[i] >> 51;
        h[i] &= MASK51;
    }
    h[4] &= MASK51;
    w[0] = h[0] | h[1] << 51;
    w[1] = h[1] >> 13 | h[2] << 38;
    w[2] = h[2] >> 26 | h[3] << 25;
    w[3] = h[3] >> 39 | h[4] << 12;
    for (int i = 0; i < 32; i++)
        s[i] = (uint8_t)(w[i / 8] >> (8 * (i % 8)));
}

static int fe_equal(const fe f, const fe g) {
    uint8_t a[32], b[32];
    int diff = 0;
    fe_store(a, f);
    fe_store(b, g);
    for (int i = 0; i < 32; i++)
        diff |= a[i] ^ b[i];
    return diff == 0;
}

static int fe_is_odd(const fe f) {
    uint8_t s[32];
    fe_store(s, f);
    return s[0] & 1;
}

static void consts_init(struct consts *c) {
    fe a, b;
    uint8_t e[32];
    fe_set(a, 121666);
    exponent(e, 255, 21); /* p - 2: a^(p-2) = 1/a */
    fe_pow(b, a, e);
    fe_set(a, 0);
    fe_set(c->d, 121665);
    fe_sub(a, a, c->d); /* -121665 */
    fe_mul(c->d, a, b);
    fe_add(c->d2, c->d, c->d);
    fe_set(a, 2);
    exponent(e, 253, 5); /* (p - 1) / 4 */
    fe_pow(c->sqrtm1, a, e);
}

/* RFC 8032 5.1.3: 0 for a non-canonical y (y >= p), no square root, or x = 0 with the sign bit set. */
static int pt_decode(struct pt *p, const uint8_t s[32], const struct consts *c) {
    uint8_t back[32], e[32];
    fe u, v, v3, t, vx2, neg;
    int sign = s[31] >> 7;
    fe_load(p->y, s);
    fe_store(back, p->y);
    for (int i = 0; i < 31; i++)
        if (back[i] != s[i])
            return 0;
    if (back[31] != (s[31] & 0x7f))
        return 0;
    fe_mul(t, p->y, p->y);
    fe_set(u, 1);
    fe_mul(v, c->d, t);
    fe_add(v, v, u); /* v = d y^2 + 1 */
    fe_sub(u, t, u); /* u = y^2 - 1 */
    fe_mul(v3, v, v);
    fe_mul(v3, v3, v); /* v^3 */
    fe_mul(t, v3, v3);
    fe_mul(t, t, v);
    fe_mul(t, t, u); /* u v^7 */
    exponent(e, 252, 3); /* (p - 5) / 8 */
    fe_pow(t, t, e);
    fe_mul(t, t, v3);
    fe_mul(p->x, t, u); /* x = u v^3 (u v^7)^((p-5)/8) */
    fe_mul(vx2, p->x, p->x);
    fe_mul(vx2, vx2, v);
    fe_set(neg, 0);
    fe_sub(neg, neg, u);
    if (fe_equal(vx2, neg))
        fe_mul(p->x, p->x, c->sqrtm1);
    else if (!fe_equal(vx2, u))
        return 0;
    fe_set(t, 0);
    if (fe_equal(p->x, t) && sign)
        return 0;
    if (fe_is_odd(p->x) != sign)
        fe_sub(p->x, t, p->x);
    fe_set(p->z, 1);
    fe_mul(p->t, p->x, p->y);
    return 1;
}

/* RFC 8032 5.1.4, the complete formula (also used for doubling). */
static void pt_add(struct pt *r, const struct pt *p, const struct pt *q, const struct consts *c) {
    fe a, b, cc, d, e, f, g, h;
    fe_sub(a, p->y, p->x);
    fe_sub(h, q->y, q->x);
    fe_mul(a, a, h);
    fe_add(b, p->y, p->x);
    fe_add(h, q->y, q->x);
    fe_mul(b, b, h);
    fe_mul(cc, p->t, c->d2);
    fe_mul(cc, cc, q->t);
    fe_mul(d, p->z, q->z);
    fe_add(d, d, d);
    fe_sub(e, b, a);
    fe_sub(f, d, cc);
    fe_add(g, d, cc);
    fe_add(h, b, a);
    fe_mul(r->x, e, f);
    fe_mul(r->y, g, h);
    fe_mul(r->t, e, h);
    fe_mul(r->z, f, g);
}

/* [k]P, k 32 little-endian bytes: double-and-add from the top bit. */
static void pt_mul(struct pt *r, const uint8_t k[32], const struct pt *p, const struct consts *c) {
    struct pt acc;
    fe_set(acc.x, 0);
    fe_set(acc.y, 1);
    fe_set(acc.z, 1);
    fe_set(acc.t, 0);
    for (int i = 255; i >= 0; i--) {
        pt_add(&acc, &acc, &acc, c);
        if (k[i / 8] >> (i % 8) & 1)
            pt_add(&acc, &acc, p, c);
    }
    *r = acc;
}

static int pt_equal(const struct pt *p, const struct pt *q) {
    fe a, b;
    fe_mul(a, p->x, q->z);
    fe_mul(b, q->x, p->z);
    if (!fe_equal(a, b))
        return 0;
    fe_mul(a, p->y, q->z);
    fe_mul(b, q->y, p->z);
    return fe_equal(a, b);
}

/* L = 2^252 + 27742317777372353535851937790883648493, as little-endian 64-bit words. */
static const uint64_t L[4] = {0x5812631a5cf5d3edULL, 0x14def9dea2f79cd6ULL, 0, 0x1000000000000000ULL};

static int below_l(const uint64_t x[4]) {
    for (int i = 3; i >= 0; i--)
        if (x[i] != L[i])
            return x[i] < L[i];
    return 0;
}

static void words(uint64_t w[4], const uint8_t s[32]) {
    for (int i = 0; i < 4; i++) {
        w[i] = 0;
        for (int j = 7; j >= 0; j--)
            w[i] = w[i] << 8 | s[8 * i + j];
    }
}

/* h (64 little-endian bytes) mod L, bit by bit from the top: r = 2r + bit, minus L when r >= L. */
static void reduce_l(uint8_t out[32], const uint8_t h[64]) {
    uint64_t r[4] = {0, 0, 0, 0};
    for (int i = 511; i >= 0; i--) {
        /* r < L < 2^253, so 2r + 1 fits in 256 bits */
        r[3] = r[3] << 1 | r[2] >> 63;
        r[2] = r[2] << 1 | r[1] >> 63;
        r[1] = r[1] << 1 | r[0] >> 63;
        r[0] = r[0] << 1 | (uint64_t)(h[i / 8] >> (i % 8) & 1);
        if (!below_l(r)) {
            uint64_t borrow = 0;
            for (int j = 0; j < 4; j++) {
                uint64_t d = r[j] - L[j] - borrow;
                borrow = (r[j] < L[j]) || (r[j] - L[j] < borrow);
                r[j] = d;
            }
        }
    }
    for (int i = 0; i < 32; i++)
        out[i] = (uint8_t)(r[i / 8] >> (8 * (i % 8)));
}

int ed25519_verify(const uint8_t sig[64], const uint8_t *msg, size_t n, const uint8_t pub[32]) {
    static const uint8_t base[32] = {0x58, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
                                     0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
                                     0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66};
    struct consts c;
    struct pt a, r, b, sb, ka;
    uint64_t s[4];
    uint8_t h[64], k[32];
    struct sha512 hs;
    words(s, sig + 32);
    if (!below_l(s))
        return 0;
    consts_init(&c);
    if (!pt_decode(&a, pub, &c) || !pt_decode(&r, sig, &c) || !pt_decode(&b, base, &c))
        return 0;
    sha512_init(&hs);
    sha512_update(&hs, sig, 32);
    sha512_update(&hs, pub, 32);
    sha512_update(&hs, msg, n);
    sha512_final(&hs, h);
    reduce_l(k, h);
    pt_mul(&sb, sig + 32, &b, &c);
    pt_mul(&ka, k, &a, &c);
    pt_add(&ka, &ka, &r, &c);
    return pt_equal(&sb, &ka);
}
