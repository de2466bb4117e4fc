/*
 * check_options.c - unit tests of src/options.c: defaults, every option by name and through its
 * typed setter, refusal of bad values (the old value stays), tracking URI normalisation, masked
 * secrets, the MLflow environment variables, copies and NULL handling.
 */
#include "options.h"
#include "testutil.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Every variable mlt_options_from_env() reads, with the option it sets. */
static const struct {
    const char *env;
    const char *option;
} env_vars[] = {
    {"MLFLOW_TRACKING_URI", "tracking_uri"},
    {"MLFLOW_EXPERIMENT_NAME", "experiment_name"},
    {"MLFLOW_EXPERIMENT_ID", "experiment_id"},
    {"MLFLOW_TRACKING_TOKEN", "token"},
    {"MLFLOW_TRACKING_USERNAME", "username"},
    {"MLFLOW_TRACKING_PASSWORD", "password"},
    {"MLFLOW_TRACKING_INSECURE_TLS", "insecure_tls"},
    {"MLFLOW_TRACKING_SERVER_CERT_PATH", "ca_cert_path"},
    {"MLFLOW_TRACKING_CLIENT_CERT_PATH", "client_cert_path"},
    {"MLFLOW_HTTP_REQUEST_MAX_RETRIES", "max_retries"},
    {"MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "backoff_factor"},
    {"MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "backoff_jitter"},
    {"MLFLOW_HTTP_REQUEST_TIMEOUT", "timeout"},
    {"MLFLOW_RUN_ID", "run_id"},
    {"MLTRACK_RUN_KEY", "run_key"},
    {"MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "system_metrics"},
    {"MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "system_metrics_interval"},
};
#define N_ENV (sizeof env_vars / sizeof env_vars[0])

static void clear_mlflow_env(void)
{
    for (size_t i = 0; i < N_ENV; i++) {
        unsetenv(env_vars[i].env);
    }
}

static mlt_options *new_opts(void)
{
    mlt_options *o = mlt_options_new();
    ck_assert_ptr_nonnull(o);
    return o;
}

/* get(name) is NULL (want NULL) or equals want. */
static void assert_get(const mlt_options *o, const char *name, const char *want)
{
    const char *got = mlt_options_get(o, name);
    if (!want) {
        ck_assert_msg(got == NULL, "option %s is '%s', want unset", name, got);
    } else {
        ck_assert_msg(got != NULL && strcmp(got, want) == 0, "option %s is '%s', want '%s'", name,
                      got ? got : "(null)", want);
    }
}

/* Sets name=value, expecting a failure with code want (a message in errbuf), and the option
 * unchanged (old_text, as get() shows it). */
static void assert_set_fails(mlt_options *o, const char *name, const char *value, mlt_err want)
{
    const char *before = mlt_options_get(o, name);
    char *old_text = before ? strdup(before) : NULL;
    char err[512] = "";
    mlt_err rc = mlt_options_set(o, name, value, err, sizeof err);
    ck_assert_msg(rc == want, "%s='%s': got %s, want %s (%s)", name, value, mlt_err_name(rc),
                  mlt_err_name(want), err);
    ck_assert_msg(err[0] != '\0', "%s='%s': no message", name, value);
    assert_get(o, name, old_text);
    free(old_text);
}

/* ---- defaults ------------------------------------------------------------------------------ */

START_TEST(options_defaults_match_the_python_client)
{
    mlt_options *o = new_opts();
    assert_get(o, "max_retries", "7");
    assert_get(o, "backoff_factor", "2");
    assert_get(o, "backoff_jitter", "1");
    assert_get(o, "timeout", "120");
    assert_get(o, "insecure_tls", "false");
    ck_assert_int_eq(o->max_retries, 7);
    ck_assert_double_eq(o->backoff_factor_s, 2.0);
    ck_assert_double_eq(o->backoff_jitter_s, 1.0);
    ck_assert_double_eq(o->timeout_s, 120.0);
    ck_assert_int_eq(o->insecure_tls, 0);
    ck_assert_ptr_null(o->logger.fn);
    const char *unset[] = {"tracking_uri", "experiment_name", "experiment_id", "token",
                           "username",     "password",        "ca_cert_path",  "client_cert_path"};
    for (size_t i = 0; i < sizeof unset / sizeof unset[0]; i++) {
        assert_get(o, unset[i], NULL);
    }
    mlt_options_free(o);
}
END_TEST

/* ---- every option by name ------------------------------------------------------------------ */

START_TEST(options_set_every_option_by_name)
{
    static const struct {
        const char *name, *value, *read_back;
    } cases[] = {
        {"tracking_uri", "http://localhost:5000", "http://localhost:5000"},
        {"experiment_name", "my experiment", "my experiment"},
        {"experiment_id", "42", "42"},
        {"token", "s3cr3t-token", "***"},
        {"username", "alice", "alice"},
        {"password", "hunter2", "***"},
        {"insecure_tls", "true", "true"},
        {"ca_cert_path", "/etc/ssl/ca.pem", "/etc/ssl/ca.pem"},
        {"client_cert_path", "/home/a/client.pem", "/home/a/client.pem"},
        {"max_retries", "3", "3"},
        {"backoff_factor", "0.5", "0.5"},
        {"backoff_jitter", "0", "0"},
        {"timeout", "2.5", "2.5"},
        {"queue_dir", "/tmp/q", "/tmp/q"},
        {"fsync", "always", "always"},
        {"fsync_interval_ms", "250", "250"},
        {"queue_max_bytes", "1048576", "1048576"},
        {"queue_full", "fail", "fail"},
        {"queue_block_ms", "0", "0"},
        {"linger_ms", "5", "5"},
        {"run_id", "0123456789abcdef0123456789abcdef", "0123456789abcdef0123456789abcdef"},
        {"run_key", "6f1c2e4a-0b7d-4e2a-9c3f-1a2b3c4d5e6f", "6f1c2e4a-0b7d-4e2a-9c3f-1a2b3c4d5e6f"},
        {"system_metrics", "true", "true"},
        {"system_metrics_interval", "0.5", "0.5"},
        {"queue_segment_bytes", "65536", "65536"},
        {"attach_timeout", "0", "0"},
        {"multipart_upload", "false", "false"},
        {"multipart_min_bytes", "1", "1"},
        {"multipart_chunk_bytes", "5242880", "5242880"},
        {"resume", "allow", "allow"},
        {"lease_ms", "2500", "2500"},
    };
    ck_assert_int_eq((int)(sizeof cases / sizeof cases[0]), MLT__OPT_COUNT);
    mlt_options *o = new_opts();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[256] = "";
        mlt_err rc = mlt_options_set(o, cases[i].name, cases[i].value, err, sizeof err);
        ck_assert_msg(rc == MLT_OK, "%s: %s (%s)", cases[i].name, mlt_err_name(rc), err);
        assert_get(o, cases[i].name, cases[i].read_back);
    }
    /* the typed values follow the text */
    ck_assert_int_eq(o->insecure_tls, 1);
    ck_assert_int_eq(o->max_retries, 3);
    ck_assert_double_eq(o->backoff_factor_s, 0.5);
    ck_assert_double_eq(o->backoff_jitter_s, 0.0);
    ck_assert_double_eq(o->timeout_s, 2.5);
    ck_assert_int_eq(o->multipart_upload, 0);
    ck_assert_int_eq(o->multipart_min_bytes, 1);
    ck_assert_int_eq(o->multipart_chunk_bytes, 5242880);
    ck_assert_int_eq(o->resume, 1);
    ck_assert_int_eq(o->lease_ms, 2500);
    /* secrets are kept as given, only masked when read back */
    ck_assert_str_eq(mlt__opt_str(o, MLT__OPT_TOKEN), "s3cr3t-token");
    ck_assert_str_eq(mlt__opt_str(o, MLT__OPT_PASSWORD), "hunter2");
    ck_assert_str_eq(mlt__opt_str(o, MLT__OPT_USERNAME), "alice");
    mlt_options_free(o);
}
END_TEST

START_TEST(multipart_options_have_python_s_defaults_variables_and_ranges)
{
    mlt_options *o = new_opts();
    ck_assert_ptr_null(mlt_options_get(o, "multipart_upload")); /* unset: the server decides */
    ck_assert_int_eq(o->multipart_min_bytes, 500LL << 20);
    ck_assert_int_eq(o->multipart_chunk_bytes, 10LL << 20);
    assert_set_fails(o, "multipart_upload", "maybe", MLT_ERR_BAD_OPTION);
    assert_set_fails(o, "multipart_chunk_bytes", "1048575", MLT_ERR_BAD_OPTION);    /* < 1 MiB */
    assert_set_fails(o, "multipart_chunk_bytes", "5368709121", MLT_ERR_BAD_OPTION); /* > 5 GiB */
    assert_set_fails(o, "multipart_min_bytes", "0", MLT_ERR_BAD_OPTION);
    mlt_options_free(o);
    setenv("MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD", "true", 1);
    setenv("MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE", "1048576", 1);
    setenv("MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE", "2097152", 1);
    o = new_opts();
    ck_assert_int_eq(mlt_options_from_env(o, NULL, 0), MLT_OK);
    ck_assert_int_eq(o->multipart_upload, 1);
    ck_assert_int_eq(o->multipart_min_bytes, 1048576);
    ck_assert_int_eq(o->multipart_chunk_bytes, 2097152);
    mlt_options_free(o);
    unsetenv("MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD");
    unsetenv("MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE");
    unsetenv("MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE");
}
END_TEST

START_TEST(lease_ms_has_a_default_a_variable_and_a_range)
{
    mlt_options *o = new_opts();
    ck_assert_int_eq(o->lease_ms, 10000);
    assert_set_fails(o, "lease_ms", "999", MLT_ERR_BAD_OPTION);
    assert_set_fails(o, "lease_ms", "600001", MLT_ERR_BAD_OPTION);
    assert_set_fails(o, "lease_ms", "10s", MLT_ERR_BAD_OPTION);
    ck_assert_int_eq(o->lease_ms, 10000);
    mlt_options_free(o);
    setenv("MLTRACK_LEASE_MS", "3000", 1);
    o = new_opts();
    ck_assert_int_eq(mlt_options_from_env(o, NULL, 0), MLT_OK);
    ck_assert_int_eq(o->lease_ms, 3000);
    mlt_options_free(o);
    unsetenv("MLTRACK_LEASE_MS");
}
END_TEST

START_TEST(options_setting_again_replaces_the_value)
{
    mlt_options *o = new_opts();
    ck_assert_int_eq(mlt_options_set(o, "experiment_id", "1", NULL, 0), MLT_OK);
    ck_assert_int_eq(mlt_options_set(o, "experiment_id", "2", NULL, 0), MLT_OK);
    assert_get(o, "experiment_id", "2");
    ck_assert_int_eq(mlt_options_set(o, "max_retries", "0", NULL, 0), MLT_OK);
    ck_assert_int_eq(o->max_retries, 0);
    ck_assert_int_eq(mlt_options_set(o, "max_retries", "100", NULL, 0), MLT_OK);
    ck_assert_int_eq(o->max_retries, 100);
    mlt_options_free(o);
}
END_TEST

START_TEST(options_unknown_name_fails_naming_it)
{
    mlt_options *o = new_opts();
    const char *names[] = {"trackinguri", "TRACKING_URI", "", "tracking_uri ", "retries"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char err[256] = "";
        ck_assert_int_eq(mlt_options_set(o, names[i], "x", err, sizeof err),
                         MLT_ERR_UNKNOWN_OPTION);
        char quoted[64];
        snprintf(quoted, sizeof quoted, "'%s'", names[i]);
        ck_assert_msg(strstr(err, quoted) != NULL, "message '%s' does not name %s", err, quoted);
        ck_assert_ptr_null(mlt_options_get(o, names[i]));
    }
    mlt_options_free(o);
}
END_TEST

START_TEST(options_null_value_restores_default_or_clears)
{
    mlt_options *o = new_opts();
    ck_assert_int_eq(mlt_options_set(o, "max_retries", "3", NULL, 0), MLT_OK);
    ck_assert_int_eq(mlt_options_set(o, "max_retries", NULL, NULL, 0), MLT_OK);
    assert_get(o, "max_retries", "7");
    ck_assert_int_eq(o->max_retries, 7);
    ck_assert_int_eq(mlt_options_set(o, "timeout", "5", NULL, 0), MLT_OK);
    ck_assert_int_eq(mlt_options_set(o, "timeout", NULL, NULL, 0), MLT_OK);
    ck_assert_double_eq(o->timeout_s, 120.0);
    ck_assert_int_eq(mlt_options_set(o, "insecure_tls", "yes", NULL, 0), MLT_OK);
    ck_assert_int_eq(mlt_options_set(o, "insecure_tls", NULL, NULL, 0), MLT_OK);
    ck_assert_int_eq(o->insecure_tls, 0);
    assert_get(o, "insecure_tls", "false");
    ck_assert_int_eq(mlt_options_set(o, "tracking_uri", "http://h", NULL, 0), MLT_OK);
    ck_assert_int_eq(mlt_options_set(o, "tracking_uri", NULL, NULL, 0), MLT_OK);
    assert_get(o, "tracking_uri", NULL);
    ck_assert_int_eq(mlt_options_set(o, "token", "t", NULL, 0), MLT_OK);
    ck_assert_int_eq(mlt_options_set(o, "token", NULL, NULL, 0), MLT_OK);
    assert_get(o, "token", NULL);
    mlt_options_free(o);
}
END_TEST

/* ---- tracking_uri -------------------------------------------------------------------------- */

START_TEST(tracking_uri_refuses_what_is_not_http_and_keeps_old_value)
{
    mlt_options *o = new_opts();
    ck_assert_int_eq(mlt_options_set(o, "tracking_uri", "http://good:5000", NULL, 0), MLT_OK);
    const char *bad[] = {
        "file:///x",
        "databricks",
        "databricks://profile",
        "http://",
        "https://",
        "http:///path",
        "http://:5000",
        "ftp://host",
        "",
        "localhost:5000",
        "sqlite:///mlflow.db",
        "http:/host",
        "http://h st:5000",
        "http://h:5000/?x=1",
        "http://h/#frag",
        "mlruns",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_set_fails(o, "tracking_uri", bad[i], MLT_ERR_BAD_OPTION);
    }
    assert_get(o, "tracking_uri", "http://good:5000");
    char err[256] = "";
    mlt_options_set(o, "tracking_uri", "file:///x", err, sizeof err);
    ck_assert_msg(strstr(err, "file:///x") != NULL, "message '%s' does not show the URI", err);
    mlt_options_free(o);
}
END_TEST

START_TEST(tracking_uri_strips_trailing_slashes_and_keeps_a_path)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"http://h:5000/", "http://h:5000"},
        {"http://h:5000///", "http://h:5000"},
        {"https://example.com/proxy/", "https://example.com/proxy"},
        {"https://example.com/proxy/mlflow//", "https://example.com/proxy/mlflow"},
        {"http://127.0.0.1:5000/a/b", "http://127.0.0.1:5000/a/b"},
        {"HTTP://Host:80", "HTTP://Host:80"},
        {"https://[::1]:8443/x/", "https://[::1]:8443/x"},
    };
    mlt_options *o = new_opts();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[256] = "";
        ck_assert_msg(mlt_options_set(o, "tracking_uri", cases[i].in, err, sizeof err) == MLT_OK,
                      "%s refused: %s", cases[i].in, err);
        assert_get(o, "tracking_uri", cases[i].out);
        ck_assert_str_eq(mlt__opt_str(o, MLT__OPT_TRACKING_URI), cases[i].out);
    }
    mlt_options_free(o);
}
END_TEST

/* ---- numbers and booleans ------------------------------------------------------------------ */

START_TEST(max_retries_refuses_bad_numbers)
{
    mlt_options *o = new_opts();
    ck_assert_int_eq(mlt_options_set(o, "max_retries", "3", NULL, 0), MLT_OK);
    const char *bad[] = {"abc", "",  "3x", "-1", "1.5", "101", "99999999999999999999",
                         "0x",  " ", "3 ", "--3"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_set_fails(o, "max_retries", bad[i], MLT_ERR_BAD_OPTION);
        ck_assert_int_eq(o->max_retries, 3);
    }
    mlt_options_free(o);
}
END_TEST

START_TEST(experiment_id_is_an_id)
{
    /* it is stored in the run map and sent in URLs: no space, newline or slash gets in */
    mlt_options *o = new_opts();
    ck_assert_int_eq(mlt_options_set(o, "experiment_id", "0", NULL, 0), MLT_OK);
    const char *bad[] = {"",
                         "a b",
                         "1\n",
                         "../1",
                         "1/2",
                         "x\"y",
                         "12345678901234567890123456789012345678901234567890123456789012345"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_set_fails(o, "experiment_id", bad[i], MLT_ERR_BAD_OPTION);
    }
    assert_get(o, "experiment_id", "0");
    ck_assert_int_eq(mlt_options_set(o, "experiment_id", "f3a9-b_2", NULL, 0), MLT_OK);
    mlt_options_free(o);
}
END_TEST

START_TEST(queue_segment_bytes_has_a_range_and_a_variable)
{
    mlt_options *o = new_opts();
    ck_assert_int_eq(o->queue_segment_bytes, 67108864); /* 64 MiB by default */
    const char *bad[] = {"65535", "0", "-65536", "4294967297", "1e6", "64k"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_set_fails(o, "queue_segment_bytes", bad[i], MLT_ERR_BAD_OPTION);
    }
    ck_assert_int_eq(o->queue_segment_bytes, 67108864);
    setenv("MLTRACK_QUEUE_SEGMENT_BYTES", "131072", 1);
    char err[256] = "";
    ck_assert_int_eq(mlt_options_from_env(o, err, sizeof err), MLT_OK);
    unsetenv("MLTRACK_QUEUE_SEGMENT_BYTES");
    ck_assert_int_eq(o->queue_segment_bytes, 131072);
    mlt_options_free(o);
}
END_TEST

START_TEST(seconds_options_refuse_bad_and_negative_numbers)
{
    mlt_options *o = new_opts();
    const char *names[] = {"backoff_factor", "backoff_jitter", "timeout"};
    const char *bad[] = {"x", "", "-0.5", "-1", "nan", "inf", "-inf", "1e9", "86401", "2s", "1,5"};
    for (size_t n = 0; n < 3; n++) {
        ck_assert_int_eq(mlt_options_set(o, names[n], "4.5", NULL, 0), MLT_OK);
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            assert_set_fails(o, names[n], bad[i], MLT_ERR_BAD_OPTION);
        }
        assert_get(o, names[n], "4.5");
    }
    ck_assert_double_eq(o->backoff_factor_s, 4.5);
    ck_assert_double_eq(o->backoff_jitter_s, 4.5);
    ck_assert_double_eq(o->timeout_s, 4.5);
    /* zero is a valid backoff but not a valid timeout */
    ck_assert_int_eq(mlt_options_set(o, "backoff_factor", "0", NULL, 0), MLT_OK);
    ck_assert_int_eq(mlt_options_set(o, "backoff_jitter", "0", NULL, 0), MLT_OK);
    ck_assert_double_eq(o->backoff_factor_s, 0.0);
    assert_set_fails(o, "timeout", "0", MLT_ERR_BAD_OPTION);
    assert_set_fails(o, "timeout", "0.0", MLT_ERR_BAD_OPTION);
    assert_set_fails(o, "timeout", "-0", MLT_ERR_BAD_OPTION);
    ck_assert_double_eq(o->timeout_s, 4.5);
    ck_assert_int_eq(mlt_options_set(o, "timeout", "86400", NULL, 0), MLT_OK);
    ck_assert_double_eq(o->timeout_s, 86400.0);
    mlt_options_free(o);
}
END_TEST

START_TEST(insecure_tls_takes_boolean_words_only)
{
    static const struct {
        const char *word;
        int value;
    } good[] = {{"true", 1}, {"false", 0}, {"1", 1},   {"0", 0},    {"yes", 1},
                {"no", 0},   {"on", 1},    {"off", 0}, {"TRUE", 1}, {"False", 0}};
    mlt_options *o = new_opts();
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        ck_assert_int_eq(mlt_options_set(o, "insecure_tls", good[i].word, NULL, 0), MLT_OK);
        ck_assert_int_eq(o->insecure_tls, good[i].value);
        assert_get(o, "insecure_tls", good[i].word);
    }
    ck_assert_int_eq(mlt_options_set(o, "insecure_tls", "true", NULL, 0), MLT_OK);
    const char *bad[] = {"maybe", "", "2", "tru", "yes please", " true"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_set_fails(o, "insecure_tls", bad[i], MLT_ERR_BAD_OPTION);
        ck_assert_int_eq(o->insecure_tls, 1);
    }
    char err[256] = "";
    mlt_options_set(o, "insecure_tls", "maybe", err, sizeof err);
    ck_assert_msg(strstr(err, "maybe") != NULL, "message '%s'", err);
    mlt_options_free(o);
}
END_TEST

/* ---- experiment name ----------------------------------------------------------------------- */

START_TEST(experiment_name_is_checked_and_old_value_kept)
{
    mlt_options *o = new_opts();
    char name[256 * 2 + 3];
    for (int i = 0; i < 256; i++) {
        memcpy(name + 2 * i, "\xc3\xa9", 2); /* 256 code points, 512 bytes */
    }
    name[512] = '\0';
    ck_assert_int_eq(mlt_options_set(o, "experiment_name", name, NULL, 0), MLT_OK);
    assert_get(o, "experiment_name", name);
    ck_assert_int_eq(mlt_options_set(o, "experiment_name", "keep me", NULL, 0), MLT_OK);
    memcpy(name + 512, "a", 2); /* 257 code points */
    assert_set_fails(o, "experiment_name", name, MLT_ERR_VALUE_TOO_LONG);
    /* empty and invalid UTF-8 names are refused too (the exact code is the validator's) */
    const char *bad[] = {"", "bad \xff utf8", "trunc \xc3"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[256] = "";
        ck_assert_int_ne(mlt_options_set(o, "experiment_name", bad[i], err, sizeof err), MLT_OK);
        ck_assert_str_ne(err, "");
        assert_get(o, "experiment_name", "keep me");
    }
    mlt_options_free(o);
}
END_TEST

/* ---- secrets ------------------------------------------------------------------------------- */

START_TEST(secrets_read_back_masked)
{
    mlt_options *o = new_opts();
    ck_assert_ptr_null(mlt_options_get(o, "token"));
    ck_assert_ptr_null(mlt_options_get(o, "password"));
    ck_assert_int_eq(mlt_options_set_token(o, "abc"), MLT_OK);
    ck_assert_int_eq(mlt_options_set_basic_auth(o, "bob", "pw"), MLT_OK);
    assert_get(o, "token", "***");
    assert_get(o, "password", "***");
    assert_get(o, "username", "bob");
    ck_assert_str_eq(mlt__opt_str(o, MLT__OPT_TOKEN), "abc");
    ck_assert_str_eq(mlt__opt_str(o, MLT__OPT_PASSWORD), "pw");
    ck_assert_int_eq(mlt_options_set_token(o, NULL), MLT_OK);
    ck_assert_int_eq(mlt_options_set_basic_auth(o, NULL, NULL), MLT_OK);
    ck_assert_ptr_null(mlt_options_get(o, "token"));
    ck_assert_ptr_null(mlt_options_get(o, "password"));
    ck_assert_ptr_null(mlt_options_get(o, "username"));
    mlt_options_free(o);
}
END_TEST

/* ---- typed setters ------------------------------------------------------------------------- */

START_TEST(typed_string_setters_copy_and_clear)
{
    mlt_options *o = new_opts();
    char uri[] = "https://mlflow.example.com/base/";
    ck_assert_int_eq(mlt_options_set_tracking_uri(o, uri), MLT_OK);
    uri[0] = 'X'; /* the option holds a copy */
    assert_get(o, "tracking_uri", "https://mlflow.example.com/base");
    ck_assert_int_eq(mlt_options_set_tracking_uri(o, "databricks"), MLT_ERR_BAD_OPTION);
    ck_assert_int_eq(mlt_options_set_tracking_uri(o, "file:///tmp/mlruns"), MLT_ERR_BAD_OPTION);
    assert_get(o, "tracking_uri", "https://mlflow.example.com/base");

    ck_assert_int_eq(mlt_options_set_experiment_name(o, "exp"), MLT_OK);
    assert_get(o, "experiment_name", "exp");
    ck_assert_int_ne(mlt_options_set_experiment_name(o, ""), MLT_OK);
    assert_get(o, "experiment_name", "exp");
    ck_assert_int_eq(mlt_options_set_experiment_id(o, "17"), MLT_OK);
    assert_get(o, "experiment_id", "17");
    ck_assert_int_eq(mlt_options_set_ca_cert_path(o, "/ca.pem"), MLT_OK);
    assert_get(o, "ca_cert_path", "/ca.pem");
    ck_assert_int_eq(mlt_options_set_client_cert_path(o, "/client.pem"), MLT_OK);
    assert_get(o, "client_cert_path", "/client.pem");

    ck_assert_int_eq(mlt_options_set_tracking_uri(o, NULL), MLT_OK);
    ck_assert_int_eq(mlt_options_set_experiment_name(o, NULL), MLT_OK);
    ck_assert_int_eq(mlt_options_set_experiment_id(o, NULL), MLT_OK);
    ck_assert_int_eq(mlt_options_set_ca_cert_path(o, NULL), MLT_OK);
    ck_assert_int_eq(mlt_options_set_client_cert_path(o, NULL), MLT_OK);
    const char *cleared[] = {"tracking_uri", "experiment_name", "experiment_id", "ca_cert_path",
                             "client_cert_path"};
    for (size_t i = 0; i < sizeof cleared / sizeof cleared[0]; i++) {
        assert_get(o, cleared[i], NULL);
    }
    mlt_options_free(o);
}
END_TEST

START_TEST(typed_insecure_tls_setter_writes_true_or_false)
{
    mlt_options *o = new_opts();
    ck_assert_int_eq(mlt_options_set_insecure_tls(o, 1), MLT_OK);
    assert_get(o, "insecure_tls", "true");
    ck_assert_int_eq(o->insecure_tls, 1);
    ck_assert_int_eq(mlt_options_set_insecure_tls(o, 42), MLT_OK);
    ck_assert_int_eq(o->insecure_tls, 1);
    ck_assert_int_eq(mlt_options_set_insecure_tls(o, 0), MLT_OK);
    assert_get(o, "insecure_tls", "false");
    ck_assert_int_eq(o->insecure_tls, 0);
    mlt_options_free(o);
}
END_TEST

START_TEST(typed_retries_and_timeout_setters)
{
    mlt_options *o = new_opts();
    ck_assert_int_eq(mlt_options_set_retries(o, 3, 0.5, 0.25), MLT_OK);
    assert_get(o, "max_retries", "3");
    assert_get(o, "backoff_factor", "0.5");
    assert_get(o, "backoff_jitter", "0.25");
    ck_assert_int_eq(o->max_retries, 3);
    ck_assert_double_eq(o->backoff_factor_s, 0.5);
    ck_assert_double_eq(o->backoff_jitter_s, 0.25);
    ck_assert_int_eq(mlt_options_set_retries(o, 0, 0, 0), MLT_OK);
    ck_assert_int_eq(o->max_retries, 0);
    /* a value that needs all 17 digits survives the text form exactly */
    ck_assert_int_eq(mlt_options_set_retries(o, 1, 0.1 + 0.2, 1.0 / 3.0), MLT_OK);
    ck_assert_double_eq(o->backoff_factor_s, 0.1 + 0.2);
    ck_assert_double_eq(o->backoff_jitter_s, 1.0 / 3.0);
    ck_assert_int_eq(mlt_options_set_timeout(o, 2.5), MLT_OK);
    assert_get(o, "timeout", "2.5");
    ck_assert_double_eq(o->timeout_s, 2.5);
    ck_assert_int_eq(mlt_options_set_timeout(o, 86400), MLT_OK);
    ck_assert_double_eq(o->timeout_s, 86400.0);
    mlt_options_free(o);
}
END_TEST

/* A refused typed value is a failure (MLT_ERR_INVALID_ARG for an out-of-range number, as the
 * enum documents, or MLT_ERR_BAD_OPTION as mlt_options_set() says) and changes nothing. */
static void assert_refused(mlt_err rc)
{
    ck_assert_msg(rc == MLT_ERR_INVALID_ARG || rc == MLT_ERR_BAD_OPTION, "got %s",
                  mlt_err_name(rc));
}

START_TEST(typed_retries_and_timeout_refuse_out_of_range_values)
{
    mlt_options *o = new_opts();
    ck_assert_int_eq(mlt_options_set_retries(o, 3, 0.5, 0.25), MLT_OK);
    ck_assert_int_eq(mlt_options_set_timeout(o, 10), MLT_OK);
    assert_refused(mlt_options_set_retries(o, -1, 1, 1));
    assert_refused(mlt_options_set_retries(o, 101, 1, 1));
    assert_refused(mlt_options_set_retries(o, 1, -1, 1));
    assert_refused(mlt_options_set_retries(o, 1, 1, -0.5));
    assert_refused(mlt_options_set_retries(o, 1, NAN, 1));
    assert_refused(mlt_options_set_retries(o, 1, 1, NAN));
    assert_refused(mlt_options_set_retries(o, 1, INFINITY, 1));
    assert_refused(mlt_options_set_retries(o, 1, 1, 1e9));
    assert_refused(mlt_options_set_timeout(o, 0));
    assert_refused(mlt_options_set_timeout(o, -1));
    assert_refused(mlt_options_set_timeout(o, NAN));
    assert_refused(mlt_options_set_timeout(o, INFINITY));
    assert_refused(mlt_options_set_timeout(o, 1e6));
    assert_get(o, "max_retries", "3");
    assert_get(o, "backoff_factor", "0.5");
    assert_get(o, "backoff_jitter", "0.25");
    assert_get(o, "timeout", "10");
    ck_assert_int_eq(o->max_retries, 3);
    ck_assert_double_eq(o->backoff_factor_s, 0.5);
    ck_assert_double_eq(o->backoff_jitter_s, 0.25);
    ck_assert_double_eq(o->timeout_s, 10.0);
    mlt_options_free(o);
}
END_TEST

/* mlt_options_set_retries() sets three options: it must set all of them or none. A tiny positive
 * backoff (a subnormal double) passes its range check, yet its text form is then refused. */
START_TEST(typed_retries_setter_is_all_or_nothing)
{
    mlt_options *o = new_opts();
    mlt_err rc = mlt_options_set_retries(o, 3, 1e-310, 0.5);
    /* read everything, free, then judge (a failed assertion must not leak) */
    char text[32];
    snprintf(text, sizeof text, "%s", mlt_options_get(o, "max_retries"));
    int retries = o->max_retries;
    double factor = o->backoff_factor_s;
    double jitter = o->backoff_jitter_s;
    mlt_options_free(o);
    if (rc == MLT_OK) {
        ck_assert_str_eq(text, "3");
        ck_assert_int_eq(retries, 3);
        ck_assert_double_eq(factor, 1e-310);
        ck_assert_double_eq(jitter, 0.5);
    } else {
        ck_assert_msg(retries == 7 && strcmp(text, "7") == 0 && factor == 2.0 && jitter == 1.0,
                      "set_retries failed with %s but changed max_retries to %d (text '%s'), "
                      "factor %g, jitter %g",
                      mlt_err_name(rc), retries, text, factor, jitter);
    }
}
END_TEST

static void dummy_log(int level, const char *message, void *userdata)
{
    (void)level;
    (void)message;
    (void)userdata;
}

START_TEST(typed_logger_setter_stores_function_and_userdata)
{
    mlt_options *o = new_opts();
    int ud = 0;
    ck_assert_int_eq(mlt_options_set_logger(o, dummy_log, &ud), MLT_OK);
    ck_assert(o->logger.fn == dummy_log);
    ck_assert_ptr_eq(o->logger.userdata, &ud);
    ck_assert_int_eq(mlt_options_set_logger(o, NULL, NULL), MLT_OK);
    ck_assert(o->logger.fn == NULL);
    mlt_options_free(o);
}
END_TEST

/* ---- environment --------------------------------------------------------------------------- */

START_TEST(from_env_reads_every_mlflow_variable)
{
    static const struct {
        const char *value, *read_back;
    } vals[N_ENV] = {
        {"http://env-host:5000/prefix/", "http://env-host:5000/prefix"},
        {"env experiment", "env experiment"},
        {"123", "123"},
        {"env-token", "***"},
        {"env-user", "env-user"},
        {"env-pass", "***"},
        {"true", "true"},
        {"/env/ca.pem", "/env/ca.pem"},
        {"/env/client.pem", "/env/client.pem"},
        {"4", "4"},
        {"0.25", "0.25"},
        {"0.5", "0.5"},
        {"30", "30"},
        {"a1b2c3", "a1b2c3"},
        {"key-1_x", "key-1_x"},
        {"true", "true"},
        {"2.5", "2.5"},
    };
    clear_mlflow_env();
    for (size_t i = 0; i < N_ENV; i++) {
        ck_assert_int_eq(setenv(env_vars[i].env, vals[i].value, 1), 0);
    }
    mlt_options *o = new_opts();
    char err[256] = "";
    mlt_err rc = mlt_options_from_env(o, err, sizeof err);
    clear_mlflow_env();
    ck_assert_msg(rc == MLT_OK, "%s: %s", mlt_err_name(rc), err);
    for (size_t i = 0; i < N_ENV; i++) {
        assert_get(o, env_vars[i].option, vals[i].read_back);
    }
    ck_assert_str_eq(mlt__opt_str(o, MLT__OPT_TOKEN), "env-token");
    ck_assert_str_eq(mlt__opt_str(o, MLT__OPT_PASSWORD), "env-pass");
    ck_assert_int_eq(o->insecure_tls, 1);
    ck_assert_int_eq(o->max_retries, 4);
    ck_assert_double_eq(o->backoff_factor_s, 0.25);
    ck_assert_double_eq(o->backoff_jitter_s, 0.5);
    ck_assert_double_eq(o->timeout_s, 30.0);
    ck_assert_int_eq(o->system_metrics, 1);
    ck_assert_double_eq(o->system_metrics_interval_s, 2.5);
    mlt_options_free(o);
}
END_TEST

START_TEST(from_env_reads_each_variable_alone)
{
    for (size_t i = 0; i < N_ENV; i++) {
        clear_mlflow_env();
        /* a value every option accepts as text */
        const char *value = "1";
        if (strcmp(env_vars[i].option, "tracking_uri") == 0) {
            value = "http://one";
        }
        ck_assert_int_eq(setenv(env_vars[i].env, value, 1), 0);
        mlt_options *o = new_opts();
        char err[256] = "";
        mlt_err rc = mlt_options_from_env(o, err, sizeof err);
        clear_mlflow_env();
        ck_assert_msg(rc == MLT_OK, "%s: %s", env_vars[i].env, err);
        const char *want = value;
        if (strcmp(env_vars[i].option, "token") == 0 ||
            strcmp(env_vars[i].option, "password") == 0) {
            want = "***";
        }
        assert_get(o, env_vars[i].option, want);
        /* no other option moved from its default */
        for (size_t k = 0; k < N_ENV; k++) {
            if (k == i) {
                continue;
            }
            mlt_options *d = new_opts();
            assert_get(o, env_vars[k].option, mlt_options_get(d, env_vars[k].option));
            mlt_options_free(d);
        }
        mlt_options_free(o);
    }
}
END_TEST

START_TEST(from_env_leaves_options_alone_when_unset_or_empty)
{
    clear_mlflow_env();
    mlt_options *o = new_opts();
    ck_assert_int_eq(mlt_options_set(o, "tracking_uri", "http://kept", NULL, 0), MLT_OK);
    ck_assert_int_eq(mlt_options_set(o, "max_retries", "2", NULL, 0), MLT_OK);
    ck_assert_int_eq(mlt_options_from_env(o, NULL, 0), MLT_OK);
    assert_get(o, "tracking_uri", "http://kept");
    assert_get(o, "max_retries", "2");
    for (size_t i = 0; i < N_ENV; i++) {
        ck_assert_int_eq(setenv(env_vars[i].env, "", 1), 0);
    }
    mlt_err rc = mlt_options_from_env(o, NULL, 0);
    clear_mlflow_env();
    ck_assert_int_eq(rc, MLT_OK);
    assert_get(o, "tracking_uri", "http://kept");
    assert_get(o, "max_retries", "2");
    assert_get(o, "timeout", "120");
    mlt_options_free(o);
}
END_TEST

START_TEST(from_env_invalid_value_fails_naming_the_variable)
{
    static const struct {
        const char *env, *value;
    } bad[] = {
        {"MLFLOW_TRACKING_URI", "file:///tmp/mlruns"},
        {"MLFLOW_TRACKING_URI", "databricks"},
        {"MLFLOW_HTTP_REQUEST_MAX_RETRIES", "many"},
        {"MLFLOW_HTTP_REQUEST_MAX_RETRIES", "-1"},
        {"MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "-2"},
        {"MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "abc"},
        {"MLFLOW_HTTP_REQUEST_TIMEOUT", "0"},
        {"MLFLOW_TRACKING_INSECURE_TLS", "maybe"},
        {"MLFLOW_RUN_ID", "abc'def"},
        {"MLTRACK_RUN_KEY", "a b"},
        {"MLTRACK_RUN_KEY", "0123456789012345678901234567890123456789012345678901234567890123x"},
        {"MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "yes please"},
        {"MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        clear_mlflow_env();
        ck_assert_int_eq(setenv(bad[i].env, bad[i].value, 1), 0);
        mlt_options *o = new_opts();
        char err[512] = "";
        mlt_err rc = mlt_options_from_env(o, err, sizeof err);
        clear_mlflow_env();
        ck_assert_msg(rc == MLT_ERR_BAD_OPTION, "%s=%s: got %s", bad[i].env, bad[i].value,
                      mlt_err_name(rc));
        ck_assert_msg(strstr(err, bad[i].env) != NULL, "message '%s' does not name %s", err,
                      bad[i].env);
        /* the option keeps its value */
        mlt_options *d = new_opts();
        ck_assert_int_eq(o->max_retries, d->max_retries);
        ck_assert_double_eq(o->timeout_s, d->timeout_s);
        ck_assert_int_eq(o->insecure_tls, d->insecure_tls);
        ck_assert_ptr_null(mlt_options_get(o, "tracking_uri"));
        mlt_options_free(d);
        mlt_options_free(o);
    }
}
END_TEST

START_TEST(from_env_keeps_variables_read_before_the_bad_one)
{
    clear_mlflow_env();
    ck_assert_int_eq(setenv("MLFLOW_TRACKING_URI", "http://first", 1), 0);
    ck_assert_int_eq(setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "never", 1), 0);
    mlt_options *o = new_opts();
    char err[512] = "";
    mlt_err rc = mlt_options_from_env(o, err, sizeof err);
    clear_mlflow_env();
    ck_assert_int_eq(rc, MLT_ERR_BAD_OPTION);
    ck_assert_ptr_nonnull(strstr(err, "MLFLOW_HTTP_REQUEST_TIMEOUT"));
    assert_get(o, "tracking_uri", "http://first");
    assert_get(o, "timeout", "120");
    mlt_options_free(o);
}
END_TEST

/* ---- copies and NULL ----------------------------------------------------------------------- */

START_TEST(options_dup_is_a_deep_independent_copy)
{
    mlt_options *o = new_opts();
    ck_assert_int_eq(mlt_options_set(o, "tracking_uri", "http://h/p/", NULL, 0), MLT_OK);
    ck_assert_int_eq(mlt_options_set_token(o, "tok"), MLT_OK);
    ck_assert_int_eq(mlt_options_set_retries(o, 5, 0.75, 0), MLT_OK);
    ck_assert_int_eq(mlt_options_set_insecure_tls(o, 1), MLT_OK);
    int ud = 0;
    ck_assert_int_eq(mlt_options_set_logger(o, dummy_log, &ud), MLT_OK);
    mlt_options *c = mlt__options_dup(o);
    ck_assert_ptr_nonnull(c);
    mlt_options_free(o);
    assert_get(c, "tracking_uri", "http://h/p");
    ck_assert_str_eq(mlt__opt_str(c, MLT__OPT_TOKEN), "tok");
    ck_assert_int_eq(c->max_retries, 5);
    ck_assert_double_eq(c->backoff_factor_s, 0.75);
    ck_assert_double_eq(c->backoff_jitter_s, 0.0);
    ck_assert_int_eq(c->insecure_tls, 1);
    ck_assert(c->logger.fn == dummy_log);
    ck_assert_ptr_eq(c->logger.userdata, &ud);
    mlt_options_free(c);

    mlt_options *d = mlt__options_dup(NULL);
    ck_assert_ptr_nonnull(d);
    assert_get(d, "max_retries", "7");
    ck_assert_double_eq(d->timeout_s, 120.0);
    mlt_options_free(d);
}
END_TEST

START_TEST(options_null_arguments_are_refused)
{
    char err[256] = "";
    ck_assert_int_eq(mlt_options_set(NULL, "timeout", "1", err, sizeof err), MLT_ERR_INVALID_ARG);
    ck_assert_str_ne(err, "");
    mlt_options *o = new_opts();
    err[0] = '\0';
    ck_assert_int_eq(mlt_options_set(o, NULL, "1", err, sizeof err), MLT_ERR_INVALID_ARG);
    ck_assert_str_ne(err, "");
    ck_assert_ptr_null(mlt_options_get(NULL, "timeout"));
    ck_assert_ptr_null(mlt_options_get(o, NULL));
    ck_assert_ptr_null(mlt_options_get(o, "no_such_option"));
    ck_assert_int_eq(mlt_options_from_env(NULL, NULL, 0), MLT_ERR_INVALID_ARG);
    ck_assert_int_eq(mlt_options_set_tracking_uri(NULL, "http://h"), MLT_ERR_INVALID_ARG);
    ck_assert_int_eq(mlt_options_set_experiment_name(NULL, "e"), MLT_ERR_INVALID_ARG);
    ck_assert_int_eq(mlt_options_set_experiment_id(NULL, "1"), MLT_ERR_INVALID_ARG);
    ck_assert_int_eq(mlt_options_set_token(NULL, "t"), MLT_ERR_INVALID_ARG);
    ck_assert_int_eq(mlt_options_set_basic_auth(NULL, "u", "p"), MLT_ERR_INVALID_ARG);
    ck_assert_int_eq(mlt_options_set_insecure_tls(NULL, 1), MLT_ERR_INVALID_ARG);
    ck_assert_int_eq(mlt_options_set_ca_cert_path(NULL, "/x"), MLT_ERR_INVALID_ARG);
    ck_assert_int_eq(mlt_options_set_client_cert_path(NULL, "/x"), MLT_ERR_INVALID_ARG);
    ck_assert_int_eq(mlt_options_set_retries(NULL, 1, 1, 1), MLT_ERR_INVALID_ARG);
    ck_assert_int_eq(mlt_options_set_timeout(NULL, 1), MLT_ERR_INVALID_ARG);
    ck_assert_int_eq(mlt_options_set_logger(NULL, dummy_log, NULL), MLT_ERR_INVALID_ARG);
    /* a failure with no errbuf is fine */
    ck_assert_int_eq(mlt_options_set(o, "timeout", "0", NULL, 0), MLT_ERR_BAD_OPTION);
    ck_assert_int_eq(mlt_options_set(o, "nope", "0", NULL, 0), MLT_ERR_UNKNOWN_OPTION);
    mlt_options_free(o);
    mlt_options_free(NULL);
}
END_TEST

START_TEST(options_message_is_truncated_to_errbuf)
{
    mlt_options *o = new_opts();
    char err[16];
    memset(err, 'z', sizeof err);
    ck_assert_int_eq(mlt_options_set(o, "a_very_long_unknown_option_name", "x", err, sizeof err),
                     MLT_ERR_UNKNOWN_OPTION);
    ck_assert_uint_eq(strlen(err), sizeof err - 1);
    mlt_options_free(o);
}
END_TEST

int main(void)
{
    clear_mlflow_env();
    Suite *s = suite_create("options");
    MLT_ADD_TEST(s, options_defaults_match_the_python_client);
    MLT_ADD_TEST(s, options_set_every_option_by_name);
    MLT_ADD_TEST(s, options_setting_again_replaces_the_value);
    MLT_ADD_TEST(s, multipart_options_have_python_s_defaults_variables_and_ranges);
    MLT_ADD_TEST(s, lease_ms_has_a_default_a_variable_and_a_range);
    MLT_ADD_TEST(s, options_unknown_name_fails_naming_it);
    MLT_ADD_TEST(s, options_null_value_restores_default_or_clears);
    MLT_ADD_TEST(s, tracking_uri_refuses_what_is_not_http_and_keeps_old_value);
    MLT_ADD_TEST(s, tracking_uri_strips_trailing_slashes_and_keeps_a_path);
    MLT_ADD_TEST(s, max_retries_refuses_bad_numbers);
    MLT_ADD_TEST(s, queue_segment_bytes_has_a_range_and_a_variable);
    MLT_ADD_TEST(s, experiment_id_is_an_id);
    MLT_ADD_TEST(s, seconds_options_refuse_bad_and_negative_numbers);
    MLT_ADD_TEST(s, insecure_tls_takes_boolean_words_only);
    MLT_ADD_TEST(s, experiment_name_is_checked_and_old_value_kept);
    MLT_ADD_TEST(s, secrets_read_back_masked);
    MLT_ADD_TEST(s, typed_string_setters_copy_and_clear);
    MLT_ADD_TEST(s, typed_insecure_tls_setter_writes_true_or_false);
    MLT_ADD_TEST(s, typed_retries_and_timeout_setters);
    MLT_ADD_TEST(s, typed_retries_and_timeout_refuse_out_of_range_values);
    MLT_ADD_TEST(s, typed_retries_setter_is_all_or_nothing);
    MLT_ADD_TEST(s, typed_logger_setter_stores_function_and_userdata);
    MLT_ADD_TEST(s, from_env_reads_every_mlflow_variable);
    MLT_ADD_TEST(s, from_env_reads_each_variable_alone);
    MLT_ADD_TEST(s, from_env_leaves_options_alone_when_unset_or_empty);
    MLT_ADD_TEST(s, from_env_invalid_value_fails_naming_the_variable);
    MLT_ADD_TEST(s, from_env_keeps_variables_read_before_the_bad_one);
    MLT_ADD_TEST(s, options_dup_is_a_deep_independent_copy);
    MLT_ADD_TEST(s, options_null_arguments_are_refused);
    MLT_ADD_TEST(s, options_message_is_truncated_to_errbuf);
    return mlt_test_run_suite(s);
}
