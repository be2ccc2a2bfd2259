#include "clock.h"
#include "console.h"
#include "io.h"

#define PIT_HZ 1193182u
#define CALIBRATE_MS 20u
#define CALIBRATE_ROUNDS 7

uint64_t tsc_per_ms;
static uint64_t tsc0, us0;          /* now_us() = us0 + (rdtsc() - tsc0) * 1000 / tsc_per_ms */
static volatile uint32_t clock_seq; /* odd while the BSP re-bases the clock (a seqlock) */

/* One PIT one-shot of CALIBRATE_MS: the TSC ticks it took. */
static uint64_t pit_round(void) {
    uint16_t count = (uint16_t)(PIT_HZ * CALIBRATE_MS / 1000);
    uint64_t t0;
    outb(0x61, (inb(0x61) & ~0x03));        /* gate off: the count reloads on the next rising gate */
    outb(0x43, 0xB0);                       /* channel 2, lo/hi byte, mode 0 */
    outb(0x42, count & 0xFF);
    outb(0x42, count >> 8);
    t0 = rdtsc();
    outb(0x61, (inb(0x61) & ~0x02) | 0x01); /* gate on, speaker off: counting starts */
    while (!(inb(0x61) & 0x20)) cpu_relax();
    return rdtsc() - t0;
}

/* Under TCG on a loaded host the vCPU thread can lose milliseconds at any point of a round:
 * take the median of several. */
void clock_init(void) {
    uint64_t r[CALIBRATE_ROUNDS], t;
    unsigned i, j;
    for (i = 0; i < CALIBRATE_ROUNDS; i++) {
        r[i] = pit_round();
        for (j = i; j > 0 && r[j - 1] > r[j]; j--) t = r[j], r[j] = r[j - 1], r[j - 1] = t;
    }
    tsc_per_ms = r[CALIBRATE_ROUNDS / 2] / CALIBRATE_MS;
    if (!tsc_per_ms) tsc_per_ms = 1;
    tsc0 = rdtsc();
}

uint64_t now_us(void) {
    uint32_t seq;
    uint64_t v;
    do {
        seq = __atomic_load_n(&clock_seq, __ATOMIC_ACQUIRE);
        v = us0 + (rdtsc() - tsc0) * 1000 / tsc_per_ms;
    } while ((seq & 1) || seq != __atomic_load_n(&clock_seq, __ATOMIC_ACQUIRE));
    return v;
}

uint64_t now_ms(void) { return now_us() / 1000; }

/* CMOS RTC (BCD or binary): seconds since 2000-01-01, the boot's epoch, so a rebooted DIME's
 * epoch and signing counters are above its last life's. */
static uint8_t cmos(uint8_t reg) {
    outb(0x70, reg);
    return inb(0x71);
}

uint32_t rtc_epoch(void) {
    static const uint16_t days_before[12] = { 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334 };
    uint32_t s, m, h, d, mo, y, days;
    int bcd;
    while (cmos(0x0A) & 0x80) cpu_relax();
    bcd = !(cmos(0x0B) & 0x04);
    s = cmos(0x00), m = cmos(0x02), h = cmos(0x04), d = cmos(0x07), mo = cmos(0x08), y = cmos(0x09);
    if (bcd) {
        s = (s & 15) + (s >> 4) * 10, m = (m & 15) + (m >> 4) * 10, h = (h & 15) + ((h & 0x70) >> 4) * 10;
        d = (d & 15) + (d >> 4) * 10, mo = (mo & 15) + (mo >> 4) * 10, y = (y & 15) + (y >> 4) * 10;
    }
    if (mo < 1 || mo > 12) mo = 1;
    days = y * 365 + (y + 3) / 4 + days_before[mo - 1] + (mo > 2 && y % 4 == 0) + d - 1;
    return days * 86400 + h * 3600 + m * 60 + s;
}

/* The PIT runs on QEMU's virtual clock, which under TCG on a loaded host need not keep pace with
 * the TSC (we measured it 20% off); the RTC follows the host's real clock.  So once the RTC's
 * seconds have turned twice, the TSC's rate is re-measured over that one second, and the clock
 * re-based on it (monotonically).  Called from the BSP's loop; cheap until then. */
void clock_refine(void) {
    static int stage;
    static uint8_t last_sec;
    static uint64_t edge_tsc;
    uint8_t sec;
    uint64_t t, us, rate;
    if (stage == 3 || (cmos(0x0A) & 0x80)) return;
    sec = cmos(0x00);
    if (stage == 0) {
        last_sec = sec, stage = 1;
        return;
    }
    if (sec == last_sec) return;
    last_sec = sec;
    t = rdtsc();
    if (stage == 1) {
        edge_tsc = t, stage = 2;
        return;
    }
    rate = (t - edge_tsc) / 1000;
    stage = 3;
    if (!rate) return;
    us = now_us();
    __atomic_add_fetch(&clock_seq, 1, __ATOMIC_ACQ_REL);
    us0 = us;
    tsc0 = t;
    tsc_per_ms = rate;
    __atomic_add_fetch(&clock_seq, 1, __ATOMIC_ACQ_REL);
    kprintf("clock: TSC %u kHz by the RTC (the PIT said otherwise)\n", (unsigned)rate);
}
