/*
 * mltrack.c - the command-line tool: argument parsing and help for every command (run.c has
 * `mltrack run` and the log commands), `mltrack sync`, which delivers the journals of the
 * durable queue that no live process owns, and `mltrack status`, which shows what the queue
 * holds. Owns the progress bar, the stderr logger and the stable stdout summaries tests parse.
 */
#include "config.h"

#include "cli.h"
#include "journal.h"
#include "options.h"
#include "queue.h"
#include "sender.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define BAR_WIDTH 20
#define BAR_PERIOD_NS 100000000LL  /* at most ~10 redraws a second */
#define MAX_TIMEOUT_S 31536000.0   /* a year: keeps the deadline within int64 nanoseconds */
#define MIN_SECRET 4               /* shorter secrets are not masked: that would garble text */

/* ---- help ---- */

#define CONN_HELP                                                                                \
    "  --queue DIR            queue directory (default: $MLTRACK_QUEUE_DIR, else\n"             \
    "                         $XDG_STATE_HOME/mltrack/queue or ~/.local/state/mltrack/queue)\n" \
    "  --tracking-uri URL     MLflow tracking server (default: $MLFLOW_TRACKING_URI)\n"

static const char usage_text[] =
    "usage: mltrack [-v] COMMAND [OPTIONS]\n"
    "\n"
    "Tracks runs in MLflow through a durable local queue: nothing waits for the server, and\n"
    "nothing is lost when it is away.\n"
    "\n"
    "commands:\n"
    "  run          run a command as an MLflow run (params, tags, metrics it prints, outcome)\n"
    "  log-metric   log a metric point into the current run (MLFLOW_RUN_ID / MLTRACK_RUN_KEY)\n"
    "  log-param    log a param into the current run\n"
    "  set-tag      set a tag on the current run\n"
    "  sync         deliver every journal of the queue that no running process owns\n"
    "  status       show each journal of the queue: owner, pending records, dead letters, runs\n"
    "  requeue      put the queue's dead letters back, for `mltrack sync` to deliver\n"
    "  drop         delete journals of the queue (or their dead letters) on purpose\n"
    "  help [CMD]   show this help, or a command's\n"
    "\n"
    "options:\n"
    "  -v, --verbose   also print the library's debug and info messages\n"
    "  -h, --help      show this help (`mltrack CMD --help`: a command's)\n"
    "      --version   print the version\n"
    "\n"
    "The MLFLOW_* variables of the Python client are honoured (tracking URI, experiment,\n"
    "credentials, TLS, retries); see mltrack(1).\n"
    "exit status: 0 done; 1 records left undelivered (sync) or queue unreadable (status);\n"
    "2 usage or configuration error; 3 (sync) records wait for a run nobody here creates;\n"
    "run: the command's own status.\n";

static const char run_help[] =
    "usage: mltrack run [OPTIONS] [--] CMD [ARG]...\n"
    "\n"
    "Runs CMD as an MLflow run, through the queue (it works with the server away). The run is\n"
    "tagged with the command line (mltrack.command), the host, the working directory and, in a\n"
    "git work tree, the commit. CMD gets MLFLOW_TRACKING_URI, MLTRACK_RUN_KEY and, once the\n"
    "server made the run, MLFLOW_RUN_ID, so that libmltrack or the Python client in CMD logs\n"
    "into the same run; stderr then says where the run is in the MLflow UI. With the server\n"
    "away, nothing is waited for: one line on stderr says what is kept in the queue, and\n"
    "`mltrack sync` delivers it later.\n"
    "\n"
    "Every byte CMD writes to stdout is passed through; lines in this protocol are also logged:\n"
    "  mltrack:metric KEY=VALUE [KEY=VALUE]... [step=N]   (without step: 0, 1, 2... per key)\n"
    "  mltrack:param KEY=VALUE...\n"
    "  mltrack:tag KEY=VALUE...\n"
    "Values may be double-quoted (\\\" \\\\ \\n \\t). A malformed line is reported on stderr and\n"
    "ignored. CMD's stdout is a pipe: flush each line (stdbuf -oL, PYTHONUNBUFFERED=1).\n"
    "Inside another mltrack run (a sweep), the lines it logged pass through indented by two\n"
    "spaces, so that the outer run does not log them again.\n"
    "\n"
    "The run ends FINISHED when CMD exits 0, FAILED on another status, KILLED when a signal\n"
    "ends it. SIGINT, SIGTERM, SIGHUP and SIGQUIT are passed on to CMD (before it starts, they\n"
    "cancel it; after it ended, they cut the wait for delivery short). mltrack exits with\n"
    "CMD's status (128+N for signal N; 127: not found, 126: cannot run).\n"
    "\n"
    "options:\n"
    "  --experiment NAME      experiment (default: $MLFLOW_EXPERIMENT_NAME, else Default)\n"
    "  --run-name NAME        the run's name (default: the server picks one)\n"
    "  --param K=V            log a param (repeatable)\n"
    "  --tag K=V              set a tag (repeatable)\n"
    "  --system-metrics       log CPU and memory use (system/...) every 10 s\n"
    "  --system-metrics-interval SECONDS   the sampling interval (implies --system-metrics)\n"
    "  --timeout SECONDS      how long to wait for delivery once CMD is done (default 10);\n"
    "                         what is left stays queued for the next mltrack or `mltrack sync`\n" CONN_HELP;

static const char log_help[] =
    "usage: mltrack log-metric KEY VALUE [--step N] [OPTIONS]\n"
    "       mltrack log-param KEY VALUE [OPTIONS]\n"
    "       mltrack set-tag KEY VALUE [OPTIONS]\n"
    "\n"
    "Logs into the run named by MLFLOW_RUN_ID or MLTRACK_RUN_KEY (set by `mltrack run` for the\n"
    "command it runs), through the queue: the record is on disk when the command returns.\n"
    "log-metric without --step logs at step 0.\n"
    "\n"
    "options:\n"
    "  --step N               the metric's step (log-metric)\n"
    "  --timeout SECONDS      how long to try delivering before leaving the record queued for\n"
    "                         the next mltrack or `mltrack sync` (default 2)\n" CONN_HELP;

static const char sync_help[] =
    "usage: mltrack sync [OPTIONS]\n"
    "\n"
    "Delivers every journal of the queue that no running process owns. Prints\n"
    "`runs created: N`, `points sent: N`, `rejected: N`, `left: N`, then `delivered everything`\n"
    "or `not delivered: REASON` on stdout.\n"
    "\n"
    "exit status:\n"
    "  0  everything was delivered (records the server refused are dead letters: `requeue`)\n"
    "  1  records are left: the server cannot be reached or keeps failing, a running process\n"
    "     owns their journal, or a journal cannot be read\n"
    "  2  usage or configuration error\n"
    "  3  everything else was delivered, but records wait for a run that the server does not\n"
    "     have and no journal of the queue creates (a mistyped MLTRACK_RUN_KEY, or a run of\n"
    "     another queue): they become dead letters attach_timeout after they were written\n"
    "     ($MLTRACK_ATTACH_TIMEOUT, 7 days), or `mltrack drop` drops them now\n"
    "\n"
    "options:\n"
    "  --timeout SECONDS      give up after SECONDS (default: after the configured retries,\n"
    "                         $MLFLOW_HTTP_REQUEST_MAX_RETRIES)\n" CONN_HELP;

static const char requeue_help[] =
    "usage: mltrack requeue [--queue DIR]\n"
    "\n"
    "Puts the dead letters of every journal of the queue that no running process owns back\n"
    "into the queue, as a new journal, once what made the server refuse them is fixed (a\n"
    "password, a permission, a deleted experiment restored); `mltrack sync` then delivers them.\n"
    "A refused run is created again with its name, start time and tags; records of a run the\n"
    "server has go into it. Prints a line per journal, then `requeued: N` and `kept: N` (dead\n"
    "letters with nothing to log them into, left in place). A journal with records not yet\n"
    "delivered is left alone (exit status 1): `mltrack sync` first.\n"
    "\n"
    "options:\n"
    "  --queue DIR            queue directory (default: $MLTRACK_QUEUE_DIR, else\n"
    "                         $XDG_STATE_HOME/mltrack/queue or ~/.local/state/mltrack/queue)\n";

static const char drop_help[] =
    "usage: mltrack drop [--dead-letters] [--queue DIR] JOURNAL...\n"
    "\n"
    "Deletes each JOURNAL (its directory, or its name j-... in the queue, as `mltrack status`\n"
    "shows it) with everything it holds, and prints what went: its records not delivered by\n"
    "kind, its dead letters and its runs. Nothing of it can be delivered afterwards. A journal a\n"
    "running process owns is left alone (exit status 1).\n"
    "\n"
    "options:\n"
    "  --dead-letters         delete only the journal's dead letters (dead.jsonl)\n"
    "  --queue DIR            queue directory (default: $MLTRACK_QUEUE_DIR, else\n"
    "                         $XDG_STATE_HOME/mltrack/queue or ~/.local/state/mltrack/queue)\n";

static const char status_help[] =
    "usage: mltrack status [--queue DIR]\n"
    "\n"
    "Shows each journal of the queue: its owner, pending records, dead letters, runs, and\n"
    "records that wait for a run the server does not have yet (with who creates it).\n"
    "\n"
    "options:\n"
    "  --queue DIR            queue directory (default: $MLTRACK_QUEUE_DIR, else\n"
    "                         $XDG_STATE_HOME/mltrack/queue or ~/.local/state/mltrack/queue)\n";

/* ---- stderr: messages and the progress bar ---- */

/* Ends the bar line so that a message starts on a clean line. Call with c->lock held. */
static void bar_clear_locked(cli *c)
{
    if (c->bar_shown) {
        fputs("\r\033[K", stderr);
        c->bar_shown = false;
    }
}

/*
 * Appends msg to out with secrets masked: the user:password@ of any URL (library messages quote
 * request URLs whole) and the literal token and password of the options.
 */
static void scrub_append(const cli *c, mlt__buf *out, const char *msg)
{
    const char *s = msg;
    while (*s) {
        bool masked = false;
        for (size_t k = 0; k < sizeof c->secrets / sizeof c->secrets[0] && !masked; k++) {
            const char *secret = c->secrets[k];
            size_t n = secret ? strlen(secret) : 0;
            if (n >= MIN_SECRET && strncmp(s, secret, n) == 0) {
                mlt__buf_puts(out, "***");
                s += n;
                masked = true;
            }
        }
        if (masked) {
            continue;
        }
        if (strncmp(s, "://", 3) == 0) {
            mlt__buf_append(out, s, 3);
            s += 3;
            size_t authority = strcspn(s, "/?# \t\r\n\"'");
            const char *at = memrchr(s, '@', authority);
            if (at) {
                mlt__buf_puts(out, "***");
                s = at; /* the '@' and the host stay */
            }
            continue;
        }
        mlt__buf_putc(out, *s++);
    }
}

/* The message with its secrets masked, in a new string; NULL when out of memory. */
static char *scrubbed(const cli *c, const char *msg)
{
    mlt__buf out;
    mlt__buf_init(&out);
    scrub_append(c, &out, msg);
    if (!out.data && !out.oom) {
        return mlt__strdup("");
    }
    return mlt__buf_steal(&out);
}

static void vsay(cli *c, const char *fmt, va_list ap)
{
    char stack[1024];
    char *heap = NULL;
    const char *msg = stack;
    va_list again;
    va_copy(again, ap);
    int n = vsnprintf(stack, sizeof stack, fmt, ap);
    if (n < 0) {
        msg = "(message could not be formatted)";
    } else if ((size_t)n >= sizeof stack && (heap = malloc((size_t)n + 1)) != NULL) {
        vsnprintf(heap, (size_t)n + 1, fmt, again);
        msg = heap;
    }
    va_end(again);
    char *clean = scrubbed(c, msg);
    free(heap);

    pthread_mutex_lock(&c->lock);
    bar_clear_locked(c);
    fputs("mltrack: ", stderr);
    fputs(clean ? clean : "(out of memory)", stderr);
    fputc('\n', stderr);
    fflush(stderr);
    pthread_mutex_unlock(&c->lock);
    free(clean);
}

void say(cli *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsay(c, fmt, ap);
    va_end(ap);
}

void verbose(cli *c, const char *fmt, ...)
{
    if (!c->verbose) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsay(c, fmt, ap);
    va_end(ap);
}

/* The library's diagnostics: warnings and errors always, the rest with -v. */
static void log_to_stderr(int level, const char *message, void *userdata)
{
    cli *c = userdata;
    if (level < MLT_LOG_WARN && !c->verbose) {
        return;
    }
    const char *what = "";
    if (level >= MLT_LOG_ERROR) {
        what = "error: ";
    } else if (level == MLT_LOG_WARN) {
        what = "warning: ";
    }
    say(c, "%s%s", what, message);
}

static size_t terminal_columns(void)
{
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1) {
        return ws.ws_col;
    }
    return 80;
}

/* Redraws the bar in place; at most every BAR_PERIOD_NS unless final. */
static void bar_draw(cli *c, const mlt__sync_progress *p, bool final)
{
    if (!c->bar_enabled) {
        return;
    }
    pthread_mutex_lock(&c->lock);
    int64_t now = mlt__mono_ns();
    if (!final && c->bar_shown && now - c->last_draw_ns < BAR_PERIOD_NS) {
        pthread_mutex_unlock(&c->lock);
        return;
    }
    c->last_draw_ns = now;
    size_t filled = BAR_WIDTH;
    if (p->records_total > 0 && p->records_done < p->records_total) {
        filled = (size_t)((double)p->records_done * BAR_WIDTH / (double)p->records_total);
    }
    char bar[BAR_WIDTH + 1];
    for (size_t i = 0; i < BAR_WIDTH; i++) {
        bar[i] = i < filled ? '#' : '.';
    }
    bar[BAR_WIDTH] = '\0';
    char line[256];
    int n = snprintf(line, sizeof line,
                     "[%s] %" PRIu64 "/%" PRIu64 " records  runs %" PRIu64 "  points %" PRIu64
                     "  rejected %" PRIu64,
                     bar, p->records_done, p->records_total, p->runs_created, p->points_sent,
                     p->rejected);
    if (n < 0) {
        pthread_mutex_unlock(&c->lock);
        return;
    }
    /* A line longer than the terminal wraps, and \r would then redraw only its last part. */
    size_t width = terminal_columns() - 1;
    if (width < sizeof line && (size_t)n > width) {
        line[width] = '\0';
    }
    fputs("\r", stderr);
    fputs(line, stderr);
    fputs("\033[K", stderr);
    if (final) {
        fputc('\n', stderr);
    }
    c->bar_shown = !final;
    fflush(stderr);
    pthread_mutex_unlock(&c->lock);
}

/* ---- small helpers ---- */

static uint64_t pending_records(mlt__journal *j)
{
    uint64_t last = mlt__journal_last_seq(j);
    uint64_t acked = mlt__journal_acked_seq(j);
    return last > acked ? last - acked : 0;
}

static const char *run_state_name(mlt__run_state state)
{
    switch (state) {
    case MLT__RUN_OPEN: return "open";
    case MLT__RUN_ENDED: return "ended";
    case MLT__RUN_DEAD: return "dead";
    case MLT__RUN_ATTACHED: return "attached";
    }
    return "unknown";
}

const char *detail_of(mlt_err e)
{
    const char *msg = mlt_last_error();
    return msg[0] ? msg : mlt_strerror(e);
}

int queue_path(cli *c, const mlt_options *opts, char *queue, size_t len)
{
    mlt__fail_clear();
    mlt_err e = mlt__queue_dir(opts, queue, len);
    if (e != MLT_OK) {
        say(c, "cannot find the queue directory: %s", detail_of(e));
        return EXIT_USAGE;
    }
    return EXIT_SUCCESS;
}

static void free_list(char **list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(list[i]);
    }
    free(list);
}

void unload_options(cli *c, mlt_options *opts)
{
    c->secrets[0] = NULL;
    c->secrets[1] = NULL;
    mlt_options_free(opts);
}

int load_options(cli *c, const args *a, mlt_options **out)
{
    char err[512];
    mlt_options *opts = mlt_options_new();
    if (!opts) {
        say(c, "out of memory");
        return EXIT_USAGE;
    }
    if (mlt_options_set_logger(opts, log_to_stderr, c) != MLT_OK) {
        say(c, "cannot set the logger");
        mlt_options_free(opts);
        return EXIT_USAGE;
    }
    if (mlt_options_from_env(opts, err, sizeof err) != MLT_OK) {
        say(c, "%s", err);
        mlt_options_free(opts);
        return EXIT_USAGE;
    }
    /* Only the environment sets them: the flags below cannot change them. */
    c->secrets[0] = mlt__opt_str(opts, MLT__OPT_TOKEN);
    c->secrets[1] = mlt__opt_str(opts, MLT__OPT_PASSWORD);
    const struct {
        const char *flag;
        const char *name;
        const char *value;
    } flags[] = {
        {"--queue", "queue_dir", a->queue},
        {"--tracking-uri", "tracking_uri", a->tracking_uri},
        {"--experiment", "experiment_name", a->experiment},
        {"--system-metrics", "system_metrics", a->system_metrics ? "true" : NULL},
        {"--system-metrics-interval", "system_metrics_interval", a->system_metrics_interval},
    };
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        if (!flags[i].value) {
            continue;
        }
        if (mlt_options_set(opts, flags[i].name, flags[i].value, err, sizeof err) != MLT_OK) {
            say(c, "%s: %s", flags[i].flag, err);
            unload_options(c, opts);
            return EXIT_USAGE;
        }
    }
    *out = opts;
    return EXIT_SUCCESS;
}

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
    size_t n_done;
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

/* Parses --timeout SECONDS. EXIT_SUCCESS or EXIT_USAGE (said). */
static int parse_seconds(cli *c, const char *text, double *out)
{
    char *end = NULL;
    errno = 0;
    double s = strtod(text, &end);
    if (errno || end == text || *end || !isfinite(s) || s < 0 || s > MAX_TIMEOUT_S) {
        say(c, "--timeout: '%s' is not a number of seconds from 0 to %.0f", text, MAX_TIMEOUT_S);
        return EXIT_USAGE;
    }
    *out = s;
    return EXIT_SUCCESS;
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

int parse_timeout_ms(cli *c, const char *text, int def_ms, int *out)
{
    *out = def_ms;
    double s;
    if (text && parse_seconds(c, text, &s) != EXIT_SUCCESS) {
        return EXIT_USAGE;
    }
    if (text) {
        *out = s * 1000.0 >= (double)INT_MAX ? INT_MAX : (int)(s * 1000.0);
    }
    return EXIT_SUCCESS;
}

/* Pending records of a journal sync could not take: read without locking or cutting. */
static bool peek_pending(const char *dir, uint64_t *out)
{
    mlt__journal *j = NULL;
    mlt__recovery rec;
    memset(&rec, 0, sizeof rec);
    if (mlt__journal_open(&j, dir, true, MLT__FSYNC_NONE, &rec, NULL, 0) != MLT_OK) {
        return false;
    }
    *out = pending_records(j);
    mlt__journal_close(j, false);
    return true;
}

/* Opens one journal and hands it to the sender, or counts why it cannot. */
static void sync_take(sync_job *job, const char *dir)
{
    cli *c = job->c;
    char err[512] = "";
    mlt__journal *j = NULL;
    mlt__recovery rec;
    uint64_t pending = 0;
    memset(&rec, 0, sizeof rec);
    mlt_err e = mlt__journal_open(&j, dir, false, MLT__FSYNC_ALWAYS, &rec, err, sizeof err);
    if (rec.cut_bytes > 0) {
        say(c, "journal %s: cut %" PRIu64 " bytes of a torn/corrupt tail: %s", dir, rec.cut_bytes,
            rec.why);
    }
    if (rec.ring_points > 0) {
        verbose(c, "journal %s: %" PRIu64 " points its process left in memory were saved", dir,
                rec.ring_points);
    }
    if (e == MLT_ERR_LOCKED) {
        if (peek_pending(dir, &pending)) {
            job->n_locked++;
            job->locked_left += pending;
            verbose(c, "journal %s: owned by a running process, %" PRIu64 " records pending", dir,
                    pending);
        } else {
            say(c, "journal %s: owned by a running process, and unreadable", dir);
            job->n_failed++;
        }
        return;
    }
    if (e != MLT_OK) {
        say(c, "journal %s: %s", dir, err[0] ? err : mlt_strerror(e));
        job->n_failed++;
        if (peek_pending(dir, &pending)) {
            job->failed_left += pending;
        }
        return;
    }
    if (!mlt__journal_is_for(j, job->uri)) {
        say(c, "journal %s was written for %s: delivering it to %s", dir, mlt__journal_target(j),
            job->uri);
    }
    uint64_t dead_before = mlt__journal_dead_count(j);
    pending = pending_records(j);
    e = mlt__sender_add(job->sender, j, true);
    if (e != MLT_OK) {
        say(c, "journal %s: %s", dir, mlt_strerror(e));
        job->n_failed++;
        job->failed_left += pending;
        mlt__journal_close(j, false); /* not taken: still ours */
        return;
    }
    verbose(c, "journal %s: %" PRIu64 " records pending", dir, pending);
    job->done[job->n_done].j = j;
    job->done[job->n_done].dead_before = dead_before;
    job->n_done++;
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
        drain_err = mlt__sender_drain(job->sender, deadline_ns, on_progress, job, &sum,
                                      drain_msg, sizeof drain_msg);
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

static int cmd_sync(cli *c, const args *a)
{
    char err[512];
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
    verbose(c, "syncing %s to %s", queue, uri); /* say() masks user:password@ */

    char **list = NULL;
    size_t n_list = 0;
    mlt__fail_clear();
    mlt_err e = mlt__queue_list(queue, &list, &n_list);
    if (e != MLT_OK) {
        say(c, "cannot read the queue %s: %s", queue, detail_of(e));
        free_list(list, n_list);
        unload_options(c, opts);
        return EXIT_LEFT;
    }
    if (n_list == 0) {
        verbose(c, "no journal in %s", queue);
    }

    sync_job job;
    memset(&job, 0, sizeof job);
    job.c = c;
    job.uri = uri;
    rc = EXIT_SUCCESS;
    if (n_list > 0) {
        job.done = calloc(n_list, sizeof *job.done);
        e = job.done ? mlt__sender_new(&job.sender, opts, err, sizeof err)
                     : mlt__errf(err, sizeof err, MLT_ERR_NOMEM, "out of memory");
        if (e != MLT_OK) {
            say(c, "%s", err);
            rc = e == MLT_ERR_BAD_OPTION || e == MLT_ERR_INVALID_ARG ? EXIT_USAGE : EXIT_LEFT;
        }
    }
    if (rc == EXIT_SUCCESS) {
        for (size_t i = 0; i < n_list; i++) {
            sync_take(&job, list[i]);
        }
        rc = sync_deliver(&job, deadline_ns);
    }
    free(job.done);
    free_list(list, n_list);
    unload_options(c, opts);
    return rc;
}

/* ---- status ---- */

typedef struct totals {
    uint64_t journals, records, bytes, dead, unreadable;
} totals;

/* A run whose CREATE or ATTACH record waits in the journal: the run map has it only once sent
 * (or found, for an attached run). */
typedef struct queued_run {
    uint32_t run_no;
    char *key;
    bool attach;      /* an attached run: its records wait for it to be on the server */
    bool ended;       /* its end record waits too */
    uint64_t records; /* its records waiting, its own included */
    int64_t since_ms; /* attach: when its ATTACH was written (0: unknown) */
} queued_run;

static queued_run *find_queued(queued_run *q, size_t n, uint32_t run_no)
{
    for (size_t i = 0; i < n; i++) {
        if (q[i].run_no == run_no) {
            return &q[i];
        }
    }
    return NULL;
}

/* "45 s", "12 min", "3 h", "2 days": how long ago ms was. */
static void age_text(int64_t ms, char *out, size_t len)
{
    int64_t s = (mlt__now_ms() - ms) / 1000;
    s = s < 0 ? 0 : s;
    if (s < 120) {
        snprintf(out, len, "%" PRId64 " s", s);
    } else if (s < 7200) {
        snprintf(out, len, "%" PRId64 " min", s / 60);
    } else if (s < 172800) {
        snprintf(out, len, "%" PRId64 " h", s / 3600);
    } else {
        snprintf(out, len, "%" PRId64 " days", s / 86400);
    }
}

/* The runs of the unacked records that the run map does not know yet: runs not created, and
 * attached runs their records wait for (with who creates them, if a journal of the queue does). */
static void print_queued_runs(mlt__journal *j, const char *queue, const mlt_options *opts)
{
    queued_run *q = NULL;
    size_t n = 0, cap = 0;
    uint64_t cursor = mlt__journal_acked_seq(j);
    mlt__buf scratch;
    mlt__buf_init(&scratch);
    mlt__rec r;
    bool oom = false;
    while (!oom && mlt__journal_next(j, &cursor, &scratch, &r) == MLT_OK) {
        queued_run *known = find_queued(q, n, r.run_no);
        if (known) {
            known->records++;
            known->ended = known->ended || r.type == MLT__REC_END;
            continue;
        }
        const mlt__run_entry *mapped = mlt__journal_run(j, r.run_no);
        if ((r.type != MLT__REC_CREATE && r.type != MLT__REC_ATTACH) ||
            (mapped && mapped->run_id)) {
            continue;
        }
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            queued_run *nq = realloc(q, ncap * sizeof *nq);
            if (!nq) {
                oom = true;
                break;
            }
            q = nq;
            cap = ncap;
        }
        q[n] = (queued_run){r.run_no, mlt__strdup(r.key), r.type == MLT__REC_ATTACH, false, 1,
                            r.type == MLT__REC_ATTACH ? r.time_ms : 0};
        if (!q[n].key) {
            oom = true;
            break;
        }
        n++;
    }
    mlt__buf_free(&scratch);
    for (size_t i = 0; i < n; i++) {
        if (!q[i].attach) {
            printf("  run %s -> (not created) %s\n", q[i].key, q[i].ended ? "ended" : "open");
            continue;
        }
        char age[32] = "an unknown time";
        if (q[i].since_ms > 0) {
            age_text(q[i].since_ms, age, sizeof age);
        }
        printf("  waiting for run %s: %" PRIu64 " records, for %s: ", q[i].key, q[i].records,
               age);
        char who[PATH_MAX] = "";
        bool owned = false;
        if (mlt__queue_find_creator(queue, q[i].key, who, sizeof who, &owned) == MLT_OK) {
            printf("journal %s creates it%s\n", who,
                   owned ? " (a running process owns it)" : ", not delivered yet");
        } else {
            printf("no journal of this queue creates it; unless the server has it (`mltrack "
                   "sync` looks), they become dead letters %lld s after they were written "
                   "(attach_timeout), or `mltrack drop` drops them\n",
                   opts->attach_timeout_s);
        }
    }
    for (size_t i = 0; i < n; i++) {
        free(q[i].key);
    }
    if (oom) {
        printf("  runs: out of memory, list incomplete\n");
    }
    free(q);
}

static void status_journal(const char *dir, const char *queue, const mlt_options *opts,
                           totals *t)
{
    t->journals++;
    int owned = mlt__journal_owned(dir);
    const char *owner = owned > 0 ? "a running process" : owned == 0 ? "none" : "unknown";
    int saved = errno;
    printf("%s\n", dir);
    if (owned < 0) {
        printf("  owner: unknown (%s)\n", strerror(saved));
    } else {
        printf("  owner: %s\n", owner);
    }

    mlt__journal *j = NULL;
    mlt__recovery rec;
    char err[512] = "";
    memset(&rec, 0, sizeof rec);
    mlt_err e = mlt__journal_open(&j, dir, true, MLT__FSYNC_NONE, &rec, err, sizeof err);
    if (e != MLT_OK) {
        printf("  error: %s\n", err[0] ? err : mlt_strerror(e));
        t->unreadable++;
        return;
    }
    uint64_t records = pending_records(j);
    uint64_t bytes = mlt__journal_pending_bytes(j);
    uint64_t dead = mlt__journal_dead_count(j);
    printf("  pending: %" PRIu64 " records, %" PRIu64 " bytes\n", records, bytes);
    if (rec.ring_points > 0) {
        printf("  in memory (saved when the journal is next opened): %" PRIu64 " points\n",
               rec.ring_points);
    }
    printf("  dead letters: %" PRIu64 "\n", dead);
    if (rec.cut_bytes > 0) {
        /* A live writer's record in flight looks torn too: only a free journal gets cut. */
        printf("  torn/corrupt tail: %" PRIu64 " bytes (%s)%s\n", rec.cut_bytes, rec.why,
               owned > 0 ? ", maybe a write in progress" : ", cut at the next sync");
    }
    size_t n_runs = 0;
    const mlt__run_entry *runs = mlt__journal_runs(j, &n_runs);
    for (size_t i = 0; runs && i < n_runs; i++) {
        const char *id = runs[i].run_id ? runs[i].run_id : "(not created)";
        printf("  run %s -> %s %s\n", runs[i].key, id, run_state_name(runs[i].state));
    }
    print_queued_runs(j, queue, opts);
    t->records += records;
    t->bytes += bytes;
    t->dead += dead;
    mlt__journal_close(j, false);
}

static int status_queue(cli *c, const char *queue, const mlt_options *opts);

static int cmd_status(cli *c, const args *a)
{
    char queue[PATH_MAX];
    mlt_options *opts = NULL;
    int rc = load_options(c, a, &opts);
    if (rc != EXIT_SUCCESS) {
        return rc;
    }
    rc = queue_path(c, opts, queue, sizeof queue);
    if (rc != EXIT_SUCCESS) {
        unload_options(c, opts);
        return rc;
    }
    rc = status_queue(c, queue, opts);
    unload_options(c, opts);
    return rc;
}

static int status_queue(cli *c, const char *queue, const mlt_options *opts)
{
    struct stat sb;
    if (stat(queue, &sb) != 0) {
        if (errno == ENOENT) {
            printf("no queue at %s\n", queue);
            return fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_LEFT;
        }
        say(c, "cannot read the queue %s: %s", queue, strerror(errno));
        return EXIT_LEFT;
    }
    if (!S_ISDIR(sb.st_mode)) {
        say(c, "cannot read the queue %s: not a directory", queue);
        return EXIT_LEFT;
    }
    char **list = NULL;
    size_t n_list = 0;
    mlt__fail_clear();
    mlt_err e = mlt__queue_list(queue, &list, &n_list);
    if (e != MLT_OK) {
        say(c, "cannot read the queue %s: %s", queue, detail_of(e));
        free_list(list, n_list);
        return EXIT_LEFT;
    }
    totals t;
    memset(&t, 0, sizeof t);
    for (size_t i = 0; i < n_list; i++) {
        status_journal(list[i], queue, opts, &t);
    }
    free_list(list, n_list);
    /* Fixed wording (no singular forms): scripts parse this line. */
    printf("total: %" PRIu64 " journals, %" PRIu64 " records pending, %" PRIu64
           " bytes pending, %" PRIu64 " dead letters\n",
           t.journals, t.records, t.bytes, t.dead);
    if (fflush(stdout) != 0) {
        say(c, "cannot write the status: %s", strerror(errno));
        return EXIT_LEFT;
    }
    return t.unreadable ? EXIT_LEFT : EXIT_SUCCESS;
}

/* ---- command line ---- */

/* What is wrong with the flag that parsing stopped at. */
static char flag_problem[256];

/*
 * Matches argv[*i] against a flag taking a value, as `--flag VALUE` or `--flag=VALUE`.
 * Returns 1 and sets *value (advancing *i past a separate value), 0 when it is another flag,
 * -1 when the value is missing or empty (flag_problem says so).
 */
static int flag_value(int argc, char **argv, int *i, const char *flag, const char **value)
{
    const char *arg = argv[*i];
    size_t len = strlen(flag);
    if (strncmp(arg, flag, len) != 0) {
        return 0;
    }
    if (arg[len] == '=') {
        *value = arg + len + 1;
    } else if (arg[len] == '\0') {
        if (*i + 1 >= argc) {
            snprintf(flag_problem, sizeof flag_problem, "%s needs a value", flag);
            return -1;
        }
        *value = argv[++*i];
    } else {
        return 0;
    }
    if (**value == '\0') {
        snprintf(flag_problem, sizeof flag_problem, "%s needs a value", flag);
        return -1;
    }
    return 1;
}

/* Flags a command takes. */
enum {
    F_QUEUE = 1 << 0,
    F_URI = 1 << 1,
    F_TIMEOUT = 1 << 2,
    F_RUN = 1 << 3,  /* --experiment, --run-name, --param, --tag, --system-metrics[-interval] */
    F_STEP = 1 << 4, /* --step */
    F_DEAD = 1 << 5, /* --dead-letters */
};

typedef struct command {
    const char *name;
    unsigned flags;
    int n_args; /* positional arguments (-1: a command to run; -2: one or more journals) */
    const char *help;
    int (*fn)(cli *c, const args *a);
} command;

static int cmd_status_main(cli *c, const args *a);
static int cmd_sync_main(cli *c, const args *a);

static const command commands[] = {
    {"run", F_QUEUE | F_URI | F_TIMEOUT | F_RUN, -1, run_help, cmd_run},
    {"log-metric", F_QUEUE | F_URI | F_TIMEOUT | F_STEP, 2, log_help, cmd_log},
    {"log-param", F_QUEUE | F_URI | F_TIMEOUT, 2, log_help, cmd_log},
    {"set-tag", F_QUEUE | F_URI | F_TIMEOUT, 2, log_help, cmd_log},
    {"sync", F_QUEUE | F_URI | F_TIMEOUT, 0, sync_help, cmd_sync_main},
    {"status", F_QUEUE, 0, status_help, cmd_status_main},
    {"requeue", F_QUEUE, 0, requeue_help, cmd_requeue},
    {"drop", F_QUEUE | F_DEAD, -2, drop_help, cmd_drop},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static const command *find_command(const char *name)
{
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (strcmp(commands[i].name, name) == 0) {
            return &commands[i];
        }
    }
    return NULL;
}

static int print_help(const char *text)
{
    fputs(text, stdout);
    return fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_LEFT;
}

static int usage_error(cli *c, const command *cmd, const char *fmt, ...) MLT__PRINTF(3, 4);
/* One line on stderr: what is wrong, and where the help is. */
static int usage_error(cli *c, const command *cmd, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    say(c, "%s (see `mltrack %s%s--help`)", msg, cmd ? cmd->name : "", cmd ? " " : "");
    return EXIT_USAGE;
}

/* A value that starts with '-' but is a number (log-metric loss -0.5) is not a flag. */
static bool looks_negative_number(const char *arg)
{
    return arg[0] == '-' && (isdigit((unsigned char)arg[1]) || arg[1] == '.' ||
                             strncmp(arg + 1, "inf", 3) == 0 || strncmp(arg + 1, "nan", 3) == 0);
}

/* Appends to a list of borrowed strings. false when out of memory. */
static bool push(const char ***list, size_t *n, const char *item)
{
    const char **grown = realloc(*list, (*n + 1) * sizeof *grown);
    if (!grown) {
        return false;
    }
    grown[(*n)++] = item;
    *list = grown;
    return true;
}

/* One flag of cmd at argv[*i]: 1 taken, 0 not a flag of cmd, -1 error (flag_problem). */
static int command_flag(const command *cmd, int argc, char **argv, int *i, args *a)
{
    const struct {
        const char *flag;
        unsigned needs;
        const char **value;
    } valued[] = {
        {"--queue", F_QUEUE, &a->queue},
        {"--tracking-uri", F_URI, &a->tracking_uri},
        {"--timeout", F_TIMEOUT, &a->timeout},
        {"--experiment", F_RUN, &a->experiment},
        {"--run-name", F_RUN, &a->run_name},
        {"--system-metrics-interval", F_RUN, &a->system_metrics_interval},
        {"--step", F_STEP, &a->step},
    };
    for (size_t k = 0; k < sizeof valued / sizeof valued[0]; k++) {
        if (!(cmd->flags & valued[k].needs)) {
            continue;
        }
        int m = flag_value(argc, argv, i, valued[k].flag, valued[k].value);
        if (m != 0) {
            return m;
        }
    }
    if ((cmd->flags & F_DEAD) && strcmp(argv[*i], "--dead-letters") == 0) {
        a->dead_letters = true;
        return 1;
    }
    if (cmd->flags & F_RUN) {
        if (strcmp(argv[*i], "--system-metrics") == 0) {
            a->system_metrics = true;
            return 1;
        }
        const char *kv = NULL;
        const char ***list = NULL;
        size_t *n = NULL;
        int m = flag_value(argc, argv, i, "--param", &kv);
        if (m > 0) {
            list = &a->params;
            n = &a->n_params;
        } else if (m == 0 && (m = flag_value(argc, argv, i, "--tag", &kv)) > 0) {
            list = &a->tags;
            n = &a->n_tags;
        }
        if (m < 0) {
            return -1;
        }
        if (m > 0) {
            if (!strchr(kv, '=') || kv[0] == '=') {
                snprintf(flag_problem, sizeof flag_problem, "%s: '%.200s' is not K=V",
                         list == &a->params ? "--param" : "--tag", kv);
                return -1;
            }
            if (!push(list, n, kv)) {
                snprintf(flag_problem, sizeof flag_problem, "out of memory");
                return -1;
            }
            return 1;
        }
    }
    return 0;
}

/* Parses argv into a. Returns -1 to go on, else an exit status (help, version, usage error). */
static int parse_args(cli *c, int argc, char **argv, args *a, const command **out)
{
    const command *cmd = NULL;
    int n_pos = 0;
    bool options_done = false;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        bool is_flag = !options_done && arg[0] == '-' && arg[1] != '\0' &&
                       !(cmd && cmd->n_args > 0 && looks_negative_number(arg));
        if (is_flag && strcmp(arg, "--") == 0) {
            if (!cmd) {
                return usage_error(c, NULL, "'--' before a command");
            }
            options_done = true;
            continue;
        }
        if (is_flag && (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0)) {
            return print_help(cmd ? cmd->help : usage_text);
        }
        if (is_flag && strcmp(arg, "--version") == 0) {
            printf("mltrack %s\n", MLT_VERSION_STRING);
            return fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_LEFT;
        }
        if (is_flag && (strcmp(arg, "-v") == 0 || strcmp(arg, "--verbose") == 0)) {
            c->verbose = true;
            continue;
        }
        if (is_flag) {
            if (!cmd) {
                return usage_error(c, NULL, "unknown option '%s' (give the command first)", arg);
            }
            int m = command_flag(cmd, argc, argv, &i, a);
            if (m < 0) {
                return usage_error(c, cmd, "%s", flag_problem);
            }
            if (m == 0) {
                return usage_error(c, cmd, "unknown option '%s' for %s", arg, cmd->name);
            }
            continue;
        }
        if (!cmd) {
            if (strcmp(arg, "help") == 0) {
                const command *about = i + 1 < argc ? find_command(argv[i + 1]) : NULL;
                if (i + 1 < argc && !about) {
                    return usage_error(c, NULL, "no command '%s'", argv[i + 1]);
                }
                return print_help(about ? about->help : usage_text);
            }
            cmd = find_command(arg);
            if (!cmd) {
                return usage_error(c, NULL, "unknown command '%s'", arg);
            }
            a->command = cmd->name;
            continue;
        }
        if (cmd->n_args == -1) {
            a->cmd = &argv[i]; /* the rest is the command to run, with its own options */
            break;
        }
        if (cmd->n_args == -2) {
            if (!push(&a->journals, &a->n_journals, arg)) {
                return usage_error(c, cmd, "out of memory");
            }
            continue;
        }
        if (n_pos >= cmd->n_args) {
            return usage_error(c, cmd, "unexpected argument '%s'", arg);
        }
        if (n_pos++ == 0) {
            a->key = arg;
        } else {
            a->value = arg;
        }
    }
    if (!cmd) {
        return usage_error(c, NULL, "no command given");
    }
    if (cmd->n_args == -1 && !a->cmd) {
        return usage_error(c, cmd, "no command to run");
    }
    if (cmd->n_args == -2 && a->n_journals == 0) {
        return usage_error(c, cmd, "no journal given");
    }
    if (cmd->n_args > 0 && n_pos < cmd->n_args) {
        return usage_error(c, cmd, "%s needs KEY and VALUE", cmd->name);
    }
    *out = cmd;
    return -1;
}

/* The bar needs a terminal that understands \r and "erase to end of line". */
static bool stderr_is_terminal(void)
{
    const char *term = getenv("TERM");
    return isatty(STDERR_FILENO) == 1 && !(term && strcmp(term, "dumb") == 0);
}

static int cmd_status_main(cli *c, const args *a)
{
    return cmd_status(c, a);
}

static int cmd_sync_main(cli *c, const args *a)
{
    return cmd_sync(c, a);
}

int main(int argc, char **argv)
{
    cli c = {.verbose = false,
             .bar_enabled = stderr_is_terminal(),
             .bar_shown = false,
             .last_draw_ns = 0,
             .lock = PTHREAD_MUTEX_INITIALIZER};
    args a;
    memset(&a, 0, sizeof a);
    const command *cmd = NULL;
    int rc = parse_args(&c, argc, argv, &a, &cmd);
    if (rc < 0) {
        rc = cmd->fn(&c, &a);
    }
    free(a.params);
    free(a.tags);
    free(a.journals);
    return rc;
}
