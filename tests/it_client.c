/*
 * it_client.c - the integration test client, driven by the Python tests in tests/integration
 * against a real MLflow server. It uses only the public header.
 *
 *   it_client [--ledger PATH] SCENARIO [ARGS...]
 *
 * The tracker is configured from the MLflow environment variables (MLFLOW_TRACKING_URI,
 * MLFLOW_EXPERIMENT_NAME, ..., and MLTRACK_QUEUE_DIR for the durable queue) with
 * mlt_options_from_env + a delivery callback + mlt_tracker_new + mlt_tracker_add_mlflow, or with
 * mlt_tracker_from_env (no delivery callback) when MLTRACK_IT_SETUP=from_env.
 *
 * The MLflow callback only appends to the durable queue; a sender thread delivers. So a run's id
 * is known only once delivered: whenever it_client reads run ids (labels, "run id:" lines) it
 * first calls mlt_tracker_flush(t, MLTRACK_IT_FLUSH_MS, default 60000), which returns MLT_OK once
 * everything logged before it is delivered (acknowledged or rejected) and the ids of open runs are
 * known. At the end it flushes once more (MLTRACK_IT_CLOSE_MS, default 60000), records the
 * queue's counters and closes the tracker within MLTRACK_IT_CLOSE_MS.
 *
 * Everything it does is written to a LEDGER (PATH, else $MLTRACK_IT_LEDGER, else none), one JSON
 * object per line, with its own fprintf: floats as "%.17g" (always with a '.' or an exponent, so
 * -0.0 stays a float), NaN and +/-Inf as the strings "NaN", "Infinity", "-Infinity"; int64 in
 * decimal. Strings are written byte for byte (only '"', '\\' and control characters escaped), so a
 * reader decoding with errors="surrogateescape" gets back invalid UTF-8 too. Lines:
 *   {"ev":"setup","how":"options"|"from_env","delivery_callback":0|1}
 *   {"ev":"options", ...}                       the options as read from the environment
 *   {"ev":"cb_start"|"cb_param"|"cb_metric"|"cb_tag"|"cb_end", ...}
 *                                               what a callback of our own saw (added after the
 *                                               MLflow callback), with the timestamps the library
 *                                               stamped; run_id is what mlt_run_id() said then
 *                                               (null while the run is not delivered)
 *   {"ev":"delivery","op":"create_run"|"log"|"end_run","state":"acknowledged"|"rejected",
 *    "run_key":..,"run_id":..,"experiment_id":..,"records":N,"message":..}
 *                                               each report of the delivery callback (sender
 *                                               thread; options setup only)
 *   {"ev":"label","label":..,"run_key":..,"run_id":..,"run_name":..,"flush":"MLT_OK"|..,
 *    "flush_err":..}                            a run of the scenario, by role, with its id read
 *                                               after a flush
 *   {"ev":"flush","why":..,"rc":..,"err":..}     other flushes (before "run id:", the final one)
 *   {"ev":"call","op":..,"run_key":..,"rc":"MLT_OK"|..,"err":..}  each call and its result
 *   {"ev":"stats","queued":N,"sent":N,"acknowledged":N,"retried":N,"rejected":N,
 *    "bytes_pending":N}                         mlt_tracker_queue_stats after the final flush
 *   {"ev":"close","rc":..,"err":..}              mlt_tracker_close's result
 *   {"ev":"exit","code":N,"error_count":N,"failures":N,"rejected":N}
 *
 * Exit codes: 0 success, everything delivered and nothing rejected; 1 a call that had to succeed
 * failed (message on stderr); 2 the tracker could not be set up; 3 the (first) run could not
 * start; 4 the server rejected records for good (dead letters); 5 not everything was delivered by
 * the end of mlt_tracker_close (left in the queue for `mltrack sync`); 64 usage. Errors are
 * printed to stderr as "it_client: ...: MLT_ERR_NAME: message".
 */
#include <mltrack.h>

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXIT_FAILED 1
#define EXIT_SETUP 2
#define EXIT_START 3
#define EXIT_REJECTED 4
#define EXIT_QUEUED 5
#define EXIT_USAGE 64

#if defined(__GNUC__) || defined(__clang__)
#define IT_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define IT_PRINTF(f, a)
#endif

/* ---- failures ----------------------------------------------------------------------------------
 */

static atomic_int failures;

static void fail(const char *fmt, ...) IT_PRINTF(1, 2);

static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("it_client: FAIL: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    atomic_fetch_add(&failures, 1);
}

/* ---- the ledger --------------------------------------------------------------------------------
 */

static FILE *led;
static pthread_mutex_t led_lock = PTHREAD_MUTEX_INITIALIZER;
static int led_broken;

static void j_str(const char *s)
{
    if (!s) {
        fputs("null", led);
        return;
    }
    fputc('"', led);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned c = *p;
        if (c == '"' || c == '\\') {
            fputc('\\', led);
            fputc((int)c, led);
        } else if (c < 0x20 || c == 0x7f) {
            fprintf(led, "\\u%04x", c);
        } else {
            fputc((int)c, led);
        }
    }
    fputc('"', led);
}

static void j_num(double v)
{
    if (isnan(v)) {
        fputs("\"NaN\"", led);
    } else if (isinf(v)) {
        fputs(v > 0 ? "\"Infinity\"" : "\"-Infinity\"", led);
    } else {
        char buf[64];
        snprintf(buf, sizeof buf, "%.17g", v);
        fputs(buf, led);
        if (!strpbrk(buf, ".eE")) {
            fputs(".0", led);
        }
    }
}

/* A ledger line: led_begin, led_* members, led_end. The lock is held in between. */
static void led_begin(const char *ev)
{
    pthread_mutex_lock(&led_lock);
    if (led) {
        fputs("{\"ev\":", led);
        j_str(ev);
    }
}

static void led_s(const char *key, const char *value)
{
    if (led) {
        fputc(',', led);
        j_str(key);
        fputc(':', led);
        j_str(value);
    }
}

static void led_d(const char *key, double value)
{
    if (led) {
        fputc(',', led);
        j_str(key);
        fputc(':', led);
        j_num(value);
    }
}

static void led_i(const char *key, int64_t value)
{
    if (led) {
        fputc(',', led);
        j_str(key);
        fprintf(led, ":%" PRId64, value);
    }
}

static bool led_end(void)
{
    bool ok = true;
    if (led) {
        fputs("}\n", led);
        if (fflush(led) != 0 || ferror(led)) {
            ok = false;
            if (!led_broken) {
                led_broken = 1;
                fprintf(stderr, "it_client: FAIL: writing the ledger failed: %s\n",
                        strerror(errno));
                atomic_fetch_add(&failures, 1);
            }
        }
    }
    pthread_mutex_unlock(&led_lock);
    return ok;
}

/* ---- the ledger callback: what the library dispatched, with its timestamps --------------------
 */

static mlt_err cb_start(const mlt_run_info *info, void *ud)
{
    (void)ud;
    led_begin("cb_start");
    led_s("run_key", info->run_key);
    led_s("run_id", mlt_run_id(info->run));
    led_s("run_name", info->run_name);
    led_s("parent_run_key", info->parent_run_key);
    led_i("start_time", info->start_time_ms);
    return led_end() ? MLT_OK : MLT_ERR_CALLBACK;
}

static mlt_err cb_param(const mlt_run_info *info, const char *key, const char *value, void *ud)
{
    (void)ud;
    led_begin("cb_param");
    led_s("run_key", info->run_key);
    led_s("key", key);
    led_s("value", value);
    return led_end() ? MLT_OK : MLT_ERR_CALLBACK;
}

static mlt_err cb_metric(const mlt_run_info *info, const char *key, double value, int64_t step,
                         int64_t timestamp_ms, void *ud)
{
    (void)ud;
    led_begin("cb_metric");
    led_s("run_key", info->run_key);
    led_s("key", key);
    led_d("value", value);
    led_i("step", step);
    led_i("timestamp", timestamp_ms);
    return led_end() ? MLT_OK : MLT_ERR_CALLBACK;
}

static mlt_err cb_tag(const mlt_run_info *info, const char *key, const char *value, void *ud)
{
    (void)ud;
    led_begin("cb_tag");
    led_s("run_key", info->run_key);
    led_s("key", key);
    led_s("value", value);
    return led_end() ? MLT_OK : MLT_ERR_CALLBACK;
}

static mlt_err cb_end(const mlt_run_info *info, mlt_run_status status, double duration_s, void *ud)
{
    (void)ud;
    led_begin("cb_end");
    led_s("run_key", info->run_key);
    led_s("run_id", mlt_run_id(info->run));
    led_s("status", mlt_run_status_name(status));
    led_i("start_time", info->start_time_ms);
    led_i("end_time", info->end_time_ms);
    led_d("duration_s", duration_s);
    return led_end() ? MLT_OK : MLT_ERR_CALLBACK;
}

/* The message of the call that just returned err, copied before any other mlt_ call. */
static void take_error(mlt_err err, char *buf, size_t len)
{
    snprintf(buf, len, "%s", err == MLT_OK ? "" : mlt_last_error());
}

/* ---- the delivery callback: what the sender thread delivered, and the server's answer ----------
 */

static atomic_ullong rejected_records; /* records the delivery callback saw rejected */

static void on_delivery(const mlt_delivery *d, void *ud)
{
    (void)ud;
    static const char *const ops[] = {"create_run", "log", "end_run"};
    const char *op = (unsigned)d->op < sizeof ops / sizeof ops[0] ? ops[d->op] : "?";
    if (d->state == MLT_DELIVERY_REJECTED) {
        atomic_fetch_add(&rejected_records, d->records);
    }
    led_begin("delivery");
    led_s("op", op);
    led_s("state", d->state == MLT_DELIVERY_ACKNOWLEDGED ? "acknowledged"
                   : d->state == MLT_DELIVERY_REJECTED   ? "rejected"
                                                         : "?");
    led_s("run_key", d->run_key);
    led_s("run_id", d->run_id);
    led_s("experiment_id", d->experiment_id);
    led_i("records", d->records);
    led_s("message", d->message);
    led_end();
}

/* ---- flushes ------------------------------------------------------------------------------------
 */

/* A timeout in ms from the environment variable name (def when unset or empty). */
static int env_ms(const char *name, int def)
{
    const char *v = getenv(name);
    if (!v || !*v) {
        return def;
    }
    char *endp = NULL;
    errno = 0;
    long ms = strtol(v, &endp, 10);
    if (errno || endp == v || *endp || ms < -1 || ms > INT_MAX) {
        fprintf(stderr, "it_client: %s='%s' is not a timeout in ms; using %d\n", name, v, def);
        return def;
    }
    return (int)ms;
}

static int flush_ms(void)
{
    return env_ms("MLTRACK_IT_FLUSH_MS", 60000);
}

static int close_ms(void)
{
    return env_ms("MLTRACK_IT_CLOSE_MS", 60000);
}

/* Records rejected by the server so far, as the delivery callback and the queue's counters say. */
static unsigned long long rejected_so_far(mlt_tracker *t)
{
    mlt_queue_stats st = MLT_QUEUE_STATS_INIT;
    unsigned long long n = atomic_load(&rejected_records);
    if (mlt_tracker_queue_stats(&st, t) == MLT_OK && st.rejected > n) {
        n = st.rejected;
    }
    return n;
}

/* mlt_tracker_flush with the message of its failure copied to msg. A result other than MLT_OK,
 * MLT_ERR_QUEUED (no server: the data stays queued) or MLT_ERR_TIMEOUT (a slow server) is a
 * failure of the test. */
static mlt_err flush(mlt_tracker *t, int timeout_ms, char *msg, size_t len)
{
    mlt_err rc = mlt_tracker_flush(t, timeout_ms);
    take_error(rc, msg, len);
    if (rc != MLT_OK && rc != MLT_ERR_TIMEOUT && rc != MLT_ERR_QUEUED) {
        fail("mlt_tracker_flush: %s: %s", mlt_err_name(rc), msg);
    }
    return rc;
}

/* A flush recorded in the ledger as {"ev":"flush","why":why,...}. */
static mlt_err flush_rec(mlt_tracker *t, int timeout_ms, const char *why)
{
    char msg[1024];
    mlt_err rc = flush(t, timeout_ms, msg, sizeof msg);
    led_begin("flush");
    led_s("why", why);
    led_s("rc", mlt_err_name(rc));
    led_s("err", msg);
    led_end();
    return rc;
}

/* ---- recorded calls -------------------------------------------------------------------------- */

/*
 * Labels a run (open, so its handle is valid): flushes first, so that the id is known once the
 * flush returns MLT_OK - unless the server rejected the run's creation (a dead letter). A flush
 * that times out (no server) leaves the id null.
 */
static void record_label(mlt_run *run, const char *label)
{
    char msg[1024];
    mlt_err rc = flush(mlt_run_tracker(run), flush_ms(), msg, sizeof msg);
    const char *id = mlt_run_id(run);
    char run_id[128];
    snprintf(run_id, sizeof run_id, "%s", id ? id : "");
    if (rc == MLT_OK && !id && rejected_so_far(mlt_run_tracker(run)) == 0) {
        fail("run %s (%s): no run id after mlt_tracker_flush returned MLT_OK, and nothing was "
             "rejected",
             label, mlt_run_key(run));
    }
    led_begin("label");
    led_s("label", label);
    led_s("run_key", mlt_run_key(run));
    led_s("run_id", id ? run_id : NULL);
    led_s("run_name", mlt_run_name(run));
    led_s("flush", mlt_err_name(rc));
    led_s("flush_err", msg);
    led_end();
}

/* Starts a run (a child when parent is set) and labels it; prints the failure. */
static mlt_err start(mlt_tracker *t, mlt_run *parent, const char *name, const char *label,
                     mlt_run **out)
{
    *out = NULL;
    mlt_err rc = parent ? mlt_run_start_child(out, parent, name) : mlt_run_start(out, t, name);
    char msg[1024];
    take_error(rc, msg, sizeof msg);
    led_begin("call");
    led_s("op", "start");
    led_s("label", label);
    led_s("run_name", name);
    led_s("run_key", rc == MLT_OK ? mlt_run_key(*out) : NULL);
    led_s("rc", mlt_err_name(rc));
    led_s("err", msg);
    led_end();
    if (rc != MLT_OK) {
        fprintf(stderr, "it_client: run start failed: %s: %s\n", mlt_err_name(rc), msg);
        return rc;
    }
    record_label(*out, label);
    return MLT_OK;
}

static void record_call(const char *op, mlt_run *run, const char *key, mlt_err rc, const char *msg)
{
    (void)op;
    led_s("run_key", mlt_run_key(run));
    led_s("key", key);
    led_s("rc", mlt_err_name(rc));
    led_s("err", msg);
}

static mlt_err param(mlt_run *run, const char *key, const char *value, bool must)
{
    mlt_err rc = mlt_log_param(run, key, value);
    char msg[1024];
    take_error(rc, msg, sizeof msg);
    led_begin("call");
    led_s("op", "param");
    led_s("value", value);
    record_call("param", run, key, rc, msg);
    led_end();
    if (must && rc != MLT_OK) {
        fail("log_param '%.80s': %s: %s", key, mlt_err_name(rc), msg);
    }
    return rc;
}

static mlt_err tag(mlt_run *run, const char *key, const char *value, bool must)
{
    mlt_err rc = mlt_set_tag(run, key, value);
    char msg[1024];
    take_error(rc, msg, sizeof msg);
    led_begin("call");
    led_s("op", "tag");
    led_s("value", value);
    record_call("tag", run, key, rc, msg);
    led_end();
    if (must && rc != MLT_OK) {
        fail("set_tag '%.80s': %s: %s", key, mlt_err_name(rc), msg);
    }
    return rc;
}

/* ts < 0 with explicit == false: mlt_log_metric (stamped by the library). */
static mlt_err metric_impl(mlt_run *run, const char *key, double value, int64_t step,
                           bool explicit_ts, int64_t ts, bool must)
{
    mlt_err rc = explicit_ts ? mlt_log_metric_at(run, key, value, step, ts)
                             : mlt_log_metric(run, key, value, step);
    char msg[1024];
    take_error(rc, msg, sizeof msg);
    led_begin("call");
    led_s("op", "metric");
    led_d("value", value);
    led_i("step", step);
    if (explicit_ts) {
        led_i("ts", ts);
    }
    record_call("metric", run, key, rc, msg);
    led_end();
    if (must && rc != MLT_OK) {
        fail("log_metric '%.80s': %s: %s", key, mlt_err_name(rc), msg);
    }
    return rc;
}

static mlt_err metric(mlt_run *run, const char *key, double value, int64_t step, bool must)
{
    return metric_impl(run, key, value, step, false, 0, must);
}

static mlt_err metric_at(mlt_run *run, const char *key, double value, int64_t step, int64_t ts,
                         bool must)
{
    return metric_impl(run, key, value, step, true, ts, must);
}

/* Ends a run (the handle is gone afterwards). */
static mlt_err end(mlt_run *run, mlt_run_status status, bool must)
{
    char key[64];
    snprintf(key, sizeof key, "%s", mlt_run_key(run) ? mlt_run_key(run) : "");
    mlt_err rc = mlt_run_end(run, status);
    char msg[1024];
    take_error(rc, msg, sizeof msg);
    led_begin("call");
    led_s("op", "end");
    led_s("run_key", key);
    led_s("status", mlt_run_status_name(status));
    led_s("rc", mlt_err_name(rc));
    led_s("err", msg);
    led_end();
    if (must && rc != MLT_OK) {
        fail("run_end %s: %s: %s", key, mlt_err_name(rc), msg);
    }
    return rc;
}

/* ---- setup -------------------------------------------------------------------------------------
 */

static void log_to_stderr(int level, const char *message, void *userdata)
{
    (void)userdata;
    fprintf(stderr, "it_client: [mltrack log %d] %s\n", level, message);
}

static void record_options(const mlt_options *o)
{
    static const char *const names[] = {
        "tracking_uri", "experiment_name", "experiment_id",  "token",   "username",  "password",
        "max_retries",  "backoff_factor",  "backoff_jitter", "timeout", "queue_dir", "fsync",
    };
    led_begin("options");
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        led_s(names[i], mlt_options_get(o, names[i]));
    }
    led_end();
}

static const mlt_callbacks ledger_cb = {
    .version = MLT_CALLBACKS_VERSION,
    .on_run_start = cb_start,
    .on_param = cb_param,
    .on_metric = cb_metric,
    .on_tag = cb_tag,
    .on_run_end = cb_end,
};

static int setup(mlt_tracker **out)
{
    char err[1024] = "";
    mlt_err rc;
    mlt_tracker *t = NULL;
    const char *how = getenv("MLTRACK_IT_SETUP");
    if (how && strcmp(how, "from_env") == 0) {
        rc = mlt_tracker_from_env(&t, err, sizeof err);
        if (rc != MLT_OK) {
            fprintf(stderr, "it_client: tracker from env failed: %s: %s\n", mlt_err_name(rc), err);
            return EXIT_SETUP;
        }
        led_begin("setup");
        led_s("how", "from_env");
        led_i("delivery_callback", 0);
        led_end();
    } else {
        mlt_options *o = mlt_options_new();
        if (!o) {
            fprintf(stderr, "it_client: options: out of memory\n");
            return EXIT_SETUP;
        }
        rc = mlt_options_from_env(o, err, sizeof err);
        if (rc != MLT_OK) {
            fprintf(stderr, "it_client: options from env failed: %s: %s\n", mlt_err_name(rc), err);
            mlt_options_free(o);
            return EXIT_SETUP;
        }
        mlt_options_set_logger(o, log_to_stderr, NULL);
        rc = mlt_options_set_delivery_callback(o, on_delivery, NULL);
        if (rc != MLT_OK) {
            fprintf(stderr, "it_client: delivery callback failed: %s\n", mlt_err_name(rc));
            mlt_options_free(o);
            return EXIT_SETUP;
        }
        led_begin("setup");
        led_s("how", "options");
        led_i("delivery_callback", 1);
        led_end();
        record_options(o);
        rc = mlt_tracker_new(&t, o, err, sizeof err);
        mlt_options_free(o);
        if (rc != MLT_OK) {
            fprintf(stderr, "it_client: tracker failed: %s: %s\n", mlt_err_name(rc), err);
            return EXIT_SETUP;
        }
        rc = mlt_tracker_add_mlflow(t, err, sizeof err);
        if (rc != MLT_OK) {
            fprintf(stderr, "it_client: mlflow callback failed: %s: %s\n", mlt_err_name(rc), err);
            mlt_tracker_close(t, 0);
            return EXIT_SETUP;
        }
    }
    rc = mlt_tracker_add_callbacks(t, &ledger_cb, NULL);
    if (rc != MLT_OK) {
        fprintf(stderr, "it_client: ledger callback failed: %s: %s\n", mlt_err_name(rc),
                mlt_last_error());
        mlt_tracker_close(t, 0);
        return EXIT_SETUP;
    }
    *out = t;
    return 0;
}

/* ---- text helpers ------------------------------------------------------------------------------
 */

/*
 * A text of exactly n_cp code points: prefix (ASCII), then "a", "é", "€", "𝄞" in turn, and a
 * last "𝄞" (a 4-byte character right at the limit). The Python side builds the same text.
 * NULL when out of memory.
 */
static char *make_text(const char *prefix, size_t n_cp)
{
    static const char *const cycle[] = {"a", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9d\x84\x9e"};
    size_t plen = strlen(prefix);
    char *s = malloc(plen + 4 * n_cp + 1);
    if (!s) {
        return NULL;
    }
    memcpy(s, prefix, plen);
    size_t o = plen, cps = plen;
    for (size_t i = 0; cps + 1 < n_cp; i++, cps++) {
        const char *c = cycle[i % 4];
        size_t cl = strlen(c);
        memcpy(s + o, c, cl);
        o += cl;
    }
    if (cps < n_cp) {
        memcpy(s + o, cycle[3], 4);
        o += 4;
    }
    s[o] = '\0';
    return s;
}

/* n copies of the UTF-8 character c. */
static char *repeat(const char *c, size_t n)
{
    size_t cl = strlen(c);
    char *s = malloc(cl * n + 1);
    if (!s) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        memcpy(s + i * cl, c, cl);
    }
    s[cl * n] = '\0';
    return s;
}

static bool parse_long(const char *s, long lo, long hi, long *out)
{
    char *endp = NULL;
    errno = 0;
    long v = strtol(s, &endp, 10);
    if (errno || endp == s || *endp || v < lo || v > hi) {
        fprintf(stderr, "it_client: '%s' is not a number from %ld to %ld\n", s, lo, hi);
        return false;
    }
    *out = v;
    return true;
}

/* ---- scenarios ---------------------------------------------------------------------------------
 */

/* simple: one run "simple" with a param, two metrics (one stamped, one explicit) and a tag. */
static int sc_simple(mlt_tracker *t, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    mlt_run *run;
    if (start(t, NULL, "simple", "simple", &run) != MLT_OK) {
        return EXIT_START;
    }
    param(run, "p", "v", true);
    metric(run, "m", 1.5, 0, true);
    metric_at(run, "m", 2.5, 1, INT64_C(1700000000000), true);
    tag(run, "t", "x", true);
    /* as the examples do: the id and the UI address once delivered, else the run key */
    char url[2048];
    mlt_err rc = flush_rec(t, flush_ms(), "run url");
    mlt_err urc = rc == MLT_OK ? mlt_run_ui_url(url, sizeof url, run) : MLT_ERR_STATE;
    char msg[1024];
    take_error(urc, msg, sizeof msg);
    if (urc == MLT_OK) {
        printf("run id: %s\nrun url: %s\n", mlt_run_id(run), url);
    } else {
        bool rejected = rejected_so_far(t) > 0;
        printf("run key: %s (%s)\n", mlt_run_key(run),
               rc != MLT_OK ? "queued: not delivered yet"
               : rejected   ? "not created: rejected by the server"
                            : "no run id after the flush");
        if (rc == MLT_OK && !rejected) {
            fail("mlt_run_ui_url failed after a flush although nothing was rejected: %s: %s",
                 mlt_err_name(urc), msg);
        }
    }
    fflush(stdout);
    end(run, MLT_RUN_FINISHED, true);
    return 0;
}

/* values: exact doubles, int64 steps and explicit timestamps. */
static int sc_values(mlt_tracker *t, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    volatile double one = 1.0, three = 3.0; /* 1/3 computed at run time */
    const struct {
        const char *key;
        double v;
    } vals[] = {
        {"nan", NAN},           {"pinf", INFINITY},   {"ninf", -INFINITY}, {"negzero", -0.0},
        {"denorm_min", 5e-324}, {"dbl_max", DBL_MAX}, {"tenth", 0.1},      {"third", one / three},
    };
    const size_t n = sizeof vals / sizeof vals[0];
    const int64_t two53p1 = (INT64_C(1) << 53) + 1;
    mlt_run *run;
    if (start(t, NULL, "values", "values", &run) != MLT_OK) {
        return EXIT_START;
    }
    for (size_t i = 0; i < n; i++) {
        metric(run, vals[i].key, vals[i].v, 0, true);
    }
    /* all of them on one key, one step each */
    for (size_t i = 0; i < n; i++) {
        metric(run, "all", vals[i].v, (int64_t)i, true);
    }
    const int64_t steps[] = {0, -1, two53p1, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        metric(run, "steps", (double)i, steps[i], true);
    }
    metric_at(run, "ts", 7.0, 0, 0, true);
    metric_at(run, "ts", 8.0, 1, two53p1, true);
    metric_at(run, "ts_extreme", 0.5, INT64_MIN, two53p1, true);
    metric_at(run, "ts_extreme", -0.5, INT64_MAX, 0, true);
    end(run, MLT_RUN_FINISHED, true);
    return 0;
}

/* batch N_METRICS N_PARAMS N_TAGS: more than one log-batch of each kind, values at the limits. */
static int sc_batch(mlt_tracker *t, int argc, char **argv)
{
    long nm = 2500, np = 150, nt = 150;
    if ((argc > 0 && !parse_long(argv[0], 0, 1000000, &nm)) ||
        (argc > 1 && !parse_long(argv[1], 0, 10000, &np)) ||
        (argc > 2 && !parse_long(argv[2], 0, 10000, &nt))) {
        return EXIT_USAGE;
    }
    static const char *const keys[] = {"loss", "acc", "lr"};
    mlt_run *run;
    if (start(t, NULL, "batch", "batch", &run) != MLT_OK) {
        return EXIT_START;
    }
    /* sent with the first full batch of tags, then overwritten: the server must keep "second" */
    tag(run, "twice", "first", true);
    /* both values still pending when the second comes */
    tag(run, "twice_pending", "first", true);
    tag(run, "twice_pending", "second", true);
    for (long i = 0; i < nm; i++) {
        metric(run, keys[i % 3], (double)i / 7.0, i / 3, true);
    }
    char prefix[64];
    for (long i = 0; i < np; i++) {
        char key[32];
        snprintf(key, sizeof key, "param_%03ld", i);
        snprintf(prefix, sizeof prefix, "param %ld|", i);
        char *v = make_text(prefix, 6000);
        if (!v) {
            fail("out of memory");
            break;
        }
        param(run, key, v, true);
        free(v);
    }
    for (long i = 0; i < nt; i++) {
        char key[32];
        snprintf(key, sizeof key, "tag_%03ld", i);
        snprintf(prefix, sizeof prefix, "tag %ld|", i);
        char *v = make_text(prefix, 8000);
        if (!v) {
            fail("out of memory");
            break;
        }
        tag(run, key, v, true);
        free(v);
    }
    tag(run, "twice", "second", true);
    end(run, MLT_RUN_FINISHED, true);
    return 0;
}

/* nested: a parent with two children; the parent ends while child_b is open (child_b: KILLED). */
static int sc_nested(mlt_tracker *t, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    mlt_run *parent, *a, *b;
    if (start(t, NULL, "parent", "parent", &parent) != MLT_OK) {
        return EXIT_START;
    }
    param(parent, "level", "parent", true);
    if (start(t, parent, "child_a", "child_a", &a) != MLT_OK) {
        end(parent, MLT_RUN_FINISHED, false);
        return EXIT_FAILED;
    }
    if (start(t, parent, "child_b", "child_b", &b) != MLT_OK) {
        end(parent, MLT_RUN_FINISHED, false);
        return EXIT_FAILED;
    }
    if (mlt_run_parent(a) != parent || mlt_run_parent(b) != parent) {
        fail("mlt_run_parent does not give the parent");
    }
    param(a, "level", "child", true);
    metric(a, "m", 1.0, 0, true);
    metric(b, "m", 2.0, 0, true);
    tag(b, "open", "yes", true);
    metric(parent, "m", 3.0, 0, true);
    end(a, MLT_RUN_FINISHED, true);
    end(parent, MLT_RUN_FINISHED, true); /* ends b KILLED first; b's handle is gone */
    return 0;
}

/* ---- statuses: scopes, decorators, tracked functions ---- */

static int track_fn(mlt_run *run, void *arg)
{
    const int *ret = arg;
    if (!run) {
        fail("mlt_track: fn got no run: %s", mlt_last_error());
        return *ret;
    }
    record_label(run, *ret == 0 ? "st_track_ok" : "st_track_fail");
    if (mlt_active_run() != run) {
        fail("mlt_track: the run is not active inside fn");
    }
    metric(run, "inside", (double)*ret, 0, true);
    return *ret;
}

static int scoped_return(mlt_tracker *t)
{
    MLT_SCOPED_RUN(t, run, "st_scoped_return");
    if (!run) {
        fail("MLT_SCOPED_RUN: no run: %s", mlt_last_error());
        return -1;
    }
    record_label(run, "st_scoped_return");
    if (mlt_active_run() != run) {
        fail("MLT_SCOPED_RUN: the run is not active");
    }
    metric(run, "inside", 5.0, 0, true);
    return 5; /* the cleanup ends the run FINISHED */
}

/* The inner scope of st_outer: its own function, since a nested MLT_WITH_RUN named `run` too
 * would shadow the outer one (and the macro does not compile with another name). */
static void inner_scope(mlt_tracker *t, const mlt_run *outer)
{
    MLT_WITH_RUN(t, run, "st_inner")
    {
        if (!run) {
            fail("MLT_WITH_RUN st_inner: no run: %s", mlt_last_error());
            break;
        }
        record_label(run, "st_inner");
        if (mlt_run_parent(run) != outer) {
            fail("MLT_WITH_RUN st_inner is not a child of st_outer");
        }
        metric(run, "inside", 2.0, 0, true);
    }
}

static MLT_TRACKED(double, tracked_fn, (int, n), (const char *, label), (double, x), (_Bool, flag),
                   (unsigned long, big))
{
    mlt_run *run = mlt_active_run();
    if (!run) {
        fail("MLT_TRACKED: no active run: %s", mlt_last_error());
        return 0.0;
    }
    record_label(run, "tracked_fn");
    metric(run, "inside", flag ? x : -x, 0, true);
    (void)label;
    (void)big;
    return n * x;
}

static int sc_statuses(mlt_tracker *t, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    mlt_run *plain;
    static const struct {
        const char *name;
        mlt_run_status status;
        bool mark;
    } ends[] = {
        {"st_finished", MLT_RUN_FINISHED, false},
        {"st_failed", MLT_RUN_FAILED, false},
        {"st_killed", MLT_RUN_KILLED, false},
        {"st_marked", MLT_RUN_FINISHED, true},
    };
    for (size_t i = 0; i < sizeof ends / sizeof ends[0]; i++) {
        if (start(t, NULL, ends[i].name, ends[i].name, &plain) != MLT_OK) {
            return EXIT_START;
        }
        metric(plain, "i", (double)i, 0, true);
        if (mlt_run_failed(plain)) {
            fail("mlt_run_failed is 1 before mlt_run_fail");
        }
        if (ends[i].mark) {
            mlt_run_fail(plain);
            if (!mlt_run_failed(plain)) {
                fail("mlt_run_failed is 0 after mlt_run_fail");
            }
        }
        end(plain, ends[i].status, true);
    }

    /* MLT_WITH_RUN left by break after mlt_run_fail: FAILED */
    int reached = 0;
    for (int loop = 0; loop < 1; loop++) {
        MLT_WITH_RUN(t, run, "st_with_break")
        {
            if (!run) {
                fail("MLT_WITH_RUN st_with_break: no run: %s", mlt_last_error());
                break;
            }
            record_label(run, "st_with_break");
            if (mlt_active_run() != run) {
                fail("MLT_WITH_RUN: the run is not active");
            }
            metric(run, "before_break", 1.0, 0, true);
            mlt_run_fail(run);
            break;
            metric(run, "after_break", 1.0, 0, true); /* never reached */
        }
        reached++;
    }
    if (reached != 1) {
        fail("break left more than the MLT_WITH_RUN block");
    }
    if (mlt_active_run() != NULL) {
        fail("a run is still active after MLT_WITH_RUN");
    }

    /* MLT_WITH_RUN left by its end, with a nested scope: FINISHED, and a child */
    MLT_WITH_RUN(t, run, "st_outer")
    {
        if (!run) {
            fail("MLT_WITH_RUN st_outer: no run: %s", mlt_last_error());
            break;
        }
        record_label(run, "st_outer");
        inner_scope(t, run);
        if (mlt_active_run() != run) {
            fail("st_outer is not active again after the inner scope");
        }
        metric(run, "inside", 1.0, 0, true);
    }

    /* MLT_SCOPED_RUN left by return: FINISHED */
    if (scoped_return(t) != 5) {
        fail("scoped_return did not return 5");
    }
    if (mlt_active_run() != NULL) {
        fail("a run is still active after MLT_SCOPED_RUN");
    }

    /* mlt_track: fn returning 0 -> FINISHED; nonzero -> FAILED */
    static const mlt_param track_params[] = {{"alpha", "1"}, {"beta", "two"}};
    int ret_ok = 0, ret_fail = 3, got = -1;
    mlt_err rc = mlt_track(&got, t, "st_track_ok", track_params, 2, track_fn, &ret_ok);
    if (rc != MLT_OK || got != 0) {
        fail("mlt_track st_track_ok: %s (fn result %d): %s", mlt_err_name(rc), got,
             mlt_last_error());
    }
    got = -1;
    rc = mlt_track(&got, t, "st_track_fail", track_params, 2, track_fn, &ret_fail);
    if (rc != MLT_OK || got != 3) {
        fail("mlt_track st_track_fail: %s (fn result %d): %s", mlt_err_name(rc), got,
             mlt_last_error());
    }

    /* MLT_TRACKED on the default tracker */
    mlt_tracker_set_default(t);
    if (mlt_tracker_get_default() != t) {
        fail("mlt_tracker_get_default is not the tracker just set");
    }
    double r = tracked_fn(-7, "h\xc3\xa9llo w\xc3\xb6rld", 0.1, 1, ULONG_MAX);
    mlt_tracker_set_default(NULL);
    led_begin("tracked_result");
    led_d("value", r);
    led_end();
    if (mlt_active_run() != NULL) {
        fail("a run is still active at the end");
    }
    return 0;
}

/* tracked_f64 VALUE...: one MLT_TRACKED run per value, param x formatted by the library. */
static MLT_TRACKED(double, tracked_f64, (double, x))
{
    mlt_run *run = mlt_active_run();
    if (run) {
        record_label(run, "tracked_f64");
    } else {
        fail("MLT_TRACKED tracked_f64: no active run: %s", mlt_last_error());
    }
    return x;
}

static int sc_tracked_f64(mlt_tracker *t, int argc, char **argv)
{
    mlt_tracker_set_default(t);
    for (int i = 0; i < argc; i++) {
        char *endp = NULL;
        errno = 0;
        double x = strtod(argv[i], &endp);
        if (endp == argv[i] || *endp) {
            fprintf(stderr, "it_client: '%s' is not a number\n", argv[i]);
            mlt_tracker_set_default(NULL);
            return EXIT_USAGE;
        }
        led_begin("tracked_arg");
        led_s("text", argv[i]);
        led_d("value", x);
        led_end();
        double r = tracked_f64(x);
        if (memcmp(&r, &x, sizeof r) != 0) {
            fail("tracked_f64 returned another value");
        }
    }
    mlt_tracker_set_default(NULL);
    return 0;
}

/* badinput: invalid keys and values are refused and never reach the server. */
static int sc_badinput(mlt_tracker *t, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    mlt_run *run;
    if (start(t, NULL, "badinput", "badinput", &run) != MLT_OK) {
        return EXIT_START;
    }
    char *k250 = repeat("k", 250), *k251 = repeat("k", 251);
    char *p6000 = repeat("\xc3\xa9", 6000), *p6001 = repeat("\xc3\xa9", 6001);
    char *t8000 = repeat("\xe2\x82\xac", 8000), *t8001 = repeat("\xe2\x82\xac", 8001);
    if (!k250 || !k251 || !p6000 || !p6001 || !t8000 || !t8001) {
        fail("out of memory");
    } else {
        param(run, "ok_param", "1", true);
        metric(run, "ok_metric", 1.0, 0, true);
        tag(run, "ok_tag", "yes", true);

        const char *bad_keys[] = {"a//b", "", k251, "bad#key", "bad\xff\xfekey"};
        for (size_t i = 0; i < sizeof bad_keys / sizeof bad_keys[0]; i++) {
            param(run, bad_keys[i], "v", false);
            metric(run, bad_keys[i], 1.0, 0, false);
            tag(run, bad_keys[i], "v", false);
        }
        param(run, "long_param", p6001, false);
        tag(run, "long_tag", t8001, false);
        param(run, "bad_utf8_param", "abc\xc3(", false);
        tag(run, "bad_utf8_tag", "x\xed\xa0\x80y", false);
        metric_at(run, "neg_ts", 1.0, 0, -1, false);

        /* the limits themselves are fine */
        param(run, k250, "key of 250", true);
        param(run, "max_param", p6000, true);
        tag(run, "max_tag", t8000, true);

        /* params cannot change */
        param(run, "conf", "a", true);
        param(run, "conf", "b", false);
        param(run, "same", "x", true);
        param(run, "same", "x", false);
    }
    free(k250);
    free(k251);
    free(p6000);
    free(p6001);
    free(t8000);
    free(t8001);
    end(run, MLT_RUN_FINISHED, true);
    return 0;
}

/* ---- threads ---- */

typedef struct worker {
    pthread_t th;
    mlt_tracker *tracker;
    mlt_run *shared; /* NULL: the worker makes its own run */
    long idx, points;
    int rc;
} worker;

static void *work(void *arg)
{
    worker *w = arg;
    char name[32], key[32], value[32];
    mlt_run *run = w->shared;
    if (!run) {
        snprintf(name, sizeof name, "thread_%ld", w->idx);
        if (start(w->tracker, NULL, name, name, &run) != MLT_OK) {
            w->rc = EXIT_START;
            return NULL;
        }
        snprintf(key, sizeof key, "m");
    } else {
        snprintf(key, sizeof key, "m_%ld", w->idx);
    }
    char pkey[32], tkey[32];
    if (w->shared) {
        snprintf(pkey, sizeof pkey, "p_%ld", w->idx);
        snprintf(tkey, sizeof tkey, "t_%ld", w->idx);
    } else {
        snprintf(pkey, sizeof pkey, "p");
        snprintf(tkey, sizeof tkey, "t");
    }
    snprintf(value, sizeof value, "%ld", w->idx);
    param(run, pkey, value, true);
    for (long i = 0; i < w->points; i++) {
        metric(run, key, (double)w->idx * 1000.0 + (double)i / 8.0, i, true);
        if (i % 50 == 0) {
            char tv[32];
            snprintf(tv, sizeof tv, "%ld/%ld", w->idx, i);
            tag(run, tkey, tv, true);
        }
    }
    if (!w->shared) {
        end(run, MLT_RUN_FINISHED, true);
    }
    return NULL;
}

static int run_workers(mlt_tracker *t, mlt_run *shared, long n, long points)
{
    worker ws[16];
    int rc = 0;
    long started = 0;
    for (long i = 0; i < n; i++) {
        ws[i] = (worker){.tracker = t, .shared = shared, .idx = i, .points = points};
        int e = pthread_create(&ws[i].th, NULL, work, &ws[i]);
        if (e != 0) {
            fail("pthread_create: %s", strerror(e));
            break;
        }
        started++;
    }
    for (long i = 0; i < started; i++) {
        pthread_join(ws[i].th, NULL);
        if (ws[i].rc && !rc) {
            rc = ws[i].rc;
        }
    }
    return rc;
}

/* threads N POINTS: N threads, each logging to its own run. */
static int sc_threads(mlt_tracker *t, int argc, char **argv)
{
    long n = 4, points = 300;
    if ((argc > 0 && !parse_long(argv[0], 1, 16, &n)) ||
        (argc > 1 && !parse_long(argv[1], 0, 1000000, &points))) {
        return EXIT_USAGE;
    }
    return run_workers(t, NULL, n, points);
}

/* threads_one N POINTS: N threads logging to one run, each with its own keys. */
static int sc_threads_one(mlt_tracker *t, int argc, char **argv)
{
    long n = 4, points = 300;
    if ((argc > 0 && !parse_long(argv[0], 1, 16, &n)) ||
        (argc > 1 && !parse_long(argv[1], 0, 1000000, &points))) {
        return EXIT_USAGE;
    }
    mlt_run *run;
    if (start(t, NULL, "shared", "shared", &run) != MLT_OK) {
        return EXIT_START;
    }
    int rc = run_workers(t, run, n, points);
    end(run, MLT_RUN_FINISHED, true);
    return rc;
}

/* strings: run names at and over the limit, Unicode keys, values needing JSON escapes. */
#define JSON_CHARS                                                                                 \
    "q\"uote b\\ack n\nl t\tab c\x01trl d\x7f"                                                     \
    "el </script> ls\xe2\x80\xa8"                                                                  \
    "end \xf0\x9f\x8e\x89"

static int sc_strings(mlt_tracker *t, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    char *n250 = repeat("\xc3\xbc", 250), *n251 = repeat("\xc3\xbc", 251);
    if (!n250 || !n251) {
        free(n250);
        free(n251);
        fail("out of memory");
        return EXIT_FAILED;
    }
    mlt_run *bad = NULL, *run = NULL;
    if (start(t, NULL, n251, "name_251", &bad) == MLT_OK) {
        fail("a run name of 251 characters was accepted");
        end(bad, MLT_RUN_FINISHED, false);
    }
    if (start(t, NULL, "bad \xff name", "name_bad_utf8", &bad) == MLT_OK) {
        fail("a run name that is not UTF-8 was accepted");
        end(bad, MLT_RUN_FINISHED, false);
    }
    mlt_err rc = start(t, NULL, n250, "name_250", &run);
    free(n250);
    free(n251);
    if (rc != MLT_OK) {
        return EXIT_START;
    }
    param(run, "param\xc3\xa8tre", "v\xc3\xa4lue", true);
    param(run, "json_chars", JSON_CHARS, true);
    param(run, "empty_value", "", true);
    tag(run, "json_chars", JSON_CHARS, true);
    tag(run, "\xc3\xa9tiquette", "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x8e\x89", true);
    metric(run, "m\xc3\xa9trique/\xc3\xa9preuve: 1", 0.5, 0, true);
    metric(run, "a-b_c.d e:f/g", 1.5, 1, true);
    end(run, MLT_RUN_FINISHED, true);
    return 0;
}

/* close_open: runs left open are ended KILLED by mlt_tracker_close (children first). */
static int sc_close_open(mlt_tracker *t, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    mlt_run *parent, *child, *other;
    if (start(t, NULL, "open_parent", "open_parent", &parent) != MLT_OK) {
        return EXIT_START;
    }
    if (start(t, parent, "open_child", "open_child", &child) != MLT_OK ||
        start(t, NULL, "open_other", "open_other", &other) != MLT_OK) {
        return EXIT_FAILED;
    }
    metric(parent, "m", 1.0, 0, true);
    metric(child, "m", 2.0, 0, true);
    param(other, "p", "1", true);
    tag(child, "t", "x", true);
    return 0; /* main closes the tracker with the three runs open */
}

/* offline: with no server, the work runs and is tracked all the same (mlt_track, scopes,
 * tracked functions): the runs start locally and wait in the queue. */
typedef struct offline_state {
    int called;
    int run_was_null;
} offline_state;

static int offline_fn(mlt_run *run, void *arg)
{
    offline_state *st = arg;
    st->called++;
    st->run_was_null = run == NULL;
    return 7;
}

static MLT_TRACKED(int, offline_tracked, (int, v))
{
    led_begin("offline_tracked_body");
    led_i("v", v);
    led_i("run_was_null", mlt_active_run() == NULL);
    led_end();
    return v * 2;
}

static int sc_offline(mlt_tracker *t, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    static const mlt_param params[] = {{"p", "1"}};
    offline_state st = {0, 0};
    int fn_result = -1;
    mlt_err rc = mlt_track(&fn_result, t, "offline_track", params, 1, offline_fn, &st);
    char msg[1024];
    take_error(rc, msg, sizeof msg);
    led_begin("offline_track");
    led_s("rc", mlt_err_name(rc));
    led_s("err", msg);
    led_i("called", st.called);
    led_i("run_was_null", st.run_was_null);
    led_i("fn_result", fn_result);
    led_end();

    int ran = 0;
    MLT_WITH_RUN(t, run, "offline_scope")
    {
        take_error(run ? MLT_OK : MLT_ERR_STATE, msg, sizeof msg);
        ran++;
        led_begin("offline_scope");
        led_i("run_was_null", run == NULL);
        led_s("err", msg);
        led_end();
    }
    led_begin("offline_scope_after");
    led_i("ran", ran);
    led_end();

    mlt_tracker_set_default(t);
    int r = offline_tracked(21);
    take_error(MLT_ERR_STATE, msg, sizeof msg);
    mlt_tracker_set_default(NULL);
    led_begin("offline_tracked");
    led_i("result", r);
    led_s("err", msg);
    led_end();
    return 0;
}

/* ---- main --------------------------------------------------------------------------------------
 */

static const struct scenario {
    const char *name;
    int (*fn)(mlt_tracker *t, int argc, char **argv);
} scenarios[] = {
    {"simple", sc_simple},     {"values", sc_values},         {"batch", sc_batch},
    {"nested", sc_nested},     {"statuses", sc_statuses},     {"tracked_f64", sc_tracked_f64},
    {"badinput", sc_badinput}, {"threads", sc_threads},       {"threads_one", sc_threads_one},
    {"strings", sc_strings},   {"close_open", sc_close_open}, {"offline", sc_offline},
};

static int usage(void)
{
    fputs("usage: it_client [--ledger PATH] SCENARIO [ARGS...]\nscenarios:", stderr);
    for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++) {
        fprintf(stderr, " %s", scenarios[i].name);
    }
    fputc('\n', stderr);
    return EXIT_USAGE;
}

int main(int argc, char **argv)
{
    const char *ledger_path = getenv("MLTRACK_IT_LEDGER");
    int a = 1;
    if (a + 1 < argc && strcmp(argv[a], "--ledger") == 0) {
        ledger_path = argv[a + 1];
        a += 2;
    }
    if (a >= argc) {
        return usage();
    }
    const struct scenario *sc = NULL;
    for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++) {
        if (strcmp(argv[a], scenarios[i].name) == 0) {
            sc = &scenarios[i];
        }
    }
    if (!sc) {
        fprintf(stderr, "it_client: unknown scenario '%s'\n", argv[a]);
        return usage();
    }
    if (ledger_path && *ledger_path) {
        led = fopen(ledger_path, "w");
        if (!led) {
            fprintf(stderr, "it_client: cannot open the ledger %s: %s\n", ledger_path,
                    strerror(errno));
            return EXIT_SETUP;
        }
    }
    mlt_tracker *t = NULL;
    int code = setup(&t);
    if (code == 0) {
        code = sc->fn(t, argc - a - 1, argv + a + 1);
        unsigned long long errors = mlt_tracker_error_count(t);
        /* deliver what the scenario logged (runs it left open are ended at close) */
        int ms = close_ms();
        flush_rec(t, ms, "final");
        mlt_queue_stats st = MLT_QUEUE_STATS_INIT;
        mlt_err rc = mlt_tracker_queue_stats(&st, t);
        if (rc != MLT_OK) {
            fail("mlt_tracker_queue_stats: %s", mlt_err_name(rc));
            memset(&st, 0, sizeof st);
        }
        led_begin("stats");
        led_i("queued", (int64_t)st.queued);
        led_i("sent", (int64_t)st.sent);
        led_i("acknowledged", (int64_t)st.acknowledged);
        led_i("retried", (int64_t)st.retried);
        led_i("rejected", (int64_t)st.rejected);
        led_i("bytes_pending", (int64_t)st.bytes_pending);
        led_end();
        unsigned long long rejected_before = rejected_so_far(t);
        rc = mlt_tracker_close(t, ms);
        char msg[1024];
        take_error(rc, msg, sizeof msg);
        led_begin("close");
        led_s("rc", mlt_err_name(rc));
        led_s("err", msg);
        led_end();
        /* the delivery callback also saw what close delivered */
        unsigned long long rejected = atomic_load(&rejected_records);
        if (rejected < rejected_before) {
            rejected = rejected_before;
        }
        if (rc != MLT_OK && rc != MLT_ERR_TIMEOUT && rc != MLT_ERR_QUEUED) {
            fprintf(stderr, "it_client: tracker close failed: %s: %s\n", mlt_err_name(rc), msg);
            if (code == 0) {
                code = EXIT_FAILED;
            }
        }
        if (code == 0 && atomic_load(&failures) > 0) {
            code = EXIT_FAILED;
        }
        if (rejected > 0) {
            fprintf(stderr,
                    "it_client: the server rejected %llu records (dead letters in the "
                    "queue)\n",
                    rejected);
            if (code == 0) {
                code = EXIT_REJECTED;
            }
        }
        if (rc == MLT_ERR_TIMEOUT || rc == MLT_ERR_QUEUED) {
            fprintf(stderr, "it_client: not delivered yet, left in the queue: %s\n", msg);
            if (code == 0) {
                code = EXIT_QUEUED;
            }
        }
        led_begin("exit");
        led_i("code", code);
        led_i("error_count", (int64_t)errors);
        led_i("failures", atomic_load(&failures));
        led_i("rejected", (int64_t)rejected);
        led_end();
    }
    if (led && fclose(led) != 0) {
        fprintf(stderr, "it_client: closing the ledger failed: %s\n", strerror(errno));
        if (code == 0) {
            code = EXIT_FAILED;
        }
    }
    return code;
}
