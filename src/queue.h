/*
 * queue.h - the queue directory as a whole: where it is, its journals, adopting those whose
 * process died (for a tracker's sender or `mltrack sync`), whether a live process owns one, and
 * which journal creates a given run. Nothing above the queue opens a journal's lock file.
 */
#ifndef MLT_QUEUE_H
#define MLT_QUEUE_H

#include "common.h"
#include "journal.h"
#include "options.h"

#include <stdbool.h>

/* The queue directory for opts: option queue_dir, else $XDG_STATE_HOME/mltrack/queue, else
 * ~/.local/state/mltrack/queue. */
MLT__MUST_USE mlt_err mlt__queue_dir(const mlt_options *opts, char *out, size_t len);

/* The journal directories under queue_dir (absolute paths, sorted; caller frees each and the
 * array). A missing queue_dir has none. */
MLT__MUST_USE mlt_err mlt__queue_list(const char *queue_dir, char ***out, size_t *n);

/* One journal met by mlt__queue_adopt(). */
typedef struct mlt__adoption {
    const char *dir;          /* the journal's directory */
    mlt_err err;              /* MLT_OK: j is open and locked; MLT_ERR_LOCKED: a live process
                               * owns it; else it cannot be opened (mlt_last_error() says why) */
    mlt__journal *j;          /* when err is MLT_OK: the callback's (it hands it on or closes it) */
    const mlt__recovery *rec; /* what opening it did: a torn tail cut, points its process left
                               * in memory saved (also when err is not MLT_OK) */
} mlt__adoption;

/* Called for each journal of the queue; false stops the adoption (journals not reached yet are
 * left alone). */
typedef bool (*mlt__adopt_fn)(const mlt__adoption *a, void *ud);

/*
 * Adopts the journals of queue_dir that no live process owns, for delivery: opens each in turn
 * (taking its lock, cutting a torn or corrupt tail, moving what its dead process left in its
 * ring into its segments) with fsync mode, and hands it to fn, with those it could not open.
 * Used by the MLflow callback (a tracker takes over the journals of dead processes) and by
 * `mltrack sync` alike: nothing else in the library or the CLI opens a journal's lock. *n
 * (may be NULL) is the number of journals the queue holds. Returns MLT_OK, or the failure to
 * list the queue (fn not called).
 */
MLT__MUST_USE mlt_err mlt__queue_adopt(const char *queue_dir, mlt__fsync_mode mode,
                                       mlt__adopt_fn fn, void *ud, size_t *n);

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

/* As mlt__queue_find_creator, for a journal other than self_dir (compared by its last part)
 * that holds the run of run_key open for an earlier attempt than the one that started at
 * start_ms in self_dir: the run created and not ended, or a CREATE of it undelivered that
 * started earlier (same start: a journal name that sorts first). A resumed run waits for the
 * earlier attempts to be delivered and ended, in that order: no two wait for each other. */
MLT__MUST_USE mlt_err mlt__queue_find_open(const char *queue_dir, const char *run_key,
                                           const char *self_dir, int64_t start_ms, char *who,
                                           size_t who_len, bool *owned);

/* The largest step of metric_key among the undelivered records of the runs of run_key, in every
 * journal of queue_dir (opened read-only): MLT_OK with *step, MLT_ERR_NOT_FOUND when none has
 * one, MLT_ERR_IO when the queue cannot be listed. What was delivered is the server's to say. */
MLT__MUST_USE mlt_err mlt__queue_last_step(const char *queue_dir, const char *run_key,
                                           const char *metric_key, int64_t *step);

/* ---- relays ---- */

/* A relay (`mltrack sync --follow`) marks the queue it serves with a file of its own,
 * <queue_dir>/relay-<host>-<pid>, touched at every listing of the queue and removed when it
 * stops. mlt__queue_mark_relay() makes or touches it (0, -1 with errno), mlt__queue_unmark_relay()
 * removes it. */
int mlt__queue_mark_relay(const char *queue_dir);
void mlt__queue_unmark_relay(const char *queue_dir);

/* Whether a relay serves queue_dir: a relay's file touched within the last fresh_ms (by this
 * host's clock: the file system's times of another host may be off by its skew). */
bool mlt__queue_has_relay(const char *queue_dir, int64_t fresh_ms);

#endif
