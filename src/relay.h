/*
 * relay.h - `mltrack sync --follow`: delivers every journal of a queue directory, those whose
 * writer still runs included, live and exactly once, for as long as it runs. Written for a
 * cluster whose compute nodes have no network: the writers log to a queue on the shared file
 * system, and a relay on the login node delivers (docs/hpc.md).
 *
 * Per journal, the relay takes the journal's delivery lease (lease.h) when its holder gave it up
 * (a writer that finds the server away does), died, or left it unchanged for lease_ms; then it
 * follows a live writer's journal (mlt__journal_open_follow: committed frames only, never the
 * ring, never a cut) or adopts a dead writer's (locked, its tail checked, its ring recovered),
 * and delivers it through a sender of its own. A followed journal whose writer ends is adopted
 * then, and removed once delivered. Several relays, and writers that reach the server, share a
 * queue: each journal has one deliverer at a time.
 */
#ifndef MLT_RELAY_H
#define MLT_RELAY_H

#include "common.h"
#include "options.h"

#include <stdatomic.h>
#include <stdbool.h>

/* What a relay does and has done, for its caller's reports. */
typedef struct mlt__relay_stats {
    uint64_t journals;  /* in the queue at the latest listing */
    uint64_t following; /* delivered now, their writers alive */
    uint64_t adopted;   /* delivered now, their writers gone */
    uint64_t others;    /* delivered by another party (a writer, another relay) */
    uint64_t taken;     /* leases taken since the start */
    uint64_t lost;      /* leases lost to another party since the start */
    uint64_t removed;   /* journals delivered and removed since the start */
} mlt__relay_stats;

/* Called after each listing of the queue (the relay's thread). */
typedef void (*mlt__relay_report)(const mlt__relay_stats *st, void *ud);

/*
 * Runs the relay over queue_dir, delivering with opts (tracking URI, credentials, retries,
 * lease_ms), on the calling thread, until *stop is set (from a signal handler: it is looked at
 * every poll_ms at least, and during a backoff). poll_ms: how often a followed journal's tail is
 * looked at for new commits (0: 200); the queue is listed, and others' leases looked at, every
 * second. At the end the leases are given up and the journals left as they are. Returns MLT_OK,
 * or the failure to start (MLT_ERR_NOMEM, MLT_ERR_BAD_OPTION).
 */
MLT__MUST_USE mlt_err mlt__relay_run(const mlt_options *opts, const char *queue_dir,
                                     const atomic_bool *stop, int poll_ms, mlt__relay_report report,
                                     void *ud);

#endif
