/*
 * tracker.c - the tracker and its runs: validation before anything is dispatched, timestamps
 * taken at the call, the run tree, and dispatch of every event to the registered callbacks.
 */
#include "config.h"

#include "tracker.h"
#include "ring.h"
#include "sysinfo.h"
#include "validate.h"

#include <errno.h>
#include <math.h>
#include <time.h>

#include <stdlib.h>
#include <string.h>

static _Atomic(mlt_tracker *) default_tracker;

static void free_run(mlt_run *run);

/* ---- tracker ---- */

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
static mlt_err forked_err(void)
{
    return mlt__fail(MLT_ERR_STATE, "this tracker belongs to the parent process: a forked child "
                                    "cannot use it (it may make a tracker of its own)");
}

/* ---- system metrics ---- */

/* MLflow's names (mlflow/system_metrics), so that the UI shows them on its system metrics tab. */
static const char *const sys_names[] = {
    "system/cpu_utilization_percentage",
    "system/system_memory_usage_megabytes",
    "system/system_memory_usage_percentage",
};
#define N_SYS (sizeof sys_names / sizeof sys_names[0])

/* Waits one interval; false when the tracker is closing. Call with sys_lock held. */
static bool sys_wait(mlt_tracker *t, double interval_s)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    double whole = floor(interval_s);
    until.tv_sec += (time_t)whole;
    until.tv_nsec += (long)((interval_s - whole) * 1e9);
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    while (!t->sys_stop) {
        if (pthread_cond_timedwait(&t->sys_cv, &t->sys_lock, &until) == ETIMEDOUT) {
            break;
        }
    }
    return !t->sys_stop;
}

/* Each interval: one sample of the machine, logged into every open top-level run of this
 * tracker that it created (an attached run's owner logs its own), at the run's next step. */
static void *sys_thread(void *arg)
{
    mlt_tracker *t = arg;
    const mlt_key *keys[N_SYS];
    for (size_t i = 0; i < N_SYS; i++) {
        if (mlt_metric_key(t, sys_names[i], &keys[i]) != MLT_OK) {
            return NULL; /* counted as a tracker error */
        }
    }
    uint64_t busy0 = 0, total0 = 0;
    mlt__sys_cpu_times(&busy0, &total0);
    pthread_mutex_lock(&t->sys_lock);
    while (sys_wait(t, t->opts->system_metrics_interval_s)) {
        uint64_t busy = 0, total = 0, used = 0, mem = 0;
        double v[N_SYS];
        bool cpu_ok = mlt__sys_cpu_times(&busy, &total) && total > total0 && busy >= busy0;
        v[0] = cpu_ok ? 100.0 * (double)(busy - busy0) / (double)(total - total0) : 0.0;
        busy0 = busy;
        total0 = total;
        bool mem_ok = mlt__sys_memory(&used, &mem);
        v[1] = mem_ok ? (double)used / 1e6 : 0.0;
        v[2] = mem_ok ? 100.0 * (double)used / (double)mem : 0.0;
        pthread_mutex_lock(&t->lock);
        size_t n = 0;
        for (mlt_run *r = t->runs; r; r = r->next_sibling) {
            n++;
        }
        mlt_run **runs = n ? malloc(n * sizeof *runs) : NULL;
        size_t k = 0;
        for (mlt_run *r = t->runs; runs && r; r = r->next_sibling) {
            if (!r->attached) {
                runs[k++] = r;
            }
        }
        pthread_mutex_unlock(&t->lock);
        /* the runs stay alive: their end waits for sys_lock before unlinking them */
        for (size_t i = 0; i < k; i++) {
            for (size_t m = 0; m < N_SYS; m++) {
                if ((m == 0 && cpu_ok) || (m > 0 && mem_ok)) {
                    mlt_log_metric_key(runs[i], keys[m], v[m], runs[i]->sys_step);
                }
            }
            runs[i]->sys_step++;
        }
        free(runs);
    }
    pthread_mutex_unlock(&t->sys_lock);
    return NULL;
}

static mlt_err sys_start(mlt_tracker *t, char *errbuf, size_t errlen)
{
    uint64_t a, b;
    if (!mlt__sys_cpu_times(&a, &b) || !mlt__sys_memory(&a, &b)) {
        return mlt__errf(errbuf, errlen, MLT_ERR_BAD_OPTION,
                         "system_metrics: cannot read /proc/stat or /proc/meminfo");
    }
    if (pthread_create(&t->sys_thread, NULL, sys_thread, t) != 0) {
        return mlt__errf(errbuf, errlen, MLT_ERR_NOMEM,
                         "system_metrics: cannot start the sampling thread");
    }
    t->sys_started = true;
    return MLT_OK;
}

static void sys_stop(mlt_tracker *t)
{
    if (!t->sys_started) {
        return;
    }
    pthread_mutex_lock(&t->sys_lock);
    t->sys_stop = true;
    pthread_cond_signal(&t->sys_cv);
    pthread_mutex_unlock(&t->sys_lock);
    pthread_join(t->sys_thread, NULL);
    t->sys_started = false;
}

mlt_err mlt_tracker_new(mlt_tracker **out, const mlt_options *opts, char *errbuf, size_t errlen)
{
    if (!out) {
        return mlt__errf(errbuf, errlen, MLT_ERR_INVALID_ARG, "out is required");
    }
    mlt_tracker *t = calloc(1, sizeof *t);
    if (!t) {
        return mlt__errf(errbuf, errlen, MLT_ERR_NOMEM, "out of memory");
    }
    t->opts = mlt__options_dup(opts);
    if (!t->opts) {
        free(t);
        return mlt__errf(errbuf, errlen, MLT_ERR_NOMEM, "out of memory");
    }
    pthread_mutex_init(&t->lock, NULL);
    pthread_mutex_init(&t->keys_lock, NULL);
    pthread_mutex_init(&t->sys_lock, NULL);
    pthread_cond_init(&t->sys_cv, NULL);
    atomic_init(&t->started, false);
    atomic_init(&t->errors, 0);
    register_tracker(t);
    if (t->opts->system_metrics) {
        mlt_err err = sys_start(t, errbuf, errlen);
        if (err != MLT_OK) {
            mlt_tracker_close(t, 0);
            return err;
        }
    }
    *out = t;
    return MLT_OK;
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
    if (cb->version != MLT_CALLBACKS_VERSION) {
        return mlt__fail(MLT_ERR_INVALID_ARG, "callbacks version %d is not supported (want %d)",
                         cb->version, MLT_CALLBACKS_VERSION);
    }
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
            t->cbs[t->n_cbs] = (mlt__cb_entry){*cb, userdata, *ext};
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

/*
 * Keeps the first failure of a dispatch: its code and its message (a later callback's failure
 * or success must not overwrite the message the caller will read).
 */
typedef struct first_err {
    mlt_err err;
    char msg[512];
} first_err;

static void note_err(first_err *fe, mlt_err err, const char *what)
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
static mlt_err counted(mlt_tracker *t, mlt_err err)
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

static mlt_err finish_err(first_err *fe)
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
        return forked_err();
    }
    int64_t deadline = timeout_ms < 0 ? -1 : mlt__mono_ns() + (int64_t)timeout_ms * 1000000;
    first_err fe = {MLT_OK, ""};
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
        note_err(&fe, t->cbs[i].cb.on_flush(left, t->cbs[i].userdata), "flush failed");
    }
    return counted(t, finish_err(&fe));
}

mlt_err mlt_tracker_close(mlt_tracker *t, int timeout_ms)
{
    if (!t) {
        return MLT_OK;
    }
    if (t->forked) {
        return forked_err(); /* the parent's to close; the child's copy is left as it is */
    }
    unregister_tracker(t);
    sys_stop(t);
    first_err fe = {MLT_OK, ""};
    for (;;) {
        pthread_mutex_lock(&t->lock);
        mlt_run *r = t->runs;
        pthread_mutex_unlock(&t->lock);
        if (!r) {
            break;
        }
        note_err(&fe, mlt_run_end(r, MLT_RUN_KILLED), "ending an open run failed");
    }
    note_err(&fe, mlt_tracker_flush(t, timeout_ms), "flush failed");
    for (size_t i = 0; i < t->n_cbs; i++) {
        if (t->cbs[i].cb.on_close) {
            t->cbs[i].cb.on_close(t->cbs[i].userdata);
        }
    }
    for (mlt_run *r = t->ended, *next; r; r = next) {
        next = r->next_sibling;
        free_run(r);
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
    return finish_err(&fe);
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

unsigned long long mlt_tracker_last_error(mlt_tracker *t, char *buf, size_t len)
{
    if (!t) {
        return 0;
    }
    if (t->forked) {
        if (buf && len) {
            snprintf(buf, len, "MLT_ERR_STATE: %s", mlt_strerror(MLT_ERR_STATE));
        }
        return atomic_load(&t->errors);
    }
    pthread_mutex_lock(&t->lock);
    unsigned long long n = atomic_load(&t->errors);
    if (buf && len) {
        snprintf(buf, len, "%s", t->last_error);
    }
    pthread_mutex_unlock(&t->lock);
    return n;
}

/* ---- runs ---- */

void mlt__run_info(const mlt_run *run, mlt_run_info *info, const char *parent_key)
{
    info->run = (mlt_run *)run;
    info->run_key = run->key;
    info->run_name = run->name;
    info->parent_run_key = parent_key;
    info->start_time_ms = run->start_ms;
    info->end_time_ms = 0;
}

static const char *parent_key(const mlt_run *run)
{
    return run->parent ? run->parent->key : NULL;
}

mlt_err mlt__run_set_id(mlt_run *run, const char *run_id)
{
    char *copy = mlt__strdup(run_id);
    if (!copy) {
        return MLT_ERR_NOMEM;
    }
    char *old = atomic_exchange(&run->run_id, copy);
    free(old);
    return MLT_OK;
}

/* Links run into its parent's (or the tracker's) list of open runs. */
static void link_run(mlt_run *run)
{
    mlt_tracker *t = run->tracker;
    pthread_mutex_lock(&t->lock);
    mlt_run **head = run->parent ? &run->parent->children : &t->runs;
    run->next_sibling = *head;
    *head = run;
    pthread_mutex_unlock(&t->lock);
}

static void unlink_run(mlt_run *run)
{
    mlt_tracker *t = run->tracker;
    pthread_mutex_lock(&t->lock);
    mlt_run **p = run->parent ? &run->parent->children : &t->runs;
    while (*p && *p != run) {
        p = &(*p)->next_sibling;
    }
    if (*p) {
        *p = run->next_sibling;
    }
    pthread_mutex_unlock(&t->lock);
}

/* The params a run remembers (to refuse a changed value), no longer needed once it ended. */
static void free_params(mlt_run *run)
{
    for (size_t i = 0; i < run->n_params; i++) {
        free(run->params[i].key);
        free(run->params[i].value);
    }
    free(run->params);
    run->params = NULL;
    run->n_params = run->cap_params = 0;
}

static void free_run(mlt_run *run)
{
    free_params(run);
    free(run->name);
    free(atomic_load(&run->run_id));
    pthread_mutex_destroy(&run->lock);
    free(run);
}

static mlt_err start_run(mlt_tracker *t, mlt_run *parent, const char *name, mlt_run **out)
{
    if (!out) {
        return mlt__fail(MLT_ERR_INVALID_ARG, "out is required");
    }
    if (t->forked) {
        return forked_err();
    }
    size_t len;
    char *msg = mlt__fail_buf(&len);
    mlt_err err = mlt__validate_run_name(name, msg, len);
    if (err != MLT_OK) {
        return err;
    }
    mlt_run *run = calloc(1, sizeof *run);
    if (!run || (name && !(run->name = mlt__strdup(name)))) {
        free(run);
        return mlt__fail(MLT_ERR_NOMEM, "out of memory");
    }
    run->tracker = t;
    run->parent = parent;
    const char *run_key = mlt__opt_str(t->opts, MLT__OPT_RUN_KEY);
    const char *run_id = mlt__opt_str(t->opts, MLT__OPT_RUN_ID);
    run->attached = !parent && (run_key || run_id);
    if (run->attached && run_key) {
        snprintf(run->key, sizeof run->key, "%s", run_key);
    } else {
        mlt__uuid4(run->key);
    }
    run->start_ms = mlt__now_ms();
    run->start_mono_ns = mlt__mono_ns();
    atomic_init(&run->failed, 0);
    atomic_init(&run->ended, false);
    atomic_init(&run->ring, NULL);
    atomic_init(&run->run_id, NULL);
    pthread_mutex_init(&run->lock, NULL);
    if (run->attached && run_id && mlt__run_set_id(run, run_id) != MLT_OK) {
        free_run(run);
        return mlt__fail(MLT_ERR_NOMEM, "out of memory");
    }

    /* Freeze the callback list: from here on it is read without the lock. */
    pthread_mutex_lock(&t->lock);
    atomic_store(&t->started, true);
    pthread_mutex_unlock(&t->lock);

    mlt_run_info info;
    mlt__run_info(run, &info, parent_key(run));
    first_err fe = {MLT_OK, ""};
    size_t started = 0;
    for (; started < t->n_cbs; started++) {
        const mlt__cb_entry *e = &t->cbs[started];
        if (e->cb.on_run_start) {
            mlt__fail_clear();
            note_err(&fe, e->cb.on_run_start(&info, e->userdata), "run start failed");
            if (fe.err != MLT_OK) {
                break;
            }
        }
    }
    if (fe.err != MLT_OK) {
        /* Tell the callbacks that saw the start that the run is over. */
        info.end_time_ms = mlt__now_ms();
        for (size_t i = 0; i < started; i++) {
            const mlt__cb_entry *e = &t->cbs[i];
            if (e->cb.on_run_end) {
                e->cb.on_run_end(&info, MLT_RUN_KILLED, 0.0, e->userdata);
            }
        }
        free_run(run);
        return finish_err(&fe);
    }
    link_run(run);
    *out = run;
    return MLT_OK;
}

mlt_err mlt_run_start(mlt_tracker *t, const char *name, mlt_run **out)
{
    if (!t) {
        return mlt__fail(MLT_ERR_INVALID_ARG, "tracker is required");
    }
    return counted(t, start_run(t, NULL, name, out));
}

/* What a call on a run that ended returns (run_end keeps the handle valid until close). */
static mlt_err ended_err(const mlt_run *run, const char *call)
{
    if (run->name) {
        return mlt__fail(MLT_ERR_STATE, "%s: run '%.250s' (key %s) has ended: nothing more can be "
                                        "logged into it",
                         call, run->name, run->key);
    }
    return mlt__fail(MLT_ERR_STATE,
                     "%s: run %s has ended: nothing more can be logged into it", call, run->key);
}

static bool has_ended(const mlt_run *run)
{
    return atomic_load_explicit(&((mlt_run *)run)->ended, memory_order_acquire);
}

mlt_err mlt_run_start_child(mlt_run *parent, const char *name, mlt_run **out)
{
    if (!parent) {
        return mlt__fail(MLT_ERR_INVALID_ARG, "parent run is required");
    }
    if (!parent->tracker->forked && has_ended(parent)) {
        return counted(parent->tracker, ended_err(parent, "run_start_child"));
    }
    return counted(parent->tracker, start_run(parent->tracker, parent, name, out));
}

void mlt__run_use_ring(mlt_run *run, uint32_t ring_run)
{
    run->ring_run = ring_run;
    if (run->tracker->ring && !has_ended(run)) {
        atomic_store_explicit(&run->ring, run->tracker->ring, memory_order_release);
    }
}

/* Calls one hook of every callback; the first error wins. */
#define DISPATCH(run, fe, hook, ...)                                                             \
    do {                                                                                         \
        mlt_run_info info_;                                                                      \
        mlt__run_info((run), &info_, parent_key(run));                                           \
        const mlt_tracker *t_ = (run)->tracker;                                                  \
        for (size_t i_ = 0; i_ < t_->n_cbs; i_++) {                                              \
            const mlt__cb_entry *e_ = &t_->cbs[i_];                                              \
            if (e_->cb.hook) {                                                                   \
                mlt__fail_clear();                                                               \
                note_err((fe), e_->cb.hook(&info_, __VA_ARGS__, e_->userdata), #hook " failed"); \
            }                                                                                    \
        }                                                                                        \
    } while (0)

/* Records a param; 1 if it is new, 0 if already there with the same value, <0 on error. */
static int remember_param(mlt_run *run, const char *key, const char *value)
{
    int rc = 1;
    pthread_mutex_lock(&run->lock);
    for (size_t i = 0; i < run->n_params; i++) {
        if (strcmp(run->params[i].key, key) == 0) {
            if (strcmp(run->params[i].value, value) == 0) {
                rc = 0;
            } else {
                rc = mlt__fail(MLT_ERR_PARAM_CONFLICT,
                               "param '%s' was already logged with value '%.200s'; params "
                               "cannot change (new value '%.200s')",
                               key, run->params[i].value, value);
            }
            goto out;
        }
    }
    if (run->n_params == run->cap_params) {
        size_t cap = run->cap_params ? run->cap_params * 2 : 8;
        mlt__param_rec *n = realloc(run->params, cap * sizeof *n);
        if (!n) {
            rc = mlt__fail(MLT_ERR_NOMEM, "out of memory");
            goto out;
        }
        run->params = n;
        run->cap_params = cap;
    }
    char *k = mlt__strdup(key), *v = mlt__strdup(value);
    if (!k || !v) {
        free(k);
        free(v);
        rc = mlt__fail(MLT_ERR_NOMEM, "out of memory");
        goto out;
    }
    run->params[run->n_params].key = k;
    run->params[run->n_params].value = v;
    run->n_params++;
out:
    pthread_mutex_unlock(&run->lock);
    return rc;
}

static void forget_param(mlt_run *run, const char *key)
{
    pthread_mutex_lock(&run->lock);
    for (size_t i = 0; i < run->n_params; i++) {
        if (strcmp(run->params[i].key, key) == 0) {
            free(run->params[i].key);
            free(run->params[i].value);
            run->params[i] = run->params[--run->n_params];
            break;
        }
    }
    pthread_mutex_unlock(&run->lock);
}

/* Checks a call's run, key and (for params and tags) value before anything is dispatched; the
 * message of a failure names the key and the rule. */
static mlt_err check_entry(mlt_run *run, mlt__kind kind, const char *key, const char *value)
{
    static const char *const calls[] = {"log_metric", "log_param", "set_tag"};
    if (!run) {
        return mlt__fail(MLT_ERR_INVALID_ARG, "run is required (%s '%s')", calls[kind],
                         key ? key : "(null)");
    }
    if (run->tracker->forked) {
        return forked_err();
    }
    if (has_ended(run)) {
        return counted(run->tracker, ended_err(run, calls[kind]));
    }
    size_t len;
    char *msg = mlt__fail_buf(&len);
    mlt_err err = mlt__validate_key(kind, key, msg, len);
    if (err == MLT_OK && kind == MLT__PARAM) {
        err = mlt__validate_param_value(key, value, msg, len);
    } else if (err == MLT_OK && kind == MLT__TAG) {
        err = mlt__validate_tag_value(key, value, msg, len);
    }
    return counted(run->tracker, err);
}

mlt_err mlt_log_param(mlt_run *run, const char *key, const char *value)
{
    mlt_err err = check_entry(run, MLT__PARAM, key, value);
    if (err != MLT_OK) {
        return err;
    }
    int rc = remember_param(run, key, value);
    if (rc <= 0) {
        return counted(run->tracker, (mlt_err)rc);
    }
    first_err fe = {MLT_OK, ""};
    DISPATCH(run, &fe, on_param, key, value);
    if (fe.err != MLT_OK) {
        forget_param(run, key); /* not logged: the caller may try again */
    }
    return counted(run->tracker, finish_err(&fe));
}

/* ---- metric keys and the metric hot path ---- */

/* A hash of a key's n bytes, eight at a time (FxHash's step, then a final mix so that the low
 * bits, which pick the bucket, depend on all of them): keys built at run time are hashed at
 * every call, so this is on their hot path. */
static inline uint64_t load64(const char *s)
{
    uint64_t w;
    memcpy(&w, s, 8);
    return w;
}

#define KEY_MIX(h, w) ((((h) << 5) | ((h) >> 59)) ^ (w)) * 0x517cc1b727220a95ull

static inline uint32_t key_hash(const char *s, size_t n)
{
    uint64_t h = n;
    if (n >= 8) {
        /* whole words, then the last 8 bytes (overlapping the one before: no byte loop); the
         * first two by hand, as most keys are 9 to 24 bytes */
        if (n > 8) {
            h = KEY_MIX(h, load64(s));
            if (n > 16) {
                h = KEY_MIX(h, load64(s + 8));
                for (size_t i = 16; i + 8 < n; i += 8) {
                    h = KEY_MIX(h, load64(s + i));
                }
            }
        }
        h = KEY_MIX(h, load64(s + n - 8));
    } else {
        uint64_t w = 0;
        for (size_t i = 0; i < n; i++) {
            w |= (uint64_t)(unsigned char)s[i] << (8 * i);
        }
        h = KEY_MIX(h, w);
    }
    h ^= h >> 32;
    return (uint32_t)(h ^ (h >> 16));
}

/* Whether the n bytes at a and b are equal (n >= 8: words, the last one overlapping). */
static inline bool same_bytes(const char *a, const char *b, size_t n)
{
    if (n < 8) {
        if (n >= 4) { /* the first four and the last four, overlapping */
            uint32_t x, y, z, w;
            memcpy(&x, a, 4);
            memcpy(&y, b, 4);
            memcpy(&z, a + n - 4, 4);
            memcpy(&w, b + n - 4, 4);
            return ((x ^ y) | (z ^ w)) == 0;
        }
        return memcmp(a, b, n) == 0;
    }
    uint64_t diff = load64(a + n - 8) ^ load64(b + n - 8);
    if (n > 8) {
        diff |= load64(a) ^ load64(b);
        for (size_t i = 8; i + 8 < n; i += 8) {
            diff |= load64(a + i) ^ load64(b + i);
        }
    }
    return diff == 0;
}

static inline _Atomic(mlt_key *) *cache_slot(mlt_tracker *t, const char *key)
{
    uintptr_t a = (uintptr_t)key;
    return &t->key_cache[((a >> 3) ^ (a >> 13)) & (MLT__KEY_CACHE - 1)];
}

/* What a cache slot holds for an address whose text keeps changing (a buffer that keys are
 * formatted into at run time): comparing would miss every time, so the key is looked up by its
 * text straight away. */
#define KEY_CHANGES ((mlt_key *)1)

/* The registered key whose name the caller's string last was at this address, if it still is. */
static inline const mlt_key *cached_key(mlt_tracker *t, const char *key)
{
    const mlt_key *k = atomic_load_explicit(cache_slot(t, key), memory_order_acquire);
    return (uintptr_t)k > (uintptr_t)KEY_CHANGES && strcmp(k->name, key) == 0 ? k : NULL;
}

static inline mlt_key *find_key(mlt_tracker *t, const char *key, size_t len, uint32_t h);

/* The cache slot of an address after k was found for it: a new address remembers its key; one
 * that held another key is one whose text changes (KEY_CHANGES), and stays so. */
static inline void remember(_Atomic(mlt_key *) *slot, mlt_key *k)
{
    mlt_key *was = atomic_load_explicit(slot, memory_order_relaxed);
    if (was != k && was != KEY_CHANGES) {
        atomic_store_explicit(slot, was ? KEY_CHANGES : k, memory_order_release);
    }
}

/* A key registered already, found by its text (a key built at run time into a reused buffer
 * misses the address cache): it was validated when registered, so it is not again. NULL for a
 * key not registered yet. */
static inline const mlt_key *known_key(mlt_tracker *t, const char *key,
                                       _Atomic(mlt_key *) *slot)
{
    size_t len = strlen(key);
    mlt_key *k = find_key(t, key, len, key_hash(key, len));
    if (k) {
        remember(slot, k);
    }
    return k;
}

static inline mlt_key *find_key(mlt_tracker *t, const char *key, size_t len, uint32_t h)
{
    mlt_key *k = atomic_load_explicit(&t->key_buckets[h & (MLT__KEY_BUCKETS - 1)],
                                      memory_order_acquire);
    for (; k; k = atomic_load_explicit(&k->next, memory_order_acquire)) {
        if (k->hash == h && k->len == len && same_bytes(k->name, key, len)) {
            return k;
        }
    }
    return NULL;
}

/* The key registered for a valid key name, registering it (and telling the sinks) if new. */
static mlt_err intern_key(mlt_tracker *t, const char *key, const mlt_key **out)
{
    size_t len = strlen(key);
    uint32_t h = key_hash(key, len);
    mlt_key *k = find_key(t, key, len, h);
    mlt_err err = MLT_OK;
    if (!k) {
        pthread_mutex_lock(&t->keys_lock);
        k = find_key(t, key, len, h);
        if (!k) {
            k = malloc(sizeof *k + len + 1);
            if (!k) {
                err = mlt__fail(MLT_ERR_NOMEM, "out of memory");
            } else {
                k->tracker = t;
                k->id = t->n_keys;
                k->hash = h;
                k->len = (uint32_t)len; /* at most 250 characters: validated */
                memcpy(k->name, key, len + 1);
                _Atomic(mlt_key *) *bucket = &t->key_buckets[h & (MLT__KEY_BUCKETS - 1)];
                atomic_init(&k->next, atomic_load_explicit(bucket, memory_order_relaxed));
                pthread_mutex_lock(&t->lock);
                for (size_t i = 0; i < t->n_cbs && err == MLT_OK; i++) {
                    if (t->cbs[i].ext.on_key) {
                        err = t->cbs[i].ext.on_key(t->cbs[i].userdata, k);
                    }
                }
                pthread_mutex_unlock(&t->lock);
                if (err != MLT_OK) {
                    free(k);
                    k = NULL;
                } else {
                    t->n_keys++;
                    k->all_next = t->all_keys;
                    t->all_keys = k;
                    atomic_store_explicit(bucket, k, memory_order_release);
                }
            }
        }
        pthread_mutex_unlock(&t->keys_lock);
    }
    if (k) {
        remember(cache_slot(t, key), k);
        *out = k;
    }
    return err;
}

mlt_err mlt_metric_key(mlt_tracker *tracker, const char *key, const mlt_key **out)
{
    if (!tracker || !out) {
        return counted(tracker, mlt__fail(MLT_ERR_INVALID_ARG, "tracker and out are required"));
    }
    if (tracker->forked) {
        return forked_err();
    }
    size_t len;
    char *msg = mlt__fail_buf(&len);
    mlt_err err = mlt__validate_key(MLT__METRIC, key, msg, len);
    if (err == MLT_OK) {
        err = intern_key(tracker, key, out);
    }
    return counted(tracker, err);
}

/* Every callback, when the ring cannot take the point directly. */
static mlt_err dispatch_metric(mlt_run *run, const mlt_key *k, double value, int64_t step,
                               int64_t ts)
{
    mlt_tracker *t = run->tracker;
    if (t->forked) {
        return forked_err();
    }
    if (has_ended(run)) {
        return counted(t, ended_err(run, "log_metric"));
    }
    if (t->fast_metric) {
        mlt_err err = t->fast_metric(t->fast_ud, run, k, value, step, ts);
        return err == MLT_OK ? MLT_OK : counted(t, err);
    }
    first_err fe = {MLT_OK, ""};
    mlt_run_info info;
    bool have_info = false;
    for (size_t i = 0; i < t->n_cbs; i++) {
        const mlt__cb_entry *e = &t->cbs[i];
        mlt__fail_clear();
        if (e->ext.fast_metric) {
            note_err(&fe, e->ext.fast_metric(e->userdata, run, k, value, step, ts),
                     "on_metric failed");
        } else if (e->cb.on_metric) {
            if (!have_info) {
                mlt__run_info(run, &info, parent_key(run));
                have_info = true;
            }
            note_err(&fe, e->cb.on_metric(&info, k->name, value, step, ts, e->userdata),
                     "on_metric failed");
        }
    }
    return counted(run->tracker, finish_err(&fe));
}

static inline mlt_err log_metric_k(mlt_run *run, const mlt_key *k, double value, int64_t step,
                                   int64_t ts)
{
    mlt__ring *r = atomic_load_explicit(&run->ring, memory_order_relaxed);
    if (mlt__ring_admits(r)) {
        mlt_err err = mlt__ring_put(r, run->ring_run, k->id | MLT__RING_MS, value, ts, step);
        return err == MLT_OK ? MLT_OK : counted(run->tracker, err);
    }
    return dispatch_metric(run, k, value, step, ts);
}

/* The hot path's slow ends, out of line so that the hot path itself needs no stack frame. */
static __attribute__((noinline)) mlt_err ring_slow(mlt_run *run, mlt__ring *r, int rc,
                                                   uint32_t key_id, double value, int64_t ts,
                                                   int64_t step)
{
    if (rc > 0) {
        mlt__ring_wake(r);
        return MLT_OK;
    }
    mlt_err err = mlt__ring_full(r, run->ring_run, key_id, value, ts, step);
    return err == MLT_OK ? MLT_OK : counted(run->tracker, err);
}

static __attribute__((noinline)) mlt_err log_metric_now_slow(mlt_run *run, const mlt_key *k,
                                                             double value, int64_t step)
{
    return log_metric_k(run, k, value, step, mlt__now_ms());
}

/* As log_metric_k, stamped now: the hot path. */
static inline mlt_err log_metric_now(mlt_run *run, const mlt_key *k, double value, int64_t step)
{
#ifdef MLT__HAVE_TSC
    mlt__ring *r = atomic_load_explicit(&run->ring, memory_order_relaxed);
    if (mlt__ring_admits(r) && r->tsc) {
        int64_t ts = mlt__tsc();
        int rc = mlt__ring_try(r, run->ring_run, k->id, value, ts, step);
        return rc == 0 ? MLT_OK : ring_slow(run, r, rc, k->id, value, ts, step);
    }
#endif
    return log_metric_now_slow(run, k, value, step);
}

/* A key not seen at this address yet, or bad arguments: validate, register, log. */
static mlt_err log_metric_slow(mlt_run *run, const char *key, double value, int64_t step,
                               int64_t ts)
{
    const mlt_key *k = run && key ? known_key(run->tracker, key, cache_slot(run->tracker, key))
                                  : NULL;
    if (k) {
        return log_metric_k(run, k, value, step, ts);
    }
    mlt_err err = check_entry(run, MLT__METRIC, key, NULL);
    if (err != MLT_OK) {
        return err;
    }
    err = intern_key(run->tracker, key, &k);
    if (err != MLT_OK) {
        return counted(run->tracker, err);
    }
    return log_metric_k(run, k, value, step, ts);
}

mlt_err mlt_log_metric_at(mlt_run *run, const char *key, double value, int64_t step,
                          int64_t timestamp_ms)
{
    if (timestamp_ms < 0) {
        char ts_msg[128];
        mlt_err err = check_entry(run, MLT__METRIC, key, NULL);
        if (err == MLT_OK) {
            err = mlt__validate_timestamp(timestamp_ms, ts_msg, sizeof ts_msg);
            err = counted(run->tracker, mlt__fail(err, "metric '%s': %s", key, ts_msg));
        }
        return err;
    }
    const mlt_key *k;
    if (run && key && (k = cached_key(run->tracker, key))) {
        return log_metric_k(run, k, value, step, timestamp_ms);
    }
    return log_metric_slow(run, key, value, step, timestamp_ms);
}

/* A key string not seen at this address: registered already (found by its text, then the hot
 * path), or new (validated, registered). Out of line, as the hot path's other slow ends. */
/* A key string not seen at this address, registered already: found by its text (keys built at
 * run time into one buffer). Out of line, as the hot path's other slow ends. */
static __attribute__((noinline)) const mlt_key *other_key(mlt_tracker *t, const char *key)
{
    size_t len = strlen(key);
    mlt_key *k = find_key(t, key, len, key_hash(key, len));
    if (k) {
        remember(cache_slot(t, key), k);
    }
    return k;
}

mlt_err mlt_log_metric(mlt_run *run, const char *key, double value, int64_t step)
{
    const mlt_key *k;
    if (run && key &&
        ((k = cached_key(run->tracker, key)) || (k = other_key(run->tracker, key)))) {
        return log_metric_now(run, k, value, step);
    }
    return log_metric_slow(run, key, value, step, mlt__now_ms()); /* new, or refused */
}

mlt_err mlt_log_metric_key(mlt_run *run, const mlt_key *key, double value, int64_t step)
{
    if (!run || !key) {
        return counted(run ? run->tracker : NULL,
                       mlt__fail(MLT_ERR_INVALID_ARG, "run and key are required"));
    }
    if (key->tracker != run->tracker) {
        return counted(run->tracker, mlt__fail(MLT_ERR_INVALID_ARG,
                                               "metric key '%s' belongs to another tracker",
                                               key->name));
    }
    return log_metric_now(run, key, value, step);
}

mlt_err mlt_set_tag(mlt_run *run, const char *key, const char *value)
{
    mlt_err err = check_entry(run, MLT__TAG, key, value);
    if (err != MLT_OK) {
        return err;
    }
    first_err fe = {MLT_OK, ""};
    DISPATCH(run, &fe, on_tag, key, value);
    return counted(run->tracker, finish_err(&fe));
}

mlt_err mlt_run_end(mlt_run *run, mlt_run_status status)
{
    if (!run) {
        return mlt__fail(MLT_ERR_INVALID_ARG, "run is required");
    }
    if (run->tracker->forked) {
        return forked_err(); /* the parent's run: left as it is */
    }
    if (has_ended(run)) {
        return counted(run->tracker, ended_err(run, "run_end"));
    }
    if (status != MLT_RUN_FINISHED && status != MLT_RUN_FAILED && status != MLT_RUN_KILLED) {
        status = MLT_RUN_FAILED;
    }
    first_err fe = {MLT_OK, ""};
    for (;;) {
        pthread_mutex_lock(&run->tracker->lock);
        mlt_run *child = run->children;
        pthread_mutex_unlock(&run->tracker->lock);
        if (!child) {
            break;
        }
        note_err(&fe, mlt_run_end(child, MLT_RUN_KILLED), "ending a child run failed");
    }
    if (status == MLT_RUN_FINISHED && atomic_load(&run->failed)) {
        status = MLT_RUN_FAILED;
    }
    /* from here on every call on the run refuses, the hot path's too (no ring) */
    atomic_store_explicit(&run->ring, NULL, memory_order_relaxed);
    atomic_store_explicit(&run->ended, true, memory_order_release);
    bool sys = run->tracker->sys_started && !run->parent;
    if (sys) {
        pthread_mutex_lock(&run->tracker->sys_lock); /* not while the sampler logs into it */
    }
    unlink_run(run);
    if (sys) {
        pthread_mutex_unlock(&run->tracker->sys_lock);
    }
    mlt__active_pop(run);
    double duration_s = (double)(mlt__mono_ns() - run->start_mono_ns) / 1e9;
    mlt_run_info info;
    mlt__run_info(run, &info, parent_key(run));
    info.end_time_ms = mlt__now_ms();
    if (info.end_time_ms < run->start_ms) {
        info.end_time_ms = run->start_ms; /* the wall clock stepped back */
    }
    const mlt_tracker *t = run->tracker;
    for (size_t i = 0; i < t->n_cbs; i++) {
        const mlt__cb_entry *e = &t->cbs[i];
        if (e->cb.on_run_end) {
            mlt__fail_clear();
            note_err(&fe, e->cb.on_run_end(&info, status, duration_s, e->userdata),
                     "run end failed");
        }
    }
    /* the handle stays valid until the tracker is closed (a call on it refuses): the list of
     * ended runs keeps it, without what only an open run needs */
    free_params(run);
    mlt_tracker *owner = run->tracker;
    pthread_mutex_lock(&owner->lock);
    run->next_sibling = owner->ended;
    owner->ended = run;
    pthread_mutex_unlock(&owner->lock);
    return counted(owner, finish_err(&fe));
}

void mlt_run_fail(mlt_run *run)
{
    if (run) {
        atomic_store(&run->failed, 1);
    }
}

int mlt_run_failed(const mlt_run *run)
{
    return run ? atomic_load(&((mlt_run *)run)->failed) : 0;
}

const char *mlt_run_id(const mlt_run *run)
{
    return run ? atomic_load(&((mlt_run *)run)->run_id) : NULL;
}

const char *mlt_run_key(const mlt_run *run)
{
    return run ? run->key : NULL;
}

const char *mlt_run_name(const mlt_run *run)
{
    return run ? run->name : NULL;
}

mlt_run *mlt_run_parent(const mlt_run *run)
{
    return run ? run->parent : NULL;
}

mlt_tracker *mlt_run_tracker(const mlt_run *run)
{
    return run ? run->tracker : NULL;
}

mlt_err mlt_run_ui_url(const mlt_run *run, char *buf, size_t len)
{
    if (!run || !buf) {
        return MLT_ERR_INVALID_ARG;
    }
    const char *id = mlt_run_id(run);
    const char *uri = mlt__opt_str(run->tracker->opts, MLT__OPT_TRACKING_URI);
    mlt_tracker *t = run->tracker;
    pthread_mutex_lock(&t->lock);
    mlt_err err = MLT_OK;
    if (!id || !uri || !t->experiment_id) {
        err = MLT_ERR_STATE;
    } else {
        /* the run's metric charts in the UI's "Model training" view: without the query, MLflow
         * 3 opens a fresh browser in its GenAI view (2.x ignores it) */
        int n = snprintf(buf, len, "%s/#/experiments/%s/runs/%s/model-metrics?" MLT__UI_VIEW, uri,
                         t->experiment_id, id);
        if (n < 0 || (size_t)n >= len) {
            err = MLT_ERR_VALUE_TOO_LONG;
        }
    }
    pthread_mutex_unlock(&t->lock);
    return err;
}

mlt_err mlt_tracker_queue_stats(mlt_tracker *t, mlt_queue_stats *out)
{
    if (!t || !out) {
        return MLT_ERR_INVALID_ARG;
    }
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < t->n_cbs; i++) {
        if (t->cbs[i].ext.stats) {
            return t->cbs[i].ext.stats(t->cbs[i].userdata, out);
        }
    }
    return mlt__fail(MLT_ERR_STATE, "the tracker has no MLflow callback, so no queue");
}
