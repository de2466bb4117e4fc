/*
 * options.h - the options object behind mlt_options: one table of options, each with its text
 * form (what mlt_options_set() took), its typed value and its MLflow environment variable.
 */
#ifndef MLT_OPTIONS_H
#define MLT_OPTIONS_H

#include "common.h"

typedef enum mlt__opt {
    MLT__OPT_TRACKING_URI,
    MLT__OPT_EXPERIMENT_NAME,
    MLT__OPT_EXPERIMENT_ID,
    MLT__OPT_TOKEN,
    MLT__OPT_USERNAME,
    MLT__OPT_PASSWORD,
    MLT__OPT_INSECURE_TLS,
    MLT__OPT_CA_CERT_PATH,
    MLT__OPT_CLIENT_CERT_PATH,
    MLT__OPT_MAX_RETRIES,
    MLT__OPT_BACKOFF_FACTOR,
    MLT__OPT_BACKOFF_JITTER,
    MLT__OPT_TIMEOUT,
    MLT__OPT_QUEUE_DIR,
    MLT__OPT_FSYNC,
    MLT__OPT_FSYNC_INTERVAL_MS,
    MLT__OPT_QUEUE_MAX_BYTES,
    MLT__OPT_QUEUE_FULL,
    MLT__OPT_QUEUE_BLOCK_MS,
    MLT__OPT_LINGER_MS,
    MLT__OPT_RUN_ID,
    MLT__OPT_RUN_KEY,
    MLT__OPT_SYSTEM_METRICS,
    MLT__OPT_SYSTEM_METRICS_INTERVAL,
    MLT__OPT_QUEUE_SEGMENT_BYTES,
    MLT__OPT_ATTACH_TIMEOUT,
    MLT__OPT_MULTIPART_UPLOAD,
    MLT__OPT_MULTIPART_MIN_BYTES,
    MLT__OPT_MULTIPART_CHUNK_BYTES,
    MLT__OPT_RESUME,
    MLT__OPT_LEASE_MS,
    MLT__OPT_COUNT
} mlt__opt;

struct mlt_options {
    char *text[MLT__OPT_COUNT]; /* owned; NULL when unset */
    /* typed values, kept in step with text */
    int insecure_tls;
    int max_retries;
    double backoff_factor_s;
    double backoff_jitter_s;
    double timeout_s;
    int fsync_mode; /* mlt__fsync_mode */
    long long fsync_interval_ms;
    long long queue_max_bytes;
    long long queue_segment_bytes;
    int queue_full_fail; /* 1: fail with MLT_ERR_QUEUE_FULL, 0: block */
    long long queue_block_ms;
    long long linger_ms;
    long long attach_timeout_s;
    int system_metrics;
    double system_metrics_interval_s;
    int multipart_upload; /* when text[MLT__OPT_MULTIPART_UPLOAD] is set; else ask the server */
    long long multipart_min_bytes;
    long long multipart_chunk_bytes;
    int resume;         /* 1: the run of run_key is created if absent, else resumed; 0: attached */
    long long lease_ms; /* a journal's delivery lease lapses this long after its last renewal */
    mlt__logger logger;
    mlt_delivery_fn delivery_fn;
    void *delivery_ud;
};

/* A deep copy of src (NULL: defaults). NULL when out of memory. */
mlt_options *mlt__options_dup(const mlt_options *src);

/* The text value of an option (NULL when unset). */
static inline const char *mlt__opt_str(const mlt_options *o, mlt__opt which)
{
    return o->text[which];
}

#endif
