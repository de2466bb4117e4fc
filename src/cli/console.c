/*
 * console.c - what `mltrack run` keeps of its child's console: stdout and stderr, interleaved as
 * they came, written to pieces in a private temporary directory and logged as artifacts
 * logs/output-NNNNNN.log of the run as each piece closes (every --capture-every seconds or
 * PIECE_BYTES, and at the end). A logged piece is snapshotted into the durable queue at once and
 * its temporary file removed: a crash of the node loses at most the piece being written, and a
 * piece is never logged twice. Also the --artifact globs, logged when the child has ended.
 */
#include "config.h"

#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PIECE_BYTES (16u << 20) /* a piece closes at this size, whatever its age */

void console_init(console *con, cli *c, mlt_run *run, double every_s)
{
    memset(con, 0, sizeof *con);
    con->c = c;
    con->run = run;
    con->fd = -1;
    con->every_ns = (int64_t)(every_s * 1e9);
    const char *tmp = getenv("TMPDIR");
    snprintf(con->dir, sizeof con->dir, "%s/mltrack-console-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(con->dir)) {
        say(c, "cannot keep the console (%s: %s): it is not logged", con->dir, strerror(errno));
        con->broken = true;
    }
}

/* The current piece's local file (its name is the artifact's). */
static void piece_path(const console *con, char *out, size_t len)
{
    snprintf(out, len, "%s/output-%06u.log", con->dir, con->piece);
}

static void give_up(console *con, const char *what)
{
    if (!con->broken) {
        say(con->c, "the console is no longer logged: %s", what);
    }
    con->broken = true;
    if (con->fd >= 0) {
        close(con->fd);
        con->fd = -1;
    }
}

/* Closes the current piece and logs it (nothing when it is empty). */
static void close_piece(console *con)
{
    if (con->fd < 0) {
        return;
    }
    close(con->fd);
    con->fd = -1;
    char path[PATH_MAX + 32];
    piece_path(con, path, sizeof path);
    if (con->bytes > 0) {
        mlt_err e = mlt_log_artifact(con->run, path, "logs");
        if (e != MLT_OK) {
            char why[600];
            snprintf(why, sizeof why, "%s", mlt_last_error());
            give_up(con, why);
        } else {
            con->logged++;
        }
    }
    unlink(path); /* snapshotted into the queue, or given up */
    con->bytes = 0;
}

void console_write(console *con, const char *buf, size_t n)
{
    if (con->broken || n == 0) {
        return;
    }
    if (con->fd < 0) {
        con->piece++;
        char path[PATH_MAX + 32];
        piece_path(con, path, sizeof path);
        con->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (con->fd < 0) {
            char why[PATH_MAX + 100];
            snprintf(why, sizeof why, "%s: %s", path, strerror(errno));
            give_up(con, why);
            return;
        }
        con->opened_ns = mlt__mono_ns();
    }
    while (n > 0) {
        ssize_t w = write(con->fd, buf, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w < 0) {
            char why[300];
            snprintf(why, sizeof why, "cannot write its piece: %s", strerror(errno));
            give_up(con, why);
            return;
        }
        buf += w;
        n -= (size_t)w;
        con->bytes += (uint64_t)w;
    }
    if (con->bytes >= PIECE_BYTES) {
        close_piece(con);
    }
}

void console_tick(console *con)
{
    if (con->fd >= 0 && mlt__mono_ns() - con->opened_ns >= con->every_ns) {
        close_piece(con);
    }
}

void console_finish(console *con)
{
    close_piece(con);
    if (con->dir[0] && rmdir(con->dir) != 0 && errno != ENOENT) {
        say(con->c, "cannot remove %s: %s", con->dir, strerror(errno));
    }
}

/* ---- --artifact ---- */

/* dir/name of a path, for a directory's artifact directory (its own name). */
static const char *last_part(char *path)
{
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') {
        path[--n] = '\0';
    }
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

int log_artifact_globs(cli *c, mlt_run *run, const char *const *globs, size_t n)
{
    int failed = 0;
    for (size_t i = 0; i < n; i++) {
        glob_t g;
        int rc = glob(globs[i], GLOB_NOSORT | GLOB_BRACE, NULL, &g);
        if (rc == GLOB_NOMATCH) {
            say(c, "--artifact %s: no file matches", globs[i]);
            continue;
        }
        if (rc != 0) {
            say(c, "--artifact %s: %s", globs[i],
                rc == GLOB_NOSPACE ? "out of memory" : "cannot read a directory");
            failed++;
            continue;
        }
        for (size_t k = 0; k < g.gl_pathc; k++) {
            const char *p = g.gl_pathv[k];
            struct stat st;
            mlt_err e;
            if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
                char copy[PATH_MAX];
                snprintf(copy, sizeof copy, "%s", p);
                const char *name = last_part(copy);
                e = mlt_log_artifacts(run, p, strcmp(name, ".") && strcmp(name, "/") ? name : NULL);
            } else {
                e = mlt_log_artifact(run, p, NULL);
            }
            if (e != MLT_OK) {
                say(c, "--artifact %s: %s", globs[i], mlt_last_error());
                failed++;
            }
        }
        globfree(&g);
    }
    return failed;
}
