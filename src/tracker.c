/*
 * tracker.c - the tracker: its callbacks (the sinks), flush and close, the process-wide default,
 * the count of failed calls, fork handling; and what the run and metric code shares with it
 * (the first error of a dispatch, counting a failure). runs.c has the runs, metric.c the metric
 * keys and the hot path, sysmetrics.c the system metrics sampler.
 */
#include "config.h"

#include "ring.h"
#include "sysmetrics.h"
#include "tracker.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <time.h>

#include <stdlib.h>
#include <string.h>

static _Atomic(mlt_tracker *) default_tracker;

/* ---- fork ---- */

/* Every live tracker, so that a forked child can disable its copies. The prepare handler takes
 * the lock, so no other thread holds it at the fork. */
static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static mlt_tracker *registry;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void fork_prepare(void)
{
    pthread_mutex_lock(&registry_mu);
}

static void fork_parent(void)
{
    pthread_mutex_unlock(&registry_mu);
}

/* In the child, the only thread: its copies of the trackers would share the parent's journal,
 * ring and locks (held, maybe, by threads the child does not have), so they are cut off. */
static void fork_child(void)
{
    for (mlt_tracker *t = registry; t; t = t->reg_next) {
        t->forked = true;
        if (t->ring) {
            t->ring->cap = 0; /* the hot path takes the slow path, which refuses */
        }
        for (size_t i = 0; i < t->n_cbs; i++) {
            if (t->cbs[i].ext.on_fork_child) {
                t->cbs[i].ext.on_fork_child(t->cbs[i].userdata);
            }
        }
    }
    pthread_mutex_unlock(&registry_mu);
}

static void install_atfork(void)
{
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}

static void register_tracker(mlt_tracker *t)
{
    pthread_once(&atfork_once, install_atfork);
    pthread_mutex_lock(&registry_mu);
    t->reg_next = registry;
    if (registry) {
        registry->reg_prev = t;
    }
    registry = t;
    pthread_mutex_unlock(&registry_mu);
}

static void unregister_tracker(mlt_tracker *t)
{
    pthread_mutex_lock(&registry_mu);
    if (t->reg_prev) {
        t->reg_prev->reg_next = t->reg_next;
    } else if (registry == t) {
        registry = t->reg_next;
    }
    if (t->reg_next) {
        t->reg_next->reg_prev = t->reg_prev;
    }
    pthread_mutex_unlock(&registry_mu);
}

/* What every call on a forked child's copy of a tracker returns: no lock is taken (a lock may be
 * held by a thread the child does not have), nothing is counted. */
mlt_err mlt__tracker_forked_err(void)
{
    return mlt__fail(MLT_ERR_STATE, "this tracker belongs to the parent process: a forked child "
                                    "cannot use it (it may make a tracker of its own)");
}

static MLT__MUST_USE mlt_err tracker_new(mlt_tracker **out, const mlt_options *opts)
{
    if (!out) {
        return mlt__fail(MLT_ERR_INVALID_ARG, "out is required");
    }
    mlt_tracker *t = calloc(1, sizeof *t);
    if (!t) {
        return mlt__fail(MLT_ERR_NOMEM, "out of memory");
    }
    t->opts = mlt__options_dup(opts);
    if (!t->opts) {
        free(t);
        return mlt__fail(MLT_ERR_NOMEM, "out of memory");
    }
    pthread_mutex_init(&t->lock, NULL);
    pthread_mutex_init(&t->keys_lock, NULL);
    pthread_mutex_init(&t->sys_lock, NULL);
    mlt__cond_init(&t->sys_cv);
    atomic_init(&t->started, false);
    atomic_init(&t->errors, 0);
    register_tracker(t);
    if (t->opts->system_metrics) {
        mlt_err err = mlt__sysmetrics_start(t);
        if (err != MLT_OK) {
            mlt_tracker_close(t, 0);
            return err;
        }
    }
    *out = t;
    return MLT_OK;
}

mlt_err mlt_tracker_new(mlt_tracker **out, const mlt_options *opts, char *errbuf, size_t errlen)
{
    return mlt__errbuf(errbuf, errlen, tracker_new(out, opts));
}

mlt_err mlt__tracker_set_source(mlt_tracker *t, const char *program)
{
    char *copy = mlt__strdup(program);
    if (!copy) {
        return MLT_ERR_NOMEM;
    }
    free(t->source);
    t->source = copy;
    return MLT_OK;
}

const char *mlt__tracker_source(const mlt_tracker *t)
{
    return t->source;
}

const mlt_options *mlt__tracker_options(const mlt_tracker *t)
{
    return t->opts;
}

/* The size of mlt_callbacks at each version (index 0 unused), libgit2's rule: a struct of any
 * version v with 0 < v <= MLT_CALLBACKS_VERSION is accepted and read up to callbacks_size[v],
 * never further, so that a program built against an older header keeps working. A version that
 * adds hooks at the end appends sizeof(mlt_callbacks) here and turns the entry before it into
 * offsetof(mlt_callbacks, <its first new hook>). Version 2 added on_artifact. */
static const size_t callbacks_size[] = {0, offsetof(mlt_callbacks, on_artifact),
                                        sizeof(mlt_callbacks)};
_Static_assert(sizeof callbacks_size / sizeof callbacks_size[0] == MLT_CALLBACKS_VERSION + 1,
               "callbacks_size has one entry for each version of mlt_callbacks");

mlt_err mlt__tracker_add_internal(mlt_tracker *t, const mlt_callbacks *cb, void *userdata,
                                  const mlt__sink_ext *ext)
{
    static const mlt__sink_ext none;
    if (!ext) {
        ext = &none;
    }
    mlt__key_fn on_key = ext->on_key;
    if (!t || !cb) {
        return mlt__fail(MLT_ERR_INVALID_ARG, "tracker and callbacks are required");
    }
    if (cb->version <= 0 || cb->version > MLT_CALLBACKS_VERSION) {
        return mlt__fail(MLT_ERR_INVALID_ARG,
                         "callbacks version %d is not supported: this library takes versions 1 "
                         "to %d (set version = MLT_CALLBACKS_VERSION)",
                         cb->version, MLT_CALLBACKS_VERSION);
    }
    /* the hooks the caller's version has; those of later versions stay NULL */
    mlt_callbacks copy;
    memset(&copy, 0, sizeof copy);
    memcpy(&copy, cb, callbacks_size[cb->version]);
    pthread_mutex_lock(&t->keys_lock);
    mlt_err err = MLT_OK;
    /* the keys registered so far, oldest first (the list is newest first) */
    for (uint32_t id = 0; on_key && id < t->n_keys && err == MLT_OK; id++) {
        for (const mlt_key *k = t->all_keys; k; k = k->all_next) {
            if (k->id == id) {
                err = on_key(userdata, k);
                break;
            }
        }
    }
    pthread_mutex_lock(&t->lock);
    if (err != MLT_OK) {
        /* as reported */
    } else if (atomic_load(&t->started)) {
        err = mlt__fail(MLT_ERR_STATE, "callbacks must be added before the first run starts");
    } else {
        mlt__cb_entry *n = realloc(t->cbs, (t->n_cbs + 1) * sizeof *n);
        if (!n) {
            err = mlt__fail(MLT_ERR_NOMEM, "out of memory");
        } else {
            t->cbs = n;
            t->cbs[t->n_cbs] = (mlt__cb_entry){copy, userdata, *ext};
            t->n_cbs++;
            bool alone = t->n_cbs == 1;
            t->ring = alone ? ext->ring : NULL;
            t->fast_metric = alone ? ext->fast_metric : NULL;
            t->fast_ud = alone ? userdata : NULL;
        }
    }
    pthread_mutex_unlock(&t->lock);
    pthread_mutex_unlock(&t->keys_lock);
    return err;
}

mlt_err mlt_tracker_add_callbacks(mlt_tracker *t, const mlt_callbacks *cb, void *userdata)
{
    return mlt__tracker_add_internal(t, cb, userdata, NULL);
}

mlt_err mlt__tracker_set_experiment_id(mlt_tracker *t, const char *id)
{
    char *copy = mlt__strdup(id);
    if (!copy) {
        return MLT_ERR_NOMEM;
    }
    pthread_mutex_lock(&t->lock);
    free(t->experiment_id);
    t->experiment_id = copy;
    pthread_mutex_unlock(&t->lock);
    return MLT_OK;
}

void mlt__note_err(mlt__first_err *fe, mlt_err err, const char *what)
{
    if (err == MLT_OK || fe->err != MLT_OK) {
        return;
    }
    fe->err = err;
    const char *m = mlt_last_error();
    snprintf(fe->msg, sizeof fe->msg, "%s", *m ? m : what);
}

/* Counts a failed call against the tracker. Records kept in the queue (a flush with the server
 * away) are not a failure of the call. */
mlt_err mlt__tracker_counted(mlt_tracker *t, mlt_err err)
{
    if (err != MLT_OK && err != MLT_ERR_QUEUED && t && !t->forked) {
        pthread_mutex_lock(&t->lock);
        atomic_fetch_add(&t->errors, 1);
        snprintf(t->last_error, sizeof t->last_error, "%s: %s", mlt_err_name(err),
                 mlt_last_error());
        pthread_mutex_unlock(&t->lock);
    }
    return err;
}

mlt_err mlt__finish_err(mlt__first_err *fe)
{
    if (fe->err != MLT_OK) {
        mlt__fail_set(fe->msg);
    }
    return fe->err;
}

mlt_err mlt_tracker_flush(mlt_tracker *t, int timeout_ms)
{
    if (!t) {
        return mlt__fail(MLT_ERR_INVALID_ARG, "tracker is required");
    }
    if (t->forked) {
        return mlt__tracker_forked_err();
    }
    int64_t deadline = timeout_ms < 0 ? -1 : mlt__mono_ns() + (int64_t)timeout_ms * 1000000;
    mlt__first_err fe = {MLT_OK, ""};
    for (size_t i = 0; i < t->n_cbs; i++) {
        if (!t->cbs[i].cb.on_flush) {
            continue;
        }
        int left = -1;
        if (deadline >= 0) {
            int64_t ns = deadline - mlt__mono_ns();
            left = ns > 0 ? (int)(ns / 1000000) : 0;
        }
        mlt__fail_clear();
        mlt__note_err(&fe, t->cbs[i].cb.on_flush(left, t->cbs[i].userdata), "flush failed");
    }
    return mlt__tracker_counted(t, mlt__finish_err(&fe));
}

mlt_err mlt_tracker_close(mlt_tracker *t, int timeout_ms)
{
    if (!t) {
        return MLT_OK;
    }
    if (t->forked) {
        return mlt__tracker_forked_err(); /* the parent's to close; the child's copy is left as it
                                             is */
    }
    unregister_tracker(t);
    mlt__sysmetrics_stop(t);
    mlt__first_err fe = {MLT_OK, ""};
    for (;;) {
        pthread_mutex_lock(&t->lock);
        mlt_run *r = t->runs;
        pthread_mutex_unlock(&t->lock);
        if (!r) {
            break;
        }
        mlt__note_err(&fe, mlt_run_end(r, MLT_RUN_KILLED), "ending an open run failed");
    }
    mlt__note_err(&fe, mlt_tracker_flush(t, timeout_ms), "flush failed");
    for (size_t i = 0; i < t->n_cbs; i++) {
        if (t->cbs[i].cb.on_close) {
            t->cbs[i].cb.on_close(t->cbs[i].userdata);
        }
    }
    for (mlt_run *r = t->ended, *next; r; r = next) {
        next = r->next_sibling;
        mlt__run_free(r);
    }
    mlt_tracker *expected = t;
    atomic_compare_exchange_strong(&default_tracker, &expected, NULL);
    free(t->cbs);
    free(t->experiment_id);
    free(t->source);
    mlt_options_free(t->opts);
    for (mlt_key *k = t->all_keys, *next; k; k = next) {
        next = k->all_next;
        free(k);
    }
    pthread_mutex_destroy(&t->keys_lock);
    pthread_mutex_destroy(&t->lock);
    pthread_mutex_destroy(&t->sys_lock);
    pthread_cond_destroy(&t->sys_cv);
    free(t);
    return mlt__finish_err(&fe);
}

void mlt_tracker_set_default(mlt_tracker *t)
{
    atomic_store(&default_tracker, t);
}

mlt_tracker *mlt_tracker_get_default(void)
{
    return atomic_load(&default_tracker);
}

unsigned long long mlt_tracker_error_count(const mlt_tracker *t)
{
    return t ? atomic_load(&((mlt_tracker *)t)->errors) : 0;
}

unsigned long long mlt_tracker_last_error(char *out, size_t outlen, mlt_tracker *t)
{
    if (!t) {
        return 0;
    }
    if (t->forked) {
        if (out && outlen) {
            snprintf(out, outlen, "MLT_ERR_STATE: %s", mlt_strerror(MLT_ERR_STATE));
        }
        return atomic_load(&t->errors);
    }
    pthread_mutex_lock(&t->lock);
    unsigned long long n = atomic_load(&t->errors);
    if (out && outlen) {
        snprintf(out, outlen, "%s", t->last_error);
    }
    pthread_mutex_unlock(&t->lock);
    return n;
}

/* The size of mlt_queue_stats at each version (index 0 unused): the fields of a caller's struct
 * of version v end at queue_stats_size[v], and nothing past them is written. A version 2 that
 * adds counters at the end appends sizeof(mlt_queue_stats) here and turns this entry into
 * offsetof(mlt_queue_stats, <its first new counter>). */
static const size_t queue_stats_size[] = {0, sizeof(mlt_queue_stats)};
_Static_assert(sizeof queue_stats_size / sizeof queue_stats_size[0] == MLT_QUEUE_STATS_VERSION + 1,
               "queue_stats_size has one entry for each version of mlt_queue_stats");

mlt_err mlt_tracker_queue_stats(mlt_queue_stats *out, mlt_tracker *t)
{
    if (!t || !out) {
        return mlt__fail(MLT_ERR_INVALID_ARG, "tracker and out are required");
    }
    if (out->version == 0 || out->version > MLT_QUEUE_STATS_VERSION) {
        return mlt__fail(MLT_ERR_INVALID_ARG,
                         "mlt_queue_stats version %u is not supported: this library takes "
                         "versions 1 to %d (initialize it with MLT_QUEUE_STATS_INIT)",
                         out->version, MLT_QUEUE_STATS_VERSION);
    }
    mlt_queue_stats all;
    memset(&all, 0, sizeof all);
    const mlt__cb_entry *sink = NULL; /* the MLflow callback */
    for (size_t i = 0; i < t->n_cbs && !sink; i++) {
        if (t->cbs[i].ext.stats) {
            sink = &t->cbs[i];
        }
    }
    mlt_err err = MLT_OK;
    if (sink) {
        err = sink->ext.stats(sink->userdata, &all);
    } else {
        err = mlt__fail(MLT_ERR_STATE, "the tracker has no MLflow callback, so no queue");
    }
    /* the counters of the caller's version, after its version field */
    const size_t from = offsetof(mlt_queue_stats, queued);
    memcpy((char *)out + from, (const char *)&all + from, queue_stats_size[out->version] - from);
    return err;
}
