/*
 * scope.c - the decorator and the context manager: mlt_track(), the support functions of
 * MLT_WITH_RUN / MLT_SCOPED_RUN / MLT_TRACKED (the active-run stack they push onto is runs.c's),
 * and the typed param formatters that MLT_TRACKED's _Generic selects.
 */
#include "config.h"

#include "tracker.h"

#include <inttypes.h>
#include <stdio.h>

/* Starts a run, a child of this thread's active run if it belongs to the same tracker, and
 * makes it active. If it cannot start, s->run is NULL (mlt_last_error() says why, the tracker
 * counted it) and no run is active until end_scope(): a body that marks "its" run failed must
 * not reach the caller's run. */
static MLT__MUST_USE mlt_err begin(mlt_tracker *tracker, const char *name, struct mlt_scope *s)
{
    s->run = NULL;
    s->outer = mlt_active_run();
    s->state = 0;
    mlt_err err;
    if (!tracker) {
        err = mlt__fail(MLT_ERR_INVALID_ARG, "no tracker for run '%s'", name ? name : "(unnamed)");
    } else {
        mlt_run *active = mlt_active_run();
        mlt_run *parent = active && active->tracker == tracker ? active : NULL;
        err = parent ? mlt_run_start_child(&s->run, parent, name)
                     : mlt_run_start(&s->run, tracker, name);
    }
    if (err == MLT_OK) {
        mlt__active_push(s->run);
    } else {
        mlt__active_set(NULL);
    }
    return err;
}

/* Ends the scope's run with status (FAILED if marked) and restores the outer active run. */
static MLT__MUST_USE mlt_err end_scope(struct mlt_scope *s, mlt_run_status status)
{
    mlt_err err = MLT_OK;
    if (s->run) {
        err = mlt_run_end(s->run, status);
        s->run = NULL;
    } else {
        mlt__active_set(s->outer);
    }
    s->state = 2;
    return err;
}

struct mlt_scope mlt_scope_begin(mlt_tracker *tracker, const char *name)
{
    struct mlt_scope s;
    if (begin(tracker, name, &s) != MLT_OK) {
        /* s.run is NULL: the block runs untracked, mlt_last_error() says why */
    }
    return s;
}

void mlt_scope_end(struct mlt_scope *scope)
{
    if (end_scope(scope, MLT_RUN_FINISHED) != MLT_OK) {
        /* The macros' end returns nothing: the tracker counted the failure
         * (mlt_tracker_error_count()) and mlt_last_error() says it. */
    }
}

struct mlt_scope mlt_tracked_begin(const char *name)
{
    struct mlt_scope s;
    mlt_tracker *t = mlt_tracker_get_default();
    if (begin(t, name, &s) != MLT_OK && t) {
        /* s.run is NULL: the function runs untracked, mlt_last_error() says why */
    }
    if (!t) {
        mlt__fail(MLT_ERR_STATE,
                  "no default tracker: '%s' ran untracked (call mlt_tracker_set_default())", name);
    }
    return s;
}

static MLT__MUST_USE mlt_err log_duration(mlt_run *run)
{
    double d = (double)(mlt__mono_ns() - run->start_mono_ns) / 1e9;
    return mlt_log_metric(run, "duration_s", d, 0);
}

void mlt_tracked_end(struct mlt_scope *scope, int has_result, double result)
{
    /* MLT_TRACKED functions return their own result: a failure here is counted by the tracker
     * (mlt_tracker_error_count()), as the header says, and mlt_last_error() tells it */
    mlt_err err = MLT_OK;
    if (scope->run) {
        if (has_result) {
            err = mlt_log_metric(scope->run, "result", result, 0);
        }
        mlt_err derr = log_duration(scope->run);
        err = err != MLT_OK ? err : derr;
    }
    mlt_err eerr = end_scope(scope, MLT_RUN_FINISHED);
    if (err != MLT_OK || eerr != MLT_OK) {
        /* counted; nothing to return */
    }
}

/* ---- typed params ----
 * A NULL run means the run could not start: the reason is in mlt_last_error() already and must
 * not be replaced by "run is required" for each argument. */

static void param_text(mlt_run *run, const char *key, const char *text)
{
    if (run) {
        mlt_log_param(run, key, text);
    }
}

void mlt_param_i64(mlt_run *run, const char *key, long long value)
{
    char text[24];
    snprintf(text, sizeof text, "%lld", value);
    param_text(run, key, text);
}

void mlt_param_u64(mlt_run *run, const char *key, unsigned long long value)
{
    char text[24];
    snprintf(text, sizeof text, "%llu", value);
    param_text(run, key, text);
}

void mlt_param_f64(mlt_run *run, const char *key, double value)
{
    char text[32];
    mlt__fmt_double(text, sizeof text, value);
    param_text(run, key, text);
}

void mlt_param_f32(mlt_run *run, const char *key, float value)
{
    char text[32];
    mlt__fmt_float(text, sizeof text, value);
    param_text(run, key, text);
}

void mlt_param_bool(mlt_run *run, const char *key, _Bool value)
{
    param_text(run, key, value ? "true" : "false");
}

/* NULL is "None", the text MLflow's Python client logs for None: runs of both compare. */
void mlt_param_str(mlt_run *run, const char *key, const char *value)
{
    param_text(run, key, value ? value : "None");
}

/* ---- mlt_track ---- */

/* The first failure of a sequence of calls, with its message. */
typedef struct first_fail {
    mlt_err err;
    char msg[512];
} first_fail;

static void keep_first(first_fail *f, mlt_err err)
{
    if (err != MLT_OK && f->err == MLT_OK) {
        f->err = err;
        snprintf(f->msg, sizeof f->msg, "%s", mlt_last_error());
    }
}

mlt_err mlt_track(int *fn_result, mlt_tracker *tracker, const char *name, const mlt_param *params,
                  size_t n_params, int (*fn)(mlt_run *run, void *arg), void *arg)
{
    if (!fn) {
        return mlt__fail(MLT_ERR_INVALID_ARG, "fn is required");
    }
    first_fail first = {MLT_OK, ""};
    struct mlt_scope s;
    keep_first(&first, begin(tracker, name, &s));
    for (size_t i = 0; s.run && i < n_params; i++) {
        keep_first(&first, mlt_log_param(s.run, params[i].key, params[i].value));
    }
    int rc = fn(s.run, arg);
    if (fn_result) {
        *fn_result = rc;
    }
    if (s.run) {
        char text[16];
        snprintf(text, sizeof text, "%d", rc);
        keep_first(&first, mlt_set_tag(s.run, "mltrack.return_code", text));
        keep_first(&first, log_duration(s.run));
    }
    keep_first(&first, end_scope(&s, rc == 0 ? MLT_RUN_FINISHED : MLT_RUN_FAILED));
    if (first.err != MLT_OK) {
        mlt__fail_set(first.msg);
    }
    return first.err;
}
