/* The one clock of the program: milliseconds of CLOCK_MONOTONIC, for deadlines and timeouts
 * (never a wall-clock time: an administrator's date change must not fire or stall them). */
#ifndef CLOCK_H
#define CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t clock_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Milliseconds since t0, an earlier clock_now_ms(). */
static inline uint64_t clock_since_ms(uint64_t t0)
{
	return clock_now_ms() - t0;
}

#endif
