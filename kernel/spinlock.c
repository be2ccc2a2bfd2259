#include "spinlock.h"
#include "io.h"
#include "lapic.h"

#define MAX_LOCKS 8

static struct spinlock *registry[MAX_LOCKS];
static unsigned registered;
static volatile int registry_lock;

static void enroll(struct spinlock *l) {
    unsigned i;
    while (__atomic_exchange_n(&registry_lock, 1, __ATOMIC_ACQUIRE)) cpu_relax();
    for (i = 0; i < registered && registry[i] != l; i++) continue;
    if (i == registered && registered < MAX_LOCKS) registry[registered++] = l;
    __atomic_store_n(&registry_lock, 0, __ATOMIC_RELEASE);
}

void spin_lock(struct spinlock *l) {
    uint32_t me = lapic_id() + 1, free = 0;
    while (!__atomic_compare_exchange_n(&l->holder, &free, me, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
        free = 0;
        cpu_relax();
    }
    if (!registered || registry[registered - 1] != l) enroll(l);
}

void spin_unlock(struct spinlock *l) { __atomic_store_n(&l->holder, 0, __ATOMIC_RELEASE); }

void spin_release_mine(void) {
    uint32_t me = lapic_id() + 1;
    unsigned i;
    for (i = 0; i < registered; i++)
        if (registry[i]->holder == me) spin_unlock(registry[i]);
}
