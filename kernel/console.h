/* The serial console (COM1): the boot log and each DIME's state changes. */
#ifndef KERNEL_CONSOLE_H
#define KERNEL_CONSOLE_H
#include <stdint.h>
/* Set up a 16550 UART at I/O port ``port`` (COM1 for the console, COM2 for the sink's store): 115200 8N1, FIFO. */
void uart_init(uint16_t port);
void console_init(void);
void kprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#endif
