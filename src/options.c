/*
 * options.c - mlt_options: the option table, the string and typed setters, the import of the
 * MLflow client's environment variables, and copying.
 */
#include "config.h"

#include "options.h"
#include "validate.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ID_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"

typedef enum {
    K_STRING,
    K_SECRET,
    K_URI,
    K_EXPERIMENT,
    K_BOOL,
    K_INT,
    K_SECONDS,
    K_WORD,
    K_ID /* an id (experiment id, run id, client run key): min to max of [A-Za-z0-9_-] */
} opt_kind;

static const struct opt_def {
    const char *name;
    opt_kind kind;
    const char *env;
    const char *def;      /* default text, NULL for none */
    long long min, max;   /* K_INT */
    const char *words[4]; /* K_WORD: the accepted words; the value is the index */
} defs[MLT__OPT_COUNT] = {
    [MLT__OPT_TRACKING_URI] = {"tracking_uri", K_URI, "MLFLOW_TRACKING_URI", NULL},
    [MLT__OPT_EXPERIMENT_NAME] = {"experiment_name", K_EXPERIMENT, "MLFLOW_EXPERIMENT_NAME", NULL},
    [MLT__OPT_EXPERIMENT_ID] = {"experiment_id", K_ID, "MLFLOW_EXPERIMENT_ID", NULL, 1, 64},
    [MLT__OPT_TOKEN] = {"token", K_SECRET, "MLFLOW_TRACKING_TOKEN", NULL},
    [MLT__OPT_USERNAME] = {"username", K_STRING, "MLFLOW_TRACKING_USERNAME", NULL},
    [MLT__OPT_PASSWORD] = {"password", K_SECRET, "MLFLOW_TRACKING_PASSWORD", NULL},
    [MLT__OPT_INSECURE_TLS] = {"insecure_tls", K_BOOL, "MLFLOW_TRACKING_INSECURE_TLS", "false"},
    [MLT__OPT_CA_CERT_PATH] = {"ca_cert_path", K_STRING, "MLFLOW_TRACKING_SERVER_CERT_PATH", NULL},
    [MLT__OPT_CLIENT_CERT_PATH] = {"client_cert_path", K_STRING, "MLFLOW_TRACKING_CLIENT_CERT_PATH",
                                   NULL},
    [MLT__OPT_MAX_RETRIES] = {"max_retries", K_INT, "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7", 0, 100},
    [MLT__OPT_BACKOFF_FACTOR] = {"backoff_factor", K_SECONDS, "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
                                 "2"},
    [MLT__OPT_BACKOFF_JITTER] = {"backoff_jitter", K_SECONDS, "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER",
                                 "1"},
    [MLT__OPT_TIMEOUT] = {"timeout", K_SECONDS, "MLFLOW_HTTP_REQUEST_TIMEOUT", "120"},
    [MLT__OPT_QUEUE_DIR] = {"queue_dir", K_STRING, "MLTRACK_QUEUE_DIR", NULL},
    [MLT__OPT_FSYNC] =
        {"fsync", K_WORD, "MLTRACK_FSYNC", "interval", 0, 0, {"none", "interval", "always", NULL}},
    [MLT__OPT_FSYNC_INTERVAL_MS] = {"fsync_interval_ms", K_INT, NULL, "100", 1, 60000},
    [MLT__OPT_QUEUE_MAX_BYTES] = {"queue_max_bytes", K_INT, NULL, "17179869184", 4096,
                                  (long long)1 << 50},
    [MLT__OPT_QUEUE_FULL] = {"queue_full", K_WORD, NULL, "block", 0, 0, {"block", "fail", NULL}},
    [MLT__OPT_QUEUE_BLOCK_MS] = {"queue_block_ms", K_INT, NULL, "1000", 0, 3600000},
    [MLT__OPT_LINGER_MS] = {"linger_ms", K_INT, "MLTRACK_LINGER_MS", "20", 0, 10000},
    [MLT__OPT_RUN_ID] = {"run_id", K_ID, "MLFLOW_RUN_ID", NULL, 1, 64},
    [MLT__OPT_RUN_KEY] = {"run_key", K_ID, "MLTRACK_RUN_KEY", NULL, 1, 36},
    [MLT__OPT_SYSTEM_METRICS] = {"system_metrics", K_BOOL, "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING",
                                 "false"},
    [MLT__OPT_SYSTEM_METRICS_INTERVAL] = {"system_metrics_interval", K_SECONDS,
                                          "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "10"},
    [MLT__OPT_QUEUE_SEGMENT_BYTES] = {"queue_segment_bytes", K_INT, "MLTRACK_QUEUE_SEGMENT_BYTES",
                                      "67108864", 65536, (long long)1 << 32},
    [MLT__OPT_ATTACH_TIMEOUT] = {"attach_timeout", K_INT, "MLTRACK_ATTACH_TIMEOUT", "604800", 0,
                                 315360000},
    [MLT__OPT_MULTIPART_UPLOAD] = {"multipart_upload", K_BOOL,
                                   "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD", NULL},
    [MLT__OPT_MULTIPART_MIN_BYTES] = {"multipart_min_bytes", K_INT,
                                      "MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE", "524288000", 1,
                                      (long long)1 << 50},
    [MLT__OPT_MULTIPART_CHUNK_BYTES] = {"multipart_chunk_bytes", K_INT,
                                        "MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE", "10485760", 1048576,
                                        (long long)5 << 30},
    [MLT__OPT_RESUME] =
        {"resume", K_WORD, "MLTRACK_RESUME", "never", 0, 0, {"never", "allow", NULL}},
    [MLT__OPT_LEASE_MS] = {"lease_ms", K_INT, "MLTRACK_LEASE_MS", "10000", 1000, 600000},
};

#define MAX_SECONDS 86400.0

static int find_opt(const char *name)
{
    for (int i = 0; i < MLT__OPT_COUNT; i++) {
        if (strcmp(defs[i].name, name) == 0) {
            return i;
        }
    }
    return -1;
}

static int parse_bool(const char *v, int *out)
{
    static const char *yes[] = {"true", "1", "yes", "on"};
    static const char *no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

static MLT__MUST_USE mlt_err check_uri(const char *v)
{
    const char *rest = NULL;
    if (strncasecmp(v, "http://", 7) == 0) {
        rest = v + 7;
    } else if (strncasecmp(v, "https://", 8) == 0) {
        rest = v + 8;
    } else {
        return mlt__fail(MLT_ERR_BAD_OPTION,
                         "tracking_uri '%s' is not supported: it must start with http:// or "
                         "https:// (file stores and databricks URIs are not)",
                         v);
    }
    if (*rest == '\0' || *rest == '/' || *rest == ':') {
        return mlt__fail(MLT_ERR_BAD_OPTION, "tracking_uri '%s' has no host", v);
    }
    for (const char *p = v; *p; p++) {
        if ((unsigned char)*p <= ' ' || *p == '?' || *p == '#') {
            return mlt__fail(MLT_ERR_BAD_OPTION,
                             "tracking_uri '%s' must not contain spaces, '?' or '#'", v);
        }
    }
    return MLT_OK;
}

/* Parses and stores one option. On failure the option keeps its value. */
static MLT__MUST_USE mlt_err set_opt(mlt_options *o, int i, const char *value)
{
    const struct opt_def *d = &defs[i];
    int b = 0;
    long long n = 0;
    double s = 0;
    char *end = NULL;
    mlt_err err;

    if (!value) {
        if (d->def) {
            value = d->def; /* back to the default */
        } else {
            free(o->text[i]);
            o->text[i] = NULL;
            return MLT_OK;
        }
    }
    switch (d->kind) {
    case K_STRING:
    case K_SECRET:
        break;
    case K_URI:
        if ((err = check_uri(value)) != MLT_OK) {
            return err;
        }
        break;
    case K_EXPERIMENT:
        if ((err = mlt__validate_experiment_name(value)) != MLT_OK) {
            return err == MLT_ERR_VALUE_TOO_LONG ? err : MLT_ERR_BAD_OPTION;
        }
        break;
    case K_BOOL:
        if (parse_bool(value, &b) != 0) {
            return mlt__fail(MLT_ERR_BAD_OPTION, "option %s: '%s' is not a boolean (true/false)",
                             d->name, value);
        }
        break;
    case K_INT:
        errno = 0;
        n = strtoll(value, &end, 10);
        if (errno || end == value || *end || n < d->min || n > d->max) {
            return mlt__fail(MLT_ERR_BAD_OPTION,
                             "option %s: '%s' is not an integer from %lld to %lld", d->name, value,
                             d->min, d->max);
        }
        break;
    case K_ID:
        n = (long long)strlen(value);
        if (n < d->min || n > d->max || strspn(value, ID_CHARS) != (size_t)n) {
            return mlt__fail(MLT_ERR_BAD_OPTION,
                             "option %s: '%.80s' is not an id (1 to %lld letters, digits, "
                             "'_' or '-')",
                             d->name, value, d->max);
        }
        break;
    case K_WORD:
        for (n = 0; n < 4 && d->words[n] && strcmp(d->words[n], value) != 0; n++) {
        }
        if (n == 4 || !d->words[n]) {
            return mlt__fail(MLT_ERR_BAD_OPTION, "option %s: '%s' is not one of %s%s%s%s%s",
                             d->name, value, d->words[0], d->words[1] ? ", " : "",
                             d->words[1] ? d->words[1] : "", d->words[2] ? ", " : "",
                             d->words[2] ? d->words[2] : "");
        }
        break;
    case K_SECONDS:
        errno = 0;
        s = strtod(value, &end);
        if (errno == ERANGE && fabs(s) < 1) {
            errno = 0; /* underflow to a tiny value: still a number of seconds */
        }
        if (errno || end == value || *end || !isfinite(s) || s < 0 || s > MAX_SECONDS ||
            ((i == MLT__OPT_TIMEOUT || i == MLT__OPT_SYSTEM_METRICS_INTERVAL) && s <= 0)) {
            return mlt__fail(MLT_ERR_BAD_OPTION, "option %s: '%s' is not a number of seconds %s %g",
                             d->name, value,
                             i == MLT__OPT_TIMEOUT || i == MLT__OPT_SYSTEM_METRICS_INTERVAL
                                 ? "above 0 and up to"
                                 : "from 0 to",
                             MAX_SECONDS);
        }
        break;
    }
    char *copy = mlt__strdup(value);
    if (!copy) {
        return mlt__fail(MLT_ERR_NOMEM, "out of memory");
    }
    if (d->kind == K_URI) {
        size_t len = strlen(copy);
        while (len > 0 && copy[len - 1] == '/') {
            copy[--len] = '\0';
        }
    }
    free(o->text[i]);
    o->text[i] = copy;
    switch (i) {
    case MLT__OPT_INSECURE_TLS:
        o->insecure_tls = b;
        break;
    case MLT__OPT_MAX_RETRIES:
        o->max_retries = (int)n;
        break;
    case MLT__OPT_BACKOFF_FACTOR:
        o->backoff_factor_s = s;
        break;
    case MLT__OPT_BACKOFF_JITTER:
        o->backoff_jitter_s = s;
        break;
    case MLT__OPT_TIMEOUT:
        o->timeout_s = s;
        break;
    case MLT__OPT_FSYNC:
        o->fsync_mode = (int)n;
        break;
    case MLT__OPT_FSYNC_INTERVAL_MS:
        o->fsync_interval_ms = n;
        break;
    case MLT__OPT_QUEUE_MAX_BYTES:
        o->queue_max_bytes = n;
        break;
    case MLT__OPT_QUEUE_SEGMENT_BYTES:
        o->queue_segment_bytes = n;
        break;
    case MLT__OPT_QUEUE_FULL:
        o->queue_full_fail = (int)n;
        break;
    case MLT__OPT_QUEUE_BLOCK_MS:
        o->queue_block_ms = n;
        break;
    case MLT__OPT_LINGER_MS:
        o->linger_ms = n;
        break;
    case MLT__OPT_ATTACH_TIMEOUT:
        o->attach_timeout_s = n;
        break;
    case MLT__OPT_SYSTEM_METRICS:
        o->system_metrics = b;
        break;
    case MLT__OPT_MULTIPART_UPLOAD:
        o->multipart_upload = b;
        break;
    case MLT__OPT_MULTIPART_MIN_BYTES:
        o->multipart_min_bytes = n;
        break;
    case MLT__OPT_MULTIPART_CHUNK_BYTES:
        o->multipart_chunk_bytes = n;
        break;
    case MLT__OPT_RESUME:
        o->resume = (int)n;
        break;
    case MLT__OPT_LEASE_MS:
        o->lease_ms = n;
        break;
    case MLT__OPT_SYSTEM_METRICS_INTERVAL:
        o->system_metrics_interval_s = s;
        break;
    default:
        break;
    }
    return MLT_OK;
}

mlt_options *mlt_options_new(void)
{
    mlt_options *o = calloc(1, sizeof *o);
    if (!o) {
        return NULL;
    }
    for (int i = 0; i < MLT__OPT_COUNT; i++) {
        if (defs[i].def && set_opt(o, i, defs[i].def) != MLT_OK) {
            mlt_options_free(o);
            return NULL;
        }
    }
    return o;
}

void mlt_options_free(mlt_options *o)
{
    if (!o) {
        return;
    }
    for (int i = 0; i < MLT__OPT_COUNT; i++) {
        free(o->text[i]);
    }
    free(o);
}

mlt_options *mlt__options_dup(const mlt_options *src)
{
    mlt_options *o = mlt_options_new();
    if (!o || !src) {
        return o;
    }
    for (int i = 0; i < MLT__OPT_COUNT; i++) {
        free(o->text[i]);
    }
    *o = *src; /* every typed value, the logger and the delivery callback */
    for (int i = 0; i < MLT__OPT_COUNT; i++) {
        o->text[i] = NULL;
    }
    for (int i = 0; i < MLT__OPT_COUNT; i++) {
        if (src->text[i] && !(o->text[i] = mlt__strdup(src->text[i]))) {
            mlt_options_free(o);
            return NULL;
        }
    }
    return o;
}

static MLT__MUST_USE mlt_err options_set(mlt_options *o, const char *name, const char *value)
{
    if (!o || !name) {
        return mlt__fail(MLT_ERR_INVALID_ARG, "options and name are required");
    }
    int i = find_opt(name);
    if (i < 0) {
        return mlt__fail(MLT_ERR_UNKNOWN_OPTION, "unknown option '%s'", name);
    }
    return set_opt(o, i, value);
}

mlt_err mlt_options_set(mlt_options *o, const char *name, const char *value, char *errbuf,
                        size_t errlen)
{
    return mlt__errbuf(errbuf, errlen, options_set(o, name, value));
}

const char *mlt_options_get(const mlt_options *o, const char *name)
{
    if (!o || !name) {
        return NULL;
    }
    int i = find_opt(name);
    if (i < 0 || !o->text[i]) {
        return NULL;
    }
    return defs[i].kind == K_SECRET ? "***" : o->text[i];
}

static MLT__MUST_USE mlt_err options_from_env(mlt_options *o)
{
    if (!o) {
        return mlt__fail(MLT_ERR_INVALID_ARG, "options are required");
    }
    for (int i = 0; i < MLT__OPT_COUNT; i++) {
        const char *v = defs[i].env ? getenv(defs[i].env) : NULL;
        if (!v || !*v) {
            continue;
        }
        mlt_err err = set_opt(o, i, v);
        if (err != MLT_OK) {
            return mlt__fail(err, "%s: %s", defs[i].env, mlt_last_error());
        }
    }
    return MLT_OK;
}

mlt_err mlt_options_from_env(mlt_options *o, char *errbuf, size_t errlen)
{
    return mlt__errbuf(errbuf, errlen, options_from_env(o));
}

static MLT__MUST_USE mlt_err set_typed(mlt_options *o, int i, const char *v)
{
    return o ? set_opt(o, i, v) : MLT_ERR_INVALID_ARG;
}

mlt_err mlt_options_set_tracking_uri(mlt_options *o, const char *uri)
{
    return set_typed(o, MLT__OPT_TRACKING_URI, uri);
}

mlt_err mlt_options_set_experiment_name(mlt_options *o, const char *name)
{
    return set_typed(o, MLT__OPT_EXPERIMENT_NAME, name);
}

mlt_err mlt_options_set_experiment_id(mlt_options *o, const char *id)
{
    return set_typed(o, MLT__OPT_EXPERIMENT_ID, id);
}

mlt_err mlt_options_set_token(mlt_options *o, const char *token)
{
    return set_typed(o, MLT__OPT_TOKEN, token);
}

mlt_err mlt_options_set_basic_auth(mlt_options *o, const char *username, const char *password)
{
    mlt_err err = set_typed(o, MLT__OPT_USERNAME, username);
    return err ? err : set_typed(o, MLT__OPT_PASSWORD, password);
}

mlt_err mlt_options_set_insecure_tls(mlt_options *o, int insecure)
{
    return set_typed(o, MLT__OPT_INSECURE_TLS, insecure ? "true" : "false");
}

mlt_err mlt_options_set_ca_cert_path(mlt_options *o, const char *path)
{
    return set_typed(o, MLT__OPT_CA_CERT_PATH, path);
}

mlt_err mlt_options_set_client_cert_path(mlt_options *o, const char *path)
{
    return set_typed(o, MLT__OPT_CLIENT_CERT_PATH, path);
}

static MLT__MUST_USE mlt_err set_seconds(mlt_options *o, int i, double s)
{
    char text[32];
    mlt__fmt_double(text, sizeof text, s);
    return set_typed(o, i, text);
}

mlt_err mlt_options_set_retries(mlt_options *o, int max_retries, double backoff_factor_s,
                                double backoff_jitter_s)
{
    if (!o) {
        return MLT_ERR_INVALID_ARG;
    }
    char retries[16], factor[32], jitter[32];
    snprintf(retries, sizeof retries, "%d", max_retries);
    mlt__fmt_double(factor, sizeof factor, backoff_factor_s);
    mlt__fmt_double(jitter, sizeof jitter, backoff_jitter_s);
    /* All or nothing: check the three on a scratch copy before changing o. */
    mlt_options *scratch = mlt_options_new();
    if (!scratch) {
        return MLT_ERR_NOMEM;
    }
    mlt_err err = set_opt(scratch, MLT__OPT_MAX_RETRIES, retries);
    if (!err) {
        err = set_opt(scratch, MLT__OPT_BACKOFF_FACTOR, factor);
    }
    if (!err) {
        err = set_opt(scratch, MLT__OPT_BACKOFF_JITTER, jitter);
    }
    mlt_options_free(scratch);
    if (err) {
        return err;
    }
    err = set_typed(o, MLT__OPT_MAX_RETRIES, retries);
    if (!err) {
        err = set_typed(o, MLT__OPT_BACKOFF_FACTOR, factor);
    }
    return err ? err : set_typed(o, MLT__OPT_BACKOFF_JITTER, jitter);
}

mlt_err mlt_options_set_timeout(mlt_options *o, double timeout_s)
{
    if (!o) {
        return MLT_ERR_INVALID_ARG;
    }
    return set_seconds(o, MLT__OPT_TIMEOUT, timeout_s);
}

mlt_err mlt_options_set_logger(mlt_options *o, mlt_log_fn fn, void *userdata)
{
    if (!o) {
        return MLT_ERR_INVALID_ARG;
    }
    o->logger.fn = fn;
    o->logger.userdata = userdata;
    return MLT_OK;
}

mlt_err mlt_options_set_delivery_callback(mlt_options *o, mlt_delivery_fn fn, void *userdata)
{
    if (!o) {
        return MLT_ERR_INVALID_ARG;
    }
    o->delivery_fn = fn;
    o->delivery_ud = userdata;
    return MLT_OK;
}
