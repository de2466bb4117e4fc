/*
 * fuzz_answer.c - fuzz target: what the server answers, through every entry point that reads an
 * answer. The MLflow client runs over a scripted transport that plays the answers of the input:
 *
 *   byte 0        the entry point (below), modulo their number
 *   then          answers separated by "\n@@\n"; each is a first line "STATUS[ RETRY-AFTER]"
 *                 and the body after it. STATUS 0 is a network failure ("0s": the request may
 *                 have been sent; "0t": a timeout); RETRY-AFTER goes through the parser of the
 *                 Retry-After header (seconds or an HTTP date).
 *
 * Entry points: classify one answer (and read fields of it), experiment get-or-create, run
 * creation (with and without searching first), the search for a run by key, a log batch, and
 * the run update. No network, no sleeping: retries go on to the next scripted answer.
 */
#include "config.h"

#include "fuzz.h"
#include "mlflow_client.h"
#include "validate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEP "\n@@\n"
#define MAX_ANSWERS 64
#define NOW_MS 1764547200000 /* a fixed "now" for Retry-After dates: runs repeat exactly */

typedef struct script {
    const uint8_t *data;
    size_t size;
    int played;
} script;

/* Fills resp from the next answer of the script; the script running out answers a final 418,
 * which nothing retries. */
static void play(void *self, const mlt__http_request *req, mlt__http_response *resp)
{
    script *s = self;
    (void)req;
    if (s->size == 0 || s->played >= MAX_ANSWERS) {
        resp->status = 418;
        return;
    }
    s->played++;
    const uint8_t *ans;
    size_t n = fuzz_next_part(&s->data, &s->size, SEP, &ans);
    const uint8_t *nl = memchr(ans, '\n', n);
    size_t head_len = nl ? (size_t)(nl - ans) : n;
    char head[128];
    size_t h = head_len < sizeof head - 1 ? head_len : sizeof head - 1;
    memcpy(head, ans, h);
    head[h] = '\0';
    char *end;
    long status = strtol(head, &end, 10);
    if (status == 0) {
        resp->net_err = *end == 't' ? MLT_ERR_TIMEOUT : MLT_ERR_NETWORK;
        resp->maybe_sent = *end == 's' || *end == 't';
        snprintf(resp->errmsg, sizeof resp->errmsg, "scripted %s", /* as curl's: ASCII */
                 resp->net_err == MLT_ERR_TIMEOUT ? "timeout" : "network failure");
        return;
    }
    resp->status = status;
    if (*end == ' ') {
        resp->retry_after_s = mlt__parse_retry_after(end + 1, NOW_MS);
    }
    if (nl) {
        mlt__buf_append(&resp->body, nl + 1, n - head_len - 1);
    }
}

static void destroy(void *self)
{
    (void)self;
}

static void no_sleep(int64_t ms, void *ud)
{
    (void)ms;
    (void)ud;
}

static bool utf8_input; /* the whole input is valid UTF-8 without NUL */

/* Whether s is valid UTF-8 but for an incomplete last character (a message cut to its buffer;
 * dead letters drop that one). */
static bool utf8_but_tail(const char *s)
{
    size_t n = strlen(s), i = n;
    while (i > 0 && n - i < 4 && ((unsigned char)s[i - 1] & 0xC0) == 0x80) {
        i--;
    }
    if (i > 0 && (unsigned char)s[i - 1] >= 0xC0) {
        unsigned char lead = (unsigned char)s[i - 1];
        size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
        if (n - (i - 1) < need) {
            n = i - 1;
        }
    }
    char *copy = mlt__strndup(s, n);
    FUZZ_CHECK(copy != NULL);
    bool ok = mlt__utf8_len(copy) >= 0;
    free(copy);
    return ok;
}

/* A message made from answers that are UTF-8 is UTF-8 (it goes into dead.jsonl). */
static void check_message(const char *msg)
{
    FUZZ_CHECK(!utf8_input || utf8_but_tail(msg));
}

/* What every answer must look like after classification, whatever came. */
static void check_answer(const mlt__api_answer *a)
{
    FUZZ_CHECK(memchr(a->msg, '\0', sizeof a->msg) != NULL);
    FUZZ_CHECK(memchr(a->error_code, '\0', sizeof a->error_code) != NULL);
    FUZZ_CHECK(a->err <= 0);
    FUZZ_CHECK((a->err == MLT_OK) == (a->json != NULL));
    check_message(a->msg);
}

static const char *const paths[] = {
    "run.info.run_id",
    "experiment.experiment_id",
    "experiment.lifecycle_stage",
    "experiment_id",
    "runs",
    "run.info",
    "error_code",
    "message",
    "",
    ".",
    "a..b",
    "run.info.run_id.x",
    "x23456789012345678901234567890123456789012345678901234567890123456789.y",
};

static void classify_one(script *s, uint8_t flags)
{
    mlt__api_req r;
    mlt__api_req_init(&r);
    r.method = flags & 1 ? "POST" : "GET";
    r.what = "fuzzed request";
    r.not_idempotent = flags & 2;
    mlt__http_response resp;
    mlt__http_response_init(&resp);
    play(s, NULL, &resp);
    mlt__api_answer a;
    mlt__api_answer_init(&a);
    mlt__api_classify(&r, &resp, &a);
    check_answer(&a);
    for (size_t i = 0; a.json && i < sizeof paths / sizeof paths[0]; i++) {
        const char *v = mlt__api_json_str(a.json, paths[i]);
        if (v) {
            (void)strlen(v);
        }
    }
    mlt__api_answer_free(&a);
    mlt__http_response_free(&resp);
    mlt__api_req_free(&r);
}

#define RUN_KEY "0f8fad5b-d9cb-469f-a165-70867728950e"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    uint8_t entry = data[0];
    script s = {data + 1, size - 1, 0};
    char *text = mlt__strndup((const char *)data + 1, size - 1);
    FUZZ_CHECK(text != NULL);
    utf8_input = strlen(text) == size - 1 && mlt__utf8_len(text) >= 0;
    free(text);
    if (entry % 7 == 0) {
        classify_one(&s, entry / 7);
        return 0;
    }
    mlt_options *o = mlt_options_new();
    if (!o || mlt_options_set(o, "tracking_uri", "http://127.0.0.1:9/base", NULL, 0) != MLT_OK ||
        mlt_options_set_retries(o, 3, 0.5, 0.5) != MLT_OK) {
        abort();
    }
    mlt__transport tr = {.perform = play, .destroy = destroy, .self = &s};
    mlt__client c;
    if (mlt__client_init_with(&c, o, tr) != MLT_OK) {
        abort();
    }
    mlt_options_free(o);
    c.sleep_fn = no_sleep;
    char errbuf[512] = "";
    char *id = NULL;
    mlt_err err;
    const mlt__kv tags[] = {{"mlflow.user", "fuzz"}, {"mlflow.source.name", "fuzz_answer"}};
    switch (entry % 7) {
    case 1:
        err =
            mlt__errbuf(errbuf, sizeof errbuf, mlt__client_experiment(&c, "fuzz experiment", &id));
        break;
    case 2:
    case 3:
        err = mlt__errbuf(errbuf, sizeof errbuf,
                          mlt__client_create_run(&c, "1", RUN_KEY, "fuzz run", 1764547200000, tags,
                                                 2, entry % 7 == 3, -1, &id));
        break;
    case 4:
        err = mlt__errbuf(errbuf, sizeof errbuf, mlt__client_find_run(&c, "1", RUN_KEY, &id));
        break;
    case 5: {
        const mlt__kv params[] = {{"lr", "0.1"}, {"epochs", "10"}};
        const mlt__metric metrics[] = {{"loss", 0.5, 1764547200000, 0},
                                       {"loss", 0.25, 1764547200001, 1}};
        mlt__batch b = {metrics, 2, params, 2, tags, 1};
        err = mlt__errbuf(errbuf, sizeof errbuf,
                          mlt__client_log_batch(&c, "0123456789abcdef0123456789abcdef", &b, -1));
        FUZZ_CHECK(err != MLT_OK || b.n_metrics + b.n_params + b.n_tags == 0);
        break;
    }
    default:
        err = mlt__errbuf(errbuf, sizeof errbuf,
                          mlt__client_end_run(&c, "0123456789abcdef0123456789abcdef",
                                              MLT_RUN_FINISHED, 1764547200000, -1));
        break;
    }
    FUZZ_CHECK(err <= 0);
    FUZZ_CHECK(memchr(errbuf, '\0', sizeof errbuf) != NULL);
    check_message(errbuf);
    if (id) {
        /* an id the run map can keep (mlflow_client.h) */
        FUZZ_CHECK(err == MLT_OK);
        size_t n = strlen(id);
        FUZZ_CHECK(n >= 1 && n <= 127 && strcmp(id, "-") != 0);
        for (size_t i = 0; i < n; i++) {
            FUZZ_CHECK((unsigned char)id[i] > ' ' && (unsigned char)id[i] < 0x7f);
        }
        free(id);
    }
    mlt__client_free(&c);
    return 0;
}
