/*
 * run.c - `mltrack run`, the decorator for whole processes: a command becomes an MLflow run
 * (through the durable queue), with the metrics, params and tags it prints in the line protocol
 * (protocol.h) and its outcome; and `mltrack log-metric | log-param | set-tag`, which log into
 * the run a wrapper exported (MLFLOW_RUN_ID / MLTRACK_RUN_KEY) from a shell script.
 *
 * The child gets a new environment array (the tracker's threads may read the environment, so
 * it is never changed with setenv); its stdout is a pipe that this process copies byte for byte
 * to its own stdout while it reads the protocol lines.
 */
#include "config.h"

#include "cli.h"
#include "protocol.h"
#include "reader.h"
#include "tracker.h"
#include "validate.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define RUN_ID_WAIT_MS 10000 /* how long the child's start may wait for the server's run id */
#define RUN_CLOSE_MS 10000   /* default --timeout of run: delivery after the child is done */
#define LOG_CLOSE_MS 2000    /* default --timeout of the log commands */

/* ---- signals ---- */

/* Where `mltrack run` is: before the child starts, while it runs, after it ended. The signal
 * handler acts on it, so that a signal is never lost nor sent twice. */
enum { BEFORE_CHILD, CHILD_RUNS, CHILD_DONE };
static volatile sig_atomic_t phase = BEFORE_CHILD;
static volatile sig_atomic_t child_pid;
static volatile sig_atomic_t pending_signal; /* before the child: it will not be started */
static volatile sig_atomic_t stop_waiting;   /* after the child: stop waiting for delivery */

/*
 * SIGINT/SIGTERM/SIGHUP/SIGQUIT. While the child runs, passed on to it, unless the kernel sent
 * it (the terminal's ^C or ^\ reach the whole foreground process group, the child included).
 * Before it starts, the child is not started; after it ended, delivery is not waited for
 * (what is left stays queued).
 */
static void on_signal(int sig, siginfo_t *info, void *uctx)
{
    (void)uctx;
    if (phase == BEFORE_CHILD) {
        pending_signal = sig;
    } else if (phase == CHILD_DONE) {
        stop_waiting = 1;
    } else if (!(info && info->si_code > 0) && child_pid > 0) {
        kill((pid_t)child_pid, sig);
    }
}

static const int forwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
#define N_FORWARDED (sizeof forwarded / sizeof forwarded[0])

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < N_FORWARDED; i++) {
        sigaction(forwarded[i], &sa, NULL);
    }
    signal(SIGPIPE, SIG_IGN); /* a closed stdout is seen as EPIPE */
}

/* "SIGTERM" for SIGTERM, "signal 77" when it has no name. */
static void signal_name(int sig, char *out, size_t len)
{
    const char *abbrev = sigabbrev_np(sig);
    if (abbrev) {
        snprintf(out, len, "SIG%s", abbrev);
    } else {
        snprintf(out, len, "signal %d", sig);
    }
}

/* ---- waiting for delivery, briefly ---- */

typedef enum settle_goal { SETTLE_RUN_ID, SETTLE_FLUSHED } settle_goal;

#define SETTLE_SLICE_MS 100 /* a signal cuts the wait short within this */

/*
 * Waits up to timeout_ms for the goal: the run's server id, or everything this process logged
 * delivered. Returns MLT_OK when it was met, MLT_ERR_QUEUED as soon as the library finds the
 * server away (the records are kept; mlt_last_error() says how many, where, and why; for the
 * run id: the server refused the run too), MLT_ERR_TIMEOUT at the deadline or when a signal
 * interrupts the wait.
 */
static mlt_err settle(mlt_tracker *t, mlt_run *run, settle_goal goal, int timeout_ms)
{
    int64_t deadline = mlt__mono_ns() + (int64_t)timeout_ms * 1000000;
    for (;;) {
        if (pending_signal || stop_waiting) {
            return mlt__fail(MLT_ERR_TIMEOUT, "interrupted by a signal");
        }
        if (goal == SETTLE_RUN_ID && mlt_run_id(run)) {
            return MLT_OK;
        }
        int64_t left = (deadline - mlt__mono_ns()) / 1000000;
        mlt_err e = mlt_tracker_flush(t, left < SETTLE_SLICE_MS ? (left > 0 ? (int)left : 0)
                                                                : SETTLE_SLICE_MS);
        if (e == MLT_OK && goal == SETTLE_RUN_ID && !mlt_run_id(run)) {
            return mlt__fail(MLT_ERR_REJECTED, "the server did not make the run");
        }
        if (e != MLT_ERR_TIMEOUT || left <= 0) {
            return e;
        }
    }
}

/* What the delivery callback saw (sender thread), read after the wait. */
typedef struct seen {
    pthread_mutex_t lock;
    char experiment_id[64];
    char rejected[512]; /* the first refusal */
    unsigned n_rejected;
} seen;

static void on_delivery(const mlt_delivery *d, void *ud)
{
    seen *s = ud;
    pthread_mutex_lock(&s->lock);
    if (d->state == MLT_DELIVERY_REJECTED) {
        if (s->n_rejected++ == 0) {
            snprintf(s->rejected, sizeof s->rejected, "%s", d->message ? d->message : "");
        }
    } else if (d->op == MLT_OP_CREATE_RUN && d->experiment_id) {
        snprintf(s->experiment_id, sizeof s->experiment_id, "%s", d->experiment_id);
    }
    pthread_mutex_unlock(&s->lock);
}

/* Options, a tracker with the MLflow callback (source: the program run, if any). */
static int open_tracker(cli *c, const args *a, seen *s, const char *source, mlt_tracker **out,
                        mlt_options **opts_out)
{
    mlt_options *opts = NULL;
    int rc = load_options(c, a, &opts);
    if (rc != EXIT_SUCCESS) {
        return rc;
    }
    char err[512];
    mlt_tracker *t = NULL;
    mlt_err e = mlt_options_set_delivery_callback(opts, on_delivery, s);
    if (e == MLT_OK) {
        e = mlt_tracker_new(&t, opts, err, sizeof err);
    } else {
        snprintf(err, sizeof err, "%s", mlt_strerror(e));
    }
    if (e == MLT_OK && source && mlt__tracker_set_source(t, source) != MLT_OK) {
        e = MLT_ERR_NOMEM;
        snprintf(err, sizeof err, "out of memory");
    }
    if (e == MLT_OK) {
        e = mlt_tracker_add_mlflow(t, err, sizeof err);
    }
    if (e != MLT_OK) {
        say(c, "%s", err);
        mlt_tracker_close(t, 0);
        unload_options(c, opts);
        return EXIT_USAGE;
    }
    *out = t;
    *opts_out = opts;
    return EXIT_SUCCESS;
}

/* After the wait for delivery (err: what settle returned): what is left is on disk; one line
 * on stderr says so, with how much, where and why. */
static void report_left(cli *c, mlt_err err, int timeout_ms)
{
    if (err == MLT_ERR_QUEUED) {
        say(c, "%s", mlt_last_error());
    } else if (err == MLT_ERR_TIMEOUT && !pending_signal && !stop_waiting) {
        say(c, "%s (--timeout %.1f s)", mlt_last_error(), timeout_ms / 1000.0);
    } else if (err != MLT_OK) {
        say(c,
            "not delivered (%s): it stays in the queue, and the next mltrack process or "
            "`mltrack sync` delivers it",
            mlt_last_error());
    }
}

/* ---- log-metric, log-param, set-tag ---- */

static bool parse_number(const char *text, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || *end || strpbrk(text, "xX") || (errno == ERANGE && isinf(v))) {
        return false;
    }
    *out = v;
    return true;
}

static bool parse_step(const char *text, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (end == text || *end || errno) {
        return false;
    }
    *out = (int64_t)v;
    return true;
}

/* log-artifact: each path a file (kept by its name) or a directory (kept with its name, its
 * tree under it, as MLflow's log_artifact of a directory), under --artifact-path. */
static mlt_err log_artifacts(cli *c, const args *a, mlt_run *run)
{
    for (size_t i = 0; i < a->n_paths; i++) {
        /* every path readable before anything is logged */
        if (access(a->paths[i], R_OK) != 0) {
            say(c, "log-artifact: cannot read %s: %s", a->paths[i], strerror(errno));
            return MLT_ERR_IO;
        }
    }
    for (size_t i = 0; i < a->n_paths; i++) {
        const char *p = a->paths[i];
        struct stat st;
        mlt_err e;
        if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
            char base[PATH_MAX], under[PATH_MAX];
            snprintf(base, sizeof base, "%s", p);
            size_t n = strlen(base);
            while (n > 1 && base[n - 1] == '/') {
                base[--n] = '\0';
            }
            const char *name = strrchr(base, '/') ? strrchr(base, '/') + 1 : base;
            snprintf(under, sizeof under, "%s%s%s", a->artifact_path ? a->artifact_path : "",
                     a->artifact_path && a->artifact_path[0] ? "/" : "",
                     strcmp(name, ".") && strcmp(name, "/") ? name : "");
            e = mlt_log_artifacts(run, p, under);
        } else {
            e = mlt_log_artifact(run, p, a->artifact_path);
        }
        if (e != MLT_OK) {
            say(c, "log-artifact: %s", mlt_last_error());
            return e;
        }
    }
    return MLT_OK;
}

int cmd_log(cli *c, const args *a)
{
    bool metric = strcmp(a->command, "log-metric") == 0;
    bool artifact = strcmp(a->command, "log-artifact") == 0;
    double number = 0;
    int64_t step = 0;
    if (metric && !parse_number(a->value, &number)) {
        say(c, "log-metric: '%s' is not a number (see `mltrack log-metric --help`)", a->value);
        return EXIT_USAGE;
    }
    if (a->step && !parse_step(a->step, &step)) {
        say(c, "--step: '%s' is not an integer (see `mltrack log-metric --help`)", a->step);
        return EXIT_USAGE;
    }
    int timeout_ms;
    if (parse_timeout_ms(c, a->timeout, LOG_CLOSE_MS, &timeout_ms) != EXIT_SUCCESS) {
        return EXIT_USAGE;
    }
    seen s = {.lock = PTHREAD_MUTEX_INITIALIZER};
    mlt_options *opts = NULL;
    mlt_tracker *t = NULL;
    int rc = EXIT_SUCCESS;
    if (!getenv("MLFLOW_RUN_ID") && !getenv("MLTRACK_RUN_KEY")) {
        say(c,
            "%s: no run to log into: MLFLOW_RUN_ID or MLTRACK_RUN_KEY must be set (`mltrack "
            "run` sets them for the command it runs)",
            a->command);
        return EXIT_USAGE;
    }
    rc = open_tracker(c, a, &s, NULL, &t, &opts);
    if (rc != EXIT_SUCCESS) {
        return rc;
    }
    mlt_run *run = NULL;
    mlt_err e = mlt_run_start(&run, t, NULL);
    if (e == MLT_OK) {
        if (artifact) {
            e = log_artifacts(c, a, run);
        } else {
            e = metric                                 ? mlt_log_metric(run, a->key, number, step)
                : strcmp(a->command, "log-param") == 0 ? mlt_log_param(run, a->key, a->value)
                                                       : mlt_set_tag(run, a->key, a->value);
            if (e != MLT_OK) {
                say(c, "%s: %s", a->command, mlt_last_error());
            }
        }
        if (e != MLT_OK) {
            rc = e == MLT_ERR_IO || e == MLT_ERR_QUEUE_FULL ? EXIT_LEFT : EXIT_USAGE;
        }
        mlt_run_end(run, MLT_RUN_FINISHED); /* an attached run: its owner ends it */
    } else {
        say(c, "%s: %s", a->command, mlt_last_error());
        rc = EXIT_LEFT;
    }
    if (rc == EXIT_SUCCESS) {
        report_left(c, settle(t, NULL, SETTLE_FLUSHED, timeout_ms), timeout_ms);
    }
    pthread_mutex_lock(&s.lock);
    if (s.n_rejected) {
        say(c, "%s: the server refused it: %s", a->command, s.rejected);
        rc = EXIT_LEFT;
    }
    pthread_mutex_unlock(&s.lock);
    mlt_tracker_close(t, 0);
    unload_options(c, opts);
    return rc;
}

/* ---- run: the child ---- */

/* The child's environment: ours without the variables we set, then ours. */
typedef struct env_list {
    char **v;
    size_t n, cap;
} env_list;

/* Appends NAME=VALUE (value NULL: entry is already NAME=VALUE). */
static bool env_add(env_list *e, const char *name, const char *value)
{
    if (MLT__GROW(e->v, e->cap, e->n + 2) != MLT_OK) { /* the item and the closing NULL */
        return false;
    }
    char *item = NULL;
    if (!value) {
        item = mlt__strdup(name);
    } else {
        size_t len = strlen(name) + 1 + strlen(value) + 1;
        if ((item = malloc(len)) != NULL) {
            snprintf(item, len, "%s=%s", name, value);
        }
    }
    if (!item) {
        return false;
    }
    e->v[e->n++] = item;
    e->v[e->n] = NULL;
    return true;
}

static void env_free(env_list *e)
{
    for (size_t i = 0; i < e->n; i++) {
        free(e->v[i]);
    }
    free(e->v);
}

static const char *const exported[] = {
    "MLFLOW_TRACKING_URI",  "MLFLOW_RUN_ID",     "MLTRACK_RUN_KEY", "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_EXPERIMENT_ID", "MLTRACK_QUEUE_DIR", READER_ENV,        "MLTRACK_RESUME"};
#define N_EXPORTED (sizeof exported / sizeof exported[0])

static bool build_env(env_list *e, const mlt_options *opts, mlt_run *run, const seen *s)
{
    for (char **p = environ; p && *p; p++) {
        bool ours = false;
        for (size_t k = 0; k < N_EXPORTED && !ours; k++) {
            size_t n = strlen(exported[k]);
            ours = strncmp(*p, exported[k], n) == 0 && (*p)[n] == '=';
        }
        if (!ours && !env_add(e, *p, NULL)) {
            return false;
        }
    }
    const char *values[N_EXPORTED] = {
        mlt_options_get(opts, "tracking_uri"),
        mlt_run_id(run),
        mlt_run_key(run),
        mlt_options_get(opts, "experiment_name"),
        s->experiment_id[0] ? s->experiment_id : NULL,
        mlt_options_get(opts, "queue_dir"),
        "1",
        NULL, /* the command logs into this run (attached): it does not resume it again */
    };
    for (size_t k = 0; k < N_EXPORTED; k++) {
        if (values[k] && !env_add(e, exported[k], values[k])) {
            return false;
        }
    }
    return true;
}

/* The command line as a shell would read it back (each word quoted when it needs it). */
static void quote_command(mlt__buf *b, char **cmd)
{
    for (size_t i = 0; cmd[i]; i++) {
        if (i) {
            mlt__buf_putc(b, ' ');
        }
        const char *w = cmd[i];
        bool plain = *w && strspn(w, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                     "0123456789_-+=./:,@%") == strlen(w);
        if (plain) {
            mlt__buf_puts(b, w);
            continue;
        }
        mlt__buf_putc(b, '\'');
        for (; *w; w++) {
            if (*w == '\'') {
                mlt__buf_puts(b, "'\\''");
            } else {
                mlt__buf_putc(b, *w);
            }
        }
        mlt__buf_putc(b, '\'');
    }
}

/* The --param and --tag pairs of the command line: checked (run NULL: before anything starts,
 * so that a usage error makes no run), or logged into run. EXIT_SUCCESS or EXIT_USAGE (said). */
static int pairs(cli *c, const args *a, mlt_run *run)
{
    for (int pass = 0; pass < 2; pass++) {
        const char **list = pass ? a->tags : a->params;
        size_t n = pass ? a->n_tags : a->n_params;
        const char *flag = pass ? "--tag" : "--param";
        for (size_t i = 0; i < n; i++) {
            const char *eq = strchr(list[i], '=');
            char key[512];
            if ((size_t)(eq - list[i]) >= sizeof key) {
                say(c, "%s %.60s...: the key is too long (see `mltrack run --help`)", flag,
                    list[i]);
                return EXIT_USAGE;
            }
            snprintf(key, sizeof key, "%.*s", (int)(eq - list[i]), list[i]);
            mlt_err e;
            if (run) {
                e = pass ? mlt_set_tag(run, key, eq + 1) : mlt_log_param(run, key, eq + 1);
            } else {
                e = mlt__validate_key(pass ? MLT__TAG : MLT__PARAM, key);
                if (e == MLT_OK) {
                    e = pass ? mlt__validate_tag_value(key, eq + 1)
                             : mlt__validate_param_value(key, eq + 1);
                }
            }
            if (e != MLT_OK) {
                say(c, "%s %.300s: %s (see `mltrack run --help`)", flag, list[i], mlt_last_error());
                return EXIT_USAGE;
            }
        }
    }
    return EXIT_SUCCESS;
}

/* Tags the run with what was run and where; params and tags of the command line. */
static int describe_run(cli *c, const args *a, mlt_run *run)
{
    mlt__buf b;
    mlt__buf_init(&b);
    quote_command(&b, a->cmd);
    if (b.oom) {
        say(c, "out of memory");
        return EXIT_USAGE;
    }
    if (mlt__validate_tag_value("mltrack.command", b.data) != MLT_OK) {
        /* longer than a tag can be: cut where the server's limit allows, and say so */
        const char *mark = " ...(cut: the command line is longer than a tag can hold)";
        size_t keep = mlt__utf8_cut(b.data, b.len, MLT__MAX_TAG_VALUE - strlen(mark) - 4);
        b.len = keep;
        mlt__buf_puts(&b, mark);
        say(c,
            "the command line is longer than a tag can hold: mltrack.command keeps its first "
            "%zu bytes",
            keep);
    }
    char host[256] = "", cwd[PATH_MAX] = "";
    gethostname(host, sizeof host - 1);
    if (!getcwd(cwd, sizeof cwd)) {
        cwd[0] = '\0';
    }
    struct {
        const char *k, *v;
    } tags[] = {{"mltrack.command", b.data}, {"mltrack.host", host}, {"mltrack.cwd", cwd}};
    for (size_t i = 0; i < sizeof tags / sizeof tags[0]; i++) {
        if (tags[i].v[0] && mlt_set_tag(run, tags[i].k, tags[i].v) != MLT_OK) {
            say(c, "tag %s: %s", tags[i].k, mlt_last_error());
        }
    }
    mlt__buf_free(&b);
    return pairs(c, a, run);
}

/* Starts the child with its stdout on a pipe. Returns 0, or the exit status to give up with
 * (127 not found, 126 cannot run; said). */
/* Finds the program as execvp would (PATH, or a name with a '/'), into out. Returns 0, ENOENT
 * or EACCES (found, but not an executable file). Done before spawning, so that a missing command
 * is told apart from one that exits 127 in every setting (valgrind's fork cannot report the
 * exec's failure). */
static int find_program(const char *name, char *out, size_t len)
{
    struct stat st;
    if (strchr(name, '/')) {
        snprintf(out, len, "%s", name);
        if (stat(name, &st) != 0) {
            return ENOENT;
        }
        return S_ISREG(st.st_mode) && access(name, X_OK) == 0 ? 0 : EACCES;
    }
    const char *path = getenv("PATH");
    if (!path || !*path) {
        path = "/bin:/usr/bin";
    }
    int err = ENOENT;
    for (const char *p = path;; p++) {
        const char *end = strchrnul(p, ':');
        int n = end == p ? snprintf(out, len, "%s", name)
                         : snprintf(out, len, "%.*s/%s", (int)(end - p), p, name);
        if (n > 0 && (size_t)n < len && stat(out, &st) == 0) {
            if (S_ISREG(st.st_mode) && access(out, X_OK) == 0) {
                return 0;
            }
            err = EACCES;
        }
        if (!*end) {
            break;
        }
        p = end;
    }
    return err;
}

static int spawn_child(cli *c, char **cmd, char **envp, int out_fd, int err_fd, pid_t *pid)
{
    char program[PATH_MAX];
    int err = find_program(cmd[0], program, sizeof program);
    if (err != 0) {
        say(c, "%s: %s", cmd[0], err == ENOENT ? "command not found" : strerror(err));
        return err == ENOENT ? 127 : 126;
    }
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out_fd, STDOUT_FILENO);
    if (err_fd >= 0) {
        posix_spawn_file_actions_adddup2(&fa, err_fd, STDERR_FILENO);
    }
    posix_spawnattr_init(&attr);
    sigset_t def, none;
    sigemptyset(&def);
    sigemptyset(&none);
    for (size_t i = 0; i < N_FORWARDED; i++) {
        sigaddset(&def, forwarded[i]);
    }
    sigaddset(&def, SIGPIPE);
    posix_spawnattr_setsigdefault(&attr, &def);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    err = posix_spawnp(pid, program, &fa, &attr, cmd, envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (err == 0) {
        return 0;
    }
    say(c, "%s: %s", cmd[0], err == ENOENT ? "command not found" : strerror(err));
    return err == ENOENT ? 127 : 126;
}

/* Copies the child's stdout through and reads its protocol lines until it is done (and its
 * stderr, when err_fd >= 0, to ours), keeping both in the console (con, NULL: not kept); waits
 * for it. Returns its wait status. */
static int pump(reader *r, int *in_fdp, int err_fd, console *con, pid_t pid)
{
    int in_fd = *in_fdp;
    char buf[65536];
    int status = 0;
    bool exited = false;
    bool out_open = true, err_open = err_fd >= 0;
    while (out_open || err_open) {
        struct pollfd p[2] = {{out_open ? in_fd : -1, POLLIN, 0},
                              {err_open ? err_fd : -1, POLLIN, 0}};
        int ready = poll(p, 2, exited ? 0 : 200);
        if (con) {
            console_tick(con);
        }
        if (ready > 0 && (p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
            ssize_t n = read(in_fd, buf, sizeof buf);
            if (n > 0) {
                if (con) {
                    console_write(con, buf, (size_t)n);
                }
                if (!r->out_broken && !pass_through(r, buf, (size_t)n)) {
                    /* our stdout is gone: the child sees its own closed too (SIGPIPE), as it
                     * would in a pipeline, rather than block on a pipe nobody reads */
                    r->out_broken = true;
                    out_open = false;
                    close(in_fd);
                    *in_fdp = -1;
                }
                mlt_proto_feed(&r->split, buf, (size_t)n, on_line, r);
            } else if (n == 0 || errno != EINTR) {
                out_open = false;
            }
        }
        if (ready > 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) {
            ssize_t n = read(err_fd, buf, sizeof buf);
            if (n > 0) {
                if (con) {
                    console_write(con, buf, (size_t)n);
                }
                pthread_mutex_lock(&r->c->lock); /* whole, between our own messages */
                (void)write_all(STDERR_FILENO, buf, (size_t)n);
                pthread_mutex_unlock(&r->c->lock);
            } else if (n == 0 || errno != EINTR) {
                err_open = false;
            }
        }
        if (ready == 0 && exited) {
            break; /* done, and a descendant holding a pipe is not waited for */
        }
        if (!exited && waitpid(pid, &status, WNOHANG) == pid) {
            exited = true;
        }
    }
    mlt_proto_finish(&r->split, on_line, r);
    pass_rest(r);
    while (!exited) {
        if (waitpid(pid, &status, 0) == pid) {
            exited = true;
        } else if (errno != EINTR) {
            break;
        }
    }
    return status;
}

int cmd_run(cli *c, const args *a)
{
    int timeout_ms;
    int rc = parse_timeout_ms(c, a->timeout, RUN_CLOSE_MS, &timeout_ms);
    if (rc != EXIT_SUCCESS || (rc = pairs(c, a, NULL)) != EXIT_SUCCESS) {
        return rc;
    }
    if (a->run_name && mlt__validate_run_name(a->run_name) != MLT_OK) {
        say(c, "--run-name: %s (see `mltrack run --help`)", mlt_last_error());
        return EXIT_USAGE;
    }
    double capture_s = 60;
    if (a->capture_every && (!parse_number(a->capture_every, &capture_s) ||
                             !(capture_s >= 0.1 && capture_s <= 86400))) {
        say(c,
            "--capture-every: '%s' is not a number of seconds from 0.1 to 86400 (see `mltrack "
            "run --help`)",
            a->capture_every);
        return EXIT_USAGE;
    }
    args with_sys = *a;
    with_sys.system_metrics = a->system_metrics || a->system_metrics_interval;
    seen s = {.lock = PTHREAD_MUTEX_INITIALIZER};
    mlt_options *opts = NULL;
    mlt_tracker *t = NULL;
    rc = open_tracker(c, &with_sys, &s, a->cmd[0], &t, &opts);
    if (rc != EXIT_SUCCESS) {
        return rc;
    }
    /* Inside another `mltrack run` (its run in the environment), this run is a child of it;
     * with a key to resume (--resume-key, MLTRACK_RESUME=allow), it is the key's run. */
    mlt_run *outer = NULL, *run = NULL;
    const char *resume = mlt_options_get(opts, "resume");
    bool resumed = resume && strcmp(resume, "allow") == 0 && mlt_options_get(opts, "run_key") &&
                   !mlt_options_get(opts, "run_id");
    bool nested = !resumed && (mlt_options_get(opts, "run_id") || mlt_options_get(opts, "run_key"));
    mlt_err e = nested ? mlt_run_start(&outer, t, NULL) : MLT_OK;
    if (e == MLT_OK) {
        e = nested ? mlt_run_start_child(&run, outer, a->run_name)
                   : mlt_run_start(&run, t, a->run_name);
    }
    if (e != MLT_OK) {
        say(c, "cannot start the run: %s", mlt_last_error());
        mlt_tracker_close(t, 0);
        unload_options(c, opts);
        return EXIT_USAGE;
    }
    rc = describe_run(c, a, run);
    if (rc != EXIT_SUCCESS) {
        mlt_run_end(run, MLT_RUN_KILLED);
        mlt_tracker_close(t, 0);
        unload_options(c, opts);
        return rc;
    }
    install_signals();
    /* The child is told the run id when the server makes the run soon enough. */
    if (settle(t, run, SETTLE_RUN_ID, RUN_ID_WAIT_MS) == MLT_OK) {
        char url[2048];
        if (mlt_run_ui_url(url, sizeof url, run) == MLT_OK) {
            say(c, "view run %s%s%s at %s", a->run_name ? "'" : "", a->run_name ? a->run_name : "",
                a->run_name ? "'" : mlt_run_id(run), url);
        }
    }
    env_list env = {0};
    int fds[2] = {-1, -1}, efds[2] = {-1, -1};
    bool capture = !a->no_capture;
    pthread_mutex_lock(&s.lock);
    bool env_ok = build_env(&env, opts, run, &s);
    pthread_mutex_unlock(&s.lock);
    pid_t pid = 0;
    mlt_run_status status = MLT_RUN_FAILED;
    char outcome[32] = "";
    const char *outcome_key = "mltrack.exit_code";
    if (pending_signal) {
        rc = 128 + pending_signal; /* interrupted before the command started: it never will */
        status = MLT_RUN_KILLED;
        outcome_key = "mltrack.signal";
        signal_name(pending_signal, outcome, sizeof outcome);
        say(c, "%s before %s started: not started", outcome, a->cmd[0]);
    } else if (!env_ok) {
        say(c, "out of memory");
        rc = 126;
    } else if (pipe2(fds, O_CLOEXEC) != 0 || (capture && pipe2(efds, O_CLOEXEC) != 0)) {
        say(c, "cannot make a pipe: %s", strerror(errno));
        rc = 126;
    } else {
        rc = spawn_child(c, a->cmd, env.v, fds[1], efds[1], &pid);
        close(fds[1]);
        if (efds[1] >= 0) {
            close(efds[1]);
        }
    }
    env_free(&env);
    if (rc == 0) {
        child_pid = pid;
        phase = CHILD_RUNS;
        if (pending_signal) {
            kill(pid, pending_signal); /* it came while the child was being started */
        }
        /* an outer `mltrack run` reads what we pass through: it must not log it again */
        reader r = {.c = c, .run = run, .mark = getenv(READER_ENV) != NULL, .bol = true};
        console con;
        if (capture) {
            console_init(&con, c, run, capture_s);
        }
        int ws = pump(&r, &fds[0], efds[0], capture ? &con : NULL, pid);
        child_pid = 0;
        if (capture) {
            console_finish(&con);
        }
        if (WIFSIGNALED(ws)) {
            status = MLT_RUN_KILLED;
            rc = 128 + WTERMSIG(ws);
            outcome_key = "mltrack.signal";
            signal_name(WTERMSIG(ws), outcome, sizeof outcome);
        } else {
            rc = WEXITSTATUS(ws);
            status = rc == 0 ? MLT_RUN_FINISHED : MLT_RUN_FAILED;
            snprintf(outcome, sizeof outcome, "%d", rc);
        }
        if (r.malformed > MAX_REPORTS) {
            say(c, "%" PRIu64 " malformed protocol lines were ignored in all", r.malformed);
        }
        free_reader(&r);
    } else if (!outcome[0]) {
        snprintf(outcome, sizeof outcome, "%d", rc);
    }
    phase = CHILD_DONE;
    if (fds[0] >= 0) {
        close(fds[0]);
    }
    if (efds[0] >= 0) {
        close(efds[0]);
    }
    if (pid > 0 && a->n_artifacts > 0) {
        log_artifact_globs(c, run, a->artifacts, a->n_artifacts);
    }
    mlt_set_tag(run, outcome_key, outcome);
    mlt_run_end(run, status);
    if (outer) {
        mlt_run_end(outer, MLT_RUN_FINISHED); /* attached: its owner ends it */
    }
    report_left(c, settle(t, NULL, SETTLE_FLUSHED, timeout_ms), timeout_ms);
    pthread_mutex_lock(&s.lock);
    if (s.n_rejected) {
        say(c, "the server refused %u operation%s of this run; the first: %s", s.n_rejected,
            s.n_rejected == 1 ? "" : "s", s.rejected);
    }
    pthread_mutex_unlock(&s.lock);
    mlt_tracker_close(t, 0);
    unload_options(c, opts);
    return rc;
}
