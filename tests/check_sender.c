/*
 * check_sender.c - unit tests of src/sender.c and src/deliver.c: mlt__sender_drain over journals
 * written here, against a scripted MLflow put in place of libcurl (mlt__sender_new_with): it
 * records every request (method, path, body) and answers like MLflow, with failures on demand.
 * No socket is opened. Checks the exact requests, the acks, the run map, and the bisection of a
 * rejected batch into dead letters.
 */
#include "testutil.h"

#include "common.h"
#include "digest.h"
#include "http.h"
#include "journal.h"
#include "options.h"
#include "record.h"
#include "requeue.h"
#include "sender.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- a scripted MLflow, as the sender's transport ------------------------------------------- */

#define MAX_REQS 512
#define MAX_ACCEPTED 4096

typedef struct req {
    char method[8];
    char path[512];
    char *body;
} req;

typedef struct server {
    atomic_bool *abort;      /* the sender's stop flag (set_abort) */
    atomic_bool interrupted; /* interrupt() was called: the request in flight ends */
    pthread_mutex_t mu;
    req reqs[MAX_REQS];
    size_t n_reqs;
    /* what the server took: "metric:<key>", "param:<key>", "tag:<key>=<value>" per entity of
     * every log batch answered 200 */
    char *accepted[MAX_ACCEPTED];
    size_t n_accepted;
    size_t n_log_batches;
    int next_run;
    /* behaviour */
    const char *poison;       /* a log batch holding an entity with this key: HTTP 400 */
    size_t fail_log_batch_at; /* this log batch (1-based) answers 503 once; 0: none */
    long log_batch_status;    /* every log batch answers this (with log_batch_body); 0: no */
    const char *log_batch_body;
    long create_status;  /* runs/create answers this (with create_body); 0: normally */
    int create_refusals; /* with create_status: only the first N runs/create (0: all) */
    int n_creates;
    int create_failures; /* the first runs/create calls answer 503 */
    const char *create_body;
    const char *search_body;  /* runs/search answer; NULL: the runs it created with the key */
    char created_keys[8][64]; /* the mltrack.client_run_key of each run it created (run-N: N-1) */
    long search_status;       /* runs/search answers this (with search_body); 0: 200 */
    long all_status;          /* every request answers this; 0: no */
    int delay_ms;             /* each answer waits this long first */
    /* artifacts: runs/get answers artifact_uri (NULL: the proxy's "mlflow-artifacts:/7/<run
     * id>/artifacts"); a PUT under the proxy answers put_status (0: 200) for put_refusals
     * (0: all), and what a 200 took is "artifact:<path>=<sha256 of the bytes>" */
    const char *artifact_uri;
    long put_status;
    int put_refusals;
    int n_puts;
} server;

static void add_accepted(server *s, const char *what)
{
    if (s->n_accepted < MAX_ACCEPTED) {
        s->accepted[s->n_accepted++] = strdup(what);
    }
}

static void accept_batch(server *s, const cJSON *body)
{
    static const char *const arrays[] = {"metrics", "params", "tags"};
    for (size_t a = 0; a < 3; a++) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(body, arrays[a]);
        const cJSON *e;
        cJSON_ArrayForEach(e, arr)
        {
            const cJSON *k = cJSON_GetObjectItemCaseSensitive(e, "key");
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, "value");
            char line[512];
            if (a == 2) {
                snprintf(line, sizeof line, "tag:%s=%s", cJSON_IsString(k) ? k->valuestring : "?",
                         cJSON_IsString(v) ? v->valuestring : "?");
            } else {
                snprintf(line, sizeof line, "%s:%s", a == 0 ? "metric" : "param",
                         cJSON_IsString(k) ? k->valuestring : "?");
            }
            add_accepted(s, line);
        }
    }
}

static bool batch_has_key(const cJSON *body, const char *key)
{
    static const char *const arrays[] = {"metrics", "params", "tags"};
    for (size_t a = 0; a < 3; a++) {
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(body, arrays[a]))
        {
            const cJSON *k = cJSON_GetObjectItemCaseSensitive(e, "key");
            if (cJSON_IsString(k) && strcmp(k->valuestring, key) == 0) {
                return true;
            }
        }
    }
    return false;
}

static const char *const E400 =
    "{\"error_code\":\"INVALID_PARAMETER_VALUE\",\"message\":\"bad entity\"}";
static const char *const E503 =
    "{\"error_code\":\"TEMPORARILY_UNAVAILABLE\",\"message\":\"try later\"}";

static const char *tag_of(const cJSON *o, const char *key);

/* Decides the answer to one request (server thread, under s->mu); up: a PUT's body. */
static long answer(server *s, const char *method, const char *path, const char *body,
                   const mlt__http_upload *up, mlt__buf *out)
{
    if (s->all_status) {
        mlt__buf_puts(out, E503);
        return s->all_status;
    }
    static const char get_run[] = "/api/2.0/mlflow/runs/get?run_id=";
    if (strcmp(method, "GET") == 0 && strncmp(path, get_run, sizeof get_run - 1) == 0) {
        if (s->artifact_uri) {
            mlt__buf_printf(out, "{\"run\":{\"info\":{\"artifact_uri\":\"%s\"}}}", s->artifact_uri);
        } else {
            mlt__buf_printf(out,
                            "{\"run\":{\"info\":{\"artifact_uri\":\"mlflow-artifacts:/7/%s/"
                            "artifacts\"}}}",
                            path + sizeof get_run - 1);
        }
        return 200;
    }
    static const char put[] = "/api/2.0/mlflow-artifacts/artifacts/";
    if (strcmp(method, "PUT") == 0 && strncmp(path, put, sizeof put - 1) == 0 && up) {
        if (s->put_status && (s->put_refusals == 0 || s->n_puts++ < s->put_refusals)) {
            mlt__buf_puts(out, "{\"error_code\":\"PERMISSION_DENIED\",\"message\":\"no\"}");
            return s->put_status;
        }
        char sha[65];
        ck_assert_int_eq(mlt__sha256_fd(up->fd, 0, up->len, sha), MLT_OK);
        char line[1024];
        snprintf(line, sizeof line, "artifact:%s=%s", path + sizeof put - 1, sha);
        add_accepted(s, line);
        return 200; /* no body, as the MLflow server */
    }
    if (strcmp(method, "GET") == 0 &&
        strncmp(path, "/api/2.0/mlflow/experiments/get-by-name?", 40) == 0) {
        mlt__buf_puts(out, "{\"experiment\":{\"experiment_id\":\"7\",\"name\":\"exp\","
                           "\"lifecycle_stage\":\"active\"}}");
        return 200;
    }
    if (strcmp(path, "/api/2.0/mlflow/runs/create") == 0) {
        if (s->create_status && (s->create_refusals == 0 || s->n_creates++ < s->create_refusals)) {
            mlt__buf_puts(out, s->create_body);
            return s->create_status;
        }
        if (s->create_failures > 0) {
            s->create_failures--;
            mlt__buf_puts(out, E503);
            return 503;
        }
        mlt__buf_printf(out, "{\"run\":{\"info\":{\"run_id\":\"run-%d\",\"experiment_id\":\"7\"}}}",
                        ++s->next_run);
        cJSON *j = cJSON_Parse(body ? body : "");
        const char *key = j ? tag_of(j, "mltrack.client_run_key") : NULL;
        if (key && s->next_run <= 8) {
            snprintf(s->created_keys[s->next_run - 1], sizeof s->created_keys[0], "%s", key);
        }
        cJSON_Delete(j);
        return 200;
    }
    if (strcmp(path, "/api/2.0/mlflow/runs/search") == 0) {
        int found = 0;
        for (int i = 0; !s->search_body && body && i < s->next_run && i < 8; i++) {
            found = s->created_keys[i][0] && strstr(body, s->created_keys[i]) ? i + 1 : found;
        }
        if (found) {
            mlt__buf_printf(out, "{\"runs\":[{\"info\":{\"run_id\":\"run-%d\"}}]}", found);
            return 200;
        }
        mlt__buf_puts(out, s->search_body ? s->search_body : "{}");
        return s->search_status ? s->search_status : 200;
    }
    if (strcmp(path, "/api/2.0/mlflow/runs/update") == 0) {
        mlt__buf_puts(out, "{\"run_info\":{}}");
        return 200;
    }
    if (strcmp(path, "/api/2.0/mlflow/runs/log-batch") == 0) {
        s->n_log_batches++;
        if (s->log_batch_status) {
            mlt__buf_puts(out, s->log_batch_body);
            return s->log_batch_status;
        }
        if (s->fail_log_batch_at == s->n_log_batches) {
            mlt__buf_puts(out, E503);
            return 503;
        }
        cJSON *j = cJSON_Parse(body ? body : "");
        if (!j) {
            mlt__buf_puts(out, "{\"error_code\":\"BAD_REQUEST\",\"message\":\"not JSON\"}");
            return 400;
        }
        long st = 200;
        if (s->poison && batch_has_key(j, s->poison)) {
            mlt__buf_puts(out, E400);
            st = 400;
        } else {
            accept_batch(s, j);
            mlt__buf_puts(out, "{}");
        }
        cJSON_Delete(j);
        return st;
    }
    mlt__buf_puts(out, "{\"error_code\":\"ENDPOINT_NOT_FOUND\",\"message\":\"no\"}");
    return 404;
}

/* The path of an absolute URL ("http://host:port/path?query" -> "/path?query"). */
static const char *url_path(const char *url)
{
    const char *p = strstr(url, "://");
    p = strchr(p ? p + 3 : url, '/');
    return p ? p : "/";
}

static bool stopped(server *s)
{
    return atomic_load(&s->interrupted) || (s->abort && atomic_load(s->abort));
}

/* The transport's perform: one request, answered by answer() (sender thread). */
static void fake_perform(void *self, const mlt__http_request *rq, mlt__http_response *resp)
{
    server *s = self;
    const char *path = url_path(rq->url);
    pthread_mutex_lock(&s->mu);
    if (s->n_reqs < MAX_REQS) {
        req *r = &s->reqs[s->n_reqs++];
        snprintf(r->method, sizeof r->method, "%s", rq->method);
        snprintf(r->path, sizeof r->path, "%s", path);
        r->body = rq->body ? strndup(rq->body, rq->body_len) : NULL;
    }
    int delay_ms = s->delay_ms;
    pthread_mutex_unlock(&s->mu);
    for (int waited = 0; waited < delay_ms && !stopped(s); waited += 10) {
        usleep(10000);
    }
    if (stopped(s)) { /* as libcurl's transport cut at a deadline: sent, no answer */
        resp->net_err = MLT_ERR_TIMEOUT;
        resp->maybe_sent = true;
        snprintf(resp->errmsg, sizeof resp->errmsg,
                 "Operation was aborted by an application "
                 "callback");
        return;
    }
    char *body = rq->body ? strndup(rq->body, rq->body_len) : NULL;
    pthread_mutex_lock(&s->mu);
    resp->status = answer(s, rq->method, path, body, rq->upload, &resp->body);
    pthread_mutex_unlock(&s->mu);
    free(body);
}

static void fake_destroy(void *self)
{
    (void)self; /* the test owns the server: server_free */
}

static void fake_set_abort(void *self, atomic_bool *flag)
{
    server *s = self; /* a new sender on this server */
    s->abort = flag;
    atomic_store(&s->interrupted, false);
}

static void fake_interrupt(void *self)
{
    atomic_store(&((server *)self)->interrupted, true);
}

static server *server_new(void)
{
    server *s = calloc(1, sizeof *s);
    ck_assert_ptr_nonnull(s);
    atomic_init(&s->interrupted, false);
    pthread_mutex_init(&s->mu, NULL);
    return s;
}

static mlt__transport server_transport(server *s)
{
    return (mlt__transport){.perform = fake_perform,
                            .destroy = fake_destroy,
                            .set_abort = fake_set_abort,
                            .interrupt = fake_interrupt,
                            .self = s};
}

static void server_free(server *s)
{
    for (size_t i = 0; i < s->n_reqs; i++) {
        free(s->reqs[i].body);
    }
    for (size_t i = 0; i < s->n_accepted; i++) {
        free(s->accepted[i]);
    }
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* How many times the server took entity what ("metric:loss"...). */
static size_t taken(server *s, const char *what)
{
    size_t n = 0;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->n_accepted; i++) {
        n += strcmp(s->accepted[i], what) == 0;
    }
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* How many things the server took start with prefix. */
static size_t taken_prefix(server *s, const char *prefix)
{
    size_t n = 0;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->n_accepted; i++) {
        n += strncmp(s->accepted[i], prefix, strlen(prefix)) == 0;
    }
    pthread_mutex_unlock(&s->mu);
    return n;
}

static void dump_reqs(server *s)
{
    for (size_t i = 0; i < s->n_reqs; i++) {
        fprintf(stderr, "  %zu: %s %s %s\n", i, s->reqs[i].method, s->reqs[i].path,
                s->reqs[i].body ? s->reqs[i].body : "");
    }
}

/* Request i is method path (path after /api/2.0/mlflow/); returns its body parsed (caller
 * deletes; NULL for a GET). */
static cJSON *expect_req(server *s, size_t i, const char *method, const char *path)
{
    if (i >= s->n_reqs) {
        dump_reqs(s);
    }
    ck_assert_msg(i < s->n_reqs, "request %zu missing (%zu made)", i, s->n_reqs);
    char want[600];
    snprintf(want, sizeof want, "/api/2.0/mlflow/%s", path);
    if (strcmp(s->reqs[i].method, method) || strcmp(s->reqs[i].path, want)) {
        dump_reqs(s);
    }
    ck_assert_str_eq(s->reqs[i].method, method);
    ck_assert_str_eq(s->reqs[i].path, want);
    if (!s->reqs[i].body) {
        return NULL;
    }
    cJSON *j = cJSON_Parse(s->reqs[i].body);
    ck_assert_msg(j != NULL, "request %zu body is not JSON: %s", i, s->reqs[i].body);
    return j;
}

static int jlen(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsArray(v) ? cJSON_GetArraySize(v) : -1;
}

/* The value of tag key in the array "tags" of o, NULL if absent. */
static const char *tag_of(const cJSON *o, const char *key)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(o, "tags"))
    {
        if (strcmp(mlt_test_jstr(e, "key"), key) == 0) {
            return mlt_test_jstr(e, "value");
        }
    }
    return NULL;
}

/* ---- fixtures ------------------------------------------------------------------------------- */

#define DIR_LEN 512
#define K1 "11111111-2222-4333-8444-555555555555"
#define K2 "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"

typedef struct fixture {
    char tmp[DIR_LEN];
    char dir[DIR_LEN + 16];
    server *srv;
    mlt__journal *j;
    mlt__sender *s;
} fixture;

static bool dir_exists(const char *dir)
{
    struct stat st;
    return stat(dir, &st) == 0;
}

static void fixture_init(fixture *f)
{
    memset(f, 0, sizeof *f);
    mlt_test_tmpdir(f->tmp, sizeof f->tmp, "sender");
    snprintf(f->dir, sizeof f->dir, "%s/j-test", f->tmp);
    f->srv = server_new();
    char err[256] = "";
    ck_assert_int_eq(
        mlt__errbuf(err, sizeof err, mlt__journal_create(&f->j, f->dir, MLT__FSYNC_NONE)), MLT_OK);
}

/* The sender over the fixture's journal (handed over: f->j stays valid until sender_free). */
static void sender_new(fixture *f, bool adopted, int max_retries)
{
    mlt_options *o = mlt_options_new();
    ck_assert_ptr_nonnull(o);
    /* nothing is sent anywhere: the scripted server is the transport */
    ck_assert_int_eq(mlt_options_set_tracking_uri(o, "http://127.0.0.1:9"), MLT_OK);
    ck_assert_int_eq(mlt_options_set_retries(o, max_retries, 0.001, 0), MLT_OK);
    ck_assert_int_eq(mlt_options_set_timeout(o, 10), MLT_OK);
    ck_assert_int_eq(mlt_options_set(o, "queue_dir", f->tmp, NULL, 0), MLT_OK); /* looked at */
    char err[256] = "";
    mlt__transport tr = server_transport(f->srv);
    mlt_err e = mlt__errbuf(err, sizeof err, mlt__sender_new_with(&f->s, o, &tr));
    ck_assert_msg(e == MLT_OK, "sender: %s", err);
    mlt_options_free(o);
    ck_assert_int_eq(mlt__sender_add(f->s, f->j, adopted), MLT_OK);
}

static mlt_err drain(fixture *f, mlt__sync_progress *sum)
{
    char err[512] = "";
    memset(sum, 0, sizeof *sum);
    return mlt__errbuf(
        err, sizeof err,
        mlt__sender_drain(f->s, mlt__mono_ns() + 20 * 1000000000LL, NULL, NULL, sum));
}

/* A drain that gives up after the sender's retries (no deadline); its message in err. */
static mlt_err drain_tries(fixture *f, mlt__sync_progress *sum, char *err, size_t errlen)
{
    memset(sum, 0, sizeof *sum);
    return mlt__errbuf(err, errlen, mlt__sender_drain(f->s, -1, NULL, NULL, sum));
}

static void fixture_done(fixture *f)
{
    if (f->s) {
        mlt__sender_free(f->s, 1000); /* closes the journal */
    } else {
        mlt__journal_close(f->j, false);
    }
    server_free(f->srv);
    mlt_test_remove_tree(f->tmp);
}

static void put_create(mlt__journal *j, uint32_t run_no, const char *key, const char *exp_name)
{
    mlt__buf b;
    mlt__buf_init(&b);
    const char *tk[1] = {"team"}, *tv[1] = {"a"};
    mlt__rec_put_create(&b, run_no, key, "", "train", exp_name, "", 1000, tk, tv, 1, 0);
    ck_assert_int_eq(mlt__journal_append(j, MLT__REC_CREATE, b.data, b.len, NULL), MLT_OK);
    mlt__buf_free(&b);
}

static void put_resume(mlt__journal *j, uint32_t run_no, const char *key, int64_t start_ms)
{
    mlt__buf b;
    mlt__buf_init(&b);
    mlt__rec_put_create(&b, run_no, key, "", "train", "exp", "", start_ms, NULL, NULL, 0,
                        MLT__CREATE_RESUME);
    ck_assert_int_eq(mlt__journal_append(j, MLT__REC_CREATE, b.data, b.len, NULL), MLT_OK);
    mlt__buf_free(&b);
}

static void put_attach(mlt__journal *j, uint32_t run_no, const char *key, const char *run_id,
                       const char *exp_name)
{
    mlt__buf b;
    mlt__buf_init(&b);
    mlt__rec_put_attach(&b, run_no, key, run_id, exp_name, "", mlt__now_ms());
    ck_assert_int_eq(mlt__journal_append(j, MLT__REC_ATTACH, b.data, b.len, NULL), MLT_OK);
    mlt__buf_free(&b);
}

static void put_kv(mlt__journal *j, mlt__rec_type t, uint32_t run_no, const char *k, const char *v)
{
    mlt__buf b;
    mlt__buf_init(&b);
    mlt__rec_put_kv(&b, run_no, k, v);
    ck_assert_int_eq(mlt__journal_append(j, t, b.data, b.len, NULL), MLT_OK);
    mlt__buf_free(&b);
}

static void put_metric(mlt__journal *j, uint32_t run_no, const char *k, double v, int64_t ts,
                       int64_t step)
{
    mlt__buf b;
    mlt__buf_init(&b);
    mlt__rec_put_metric(&b, run_no, k, v, ts, step);
    ck_assert_int_eq(mlt__journal_append(j, MLT__REC_METRIC, b.data, b.len, NULL), MLT_OK);
    mlt__buf_free(&b);
}

static void put_end(mlt__journal *j, uint32_t run_no, int status, int64_t t)
{
    mlt__buf b;
    mlt__buf_init(&b);
    mlt__rec_put_end(&b, run_no, status, t);
    ck_assert_int_eq(mlt__journal_append(j, MLT__REC_END, b.data, b.len, NULL), MLT_OK);
    mlt__buf_free(&b);
}

/* The lines of the journal's dead.jsonl parsed (count in *n; caller deletes each, frees). */
static cJSON **dead_letters(const char *dir, size_t *n)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/dead.jsonl", dir);
    *n = 0;
    cJSON **out = calloc(256, sizeof *out);
    ck_assert_ptr_nonnull(out);
    FILE *fp = fopen(p, "r");
    if (!fp) {
        return out;
    }
    char line[8192];
    while (fgets(line, sizeof line, fp) && *n < 256) {
        out[*n] = cJSON_Parse(line);
        ck_assert_msg(out[*n] != NULL, "dead letter is not JSON: %s", line);
        (*n)++;
    }
    fclose(fp);
    return out;
}

static void free_letters(cJSON **l, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        cJSON_Delete(l[i]);
    }
    free(l);
}

/* ---- tests ---------------------------------------------------------------------------------- */

START_TEST(sender_drain_delivers_a_run_in_order)
{
    fixture f;
    fixture_init(&f);
    put_create(f.j, 1, K1, "exp");
    put_kv(f.j, MLT__REC_PARAM, 1, "lr", "0.1");
    put_metric(f.j, 1, "loss", 0.5, 1001, 0);
    put_kv(f.j, MLT__REC_TAG, 1, "phase", "warmup");
    put_metric(f.j, 1, "loss", 0.25, 1002, 1);
    put_kv(f.j, MLT__REC_TAG, 1, "phase", "train"); /* last write wins */
    put_end(f.j, 1, MLT_RUN_FINISHED, 2000);
    sender_new(&f, false, 3);
    mlt__sync_progress sum;
    ck_assert_int_eq(drain(&f, &sum), MLT_OK);

    server *s = f.srv;
    cJSON *b = expect_req(s, 0, "GET", "experiments/get-by-name?experiment_name=exp");
    ck_assert_ptr_null(b);
    b = expect_req(s, 1, "POST", "runs/create");
    ck_assert_str_eq(mlt_test_jstr(b, "experiment_id"), "7");
    ck_assert_str_eq(mlt_test_jstr(b, "run_name"), "train");
    ck_assert(mlt_test_jnum(b, "start_time") == 1000);
    ck_assert_str_eq(tag_of(b, "mltrack.client_run_key"), K1);
    ck_assert_str_eq(tag_of(b, "team"), "a");
    cJSON_Delete(b);
    b = expect_req(s, 2, "POST", "runs/log-batch");
    ck_assert_str_eq(mlt_test_jstr(b, "run_id"), "run-1");
    ck_assert_int_eq(jlen(b, "metrics"), 2);
    ck_assert_int_eq(jlen(b, "params"), 1);
    ck_assert_int_eq(jlen(b, "tags"), 1);
    const cJSON *m0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(b, "metrics"), 0);
    ck_assert_str_eq(mlt_test_jstr(m0, "key"), "loss");
    ck_assert(mlt_test_jnum(m0, "value") == 0.5);
    ck_assert(mlt_test_jnum(m0, "timestamp") == 1001);
    ck_assert(mlt_test_jnum(m0, "step") == 0);
    ck_assert_str_eq(tag_of(b, "phase"), "train");
    cJSON_Delete(b);
    b = expect_req(s, 3, "POST", "runs/update");
    ck_assert_str_eq(mlt_test_jstr(b, "run_id"), "run-1");
    ck_assert_str_eq(mlt_test_jstr(b, "status"), "FINISHED");
    ck_assert(mlt_test_jnum(b, "end_time") == 2000);
    cJSON_Delete(b);
    ck_assert_uint_eq(s->n_reqs, 4);

    ck_assert_uint_eq(mlt__journal_acked_seq(f.j), 7);
    ck_assert_uint_eq(mlt__journal_pending_bytes(f.j), 0);
    ck_assert_uint_eq(mlt__journal_dead_count(f.j), 0);
    const mlt__run_entry *e = mlt__journal_run(f.j, 1);
    ck_assert_ptr_nonnull(e);
    ck_assert_str_eq(e->key, K1);
    ck_assert_str_eq(e->run_id, "run-1");
    ck_assert_str_eq(e->experiment_id, "7");
    ck_assert_int_eq(e->state, MLT__RUN_ENDED);
    ck_assert_uint_eq(sum.records_total, 7);
    ck_assert_uint_eq(sum.records_done, 7);
    ck_assert_uint_eq(sum.runs_created, 1);
    ck_assert_uint_eq(sum.points_sent, 2);
    ck_assert_uint_eq(sum.rejected, 0);
    mlt__sender_free(f.s, 1000);
    f.s = NULL;
    f.j = NULL;
    ck_assert(!dir_exists(f.dir)); /* delivered: removed */
    server_free(f.srv);
    mlt_test_remove_tree(f.tmp);
}
END_TEST

START_TEST(sender_keeps_runs_apart_and_ends_a_run_after_its_logs)
{
    fixture f;
    fixture_init(&f);
    put_create(f.j, 1, K1, "exp");
    put_create(f.j, 2, K2, "exp");
    put_metric(f.j, 1, "a", 1, 10, 0);
    put_metric(f.j, 2, "b", 2, 11, 0);
    put_metric(f.j, 1, "c", 3, 12, 0);
    put_end(f.j, 1, MLT_RUN_FAILED, 20);
    put_end(f.j, 2, MLT_RUN_KILLED, 21);
    sender_new(&f, false, 3);
    mlt__sync_progress sum;
    ck_assert_int_eq(drain(&f, &sum), MLT_OK);
    server *s = f.srv;
    cJSON_Delete(expect_req(s, 0, "GET", "experiments/get-by-name?experiment_name=exp"));
    cJSON_Delete(expect_req(s, 1, "POST", "runs/create"));
    cJSON_Delete(expect_req(s, 2, "POST", "runs/create")); /* the experiment is cached */
    cJSON *b = expect_req(s, 3, "POST", "runs/log-batch");
    ck_assert_str_eq(mlt_test_jstr(b, "run_id"), "run-1");
    ck_assert_int_eq(jlen(b, "metrics"), 2);
    cJSON_Delete(b);
    b = expect_req(s, 4, "POST", "runs/log-batch");
    ck_assert_str_eq(mlt_test_jstr(b, "run_id"), "run-2");
    ck_assert_int_eq(jlen(b, "metrics"), 1);
    cJSON_Delete(b);
    b = expect_req(s, 5, "POST", "runs/update");
    ck_assert_str_eq(mlt_test_jstr(b, "run_id"), "run-1");
    ck_assert_str_eq(mlt_test_jstr(b, "status"), "FAILED");
    cJSON_Delete(b);
    b = expect_req(s, 6, "POST", "runs/update");
    ck_assert_str_eq(mlt_test_jstr(b, "run_id"), "run-2");
    ck_assert_str_eq(mlt_test_jstr(b, "status"), "KILLED");
    cJSON_Delete(b);
    ck_assert_uint_eq(s->n_reqs, 7);
    ck_assert_uint_eq(mlt__journal_acked_seq(f.j), 7);
    fixture_done(&f);
}
END_TEST

START_TEST(sender_replays_a_created_run_without_creating_it_again)
{
    fixture f;
    fixture_init(&f);
    /* the run was created and mapped, then the process died before the ack */
    ck_assert_int_eq(mlt__journal_put_run(f.j, 1, K1, "run-9", "7", MLT__RUN_OPEN), MLT_OK);
    put_create(f.j, 1, K1, "exp");
    put_metric(f.j, 1, "loss", 1, 10, 0);
    put_end(f.j, 1, MLT_RUN_FINISHED, 20);
    sender_new(&f, false, 3);
    mlt__sync_progress sum;
    ck_assert_int_eq(drain(&f, &sum), MLT_OK);
    server *s = f.srv;
    cJSON *b = expect_req(s, 0, "POST", "runs/log-batch");
    ck_assert_str_eq(mlt_test_jstr(b, "run_id"), "run-9");
    cJSON_Delete(b);
    cJSON_Delete(expect_req(s, 1, "POST", "runs/update"));
    ck_assert_uint_eq(s->n_reqs, 2);
    fixture_done(&f);
}
END_TEST

START_TEST(sender_adopted_journal_searches_before_creating_and_ends_orphans_killed)
{
    fixture f;
    fixture_init(&f);
    put_create(f.j, 1, K1, "exp");
    put_metric(f.j, 1, "loss", 1, 10, 0);
    /* no END: the owner died */
    sender_new(&f, true, 3);
    mlt__sync_progress sum;
    ck_assert_int_eq(drain(&f, &sum), MLT_OK);
    server *s = f.srv;
    cJSON_Delete(expect_req(s, 0, "GET", "experiments/get-by-name?experiment_name=exp"));
    cJSON *b = expect_req(s, 1, "POST", "runs/search");
    ck_assert_ptr_nonnull(strstr(mlt_test_jstr(b, "filter"), K1));
    cJSON_Delete(b);
    cJSON_Delete(expect_req(s, 2, "POST", "runs/create"));
    cJSON_Delete(expect_req(s, 3, "POST", "runs/log-batch"));
    b = expect_req(s, 4, "POST", "runs/update");
    ck_assert_str_eq(mlt_test_jstr(b, "run_id"), "run-1");
    ck_assert_str_eq(mlt_test_jstr(b, "status"), "KILLED");
    cJSON_Delete(b);
    ck_assert_uint_eq(s->n_reqs, 5);
    ck_assert_int_eq(mlt__journal_run(f.j, 1)->state, MLT__RUN_ENDED);
    fixture_done(&f);
}
END_TEST

START_TEST(sender_adopted_journal_finds_a_run_created_before_the_crash)
{
    fixture f;
    fixture_init(&f);
    f.srv->search_body = "{\"runs\":[{\"info\":{\"run_id\":\"run-found\"}}]}";
    put_create(f.j, 1, K1, "exp");
    put_metric(f.j, 1, "loss", 1, 10, 0);
    put_end(f.j, 1, MLT_RUN_FINISHED, 20);
    sender_new(&f, true, 3);
    mlt__sync_progress sum;
    ck_assert_int_eq(drain(&f, &sum), MLT_OK);
    server *s = f.srv;
    cJSON_Delete(expect_req(s, 0, "GET", "experiments/get-by-name?experiment_name=exp"));
    cJSON_Delete(expect_req(s, 1, "POST", "runs/search"));
    cJSON *b = expect_req(s, 2, "POST", "runs/log-batch");
    ck_assert_str_eq(mlt_test_jstr(b, "run_id"), "run-found");
    cJSON_Delete(b);
    cJSON_Delete(expect_req(s, 3, "POST", "runs/update"));
    ck_assert_uint_eq(s->n_reqs, 4);
    fixture_done(&f);
}
END_TEST

START_TEST(sender_resumes_a_run_the_server_has_and_creates_one_it_has_not)
{
    fixture f;
    fixture_init(&f);
    f.srv->search_body = "{\"runs\":[{\"info\":{\"run_id\":\"run-earlier\"}}]}";
    put_resume(f.j, 1, "job-42", 1000);
    put_metric(f.j, 1, "loss", 1, 10, 5);
    put_end(f.j, 1, MLT_RUN_FINISHED, 20);
    sender_new(&f, false, 3);
    mlt__sync_progress sum;
    ck_assert_int_eq(drain(&f, &sum), MLT_OK);
    server *s = f.srv;
    cJSON_Delete(expect_req(s, 0, "GET", "experiments/get-by-name?experiment_name=exp"));
    cJSON *b = expect_req(s, 1, "POST", "runs/search");
    ck_assert_ptr_nonnull(strstr(mlt_test_jstr(b, "filter"), "'job-42'"));
    cJSON_Delete(b);
    b = expect_req(s, 2, "POST", "runs/update"); /* RUNNING again, its end time left alone */
    ck_assert_str_eq(mlt_test_jstr(b, "run_id"), "run-earlier");
    ck_assert_str_eq(mlt_test_jstr(b, "status"), "RUNNING");
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(b, "end_time"));
    cJSON_Delete(b);
    b = expect_req(s, 3, "POST", "runs/log-batch");
    ck_assert_str_eq(mlt_test_jstr(b, "run_id"), "run-earlier");
    cJSON_Delete(b);
    b = expect_req(s, 4, "POST", "runs/update");
    ck_assert_str_eq(mlt_test_jstr(b, "status"), "FINISHED");
    cJSON_Delete(b);
    ck_assert_uint_eq(s->n_reqs, 5);
    fixture_done(&f);

    /* the first start: nothing on the server, the run is created with the key */
    fixture_init(&f);
    put_resume(f.j, 1, "job-42", 1000);
    put_end(f.j, 1, MLT_RUN_FINISHED, 20);
    sender_new(&f, false, 3);
    ck_assert_int_eq(drain(&f, &sum), MLT_OK);
    s = f.srv;
    cJSON_Delete(expect_req(s, 1, "POST", "runs/search"));
    b = expect_req(s, 2, "POST", "runs/create");
    ck_assert_str_eq(tag_of(b, "mltrack.client_run_key"), "job-42");
    cJSON_Delete(b);
    cJSON_Delete(expect_req(s, 3, "POST", "runs/update"));
    ck_assert_uint_eq(s->n_reqs, 4);
    fixture_done(&f);
}
END_TEST

/* A restart's journal and the journal of the attempt it replaces (killed: no END), both in the
 * queue: the earlier attempt's run is created, logged into and ended KILLED first; only then is
 * it resumed (RUNNING), logged into and ended FINISHED. One run. */
START_TEST(sender_resumes_only_after_the_earlier_attempt_is_delivered_and_ended)
{
    fixture f;
    fixture_init(&f);
    put_resume(f.j, 1, "job-42", 2000);
    put_metric(f.j, 1, "loss", 2, 30, 2);
    put_end(f.j, 1, MLT_RUN_FINISHED, 40);
    char old_dir[DIR_LEN + 16];
    snprintf(old_dir, sizeof old_dir, "%s/j-old", f.tmp);
    mlt__journal *old = NULL;
    ck_assert_int_eq(mlt__journal_create(&old, old_dir, MLT__FSYNC_NONE), MLT_OK);
    put_resume(old, 1, "job-42", 1000);
    put_metric(old, 1, "loss", 1, 10, 1);
    /* the restart's journal alone: it waits for the earlier attempt, and says so */
    sender_new(&f, false, 3);
    mlt__sync_progress sum;
    char err[1024] = "";
    ck_assert_int_ne(drain_tries(&f, &sum, err, sizeof err), MLT_OK);
    ck_assert_msg(strstr(err, "job-42") && strstr(err, "j-old"), "message %s", err);
    for (size_t i = 0; i < f.srv->n_reqs; i++) {
        ck_assert_ptr_null(strstr(f.srv->reqs[i].path, "runs/"));
    }
    size_t before = f.srv->n_reqs;
    /* with the earlier attempt's journal taken over too: in order */
    ck_assert_int_eq(mlt__sender_add(f.s, old, true), MLT_OK);
    ck_assert_int_eq(drain(&f, &sum), MLT_OK);
    server *s = f.srv;
    const char *want[][2] = {{"runs/create", NULL},     {"runs/log-batch", NULL},
                             {"runs/update", "KILLED"}, {"runs/update", "RUNNING"},
                             {"runs/log-batch", NULL},  {"runs/update", "FINISHED"}};
    size_t k = 0;
    for (size_t i = before; i < s->n_reqs; i++) {
        if (!strstr(s->reqs[i].path, "runs/") || strstr(s->reqs[i].path, "runs/search")) {
            continue;
        }
        ck_assert_uint_lt(k, 6);
        ck_assert_msg(strstr(s->reqs[i].path, want[k][0]), "request %zu: %s, want %s", i,
                      s->reqs[i].path, want[k][0]);
        if (want[k][1]) {
            ck_assert_msg(strstr(s->reqs[i].body, want[k][1]), "request %zu: %s, want %s", i,
                          s->reqs[i].body, want[k][1]);
        }
        ck_assert(k == 0 || strstr(s->reqs[i].body, "\"run-1\"")); /* the one run */
        k++;
    }
    ck_assert_uint_eq(k, 6);
    ck_assert_int_eq(s->next_run, 1); /* one run */
    fixture_done(&f);
}
END_TEST

START_TEST(sender_bisects_a_rejected_batch_down_to_the_bad_record)
{
    fixture f;
    fixture_init(&f);
    f.srv->poison = "bad";
    put_create(f.j, 1, K1, "exp");
    static const char *const keys[] = {"m0", "m1", "m2", "m3", "m4", "bad", "m6", "m7"};
    for (int i = 0; i < 8; i++) {
        put_metric(f.j, 1, keys[i], i, 100 + i, i);
    }
    put_end(f.j, 1, MLT_RUN_FINISHED, 200);
    sender_new(&f, false, 3);
    mlt__sync_progress sum;
    ck_assert_int_eq(drain(&f, &sum), MLT_OK);
    for (int i = 0; i < 8; i++) {
        char what[32];
        snprintf(what, sizeof what, "metric:%s", keys[i]);
        ck_assert_msg(taken(f.srv, what) == (i == 5 ? 0u : 1u), "%s taken %zu times", what,
                      taken(f.srv, what));
    }
    ck_assert_uint_eq(mlt__journal_dead_count(f.j), 1);
    size_t n;
    cJSON **l = dead_letters(f.dir, &n);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(mlt_test_jstr(l[0], "type"), "metric");
    ck_assert_str_eq(mlt_test_jstr(l[0], "key"), "bad");
    ck_assert_str_eq(mlt_test_jstr(l[0], "run_key"), K1);
    ck_assert(mlt_test_jnum(l[0], "seq") == 7);
    ck_assert_ptr_nonnull(strstr(mlt_test_jstr(l[0], "answer"), "bad entity"));
    free_letters(l, n);
    ck_assert_uint_eq(mlt__journal_acked_seq(f.j), 10);
    ck_assert_uint_eq(sum.rejected, 1);
    ck_assert_uint_eq(sum.points_sent, 7);
    ck_assert_uint_eq(sum.records_done, 10);
    ck_assert_int_eq(mlt__journal_run(f.j, 1)->state, MLT__RUN_ENDED);
    fixture_done(&f);
}
END_TEST

/* A refused record is acked only once its dead letter is on disk: with the disk full (a file
 * size limit), it stays in the queue and no half line is left in dead.jsonl; with room again,
 * the next drain keeps it as one whole dead letter, and what the server took is not sent again. */
START_TEST(sender_keeps_a_refused_record_until_its_dead_letter_is_written)
{
    fixture f;
    fixture_init(&f);
    put_create(f.j, 1, K1, "exp");
    put_metric(f.j, 1, "good", 1, 100, 0);
    put_metric(f.j, 1, "bad", 2, 101, 1);
    put_end(f.j, 1, MLT_RUN_FINISHED, 200);
    sender_new(&f, false, 2);
    /* the run is made while log batches fail for now */
    f.srv->log_batch_status = 503;
    f.srv->log_batch_body = E503;
    mlt__sync_progress sum;
    char msg[1024] = "";
    ck_assert_int_ne(drain_tries(&f, &sum, msg, sizeof msg), MLT_OK);
    ck_assert_str_eq(mlt__journal_run(f.j, 1)->run_id, "run-1");
    ck_assert_uint_eq(mlt__journal_acked_seq(f.j), 1);

    /* the disk is full: no file grows past 40 bytes (a dead letter line is longer) */
    ck_assert(signal(SIGXFSZ, SIG_IGN) != SIG_ERR);
    struct rlimit old, lim;
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 40;
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    f.srv->log_batch_status = 0;
    f.srv->poison = "bad";
    mlt_err e = drain_tries(&f, &sum, msg, sizeof msg);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
    ck_assert_int_ne(e, MLT_OK);
    ck_assert_msg(strstr(msg, "cannot write the dead letter of record 3") != NULL, "%s", msg);
    ck_assert_uint_eq(taken(f.srv, "metric:good"), 1);
    ck_assert_uint_eq(mlt__journal_dead_count(f.j), 0);
    ck_assert_uint_eq(mlt__journal_acked_seq(f.j), 1); /* the batch is not acked */
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/dead.jsonl", f.dir);
    struct stat st;
    ck_assert_msg(stat(path, &st) != 0 || st.st_size == 0, "a cut dead letter was left: %lld bytes",
                  (long long)st.st_size);

    /* room again */
    ck_assert_int_eq(drain(&f, &sum), MLT_OK);
    ck_assert_uint_eq(taken(f.srv, "metric:good"), 1);
    ck_assert_uint_eq(taken(f.srv, "metric:bad"), 0);
    ck_assert_uint_eq(mlt__journal_dead_count(f.j), 1);
    size_t n;
    cJSON **l = dead_letters(f.dir, &n);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(mlt_test_jstr(l[0], "key"), "bad");
    ck_assert(mlt_test_jnum(l[0], "seq") == 3);
    free_letters(l, n);
    ck_assert_uint_eq(mlt__journal_acked_seq(f.j), 4);
    ck_assert_int_eq(mlt__journal_run(f.j, 1)->state, MLT__RUN_ENDED);
    fixture_done(&f);
}
END_TEST

START_TEST(sender_retry_during_bisection_dead_letters_once)
{
    /* The batch is rejected, the bisection dead-letters the bad record, then the server is
     * briefly away (503): the retried unit must not dead-letter the same record again. */
    fixture f;
    fixture_init(&f);
    f.srv->poison = "bad";
    f.srv->fail_log_batch_at = 5; /* 8 -> 4 -> 2 -> [bad] dead -> [m1]: 503 */
    put_create(f.j, 1, K1, "exp");
    static const char *const keys[] = {"bad", "m1", "m2", "m3", "m4", "m5", "m6", "m7"};
    for (int i = 0; i < 8; i++) {
        put_metric(f.j, 1, keys[i], i, 100 + i, i);
    }
    sender_new(&f, false, 3);
    mlt__sync_progress sum;
    ck_assert_int_eq(drain(&f, &sum), MLT_OK);
    size_t dead = (size_t)mlt__journal_dead_count(f.j);
    uint64_t rejected = sum.rejected;
    for (int i = 1; i < 8; i++) {
        char what[32];
        snprintf(what, sizeof what, "metric:%s", keys[i]);
        ck_assert_uint_ge(taken(f.srv, what), 1);
    }
    ck_assert_uint_eq(mlt__journal_acked_seq(f.j), 9);
    fixture_done(&f);
    ck_assert_msg(dead == 1, "the bad record was dead-lettered %zu times", dead);
    ck_assert_uint_eq(rejected, 1);
}
END_TEST

START_TEST(sender_dead_letters_the_records_of_a_run_the_server_refuses_to_create)
{
    fixture f;
    fixture_init(&f);
    f.srv->create_status = 400;
    f.srv->create_body = E400;
    put_create(f.j, 1, K1, "exp");
    put_metric(f.j, 1, "loss", 1, 10, 0);
    put_kv(f.j, MLT__REC_PARAM, 1, "lr", "0.1");
    put_end(f.j, 1, MLT_RUN_FINISHED, 20);
    sender_new(&f, false, 3);
    mlt__sync_progress sum;
    ck_assert_int_eq(drain(&f, &sum), MLT_OK);
    server *s = f.srv;
    cJSON_Delete(expect_req(s, 0, "GET", "experiments/get-by-name?experiment_name=exp"));
    cJSON_Delete(expect_req(s, 1, "POST", "runs/create"));
    ck_assert_uint_eq(s->n_reqs, 2); /* no log batch, no update for a run that is not */
    ck_assert_uint_eq(mlt__journal_dead_count(f.j), 4);
    size_t n;
    cJSON **l = dead_letters(f.dir, &n);
    ck_assert_uint_eq(n, 4);
    ck_assert_str_eq(mlt_test_jstr(l[0], "type"), "create_run");
    ck_assert_ptr_nonnull(strstr(mlt_test_jstr(l[0], "answer"), "bad entity"));
    ck_assert_str_eq(mlt_test_jstr(l[3], "type"), "end_run");
    free_letters(l, n);
    const mlt__run_entry *e = mlt__journal_run(f.j, 1);
    ck_assert_ptr_nonnull(e);
    ck_assert_ptr_null(e->run_id);
    ck_assert_int_eq(e->state, MLT__RUN_DEAD);
    ck_assert_uint_eq(mlt__journal_acked_seq(f.j), 4);
    ck_assert_uint_eq(sum.rejected, 4);
    fixture_done(&f);
}
END_TEST

START_TEST(sender_gives_up_without_acking_while_the_server_is_down)
{
    fixture f;
    fixture_init(&f);
    f.srv->all_status = 503;
    put_create(f.j, 1, K1, "exp");
    put_metric(f.j, 1, "loss", 1, 10, 0);
    sender_new(&f, false, 2);
    char err[512] = "";
    mlt__sync_progress sum;
    mlt_err e = mlt__errbuf(err, sizeof err, mlt__sender_drain(f.s, -1, NULL, NULL, &sum));
    ck_assert_int_ne(e, MLT_OK);
    ck_assert(err[0] != '\0');
    ck_assert_uint_eq(mlt__journal_acked_seq(f.j), 0);
    ck_assert_uint_eq(mlt__journal_dead_count(f.j), 0);
    ck_assert_ptr_null(mlt__journal_run(f.j, 1));
    ck_assert_uint_ge(f.srv->n_reqs, 3); /* tried, then tried again */
    /* back: the next drain delivers everything */
    f.srv->all_status = 0;
    ck_assert_int_eq(drain(&f, &sum), MLT_OK);
    ck_assert_uint_eq(mlt__journal_acked_seq(f.j), 2);
    ck_assert_uint_eq(taken(f.srv, "metric:loss"), 1);
    fixture_done(&f);
}
END_TEST

START_TEST(sender_dead_letters_a_batch_refused_for_its_credentials_in_one_request)
{
    /* 401/403 are about the caller, not about one entity: the whole batch is a dead letter at
     * once (not bisected entity by entity), with the server's answer, and the queue goes on. */
    fixture f;
    fixture_init(&f);
    f.srv->log_batch_status = 401;
    f.srv->log_batch_body = "{\"error_code\":\"UNAUTHENTICATED\",\"message\":\"token expired\"}";
    put_create(f.j, 1, K1, "exp");
    for (int i = 0; i < 4; i++) {
        char k[16];
        snprintf(k, sizeof k, "m%d", i);
        put_metric(f.j, 1, k, i, 10 + i, i);
    }
    put_end(f.j, 1, MLT_RUN_FINISHED, 20);
    sender_new(&f, false, 1);
    mlt__sync_progress sum;
    mlt_err e = drain(&f, &sum);
    uint64_t dead = mlt__journal_dead_count(f.j), acked = mlt__journal_acked_seq(f.j);
    size_t batches = f.srv->n_log_batches, n = 0;
    cJSON **l = dead_letters(mlt__journal_dir(f.j), &n);
    ck_assert_int_eq(e, MLT_OK);
    ck_assert_uint_eq(dead, 4);
    ck_assert_uint_eq(acked, 6); /* nothing left behind */
    ck_assert_msg(batches == 1, "%zu log batches sent for a 401", batches);
    ck_assert_uint_eq(sum.rejected, 4);
    ck_assert_uint_eq(n, 4);
    const cJSON *answer = cJSON_GetObjectItemCaseSensitive(l[0], "answer");
    ck_assert_ptr_nonnull(strstr(cJSON_GetStringValue(answer), "token expired"));
    free_letters(l, n);
    fixture_done(&f);
}
END_TEST

START_TEST(sender_dead_letters_a_run_refused_permission_and_delivers_the_next)
{
    /* A 403 on runs/create (no permission on the experiment): the run and all it logged are
     * dead letters after one request, and the run after it lands. */
    fixture f;
    fixture_init(&f);
    f.srv->create_status = 403;
    f.srv->create_refusals = 1;
    f.srv->create_body = "{\"error_code\":\"PERMISSION_DENIED\",\"message\":\"no access\"}";
    put_create(f.j, 1, K1, "exp");
    put_metric(f.j, 1, "loss", 1, 10, 0);
    put_end(f.j, 1, MLT_RUN_FAILED, 11);
    put_create(f.j, 2, K2, "exp");
    put_metric(f.j, 2, "loss", 2, 12, 0);
    put_end(f.j, 2, MLT_RUN_FINISHED, 13);
    sender_new(&f, false, 1);
    mlt__sync_progress sum;
    mlt_err e = drain(&f, &sum);
    uint64_t dead = mlt__journal_dead_count(f.j), acked = mlt__journal_acked_seq(f.j);
    const mlt__run_entry *re = mlt__journal_run(f.j, 1);
    int state = re ? (int)re->state : -1;
    int creates = f.srv->n_creates;
    size_t took = taken(f.srv, "metric:loss");
    fixture_done(&f);
    ck_assert_int_eq(e, MLT_OK);
    ck_assert_int_eq(state, MLT__RUN_DEAD);
    ck_assert_uint_eq(dead, 3); /* its create, its point, its end */
    ck_assert_uint_eq(acked, 6);
    ck_assert_int_eq(creates, 2); /* refused once, not retried; then the second run */
    ck_assert_uint_eq(took, 1);   /* the second run's point */
}
END_TEST

START_TEST(sender_dead_letters_an_attach_refused_for_its_credentials)
{
    /* Looking up the run to attach to answers 403: the attach and what was logged into the run
     * are dead letters, at once, instead of a retry for ever. */
    fixture f;
    fixture_init(&f);
    f.srv->search_status = 403;
    f.srv->search_body = "Permission denied";
    put_attach(f.j, 1, K1, "", "exp");
    put_metric(f.j, 1, "loss", 1, 10, 0);
    sender_new(&f, false, 1);
    mlt__sync_progress sum;
    mlt_err e = drain(&f, &sum);
    uint64_t dead = mlt__journal_dead_count(f.j), acked = mlt__journal_acked_seq(f.j);
    const mlt__run_entry *re = mlt__journal_run(f.j, 1);
    int state = re ? (int)re->state : -1;
    size_t n = 0;
    cJSON **l = dead_letters(f.dir, &n);
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(l[0], "type")),
                     "attach_run");
    ck_assert_ptr_nonnull(
        strstr(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(l[0], "answer")), "403"));
    free_letters(l, n);
    fixture_done(&f);
    ck_assert_int_eq(e, MLT_OK);
    ck_assert_int_eq(state, MLT__RUN_DEAD);
    ck_assert_uint_eq(dead, 2);
    ck_assert_uint_eq(acked, 2);
}
END_TEST

/* Whether a request to path had a body holding needle. */
static bool sent_with(server *s, const char *path, const char *needle)
{
    bool found = false;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->n_reqs && !found; i++) {
        found = strcmp(s->reqs[i].path, path) == 0 && s->reqs[i].body &&
                strstr(s->reqs[i].body, needle) != NULL;
    }
    pthread_mutex_unlock(&s->mu);
    return found;
}

START_TEST(requeue_puts_dead_letters_back_and_they_land_once_the_server_takes_them)
{
    /* Run 1's creation is refused (403): it and all it logged are dead letters. Run 2 is made,
     * but one of its params is refused (400). Once the server takes them, `mltrack requeue`
     * (mlt__requeue) puts all 7 back into a new journal, which delivers them: run 1 made again
     * with its name, start time and tags, every value exact, run 2's param into run 2. */
    fixture f;
    fixture_init(&f);
    f.srv->create_status = 403;
    f.srv->create_refusals = 1;
    f.srv->create_body = "Permission denied";
    f.srv->poison = "late";
    put_create(f.j, 1, K1, "exp");
    put_kv(f.j, MLT__REC_PARAM, 1, "lr", "0.01");
    put_metric(f.j, 1, "m", NAN, 1700000000001, 0);
    put_metric(f.j, 1, "m", -0.1, 1700000000002, INT64_MAX - 1);
    put_kv(f.j, MLT__REC_TAG, 1, "note", "a \"quoted\"\nline");
    put_end(f.j, 1, MLT_RUN_FAILED, 1700000000003);
    put_create(f.j, 2, K2, "exp");
    put_kv(f.j, MLT__REC_PARAM, 2, "late", "x");
    put_end(f.j, 2, MLT_RUN_FINISHED, 1700000000004);
    sender_new(&f, false, 1);
    mlt__sync_progress sum;
    ck_assert_int_eq(drain(&f, &sum), MLT_OK);
    ck_assert_uint_eq(mlt__journal_dead_count(f.j), 7);
    mlt__sender_free(f.s, 1000); /* closes f.j */
    f.s = NULL;
    f.srv->create_status = 0;
    f.srv->poison = NULL;

    char err[256] = "", to_dir[DIR_LEN + 32];
    mlt__journal *from = NULL, *to = NULL;
    mlt__recovery rec;
    ck_assert_int_eq(
        mlt__errbuf(err, sizeof err, mlt__journal_open(&from, f.dir, false, MLT__FSYNC_NONE, &rec)),
        MLT_OK);
    snprintf(to_dir, sizeof to_dir, "%s/j-requeued", f.tmp);
    ck_assert_int_eq(
        mlt__errbuf(err, sizeof err, mlt__journal_create(&to, to_dir, MLT__FSYNC_NONE)), MLT_OK);
    mlt__requeue_stats st;
    ck_assert_int_eq(mlt__requeue(from, to, &st), MLT_OK);
    ck_assert_uint_eq(st.requeued, 7);
    ck_assert_uint_eq(st.runs, 2);
    ck_assert_uint_eq(st.kept, 0);
    ck_assert_uint_eq(mlt__journal_dead_count(from), 0);
    mlt__journal_close(from, true); /* all delivered, no dead letter left: removed */
    ck_assert(!dir_exists(f.dir));
    /* a second requeue finds nothing */
    f.j = to;
    sender_new(&f, true, 1);
    ck_assert_int_eq(drain(&f, &sum), MLT_OK);
    ck_assert_uint_eq(mlt__journal_dead_count(f.j), 0);
    ck_assert_uint_eq(sum.rejected, 0);
    ck_assert_uint_eq(taken(f.srv, "metric:m"), 2);
    ck_assert_uint_eq(taken(f.srv, "param:lr"), 1);
    ck_assert_uint_eq(taken(f.srv, "param:late"), 1);
    ck_assert_uint_eq(taken(f.srv, "tag:note=a \"quoted\"\nline"), 1);
    ck_assert_int_eq(f.srv->n_creates, 2); /* refused once, made again once */
    ck_assert(sent_with(f.srv, "/api/2.0/mlflow/runs/create", "\"run_name\":\"train\""));
    ck_assert(sent_with(f.srv, "/api/2.0/mlflow/runs/create", "\"start_time\":1000"));
    ck_assert(sent_with(f.srv, "/api/2.0/mlflow/runs/create", "\"key\":\"team\""));
    ck_assert(sent_with(f.srv, "/api/2.0/mlflow/runs/create", K1));
    ck_assert(sent_with(f.srv, "/api/2.0/mlflow/runs/log-batch", "\"step\":9223372036854775806"));
    ck_assert(sent_with(f.srv, "/api/2.0/mlflow/runs/log-batch", "\"value\":\"NaN\""));
    ck_assert(sent_with(f.srv, "/api/2.0/mlflow/runs/log-batch", "\"value\":-0.1,"));
    ck_assert(sent_with(f.srv, "/api/2.0/mlflow/runs/log-batch", "\"run_id\":\"run-1\""));
    ck_assert(sent_with(f.srv, "/api/2.0/mlflow/runs/update", "\"status\":\"FAILED\""));
    ck_assert(sent_with(f.srv, "/api/2.0/mlflow/runs/update", "1700000000003"));
    fixture_done(&f);
}
END_TEST

START_TEST(requeue_keeps_what_it_cannot_log_and_changes_nothing_on_a_bad_line)
{
    fixture f;
    fixture_init(&f);
    ck_assert_int_eq(mlt__journal_put_run(f.j, 1, K1, NULL, NULL, MLT__RUN_DEAD), MLT_OK);
    /* a param of a run neither requeued nor known by id, and an undecodable record */
    mlt__rec r = {.seq = 3, .type = MLT__REC_PARAM, .run_no = 1, .key = "p", .value = "v"};
    ck_assert_int_eq(mlt__journal_dead_letter(f.j, &r, "the run could not be created"), MLT_OK);
    mlt__rec bad = {.seq = 4, .key = ""};
    ck_assert_int_eq(mlt__journal_dead_letter(f.j, &bad, "could not be decoded"), MLT_OK);
    char err[256] = "", to_dir[DIR_LEN + 32];
    snprintf(to_dir, sizeof to_dir, "%s/j-requeued", f.tmp);
    mlt__journal *to = NULL;
    ck_assert_int_eq(
        mlt__errbuf(err, sizeof err, mlt__journal_create(&to, to_dir, MLT__FSYNC_NONE)), MLT_OK);
    mlt__requeue_stats st;
    ck_assert_int_eq(mlt__requeue(f.j, to, &st), MLT_OK);
    ck_assert_uint_eq(st.requeued, 0);
    ck_assert_uint_eq(st.kept, 2);
    ck_assert_ptr_nonnull(strstr(st.why_kept, "never created"));
    ck_assert_uint_eq(mlt__journal_dead_count(f.j), 2);
    ck_assert_uint_eq(mlt__journal_last_seq(to), 0);
    /* a line that is not mltrack's: an error, and nothing moves */
    char path[DIR_LEN + 32];
    snprintf(path, sizeof path, "%s/dead.jsonl", f.dir);
    FILE *fp = fopen(path, "a");
    ck_assert_ptr_nonnull(fp);
    fputs("{\"seq\":9,\"type\":\"metric\",\"run_key\":\"" K1 "\",\"key\":\"m\"}\n", fp);
    fclose(fp);
    ck_assert_int_eq(mlt__journal_put_run(f.j, 1, K1, "rid", "0", MLT__RUN_ENDED), MLT_OK);
    ck_assert_int_eq(mlt__requeue(f.j, to, &st), MLT_ERR_CORRUPT);
    ck_assert_uint_eq(mlt__journal_dead_count(f.j), 2); /* as it was (3 lines on disk) */
    mlt__journal_discard(to);
    ck_assert(!dir_exists(to_dir));
    fixture_done(&f);
}
END_TEST

START_TEST(sender_counts_metric_points_apart_from_rejected_params)
{
    fixture f;
    fixture_init(&f);
    f.srv->poison = "bad_param";
    put_create(f.j, 1, K1, "exp");
    put_metric(f.j, 1, "loss", 1, 10, 0);
    put_metric(f.j, 1, "loss", 2, 11, 1);
    put_kv(f.j, MLT__REC_PARAM, 1, "bad_param", "x");
    put_kv(f.j, MLT__REC_PARAM, 1, "good_param", "y");
    sender_new(&f, false, 3);
    mlt__sync_progress sum;
    ck_assert_int_eq(drain(&f, &sum), MLT_OK);
    ck_assert_uint_eq(taken(f.srv, "metric:loss"), 2);
    ck_assert_uint_eq(taken(f.srv, "param:good_param"), 1);
    ck_assert_uint_eq(mlt__journal_dead_count(f.j), 1);
    ck_assert_uint_eq(sum.rejected, 1);
    ck_assert_uint_eq(sum.records_done, 5);
    uint64_t points = sum.points_sent;
    fixture_done(&f);
    /* both metric points landed; the rejected record was a param */
    ck_assert_uint_eq(points, 2);
}
END_TEST

START_TEST(sender_creates_a_run_once_after_an_ambiguous_failure)
{
    fixture f;
    fixture_init(&f);
    f.srv->create_failures = 1;
    put_create(f.j, 1, K1, "exp");
    put_metric(f.j, 1, "loss", 1, 10, 0);
    put_end(f.j, 1, MLT_RUN_FINISHED, 20);
    sender_new(&f, false, 3);
    mlt__sync_progress sum;
    ck_assert_int_eq(drain(&f, &sum), MLT_OK);
    server *s = f.srv;
    size_t creates = 0, searches = 0, first_search = SIZE_MAX, second_create = SIZE_MAX;
    for (size_t i = 0; i < s->n_reqs; i++) {
        if (strstr(s->reqs[i].path, "runs/create")) {
            if (++creates == 2) {
                second_create = i;
            }
        } else if (strstr(s->reqs[i].path, "runs/search")) {
            searches++;
            if (first_search == SIZE_MAX) {
                first_search = i;
            }
        }
    }
    ck_assert_uint_eq(creates, 2); /* the failed one, then one that worked */
    ck_assert_uint_ge(searches, 1);
    ck_assert_uint_lt(first_search, second_create); /* looked before creating again */
    ck_assert_uint_eq(s->next_run, 1);
    ck_assert_str_eq(mlt__journal_run(f.j, 1)->run_id, "run-1");
    ck_assert_uint_eq(taken(s, "metric:loss"), 1);
    ck_assert_uint_eq(sum.runs_created, 1);
    fixture_done(&f);
}
END_TEST

START_TEST(sender_thread_delivers_concurrent_appends_and_flush_waits_for_them)
{
    fixture f;
    fixture_init(&f);
    sender_new(&f, false, 3);
    ck_assert_int_eq(mlt__sender_start(f.s), MLT_OK);
    put_create(f.j, 1, K1, "exp");
    mlt__sender_notify(f.s);
    for (int i = 0; i < 3000; i++) {
        char k[16];
        snprintf(k, sizeof k, "m%d", i % 50);
        put_metric(f.j, 1, k, i, 1000 + i, i);
        if (i % 100 == 0) {
            mlt__sender_notify(f.s);
        }
    }
    put_end(f.j, 1, MLT_RUN_FINISHED, 9000);
    ck_assert_int_eq(mlt__sender_flush(f.s, 20000), MLT_OK);
    ck_assert_uint_eq(mlt__journal_acked_seq(f.j), 3002);
    size_t points = 0;
    for (int i = 0; i < 50; i++) {
        char what[32];
        snprintf(what, sizeof what, "metric:m%d", i);
        points += taken(f.srv, what);
    }
    ck_assert_uint_eq(points, 3000);
    mlt_queue_stats st;
    mlt__sender_stats(f.s, &st);
    ck_assert_uint_eq(st.bytes_pending, 0);
    ck_assert_uint_eq(st.rejected, 0);
    fixture_done(&f);
}
END_TEST

/* Regression (scale check): an attach record was queued but never counted acknowledged, so the
 * stats of a rank logging into a shared run never added up (queued = acknowledged + rejected). */
START_TEST(sender_counts_attach_records_as_acknowledged)
{
    for (int by_key = 0; by_key <= 1; by_key++) {
        fixture f;
        fixture_init(&f);
        /* by key, the run another process made is found by its client key */
        f.srv->search_body = "{\"runs\":[{\"info\":{\"run_id\":\"run-found\"}}]}";
        put_attach(f.j, 1, K1, by_key ? "" : "run-given", "exp");
        put_metric(f.j, 1, "loss", 0.5, 1001, 0);
        sender_new(&f, false, 3);
        mlt__sync_progress sum;
        ck_assert_int_eq(drain(&f, &sum), MLT_OK);
        ck_assert_str_eq(mlt__journal_run(f.j, 1)->run_id, by_key ? "run-found" : "run-given");
        ck_assert_uint_eq(taken(f.srv, "metric:loss"), 1);
        mlt_queue_stats st;
        mlt__sender_stats(f.s, &st);
        ck_assert_uint_eq(st.queued, 2);
        ck_assert_uint_eq(st.acknowledged, 2);
        ck_assert_uint_eq(st.rejected, 0);
        ck_assert_uint_ge(st.sent, st.acknowledged);
        ck_assert_uint_eq(sum.records_done, sum.records_total);
        fixture_done(&f);
    }
}
END_TEST

START_TEST(sender_flush_times_out_while_the_server_is_down)
{
    fixture f;
    fixture_init(&f);
    f.srv->all_status = 503;
    put_create(f.j, 1, K1, "exp");
    sender_new(&f, false, 3);
    ck_assert_int_eq(mlt__sender_start(f.s), MLT_OK);
    int64_t t0 = mlt__mono_ns();
    ck_assert_int_eq(mlt__sender_flush(f.s, 300), MLT_ERR_TIMEOUT);
    int64_t took_ms = (mlt__mono_ns() - t0) / 1000000;
    ck_assert_int_ge(took_ms, 290);
    ck_assert_int_lt(took_ms, 5000);
    ck_assert_uint_eq(mlt__journal_acked_seq(f.j), 0);
    fixture_done(&f);
}
END_TEST

START_TEST(sender_free_aborts_a_request_in_flight)
{
    fixture f;
    fixture_init(&f);
    f.srv->delay_ms = 10000;
    put_create(f.j, 1, K1, "exp");
    sender_new(&f, false, 3);
    ck_assert_int_eq(mlt__sender_start(f.s), MLT_OK);
    for (int i = 0; i < 200; i++) { /* until the request is at the server */
        pthread_mutex_lock(&f.srv->mu);
        size_t n = f.srv->n_reqs;
        pthread_mutex_unlock(&f.srv->mu);
        if (n) {
            break;
        }
        usleep(10000);
    }
    int64_t t0 = mlt__mono_ns();
    mlt__sender_free(f.s, 500);
    int64_t took_ms = (mlt__mono_ns() - t0) / 1000000;
    f.s = NULL;
    f.j = NULL;
    ck_assert_msg(took_ms < 3000, "free took %lld ms", (long long)took_ms);
    ck_assert(dir_exists(f.dir)); /* undelivered: stays */
    server_free(f.srv);
    mlt_test_remove_tree(f.tmp);
}
END_TEST

/* ---- artifacts ---- */

static const char ABC_SHA[] = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

static void put_art(mlt__journal *j, uint32_t run_no, const char *path, const char *data)
{
    mlt__art_src src = {-1, data, strlen(data)};
    uint64_t bytes;
    char sha[65];
    ck_assert_int_eq(mlt__journal_put_artifact(j, run_no, path, &src, 1700000000000, &bytes, sha),
                     MLT_OK);
}

START_TEST(sender_uploads_artifacts_through_the_proxy_and_removes_their_snapshots)
{
    fixture f;
    fixture_init(&f);
    put_create(f.j, 1, K1, "exp");
    put_art(f.j, 1, "plots/a b/r\xc3\xa9s#.txt", "abc"); /* the journal takes what it is given */
    put_metric(f.j, 1, "loss", 1, 10, 0);
    put_art(f.j, 1, "empty", "");
    put_end(f.j, 1, MLT_RUN_FINISHED, 11);
    sender_new(&f, false, 1);
    mlt__sync_progress sum;
    ck_assert_int_eq(drain(&f, &sum), MLT_OK);
    ck_assert_uint_eq(sum.artifacts_sent, 2);
    ck_assert_uint_eq(sum.artifact_bytes_sent, 3);
    ck_assert_uint_eq(mlt__journal_dead_count(f.j), 0);
    char want[256];
    /* each part percent-encoded, under the run's proxy path */
    snprintf(want, sizeof want, "artifact:7/run-1/artifacts/plots/a%%20b/r%%C3%%A9s%%23.txt=%s",
             ABC_SHA);
    ck_assert_uint_eq(taken(f.srv, want), 1);
    ck_assert_uint_eq(taken(f.srv,
                            "artifact:7/run-1/artifacts/empty="
                            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
                      1);
    ck_assert_uint_eq(taken(f.srv, "metric:loss"), 1);
    /* the run's artifact root was asked once */
    size_t gets = 0;
    for (size_t i = 0; i < f.srv->n_reqs; i++) {
        gets += strncmp(f.srv->reqs[i].path, "/api/2.0/mlflow/runs/get?", 25) == 0;
    }
    ck_assert_uint_eq(gets, 1);
    char art[PATH_MAX + 8];
    snprintf(art, sizeof art, "%s/art", f.dir);
    DIR *d = opendir(art);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    int left = 0;
    while ((e = readdir(d))) {
        left += e->d_name[0] != '.';
    }
    closedir(d);
    ck_assert_int_eq(left, 0); /* delivered: the snapshots are gone */
    fixture_done(&f);
}
END_TEST

START_TEST(sender_dead_letters_an_artifact_the_server_refuses_and_requeue_brings_it_back)
{
    fixture f;
    fixture_init(&f);
    f.srv->put_status = 403;
    f.srv->put_refusals = 1;
    put_create(f.j, 1, K1, "exp");
    put_art(f.j, 1, "model.bin", "abc");
    put_end(f.j, 1, MLT_RUN_FINISHED, 11);
    sender_new(&f, false, 1);
    mlt__sync_progress sum;
    ck_assert_int_eq(drain(&f, &sum), MLT_OK);
    ck_assert_uint_eq(mlt__journal_dead_count(f.j), 1);
    size_t n = 0;
    cJSON **l = dead_letters(f.dir, &n);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(mlt_test_jstr(l[0], "type"), "artifact");
    ck_assert_str_eq(mlt_test_jstr(l[0], "path"), "model.bin");
    ck_assert_str_eq(mlt_test_jstr(l[0], "sha256"), ABC_SHA);
    ck_assert_ptr_nonnull(strstr(mlt_test_jstr(l[0], "answer"), "403"));
    char snap[PATH_MAX + 64];
    snprintf(snap, sizeof snap, "%s/%s", f.dir, mlt_test_jstr(l[0], "snapshot"));
    free_letters(l, n);
    ck_assert_int_eq(access(snap, R_OK), 0); /* its bytes are kept */
    mlt__sender_free(f.s, 1000);
    f.s = NULL;

    char err[256] = "", to_dir[DIR_LEN + 32];
    mlt__journal *from = NULL, *to = NULL;
    ck_assert_int_eq(
        mlt__errbuf(err, sizeof err, mlt__journal_open(&from, f.dir, false, MLT__FSYNC_NONE, NULL)),
        MLT_OK);
    snprintf(to_dir, sizeof to_dir, "%s/j-requeued", f.tmp);
    ck_assert_int_eq(mlt__journal_create(&to, to_dir, MLT__FSYNC_NONE), MLT_OK);
    mlt__requeue_stats st;
    ck_assert_int_eq(mlt__requeue(from, to, &st), MLT_OK);
    ck_assert_uint_eq(st.requeued, 1);
    ck_assert_uint_eq(st.kept, 0);
    ck_assert_int_eq(access(snap, F_OK), -1); /* requeued: the copy set aside goes */
    mlt__journal_close(from, true);
    ck_assert(!dir_exists(f.dir));
    f.j = to;
    sender_new(&f, true, 1);
    ck_assert_int_eq(drain(&f, &sum), MLT_OK);
    ck_assert_uint_eq(mlt__journal_dead_count(f.j), 0);
    char want[160];
    snprintf(want, sizeof want, "artifact:7/run-1/artifacts/model.bin=%s", ABC_SHA);
    ck_assert_uint_eq(taken(f.srv, want), 1); /* into the run the server has */
    ck_assert_int_eq(f.srv->n_creates, 0);
    fixture_done(&f);
}
END_TEST

START_TEST(sender_dead_letters_artifacts_of_a_run_whose_artifacts_are_not_proxied)
{
    fixture f;
    fixture_init(&f);
    f.srv->artifact_uri = "s3://bucket/1/run-1/artifacts";
    put_create(f.j, 1, K1, "exp");
    put_art(f.j, 1, "a.txt", "abc");
    put_art(f.j, 1, "b.txt", "abc");
    put_end(f.j, 1, MLT_RUN_FINISHED, 11);
    sender_new(&f, false, 1);
    mlt__sync_progress sum;
    ck_assert_int_eq(drain(&f, &sum), MLT_OK);
    ck_assert_uint_eq(mlt__journal_dead_count(f.j), 2);
    size_t n = 0;
    cJSON **l = dead_letters(f.dir, &n);
    ck_assert_uint_eq(n, 2);
    const char *answer = mlt_test_jstr(l[0], "answer");
    ck_assert_ptr_nonnull(strstr(answer, "s3://bucket/1/run-1/artifacts"));
    ck_assert_ptr_nonnull(strstr(answer, "--serve-artifacts"));
    free_letters(l, n);
    ck_assert_uint_eq(taken_prefix(f.srv, "artifact:"), 0);
    fixture_done(&f);
}
END_TEST

START_TEST(sender_never_uploads_a_torn_snapshot_of_a_journal_taken_over)
{
    fixture f;
    fixture_init(&f);
    put_create(f.j, 1, K1, "exp");
    put_art(f.j, 1, "whole.txt", "abc");
    put_art(f.j, 1, "torn.txt", "abc");
    /* a crash left the second snapshot with other bytes of the same size */
    char snap[PATH_MAX + 64];
    snprintf(snap, sizeof snap, "%s/art/%020d", f.dir, 3);
    FILE *fp = fopen(snap, "wb");
    ck_assert_ptr_nonnull(fp);
    fputs("xyz", fp);
    fclose(fp);
    sender_new(&f, true, 1); /* adopted: snapshots are checked before they go */
    mlt__sync_progress sum;
    ck_assert_int_eq(drain(&f, &sum), MLT_OK);
    char want[160];
    snprintf(want, sizeof want, "artifact:7/run-1/artifacts/whole.txt=%s", ABC_SHA);
    ck_assert_uint_eq(taken(f.srv, want), 1);
    ck_assert_uint_eq(taken_prefix(f.srv, "artifact:7/run-1/artifacts/torn.txt"), 0);
    ck_assert_uint_eq(taken_prefix(f.srv, "artifact:"), 1);
    size_t n = 0;
    cJSON **l = dead_letters(f.dir, &n);
    ck_assert_uint_eq(n, 1);
    ck_assert_ptr_nonnull(strstr(mlt_test_jstr(l[0], "answer"), "torn"));
    free_letters(l, n);
    fixture_done(&f);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sender");
    MLT_ADD_TEST(s, sender_drain_delivers_a_run_in_order);
    MLT_ADD_TEST(s, sender_keeps_runs_apart_and_ends_a_run_after_its_logs);
    MLT_ADD_TEST(s, sender_replays_a_created_run_without_creating_it_again);
    MLT_ADD_TEST(s, sender_adopted_journal_searches_before_creating_and_ends_orphans_killed);
    MLT_ADD_TEST(s, sender_adopted_journal_finds_a_run_created_before_the_crash);
    MLT_ADD_TEST(s, sender_bisects_a_rejected_batch_down_to_the_bad_record);
    MLT_ADD_TEST(s, sender_resumes_a_run_the_server_has_and_creates_one_it_has_not);
    MLT_ADD_TEST(s, sender_resumes_only_after_the_earlier_attempt_is_delivered_and_ended);
    MLT_ADD_TEST(s, sender_retry_during_bisection_dead_letters_once);
    MLT_ADD_TEST(s, sender_keeps_a_refused_record_until_its_dead_letter_is_written);
    MLT_ADD_TEST(s, sender_dead_letters_the_records_of_a_run_the_server_refuses_to_create);
    MLT_ADD_TEST(s, sender_gives_up_without_acking_while_the_server_is_down);
    MLT_ADD_TEST(s, sender_dead_letters_a_batch_refused_for_its_credentials_in_one_request);
    MLT_ADD_TEST(s, sender_dead_letters_a_run_refused_permission_and_delivers_the_next);
    MLT_ADD_TEST(s, sender_dead_letters_an_attach_refused_for_its_credentials);
    MLT_ADD_TEST(s, requeue_puts_dead_letters_back_and_they_land_once_the_server_takes_them);
    MLT_ADD_TEST(s, sender_uploads_artifacts_through_the_proxy_and_removes_their_snapshots);
    MLT_ADD_TEST(s, sender_dead_letters_an_artifact_the_server_refuses_and_requeue_brings_it_back);
    MLT_ADD_TEST(s, sender_dead_letters_artifacts_of_a_run_whose_artifacts_are_not_proxied);
    MLT_ADD_TEST(s, sender_never_uploads_a_torn_snapshot_of_a_journal_taken_over);
    MLT_ADD_TEST(s, requeue_keeps_what_it_cannot_log_and_changes_nothing_on_a_bad_line);
    MLT_ADD_TEST(s, sender_counts_metric_points_apart_from_rejected_params);
    MLT_ADD_TEST(s, sender_creates_a_run_once_after_an_ambiguous_failure);
    MLT_ADD_TEST(s, sender_thread_delivers_concurrent_appends_and_flush_waits_for_them);
    MLT_ADD_TEST(s, sender_counts_attach_records_as_acknowledged);
    MLT_ADD_TEST(s, sender_flush_times_out_while_the_server_is_down);
    MLT_ADD_TEST(s, sender_free_aborts_a_request_in_flight);
    return mlt_test_run_suite(s);
}
