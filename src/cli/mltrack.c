/*
 * mltrack.c - the command-line tool: argument parsing and help for every command, and what the
 * commands share (cli.h): the terminal, loading options, the queue's path, the stderr logger.
 * The commands live in their own files: run.c (`mltrack run` and the log commands), sync.c,
 * status.c, drop.c and requeue.c.
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
#define BAR_PERIOD_NS 100000000LL /* at most ~10 redraws a second */
#define MAX_TIMEOUT_S 31536000.0  /* a year: keeps the deadline within int64 nanoseconds */
#define MIN_SECRET 4              /* shorter secrets are not masked: that would garble text */

/* ---- help ---- */

#define CONN_HELP                                                                                  \
    "  --queue DIR            queue directory (default: $MLTRACK_QUEUE_DIR, else\n"                \
    "                         $XDG_STATE_HOME/mltrack/queue or ~/.local/state/mltrack/queue)\n"    \
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
    "  log-artifact log files or directories as artifacts of the current run\n"
    "  sync         deliver every journal of the queue that no running process owns\n"
    "               (--follow: a relay, live, those of running processes too)\n"
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
    "  --artifact GLOB        when CMD has ended, whatever its status, log the files GLOB\n"
    "                         matches as artifacts (a directory with its tree; repeatable)\n"
    "  --no-capture           do not keep CMD's console. By default its stdout and stderr,\n"
    "                         interleaved as they came, are logged as the artifacts\n"
    "                         logs/output-NNNNNN.log, a piece every minute or 16 MiB, so a\n"
    "                         crash loses at most the last piece (bytes pass through unchanged)\n"
    "  --capture-every SECONDS  how often a piece of the console closes (default 60)\n"
    "  --resume-key KEY       the run of KEY (letters, digits, '_', '-'; up to 36): made by the\n"
    "                         first start, continued by every later one, RUNNING again until\n"
    "                         it ends (a job preempted and requeued: KEY from $SLURM_JOB_ID).\n"
    "                         The same as MLTRACK_RESUME=allow with MLTRACK_RUN_KEY=KEY\n"
    "  --system-metrics       log CPU and memory use (system/...) every 10 s\n"
    "  --system-metrics-interval SECONDS   the sampling interval (implies --system-metrics)\n"
    "  --timeout SECONDS      how long to wait for delivery once CMD is done (default 10);\n"
    "                         what is left stays queued for the next mltrack or `mltrack "
    "sync`\n" CONN_HELP;

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

static const char log_artifact_help[] =
    "usage: mltrack log-artifact PATH... [--artifact-path DIR] [OPTIONS]\n"
    "\n"
    "Logs each PATH as an artifact of the run named by MLFLOW_RUN_ID or MLTRACK_RUN_KEY (set by\n"
    "`mltrack run` for the command it runs): a file keeps its name, a directory its name and\n"
    "the files under it, under DIR of the run (default: its root). The bytes are snapshotted\n"
    "into the queue when the command returns: a file changed afterwards uploads what was logged.\n"
    "What cannot be uploaded within --timeout stays queued for the next mltrack or `mltrack\n"
    "sync`.\n"
    "\n"
    "options:\n"
    "  --artifact-path DIR    the directory of the run to log into\n"
    "  --timeout SECONDS      how long to try uploading before leaving the rest queued\n"
    "                         (default 2)\n" CONN_HELP;

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
    "With --follow it is a relay, for a cluster whose compute nodes have no network: it runs\n"
    "until stopped (SIGTERM, SIGINT) and delivers every journal of the queue live, those of\n"
    "running processes included, exactly once, when their writer cannot reach the server\n"
    "itself. Several relays may share a queue. It prints what it delivers as it goes; a\n"
    "stop exits 0. See docs/hpc.md.\n"
    "\n"
    "options:\n"
    "  --timeout SECONDS      give up after SECONDS (default: after the configured retries,\n"
    "                         $MLFLOW_HTTP_REQUEST_MAX_RETRIES)\n"
    "  --follow               keep delivering, live, until stopped (a relay)\n"
    "  --poll-ms MS           with --follow: how often a journal is looked at for new\n"
    "                         records (default 200)\n" CONN_HELP "\n"
    "environment: MLTRACK_LEASE_MS (default 10000): a journal's delivery lease; a relay\n"
    "takes over from a stopped or hung deliverer this long after its last renewal.\n";

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
void scrub_append(const cli *c, mlt__buf *out, const char *msg)
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
void bar_draw(cli *c, const mlt__sync_progress *p, bool final)
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
    if (p->artifact_bytes_total > 0) {
        /* artifacts take the time: the bar counts their bytes */
        uint64_t done = p->artifact_bytes_sent < p->artifact_bytes_total ? p->artifact_bytes_sent
                                                                         : p->artifact_bytes_total;
        filled = final ? BAR_WIDTH
                       : (size_t)((double)done * BAR_WIDTH / (double)p->artifact_bytes_total);
    } else if (p->records_total > 0 && p->records_done < p->records_total) {
        filled = (size_t)((double)p->records_done * BAR_WIDTH / (double)p->records_total);
    }
    char bar[BAR_WIDTH + 1];
    for (size_t i = 0; i < BAR_WIDTH; i++) {
        bar[i] = i < filled ? '#' : '.';
    }
    bar[BAR_WIDTH] = '\0';
    char line[256], bytes[64] = "";
    if (p->artifact_bytes_total > 0) {
        /* first, where a narrow terminal cuts the line last */
        snprintf(bytes, sizeof bytes, "%.1f/%.1f MB of artifacts  ",
                 (double)p->artifact_bytes_sent / 1e6, (double)p->artifact_bytes_total / 1e6);
    }
    int n = snprintf(line, sizeof line,
                     "[%s] %s%" PRIu64 "/%" PRIu64 " records  runs %" PRIu64 "  points %" PRIu64
                     "  rejected %" PRIu64,
                     bar, bytes, p->records_done, p->records_total, p->runs_created, p->points_sent,
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

uint64_t pending_records(mlt__journal *j)
{
    uint64_t last = mlt__journal_last_seq(j);
    uint64_t acked = mlt__journal_acked_seq(j);
    return last > acked ? last - acked : 0;
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

void free_list(char **list, size_t n)
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
    if (a->resume_key && getenv("MLFLOW_RUN_ID")) {
        say(c, "--resume-key: MLFLOW_RUN_ID is set (inside another mltrack run?): a run given by "
               "its id cannot be resumed by a key");
        return EXIT_USAGE;
    }
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
        {"--resume-key", "run_key", a->resume_key},
        {"--resume-key", "resume", a->resume_key ? "allow" : NULL},
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

/* Parses --timeout SECONDS. EXIT_SUCCESS or EXIT_USAGE (said). */
int parse_seconds(cli *c, const char *text, double *out)
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
    F_RUN = 1 << 3,    /* --experiment, --run-name, --param, --tag, --system-metrics[-interval] */
    F_STEP = 1 << 4,   /* --step */
    F_DEAD = 1 << 5,   /* --dead-letters */
    F_ART = 1 << 6,    /* --artifact-path */
    F_FOLLOW = 1 << 7, /* --follow, --poll-ms */
};

typedef struct command {
    const char *name;
    unsigned flags;
    int n_args; /* positional arguments (-1: a command to run; -2: one or more journals; -3:
                 * one or more paths) */
    const char *help;
    int (*fn)(cli *c, const args *a);
} command;

static const command commands[] = {
    {"run", F_QUEUE | F_URI | F_TIMEOUT | F_RUN, -1, run_help, cmd_run},
    {"log-metric", F_QUEUE | F_URI | F_TIMEOUT | F_STEP, 2, log_help, cmd_log},
    {"log-param", F_QUEUE | F_URI | F_TIMEOUT, 2, log_help, cmd_log},
    {"set-tag", F_QUEUE | F_URI | F_TIMEOUT, 2, log_help, cmd_log},
    {"log-artifact", F_QUEUE | F_URI | F_TIMEOUT | F_ART, -3, log_artifact_help, cmd_log},
    {"sync", F_QUEUE | F_URI | F_TIMEOUT | F_FOLLOW, 0, sync_help, cmd_sync},
    {"status", F_QUEUE, 0, status_help, cmd_status},
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
        {"--capture-every", F_RUN, &a->capture_every},
        {"--resume-key", F_RUN, &a->resume_key},
        {"--step", F_STEP, &a->step},
        {"--artifact-path", F_ART, &a->artifact_path},
        {"--poll-ms", F_FOLLOW, &a->poll_ms},
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
    if ((cmd->flags & F_FOLLOW) && strcmp(argv[*i], "--follow") == 0) {
        a->follow = true;
        return 1;
    }
    if (cmd->flags & F_RUN) {
        if (strcmp(argv[*i], "--system-metrics") == 0) {
            a->system_metrics = true;
            return 1;
        }
        if (strcmp(argv[*i], "--no-capture") == 0) {
            a->no_capture = true;
            return 1;
        }
        const char *glob = NULL;
        int g = flag_value(argc, argv, i, "--artifact", &glob);
        if (g < 0) {
            return -1;
        }
        if (g > 0) {
            if (!push(&a->artifacts, &a->n_artifacts, glob)) {
                snprintf(flag_problem, sizeof flag_problem, "out of memory");
                return -1;
            }
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
        if (cmd->n_args == -2 || cmd->n_args == -3) {
            if (!(cmd->n_args == -2 ? push(&a->journals, &a->n_journals, arg)
                                    : push(&a->paths, &a->n_paths, arg))) {
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
    if (cmd->n_args == -3 && a->n_paths == 0) {
        return usage_error(c, cmd, "no file given");
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
    free(a.paths);
    free(a.artifacts);
    return rc;
}
