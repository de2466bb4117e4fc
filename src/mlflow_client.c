/*
 * mlflow_client.c - the retry loop and the multi-call operations of the MLflow client
 * (experiment get-or-create, idempotent run creation, split log batches, run update).
 */
#include "config.h"

#include "mlflow_client.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_BACKOFF_S 120.0

mlt_err mlt__client_init_with(mlt__client *c, const mlt_options *o, mlt__transport tr)
{
    memset(c, 0, sizeof *c);
    c->tr = tr;
    const char *uri = mlt__opt_str(o, MLT__OPT_TRACKING_URI);
    c->base = mlt__strdup(uri ? uri : "");
    if (!c->base) {
        tr.destroy(tr.self);
        c->tr.self = NULL;
        return MLT_ERR_NOMEM;
    }
    c->max_retries = o->max_retries;
    c->backoff_factor_s = o->backoff_factor_s;
    c->backoff_jitter_s = o->backoff_jitter_s;
    c->max_backoff_s = DEFAULT_MAX_BACKOFF_S;
    c->last_retry_after_s = -1;
    c->logger = o->logger;
    c->part_retries = o->max_retries;
    c->mpu_mode = mlt__opt_str(o, MLT__OPT_MULTIPART_UPLOAD) ? o->multipart_upload : -1;
    c->mpu_server = -1;
    c->mpu_min_bytes = (uint64_t)o->multipart_min_bytes;
    c->mpu_chunk_bytes = (uint64_t)o->multipart_chunk_bytes;
    c->timeout_s = o->timeout_s;
    pthread_mutex_init(&c->part_mu, NULL);
    return MLT_OK;
}

static mlt_err presigned_transport(mlt__transport *out, const mlt__client *c)
{
    return mlt__transport_presigned_new(out, c->timeout_s);
}

mlt_err mlt__client_init(mlt__client *c, const mlt_options *o)
{
    mlt__transport tr;
    mlt_err err = mlt__transport_curl_new(&tr, o);
    if (err != MLT_OK) {
        memset(c, 0, sizeof *c);
        return err;
    }
    err = mlt__client_init_with(c, o, tr);
    if (err != MLT_OK) {
        return mlt__fail(err, "out of memory");
    }
    c->part_transport = presigned_transport;
    return MLT_OK;
}

void mlt__client_free(mlt__client *c)
{
    if (c->tr.self && c->tr.destroy) {
        c->tr.destroy(c->tr.self);
    }
    if (c->base) {
        pthread_mutex_destroy(&c->part_mu);
    }
    free(c->base);
    memset(c, 0, sizeof *c);
}

int64_t mlt__client_backoff_ms(const mlt__client *c, int n, const mlt__api_answer *a)
{
    double s = c->backoff_factor_s * pow(2.0, n - 1);
    if (s > c->max_backoff_s) {
        s = c->max_backoff_s;
    }
    s += c->backoff_jitter_s * mlt__rand01();
    if (a && a->retry_after_s >= 0) {
        double ra = a->retry_after_s < c->max_backoff_s ? a->retry_after_s : c->max_backoff_s;
        if (ra > s) {
            s = ra;
        }
    }
    return (int64_t)(s * 1000.0);
}

/* Waits ms before a retry; a set abort flag ends the wait early (false). */
static bool pause_ms(mlt__client *c, int64_t ms)
{
    if (c->sleep_fn) {
        c->sleep_fn(ms, c->sleep_ud);
        return true;
    }
    for (int64_t left = ms; left > 0; left -= 100) {
        if (c->abort && atomic_load(c->abort)) {
            return false;
        }
        mlt__sleep_ms(left < 100 ? left : 100);
    }
    return !(c->abort && atomic_load(c->abort));
}

static MLT__MUST_USE mlt_err once(mlt__client *c, const mlt__api_req *r, mlt__api_answer *a)
{
    char *url = mlt__api_url(c->base, r);
    if (!url) {
        a->err = MLT_ERR_NOMEM;
        snprintf(a->msg, sizeof a->msg, "%s: out of memory", r->what);
        return a->err;
    }
    mlt__http_request hr = {
        .method = r->method,
        .url = url,
        .body = r->body.data,
        .body_len = r->body.len,
        .upload = r->upload,
        .not_idempotent = r->not_idempotent,
        .headers = r->headers,
    };
    mlt__http_response resp;
    mlt__http_response_init(&resp);
    c->tr.perform(c->tr.self, &hr, &resp);
    c->requests++;
    /* No connection (refused, no route, no such host), TLS refused, or a URL libcurl cannot
     * use: the server cannot be reached, as opposed to reached and slow or failing. */
    c->last_unreachable = (resp.net_err == MLT_ERR_NETWORK && !resp.maybe_sent) ||
                          resp.net_err == MLT_ERR_TLS || resp.net_err == MLT_ERR_BAD_OPTION;
    if (c->last_unreachable) {
        /* "METHOD URL: what failed": the URL is the server's, said once by whoever reports */
        const char *why = strstr(resp.errmsg, ": ");
        snprintf(c->unreachable_why, sizeof c->unreachable_why, "%s", why ? why + 2 : resp.errmsg);
    }
    mlt__api_classify(r, &resp, a);
    mlt__http_response_free(&resp);
    free(url);
    return a->err;
}

mlt_err mlt__client_call(mlt__client *c, const mlt__api_req *r, bool retry_ambiguous,
                         int64_t deadline_ns, mlt__api_answer *a)
{
    for (int attempt = 0;; attempt++) {
        mlt__api_answer_free(a);
        mlt__api_answer_init(a);
        if (once(c, r, a) == MLT_OK) {
            c->last_retry_after_s = -1;
            return MLT_OK;
        }
        c->last_retry_after_s = a->retry_after_s;
        c->last_ambiguous = a->ambiguous;
        if (!a->retriable || (a->ambiguous && !retry_ambiguous) || attempt >= c->max_retries) {
            return a->err;
        }
        int64_t wait = mlt__client_backoff_ms(c, attempt + 1, a);
        if (deadline_ns >= 0 && mlt__mono_ns() + wait * 1000000 > deadline_ns) {
            return a->err;
        }
        mlt__log(&c->logger, MLT_LOG_WARN, "%s (retry %d of %d in %.1f s)", a->msg, attempt + 1,
                 c->max_retries, (double)wait / 1000.0);
        if (!pause_ms(c, wait)) {
            return a->err;
        }
    }
}

/* ---- ids in answers ---- */

/*
 * The id at path of an answer, or NULL when absent or not an id. An id is 1 to 127 printable
 * ASCII characters other than a space, and not "-": the run map (journal.h) keeps ids as
 * space-separated words of at most 127 characters, "-" for none, so that any other string
 * would read back as another id, or as none.
 */
static const char *answer_id(const cJSON *json, const char *path)
{
    const char *id = mlt__api_json_str(json, path);
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n > 127 || strcmp(id, "-") == 0) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)id[i] <= ' ' || (unsigned char)id[i] >= 0x7f) {
            return NULL;
        }
    }
    return id;
}

/* ---- experiments ---- */

static MLT__MUST_USE mlt_err experiment_from(const mlt__api_answer *a, const char *name,
                                             char **out_id)
{
    const char *id = answer_id(a->json, "experiment.experiment_id");
    const char *stage = mlt__api_json_str(a->json, "experiment.lifecycle_stage");
    if (!id) {
        return mlt__fail(MLT_ERR_PROTOCOL, "get experiment '%s': answer has no experiment id",
                         name);
    }
    if (stage && strcmp(stage, "active") != 0) {
        return mlt__fail(MLT_ERR_REJECTED,
                         "experiment '%s' (id %s) is %s: restore it or choose another name", name,
                         id, stage);
    }
    return (*out_id = mlt__strdup(id)) ? MLT_OK : MLT_ERR_NOMEM;
}

mlt_err mlt__client_experiment(mlt__client *c, const char *name, char **out_id)
{
    mlt__api_req r;
    mlt__api_answer a;
    mlt__api_answer_init(&a);
    mlt_err err = MLT_OK;
    /* get -> create on 404 -> get again if someone else created it meanwhile */
    for (int round = 0; round < 2; round++) {
        mlt__api_req_init(&r);
        err = mlt__api_get_experiment_by_name(&r, name);
        if (err != MLT_OK) {
            mlt__api_req_free(&r);
            mlt__fail(err, "experiment name of %zu bytes is too long for a URL", strlen(name));
            goto out;
        }
        err = mlt__client_call(c, &r, true, -1, &a);
        mlt__api_req_free(&r);
        if (err == MLT_OK) {
            err = experiment_from(&a, name, out_id);
            goto out;
        }
        if (err != MLT_ERR_NOT_FOUND) {
            mlt__fail(err, "%s", a.msg);
            goto out;
        }
        mlt__api_req_init(&r);
        err = mlt__api_create_experiment(&r, name);
        if (err == MLT_OK) {
            err = mlt__client_call(c, &r, true, -1, &a);
        }
        mlt__api_req_free(&r);
        if (err == MLT_OK) {
            const char *id = answer_id(a.json, "experiment_id");
            err = !id                           ? mlt__fail(MLT_ERR_PROTOCOL,
                                                            "create experiment '%s': answer has no experiment_id", name)
                  : (*out_id = mlt__strdup(id)) ? MLT_OK
                                                : MLT_ERR_NOMEM;
            goto out;
        }
        if (strcmp(a.error_code, "RESOURCE_ALREADY_EXISTS") != 0) {
            mlt__fail(err, "%s", a.msg);
            goto out;
        }
    }
    mlt__fail(err, "%s", a.msg);
out:
    mlt__api_answer_free(&a);
    return err;
}

/* ---- runs ---- */

#define KEY_TAG "mltrack.client_run_key"

/* Looks for a run carrying run_key: MLT_OK with *out_id, MLT_ERR_NOT_FOUND, or a failure. */
static MLT__MUST_USE mlt_err find_by_key(mlt__client *c, const char *experiment_id,
                                         const char *run_key, int64_t deadline_ns, char **out_id,
                                         mlt__api_answer *a)
{
    mlt__api_req r;
    mlt__api_req_init(&r);
    mlt_err err = mlt__api_search_run_by_key(&r, experiment_id, run_key);
    if (err == MLT_OK) {
        err = mlt__client_call(c, &r, true, deadline_ns, a);
    }
    mlt__api_req_free(&r);
    if (err != MLT_OK) {
        return err;
    }
    const cJSON *runs = cJSON_GetObjectItemCaseSensitive(a->json, "runs");
    const cJSON *first = cJSON_IsArray(runs) ? cJSON_GetArrayItem(runs, 0) : NULL;
    if (!first || !mlt__api_json_str(first, "info.run_id")) {
        return MLT_ERR_NOT_FOUND;
    }
    const char *id = answer_id(first, "info.run_id");
    if (!id) {
        snprintf(a->msg, sizeof a->msg,
                 "search run by client key: answer has a run id that "
                 "is not one");
        return MLT_ERR_PROTOCOL;
    }
    return (*out_id = mlt__strdup(id)) ? MLT_OK : MLT_ERR_NOMEM;
}

void mlt__client_interrupt(mlt__client *c)
{
    if (c->tr.interrupt) {
        c->tr.interrupt(c->tr.self);
    }
    pthread_mutex_lock(&c->part_mu);
    for (size_t i = 0; i < c->n_part_trs; i++) {
        if (c->part_trs[i].interrupt) {
            c->part_trs[i].interrupt(c->part_trs[i].self);
        }
    }
    pthread_mutex_unlock(&c->part_mu);
}

void mlt__client_set_abort(mlt__client *c, atomic_bool *flag)
{
    c->abort = flag;
    if (c->tr.set_abort) {
        c->tr.set_abort(c->tr.self, flag);
    }
}

mlt_err mlt__client_find_run(mlt__client *c, const char *experiment_id, const char *run_key,
                             char **out_id)
{
    mlt__api_answer a;
    mlt__api_answer_init(&a);
    mlt_err err = find_by_key(c, experiment_id, run_key, -1, out_id, &a);
    if (err != MLT_OK && err != MLT_ERR_NOT_FOUND) {
        mlt__fail(err, "%s", a.msg);
    }
    mlt__api_answer_free(&a);
    return err;
}

mlt_err mlt__client_create_run(mlt__client *c, const char *experiment_id, const char *run_key,
                               const char *run_name, int64_t start_time_ms, const mlt__kv *tags,
                               size_t n_tags, bool search_first, int64_t deadline_ns, char **out_id)
{
    if (search_first) {
        mlt__api_answer found;
        mlt__api_answer_init(&found);
        mlt_err ferr = find_by_key(c, experiment_id, run_key, deadline_ns, out_id, &found);
        if (ferr != MLT_OK && ferr != MLT_ERR_NOT_FOUND) {
            mlt__fail(ferr, "%s", found.msg);
        }
        mlt__api_answer_free(&found);
        if (ferr != MLT_ERR_NOT_FOUND) {
            return ferr;
        }
    }
    mlt__kv *all = malloc((n_tags + 1) * sizeof *all);
    if (!all) {
        return mlt__fail(MLT_ERR_NOMEM, "out of memory");
    }
    if (n_tags) {
        memcpy(all, tags, n_tags * sizeof *all);
    }
    all[n_tags].key = KEY_TAG;
    all[n_tags].value = run_key;
    mlt__api_req r;
    mlt__api_req_init(&r);
    mlt_err err = mlt__api_create_run(&r, experiment_id, run_name, start_time_ms, all, n_tags + 1);
    free(all);
    mlt__api_answer a;
    mlt__api_answer_init(&a);
    if (err != MLT_OK) {
        mlt__fail(err, "create run: cannot encode: %s", mlt_strerror(err));
        goto out;
    }
    for (int attempt = 0;; attempt++) {
        err = mlt__client_call(c, &r, false, deadline_ns, &a);
        if (err == MLT_OK) {
            const char *id = answer_id(a.json, "run.info.run_id");
            err = !id ? mlt__fail(MLT_ERR_PROTOCOL, "create run: answer has no run id")
                  : (*out_id = mlt__strdup(id)) ? MLT_OK
                                                : MLT_ERR_NOMEM;
            goto out;
        }
        if (!a.ambiguous || !a.retriable) {
            mlt__fail(err, "%s", a.msg);
            goto out;
        }
        /* The run may exist: look for its key before creating it again. */
        char first_msg[sizeof a.msg];
        snprintf(first_msg, sizeof first_msg, "%s", a.msg);
        mlt__log(&c->logger, MLT_LOG_WARN, "%s; checking whether the run was created", a.msg);
        mlt__api_answer found;
        mlt__api_answer_init(&found);
        mlt_err ferr = find_by_key(c, experiment_id, run_key, deadline_ns, out_id, &found);
        mlt__api_answer_free(&found);
        if (ferr == MLT_OK) {
            err = MLT_OK;
            goto out;
        }
        if (ferr != MLT_ERR_NOT_FOUND) {
            mlt__fail(err, "%s (and the search for the run failed)", first_msg);
            goto out;
        }
        if (attempt >= c->max_retries) {
            mlt__fail(err, "%s", first_msg);
            goto out;
        }
        int64_t wait = mlt__client_backoff_ms(c, attempt + 1, &a);
        if (deadline_ns >= 0 && mlt__mono_ns() + wait * 1000000 > deadline_ns) {
            mlt__fail(err, "%s", first_msg);
            goto out;
        }
        if (!pause_ms(c, wait)) {
            mlt__fail(err, "%s", first_msg);
            goto out;
        }
    }
out:
    mlt__api_req_free(&r);
    mlt__api_answer_free(&a);
    return err;
}

mlt_err mlt__client_log_batch(mlt__client *c, const char *run_id, mlt__batch *batch,
                              int64_t deadline_ns)
{
    while (batch->n_params + batch->n_tags + batch->n_metrics > 0) {
        mlt__api_req r;
        mlt__api_req_init(&r);
        mlt__batch took;
        mlt_err err = mlt__api_log_batch(&r, run_id, batch, MLT__BATCH_MAX_BYTES, &took);
        mlt__api_answer a;
        mlt__api_answer_init(&a);
        if (err == MLT_OK) {
            err = mlt__client_call(c, &r, true, deadline_ns, &a);
            if (err != MLT_OK) {
                mlt__fail(err, "%s", a.msg);
            }
        } else {
            mlt__fail(err, "log batch: cannot encode: %s", mlt_strerror(err));
        }
        mlt__api_answer_free(&a);
        mlt__api_req_free(&r);
        if (err != MLT_OK) {
            return err;
        }
        batch->params += took.n_params;
        batch->n_params -= took.n_params;
        batch->tags += took.n_tags;
        batch->n_tags -= took.n_tags;
        batch->metrics += took.n_metrics;
        batch->n_metrics -= took.n_metrics;
    }
    return MLT_OK;
}

static MLT__MUST_USE mlt_err update_run(mlt__client *c, const char *run_id, int status,
                                        int64_t end_time_ms, int64_t deadline_ns)
{
    mlt__api_req r;
    mlt__api_req_init(&r);
    mlt__api_answer a;
    mlt__api_answer_init(&a);
    mlt_err err = status < 0 ? mlt__api_resume_run(&r, run_id)
                             : mlt__api_update_run(&r, run_id, (mlt_run_status)status, end_time_ms);
    if (err == MLT_OK) {
        err = mlt__client_call(c, &r, true, deadline_ns, &a);
        if (err != MLT_OK) {
            mlt__fail(err, "%s", a.msg);
        }
    }
    mlt__api_answer_free(&a);
    mlt__api_req_free(&r);
    return err;
}

mlt_err mlt__client_end_run(mlt__client *c, const char *run_id, mlt_run_status status,
                            int64_t end_time_ms, int64_t deadline_ns)
{
    return update_run(c, run_id, (int)status, end_time_ms, deadline_ns);
}

mlt_err mlt__client_resume_run(mlt__client *c, const char *run_id, int64_t deadline_ns)
{
    return update_run(c, run_id, -1, -1, deadline_ns);
}

mlt_err mlt__client_last_step(mlt__client *c, const char *experiment_id, const char *run_key,
                              const char *metric_key, int64_t *step)
{
    char *run_id = NULL;
    mlt_err err = mlt__client_find_run(c, experiment_id, run_key, &run_id);
    if (err != MLT_OK) {
        return err;
    }
    mlt__api_req r;
    mlt__api_req_init(&r);
    mlt__api_answer a;
    mlt__api_answer_init(&a);
    err = mlt__api_get_run(&r, run_id);
    if (err == MLT_OK) {
        err = mlt__client_call(c, &r, true, -1, &a);
        if (err != MLT_OK) {
            mlt__fail(err, "%s", a.msg);
        }
    } else {
        mlt__fail(err, "run id %s is too long for a URL", run_id);
    }
    if (err == MLT_OK) {
        /* run.data.metrics: the latest point of each key, the one of the largest step */
        const cJSON *data = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(a.json, "run"), "data");
        const cJSON *m, *metrics = cJSON_GetObjectItemCaseSensitive(data, "metrics");
        err = mlt__fail(MLT_ERR_NOT_FOUND, "run %s has no metric %s", run_key, metric_key);
        cJSON_ArrayForEach(m, metrics)
        {
            const cJSON *k = cJSON_GetObjectItemCaseSensitive(m, "key");
            const cJSON *st = cJSON_GetObjectItemCaseSensitive(m, "step");
            if (cJSON_IsString(k) && strcmp(k->valuestring, metric_key) == 0) {
                *step = cJSON_IsNumber(st)   ? (int64_t)st->valuedouble
                        : cJSON_IsString(st) ? strtoll(st->valuestring, NULL, 10)
                                             : 0; /* absent: step 0, as MLflow reads it */
                err = MLT_OK;
            }
        }
    }
    mlt__api_answer_free(&a);
    mlt__api_req_free(&r);
    free(run_id);
    return err;
}

/* ---- artifacts ---- */

#define PROXY_SCHEME "mlflow-artifacts:"

mlt_err mlt__client_artifact_root(mlt__client *c, const char *run_id, char **out_root)
{
    mlt__api_req r;
    mlt__api_req_init(&r);
    mlt_err err = mlt__api_get_run(&r, run_id);
    if (err != MLT_OK) {
        mlt__api_req_free(&r);
        return mlt__fail(err, "run id %s is too long for a URL", run_id);
    }
    mlt__api_answer a;
    mlt__api_answer_init(&a);
    err = mlt__client_call(c, &r, true, -1, &a);
    mlt__api_req_free(&r);
    if (err != MLT_OK) {
        err = mlt__fail(err, "%s", a.msg);
        mlt__api_answer_free(&a);
        return err;
    }
    const char *uri = mlt__api_json_str(a.json, "run.info.artifact_uri");
    if (!uri) {
        err = mlt__fail(MLT_ERR_PROTOCOL, "get run %s: the answer has no artifact_uri", run_id);
    } else if (strncmp(uri, PROXY_SCHEME, sizeof PROXY_SCHEME - 1) != 0) {
        err = mlt__fail(MLT_ERR_REJECTED,
                        "run %s keeps its artifacts at %s, which the tracking server does not "
                        "serve: start `mlflow server` with --serve-artifacts (its default; not "
                        "--no-serve-artifacts) and an --artifacts-destination, so that new runs "
                        "get an mlflow-artifacts: URI",
                        run_id, uri);
    } else {
        /* mlflow-artifacts:/<path> or mlflow-artifacts://<host>/<path>: the path, under this
         * tracking server's proxy */
        const char *p = uri + sizeof PROXY_SCHEME - 1;
        if (p[0] == '/' && p[1] == '/') {
            p = strchr(p + 2, '/');
        }
        *out_root = mlt__strdup(p ? p : "");
        err = *out_root ? MLT_OK : mlt__fail(MLT_ERR_NOMEM, "out of memory");
    }
    mlt__api_answer_free(&a);
    return err;
}

mlt_err mlt__client_put_artifact(mlt__client *c, const char *root, const char *path, int fd,
                                 uint64_t len, int64_t deadline_ns,
                                 void (*sent)(void *ud, uint64_t bytes), void *sent_ud)
{
    bool used;
    mlt_err err =
        mlt__client_put_multipart(c, root, path, fd, len, deadline_ns, sent, sent_ud, &used);
    if (used || err != MLT_OK) {
        return err;
    }
    mlt__http_upload up = {.fd = fd, .len = len, .sent = sent, .sent_ud = sent_ud};
    mlt__api_req r;
    mlt__api_req_init(&r);
    err = mlt__api_put_artifact(&r, root, path, &up);
    if (err != MLT_OK) {
        mlt__api_req_free(&r);
        return mlt__fail(err, "artifact path %s is too long for a URL", path);
    }
    mlt__api_answer a;
    mlt__api_answer_init(&a);
    /* the same bytes to the same path: safe to send again after any failure */
    err = mlt__client_call(c, &r, true, deadline_ns, &a);
    mlt__api_req_free(&r);
    if (err != MLT_OK) {
        err = mlt__fail(err, "%s", a.msg);
    }
    mlt__api_answer_free(&a);
    return err;
}
