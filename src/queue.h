/*
 * queue.h - the queue directory as a whole: where it is, its journals, whether a live process
 * owns one, and which journal creates a given run.
 */
#ifndef MLT_QUEUE_H
#define MLT_QUEUE_H

#include "common.h"
#include "options.h"

#include <stdbool.h>

/* The queue directory for opts: option queue_dir, else $XDG_STATE_HOME/mltrack/queue, else
 * ~/.local/state/mltrack/queue. */
MLT__MUST_USE mlt_err mlt__queue_dir(const mlt_options *opts, char *out, size_t len);

/* The journal directories under queue_dir (absolute paths, sorted; caller frees each and the
 * array). A missing queue_dir has none. */
MLT__MUST_USE mlt_err mlt__queue_list(const char *queue_dir, char ***out, size_t *n);

/* Whether a live process holds the journal's lock: 1 yes, 0 no, -1 unknown (errno set). A
 * shared, non-blocking flock conflicts with the owner's exclusive one and is released at once;
 * nothing is created or modified. */
int mlt__journal_owned(const char *journal_dir);

/*
 * Looks through the journals of queue_dir (opened read-only: nothing is locked, cut or moved)
 * for the one that creates the run with client key run_key: its run map has the run created, or
 * a CREATE record of it waits there undelivered. MLT_OK with the journal's directory in who (cut
 * to who_len) and *owned set when a live process owns it; MLT_ERR_NOT_FOUND when no journal
 * does; MLT_ERR_IO when the queue cannot be listed. Reads every undelivered record of every
 * journal: for the rare moments that need it (a wait for a run that ran out of time, status).
 */
MLT__MUST_USE mlt_err mlt__queue_find_creator(const char *queue_dir, const char *run_key, char *who,
                                              size_t who_len, bool *owned);

#endif
