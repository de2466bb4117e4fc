/*
 * mlflow_api.c - the MLflow REST mapping without I/O: request paths and bodies (written with the
 * library's JSON writer, so NaN/Inf and int64 are exact), log-batch packing to the server's
 * limits, and classification of answers by error_code first, HTTP status second.
 */
#include "config.h"

#include "mlflow_api.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define API_PREFIX "/api/2.0/mlflow/"
#define ARTIFACTS_PREFIX "/api/2.0/mlflow-artifacts/"

void mlt__api_req_init(mlt__api_req *r)
{
    memset(r, 0, sizeof *r);
    mlt__buf_init(&r->body);
}

void mlt__api_req_free(mlt__api_req *r)
{
    mlt__buf_free(&r->body);
}

char *mlt__api_url(const char *tracking_uri, const mlt__api_req *r)
{
    if (r->url) {
        return mlt__strdup(r->url);
    }
    return mlt__aprintf("%s%s%s", tracking_uri,
                        r->prefix      ? r->prefix
                        : r->artifacts ? ARTIFACTS_PREFIX
                                       : API_PREFIX,
                        r->path);
}

static MLT__MUST_USE mlt_err finish(mlt__api_req *r)
{
    return r->body.oom ? MLT_ERR_NOMEM : MLT_OK;
}

/* Percent-encodes s into out (RFC 3986 unreserved characters stay; with keep_slash, '/' too:
 * a path). */
static bool url_encode_as(char *out, size_t len, const char *s, bool keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (isalnum(*p) || *p == '-' || *p == '_' || *p == '.' || *p == '~' ||
            (keep_slash && *p == '/')) {
            if (o + 1 >= len) {
                return false;
            }
            out[o++] = (char)*p;
        } else {
            if (o + 3 >= len) {
                return false;
            }
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    out[o] = '\0';
    return true;
}

static bool url_encode(char *out, size_t len, const char *s)
{
    return url_encode_as(out, len, s, false);
}

mlt_err mlt__api_get_experiment_by_name(mlt__api_req *r, const char *name)
{
    char enc[256 * 4 * 3 + 1]; /* 256 code points of up to 4 bytes, each %XX */
    static const char pre[] = "experiments/get-by-name?experiment_name=";
    r->method = "GET";
    r->what = "get experiment by name";
    if (!url_encode(enc, sizeof enc, name)) {
        return MLT_ERR_VALUE_TOO_LONG;
    }
    int n = snprintf(r->path, sizeof r->path, "%s%s", pre, enc);
    return n < 0 || (size_t)n >= sizeof r->path ? MLT_ERR_VALUE_TOO_LONG : MLT_OK;
}

/* Appends "key":"value" preceded by a comma. */
static void member_str(mlt__buf *b, const char *key, const char *value)
{
    mlt__buf_putc(b, ',');
    mlt__json_str(b, key);
    mlt__buf_putc(b, ':');
    mlt__json_str(b, value);
}

static void member_i64(mlt__buf *b, const char *key, int64_t value)
{
    mlt__buf_putc(b, ',');
    mlt__json_str(b, key);
    mlt__buf_putc(b, ':');
    mlt__json_i64(b, value);
}

mlt_err mlt__api_create_experiment(mlt__api_req *r, const char *name)
{
    r->method = "POST";
    r->what = "create experiment";
    snprintf(r->path, sizeof r->path, "experiments/create");
    mlt__buf_puts(&r->body, "{\"name\":");
    mlt__json_str(&r->body, name);
    mlt__buf_putc(&r->body, '}');
    return finish(r);
}

static void kv_object(mlt__buf *b, const mlt__kv *kv)
{
    mlt__buf_puts(b, "{\"key\":");
    mlt__json_str(b, kv->key);
    mlt__buf_puts(b, ",\"value\":");
    mlt__json_str(b, kv->value);
    mlt__buf_putc(b, '}');
}

mlt_err mlt__api_create_run(mlt__api_req *r, const char *experiment_id, const char *run_name,
                            int64_t start_time_ms, const mlt__kv *tags, size_t n_tags)
{
    r->method = "POST";
    r->what = "create run";
    r->not_idempotent = true;
    snprintf(r->path, sizeof r->path, "runs/create");
    mlt__buf *b = &r->body;
    mlt__buf_puts(b, "{\"experiment_id\":");
    mlt__json_str(b, experiment_id);
    if (run_name) {
        member_str(b, "run_name", run_name);
    }
    for (size_t i = 0; i < n_tags; i++) {
        if (strcmp(tags[i].key, "mlflow.user") == 0) {
            member_str(b, "user_id", tags[i].value); /* what the Python client sends too */
        }
    }
    member_i64(b, "start_time", start_time_ms);
    mlt__buf_puts(b, ",\"tags\":[");
    for (size_t i = 0; i < n_tags; i++) {
        if (i) {
            mlt__buf_putc(b, ',');
        }
        kv_object(b, &tags[i]);
    }
    mlt__buf_puts(b, "]}");
    return finish(r);
}

mlt_err mlt__api_search_run_by_key(mlt__api_req *r, const char *experiment_id, const char *run_key)
{
    /* The key is a UUID made by the library, or a run_key option (letters, digits, '_', '-'):
     * no quote can break the filter. */
    size_t n = 0;
    for (const char *p = run_key; *p; p++, n++) {
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_') {
            return MLT_ERR_INVALID_ARG;
        }
    }
    if (n == 0 || n > 64) {
        return MLT_ERR_INVALID_ARG;
    }
    r->method = "POST";
    r->what = "search run by client key";
    snprintf(r->path, sizeof r->path, "runs/search");
    mlt__buf *b = &r->body;
    mlt__buf_puts(b, "{\"experiment_ids\":[");
    mlt__json_str(b, experiment_id);
    mlt__buf_puts(b, "],\"filter\":");
    char filter[128]; /* fits: the key is at most 64 characters */
    snprintf(filter, sizeof filter, "tags.\"mltrack.client_run_key\" = '%.64s'", run_key);
    mlt__json_str(b, filter);
    mlt__buf_puts(b, ",\"run_view_type\":\"ALL\",\"max_results\":10}");
    return finish(r);
}

/* runs/update with status, and end_time when has_end */
static MLT__MUST_USE mlt_err update_body(mlt__api_req *r, const char *what, const char *run_id,
                                         const char *status, bool has_end, int64_t end_time_ms)
{
    r->method = "POST";
    r->what = what;
    snprintf(r->path, sizeof r->path, "runs/update");
    mlt__buf *b = &r->body;
    mlt__buf_puts(b, "{\"run_id\":");
    mlt__json_str(b, run_id);
    member_str(b, "status", status);
    if (has_end) {
        member_i64(b, "end_time", end_time_ms);
    }
    mlt__buf_putc(b, '}');
    return finish(r);
}

mlt_err mlt__api_update_run(mlt__api_req *r, const char *run_id, mlt_run_status status,
                            int64_t end_time_ms)
{
    return update_body(r, "update run", run_id, mlt_run_status_name(status), true, end_time_ms);
}

mlt_err mlt__api_resume_run(mlt__api_req *r, const char *run_id)
{
    return update_body(r, "resume run", run_id, "RUNNING", false, 0);
}

mlt_err mlt__api_get_run(mlt__api_req *r, const char *run_id)
{
    char enc[128 * 3 + 1];
    r->method = "GET";
    r->what = "get run";
    if (!url_encode(enc, sizeof enc, run_id)) {
        return MLT_ERR_VALUE_TOO_LONG;
    }
    int n = snprintf(r->path, sizeof r->path, "runs/get?run_id=%s", enc);
    return n < 0 || (size_t)n >= sizeof r->path ? MLT_ERR_VALUE_TOO_LONG : MLT_OK;
}

/* "<prefix><root>[/<rest>]" into r->path, root and rest percent-encoded but for '/'. */
static MLT__MUST_USE mlt_err artifact_path(mlt__api_req *r, const char *prefix, const char *root,
                                           const char *rest)
{
    char enc_root[512], enc_rest[sizeof r->path];
    r->artifacts = true;
    while (*root == '/') {
        root++;
    }
    if (!url_encode_as(enc_root, sizeof enc_root, root, true) ||
        !url_encode_as(enc_rest, sizeof enc_rest, rest ? rest : "", true)) {
        return MLT_ERR_VALUE_TOO_LONG;
    }
    size_t rl = strlen(enc_root);
    while (rl && enc_root[rl - 1] == '/') {
        enc_root[--rl] = '\0';
    }
    int n = snprintf(r->path, sizeof r->path, "%s%s%s%s", prefix, enc_root, enc_rest[0] ? "/" : "",
                     enc_rest);
    return n < 0 || (size_t)n >= sizeof r->path ? MLT_ERR_VALUE_TOO_LONG : MLT_OK;
}

mlt_err mlt__api_put_artifact(mlt__api_req *r, const char *root, const char *path,
                              const mlt__http_upload *upload)
{
    r->method = "PUT";
    r->what = "upload artifact";
    r->upload = upload;
    return artifact_path(r, "artifacts/", root, path);
}

void mlt__api_server_info(mlt__api_req *r)
{
    r->method = "GET";
    r->what = "server info";
    r->prefix = "/api/3.0/mlflow/";
    snprintf(r->path, sizeof r->path, "server-info");
}

/* The start of a multipart call's body: {"path":name */
static MLT__MUST_USE mlt_err mpu_call(mlt__api_req *r, const char *op, const char *what,
                                      const char *root, const char *dir, const char *name)
{
    char prefix[32];
    snprintf(prefix, sizeof prefix, "mpu/%s/", op);
    r->method = "POST";
    r->what = what;
    mlt__buf_puts(&r->body, "{\"path\":");
    mlt__json_str(&r->body, name);
    return artifact_path(r, prefix, root, dir);
}

mlt_err mlt__api_mpu_create(mlt__api_req *r, const char *root, const char *dir, const char *name,
                            uint32_t num_parts)
{
    mlt_err err = mpu_call(r, "create", "create multipart upload", root, dir, name);
    mlt__buf_puts(&r->body, ",\"num_parts\":");
    mlt__json_i64(&r->body, num_parts);
    mlt__buf_puts(&r->body, "}");
    return err ? err : finish(r);
}

mlt_err mlt__api_mpu_complete(mlt__api_req *r, const char *root, const char *dir, const char *name,
                              const char *upload_id, const mlt__mpu_part *parts, size_t n)
{
    mlt_err err = mpu_call(r, "complete", "complete multipart upload", root, dir, name);
    mlt__buf_puts(&r->body, ",\"upload_id\":");
    mlt__json_str(&r->body, upload_id);
    mlt__buf_puts(&r->body, ",\"parts\":[");
    for (size_t i = 0; i < n; i++) {
        mlt__buf_puts(&r->body, i ? ",{\"part_number\":" : "{\"part_number\":");
        mlt__json_i64(&r->body, parts[i].number);
        mlt__buf_puts(&r->body, ",\"etag\":");
        mlt__json_str(&r->body, parts[i].etag);
        mlt__buf_puts(&r->body, ",\"url\":");
        mlt__json_str(&r->body, parts[i].url);
        mlt__buf_puts(&r->body, "}");
    }
    mlt__buf_puts(&r->body, "]}");
    return err ? err : finish(r);
}

mlt_err mlt__api_mpu_abort(mlt__api_req *r, const char *root, const char *dir, const char *name,
                           const char *upload_id)
{
    mlt_err err = mpu_call(r, "abort", "abort multipart upload", root, dir, name);
    mlt__buf_puts(&r->body, ",\"upload_id\":");
    mlt__json_str(&r->body, upload_id);
    mlt__buf_puts(&r->body, "}");
    return err ? err : finish(r);
}

void mlt__api_put_part(mlt__api_req *r, const char *url, const char *const *headers,
                       const mlt__http_upload *upload)
{
    r->method = "PUT";
    r->what = "upload part";
    r->url = url;
    r->headers = headers;
    r->upload = upload;
}

static void metric_object(mlt__buf *b, const mlt__metric *m)
{
    mlt__buf_puts(b, "{\"key\":");
    mlt__json_str(b, m->key);
    mlt__buf_puts(b, ",\"value\":");
    mlt__json_double(b, m->value);
    mlt__buf_puts(b, ",\"timestamp\":");
    mlt__json_i64(b, m->timestamp_ms);
    mlt__buf_puts(b, ",\"step\":");
    mlt__json_i64(b, m->step);
    mlt__buf_putc(b, '}');
}

/*
 * Appends up to max entities of one array to part while the body stays within budget bytes.
 * Returns how many were taken; *used grows by the bytes added.
 */
static size_t pack(mlt__buf *part, const void *items, size_t n, size_t max, bool is_metric,
                   size_t *used, size_t budget)
{
    size_t taken = 0;
    mlt__buf one;
    mlt__buf_init(&one);
    for (; taken < n && taken < max; taken++) {
        mlt__buf_reset(&one);
        if (is_metric) {
            metric_object(&one, (const mlt__metric *)items + taken);
        } else {
            kv_object(&one, (const mlt__kv *)items + taken);
        }
        size_t add = one.len + (part->len ? 1 : 0);
        if (one.oom || *used + add > budget) {
            break;
        }
        if (part->len) {
            mlt__buf_putc(part, ',');
        }
        mlt__buf_append(part, one.data, one.len);
        *used += add;
    }
    mlt__buf_free(&one);
    return taken;
}

mlt_err mlt__api_log_batch(mlt__api_req *r, const char *run_id, const mlt__batch *in,
                           size_t max_bytes, mlt__batch *took)
{
    r->method = "POST";
    r->what = "log batch";
    snprintf(r->path, sizeof r->path, "runs/log-batch");
    memset(took, 0, sizeof *took);

    mlt__buf head;
    mlt__buf_init(&head);
    mlt__buf_puts(&head, "{\"run_id\":");
    mlt__json_str(&head, run_id);
    static const char arrays[] = ",\"params\":[],\"tags\":[],\"metrics\":[]}";
    size_t used = head.len + sizeof arrays - 1;
    if (head.oom || used > max_bytes) {
        mlt__buf_free(&head);
        return head.oom ? MLT_ERR_NOMEM : MLT_ERR_VALUE_TOO_LONG;
    }
    mlt__buf params, tags, metrics;
    mlt__buf_init(&params);
    mlt__buf_init(&tags);
    mlt__buf_init(&metrics);
    size_t left = MLT__BATCH_MAX_ENTITIES;
    took->n_params =
        pack(&params, in->params, in->n_params,
             left < MLT__BATCH_MAX_PARAMS ? left : MLT__BATCH_MAX_PARAMS, false, &used, max_bytes);
    left -= took->n_params;
    took->n_tags =
        pack(&tags, in->tags, in->n_tags, left < MLT__BATCH_MAX_TAGS ? left : MLT__BATCH_MAX_TAGS,
             false, &used, max_bytes);
    left -= took->n_tags;
    took->n_metrics =
        pack(&metrics, in->metrics, in->n_metrics,
             left < MLT__BATCH_MAX_METRICS ? left : MLT__BATCH_MAX_METRICS, true, &used, max_bytes);
    took->params = in->params;
    took->tags = in->tags;
    took->metrics = in->metrics;

    mlt__buf *b = &r->body;
    mlt__buf_append(b, head.data, head.len);
    mlt__buf_puts(b, ",\"params\":[");
    mlt__buf_append(b, params.data, params.len);
    mlt__buf_puts(b, "],\"tags\":[");
    mlt__buf_append(b, tags.data, tags.len);
    mlt__buf_puts(b, "],\"metrics\":[");
    mlt__buf_append(b, metrics.data, metrics.len);
    mlt__buf_puts(b, "]}");
    bool oom = params.oom || tags.oom || metrics.oom;
    mlt__buf_free(&head);
    mlt__buf_free(&params);
    mlt__buf_free(&tags);
    mlt__buf_free(&metrics);
    if (oom) {
        return MLT_ERR_NOMEM;
    }
    size_t n_in = in->n_params + in->n_tags + in->n_metrics;
    if (n_in > 0 && took->n_params + took->n_tags + took->n_metrics == 0) {
        return MLT_ERR_VALUE_TOO_LONG;
    }
    return finish(r);
}

/* ---- answers ---- */

void mlt__api_answer_init(mlt__api_answer *a)
{
    memset(a, 0, sizeof *a);
    a->retry_after_s = -1;
}

void mlt__api_answer_free(mlt__api_answer *a)
{
    cJSON_Delete(a->json);
    a->json = NULL;
}

/* The first bytes of a non-JSON body, on one line, for messages; a UTF-8 character the cut
 * falls into, or left incomplete before it, is left out (messages go into dead.jsonl, which stays
 * UTF-8). */
static void snippet(char *out, size_t len, const char *body, size_t body_len)
{
    size_t o = 0;
    for (; o < body_len && o + 1 < len && o < 200; o++) {
        unsigned char c = (unsigned char)body[o];
        out[o] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
    }
    out[mlt__utf8_cut(body, body_len, o)] = '\0';
}

static MLT__MUST_USE mlt_err err_for_code(const char *code, long status, bool *retriable,
                                          bool *ambiguous)
{
    static const struct {
        const char *code;
        mlt_err err;
        bool retriable, ambiguous;
    } codes[] = {
        {"TEMPORARILY_UNAVAILABLE", MLT_ERR_SERVER, true, true},
        {"INTERNAL_ERROR", MLT_ERR_SERVER, true, true},
        {"INVALID_STATE", MLT_ERR_SERVER, true, true},
        {"REQUEST_LIMIT_EXCEEDED", MLT_ERR_RATE_LIMITED, true, false},
        {"RESOURCE_EXHAUSTED", MLT_ERR_RATE_LIMITED, true, false},
        {"RESOURCE_DOES_NOT_EXIST", MLT_ERR_NOT_FOUND, false, false},
        {"PERMISSION_DENIED", MLT_ERR_AUTH, false, false},
        {"UNAUTHENTICATED", MLT_ERR_AUTH, false, false},
        {"INVALID_PARAMETER_VALUE", MLT_ERR_REJECTED, false, false},
        {"RESOURCE_ALREADY_EXISTS", MLT_ERR_REJECTED, false, false},
        {"BAD_REQUEST", MLT_ERR_REJECTED, false, false},
    };
    *retriable = false;
    *ambiguous = false;
    /* The HTTP status decides for the retriable families whatever the code says. */
    if (status == 408) {
        *retriable = *ambiguous = true;
        return MLT_ERR_TIMEOUT;
    }
    if (status == 429) {
        *retriable = true;
        return MLT_ERR_RATE_LIMITED;
    }
    if (status == 501) {
        return MLT_ERR_REJECTED; /* not implemented: asking again does not help */
    }
    if (status >= 500) {
        *retriable = *ambiguous = true;
        return MLT_ERR_SERVER;
    }
    for (size_t i = 0; code && i < sizeof codes / sizeof codes[0]; i++) {
        if (strcmp(code, codes[i].code) == 0) {
            *retriable = codes[i].retriable;
            *ambiguous = codes[i].ambiguous;
            return codes[i].err;
        }
    }
    if (status == 401 || status == 403) {
        return MLT_ERR_AUTH;
    }
    if (status == 404) {
        return MLT_ERR_NOT_FOUND;
    }
    if (status >= 400 && status < 500) {
        return MLT_ERR_REJECTED;
    }
    return MLT_ERR_PROTOCOL;
}

void mlt__api_classify(const mlt__api_req *r, const mlt__http_response *resp, mlt__api_answer *a)
{
    a->status = resp->status;
    a->retry_after_s = resp->retry_after_s;
    snprintf(a->etag, sizeof a->etag, "%s", resp->etag);
    if (resp->net_err != MLT_OK) {
        a->err = resp->net_err;
        a->retriable = resp->net_err == MLT_ERR_NETWORK || resp->net_err == MLT_ERR_TIMEOUT;
        a->ambiguous = resp->maybe_sent;
        snprintf(a->msg, sizeof a->msg, "%s: %s", r->what, resp->errmsg);
        return;
    }
    if (r->upload && resp->status >= 200 && resp->status < 300) {
        /* an upload's answer has no body, or {}: anything else is not the MLflow server's (a
         * proxy's page), so the upload is not taken as done */
        cJSON *j = resp->body.len ? cJSON_ParseWithLength(resp->body.data, resp->body.len) : NULL;
        bool mlflow = resp->body.len == 0 || cJSON_IsObject(j);
        cJSON_Delete(j);
        if (mlflow && r->url && !resp->etag[0]) {
            /* a part is named by its ETag when the upload completes */
            a->err = MLT_ERR_PROTOCOL;
            a->retriable = true;
            snprintf(a->msg, sizeof a->msg, "%s: HTTP %ld without an ETag", r->what, resp->status);
            return;
        }
        if (mlflow) {
            a->err = MLT_OK;
            return;
        }
    }
    cJSON *json = cJSON_ParseWithLength(resp->body.data ? resp->body.data : "", resp->body.len);
    if (resp->status >= 200 && resp->status < 300) {
        if (!json || !cJSON_IsObject(json)) {
            char snip[256];
            snippet(snip, sizeof snip, resp->body.data, resp->body.len);
            cJSON_Delete(json);
            a->err = MLT_ERR_PROTOCOL;
            a->ambiguous = true;
            a->retriable = true; /* a garbled answer is a fault on the way, not a verdict */
            snprintf(a->msg, sizeof a->msg, "%s: HTTP %ld with an answer that is not JSON: '%s'",
                     r->what, resp->status, snip);
            return;
        }
        a->err = MLT_OK;
        a->json = json;
        return;
    }
    const char *code = NULL, *message = NULL;
    if (json && cJSON_IsObject(json)) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(json, "error_code");
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(json, "message");
        code = cJSON_IsString(c) ? c->valuestring : NULL;
        message = cJSON_IsString(m) ? m->valuestring : NULL;
    }
    a->err = err_for_code(code, resp->status, &a->retriable, &a->ambiguous);
    snprintf(a->error_code, sizeof a->error_code, "%s", code ? code : "");
    if (code) {
        snprintf(a->msg, sizeof a->msg, "%s: HTTP %ld %s: %s", r->what, resp->status, code,
                 message ? message : "(no message)");
    } else {
        char snip[256];
        snippet(snip, sizeof snip, resp->body.data, resp->body.len);
        snprintf(a->msg, sizeof a->msg, "%s: HTTP %ld%s (not an MLflow answer: '%s')", r->what,
                 resp->status,
                 (resp->status == 404 || resp->status == 405) && !r->url
                     ? ", is the tracking URI right?"
                     : "",
                 snip);
        if (resp->status == 404 || resp->status == 405) {
            a->err = MLT_ERR_PROTOCOL;
        }
    }
    cJSON_Delete(json);
}

const char *mlt__api_json_str(const cJSON *json, const char *path)
{
    char part[64];
    const cJSON *node = json;
    while (node && *path) {
        const char *dot = strchr(path, '.');
        size_t n = dot ? (size_t)(dot - path) : strlen(path);
        if (n >= sizeof part) {
            return NULL;
        }
        memcpy(part, path, n);
        part[n] = '\0';
        node = cJSON_GetObjectItemCaseSensitive(node, part);
        path += n + (dot ? 1 : 0);
    }
    return node && cJSON_IsString(node) ? node->valuestring : NULL;
}
