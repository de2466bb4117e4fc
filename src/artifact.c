/*
 * artifact.c - the tracker's artifact calls: mlt_log_artifact, mlt_log_artifacts and
 * mlt_log_artifact_bytes. Each checks its input before anything is queued (the run, the
 * artifact path's rules, a readable regular file), then a sink that keeps bytes (the MLflow
 * sink's snapshot into its journal) takes them first, and every callback's on_artifact is told
 * the path, size and SHA-256 of what was kept.
 */
#include "config.h"

#include "digest.h"
#include "tracker.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static MLT__MUST_USE mlt_err check_run(mlt_run *run, const char *call)
{
    if (!run) {
        return mlt__fail(MLT_ERR_INVALID_ARG, "run is required (%s)", call);
    }
    if (run->tracker->forked) {
        return mlt__tracker_forked_err();
    }
    if (mlt__run_has_ended(run)) {
        return mlt__run_ended_err(run, call);
    }
    return MLT_OK;
}

/* dir/name into out (dir NULL or "": name alone). */
static MLT__MUST_USE mlt_err join(char *out, size_t len, const char *dir, const char *name)
{
    int n = dir && dir[0] ? snprintf(out, len, "%s/%s", dir, name) : snprintf(out, len, "%s", name);
    if (n < 0 || (size_t)n >= len) {
        return mlt__fail(MLT_ERR_INVALID_ARG,
                         "artifact path '%.200s/%.200s...' is invalid: it is longer than 1024 "
                         "bytes",
                         dir ? dir : "", name);
    }
    return MLT_OK;
}

/* Opens a regular file for reading without blocking on a FIFO or a device. */
static MLT__MUST_USE mlt_err open_file(const char *local_path, int *fd, uint64_t *size)
{
    int f = open(local_path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    struct stat st;
    if (f < 0 || fstat(f, &st) != 0) {
        int e = errno;
        if (f >= 0) {
            close(f);
        }
        return mlt__fail(MLT_ERR_IO, "cannot read artifact file %s: %s", local_path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(f);
        return mlt__fail(MLT_ERR_IO, "artifact file %s is %s, not a regular file%s", local_path,
                         S_ISDIR(st.st_mode) ? "a directory" : "a special file",
                         S_ISDIR(st.st_mode) ? " (mlt_log_artifacts logs a directory)" : "");
    }
    int flags = fcntl(f, F_GETFL);
    if (flags >= 0) {
        (void)fcntl(f, F_SETFL, flags & ~O_NONBLOCK);
    }
    *fd = f;
    *size = (uint64_t)st.st_size;
    return MLT_OK;
}

/* Hands one artifact to the sinks: those that keep bytes first, then every on_artifact. */
static MLT__MUST_USE mlt_err dispatch(mlt_run *run, const char *path, const char *local_path,
                                      int fd, const void *data, uint64_t len)
{
    mlt_run_info info;
    mlt__run_info(run, &info, mlt__run_parent_key(run));
    const mlt_tracker *t = run->tracker;
    mlt_artifact_info a = {path, local_path, fd < 0 ? data : NULL, len, NULL};
    char sha[MLT__SHA256_HEX] = "";
    uint64_t bytes = len;
    for (size_t i = 0; i < t->n_cbs; i++) {
        const mlt__cb_entry *e = &t->cbs[i];
        if (!e->ext.artifact) {
            continue;
        }
        if (fd >= 0 && lseek(fd, 0, SEEK_SET) != 0) {
            return mlt__fail(MLT_ERR_IO, "cannot read artifact file %s: %s", local_path,
                             strerror(errno));
        }
        mlt__fail_clear();
        mlt_err err = e->ext.artifact(e->userdata, &info, path, fd, data, len, &bytes, sha);
        if (err != MLT_OK) {
            return err; /* nothing was kept: nothing is told */
        }
    }
    if (!sha[0]) {
        /* no sink keeps bytes: the digest is the file's now */
        if (fd >= 0) {
            mlt_err err = mlt__sha256_fd(fd, 0, len, sha);
            if (err != MLT_OK) {
                return mlt__fail(err, "artifact file %s: %s", local_path, mlt_last_error());
            }
        } else {
            mlt__sha256 *c = mlt__sha256_new();
            if (!c) {
                return MLT_ERR_NOMEM;
            }
            mlt__sha256_update(c, data, (size_t)len);
            mlt__sha256_hex(c, sha);
        }
    }
    a.size = bytes;
    a.sha256 = sha;
    mlt__first_err fe = {MLT_OK, ""};
    for (size_t i = 0; i < t->n_cbs; i++) {
        const mlt__cb_entry *e = &t->cbs[i];
        if (e->cb.on_artifact) {
            mlt__fail_clear();
            mlt__note_err(&fe, e->cb.on_artifact(&info, &a, e->userdata), "on_artifact failed");
        }
    }
    return mlt__finish_err(&fe);
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static MLT__MUST_USE mlt_err log_file(mlt_run *run, const char *local_path,
                                      const char *artifact_dir)
{
    mlt_err err = check_run(run, "log_artifact");
    if (err == MLT_OK && !local_path) {
        err = mlt__fail(MLT_ERR_INVALID_ARG, "local_path is required (log_artifact)");
    }
    if (err == MLT_OK) {
        err = mlt__validate_artifact_path("artifact_dir", artifact_dir, true);
    }
    if (err != MLT_OK) {
        return err;
    }
    int fd;
    uint64_t size;
    if ((err = open_file(local_path, &fd, &size)) != MLT_OK) {
        return err;
    }
    char path[MLT__MAX_ARTIFACT_PATH + 2];
    err = join(path, sizeof path, artifact_dir, base_name(local_path));
    if (err == MLT_OK) {
        err = mlt__validate_artifact_path("artifact path", path, false);
    }
    if (err == MLT_OK) {
        err = dispatch(run, path, local_path, fd, NULL, size);
    }
    close(fd);
    return err;
}

mlt_err mlt_log_artifact(mlt_run *run, const char *local_path, const char *artifact_dir)
{
    mlt_err err = log_file(run, local_path, artifact_dir);
    return run ? mlt__tracker_counted(run->tracker, err) : err;
}

mlt_err mlt_log_artifact_bytes(mlt_run *run, const char *artifact_file, const void *data,
                               size_t len)
{
    mlt_err err = check_run(run, "log_artifact_bytes");
    if (err == MLT_OK) {
        err = mlt__validate_artifact_path("artifact_file", artifact_file, false);
    }
    if (err == MLT_OK && !data && len) {
        err =
            mlt__fail(MLT_ERR_INVALID_ARG, "data is NULL and len is %zu (log_artifact_bytes)", len);
    }
    if (err == MLT_OK) {
        err = dispatch(run, artifact_file, NULL, -1, data ? data : "", len);
    }
    return run ? mlt__tracker_counted(run->tracker, err) : err;
}

/* ---- directories ---- */

typedef struct file_ent {
    char *local; /* the file on disk */
    char *rel;   /* its path under the directory */
} file_ent;

typedef struct file_list {
    file_ent *v;
    size_t n, cap;
} file_list;

static void free_list(file_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].local);
        free(l->v[i].rel);
    }
    free(l->v);
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every regular file under dir (rel: its path under the top), in name order, depth first.
 * Symbolic links to files are followed, to directories not (as os.walk). */
static MLT__MUST_USE mlt_err walk(const char *dir, const char *rel, file_list *out, int depth)
{
    if (depth > 64) {
        return mlt__fail(MLT_ERR_IO, "artifact directory %s is nested more than 64 deep", dir);
    }
    DIR *d = opendir(dir);
    if (!d) {
        return mlt__fail(MLT_ERR_IO, "cannot read artifact directory %s: %s", dir, strerror(errno));
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    mlt_err err = MLT_OK;
    struct dirent *e;
    while (err == MLT_OK && (e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        char *copy = mlt__strdup(e->d_name);
        if (!copy || MLT__GROW(names, cap, n + 1) != MLT_OK) {
            free(copy);
            err = mlt__fail(MLT_ERR_NOMEM, "out of memory");
            break;
        }
        names[n++] = copy;
    }
    closedir(d);
    if (n) {
        qsort(names, n, sizeof *names, cmp_name);
    }
    for (size_t i = 0; i < n && err == MLT_OK; i++) {
        char *local = mlt__aprintf("%s/%s", dir, names[i]);
        char *r = rel[0] ? mlt__aprintf("%s/%s", rel, names[i]) : mlt__strdup(names[i]);
        struct stat lst, st;
        if (!local || !r) {
            err = mlt__fail(MLT_ERR_NOMEM, "out of memory");
        } else if (lstat(local, &lst) != 0 || (S_ISLNK(lst.st_mode) && stat(local, &st) != 0)) {
            err = mlt__fail(MLT_ERR_IO, "cannot read artifact file %s: %s", local, strerror(errno));
        } else if (S_ISDIR(lst.st_mode)) {
            err = walk(local, r, out, depth + 1);
        } else if (S_ISLNK(lst.st_mode) && S_ISDIR(st.st_mode)) {
            /* a link to a directory: not followed */
        } else if (!S_ISREG(S_ISLNK(lst.st_mode) ? st.st_mode : lst.st_mode)) {
            err = mlt__fail(MLT_ERR_IO, "artifact file %s is a special file, not a regular file",
                            local);
        } else if (MLT__GROW(out->v, out->cap, out->n + 1) != MLT_OK) {
            err = mlt__fail(MLT_ERR_NOMEM, "out of memory");
        } else {
            out->v[out->n++] = (file_ent){local, r};
            local = r = NULL;
        }
        free(local);
        free(r);
    }
    for (size_t i = 0; i < n; i++) {
        free(names[i]);
    }
    free(names);
    return err;
}

static MLT__MUST_USE mlt_err log_dir(mlt_run *run, const char *local_dir, const char *artifact_dir)
{
    mlt_err err = check_run(run, "log_artifacts");
    if (err == MLT_OK && !local_dir) {
        err = mlt__fail(MLT_ERR_INVALID_ARG, "local_dir is required (log_artifacts)");
    }
    if (err == MLT_OK) {
        err = mlt__validate_artifact_path("artifact_dir", artifact_dir, true);
    }
    struct stat st;
    if (err == MLT_OK && stat(local_dir, &st) != 0) {
        err = mlt__fail(MLT_ERR_IO, "cannot read artifact directory %s: %s", local_dir,
                        strerror(errno));
    } else if (err == MLT_OK && !S_ISDIR(st.st_mode)) {
        err = mlt__fail(MLT_ERR_IO,
                        "artifact directory %s is not a directory (mlt_log_artifact logs a file)",
                        local_dir);
    }
    if (err != MLT_OK) {
        return err;
    }
    file_list l = {0};
    err = walk(local_dir, "", &l, 0);
    /* everything is checked before anything is logged */
    char path[MLT__MAX_ARTIFACT_PATH + 2];
    for (size_t i = 0; i < l.n && err == MLT_OK; i++) {
        err = join(path, sizeof path, artifact_dir, l.v[i].rel);
        if (err == MLT_OK) {
            err = mlt__validate_artifact_path("artifact path", path, false);
        }
        if (err == MLT_OK && access(l.v[i].local, R_OK) != 0) {
            err = mlt__fail(MLT_ERR_IO, "cannot read artifact file %s: %s", l.v[i].local,
                            strerror(errno));
        }
    }
    for (size_t i = 0; i < l.n && err == MLT_OK; i++) {
        int fd;
        uint64_t size;
        if ((err = join(path, sizeof path, artifact_dir, l.v[i].rel)) != MLT_OK ||
            (err = open_file(l.v[i].local, &fd, &size)) != MLT_OK) {
            break;
        }
        err = dispatch(run, path, l.v[i].local, fd, NULL, size);
        close(fd);
    }
    free_list(&l);
    return err;
}

mlt_err mlt_log_artifacts(mlt_run *run, const char *local_dir, const char *artifact_dir)
{
    mlt_err err = log_dir(run, local_dir, artifact_dir);
    return run ? mlt__tracker_counted(run->tracker, err) : err;
}
