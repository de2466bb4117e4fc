/*
 * sysmetrics.h - the system metrics sampler of a tracker (sysmetrics.c): started and stopped by
 * the tracker, it logs through the public API like any program.
 */
#ifndef MLT_SYSMETRICS_H
#define MLT_SYSMETRICS_H

#include "common.h"

#include <stddef.h>

/* Starts the sampler thread of t (option system_metrics). MLT_ERR_BAD_OPTION when the machine
 * cannot be read, MLT_ERR_NOMEM when no thread starts; message in mlt_last_error(). */
MLT__MUST_USE mlt_err mlt__sysmetrics_start(mlt_tracker *t);

/* Stops it (nothing when it never started); returns once the thread is gone. */
void mlt__sysmetrics_stop(mlt_tracker *t);

#endif
