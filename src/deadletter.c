/*
 * deadletter.c - a journal's dead letters: the records the server refused for good, one JSON
 * object a line in dead.jsonl, written whole with the server's answer, counted, read and kept.
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

/* ---- dead letters ---- */

/* ,"name":"value" of a dead letter, when value is set and not empty. */
static void dead_str(mlt__buf *b, const char *name, const char *value)
{
    if (value && value[0]) {
        mlt__buf_printf(b, ",\"%s\":", name);
        mlt__json_str(b, value);
    }
}

mlt_err mlt__journal_dead_letter(mlt__journal *j, const mlt__rec *r, const char *answer)
{
    static const char *const types[] = {"?",       "create_run", "param",      "metric",  "tag",
                                        "end_run", "metric",     "attach_run", "artifact"};
    const mlt__run_entry *e = mlt__journal_run(j, r->run_no);
    mlt__buf b;
    mlt__buf_init(&b);
    mlt__buf_printf(&b, "{\"seq\":%" PRIu64 ",\"type\":\"%s\",\"run_key\":", r->seq,
                    r->type <= MLT__REC_ARTIFACT ? types[r->type] : "?");
    mlt__json_str(&b, r->type == MLT__REC_CREATE || r->type == MLT__REC_ATTACH ? r->key
                      : e                                                      ? e->key
                                                                               : "");
    if (r->type == MLT__REC_PARAM || r->type == MLT__REC_TAG || r->type == MLT__REC_METRIC) {
        mlt__buf_puts(&b, ",\"key\":");
        mlt__json_str(&b, r->key);
        mlt__buf_puts(&b, ",\"value\":");
        if (r->type == MLT__REC_METRIC) {
            mlt__json_double(&b, r->num);
            mlt__buf_printf(&b, ",\"timestamp\":%" PRId64 ",\"step\":%" PRId64, r->time_ms,
                            r->step);
        } else {
            mlt__json_str(&b, r->value);
        }
    } else if (r->type == MLT__REC_CREATE || r->type == MLT__REC_ATTACH) {
        /* all a run's creation holds, so that it can be made again by hand */
        dead_str(&b, "run_id", r->type == MLT__REC_ATTACH ? r->run_id : NULL);
        dead_str(&b, "run_name", r->run_name);
        dead_str(&b, "parent_run_key", r->parent_key);
        dead_str(&b, "experiment_name", r->experiment_name);
        dead_str(&b, "experiment_id", r->experiment_id);
        if (r->type == MLT__REC_CREATE) {
            mlt__buf_printf(&b, ",\"start_time\":%" PRId64 ",\"tags\":{", r->time_ms);
            for (size_t i = 0; i < r->n_tags && i < MLT__REC_MAX_TAGS; i++) {
                mlt__buf_puts(&b, i ? "," : "");
                mlt__json_str(&b, r->tag_keys[i] ? r->tag_keys[i] : "");
                mlt__buf_puts(&b, ":");
                mlt__json_str(&b, r->tag_values[i] ? r->tag_values[i] : "");
            }
            mlt__buf_puts(&b, "}");
            if (r->flags & MLT__CREATE_RESUME) {
                mlt__buf_puts(&b, ",\"resume\":true");
            }
        }
    } else if (r->type == MLT__REC_END) {
        mlt__buf_printf(&b, ",\"status\":\"%s\",\"end_time\":%" PRId64,
                        mlt_run_status_name((mlt_run_status)r->status), r->time_ms);
    } else if (r->type == MLT__REC_ARTIFACT) {
        /* its bytes are kept beside it (art/dead-<seq>), for `mltrack requeue` */
        char snap[64];
        mlt__j_art_set_aside(j, r->seq, r->bytes, snap, sizeof snap);
        mlt__buf_puts(&b, ",\"path\":");
        mlt__json_str(&b, r->key ? r->key : "");
        mlt__buf_printf(&b, ",\"size\":%" PRIu64, r->bytes);
        dead_str(&b, "sha256", r->value);
        mlt__buf_printf(&b, ",\"logged_at\":%" PRId64, r->time_ms);
        dead_str(&b, "snapshot", snap);
    }
    mlt__buf_puts(&b, ",\"answer\":");
    /* answers may have been cut to a buffer inside a UTF-8 character: keep the file UTF-8 */
    const char *text = answer ? answer : "";
    size_t len = strlen(text);
    mlt__json_strn(&b, text, mlt__utf8_cut(text, len, len));
    mlt__buf_puts(&b, "}\n");
    char path[PATH_MAX];
    mlt_err err = MLT_OK;
    if (b.oom || mlt__j_path_in(j, "dead.jsonl", path, sizeof path) != 0) {
        err = MLT_ERR_NOMEM;
    } else {
        /* one whole line or none: a line cut by a full disk is taken back, so that the next
         * try appends after whole lines */
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        off_t before = fd < 0 ? -1 : lseek(fd, 0, SEEK_END);
        if (fd < 0 || before < 0 || mlt__j_write_all(fd, b.data, b.len) != 0 ||
            fdatasync(fd) != 0) {
            int why = errno;
            if (fd >= 0 && before >= 0 && ftruncate(fd, before) != 0) {
                why = errno;
            }
            err = mlt__fail(MLT_ERR_IO,
                            "cannot write the dead letter of record %" PRIu64 " to %s: %s", r->seq,
                            path, strerror(why));
        }
        if (fd >= 0) {
            close(fd);
        }
    }
    if (err == MLT_OK) {
        j->dead++;
    }
    mlt__buf_free(&b);
    return err;
}

uint64_t mlt__journal_dead_count(mlt__journal *j)
{
    return j->dead;
}

mlt_err mlt__journal_read_dead_letters(mlt__journal *j, mlt__buf *out)
{
    mlt_err err = mlt__j_read_small_file(j, "dead.jsonl", out);
    if (err == MLT_ERR_NOT_FOUND) {
        return MLT_OK;
    }
    return err == MLT_OK ? MLT_OK
                         : mlt__fail(err, "cannot read %s/dead.jsonl: %s", j->dir, strerror(errno));
}

mlt_err mlt__journal_keep_dead_letters(mlt__journal *j, const char *text, size_t len,
                                       uint64_t lines)
{
    char path[PATH_MAX];
    bool ok;
    if (len == 0) {
        ok = mlt__j_path_in(j, "dead.jsonl", path, sizeof path) == 0 &&
             (unlink(path) == 0 || errno == ENOENT) && mlt__j_fsync_dir(j->dir) == 0;
    } else {
        ok = mlt__j_replace_file(j, "dead.jsonl", text, len) == MLT_OK;
    }
    if (!ok) {
        return mlt__fail(MLT_ERR_IO, "cannot rewrite %s/dead.jsonl: %s", j->dir, strerror(errno));
    }
    j->dead = lines;
    if (len == 0) {
        mlt__j_art_forget_dead(j); /* no letter left: the bytes kept for them go too */
    }
    return MLT_OK;
}
