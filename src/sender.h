/*
 * sender.h - delivers journals to the MLflow server: reads each journal from its acked cursor,
 * creates runs (never twice), coalesces a run's logs into log batches, ends a run after its logs
 * are acknowledged, retries what can be retried until told to stop, dead-letters what the server
 * rejects for good, and acks what was delivered. Runs on its own thread for a tracker, or on the
 * caller's thread for `mltrack sync`.
 */
#ifndef MLT_SENDER_H
#define MLT_SENDER_H

#include "journal.h"
#include "options.h"

typedef struct mlt__sender mlt__sender;
struct mlt__transport; /* http.h */
struct mlt__lease;     /* lease.h */

/* Told when the server gave a run its id (sender thread). */
typedef void (*mlt__run_id_fn)(const char *run_key, const char *run_id, const char *experiment_id,
                               void *ud);

MLT__MUST_USE mlt_err mlt__sender_new(mlt__sender **out, const mlt_options *opts);
/* The same over the transport tr (taken over, destroyed with the sender, also on failure)
 * instead of libcurl's: for tests. */
MLT__MUST_USE mlt_err mlt__sender_new_with(mlt__sender **out, const mlt_options *opts,
                                           const struct mlt__transport *tr);

/* Hands a journal to the sender (owned from now on; closed by mlt__sender_free). */
MLT__MUST_USE mlt_err mlt__sender_add(mlt__sender *s, mlt__journal *j, bool adopted);

void mlt__sender_on_run_id(mlt__sender *s, mlt__run_id_fn fn, void *ud);

/* Makes s deliver for `mltrack sync`, with or without --follow (before any journal is added):
 * its leases say "relay", and it never lets go of one because the server is away (it says so in
 * the lease instead: a tracker's flush then stops waiting for it). */
void mlt__sender_set_relay(mlt__sender *s);

/* Makes s a sender with no server to send to (no tracking URI: a node without network), before
 * any journal is added: it never delivers, gives each journal's lease up at once for a relay to
 * take, and its flush waits for the relay serving the queue, else returns MLT_ERR_QUEUED. */
void mlt__sender_set_no_server(mlt__sender *s);

/* Hands a journal to the sender with its delivery lease, taken by the caller, who renews it and
 * frees it after mlt__sender_remove() (for a relay: a journal opened with
 * mlt__journal_open_follow(), or adopted). The slot is delivered only while the lease is valid.
 * The caller's thread runs the sender (mlt__sender_pass). */
MLT__MUST_USE mlt_err mlt__sender_add_leased(mlt__sender *s, mlt__journal *j,
                                             struct mlt__lease *lease);

/* Takes the journal of directory dir out of the sender and returns it (the caller closes it),
 * or NULL when it is not there (or was delivered and closed: an adopted journal). */
mlt__journal *mlt__sender_remove(mlt__sender *s, const char *dir);
/* Whether the sender holds the journal of directory dir (not delivered and closed yet). */
bool mlt__sender_holds(mlt__sender *s, const char *dir);
/* Forgets the slots of journals delivered and closed. */
void mlt__sender_sweep(mlt__sender *s);

/* One pass of a relay's loop on the caller's thread: one unit of each journal whose lease is
 * valid. *did says whether anything was delivered. Returns how long to wait before the next
 * pass (ms): 0 after a delivery, the backoff after a failure of the server, else at most
 * idle_ms. */
int64_t mlt__sender_pass(mlt__sender *s, int64_t idle_ms, bool *did);

/* Starts the background thread. */
MLT__MUST_USE mlt_err mlt__sender_start(mlt__sender *s);

/* Wakes the sender: new records were appended. Cheap; any thread. */
void mlt__sender_notify(mlt__sender *s);

/* Syncs the tracker's own journal, then waits until every record it holds from before the call
 * is acknowledged or rejected (MLT_OK). Returns early with MLT_ERR_QUEUED (the records are kept,
 * the message says how many and why) when the server is found away: no connection or TLS
 * refused on a request that ended during the call or at most 1 s before it (an older finding
 * makes the sender try once more, now). At the deadline (timeout_ms, < 0: none): MLT_ERR_QUEUED
 * when the journal waits for a run the server does not have yet, else MLT_ERR_TIMEOUT.
 * Journals adopted from dead processes are not waited for. Any thread but the sender's. */
MLT__MUST_USE mlt_err mlt__sender_flush(mlt__sender *s, int timeout_ms);

/* Delivers on the calling thread (no background thread) until every journal is delivered or a
 * failure persists past deadline_ns (monotonic; < 0: retry max_retries times then stop):
 * MLT_ERR_TIMEOUT or MLT_ERR_NETWORK then (the server away), MLT_ERR_REJECTED when delivery
 * cannot go on (TLS, an unreadable journal). When only journals that wait for runs the server
 * does not have are left (and no run was created here since they began waiting), it stops with
 * MLT_ERR_QUEUED: mlt_last_error() says what waits for what, summary counts the records. progress
 * (may be NULL) is called after each step. */
typedef struct mlt__sync_progress {
    uint64_t records_total; /* unacked records when the sync began */
    uint64_t records_done;  /* acked or rejected since */
    uint64_t runs_created;
    uint64_t points_sent;                         /* metric points acknowledged */
    uint64_t artifacts_sent, artifact_bytes_sent; /* artifacts uploaded, and their bytes (an
                                                   * upload's counted as it goes) */
    uint64_t artifact_bytes_total; /* snapshot bytes undelivered when the sync began */
    uint64_t rejected;             /* records dead-lettered */
    /* left by a drain that returned MLT_ERR_QUEUED: records waiting for runs the server does
     * not have, which a journal of the queue creates (owned by a running process, or for
     * another server), or which none does */
    uint64_t waiting_created;
    uint64_t waiting_nowhere;
} mlt__sync_progress;
MLT__MUST_USE mlt_err mlt__sender_drain(mlt__sender *s, int64_t deadline_ns,
                                        void (*progress)(const mlt__sync_progress *p, void *ud),
                                        void *ud, mlt__sync_progress *summary);

void mlt__sender_stats(mlt__sender *s, mlt_queue_stats *out);

/* Stops the thread within timeout_ms (an HTTP request in flight is aborted), closes every
 * journal (what is unsent stays on disk; a delivered journal is removed) and frees. */
void mlt__sender_free(mlt__sender *s, int timeout_ms);

#endif
