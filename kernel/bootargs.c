/* Multiboot 1 information: flags bit 0 = mem_upper (KiB) at +8, bit 2 = cmdline pointer at +16. */
#include "bootargs.h"
#include "console.h"

#define MB_BOOT_MAGIC 0x2BADB002

struct bootargs bootargs = { .hb_ms = 500, .chunks = 4, .poke = 0xFFFF };

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static const char *parse_uint(const char *s, unsigned *out) {
    unsigned v = 0;
    while (*s >= '0' && *s <= '9') v = v * 10 + (unsigned)(*s++ - '0');
    *out = v;
    return s;
}

static const char *parse_u64(const char *s, uint64_t *out) {
    uint64_t v = 0;
    while (*s >= '0' && *s <= '9') v = v * 10 + (uint64_t)(*s++ - '0');
    *out = v;
    return s;
}

static const char *parse_key(const char *s) {
    unsigned id;
    int hi, lo;
    s = parse_uint(s, &id);
    if (*s++ != ':') return s;
    bootargs.key_len = 0;
    while ((hi = hexval(s[0])) >= 0 && (lo = hexval(s[1])) >= 0 && bootargs.key_len < KEY_MAX) {
        bootargs.key[bootargs.key_len++] = (uint8_t)(hi << 4 | lo);
        s += 2;
    }
    bootargs.key_id = bootargs.key_len && id && id <= 0xFFFF ? (uint16_t)id : 0;
    return s;
}

/* vk=ID:HEX64: a key id (1..65535) and exactly 32 bytes; anything else is reported and ignored. */
static const char *parse_vk(const char *s) {
    unsigned id, n = 0;
    int hi, lo;
    struct verify_key k;
    s = parse_uint(s, &id);
    if (*s == ':') {
        s++;
        while ((hi = hexval(s[0])) >= 0 && (lo = hexval(s[1])) >= 0 && n < 32) {
            k.pub[n++] = (uint8_t)(hi << 4 | lo);
            s += 2;
        }
    }
    if (n != 32 || hexval(*s) >= 0 || !id || id > 0xFFFF || bootargs.vk_count >= VK_MAX) {
        kprintf("boot: vk= ignored (want vk=KEYID:64 hex digits, at most %u of them)\n", VK_MAX);
        return s;
    }
    k.id = (uint16_t)id;
    bootargs.vk[bootargs.vk_count++] = k;
    return s;
}

static int starts(const char *s, const char *word) {
    while (*word)
        if (*s++ != *word++) return 0;
    return 1;
}

void bootargs_parse(uint32_t magic, uint32_t info) {
    const uint32_t *mb = (const uint32_t *)(uintptr_t)info;
    const char *s;
    if (magic != MB_BOOT_MAGIC) {
        kprintf("boot: not started by a Multiboot loader (magic %x)\n", magic);
        return;
    }
    if (mb[0] & 1) bootargs.mem_bytes = ((uint64_t)mb[2] + 1024) * 1024;
    if (!(mb[0] & 4)) return;
    s = (const char *)(uintptr_t)mb[4];
    kprintf("boot: cmdline \"%s\"\n", s);
    while (*s) {
        if (starts(s, "key=")) s = parse_key(s + 4);
        else if (starts(s, "vk=")) s = parse_vk(s + 3);
        else if (starts(s, "hb=")) s = parse_uint(s + 3, &bootargs.hb_ms);
        else if (starts(s, "chunks=")) s = parse_uint(s + 7, &bootargs.chunks);
        else if (starts(s, "poke=")) s = parse_uint(s + 5, &bootargs.poke);
        else if (starts(s, "mono=")) s = parse_u64(s + 5, &bootargs.mono_ms);
        else if (starts(s, "work=")) s = parse_uint(s + 5, &bootargs.work_us);
        while (*s && *s != ' ') s++;
        while (*s == ' ') s++;
    }
    if (bootargs.hb_ms == 0 || bootargs.hb_ms > 65535) bootargs.hb_ms = 500;
    if (bootargs.chunks == 0 || bootargs.chunks > 16) bootargs.chunks = 4;
}
