/* The server: the NIC's owner.  It verifies every frame, answers discovery and system-scope
 * signaling, and hands each DIME the frames addressed to it. */
#ifndef KERNEL_SERVER_H
#define KERNEL_SERVER_H
#include "dime.h"

#define MAX_DIMES 16

extern struct dime dimes[MAX_DIMES];
extern unsigned ndimes;

void server_init(unsigned n);
void server_announce(void);
/* Receive and dispatch what the NIC has; the number of frames handled. */
unsigned server_poll(void);
#endif
