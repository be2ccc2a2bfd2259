/* The server: the NIC's owner.  It verifies every frame, answers discovery and system-scope
 * signaling, and hands each DIME the frames addressed to it. */
#ifndef KERNEL_SERVER_H
#define KERNEL_SERVER_H
#include "dime.h"

#define MAX_DIMES 16

extern struct dime dimes[MAX_DIMES];
extern unsigned ndimes;

void server_init(unsigned n);
/* The gratuitous announce at boot (sent BOOT_ANNOUNCES times, BOOT_ANNOUNCE_MS apart, as pxkernel). */
void server_announce(void);
/* The server's timers, from core 0's loop: the boot repeats, and a new announce when a DIME is
 * reborn (a new epoch, after RESET). */
void server_tick(void);
/* Receive and dispatch what the NIC has; the number of frames handled. */
unsigned server_poll(void);
#endif
