#include "clock.h"
#include "io.h"

#define PIT_HZ 1193182u
#define CALIBRATE_MS 20u

uint64_t tsc_per_ms;
static uint64_t tsc0;

void clock_init(void) {
    uint16_t count = (uint16_t)(PIT_HZ * CALIBRATE_MS / 1000);
    uint64_t t0, t1;
    outb(0x61, (inb(0x61) & ~0x02) | 0x01); /* gate channel 2 on, speaker off */
    outb(0x43, 0xB0);                       /* channel 2, lo/hi byte, mode 0 */
    outb(0x42, count & 0xFF);
    outb(0x42, count >> 8);
    t0 = rdtsc();
    while (!(inb(0x61) & 0x20)) cpu_relax();
    t1 = rdtsc();
    tsc_per_ms = (t1 - t0) / CALIBRATE_MS;
    if (!tsc_per_ms) tsc_per_ms = 1;
    tsc0 = t1;
}

uint64_t now_ms(void) { return (rdtsc() - tsc0) / tsc_per_ms; }

uint64_t now_us(void) { return (rdtsc() - tsc0) * 1000 / tsc_per_ms; }

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
