/*
 * scope.c - the decorator and the context manager: this thread's stack of active runs,
 * mlt_track(), the support functions of MLT_WITH_RUN / MLT_SCOPED_RUN / MLT_TRACKED, and the
 * typed param formatters that MLT_TRACKED's _Generic selects.
 */
#include "config.h"

#include "tracker.h"

#include <inttypes.h>
#include <stdio.h>

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

/* Starts a run, a child of this thread's active run if it belongs to the same tracker, and
 * makes it active. *out is NULL on failure. */
static mlt_err begin(mlt_tracker *tracker, const char *name, mlt_run **out)
{
    *out = NULL;
    if (!tracker) {
        return mlt__fail(MLT_ERR_INVALID_ARG, "no tracker for run '%s'",
                         name ? name : "(unnamed)");
    }
    mlt_run *parent = active && active->tracker == tracker ? active : NULL;
    mlt_err err = parent ? mlt_run_start_child(parent, name, out)
                         : mlt_run_start(tracker, name, out);
    if (err == MLT_OK) {
        mlt__active_push(*out);
    }
    return err;
}

struct mlt_scope mlt_scope_begin(mlt_tracker *tracker, const char *name)
{
    struct mlt_scope s = {NULL, 0};
    begin(tracker, name, &s.run);
    return s;
}

void mlt_scope_end(struct mlt_scope *scope)
{
    if (scope->run) {
        mlt_run_end(scope->run, MLT_RUN_FINISHED);
        scope->run = NULL;
    }
    scope->state = 2;
}

void mlt_scope_cleanup(mlt_run **run)
{
    if (*run) {
        mlt_run_end(*run, MLT_RUN_FINISHED);
        *run = NULL;
    }
}

struct mlt_scope mlt_tracked_begin(const char *name)
{
    mlt_tracker *t = mlt_tracker_get_default();
    struct mlt_scope s = {NULL, 0};
    if (t) {
        begin(t, name, &s.run);
    } else {
        mlt__fail(MLT_ERR_STATE,
                  "no default tracker: '%s' ran untracked (call mlt_tracker_set_default())",
                  name);
    }
    return s;
}

static void log_duration(mlt_run *run)
{
    double d = (double)(mlt__mono_ns() - run->start_mono_ns) / 1e9;
    mlt_log_metric(run, "duration_s", d, 0);
}

void mlt_tracked_end(struct mlt_scope *scope, int has_result, double result)
{
    if (!scope->run) {
        return;
    }
    if (has_result) {
        mlt_log_metric(scope->run, "result", result, 0);
    }
    log_duration(scope->run);
    mlt_run_end(scope->run, MLT_RUN_FINISHED);
    scope->run = NULL;
}

/* ---- typed params ----
 * A NULL run means the run could not start: the reason is in mlt_last_error() already and must
 * not be replaced by "run is required" for each argument. */

void mlt_param_i64(mlt_run *run, const char *key, long long value)
{
    if (!run) {
        return;
    }
    char text[24];
    snprintf(text, sizeof text, "%lld", value);
    mlt_log_param(run, key, text);
}

void mlt_param_u64(mlt_run *run, const char *key, unsigned long long value)
{
    if (!run) {
        return;
    }
    char text[24];
    snprintf(text, sizeof text, "%llu", value);
    mlt_log_param(run, key, text);
}

void mlt_param_f64(mlt_run *run, const char *key, double value)
{
    if (!run) {
        return;
    }
    char text[32];
    mlt__fmt_double(text, sizeof text, value);
    mlt_log_param(run, key, text);
}

void mlt_param_f32(mlt_run *run, const char *key, float value)
{
    if (!run) {
        return;
    }
    char text[32];
    mlt__fmt_float(text, sizeof text, value);
    mlt_log_param(run, key, text);
}

void mlt_param_bool(mlt_run *run, const char *key, _Bool value)
{
    if (!run) {
        return;
    }
    mlt_log_param(run, key, value ? "true" : "false");
}

void mlt_param_str(mlt_run *run, const char *key, const char *value)
{
    if (!run) {
        return;
    }
    mlt_log_param(run, key, value ? value : "(null)");
}

/* ---- mlt_track ---- */

mlt_err mlt_track(mlt_tracker *tracker, const char *name, const mlt_param *params,
                  size_t n_params, int (*fn)(mlt_run *run, void *arg), void *arg,
                  int *fn_result)
{
    if (!fn) {
        return mlt__fail(MLT_ERR_INVALID_ARG, "fn is required");
    }
    mlt_err first = MLT_OK;
    char first_msg[512] = "";
    mlt_run *run = NULL;
    first = begin(tracker, name, &run);
    if (first != MLT_OK) {
        snprintf(first_msg, sizeof first_msg, "%s", mlt_last_error());
    }
    for (size_t i = 0; run && i < n_params; i++) {
        mlt_err err = mlt_log_param(run, params[i].key, params[i].value);
        if (err != MLT_OK && first == MLT_OK) {
            first = err;
            snprintf(first_msg, sizeof first_msg, "%s", mlt_last_error());
        }
    }
    int rc = fn(run, arg);
    if (fn_result) {
        *fn_result = rc;
    }
    if (run) {
        char text[16];
        snprintf(text, sizeof text, "%d", rc);
        mlt_err err = mlt_set_tag(run, "mltrack.return_code", text);
        if (err == MLT_OK) {
            log_duration(run);
        }
        err = mlt_run_end(run, rc == 0 ? MLT_RUN_FINISHED : MLT_RUN_FAILED);
        if (err != MLT_OK && first == MLT_OK) {
            first = err;
            snprintf(first_msg, sizeof first_msg, "%s", mlt_last_error());
        }
    }
    if (first != MLT_OK) {
        mlt__fail_set(first_msg);
    }
    return first;
}
