/*
 * check_mlflow_api.c - unit tests of src/mlflow_api.c (and the Retry-After parser of src/http.c):
 * request URLs, paths and JSON bodies (parsed back with cJSON; int64 fields checked in the raw
 * text, since cJSON's double is exact only to 2^53), log-batch packing to the server's count and
 * byte limits, classification of hand-made answers, and reading answers by path.
 */
#include "testutil.h"
#include "mlflow_api.h"
#include "validate.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ------------------------------------------------------------------------------- */

/* The request body parsed as a JSON object (caller deletes). */
static cJSON *parse_body(const mlt__api_req *r)
{
    REQUIRE(r->body.data != NULL && !r->body.oom, "no body");
    cJSON *j = cJSON_ParseWithLength(r->body.data, r->body.len);
    REQUIRE(j != NULL && cJSON_IsObject(j), "body is not a JSON object: %.200s", r->body.data);
    return j;
}

static const cJSON *array_member(const cJSON *j, const char *key)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, key);
    REQUIRE(cJSON_IsArray(m), "member %s is not an array", key);
    return m;
}

static void assert_body_has(const mlt__api_req *r, const char *needle)
{
    ck_assert_msg(strstr(r->body.data, needle) != NULL, "body lacks %s: %.300s", needle,
                  r->body.data);
}

/* prefix followed by i, zero-padded to width digits, in a new string (caller frees). */
static char *numbered(const char *prefix, int width, int i)
{
    char *s = mlt__aprintf("%s%0*d", prefix, width, i);
    REQUIRE(s != NULL, "out of memory");
    return s;
}

/* Metrics m<i> with value i/2, timestamp 1700000000000+i, step i (keys owned by the caller). */
static mlt__metric *make_metrics(size_t n)
{
    mlt__metric *m = calloc(n ? n : 1, sizeof *m);
    REQUIRE(m != NULL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        m[i].key = numbered("m", 0, (int)i);
        m[i].value = (double)i / 2;
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

/* Pairs key_prefix<i> = value_prefix<i>, i zero-padded to the given widths (owned by the
 * caller). */
static mlt__kv *make_kvs(size_t n, const char *key_prefix, int key_width, const char *value_prefix,
                         int value_width)
{
    mlt__kv *kv = calloc(n ? n : 1, sizeof *kv);
    REQUIRE(kv != NULL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        kv[i].key = numbered(key_prefix, key_width, (int)i);
        kv[i].value = numbered(value_prefix, value_width, (int)i);
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

/* Asserts that the JSON array arr holds exactly the kv pairs want[0..n). */
static void assert_kv_array(const cJSON *arr, const mlt__kv *want, size_t n)
{
    REQUIRE(cJSON_GetArraySize(arr) == (int)n, "%d entries, want %zu", cJSON_GetArraySize(arr),
            n);
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr)
    {
        REQUIRE(strcmp(mlt_test_jstr(e, "key"), want[i].key) == 0, "entry %zu: key %s, want %s", i,
                mlt_test_jstr(e, "key"), want[i].key);
        REQUIRE(strcmp(mlt_test_jstr(e, "value"), want[i].value) == 0,
                "entry %zu (%s): wrong value", i, want[i].key);
        REQUIRE(cJSON_GetArraySize(e) == 2, "entry %zu has extra members", i);
        i++;
    }
}

/* Asserts that the JSON array arr holds exactly the metrics want[0..n) (int64 fields within
 * 2^53, so cJSON's double reads them exactly). */
static void assert_metric_array(const cJSON *arr, const mlt__metric *want, size_t n)
{
    REQUIRE(cJSON_GetArraySize(arr) == (int)n, "%d metrics, want %zu", cJSON_GetArraySize(arr),
            n);
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr)
    {
        REQUIRE(strcmp(mlt_test_jstr(e, "key"), want[i].key) == 0, "metric %zu: key %s, want %s", i,
                mlt_test_jstr(e, "key"), want[i].key);
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, "value");
        double w = want[i].value;
        if (isnan(w)) {
            REQUIRE(cJSON_IsString(v) && strcmp(v->valuestring, "NaN") == 0,
                    "metric %zu: NaN not written as \"NaN\"", i);
        } else if (isinf(w)) {
            REQUIRE(cJSON_IsString(v) &&
                        strcmp(v->valuestring, w > 0 ? "Infinity" : "-Infinity") == 0,
                    "metric %zu: infinity not written as a string", i);
        } else {
            REQUIRE(cJSON_IsNumber(v) && v->valuedouble == w, "metric %zu value %.17g, want %.17g",
                    i, cJSON_IsNumber(v) ? v->valuedouble : 0.0, w);
        }
        const cJSON *ts = cJSON_GetObjectItemCaseSensitive(e, "timestamp");
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(e, "step");
        REQUIRE(cJSON_IsNumber(ts) && ts->valuedouble == (double)want[i].timestamp_ms,
                "metric %zu: wrong timestamp", i);
        REQUIRE(cJSON_IsNumber(st) && st->valuedouble == (double)want[i].step,
                "metric %zu: wrong step", i);
        i++;
    }
}

/* Builds a log-batch body for in; returns its status, with *took filled and the body in r. */
static mlt_err batch(mlt__api_req *r, const mlt__batch *in, size_t max_bytes, mlt__batch *took)
{
    mlt__api_req_init(r);
    return mlt__api_log_batch(r, "0123456789abcdef0123456789abcdef", in, max_bytes, took);
}

/* Checks a log-batch body against what it says it took from the front of in. */
static void assert_batch_body(const mlt__api_req *r, const mlt__batch *in, const mlt__batch *took,
                              size_t max_bytes)
{
    REQUIRE(strcmp(r->method, "POST") == 0 && strcmp(r->path, "runs/log-batch") == 0,
            "%s %s", r->method, r->path);
    REQUIRE(r->body.len <= max_bytes, "body of %zu bytes, budget %zu", r->body.len, max_bytes);
    REQUIRE(took->n_params <= MLT__BATCH_MAX_PARAMS && took->n_tags <= MLT__BATCH_MAX_TAGS &&
                took->n_metrics <= MLT__BATCH_MAX_METRICS &&
                took->n_params + took->n_tags + took->n_metrics <= MLT__BATCH_MAX_ENTITIES,
            "took %zu/%zu/%zu: over the server's limits", took->n_params, took->n_tags,
            took->n_metrics);
    REQUIRE(took->n_params <= in->n_params && took->n_tags <= in->n_tags &&
                took->n_metrics <= in->n_metrics,
            "took more than given");
    cJSON *j = parse_body(r);
    REQUIRE(strcmp(mlt_test_jstr(j, "run_id"), "0123456789abcdef0123456789abcdef") == 0,
            "wrong run_id");
    assert_kv_array(array_member(j, "params"), in->params, took->n_params);
    assert_kv_array(array_member(j, "tags"), in->tags, took->n_tags);
    assert_metric_array(array_member(j, "metrics"), in->metrics, took->n_metrics);
    cJSON_Delete(j);
}

/* ---- URLs and simple bodies ---------------------------------------------------------------- */

START_TEST(api_url_appends_the_rest_prefix_and_keeps_a_path)
{
    mlt__api_req r;
    mlt__api_req_init(&r);
    ck_assert_int_eq(mlt__api_create_experiment(&r, "e"), MLT_OK);
    char *u = mlt__api_url("http://h:5000/proxy", &r);
    ck_assert_str_eq(u, "http://h:5000/proxy/api/2.0/mlflow/experiments/create");
    free(u);
    u = mlt__api_url("https://mlflow.example.com", &r);
    ck_assert_str_eq(u, "https://mlflow.example.com/api/2.0/mlflow/experiments/create");
    free(u);
    u = mlt__api_url("http://h/a/b/c", &r);
    ck_assert_str_eq(u, "http://h/a/b/c/api/2.0/mlflow/experiments/create");
    free(u);
    mlt__api_req_free(&r);
}
END_TEST

START_TEST(get_experiment_by_name_percent_encodes_the_name)
{
    static const struct {
        const char *name, *enc;
    } cases[] = {
        {"plain", "plain"},
        {"my exp", "my%20exp"},
        {"team/project", "team%2Fproject"},
        {"a&b=c?d#e+f%", "a%26b%3Dc%3Fd%23e%2Bf%25"},
        {"AZaz09-_.~", "AZaz09-_.~"},
        {"caf\xc3\xa9", "caf%C3%A9"},
        {"\xf0\x9f\x98\x80 \xe4\xb8\xad", "%F0%9F%98%80%20%E4%B8%AD"},
        {"quote\"'", "quote%22%27"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mlt__api_req r;
        mlt__api_req_init(&r);
        ck_assert_int_eq(mlt__api_get_experiment_by_name(&r, cases[i].name), MLT_OK);
        ck_assert_str_eq(r.method, "GET");
        ck_assert_ptr_nonnull(r.what);
        ck_assert_uint_eq(r.body.len, 0);
        char want[256];
        snprintf(want, sizeof want, "experiments/get-by-name?experiment_name=%s", cases[i].enc);
        ck_assert_str_eq(r.path, want);
        char *u = mlt__api_url("http://h:5000/p", &r);
        char wantu[300];
        snprintf(wantu, sizeof wantu, "http://h:5000/p/api/2.0/mlflow/%s", want);
        ck_assert_str_eq(u, wantu);
        free(u);
        mlt__api_req_free(&r);
    }
}
END_TEST

START_TEST(get_experiment_by_name_fits_the_longest_name_and_refuses_more)
{
    /* 256 code points of 4 bytes: the longest valid name, 3072 bytes once encoded */
    char *name = mlt_test_repeat("\xf0\x9f\x98\x80", 256);
    mlt__api_req r;
    mlt__api_req_init(&r);
    ck_assert_int_eq(mlt__api_get_experiment_by_name(&r, name), MLT_OK);
    ck_assert_uint_eq(strlen(r.path), strlen("experiments/get-by-name?experiment_name=") + 3072);
    ck_assert_ptr_nonnull(strstr(r.path, "=%F0%9F%98%80%F0"));
    mlt__api_req_free(&r);
    free(name);
    /* far longer: refused, not overflowed */
    name = mlt_test_repeat(" ", 5000);
    mlt__api_req_init(&r);
    ck_assert_int_eq(mlt__api_get_experiment_by_name(&r, name), MLT_ERR_VALUE_TOO_LONG);
    mlt__api_req_free(&r);
    free(name);
}
END_TEST

START_TEST(create_experiment_body_has_the_name)
{
    const char *name = "exp \"quoted\" \\ caf\xc3\xa9\n";
    mlt__api_req r;
    mlt__api_req_init(&r);
    ck_assert_int_eq(mlt__api_create_experiment(&r, name), MLT_OK);
    ck_assert_str_eq(r.method, "POST");
    ck_assert_str_eq(r.path, "experiments/create");
    cJSON *j = parse_body(&r);
    ck_assert_str_eq(mlt_test_jstr(j, "name"), name);
    ck_assert_int_eq(cJSON_GetArraySize(j), 1);
    cJSON_Delete(j);
    mlt__api_req_free(&r);
}
END_TEST

START_TEST(create_run_body_has_every_field)
{
    const mlt__kv tags[] = {
        {"mlflow.source.name", "/usr/bin/train"},
        {"mlflow.user", "alice"},
        {"note", "has \"quotes\" and caf\xc3\xa9"},
    };
    mlt__api_req r;
    mlt__api_req_init(&r);
    ck_assert_int_eq(mlt__api_create_run(&r, "7", "train run", 1700000000123LL, tags, 3), MLT_OK);
    ck_assert_str_eq(r.method, "POST");
    ck_assert_str_eq(r.path, "runs/create");
    cJSON *j = parse_body(&r);
    ck_assert_str_eq(mlt_test_jstr(j, "experiment_id"), "7");
    ck_assert_str_eq(mlt_test_jstr(j, "run_name"), "train run");
    ck_assert_str_eq(mlt_test_jstr(j, "user_id"), "alice");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "start_time");
    ck_assert(cJSON_IsNumber(st));
    assert_body_has(&r, "\"start_time\":1700000000123");
    assert_kv_array(array_member(j, "tags"), tags, 3);
    ck_assert_int_eq(cJSON_GetArraySize(j), 5);
    cJSON_Delete(j);
    mlt__api_req_free(&r);
}
END_TEST

START_TEST(create_run_leaves_out_missing_name_and_user)
{
    const mlt__kv tags[] = {{"k", "v"}};
    mlt__api_req r;
    mlt__api_req_init(&r);
    ck_assert_int_eq(mlt__api_create_run(&r, "0", NULL, INT64_MAX, tags, 1), MLT_OK);
    cJSON *j = parse_body(&r);
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(j, "run_name"));
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(j, "user_id"));
    ck_assert_str_eq(mlt_test_jstr(j, "experiment_id"), "0");
    assert_body_has(&r, "\"start_time\":9223372036854775807");
    assert_kv_array(array_member(j, "tags"), tags, 1);
    cJSON_Delete(j);
    mlt__api_req_free(&r);

    mlt__api_req_init(&r);
    ck_assert_int_eq(mlt__api_create_run(&r, "3", "n", 0, NULL, 0), MLT_OK);
    j = parse_body(&r);
    ck_assert_int_eq(cJSON_GetArraySize(array_member(j, "tags")), 0);
    assert_body_has(&r, "\"start_time\":0");
    cJSON_Delete(j);
    mlt__api_req_free(&r);
}
END_TEST

START_TEST(search_by_key_filters_on_the_client_run_key_tag)
{
    char key[37];
    mlt__uuid4(key);
    mlt__api_req r;
    mlt__api_req_init(&r);
    ck_assert_int_eq(mlt__api_search_run_by_key(&r, "5", key), MLT_OK);
    ck_assert_str_eq(r.method, "POST");
    ck_assert_str_eq(r.path, "runs/search");
    cJSON *j = parse_body(&r);
    const cJSON *ids = array_member(j, "experiment_ids");
    ck_assert_int_eq(cJSON_GetArraySize(ids), 1);
    ck_assert(cJSON_IsString(cJSON_GetArrayItem(ids, 0)));
    ck_assert_str_eq(cJSON_GetArrayItem(ids, 0)->valuestring, "5");
    char want[128];
    snprintf(want, sizeof want, "tags.\"mltrack.client_run_key\" = '%s'", key);
    ck_assert_str_eq(mlt_test_jstr(j, "filter"), want);
    const cJSON *max = cJSON_GetObjectItemCaseSensitive(j, "max_results");
    ck_assert(cJSON_IsNumber(max));
    ck_assert_int_ge(max->valueint, 1);
    cJSON_Delete(j);
    mlt__api_req_free(&r);
}
END_TEST

START_TEST(search_by_key_refuses_a_key_that_could_break_the_filter)
{
    const char *bad[] = {"abc'def", "' OR 1=1 --", "a\"b", "x y", "abc\\", "k\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mlt__api_req r;
        mlt__api_req_init(&r);
        ck_assert_msg(mlt__api_search_run_by_key(&r, "1", bad[i]) != MLT_OK, "key '%s' taken",
                      bad[i]);
        mlt__api_req_free(&r);
    }
    /* a key the user chose (run_key, MLTRACK_RUN_KEY: letters, digits, '_', '-') is searched */
    mlt__api_req r;
    mlt__api_req_init(&r);
    ck_assert_int_eq(mlt__api_search_run_by_key(&r, "1", "slurm_job-4711"), MLT_OK);
    ck_assert_ptr_nonnull(strstr(r.body.data, "'slurm_job-4711'"));
    mlt__api_req_free(&r);
}
END_TEST

/* The filter is built in a fixed buffer: a longer key must be refused or sent whole, never cut
 * (a cut filter has no closing quote: the server answers 400). */
START_TEST(search_by_key_never_truncates_the_filter)
{
    char *key = mlt_test_repeat("abcdef0123", 12); /* 120 hex characters */
    mlt__api_req r;
    mlt__api_req_init(&r);
    mlt_err rc = mlt__api_search_run_by_key(&r, "1", key);
    bool exact = true;
    char got[256] = "";
    if (rc == MLT_OK) {
        cJSON *j = parse_body(&r);
        char *want = mlt__aprintf("tags.\"mltrack.client_run_key\" = '%s'", key);
        const cJSON *filter = cJSON_GetObjectItemCaseSensitive(j, "filter");
        exact = cJSON_IsString(filter) && strcmp(filter->valuestring, want) == 0;
        snprintf(got, sizeof got, "%s", cJSON_IsString(filter) ? filter->valuestring : "");
        free(want);
        cJSON_Delete(j);
    }
    mlt__api_req_free(&r);
    free(key);
    ck_assert_msg(exact, "a 120-character key was accepted but the filter is cut: %s", got);
}
END_TEST

START_TEST(update_run_body_has_status_and_exact_end_time)
{
    const mlt_run_status st[] = {MLT_RUN_FINISHED, MLT_RUN_FAILED, MLT_RUN_KILLED};
    const char *names[] = {"FINISHED", "FAILED", "KILLED"};
    for (int i = 0; i < 3; i++) {
        mlt__api_req r;
        mlt__api_req_init(&r);
        ck_assert_int_eq(mlt__api_update_run(&r, "run-1", st[i], INT64_MAX - i), MLT_OK);
        ck_assert_str_eq(r.method, "POST");
        ck_assert_str_eq(r.path, "runs/update");
        cJSON *j = parse_body(&r);
        ck_assert_str_eq(mlt_test_jstr(j, "run_id"), "run-1");
        ck_assert_str_eq(mlt_test_jstr(j, "status"), names[i]);
        ck_assert(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(j, "end_time")));
        char want[64];
        snprintf(want, sizeof want, "\"end_time\":922337203685477580%d", 7 - i);
        assert_body_has(&r, want);
        cJSON_Delete(j);
        mlt__api_req_free(&r);
    }
}
END_TEST

/* ---- log-batch ----------------------------------------------------------------------------- */

START_TEST(log_batch_takes_a_small_batch_whole)
{
    mlt__kv params[] = {{"lr", "0.01"}, {"layers", "3"}, {"name", "caf\xc3\xa9 \"x\""}};
    mlt__kv tags[] = {{"t1", "v1"}, {"t2", ""}};
    mlt__metric metrics[] = {
        {"loss", 0.5, 1700000000000LL, 0},
        {"loss", 0.25, 1700000000001LL, 1},
        {"acc", 0.1, 1700000000002LL, -3},
    };
    mlt__batch in = {metrics, 3, params, 3, tags, 2};
    mlt__batch took;
    memset(&took, 0xff, sizeof took);
    mlt__api_req r;
    ck_assert_int_eq(batch(&r, &in, MLT__BATCH_MAX_BYTES, &took), MLT_OK);
    ck_assert_uint_eq(took.n_params, 3);
    ck_assert_uint_eq(took.n_tags, 2);
    ck_assert_uint_eq(took.n_metrics, 3);
    ck_assert_ptr_eq(took.params, params);
    ck_assert_ptr_eq(took.tags, tags);
    ck_assert_ptr_eq(took.metrics, metrics);
    assert_batch_body(&r, &in, &took, MLT__BATCH_MAX_BYTES);
    /* params first, then tags, then metrics */
    const char *p = strstr(r.body.data, "\"params\":");
    const char *t = strstr(r.body.data, "\"tags\":");
    const char *m = strstr(r.body.data, "\"metrics\":");
    ck_assert(p && t && m && p < t && t < m);
    mlt__api_req_free(&r);
}
END_TEST

START_TEST(log_batch_of_nothing_is_an_empty_body)
{
    mlt__batch in = {NULL, 0, NULL, 0, NULL, 0};
    mlt__batch took;
    mlt__api_req r;
    ck_assert_int_eq(batch(&r, &in, MLT__BATCH_MAX_BYTES, &took), MLT_OK);
    ck_assert_uint_eq(took.n_params + took.n_tags + took.n_metrics, 0);
    cJSON *j = parse_body(&r);
    ck_assert_int_eq(cJSON_GetArraySize(array_member(j, "params")), 0);
    ck_assert_int_eq(cJSON_GetArraySize(array_member(j, "tags")), 0);
    ck_assert_int_eq(cJSON_GetArraySize(array_member(j, "metrics")), 0);
    cJSON_Delete(j);
    mlt__api_req_free(&r);
}
END_TEST

START_TEST(log_batch_writes_nan_and_infinities_as_strings_and_int64_exactly)
{
    mlt__metric metrics[] = {
        {"a", NAN, 0, INT64_MAX},
        {"b", INFINITY, INT64_MAX, INT64_MIN},
        {"c", -INFINITY, 1, -1},
        {"d", -0.0, 2, 0},
        {"e", 1e-300, 3, 9007199254740993LL},
    };
    mlt__batch in = {metrics, 5, NULL, 0, NULL, 0};
    mlt__batch took;
    mlt__api_req r;
    ck_assert_int_eq(batch(&r, &in, MLT__BATCH_MAX_BYTES, &took), MLT_OK);
    ck_assert_uint_eq(took.n_metrics, 5);
    assert_body_has(&r, "\"value\":\"NaN\"");
    assert_body_has(&r, "\"value\":\"Infinity\"");
    assert_body_has(&r, "\"value\":\"-Infinity\"");
    assert_body_has(&r, "\"value\":-0,");
    assert_body_has(&r, "\"value\":1e-300,");
    assert_body_has(&r, "\"step\":9223372036854775807");
    assert_body_has(&r, "\"step\":-9223372036854775808");
    assert_body_has(&r, "\"timestamp\":9223372036854775807");
    assert_body_has(&r, "\"step\":9007199254740993");
    ck_assert_ptr_null(strstr(r.body.data, "null"));
    cJSON *j = parse_body(&r);
    const cJSON *arr = array_member(j, "metrics");
    ck_assert_str_eq(cJSON_GetArrayItem(arr, 0)->child->next->valuestring, "NaN");
    ck_assert(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(arr, 1),
                                                              "value")));
    cJSON_Delete(j);
    mlt__api_req_free(&r);
}
END_TEST

START_TEST(log_batch_takes_at_most_1000_metrics)
{
    mlt__metric *m = make_metrics(2500);
    mlt__batch in = {m, 2500, NULL, 0, NULL, 0};
    mlt__batch took;
    mlt__api_req r;
    ck_assert_int_eq(batch(&r, &in, MLT__BATCH_MAX_BYTES, &took), MLT_OK);
    ck_assert_uint_eq(took.n_metrics, 1000);
    ck_assert_uint_eq(took.n_params, 0);
    ck_assert_uint_eq(took.n_tags, 0);
    assert_batch_body(&r, &in, &took, MLT__BATCH_MAX_BYTES);
    mlt__api_req_free(&r);
    free_metrics(m, 2500);
}
END_TEST

START_TEST(log_batch_takes_at_most_100_params_and_100_tags)
{
    mlt__kv *p = make_kvs(150, "param_", 0, "value ", 0);
    mlt__kv *t = make_kvs(150, "tag_", 0, "tag value ", 0);
    mlt__metric *m = make_metrics(900);
    mlt__batch in = {m, 900, p, 150, t, 150};
    mlt__batch took;
    mlt__api_req r;
    ck_assert_int_eq(batch(&r, &in, MLT__BATCH_MAX_BYTES, &took), MLT_OK);
    ck_assert_uint_eq(took.n_params, 100);
    ck_assert_uint_eq(took.n_tags, 100);
    ck_assert_uint_eq(took.n_metrics, 800); /* 1000 entities in all */
    assert_batch_body(&r, &in, &took, MLT__BATCH_MAX_BYTES);
    mlt__api_req_free(&r);
    free_kvs(p, 150);
    free_kvs(t, 150);
    free_metrics(m, 900);
}
END_TEST

START_TEST(log_batch_counts_every_entity_against_1000)
{
    static const struct {
        size_t np, nt, nm;      /* in */
        size_t tp, tt, tm;      /* expected took */
    } cases[] = {
        {100, 0, 1000, 100, 0, 900},
        {0, 150, 2000, 0, 100, 900},
        {0, 0, 1000, 0, 0, 1000},
        {100, 100, 800, 100, 100, 800},
        {99, 99, 999, 99, 99, 802},
        {5, 0, 0, 5, 0, 0},
    };
    mlt__kv *p = make_kvs(200, "p", 0, "v", 0);
    mlt__kv *t = make_kvs(200, "t", 0, "v", 0);
    mlt__metric *m = make_metrics(2000);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mlt__batch in = {m, cases[i].nm, p, cases[i].np, t, cases[i].nt};
        mlt__batch took;
        mlt__api_req r;
        ck_assert_int_eq(batch(&r, &in, MLT__BATCH_MAX_BYTES, &took), MLT_OK);
        ck_assert_msg(took.n_params == cases[i].tp && took.n_tags == cases[i].tt &&
                          took.n_metrics == cases[i].tm,
                      "case %zu: took %zu/%zu/%zu, want %zu/%zu/%zu", i, took.n_params,
                      took.n_tags, took.n_metrics, cases[i].tp, cases[i].tt, cases[i].tm);
        assert_batch_body(&r, &in, &took, MLT__BATCH_MAX_BYTES);
        mlt__api_req_free(&r);
    }
    free_kvs(p, 200);
    free_kvs(t, 200);
    free_metrics(m, 2000);
}
END_TEST

/* Body length of a batch (the body must build). */
static size_t batch_len(const mlt__batch *in)
{
    mlt__batch took;
    mlt__api_req r;
    ck_assert_int_eq(batch(&r, in, MLT__BATCH_MAX_BYTES * 10, &took), MLT_OK);
    size_t n = r.body.len;
    mlt__api_req_free(&r);
    return n;
}

START_TEST(log_batch_fills_params_before_tags_before_metrics)
{
    mlt__kv *p = make_kvs(10, "param_", 3, "", 100); /* ~130 bytes each */
    mlt__kv *t = make_kvs(10, "tag_", 3, "", 200);   /* ~230 bytes each */
    mlt__metric *m = make_metrics(10);
    for (int i = 0; i < 10; i++) {
        free((char *)m[i].key);
        m[i].key = mlt_test_repeat("k", 240); /* ~300 bytes each */
    }
    mlt__batch none = {NULL, 0, NULL, 0, NULL, 0};
    mlt__batch one_p = {NULL, 0, p, 1, NULL, 0};
    mlt__batch one_t = {NULL, 0, NULL, 0, t, 1};
    size_t base = batch_len(&none);
    size_t ep = batch_len(&one_p) - base;
    size_t et = batch_len(&one_t) - base;
    mlt__batch in = {m, 10, p, 10, t, 10};
    mlt__batch took;
    mlt__api_req r;

    /* room for 5 params and a little more, less than any tag or metric */
    size_t max = base + 5 * ep + 4 + 50;
    ck_assert_int_eq(batch(&r, &in, max, &took), MLT_OK);
    ck_assert_uint_eq(took.n_params, 5);
    ck_assert_uint_eq(took.n_tags, 0);
    ck_assert_uint_eq(took.n_metrics, 0);
    assert_batch_body(&r, &in, &took, max);
    mlt__api_req_free(&r);

    /* room for every param and 2 tags */
    max = base + 10 * ep + 9 + 2 * et + 2 + 50;
    ck_assert_int_eq(batch(&r, &in, max, &took), MLT_OK);
    ck_assert_uint_eq(took.n_params, 10);
    ck_assert_uint_eq(took.n_tags, 2);
    ck_assert_uint_eq(took.n_metrics, 0);
    assert_batch_body(&r, &in, &took, max);
    mlt__api_req_free(&r);

    free_kvs(p, 10);
    free_kvs(t, 10);
    free_metrics(m, 10);
}
END_TEST

START_TEST(log_batch_fills_the_byte_budget_with_6000_char_params)
{
    enum { N = 100 };
    char *v = mlt_test_repeat("\xf0\x9f\x98\x80", 6000); /* 6000 code points, 24000 bytes */
    mlt__kv *p = make_kvs(N, "p", 3, "x", 0);
    for (int i = 0; i < N; i++) {
        free((char *)p[i].value);
        p[i].value = v;
    }
    mlt__batch none = {NULL, 0, NULL, 0, NULL, 0};
    mlt__batch one = {NULL, 0, p, 1, NULL, 0};
    size_t base = batch_len(&none);
    size_t e = batch_len(&one) - base; /* every entity has this size */
    mlt__batch in = {NULL, 0, p, N, NULL, 0};
    mlt__batch took;
    mlt__api_req r;
    ck_assert_int_eq(batch(&r, &in, MLT__BATCH_MAX_BYTES, &took), MLT_OK);
    ck_assert_uint_gt(took.n_params, 30);
    ck_assert_uint_lt(took.n_params, N);
    assert_batch_body(&r, &in, &took, MLT__BATCH_MAX_BYTES);
    /* greedy: one more would not have fit */
    ck_assert_uint_gt(r.body.len + 1 + e, MLT__BATCH_MAX_BYTES);
    mlt__api_req_free(&r);
    for (int i = 0; i < N; i++) {
        p[i].value = NULL;
        free((char *)p[i].key);
    }
    free(p);
    free(v);
}
END_TEST

START_TEST(log_batch_fills_the_byte_budget_with_8000_char_escaped_tags)
{
    enum { N = 100 };
    char *v = mlt_test_repeat("\"", 8000);   /* 16000 bytes once escaped */
    char *w = mlt_test_repeat("\x01", 8000); /* 48000 bytes once escaped */
    mlt__kv *t = make_kvs(N, "tag", 3, "x", 0);
    for (int i = 0; i < N; i++) {
        free((char *)t[i].value);
        t[i].value = i % 2 ? v : w;
    }
    mlt__batch in = {NULL, 0, NULL, 0, t, N};
    mlt__batch took;
    mlt__api_req r;
    ck_assert_int_eq(batch(&r, &in, MLT__BATCH_MAX_BYTES, &took), MLT_OK);
    ck_assert_uint_gt(took.n_tags, 20);
    ck_assert_uint_lt(took.n_tags, N);
    assert_batch_body(&r, &in, &took, MLT__BATCH_MAX_BYTES);
    ck_assert_uint_gt(r.body.len + 1 + 48000, MLT__BATCH_MAX_BYTES - 100);
    mlt__api_req_free(&r);
    for (int i = 0; i < N; i++) {
        t[i].value = NULL;
        free((char *)t[i].key);
    }
    free(t);
    free(v);
    free(w);
}
END_TEST

/* A random value of up to max code points, with characters that JSON must escape. */
static char *random_text(uint64_t *st, size_t max)
{
    static const char *units[] = {"a", "Z", "7", " ", "\"", "\\", "\n", "\x01",
                                  "\xc3\xa9", "\xe4\xb8\xad", "\xf0\x9f\x98\x80", "/"};
    size_t n = mlt_test_rng_next(st) % 8 == 0 ? mlt_test_rng_next(st) % (max + 1)
                                              : mlt_test_rng_next(st) % 40;
    char *s = malloc(n * 4 + 1);
    REQUIRE(s != NULL, "out of memory");
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        const char *u = units[mlt_test_rng_next(st) % (sizeof units / sizeof units[0])];
        size_t l = strlen(u);
        memcpy(s + o, u, l);
        o += l;
    }
    s[o] = '\0';
    return s;
}

START_TEST(log_batch_respects_the_byte_budget_for_many_mixes)
{
    uint64_t st = 2024;
    int near_budget = 0; /* bodies that the byte budget, not the counts, cut */
    for (int round = 0; round < 40; round++) {
        size_t np = mlt_test_rng_next(&st) % 260;
        size_t nt = mlt_test_rng_next(&st) % 260;
        size_t nm = mlt_test_rng_next(&st) % 2600;
        mlt__kv *p = calloc(np + 1, sizeof *p);
        mlt__kv *t = calloc(nt + 1, sizeof *t);
        mlt__metric *m = make_metrics(nm);
        ck_assert(p && t);
        for (size_t i = 0; i < np; i++) {
            p[i].key = numbered("param/", 0, (int)i);
            p[i].value = random_text(&st, 6000);
        }
        for (size_t i = 0; i < nt; i++) {
            t[i].key = numbered("tag.", 0, (int)i);
            t[i].value = random_text(&st, 8000);
        }
        for (size_t i = 0; i < nm; i++) {
            uint64_t k = mlt_test_rng_next(&st) % 10;
            m[i].value = k == 0   ? NAN
                         : k == 1 ? -INFINITY
                                  : (double)(int64_t)mlt_test_rng_next(&st) / 7;
            m[i].step = (int64_t)(mlt_test_rng_next(&st) % 2000000) - 1000000;
        }
        /* any budget that holds the largest single entity (an 8000-char tag of \u0001) */
        size_t max = mlt_test_rng_next(&st) % 3 == 0 ? MLT__BATCH_MAX_BYTES
                                                     : 50000 + mlt_test_rng_next(&st) % 400000;
        /* drain, as the client does: every entity goes out once, in order */
        mlt__batch left = {m, nm, p, np, t, nt};
        int calls = 0;
        while (left.n_params + left.n_tags + left.n_metrics > 0) {
            mlt__batch took;
            mlt__api_req r;
            mlt_err rc = batch(&r, &left, max, &took);
            REQUIRE(rc == MLT_OK, "round %d: %s", round, mlt_err_name(rc));
            REQUIRE(took.n_params + took.n_tags + took.n_metrics > 0, "round %d: no progress",
                    round);
            assert_batch_body(&r, &left, &took, max);
            near_budget += r.body.len + 50000 > max;
            mlt__api_req_free(&r);
            left.params += took.n_params;
            left.n_params -= took.n_params;
            left.tags += took.n_tags;
            left.n_tags -= took.n_tags;
            left.metrics += took.n_metrics;
            left.n_metrics -= took.n_metrics;
            REQUIRE(++calls < 10000, "round %d never drains", round);
        }
        ck_assert_ptr_eq(left.params, p + np);
        ck_assert_ptr_eq(left.tags, t + nt);
        ck_assert_ptr_eq(left.metrics, m + nm);
        free_kvs(p, np);
        free_kvs(t, nt);
        free_metrics(m, nm);
    }
    ck_assert_int_gt(near_budget, 10);
}
END_TEST

START_TEST(log_batch_refuses_an_entity_larger_than_the_budget)
{
    char *big = mlt_test_repeat("v", 6000);
    mlt__kv p = {"big", big};
    mlt__batch in = {NULL, 0, &p, 1, NULL, 0};
    mlt__batch took;
    mlt__api_req r;
    ck_assert_int_eq(batch(&r, &in, 3000, &took), MLT_ERR_VALUE_TOO_LONG);
    ck_assert_uint_eq(took.n_params + took.n_tags + took.n_metrics, 0);
    mlt__api_req_free(&r);

    mlt__kv t = {"big", big};
    mlt__batch in_t = {NULL, 0, NULL, 0, &t, 1};
    ck_assert_int_eq(batch(&r, &in_t, 3000, &took), MLT_ERR_VALUE_TOO_LONG);
    ck_assert_uint_eq(took.n_params + took.n_tags + took.n_metrics, 0);
    mlt__api_req_free(&r);

    char *key = mlt_test_repeat("k", 250);
    mlt__metric m = {key, 1.0, 1, 1};
    mlt__batch in_m = {&m, 1, NULL, 0, NULL, 0};
    ck_assert_int_eq(batch(&r, &in_m, 200, &took), MLT_ERR_VALUE_TOO_LONG);
    mlt__api_req_free(&r);

    /* a budget smaller than the envelope itself */
    mlt__metric small = {"m", 1.0, 1, 1};
    mlt__batch in_s = {&small, 1, NULL, 0, NULL, 0};
    ck_assert_int_eq(batch(&r, &in_s, 10, &took), MLT_ERR_VALUE_TOO_LONG);
    mlt__api_req_free(&r);

    /* with just enough room it goes through */
    ck_assert_int_eq(batch(&r, &in, 6200, &took), MLT_OK);
    ck_assert_uint_eq(took.n_params, 1);
    assert_batch_body(&r, &in, &took, 6200);
    mlt__api_req_free(&r);
    free(key);
    free(big);
}
END_TEST

/* ---- answers ------------------------------------------------------------------------------- */

typedef struct answer_case {
    long status;
    const char *body;
    double retry_after_s;
    mlt_err net_err;
    bool maybe_sent;
} answer_case;

/* Classifies c as an answer to a "create run" request; a is initialized here. */
static void classify(const answer_case *c, mlt__api_answer *a)
{
    mlt__api_req r;
    mlt__api_req_init(&r);
    ck_assert_int_eq(mlt__api_create_run(&r, "1", "n", 1, NULL, 0), MLT_OK);
    mlt__http_response resp;
    mlt__http_response_init(&resp);
    resp.status = c->status;
    if (c->body) {
        mlt__buf_puts(&resp.body, c->body);
    }
    resp.retry_after_s = c->retry_after_s;
    resp.net_err = c->net_err;
    resp.maybe_sent = c->maybe_sent;
    if (c->net_err != MLT_OK) {
        snprintf(resp.errmsg, sizeof resp.errmsg, "Connection reset by peer");
    }
    mlt__api_answer_init(a);
    mlt__api_classify(&r, &resp, a);
    mlt__http_response_free(&resp);
    mlt__api_req_free(&r);
}

static void assert_answer(const mlt__api_answer *a, mlt_err err, bool retriable, bool ambiguous)
{
    ck_assert_msg(a->err == err, "got %s, want %s (%s)", mlt_err_name(a->err), mlt_err_name(err),
                  a->msg);
    ck_assert_msg(a->retriable == retriable, "retriable %d (%s)", a->retriable, a->msg);
    ck_assert_msg(a->ambiguous == ambiguous, "ambiguous %d (%s)", a->ambiguous, a->msg);
    if (err != MLT_OK) {
        ck_assert_ptr_null(a->json);
        ck_assert_msg(strstr(a->msg, "create run") != NULL, "message '%s' lacks the request",
                      a->msg);
        for (const char *p = a->msg; *p; p++) {
            ck_assert_msg((unsigned char)*p >= 0x20, "control byte in message '%s'", a->msg);
        }
    }
}

START_TEST(classify_200_json_is_ok_with_the_json)
{
    answer_case c = {200, "{\"run\":{\"info\":{\"run_id\":\"abc\"}}}", -1, MLT_OK, false};
    mlt__api_answer a;
    classify(&c, &a);
    assert_answer(&a, MLT_OK, false, false);
    ck_assert_ptr_nonnull(a.json);
    ck_assert_str_eq(mlt__api_json_str(a.json, "run.info.run_id"), "abc");
    ck_assert_int_eq(a.status, 200);
    ck_assert_str_eq(a.error_code, "");
    mlt__api_answer_free(&a);
    ck_assert_ptr_null(a.json);
    mlt__api_answer_free(&a); /* twice is harmless */

    answer_case empty_obj = {200, "{}", -1, MLT_OK, false};
    classify(&empty_obj, &a);
    assert_answer(&a, MLT_OK, false, false);
    ck_assert_ptr_nonnull(a.json);
    mlt__api_answer_free(&a);
}
END_TEST

START_TEST(classify_200_garbage_is_a_retriable_ambiguous_protocol_error)
{
    const char *bodies[] = {"<html><body>Proxy\nError</body></html>", "", "[1,2]", "\"text\"",
                            "{\"truncated\":"};
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        answer_case c = {200, bodies[i], -1, MLT_OK, false};
        mlt__api_answer a;
        classify(&c, &a);
        assert_answer(&a, MLT_ERR_PROTOCOL, true, true);
        ck_assert_int_eq(a.status, 200);
        mlt__api_answer_free(&a);
    }
    answer_case c = {200, "<html>oops</html>", -1, MLT_OK, false};
    mlt__api_answer a;
    classify(&c, &a);
    ck_assert_msg(strstr(a.msg, "<html>oops") != NULL, "message '%s' lacks the body", a.msg);
    mlt__api_answer_free(&a);
}
END_TEST

START_TEST(classify_400_invalid_parameter_is_rejected_with_the_server_message)
{
    answer_case c = {400,
                     "{\"error_code\":\"INVALID_PARAMETER_VALUE\",\"message\":\"Param value "
                     "'x' had length 6001, which exceeded length limit of 6000\"}",
                     -1, MLT_OK, false};
    mlt__api_answer a;
    classify(&c, &a);
    assert_answer(&a, MLT_ERR_REJECTED, false, false);
    ck_assert_str_eq(a.error_code, "INVALID_PARAMETER_VALUE");
    ck_assert_int_eq(a.status, 400);
    ck_assert_msg(strstr(a.msg, "exceeded length limit of 6000") != NULL, "message '%s'", a.msg);
    mlt__api_answer_free(&a);
}
END_TEST

START_TEST(classify_400_resource_already_exists_keeps_the_error_code)
{
    answer_case c = {400,
                     "{\"error_code\":\"RESOURCE_ALREADY_EXISTS\",\"message\":\"Experiment "
                     "'e' already exists.\",\"details\":[]}",
                     -1, MLT_OK, false};
    mlt__api_answer a;
    classify(&c, &a);
    assert_answer(&a, MLT_ERR_REJECTED, false, false);
    ck_assert_str_eq(a.error_code, "RESOURCE_ALREADY_EXISTS");
    ck_assert_ptr_nonnull(strstr(a.msg, "already exists"));
    mlt__api_answer_free(&a);

    answer_case bad = {400, "{\"error_code\":\"BAD_REQUEST\",\"message\":\"value too long\"}",
                       -1, MLT_OK, false};
    classify(&bad, &a);
    assert_answer(&a, MLT_ERR_REJECTED, false, false);
    ck_assert_str_eq(a.error_code, "BAD_REQUEST");
    mlt__api_answer_free(&a);

    answer_case html400 = {400, "<html>Bad Request</html>", -1, MLT_OK, false};
    classify(&html400, &a);
    assert_answer(&a, MLT_ERR_REJECTED, false, false);
    ck_assert_str_eq(a.error_code, "");
    mlt__api_answer_free(&a);
}
END_TEST

START_TEST(classify_404_resource_does_not_exist_is_not_found)
{
    answer_case c = {404,
                     "{\"error_code\":\"RESOURCE_DOES_NOT_EXIST\",\"message\":\"Could not find "
                     "experiment with name 'e'\"}",
                     -1, MLT_OK, false};
    mlt__api_answer a;
    classify(&c, &a);
    assert_answer(&a, MLT_ERR_NOT_FOUND, false, false);
    ck_assert_str_eq(a.error_code, "RESOURCE_DOES_NOT_EXIST");
    ck_assert_ptr_nonnull(strstr(a.msg, "Could not find experiment"));
    mlt__api_answer_free(&a);
}
END_TEST

START_TEST(classify_html_404_is_a_protocol_error_hinting_at_the_uri)
{
    const long statuses[] = {404, 405};
    for (int i = 0; i < 2; i++) {
        answer_case c = {statuses[i],
                         "<!doctype html>\n<html lang=en>\n<title>404 Not Found</title>\n", -1,
                         MLT_OK, false};
        mlt__api_answer a;
        classify(&c, &a);
        assert_answer(&a, MLT_ERR_PROTOCOL, false, false);
        ck_assert_msg(strstr(a.msg, "tracking URI") != NULL, "message '%s' has no hint", a.msg);
        ck_assert_str_eq(a.error_code, "");
        ck_assert_int_eq(a.status, statuses[i]);
        mlt__api_answer_free(&a);
    }
}
END_TEST

START_TEST(classify_401_and_403_are_auth_errors)
{
    const answer_case cases[] = {
        {401, "Unauthorized", -1, MLT_OK, false},
        {403, "Invalid Host header - possible DNS rebinding attack detected", -1, MLT_OK, false},
        {403, "{\"error_code\":\"PERMISSION_DENIED\",\"message\":\"no\"}", -1, MLT_OK, false},
        {401, "{\"error_code\":\"UNAUTHENTICATED\",\"message\":\"who?\"}", -1, MLT_OK, false},
        {401, "", -1, MLT_OK, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mlt__api_answer a;
        classify(&cases[i], &a);
        assert_answer(&a, MLT_ERR_AUTH, false, false);
        mlt__api_answer_free(&a);
    }
}
END_TEST

START_TEST(classify_408_is_a_retriable_ambiguous_timeout)
{
    answer_case c = {408, "Request Timeout", -1, MLT_OK, false};
    mlt__api_answer a;
    classify(&c, &a);
    assert_answer(&a, MLT_ERR_TIMEOUT, true, true);
    mlt__api_answer_free(&a);
}
END_TEST

START_TEST(classify_429_is_rate_limited_with_retry_after)
{
    answer_case c = {429, "Too Many Requests", 7.5, MLT_OK, false};
    mlt__api_answer a;
    classify(&c, &a);
    assert_answer(&a, MLT_ERR_RATE_LIMITED, true, false);
    ck_assert_double_eq(a.retry_after_s, 7.5);
    mlt__api_answer_free(&a);

    answer_case j = {429, "{\"error_code\":\"REQUEST_LIMIT_EXCEEDED\",\"message\":\"slow\"}", -1,
                     MLT_OK, false};
    classify(&j, &a);
    assert_answer(&a, MLT_ERR_RATE_LIMITED, true, false);
    ck_assert_str_eq(a.error_code, "REQUEST_LIMIT_EXCEEDED");
    ck_assert(a.retry_after_s < 0);
    mlt__api_answer_free(&a);
}
END_TEST

START_TEST(classify_5xx_is_a_retriable_ambiguous_server_error)
{
    const answer_case cases[] = {
        {500, "{\"error_code\":\"INTERNAL_ERROR\",\"message\":\"boom\"}", -1, MLT_OK, false},
        {500, "<html>Internal Server Error</html>", -1, MLT_OK, false},
        {502, "<html><head><title>502 Bad Gateway</title></head></html>", -1, MLT_OK, false},
        {503, "<html>Service Unavailable</html>", 3, MLT_OK, false},
        {504, "Gateway Timeout", -1, MLT_OK, false},
        {500, "{\"error_code\":\"INVALID_PARAMETER_VALUE\",\"message\":\"odd\"}", -1, MLT_OK,
         false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mlt__api_answer a;
        classify(&cases[i], &a);
        assert_answer(&a, MLT_ERR_SERVER, true, true);
        ck_assert_int_eq(a.status, cases[i].status);
        ck_assert_double_eq(a.retry_after_s, cases[i].retry_after_s);
        mlt__api_answer_free(&a);
    }
}
END_TEST

START_TEST(classify_503_temporarily_unavailable_is_a_server_error)
{
    answer_case c = {503,
                     "{\"error_code\":\"TEMPORARILY_UNAVAILABLE\",\"message\":\"(sqlite3."
                     "OperationalError) database is locked\"}",
                     -1, MLT_OK, false};
    mlt__api_answer a;
    classify(&c, &a);
    assert_answer(&a, MLT_ERR_SERVER, true, true);
    ck_assert_str_eq(a.error_code, "TEMPORARILY_UNAVAILABLE");
    ck_assert_ptr_nonnull(strstr(a.msg, "database is locked"));
    mlt__api_answer_free(&a);
}
END_TEST

START_TEST(classify_network_error_before_sending_is_not_ambiguous)
{
    answer_case c = {0, NULL, -1, MLT_ERR_NETWORK, false};
    mlt__api_answer a;
    classify(&c, &a);
    assert_answer(&a, MLT_ERR_NETWORK, true, false);
    ck_assert_int_eq(a.status, 0);
    ck_assert_ptr_nonnull(strstr(a.msg, "Connection reset by peer"));
    mlt__api_answer_free(&a);
}
END_TEST

START_TEST(classify_network_error_maybe_sent_is_ambiguous)
{
    answer_case c = {0, NULL, -1, MLT_ERR_NETWORK, true};
    mlt__api_answer a;
    classify(&c, &a);
    assert_answer(&a, MLT_ERR_NETWORK, true, true);
    mlt__api_answer_free(&a);

    answer_case t = {0, NULL, -1, MLT_ERR_TIMEOUT, true};
    classify(&t, &a);
    assert_answer(&a, MLT_ERR_TIMEOUT, true, true);
    mlt__api_answer_free(&a);

    answer_case tls = {0, NULL, -1, MLT_ERR_TLS, false};
    classify(&tls, &a);
    assert_answer(&a, MLT_ERR_TLS, false, false);
    mlt__api_answer_free(&a);
}
END_TEST

START_TEST(classify_message_quotes_a_bounded_snippet_of_long_bodies)
{
    char *body = mlt_test_repeat("<p>line\n</p>", 5000);
    answer_case c = {502, body, -1, MLT_OK, false};
    mlt__api_answer a;
    classify(&c, &a);
    assert_answer(&a, MLT_ERR_SERVER, true, true);
    ck_assert_ptr_nonnull(strstr(a.msg, "<p>line </p>"));
    ck_assert_uint_lt(strlen(a.msg), sizeof a.msg);
    mlt__api_answer_free(&a);
    free(body);
}
END_TEST

START_TEST(classify_snippet_never_cuts_a_utf8_character)
{
    /* found with fuzz_answer: the 200-byte snippet of a non-JSON body could end inside a UTF-8
     * character, in the middle of the message (which goes into dead.jsonl) */
    for (size_t pre = 196; pre <= 200; pre++) {
        char body[256];
        memset(body, 'x', pre);
        snprintf(body + pre, sizeof body - pre, "%s", "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80 end");
        answer_case c = {502, body, -1, MLT_OK, false};
        mlt__api_answer a;
        classify(&c, &a);
        assert_answer(&a, MLT_ERR_SERVER, true, true);
        ck_assert_msg(mlt__utf8_len(a.msg) >= 0, "not UTF-8: %s", a.msg);
        const char *q = strchr(a.msg, '\'');
        ck_assert_ptr_nonnull(q);
        size_t kept = strcspn(q + 1, "'");
        ck_assert_uint_le(kept, 200);
        ck_assert_uint_ge(kept, 197); /* at most the cut character is left out */
        mlt__api_answer_free(&a);
    }
}
END_TEST

/* ---- reading answers ----------------------------------------------------------------------- */

START_TEST(json_str_follows_dotted_paths)
{
    cJSON *j = cJSON_Parse("{\"run\":{\"info\":{\"run_id\":\"abc\",\"n\":5,\"o\":{},"
                           "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\":"
                           "\"long\"}},\"top\":\"t\",\"Top\":\"T\"}");
    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(mlt__api_json_str(j, "run.info.run_id"), "abc");
    ck_assert_str_eq(mlt__api_json_str(j, "top"), "t");
    ck_assert_str_eq(mlt__api_json_str(j, "Top"), "T"); /* case-sensitive */
    /* a 63-character component */
    const char *long_path =
        "run.info.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    ck_assert_str_eq(mlt__api_json_str(j, long_path), "long");
    ck_assert_ptr_null(mlt__api_json_str(j, "run.info.n"));       /* a number */
    ck_assert_ptr_null(mlt__api_json_str(j, "run.info.o"));       /* an object */
    ck_assert_ptr_null(mlt__api_json_str(j, "run.info"));         /* an object */
    ck_assert_ptr_null(mlt__api_json_str(j, "run.info.missing")); /* absent */
    ck_assert_ptr_null(mlt__api_json_str(j, "run.nope.run_id"));  /* absent on the way */
    ck_assert_ptr_null(mlt__api_json_str(j, "top.more"));         /* through a string */
    ck_assert_ptr_null(mlt__api_json_str(
        j, "run.info.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
    ck_assert_ptr_null(mlt__api_json_str(NULL, "run.info.run_id"));
    cJSON_Delete(j);
}
END_TEST

/* ---- Retry-After --------------------------------------------------------------------------- */

START_TEST(parse_retry_after_reads_seconds)
{
    int64_t now = 1700000000000LL;
    ck_assert_double_eq(mlt__parse_retry_after("120", now), 120.0);
    ck_assert_double_eq(mlt__parse_retry_after(" 5 ", now), 5.0);
    ck_assert_double_eq(mlt__parse_retry_after("\t7\r\n", now), 7.0);
    ck_assert_double_eq(mlt__parse_retry_after("0", now), 0.0);
}
END_TEST

START_TEST(parse_retry_after_reads_http_dates)
{
    const int64_t date_s = 1445412480; /* Wed, 21 Oct 2015 07:28:00 GMT */
    const char *date = "Wed, 21 Oct 2015 07:28:00 GMT";
    double s = mlt__parse_retry_after(date, (date_s - 30) * 1000);
    ck_assert_double_eq_tol(s, 30.0, 0.001);
    s = mlt__parse_retry_after(date, (date_s - 30) * 1000 + 500);
    ck_assert_double_eq_tol(s, 29.5, 0.001);
    s = mlt__parse_retry_after(" Wed, 21 Oct 2015 07:28:00 GMT\r\n", (date_s - 10) * 1000);
    ck_assert_double_eq_tol(s, 10.0, 0.001);
    /* a date in the past: retry now */
    ck_assert_double_eq(mlt__parse_retry_after(date, (date_s + 3600) * 1000), 0.0);
}
END_TEST

START_TEST(parse_retry_after_refuses_garbage)
{
    const char *bad[] = {"garbage", "", "   ", "5 seconds", "-5", "12abc", "soon", "1 2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        double s = mlt__parse_retry_after(bad[i], 1700000000000LL);
        ck_assert_msg(s < 0, "'%s' parsed as %g", bad[i], s);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("mlflow_api");
    MLT_ADD_TEST(s, api_url_appends_the_rest_prefix_and_keeps_a_path);
    MLT_ADD_TEST(s, get_experiment_by_name_percent_encodes_the_name);
    MLT_ADD_TEST(s, get_experiment_by_name_fits_the_longest_name_and_refuses_more);
    MLT_ADD_TEST(s, create_experiment_body_has_the_name);
    MLT_ADD_TEST(s, create_run_body_has_every_field);
    MLT_ADD_TEST(s, create_run_leaves_out_missing_name_and_user);
    MLT_ADD_TEST(s, search_by_key_filters_on_the_client_run_key_tag);
    MLT_ADD_TEST(s, search_by_key_refuses_a_key_that_could_break_the_filter);
    MLT_ADD_TEST(s, search_by_key_never_truncates_the_filter);
    MLT_ADD_TEST(s, update_run_body_has_status_and_exact_end_time);
    MLT_ADD_TEST(s, log_batch_takes_a_small_batch_whole);
    MLT_ADD_TEST(s, log_batch_of_nothing_is_an_empty_body);
    MLT_ADD_TEST(s, log_batch_writes_nan_and_infinities_as_strings_and_int64_exactly);
    MLT_ADD_TEST(s, log_batch_takes_at_most_1000_metrics);
    MLT_ADD_TEST(s, log_batch_takes_at_most_100_params_and_100_tags);
    MLT_ADD_TEST(s, log_batch_counts_every_entity_against_1000);
    MLT_ADD_TEST(s, log_batch_fills_params_before_tags_before_metrics);
    MLT_ADD_TEST(s, log_batch_fills_the_byte_budget_with_6000_char_params);
    MLT_ADD_TEST(s, log_batch_fills_the_byte_budget_with_8000_char_escaped_tags);
    MLT_ADD_TEST(s, log_batch_respects_the_byte_budget_for_many_mixes);
    MLT_ADD_TEST(s, log_batch_refuses_an_entity_larger_than_the_budget);
    MLT_ADD_TEST(s, classify_200_json_is_ok_with_the_json);
    MLT_ADD_TEST(s, classify_200_garbage_is_a_retriable_ambiguous_protocol_error);
    MLT_ADD_TEST(s, classify_400_invalid_parameter_is_rejected_with_the_server_message);
    MLT_ADD_TEST(s, classify_400_resource_already_exists_keeps_the_error_code);
    MLT_ADD_TEST(s, classify_404_resource_does_not_exist_is_not_found);
    MLT_ADD_TEST(s, classify_html_404_is_a_protocol_error_hinting_at_the_uri);
    MLT_ADD_TEST(s, classify_401_and_403_are_auth_errors);
    MLT_ADD_TEST(s, classify_408_is_a_retriable_ambiguous_timeout);
    MLT_ADD_TEST(s, classify_429_is_rate_limited_with_retry_after);
    MLT_ADD_TEST(s, classify_5xx_is_a_retriable_ambiguous_server_error);
    MLT_ADD_TEST(s, classify_503_temporarily_unavailable_is_a_server_error);
    MLT_ADD_TEST(s, classify_network_error_before_sending_is_not_ambiguous);
    MLT_ADD_TEST(s, classify_network_error_maybe_sent_is_ambiguous);
    MLT_ADD_TEST(s, classify_message_quotes_a_bounded_snippet_of_long_bodies);
    MLT_ADD_TEST(s, classify_snippet_never_cuts_a_utf8_character);
    MLT_ADD_TEST(s, json_str_follows_dotted_paths);
    MLT_ADD_TEST(s, parse_retry_after_reads_seconds);
    MLT_ADD_TEST(s, parse_retry_after_reads_http_dates);
    MLT_ADD_TEST(s, parse_retry_after_refuses_garbage);
    return mlt_test_run_suite(s);
}
