/* The serial console (COM1): the boot log and each DIME's state changes. */
#ifndef KERNEL_CONSOLE_H
#define KERNEL_CONSOLE_H
void console_init(void);
void kprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#endif
