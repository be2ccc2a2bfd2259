/* The boot contract: -append "key=KEYID:HEX [vk=KEYID:HEX64 ...] [hb=MS] [chunks=N] [poke=D] [mono=MS] [work=US]" from
 * the Multiboot command line; each vk= is an Ed25519 public key LOAD accepts PACKAGE_SIG from (up to VK_MAX);
 * mono= is the host's monotonic clock (ms) at the guest's start, what a sink's records are timed from. */
#ifndef KERNEL_BOOTARGS_H
#define KERNEL_BOOTARGS_H
#include <stdint.h>

#define KEY_MAX 64
#define VK_MAX 4

struct verify_key {
    uint16_t id;
    uint8_t pub[32];
};

struct bootargs {
    uint16_t key_id;        /* 0 = no key: frames go out unsigned and signed ones are refused */
    uint8_t key[KEY_MAX];
    unsigned key_len;
    struct verify_key vk[VK_MAX]; /* package signature keys (vk=), vk_count of them */
    unsigned vk_count;
    unsigned hb_ms;
    unsigned chunks;        /* 2 MiB chunks in each DIME's partition */
    unsigned poke;          /* test hook: this DIME writes into the next DIME's chunk (0xFFFF = none) */
    uint64_t mem_bytes;     /* upper memory from the loader */
    uint64_t mono_ms;       /* the host's monotonic time at the start (mono=), 0 if not given */
    unsigned work_us;       /* bench hook (work=): every item stage spends this long per item (0: the package's) */
};

extern struct bootargs bootargs;
void bootargs_parse(uint32_t magic, uint32_t info);
#endif
