/*
 * sender.c - the sender's worker: delivers journals to the MLflow server (see sender.h), one
 * unit at a time through the delivery policy of deliver.c.
 *
 * Each journal is read in order from its cursor. A "unit" is what one step delivers: a run
 * creation, a run end, or a window of consecutive log records (params, metrics, tags of any runs,
 * up to one full log batch), grouped per run. A unit is acked only once all of it is delivered
 * (or dead-lettered), so a crash replays at most the unit in flight: metrics come back as exact
 * duplicates the server ignores, params with the same value, tags with the latest value, and a
 * run creation is preceded by a search for the run's client key.
 *
 * Journals are served in turns, one unit each, the tracker's own journal first: a large backlog
 * adopted from a dead process never holds up what this process logs, and a flush waits for
 * this process's own records only. A failure of the server (no connection, 5xx, a timeout)
 * holds every journal back for a backoff; a journal whose records wait for a run that is not on
 * the server yet (a run another process makes) waits on its own, and the others go on.
 *
 * Locks: s->mu guards stop/wake/probe flags, the flush targets and what the last request found;
 * the journals' own locks guard appends. No lock is held during a network call or a user
 * callback.
 */
#include "config.h"

#include "sender_int.h"

#include "queue.h"

#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- construction ---- */

mlt_err mlt__sender_new(mlt__sender **out, const mlt_options *opts)
{
    return mlt__sender_new_with(out, opts, NULL);
}

mlt_err mlt__sender_new_with(mlt__sender **out, const mlt_options *opts, const mlt__transport *tr)
{
    mlt__sender *s = calloc(1, sizeof *s);
    if (!s || !(s->opts = mlt__options_dup(opts))) {
        free(s);
        if (tr) {
            tr->destroy(tr->self);
        }
        return mlt__fail(MLT_ERR_NOMEM, "out of memory");
    }
    mlt_err err = tr ? mlt__client_init_with(&s->client, s->opts, *tr)
                     : mlt__client_init(&s->client, s->opts);
    if (err != MLT_OK) {
        mlt_options_free(s->opts);
        free(s);
        return err;
    }
    char qdir[PATH_MAX];
    if (mlt__queue_dir(s->opts, qdir, sizeof qdir) == MLT_OK) {
        s->queue_dir = mlt__strdup(qdir); /* NULL: waits are never cut short */
    }
    /* The sender retries by itself, with its own waits that a stop interrupts. */
    s->client.max_retries = 0;
    atomic_init(&s->abort, false);
    mlt__client_set_abort(&s->client, &s->abort);
    pthread_mutex_init(&s->mu, NULL);
    mlt__cond_init(&s->wake_cv);
    mlt__cond_init(&s->done_cv);
    mlt__buf_init(&s->scratch);
    *out = s;
    return MLT_OK;
}

void mlt__sender_set_relay(mlt__sender *s)
{
    s->lease_role = MLT__LEASE_RELAY;
}

void mlt__sender_set_no_server(mlt__sender *s)
{
    s->no_server = true;
}

static MLT__MUST_USE mlt_err add_slot(mlt__sender *s, mlt__journal *j, bool adopted,
                                      mlt__lease *lease, bool own_lease)
{
    pthread_mutex_lock(&s->mu);
    slot *n = realloc(s->slots, (s->n_slots + 1) * sizeof *n);
    if (!n) {
        pthread_mutex_unlock(&s->mu);
        return MLT_ERR_NOMEM;
    }
    s->slots = n;
    slot *sl = &s->slots[s->n_slots++];
    memset(sl, 0, sizeof *sl);
    sl->j = j;
    sl->adopted = adopted;
    sl->lease = lease;
    sl->own_lease = own_lease;
    sl->cursor = mlt__journal_acked_seq(j);
    sl->start_acked = sl->cursor;
    atomic_init(&sl->runs_done, 0);
    atomic_init(&sl->points_done, 0);
    atomic_init(&sl->artifacts_done, 0);
    mlt__buf_init(&sl->ctl_buf);
    s->prog.records_total += mlt__journal_last_seq(j) - sl->cursor;
    s->prog.artifact_bytes_total += mlt__journal_artifact_bytes(j);
    s->wake = true;
    pthread_cond_signal(&s->wake_cv);
    pthread_mutex_unlock(&s->mu);
    return MLT_OK;
}

mlt_err mlt__sender_add(mlt__sender *s, mlt__journal *j, bool adopted)
{
    /* its delivery lease, renewed by the sender's keeper */
    if (!s->keeper && !(s->keeper = mlt__lease_keeper_new((int)(s->opts->lease_ms / 5)))) {
        return mlt__fail(MLT_ERR_NOMEM, "cannot start the lease keeper thread");
    }
    mlt__lease *l = mlt__lease_new(mlt__journal_dir(j), s->lease_role, s->opts->lease_ms);
    if (!l || mlt__lease_keeper_add(s->keeper, l) != MLT_OK) {
        mlt__lease_free(l);
        return mlt__fail(MLT_ERR_NOMEM, "out of memory");
    }
    if (s->no_server && mlt__lease_take(l, NULL, NULL) == MLT__LEASE_TAKEN) {
        mlt__lease_release(l); /* given up at once: the relay's to take */
    }
    mlt_err err = add_slot(s, j, adopted, l, true);
    if (err != MLT_OK) {
        mlt__lease_keeper_remove(s->keeper, l);
        mlt__lease_free(l);
    }
    return err;
}

mlt_err mlt__sender_add_leased(mlt__sender *s, mlt__journal *j, mlt__lease *lease)
{
    return add_slot(s, j, true, lease, false);
}

void mlt__sender_on_run_id(mlt__sender *s, mlt__run_id_fn fn, void *ud)
{
    s->on_run_id = fn;
    s->on_run_id_ud = ud;
}

/* After a request: what it found, for flushes (woken when the server is found away). */
static void note_reach(mlt__sender *s)
{
    if (s->client.requests == s->requests_seen) {
        return;
    }
    s->requests_seen = s->client.requests;
    mlt__sender_leases_on_reach(s, s->client.last_unreachable);
    pthread_mutex_lock(&s->mu);
    s->down_at_ns = s->client.last_unreachable ? mlt__mono_ns() : 0;
    if (s->down_at_ns) {
        memcpy(s->down_why, s->client.unreachable_why, sizeof s->down_why);
        pthread_cond_broadcast(&s->done_cv);
    }
    pthread_mutex_unlock(&s->mu);
}

/* A slot's next unit waits for a run: it is tried again later, each wait longer. */
static void begin_wait(mlt__sender *s, slot *sl)
{
    int64_t now = mlt__mono_ns();
    if (sl->wait_until_ns <= now) {
        int shift = sl->waits < 5 ? sl->waits : 5;
        int64_t ms = (int64_t)WAIT_FIRST_MS << shift;
        sl->wait_until_ns = now + (ms < WAIT_MAX_MS ? ms : WAIT_MAX_MS) * 1000000;
    }
    if (sl->waits == 0) {
        mlt__log(&s->opts->logger, MLT_LOG_INFO, "journal %s: %s", mlt__journal_dir(sl->j),
                 s->last_error);
    }
    pthread_mutex_lock(&s->mu);
    sl->waits++;
    memcpy(sl->waiting_for, sl->wait_key, sizeof sl->waiting_for);
    pthread_mutex_unlock(&s->mu);
    sl->wait_key[0] = '\0';
    sl->waited_at_ns = now;
    sl->runs_at_wait = s->prog.runs_created;
    sl->ended_at_wait = s->runs_ended;
}

static void end_wait(mlt__sender *s, slot *sl)
{
    sl->wait_until_ns = 0;
    if (sl->waits) {
        pthread_mutex_lock(&s->mu);
        sl->waits = 0;
        sl->waiting_for[0] = '\0';
        pthread_mutex_unlock(&s->mu);
    }
}

/* Whether a waiting slot is due: its time came, a run was created since it began waiting (maybe
 * its own), or this process flushes and it is its own journal (tried every WAIT_FLUSH_MS). */
static bool wait_over(mlt__sender *s, const slot *sl, int64_t now, bool flushing)
{
    if (sl->wait_until_ns == 0 || now >= sl->wait_until_ns ||
        s->prog.runs_created != sl->runs_at_wait || s->runs_ended != sl->ended_at_wait) {
        return true;
    }
    return flushing && !sl->adopted && now - sl->waited_at_ns >= WAIT_FLUSH_MS * 1000000LL;
}

typedef void (*progress_fn)(const mlt__sync_progress *p, void *ud);

/* One unit of one slot, with what follows from it: a wait begun or ended, the server's state. */
static outcome turn(mlt__sender *s, slot *sl, bool *did)
{
    outcome o = mlt__deliver_step(s, sl, did);
    note_reach(s);
    if (o == WAIT) {
        begin_wait(s, sl);
    } else if (o == OK) {
        end_wait(s, sl);
    }
    return o;
}

/*
 * One pass over the journals, one unit each, this process's own first: *did says whether
 * anything was delivered; *next_ns (monotonic, 0 for none) is when the earliest waiting journal
 * is due. A failure of the server (RETRY) ends the pass: the others would meet it too; FATAL
 * (TLS refused, or this journal unreadable) is returned once every journal had its turn.
 * progress (may be NULL) is told after each unit.
 */
static bool slot_delivered(const slot *sl);

/* An adopted journal all delivered (its orphans ended too) is closed, and removed from disk
 * unless dead letters are left in it, so that the queue shows it gone and it costs nothing
 * more. Sender thread; flushers and the counters read slots under mu. */
static void retire(mlt__sender *s, slot *sl)
{
    mlt__journal *j = sl->j;
    sl->retired_queued = mlt__journal_last_seq(j) - sl->start_acked;
    mlt__log(&s->opts->logger, MLT_LOG_INFO, "journal %s (of a process that ended) is delivered",
             mlt__journal_dir(j));
    pthread_mutex_lock(&s->mu);
    sl->j = NULL;
    pthread_mutex_unlock(&s->mu);
    mlt__journal_close(j, true);
}

static outcome pass(mlt__sender *s, bool *did, int64_t *next_ns, bool retiring,
                    progress_fn progress, void *ud)
{
    outcome worst = OK;
    *did = false;
    *next_ns = 0;
    pthread_mutex_lock(&s->mu);
    bool flushing = s->flushing > 0;
    pthread_mutex_unlock(&s->mu);
    for (int adopted = 0; adopted < 2; adopted++) {
        for (size_t i = 0; i < s->n_slots && !atomic_load(&s->abort); i++) {
            slot *sl = &s->slots[i];
            if (sl->adopted != (adopted == 1) || !sl->j) {
                continue;
            }
            if (!mlt__sender_lease_ready(s, sl, flushing)) {
                /* looked at again then: a relay's acks, or the lease let go of taken back */
                int64_t due = sl->relayed || s->no_server ? sl->lease_look_ns : sl->lease_try_ns;
                if (sl->own_lease && due && (*next_ns == 0 || due < *next_ns)) {
                    *next_ns = due;
                }
                continue;
            }
            int64_t now = mlt__mono_ns();
            if (!wait_over(s, sl, now, flushing)) {
                if (*next_ns == 0 || sl->wait_until_ns < *next_ns) {
                    *next_ns = sl->wait_until_ns;
                }
                continue;
            }
            bool d = false;
            outcome o = turn(s, sl, &d);
            if (retiring && sl->adopted && o == OK && !d && !sl->have_unit && slot_delivered(sl) &&
                !mlt__journal_following(sl->j)) {
                retire(s, sl);
            }
            *did = *did || d;
            if (d && progress) {
                progress(&s->prog, ud);
            }
            if (o == RETRY) {
                return o;
            }
            if (o == FATAL) {
                worst = o; /* maybe this journal's alone (unreadable): the others go on */
            }
            if (o == WAIT && (*next_ns == 0 || sl->wait_until_ns < *next_ns)) {
                *next_ns = sl->wait_until_ns;
            }
        }
    }
    return worst;
}

static bool slot_delivered(const slot *sl)
{
    return !sl->j || sl->relayed || mlt__journal_acked_seq(sl->j) >= mlt__journal_last_seq(sl->j);
}

static bool all_delivered(mlt__sender *s)
{
    for (size_t i = 0; i < s->n_slots; i++) {
        if (!slot_delivered(&s->slots[i])) {
            return false;
        }
    }
    return true;
}

static int64_t backoff_ms(mlt__sender *s)
{
    /* the outage probe: the failed unit is tried again, less often while it keeps failing */
    double f = s->opts->backoff_factor_s > 0 ? s->opts->backoff_factor_s : 0.1;
    double w = f * (double)(1u << (s->failures < 6 ? s->failures : 6));
    if (w > 30) {
        w = 30;
    }
    w += s->opts->backoff_jitter_s * mlt__rand01();
    double ra = s->client.last_retry_after_s;
    if (ra > w) {
        w = ra < 300 ? ra : 300; /* the server asked for this much */
    }
    return (int64_t)(w * 1000);
}

/* ---- the thread ---- */

/* After new records woke an idle sender: lets more gather for linger_ms, so that a batch
 * fills, unless a flush or a stop wants it now. */
static void linger(mlt__sender *s)
{
    if (s->opts->linger_ms <= 0) {
        return;
    }
    int64_t until = mlt__deadline_ms(s->opts->linger_ms);
    pthread_mutex_lock(&s->mu);
    while (!s->stop && !s->flushing) {
        if (!mlt__cond_wait_until(&s->wake_cv, &s->mu, until)) {
            break;
        }
    }
    s->wake = false;
    pthread_mutex_unlock(&s->mu);
}

/* Waits ms, or less when stopped, when a flush asks for a probe of the server, or (with
 * wake_ok) when new records arrive: returns whether they did. A backoff after a failure ignores
 * new records: they must not turn the outage probe into a hammering. */
static bool timed_wait(mlt__sender *s, int64_t ms, bool wake_ok)
{
    int64_t until = mlt__deadline_ms(ms);
    pthread_mutex_lock(&s->mu);
    while (!s->stop && !s->probe && !(wake_ok && s->wake)) {
        if (!mlt__cond_wait_until(&s->wake_cv, &s->mu, until)) {
            break;
        }
    }
    bool woken = wake_ok && s->wake && !s->flushing;
    if (wake_ok) {
        s->wake = false;
    }
    s->probe = false;
    pthread_mutex_unlock(&s->mu);
    return woken;
}

/* A flush makes the tracker's own journal durable first (its writer's group commit may not have
 * come yet): MLT_ERR_IO when it cannot (a full disk), the message in mlt_last_error(). */
static MLT__MUST_USE mlt_err sync_own(mlt__sender *s)
{
    for (size_t i = 0; i < s->n_slots; i++) {
        mlt_err err = s->slots[i].adopted ? MLT_OK : mlt__journal_sync(s->slots[i].j);
        if (err != MLT_OK) {
            return err;
        }
    }
    return MLT_OK;
}

static void *run_thread(void *arg)
{
    mlt__sender *s = arg;
    bool outage = false;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        bool stop = s->stop;
        pthread_mutex_unlock(&s->mu);
        if (stop) {
            break;
        }
        bool did = false;
        int64_t next_wait_ns = 0;
        uint64_t requests_before = s->client.requests;
        outcome o = pass(s, &did, &next_wait_ns, true, NULL, NULL);
        if (did) {
            pthread_mutex_lock(&s->mu);
            pthread_cond_broadcast(&s->done_cv);
            pthread_mutex_unlock(&s->mu);
        }
        if (o == RETRY) {
            if (!outage) {
                /* info: a flush says it (MLT_ERR_QUEUED, with the cause); the program goes on */
                mlt__log(&s->opts->logger, MLT_LOG_INFO,
                         "the tracking server cannot be reached (%s): logging goes on to the "
                         "journal and is delivered when it is back",
                         s->last_error);
            }
            outage = true;
            s->failures++;
            atomic_fetch_add(&s->retried, 1);
            timed_wait(s, backoff_ms(s), false);
            continue;
        }
        /* back only when a request reached it (a pass may make none: every journal's lease
         * let go of, or another's) */
        bool reached = s->client.requests != requests_before && !s->client.last_unreachable;
        if (outage && reached) {
            mlt__log(&s->opts->logger, MLT_LOG_INFO, "the tracking server is back");
        }
        if (reached || did) {
            outage = false;
            s->failures = 0;
        }
        if (o == FATAL) {
            /* no server to talk to (TLS refused): a flush says so, with the records kept */
            mlt__log(&s->opts->logger, s->client.last_unreachable ? MLT_LOG_INFO : MLT_LOG_ERROR,
                     "delivery stopped: %s", s->last_error);
            atomic_fetch_add(&s->retried, 1); /* it is tried again in 5 s */
            timed_wait(s, 5000, false);
            continue;
        }
        if (!did) {
            /* idle until new records wake it, or a waiting journal is due */
            int64_t left = IDLE_MS;
            if (next_wait_ns) {
                int64_t w = (next_wait_ns - mlt__mono_ns()) / 1000000;
                left = w < left ? w : left;
            }
            pthread_mutex_lock(&s->mu);
            bool flushing = s->flushing > 0;
            pthread_mutex_unlock(&s->mu);
            if (flushing && next_wait_ns && left > WAIT_FLUSH_MS) {
                left = WAIT_FLUSH_MS; /* the flusher's own journal may be the one waiting */
            }
            if (timed_wait(s, left > 0 ? left : 1, true)) {
                linger(s);
            }
        }
    }
    return NULL;
}

mlt_err mlt__sender_start(mlt__sender *s)
{
    if (pthread_create(&s->thread, NULL, run_thread, s) != 0) {
        return mlt__fail(MLT_ERR_NOMEM, "cannot start the sender thread");
    }
    s->started = true;
    return MLT_OK;
}

void mlt__sender_notify(mlt__sender *s)
{
    pthread_mutex_lock(&s->mu);
    s->wake = true;
    pthread_cond_signal(&s->wake_cv);
    pthread_mutex_unlock(&s->mu);
}

static const char *plural(uint64_t n, const char *one, const char *many)
{
    return n == 1 ? one : many;
}

/* The queue directory of the journals, for messages. */
static void queue_of(const mlt__sender *s, char *out, size_t len)
{
    const char *dir = NULL;
    for (size_t i = 0; i < s->n_slots && !dir; i++) {
        dir = s->slots[i].adopted ? NULL : mlt__journal_dir(s->slots[i].j);
    }
    const char *slash = dir ? strrchr(dir, '/') : NULL;
    if (slash && slash > dir) {
        snprintf(out, len, "%.*s", (int)(slash - dir), dir);
    } else {
        snprintf(out, len, "%s", s->queue_dir ? s->queue_dir : "the queue directory");
    }
}

/* Why a flush leaves records in the queue. */
typedef enum { KEPT_AWAY, KEPT_WAITING, KEPT_SLOW, KEPT_RELAYED, KEPT_NO_SERVER } kept_why;

/*
 * What a flush returns when it leaves records in the queue: MLT_ERR_QUEUED (the server away,
 * the journal waiting for run waiting_for, or delivered by the relay h, which finds the server
 * away) or MLT_ERR_TIMEOUT (a slow server, or the relay h still delivering, at the deadline),
 * with what this process logged that is kept, where, and why. Call with s->mu held (last_error,
 * down_why).
 */
static MLT__MUST_USE mlt_err kept(mlt__sender *s, kept_why cause, const char *waiting_for,
                                  const mlt__lease_info *h)
{
    uint64_t records = 0, runs = 0, points = 0, arts = 0;
    for (size_t i = 0; i < s->n_slots; i++) {
        slot *sl = &s->slots[i];
        if (sl->adopted) {
            continue;
        }
        uint64_t r = 0, p = 0;
        mlt__journal_appended(sl->j, &r, &p);
        uint64_t a = mlt__journal_appended_artifacts(sl->j);
        uint64_t rd = atomic_load(&sl->runs_done), pd = atomic_load(&sl->points_done);
        uint64_t ad = atomic_load(&sl->artifacts_done);
        runs += r > rd ? r - rd : 0;
        points += p > pd ? p - pd : 0;
        arts += a > ad ? a - ad : 0;
        uint64_t last = mlt__journal_last_seq(sl->j), acked = mlt__journal_acked_seq(sl->j);
        records += last > acked ? last - acked : 0;
    }
    char qdir[PATH_MAX];
    queue_of(s, qdir, sizeof qdir);
    char why[1400], uri[256];
    mlt__redact_url(s->client.base, uri, sizeof uri);
    const char *when = "once the server is back";
    if (cause == KEPT_WAITING) {
        snprintf(why, sizeof why, "they wait for run %s, which the server does not have yet (%s)",
                 waiting_for, s->last_error);
        when = "once the run is there";
    } else if (cause == KEPT_RELAYED) {
        snprintf(why, sizeof why, "the relay on %s (pid %ld) delivers them%s", h ? h->host : "?",
                 h ? h->pid : 0L,
                 h && h->state == MLT__LEASE_AWAY ? ", and finds the tracking server away" : "");
        when = "if the relay stops";
    } else if (cause == KEPT_NO_SERVER) {
        snprintf(why, sizeof why,
                 "no tracking URI is set here, and no relay (`mltrack sync --follow`) serves the "
                 "queue");
        when = "with --tracking-uri";
    } else if (cause == KEPT_AWAY) {
        snprintf(why, sizeof why, "the tracking server %s cannot be reached (%s)", uri,
                 s->down_why);
    } else {
        snprintf(why, sizeof why, "the tracking server %s did not take them in time%s%s", uri,
                 s->last_error[0] ? ": " : "", s->last_error);
        when = "later";
    }
    char what[160];
    if (arts) {
        snprintf(what, sizeof what, "%" PRIu64 " %s, %" PRIu64 " %s and %" PRIu64 " %s", runs,
                 plural(runs, "run", "runs"), points, plural(points, "point", "points"), arts,
                 plural(arts, "artifact", "artifacts"));
    } else {
        snprintf(what, sizeof what, "%" PRIu64 " %s and %" PRIu64 " %s", runs,
                 plural(runs, "run", "runs"), points, plural(points, "point", "points"));
    }
    bool slow = cause == KEPT_SLOW || (cause == KEPT_RELAYED && h && h->state != MLT__LEASE_AWAY);
    return mlt__fail(slow ? MLT_ERR_TIMEOUT : MLT_ERR_QUEUED,
                     "kept in the queue, not delivered yet: %s (%" PRIu64
                     " %s) in %s: %s. `mltrack sync --queue %s` delivers them %s",
                     what, records, plural(records, "record", "records"), qdir, why, qdir, when);
}

/* The holder of the lease of the tracker's own journal when a relay delivers it, else NULL. Call
 * with s->mu held. */
static const mlt__lease_info *own_relay(const mlt__sender *s)
{
    for (size_t i = 0; i < s->n_slots; i++) {
        if (!s->slots[i].adopted && s->slots[i].relayed) {
            return &s->slots[i].holder;
        }
    }
    return NULL;
}

/* The run key the tracker's own journal waits for, or NULL. Call with s->mu held. */
static const char *own_waiting_for(const mlt__sender *s)
{
    for (size_t i = 0; i < s->n_slots; i++) {
        const slot *sl = &s->slots[i];
        if (!sl->adopted && sl->waits > 0 && sl->waiting_for[0]) {
            return sl->waiting_for;
        }
    }
    return NULL;
}

/*
 * In a flush that nothing here can deliver (no server, or it was found away): whether to wait a
 * little more for a relay to take the journal up. *seen caches whether a relay serves the queue
 * (-1: not asked yet; asked without s->mu). Waits RELAYED_FLUSH_MS with the sender told to look
 * at the lease now, and returns true, for up to RELAY_PICKUP_MS from start (and the deadline).
 * Call with s->mu held.
 */
static bool await_relay(mlt__sender *s, int *seen, int64_t start, int64_t deadline)
{
    if (*seen < 0) {
        pthread_mutex_unlock(&s->mu);
        *seen = s->queue_dir && mlt__queue_has_relay(s->queue_dir, RELAY_FRESH_MS);
        pthread_mutex_lock(&s->mu);
    }
    int64_t now = mlt__mono_ns();
    if (!*seen || now >= start + RELAY_PICKUP_MS * 1000000LL ||
        (deadline >= 0 && now >= deadline)) {
        return false;
    }
    s->probe = true; /* the sender looks at the lease again now */
    pthread_cond_signal(&s->wake_cv);
    mlt__cond_wait_until(&s->done_cv, &s->mu, mlt__deadline_ms(RELAYED_FLUSH_MS));
    return true;
}

mlt_err mlt__sender_flush(mlt__sender *s, int timeout_ms)
{
    mlt_err synced = sync_own(s);
    if (synced != MLT_OK) {
        return synced; /* what is logged is not safe on disk: no flush can promise it */
    }
    pthread_mutex_lock(&s->mu);
    s->flushing++;
    pthread_mutex_unlock(&s->mu);
    int64_t start = mlt__mono_ns();
    int64_t deadline = timeout_ms < 0 ? -1 : start + (int64_t)timeout_ms * 1000000;
    uint64_t *targets = calloc(s->n_slots ? s->n_slots : 1, sizeof *targets);
    if (!targets) {
        pthread_mutex_lock(&s->mu);
        s->flushing--;
        pthread_mutex_unlock(&s->mu);
        return MLT_ERR_NOMEM;
    }
    /* this process's own records only: adopted journals are delivered in the background */
    for (size_t i = 0; i < s->n_slots; i++) {
        targets[i] = s->slots[i].adopted ? 0 : mlt__journal_last_seq(s->slots[i].j);
    }
    mlt__sender_notify(s);
    mlt_err err = MLT_OK;
    bool probed = false;
    int relay_seen = -1; /* whether a relay serves the queue: asked once, when it matters */
    pthread_mutex_lock(&s->mu);
    for (;;) {
        bool done = true;
        for (size_t i = 0; i < s->n_slots && done; i++) {
            done = targets[i] == 0 || mlt__journal_acked_seq(s->slots[i].j) >= targets[i];
        }
        if (done) {
            break;
        }
        /* A relay delivers this journal: waited for while it reaches the server (its acks are
         * read every RELAYED_FLUSH_MS), up to the deadline. */
        const mlt__lease_info *relay = own_relay(s);
        if (relay &&
            (relay->state == MLT__LEASE_AWAY || (deadline >= 0 && mlt__mono_ns() >= deadline))) {
            err = kept(s, KEPT_RELAYED, NULL, relay);
            break;
        }
        /* Nothing here delivers (no tracking URI), or the server was found away just now: what
         * is left is safe on disk, and waiting would not deliver it (found away a while ago: it
         * is tried once more now). A relay serving the queue takes the journal up within its
         * next look (the writer let go of its lease): waited for that long, then its acks. */
        if (!relay && (s->no_server || (s->down_at_ns && s->down_at_ns >= start - DOWN_FRESH_NS))) {
            if (await_relay(s, &relay_seen, start, deadline)) {
                continue;
            }
            err = kept(s, s->no_server ? KEPT_NO_SERVER : KEPT_AWAY, NULL, NULL);
            break;
        }
        if (s->down_at_ns && !probed) {
            s->probe = true;
            probed = true;
            pthread_cond_signal(&s->wake_cv);
        }
        if (deadline >= 0 && mlt__mono_ns() >= deadline) {
            const char *waiting = own_waiting_for(s);
            err = kept(s, waiting ? KEPT_WAITING : KEPT_SLOW, waiting, NULL);
            break;
        }
        int64_t until = mlt__deadline_ms(50);
        mlt__cond_wait_until(&s->done_cv, &s->mu,
                             deadline >= 0 && deadline < until ? deadline : until);
    }
    s->flushing--;
    pthread_mutex_unlock(&s->mu);
    free(targets);
    return err;
}

/* Whether a journal waits to see whether a create it sent made the run (not for a run). */
static bool settling(const mlt__sender *s)
{
    for (size_t i = 0; i < s->n_slots; i++) {
        if (s->slots[i].waits > 0 && !s->slots[i].waiting_for[0]) {
            return true;
        }
    }
    return false;
}

/* What sync leaves waiting for runs: one line per journal into why, and the counts. */
static void describe_waits(mlt__sender *s, mlt__sync_progress *p, mlt__buf *why)
{
    for (size_t i = 0; i < s->n_slots; i++) {
        slot *sl = &s->slots[i];
        if (sl->waits == 0 || slot_delivered(sl) || !sl->j) {
            continue;
        }
        uint64_t left = mlt__journal_last_seq(sl->j) - mlt__journal_acked_seq(sl->j);
        char who[PATH_MAX] = "";
        bool owned = false;
        mlt_err found = s->queue_dir ? mlt__queue_find_creator(s->queue_dir, sl->waiting_for, who,
                                                               sizeof who, &owned)
                                     : MLT_ERR_NOT_FOUND;
        mlt__buf_printf(why, "%s%" PRIu64 " %s of %s wait for run %s, ", why->len ? "; " : "", left,
                        plural(left, "record", "records"), mlt__journal_dir(sl->j),
                        sl->waiting_for);
        if (found == MLT_OK) {
            p->waiting_created += left;
            mlt__buf_printf(why, "which %s creates%s", who,
                            owned ? " (a running process owns it)" : "");
        } else {
            p->waiting_nowhere += left;
            mlt__buf_printf(why,
                            "which the server does not have and no journal of the queue creates "
                            "(attach_timeout: %lld s after they were written, they become dead "
                            "letters; `mltrack drop` drops them now)",
                            s->opts->attach_timeout_s);
        }
    }
}

mlt_err mlt__sender_drain(mlt__sender *s, int64_t deadline_ns, progress_fn progress, void *ud,
                          mlt__sync_progress *summary)
{
    mlt_err err = MLT_OK;
    int tries = 0;
    for (;;) {
        bool did = false;
        int64_t next_ns = 0;
        s->drain_progress = progress;
        s->drain_ud = ud;
        outcome o = pass(s, &did, &next_ns, false, progress, ud);
        s->drain_progress = NULL;
        if (progress) {
            progress(&s->prog, ud);
        }
        if (o == OK && !did && all_delivered(s)) {
            break;
        }
        if (o == FATAL) {
            err = mlt__fail(MLT_ERR_REJECTED, "%s", s->last_error);
            break;
        }
        if (o == RETRY) {
            s->failures++;
            atomic_fetch_add(&s->retried, 1);
            tries = did ? 0 : tries + 1;
            int64_t w = backoff_ms(s);
            if (deadline_ns >= 0) {
                int64_t left = (deadline_ns - mlt__mono_ns()) / 1000000;
                if (left <= 0) {
                    err = mlt__fail(MLT_ERR_TIMEOUT, "%s", s->last_error);
                    break;
                }
                w = w < left ? w : left; /* one more try at the deadline */
            } else if (tries > s->opts->max_retries) {
                err = mlt__fail(MLT_ERR_NETWORK, "%s", s->last_error);
                break;
            }
            mlt__log(&s->opts->logger, MLT_LOG_WARN, "%s (retrying in %.1f s)", s->last_error,
                     (double)w / 1000.0);
            mlt__sleep_ms(w);
            continue;
        }
        s->failures = 0;
        if (did) {
            continue;
        }
        /* Only waiting journals are left. One waiting to see whether an earlier create made its
         * run is due soon: waited for. A wait for a run that began before a run was created
         * here is tried at once (wait_over); the others wait for a run this sync cannot make:
         * waiting longer would not help, so sync stops and says for what. */
        if (next_ns == 0) {
            err = mlt__fail(MLT_ERR_STATE, "delivery made no progress");
            break;
        }
        if (settling(s)) {
            int64_t w = (next_ns - mlt__mono_ns()) / 1000000;
            if (deadline_ns >= 0 && next_ns > deadline_ns) {
                err = mlt__fail(MLT_ERR_TIMEOUT, "%s", s->last_error);
                break;
            }
            mlt__sleep_ms(w > 0 ? w : 1);
            continue;
        }
        mlt__buf why;
        mlt__buf_init(&why);
        describe_waits(s, &s->prog, &why);
        err = mlt__fail(MLT_ERR_QUEUED, "%s",
                        why.data && !why.oom ? why.data : "records wait for runs");
        mlt__buf_free(&why);
        break;
    }
    if (summary) {
        *summary = s->prog;
    }
    return err;
}

int64_t mlt__sender_pass(mlt__sender *s, int64_t idle_ms, bool *did)
{
    int64_t next_ns = 0;
    uint64_t requests_before = s->client.requests;
    outcome o = pass(s, did, &next_ns, true, NULL, NULL);
    if (o == RETRY) {
        if (s->failures == 0) {
            mlt__log(&s->opts->logger, MLT_LOG_WARN, "%s", s->last_error);
        }
        s->failures++;
        atomic_fetch_add(&s->retried, 1);
        return backoff_ms(s);
    }
    if (s->client.requests != requests_before && !s->client.last_unreachable) {
        if (s->failures) {
            mlt__log(&s->opts->logger, MLT_LOG_INFO, "the tracking server is back");
        }
        s->failures = 0;
    }
    if (o == FATAL) {
        mlt__log(&s->opts->logger, MLT_LOG_ERROR, "%s", s->last_error);
        return 5000;
    }
    if (*did) {
        return 0;
    }
    int64_t left = idle_ms;
    if (next_ns) {
        int64_t w = (next_ns - mlt__mono_ns()) / 1000000;
        left = w < left ? w : left;
    }
    return left > 0 ? left : 1;
}

void mlt__sender_stats(mlt__sender *s, mlt_queue_stats *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&s->mu); /* a retired journal is gone */
    for (size_t i = 0; i < s->n_slots; i++) {
        const slot *sl = &s->slots[i];
        if (!sl->j) {
            out->queued += sl->retired_queued;
            continue;
        }
        out->queued += mlt__journal_last_seq(sl->j) - sl->start_acked;
        out->bytes_pending += mlt__journal_pending_bytes(sl->j);
    }
    pthread_mutex_unlock(&s->mu);
    out->sent = atomic_load(&s->sent);
    out->acknowledged = atomic_load(&s->acknowledged);
    out->retried = atomic_load(&s->retried);
    out->rejected = atomic_load(&s->rejected);
}

void mlt__sender_free(mlt__sender *s, int timeout_ms)
{
    if (!s) {
        return;
    }
    if (s->started) {
        (void)timeout_ms; /* always met: the abort flag ends a request in flight at once */
        pthread_mutex_lock(&s->mu);
        s->stop = true;
        pthread_cond_signal(&s->wake_cv);
        pthread_mutex_unlock(&s->mu);
        atomic_store(&s->abort, true);
        mlt__client_interrupt(&s->client);
        pthread_join(s->thread, NULL);
    }
    mlt__lease_keeper_free(s->keeper); /* no renewal from here on */
    for (size_t i = 0; i < s->n_slots; i++) {
        slot *sl = &s->slots[i];
        mlt__deliver_free_window(sl);
        free(sl->win);
        mlt__buf_free(&sl->ctl_buf);
        /* a journal a relay delivers, or follows, stays for it (it removes it once delivered) */
        bool keep = sl->relayed || (sl->j && mlt__journal_following(sl->j));
        if (sl->own_lease) {
            mlt__lease_free(sl->lease); /* given up: the next party need not wait */
        }
        mlt__journal_close(sl->j, !keep); /* NULL (retired): nothing */
    }
    free(s->slots);
    mlt__buf_free(&s->scratch);
    mlt__client_free(&s->client);
    free(s->exp_name);
    free(s->exp_id);
    free(s->art_run_id);
    free(s->art_root);
    free(s->queue_dir);
    mlt_options_free(s->opts);
    pthread_cond_destroy(&s->wake_cv);
    pthread_cond_destroy(&s->done_cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
