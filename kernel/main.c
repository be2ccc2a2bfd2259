/* kmain: the bootstrap core brings the machine up, then becomes DIME 0 and the NIC's poller. */
#include "bootargs.h"
#include "clock.h"
#include "console.h"
#include "io.h"
#include "px_codec.h"
#include "server.h"
#include "virtio_net.h"

void kmain(uint32_t magic, uint32_t info) {
    console_init();
    kprintf("\npxdime: Parallax bare-metal DIME kernel, long mode up\n");
    kprintf("boot: wire codec px_codec.h %s\n", PX_CODEC_HASH);
    bootargs_parse(magic, info);
    clock_init();
    boot_epoch = rtc_epoch();
    kprintf("boot: memory %u MiB, key id %u (%u bytes), hb %u ms, chunks %u, tsc %u kHz, epoch %u\n",
            (unsigned)(bootargs.mem_bytes >> 20), bootargs.key_id, bootargs.key_len, bootargs.hb_ms,
            bootargs.chunks, (unsigned)tsc_per_ms, boot_epoch);
    if (nic_init()) kprintf("boot: no network; DIMEs run unreachable\n");
    server_init(1);
    dime_init(&dimes[0], 0, bootargs.hb_ms, bootargs.chunks);
    server_announce();
    kprintf("boot: %u DIME(s) up\n", ndimes);
    for (;;) {
        server_poll();
        dime_turn(&dimes[0]);
        cpu_relax();
    }
}
