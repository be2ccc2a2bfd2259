/* The interrupt table: the LAPIC tick, the spurious vector, and every CPU exception, which
 * faults only the DIME of the core that took it. */
#ifndef KERNEL_IDT_H
#define KERNEL_IDT_H
void idt_init(void); /* build once */
void idt_load(void); /* on every core */
#endif
