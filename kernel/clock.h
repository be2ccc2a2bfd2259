/* Time: the TSC, calibrated against PIT channel 2 at boot. */
#ifndef KERNEL_CLOCK_H
#define KERNEL_CLOCK_H
#include <stdint.h>
extern uint64_t tsc_per_ms;
void clock_init(void);
uint64_t now_ms(void);
uint64_t now_us(void);
uint32_t rtc_epoch(void);
void clock_refine(void);
#endif
