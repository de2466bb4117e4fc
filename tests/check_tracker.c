/*
 * check_tracker.c - unit tests of the tracker, its runs and the three styles (decorator, scope,
 * callbacks) against the contract in include/mltrack.h. No server: a recording callback keeps
 * every event it is given, with all its arguments and the mlt_run_info fields, and the tests
 * read that record.
 */
#include "config.h" /* PACKAGE_VERSION */

#include "testutil.h"

#include "common.h" /* mlt__fail: a fake callback leaves a message as the built-in ones do */
#include "mltrack.h"
#include "tracker.h" /* mlt__run_set_id, mlt__tracker_set_experiment_id: for mlt_run_ui_url */

#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- the recording callback ----------------------------------------------------------------- */

typedef enum ev_kind { EV_START, EV_PARAM, EV_METRIC, EV_TAG, EV_END, EV_FLUSH, EV_CLOSE } ev_kind;
#define N_FALLIBLE EV_CLOSE /* every hook but on_close returns an mlt_err */

typedef struct event {
    ev_kind kind;
    int rec; /* which recorder saw it */
    mlt_run *run;
    char run_key[40];
    char *run_name; /* copy; NULL when the info had none */
    bool has_parent;
    char parent_key[40];
    int64_t start_ms;
    int64_t end_ms;
    char *key; /* copies */
    char *value;
    double number;
    int64_t step;
    int64_t timestamp_ms;
    mlt_run_status status;
    double duration_s;
    int timeout_ms;
    void *userdata;
    mlt_run *active; /* mlt_active_run() while the hook ran */
} event;

/* Events of every recorder of a tracker, in arrival order. Hooks may run on several threads. */
typedef struct evlog {
    pthread_mutex_t lock;
    event *ev;
    size_t n;
    size_t cap;
} evlog;

typedef struct recorder {
    int id;
    evlog *log;
    mlt_err fail[N_FALLIBLE];   /* what each hook returns; MLT_OK: succeed */
    int fail_times[N_FALLIBLE]; /* failures left; < 0: fail every time */
    const char *fail_msg;       /* left with mlt__fail() when failing, or NULL for no message */
} recorder;

static char *xstrdup(const char *s)
{
    if (!s) {
        return NULL;
    }
    char *p = strdup(s);
    if (!p) {
        abort(); /* hooks may run off the test's thread: no ck_assert here */
    }
    return p;
}

static void record(recorder *r, event *e, const mlt_run_info *info)
{
    e->rec = r->id;
    e->active = mlt_active_run();
    if (info) {
        e->run = info->run;
        snprintf(e->run_key, sizeof e->run_key, "%s", info->run_key ? info->run_key : "(null)");
        e->run_name = xstrdup(info->run_name);
        e->has_parent = info->parent_run_key != NULL;
        snprintf(e->parent_key, sizeof e->parent_key, "%s",
                 info->parent_run_key ? info->parent_run_key : "");
        e->start_ms = info->start_time_ms;
        e->end_ms = info->end_time_ms;
    }
    pthread_mutex_lock(&r->log->lock);
    if (r->log->n == r->log->cap) {
        size_t cap = r->log->cap ? r->log->cap * 2 : 64;
        event *n = realloc(r->log->ev, cap * sizeof *n);
        if (!n) {
            abort();
        }
        r->log->ev = n;
        r->log->cap = cap;
    }
    r->log->ev[r->log->n++] = *e;
    pthread_mutex_unlock(&r->log->lock);
}

static mlt_err outcome(recorder *r, ev_kind kind)
{
    mlt_err err = r->fail[kind];
    if (err == MLT_OK || r->fail_times[kind] == 0) {
        return MLT_OK;
    }
    if (r->fail_times[kind] > 0) {
        r->fail_times[kind]--;
    }
    return r->fail_msg ? mlt__fail(err, "%s", r->fail_msg) : err;
}

static mlt_err rec_on_start(const mlt_run_info *info, void *ud)
{
    event e = {.kind = EV_START};
    record(ud, &e, info);
    return outcome(ud, EV_START);
}

static mlt_err rec_on_param(const mlt_run_info *info, const char *key, const char *value, void *ud)
{
    event e = {.kind = EV_PARAM, .key = xstrdup(key), .value = xstrdup(value)};
    record(ud, &e, info);
    return outcome(ud, EV_PARAM);
}

static mlt_err rec_on_metric(const mlt_run_info *info, const char *key, double value, int64_t step,
                             int64_t timestamp_ms, void *ud)
{
    event e = {.kind = EV_METRIC,
               .key = xstrdup(key),
               .number = value,
               .step = step,
               .timestamp_ms = timestamp_ms};
    record(ud, &e, info);
    return outcome(ud, EV_METRIC);
}

static mlt_err rec_on_tag(const mlt_run_info *info, const char *key, const char *value, void *ud)
{
    event e = {.kind = EV_TAG, .key = xstrdup(key), .value = xstrdup(value)};
    record(ud, &e, info);
    return outcome(ud, EV_TAG);
}

static mlt_err rec_on_end(const mlt_run_info *info, mlt_run_status status, double duration_s,
                          void *ud)
{
    event e = {.kind = EV_END, .status = status, .duration_s = duration_s};
    record(ud, &e, info);
    return outcome(ud, EV_END);
}

static mlt_err rec_on_flush(int timeout_ms, void *ud)
{
    event e = {.kind = EV_FLUSH, .timeout_ms = timeout_ms};
    record(ud, &e, NULL);
    return outcome(ud, EV_FLUSH);
}

static void rec_on_close(void *ud)
{
    event e = {.kind = EV_CLOSE, .userdata = ud};
    record(ud, &e, NULL);
}

static const mlt_callbacks rec_callbacks = {
    .version = MLT_CALLBACKS_VERSION,
    .on_run_start = rec_on_start,
    .on_param = rec_on_param,
    .on_metric = rec_on_metric,
    .on_tag = rec_on_tag,
    .on_run_end = rec_on_end,
    .on_flush = rec_on_flush,
    .on_close = rec_on_close,
};

/* Makes recorder r's hook for kind fail with err, `times` times (< 0: always). */
static void rec_fail(recorder *r, ev_kind kind, mlt_err err, int times)
{
    r->fail[kind] = err;
    r->fail_times[kind] = times;
}

/* ---- fixture: a tracker with n recorders sharing one log ------------------------------------ */

#define MAX_REC 3

typedef struct fixture {
    evlog log;
    recorder rec[MAX_REC];
    mlt_tracker *t;
} fixture;

static void fx_init(fixture *fx, int n_rec)
{
    memset(fx, 0, sizeof *fx);
    pthread_mutex_init(&fx->log.lock, NULL);
    char err[256] = "";
    ck_assert_int_eq(mlt_tracker_new(&fx->t, NULL, err, sizeof err), MLT_OK);
    for (int i = 0; i < n_rec; i++) {
        fx->rec[i].id = i;
        fx->rec[i].log = &fx->log;
        ck_assert_int_eq(mlt_tracker_add_callbacks(fx->t, &rec_callbacks, &fx->rec[i]), MLT_OK);
    }
}

/* Closes the tracker if still open; returns what mlt_tracker_close() returned. */
static mlt_err fx_close(fixture *fx)
{
    mlt_err err = mlt_tracker_close(fx->t, 1000);
    fx->t = NULL;
    return err;
}

static void fx_free(fixture *fx)
{
    fx_close(fx);
    for (size_t i = 0; i < fx->log.n; i++) {
        free(fx->log.ev[i].run_name);
        free(fx->log.ev[i].key);
        free(fx->log.ev[i].value);
    }
    free(fx->log.ev);
    pthread_mutex_destroy(&fx->log.lock);
}

/* Events of kind seen by recorder rec (any recorder if rec < 0). */
static size_t count_ev(const fixture *fx, int rec, ev_kind kind)
{
    size_t n = 0;
    for (size_t i = 0; i < fx->log.n; i++) {
        n += fx->log.ev[i].kind == kind && (rec < 0 || fx->log.ev[i].rec == rec);
    }
    return n;
}

/* Index of the nth (from 0) event of kind seen by rec (any if < 0) about the run with run_key
 * (any run if NULL), or -1. */
static long find_ev(const fixture *fx, int rec, ev_kind kind, const char *run_key, size_t nth)
{
    for (size_t i = 0; i < fx->log.n; i++) {
        const event *e = &fx->log.ev[i];
        if (e->kind == kind && (rec < 0 || e->rec == rec) &&
            (!run_key || strcmp(e->run_key, run_key) == 0) && nth-- == 0) {
            return (long)i;
        }
    }
    return -1;
}

/* The nth event of kind for recorder rec and run run_key (NULL: any); fails the test if none. */
static const event *get_ev(const fixture *fx, int rec, ev_kind kind, const char *run_key,
                           size_t nth)
{
    long i = find_ev(fx, rec, kind, run_key, nth);
    ck_assert_msg(i >= 0, "no event %d #%zu for recorder %d, run %s", (int)kind, nth, rec,
                  run_key ? run_key : "(any)");
    return &fx->log.ev[i];
}

/* The event of kind (param, metric or tag) with key, seen by recorder 0; NULL if none. */
static const event *ev_by_key(const fixture *fx, ev_kind kind, const char *key)
{
    for (size_t i = 0; i < fx->log.n; i++) {
        const event *e = &fx->log.ev[i];
        if (e->kind == kind && e->rec == 0 && e->key && strcmp(e->key, key) == 0) {
            return e;
        }
    }
    return NULL;
}

static size_t count_by_key(const fixture *fx, ev_kind kind, const char *key)
{
    size_t n = 0;
    for (size_t i = 0; i < fx->log.n; i++) {
        const event *e = &fx->log.ev[i];
        n += e->kind == kind && e->rec == 0 && e->key && strcmp(e->key, key) == 0;
    }
    return n;
}

typedef struct keybuf {
    char s[40];
} keybuf;

/* A copy of the run's key, usable after the run is freed. */
static keybuf key_of(const mlt_run *run)
{
    keybuf k;
    ck_assert_ptr_nonnull(run);
    snprintf(k.s, sizeof k.s, "%s", mlt_run_key(run));
    return k;
}

static bool is_lower_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/* RFC 4122 version 4, as text: 8-4-4-4-12 lowercase hex digits, version 4, variant 10xx. */
static bool is_uuid4(const char *s)
{
    if (!s || strlen(s) != 36) {
        return false;
    }
    for (int i = 0; i < 36; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !is_lower_hex(s[i])) {
            return false;
        }
    }
    return s[14] == '4' && strchr("89ab", s[19]) != NULL;
}

static bool contains(const char *haystack, const char *needle)
{
    return haystack && strstr(haystack, needle) != NULL;
}

/* ---- tracker and callbacks registration ----------------------------------------------------- */

/* The header's version is the package's (configure.ac, mltrack.pc, `mltrack --version`). */
START_TEST(header_version_is_the_package_version)
{
    ck_assert_str_eq(MLT_VERSION_STRING, PACKAGE_VERSION);
    char parts[64];
    snprintf(parts, sizeof parts, "%d.%d.%d", MLT_VERSION_MAJOR, MLT_VERSION_MINOR,
             MLT_VERSION_PATCH);
    ck_assert_str_eq(parts, MLT_VERSION_STRING);
}
END_TEST

START_TEST(tracker_new_accepts_null_options)
{
    mlt_tracker *t = NULL;
    char err[256] = "";
    ck_assert_int_eq(mlt_tracker_new(&t, NULL, err, sizeof err), MLT_OK);
    ck_assert_ptr_nonnull(t);
    ck_assert_uint_eq(mlt_tracker_error_count(t), 0);
    mlt_run *run = NULL;
    ck_assert_int_eq(mlt_run_start(&run, t, "no callbacks"), MLT_OK);
    ck_assert_int_eq(mlt_log_metric(run, "m", 1.0, 0), MLT_OK);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    ck_assert_int_eq(mlt_tracker_flush(t, 0), MLT_OK);
    ck_assert_int_eq(mlt_tracker_close(t, 0), MLT_OK);
}
END_TEST

START_TEST(tracker_new_requires_out)
{
    char err[256] = "";
    ck_assert_int_eq(mlt_tracker_new(NULL, NULL, err, sizeof err), MLT_ERR_INVALID_ARG);
    ck_assert_str_ne(err, "");
    ck_assert_int_eq(mlt_tracker_new(NULL, NULL, NULL, 0), MLT_ERR_INVALID_ARG);
}
END_TEST

START_TEST(tracker_close_null_is_ok)
{
    ck_assert_int_eq(mlt_tracker_close(NULL, 0), MLT_OK);
    ck_assert_uint_eq(mlt_tracker_error_count(NULL), 0);
    ck_assert_int_eq(mlt_tracker_flush(NULL, 0), MLT_ERR_INVALID_ARG);
}
END_TEST

START_TEST(add_callbacks_rejects_unknown_version_and_null)
{
    fixture fx;
    fx_init(&fx, 0);
    recorder r = {.id = 0, .log = &fx.log};
    mlt_callbacks cb = rec_callbacks;
    cb.version = 0;
    ck_assert_int_eq(mlt_tracker_add_callbacks(fx.t, &cb, &r), MLT_ERR_INVALID_ARG);
    ck_assert_str_ne(mlt_last_error(), "");
    cb.version = MLT_CALLBACKS_VERSION + 1;
    ck_assert_int_eq(mlt_tracker_add_callbacks(fx.t, &cb, &r), MLT_ERR_INVALID_ARG);
    ck_assert_int_eq(mlt_tracker_add_callbacks(fx.t, NULL, &r), MLT_ERR_INVALID_ARG);
    ck_assert_int_eq(mlt_tracker_add_callbacks(NULL, &rec_callbacks, &r), MLT_ERR_INVALID_ARG);

    /* None of the refused structs was registered: no hook is ever called. */
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "r"), MLT_OK);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    ck_assert_int_eq(fx_close(&fx), MLT_OK);
    ck_assert_uint_eq(fx.log.n, 0);
    fx_free(&fx);
}
END_TEST

/* libgit2's rule: every version v with 0 < v <= MLT_CALLBACKS_VERSION is taken (its hooks are
 * called), version 0, negative and newer versions are refused with a message naming the version. */
START_TEST(add_callbacks_takes_versions_1_to_current_only)
{
    static const int refused[] = {0, -1, MLT_CALLBACKS_VERSION + 1, INT_MAX};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        fixture fx;
        fx_init(&fx, 0);
        recorder r = {.id = 0, .log = &fx.log};
        mlt_callbacks cb = rec_callbacks;
        cb.version = refused[i];
        ck_assert_int_eq(mlt_tracker_add_callbacks(fx.t, &cb, &r), MLT_ERR_INVALID_ARG);
        char want[64];
        snprintf(want, sizeof want, "callbacks version %d is not supported", refused[i]);
        ck_assert_msg(contains(mlt_last_error(), want), "message: %s", mlt_last_error());
        ck_assert_int_eq(fx_close(&fx), MLT_OK);
        ck_assert_uint_eq(fx.log.n, 0);
        fx_free(&fx);
    }
    for (int v = 1; v <= MLT_CALLBACKS_VERSION; v++) {
        fixture fx;
        fx_init(&fx, 0);
        recorder r = {.id = 0, .log = &fx.log};
        mlt_callbacks cb = rec_callbacks;
        cb.version = v;
        ck_assert_int_eq(mlt_tracker_add_callbacks(fx.t, &cb, &r), MLT_OK);
        mlt_run *run;
        ck_assert_int_eq(mlt_run_start(&run, fx.t, "r"), MLT_OK);
        ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
        ck_assert_int_eq(fx_close(&fx), MLT_OK);
        ck_assert_uint_eq(count_ev(&fx, 0, EV_START), 1);
        ck_assert_uint_eq(count_ev(&fx, 0, EV_END), 1);
        ck_assert_uint_eq(count_ev(&fx, 0, EV_CLOSE), 1);
        fx_free(&fx);
    }
}
END_TEST

/* A program built against version 1 of the header has a struct that ends before on_artifact:
 * the library reads no further (an exact-size copy lets ASan see a read past it) and calls
 * no hook it does not have. */
START_TEST(a_version_1_struct_is_read_only_to_its_end)
{
    fixture fx;
    fx_init(&fx, 0);
    recorder r = {.id = 0, .log = &fx.log};
    size_t v1 = offsetof(mlt_callbacks, on_artifact);
    unsigned char *buf = malloc(v1);
    ck_assert_ptr_nonnull(buf);
    memcpy(buf, &rec_callbacks, v1);
    const int one = 1;
    memcpy(buf + offsetof(mlt_callbacks, version), &one, sizeof one);
    ck_assert_int_eq(mlt_tracker_add_callbacks(fx.t, (const mlt_callbacks *)(void *)buf, &r),
                     MLT_OK);
    free(buf);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "r"), MLT_OK);
    ck_assert_int_eq(mlt_log_artifact_bytes(run, "a.txt", "x", 1), MLT_OK);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    ck_assert_int_eq(fx_close(&fx), MLT_OK);
    ck_assert_uint_eq(count_ev(&fx, 0, EV_START), 1);
    fx_free(&fx);
}
END_TEST

START_TEST(add_callbacks_accepts_all_null_hooks)
{
    fixture fx;
    fx_init(&fx, 0);
    const mlt_callbacks empty = {.version = MLT_CALLBACKS_VERSION};
    ck_assert_int_eq(mlt_tracker_add_callbacks(fx.t, &empty, NULL), MLT_OK);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "r"), MLT_OK);
    ck_assert_int_eq(mlt_log_param(run, "p", "v"), MLT_OK);
    ck_assert_int_eq(mlt_log_metric(run, "m", 1, 0), MLT_OK);
    ck_assert_int_eq(mlt_set_tag(run, "t", "v"), MLT_OK);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    ck_assert_int_eq(fx_close(&fx), MLT_OK);
    fx_free(&fx);
}
END_TEST

START_TEST(callbacks_see_every_event_in_registration_order)
{
    fixture fx;
    fx_init(&fx, 3);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "ordered"), MLT_OK);
    ck_assert_int_eq(mlt_log_param(run, "p", "1"), MLT_OK);
    ck_assert_int_eq(mlt_log_metric(run, "m", 2.0, 3), MLT_OK);
    ck_assert_int_eq(mlt_set_tag(run, "t", "x"), MLT_OK);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    ck_assert_int_eq(mlt_tracker_flush(fx.t, 100), MLT_OK);
    ck_assert_int_eq(fx_close(&fx), MLT_OK);

    /* start, param, metric, tag, end, flush (ours), flush (close), close: 8 events x 3. */
    static const ev_kind order[] = {EV_START, EV_PARAM, EV_METRIC, EV_TAG,
                                    EV_END,   EV_FLUSH, EV_FLUSH,  EV_CLOSE};
    size_t n = sizeof order / sizeof order[0];
    ck_assert_uint_eq(fx.log.n, n * 3);
    for (size_t i = 0; i < n; i++) {
        for (int r = 0; r < 3; r++) {
            const event *e = &fx.log.ev[i * 3 + (size_t)r];
            ck_assert_int_eq(e->kind, order[i]);
            ck_assert_int_eq(e->rec, r);
        }
    }
    fx_free(&fx);
}
END_TEST

START_TEST(add_callbacks_after_first_run_is_state_error)
{
    fixture fx;
    fx_init(&fx, 1);
    recorder late = {.id = 1, .log = &fx.log};
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "first"), MLT_OK);
    ck_assert_int_eq(mlt_tracker_add_callbacks(fx.t, &rec_callbacks, &late), MLT_ERR_STATE);
    ck_assert_str_ne(mlt_last_error(), "");
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    /* Still refused once that run is over: the list froze at the first start. */
    ck_assert_int_eq(mlt_tracker_add_callbacks(fx.t, &rec_callbacks, &late), MLT_ERR_STATE);
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "second"), MLT_OK);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    ck_assert_int_eq(fx_close(&fx), MLT_OK);
    ck_assert_uint_eq(count_ev(&fx, 1, EV_START) + count_ev(&fx, 1, EV_CLOSE), 0);
    ck_assert_uint_eq(count_ev(&fx, 0, EV_START), 2);
    fx_free(&fx);
}
END_TEST

START_TEST(add_callbacks_still_allowed_after_refused_run_name)
{
    /* A start refused by validation did not start a run. */
    fixture fx;
    fx_init(&fx, 1);
    char *long_name = mlt_test_repeat("n", 251);
    mlt_run *run = NULL;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, long_name), MLT_ERR_VALUE_TOO_LONG);
    recorder second = {.id = 1, .log = &fx.log};
    ck_assert_int_eq(mlt_tracker_add_callbacks(fx.t, &rec_callbacks, &second), MLT_OK);
    free(long_name);
    fx_free(&fx);
}
END_TEST

START_TEST(on_close_called_once_with_userdata_after_flush)
{
    fixture fx;
    fx_init(&fx, 2);
    ck_assert_int_eq(fx_close(&fx), MLT_OK);
    ck_assert_uint_eq(count_ev(&fx, 0, EV_CLOSE), 1);
    ck_assert_uint_eq(count_ev(&fx, 1, EV_CLOSE), 1);
    ck_assert_ptr_eq(get_ev(&fx, 0, EV_CLOSE, NULL, 0)->userdata, &fx.rec[0]);
    ck_assert_ptr_eq(get_ev(&fx, 1, EV_CLOSE, NULL, 0)->userdata, &fx.rec[1]);
    /* flush, flush, close, close */
    ck_assert_uint_eq(fx.log.n, 4);
    ck_assert_int_eq(fx.log.ev[1].kind, EV_FLUSH);
    ck_assert_int_eq(fx.log.ev[2].kind, EV_CLOSE);
    ck_assert_int_eq(fx.log.ev[2].rec, 0);
    fx_free(&fx);
}
END_TEST

START_TEST(flush_passes_timeout_to_callbacks)
{
    fixture fx;
    fx_init(&fx, 1);
    ck_assert_int_eq(mlt_tracker_flush(fx.t, 5000), MLT_OK);
    ck_assert_int_eq(mlt_tracker_flush(fx.t, -1), MLT_OK);
    ck_assert_int_eq(mlt_tracker_flush(fx.t, 0), MLT_OK);
    int first = get_ev(&fx, 0, EV_FLUSH, NULL, 0)->timeout_ms;
    ck_assert_msg(first <= 5000 && first >= 4000, "on_flush got %d for 5000", first);
    ck_assert_int_lt(get_ev(&fx, 0, EV_FLUSH, NULL, 1)->timeout_ms, 0);
    ck_assert_int_eq(get_ev(&fx, 0, EV_FLUSH, NULL, 2)->timeout_ms, 0);
    fx_free(&fx);
}
END_TEST

START_TEST(close_flushes_with_its_timeout)
{
    fixture fx;
    fx_init(&fx, 1);
    ck_assert_int_eq(mlt_tracker_close(fx.t, 3000), MLT_OK);
    fx.t = NULL;
    int got = get_ev(&fx, 0, EV_FLUSH, NULL, 0)->timeout_ms;
    ck_assert_msg(got <= 3000 && got >= 2000, "on_flush got %d for 3000", got);
    fx_free(&fx);
}
END_TEST

START_TEST(failing_flush_returns_first_error_and_flushes_the_rest)
{
    fixture fx;
    fx_init(&fx, 3);
    fx.rec[0].fail_msg = "disk full";
    rec_fail(&fx.rec[0], EV_FLUSH, MLT_ERR_IO, 1);
    rec_fail(&fx.rec[1], EV_FLUSH, MLT_ERR_NETWORK, 1);
    ck_assert_int_eq(mlt_tracker_flush(fx.t, 100), MLT_ERR_IO);
    ck_assert_str_eq(mlt_last_error(), "disk full");
    ck_assert_uint_eq(count_ev(&fx, -1, EV_FLUSH), 3);
    ck_assert_uint_eq(mlt_tracker_error_count(fx.t), 1);
    fx_free(&fx);
}
END_TEST

START_TEST(close_returns_flush_error_and_still_closes)
{
    fixture fx;
    fx_init(&fx, 2);
    rec_fail(&fx.rec[1], EV_FLUSH, MLT_ERR_TIMEOUT, -1);
    ck_assert_int_eq(fx_close(&fx), MLT_ERR_TIMEOUT);
    ck_assert_uint_eq(count_ev(&fx, -1, EV_CLOSE), 2);
    fx_free(&fx);
}
END_TEST

/* ---- runs ----------------------------------------------------------------------------------- */

START_TEST(run_start_gives_uuid4_key_and_copies_name)
{
    fixture fx;
    fx_init(&fx, 1);
    char name[32] = "train";
    mlt_run *a = NULL;
    mlt_run *b = NULL;
    int64_t before = mlt_test_wall_ms();
    ck_assert_int_eq(mlt_run_start(&a, fx.t, name), MLT_OK);
    int64_t after = mlt_test_wall_ms();
    ck_assert_int_eq(mlt_run_start(&b, fx.t, name), MLT_OK);
    snprintf(name, sizeof name, "changed");

    ck_assert_msg(is_uuid4(mlt_run_key(a)), "not a UUIDv4: %s", mlt_run_key(a));
    ck_assert_msg(is_uuid4(mlt_run_key(b)), "not a UUIDv4: %s", mlt_run_key(b));
    ck_assert_str_ne(mlt_run_key(a), mlt_run_key(b));
    ck_assert_str_eq(mlt_run_name(a), "train");
    ck_assert_ptr_ne(mlt_run_name(a), name);
    ck_assert_ptr_eq(mlt_run_tracker(a), fx.t);
    ck_assert_ptr_null(mlt_run_parent(a));
    ck_assert_ptr_null(mlt_run_id(a));
    ck_assert_int_eq(mlt_run_failed(a), 0);

    const event *e = get_ev(&fx, 0, EV_START, mlt_run_key(a), 0);
    ck_assert_ptr_eq(e->run, a);
    ck_assert_str_eq(e->run_name, "train");
    ck_assert(!e->has_parent);
    ck_assert_int_ge(e->start_ms, before);
    ck_assert_int_le(e->start_ms, after);
    ck_assert_int_eq(e->end_ms, 0);
    ck_assert_ptr_null(e->active); /* mlt_run_start does not make a run active */
    ck_assert_ptr_null(mlt_active_run());

    ck_assert_int_eq(mlt_run_end(a, MLT_RUN_FINISHED), MLT_OK);
    ck_assert_int_eq(mlt_run_end(b, MLT_RUN_FINISHED), MLT_OK);
    fx_free(&fx);
}
END_TEST

START_TEST(run_keys_are_unique)
{
    fixture fx;
    fx_init(&fx, 0);
    enum { N = 200 };
    keybuf keys[N];
    for (int i = 0; i < N; i++) {
        mlt_run *run;
        ck_assert_int_eq(mlt_run_start(&run, fx.t, NULL), MLT_OK);
        keys[i] = key_of(run);
        ck_assert(is_uuid4(keys[i].s));
        ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    }
    for (int i = 0; i < N; i++) {
        for (int j = i + 1; j < N; j++) {
            ck_assert_str_ne(keys[i].s, keys[j].s);
        }
    }
    fx_free(&fx);
}
END_TEST

START_TEST(run_start_accepts_null_and_empty_names)
{
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *unnamed;
    mlt_run *empty;
    ck_assert_int_eq(mlt_run_start(&unnamed, fx.t, NULL), MLT_OK);
    ck_assert_int_eq(mlt_run_start(&empty, fx.t, ""), MLT_OK);
    ck_assert_ptr_null(mlt_run_name(unnamed));
    ck_assert_str_eq(mlt_run_name(empty), "");
    ck_assert_ptr_null(get_ev(&fx, 0, EV_START, mlt_run_key(unnamed), 0)->run_name);
    ck_assert_str_eq(get_ev(&fx, 0, EV_START, mlt_run_key(empty), 0)->run_name, "");
    ck_assert_int_eq(mlt_run_end(unnamed, MLT_RUN_FINISHED), MLT_OK);
    ck_assert_int_eq(mlt_run_end(empty, MLT_RUN_FINISHED), MLT_OK);
    fx_free(&fx);
}
END_TEST

START_TEST(run_start_refuses_bad_names_without_callbacks)
{
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *const sentinel = (mlt_run *)&fx;
    mlt_run *run = sentinel;
    char *max_name = mlt_test_repeat("\xc3\xa9", 250); /* 250 code points, 500 bytes */
    char *long_name = mlt_test_repeat("n", 251);

    ck_assert_int_eq(mlt_run_start(&run, fx.t, long_name), MLT_ERR_VALUE_TOO_LONG);
    ck_assert_ptr_eq(run, sentinel);
    ck_assert_str_ne(mlt_last_error(), "");
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "bad \xff name"), MLT_ERR_INVALID_VALUE);
    ck_assert_ptr_eq(run, sentinel);
    ck_assert_uint_eq(fx.log.n, 0);
    ck_assert_uint_eq(mlt_tracker_error_count(fx.t), 2);

    ck_assert_int_eq(mlt_run_start(&run, fx.t, max_name), MLT_OK);
    ck_assert_str_eq(mlt_run_name(run), max_name);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    free(max_name);
    free(long_name);
    fx_free(&fx);
}
END_TEST

START_TEST(run_start_requires_tracker_and_out)
{
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *run = NULL;
    ck_assert_int_eq(mlt_run_start(&run, NULL, "x"), MLT_ERR_INVALID_ARG);
    ck_assert_ptr_null(run);
    ck_assert_int_eq(mlt_run_start(NULL, fx.t, "x"), MLT_ERR_INVALID_ARG);
    ck_assert_uint_eq(count_ev(&fx, -1, EV_START), 0);
    fx_free(&fx);
}
END_TEST

START_TEST(child_runs_carry_parent_key)
{
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *parent;
    mlt_run *child;
    mlt_run *grandchild;
    ck_assert_int_eq(mlt_run_start(&parent, fx.t, "parent"), MLT_OK);
    ck_assert_int_eq(mlt_run_start_child(&child, parent, "child"), MLT_OK);
    ck_assert_int_eq(mlt_run_start_child(&grandchild, child, "grandchild"), MLT_OK);
    ck_assert_ptr_eq(mlt_run_parent(child), parent);
    ck_assert_ptr_eq(mlt_run_parent(grandchild), child);
    ck_assert_ptr_eq(mlt_run_tracker(grandchild), fx.t);
    ck_assert(is_uuid4(mlt_run_key(child)));

    const event *e = get_ev(&fx, 0, EV_START, mlt_run_key(child), 0);
    ck_assert(e->has_parent);
    ck_assert_str_eq(e->parent_key, mlt_run_key(parent));
    ck_assert_str_eq(e->run_name, "child");
    e = get_ev(&fx, 0, EV_START, mlt_run_key(grandchild), 0);
    ck_assert_str_eq(e->parent_key, mlt_run_key(child));

    /* Every event of a child carries the parent's key. */
    ck_assert_int_eq(mlt_log_metric(child, "m", 1, 0), MLT_OK);
    ck_assert_str_eq(get_ev(&fx, 0, EV_METRIC, mlt_run_key(child), 0)->parent_key,
                     mlt_run_key(parent));
    keybuf pk = key_of(parent);
    keybuf ck = key_of(child);
    ck_assert_int_eq(mlt_run_end(grandchild, MLT_RUN_FINISHED), MLT_OK);
    ck_assert_int_eq(mlt_run_end(child, MLT_RUN_FINISHED), MLT_OK);
    ck_assert_int_eq(mlt_run_end(parent, MLT_RUN_FINISHED), MLT_OK);
    e = get_ev(&fx, 0, EV_END, ck.s, 0);
    ck_assert(e->has_parent);
    ck_assert_str_eq(e->parent_key, pk.s);
    ck_assert_int_eq(e->status, MLT_RUN_FINISHED);
    fx_free(&fx);
}
END_TEST

START_TEST(run_end_reports_status_end_time_and_duration)
{
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "timed"), MLT_OK);
    keybuf k = key_of(run);
    struct timespec pause = {0, 20 * 1000000};
    nanosleep(&pause, NULL);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    int64_t after = mlt_test_wall_ms();

    const event *s = get_ev(&fx, 0, EV_START, k.s, 0);
    const event *e = get_ev(&fx, 0, EV_END, k.s, 0);
    ck_assert_int_eq(e->status, MLT_RUN_FINISHED);
    ck_assert_int_eq(e->start_ms, s->start_ms);
    ck_assert_int_ge(e->end_ms, e->start_ms + 15);
    ck_assert_int_le(e->end_ms, after);
    ck_assert_msg(e->duration_s >= 0.015 && e->duration_s < 10.0, "duration %f", e->duration_s);
    ck_assert_str_eq(e->run_name, "timed");
    /* Ended once: closing the tracker does not end it again. */
    ck_assert_int_eq(fx_close(&fx), MLT_OK);
    ck_assert_uint_eq(count_ev(&fx, 0, EV_END), 1);
    fx_free(&fx);
}
END_TEST

START_TEST(run_end_ends_open_children_first_as_killed)
{
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *parent;
    mlt_run *c1;
    mlt_run *c2;
    mlt_run *gc;
    ck_assert_int_eq(mlt_run_start(&parent, fx.t, "parent"), MLT_OK);
    ck_assert_int_eq(mlt_run_start_child(&c1, parent, "c1"), MLT_OK);
    ck_assert_int_eq(mlt_run_start_child(&c2, parent, "c2"), MLT_OK);
    ck_assert_int_eq(mlt_run_start_child(&gc, c1, "gc"), MLT_OK);
    keybuf kp = key_of(parent), k1 = key_of(c1), k2 = key_of(c2), kg = key_of(gc);

    ck_assert_int_eq(mlt_run_end(parent, MLT_RUN_FINISHED), MLT_OK);
    ck_assert_uint_eq(count_ev(&fx, 0, EV_END), 4);
    long ip = find_ev(&fx, 0, EV_END, kp.s, 0);
    long i1 = find_ev(&fx, 0, EV_END, k1.s, 0);
    long i2 = find_ev(&fx, 0, EV_END, k2.s, 0);
    long ig = find_ev(&fx, 0, EV_END, kg.s, 0);
    ck_assert_int_lt(ig, i1);
    ck_assert_int_lt(i1, ip);
    ck_assert_int_lt(i2, ip);
    ck_assert_int_eq(fx.log.ev[ig].status, MLT_RUN_KILLED);
    ck_assert_int_eq(fx.log.ev[i1].status, MLT_RUN_KILLED);
    ck_assert_int_eq(fx.log.ev[i2].status, MLT_RUN_KILLED);
    ck_assert_int_eq(fx.log.ev[ip].status, MLT_RUN_FINISHED);
    ck_assert_str_eq(fx.log.ev[ig].parent_key, k1.s);
    ck_assert_str_eq(fx.log.ev[i1].parent_key, kp.s);
    /* Nothing is left open for the close to end. */
    ck_assert_int_eq(fx_close(&fx), MLT_OK);
    ck_assert_uint_eq(count_ev(&fx, 0, EV_END), 4);
    fx_free(&fx);
}
END_TEST

START_TEST(ended_child_is_not_ended_again_with_parent)
{
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *parent;
    mlt_run *a;
    mlt_run *b;
    ck_assert_int_eq(mlt_run_start(&parent, fx.t, "parent"), MLT_OK);
    ck_assert_int_eq(mlt_run_start_child(&a, parent, "a"), MLT_OK);
    ck_assert_int_eq(mlt_run_start_child(&b, parent, "b"), MLT_OK);
    keybuf ka = key_of(a), kb = key_of(b);
    ck_assert_int_eq(mlt_run_end(a, MLT_RUN_FINISHED), MLT_OK);
    ck_assert_int_eq(mlt_run_end(parent, MLT_RUN_FINISHED), MLT_OK);
    ck_assert_uint_eq(count_ev(&fx, 0, EV_END), 3);
    ck_assert_int_eq(get_ev(&fx, 0, EV_END, ka.s, 0)->status, MLT_RUN_FINISHED);
    ck_assert_int_eq(get_ev(&fx, 0, EV_END, kb.s, 0)->status, MLT_RUN_KILLED);
    fx_free(&fx);
}
END_TEST

START_TEST(tracker_close_kills_open_runs_children_first_then_flushes)
{
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *a;
    mlt_run *b;
    mlt_run *child;
    ck_assert_int_eq(mlt_run_start(&a, fx.t, "a"), MLT_OK);
    ck_assert_int_eq(mlt_run_start(&b, fx.t, "b"), MLT_OK);
    ck_assert_int_eq(mlt_run_start_child(&child, a, "child"), MLT_OK);
    keybuf ka = key_of(a), kb = key_of(b), kc = key_of(child);

    ck_assert_int_eq(fx_close(&fx), MLT_OK);
    ck_assert_uint_eq(count_ev(&fx, 0, EV_END), 3);
    long ia = find_ev(&fx, 0, EV_END, ka.s, 0);
    long ib = find_ev(&fx, 0, EV_END, kb.s, 0);
    long ic = find_ev(&fx, 0, EV_END, kc.s, 0);
    long iflush = find_ev(&fx, 0, EV_FLUSH, NULL, 0);
    long iclose = find_ev(&fx, 0, EV_CLOSE, NULL, 0);
    ck_assert_int_lt(ic, ia);
    ck_assert_int_lt(ia, iflush);
    ck_assert_int_lt(ib, iflush);
    ck_assert_int_lt(iflush, iclose);
    ck_assert_int_eq(fx.log.ev[ia].status, MLT_RUN_KILLED);
    ck_assert_int_eq(fx.log.ev[ib].status, MLT_RUN_KILLED);
    ck_assert_int_eq(fx.log.ev[ic].status, MLT_RUN_KILLED);
    fx_free(&fx);
}
END_TEST

START_TEST(run_fail_then_finished_ends_failed)
{
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "failing"), MLT_OK);
    keybuf k = key_of(run);
    ck_assert_int_eq(mlt_run_failed(run), 0);
    mlt_run_fail(run);
    mlt_run_fail(run);
    ck_assert_int_eq(mlt_run_failed(run), 1);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    ck_assert_int_eq(get_ev(&fx, 0, EV_END, k.s, 0)->status, MLT_RUN_FAILED);
    fx_free(&fx);
}
END_TEST

START_TEST(run_end_status_failed_and_killed_pass_through)
{
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *f;
    mlt_run *k;
    mlt_run *mk;
    ck_assert_int_eq(mlt_run_start(&f, fx.t, "f"), MLT_OK);
    ck_assert_int_eq(mlt_run_start(&k, fx.t, "k"), MLT_OK);
    ck_assert_int_eq(mlt_run_start(&mk, fx.t, "marked-killed"), MLT_OK);
    keybuf kf = key_of(f), kk = key_of(k), kmk = key_of(mk);
    mlt_run_fail(mk); /* only FINISHED turns into FAILED */
    ck_assert_int_eq(mlt_run_end(f, MLT_RUN_FAILED), MLT_OK);
    ck_assert_int_eq(mlt_run_end(k, MLT_RUN_KILLED), MLT_OK);
    ck_assert_int_eq(mlt_run_end(mk, MLT_RUN_KILLED), MLT_OK);
    ck_assert_int_eq(get_ev(&fx, 0, EV_END, kf.s, 0)->status, MLT_RUN_FAILED);
    ck_assert_int_eq(get_ev(&fx, 0, EV_END, kk.s, 0)->status, MLT_RUN_KILLED);
    ck_assert_int_eq(get_ev(&fx, 0, EV_END, kmk.s, 0)->status, MLT_RUN_KILLED);
    fx_free(&fx);
}
END_TEST

START_TEST(run_status_names_are_mlflow_names)
{
    ck_assert_str_eq(mlt_run_status_name(MLT_RUN_FINISHED), "FINISHED");
    ck_assert_str_eq(mlt_run_status_name(MLT_RUN_FAILED), "FAILED");
    ck_assert_str_eq(mlt_run_status_name(MLT_RUN_KILLED), "KILLED");
    ck_assert_str_eq(mlt_run_status_name((mlt_run_status)42), "UNKNOWN");
}
END_TEST

/* ---- failing callbacks ---------------------------------------------------------------------- */

START_TEST(failing_run_start_returns_error_and_kills_for_earlier_callbacks)
{
    fixture fx;
    fx_init(&fx, 3);
    rec_fail(&fx.rec[1], EV_START, MLT_ERR_NETWORK, -1);
    mlt_run *const sentinel = (mlt_run *)&fx;
    mlt_run *run = sentinel;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "doomed"), MLT_ERR_NETWORK);
    ck_assert_ptr_eq(run, sentinel);
    ck_assert_uint_eq(mlt_tracker_error_count(fx.t), 1);
    ck_assert_str_ne(mlt_last_error(), "");

    /* rec0 saw the start and is told it ended KILLED; rec1 failed it; rec2 never heard of it. */
    ck_assert_uint_eq(fx.log.n, 3);
    ck_assert_int_eq(fx.log.ev[0].kind, EV_START);
    ck_assert_int_eq(fx.log.ev[0].rec, 0);
    ck_assert_int_eq(fx.log.ev[1].kind, EV_START);
    ck_assert_int_eq(fx.log.ev[1].rec, 1);
    ck_assert_int_eq(fx.log.ev[2].kind, EV_END);
    ck_assert_int_eq(fx.log.ev[2].rec, 0);
    ck_assert_int_eq(fx.log.ev[2].status, MLT_RUN_KILLED);
    ck_assert_str_eq(fx.log.ev[2].run_key, fx.log.ev[0].run_key);
    ck_assert_str_eq(fx.log.ev[2].run_name, "doomed");
    ck_assert_int_ge(fx.log.ev[2].end_ms, fx.log.ev[2].start_ms);

    /* The run is not open: closing the tracker ends nothing. */
    ck_assert_int_eq(fx_close(&fx), MLT_OK);
    ck_assert_uint_eq(count_ev(&fx, -1, EV_END), 1);
    fx_free(&fx);
}
END_TEST

START_TEST(failing_run_start_leaves_callback_message)
{
    fixture fx;
    fx_init(&fx, 2);
    fx.rec[0].fail_msg = "server said no";
    rec_fail(&fx.rec[0], EV_START, MLT_ERR_REJECTED, -1);
    mlt_run *run = NULL;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "x"), MLT_ERR_REJECTED);
    ck_assert_ptr_null(run);
    ck_assert_str_eq(mlt_last_error(), "server said no");
    /* The first callback failed: nobody saw the start, nobody is told of an end. */
    ck_assert_uint_eq(fx.log.n, 1);
    fx_free(&fx);
}
END_TEST

START_TEST(failing_run_start_of_child_leaves_parent_open)
{
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *parent;
    ck_assert_int_eq(mlt_run_start(&parent, fx.t, "parent"), MLT_OK);
    keybuf kp = key_of(parent);
    rec_fail(&fx.rec[0], EV_START, MLT_ERR_CALLBACK, 1);
    mlt_run *child = NULL;
    ck_assert_int_eq(mlt_run_start_child(&child, parent, "child"), MLT_ERR_CALLBACK);
    ck_assert_ptr_null(child);
    ck_assert_int_eq(mlt_log_metric(parent, "m", 1, 0), MLT_OK);
    ck_assert_int_eq(mlt_run_end(parent, MLT_RUN_FINISHED), MLT_OK);
    ck_assert_uint_eq(count_ev(&fx, 0, EV_END), 1);
    ck_assert_int_eq(get_ev(&fx, 0, EV_END, kp.s, 0)->status, MLT_RUN_FINISHED);
    fx_free(&fx);
}
END_TEST

START_TEST(failing_metric_returns_first_error_and_calls_the_rest)
{
    fixture fx;
    fx_init(&fx, 3);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "r"), MLT_OK);
    fx.rec[0].fail_msg = "first callback broke";
    fx.rec[1].fail_msg = "second callback broke";
    rec_fail(&fx.rec[0], EV_METRIC, MLT_ERR_IO, -1);
    rec_fail(&fx.rec[1], EV_METRIC, MLT_ERR_NETWORK, -1);
    ck_assert_int_eq(mlt_log_metric(run, "loss", 0.5, 1), MLT_ERR_IO);
    ck_assert_str_eq(mlt_last_error(), "first callback broke");
    ck_assert_uint_eq(count_ev(&fx, 0, EV_METRIC), 1);
    ck_assert_uint_eq(count_ev(&fx, 1, EV_METRIC), 1);
    ck_assert_uint_eq(count_ev(&fx, 2, EV_METRIC), 1);
    ck_assert_uint_eq(mlt_tracker_error_count(fx.t), 1);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    fx_free(&fx);
}
END_TEST

START_TEST(failing_later_callback_message_is_kept_over_earlier_success)
{
    fixture fx;
    fx_init(&fx, 3);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "r"), MLT_OK);
    fx.rec[1].fail_msg = "only the middle one broke";
    rec_fail(&fx.rec[1], EV_TAG, MLT_ERR_SERVER, -1);
    ck_assert_int_eq(mlt_set_tag(run, "t", "v"), MLT_ERR_SERVER);
    ck_assert_str_eq(mlt_last_error(), "only the middle one broke");
    ck_assert_uint_eq(count_ev(&fx, 2, EV_TAG), 1);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    fx_free(&fx);
}
END_TEST

START_TEST(failing_hook_without_message_gets_generic_message_naming_hook)
{
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "r"), MLT_OK);
    rec_fail(&fx.rec[0], EV_METRIC, MLT_ERR_CALLBACK, -1);
    rec_fail(&fx.rec[0], EV_PARAM, MLT_ERR_CALLBACK, -1);
    rec_fail(&fx.rec[0], EV_TAG, MLT_ERR_CALLBACK, -1);

    /* A stale message from an earlier failure must not be passed off as the callback's. */
    ck_assert_int_eq(mlt_log_metric(run, "bad//key", 1, 0), MLT_ERR_INVALID_KEY);
    ck_assert_int_eq(mlt_log_metric(run, "m", 1, 0), MLT_ERR_CALLBACK);
    ck_assert_msg(contains(mlt_last_error(), "on_metric"), "message: '%s'", mlt_last_error());
    ck_assert_int_eq(mlt_log_param(run, "p", "v"), MLT_ERR_CALLBACK);
    ck_assert_msg(contains(mlt_last_error(), "on_param"), "message: '%s'", mlt_last_error());
    ck_assert_int_eq(mlt_set_tag(run, "t", "v"), MLT_ERR_CALLBACK);
    ck_assert_msg(contains(mlt_last_error(), "on_tag"), "message: '%s'", mlt_last_error());

    rec_fail(&fx.rec[0], EV_END, MLT_ERR_CALLBACK, -1);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_ERR_CALLBACK);
    ck_assert_msg(contains(mlt_last_error(), "end"), "message: '%s'", mlt_last_error());

    rec_fail(&fx.rec[0], EV_START, MLT_ERR_CALLBACK, -1);
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "r2"), MLT_ERR_CALLBACK);
    ck_assert_msg(contains(mlt_last_error(), "start"), "message: '%s'", mlt_last_error());

    rec_fail(&fx.rec[0], EV_FLUSH, MLT_ERR_CALLBACK, 1);
    ck_assert_int_eq(mlt_tracker_flush(fx.t, 0), MLT_ERR_CALLBACK);
    ck_assert_msg(contains(mlt_last_error(), "flush"), "message: '%s'", mlt_last_error());
    fx_free(&fx);
}
END_TEST

START_TEST(failing_run_end_still_ends_and_frees_the_run)
{
    fixture fx;
    fx_init(&fx, 2);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "r"), MLT_OK);
    rec_fail(&fx.rec[0], EV_END, MLT_ERR_NETWORK, -1);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_ERR_NETWORK);
    ck_assert_uint_eq(count_ev(&fx, 1, EV_END), 1);
    ck_assert_uint_eq(mlt_tracker_error_count(fx.t), 1);
    ck_assert_int_eq(fx_close(&fx), MLT_OK);
    ck_assert_uint_eq(count_ev(&fx, -1, EV_END), 2);
    fx_free(&fx);
}
END_TEST

START_TEST(run_end_returns_child_end_error)
{
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *parent;
    mlt_run *child;
    ck_assert_int_eq(mlt_run_start(&parent, fx.t, "parent"), MLT_OK);
    ck_assert_int_eq(mlt_run_start_child(&child, parent, "child"), MLT_OK);
    rec_fail(&fx.rec[0], EV_END, MLT_ERR_SERVER, 1); /* only the child's end fails */
    ck_assert_int_eq(mlt_run_end(parent, MLT_RUN_FINISHED), MLT_ERR_SERVER);
    ck_assert_uint_eq(count_ev(&fx, 0, EV_END), 2);
    fx_free(&fx);
}
END_TEST

START_TEST(tracker_close_returns_error_of_killed_run)
{
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "open"), MLT_OK);
    rec_fail(&fx.rec[0], EV_END, MLT_ERR_SERVER, -1);
    ck_assert_int_eq(fx_close(&fx), MLT_ERR_SERVER);
    ck_assert_uint_eq(count_ev(&fx, 0, EV_END), 1);
    ck_assert_uint_eq(count_ev(&fx, 0, EV_CLOSE), 1);
    fx_free(&fx);
}
END_TEST

/* ---- validation ----------------------------------------------------------------------------- */

/* Asserts that call failed with code, dispatched nothing and named `named` in mlt_last_error. */
#define ASSERT_REFUSED(fx, call, code, named)                                                      \
    do {                                                                                           \
        size_t n_before_ = (fx)->log.n;                                                            \
        ck_assert_int_eq((call), (code));                                                          \
        ck_assert_uint_eq((fx)->log.n, n_before_);                                                 \
        ck_assert_msg(contains(mlt_last_error(), (named)), "'%s' not named in '%s'", (named),      \
                      mlt_last_error());                                                           \
    } while (0)

START_TEST(invalid_keys_are_refused_naming_the_key)
{
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "r"), MLT_OK);
    ASSERT_REFUSED(&fx, mlt_log_param(run, "a//b", "v"), MLT_ERR_INVALID_KEY, "a//b");
    ASSERT_REFUSED(&fx, mlt_log_metric(run, "lo$$", 1.0, 0), MLT_ERR_INVALID_KEY, "lo$$");
    ASSERT_REFUSED(&fx, mlt_log_metric_at(run, "/abs", 1.0, 0, 1), MLT_ERR_INVALID_KEY, "/abs");
    ASSERT_REFUSED(&fx, mlt_set_tag(run, "../up", "v"), MLT_ERR_INVALID_KEY, "../up");
    ASSERT_REFUSED(&fx, mlt_log_param(run, "", "v"), MLT_ERR_INVALID_KEY, "param key");
    ASSERT_REFUSED(&fx, mlt_log_param(run, "trailing/", "v"), MLT_ERR_INVALID_KEY, "trailing/");

    char *long_key = mlt_test_repeat("k", 251);
    ASSERT_REFUSED(&fx, mlt_log_metric(run, long_key, 1.0, 0), MLT_ERR_VALUE_TOO_LONG, "kkkk");
    ASSERT_REFUSED(&fx, mlt_log_param(run, long_key, "v"), MLT_ERR_VALUE_TOO_LONG, "kkkk");
    ASSERT_REFUSED(&fx, mlt_set_tag(run, long_key, "v"), MLT_ERR_VALUE_TOO_LONG, "kkkk");
    long_key[250] = '\0';
    ck_assert_int_eq(mlt_log_metric(run, long_key, 1.0, 0), MLT_OK);
    free(long_key);

    ASSERT_REFUSED(&fx, mlt_log_param(run, NULL, "v"), MLT_ERR_INVALID_ARG, "key");
    ASSERT_REFUSED(&fx, mlt_log_param(run, "k", NULL), MLT_ERR_INVALID_ARG, "'k'");
    ASSERT_REFUSED(&fx, mlt_set_tag(run, "k", NULL), MLT_ERR_INVALID_ARG, "'k'");
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    fx_free(&fx);
}
END_TEST

START_TEST(too_long_values_are_refused_naming_the_key)
{
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "r"), MLT_OK);
    char *param_max = mlt_test_repeat("\xe6\x97\xa5", 6000); /* code points count, not bytes */
    char *param_over = mlt_test_repeat("v", 6001);
    char *tag_max = mlt_test_repeat("\xc3\xa9", 8000);
    char *tag_over = mlt_test_repeat("v", 8001);
    ASSERT_REFUSED(&fx, mlt_log_param(run, "big_param", param_over), MLT_ERR_VALUE_TOO_LONG,
                   "big_param");
    ASSERT_REFUSED(&fx, mlt_set_tag(run, "big_tag", tag_over), MLT_ERR_VALUE_TOO_LONG, "big_tag");
    ck_assert_int_eq(mlt_log_param(run, "big_param", param_max), MLT_OK);
    ck_assert_int_eq(mlt_set_tag(run, "big_tag", tag_max), MLT_OK);
    ck_assert_str_eq(ev_by_key(&fx, EV_PARAM, "big_param")->value, param_max);
    ck_assert_str_eq(ev_by_key(&fx, EV_TAG, "big_tag")->value, tag_max);
    free(param_max);
    free(param_over);
    free(tag_max);
    free(tag_over);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    fx_free(&fx);
}
END_TEST

START_TEST(invalid_utf8_is_refused_naming_the_key)
{
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "r"), MLT_OK);
    ASSERT_REFUSED(&fx, mlt_log_param(run, "p_utf", "bad \xc0\xaf byte"), MLT_ERR_INVALID_VALUE,
                   "p_utf");
    ASSERT_REFUSED(&fx, mlt_set_tag(run, "t_utf", "\xed\xa0\x80"), MLT_ERR_INVALID_VALUE, "t_utf");
    ASSERT_REFUSED(&fx, mlt_log_metric(run, "m_utf\xff", 1.0, 0), MLT_ERR_INVALID_VALUE, "m_utf");
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    fx_free(&fx);
}
END_TEST

START_TEST(negative_timestamp_is_refused_without_dispatch)
{
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "r"), MLT_OK);
    size_t before = fx.log.n;
    ck_assert_int_eq(mlt_log_metric_at(run, "loss", 1.0, 0, -1), MLT_ERR_INVALID_VALUE);
    ck_assert_int_eq(mlt_log_metric_at(run, "loss", 1.0, 0, INT64_MIN), MLT_ERR_INVALID_VALUE);
    ck_assert_uint_eq(fx.log.n, before);
    ck_assert_uint_eq(mlt_tracker_error_count(fx.t), 2);
    ck_assert_int_eq(mlt_log_metric_at(run, "loss", 1.0, 0, 0), MLT_OK);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    fx_free(&fx);
}
END_TEST

START_TEST(negative_timestamp_message_names_the_key)
{
    /* mlt_log_metric: "Errors as mlt_log_param()", whose validation errors "name the key and
     * the rule in mlt_last_error()". */
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "r"), MLT_OK);
    ASSERT_REFUSED(&fx, mlt_log_metric_at(run, "val_loss", 1.0, 0, -5), MLT_ERR_INVALID_VALUE,
                   "val_loss");
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    fx_free(&fx);
}
END_TEST

START_TEST(error_count_counts_each_failing_call)
{
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "r"), MLT_OK);
    ck_assert_int_eq(mlt_log_param(run, "p", "1"), MLT_OK);
    ck_assert_int_eq(mlt_log_param(run, "p", "1"), MLT_OK);
    ck_assert_int_eq(mlt_log_metric(run, "m", 1, 0), MLT_OK);
    ck_assert_uint_eq(mlt_tracker_error_count(fx.t), 0);

    ck_assert_int_eq(mlt_log_param(run, "bad key!", "1"), MLT_ERR_INVALID_KEY);
    ck_assert_uint_eq(mlt_tracker_error_count(fx.t), 1);
    ck_assert_int_eq(mlt_log_param(run, "p", "2"), MLT_ERR_PARAM_CONFLICT);
    ck_assert_uint_eq(mlt_tracker_error_count(fx.t), 2);
    ck_assert_int_eq(mlt_log_metric_at(run, "m", 1, 0, -1), MLT_ERR_INVALID_VALUE);
    ck_assert_uint_eq(mlt_tracker_error_count(fx.t), 3);
    ck_assert_int_eq(mlt_set_tag(run, "t", "\xff"), MLT_ERR_INVALID_VALUE);
    ck_assert_uint_eq(mlt_tracker_error_count(fx.t), 4);
    rec_fail(&fx.rec[0], EV_METRIC, MLT_ERR_NETWORK, 1);
    ck_assert_int_eq(mlt_log_metric(run, "m", 1, 1), MLT_ERR_NETWORK);
    ck_assert_uint_eq(mlt_tracker_error_count(fx.t), 5);
    ck_assert_int_eq(mlt_log_metric(run, "m", 1, 2), MLT_OK);
    ck_assert_uint_eq(mlt_tracker_error_count(fx.t), 5);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    ck_assert_uint_eq(mlt_tracker_error_count(fx.t), 5);
    fx_free(&fx);
}
END_TEST

START_TEST(tracker_last_error_is_latest_counted_failure_with_its_name)
{
    fixture fx;
    fx_init(&fx, 1);
    char buf[512] = "untouched";
    ck_assert_uint_eq(mlt_tracker_last_error(buf, sizeof buf, fx.t), 0);
    ck_assert_str_eq(buf, "");
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "r"), MLT_OK);
    ck_assert_int_eq(mlt_log_param(run, "bad key!", "1"), MLT_ERR_INVALID_KEY);
    ck_assert_uint_eq(mlt_tracker_last_error(buf, sizeof buf, fx.t), 1);
    ck_assert_msg(strncmp(buf, "MLT_ERR_INVALID_KEY: ", 21) == 0 && contains(buf, "bad key!"),
                  "'%s'", buf);

    fx.rec[0].fail_msg = "connection refused";
    rec_fail(&fx.rec[0], EV_METRIC, MLT_ERR_NETWORK, 1);
    ck_assert_int_eq(mlt_log_metric(run, "m", 1, 0), MLT_ERR_NETWORK);
    ck_assert_uint_eq(mlt_tracker_last_error(buf, sizeof buf, fx.t), 2);
    ck_assert_str_eq(buf, "MLT_ERR_NETWORK: connection refused");

    /* Successes change nothing; NULL and short buffers are fine. */
    ck_assert_int_eq(mlt_log_metric(run, "m", 1, 1), MLT_OK);
    ck_assert_uint_eq(mlt_tracker_last_error(buf, sizeof buf, fx.t), 2);
    ck_assert_str_eq(buf, "MLT_ERR_NETWORK: connection refused");
    ck_assert_uint_eq(mlt_tracker_last_error(NULL, 0, fx.t), 2);
    char small[8] = "xxxxxxx";
    ck_assert_uint_eq(mlt_tracker_last_error(small, sizeof small, fx.t), 2);
    ck_assert_str_eq(small, "MLT_ERR");
    char none[1] = {'x'};
    ck_assert_uint_eq(mlt_tracker_last_error(none, 0, fx.t), 2);
    ck_assert_int_eq(none[0], 'x');
    ck_assert_uint_eq(mlt_tracker_last_error(buf, sizeof buf, NULL), 0);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    fx_free(&fx);
}
END_TEST

static void *fail_on_other_thread(void *arg)
{
    mlt_log_metric(arg, "not a valid key?", 1, 0);
    return NULL;
}

START_TEST(tracker_last_error_is_readable_from_any_thread)
{
    /* Unlike mlt_last_error(), which is per thread. */
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "r"), MLT_OK);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, fail_on_other_thread, run), 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    char buf[512];
    ck_assert_uint_eq(mlt_tracker_last_error(buf, sizeof buf, fx.t), 1);
    ck_assert_msg(contains(buf, "not a valid key?"), "'%s'", buf);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    fx_free(&fx);
}
END_TEST

/* ---- params, metrics, tags ------------------------------------------------------------------ */

START_TEST(param_same_value_again_is_ok_and_not_sent_again)
{
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "r"), MLT_OK);
    ck_assert_int_eq(mlt_log_param(run, "lr", "0.01"), MLT_OK);
    ck_assert_int_eq(mlt_log_param(run, "lr", "0.01"), MLT_OK);
    ck_assert_uint_eq(count_by_key(&fx, EV_PARAM, "lr"), 1);
    const event *e = ev_by_key(&fx, EV_PARAM, "lr");
    ck_assert_str_eq(e->value, "0.01");
    ck_assert_str_eq(e->run_key, mlt_run_key(run));
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    fx_free(&fx);
}
END_TEST

START_TEST(param_other_value_is_conflict_and_not_sent)
{
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "r"), MLT_OK);
    ck_assert_int_eq(mlt_log_param(run, "epochs", "10"), MLT_OK);
    ASSERT_REFUSED(&fx, mlt_log_param(run, "epochs", "20"), MLT_ERR_PARAM_CONFLICT, "epochs");
    ck_assert_uint_eq(count_by_key(&fx, EV_PARAM, "epochs"), 1);
    /* The first value stays. */
    ck_assert_int_eq(mlt_log_param(run, "epochs", "10"), MLT_OK);
    ck_assert_uint_eq(count_by_key(&fx, EV_PARAM, "epochs"), 1);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    fx_free(&fx);
}
END_TEST

START_TEST(params_belong_to_their_run)
{
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *a;
    mlt_run *b;
    ck_assert_int_eq(mlt_run_start(&a, fx.t, "a"), MLT_OK);
    ck_assert_int_eq(mlt_run_start_child(&b, a, "b"), MLT_OK);
    ck_assert_int_eq(mlt_log_param(a, "seed", "1"), MLT_OK);
    ck_assert_int_eq(mlt_log_param(b, "seed", "2"), MLT_OK);
    ck_assert_uint_eq(count_by_key(&fx, EV_PARAM, "seed"), 2);
    ck_assert_int_eq(mlt_run_end(a, MLT_RUN_FINISHED), MLT_OK);
    fx_free(&fx);
}
END_TEST

START_TEST(param_whose_dispatch_failed_can_be_logged_again)
{
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "r"), MLT_OK);
    rec_fail(&fx.rec[0], EV_PARAM, MLT_ERR_NETWORK, 2);
    ck_assert_int_eq(mlt_log_param(run, "lr", "0.1"), MLT_ERR_NETWORK);
    ck_assert_uint_eq(count_by_key(&fx, EV_PARAM, "lr"), 1);
    /* Not logged: another value is no conflict... */
    ck_assert_int_eq(mlt_log_param(run, "lr", "0.2"), MLT_ERR_NETWORK);
    ck_assert_uint_eq(count_by_key(&fx, EV_PARAM, "lr"), 2);
    /* ...and the same value is sent again. */
    ck_assert_int_eq(mlt_log_param(run, "lr", "0.2"), MLT_OK);
    ck_assert_uint_eq(count_by_key(&fx, EV_PARAM, "lr"), 3);
    /* Now it is logged: once only. */
    ck_assert_int_eq(mlt_log_param(run, "lr", "0.2"), MLT_OK);
    ck_assert_int_eq(mlt_log_param(run, "lr", "0.1"), MLT_ERR_PARAM_CONFLICT);
    ck_assert_uint_eq(count_by_key(&fx, EV_PARAM, "lr"), 3);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    fx_free(&fx);
}
END_TEST

START_TEST(many_params_are_all_remembered)
{
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "r"), MLT_OK);
    char key[16];
    char value[16];
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 100; i++) {
            snprintf(key, sizeof key, "p%d", i);
            snprintf(value, sizeof value, "%d", i * 7);
            ck_assert_int_eq(mlt_log_param(run, key, value), MLT_OK);
        }
    }
    ck_assert_uint_eq(count_ev(&fx, 0, EV_PARAM), 100);
    ck_assert_int_eq(mlt_log_param(run, "p99", "0"), MLT_ERR_PARAM_CONFLICT);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    fx_free(&fx);
}
END_TEST

START_TEST(log_metric_stamps_current_time)
{
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "r"), MLT_OK);
    int64_t before = mlt_test_wall_ms();
    ck_assert_int_eq(mlt_log_metric(run, "loss", 0.25, 42), MLT_OK);
    int64_t after = mlt_test_wall_ms();
    const event *e = ev_by_key(&fx, EV_METRIC, "loss");
    ck_assert_ptr_nonnull(e);
    ck_assert(e->number == 0.25);
    ck_assert_int_eq(e->step, 42);
    ck_assert_int_ge(e->timestamp_ms, before);
    ck_assert_int_le(e->timestamp_ms, after);
    ck_assert_str_eq(e->run_key, mlt_run_key(run));
    ck_assert_str_eq(e->run_name, "r");
    ck_assert_ptr_eq(e->run, run);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    fx_free(&fx);
}
END_TEST

START_TEST(log_metric_at_passes_timestamp_and_any_int64_step)
{
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "r"), MLT_OK);
    ck_assert_int_eq(mlt_log_metric_at(run, "a", -1.5, INT64_MAX, 0), MLT_OK);
    ck_assert_int_eq(mlt_log_metric_at(run, "b", 1e300, INT64_MIN, INT64_MAX), MLT_OK);
    ck_assert_int_eq(mlt_log_metric_at(run, "c", 0.1, -7, 1700000000123), MLT_OK);
    const event *a = ev_by_key(&fx, EV_METRIC, "a");
    const event *b = ev_by_key(&fx, EV_METRIC, "b");
    const event *c = ev_by_key(&fx, EV_METRIC, "c");
    ck_assert(a->number == -1.5);
    ck_assert_int_eq(a->step, INT64_MAX);
    ck_assert_int_eq(a->timestamp_ms, 0);
    ck_assert(b->number == 1e300);
    ck_assert_int_eq(b->step, INT64_MIN);
    ck_assert_int_eq(b->timestamp_ms, INT64_MAX);
    ck_assert(c->number == 0.1);
    ck_assert_int_eq(c->step, -7);
    ck_assert_int_eq(c->timestamp_ms, 1700000000123);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    fx_free(&fx);
}
END_TEST

START_TEST(metrics_accept_nan_and_infinities)
{
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "r"), MLT_OK);
    ck_assert_int_eq(mlt_log_metric(run, "nan", NAN, 0), MLT_OK);
    ck_assert_int_eq(mlt_log_metric(run, "pinf", INFINITY, 0), MLT_OK);
    ck_assert_int_eq(mlt_log_metric_at(run, "ninf", -INFINITY, 0, 5), MLT_OK);
    ck_assert(isnan(ev_by_key(&fx, EV_METRIC, "nan")->number));
    ck_assert(isinf(ev_by_key(&fx, EV_METRIC, "pinf")->number));
    ck_assert(ev_by_key(&fx, EV_METRIC, "pinf")->number > 0);
    ck_assert(isinf(ev_by_key(&fx, EV_METRIC, "ninf")->number));
    ck_assert(ev_by_key(&fx, EV_METRIC, "ninf")->number < 0);
    ck_assert_uint_eq(mlt_tracker_error_count(fx.t), 0);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    fx_free(&fx);
}
END_TEST

START_TEST(same_metric_key_is_sent_every_time)
{
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "r"), MLT_OK);
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(mlt_log_metric(run, "loss", 1.0, 0), MLT_OK);
    }
    ck_assert_uint_eq(count_by_key(&fx, EV_METRIC, "loss"), 5);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    fx_free(&fx);
}
END_TEST

/* Keys formatted into one buffer at run time: each point carries the key its text names, in
 * the same order at every step (the address cache guesses the next key), in another order,
 * and with a bad key and a new key in between (validated once, refused with its name). */
START_TEST(keys_formatted_into_one_buffer_are_logged_by_their_text)
{
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "r"), MLT_OK);
    char buf[64];
    int want[200];
    size_t n = 0;
    for (int step = 0; step < 6; step++) {
        for (int i = 0; i < 10; i++) {
            int layer = step < 3 ? i : step == 3 ? 9 - i : (i * 7 + step) % 10;
            snprintf(buf, sizeof buf, "layer%d/grad_norm", layer);
            ck_assert_int_eq(mlt_log_metric(run, buf, layer, step), MLT_OK);
            want[n++] = layer;
        }
        if (step == 4) {
            snprintf(buf, sizeof buf, "bad key!");
            ck_assert_int_eq(mlt_log_metric(run, buf, 1, step), MLT_ERR_INVALID_KEY);
            ck_assert_ptr_nonnull(strstr(mlt_last_error(), "bad key!"));
            snprintf(buf, sizeof buf, "layer%d/grad_norm", 10);
            ck_assert_int_eq(mlt_log_metric(run, buf, 10, step), MLT_OK);
            want[n++] = 10;
        }
    }
    for (size_t i = 0; i < n; i++) {
        const event *e = get_ev(&fx, 0, EV_METRIC, NULL, i);
        char key[64];
        snprintf(key, sizeof key, "layer%d/grad_norm", want[i]);
        ck_assert_str_eq(e->key, key);
        ck_assert(e->number == want[i]);
    }
    ck_assert_int_lt(find_ev(&fx, 0, EV_METRIC, NULL, n), 0); /* nothing more */
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    fx_free(&fx);
}
END_TEST

START_TEST(tag_is_sent_on_every_write)
{
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "r"), MLT_OK);
    ck_assert_int_eq(mlt_set_tag(run, "phase", "warmup"), MLT_OK);
    ck_assert_int_eq(mlt_set_tag(run, "phase", "train"), MLT_OK);
    ck_assert_uint_eq(count_by_key(&fx, EV_TAG, "phase"), 2);
    ck_assert_str_eq(get_ev(&fx, 0, EV_TAG, NULL, 1)->value, "train");
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    fx_free(&fx);
}
END_TEST

/* ---- NULL runs and the UI address ----------------------------------------------------------- */

START_TEST(null_run_is_invalid_arg_for_every_call)
{
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *out = NULL;
    char buf[256];
    ck_assert_int_eq(mlt_run_start_child(&out, NULL, "c"), MLT_ERR_INVALID_ARG);
    ck_assert_ptr_null(out);
    ck_assert_int_eq(mlt_log_param(NULL, "k", "v"), MLT_ERR_INVALID_ARG);
    ck_assert_msg(contains(mlt_last_error(), "k"), "'%s'", mlt_last_error());
    ck_assert_int_eq(mlt_log_metric(NULL, "m", 1.0, 0), MLT_ERR_INVALID_ARG);
    ck_assert_str_ne(mlt_last_error(), "");
    ck_assert_int_eq(mlt_log_metric_at(NULL, "m", 1.0, 0, 0), MLT_ERR_INVALID_ARG);
    ck_assert_int_eq(mlt_set_tag(NULL, "t", "v"), MLT_ERR_INVALID_ARG);
    ck_assert_int_eq(mlt_log_param(NULL, NULL, NULL), MLT_ERR_INVALID_ARG);
    ck_assert_int_eq(mlt_log_metric(NULL, NULL, 1.0, 0), MLT_ERR_INVALID_ARG);
    ck_assert_int_eq(mlt_set_tag(NULL, NULL, NULL), MLT_ERR_INVALID_ARG);
    ck_assert_int_eq(mlt_run_end(NULL, MLT_RUN_FINISHED), MLT_ERR_INVALID_ARG);
    ck_assert_int_eq(mlt_run_ui_url(buf, sizeof buf, NULL), MLT_ERR_INVALID_ARG);
    mlt_run_fail(NULL);
    ck_assert_int_eq(mlt_run_failed(NULL), 0);
    ck_assert_ptr_null(mlt_run_id(NULL));
    ck_assert_ptr_null(mlt_run_key(NULL));
    ck_assert_ptr_null(mlt_run_name(NULL));
    ck_assert_ptr_null(mlt_run_parent(NULL));
    ck_assert_ptr_null(mlt_run_tracker(NULL));
    ck_assert_uint_eq(fx.log.n, 0);
    fx_free(&fx);
}
END_TEST

/* Every call that would log into a run that ended (as Python users do with a run object) is
 * refused with MLT_ERR_STATE naming the run; the handle stays readable until close. */
static void expect_ended(mlt_err err, const char *name)
{
    ck_assert_int_eq(err, MLT_ERR_STATE);
    ck_assert_msg(contains(mlt_last_error(), "has ended"), "'%s'", mlt_last_error());
    ck_assert_msg(contains(mlt_last_error(), name), "'%s'", mlt_last_error());
}

START_TEST(calls_on_an_ended_run_are_refused_naming_the_run)
{
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *run, *child = NULL;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "train"), MLT_OK);
    ck_assert_int_eq(mlt_log_param(run, "lr", "0.1"), MLT_OK);
    ck_assert_int_eq(mlt_log_metric(run, "loss", 1.0, 0), MLT_OK);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    size_t events = fx.log.n;
    const mlt_key *k;
    ck_assert_int_eq(mlt_metric_key(&k, fx.t, "loss"), MLT_OK);

    expect_ended(mlt_log_param(run, "lr", "0.1"), "'train'");
    expect_ended(mlt_log_param(run, "other", "1"), "'train'");
    expect_ended(mlt_log_metric(run, "loss", 2.0, 1), "'train'");
    expect_ended(mlt_log_metric(run, "never/seen", 2.0, 1), "'train'");
    expect_ended(mlt_log_metric_at(run, "loss", 2.0, 1, 5), "'train'");
    expect_ended(mlt_log_metric_key(run, k, 2.0, 1), "'train'");
    expect_ended(mlt_set_tag(run, "t", "v"), "'train'");
    expect_ended(mlt_run_start_child(&child, run, "c"), "'train'");
    ck_assert_ptr_null(child);
    expect_ended(mlt_run_end(run, MLT_RUN_FAILED), "'train'");
    ck_assert_uint_eq(fx.log.n, events); /* no callback heard of any of them */
    ck_assert_uint_eq(mlt_tracker_error_count(fx.t), 9);

    /* what the handle tells stays readable */
    ck_assert_str_eq(mlt_run_name(run), "train");
    ck_assert_ptr_nonnull(mlt_run_key(run));
    ck_assert_ptr_eq(mlt_run_tracker(run), fx.t);
    ck_assert_int_eq(fx_close(&fx), MLT_OK);
    ck_assert_uint_eq(count_ev(&fx, -1, EV_END), 1);
    fx_free(&fx);
}
END_TEST

START_TEST(an_unnamed_ended_run_is_named_by_its_key)
{
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, NULL), MLT_OK);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    expect_ended(mlt_log_metric(run, "loss", 2.0, 1), mlt_run_key(run));
    fx_free(&fx);
}
END_TEST

START_TEST(children_ended_with_their_parent_stay_valid_handles)
{
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *parent, *child;
    ck_assert_int_eq(mlt_run_start(&parent, fx.t, "parent"), MLT_OK);
    ck_assert_int_eq(mlt_run_start_child(&child, parent, "child"), MLT_OK);
    ck_assert_int_eq(mlt_run_end(parent, MLT_RUN_FINISHED), MLT_OK);
    expect_ended(mlt_set_tag(child, "t", "v"), "'child'");
    expect_ended(mlt_run_end(child, MLT_RUN_FINISHED), "'child'");
    ck_assert_ptr_eq(mlt_run_parent(child), parent);
    ck_assert_uint_eq(count_ev(&fx, -1, EV_END), 2);
    fx_free(&fx);
}
END_TEST

/* A tracker with the MLflow callback alone, the server away (a closed port), its queue in a new
 * directory tmp (for mlt_test_remove_tree). */
static mlt_tracker *mlflow_tracker(char *tmp, size_t len, const char *label)
{
    char qdir[PATH_MAX + 16], err[256] = "";
    mlt_test_tmpdir(tmp, len, label);
    snprintf(qdir, sizeof qdir, "%s/queue", tmp);
    mlt_options *o = mlt_options_new();
    ck_assert_int_eq(mlt_options_set(o, "tracking_uri", "http://127.0.0.1:9", err, sizeof err),
                     MLT_OK);
    ck_assert_int_eq(mlt_options_set(o, "queue_dir", qdir, err, sizeof err), MLT_OK);
    mlt_tracker *t;
    ck_assert_int_eq(mlt_tracker_new(&t, o, err, sizeof err), MLT_OK);
    mlt_options_free(o);
    ck_assert_msg(mlt_tracker_add_mlflow(t, err, sizeof err) == MLT_OK, "%s", err);
    return t;
}

/* The same through the MLflow callback alone, whose points skip every check on the hot path:
 * an ended run has no ring, so its points take the slow path, which refuses. */
START_TEST(an_ended_runs_points_are_refused_on_the_hot_path_too)
{
    char tmp[PATH_MAX];
    mlt_tracker *t = mlflow_tracker(tmp, sizeof tmp, "ended");
    mlt_run *run;
    const mlt_key *k;
    ck_assert_int_eq(mlt_metric_key(&k, t, "loss"), MLT_OK);
    ck_assert_int_eq(mlt_run_start(&run, t, "hot"), MLT_OK);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(mlt_log_metric(run, "loss", 1.0, i), MLT_OK);
        ck_assert_int_eq(mlt_log_metric_key(run, k, 1.0, i), MLT_OK);
    }
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    expect_ended(mlt_log_metric(run, "loss", 1.0, 9), "'hot'");
    expect_ended(mlt_log_metric_key(run, k, 1.0, 9), "'hot'");
    expect_ended(mlt_log_metric_at(run, "loss", 1.0, 9, 1), "'hot'");
    mlt_queue_stats st = MLT_QUEUE_STATS_INIT;
    ck_assert_int_eq(mlt_tracker_flush(t, 0) == MLT_OK, 0); /* the server is away */
    ck_assert_int_eq(mlt_tracker_queue_stats(&st, t), MLT_OK);
    ck_assert_uint_eq(st.queued, 8); /* create, 6 points, end: nothing of the ended run */
    mlt_tracker_close(t, 0);
    mlt_test_remove_tree(tmp);
}
END_TEST

/* mlt_queue_stats carries a version (libgit2's rule): 0 (a struct left uninitialized) and
 * versions newer than the library's are refused with a message and nothing written; the current
 * one is filled, counters only, its version left as the caller set it. */
START_TEST(queue_stats_takes_versions_1_to_current_only)
{
    fixture fx;
    fx_init(&fx, 0); /* no MLflow callback: no queue */
    static const unsigned int refused[] = {0, MLT_QUEUE_STATS_VERSION + 1, UINT_MAX};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        mlt_queue_stats st;
        memset(&st, 0xab, sizeof st);
        st.version = refused[i];
        ck_assert_int_eq(mlt_tracker_queue_stats(&st, fx.t), MLT_ERR_INVALID_ARG);
        char want[64];
        snprintf(want, sizeof want, "mlt_queue_stats version %u is not supported", refused[i]);
        ck_assert_msg(contains(mlt_last_error(), want), "message: %s", mlt_last_error());
        ck_assert_uint_eq(st.version, refused[i]);
        ck_assert_uint_eq(st.queued, UINT64_C(0xabababababababab));
        ck_assert_uint_eq(st.bytes_pending, UINT64_C(0xabababababababab));
    }
    mlt_queue_stats st = MLT_QUEUE_STATS_INIT;
    ck_assert_uint_eq(st.version, MLT_QUEUE_STATS_VERSION);
    ck_assert_int_eq(mlt_tracker_queue_stats(NULL, fx.t), MLT_ERR_INVALID_ARG);
    ck_assert_int_eq(mlt_tracker_queue_stats(&st, NULL), MLT_ERR_INVALID_ARG);
    st.queued = 7;
    ck_assert_int_eq(mlt_tracker_queue_stats(&st, fx.t), MLT_ERR_STATE);
    ck_assert_uint_eq(st.version, MLT_QUEUE_STATS_VERSION);
    ck_assert_uint_eq(st.queued, 0);
    fx_free(&fx);

    /* with the MLflow callback (the server away): every version from 1 is filled */
    char tmp[PATH_MAX];
    mlt_tracker *t = mlflow_tracker(tmp, sizeof tmp, "stats");
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, t, "stats"), MLT_OK);
    ck_assert_int_eq(mlt_log_metric(run, "loss", 1.0, 0), MLT_OK);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    ck_assert_int_ne(mlt_tracker_flush(t, 0), MLT_OK); /* the server is away */
    for (unsigned int v = 1; v <= MLT_QUEUE_STATS_VERSION; v++) {
        mlt_queue_stats got = MLT_QUEUE_STATS_INIT;
        got.version = v;
        ck_assert_int_eq(mlt_tracker_queue_stats(&got, t), MLT_OK);
        ck_assert_uint_eq(got.version, v);
        ck_assert_uint_eq(got.queued, 3); /* create, the point, end */
    }
    mlt_tracker_close(t, 0);
    mlt_test_remove_tree(tmp);
}
END_TEST

START_TEST(ui_url_without_mlflow_callback_is_state_error)
{
    mlt_options *opts = mlt_options_new();
    ck_assert_ptr_nonnull(opts);
    ck_assert_int_eq(mlt_options_set_tracking_uri(opts, "http://127.0.0.1:5000"), MLT_OK);
    mlt_tracker *t;
    ck_assert_int_eq(mlt_tracker_new(&t, opts, NULL, 0), MLT_OK);
    mlt_options_free(opts);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, t, "r"), MLT_OK);
    char buf[256] = "untouched";
    ck_assert_int_eq(mlt_run_ui_url(buf, sizeof buf, run), MLT_ERR_STATE);
    ck_assert_int_eq(mlt_run_ui_url(NULL, 0, run), MLT_ERR_INVALID_ARG);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    ck_assert_int_eq(mlt_tracker_close(t, 0), MLT_OK);

    /* No tracking URI at all: also unknown. */
    ck_assert_int_eq(mlt_tracker_new(&t, NULL, NULL, 0), MLT_OK);
    ck_assert_int_eq(mlt_run_start(&run, t, "r"), MLT_OK);
    ck_assert_int_eq(mlt_run_ui_url(buf, sizeof buf, run), MLT_ERR_STATE);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    ck_assert_int_eq(mlt_tracker_close(t, 0), MLT_OK);
}
END_TEST

START_TEST(ui_url_is_built_once_ids_are_known)
{
    /* What the MLflow callback records, set here through the internal setters. */
    mlt_options *opts = mlt_options_new();
    ck_assert_int_eq(mlt_options_set_tracking_uri(opts, "http://mlflow.example:5000"), MLT_OK);
    mlt_tracker *t;
    ck_assert_int_eq(mlt_tracker_new(&t, opts, NULL, 0), MLT_OK);
    mlt_options_free(opts);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, t, "r"), MLT_OK);
    ck_assert_int_eq(mlt__run_set_id(run, "abc123"), MLT_OK);
    char buf[256];
    ck_assert_int_eq(mlt_run_ui_url(buf, sizeof buf, run), MLT_ERR_STATE);
    ck_assert_int_eq(mlt__tracker_set_experiment_id(t, "7"), MLT_OK);
    ck_assert_str_eq(mlt_run_id(run), "abc123");
    ck_assert_int_eq(mlt_run_ui_url(buf, sizeof buf, run), MLT_OK);
    ck_assert_str_eq(buf, "http://mlflow.example:5000/#/experiments/7/runs/abc123/model-metrics"
                          "?workflowType=machine_learning");
    size_t need = strlen(buf) + 1;
    ck_assert_int_eq(mlt_run_ui_url(buf, need, run), MLT_OK);
    ck_assert_int_eq(mlt_run_ui_url(buf, need - 1, run), MLT_ERR_VALUE_TOO_LONG);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    ck_assert_int_eq(mlt_tracker_close(t, 0), MLT_OK);
}
END_TEST

/* ---- decorator: mlt_track ------------------------------------------------------------------- */

typedef struct track_probe {
    int calls;
    mlt_run *run;    /* fn's run argument */
    mlt_run *active; /* mlt_active_run() inside fn */
    keybuf key;      /* fn's run key */
    void *arg_seen;
    int result;        /* what fn returns */
    bool mark_failed;  /* fn calls mlt_run_fail(run) */
    fixture *nested;   /* fn runs a nested mlt_track on this fixture's tracker */
    keybuf nested_key; /* the nested run's key */
    mlt_err nested_err;
} track_probe;

static int probe_fn(mlt_run *run, void *arg)
{
    track_probe *p = arg;
    p->calls++;
    p->run = run;
    p->active = mlt_active_run();
    p->arg_seen = arg;
    if (run) {
        snprintf(p->key.s, sizeof p->key.s, "%s", mlt_run_key(run));
        mlt_log_metric(run, "inside", 1.0, 0);
    }
    if (p->mark_failed) {
        mlt_run_fail(run);
    }
    if (p->nested) {
        track_probe inner = {.result = 0};
        p->nested_err = mlt_track(NULL, p->nested->t, "inner", NULL, 0, probe_fn, &inner);
        p->nested_key = inner.key;
    }
    return p->result;
}

START_TEST(track_logs_params_and_runs_fn_with_its_run_and_arg)
{
    fixture fx;
    fx_init(&fx, 1);
    const mlt_param params[] = {{"lr", "0.01"}, {"epochs", "10"}};
    track_probe p = {.result = 0};
    int fn_result = -1;
    ck_assert_int_eq(mlt_track(&fn_result, fx.t, "train", params, 2, probe_fn, &p), MLT_OK);
    ck_assert_int_eq(p.calls, 1);
    ck_assert_int_eq(fn_result, 0);
    ck_assert_ptr_nonnull(p.run);
    ck_assert_ptr_eq(p.active, p.run);
    ck_assert_ptr_eq(p.arg_seen, &p);
    ck_assert_ptr_null(mlt_active_run());

    const event *s = get_ev(&fx, 0, EV_START, p.key.s, 0);
    ck_assert_str_eq(s->run_name, "train");
    ck_assert(!s->has_parent);
    ck_assert_str_eq(ev_by_key(&fx, EV_PARAM, "lr")->value, "0.01");
    ck_assert_str_eq(ev_by_key(&fx, EV_PARAM, "epochs")->value, "10");
    /* The params are logged before fn runs. */
    ck_assert_int_lt(find_ev(&fx, 0, EV_PARAM, p.key.s, 1),
                     ev_by_key(&fx, EV_METRIC, "inside") - fx.log.ev);
    ck_assert_str_eq(ev_by_key(&fx, EV_TAG, "mltrack.return_code")->value, "0");
    const event *d = ev_by_key(&fx, EV_METRIC, "duration_s");
    ck_assert_ptr_nonnull(d);
    ck_assert(d->number >= 0 && d->number < 10);
    ck_assert_int_eq(get_ev(&fx, 0, EV_END, p.key.s, 0)->status, MLT_RUN_FINISHED);
    ck_assert_uint_eq(count_ev(&fx, 0, EV_END), 1);
    fx_free(&fx);
}
END_TEST

START_TEST(track_nonzero_result_ends_failed)
{
    fixture fx;
    fx_init(&fx, 1);
    track_probe p = {.result = 3};
    int fn_result = 0;
    ck_assert_int_eq(mlt_track(&fn_result, fx.t, "bad", NULL, 0, probe_fn, &p), MLT_OK);
    ck_assert_int_eq(fn_result, 3);
    ck_assert_str_eq(ev_by_key(&fx, EV_TAG, "mltrack.return_code")->value, "3");
    ck_assert_ptr_nonnull(ev_by_key(&fx, EV_METRIC, "duration_s"));
    ck_assert_int_eq(get_ev(&fx, 0, EV_END, p.key.s, 0)->status, MLT_RUN_FAILED);

    track_probe neg = {.result = -2};
    ck_assert_int_eq(mlt_track(NULL, fx.t, "neg", NULL, 0, probe_fn, &neg), MLT_OK);
    ck_assert_int_eq(get_ev(&fx, 0, EV_END, neg.key.s, 0)->status, MLT_RUN_FAILED);
    ck_assert_str_eq(get_ev(&fx, 0, EV_TAG, neg.key.s, 0)->value, "-2");
    fx_free(&fx);
}
END_TEST

START_TEST(track_fn_marking_fail_ends_failed)
{
    fixture fx;
    fx_init(&fx, 1);
    track_probe p = {.result = 0, .mark_failed = true};
    ck_assert_int_eq(mlt_track(NULL, fx.t, "marked", NULL, 0, probe_fn, &p), MLT_OK);
    ck_assert_int_eq(get_ev(&fx, 0, EV_END, p.key.s, 0)->status, MLT_RUN_FAILED);
    fx_free(&fx);
}
END_TEST

START_TEST(track_inside_fn_is_child_run)
{
    fixture fx;
    fx_init(&fx, 1);
    track_probe p = {.result = 0, .nested = &fx};
    ck_assert_int_eq(mlt_track(NULL, fx.t, "outer", NULL, 0, probe_fn, &p), MLT_OK);
    ck_assert_int_eq(p.nested_err, MLT_OK);
    const event *s = get_ev(&fx, 0, EV_START, p.nested_key.s, 0);
    ck_assert_str_eq(s->run_name, "inner");
    ck_assert(s->has_parent);
    ck_assert_str_eq(s->parent_key, p.key.s);
    ck_assert_int_lt(find_ev(&fx, 0, EV_END, p.nested_key.s, 0),
                     find_ev(&fx, 0, EV_END, p.key.s, 0));
    ck_assert_int_eq(get_ev(&fx, 0, EV_END, p.nested_key.s, 0)->status, MLT_RUN_FINISHED);
    /* Once the inner run is over, the outer one is active again. */
    ck_assert_ptr_eq(get_ev(&fx, 0, EV_END, p.nested_key.s, 0)->active, p.run);
    ck_assert_ptr_null(mlt_active_run());
    fx_free(&fx);
}
END_TEST

START_TEST(track_with_null_tracker_still_runs_fn)
{
    track_probe p = {.result = 5};
    int fn_result = 0;
    ck_assert_int_eq(mlt_track(&fn_result, NULL, "untracked", NULL, 0, probe_fn, &p),
                     MLT_ERR_INVALID_ARG);
    ck_assert_int_eq(p.calls, 1);
    ck_assert_ptr_null(p.run);
    ck_assert_ptr_eq(p.arg_seen, &p);
    ck_assert_int_eq(fn_result, 5);
    ck_assert_str_ne(mlt_last_error(), "");
}
END_TEST

START_TEST(track_requires_fn)
{
    fixture fx;
    fx_init(&fx, 1);
    ck_assert_int_eq(mlt_track(NULL, fx.t, "nofn", NULL, 0, NULL, NULL), MLT_ERR_INVALID_ARG);
    ck_assert_uint_eq(fx.log.n, 0);
    fx_free(&fx);
}
END_TEST

START_TEST(track_invalid_param_returns_error_but_runs_fn)
{
    fixture fx;
    fx_init(&fx, 1);
    const mlt_param params[] = {{"good", "1"}, {"bad//key", "2"}, {"also_good", "3"}};
    track_probe p = {.result = 0};
    int fn_result = -1;
    ck_assert_int_eq(mlt_track(&fn_result, fx.t, "t", params, 3, probe_fn, &p),
                     MLT_ERR_INVALID_KEY);
    ck_assert_msg(contains(mlt_last_error(), "bad//key"), "'%s'", mlt_last_error());
    ck_assert_int_eq(p.calls, 1);
    ck_assert_ptr_nonnull(p.run);
    ck_assert_int_eq(fn_result, 0);
    ck_assert_ptr_nonnull(ev_by_key(&fx, EV_PARAM, "good"));
    ck_assert_ptr_nonnull(ev_by_key(&fx, EV_PARAM, "also_good"));
    ck_assert_ptr_null(ev_by_key(&fx, EV_PARAM, "bad//key"));
    /* A tracking problem is not the function's failure. */
    ck_assert_int_eq(get_ev(&fx, 0, EV_END, p.key.s, 0)->status, MLT_RUN_FINISHED);
    fx_free(&fx);
}
END_TEST

START_TEST(track_failed_start_runs_fn_with_null_run)
{
    fixture fx;
    fx_init(&fx, 1);
    fx.rec[0].fail_msg = "cannot create run";
    rec_fail(&fx.rec[0], EV_START, MLT_ERR_SERVER, -1);
    const mlt_param params[] = {{"lr", "0.1"}};
    track_probe p = {.result = 0};
    ck_assert_int_eq(mlt_track(NULL, fx.t, "t", params, 1, probe_fn, &p), MLT_ERR_SERVER);
    ck_assert_str_eq(mlt_last_error(), "cannot create run");
    ck_assert_int_eq(p.calls, 1);
    ck_assert_ptr_null(p.run);
    ck_assert_uint_eq(count_ev(&fx, 0, EV_PARAM), 0);
    fx_free(&fx);
}
END_TEST

START_TEST(track_returns_error_of_return_code_tag)
{
    /* "Returns the first tracking error": the tag is part of the tracking. */
    fixture fx;
    fx_init(&fx, 1);
    rec_fail(&fx.rec[0], EV_TAG, MLT_ERR_NETWORK, -1);
    track_probe p = {.result = 0};
    ck_assert_int_eq(mlt_track(NULL, fx.t, "t", NULL, 0, probe_fn, &p), MLT_ERR_NETWORK);
    fx_free(&fx);
}
END_TEST

START_TEST(track_logs_duration_even_if_tag_fails)
{
    fixture fx;
    fx_init(&fx, 1);
    rec_fail(&fx.rec[0], EV_TAG, MLT_ERR_NETWORK, -1);
    track_probe p = {.result = 0};
    mlt_track(NULL, fx.t, "t", NULL, 0, probe_fn, &p);
    ck_assert_ptr_nonnull(ev_by_key(&fx, EV_METRIC, "duration_s"));
    fx_free(&fx);
}
END_TEST

START_TEST(track_returns_error_of_duration_metric)
{
    fixture fx;
    fx_init(&fx, 1);
    track_probe p = {.result = 0};
    /* Every metric fails: probe_fn ignores its own, mlt_track must not ignore duration_s. */
    rec_fail(&fx.rec[0], EV_METRIC, MLT_ERR_NETWORK, -1);
    ck_assert_int_eq(mlt_track(NULL, fx.t, "t", NULL, 0, probe_fn, &p), MLT_ERR_NETWORK);
    ck_assert_ptr_nonnull(ev_by_key(&fx, EV_METRIC, "duration_s"));
    fx_free(&fx);
}
END_TEST

START_TEST(track_returns_error_of_run_end)
{
    fixture fx;
    fx_init(&fx, 1);
    fx.rec[0].fail_msg = "update failed";
    rec_fail(&fx.rec[0], EV_END, MLT_ERR_SERVER, -1);
    track_probe p = {.result = 0};
    ck_assert_int_eq(mlt_track(NULL, fx.t, "t", NULL, 0, probe_fn, &p), MLT_ERR_SERVER);
    ck_assert_str_eq(mlt_last_error(), "update failed");
    fx_free(&fx);
}
END_TEST

/* ---- tracked functions: MLT_TRACKED --------------------------------------------------------- */

static int g_calls;
static keybuf g_active_key;    /* key of mlt_active_run() in the last tracked body */
static keybuf g_active_parent; /* key of its parent ("" if none) */
static bool g_active_was_null;

static void note_active(void)
{
    g_calls++;
    mlt_run *a = mlt_active_run();
    g_active_was_null = a == NULL;
    snprintf(g_active_key.s, sizeof g_active_key.s, "%s", a ? mlt_run_key(a) : "");
    mlt_run *p = a ? mlt_run_parent(a) : NULL;
    snprintf(g_active_parent.s, sizeof g_active_parent.s, "%s", p ? mlt_run_key(p) : "");
}

MLT_TRACKED(double, tracked_train, (int, epochs), (double, lr))
{
    note_active();
    return epochs * lr;
}

MLT_TRACKED(long long, tracked_mixed, (const char *, label), (_Bool, flag), (unsigned long, count),
            (float, ratio), (long long, big), (char, letter))
{
    note_active();
    return (long long)strlen(label) + (flag ? 100 : 0) + (long long)(count % 7) +
           (long long)(ratio * 10) + big % 5 + letter;
}

MLT_TRACKED(int, tracked_label, (const char *, label), (char *, path))
{
    note_active();
    return (label ? 1 : 0) + (path ? 2 : 0);
}

MLT_TRACKED(int, tracked_eight, (int, a), (int, b), (int, c), (int, d), (int, e), (int, f),
            (int, g), (int, h))
{
    return a + b + c + d + e + f + g + h;
}

static int g_void_sum;

MLT_TRACKED_VOID(tracked_void, (int, n))
{
    note_active();
    g_void_sum += n;
}

static keybuf g_inner_key;
static keybuf g_inner_parent;

MLT_TRACKED(int, tracked_inner, (int, n))
{
    note_active();
    g_inner_key = g_active_key;
    g_inner_parent = g_active_parent;
    return n + 1;
}

MLT_TRACKED(int, tracked_outer, (int, n))
{
    note_active();
    keybuf mine = g_active_key;
    int r = tracked_inner(n) * 2;
    g_active_key = mine;
    return r;
}

MLT_TRACKED(int, tracked_marks_failed, (int, n))
{
    note_active();
    mlt_run_fail(mlt_active_run());
    return n;
}

static MLT_TRACKED(int, tracked_static, (int, n))
{
    note_active();
    return n * 3;
}

/* Sets fx's tracker as the default, for tracked functions. */
static void fx_init_default(fixture *fx)
{
    fx_init(fx, 1);
    mlt_tracker_set_default(fx->t);
    g_calls = 0;
}

/* The start event of the only run of recorder 0 named name. */
static const event *start_named(const fixture *fx, const char *name)
{
    const event *found = NULL;
    for (size_t i = 0; i < fx->log.n; i++) {
        const event *e = &fx->log.ev[i];
        if (e->kind == EV_START && e->rec == 0 && e->run_name && !strcmp(e->run_name, name)) {
            ck_assert_msg(!found, "two runs named %s", name);
            found = e;
        }
    }
    ck_assert_msg(found != NULL, "no run named %s", name);
    return found;
}

/* The event of kind with key in the run run_key (recorder 0), or NULL. */
static const event *run_ev_by_key(const fixture *fx, ev_kind kind, const char *run_key,
                                  const char *key)
{
    for (size_t i = 0; i < fx->log.n; i++) {
        const event *e = &fx->log.ev[i];
        if (e->kind == kind && e->rec == 0 && !strcmp(e->run_key, run_key) && e->key &&
            !strcmp(e->key, key)) {
            return e;
        }
    }
    return NULL;
}

static const char *param_of(const fixture *fx, const char *run_key, const char *key)
{
    const event *e = run_ev_by_key(fx, EV_PARAM, run_key, key);
    ck_assert_msg(e != NULL, "no param %s", key);
    return e->value;
}

START_TEST(tracked_function_is_a_run_with_params_result_and_duration)
{
    fixture fx;
    fx_init_default(&fx);
    double r = tracked_train(3, 0.01);
    ck_assert(r == 3 * 0.01);
    ck_assert_int_eq(g_calls, 1);
    const event *s = start_named(&fx, "tracked_train");
    ck_assert(!s->has_parent);
    /* The body ran with its run active, and it is no longer active. */
    ck_assert_str_eq(g_active_key.s, s->run_key);
    ck_assert_ptr_null(mlt_active_run());
    ck_assert_str_eq(param_of(&fx, s->run_key, "epochs"), "3");
    ck_assert_str_eq(param_of(&fx, s->run_key, "lr"), "0.01");
    const event *res = run_ev_by_key(&fx, EV_METRIC, s->run_key, "result");
    ck_assert_ptr_nonnull(res);
    ck_assert(res->number == 3 * 0.01);
    const event *d = run_ev_by_key(&fx, EV_METRIC, s->run_key, "duration_s");
    ck_assert_ptr_nonnull(d);
    ck_assert(d->number >= 0 && d->number < 10);
    ck_assert_int_eq(get_ev(&fx, 0, EV_END, s->run_key, 0)->status, MLT_RUN_FINISHED);
    ck_assert_uint_eq(mlt_tracker_error_count(fx.t), 0);
    fx_free(&fx);
}
END_TEST

/* Asserts text is what strtod reads back as exactly v. */
static void assert_reads_back(const char *text, double v)
{
    char *end = NULL;
    double back = strtod(text, &end);
    ck_assert_msg(*end == '\0' && back == v, "'%s' does not read back as %.17g", text, v);
}

START_TEST(tracked_doubles_are_logged_as_shortest_round_trip_text)
{
    fixture fx;
    fx_init_default(&fx);
    static const struct {
        double v;
        const char *text;
    } cases[] = {
        {0.01, "0.01"},
        {1e-7, "1e-07"},
        {0.1 + 0.2, "0.30000000000000004"},
        {1.0 / 3.0, "0.3333333333333333"},
        {2.0, "2"},
        {-0.5, "-0.5"},
        {1e300, "1e+300"},
        {123456789012345678.0, "1.2345678901234568e+17"},
        {5e-324, "5e-324"},
        {1e23, "1e+23"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tracked_train(1, cases[i].v);
        const char *got = param_of(&fx, g_active_key.s, "lr");
        assert_reads_back(got, cases[i].v);
        ck_assert_msg(strcmp(got, cases[i].text) == 0, "%.17g logged as '%s', want '%s'",
                      cases[i].v, got, cases[i].text);
    }
    /* Extremes read back exactly too. */
    static const double extremes[] = {5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
                                      -0.0};
    for (size_t i = 0; i < sizeof extremes / sizeof extremes[0]; i++) {
        tracked_train(1, extremes[i]);
        assert_reads_back(param_of(&fx, g_active_key.s, "lr"), extremes[i]);
    }
    fx_free(&fx);
}
END_TEST

START_TEST(tracked_args_of_every_type_are_formatted_as_documented)
{
    fixture fx;
    fx_init_default(&fx);
    long long r = tracked_mixed("hello world", 1, ULONG_MAX, 0.1f, LLONG_MIN, 'A');
    long long want = (long long)strlen("hello world") + 100 + (long long)(ULONG_MAX % 7) +
                     (long long)(0.1f * 10) + LLONG_MIN % 5 + 'A';
    ck_assert_int_eq(r, want);
    const event *s = start_named(&fx, "tracked_mixed");
    ck_assert_str_eq(param_of(&fx, s->run_key, "label"), "hello world");
    ck_assert_str_eq(param_of(&fx, s->run_key, "flag"), "true");
    ck_assert_str_eq(param_of(&fx, s->run_key, "count"), "18446744073709551615");
    ck_assert_str_eq(param_of(&fx, s->run_key, "ratio"), "0.1");
    ck_assert_str_eq(param_of(&fx, s->run_key, "big"), "-9223372036854775808");
    ck_assert_str_eq(param_of(&fx, s->run_key, "letter"), "65");
    ck_assert(run_ev_by_key(&fx, EV_METRIC, s->run_key, "result")->number == (double)want);
    ck_assert_uint_eq(count_ev(&fx, 0, EV_PARAM), 6);

    tracked_mixed("", 0, 0, 1.0f / 3.0f, 7, '0');
    const char *ratio = param_of(&fx, g_active_key.s, "ratio");
    ck_assert_str_eq(param_of(&fx, g_active_key.s, "flag"), "false");
    ck_assert_str_eq(param_of(&fx, g_active_key.s, "label"), "");
    ck_assert_str_eq(param_of(&fx, g_active_key.s, "count"), "0");
    ck_assert_str_eq(ratio, "0.33333334");
    ck_assert(strtof(ratio, NULL) == 1.0f / 3.0f);
    fx_free(&fx);
}
END_TEST

/* A NULL string argument is logged as "None", as MLflow's Python client logs None: defined,
 * where printf's "(null)" is not. */
START_TEST(tracked_null_string_args_are_logged_as_none)
{
    fixture fx;
    fx_init_default(&fx);
    ck_assert_int_eq(tracked_label(NULL, NULL), 0);
    const event *s = start_named(&fx, "tracked_label");
    ck_assert_str_eq(param_of(&fx, s->run_key, "label"), "None");
    ck_assert_str_eq(param_of(&fx, s->run_key, "path"), "None");
    char path[] = "/data";
    ck_assert_int_eq(tracked_label("x", path), 3);
    ck_assert_str_eq(param_of(&fx, g_active_key.s, "label"), "x");
    ck_assert_str_eq(param_of(&fx, g_active_key.s, "path"), "/data");

    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "direct"), MLT_OK);
    const char *none = NULL;
    mlt_log_param_value(run, "none", none);
    ck_assert_str_eq(param_of(&fx, mlt_run_key(run), "none"), "None");
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    fx_free(&fx);
}
END_TEST

START_TEST(tracked_function_takes_up_to_eight_args)
{
    fixture fx;
    fx_init_default(&fx);
    ck_assert_int_eq(tracked_eight(1, 2, 3, 4, 5, 6, 7, 8), 36);
    const event *s = start_named(&fx, "tracked_eight");
    ck_assert_uint_eq(count_ev(&fx, 0, EV_PARAM), 8);
    ck_assert_str_eq(param_of(&fx, s->run_key, "a"), "1");
    ck_assert_str_eq(param_of(&fx, s->run_key, "h"), "8");
    fx_free(&fx);
}
END_TEST

START_TEST(tracked_void_function_logs_no_result)
{
    fixture fx;
    fx_init_default(&fx);
    g_void_sum = 0;
    tracked_void(4);
    tracked_void(5);
    ck_assert_int_eq(g_void_sum, 9);
    ck_assert_int_eq(g_calls, 2);
    ck_assert_uint_eq(count_ev(&fx, 0, EV_START), 2);
    ck_assert_uint_eq(count_by_key(&fx, EV_METRIC, "result"), 0);
    ck_assert_uint_eq(count_by_key(&fx, EV_METRIC, "duration_s"), 2);
    ck_assert_str_eq(param_of(&fx, g_active_key.s, "n"), "5");
    ck_assert_int_eq(get_ev(&fx, 0, EV_END, g_active_key.s, 0)->status, MLT_RUN_FINISHED);
    ck_assert_str_eq(get_ev(&fx, 0, EV_START, g_active_key.s, 0)->run_name, "tracked_void");
    fx_free(&fx);
}
END_TEST

START_TEST(tracked_function_without_default_tracker_still_runs)
{
    fixture fx;
    fx_init(&fx, 1); /* a tracker, but not the default: it must see nothing */
    mlt_tracker_set_default(NULL);
    g_calls = 0;
    ck_assert(tracked_train(2, 0.5) == 1.0);
    ck_assert_int_eq(tracked_static(4), 12);
    g_void_sum = 0;
    tracked_void(3);
    ck_assert_int_eq(g_void_sum, 3);
    ck_assert_int_eq(g_calls, 3);
    ck_assert(g_active_was_null);
    ck_assert_uint_eq(fx.log.n, 0);
    /* Why it ran untracked is left for the caller, not lost to the params' logging. */
    ck_assert_int_eq(tracked_static(1), 3);
    ck_assert_msg(contains(mlt_last_error(), "tracked_static"), "'%s'", mlt_last_error());
    fx_free(&fx);
}
END_TEST

START_TEST(tracked_calling_tracked_is_child_run)
{
    fixture fx;
    fx_init_default(&fx);
    ck_assert_int_eq(tracked_outer(1), 4);
    const event *outer = start_named(&fx, "tracked_outer");
    const event *inner = start_named(&fx, "tracked_inner");
    ck_assert(inner->has_parent);
    ck_assert_str_eq(inner->parent_key, outer->run_key);
    ck_assert_str_eq(g_inner_key.s, inner->run_key);
    ck_assert_str_eq(g_inner_parent.s, outer->run_key);
    ck_assert_int_lt(find_ev(&fx, 0, EV_END, inner->run_key, 0),
                     find_ev(&fx, 0, EV_END, outer->run_key, 0));
    ck_assert(run_ev_by_key(&fx, EV_METRIC, inner->run_key, "result")->number == 2);
    ck_assert(run_ev_by_key(&fx, EV_METRIC, outer->run_key, "result")->number == 4);
    ck_assert_ptr_null(mlt_active_run());
    fx_free(&fx);
}
END_TEST

START_TEST(tracked_body_marking_fail_ends_failed)
{
    fixture fx;
    fx_init_default(&fx);
    ck_assert_int_eq(tracked_marks_failed(7), 7);
    const event *s = start_named(&fx, "tracked_marks_failed");
    ck_assert_int_eq(get_ev(&fx, 0, EV_END, s->run_key, 0)->status, MLT_RUN_FAILED);
    ck_assert(run_ev_by_key(&fx, EV_METRIC, s->run_key, "result")->number == 7);
    fx_free(&fx);
}
END_TEST

START_TEST(static_tracked_function_is_tracked)
{
    fixture fx;
    fx_init_default(&fx);
    ck_assert_int_eq(tracked_static(5), 15);
    const event *s = start_named(&fx, "tracked_static");
    ck_assert_str_eq(param_of(&fx, s->run_key, "n"), "5");
    ck_assert(run_ev_by_key(&fx, EV_METRIC, s->run_key, "result")->number == 15);
    fx_free(&fx);
}
END_TEST

START_TEST(tracked_function_inside_scope_is_child_run)
{
    fixture fx;
    fx_init_default(&fx);
    MLT_WITH_RUN(fx.t, run, "scope")
    {
        tracked_static(1);
        const event *s = start_named(&fx, "tracked_static");
        ck_assert(s->has_parent);
        ck_assert_str_eq(s->parent_key, mlt_run_key(run));
    }
    fx_free(&fx);
}
END_TEST

/*
 * A tracked body reaches its run only through mlt_active_run(). When its own run could not start,
 * that must not be the caller's run: mlt_run_fail(mlt_active_run()) would then fail a run whose
 * block never called mlt_run_fail(), against MLT_WITH_RUN's "FAILED if the block called
 * mlt_run_fail(run)".
 */
START_TEST(tracked_body_whose_run_failed_to_start_does_not_fail_callers_run)
{
    fixture fx;
    fx_init_default(&fx);
    keybuf ko = {""};
    MLT_WITH_RUN(fx.t, run, "caller")
    {
        ko = key_of(run);
        rec_fail(&fx.rec[0], EV_START, MLT_ERR_NETWORK, 1); /* the tracked call's start only */
        ck_assert_int_eq(tracked_marks_failed(1), 1);
        ck_assert_uint_eq(count_ev(&fx, 0, EV_START), 2);
    }
    ck_assert_int_eq(get_ev(&fx, 0, EV_END, ko.s, 0)->status, MLT_RUN_FINISHED);
    fx_free(&fx);
}
END_TEST

START_TEST(untracked_body_does_not_fail_callers_run)
{
    fixture fx;
    fx_init(&fx, 1);
    mlt_tracker_set_default(NULL);
    keybuf ko = {""};
    MLT_WITH_RUN(fx.t, run, "caller")
    {
        ko = key_of(run);
        ck_assert_int_eq(tracked_marks_failed(2), 2);
    }
    ck_assert_int_eq(get_ev(&fx, 0, EV_END, ko.s, 0)->status, MLT_RUN_FINISHED);
    fx_free(&fx);
}
END_TEST

/* ---- default tracker ------------------------------------------------------------------------ */

START_TEST(default_tracker_is_set_got_and_cleared_by_its_close)
{
    mlt_tracker *a;
    mlt_tracker *b;
    ck_assert_int_eq(mlt_tracker_new(&a, NULL, NULL, 0), MLT_OK);
    ck_assert_int_eq(mlt_tracker_new(&b, NULL, NULL, 0), MLT_OK);
    mlt_tracker_set_default(NULL);
    ck_assert_ptr_null(mlt_tracker_get_default());
    mlt_tracker_set_default(a);
    ck_assert_ptr_eq(mlt_tracker_get_default(), a);
    mlt_tracker_set_default(NULL);
    ck_assert_ptr_null(mlt_tracker_get_default());
    mlt_tracker_set_default(a);
    /* Closing another tracker leaves the default alone. */
    ck_assert_int_eq(mlt_tracker_close(b, 0), MLT_OK);
    ck_assert_ptr_eq(mlt_tracker_get_default(), a);
    ck_assert_int_eq(mlt_tracker_close(a, 0), MLT_OK);
    ck_assert_ptr_null(mlt_tracker_get_default());
}
END_TEST

/* ---- scope: MLT_WITH_RUN -------------------------------------------------------------------- */

START_TEST(with_run_ends_finished_at_block_end)
{
    fixture fx;
    fx_init(&fx, 1);
    int runs = 0;
    keybuf k = {""};
    MLT_WITH_RUN(fx.t, run, "block")
    {
        runs++;
        ck_assert_ptr_nonnull(run);
        ck_assert_ptr_eq(mlt_active_run(), run);
        k = key_of(run);
        ck_assert_str_eq(mlt_run_name(run), "block");
        ck_assert_int_eq(mlt_log_metric(run, "m", 1.0, 0), MLT_OK);
        ck_assert_uint_eq(count_ev(&fx, 0, EV_END), 0);
    }
    ck_assert_int_eq(runs, 1);
    ck_assert_ptr_null(mlt_active_run());
    ck_assert_uint_eq(count_ev(&fx, 0, EV_END), 1);
    const event *s = get_ev(&fx, 0, EV_START, k.s, 0);
    ck_assert(!s->has_parent);
    ck_assert_int_eq(get_ev(&fx, 0, EV_END, k.s, 0)->status, MLT_RUN_FINISHED);
    fx_free(&fx);
}
END_TEST

START_TEST(with_run_ends_on_break)
{
    fixture fx;
    fx_init(&fx, 1);
    int runs = 0;
    bool after_break = false;
    keybuf k = {""};
    MLT_WITH_RUN(fx.t, run, "broken")
    {
        runs++;
        k = key_of(run);
        if (runs > 0) {
            break;
        }
        after_break = true;
    }
    ck_assert_int_eq(runs, 1);
    ck_assert(!after_break);
    ck_assert_ptr_null(mlt_active_run());
    ck_assert_int_eq(get_ev(&fx, 0, EV_END, k.s, 0)->status, MLT_RUN_FINISHED);
    fx_free(&fx);
}
END_TEST

START_TEST(with_run_marked_failed_then_break_ends_failed)
{
    fixture fx;
    fx_init(&fx, 1);
    keybuf k = {""};
    int runs = 0;
    MLT_WITH_RUN(fx.t, run, "fails")
    {
        runs++;
        k = key_of(run);
        mlt_run_fail(run);
        if (runs) {
            break;
        }
    }
    ck_assert_int_eq(runs, 1);
    ck_assert_int_eq(get_ev(&fx, 0, EV_END, k.s, 0)->status, MLT_RUN_FAILED);
    fx_free(&fx);
}
END_TEST

START_TEST(with_run_ends_on_continue_and_runs_once)
{
    fixture fx;
    fx_init(&fx, 1);
    int runs = 0;
    bool after_continue = false;
    keybuf k = {""};
    MLT_WITH_RUN(fx.t, run, "continued")
    {
        runs++;
        k = key_of(run);
        if (runs > 0) {
            continue;
        }
        after_continue = true;
    }
    ck_assert_int_eq(runs, 1);
    ck_assert(!after_continue);
    ck_assert_uint_eq(count_ev(&fx, 0, EV_START), 1);
    ck_assert_int_eq(get_ev(&fx, 0, EV_END, k.s, 0)->status, MLT_RUN_FINISHED);
    ck_assert_ptr_null(mlt_active_run());
    fx_free(&fx);
}
END_TEST

START_TEST(with_run_in_a_loop_is_one_run_per_iteration)
{
    /* break and continue act on the scope, never on the loop around it. */
    fixture fx;
    fx_init(&fx, 1);
    int iterations = 0;
    for (int i = 0; i < 3; i++) {
        MLT_WITH_RUN(fx.t, run, "iteration")
        {
            if (i == 1) {
                break;
            }
            if (i == 2) {
                continue;
            }
            mlt_log_metric(run, "i", i, i);
        }
        iterations++;
    }
    ck_assert_int_eq(iterations, 3);
    ck_assert_uint_eq(count_ev(&fx, 0, EV_START), 3);
    ck_assert_uint_eq(count_ev(&fx, 0, EV_END), 3);
    ck_assert_uint_eq(count_ev(&fx, 0, EV_METRIC), 1);
    fx_free(&fx);
}
END_TEST

START_TEST(with_run_nested_is_child_run)
{
    /* Any variable name will do, and nested scopes need distinct ones. */
    fixture fx;
    fx_init(&fx, 1);
    keybuf ko = {""};
    keybuf ki = {""};
    MLT_WITH_RUN(fx.t, outer, "outer")
    {
        ko = key_of(outer);
        MLT_WITH_RUN(fx.t, inner, "inner")
        {
            ki = key_of(inner);
            ck_assert_ptr_eq(mlt_run_parent(inner), outer);
            ck_assert_ptr_eq(mlt_active_run(), inner);
        }
        ck_assert_ptr_eq(mlt_active_run(), outer);
        ck_assert_uint_eq(count_ev(&fx, 0, EV_END), 1);
    }
    ck_assert_ptr_null(mlt_active_run());
    const event *s = get_ev(&fx, 0, EV_START, ki.s, 0);
    ck_assert(s->has_parent);
    ck_assert_str_eq(s->parent_key, ko.s);
    ck_assert_int_lt(find_ev(&fx, 0, EV_END, ki.s, 0), find_ev(&fx, 0, EV_END, ko.s, 0));
    ck_assert_int_eq(get_ev(&fx, 0, EV_END, ki.s, 0)->status, MLT_RUN_FINISHED);
    ck_assert_int_eq(get_ev(&fx, 0, EV_END, ko.s, 0)->status, MLT_RUN_FINISHED);
    fx_free(&fx);
}
END_TEST

START_TEST(scoped_run_ends_at_block_end_and_nests)
{
    fixture fx;
    fx_init(&fx, 1);
    keybuf ko;
    keybuf ki;
    {
        MLT_SCOPED_RUN(fx.t, outer, "outer");
        ko = key_of(outer);
        {
            MLT_SCOPED_RUN(fx.t, inner, "inner");
            ki = key_of(inner);
            ck_assert_ptr_eq(mlt_run_parent(inner), outer);
            ck_assert_ptr_eq(mlt_active_run(), inner);
        }
        ck_assert_uint_eq(count_ev(&fx, 0, EV_END), 1);
        ck_assert_ptr_eq(mlt_active_run(), outer);
    }
    ck_assert_ptr_null(mlt_active_run());
    ck_assert_int_lt(find_ev(&fx, 0, EV_END, ki.s, 0), find_ev(&fx, 0, EV_END, ko.s, 0));
    ck_assert_str_eq(get_ev(&fx, 0, EV_START, ki.s, 0)->parent_key, ko.s);
    fx_free(&fx);
}
END_TEST

START_TEST(with_run_null_tracker_runs_block_with_null_run)
{
    int runs = 0;
    MLT_WITH_RUN(NULL, run, "no tracker")
    {
        runs++;
        ck_assert_ptr_null(run);
        ck_assert_ptr_null(mlt_active_run());
        ck_assert_str_ne(mlt_last_error(), "");
    }
    ck_assert_int_eq(runs, 1);
}
END_TEST

START_TEST(with_run_failed_start_runs_block_with_null_run)
{
    fixture fx;
    fx_init(&fx, 1);
    fx.rec[0].fail_msg = "no server";
    rec_fail(&fx.rec[0], EV_START, MLT_ERR_NETWORK, -1);
    int runs = 0;
    MLT_WITH_RUN(fx.t, run, "unstarted")
    {
        runs++;
        ck_assert_ptr_null(run);
        ck_assert_str_eq(mlt_last_error(), "no server");
    }
    ck_assert_int_eq(runs, 1);
    ck_assert_uint_eq(count_ev(&fx, 0, EV_END), 0);
    fx_free(&fx);
}
END_TEST

/* ---- scope: MLT_SCOPED_RUN ------------------------------------------------------------------ */

static keybuf g_scoped_key;

static int scoped_returns_early(mlt_tracker *t, bool fail, bool *reached_end)
{
    MLT_SCOPED_RUN(t, run, "early");
    g_scoped_key = key_of(run);
    ck_assert_ptr_eq(mlt_active_run(), run);
    if (fail) {
        mlt_run_fail(run);
    }
    if (run) {
        return 1;
    }
    *reached_end = true;
    return 0;
}

static int scoped_leaves_by_goto(mlt_tracker *t)
{
    int steps = 0;
    {
        MLT_SCOPED_RUN(t, run, "jumped");
        g_scoped_key = key_of(run);
        steps++;
        if (run) {
            goto out;
        }
        steps += 100;
    }
out:
    /* The run ended when the jump left its block. */
    ck_assert_ptr_null(mlt_active_run());
    return steps;
}

START_TEST(scoped_run_ends_on_early_return)
{
    fixture fx;
    fx_init(&fx, 1);
    bool reached = false;
    ck_assert_int_eq(scoped_returns_early(fx.t, false, &reached), 1);
    ck_assert(!reached);
    ck_assert_ptr_null(mlt_active_run());
    ck_assert_uint_eq(count_ev(&fx, 0, EV_END), 1);
    ck_assert_int_eq(get_ev(&fx, 0, EV_END, g_scoped_key.s, 0)->status, MLT_RUN_FINISHED);
    ck_assert_str_eq(get_ev(&fx, 0, EV_START, g_scoped_key.s, 0)->run_name, "early");
    fx_free(&fx);
}
END_TEST

START_TEST(scoped_run_ends_failed_if_marked)
{
    fixture fx;
    fx_init(&fx, 1);
    bool reached = false;
    ck_assert_int_eq(scoped_returns_early(fx.t, true, &reached), 1);
    ck_assert_int_eq(get_ev(&fx, 0, EV_END, g_scoped_key.s, 0)->status, MLT_RUN_FAILED);
    fx_free(&fx);
}
END_TEST

START_TEST(scoped_run_ends_on_goto_out_of_block)
{
    fixture fx;
    fx_init(&fx, 1);
    ck_assert_int_eq(scoped_leaves_by_goto(fx.t), 1);
    ck_assert_uint_eq(count_ev(&fx, 0, EV_END), 1);
    ck_assert_int_eq(get_ev(&fx, 0, EV_END, g_scoped_key.s, 0)->status, MLT_RUN_FINISHED);
    fx_free(&fx);
}
END_TEST

START_TEST(scoped_run_with_null_tracker_is_null)
{
    int ran = 0;
    {
        MLT_SCOPED_RUN(NULL, run, "nothing");
        ck_assert_ptr_null(run);
        ran = 1;
    }
    ck_assert_int_eq(ran, 1);
}
END_TEST

/* ---- threads -------------------------------------------------------------------------------- */

#define N_THREADS 4
#define N_PER_THREAD 2000 /* moderate: the suite also runs under valgrind */
#define N_SHARED_PARAMS 50

typedef struct worker {
    mlt_tracker *t;
    mlt_run *shared; /* the run to log to, or NULL: start one */
    int index;
    mlt_err err;   /* first failure */
    keybuf key;    /* the run logged to */
    keybuf parent; /* parent of a scope's run, "" if none */
} worker;

static void keep_first(worker *w, mlt_err err)
{
    if (err != MLT_OK && w->err == MLT_OK) {
        w->err = err;
    }
}

static void *metrics_worker(void *arg)
{
    worker *w = arg;
    mlt_run *run = w->shared;
    if (!run) {
        keep_first(w, mlt_run_start(&run, w->t, "worker"));
        if (!run) {
            return NULL;
        }
    }
    snprintf(w->key.s, sizeof w->key.s, "%s", mlt_run_key(run));
    for (int i = 0; i < N_PER_THREAD; i++) {
        keep_first(w, mlt_log_metric(run, "m", i, (int64_t)w->index * N_PER_THREAD + i));
        if (w->shared && i < N_SHARED_PARAMS) {
            char key[16];
            char value[16];
            snprintf(key, sizeof key, "p%d", i);
            snprintf(value, sizeof value, "v%d", i);
            keep_first(w, mlt_log_param(run, key, value));
        }
    }
    if (!w->shared) {
        keep_first(w, mlt_run_end(run, MLT_RUN_FINISHED));
    }
    return NULL;
}

static void run_workers(worker *w, mlt_tracker *t, mlt_run *shared, void *(*fn)(void *))
{
    pthread_t th[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        w[i] = (worker){.t = t, .shared = shared, .index = i};
        ck_assert_int_eq(pthread_create(&th[i], NULL, fn, &w[i]), 0);
    }
    for (int i = 0; i < N_THREADS; i++) {
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
        ck_assert_int_eq(w[i].err, MLT_OK);
    }
}

/* Asserts recorder rec saw each step in [lo, hi) exactly once as metric "m" of run_key. */
static void assert_each_step_once(const fixture *fx, int rec, const char *run_key, int64_t lo,
                                  int64_t hi)
{
    unsigned char *seen = calloc((size_t)(hi - lo), 1);
    ck_assert_ptr_nonnull(seen);
    size_t n = 0;
    for (size_t i = 0; i < fx->log.n; i++) {
        const event *e = &fx->log.ev[i];
        if (e->kind == EV_METRIC && e->rec == rec && strcmp(e->run_key, run_key) == 0) {
            ck_assert_int_ge(e->step, lo);
            ck_assert_int_lt(e->step, hi);
            ck_assert_int_eq(seen[e->step - lo], 0);
            ck_assert(e->number == (double)((e->step - lo) % N_PER_THREAD));
            seen[e->step - lo] = 1;
            n++;
        }
    }
    ck_assert_uint_eq(n, (size_t)(hi - lo));
    free(seen);
}

START_TEST(threads_logging_to_their_own_runs_deliver_every_event_once)
{
    fixture fx;
    fx_init(&fx, 1);
    worker w[N_THREADS];
    run_workers(w, fx.t, NULL, metrics_worker);
    ck_assert_uint_eq(count_ev(&fx, 0, EV_START), N_THREADS);
    ck_assert_uint_eq(count_ev(&fx, 0, EV_END), N_THREADS);
    ck_assert_uint_eq(count_ev(&fx, 0, EV_METRIC), (size_t)N_THREADS * N_PER_THREAD);
    for (int i = 0; i < N_THREADS; i++) {
        for (int j = i + 1; j < N_THREADS; j++) {
            ck_assert_str_ne(w[i].key.s, w[j].key.s);
        }
        int64_t lo = (int64_t)i * N_PER_THREAD;
        assert_each_step_once(&fx, 0, w[i].key.s, lo, lo + N_PER_THREAD);
        ck_assert_int_eq(get_ev(&fx, 0, EV_END, w[i].key.s, 0)->status, MLT_RUN_FINISHED);
    }
    ck_assert_uint_eq(mlt_tracker_error_count(fx.t), 0);
    fx_free(&fx);
}
END_TEST

START_TEST(threads_logging_to_one_run_deliver_every_event_once)
{
    fixture fx;
    fx_init(&fx, 2);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "shared"), MLT_OK);
    keybuf k = key_of(run);
    worker w[N_THREADS];
    run_workers(w, fx.t, run, metrics_worker);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);

    ck_assert_uint_eq(count_ev(&fx, 0, EV_METRIC), (size_t)N_THREADS * N_PER_THREAD);
    ck_assert_uint_eq(count_ev(&fx, 1, EV_METRIC), (size_t)N_THREADS * N_PER_THREAD);
    assert_each_step_once(&fx, 0, k.s, 0, (int64_t)N_THREADS * N_PER_THREAD);
    assert_each_step_once(&fx, 1, k.s, 0, (int64_t)N_THREADS * N_PER_THREAD);
    fx_free(&fx);
}
END_TEST

START_TEST(threads_logging_one_param_send_it_once)
{
    fixture fx;
    fx_init(&fx, 1);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "shared"), MLT_OK);
    worker w[N_THREADS];
    run_workers(w, fx.t, run, metrics_worker);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    ck_assert_uint_eq(count_ev(&fx, 0, EV_PARAM), N_SHARED_PARAMS);
    for (int i = 0; i < N_SHARED_PARAMS; i++) {
        char key[16];
        snprintf(key, sizeof key, "p%d", i);
        ck_assert_uint_eq(count_by_key(&fx, EV_PARAM, key), 1);
    }
    fx_free(&fx);
}
END_TEST

static void *scope_worker(void *arg)
{
    worker *w = arg;
    MLT_WITH_RUN(w->t, run, "thread scope")
    {
        if (!run || mlt_active_run() != run) {
            w->err = MLT_ERR_STATE;
            break;
        }
        snprintf(w->key.s, sizeof w->key.s, "%s", mlt_run_key(run));
        mlt_run *p = mlt_run_parent(run);
        snprintf(w->parent.s, sizeof w->parent.s, "%s", p ? mlt_run_key(p) : "");
        for (int i = 0; i < 100; i++) {
            keep_first(w, mlt_log_metric(run, "m", i, i));
        }
    }
    if (mlt_active_run() != NULL) {
        w->err = MLT_ERR_STATE;
    }
    return NULL;
}

START_TEST(active_run_is_per_thread)
{
    fixture fx;
    fx_init(&fx, 1);
    worker w[N_THREADS];
    MLT_WITH_RUN(fx.t, run, "main scope")
    {
        /* The workers' scopes are top-level: this thread's active run is not theirs. */
        run_workers(w, fx.t, NULL, scope_worker);
        ck_assert_ptr_eq(mlt_active_run(), run);
    }
    for (int i = 0; i < N_THREADS; i++) {
        ck_assert_str_eq(w[i].parent.s, "");
        ck_assert(!get_ev(&fx, 0, EV_START, w[i].key.s, 0)->has_parent);
        ck_assert_int_eq(get_ev(&fx, 0, EV_END, w[i].key.s, 0)->status, MLT_RUN_FINISHED);
    }
    ck_assert_uint_eq(count_ev(&fx, 0, EV_METRIC), N_THREADS * 100);
    fx_free(&fx);
}
END_TEST

/* ---- runs of another process (run_id / run_key) and system metrics ---- */

/* A fixture whose tracker is made with the given option name/value pairs (NULL-terminated). */
static void fx_init_opts(fixture *fx, const char *const *kv)
{
    memset(fx, 0, sizeof *fx);
    pthread_mutex_init(&fx->log.lock, NULL);
    mlt_options *o = mlt_options_new();
    char err[256] = "";
    for (size_t i = 0; kv[i]; i += 2) {
        ck_assert_msg(mlt_options_set(o, kv[i], kv[i + 1], err, sizeof err) == MLT_OK, "%s", err);
    }
    ck_assert_msg(mlt_tracker_new(&fx->t, o, err, sizeof err) == MLT_OK, "%s", err);
    mlt_options_free(o);
    fx->rec[0].log = &fx->log;
    ck_assert_int_eq(mlt_tracker_add_callbacks(fx->t, &rec_callbacks, &fx->rec[0]), MLT_OK);
}

START_TEST(run_key_option_attaches_top_level_runs_only)
{
    static const char *const kv[] = {"run_key", "wrapper-key-1", "run_id", "abc123", NULL};
    fixture fx;
    fx_init_opts(&fx, kv);
    mlt_run *run, *again, *child;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "ignored"), MLT_OK);
    ck_assert_str_eq(mlt_run_key(run), "wrapper-key-1");
    ck_assert_str_eq(mlt_run_id(run), "abc123");
    ck_assert_int_eq(mlt_run_start_child(&child, run, "child"), MLT_OK);
    ck_assert(is_uuid4(mlt_run_key(child)));
    ck_assert_ptr_null(mlt_run_id(child));
    ck_assert_str_eq(get_ev(&fx, 0, EV_START, mlt_run_key(child), 0)->parent_key, "wrapper-key-1");
    ck_assert_int_eq(mlt_run_end(child, MLT_RUN_FINISHED), MLT_OK);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    /* every top-level run is that run, as the Python client resumes MLFLOW_RUN_ID each time */
    ck_assert_int_eq(mlt_run_start(&again, fx.t, NULL), MLT_OK);
    ck_assert_str_eq(mlt_run_key(again), "wrapper-key-1");
    ck_assert_int_eq(mlt_run_end(again, MLT_RUN_FINISHED), MLT_OK);
    fx_free(&fx);
}
END_TEST

START_TEST(run_id_option_alone_attaches_with_a_fresh_key)
{
    static const char *const kv[] = {"run_id", "0123456789abcdef0123456789abcdef", NULL};
    fixture fx;
    fx_init_opts(&fx, kv);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, NULL), MLT_OK);
    ck_assert(is_uuid4(mlt_run_key(run)));
    ck_assert_str_eq(mlt_run_id(run), "0123456789abcdef0123456789abcdef");
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    fx_free(&fx);
}
END_TEST

/* The points of one system metric seen by the recorder for run_key, in order. */
static size_t sys_points(const fixture *fx, const char *run_key, const char *name, double *values,
                         int64_t *steps, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < fx->log.n; i++) {
        const event *e = &fx->log.ev[i];
        if (e->kind == EV_METRIC && strcmp(e->run_key, run_key) == 0 && strcmp(e->key, name) == 0 &&
            n < cap) {
            values[n] = e->number;
            steps[n++] = e->step;
        }
    }
    return n;
}

START_TEST(system_metrics_are_logged_under_mlflow_names_at_steps_0_1_2)
{
    static const char *const kv[] = {"system_metrics", "true", "system_metrics_interval", "0.05",
                                     NULL};
    fixture fx;
    fx_init_opts(&fx, kv);
    mlt_run *run, *child;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, "sys"), MLT_OK);
    ck_assert_int_eq(mlt_run_start_child(&child, run, "child"), MLT_OK);
    usleep(400 * 1000);
    keybuf k = key_of(run);
    keybuf ck = key_of(child);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    /* nothing is logged after the end: the end waited for the sampler */
    size_t ended_at = fx.log.n;
    usleep(150 * 1000);
    ck_assert_uint_eq(fx.log.n, ended_at);

    static const char *const names[] = {"system/cpu_utilization_percentage",
                                        "system/system_memory_usage_megabytes",
                                        "system/system_memory_usage_percentage"};
    double v[64];
    int64_t st[64];
    size_t n0 = sys_points(&fx, k.s, names[0], v, st, 64);
    ck_assert_msg(n0 >= 3, "only %zu samples in 400 ms at 50 ms", n0);
    for (size_t m = 0; m < 3; m++) {
        size_t n = sys_points(&fx, k.s, names[m], v, st, 64);
        ck_assert_uint_eq(n, n0);
        for (size_t i = 0; i < n; i++) {
            ck_assert_int_eq(st[i], (int64_t)i);
            ck_assert_msg(v[i] >= 0 && (m == 1 || v[i] <= 100.0), "%s = %g", names[m], v[i]);
        }
        if (m > 0) {
            ck_assert(v[0] > 0); /* some memory is in use */
        }
        ck_assert_uint_eq(sys_points(&fx, ck.s, names[m], v, st, 64), 0); /* children: none */
    }
    fx_free(&fx);
}
END_TEST

START_TEST(system_metrics_skip_attached_runs)
{
    static const char *const kv[] = {
        "system_metrics", "true", "system_metrics_interval", "0.02", "run_key",
        "someone-elses",  NULL};
    fixture fx;
    fx_init_opts(&fx, kv);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, fx.t, NULL), MLT_OK);
    usleep(150 * 1000);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    ck_assert_uint_eq(count_ev(&fx, 0, EV_METRIC), 0);
    fx_free(&fx);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tracker");
    /* tracker and callbacks */
    MLT_ADD_TEST(s, header_version_is_the_package_version);
    MLT_ADD_TEST(s, tracker_new_accepts_null_options);
    MLT_ADD_TEST(s, tracker_new_requires_out);
    MLT_ADD_TEST(s, tracker_close_null_is_ok);
    MLT_ADD_TEST(s, add_callbacks_rejects_unknown_version_and_null);
    MLT_ADD_TEST(s, add_callbacks_takes_versions_1_to_current_only);
    MLT_ADD_TEST(s, a_version_1_struct_is_read_only_to_its_end);
    MLT_ADD_TEST(s, add_callbacks_accepts_all_null_hooks);
    MLT_ADD_TEST(s, callbacks_see_every_event_in_registration_order);
    MLT_ADD_TEST(s, add_callbacks_after_first_run_is_state_error);
    MLT_ADD_TEST(s, add_callbacks_still_allowed_after_refused_run_name);
    MLT_ADD_TEST(s, on_close_called_once_with_userdata_after_flush);
    MLT_ADD_TEST(s, flush_passes_timeout_to_callbacks);
    MLT_ADD_TEST(s, close_flushes_with_its_timeout);
    MLT_ADD_TEST(s, failing_flush_returns_first_error_and_flushes_the_rest);
    MLT_ADD_TEST(s, close_returns_flush_error_and_still_closes);
    /* runs */
    MLT_ADD_TEST(s, run_start_gives_uuid4_key_and_copies_name);
    MLT_ADD_TEST(s, run_keys_are_unique);
    MLT_ADD_TEST(s, run_start_accepts_null_and_empty_names);
    MLT_ADD_TEST(s, run_start_refuses_bad_names_without_callbacks);
    MLT_ADD_TEST(s, run_start_requires_tracker_and_out);
    MLT_ADD_TEST(s, child_runs_carry_parent_key);
    MLT_ADD_TEST(s, run_end_reports_status_end_time_and_duration);
    MLT_ADD_TEST(s, run_end_ends_open_children_first_as_killed);
    MLT_ADD_TEST(s, ended_child_is_not_ended_again_with_parent);
    MLT_ADD_TEST(s, tracker_close_kills_open_runs_children_first_then_flushes);
    MLT_ADD_TEST(s, run_fail_then_finished_ends_failed);
    MLT_ADD_TEST(s, run_end_status_failed_and_killed_pass_through);
    MLT_ADD_TEST(s, run_status_names_are_mlflow_names);
    MLT_ADD_TEST(s, run_key_option_attaches_top_level_runs_only);
    MLT_ADD_TEST(s, run_id_option_alone_attaches_with_a_fresh_key);
    MLT_ADD_TEST(s, system_metrics_are_logged_under_mlflow_names_at_steps_0_1_2);
    MLT_ADD_TEST(s, system_metrics_skip_attached_runs);
    /* failing callbacks */
    MLT_ADD_TEST(s, failing_run_start_returns_error_and_kills_for_earlier_callbacks);
    MLT_ADD_TEST(s, failing_run_start_leaves_callback_message);
    MLT_ADD_TEST(s, failing_run_start_of_child_leaves_parent_open);
    MLT_ADD_TEST(s, failing_metric_returns_first_error_and_calls_the_rest);
    MLT_ADD_TEST(s, failing_later_callback_message_is_kept_over_earlier_success);
    MLT_ADD_TEST(s, failing_hook_without_message_gets_generic_message_naming_hook);
    MLT_ADD_TEST(s, failing_run_end_still_ends_and_frees_the_run);
    MLT_ADD_TEST(s, run_end_returns_child_end_error);
    MLT_ADD_TEST(s, tracker_close_returns_error_of_killed_run);
    /* validation */
    MLT_ADD_TEST(s, invalid_keys_are_refused_naming_the_key);
    MLT_ADD_TEST(s, too_long_values_are_refused_naming_the_key);
    MLT_ADD_TEST(s, invalid_utf8_is_refused_naming_the_key);
    MLT_ADD_TEST(s, negative_timestamp_is_refused_without_dispatch);
    MLT_ADD_TEST(s, negative_timestamp_message_names_the_key);
    MLT_ADD_TEST(s, error_count_counts_each_failing_call);
    MLT_ADD_TEST(s, tracker_last_error_is_latest_counted_failure_with_its_name);
    MLT_ADD_TEST(s, tracker_last_error_is_readable_from_any_thread);
    /* params, metrics, tags */
    MLT_ADD_TEST(s, param_same_value_again_is_ok_and_not_sent_again);
    MLT_ADD_TEST(s, param_other_value_is_conflict_and_not_sent);
    MLT_ADD_TEST(s, params_belong_to_their_run);
    MLT_ADD_TEST(s, param_whose_dispatch_failed_can_be_logged_again);
    MLT_ADD_TEST(s, many_params_are_all_remembered);
    MLT_ADD_TEST(s, log_metric_stamps_current_time);
    MLT_ADD_TEST(s, log_metric_at_passes_timestamp_and_any_int64_step);
    MLT_ADD_TEST(s, metrics_accept_nan_and_infinities);
    MLT_ADD_TEST(s, same_metric_key_is_sent_every_time);
    MLT_ADD_TEST(s, keys_formatted_into_one_buffer_are_logged_by_their_text);
    MLT_ADD_TEST(s, tag_is_sent_on_every_write);
    /* NULL runs, UI address */
    MLT_ADD_TEST(s, null_run_is_invalid_arg_for_every_call);
    MLT_ADD_TEST(s, queue_stats_takes_versions_1_to_current_only);
    MLT_ADD_TEST(s, ui_url_without_mlflow_callback_is_state_error);
    MLT_ADD_TEST(s, ui_url_is_built_once_ids_are_known);
    /* mlt_track */
    MLT_ADD_TEST(s, track_logs_params_and_runs_fn_with_its_run_and_arg);
    MLT_ADD_TEST(s, track_nonzero_result_ends_failed);
    MLT_ADD_TEST(s, track_fn_marking_fail_ends_failed);
    MLT_ADD_TEST(s, track_inside_fn_is_child_run);
    MLT_ADD_TEST(s, track_with_null_tracker_still_runs_fn);
    MLT_ADD_TEST(s, track_requires_fn);
    MLT_ADD_TEST(s, track_invalid_param_returns_error_but_runs_fn);
    MLT_ADD_TEST(s, track_failed_start_runs_fn_with_null_run);
    MLT_ADD_TEST(s, track_returns_error_of_return_code_tag);
    MLT_ADD_TEST(s, track_logs_duration_even_if_tag_fails);
    MLT_ADD_TEST(s, track_returns_error_of_duration_metric);
    MLT_ADD_TEST(s, track_returns_error_of_run_end);
    /* MLT_TRACKED */
    MLT_ADD_TEST(s, tracked_function_is_a_run_with_params_result_and_duration);
    MLT_ADD_TEST(s, tracked_doubles_are_logged_as_shortest_round_trip_text);
    MLT_ADD_TEST(s, tracked_args_of_every_type_are_formatted_as_documented);
    MLT_ADD_TEST(s, tracked_function_takes_up_to_eight_args);
    MLT_ADD_TEST(s, tracked_void_function_logs_no_result);
    MLT_ADD_TEST(s, tracked_function_without_default_tracker_still_runs);
    MLT_ADD_TEST(s, tracked_calling_tracked_is_child_run);
    MLT_ADD_TEST(s, tracked_body_marking_fail_ends_failed);
    MLT_ADD_TEST(s, static_tracked_function_is_tracked);
    MLT_ADD_TEST(s, tracked_function_inside_scope_is_child_run);
    MLT_ADD_TEST(s, tracked_body_whose_run_failed_to_start_does_not_fail_callers_run);
    MLT_ADD_TEST(s, untracked_body_does_not_fail_callers_run);
    MLT_ADD_TEST(s, default_tracker_is_set_got_and_cleared_by_its_close);
    /* MLT_WITH_RUN */
    MLT_ADD_TEST(s, with_run_ends_finished_at_block_end);
    MLT_ADD_TEST(s, with_run_ends_on_break);
    MLT_ADD_TEST(s, with_run_marked_failed_then_break_ends_failed);
    MLT_ADD_TEST(s, with_run_ends_on_continue_and_runs_once);
    MLT_ADD_TEST(s, with_run_in_a_loop_is_one_run_per_iteration);
    MLT_ADD_TEST(s, with_run_nested_is_child_run);
    MLT_ADD_TEST(s, with_run_null_tracker_runs_block_with_null_run);
    MLT_ADD_TEST(s, with_run_failed_start_runs_block_with_null_run);
    /* MLT_SCOPED_RUN */
    MLT_ADD_TEST(s, scoped_run_ends_on_early_return);
    MLT_ADD_TEST(s, scoped_run_ends_failed_if_marked);
    MLT_ADD_TEST(s, scoped_run_ends_on_goto_out_of_block);
    MLT_ADD_TEST(s, scoped_run_ends_at_block_end_and_nests);
    MLT_ADD_TEST(s, scoped_run_with_null_tracker_is_null);
    /* threads */
    MLT_ADD_TEST(s, threads_logging_to_their_own_runs_deliver_every_event_once);
    MLT_ADD_TEST(s, threads_logging_to_one_run_deliver_every_event_once);
    MLT_ADD_TEST(s, threads_logging_one_param_send_it_once);
    MLT_ADD_TEST(s, active_run_is_per_thread);
    MLT_ADD_TEST(s, calls_on_an_ended_run_are_refused_naming_the_run);
    MLT_ADD_TEST(s, tracked_null_string_args_are_logged_as_none);
    MLT_ADD_TEST(s, an_unnamed_ended_run_is_named_by_its_key);
    MLT_ADD_TEST(s, children_ended_with_their_parent_stay_valid_handles);
    MLT_ADD_TEST(s, an_ended_runs_points_are_refused_on_the_hot_path_too);
    return mlt_test_run_suite(s);
}
