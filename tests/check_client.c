/*
 * check_client.c - unit tests of src/mlflow_client.c over a scripted fake transport: perform()
 * pops pre-programmed answers from a queue and records every request (method, URL, body), and a
 * fake sleep records each wait instead of sleeping. Covers the retry loop (limits, backoff,
 * jitter, Retry-After, deadline, ambiguous failures), experiment get-or-create, run creation that
 * never makes a second run, split log batches and the run update.
 */
#include "mlflow_client.h"
#include "testutil.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- the fake transport -------------------------------------------------------------------- */

#define FAKE_MAX 64

typedef struct scripted {
    long status;
    const char *body;
    double retry_after_s;
    mlt_err net_err;
    bool maybe_sent;
    const char *etag; /* the answer's ETag header, NULL for none */
} scripted;

typedef struct recorded {
    char method[8];
    char *url;
    char *body;              /* NULL for a request without body */
    uint64_t up_off, up_len; /* an upload's range of its file */
    char header[128];        /* the first extra header line, "" when none */
} recorded;

typedef struct fake {
    scripted script[FAKE_MAX];
    size_t n_script, next;
    recorded reqs[FAKE_MAX];
    size_t n_reqs;
    int64_t waits[FAKE_MAX];
    size_t n_waits;
    int destroyed;
    bool exhausted; /* a request came after the script ran out */
} fake;

static void fake_perform(void *self, const mlt__http_request *req, mlt__http_response *resp)
{
    fake *f = self;
    ck_assert_uint_lt(f->n_reqs, FAKE_MAX);
    recorded *rec = &f->reqs[f->n_reqs++];
    snprintf(rec->method, sizeof rec->method, "%s", req->method);
    rec->url = strdup(req->url);
    ck_assert_ptr_nonnull(rec->url);
    rec->body = req->body ? mlt__strndup(req->body, req->body_len) : NULL;
    if (req->upload) {
        rec->up_off = req->upload->off;
        rec->up_len = req->upload->len;
    }
    snprintf(rec->header, sizeof rec->header, "%s",
             req->headers && req->headers[0] ? req->headers[0] : "");
    if (f->next >= f->n_script) {
        /* not retriable, so a runaway loop stops at once */
        f->exhausted = true;
        resp->status = 418;
        mlt__buf_puts(&resp->body, "script exhausted");
        return;
    }
    const scripted *s = &f->script[f->next++];
    resp->status = s->status;
    resp->retry_after_s = s->retry_after_s;
    resp->net_err = s->net_err;
    resp->maybe_sent = s->maybe_sent;
    if (s->body) {
        mlt__buf_puts(&resp->body, s->body);
    }
    if (s->etag) {
        snprintf(resp->etag, sizeof resp->etag, "%s", s->etag);
    }
    if (s->net_err != MLT_OK) {
        snprintf(resp->errmsg, sizeof resp->errmsg, "%s %s: scripted failure", req->method,
                 req->url);
    }
}

static void fake_destroy(void *self)
{
    fake *f = self;
    f->destroyed++;
}

static void fake_sleep(int64_t ms, void *ud)
{
    fake *f = ud;
    ck_assert_uint_lt(f->n_waits, FAKE_MAX);
    f->waits[f->n_waits++] = ms;
}

static fake *fake_new(void)
{
    fake *f = calloc(1, sizeof *f);
    ck_assert_ptr_nonnull(f);
    return f;
}

static void fake_free(fake *f)
{
    for (size_t i = 0; i < f->n_reqs; i++) {
        free(f->reqs[i].url);
        free(f->reqs[i].body);
    }
    free(f);
}

static void push_full(fake *f, long status, const char *body, double retry_after_s, mlt_err net,
                      bool maybe_sent)
{
    ck_assert_uint_lt(f->n_script, FAKE_MAX);
    f->script[f->n_script++] = (scripted){status, body, retry_after_s, net, maybe_sent, NULL};
}

static void push(fake *f, long status, const char *body)
{
    push_full(f, status, body, -1, MLT_OK, false);
}

/* A part's answer: 200, no body, an ETag. */
static void push_etag(fake *f, const char *etag)
{
    push(f, 200, NULL);
    f->script[f->n_script - 1].etag = etag;
}

static void push_net(fake *f, mlt_err net, bool maybe_sent)
{
    push_full(f, 0, NULL, -1, net, maybe_sent);
}

#define BASE "http://fake:5000/base"
#define API BASE "/api/2.0/mlflow/"

static const char *const E503 =
    "{\"error_code\":\"TEMPORARILY_UNAVAILABLE\",\"message\":\"database is locked\"}";
static const char *const E400 =
    "{\"error_code\":\"INVALID_PARAMETER_VALUE\",\"message\":\"bad value from server\"}";
static const char *const E404 =
    "{\"error_code\":\"RESOURCE_DOES_NOT_EXIST\",\"message\":\"Could not find it\"}";

/* A client over f for BASE (with a trailing slash, which the options strip). */
static void client_new(mlt__client *c, fake *f, int max_retries, double factor, double jitter)
{
    mlt_options *o = mlt_options_new();
    ck_assert_ptr_nonnull(o);
    ck_assert_int_eq(mlt_options_set_tracking_uri(o, BASE "/"), MLT_OK);
    ck_assert_int_eq(mlt_options_set_retries(o, max_retries, factor, jitter), MLT_OK);
    mlt__transport tr = {.perform = fake_perform, .destroy = fake_destroy, .self = f};
    ck_assert_int_eq(mlt__client_init_with(c, o, tr), MLT_OK);
    mlt_options_free(o);
    c->sleep_fn = fake_sleep;
    c->sleep_ud = f;
}

/* Ends a test: the client is freed (destroying the transport once) and the script was used up
 * exactly. */
static void finish(mlt__client *c, fake *f)
{
    mlt__client_free(c);
    ck_assert_int_eq(f->destroyed, 1);
    ck_assert_msg(!f->exhausted, "more requests than scripted answers");
    ck_assert_msg(f->next == f->n_script, "%zu scripted answers left unused",
                  f->n_script - f->next);
    fake_free(f);
}

/* How many recorded requests went to API path (query excluded). */
static int count_path(const fake *f, const char *path)
{
    int n = 0;
    size_t plen = strlen(API) + strlen(path);
    for (size_t i = 0; i < f->n_reqs; i++) {
        const char *u = f->reqs[i].url;
        if (strncmp(u, API, strlen(API)) == 0 &&
            strncmp(u + strlen(API), path, strlen(path)) == 0 &&
            (u[plen] == '\0' || u[plen] == '?')) {
            n++;
        }
    }
    return n;
}

static void assert_request(const fake *f, size_t i, const char *method, const char *path)
{
    ck_assert_uint_lt(i, f->n_reqs);
    ck_assert_str_eq(f->reqs[i].method, method);
    char want[512];
    snprintf(want, sizeof want, API "%s", path);
    ck_assert_str_eq(f->reqs[i].url, want);
}

/* Request i's body parsed (caller deletes). */
static cJSON *request_json(const fake *f, size_t i)
{
    ck_assert_uint_lt(i, f->n_reqs);
    ck_assert_ptr_nonnull(f->reqs[i].body);
    cJSON *j = cJSON_Parse(f->reqs[i].body);
    ck_assert_msg(j != NULL, "request %zu body is not JSON: %.200s", i, f->reqs[i].body);
    return j;
}

/* An update-run request to send through mlt__client_call. */
static void update_req(mlt__api_req *r)
{
    mlt__api_req_init(r);
    ck_assert_int_eq(mlt__api_update_run(r, "run1", MLT_RUN_FINISHED, 1700000000000LL), MLT_OK);
}

/* Sends an update-run request and returns the answer's code. */
static mlt_err call(mlt__client *c, bool retry_ambiguous, int64_t deadline_ns)
{
    mlt__api_req r;
    update_req(&r);
    mlt__api_answer a;
    mlt__api_answer_init(&a);
    mlt_err err = mlt__client_call(c, &r, retry_ambiguous, deadline_ns, &a);
    ck_assert_int_eq(err, a.err);
    if (err == MLT_OK) {
        ck_assert_ptr_nonnull(a.json);
    }
    mlt__api_answer_free(&a);
    mlt__api_req_free(&r);
    return err;
}

/* ---- client setup -------------------------------------------------------------------------- */

START_TEST(client_init_with_takes_settings_from_the_options)
{
    fake *f = fake_new();
    mlt__client c;
    client_new(&c, f, 4, 0.5, 0.25);
    ck_assert_str_eq(c.base, BASE);
    ck_assert_int_eq(c.max_retries, 4);
    ck_assert_double_eq(c.backoff_factor_s, 0.5);
    ck_assert_double_eq(c.backoff_jitter_s, 0.25);
    ck_assert_double_eq(c.max_backoff_s, 120.0);
    ck_assert_ptr_eq(c.tr.self, f);
    ck_assert_int_eq(f->destroyed, 0);
    finish(&c, f);
}
END_TEST

/* ---- the retry loop ------------------------------------------------------------------------ */

START_TEST(call_sends_the_request_once_on_success)
{
    fake *f = fake_new();
    mlt__client c;
    client_new(&c, f, 7, 2, 1);
    push(f, 200, "{\"run_info\":{}}");
    ck_assert_int_eq(call(&c, true, -1), MLT_OK);
    ck_assert_uint_eq(f->n_reqs, 1);
    assert_request(f, 0, "POST", "runs/update");
    mlt__api_req r;
    update_req(&r);
    ck_assert_str_eq(f->reqs[0].body, r.body.data);
    mlt__api_req_free(&r);
    ck_assert_uint_eq(f->n_waits, 0);
    finish(&c, f);
}
END_TEST

START_TEST(call_retries_503_429_and_network_errors_until_success)
{
    fake *f = fake_new();
    mlt__client c;
    client_new(&c, f, 7, 1, 0);
    push(f, 503, E503);
    push_full(f, 429, "slow down", 1, MLT_OK, false);
    push_net(f, MLT_ERR_NETWORK, false);
    push(f, 502, "<html>Bad Gateway</html>");
    push_net(f, MLT_ERR_TIMEOUT, true);
    push(f, 200, "{}");
    ck_assert_int_eq(call(&c, true, -1), MLT_OK);
    ck_assert_uint_eq(f->n_reqs, 6);
    ck_assert_uint_eq(f->n_waits, 5);
    for (size_t i = 1; i < f->n_reqs; i++) {
        ck_assert_str_eq(f->reqs[i].body, f->reqs[0].body); /* the same request each time */
        ck_assert_str_eq(f->reqs[i].url, f->reqs[0].url);
    }
    finish(&c, f);
}
END_TEST

START_TEST(call_gives_up_after_max_retries_with_the_last_error)
{
    fake *f = fake_new();
    mlt__client c;
    client_new(&c, f, 3, 1, 0);
    push(f, 503, E503);
    push(f, 500, "{\"error_code\":\"INTERNAL_ERROR\",\"message\":\"boom\"}");
    push_net(f, MLT_ERR_NETWORK, false);
    push_full(f, 429, "{\"error_code\":\"REQUEST_LIMIT_EXCEEDED\",\"message\":\"last one\"}", -1,
              MLT_OK, false);
    mlt__api_req r;
    update_req(&r);
    mlt__api_answer a;
    mlt__api_answer_init(&a);
    ck_assert_int_eq(mlt__client_call(&c, &r, true, -1, &a), MLT_ERR_RATE_LIMITED);
    ck_assert_int_eq(a.status, 429);
    ck_assert_str_eq(a.error_code, "REQUEST_LIMIT_EXCEEDED");
    ck_assert_ptr_nonnull(strstr(a.msg, "last one"));
    mlt__api_answer_free(&a);
    mlt__api_req_free(&r);
    ck_assert_uint_eq(f->n_reqs, 4); /* 1 attempt + 3 retries */
    ck_assert_uint_eq(f->n_waits, 3);
    finish(&c, f);
}
END_TEST

START_TEST(call_with_zero_retries_tries_once)
{
    fake *f = fake_new();
    mlt__client c;
    client_new(&c, f, 0, 1, 0);
    push(f, 503, E503);
    ck_assert_int_eq(call(&c, true, -1), MLT_ERR_SERVER);
    ck_assert_uint_eq(f->n_reqs, 1);
    ck_assert_uint_eq(f->n_waits, 0);
    finish(&c, f);
}
END_TEST

START_TEST(call_does_not_retry_permanent_failures)
{
    static const struct {
        long status;
        const char *body;
        mlt_err err;
    } cases[] = {
        {400, "{\"error_code\":\"INVALID_PARAMETER_VALUE\",\"message\":\"no\"}", MLT_ERR_REJECTED},
        {400, "{\"error_code\":\"RESOURCE_ALREADY_EXISTS\",\"message\":\"x\"}", MLT_ERR_REJECTED},
        {404, "{\"error_code\":\"RESOURCE_DOES_NOT_EXIST\",\"message\":\"no\"}", MLT_ERR_NOT_FOUND},
        {404, "<html>Not Found</html>", MLT_ERR_PROTOCOL},
        {401, "Unauthorized", MLT_ERR_AUTH},
        {403, "{\"error_code\":\"PERMISSION_DENIED\",\"message\":\"no\"}", MLT_ERR_AUTH},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fake *f = fake_new();
        mlt__client c;
        client_new(&c, f, 7, 1, 0);
        push(f, cases[i].status, cases[i].body);
        ck_assert_int_eq(call(&c, true, -1), cases[i].err);
        ck_assert_uint_eq(f->n_reqs, 1);
        ck_assert_uint_eq(f->n_waits, 0);
        finish(&c, f);
    }
    /* nor a TLS failure */
    fake *f = fake_new();
    mlt__client c;
    client_new(&c, f, 7, 1, 0);
    push_net(f, MLT_ERR_TLS, false);
    ck_assert_int_eq(call(&c, true, -1), MLT_ERR_TLS);
    ck_assert_uint_eq(f->n_reqs, 1);
    finish(&c, f);
}
END_TEST

START_TEST(call_honours_retry_after)
{
    fake *f = fake_new();
    mlt__client c;
    client_new(&c, f, 7, 0.1, 0.5);
    push_full(f, 429, "Too Many Requests", 30, MLT_OK, false);
    push_full(f, 503, "busy", 2.5, MLT_OK, false);
    push(f, 200, "{}");
    ck_assert_int_eq(call(&c, true, -1), MLT_OK);
    ck_assert_uint_eq(f->n_waits, 2);
    ck_assert_int_ge(f->waits[0], 30000);
    ck_assert_int_le(f->waits[0], 30500);
    ck_assert_int_ge(f->waits[1], 2500);
    ck_assert_int_le(f->waits[1], 3000);
    finish(&c, f);
}
END_TEST

START_TEST(call_caps_retry_after_at_max_backoff)
{
    fake *f = fake_new();
    mlt__client c;
    client_new(&c, f, 7, 0.1, 0);
    push_full(f, 429, "Too Many Requests", 3600, MLT_OK, false);
    push(f, 200, "{}");
    ck_assert_int_eq(call(&c, true, -1), MLT_OK);
    ck_assert_uint_eq(f->n_waits, 1);
    ck_assert_int_eq(f->waits[0], 120000);
    finish(&c, f);

    f = fake_new();
    client_new(&c, f, 7, 0.1, 0);
    c.max_backoff_s = 10;
    push_full(f, 503, "busy", 3600, MLT_OK, false);
    push(f, 200, "{}");
    ck_assert_int_eq(call(&c, true, -1), MLT_OK);
    ck_assert_int_eq(f->waits[0], 10000);
    finish(&c, f);
}
END_TEST

START_TEST(call_backoff_grows_exponentially_with_bounded_jitter)
{
    int64_t lo = INT64_MAX, hi = INT64_MIN;
    for (int round = 0; round < 20; round++) {
        fake *f = fake_new();
        mlt__client c;
        client_new(&c, f, 5, 2, 1);
        for (int i = 0; i < 6; i++) {
            push(f, 503, E503);
        }
        ck_assert_int_eq(call(&c, true, -1), MLT_ERR_SERVER);
        ck_assert_uint_eq(f->n_reqs, 6);
        ck_assert_uint_eq(f->n_waits, 5);
        for (size_t i = 0; i < f->n_waits; i++) {
            int64_t base = 2000LL << i; /* factor * 2^(n-1) s, n = i + 1 */
            int64_t jitter = f->waits[i] - base;
            ck_assert_msg(jitter >= 0 && jitter <= 1000,
                          "retry %zu waited %lld ms, want %lld + [0, 1000]", i + 1,
                          (long long)f->waits[i], (long long)base);
            lo = jitter < lo ? jitter : lo;
            hi = jitter > hi ? jitter : hi;
        }
        finish(&c, f);
    }
    ck_assert_msg(hi - lo > 200, "jitter barely varies: %lld..%lld ms", (long long)lo,
                  (long long)hi);
}
END_TEST

START_TEST(backoff_ms_is_capped_and_jittered)
{
    fake *f = fake_new();
    mlt__client c;
    client_new(&c, f, 7, 2, 1);
    for (int n = 1; n <= 12; n++) {
        double base = 2.0 * (double)(1LL << (n - 1));
        if (base > 120) {
            base = 120;
        }
        for (int k = 0; k < 200; k++) {
            int64_t ms = mlt__client_backoff_ms(&c, n, NULL);
            ck_assert_int_ge(ms, (int64_t)(base * 1000));
            ck_assert_int_le(ms, (int64_t)(base * 1000) + 1000);
        }
    }
    /* no jitter: exact */
    c.backoff_jitter_s = 0;
    ck_assert_int_eq(mlt__client_backoff_ms(&c, 1, NULL), 2000);
    ck_assert_int_eq(mlt__client_backoff_ms(&c, 3, NULL), 8000);
    ck_assert_int_eq(mlt__client_backoff_ms(&c, 30, NULL), 120000);
    /* Retry-After only ever lengthens the wait */
    mlt__api_answer a;
    mlt__api_answer_init(&a);
    a.retry_after_s = 1;
    ck_assert_int_eq(mlt__client_backoff_ms(&c, 3, &a), 8000);
    a.retry_after_s = 50;
    ck_assert_int_eq(mlt__client_backoff_ms(&c, 3, &a), 50000);
    finish(&c, f);
}
END_TEST

START_TEST(call_stops_retrying_before_the_deadline)
{
    fake *f = fake_new();
    mlt__client c;
    client_new(&c, f, 7, 2, 0);
    for (int i = 0; i < 2; i++) {
        push(f, 503, E503);
    }
    /* waits are 2 s then 4 s: the second would end past a deadline 3 s away */
    ck_assert_int_eq(call(&c, true, mlt__mono_ns() + 3000000000LL), MLT_ERR_SERVER);
    ck_assert_uint_eq(f->n_reqs, 2);
    ck_assert_uint_eq(f->n_waits, 1);
    ck_assert_int_eq(f->waits[0], 2000);
    finish(&c, f);

    /* a Retry-After beyond the deadline: no wait at all */
    f = fake_new();
    client_new(&c, f, 7, 0.1, 0);
    push_full(f, 429, "slow", 60, MLT_OK, false);
    ck_assert_int_eq(call(&c, true, mlt__mono_ns() + 5000000000LL), MLT_ERR_RATE_LIMITED);
    ck_assert_uint_eq(f->n_reqs, 1);
    ck_assert_uint_eq(f->n_waits, 0);
    finish(&c, f);

    /* a deadline already past: one attempt */
    f = fake_new();
    client_new(&c, f, 7, 0.1, 0);
    push_net(f, MLT_ERR_NETWORK, false);
    ck_assert_int_eq(call(&c, true, mlt__mono_ns() - 1), MLT_ERR_NETWORK);
    ck_assert_uint_eq(f->n_reqs, 1);
    finish(&c, f);
}
END_TEST

START_TEST(call_without_retry_ambiguous_returns_at_once_on_ambiguous_failure)
{
    /* ambiguous: 503, 500, 408, network error after sending, garbled 200 */
    fake *f = fake_new();
    mlt__client c;
    client_new(&c, f, 7, 1, 0);
    push(f, 503, E503);
    push(f, 500, "oops");
    push(f, 408, "timeout");
    push_net(f, MLT_ERR_NETWORK, true);
    push(f, 200, "not json");
    ck_assert_int_eq(call(&c, false, -1), MLT_ERR_SERVER);
    ck_assert_int_eq(call(&c, false, -1), MLT_ERR_SERVER);
    ck_assert_int_eq(call(&c, false, -1), MLT_ERR_TIMEOUT);
    ck_assert_int_eq(call(&c, false, -1), MLT_ERR_NETWORK);
    ck_assert_int_eq(call(&c, false, -1), MLT_ERR_PROTOCOL);
    ck_assert_uint_eq(f->n_reqs, 5);
    ck_assert_uint_eq(f->n_waits, 0);
    finish(&c, f);

    /* failures that surely did not reach the server are still retried */
    f = fake_new();
    client_new(&c, f, 7, 1, 0);
    push_net(f, MLT_ERR_NETWORK, false);
    push(f, 429, "slow");
    push(f, 200, "{}");
    ck_assert_int_eq(call(&c, false, -1), MLT_OK);
    ck_assert_uint_eq(f->n_reqs, 3);
    ck_assert_uint_eq(f->n_waits, 2);
    finish(&c, f);
}
END_TEST

typedef struct log_count {
    int warn;
    int other;
} log_count;

static void count_log(int level, const char *message, void *userdata)
{
    log_count *n = userdata;
    ck_assert_ptr_nonnull(message);
    if (level == MLT_LOG_WARN) {
        n->warn++;
    } else {
        n->other++;
    }
}

START_TEST(call_reports_each_retry_to_the_logger)
{
    fake *f = fake_new();
    mlt__client c;
    client_new(&c, f, 7, 1, 0);
    log_count n = {0, 0};
    c.logger.fn = count_log;
    c.logger.userdata = &n;
    push(f, 503, E503);
    push_net(f, MLT_ERR_NETWORK, false);
    push(f, 200, "{}");
    ck_assert_int_eq(call(&c, true, -1), MLT_OK);
    ck_assert_int_eq(n.warn, 2);
    finish(&c, f);
}
END_TEST

/* ---- experiments --------------------------------------------------------------------------- */

static const char *const EXP_ACTIVE =
    "{\"experiment\":{\"experiment_id\":\"12\",\"name\":\"my exp\","
    "\"lifecycle_stage\":\"active\",\"tags\":[]}}";

START_TEST(experiment_found_by_name)
{
    fake *f = fake_new();
    mlt__client c;
    client_new(&c, f, 7, 1, 0);
    push(f, 200, EXP_ACTIVE);
    char *id = NULL;
    char err[512] = "";
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__client_experiment(&c, "my exp", &id)),
                     MLT_OK);
    ck_assert_str_eq(id, "12");
    free(id);
    ck_assert_uint_eq(f->n_reqs, 1);
    assert_request(f, 0, "GET", "experiments/get-by-name?experiment_name=my%20exp");
    finish(&c, f);
}
END_TEST

START_TEST(experiment_created_when_missing)
{
    fake *f = fake_new();
    mlt__client c;
    client_new(&c, f, 7, 1, 0);
    push(f, 404, E404);
    push(f, 200, "{\"experiment_id\":\"13\"}");
    char *id = NULL;
    char err[512] = "";
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__client_experiment(&c, "new exp", &id)),
                     MLT_OK);
    ck_assert_str_eq(id, "13");
    free(id);
    ck_assert_uint_eq(f->n_reqs, 2);
    assert_request(f, 0, "GET", "experiments/get-by-name?experiment_name=new%20exp");
    assert_request(f, 1, "POST", "experiments/create");
    cJSON *j = request_json(f, 1);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(j, "name")->valuestring, "new exp");
    cJSON_Delete(j);
    finish(&c, f);
}
END_TEST

START_TEST(experiment_create_race_reads_the_winner)
{
    fake *f = fake_new();
    mlt__client c;
    client_new(&c, f, 7, 1, 0);
    push(f, 404, E404);
    push(f, 400,
         "{\"error_code\":\"RESOURCE_ALREADY_EXISTS\",\"message\":\"Experiment 'my exp' already "
         "exists.\"}");
    push(f, 200, EXP_ACTIVE);
    char *id = NULL;
    char err[512] = "";
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__client_experiment(&c, "my exp", &id)),
                     MLT_OK);
    ck_assert_str_eq(id, "12");
    free(id);
    ck_assert_uint_eq(f->n_reqs, 3);
    assert_request(f, 0, "GET", "experiments/get-by-name?experiment_name=my%20exp");
    assert_request(f, 1, "POST", "experiments/create");
    assert_request(f, 2, "GET", "experiments/get-by-name?experiment_name=my%20exp");
    finish(&c, f);
}
END_TEST

START_TEST(experiment_deleted_is_rejected_with_a_message)
{
    fake *f = fake_new();
    mlt__client c;
    client_new(&c, f, 7, 1, 0);
    push(f, 200,
         "{\"experiment\":{\"experiment_id\":\"9\",\"name\":\"old\","
         "\"lifecycle_stage\":\"deleted\"}}");
    char *id = NULL;
    char err[512] = "";
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__client_experiment(&c, "old", &id)),
                     MLT_ERR_REJECTED);
    ck_assert_ptr_null(id);
    ck_assert_msg(strstr(err, "deleted") != NULL, "message '%s' does not say deleted", err);
    ck_assert_ptr_nonnull(strstr(err, "old"));
    ck_assert_uint_eq(f->n_reqs, 1);
    finish(&c, f);
}
END_TEST

START_TEST(experiment_failures_are_reported)
{
    /* auth failure on the get */
    fake *f = fake_new();
    mlt__client c;
    client_new(&c, f, 7, 1, 0);
    push(f, 401, "Unauthorized");
    char *id = NULL;
    char err[512] = "";
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__client_experiment(&c, "e", &id)),
                     MLT_ERR_AUTH);
    ck_assert_ptr_null(id);
    ck_assert_str_ne(err, "");
    finish(&c, f);

    /* the create is refused */
    f = fake_new();
    client_new(&c, f, 7, 1, 0);
    push(f, 404, E404);
    push(f, 400, E400);
    err[0] = '\0';
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__client_experiment(&c, "e", &id)),
                     MLT_ERR_REJECTED);
    ck_assert_ptr_null(id);
    ck_assert_msg(strstr(err, "bad value from server") != NULL, "message '%s'", err);
    finish(&c, f);

    /* an answer without an id */
    f = fake_new();
    client_new(&c, f, 7, 1, 0);
    push(f, 200, "{\"experiment\":{\"name\":\"e\"}}");
    err[0] = '\0';
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__client_experiment(&c, "e", &id)),
                     MLT_ERR_PROTOCOL);
    ck_assert_ptr_null(id);
    ck_assert_str_ne(err, "");
    finish(&c, f);
}
END_TEST

/* A name too long to put in the URL fails before anything is sent, with a message. */
START_TEST(experiment_name_too_long_for_the_url_fails_with_a_message)
{
    fake *f = fake_new();
    mlt__client c;
    client_new(&c, f, 7, 1, 0);
    char name[4 * 300 + 1];
    for (int i = 0; i < 300; i++) {
        memcpy(name + 4 * i, "\xf0\x9f\x98\x80", 4);
    }
    name[4 * 300] = '\0';
    char *id = NULL;
    char err[512] = "";
    mlt_err rc = mlt__errbuf(err, sizeof err, mlt__client_experiment(&c, name, &id));
    size_t sent = f->n_reqs;
    free(id);
    finish(&c, f);
    ck_assert_int_eq(rc, MLT_ERR_VALUE_TOO_LONG);
    ck_assert_ptr_null(id);
    ck_assert_uint_eq(sent, 0);
    ck_assert_msg(err[0] != '\0', "%s but errbuf is empty", mlt_err_name(rc));
}
END_TEST

/* ---- run creation -------------------------------------------------------------------------- */

static const char *const RUN_KEY = "0b1e4f3a-9c2d-4e5f-8a6b-7c8d9e0f1a2b";

/* The value of tag key in a runs/create body, or NULL. */
static const char *tag_value(const cJSON *body, const char *key)
{
    const cJSON *tags = cJSON_GetObjectItemCaseSensitive(body, "tags");
    const cJSON *t;
    cJSON_ArrayForEach(t, tags)
    {
        const cJSON *k = cJSON_GetObjectItemCaseSensitive(t, "key");
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(t, "value");
        if (cJSON_IsString(k) && strcmp(k->valuestring, key) == 0 && cJSON_IsString(v)) {
            return v->valuestring;
        }
    }
    return NULL;
}

static mlt_err create_run(mlt__client *c, char **id, char *err, size_t errlen)
{
    const mlt__kv tags[] = {{"mlflow.user", "alice"}, {"mlflow.source.type", "LOCAL"}};
    return mlt__errbuf(
        err, errlen,
        mlt__client_create_run(c, "5", RUN_KEY, "train", 1700000000123LL, tags, 2, false, -1, id));
}

static void assert_search_request(const fake *f, size_t i)
{
    assert_request(f, i, "POST", "runs/search");
    cJSON *j = request_json(f, i);
    char want[128];
    snprintf(want, sizeof want, "tags.\"mltrack.client_run_key\" = '%s'", RUN_KEY);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(j, "filter")->valuestring, want);
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(j, "experiment_ids");
    ck_assert_str_eq(cJSON_GetArrayItem(ids, 0)->valuestring, "5");
    cJSON_Delete(j);
}

static const char *const RUN_CREATED = "{\"run\":{\"info\":{\"run_id\":\"r1\"},\"data\":{}}}";
static const char *const RUN_FOUND =
    "{\"runs\":[{\"info\":{\"run_id\":\"found-run\",\"status\":\"RUNNING\"},\"data\":{}}]}";

START_TEST(create_run_sends_the_client_run_key_tag)
{
    fake *f = fake_new();
    mlt__client c;
    client_new(&c, f, 7, 1, 0);
    push(f, 200, RUN_CREATED);
    char *id = NULL;
    char err[512] = "";
    ck_assert_int_eq(create_run(&c, &id, err, sizeof err), MLT_OK);
    ck_assert_str_eq(id, "r1");
    free(id);
    ck_assert_uint_eq(f->n_reqs, 1);
    assert_request(f, 0, "POST", "runs/create");
    cJSON *j = request_json(f, 0);
    ck_assert_str_eq(tag_value(j, "mltrack.client_run_key"), RUN_KEY);
    ck_assert_str_eq(tag_value(j, "mlflow.user"), "alice");
    ck_assert_str_eq(tag_value(j, "mlflow.source.type"), "LOCAL");
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "tags")), 3);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(j, "experiment_id")->valuestring, "5");
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(j, "run_name")->valuestring, "train");
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(j, "user_id")->valuestring, "alice");
    ck_assert_ptr_nonnull(strstr(f->reqs[0].body, "\"start_time\":1700000000123"));
    cJSON_Delete(j);
    finish(&c, f);
}
END_TEST

START_TEST(create_run_after_ambiguous_503_finds_the_run_and_does_not_create_again)
{
    fake *f = fake_new();
    mlt__client c;
    client_new(&c, f, 7, 1, 0);
    push(f, 503, E503);
    push(f, 200, RUN_FOUND);
    char *id = NULL;
    char err[512] = "";
    ck_assert_int_eq(create_run(&c, &id, err, sizeof err), MLT_OK);
    ck_assert_str_eq(id, "found-run");
    free(id);
    ck_assert_int_eq(count_path(f, "runs/create"), 1);
    ck_assert_uint_eq(f->n_reqs, 2);
    assert_request(f, 0, "POST", "runs/create");
    assert_search_request(f, 1);
    finish(&c, f);
}
END_TEST

START_TEST(create_run_after_network_error_maybe_sent_finds_the_run)
{
    fake *f = fake_new();
    mlt__client c;
    client_new(&c, f, 7, 1, 0);
    push_net(f, MLT_ERR_NETWORK, true);
    push(f, 200, RUN_FOUND);
    char *id = NULL;
    char err[512] = "";
    ck_assert_int_eq(create_run(&c, &id, err, sizeof err), MLT_OK);
    ck_assert_str_eq(id, "found-run");
    free(id);
    ck_assert_int_eq(count_path(f, "runs/create"), 1);
    ck_assert_int_eq(count_path(f, "runs/search"), 1);
    finish(&c, f);

    /* a timeout after sending, and a garbled 200, are ambiguous too */
    const scripted amb[] = {
        {0, NULL, -1, MLT_ERR_TIMEOUT, true, NULL},
        {408, "Request Timeout", -1, MLT_OK, false, NULL},
        {200, "<html>proxy page</html>", -1, MLT_OK, false, NULL},
    };
    for (size_t i = 0; i < sizeof amb / sizeof amb[0]; i++) {
        f = fake_new();
        client_new(&c, f, 7, 1, 0);
        push_full(f, amb[i].status, amb[i].body, -1, amb[i].net_err, amb[i].maybe_sent);
        push(f, 200, RUN_FOUND);
        id = NULL;
        ck_assert_int_eq(create_run(&c, &id, err, sizeof err), MLT_OK);
        ck_assert_str_eq(id, "found-run");
        free(id);
        ck_assert_int_eq(count_path(f, "runs/create"), 1);
        finish(&c, f);
    }
}
END_TEST

START_TEST(create_run_after_ambiguous_failure_creates_again_when_search_finds_nothing)
{
    const char *empty[] = {"{}", "{\"runs\":[]}"};
    for (int k = 0; k < 2; k++) {
        fake *f = fake_new();
        mlt__client c;
        client_new(&c, f, 7, 1, 0);
        push(f, 503, E503);
        push(f, 200, empty[k]);
        push(f, 200, "{\"run\":{\"info\":{\"run_id\":\"r2\"}}}");
        char *id = NULL;
        char err[512] = "";
        ck_assert_int_eq(create_run(&c, &id, err, sizeof err), MLT_OK);
        ck_assert_str_eq(id, "r2");
        free(id);
        ck_assert_uint_eq(f->n_reqs, 3);
        assert_request(f, 0, "POST", "runs/create");
        assert_search_request(f, 1);
        assert_request(f, 2, "POST", "runs/create");
        ck_assert_str_eq(f->reqs[2].body, f->reqs[0].body); /* same key, same request */
        ck_assert_uint_eq(f->n_waits, 1);
        finish(&c, f);
    }
}
END_TEST

START_TEST(create_run_retries_a_failure_that_never_reached_the_server_without_searching)
{
    fake *f = fake_new();
    mlt__client c;
    client_new(&c, f, 7, 1, 0);
    push_net(f, MLT_ERR_NETWORK, false);
    push_full(f, 429, "slow", 1, MLT_OK, false);
    push(f, 200, RUN_CREATED);
    char *id = NULL;
    char err[512] = "";
    ck_assert_int_eq(create_run(&c, &id, err, sizeof err), MLT_OK);
    ck_assert_str_eq(id, "r1");
    free(id);
    ck_assert_int_eq(count_path(f, "runs/create"), 3);
    ck_assert_int_eq(count_path(f, "runs/search"), 0);
    ck_assert_uint_eq(f->n_waits, 2);
    finish(&c, f);
}
END_TEST

START_TEST(create_run_rejected_is_not_retried)
{
    fake *f = fake_new();
    mlt__client c;
    client_new(&c, f, 7, 1, 0);
    push(f, 400, E400);
    char *id = NULL;
    char err[512] = "";
    ck_assert_int_eq(create_run(&c, &id, err, sizeof err), MLT_ERR_REJECTED);
    ck_assert_ptr_null(id);
    ck_assert_msg(strstr(err, "bad value from server") != NULL, "message '%s'", err);
    ck_assert_uint_eq(f->n_reqs, 1);
    finish(&c, f);
}
END_TEST

START_TEST(create_run_does_not_create_again_when_the_search_fails)
{
    fake *f = fake_new();
    mlt__client c;
    client_new(&c, f, 7, 1, 0);
    push(f, 503, E503);
    push(f, 403, "{\"error_code\":\"PERMISSION_DENIED\",\"message\":\"no search\"}");
    char *id = NULL;
    char err[512] = "";
    mlt_err rc = create_run(&c, &id, err, sizeof err);
    ck_assert_int_ne(rc, MLT_OK);
    ck_assert_ptr_null(id);
    ck_assert_str_ne(err, "");
    ck_assert_int_eq(count_path(f, "runs/create"), 1);
    ck_assert_int_eq(count_path(f, "runs/search"), 1);
    finish(&c, f);
}
END_TEST

START_TEST(create_run_gives_up_after_max_retries_of_ambiguous_failures)
{
    fake *f = fake_new();
    mlt__client c;
    client_new(&c, f, 2, 1, 0);
    for (int i = 0; i < 3; i++) {
        push(f, 503, E503);
        push(f, 200, "{\"runs\":[]}");
    }
    char *id = NULL;
    char err[512] = "";
    ck_assert_int_eq(create_run(&c, &id, err, sizeof err), MLT_ERR_SERVER);
    ck_assert_ptr_null(id);
    ck_assert_msg(strstr(err, "database is locked") != NULL, "message '%s'", err);
    ck_assert_int_eq(count_path(f, "runs/create"), 3);
    ck_assert_int_eq(count_path(f, "runs/search"), 3);
    ck_assert_uint_eq(f->n_waits, 2);
    finish(&c, f);
}
END_TEST

START_TEST(create_run_answer_without_run_id_is_a_protocol_error)
{
    fake *f = fake_new();
    mlt__client c;
    client_new(&c, f, 7, 1, 0);
    push(f, 200, "{\"run\":{}}");
    char *id = NULL;
    char err[512] = "";
    ck_assert_int_eq(create_run(&c, &id, err, sizeof err), MLT_ERR_PROTOCOL);
    ck_assert_ptr_null(id);
    ck_assert_str_ne(err, "");
    finish(&c, f);
}
END_TEST

START_TEST(ids_in_answers_that_the_run_map_cannot_keep_are_protocol_errors)
{
    /* found with fuzz_answer: a run or experiment id from an answer went into the run map as
     * it came, where ids are space-separated words of at most 127 characters and "-" means
     * none: "", "a b" or "-" read back as another id, as none, or dropped the run's entry */
    char long_id[129];
    memset(long_id, 'a', 128);
    long_id[128] = '\0';
    const char *const bad[] = {"", "-", "a b", "a\\nb", "caf\u00e9", long_id};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char run[512], exp[512], runs[512]; /* the fake keeps the pointers */
        fake *f = fake_new();
        mlt__client c;
        client_new(&c, f, 0, 1, 0);
        snprintf(run, sizeof run, "{\"run\":{\"info\":{\"run_id\":\"%s\"}}}", bad[i]);
        push(f, 200, run);
        snprintf(exp, sizeof exp,
                 "{\"experiment\":{\"experiment_id\":\"%s\",\"lifecycle_stage\":\"active\"}}",
                 bad[i]);
        push(f, 200, exp);
        snprintf(runs, sizeof runs, "{\"runs\":[{\"info\":{\"run_id\":\"%s\"}}]}", bad[i]);
        push(f, 200, runs);
        char *id = NULL;
        char err[512] = "";
        ck_assert_int_eq(create_run(&c, &id, err, sizeof err), MLT_ERR_PROTOCOL);
        ck_assert_ptr_null(id);
        ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__client_experiment(&c, "e", &id)),
                         MLT_ERR_PROTOCOL);
        ck_assert_ptr_null(id);
        ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__client_find_run(&c, "5", RUN_KEY, &id)),
                         MLT_ERR_PROTOCOL);
        ck_assert_ptr_null(id);
        ck_assert_ptr_nonnull(strstr(err, "run id"));
        finish(&c, f);
    }
    /* the longest id the map keeps */
    long_id[127] = '\0';
    char body[512];
    fake *f = fake_new();
    mlt__client c;
    client_new(&c, f, 0, 1, 0);
    snprintf(body, sizeof body, "{\"run\":{\"info\":{\"run_id\":\"%s\"}}}", long_id);
    push(f, 200, body);
    char *id = NULL;
    char err[512] = "";
    ck_assert_int_eq(create_run(&c, &id, err, sizeof err), MLT_OK);
    ck_assert_str_eq(id, long_id);
    free(id);
    finish(&c, f);
}
END_TEST

/* ---- log batches --------------------------------------------------------------------------- */

static mlt__metric *make_metrics(size_t n)
{
    mlt__metric *m = calloc(n, sizeof *m);
    ck_assert_ptr_nonnull(m);
    for (size_t i = 0; i < n; i++) {
        m[i].key = mlt__aprintf("m%zu", i);
        ck_assert_ptr_nonnull(m[i].key);
        m[i].value = (double)i;
        m[i].timestamp_ms = 1700000000000LL + (int64_t)i;
        m[i].step = (int64_t)i;
    }
    return m;
}

static void free_metrics(mlt__metric *m, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free((char *)m[i].key);
    }
    free(m);
}

static mlt__kv *make_kvs(size_t n, const char *prefix)
{
    mlt__kv *kv = calloc(n, sizeof *kv);
    ck_assert_ptr_nonnull(kv);
    for (size_t i = 0; i < n; i++) {
        kv[i].key = mlt__aprintf("%s%zu", prefix, i);
        kv[i].value = mlt__aprintf("value %zu", i);
        ck_assert(kv[i].key && kv[i].value);
    }
    return kv;
}

static void free_kvs(mlt__kv *kv, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free((char *)kv[i].key);
        free((char *)kv[i].value);
    }
    free(kv);
}

/* Asserts log-batch request i carries np params, nt tags and nm metrics, the first of each being
 * number p0, t0, m0 of its kind. */
static void assert_batch_request(const fake *f, size_t i, int np, int p0, int nt, int t0, int nm,
                                 int m0)
{
    assert_request(f, i, "POST", "runs/log-batch");
    cJSON *j = request_json(f, i);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(j, "run_id")->valuestring, "run-42");
    const struct {
        const char *name, *prefix;
        int n, first;
    } arrays[] = {{"params", "p", np, p0}, {"tags", "t", nt, t0}, {"metrics", "m", nm, m0}};
    for (int a = 0; a < 3; a++) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, arrays[a].name);
        ck_assert_msg(cJSON_GetArraySize(arr) == arrays[a].n, "request %zu: %d %s, want %d", i,
                      cJSON_GetArraySize(arr), arrays[a].name, arrays[a].n);
        int k = arrays[a].first;
        const cJSON *e;
        cJSON_ArrayForEach(e, arr)
        {
            char want[32];
            snprintf(want, sizeof want, "%s%d", arrays[a].prefix, k++);
            const cJSON *key = cJSON_GetObjectItemCaseSensitive(e, "key");
            if (!cJSON_IsString(key) || strcmp(key->valuestring, want) != 0) {
                ck_abort_msg("request %zu: %s out of order, want %s", i, arrays[a].name, want);
            }
        }
    }
    cJSON_Delete(j);
}

START_TEST(log_batch_splits_2500_metrics_into_three_requests)
{
    fake *f = fake_new();
    mlt__client c;
    client_new(&c, f, 7, 1, 0);
    for (int i = 0; i < 3; i++) {
        push(f, 200, "{}");
    }
    mlt__metric *m = make_metrics(2500);
    mlt__batch b = {m, 2500, NULL, 0, NULL, 0};
    char err[512] = "";
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__client_log_batch(&c, "run-42", &b, -1)),
                     MLT_OK);
    ck_assert_uint_eq(f->n_reqs, 3);
    assert_batch_request(f, 0, 0, 0, 0, 0, 1000, 0);
    assert_batch_request(f, 1, 0, 0, 0, 0, 1000, 1000);
    assert_batch_request(f, 2, 0, 0, 0, 0, 500, 2000);
    ck_assert_uint_eq(b.n_metrics + b.n_params + b.n_tags, 0);
    ck_assert_ptr_eq(b.metrics, m + 2500);
    free_metrics(m, 2500);
    finish(&c, f);
}
END_TEST

START_TEST(log_batch_splits_params_tags_and_metrics_to_the_limits)
{
    fake *f = fake_new();
    mlt__client c;
    client_new(&c, f, 7, 1, 0);
    push(f, 200, "{}");
    push(f, 200, "{}");
    mlt__kv *p = make_kvs(150, "p");
    mlt__kv *t = make_kvs(150, "t");
    mlt__metric *m = make_metrics(900);
    mlt__batch b = {m, 900, p, 150, t, 150};
    char err[512] = "";
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__client_log_batch(&c, "run-42", &b, -1)),
                     MLT_OK);
    ck_assert_uint_eq(f->n_reqs, 2);
    assert_batch_request(f, 0, 100, 0, 100, 0, 800, 0);
    assert_batch_request(f, 1, 50, 100, 50, 100, 100, 800);
    ck_assert_uint_eq(b.n_metrics + b.n_params + b.n_tags, 0);
    free_kvs(p, 150);
    free_kvs(t, 150);
    free_metrics(m, 900);
    finish(&c, f);
}
END_TEST

START_TEST(log_batch_failure_in_the_middle_leaves_the_unsent_rest)
{
    fake *f = fake_new();
    mlt__client c;
    client_new(&c, f, 7, 1, 0);
    push(f, 200, "{}");
    push(f, 400, E400);
    mlt__metric *m = make_metrics(2500);
    mlt__batch b = {m, 2500, NULL, 0, NULL, 0};
    char err[512] = "";
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__client_log_batch(&c, "run-42", &b, -1)),
                     MLT_ERR_REJECTED);
    ck_assert_msg(strstr(err, "bad value from server") != NULL, "message '%s'", err);
    ck_assert_uint_eq(f->n_reqs, 2);
    ck_assert_uint_eq(b.n_metrics, 1500);
    ck_assert_ptr_eq(b.metrics, m + 1000);
    ck_assert_str_eq(b.metrics[0].key, "m1000");
    free_metrics(m, 2500);
    finish(&c, f);

    /* with every kind: the unsent rest of each */
    f = fake_new();
    client_new(&c, f, 7, 1, 0);
    push(f, 200, "{}");
    push(f, 404, E404);
    mlt__kv *p = make_kvs(150, "p");
    mlt__kv *t = make_kvs(150, "t");
    m = make_metrics(900);
    mlt__batch all = {m, 900, p, 150, t, 150};
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__client_log_batch(&c, "run-42", &all, -1)),
                     MLT_ERR_NOT_FOUND);
    ck_assert_uint_eq(all.n_params, 50);
    ck_assert_ptr_eq(all.params, p + 100);
    ck_assert_uint_eq(all.n_tags, 50);
    ck_assert_ptr_eq(all.tags, t + 100);
    ck_assert_uint_eq(all.n_metrics, 100);
    ck_assert_ptr_eq(all.metrics, m + 800);
    free_kvs(p, 150);
    free_kvs(t, 150);
    free_metrics(m, 900);
    finish(&c, f);
}
END_TEST

START_TEST(log_batch_retries_a_transient_failure_of_one_request)
{
    fake *f = fake_new();
    mlt__client c;
    client_new(&c, f, 7, 1, 0);
    push(f, 200, "{}");
    push(f, 503, E503);
    push(f, 200, "{}");
    push(f, 200, "{}");
    mlt__metric *m = make_metrics(2500);
    mlt__batch b = {m, 2500, NULL, 0, NULL, 0};
    char err[512] = "";
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__client_log_batch(&c, "run-42", &b, -1)),
                     MLT_OK);
    ck_assert_uint_eq(f->n_reqs, 4);
    ck_assert_str_eq(f->reqs[1].body, f->reqs[2].body);
    assert_batch_request(f, 3, 0, 0, 0, 0, 500, 2000);
    ck_assert_uint_eq(b.n_metrics, 0);
    free_metrics(m, 2500);
    finish(&c, f);
}
END_TEST

START_TEST(log_batch_of_nothing_sends_nothing)
{
    fake *f = fake_new();
    mlt__client c;
    client_new(&c, f, 7, 1, 0);
    mlt__batch b = {NULL, 0, NULL, 0, NULL, 0};
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__client_log_batch(&c, "run-42", &b, -1)), MLT_OK);
    ck_assert_uint_eq(f->n_reqs, 0);
    finish(&c, f);
}
END_TEST

/* ---- run end ------------------------------------------------------------------------------- */

START_TEST(end_run_sends_status_and_end_time)
{
    fake *f = fake_new();
    mlt__client c;
    client_new(&c, f, 7, 1, 0);
    push(f, 503, E503); /* runs/update is safe to repeat */
    push(f, 200, "{\"run_info\":{\"status\":\"FAILED\"}}");
    char err[512] = "";
    ck_assert_int_eq(
        mlt__errbuf(err, sizeof err,
                    mlt__client_end_run(&c, "run-42", MLT_RUN_FAILED, 1700000000999LL, -1)),
        MLT_OK);
    ck_assert_uint_eq(f->n_reqs, 2);
    assert_request(f, 1, "POST", "runs/update");
    cJSON *j = request_json(f, 1);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(j, "run_id")->valuestring, "run-42");
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(j, "status")->valuestring, "FAILED");
    ck_assert_ptr_nonnull(strstr(f->reqs[1].body, "\"end_time\":1700000000999"));
    cJSON_Delete(j);
    finish(&c, f);

    f = fake_new();
    client_new(&c, f, 7, 1, 0);
    push(f, 404, E404);
    err[0] = '\0';
    ck_assert_int_eq(
        mlt__errbuf(err, sizeof err, mlt__client_end_run(&c, "gone", MLT_RUN_FINISHED, 1, -1)),
        MLT_ERR_NOT_FOUND);
    ck_assert_msg(strstr(err, "Could not find it") != NULL, "message '%s'", err);
    finish(&c, f);
}
END_TEST

/* ---- multipart uploads ---- */

#define ART BASE "/api/2.0/mlflow-artifacts/"
#define MIB (1u << 20)

/* A file of len bytes (unlinked: gone at close). */
static int temp_file(uint64_t len)
{
    char path[] = "/tmp/check_client_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    unlink(path);
    ck_assert_int_eq(ftruncate(fd, (off_t)len), 0);
    return fd;
}

/* A client as client_new, with the multipart options (on: "true", "false" or NULL to ask the
 * server) and 1 MiB parts from 2 MiB up. */
static void mpu_client(mlt__client *c, fake *f, const char *on)
{
    mlt_options *o = mlt_options_new();
    ck_assert_ptr_nonnull(o);
    ck_assert_int_eq(mlt_options_set_tracking_uri(o, BASE), MLT_OK);
    ck_assert_int_eq(mlt_options_set_retries(o, 3, 1, 0), MLT_OK);
    if (on) {
        ck_assert_int_eq(mlt_options_set(o, "multipart_upload", on, NULL, 0), MLT_OK);
    }
    ck_assert_int_eq(mlt_options_set(o, "multipart_min_bytes", "2097152", NULL, 0), MLT_OK);
    ck_assert_int_eq(mlt_options_set(o, "multipart_chunk_bytes", "1048576", NULL, 0), MLT_OK);
    mlt__transport tr = {.perform = fake_perform, .destroy = fake_destroy, .self = f};
    ck_assert_int_eq(mlt__client_init_with(c, o, tr), MLT_OK);
    mlt_options_free(o);
    c->sleep_fn = fake_sleep;
    c->sleep_ud = f;
}

static const char *const CREATE3 =
    "{\"upload_id\":\"up-1\",\"credentials\":["
    "{\"url\":\"http://store/b/k?partNumber=1&sig=a\",\"part_number\":1},"
    "{\"url\":\"http://store/b/k?partNumber=2&sig=b\",\"part_number\":2,"
    "\"headers\":{\"x-ms-blob-type\":\"BlockBlob\"}},"
    "{\"url\":\"http://store/b/k?partNumber=3&sig=c\",\"part_number\":3}]}";

START_TEST(multipart_sends_each_part_and_retries_a_failed_one_alone)
{
    fake *f = fake_new();
    mlt__client c;
    mpu_client(&c, f, "true");
    int fd = temp_file(2 * MIB + 5); /* three parts: 1 MiB, 1 MiB, 5 bytes */
    push(f, 200, CREATE3);
    push_etag(f, "\"e1\"");
    push(f, 503, "<Error><Code>SlowDown</Code></Error>");
    push_etag(f, "\"e2\"");
    push_etag(f, "\"e3\"");
    push(f, 200, "{}");
    char err[512] = "";
    ck_assert_int_eq(mlt__errbuf(err, sizeof err,
                                 mlt__client_put_artifact(&c, "/0/run-1/artifacts", "d/m.bin", fd,
                                                          2 * MIB + 5, -1, NULL, NULL)),
                     MLT_OK);
    ck_assert_uint_eq(f->n_reqs, 6);
    ck_assert_str_eq(f->reqs[0].url, ART "mpu/create/0/run-1/artifacts/d");
    cJSON *j = request_json(f, 0);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(j, "path")->valuestring, "m.bin");
    ck_assert_int_eq(cJSON_GetObjectItemCaseSensitive(j, "num_parts")->valueint, 3);
    cJSON_Delete(j);
    /* the parts, each its own range; part 2 twice (the 503), with the header the server named */
    const char *urls[] = {"partNumber=1", "partNumber=2", "partNumber=2", "partNumber=3"};
    const uint64_t offs[] = {0, MIB, MIB, 2 * MIB}, lens[] = {MIB, MIB, MIB, 5};
    for (size_t i = 0; i < 4; i++) {
        ck_assert_str_eq(f->reqs[1 + i].method, "PUT");
        ck_assert_ptr_nonnull(strstr(f->reqs[1 + i].url, urls[i]));
        ck_assert_uint_eq(f->reqs[1 + i].up_off, offs[i]);
        ck_assert_uint_eq(f->reqs[1 + i].up_len, lens[i]);
        ck_assert_str_eq(f->reqs[1 + i].header,
                         i == 1 || i == 2 ? "x-ms-blob-type: BlockBlob" : "");
    }
    ck_assert_str_eq(f->reqs[5].url, ART "mpu/complete/0/run-1/artifacts/d");
    j = request_json(f, 5);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(j, "upload_id")->valuestring, "up-1");
    const cJSON *parts = cJSON_GetObjectItemCaseSensitive(j, "parts");
    ck_assert_int_eq(cJSON_GetArraySize(parts), 3);
    for (int i = 0; i < 3; i++) {
        const cJSON *p = cJSON_GetArrayItem(parts, i);
        char want[8];
        snprintf(want, sizeof want, "\"e%d\"", i + 1);
        ck_assert_int_eq(cJSON_GetObjectItemCaseSensitive(p, "part_number")->valueint, i + 1);
        ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(p, "etag")->valuestring, want);
    }
    cJSON_Delete(j);
    close(fd);
    finish(&c, f);
}
END_TEST

START_TEST(multipart_aborts_when_a_part_fails_for_good)
{
    fake *f = fake_new();
    mlt__client c;
    mpu_client(&c, f, "true");
    int fd = temp_file(2 * MIB + 5);
    push(f, 200, CREATE3);
    push_etag(f, "\"e1\"");
    push(f, 403, "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>");
    push(f, 200, "{}"); /* abort */
    char err[1024] = "";
    mlt_err e = mlt__errbuf(err, sizeof err,
                            mlt__client_put_artifact(&c, "0/run-1/artifacts", "m.bin", fd,
                                                     2 * MIB + 5, -1, NULL, NULL));
    ck_assert_int_eq(e, MLT_ERR_AUTH);
    ck_assert_msg(strstr(err, "part 2 of 3") && strstr(err, "Request has expired") &&
                      strstr(err, "aborted"),
                  "message '%s'", err);
    ck_assert_uint_eq(f->n_reqs, 4); /* part 3 never sent: the upload stopped at the failure */
    ck_assert_str_eq(f->reqs[3].url, ART "mpu/abort/0/run-1/artifacts");
    cJSON *j = request_json(f, 3);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(j, "upload_id")->valuestring, "up-1");
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(j, "path")->valuestring, "m.bin");
    cJSON_Delete(j);
    close(fd);
    finish(&c, f);
}
END_TEST

START_TEST(multipart_is_asked_of_the_server_once_and_a_501_falls_back_to_one_put)
{
    fake *f = fake_new();
    mlt__client c;
    mpu_client(&c, f, NULL);
    int fd = temp_file(3 * MIB);
    push(f, 200, "{\"multipart_uploads_enabled\":true}");
    push(f, 501,
         "{\"error_code\":\"NOT_IMPLEMENTED\",\"message\":\"Multipart upload is not supported "
         "for the current artifact repository\"}");
    push(f, 200, NULL); /* the single PUT */
    push(f, 200, NULL); /* the next large file: one PUT, nothing asked */
    push(f, 200, NULL); /* a small one: one PUT */
    char err[1024] = "";
    ck_assert_msg(mlt__errbuf(err, sizeof err,
                              mlt__client_put_artifact(&c, "0/r/artifacts", "a.bin", fd, 3 * MIB,
                                                       -1, NULL, NULL)) == MLT_OK,
                  "%s", err);
    ck_assert_int_eq(
        mlt__client_put_artifact(&c, "0/r/artifacts", "b.bin", fd, 3 * MIB, -1, NULL, NULL),
        MLT_OK);
    ck_assert_int_eq(mlt__client_put_artifact(&c, "0/r/artifacts", "c.bin", fd, 5, -1, NULL, NULL),
                     MLT_OK);
    ck_assert_uint_eq(f->n_reqs, 5);
    ck_assert_str_eq(f->reqs[0].url, BASE "/api/3.0/mlflow/server-info");
    ck_assert_str_eq(f->reqs[1].url, ART "mpu/create/0/r/artifacts");
    ck_assert_str_eq(f->reqs[2].url, ART "artifacts/0/r/artifacts/a.bin");
    ck_assert_uint_eq(f->reqs[2].up_len, 3 * MIB);
    ck_assert_str_eq(f->reqs[3].url, ART "artifacts/0/r/artifacts/b.bin");
    ck_assert_str_eq(f->reqs[4].url, ART "artifacts/0/r/artifacts/c.bin");
    finish(&c, f);

    /* a server whose store cannot: asked once, then single PUTs; "false" never asks */
    f = fake_new();
    mpu_client(&c, f, NULL);
    push(f, 200, "{\"multipart_uploads_enabled\":false}");
    push(f, 200, NULL);
    push(f, 200, NULL);
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(
            mlt__client_put_artifact(&c, "0/r/artifacts", "a.bin", fd, 3 * MIB, -1, NULL, NULL),
            MLT_OK);
    }
    ck_assert_uint_eq(f->n_reqs, 3);
    ck_assert_str_eq(f->reqs[1].method, "PUT");
    ck_assert_str_eq(f->reqs[2].method, "PUT");
    finish(&c, f);
    f = fake_new();
    mpu_client(&c, f, "false");
    push(f, 200, NULL);
    ck_assert_int_eq(
        mlt__client_put_artifact(&c, "0/r/artifacts", "a.bin", fd, 3 * MIB, -1, NULL, NULL),
        MLT_OK);
    ck_assert_str_eq(f->reqs[0].url, ART "artifacts/0/r/artifacts/a.bin");
    finish(&c, f);
    close(fd);
}
END_TEST

START_TEST(multipart_answers_that_are_not_understood_are_protocol_errors)
{
    /* fewer credentials than parts, then a part answer without an ETag (retried, then given
     * up): each aborts the upload */
    fake *f = fake_new();
    mlt__client c;
    mpu_client(&c, f, "true");
    int fd = temp_file(2 * MIB + 5);
    push(f, 200,
         "{\"upload_id\":\"u\",\"credentials\":[{\"url\":\"http://s/1\",\"part_number\":1}]}");
    push(f, 200, "{}"); /* abort */
    char err[1024] = "";
    ck_assert_int_eq(mlt__errbuf(err, sizeof err,
                                 mlt__client_put_artifact(&c, "0/r/artifacts", "a.bin", fd,
                                                          2 * MIB + 5, -1, NULL, NULL)),
                     MLT_ERR_PROTOCOL);
    ck_assert_msg(strstr(err, "3 credentials"), "message '%s'", err);
    ck_assert_str_eq(f->reqs[1].url, ART "mpu/abort/0/r/artifacts");
    finish(&c, f);

    f = fake_new();
    mpu_client(&c, f, "true");
    push(f, 200, CREATE3);
    for (int i = 0; i < 4; i++) { /* the first try and its 3 retries */
        push(f, 200, NULL);
    }
    push(f, 200, "{}"); /* abort */
    ck_assert_int_eq(mlt__errbuf(err, sizeof err,
                                 mlt__client_put_artifact(&c, "0/r/artifacts", "a.bin", fd,
                                                          2 * MIB + 5, -1, NULL, NULL)),
                     MLT_ERR_PROTOCOL);
    ck_assert_msg(strstr(err, "without an ETag"), "message '%s'", err);
    ck_assert_str_eq(f->reqs[5].url, ART "mpu/abort/0/r/artifacts");
    finish(&c, f);
    close(fd);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("client");
    MLT_ADD_TEST(s, client_init_with_takes_settings_from_the_options);
    MLT_ADD_TEST(s, call_sends_the_request_once_on_success);
    MLT_ADD_TEST(s, call_retries_503_429_and_network_errors_until_success);
    MLT_ADD_TEST(s, call_gives_up_after_max_retries_with_the_last_error);
    MLT_ADD_TEST(s, call_with_zero_retries_tries_once);
    MLT_ADD_TEST(s, call_does_not_retry_permanent_failures);
    MLT_ADD_TEST(s, call_honours_retry_after);
    MLT_ADD_TEST(s, call_caps_retry_after_at_max_backoff);
    MLT_ADD_TEST(s, call_backoff_grows_exponentially_with_bounded_jitter);
    MLT_ADD_TEST(s, backoff_ms_is_capped_and_jittered);
    MLT_ADD_TEST(s, call_stops_retrying_before_the_deadline);
    MLT_ADD_TEST(s, call_without_retry_ambiguous_returns_at_once_on_ambiguous_failure);
    MLT_ADD_TEST(s, call_reports_each_retry_to_the_logger);
    MLT_ADD_TEST(s, experiment_found_by_name);
    MLT_ADD_TEST(s, experiment_created_when_missing);
    MLT_ADD_TEST(s, experiment_create_race_reads_the_winner);
    MLT_ADD_TEST(s, experiment_deleted_is_rejected_with_a_message);
    MLT_ADD_TEST(s, experiment_failures_are_reported);
    MLT_ADD_TEST(s, experiment_name_too_long_for_the_url_fails_with_a_message);
    MLT_ADD_TEST(s, create_run_sends_the_client_run_key_tag);
    MLT_ADD_TEST(s, create_run_after_ambiguous_503_finds_the_run_and_does_not_create_again);
    MLT_ADD_TEST(s, create_run_after_network_error_maybe_sent_finds_the_run);
    MLT_ADD_TEST(s, create_run_after_ambiguous_failure_creates_again_when_search_finds_nothing);
    MLT_ADD_TEST(s, create_run_retries_a_failure_that_never_reached_the_server_without_searching);
    MLT_ADD_TEST(s, create_run_rejected_is_not_retried);
    MLT_ADD_TEST(s, create_run_does_not_create_again_when_the_search_fails);
    MLT_ADD_TEST(s, create_run_gives_up_after_max_retries_of_ambiguous_failures);
    MLT_ADD_TEST(s, create_run_answer_without_run_id_is_a_protocol_error);
    MLT_ADD_TEST(s, ids_in_answers_that_the_run_map_cannot_keep_are_protocol_errors);
    MLT_ADD_TEST(s, log_batch_splits_2500_metrics_into_three_requests);
    MLT_ADD_TEST(s, log_batch_splits_params_tags_and_metrics_to_the_limits);
    MLT_ADD_TEST(s, log_batch_failure_in_the_middle_leaves_the_unsent_rest);
    MLT_ADD_TEST(s, log_batch_retries_a_transient_failure_of_one_request);
    MLT_ADD_TEST(s, log_batch_of_nothing_sends_nothing);
    MLT_ADD_TEST(s, end_run_sends_status_and_end_time);
    MLT_ADD_TEST(s, multipart_sends_each_part_and_retries_a_failed_one_alone);
    MLT_ADD_TEST(s, multipart_aborts_when_a_part_fails_for_good);
    MLT_ADD_TEST(s, multipart_is_asked_of_the_server_once_and_a_501_falls_back_to_one_put);
    MLT_ADD_TEST(s, multipart_answers_that_are_not_understood_are_protocol_errors);
    return mlt_test_run_suite(s);
}
