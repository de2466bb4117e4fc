/*
 * journal_meta.c - what a journal keeps beside its records: the metric keys that POINT records
 * name by id, the tracking URI it is for (target), and the run map (client run key -> MLflow
 * run id, state), each a small file replaced atomically.
 */
#include "config.h"

#include "journal_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- metric keys ---- */

mlt_err mlt__j_read_small_file(const mlt__journal *j, const char *name, mlt__buf *out);

/* Records id -> key in memory (the caller holds mu or owns j alone). */
static MLT__MUST_USE mlt_err remember_key(mlt__journal *j, uint64_t id, const char *key)
{
    if (id >= (uint64_t)KEY_PAGE * KEY_PAGES) {
        return mlt__fail(MLT_ERR_VALUE_TOO_LONG, "more than %u metric keys in one journal",
                         KEY_PAGE * KEY_PAGES);
    }
    char ***page = &j->key_pages[id / KEY_PAGE];
    if (!*page && !(*page = calloc(KEY_PAGE, sizeof **page))) {
        return mlt__fail(MLT_ERR_NOMEM, "out of memory");
    }
    char *copy = (*page)[id % KEY_PAGE] ? NULL : mlt__strdup(key);
    if (!(*page)[id % KEY_PAGE] && !copy) {
        return mlt__fail(MLT_ERR_NOMEM, "out of memory");
    }
    if (copy) {
        (*page)[id % KEY_PAGE] = copy;
    }
    return MLT_OK;
}

mlt_err mlt__j_load_keys(mlt__journal *j)
{
    mlt__buf b;
    mlt__buf_init(&b);
    mlt_err err = mlt__j_read_small_file(j, "keys", &b);
    if (err == MLT_ERR_NOT_FOUND) {
        err = MLT_OK;
    }
    j->keys_good_len = 0;
    for (char *line = b.data; err == MLT_OK && line && *line;) {
        char *nl = strchr(line, '\n');
        if (!nl) {
            break; /* a torn last line (cut when the file is next appended to): never used */
        }
        *nl = '\0';
        j->keys_good_len = (size_t)(nl + 1 - b.data);
        char *sp = strchr(line, ' '), *end;
        if (sp) {
            *sp = '\0';
            errno = 0;
            unsigned long long id = strtoull(line, &end, 10);
            /* a line that does not parse names no key: points naming it will not decode */
            if (!errno && end != line && !*end && id < (unsigned long long)KEY_PAGE * KEY_PAGES) {
                err = remember_key(j, id, sp + 1);
            }
        }
        line = nl + 1;
    }
    mlt__buf_free(&b);
    return err;
}

mlt_err mlt__j_open_keys(mlt__journal *j)
{
    char path[PATH_MAX];
    if (mlt__j_path_in(j, "keys", path, sizeof path) != 0) {
        return MLT_ERR_IO;
    }
    j->keys_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    struct stat st;
    if (j->keys_fd >= 0 && fstat(j->keys_fd, &st) == 0 && (size_t)st.st_size > j->keys_good_len &&
        ftruncate(j->keys_fd, (off_t)j->keys_good_len) != 0) {
        close(j->keys_fd); /* a torn last line must not prefix the next one */
        j->keys_fd = -1;
    }
    return j->keys_fd >= 0 ? MLT_OK : MLT_ERR_IO;
}

mlt_err mlt__journal_put_key(mlt__journal *j, uint32_t id, const char *key)
{
    pthread_mutex_lock(&j->mu);
    mlt_err err = MLT_OK;
    if (mlt__j_key_name(j, id)) {
        goto out;
    }
    if (id >= (uint64_t)KEY_PAGE * KEY_PAGES) {
        err = mlt__fail(MLT_ERR_VALUE_TOO_LONG, "more than %u metric keys in one journal",
                        KEY_PAGE * KEY_PAGES);
        goto out;
    }
    if (j->keys_fd < 0 && mlt__j_open_keys(j) != MLT_OK) {
        err = mlt__fail(MLT_ERR_IO, "cannot open the keys of journal %s: %s", j->dir,
                        strerror(errno));
        goto out;
    }
    char *line = mlt__aprintf("%" PRIu32 " %s\n", id, key);
    if (!line) {
        err = mlt__fail(MLT_ERR_NOMEM, "out of memory");
        goto out;
    }
    /* In the file before any point names it; durable with fsync=always at once, else at the
     * next sync, which syncs the keys before the segment. */
    size_t n = strlen(line);
    if (mlt__j_write_all(j->keys_fd, line, n) != 0 ||
        (j->mode == MLT__FSYNC_ALWAYS && fdatasync(j->keys_fd) != 0)) {
        int e = errno;
        if (ftruncate(j->keys_fd, (off_t)j->keys_good_len) != 0) {
            /* cut at the next open */
        }
        err = mlt__fail(MLT_ERR_IO, "cannot record a metric key in journal %s: %s", j->dir,
                        strerror(e));
    } else {
        j->keys_good_len += n;
        j->keys_dirty = j->mode != MLT__FSYNC_ALWAYS;
    }
    free(line);
    if (err == MLT_OK) {
        err = remember_key(j, id, key);
    }
out:
    pthread_mutex_unlock(&j->mu);
    return err;
}

/* ---- the target ---- */

mlt_err mlt__journal_set_target(mlt__journal *j, const char *uri)
{
    char *t = mlt__url_without_credentials(uri);
    if (!t) {
        return mlt__fail(MLT_ERR_NOMEM, "out of memory");
    }
    char *line = mlt__aprintf("%s\n", t);
    mlt_err err = line ? mlt__j_replace_file(j, "target", line, strlen(line)) : MLT_ERR_NOMEM;
    free(line);
    if (err != MLT_OK) {
        free(t);
        return mlt__fail(err, "cannot record the target of journal %s: %s", j->dir,
                         strerror(errno));
    }
    free(j->target);
    j->target = t;
    return MLT_OK;
}

const char *mlt__journal_target(const mlt__journal *j)
{
    return j->target;
}

bool mlt__journal_is_for(const mlt__journal *j, const char *uri)
{
    if (!j->target) {
        return true;
    }
    char *t = mlt__url_without_credentials(uri);
    bool same = t && strcmp(t, j->target) == 0;
    free(t);
    return same;
}

/* ---- run map ---- */

mlt__run_entry *mlt__journal_run(mlt__journal *j, uint32_t run_no)
{
    for (size_t i = 0; i < j->n_runs; i++) {
        if (j->runs[i].run_no == run_no) {
            return &j->runs[i];
        }
    }
    return NULL;
}

const mlt__run_entry *mlt__journal_runs(mlt__journal *j, size_t *n)
{
    *n = j->n_runs;
    return j->runs;
}

static MLT__MUST_USE mlt_err save_runs(mlt__journal *j)
{
    static const char *const states[] = {"open", "ended", "dead", "attached"};
    mlt__buf b;
    mlt__buf_init(&b);
    for (size_t i = 0; i < j->n_runs; i++) {
        const mlt__run_entry *e = &j->runs[i];
        mlt__buf_printf(&b, "%" PRIu32 " %s %s %s %s\n", e->run_no, e->key,
                        e->run_id ? e->run_id : "-", e->experiment_id ? e->experiment_id : "-",
                        states[e->state]);
    }
    mlt_err err =
        b.oom ? MLT_ERR_NOMEM : mlt__j_replace_file(j, "runs", b.data ? b.data : "", b.len);
    mlt__buf_free(&b);
    return err;
}

mlt_err mlt__journal_put_run(mlt__journal *j, uint32_t run_no, const char *key, const char *run_id,
                             const char *experiment_id, mlt__run_state state)
{
    mlt_err err = mlt__j_put_run(j, run_no, key, run_id, experiment_id, state);
    return err != MLT_OK || (j->read_only && !j->follow) ? err : save_runs(j);
}

/* Adds or updates an entry in memory. */
mlt_err mlt__j_put_run(mlt__journal *j, uint32_t run_no, const char *key, const char *run_id,
                       const char *experiment_id, mlt__run_state state)
{
    mlt__run_entry *e = mlt__journal_run(j, run_no);
    if (!e) {
        if (MLT__GROW(j->runs, j->cap_runs, j->n_runs + 1) != MLT_OK) {
            return MLT_ERR_NOMEM;
        }
        e = &j->runs[j->n_runs++];
        memset(e, 0, sizeof *e);
        e->run_no = run_no;
    }
    snprintf(e->key, sizeof e->key, "%s", key);
    if (run_id && (!e->run_id || strcmp(e->run_id, run_id))) {
        free(e->run_id);
        e->run_id = mlt__strdup(run_id);
    }
    if (experiment_id && (!e->experiment_id || strcmp(e->experiment_id, experiment_id))) {
        free(e->experiment_id);
        e->experiment_id = mlt__strdup(experiment_id);
    }
    e->state = state;
    if ((run_id && !e->run_id) || (experiment_id && !e->experiment_id)) {
        return MLT_ERR_NOMEM;
    }
    return MLT_OK;
}
