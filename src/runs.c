/*
 * runs.c - runs: start (a fresh client key, or the options' run, attached), the run tree, params
 * (a param cannot change), tags, the end (children first; the handle stays valid until close),
 * the getters and the UI address, and this thread's stack of active runs (scope.c, MLT_TRACKED).
 * Validation comes before any callback hears of a call.
 */
#include "config.h"

#include "tracker.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "validate.h"

/* ---- the active runs of this thread ---- */

static _Thread_local mlt_run *active;

mlt_run *mlt_active_run(void)
{
    return active;
}

void mlt__active_push(mlt_run *run)
{
    run->active_prev = active;
    active = run;
}

void mlt__active_pop(mlt_run *run)
{
    /* Runs end innermost first; anything above run on the stack is gone already. */
    for (mlt_run *r = active; r; r = r->active_prev) {
        if (r == run) {
            active = run->active_prev;
            return;
        }
    }
}

void mlt__active_set(mlt_run *run)
{
    active = run;
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

const char *mlt__run_parent_key(const mlt_run *run)
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

void mlt__run_free(mlt_run *run)
{
    free_params(run);
    free(run->name);
    free(atomic_load(&run->run_id));
    pthread_mutex_destroy(&run->lock);
    free(run);
}

static MLT__MUST_USE mlt_err start_run(mlt_tracker *t, mlt_run *parent, const char *name,
                                       mlt_run **out)
{
    if (!out) {
        return mlt__fail(MLT_ERR_INVALID_ARG, "out is required");
    }
    if (t->forked) {
        return mlt__tracker_forked_err();
    }
    mlt_err err = mlt__validate_run_name(name);
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
    if (!parent && t->opts->resume && !run_key && !run_id) {
        free(run->name);
        free(run);
        return mlt__fail(MLT_ERR_BAD_OPTION, "resume=allow (MLTRACK_RESUME) needs the key of the "
                                             "run to resume: run_key (MLTRACK_RUN_KEY)");
    }
    /* resume=allow: the run of run_key is this process's own (created when absent, else
     * RUNNING again, ended here); else the run of run_key or run_id is another's, attached */
    run->resumed = !parent && run_key && !run_id && t->opts->resume;
    run->attached = !parent && !run->resumed && (run_key || run_id);
    if ((run->attached || run->resumed) && run_key) {
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
        mlt__run_free(run);
        return mlt__fail(MLT_ERR_NOMEM, "out of memory");
    }

    /* Freeze the callback list: from here on it is read without the lock. */
    pthread_mutex_lock(&t->lock);
    atomic_store(&t->started, true);
    pthread_mutex_unlock(&t->lock);

    mlt_run_info info;
    mlt__run_info(run, &info, mlt__run_parent_key(run));
    mlt__first_err fe = {MLT_OK, ""};
    size_t started = 0;
    for (; started < t->n_cbs; started++) {
        const mlt__cb_entry *e = &t->cbs[started];
        if (e->cb.on_run_start) {
            mlt__fail_clear();
            mlt__note_err(&fe, e->cb.on_run_start(&info, e->userdata), "run start failed");
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
        mlt__run_free(run);
        return mlt__finish_err(&fe);
    }
    link_run(run);
    *out = run;
    return MLT_OK;
}

mlt_err mlt_run_start(mlt_run **out, mlt_tracker *t, const char *name)
{
    if (!t) {
        return mlt__fail(MLT_ERR_INVALID_ARG, "tracker is required");
    }
    return mlt__tracker_counted(t, start_run(t, NULL, name, out));
}

/* What a call on a run that ended returns (run_end keeps the handle valid until close). */
mlt_err mlt__run_ended_err(const mlt_run *run, const char *call)
{
    if (run->name) {
        return mlt__fail(MLT_ERR_STATE,
                         "%s: run '%.250s' (key %s) has ended: nothing more can be "
                         "logged into it",
                         call, run->name, run->key);
    }
    return mlt__fail(MLT_ERR_STATE, "%s: run %s has ended: nothing more can be logged into it",
                     call, run->key);
}

bool mlt__run_has_ended(const mlt_run *run)
{
    return atomic_load_explicit(&((mlt_run *)run)->ended, memory_order_acquire);
}

mlt_err mlt_run_start_child(mlt_run **out, mlt_run *parent, const char *name)
{
    if (!parent) {
        return mlt__fail(MLT_ERR_INVALID_ARG, "parent run is required");
    }
    if (!parent->tracker->forked && mlt__run_has_ended(parent)) {
        return mlt__tracker_counted(parent->tracker, mlt__run_ended_err(parent, "run_start_child"));
    }
    return mlt__tracker_counted(parent->tracker, start_run(parent->tracker, parent, name, out));
}

void mlt__run_use_ring(mlt_run *run, uint32_t ring_run)
{
    run->ring_run = ring_run;
    if (run->tracker->ring && !mlt__run_has_ended(run)) {
        atomic_store_explicit(&run->ring, run->tracker->ring, memory_order_release);
    }
}

/* Calls one hook of every callback; the first error wins. */
#define DISPATCH(run, fe, hook, ...)                                                               \
    do {                                                                                           \
        mlt_run_info info_;                                                                        \
        mlt__run_info((run), &info_, mlt__run_parent_key(run));                                    \
        const mlt_tracker *t_ = (run)->tracker;                                                    \
        for (size_t i_ = 0; i_ < t_->n_cbs; i_++) {                                                \
            const mlt__cb_entry *e_ = &t_->cbs[i_];                                                \
            if (e_->cb.hook) {                                                                     \
                mlt__fail_clear();                                                                 \
                mlt__note_err((fe), e_->cb.hook(&info_, __VA_ARGS__, e_->userdata),                \
                              #hook " failed");                                                    \
            }                                                                                      \
        }                                                                                          \
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
    if (MLT__GROW(run->params, run->cap_params, run->n_params + 1) != MLT_OK) {
        rc = mlt__fail(MLT_ERR_NOMEM, "out of memory");
        goto out;
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
mlt_err mlt__run_check_entry(mlt_run *run, mlt__kind kind, const char *key, const char *value)
{
    static const char *const calls[] = {"log_metric", "log_param", "set_tag"};
    if (!run) {
        return mlt__fail(MLT_ERR_INVALID_ARG, "run is required (%s '%s')", calls[kind],
                         key ? key : "(null)");
    }
    if (run->tracker->forked) {
        return mlt__tracker_forked_err();
    }
    if (mlt__run_has_ended(run)) {
        return mlt__tracker_counted(run->tracker, mlt__run_ended_err(run, calls[kind]));
    }
    mlt_err err = mlt__validate_key(kind, key);
    if (err == MLT_OK && kind == MLT__PARAM) {
        err = mlt__validate_param_value(key, value);
    } else if (err == MLT_OK && kind == MLT__TAG) {
        err = mlt__validate_tag_value(key, value);
    }
    return mlt__tracker_counted(run->tracker, err);
}

mlt_err mlt_log_param(mlt_run *run, const char *key, const char *value)
{
    mlt_err err = mlt__run_check_entry(run, MLT__PARAM, key, value);
    if (err != MLT_OK) {
        return err;
    }
    int rc = remember_param(run, key, value);
    if (rc <= 0) {
        return mlt__tracker_counted(run->tracker, (mlt_err)rc);
    }
    mlt__first_err fe = {MLT_OK, ""};
    DISPATCH(run, &fe, on_param, key, value);
    if (fe.err != MLT_OK) {
        forget_param(run, key); /* not logged: the caller may try again */
    }
    return mlt__tracker_counted(run->tracker, mlt__finish_err(&fe));
}

/* A key string not seen at this address: registered already (found by its text, then the hot
 * path), or new (validated, registered). Out of line, as the hot path's other slow ends. */

mlt_err mlt_set_tag(mlt_run *run, const char *key, const char *value)
{
    mlt_err err = mlt__run_check_entry(run, MLT__TAG, key, value);
    if (err != MLT_OK) {
        return err;
    }
    mlt__first_err fe = {MLT_OK, ""};
    DISPATCH(run, &fe, on_tag, key, value);
    return mlt__tracker_counted(run->tracker, mlt__finish_err(&fe));
}

mlt_err mlt_run_end(mlt_run *run, mlt_run_status status)
{
    if (!run) {
        return mlt__fail(MLT_ERR_INVALID_ARG, "run is required");
    }
    if (run->tracker->forked) {
        return mlt__tracker_forked_err(); /* the parent's run: left as it is */
    }
    if (mlt__run_has_ended(run)) {
        return mlt__tracker_counted(run->tracker, mlt__run_ended_err(run, "run_end"));
    }
    if (status != MLT_RUN_FINISHED && status != MLT_RUN_FAILED && status != MLT_RUN_KILLED) {
        status = MLT_RUN_FAILED;
    }
    mlt__first_err fe = {MLT_OK, ""};
    for (;;) {
        pthread_mutex_lock(&run->tracker->lock);
        mlt_run *child = run->children;
        pthread_mutex_unlock(&run->tracker->lock);
        if (!child) {
            break;
        }
        mlt__note_err(&fe, mlt_run_end(child, MLT_RUN_KILLED), "ending a child run failed");
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
    mlt__run_info(run, &info, mlt__run_parent_key(run));
    info.end_time_ms = mlt__now_ms();
    if (info.end_time_ms < run->start_ms) {
        info.end_time_ms = run->start_ms; /* the wall clock stepped back */
    }
    const mlt_tracker *t = run->tracker;
    for (size_t i = 0; i < t->n_cbs; i++) {
        const mlt__cb_entry *e = &t->cbs[i];
        if (e->cb.on_run_end) {
            mlt__fail_clear();
            mlt__note_err(&fe, e->cb.on_run_end(&info, status, duration_s, e->userdata),
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
    return mlt__tracker_counted(owner, mlt__finish_err(&fe));
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

mlt_err mlt_run_last_step(mlt_run *run, const char *key, int64_t *step)
{
    if (!run || !key || !step) {
        return mlt__fail(MLT_ERR_INVALID_ARG, "run, key and step are required");
    }
    const mlt_tracker *t = run->tracker;
    for (size_t i = 0; i < t->n_cbs; i++) {
        if (t->cbs[i].ext.last_step) {
            return t->cbs[i].ext.last_step(t->cbs[i].userdata, run->key, key, step);
        }
    }
    return mlt__fail(MLT_ERR_STATE, "the tracker has no MLflow callback: no earlier steps");
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

mlt_err mlt_run_ui_url(char *out, size_t outlen, const mlt_run *run)
{
    if (!run || !out) {
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
        int n = snprintf(out, outlen, "%s/#/experiments/%s/runs/%s/model-metrics?" MLT__UI_VIEW,
                         uri, t->experiment_id, id);
        if (n < 0 || (size_t)n >= outlen) {
            err = MLT_ERR_VALUE_TOO_LONG;
        }
    }
    pthread_mutex_unlock(&t->lock);
    return err;
}
