/* The boot contract: -append "key=KEYID:HEX [hb=MS] [chunks=N] [poke=D]" from the Multiboot command line. */
#ifndef KERNEL_BOOTARGS_H
#define KERNEL_BOOTARGS_H
#include <stdint.h>

#define KEY_MAX 64

struct bootargs {
    uint16_t key_id;        /* 0 = no key: frames go out unsigned and signed ones are refused */
    uint8_t key[KEY_MAX];
    unsigned key_len;
    unsigned hb_ms;
    unsigned chunks;        /* 2 MiB chunks in each DIME's partition */
    unsigned poke;          /* test hook: this DIME writes into the next DIME's chunk (0xFFFF = none) */
    uint64_t mem_bytes;     /* upper memory from the loader */
};

extern struct bootargs bootargs;
void bootargs_parse(uint32_t magic, uint32_t info);
#endif
