/*
 * fuzz_options.c - fuzz target: options by name and value, and from the environment. The input
 * is commands separated by NUL bytes (a C string holds no NUL anyway):
 *
 *   sNAME=VALUE   mlt_options_set(NAME, VALUE)      uNAME   mlt_options_set(NAME, NULL)
 *   eVAR=VALUE    setenv(VAR, VALUE), for the variables the options read (others ignored)
 *   E             mlt_options_from_env()            d       mlt__options_dup() and compare
 *   tSECONDS      mlt_options_set_timeout(strtod(SECONDS))
 *   rN F J        mlt_options_set_retries(N, F, J)  q       mlt__queue_dir()
 *
 * and at the end, mlt_options_from_env() once more. Checks: a failed call changes nothing (the
 * text of every option and the typed values), a successful set makes the option readable, the
 * typed values stay within their ranges, and a copy is equal. The environment is restored after
 * each input.
 */
#include "config.h"

#include "fuzz.h"
#include "journal.h"
#include "queue.h"
#include "options.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const names[] = {
    "tracking_uri", "experiment_name", "experiment_id",     "token",
    "username",     "password",        "insecure_tls",      "ca_cert_path",
    "client_cert_path", "max_retries", "backoff_factor",    "backoff_jitter",
    "timeout",      "queue_dir",       "fsync",             "fsync_interval_ms",
    "queue_max_bytes", "queue_full",   "queue_block_ms",    "linger_ms",
    "run_id",       "run_key",         "system_metrics",    "system_metrics_interval",
};
#define N_NAMES (sizeof names / sizeof names[0])

static const char *const vars[] = {
    "MLFLOW_TRACKING_URI",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_INSECURE_TLS",
    "MLFLOW_TRACKING_SERVER_CERT_PATH",
    "MLFLOW_TRACKING_CLIENT_CERT_PATH",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "MLTRACK_QUEUE_DIR",
    "MLTRACK_FSYNC",
    "MLTRACK_LINGER_MS",
    "MLFLOW_RUN_ID",
    "MLTRACK_RUN_KEY",
    "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING",
    "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL",
    "XDG_STATE_HOME",
    "HOME",
};
#define N_VARS (sizeof vars / sizeof vars[0])

static char *saved_env[N_VARS]; /* the values at the start (copies), NULL when unset */
static bool saved;

static void save_env(void)
{
    if (saved) {
        return;
    }
    for (size_t i = 0; i < N_VARS; i++) {
        const char *v = getenv(vars[i]);
        saved_env[i] = v ? strdup(v) : NULL;
    }
    saved = true;
}

static void restore_env(void)
{
    for (size_t i = 0; i < N_VARS; i++) {
        if (saved_env[i]) {
            setenv(vars[i], saved_env[i], 1);
        } else {
            unsetenv(vars[i]);
        }
    }
}

/* Everything an options object holds, as text, to compare before and after a call. */
static char *state_of(const mlt_options *o)
{
    mlt__buf b;
    mlt__buf_init(&b);
    for (size_t i = 0; i < N_NAMES; i++) {
        const char *v = mlt_options_get(o, names[i]);
        mlt__buf_printf(&b, "%s=%s\n", names[i], v ? v : "(unset)");
    }
    mlt__buf_printf(&b, "%d %d %a %a %a %d %lld %lld %d %lld %lld %d %a\n", o->insecure_tls,
                    o->max_retries, o->backoff_factor_s, o->backoff_jitter_s, o->timeout_s,
                    o->fsync_mode, o->fsync_interval_ms, o->queue_max_bytes, o->queue_full_fail,
                    o->queue_block_ms, o->linger_ms, o->system_metrics,
                    o->system_metrics_interval_s);
    char *s = mlt__buf_steal(&b);
    FUZZ_CHECK(s != NULL);
    return s;
}

static void check_ranges(const mlt_options *o)
{
    FUZZ_CHECK(o->insecure_tls == 0 || o->insecure_tls == 1);
    FUZZ_CHECK(o->max_retries >= 0 && o->max_retries <= 100);
    FUZZ_CHECK(isfinite(o->backoff_factor_s) && o->backoff_factor_s >= 0);
    FUZZ_CHECK(isfinite(o->backoff_jitter_s) && o->backoff_jitter_s >= 0);
    FUZZ_CHECK(isfinite(o->timeout_s) && o->timeout_s > 0 && o->timeout_s <= 86400);
    FUZZ_CHECK(o->fsync_mode >= 0 && o->fsync_mode <= 2);
    FUZZ_CHECK(o->fsync_interval_ms >= 1 && o->fsync_interval_ms <= 60000);
    FUZZ_CHECK(o->queue_max_bytes >= 4096);
    FUZZ_CHECK(o->queue_full_fail == 0 || o->queue_full_fail == 1);
    FUZZ_CHECK(o->queue_block_ms >= 0 && o->linger_ms >= 0);
    FUZZ_CHECK(o->system_metrics == 0 || o->system_metrics == 1);
    FUZZ_CHECK(isfinite(o->system_metrics_interval_s) && o->system_metrics_interval_s > 0);
}

/* A failed call must leave o as it was; errbuf holds a message. */
static void after_call(const mlt_options *o, mlt_err err, char *before, const char *errbuf)
{
    FUZZ_CHECK(err <= 0);
    if (err != MLT_OK) {
        char *now = state_of(o);
        FUZZ_CHECK(strcmp(before, now) == 0);
        free(now);
        if (errbuf) {
            FUZZ_CHECK(errbuf[0] != '\0');
        }
    }
    free(before);
    check_ranges(o);
}

static void run_command(mlt_options *o, char *cmd)
{
    char errbuf[256];
    errbuf[0] = '\0';
    char *arg = cmd + 1;
    switch (cmd[0]) {
    case 's':
    case 'u': {
        char *eq = strchr(arg, '=');
        const char *value = NULL;
        if (cmd[0] == 's') {
            if (!eq) {
                return;
            }
            *eq = '\0';
            value = eq + 1;
        }
        char *before = state_of(o);
        mlt_err err = mlt_options_set(o, arg, value, errbuf, sizeof errbuf);
        if (err == MLT_OK && value) {
            FUZZ_CHECK(mlt_options_get(o, arg) != NULL);
        }
        after_call(o, err, before, errbuf);
        break;
    }
    case 'e': {
        char *eq = strchr(arg, '=');
        if (!eq) {
            return;
        }
        *eq = '\0';
        for (size_t i = 0; i < N_VARS; i++) {
            if (strcmp(arg, vars[i]) == 0) {
                setenv(vars[i], eq + 1, 1);
            }
        }
        break;
    }
    case 'E': {
        char *before = state_of(o);
        mlt_err err = mlt_options_from_env(o, errbuf, sizeof errbuf);
        if (err != MLT_OK) {
            /* from_env stops at the first bad variable: what came before it is kept */
            FUZZ_CHECK(errbuf[0] != '\0');
            free(before);
            check_ranges(o);
        } else {
            after_call(o, err, before, errbuf);
        }
        break;
    }
    case 'd': {
        mlt_options *copy = mlt__options_dup(o);
        FUZZ_CHECK(copy != NULL);
        char *a = state_of(o), *b = state_of(copy);
        FUZZ_CHECK(strcmp(a, b) == 0);
        free(a);
        free(b);
        mlt_options_free(copy);
        break;
    }
    case 't': {
        char *before = state_of(o);
        mlt_err err = mlt_options_set_timeout(o, strtod(arg, NULL));
        after_call(o, err, before, NULL);
        break;
    }
    case 'r': {
        int n = 0;
        double f = 0, j = 0;
        if (sscanf(arg, "%d %lf %lf", &n, &f, &j) != 3) {
            return;
        }
        char *before = state_of(o);
        mlt_err err = mlt_options_set_retries(o, n, f, j);
        after_call(o, err, before, NULL);
        break;
    }
    case 'q': {
        char out[PATH_MAX];
        if (mlt__queue_dir(o, out, sizeof out) == MLT_OK) {
            FUZZ_CHECK(memchr(out, '\0', sizeof out) != NULL);
        }
        break;
    }
    default:
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    save_env();
    /* a NUL-terminated copy, cut into commands in place */
    char *text = malloc(size + 1);
    FUZZ_CHECK(text != NULL);
    memcpy(text, data, size);
    text[size] = '\0';
    mlt_options *o = mlt_options_new();
    FUZZ_CHECK(o != NULL);
    check_ranges(o);
    for (size_t at = 0; at < size;) {
        char *cmd = text + at;
        size_t len = strlen(cmd);
        if (len > 0) {
            run_command(o, cmd);
        }
        at += len + 1;
    }
    char errbuf[256];
    char *before = state_of(o);
    if (mlt_options_from_env(o, errbuf, sizeof errbuf) != MLT_OK) {
        FUZZ_CHECK(memchr(errbuf, '\0', sizeof errbuf) != NULL);
    }
    free(before);
    check_ranges(o);
    mlt_options_free(o);
    free(text);
    restore_env();
    return 0;
}
