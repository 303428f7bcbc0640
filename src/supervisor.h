/* The parent: start sequence, signal loop, drain, reaping. Keeps root; never reads client
 * data. */
#ifndef SUPERVISOR_H
#define SUPERVISOR_H

#include "config.h"

/* Run `start`. Returns the process exit status. */
int supervisor_start(struct config *cfg);

#endif
