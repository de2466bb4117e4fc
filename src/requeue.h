/* requeue.h - dead letters back into the queue (`mltrack requeue`). */
#ifndef MLT_REQUEUE_H
#define MLT_REQUEUE_H

#include "journal.h"

typedef struct mlt__requeue_stats {
    uint64_t requeued;  /* dead letters appended to the new journal */
    uint64_t runs;      /* runs the new journal creates or attaches to again */
    uint64_t kept;      /* dead letters left in place: nothing to log them into (see below) */
    char why_kept[160]; /* the reason of the first one kept */
} mlt__requeue_stats;

/*
 * Puts the dead letters of journal `from` (opened read-write, so its lock is held) back into
 * journal `to` (new and empty, for the same server), in their order, as the records they were:
 * a refused run's creation (name, experiment, start time, tags) or attach, its params, metrics,
 * tags and end. A record of a run that exists on the server (its id is in from's run map) goes
 * into that run. `to` is made durable, then from's dead.jsonl keeps only the letters that could
 * not be requeued: undecodable records, and records of a run neither requeued nor known by id.
 * Returns MLT_OK (nothing to do included), MLT_ERR_IO, MLT_ERR_NOMEM or MLT_ERR_CORRUPT (a line
 * of dead.jsonl that is not one mltrack wrote; nothing is changed then), with mlt_last_error().
 */
MLT__MUST_USE mlt_err mlt__requeue(mlt__journal *from, mlt__journal *to, mlt__requeue_stats *st);

#endif
