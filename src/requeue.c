/* requeue.c - dead letters back into the queue (`mltrack requeue`). See requeue.h. */
#include "requeue.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "digest.h"
#include "record.h"
#include "validate.h"

#include <sys/stat.h>
#include <unistd.h>

/* A run of the new journal: its client key and number there. */
typedef struct requeued_run {
    char key[40];
    uint32_t run_no;
} requeued_run;

typedef struct requeue {
    mlt__journal *from, *to;
    requeued_run *runs;
    size_t n_runs, cap_runs;
    mlt__buf kept; /* the lines left in from's dead.jsonl */
    mlt__buf rec;  /* the payload being appended */
    mlt__requeue_stats *st;
    char **snaps; /* the snapshots of requeued artifacts: removed from `from` once requeued */
    size_t n_snaps, cap_snaps;
} requeue;

static const char *str_of(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/*
 * An int64 member of a dead letter, read from the line's text: cJSON keeps numbers as doubles,
 * which cannot hold every step. `,"name":` cannot occur inside a string of the line (its quote
 * would be escaped), so the first match is the member.
 */
static bool i64_of(const char *line, const char *name, int64_t *out)
{
    char pat[40];
    snprintf(pat, sizeof pat, ",\"%s\":", name);
    const char *p = strstr(line, pat);
    if (!p) {
        return false;
    }
    p += strlen(pat);
    char *end;
    errno = 0;
    long long v = strtoll(p, &end, 10);
    if (end == p || errno != 0 || (*end != ',' && *end != '}')) {
        return false;
    }
    *out = (int64_t)v;
    return true;
}

static bool value_of(const cJSON *o, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "value");
    if (cJSON_IsNumber(v)) {
        *out = v->valuedouble;
        return true;
    }
    const char *s = cJSON_IsString(v) ? v->valuestring : "";
    if (strcmp(s, "NaN") == 0 || strcmp(s, "Infinity") == 0 || strcmp(s, "-Infinity") == 0) {
        *out = s[0] == 'N' ? NAN : s[0] == '-' ? -INFINITY : INFINITY;
        return true;
    }
    return false;
}

static const requeued_run *find_run(const requeue *q, const char *key)
{
    for (size_t i = 0; i < q->n_runs; i++) {
        if (strcmp(q->runs[i].key, key) == 0) {
            return &q->runs[i];
        }
    }
    return NULL;
}

static const requeued_run *add_run(requeue *q, const char *key)
{
    if (MLT__GROW(q->runs, q->cap_runs, q->n_runs + 1) != MLT_OK) {
        return NULL;
    }
    requeued_run *r = &q->runs[q->n_runs];
    snprintf(r->key, sizeof r->key, "%s", key);
    r->run_no = (uint32_t)++q->n_runs;
    q->st->runs++;
    return r;
}

/* The run of from's run map with this key and a server id, NULL if none. */
static const mlt__run_entry *known_run(mlt__journal *from, const char *key)
{
    size_t n;
    const mlt__run_entry *runs = mlt__journal_runs(from, &n);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(runs[i].key, key) == 0 && runs[i].run_id) {
            return &runs[i];
        }
    }
    return NULL;
}

/*
 * The number in the new journal of the run a record belongs to: a run requeued earlier, or one
 * the server has (from's map), entered into the new map as ended so that it is never ended
 * again from there. 0 with *why set when there is none.
 */
static uint32_t run_for(requeue *q, const char *key, const char **why, mlt_err *err)
{
    const requeued_run *r = find_run(q, key);
    if (r) {
        return r->run_no;
    }
    const mlt__run_entry *e = known_run(q->from, key);
    if (!e) {
        *why = "its run was never created and its creation is not among the dead letters";
        return 0;
    }
    /* copies: the map's entries move when it changes */
    char id[128], exp[128];
    snprintf(id, sizeof id, "%s", e->run_id);
    snprintf(exp, sizeof exp, "%s", e->experiment_id ? e->experiment_id : "");
    r = add_run(q, key);
    if (!r) {
        *err = MLT_ERR_NOMEM;
        return 0;
    }
    *err = mlt__journal_put_run(q->to, r->run_no, key, id, exp[0] ? exp : NULL, MLT__RUN_ENDED);
    return *err == MLT_OK ? r->run_no : 0;
}

static MLT__MUST_USE mlt_err append(requeue *q, mlt__rec_type type)
{
    if (q->rec.oom) {
        return mlt__fail(MLT_ERR_NOMEM, "out of memory");
    }
    mlt_err err = mlt__journal_append(q->to, type, q->rec.data, q->rec.len, NULL);
    q->rec.len = 0;
    if (err == MLT_OK) {
        q->st->requeued++;
    }
    return err;
}

static MLT__MUST_USE mlt_err put_create(requeue *q, const cJSON *o, const char *line,
                                        const char *key)
{
    int64_t start = 0;
    const cJSON *tags = cJSON_GetObjectItemCaseSensitive(o, "tags");
    const char *tk[MLT__REC_MAX_TAGS], *tv[MLT__REC_MAX_TAGS];
    size_t n = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, tags)
    {
        if (n == MLT__REC_MAX_TAGS || !cJSON_IsString(t) || !t->string) {
            return mlt__fail(MLT_ERR_CORRUPT, "a run's tags in the dead letters are not mltrack's");
        }
        tk[n] = t->string;
        tv[n++] = t->valuestring;
    }
    if (!i64_of(line, "start_time", &start) || !cJSON_IsObject(tags)) {
        /* a letter of an older mltrack, without the run's creation in full */
        return MLT_ERR_NOT_FOUND;
    }
    const char *parent = str_of(o, "parent_run_key");
    if (parent[0]) {
        /* a parent the server has goes into the new map, so that the child is made under it */
        const char *why;
        mlt_err err = MLT_OK;
        if (run_for(q, parent, &why, &err) == 0 && err != MLT_OK) {
            return err;
        }
    }
    const requeued_run *r = add_run(q, key);
    if (!r) {
        return mlt__fail(MLT_ERR_NOMEM, "out of memory");
    }
    mlt__rec_put_create(
        &q->rec, r->run_no, key, str_of(o, "parent_run_key"), str_of(o, "run_name"),
        str_of(o, "experiment_name"), str_of(o, "experiment_id"), start, tk, tv, n,
        cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "resume")) ? MLT__CREATE_RESUME : 0);
    return append(q, MLT__REC_CREATE);
}

/* An artifact refused: its snapshot, set aside beside the letter, is snapshotted into the new
 * journal again (and checked against the digest logged: a torn one stays a dead letter). */
static MLT__MUST_USE mlt_err put_artifact(requeue *q, const cJSON *o, const char *line,
                                          const char *key, const char **why)
{
    const char *path = str_of(o, "path"), *sha = str_of(o, "sha256");
    const char *snap = str_of(o, "snapshot");
    int64_t size = -1, at = 0;
    if (!i64_of(line, "size", &size) || !i64_of(line, "logged_at", &at) || strlen(sha) != 64 ||
        mlt__validate_artifact_path("artifact path", path, false) != MLT_OK) {
        return mlt__fail(MLT_ERR_CORRUPT, "an artifact in the dead letters is not mltrack's");
    }
    if (!snap[0]) {
        *why = "the artifact's bytes were not kept (its snapshot was lost or torn)";
        return MLT_ERR_NOT_FOUND;
    }
    mlt_err err = MLT_OK;
    uint32_t run_no = run_for(q, key, why, &err);
    if (run_no == 0) {
        return err != MLT_OK ? err : MLT_ERR_NOT_FOUND;
    }
    int fd = -1;
    err = mlt__journal_open_dead_artifact(q->from, snap, &fd);
    if (err == MLT_ERR_NOT_FOUND) {
        *why = "the artifact's bytes are gone from the journal";
        return err;
    }
    if (err != MLT_OK) {
        return err;
    }
    /* checked before it is queued again: a torn copy stays a dead letter */
    char got[MLT__SHA256_HEX];
    struct stat st;
    if (fstat(fd, &st) != 0 || (uint64_t)st.st_size != (uint64_t)size ||
        mlt__sha256_fd(fd, 0, (uint64_t)size, got) != MLT_OK || strcmp(got, sha) != 0) {
        close(fd);
        *why = "the bytes kept for the artifact are not those logged (torn)";
        return MLT_ERR_NOT_FOUND;
    }
    mlt__art_src src = {fd, NULL, (uint64_t)size};
    uint64_t bytes = 0;
    err = mlt__journal_put_artifact(q->to, run_no, path, &src, at, &bytes, got);
    close(fd);
    if (err != MLT_OK) {
        return err;
    }
    char *copy = mlt__strdup(snap);
    if (!copy || MLT__GROW(q->snaps, q->cap_snaps, q->n_snaps + 1) != MLT_OK) {
        free(copy);
        return mlt__fail(MLT_ERR_NOMEM, "out of memory");
    }
    q->snaps[q->n_snaps++] = copy;
    q->st->requeued++;
    return MLT_OK;
}

/* Requeues one dead letter (a parsed line); MLT_ERR_NOT_FOUND when it must stay a dead letter
 * (*why says why). */
static MLT__MUST_USE mlt_err requeue_one(requeue *q, const cJSON *o, const char *line,
                                         const char **why)
{
    const char *type = str_of(o, "type");
    const char *key = str_of(o, "run_key");
    if (strlen(key) >= sizeof((requeued_run *)0)->key || !key[0]) {
        *why = "it names no run";
        return MLT_ERR_NOT_FOUND;
    }
    if (strcmp(type, "create_run") == 0 || strcmp(type, "attach_run") == 0) {
        if (find_run(q, key)) {
            *why = "its run is requeued already";
            return MLT_ERR_NOT_FOUND;
        }
        if (type[0] == 'c') {
            mlt_err err = put_create(q, o, line, key);
            *why = "the run's creation is not written in full (an older mltrack)";
            return err;
        }
        const requeued_run *r = add_run(q, key);
        if (!r) {
            return mlt__fail(MLT_ERR_NOMEM, "out of memory");
        }
        mlt__rec_put_attach(&q->rec, r->run_no, key, str_of(o, "run_id"),
                            str_of(o, "experiment_name"), str_of(o, "experiment_id"),
                            mlt__now_ms()); /* the wait for the run starts again */
        return append(q, MLT__REC_ATTACH);
    }
    bool metric = strcmp(type, "metric") == 0, end = strcmp(type, "end_run") == 0;
    bool kv = strcmp(type, "param") == 0 || strcmp(type, "tag") == 0;
    if (strcmp(type, "artifact") == 0) {
        return put_artifact(q, o, line, key, why);
    }
    if (!metric && !end && !kv) {
        *why = "it is not a record mltrack can send (an undecodable one)";
        return MLT_ERR_NOT_FOUND;
    }
    mlt_err err = MLT_OK;
    uint32_t run_no = run_for(q, key, why, &err);
    if (run_no == 0) {
        return err != MLT_OK ? err : MLT_ERR_NOT_FOUND;
    }
    if (kv) {
        mlt__rec_put_kv(&q->rec, run_no, str_of(o, "key"), str_of(o, "value"));
        return append(q, type[0] == 'p' ? MLT__REC_PARAM : MLT__REC_TAG);
    }
    int64_t ts = 0, step = 0;
    double v;
    if (metric) {
        if (!value_of(o, &v) || !i64_of(line, "timestamp", &ts) || !i64_of(line, "step", &step)) {
            return mlt__fail(MLT_ERR_CORRUPT, "a metric in the dead letters is not mltrack's");
        }
        mlt__rec_put_metric(&q->rec, run_no, str_of(o, "key"), v, ts, step);
        return append(q, MLT__REC_METRIC);
    }
    const char *status = str_of(o, "status");
    int st = strcmp(status, "FINISHED") == 0 ? MLT_RUN_FINISHED
             : strcmp(status, "FAILED") == 0 ? MLT_RUN_FAILED
             : strcmp(status, "KILLED") == 0 ? MLT_RUN_KILLED
                                             : -1;
    if (st < 0 || !i64_of(line, "end_time", &ts)) {
        *why = "the run's end is not written in full (an older mltrack)";
        return MLT_ERR_NOT_FOUND;
    }
    mlt__rec_put_end(&q->rec, run_no, st, ts);
    return append(q, MLT__REC_END);
}

mlt_err mlt__requeue(mlt__journal *from, mlt__journal *to, mlt__requeue_stats *st)
{
    memset(st, 0, sizeof *st);
    mlt__buf letters;
    mlt__buf_init(&letters);
    mlt_err err = mlt__journal_read_dead_letters(from, &letters); /* kept NUL-terminated */
    if (err != MLT_OK || letters.len == 0) {
        mlt__buf_free(&letters);
        return err;
    }
    char *text = letters.data;
    requeue q = {.from = from, .to = to, .st = st};
    mlt__buf_init(&q.kept);
    mlt__buf_init(&q.rec);
    uint64_t kept_lines = 0;
    for (char *line = text, *nl; err == MLT_OK && *line; line = nl + 1) {
        nl = strchr(line, '\n');
        if (!nl) {
            /* a torn last line (a crash while it was written): left as it is */
            mlt__buf_puts(&q.kept, line);
            kept_lines++;
            break;
        }
        *nl = '\0';
        cJSON *o = cJSON_Parse(line);
        const char *why = "";
        err = o ? requeue_one(&q, o, line, &why)
                : mlt__fail(MLT_ERR_CORRUPT, "a line of the dead letters is not JSON");
        cJSON_Delete(o);
        if (err == MLT_ERR_NOT_FOUND) {
            err = MLT_OK;
            mlt__buf_printf(&q.kept, "%s\n", line);
            kept_lines++;
            if (st->kept++ == 0) {
                snprintf(st->why_kept, sizeof st->why_kept, "%s", why);
            }
        }
    }
    if (err == MLT_OK && q.kept.oom) {
        err = mlt__fail(MLT_ERR_NOMEM, "out of memory");
    }
    if (err == MLT_OK && st->requeued > 0) {
        /* the new journal is durable before the letters leave the old one */
        err = mlt__journal_sync(to);
        if (err == MLT_OK) {
            err = mlt__journal_keep_dead_letters(from, q.kept.data ? q.kept.data : "", q.kept.len,
                                                 kept_lines);
        }
        for (size_t i = 0; err == MLT_OK && i < q.n_snaps; i++) {
            mlt__journal_forget_dead_artifact(from, q.snaps[i]); /* requeued: their copy is new */
        }
    }
    for (size_t i = 0; i < q.n_snaps; i++) {
        free(q.snaps[i]);
    }
    free(q.snaps);
    mlt__buf_free(&q.kept);
    mlt__buf_free(&q.rec);
    free(q.runs);
    mlt__buf_free(&letters);
    return err;
}
