/* Spin locks that know their holder (local APIC id + 1), so a core that faults inside one (its
 * DIME is then FAULTED) can let go of what it held instead of stopping every other core. */
#ifndef KERNEL_SPINLOCK_H
#define KERNEL_SPINLOCK_H
#include <stdint.h>

struct spinlock {
    volatile uint32_t holder; /* 0 = free */
};

void spin_lock(struct spinlock *l);
void spin_unlock(struct spinlock *l);
/* Release every registered lock this core holds (from its exception handler). */
void spin_release_mine(void);
#endif
