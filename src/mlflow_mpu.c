/*
 * mlflow_mpu.c - a large artifact through the artifact proxy's multipart upload, as the Python
 * client does it (mlflow/store/artifact/mlflow_artifacts_repo.py): create (a presigned URL per
 * part), the parts PUT straight to the artifact store in parallel, each retried alone, then
 * complete; abort when a part cannot be sent. Chosen when the file is large enough and the
 * option or the server (GET /api/3.0/mlflow/server-info) says so; a server whose destination
 * cannot (501) gets the single PUT.
 */
#include "config.h"

#include "mlflow_client.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Parts in flight at once, each on its own connection. */
#define MPU_WORKERS 4
/* S3's most parts for one upload: a larger file gets larger parts. */
#define MPU_MAX_PARTS 10000

typedef struct part {
    mlt__mpu_part p;
    char *url;      /* owned (p.url points here) */
    char **headers; /* owned, NULL-terminated "Name: value" lines; NULL when none */
    char etag[256]; /* p.etag points here once the part is in */
    mlt__http_upload up;
    uint64_t sent; /* bytes of it sent so far (the try in flight), under job.mu */
} part;

typedef struct job {
    mlt__client *c;
    part *parts;
    size_t n;
    pthread_mutex_t mu;
    size_t next;    /* the next part to take */
    mlt_err err;    /* the first part that failed for good... */
    char msg[1200]; /* ...and why */
    uint64_t done;  /* bytes of the parts in */
    void (*sent)(void *ud, uint64_t bytes);
    void *sent_ud;
    int64_t deadline_ns;
} job;

/* ---- deciding ---- */

/* Whether the server's artifact store takes multipart uploads: asked once a client. */
static MLT__MUST_USE mlt_err server_multipart(mlt__client *c, bool *yes)
{
    if (c->mpu_server < 0) {
        mlt__api_req r;
        mlt__api_req_init(&r);
        mlt__api_server_info(&r);
        mlt__api_answer a;
        mlt__api_answer_init(&a);
        mlt_err err = mlt__client_call(c, &r, true, -1, &a);
        mlt__api_req_free(&r);
        if (err == MLT_OK) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(a.json, "multipart_uploads_enabled");
            c->mpu_server = cJSON_IsTrue(v) ? 1 : 0;
        } else if (a.status >= 400 && a.status < 500 && a.status != 429 && a.status != 401 &&
                   a.status != 403) {
            c->mpu_server = 0; /* an older server, without the route */
        } else {
            err = mlt__fail(err, "%s", a.msg);
            mlt__api_answer_free(&a);
            return err;
        }
        mlt__api_answer_free(&a);
    }
    *yes = c->mpu_server == 1;
    return MLT_OK;
}

/* ---- the parts ---- */

static void part_sent(void *ud, uint64_t bytes);

typedef struct worker {
    job *j;
    mlt__client w; /* the client's settings over a transport of its own (or the client's) */
    part *cur;
} worker;

static void part_sent(void *ud, uint64_t bytes)
{
    worker *wk = ud;
    job *j = wk->j;
    pthread_mutex_lock(&j->mu);
    wk->cur->sent = bytes;
    uint64_t total = j->done;
    for (size_t i = 0; i < j->n; i++) {
        if (!j->parts[i].p.etag) {
            total += j->parts[i].sent;
        }
    }
    if (j->sent) {
        j->sent(j->sent_ud, total); /* one thread at a time */
    }
    pthread_mutex_unlock(&j->mu);
}

/* Sends part p through wk (retried as any call: a part PUT again holds the same bytes). */
static void send_part(worker *wk, part *p)
{
    job *j = wk->j;
    wk->cur = p;
    mlt__http_upload up = p->up;
    up.sent = j->sent ? part_sent : NULL;
    up.sent_ud = wk;
    mlt__api_req r;
    mlt__api_req_init(&r);
    mlt__api_put_part(&r, p->url, (const char *const *)p->headers, &up);
    mlt__api_answer a;
    mlt__api_answer_init(&a);
    mlt_err err = mlt__client_call(&wk->w, &r, true, j->deadline_ns, &a);
    mlt__api_req_free(&r);
    pthread_mutex_lock(&j->mu);
    p->sent = 0;
    if (err == MLT_OK) {
        snprintf(p->etag, sizeof p->etag, "%s", a.etag);
        p->p.etag = p->etag;
        j->done += p->up.len;
    } else if (j->err == MLT_OK) {
        j->err = err;
        snprintf(j->msg, sizeof j->msg, "part %u of %zu: %s", p->p.number, j->n, a.msg);
    }
    pthread_mutex_unlock(&j->mu);
    mlt__api_answer_free(&a);
}

/* Takes parts until none is left or one failed for good. */
static void *work(void *arg)
{
    worker *wk = arg;
    job *j = wk->j;
    for (;;) {
        pthread_mutex_lock(&j->mu);
        part *p = j->err == MLT_OK && j->next < j->n ? &j->parts[j->next++] : NULL;
        pthread_mutex_unlock(&j->mu);
        if (!p) {
            return NULL;
        }
        send_part(wk, p);
    }
}

/* Runs the parts: on workers of their own when the client can make transports for presigned
 * URLs, else one by one through its own. */
static void run_parts(job *j)
{
    mlt__client *c = j->c;
    size_t nw = c->part_transport ? (j->n < MPU_WORKERS ? j->n : MPU_WORKERS) : 0;
    worker wks[MPU_WORKERS];
    pthread_t tids[MPU_WORKERS];
    size_t started = 0;
    pthread_mutex_lock(&c->part_mu);
    for (size_t i = 0; i < nw; i++) {
        wks[i] = (worker){.j = j, .w = *c};
        wks[i].w.requests = 0;
        wks[i].w.max_retries = c->part_retries;
        if (c->part_transport(&wks[i].w.tr, c) != MLT_OK) {
            break;
        }
        if (c->abort && wks[i].w.tr.set_abort) {
            wks[i].w.tr.set_abort(wks[i].w.tr.self, c->abort);
        }
        c->part_trs[i] = wks[i].w.tr;
        c->n_part_trs = i + 1;
        if (pthread_create(&tids[i], NULL, work, &wks[i]) != 0) {
            break;
        }
        started++;
    }
    pthread_mutex_unlock(&c->part_mu);
    if (started == 0) {
        worker self = {.j = j, .w = *c}; /* through the client's own transport */
        self.w.requests = 0;
        self.w.max_retries = c->part_retries;
        work(&self);
        c->requests += self.w.requests;
    }
    for (size_t i = 0; i < started; i++) {
        pthread_join(tids[i], NULL);
        c->requests += wks[i].w.requests;
    }
    pthread_mutex_lock(&c->part_mu);
    for (size_t i = 0; i < c->n_part_trs; i++) {
        c->part_trs[i].destroy(c->part_trs[i].self);
    }
    c->n_part_trs = 0;
    pthread_mutex_unlock(&c->part_mu);
}

/* ---- create, complete, abort ---- */

static void free_parts(part *parts, size_t n)
{
    for (size_t i = 0; parts && i < n; i++) {
        free(parts[i].url);
        for (size_t k = 0; parts[i].headers && parts[i].headers[k]; k++) {
            free(parts[i].headers[k]);
        }
        free(parts[i].headers);
    }
    free(parts);
}

/* The "Name: value" lines of a credential's headers object; NULL when none or out of memory
 * (*oom says which). */
static char **header_lines(const cJSON *headers, bool *oom)
{
    int n = cJSON_IsObject(headers) ? cJSON_GetArraySize(headers) : 0;
    if (n <= 0) {
        return NULL;
    }
    char **lines = calloc((size_t)n + 1, sizeof *lines);
    int k = 0;
    for (const cJSON *h = headers->child; lines && h; h = h->next) {
        if (cJSON_IsString(h) && h->string &&
            !(lines[k++] = mlt__aprintf("%s: %s", h->string, h->valuestring))) {
            *oom = true;
        }
    }
    *oom = *oom || !lines;
    return lines;
}

/* The parts of a create's answer, one per chunk of the file in order. */
static MLT__MUST_USE mlt_err read_parts(const cJSON *json, int fd, uint64_t len, uint64_t chunk,
                                        size_t n, part **out)
{
    const cJSON *creds = cJSON_GetObjectItemCaseSensitive(json, "credentials");
    if (!cJSON_IsArray(creds) || (size_t)cJSON_GetArraySize(creds) != n) {
        return mlt__fail(MLT_ERR_PROTOCOL,
                         "create multipart upload: the answer does not have %zu credentials", n);
    }
    part *parts = calloc(n, sizeof *parts);
    if (!parts) {
        return mlt__fail(MLT_ERR_NOMEM, "out of memory");
    }
    bool oom = false;
    const cJSON *cr = creds->child;
    for (size_t i = 0; i < n; i++, cr = cr->next) {
        const cJSON *url = cJSON_GetObjectItemCaseSensitive(cr, "url");
        const cJSON *num = cJSON_GetObjectItemCaseSensitive(cr, "part_number");
        if (!cJSON_IsString(url) || !cJSON_IsNumber(num) || num->valuedouble != (double)(i + 1) ||
            (strncmp(url->valuestring, "http://", 7) != 0 &&
             strncmp(url->valuestring, "https://", 8) != 0)) {
            free_parts(parts, n);
            return mlt__fail(MLT_ERR_PROTOCOL,
                             "create multipart upload: credential %zu is not an http(s) URL for "
                             "part %zu",
                             i + 1, i + 1);
        }
        part *p = &parts[i];
        p->p.number = (uint32_t)(i + 1);
        p->url = mlt__strdup(url->valuestring);
        p->p.url = p->url;
        p->headers = header_lines(cJSON_GetObjectItemCaseSensitive(cr, "headers"), &oom);
        p->up.fd = fd;
        p->up.off = (uint64_t)i * chunk;
        p->up.len = i + 1 < n ? chunk : len - p->up.off;
        oom = oom || !p->url;
    }
    if (oom) {
        free_parts(parts, n);
        return mlt__fail(MLT_ERR_NOMEM, "out of memory");
    }
    *out = parts;
    return MLT_OK;
}

/* The directory part of path ("" at the root) into dir, its last part into *name. */
static void split_path(const char *path, char *dir, size_t len, const char **name)
{
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 0;
    snprintf(dir, len, "%.*s", (int)n, path);
    *name = slash ? slash + 1 : path;
}

static void abort_upload(mlt__client *c, const char *root, const char *dir, const char *name,
                         const char *upload_id)
{
    mlt__api_req r;
    mlt__api_req_init(&r);
    mlt__api_answer a;
    mlt__api_answer_init(&a);
    if (mlt__api_mpu_abort(&r, root, dir, name, upload_id) == MLT_OK &&
        mlt__client_call(c, &r, true, -1, &a) != MLT_OK) {
        /* left to the store's own expiry of unfinished uploads */
        mlt__log(&c->logger, MLT_LOG_WARN, "%s", a.msg);
    }
    mlt__api_answer_free(&a);
    mlt__api_req_free(&r);
}

mlt_err mlt__client_put_multipart(mlt__client *c, const char *root, const char *path, int fd,
                                  uint64_t len, int64_t deadline_ns,
                                  void (*sent)(void *ud, uint64_t bytes), void *sent_ud, bool *used)
{
    *used = false;
    bool on = c->mpu_mode == 1;
    if (len < c->mpu_min_bytes || c->mpu_mode == 0) {
        return MLT_OK;
    }
    if (c->mpu_mode < 0) {
        mlt_err err = server_multipart(c, &on);
        if (err != MLT_OK) {
            return err;
        }
    }
    if (!on) {
        return MLT_OK;
    }
    uint64_t chunk = c->mpu_chunk_bytes;
    if ((len + chunk - 1) / chunk > MPU_MAX_PARTS) {
        chunk = (len + MPU_MAX_PARTS - 1) / MPU_MAX_PARTS;
    }
    size_t n = (size_t)((len + chunk - 1) / chunk);
    char dir[4096];
    const char *name;
    split_path(path, dir, sizeof dir, &name);

    mlt__api_req r;
    mlt__api_req_init(&r);
    mlt__api_answer a;
    mlt__api_answer_init(&a);
    mlt_err err = mlt__api_mpu_create(&r, root, dir, name, (uint32_t)n);
    if (err == MLT_OK) {
        err = mlt__client_call(c, &r, true, deadline_ns, &a);
    } else {
        snprintf(a.msg, sizeof a.msg, "artifact path %s is too long for a URL", path);
    }
    mlt__api_req_free(&r);
    if (err != MLT_OK && a.status == 501) {
        /* a destination that cannot (a local directory): one PUT, as the Python client does */
        c->mpu_server = 0;
        mlt__api_answer_free(&a);
        return MLT_OK;
    }
    *used = true;
    const char *uid = err == MLT_OK ? mlt__api_json_str(a.json, "upload_id") : NULL;
    if (err != MLT_OK) {
        err = mlt__fail(err, "%s", a.msg);
        mlt__api_answer_free(&a);
        return err;
    }
    char *upload_id = mlt__strdup(uid);
    part *parts = NULL;
    err = !uid         ? mlt__fail(MLT_ERR_PROTOCOL, "create multipart upload: no upload_id")
          : !upload_id ? mlt__fail(MLT_ERR_NOMEM, "out of memory")
                       : read_parts(a.json, fd, len, chunk, n, &parts);
    mlt__api_answer_free(&a);
    if (err != MLT_OK) {
        if (upload_id) {
            abort_upload(c, root, dir, name, upload_id);
        }
        free(upload_id);
        return err;
    }

    job j = {.c = c,
             .parts = parts,
             .n = n,
             .sent = sent,
             .sent_ud = sent_ud,
             .deadline_ns = deadline_ns};
    pthread_mutex_init(&j.mu, NULL);
    run_parts(&j);
    pthread_mutex_destroy(&j.mu);
    if (j.err == MLT_OK) {
        for (size_t i = 0; i < n && j.err == MLT_OK; i++) {
            if (!parts[i].p.etag) { /* a worker that could not start took none */
                j.err = MLT_ERR_NOMEM;
                snprintf(j.msg, sizeof j.msg, "part %zu of %zu was not sent", i + 1, n);
            }
        }
    }
    if (j.err != MLT_OK) {
        abort_upload(c, root, dir, name, upload_id);
        err = mlt__fail(j.err, "upload artifact %s: %s (the upload was aborted)", path, j.msg);
    } else {
        mlt__mpu_part *done = malloc(n * sizeof *done);
        mlt__api_req_init(&r);
        mlt__api_answer_init(&a);
        err = !done ? MLT_ERR_NOMEM : MLT_OK;
        for (size_t i = 0; done && i < n; i++) {
            done[i] = parts[i].p;
        }
        if (err == MLT_OK) {
            err = mlt__api_mpu_complete(&r, root, dir, name, upload_id, done, n);
        }
        if (err == MLT_OK) {
            /* completed twice (an answer lost) the second says no such upload: the artifact is
             * then sent again whole, the same bytes to the same path */
            err = mlt__client_call(c, &r, true, deadline_ns, &a);
            if (err != MLT_OK) {
                err = mlt__fail(err, "%s", a.msg);
                abort_upload(c, root, dir, name, upload_id);
            }
        } else {
            err = mlt__fail(err, "complete multipart upload of %s: out of memory", path);
            abort_upload(c, root, dir, name, upload_id);
        }
        free(done);
        mlt__api_answer_free(&a);
        mlt__api_req_free(&r);
    }
    free_parts(parts, n);
    free(upload_id);
    return err;
}
