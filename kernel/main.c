/* kmain: the bootstrap core brings the machine up, starts every other core as a DIME, then
 * becomes DIME 0 and the NIC's poller. */
#include "acpi.h"
#include "bootargs.h"
#include "clock.h"
#include "console.h"
#include "cpu.h"
#include "idt.h"
#include "io.h"
#include "lapic.h"
#include "memory.h"
#include "px_codec.h"
#include "server.h"
#include "store.h"
#include "virtio_net.h"

static void mask_legacy_pic(void) {
    outb(0x21, 0xFF);
    outb(0xA1, 0xFF);
}

void kmain(uint32_t magic, uint32_t info) {
    struct cpus found = { .count = 1, .lapic_base = 0xFEE00000 };
    unsigned k, n;
    console_init();
    kprintf("\npxdime: Parallax bare-metal DIME kernel, long mode up\n");
    kprintf("boot: wire codec px_codec.h %s\n", PX_CODEC_HASH);
    bootargs_parse(magic, info);
    clock_init();
    boot_epoch = rtc_epoch();
    kprintf("boot: memory %u MiB, key id %u (%u bytes), hb %u ms, chunks %u, tsc %u kHz, epoch %u\n",
            (unsigned)(bootargs.mem_bytes >> 20), bootargs.key_id, bootargs.key_len, bootargs.hb_ms,
            bootargs.chunks, (unsigned)tsc_per_ms, boot_epoch);
    if (acpi_cpus(&found)) kprintf("boot: no ACPI MADT; one core\n");
    kprintf("boot: MADT lists %u core(s), local APIC at %lx\n", found.count, (unsigned long)found.lapic_base);
    lapic_set_base(found.lapic_base);
    found.apic_id[0] = found.count == 1 && found.apic_id[0] == 0 ? (uint8_t)lapic_id() : found.apic_id[0];
    mask_legacy_pic();
    idt_init();
    idt_load();
    lapic_enable();
    lapic_timer_calibrate();
    if (store_init()) kprintf("boot: no COM2: no store, so no sink runs here\n");
    else kprintf("boot: store on COM2 (a sink's commits)\n");
    if (nic_init()) kprintf("boot: no network; DIMEs run unreachable\n");
    else if (nic_irq() >= 0 && found.ioapic_base) {
        ioapic_route(&found, (unsigned)nic_irq(), NIC_VECTOR);
        kprintf("net: interrupts on IRQ %d through the I/O APIC at %lx\n", nic_irq(), (unsigned long)found.ioapic_base);
    }
    n = found.count;
    if (memory_partition(n, bootargs.chunks)) n = 1;
    for (k = 0; k < n; k++) dime_init(&dimes[k], (uint16_t)k, bootargs.hb_ms, bootargs.chunks);
    server_init(n);
    n = smp_boot(&found);
    server_init(n);
    memory_enter(&cpus[0]);
    lapic_timer_start(1000);
    server_announce();
    kprintf("boot: %u DIME(s) up\n", n);
    cpu_dime_loop();
}
