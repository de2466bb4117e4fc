/*
 * queue.c - the queue directory as a whole (see queue.h): listing its journals, adopting them,
 * asking whether one is owned, finding the journal that creates a run.
 */
#include "config.h"

#include "queue.h"

#include "journal_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

mlt_err mlt__queue_adopt(const char *queue_dir, mlt__fsync_mode mode, mlt__adopt_fn fn, void *ud,
                         size_t *n)
{
    char **dirs = NULL;
    size_t count = 0;
    mlt_err err = mlt__queue_list(queue_dir, &dirs, &count);
    if (n) {
        *n = err == MLT_OK ? count : 0;
    }
    bool go_on = err == MLT_OK;
    for (size_t i = 0; i < count; i++) {
        if (go_on) {
            mlt__recovery rec;
            mlt__adoption a = {.dir = dirs[i], .rec = &rec};
            a.err = mlt__journal_open(&a.j, dirs[i], false, mode, &rec);
            go_on = fn(&a, ud);
        }
        free(dirs[i]);
    }
    free(dirs);
    return err;
}

int mlt__journal_owned(const char *journal_dir)
{
    char path[PATH_MAX];
    int n = snprintf(path, sizeof path, "%s/lock", journal_dir);
    if (n < 0 || (size_t)n >= sizeof path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW);
    if (fd < 0) {
        return errno == ENOENT ? 0 : -1;
    }
    int owned = 0;
    if (flock(fd, LOCK_SH | LOCK_NB) != 0) {
        owned = errno == EWOULDBLOCK ? 1 : -1;
    }
    int saved = errno;
    close(fd); /* releases our shared lock, if we got it */
    errno = saved;
    return owned;
}

/* An earlier attempt than the one of a resumed run started at `start_ms` in the journal `self`
 * (by start time, then journal name): the attempts of one key are resumed in that order. */
typedef struct attempt {
    const char *self; /* NULL: any */
    int64_t start_ms;
    const char *base; /* the journal looked at */
} attempt;

static bool earlier(const attempt *a, int64_t start_ms)
{
    return !a || !a->self || start_ms < a->start_ms ||
           (start_ms == a->start_ms && strcmp(a->base, a->self) < 0);
}

/* Calls fn for each undelivered record of j that reads back, in order, until fn returns true
 * (then true) or the records end, or stop being readable (false). */
static bool each_record(mlt__journal *j, bool (*fn)(const mlt__rec *r, void *ud), void *ud)
{
    uint64_t cursor = mlt__journal_acked_seq(j);
    mlt__buf scratch;
    mlt__buf_init(&scratch);
    mlt__rec r;
    bool stopped = false;
    while (!stopped) {
        uint64_t before = cursor;
        mlt_err err = mlt__journal_next(j, &cursor, &scratch, &r);
        if (err == MLT_OK) {
            stopped = fn(&r, ud);
        } else if (err != MLT_ERR_CORRUPT || cursor == before) {
            break; /* the end, or unreadable from here */
        }
    }
    mlt__buf_free(&scratch);
    return stopped;
}

typedef struct create_of {
    const char *run_key;
    const attempt *prior;
} create_of;

static bool is_create_of(const mlt__rec *r, void *ud)
{
    const create_of *c = ud;
    return r->type == MLT__REC_CREATE && strcmp(r->key, c->run_key) == 0 &&
           earlier(c->prior, r->time_ms);
}

/* Whether journal j creates the run: created in its map, or its CREATE record undelivered. With
 * `prior` (open only), a run created and not ended, or an undelivered CREATE of an earlier
 * attempt. */
static bool creates(mlt__journal *j, const char *run_key, const attempt *prior)
{
    bool open_only = prior != NULL;
    size_t n = 0;
    const mlt__run_entry *runs = mlt__journal_runs(j, &n);
    for (size_t i = 0; runs && i < n; i++) {
        if (strcmp(runs[i].key, run_key) != 0 || runs[i].state == MLT__RUN_ATTACHED) {
            continue;
        }
        if (open_only ? runs[i].state == MLT__RUN_OPEN : runs[i].state != MLT__RUN_DEAD) {
            return true;
        }
        if (!open_only) {
            return false;
        }
    }
    create_of c = {run_key, prior};
    return each_record(j, is_create_of, &c);
}

/* Calls fn for every journal of queue_dir but skip (its last part), each opened read-only
 * (nothing locked, cut or moved), until fn returns true. MLT_OK when one did, MLT_ERR_NOT_FOUND
 * when none did, MLT_ERR_IO when the queue cannot be listed. */
typedef bool (*journal_fn)(mlt__journal *j, const char *dir, void *ud);

static MLT__MUST_USE mlt_err each_journal(const char *queue_dir, const char *skip, journal_fn fn,
                                          void *ud)
{
    char **dirs = NULL;
    size_t n = 0;
    mlt_err err = mlt__queue_list(queue_dir, &dirs, &n);
    if (err != MLT_OK) {
        return err;
    }
    err = MLT_ERR_NOT_FOUND;
    for (size_t i = 0; i < n; i++) {
        mlt__journal *j = NULL;
        mlt__recovery rec;
        memset(&rec, 0, sizeof rec);
        const char *base = strrchr(dirs[i], '/');
        base = base ? base + 1 : dirs[i];
        if (err == MLT_ERR_NOT_FOUND && !(skip && strcmp(base, skip) == 0) &&
            mlt__journal_open(&j, dirs[i], true, MLT__FSYNC_NONE, &rec) == MLT_OK) {
            if (fn(j, dirs[i], ud)) {
                err = MLT_OK;
            }
            mlt__journal_close(j, false);
        }
        free(dirs[i]);
    }
    free(dirs);
    return err;
}

typedef struct creator {
    const char *run_key;
    attempt *before; /* NULL: any creator */
    char *who;
    size_t who_len;
    bool *owned;
} creator;

static bool is_creator(mlt__journal *j, const char *dir, void *ud)
{
    creator *c = ud;
    if (c->before) {
        const char *base = strrchr(dir, '/');
        c->before->base = base ? base + 1 : dir;
    }
    if (!creates(j, c->run_key, c->before)) {
        return false;
    }
    snprintf(c->who, c->who_len, "%s", dir);
    *c->owned = mlt__journal_owned(dir) > 0;
    return true;
}

static MLT__MUST_USE mlt_err find_in_queue(const char *queue_dir, const char *run_key,
                                           attempt *before, char *who, size_t who_len, bool *owned)
{
    creator c = {run_key, before, who, who_len, owned};
    return each_journal(queue_dir, before ? before->self : NULL, is_creator, &c);
}

mlt_err mlt__queue_find_creator(const char *queue_dir, const char *run_key, char *who,
                                size_t who_len, bool *owned)
{
    return find_in_queue(queue_dir, run_key, NULL, who, who_len, owned);
}

mlt_err mlt__queue_find_open(const char *queue_dir, const char *run_key, const char *self_dir,
                             int64_t start_ms, char *who, size_t who_len, bool *owned)
{
    const char *base = strrchr(self_dir, '/');
    attempt before = {base ? base + 1 : self_dir, start_ms, ""};
    return find_in_queue(queue_dir, run_key, &before, who, who_len, owned);
}

/* The largest step of metric_key in the undelivered records of j's runs of run_key. */
typedef struct steps_of {
    const char *run_key, *metric_key;
    uint32_t nos[64]; /* the journal's run numbers of run_key */
    size_t n_nos;
    int64_t step;
    bool found;
} steps_of;

static bool add_step(const mlt__rec *r, void *ud)
{
    steps_of *st = ud;
    if ((r->type == MLT__REC_CREATE || r->type == MLT__REC_ATTACH) &&
        strcmp(r->key, st->run_key) == 0 && st->n_nos < 64) {
        st->nos[st->n_nos++] = r->run_no;
    } else if (r->type == MLT__REC_METRIC && strcmp(r->key, st->metric_key) == 0) {
        for (size_t i = 0; i < st->n_nos; i++) {
            if (st->nos[i] == r->run_no && (!st->found || r->step > st->step)) {
                st->step = r->step;
                st->found = true;
            }
        }
    }
    return false; /* every record */
}

/* The largest step of metric_key in the undelivered records of j's runs of run_key. */
static bool journal_last_step(mlt__journal *j, const char *run_key, const char *metric_key,
                              int64_t *step)
{
    steps_of st = {.run_key = run_key, .metric_key = metric_key};
    size_t n = 0;
    const mlt__run_entry *runs = mlt__journal_runs(j, &n);
    for (size_t i = 0; runs && i < n && st.n_nos < 64; i++) {
        if (strcmp(runs[i].key, run_key) == 0) {
            st.nos[st.n_nos++] = runs[i].run_no;
        }
    }
    (void)each_record(j, add_step, &st);
    *step = st.step;
    return st.found;
}

typedef struct last_of {
    const char *run_key, *metric_key;
    int64_t step;
    bool found;
} last_of;

static bool add_last_step(mlt__journal *j, const char *dir, void *ud)
{
    (void)dir;
    last_of *l = ud;
    int64_t s = 0;
    if (journal_last_step(j, l->run_key, l->metric_key, &s) && (!l->found || s > l->step)) {
        l->step = s;
        l->found = true;
    }
    return false; /* every journal */
}

mlt_err mlt__queue_last_step(const char *queue_dir, const char *run_key, const char *metric_key,
                             int64_t *step)
{
    last_of l = {run_key, metric_key, 0, false};
    mlt_err err = each_journal(queue_dir, NULL, add_last_step, &l);
    if (err != MLT_ERR_NOT_FOUND) {
        return err;
    }
    if (!l.found) {
        return MLT_ERR_NOT_FOUND;
    }
    *step = l.step;
    return MLT_OK;
}

/* ---- the queue directory ---- */

static bool is_journal(const char *name)
{
    return strncmp(name, "j-", 2) == 0;
}

mlt_err mlt__queue_dir(const mlt_options *o, char *out, size_t len)
{
    const char *dir = mlt__opt_str(o, MLT__OPT_QUEUE_DIR);
    int n;
    if (dir) {
        n = snprintf(out, len, "%s", dir);
    } else if (getenv("XDG_STATE_HOME") && getenv("XDG_STATE_HOME")[0] == '/') {
        n = snprintf(out, len, "%s/mltrack/queue", getenv("XDG_STATE_HOME"));
    } else if (getenv("HOME") && getenv("HOME")[0] == '/') {
        n = snprintf(out, len, "%s/.local/state/mltrack/queue", getenv("HOME"));
    } else {
        return mlt__fail(MLT_ERR_BAD_OPTION,
                         "no queue directory: set queue_dir, MLTRACK_QUEUE_DIR or HOME");
    }
    return FITS(n, len) ? MLT_OK : mlt__fail(MLT_ERR_VALUE_TOO_LONG, "queue path too long");
}

mlt_err mlt__queue_list(const char *queue_dir, char ***out, size_t *n)
{
    mlt_err err = mlt__j_list_names(queue_dir, is_journal, true, true, out, n);
    return err == MLT_ERR_IO ? mlt__fail(err, "cannot read %s: %s", queue_dir, strerror(errno))
                             : err;
}

/* ---- relays ---- */

static int relay_mark_path(const char *queue_dir, char *out, size_t len)
{
    char host[64] = "";
    if (gethostname(host, sizeof host - 1) != 0 || !host[0]) {
        snprintf(host, sizeof host, "unknown-host");
    }
    for (char *p = host; *p; p++) {
        *p = *p == '/' || *p <= ' ' ? '_' : *p;
    }
    int n = snprintf(out, len, "%s/relay-%s-%ld", queue_dir, host, (long)getpid());
    return n > 0 && (size_t)n < len ? 0 : -1;
}

int mlt__queue_mark_relay(const char *queue_dir)
{
    char path[PATH_MAX];
    if (relay_mark_path(queue_dir, path, sizeof path) != 0) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 && errno == ENOENT) {
        /* a queue nobody wrote to yet: made, as a writer would (0700, parents too) */
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s", queue_dir);
        for (char *p = dir + 1; *p; p++) {
            if (*p == '/') {
                *p = '\0';
                (void)mkdir(dir, 0700);
                *p = '/';
            }
        }
        (void)mkdir(dir, 0700);
        fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    }
    if (fd < 0) {
        return -1;
    }
    int rc = futimens(fd, NULL); /* now, by the file system's clock */
    close(fd);
    return rc;
}

void mlt__queue_unmark_relay(const char *queue_dir)
{
    char path[PATH_MAX];
    if (relay_mark_path(queue_dir, path, sizeof path) == 0) {
        unlink(path);
    }
}

bool mlt__queue_has_relay(const char *queue_dir, int64_t fresh_ms)
{
    DIR *d = opendir(queue_dir);
    if (!d) {
        return false;
    }
    bool found = false;
    int64_t now = mlt__now_ms();
    struct dirent *e;
    while (!found && (e = readdir(d))) {
        char path[PATH_MAX];
        struct stat st;
        if (strncmp(e->d_name, "relay-", 6) != 0 ||
            snprintf(path, sizeof path, "%s/%s", queue_dir, e->d_name) >= (int)sizeof path ||
            stat(path, &st) != 0) {
            continue;
        }
        int64_t mtime = (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
        found = now - mtime <= fresh_ms;
    }
    closedir(d);
    return found;
}
