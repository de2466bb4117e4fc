/*
 * cb_jsonl.c - the JSON lines callback (the seed's experiments.log): one JSON object per event,
 * appended to a file, flushed at each run end and at flush, closed at tracker close.
 */
#include "config.h"

#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct jsonl {
    FILE *f;
    char *path;
    pthread_mutex_t lock; /* one line at a time, and the FILE's error state */
} jsonl;

/* Starts a line: {"event":"...","run_key":"...","run_name":"..." */
static void head(mlt__buf *b, const char *event, const mlt_run_info *info)
{
    mlt__buf_puts(b, "{\"event\":");
    mlt__json_str(b, event);
    mlt__buf_puts(b, ",\"run_key\":");
    mlt__json_str(b, info->run_key);
    if (info->run_name) {
        mlt__buf_puts(b, ",\"run_name\":");
        mlt__json_str(b, info->run_name);
    }
}

static void kv(mlt__buf *b, const char *key, const char *value)
{
    mlt__buf_puts(b, ",\"key\":");
    mlt__json_str(b, key);
    mlt__buf_puts(b, ",\"value\":");
    mlt__json_str(b, value);
}

/* Ends the line and appends it to the file. */
static MLT__MUST_USE mlt_err emit(jsonl *j, mlt__buf *b, int flush)
{
    mlt__buf_puts(b, "}\n");
    if (b->oom) {
        mlt__buf_free(b);
        return mlt__fail(MLT_ERR_NOMEM, "jsonl callback: out of memory");
    }
    pthread_mutex_lock(&j->lock);
    int ok = fwrite(b->data, 1, b->len, j->f) == b->len;
    if (ok && flush) {
        ok = fflush(j->f) == 0;
    }
    int e = errno;
    pthread_mutex_unlock(&j->lock);
    mlt__buf_free(b);
    return ok ? MLT_OK
              : mlt__fail(MLT_ERR_IO, "jsonl callback: writing %s failed: %s", j->path,
                          strerror(e));
}

static MLT__MUST_USE mlt_err on_start(const mlt_run_info *info, void *ud)
{
    mlt__buf b;
    mlt__buf_init(&b);
    head(&b, "run_start", info);
    if (info->parent_run_key) {
        mlt__buf_puts(&b, ",\"parent_run_key\":");
        mlt__json_str(&b, info->parent_run_key);
    }
    const char *id = mlt_run_id(info->run);
    if (id) {
        mlt__buf_puts(&b, ",\"run_id\":");
        mlt__json_str(&b, id);
    }
    mlt__buf_puts(&b, ",\"start_time\":");
    mlt__json_i64(&b, info->start_time_ms);
    return emit(ud, &b, 0);
}

static MLT__MUST_USE mlt_err on_param(const mlt_run_info *info, const char *key, const char *value,
                                      void *ud)
{
    mlt__buf b;
    mlt__buf_init(&b);
    head(&b, "param", info);
    kv(&b, key, value);
    return emit(ud, &b, 0);
}

static MLT__MUST_USE mlt_err on_metric(const mlt_run_info *info, const char *key, double value,
                                       int64_t step, int64_t ts, void *ud)
{
    mlt__buf b;
    mlt__buf_init(&b);
    head(&b, "metric", info);
    mlt__buf_puts(&b, ",\"key\":");
    mlt__json_str(&b, key);
    mlt__buf_puts(&b, ",\"value\":");
    mlt__json_double(&b, value);
    mlt__buf_puts(&b, ",\"step\":");
    mlt__json_i64(&b, step);
    mlt__buf_puts(&b, ",\"timestamp\":");
    mlt__json_i64(&b, ts);
    return emit(ud, &b, 0);
}

static MLT__MUST_USE mlt_err on_tag(const mlt_run_info *info, const char *key, const char *value,
                                    void *ud)
{
    mlt__buf b;
    mlt__buf_init(&b);
    head(&b, "tag", info);
    kv(&b, key, value);
    return emit(ud, &b, 0);
}

static MLT__MUST_USE mlt_err on_artifact(const mlt_run_info *info, const mlt_artifact_info *a,
                                         void *ud)
{
    mlt__buf b;
    mlt__buf_init(&b);
    head(&b, "artifact", info);
    mlt__buf_puts(&b, ",\"path\":");
    mlt__json_str(&b, a->path);
    mlt__buf_puts(&b, ",\"size\":");
    mlt__json_i64(&b, (int64_t)a->size);
    mlt__buf_puts(&b, ",\"sha256\":");
    mlt__json_str(&b, a->sha256);
    return emit(ud, &b, 0);
}

static MLT__MUST_USE mlt_err on_end(const mlt_run_info *info, mlt_run_status status,
                                    double duration_s, void *ud)
{
    mlt__buf b;
    mlt__buf_init(&b);
    head(&b, "run_end", info);
    const char *id = mlt_run_id(info->run);
    if (id) {
        mlt__buf_puts(&b, ",\"run_id\":");
        mlt__json_str(&b, id);
    }
    mlt__buf_puts(&b, ",\"status\":");
    mlt__json_str(&b, mlt_run_status_name(status));
    mlt__buf_puts(&b, ",\"start_time\":");
    mlt__json_i64(&b, info->start_time_ms);
    mlt__buf_puts(&b, ",\"end_time\":");
    mlt__json_i64(&b, info->end_time_ms);
    mlt__buf_puts(&b, ",\"duration_s\":");
    mlt__json_double(&b, duration_s);
    return emit(ud, &b, 1);
}

static MLT__MUST_USE mlt_err on_flush(int timeout_ms, void *ud)
{
    (void)timeout_ms;
    jsonl *j = ud;
    pthread_mutex_lock(&j->lock);
    int ok = fflush(j->f) == 0;
    int e = errno;
    pthread_mutex_unlock(&j->lock);
    return ok ? MLT_OK
              : mlt__fail(MLT_ERR_IO, "jsonl callback: flushing %s failed: %s", j->path,
                          strerror(e));
}

static void on_close(void *ud)
{
    jsonl *j = ud;
    fclose(j->f);
    pthread_mutex_destroy(&j->lock);
    free(j->path);
    free(j);
}

static MLT__MUST_USE mlt_err add_jsonl(mlt_tracker *tracker, const char *path)
{
    if (!tracker || !path) {
        return mlt__fail(MLT_ERR_INVALID_ARG, "jsonl callback: tracker and path are required");
    }
    jsonl *j = calloc(1, sizeof *j);
    if (!j || !(j->path = mlt__strdup(path))) {
        free(j);
        return mlt__fail(MLT_ERR_NOMEM, "out of memory");
    }
    /* open() rather than fopen() to create the file 0644 as documented (umask permitting). */
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    j->f = fd >= 0 ? fdopen(fd, "a") : NULL;
    if (!j->f) {
        if (fd >= 0) {
            close(fd);
        }
        mlt_err err =
            mlt__fail(MLT_ERR_IO, "jsonl callback: cannot open %s: %s", path, strerror(errno));
        free(j->path);
        free(j);
        return err;
    }
    pthread_mutex_init(&j->lock, NULL);
    static const mlt_callbacks cb = {
        .version = MLT_CALLBACKS_VERSION,
        .on_run_start = on_start,
        .on_param = on_param,
        .on_metric = on_metric,
        .on_tag = on_tag,
        .on_run_end = on_end,
        .on_flush = on_flush,
        .on_close = on_close,
        .on_artifact = on_artifact,
    };
    mlt_err err = mlt_tracker_add_callbacks(tracker, &cb, j);
    if (err != MLT_OK) {
        on_close(j);
    }
    return err;
}

mlt_err mlt_tracker_add_jsonl(mlt_tracker *tracker, const char *path, char *errbuf, size_t errlen)
{
    return mlt__errbuf(errbuf, errlen, add_jsonl(tracker, path));
}
