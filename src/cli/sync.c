/*
 * sync.c - `mltrack sync`: delivers the journals of the queue that no live process owns, on this
 * thread, with a progress bar on a terminal, then the summary (what was sent, what is left and
 * why) and the exit status that tells "delivered", "left" and "waiting for a run" apart.
 */
#include "config.h"

#include "cli.h"
#include "journal.h"
#include "queue.h"
#include "relay.h"
#include "sender.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- sync ---- */

/* One journal sync opened and handed to the sender (borrowed until mlt__sender_free). */
typedef struct handled {
    mlt__journal *j;
    uint64_t dead_before; /* dead letters it had before this sync */
} handled;

/* One `mltrack sync`: the journals it took, and those it could not. */
typedef struct sync_job {
    cli *c;
    mlt__sender *sender;
    handled *done;
    size_t n_done, cap;
    uint64_t n_locked, locked_left; /* journals owned by a running process, their records */
    uint64_t n_failed, failed_left; /* journals that could not be opened, their records */
    mlt__sync_progress last;        /* the latest progress report */
    const char *uri;                /* where sync delivers */
    bool reported;
} sync_job;

static void on_progress(const mlt__sync_progress *p, void *ud)
{
    sync_job *job = ud;
    job->last = *p;
    job->reported = true;
    bar_draw(job->c, p, false);
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

static const char *plural(uint64_t n, const char *one, const char *many)
{
    return n == 1 ? one : many;
}

/* Parses --timeout into a monotonic deadline (-1 for none). */
static int parse_deadline(cli *c, const char *text, int64_t *out)
{
    *out = -1;
    double s;
    if (text && parse_seconds(c, text, &s) != EXIT_SUCCESS) {
        return EXIT_USAGE;
    }
    if (text) {
        *out = mlt__mono_ns() + (int64_t)(s * 1e9);
    }
    return EXIT_SUCCESS;
}

/* Pending records of a journal sync could not take: read without locking or cutting. */
static bool peek_pending(const char *dir, uint64_t *out)
{
    mlt__journal *j = NULL;
    mlt__recovery rec;
    memset(&rec, 0, sizeof rec);
    if (mlt__journal_open(&j, dir, true, MLT__FSYNC_NONE, &rec) != MLT_OK) {
        return false;
    }
    *out = pending_records(j);
    mlt__journal_close(j, false);
    return true;
}

/* One journal of the queue, adopted (mlt__queue_adopt): handed to the sender, or counted with
 * why it cannot be. */
static bool sync_take(const mlt__adoption *a, void *ud)
{
    sync_job *job = ud;
    cli *c = job->c;
    const char *dir = a->dir;
    uint64_t pending = 0;
    if (a->rec->cut_bytes > 0) {
        say(c, "journal %s: cut %" PRIu64 " bytes of a torn/corrupt tail: %s", dir,
            a->rec->cut_bytes, a->rec->why);
    }
    if (a->rec->ring_points > 0) {
        verbose(c, "journal %s: %" PRIu64 " points its process left in memory were saved", dir,
                a->rec->ring_points);
    }
    if (a->err == MLT_ERR_LOCKED) {
        if (peek_pending(dir, &pending)) {
            job->n_locked++;
            job->locked_left += pending;
            verbose(c, "journal %s: owned by a running process, %" PRIu64 " records pending", dir,
                    pending);
        } else {
            say(c, "journal %s: owned by a running process, and unreadable", dir);
            job->n_failed++;
        }
        return true;
    }
    if (a->err != MLT_OK) {
        say(c, "journal %s: %s", dir, detail_of(a->err));
        job->n_failed++;
        if (peek_pending(dir, &pending)) {
            job->failed_left += pending;
        }
        return true;
    }
    mlt__journal *j = a->j;
    if (!mlt__journal_is_for(j, job->uri)) {
        say(c, "journal %s was written for %s: delivering it to %s", dir, mlt__journal_target(j),
            job->uri);
    }
    uint64_t dead_before = mlt__journal_dead_count(j);
    pending = pending_records(j);
    mlt_err e = MLT_OK;
    if (job->n_done == job->cap) {
        size_t cap = job->cap ? job->cap * 2 : 16;
        handled *grown = cap > job->cap ? realloc(job->done, cap * sizeof *grown) : NULL;
        e = grown ? MLT_OK : MLT_ERR_NOMEM;
        if (grown) {
            job->done = grown;
            job->cap = cap;
        }
    }
    if (e == MLT_OK) {
        e = mlt__sender_add(job->sender, j, true);
    }
    if (e != MLT_OK) {
        say(c, "journal %s: %s", dir, mlt_strerror(e));
        job->n_failed++;
        job->failed_left += pending;
        mlt__journal_close(j, false); /* not taken: still ours */
        return true;
    }
    verbose(c, "journal %s: %" PRIu64 " records pending", dir, pending);
    job->done[job->n_done].j = j;
    job->done[job->n_done].dead_before = dead_before;
    job->n_done++;
    return true;
}

/* The last line of the summary: why something is left. */
static void print_not_delivered(const sync_job *job, uint64_t handled_left, mlt_err drain_err,
                                const char *drain_msg)
{
    mlt__buf why;
    mlt__buf_init(&why);
    if (handled_left > 0 && drain_err == MLT_ERR_QUEUED) {
        scrub_append(job->c, &why, drain_msg); /* what waits for what */
    } else if (handled_left > 0) {
        mlt__buf_printf(&why, "%" PRIu64 " %s undelivered", handled_left,
                        plural(handled_left, "record", "records"));
        if (drain_err != MLT_OK) {
            mlt__buf_puts(&why, " (");
            scrub_append(job->c, &why, drain_msg[0] ? drain_msg : mlt_strerror(drain_err));
            mlt__buf_puts(&why, ")");
        }
    }
    if (job->locked_left > 0) {
        mlt__buf_printf(&why, "%s%" PRIu64 " %s in %" PRIu64 " %s owned by a running process",
                        why.len ? "; " : "", job->locked_left,
                        plural(job->locked_left, "record", "records"), job->n_locked,
                        plural(job->n_locked, "journal", "journals"));
    }
    if (job->n_failed > 0) {
        mlt__buf_printf(&why, "%s%" PRIu64 " %s could not be opened", why.len ? "; " : "",
                        job->n_failed, plural(job->n_failed, "journal", "journals"));
    }
    printf("not delivered: %s\n", why.oom || !why.data ? "out of memory" : why.data);
    mlt__buf_free(&why);
}

/* Delivers the journals taken, prints the summary and frees the sender. Returns the exit
 * status. */
static int sync_deliver(sync_job *job, int64_t deadline_ns)
{
    cli *c = job->c;
    mlt__sync_progress sum;
    memset(&sum, 0, sizeof sum);
    mlt_err drain_err = MLT_OK;
    char drain_msg[4096] = "";
    if (job->n_done > 0) {
        mlt__fail_clear();
        drain_err = mlt__sender_drain(job->sender, deadline_ns, on_progress, job, &sum);
        if (drain_err != MLT_OK) {
            snprintf(drain_msg, sizeof drain_msg, "%s", mlt_last_error());
        }
        /* Both are running counts: the larger is right even if a failed drain left sum short. */
        sum.runs_created = max_u64(sum.runs_created, job->last.runs_created);
        sum.points_sent = max_u64(sum.points_sent, job->last.points_sent);
        sum.rejected = max_u64(sum.rejected, job->last.rejected);
        sum.records_done = max_u64(sum.records_done, job->last.records_done);
        sum.records_total = max_u64(sum.records_total, job->last.records_total);
        if (job->reported) {
            bar_draw(c, &sum, true);
        }
    }

    /* Read what is left before the sender closes (and may remove) the journals. */
    uint64_t handled_left = 0;
    mlt__buf dead;
    mlt__buf_init(&dead);
    for (size_t i = 0; i < job->n_done; i++) {
        handled_left += pending_records(job->done[i].j);
        if (mlt__journal_dead_count(job->done[i].j) > job->done[i].dead_before) {
            mlt__buf_printf(&dead, "%s/dead.jsonl\n", mlt__journal_dir(job->done[i].j));
        }
    }
    mlt__sender_free(job->sender, 0);
    job->sender = NULL;

    uint64_t left = handled_left + job->locked_left + job->failed_left;
    printf("runs created: %" PRIu64 "\n", sum.runs_created);
    printf("points sent: %" PRIu64 "\n", sum.points_sent);
    printf("rejected: %" PRIu64 "\n", sum.rejected);
    printf("left: %" PRIu64 "\n", left);
    bool ok = left == 0 && job->n_failed == 0;
    /* only records waiting for runs nobody here makes are left: a status of its own */
    bool only_nowhere = !ok && drain_err == MLT_ERR_QUEUED && sum.waiting_nowhere == handled_left &&
                        job->locked_left == 0 && job->failed_left == 0 && job->n_failed == 0;
    if (ok) {
        printf("delivered everything\n");
        if (drain_err != MLT_OK) {
            say(c, "%s", drain_msg[0] ? drain_msg : mlt_strerror(drain_err));
        }
    } else {
        print_not_delivered(job, handled_left, drain_err, drain_msg);
    }
    if (sum.rejected > 0 && dead.data) {
        for (char *line = dead.data, *nl; (nl = strchr(line, '\n')); line = nl + 1) {
            *nl = '\0';
            printf("dead letters: %s\n", line);
            if (access(line, F_OK) != 0) {
                say(c, "warning: %s is gone", line);
            }
        }
    }
    mlt__buf_free(&dead);
    if (fflush(stdout) != 0) {
        say(c, "cannot write the summary: %s", strerror(errno));
        return EXIT_LEFT;
    }
    return ok ? EXIT_SUCCESS : only_nowhere ? EXIT_WAITING : EXIT_LEFT;
}

/* ---- sync --follow: the relay ---- */

static atomic_bool relay_stop;

static void on_stop_signal(int sig)
{
    (void)sig;
    atomic_store(&relay_stop, true);
}

/* A line on stdout whenever what the relay delivers changes. */
static void on_relay_report(const mlt__relay_stats *st, void *ud)
{
    mlt__relay_stats *last = ud;
    if (st->journals == last->journals && st->following == last->following &&
        st->adopted == last->adopted && st->removed == last->removed && st->lost == last->lost) {
        return;
    }
    *last = *st;
    printf("journals: %" PRIu64 ", delivering: %" PRIu64 " live + %" PRIu64
           " ended, by others: %" PRIu64 ", delivered and removed: %" PRIu64
           ", leases lost: %" PRIu64 "\n",
           st->journals, st->following, st->adopted, st->others, st->removed, st->lost);
    fflush(stdout);
}

static int sync_follow(cli *c, const args *a, mlt_options *opts, const char *queue, const char *uri)
{
    long poll_ms = 200;
    if (a->poll_ms) {
        char *end;
        poll_ms = strtol(a->poll_ms, &end, 10);
        if (*end || end == a->poll_ms || poll_ms < 10 || poll_ms > 60000) {
            say(c, "--poll-ms %s: give a number of milliseconds from 10 to 60000", a->poll_ms);
            return EXIT_USAGE;
        }
    }
    if (a->timeout) {
        say(c, "--timeout and --follow do not go together: a relay runs until it is stopped");
        return EXIT_USAGE;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    atomic_store(&relay_stop, false);
    say(c, "relay: delivering %s to %s until stopped (lease %s ms, poll %ld ms)", queue, uri,
        mlt_options_get(opts, "lease_ms") ? mlt_options_get(opts, "lease_ms") : "10000", poll_ms);
    mlt__relay_stats last;
    memset(&last, 0, sizeof last);
    last.journals = UINT64_MAX; /* the first report prints */
    mlt__fail_clear();
    mlt_err e = mlt__relay_run(opts, queue, &relay_stop, (int)poll_ms, on_relay_report, &last);
    if (e != MLT_OK) {
        say(c, "%s", detail_of(e));
        return EXIT_LEFT;
    }
    say(c, "relay: stopped; what is left stays in the queue for the next relay or sync");
    return EXIT_SUCCESS;
}

int cmd_sync(cli *c, const args *a)
{
    char queue[PATH_MAX];
    int64_t deadline_ns = -1;
    mlt_options *opts = NULL;

    if (parse_deadline(c, a->timeout, &deadline_ns) != EXIT_SUCCESS) {
        return EXIT_USAGE;
    }
    int rc = load_options(c, a, &opts);
    if (rc != EXIT_SUCCESS) {
        return rc;
    }
    const char *uri = mlt_options_get(opts, "tracking_uri");
    if (!uri) {
        say(c, "no tracking server: set MLFLOW_TRACKING_URI or give --tracking-uri URL");
        unload_options(c, opts);
        return EXIT_USAGE;
    }
    if (queue_path(c, opts, queue, sizeof queue) != EXIT_SUCCESS) {
        unload_options(c, opts);
        return EXIT_USAGE;
    }
    if (a->follow) {
        rc = sync_follow(c, a, opts, queue, uri);
        unload_options(c, opts);
        return rc;
    }
    verbose(c, "syncing %s to %s", queue, uri); /* say() masks user:password@ */

    sync_job job;
    memset(&job, 0, sizeof job);
    job.c = c;
    job.uri = uri;
    mlt__fail_clear();
    mlt_err e = mlt__sender_new(&job.sender, opts);
    if (e == MLT_OK) {
        mlt__sender_set_relay(job.sender);
    }
    if (e != MLT_OK) {
        say(c, "%s", detail_of(e));
        unload_options(c, opts);
        return e == MLT_ERR_BAD_OPTION || e == MLT_ERR_INVALID_ARG ? EXIT_USAGE : EXIT_LEFT;
    }
    size_t n_list = 0;
    e = mlt__queue_adopt(queue, MLT__FSYNC_ALWAYS, sync_take, &job, &n_list);
    if (e != MLT_OK) {
        say(c, "cannot read the queue %s: %s", queue, detail_of(e));
        rc = EXIT_LEFT;
        mlt__sender_free(job.sender, 0);
    } else {
        if (n_list == 0) {
            verbose(c, "no journal in %s", queue);
        }
        rc = sync_deliver(&job, deadline_ns);
    }
    free(job.done);
    unload_options(c, opts);
    return rc;
}
