/* The check command: a read-only preflight of everything start needs (check.c). */
#ifndef CHECK_H
#define CHECK_H

#include "config.h"

/* Print one line per item (OK, WARN or FAIL and what to do) and a summary; returns the exit
 * status: 0 when no item failed, else 1. Changes nothing on the host. */
int check_run(const struct config *cfg);

#endif
