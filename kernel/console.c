/* COM1 at 115200 8N1, polled; kprintf knows %s %c %d %u %x %lu %lx %llu %llx and a 0-padded width. */
#include <stdarg.h>
#include "console.h"
#include "io.h"
#include "spinlock.h"

#define COM1 0x3F8

static struct spinlock console_lock;

void uart_init(uint16_t port) {
    outb(port + 1, 0x00); /* no interrupts */
    outb(port + 3, 0x80); /* divisor latch */
    outb(port + 0, 0x01); /* 115200 baud */
    outb(port + 1, 0x00);
    outb(port + 3, 0x03); /* 8N1 */
    outb(port + 2, 0xC7); /* FIFO on, cleared */
    outb(port + 4, 0x03);
}

void console_init(void) { uart_init(COM1); }

static void putc_raw(char c) {
    while (!(inb(COM1 + 5) & 0x20)) cpu_relax();
    outb(COM1, (uint8_t)c);
}

static void put_num(unsigned long long v, unsigned base, int width, int neg) {
    char buf[24];
    int n = 0;
    do {
        buf[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    if (neg) buf[n++] = '-';
    while (n < width) putc_raw('0'), width--;
    while (n) putc_raw(buf[--n]);
}

void kprintf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    spin_lock(&console_lock);
    for (; *fmt; fmt++) {
        int width = 0, longs = 0;
        if (*fmt != '%') {
            if (*fmt == '\n') putc_raw('\r');
            putc_raw(*fmt);
            continue;
        }
        fmt++;
        while (*fmt >= '0' && *fmt <= '9') width = width * 10 + (*fmt++ - '0');
        while (*fmt == 'l') longs++, fmt++;
        switch (*fmt) {
        case 's': {
            const char *s = va_arg(ap, const char *);
            while (*s) putc_raw(*s++);
            break;
        }
        case 'c': putc_raw((char)va_arg(ap, int)); break;
        case 'd': {
            long long v = longs ? va_arg(ap, long long) : va_arg(ap, int);
            put_num(v < 0 ? -(unsigned long long)v : (unsigned long long)v, 10, width, v < 0);
            break;
        }
        case 'u':
        case 'x': {
            unsigned long long v = longs ? va_arg(ap, unsigned long long) : va_arg(ap, unsigned);
            put_num(v, *fmt == 'x' ? 16 : 10, width, 0);
            break;
        }
        default: putc_raw('%'); putc_raw(*fmt); break;
        }
    }
    spin_unlock(&console_lock);
    va_end(ap);
}
