/*
 * it_queue.c - the durable queue's integration test program, driven by
 * tests/integration/test_queue.py against a real MLflow server (or none at all). It uses only the
 * public header.
 *
 *   it_queue [OPTIONS] log RUNS POINTS
 *       RUNS runs named run-0, run-1, ... each with params lr, run_index, points, tags kind,
 *       run_index, progress (set again every 100 points, "done" at the end), and POINTS metric
 *       points alternating between the keys "loss" (even i) and "acc" (odd i), step i/2, value
 *       it_value(run, i), timestamp TS_BASE + run * 1000000 + i (mlt_log_metric_at); each run
 *       ends FINISHED.
 *   it_queue [OPTIONS] forever TAG [POINTS_PER_RUN [THREADS]]
 *       Logs until killed (or IT_QUEUE_FOREVER_MAX_S seconds, default 600): runs named TAG-0,
 *       TAG-1, ... of POINTS_PER_RUN (default 60) points each; "loss" points are stamped by the
 *       program (mlt_log_metric_at, as in log), "acc" points by the library (mlt_log_metric, the
 *       ledger gets the timestamp from a callback of our own); params lr, proc, run_index; tags
 *       kind, run_index, progress (every 10 points); each run ends FINISHED. With THREADS,
 *       thread k (0, 1, ...) does the same with the tag TAG.k, all at once.
 *   it_queue [OPTIONS] threads THREADS POINTS
 *       Starts run "shared"; THREADS threads at once each start run "own-K", then log POINTS
 *       points into "shared" under key "tK" and POINTS into their own run under "m" (step i, value
 *       it_value(K, i), stamped by the library), end their run; then "shared" ends.
 *   it_queue [OPTIONS] scale TAG THREADS RUNS POINTS
 *       One node (or one rank of a distributed job) of tests/integration/scale.py: starts run TAG
 *       (with MLTRACK_RUN_KEY or MLFLOW_RUN_ID set, that is the job's shared run, attached) with
 *       params job=scale (the same in every process), TAG.threads, TAG.points and tag TAG.state
 *       (running, then done); THREADS threads at once each log POINTS points into it under key
 *       "TAG/tK" (step i, value it_value(K, i)), then make RUNS child runs "TAG-tK-rR" one after
 *       the other, each with params lr, thread, run_index, tags kind=scale, progress (every 250
 *       points, "done" at the end), POINTS points alternating "loss"/"acc" (as log, value
 *       it_value(R + 100 K, i)), ended FINISHED. Threads with an even K log by key handle
 *       (mlt_metric_key); the others by key string. The points are stamped by the library, or
 *       with --ring at TS_BASE + i by the program (mlt_log_metric_at: see --ring).
 *   it_queue [OPTIONS] pause-between FILE
 *       Starts run "pause", logs param lr=0.01 and metric m (step 0), waits until FILE exists,
 *       then logs param p=2, metrics m steps 1..10, tag after=yes and ends the run FINISHED.
 *
 * Options:
 *   --ledger PATH     the ledger (else $IT_QUEUE_LEDGER; none: no ledger)
 *   --close-ms N      mlt_tracker_close() timeout (else $IT_QUEUE_CLOSE_MS, default 5000)
 *   --flush-ms N      call mlt_tracker_flush(t, N) before closing (default: no flush)
 *   --delay-ms N      sleep N ms after each metric point
 *   --before-flush FILE  after the work, before the flush, wait until FILE exists (a flush
 *                     returns MLT_ERR_QUEUED at once while the server is away: the test says
 *                     when it is back)
 *   --hold FILE       after the work (and the flush), create FILE.ready and wait until FILE exists
 *                     before closing
 *   --verbose         the library's diagnostics (mlt_options_set_logger) on stderr, one a line
 *   --from-env        set up with mlt_tracker_from_env() (no delivery callback) instead of
 *                     mlt_options_from_env() + delivery callback + mlt_tracker_new() +
 *                     mlt_tracker_add_mlflow()
 *   --ring            add no callback of our own, so that the MLflow callback is alone and metric
 *                     points take the lock-free ring (the production hot path); start and end
 *                     times are then unknown to the ledger (-1), and scale stamps its points
 *                     itself (the library's stamps would be unknown too)
 *
 * The tracker's configuration comes from the environment: MLFLOW_TRACKING_URI,
 * MLFLOW_EXPERIMENT_NAME, MLTRACK_QUEUE_DIR, MLTRACK_FSYNC, MLFLOW_HTTP_REQUEST_* ...
 *
 * LEDGER: one JSON object per line for every call that RETURNED MLT_OK, written with write(2) right
 * after the call returned (no stdio buffer: a SIGKILL loses no line of a returned call):
 *   {"kind":"start","run":KEY,"name":NAME,"start":START_MS[,"parent":KEY]}
 *   {"kind":"param"|"tag","run":KEY,"key":K,"value":V}
 *   {"kind":"metric","run":KEY,"key":K,"value":%.17g,"step":N,"ts":TIMESTAMP_MS,"i":I,"r":R}
 *   {"kind":"end","run":KEY,"status":"FINISHED","end":END_MS}
 * Start and end times and library-stamped metric timestamps are what the library gave to the
 * callbacks (a callback of our own, added after the MLflow callback).
 *
 * STDOUT (write(2), one line each):
 *   delivered OP STATE RUN_KEY RUN_ID|- RECORDS [MESSAGE]   from the delivery callback; OP is
 *       create_run, log or end_run; STATE acknowledged or rejected; MESSAGE on one line
 *   started NAME RUN_KEY RUN_ID|-                            right after mlt_run_start() (not
 *                                                            for child runs)
 *   flush ERR_NAME ELAPSED_MS / close ERR_NAME ELAPSED_MS
 *   stats queued=N sent=N acknowledged=N retried=N rejected=N bytes_pending=N
 *                                                            mlt_tracker_queue_stats() just
 *                                                            before the close
 *   failures N
 *
 * Exit: 0 when every logging call returned MLT_OK (whether or not anything reached a server: a
 * flush or close that times out is reported on stdout only); 1 a logging call failed (stderr);
 * 2 the tracker could not be set up; 64 usage.
 */
#include <mltrack.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define EXIT_FAILED 1
#define EXIT_SETUP 2
#define EXIT_USAGE 64

#define TS_BASE INT64_C(1700000000000)

#if defined(__GNUC__) || defined(__clang__)
#define IT_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define IT_PRINTF(f, a)
#endif

/* ---- output without stdio buffers ------------------------------------------------------------ */

static void write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return;
        }
        buf += n;
        len -= (size_t)n;
    }
}

/* A line built in a fixed buffer (truncated if it would not fit; our lines are short). */
typedef struct line {
    char buf[8192];
    size_t len;
} line;

static void l_raw(line *l, const char *s, size_t n)
{
    size_t room = sizeof l->buf - 1 - l->len;
    if (n > room) {
        n = room;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
    l->buf[l->len] = '\0';
}

static void l_cat(line *l, const char *s)
{
    l_raw(l, s, strlen(s));
}

static void l_fmt(line *l, const char *fmt, ...) IT_PRINTF(2, 3);

static void l_fmt(line *l, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) {
        l_raw(l, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
    }
}

/* A JSON string: '"', '\\' and control characters escaped, other bytes as they are. */
static void l_jstr(line *l, const char *s)
{
    if (!s) {
        l_cat(l, "null");
        return;
    }
    l_cat(l, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            char esc[2] = {'\\', (char)*p};
            l_raw(l, esc, 2);
        } else if (*p < 0x20 || *p == 0x7f) {
            l_fmt(l, "\\u%04x", (unsigned)*p);
        } else {
            l_raw(l, (const char *)p, 1);
        }
    }
    l_cat(l, "\"");
}

/* Text on one line for stdout: control characters become '?'. */
static void l_oneline(line *l, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char c = (*p < 0x20 || *p == 0x7f) ? '?' : (char)*p;
        l_raw(l, &c, 1);
    }
}

static void out_line(line *l)
{
    l_cat(l, "\n");
    write_all(STDOUT_FILENO, l->buf, l->len);
}

static void say(const char *fmt, ...) IT_PRINTF(1, 2);

static void say(const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) {
        write_all(STDOUT_FILENO, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
    }
}

static void complain(const char *fmt, ...) IT_PRINTF(1, 2);

static void complain(const char *fmt, ...)
{
    char tmp[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) {
        write_all(STDERR_FILENO, "it_queue: ", 10);
        write_all(STDERR_FILENO, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
        write_all(STDERR_FILENO, "\n", 1);
    }
}

/* ---- the ledger ------------------------------------------------------------------------------ */

static int ledger_fd = -1;

static void led_write(line *l)
{
    if (ledger_fd >= 0) {
        l_cat(l, "\n");
        write_all(ledger_fd, l->buf, l->len);
    }
}

static void led_head(line *l, const char *kind, mlt_run *run)
{
    l->len = 0;
    l->buf[0] = '\0';
    l_cat(l, "{\"kind\":");
    l_jstr(l, kind);
    l_cat(l, ",\"run\":");
    l_jstr(l, mlt_run_key(run));
}

/* ---- what our own callback saw (the caller's thread: the callbacks run on it) ---------------- */

static _Thread_local int64_t seen_start_ms = -1;
static _Thread_local int64_t seen_end_ms = -1;
static _Thread_local int64_t seen_metric_ts = -1;

static mlt_err cb_start(const mlt_run_info *info, void *ud)
{
    (void)ud;
    seen_start_ms = info->start_time_ms;
    return MLT_OK;
}

static mlt_err cb_metric(const mlt_run_info *info, const char *key, double value, int64_t step,
                         int64_t timestamp_ms, void *ud)
{
    (void)info, (void)key, (void)value, (void)step, (void)ud;
    seen_metric_ts = timestamp_ms;
    return MLT_OK;
}

static mlt_err cb_end(const mlt_run_info *info, mlt_run_status status, double duration_s, void *ud)
{
    (void)status, (void)duration_s, (void)ud;
    seen_end_ms = info->end_time_ms;
    return MLT_OK;
}

/* ---- the delivery callback (sender thread) --------------------------------------------------- */

static void on_delivery(const mlt_delivery *d, void *ud)
{
    (void)ud;
    static const char *const ops[] = {"create_run", "log", "end_run"};
    line l = {.len = 0};
    l_cat(&l, "delivered ");
    l_cat(&l, (unsigned)d->op < 3 ? ops[d->op] : "unknown_op");
    l_cat(&l, d->state == MLT_DELIVERY_ACKNOWLEDGED ? " acknowledged "
              : d->state == MLT_DELIVERY_REJECTED   ? " rejected "
                                                    : " unknown_state ");
    l_cat(&l, d->run_key ? d->run_key : "-");
    l_cat(&l, " ");
    l_cat(&l, d->run_id ? d->run_id : "-");
    l_fmt(&l, " %" PRIu32, d->records);
    if (d->message) {
        l_cat(&l, " ");
        l_oneline(&l, d->message);
    }
    out_line(&l);
}

/* ---- the library's diagnostics (--verbose) -----------------------------------------------------
 */

static void on_log(int level, const char *message, void *ud)
{
    (void)ud;
    static const char *const names[] = {"debug", "info", "warn", "error"};
    line l = {.len = 0};
    l_cat(&l, "it_queue: library ");
    l_cat(&l, level >= 0 && level <= 3 ? names[level] : "?");
    l_cat(&l, ": ");
    l_oneline(&l, message);
    l_cat(&l, "\n");
    write_all(STDERR_FILENO, l.buf, l.len);
}

/* ---- logging calls, each recorded in the ledger once it returned MLT_OK ---------------------- */

static _Atomic unsigned long failures;

static void call_failed(const char *what, mlt_run *run, const char *key, mlt_err rc)
{
    failures++;
    complain("%s %s (run %s): %s: %s", what, key ? key : "", run ? mlt_run_key(run) : "-",
             mlt_err_name(rc), mlt_last_error());
}

/* A top-level run (parent NULL) or a child run of parent. */
static mlt_run *start_run_in(mlt_tracker *t, mlt_run *parent, const char *name)
{
    mlt_run *run = NULL;
    seen_start_ms = -1;
    mlt_err rc = parent ? mlt_run_start_child(&run, parent, name) : mlt_run_start(&run, t, name);
    if (rc != MLT_OK) {
        call_failed(parent ? "child run start" : "run start", parent, name, rc);
        return NULL;
    }
    line l;
    led_head(&l, "start", run);
    l_cat(&l, ",\"name\":");
    l_jstr(&l, name);
    l_fmt(&l, ",\"start\":%" PRId64, seen_start_ms);
    if (parent) {
        l_cat(&l, ",\"parent\":");
        l_jstr(&l, mlt_run_key(parent));
    }
    l_cat(&l, "}");
    led_write(&l);
    if (!parent) {
        const char *id = mlt_run_id(run);
        say("started %s %s %s\n", name, mlt_run_key(run), id ? id : "-");
    }
    return run;
}

static mlt_run *start_run(mlt_tracker *t, const char *name)
{
    return start_run_in(t, NULL, name);
}

static void kv(mlt_run *run, bool is_param, const char *key, const char *value)
{
    mlt_err rc = is_param ? mlt_log_param(run, key, value) : mlt_set_tag(run, key, value);
    if (rc != MLT_OK) {
        call_failed(is_param ? "log param" : "set tag", run, key, rc);
        return;
    }
    line l;
    led_head(&l, is_param ? "param" : "tag", run);
    l_cat(&l, ",\"key\":");
    l_jstr(&l, key);
    l_cat(&l, ",\"value\":");
    l_jstr(&l, value);
    l_cat(&l, "}");
    led_write(&l);
}

static void kv_int(mlt_run *run, bool is_param, const char *key, long long value)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", value);
    kv(run, is_param, key, buf);
}

/* ts < 0: stamped by the library (mlt_log_metric). r and i go to the ledger for the test. */
static void metric(mlt_run *run, const char *key, double value, int64_t step, int64_t ts, long r,
                   long i)
{
    seen_metric_ts = -1;
    mlt_err rc = ts < 0 ? mlt_log_metric(run, key, value, step)
                        : mlt_log_metric_at(run, key, value, step, ts);
    if (rc != MLT_OK) {
        call_failed("log metric", run, key, rc);
        return;
    }
    line l;
    led_head(&l, "metric", run);
    l_cat(&l, ",\"key\":");
    l_jstr(&l, key);
    l_fmt(&l, ",\"value\":%.17g,\"step\":%" PRId64 ",\"ts\":%" PRId64 ",\"i\":%ld,\"r\":%ld}",
          value, step, ts < 0 ? seen_metric_ts : ts, i, r);
    led_write(&l);
}

/* As metric(), by key handle (stamped by the library). */
static void metric_h(mlt_run *run, const mlt_key *k, const char *key, double value, int64_t step,
                     long r, long i)
{
    seen_metric_ts = -1;
    mlt_err rc = mlt_log_metric_key(run, k, value, step);
    if (rc != MLT_OK) {
        call_failed("log metric by handle", run, key, rc);
        return;
    }
    line l;
    led_head(&l, "metric", run);
    l_cat(&l, ",\"key\":");
    l_jstr(&l, key);
    l_fmt(&l, ",\"value\":%.17g,\"step\":%" PRId64 ",\"ts\":%" PRId64 ",\"i\":%ld,\"r\":%ld}",
          value, step, seen_metric_ts, i, r);
    led_write(&l);
}

static void end_run(mlt_run *run)
{
    char key[64];
    snprintf(key, sizeof key, "%s", mlt_run_key(run)); /* the handle is freed by mlt_run_end */
    seen_end_ms = -1;
    mlt_err rc = mlt_run_end(run, MLT_RUN_FINISHED);
    if (rc != MLT_OK) {
        failures++;
        complain("run end (run %s): %s: %s", key, mlt_err_name(rc), mlt_last_error());
        return;
    }
    line l = {.len = 0};
    l_cat(&l, "{\"kind\":\"end\",\"run\":");
    l_jstr(&l, key);
    l_fmt(&l, ",\"status\":\"FINISHED\",\"end\":%" PRId64 "}", seen_end_ms);
    led_write(&l);
}

/* ---- the deterministic points (test_queue.py computes the same) ------------------------------ */

/* Point i of run r: key "loss" for even i, "acc" for odd i, step i / 2. */
static double it_value(long r, long i)
{
    long step = i / 2;
    if (i % 2 == 0) {
        return (double)(step * 7 + r * 13 + 1) / 3.0;
    }
    return 1.0 / ((double)step + 3.0 + (double)r);
}

static const char *it_key(long i)
{
    return i % 2 == 0 ? "loss" : "acc";
}

/* ---- small helpers --------------------------------------------------------------------------- */

static bool parse_long(const char *s, long min, long max, long *out)
{
    if (!s || !*s) {
        return false;
    }
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max) {
        return false;
    }
    *out = v;
    return true;
}

static void sleep_ms(long ms)
{
    if (ms <= 0) {
        return;
    }
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Polls every 20 ms until path exists; false after timeout_s. */
static bool wait_for_file(const char *path, long timeout_s)
{
    int64_t deadline = now_ms() + timeout_s * 1000;
    while (!file_exists(path)) {
        if (now_ms() > deadline) {
            return false;
        }
        sleep_ms(20);
    }
    return true;
}

static void touch(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
        close(fd);
    }
}

/* ---- the commands ---------------------------------------------------------------------------- */

typedef struct config {
    long close_ms;
    long flush_ms; /* -1: no flush */
    long delay_ms;
    const char *hold;
    const char *before_flush;
    bool from_env;
    bool verbose;
    bool ring;
} config;

static void cmd_log(mlt_tracker *t, const config *c, long runs, long points)
{
    for (long r = 0; r < runs; r++) {
        char name[64];
        snprintf(name, sizeof name, "run-%ld", r);
        mlt_run *run = start_run(t, name);
        if (!run) {
            continue;
        }
        kv(run, true, "lr", "0.01");
        kv_int(run, true, "run_index", r);
        kv_int(run, true, "points", points);
        kv(run, false, "kind", "it_queue");
        kv_int(run, false, "run_index", r);
        for (long i = 0; i < points; i++) {
            metric(run, it_key(i), it_value(r, i), i / 2, TS_BASE + r * 1000000 + i, r, i);
            if (i % 100 == 99) {
                kv_int(run, false, "progress", i + 1);
            }
            sleep_ms(c->delay_ms);
        }
        kv(run, false, "progress", "done");
        end_run(run);
    }
}

static void cmd_forever(mlt_tracker *t, const config *c, const char *tag, long per_run)
{
    long max_s = 600;
    const char *env = getenv("IT_QUEUE_FOREVER_MAX_S");
    if (env && !parse_long(env, 1, 86400, &max_s)) {
        max_s = 600;
    }
    int64_t deadline = now_ms() + max_s * 1000;
    for (long r = 0; now_ms() < deadline; r++) {
        char name[128];
        snprintf(name, sizeof name, "%s-%ld", tag, r);
        mlt_run *run = start_run(t, name);
        if (!run) {
            sleep_ms(10);
            continue;
        }
        kv(run, true, "lr", "0.01");
        kv(run, true, "proc", tag);
        kv_int(run, true, "run_index", r);
        kv(run, false, "kind", "forever");
        kv_int(run, false, "run_index", r);
        for (long i = 0; i < per_run; i++) {
            bool lib_stamped = i % 2 == 1;
            metric(run, it_key(i), it_value(r, i), i / 2,
                   lib_stamped ? -1 : TS_BASE + r * 1000000 + i, r, i);
            if (i % 10 == 9) {
                kv_int(run, false, "progress", i + 1);
            }
            sleep_ms(c->delay_ms);
        }
        end_run(run);
    }
}

/* forever with THREADS threads: thread k logs as forever with the tag TAG.k. */
typedef struct forever_arg {
    mlt_tracker *t;
    const config *c;
    char tag[64];
    long per_run;
    pthread_t thread;
} forever_arg;

static void *forever_main(void *p)
{
    forever_arg *f = p;
    cmd_forever(f->t, f->c, f->tag, f->per_run);
    return NULL;
}

static void cmd_forever_threads(mlt_tracker *t, const config *c, const char *tag, long per_run,
                                long threads)
{
    if (threads <= 1) {
        cmd_forever(t, c, tag, per_run);
        return;
    }
    forever_arg *f = calloc((size_t)threads, sizeof *f);
    if (!f) {
        complain("out of memory");
        failures++;
        return;
    }
    long started = 0;
    for (; started < threads; started++) {
        f[started] = (forever_arg){.t = t, .c = c, .per_run = per_run};
        snprintf(f[started].tag, sizeof f[started].tag, "%s.%ld", tag, started);
        if (pthread_create(&f[started].thread, NULL, forever_main, &f[started]) != 0) {
            complain("cannot start thread %ld", started);
            failures++;
            break;
        }
    }
    for (long k = 0; k < started; k++) {
        pthread_join(f[k].thread, NULL);
    }
    free(f);
}

static void cmd_pause_between(mlt_tracker *t, const char *file)
{
    mlt_run *run = start_run(t, "pause");
    if (!run) {
        return;
    }
    kv(run, true, "lr", "0.01");
    metric(run, "m", 0.5, 0, TS_BASE, 0, 0);
    if (!wait_for_file(file, 600)) {
        failures++;
        complain("pause-between: %s did not appear within 600 s", file);
    }
    kv(run, true, "p", "2");
    for (long s = 1; s <= 10; s++) {
        metric(run, "m", 0.5 + (double)s, s, TS_BASE + s, 0, s);
    }
    kv(run, false, "after", "yes");
    end_run(run);
}

/* ---- setup ----------------------------------------------------------------------------------- */

static mlt_tracker *setup(const config *c)
{
    char err[1024] = "";
    mlt_tracker *t = NULL;
    mlt_err rc;
    if (c->from_env) {
        rc = mlt_tracker_from_env(&t, err, sizeof err);
        if (rc != MLT_OK) {
            complain("mlt_tracker_from_env: %s: %s", mlt_err_name(rc), err);
            return NULL;
        }
    } else {
        mlt_options *o = mlt_options_new();
        if (!o) {
            complain("mlt_options_new: out of memory");
            return NULL;
        }
        rc = mlt_options_from_env(o, err, sizeof err);
        if (rc == MLT_OK) {
            rc = mlt_options_set_delivery_callback(o, on_delivery, NULL);
            if (rc != MLT_OK) {
                snprintf(err, sizeof err, "mlt_options_set_delivery_callback failed");
            }
        }
        if (rc == MLT_OK && c->verbose) {
            rc = mlt_options_set_logger(o, on_log, NULL);
            if (rc != MLT_OK) {
                snprintf(err, sizeof err, "mlt_options_set_logger failed");
            }
        }
        if (rc == MLT_OK) {
            rc = mlt_tracker_new(&t, o, err, sizeof err);
        }
        mlt_options_free(o);
        if (rc != MLT_OK) {
            complain("setup: %s: %s", mlt_err_name(rc), err);
            return NULL;
        }
        rc = mlt_tracker_add_mlflow(t, err, sizeof err);
        if (rc != MLT_OK) {
            complain("mlt_tracker_add_mlflow: %s: %s", mlt_err_name(rc), err);
            mlt_tracker_close(t, 0);
            return NULL;
        }
    }
    if (c->ring) {
        return t; /* the MLflow callback alone: points take the ring */
    }
    mlt_callbacks mine = {
        .version = MLT_CALLBACKS_VERSION,
        .on_run_start = cb_start,
        .on_metric = cb_metric,
        .on_run_end = cb_end,
    };
    rc = mlt_tracker_add_callbacks(t, &mine, NULL);
    if (rc != MLT_OK) {
        complain("mlt_tracker_add_callbacks: %s", mlt_err_name(rc));
        mlt_tracker_close(t, 0);
        return NULL;
    }
    return t;
}

typedef struct worker {
    pthread_t thread;
    mlt_tracker *t;
    mlt_run *shared;
    long k, points;
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg;
    char name[32], key[32];
    snprintf(name, sizeof name, "own-%ld", w->k);
    snprintf(key, sizeof key, "t%ld", w->k);
    mlt_run *own = start_run(w->t, name);
    for (long i = 0; i < w->points; i++) {
        metric(w->shared, key, it_value(w->k, i), i, -1, w->k, i);
        if (own) {
            metric(own, "m", it_value(w->k, i), i, -1, w->k, i);
        }
    }
    if (own) {
        end_run(own);
    }
    return NULL;
}

static void cmd_threads(mlt_tracker *t, long threads, long points)
{
    mlt_run *shared = start_run(t, "shared");
    if (!shared) {
        return;
    }
    worker *w = calloc((size_t)threads, sizeof *w);
    if (!w) {
        complain("out of memory");
        failures++;
        end_run(shared);
        return;
    }
    for (long k = 0; k < threads; k++) {
        w[k] = (worker){.t = t, .shared = shared, .k = k, .points = points};
        if (pthread_create(&w[k].thread, NULL, worker_main, &w[k]) != 0) {
            complain("cannot start thread %ld", k);
            failures++;
            threads = k;
            break;
        }
    }
    for (long k = 0; k < threads; k++) {
        pthread_join(w[k].thread, NULL);
    }
    free(w);
    end_run(shared);
}

typedef struct scaler {
    pthread_t thread;
    mlt_tracker *t;
    mlt_run *top;
    const char *tag;
    long k, runs, points;
    bool ring;
} scaler;

/* One point of thread w: by handle on even threads (library-stamped, unless --ring: a handle
 * cannot carry a timestamp, so then by string at TS_BASE + i like odd threads). */
static void scale_point(const scaler *w, mlt_run *run, const mlt_key *h, const char *key,
                        double value, int64_t step, long r, long i)
{
    if (w->ring) {
        metric(run, key, value, step, TS_BASE + i, r, i);
    } else if (h) {
        metric_h(run, h, key, value, step, r, i);
    } else {
        metric(run, key, value, step, -1, r, i);
    }
}

static void *scaler_main(void *arg)
{
    scaler *w = arg;
    char key[96];
    snprintf(key, sizeof key, "%s/t%ld", w->tag, w->k);
    bool by_handle = w->k % 2 == 0;
    const mlt_key *hk = NULL, *hloss = NULL, *hacc = NULL;
    if (by_handle) {
        mlt_err rc = mlt_metric_key(&hk, w->t, key);
        if (rc == MLT_OK) {
            rc = mlt_metric_key(&hloss, w->t, "loss");
        }
        if (rc == MLT_OK) {
            rc = mlt_metric_key(&hacc, w->t, "acc");
        }
        if (rc != MLT_OK) {
            call_failed("metric key", w->top, key, rc);
            return NULL;
        }
    }
    for (long i = 0; i < w->points; i++) {
        scale_point(w, w->top, hk, key, it_value(w->k, i), i, w->k, i);
    }
    for (long r = 0; r < w->runs; r++) {
        char name[128];
        snprintf(name, sizeof name, "%s-t%ld-r%ld", w->tag, w->k, r);
        mlt_run *run = start_run_in(w->t, w->top, name);
        if (!run) {
            continue;
        }
        kv(run, true, "lr", "0.01");
        kv_int(run, true, "thread", w->k);
        kv_int(run, true, "run_index", r);
        kv(run, false, "kind", "scale");
        long vr = r + 100 * w->k;
        for (long i = 0; i < w->points; i++) {
            scale_point(w, run, i % 2 == 0 ? hloss : hacc, it_key(i), it_value(vr, i), i / 2, vr,
                        i);
            if (i % 250 == 249) {
                kv_int(run, false, "progress", i + 1);
            }
        }
        kv(run, false, "progress", "done");
        end_run(run);
    }
    return NULL;
}

static void cmd_scale(mlt_tracker *t, const config *c, const char *tag, long threads, long runs,
                      long points)
{
    mlt_run *top = start_run(t, tag);
    if (!top) {
        return;
    }
    char key[96];
    kv(top, true, "job", "scale"); /* every rank of a shared run logs it: the same value */
    snprintf(key, sizeof key, "%s.threads", tag);
    kv_int(top, true, key, threads);
    snprintf(key, sizeof key, "%s.points", tag);
    kv_int(top, true, key, points);
    snprintf(key, sizeof key, "%s.state", tag);
    kv(top, false, key, "running");
    scaler *w = calloc((size_t)threads, sizeof *w);
    if (!w) {
        complain("out of memory");
        failures++;
        end_run(top);
        return;
    }
    for (long k = 0; k < threads; k++) {
        w[k] = (scaler){.t = t,
                        .top = top,
                        .tag = tag,
                        .k = k,
                        .runs = runs,
                        .points = points,
                        .ring = c->ring};
        if (pthread_create(&w[k].thread, NULL, scaler_main, &w[k]) != 0) {
            complain("cannot start thread %ld", k);
            failures++;
            threads = k;
            break;
        }
    }
    for (long k = 0; k < threads; k++) {
        pthread_join(w[k].thread, NULL);
    }
    free(w);
    kv(top, false, key, "done");
    end_run(top);
}

static int usage(void)
{
    complain(
        "usage: it_queue [--ledger PATH] [--close-ms N] [--flush-ms N] [--delay-ms N] "
        "[--before-flush FILE] [--hold FILE] [--verbose] [--from-env] [--ring] (log RUNS POINTS | "
        "forever TAG [POINTS_PER_RUN [THREADS]] | threads THREADS POINTS | "
        "scale TAG THREADS RUNS POINTS | pause-between FILE)");
    return EXIT_USAGE;
}

int main(int argc, char **argv)
{
    config c = {.close_ms = 5000, .flush_ms = -1, .delay_ms = 0, .hold = NULL};
    const char *ledger = getenv("IT_QUEUE_LEDGER");
    const char *env_close = getenv("IT_QUEUE_CLOSE_MS");
    if (env_close && *env_close && !parse_long(env_close, -1, 3600000, &c.close_ms)) {
        return usage();
    }
    int a = 1;
    for (; a < argc && strncmp(argv[a], "--", 2) == 0; a++) {
        const char *opt = argv[a];
        if (strcmp(opt, "--from-env") == 0) {
            c.from_env = true;
            continue;
        }
        if (strcmp(opt, "--verbose") == 0) {
            c.verbose = true;
            continue;
        }
        if (strcmp(opt, "--ring") == 0) {
            c.ring = true;
            continue;
        }
        if (a + 1 >= argc) {
            return usage();
        }
        const char *val = argv[++a];
        if (strcmp(opt, "--ledger") == 0) {
            ledger = val;
        } else if (strcmp(opt, "--hold") == 0) {
            c.hold = val;
        } else if (strcmp(opt, "--before-flush") == 0) {
            c.before_flush = val;
        } else if (strcmp(opt, "--close-ms") == 0) {
            if (!parse_long(val, -1, 3600000, &c.close_ms)) {
                return usage();
            }
        } else if (strcmp(opt, "--flush-ms") == 0) {
            if (!parse_long(val, -1, 3600000, &c.flush_ms)) {
                return usage();
            }
        } else if (strcmp(opt, "--delay-ms") == 0) {
            if (!parse_long(val, 0, 60000, &c.delay_ms)) {
                return usage();
            }
        } else {
            return usage();
        }
    }
    if (a >= argc) {
        return usage();
    }
    const char *cmd = argv[a++];
    long n1 = 0, n2 = 0, scale_runs = 0;
    if (strcmp(cmd, "log") == 0) {
        if (argc - a != 2 || !parse_long(argv[a], 0, 100000, &n1) ||
            !parse_long(argv[a + 1], 0, 10000000, &n2)) {
            return usage();
        }
    } else if (strcmp(cmd, "forever") == 0) {
        n2 = 60;
        n1 = 1;
        if (argc - a < 1 || argc - a > 3 ||
            (argc - a >= 2 && !parse_long(argv[a + 1], 1, 1000000, &n2)) ||
            (argc - a == 3 && !parse_long(argv[a + 2], 1, 64, &n1)) || strlen(argv[a]) > 40) {
            return usage();
        }
    } else if (strcmp(cmd, "threads") == 0) {
        if (argc - a != 2 || !parse_long(argv[a], 1, 64, &n1) ||
            !parse_long(argv[a + 1], 0, 10000000, &n2)) {
            return usage();
        }
    } else if (strcmp(cmd, "scale") == 0) {
        long n3 = 0;
        if (argc - a != 4 || !parse_long(argv[a + 1], 1, 64, &n1) ||
            !parse_long(argv[a + 2], 0, 100000, &n3) ||
            !parse_long(argv[a + 3], 0, 10000000, &n2) || strlen(argv[a]) > 40) {
            return usage();
        }
        scale_runs = n3;
    } else if (strcmp(cmd, "pause-between") == 0) {
        if (argc - a != 1) {
            return usage();
        }
    } else {
        return usage();
    }

    if (ledger && *ledger) {
        ledger_fd = open(ledger, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (ledger_fd < 0) {
            complain("cannot open the ledger %s: %s", ledger, strerror(errno));
            return EXIT_SETUP;
        }
    }
    mlt_tracker *t = setup(&c);
    if (!t) {
        if (ledger_fd >= 0) {
            close(ledger_fd);
        }
        return EXIT_SETUP;
    }

    if (strcmp(cmd, "log") == 0) {
        cmd_log(t, &c, n1, n2);
    } else if (strcmp(cmd, "forever") == 0) {
        cmd_forever_threads(t, &c, argv[a], n2, n1);
    } else if (strcmp(cmd, "threads") == 0) {
        cmd_threads(t, n1, n2);
    } else if (strcmp(cmd, "scale") == 0) {
        cmd_scale(t, &c, argv[a], n1, scale_runs, n2);
    } else {
        cmd_pause_between(t, argv[a]);
    }

    if (c.before_flush && !wait_for_file(c.before_flush, 600)) {
        complain("--before-flush: %s did not appear within 600 s", c.before_flush);
    }
    if (c.flush_ms >= 0) {
        int64_t t0 = now_ms();
        mlt_err rc = mlt_tracker_flush(t, (int)c.flush_ms);
        say("flush %s %" PRId64 "\n", mlt_err_name(rc), now_ms() - t0);
    }
    if (c.hold) {
        char ready[4096];
        snprintf(ready, sizeof ready, "%s.ready", c.hold);
        touch(ready);
        if (!wait_for_file(c.hold, 600)) {
            complain("--hold: %s did not appear within 600 s", c.hold);
        }
    }
    mlt_queue_stats st = MLT_QUEUE_STATS_INIT;
    mlt_err rc = mlt_tracker_queue_stats(&st, t);
    if (rc == MLT_OK) {
        say("stats queued=%" PRIu64 " sent=%" PRIu64 " acknowledged=%" PRIu64 " retried=%" PRIu64
            " rejected=%" PRIu64 " bytes_pending=%" PRIu64 "\n",
            st.queued, st.sent, st.acknowledged, st.retried, st.rejected, st.bytes_pending);
    } else {
        say("stats %s\n", mlt_err_name(rc));
    }
    int64_t t0 = now_ms();
    rc = mlt_tracker_close(t, (int)c.close_ms);
    say("close %s %" PRId64 "\n", mlt_err_name(rc), now_ms() - t0);
    say("failures %lu\n", (unsigned long)failures);
    if (ledger_fd >= 0) {
        close(ledger_fd);
    }
    return failures ? EXIT_FAILED : 0;
}
