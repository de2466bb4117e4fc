/*
 * mlflow_client.h - drives the REST mapping over a transport: retries with exponential backoff
 * and jitter (honouring Retry-After), race-safe experiment get-or-create, run creation that never
 * makes a second run, batched logging split to the server's limits, run update.
 * One client is used by one thread at a time. An id the server answers (run, experiment) is
 * taken only when the run map can keep it: 1 to 127 printable ASCII characters, no space, not
 * "-"; another is an answer that is not understood (MLT_ERR_PROTOCOL).
 */
#ifndef MLT_MLFLOW_CLIENT_H
#define MLT_MLFLOW_CLIENT_H

#include "http.h"
#include "mlflow_api.h"

#include <pthread.h>
#include <stdatomic.h>

typedef struct mlt__client mlt__client;

struct mlt__client {
    mlt__transport tr;
    char *base; /* tracking URI without a trailing slash */
    int max_retries;
    double backoff_factor_s;
    double backoff_jitter_s;
    double max_backoff_s; /* cap of one wait (default 120 s) */
    mlt__logger logger;
    double last_retry_after_s; /* Retry-After of the last failed answer, < 0 if none */
    bool last_ambiguous;       /* the last failed request may have reached the server */
    uint64_t requests;         /* requests made (answered or not) */
    bool last_unreachable;     /* the last request found no server to talk to: no connection
                                * (refused, no route, unknown host) or TLS refused... */
    char unreachable_why[256]; /* ...and the transport's words for it ("Couldn't connect...") */
    /* Called instead of sleeping (tests); NULL: sleep. */
    void (*sleep_fn)(int64_t ms, void *ud);
    void *sleep_ud;
    /* multipart uploads (mlflow_mpu.c) */
    int part_retries;         /* retries of one part (max_retries: kept when a caller that retries
                               * by itself sets max_retries to 0) */
    int mpu_mode;             /* the multipart_upload option: 1 on, 0 off, -1 as the server says */
    int mpu_server;           /* the server's multipart_uploads_enabled, -1 until asked */
    uint64_t mpu_min_bytes;   /* multipart_min_bytes */
    uint64_t mpu_chunk_bytes; /* multipart_chunk_bytes */
    double timeout_s;
    atomic_bool *abort; /* as set by mlt__client_set_abort: the parts' transports get it too */
    /* Makes a transport for presigned URLs (the parts); NULL: parts go one by one through tr. */
    mlt_err (*part_transport)(mlt__transport *out, const mlt__client *c);
    pthread_mutex_t part_mu; /* guards part_trs, the parts' transports in use (interrupted too) */
    mlt__transport part_trs[4];
    size_t n_part_trs;
};

/* A client for opts with the libcurl transport. */
MLT__MUST_USE mlt_err mlt__client_init(mlt__client *c, const mlt_options *opts);
/* A client over the given transport (taken over: destroyed by mlt__client_free). */
MLT__MUST_USE mlt_err mlt__client_init_with(mlt__client *c, const mlt_options *opts,
                                            mlt__transport tr);
void mlt__client_free(mlt__client *c);

/*
 * Sends r, retrying retriable failures up to max_retries times or until deadline_ns (monotonic,
 * < 0: none) would be passed. With retry_ambiguous false, a failure after which the server may
 * have acted is returned at once (the caller checks before trying again). The answer is in a
 * (initialized by the caller; free with mlt__api_answer_free).
 */
MLT__MUST_USE mlt_err mlt__client_call(mlt__client *c, const mlt__api_req *r, bool retry_ambiguous,
                                       int64_t deadline_ns, mlt__api_answer *a);

/* Wait before retry number n (1-based) after answer a, in ms. */
int64_t mlt__client_backoff_ms(const mlt__client *c, int n, const mlt__api_answer *a);

/* Looks for the run carrying tag mltrack.client_run_key = run_key: MLT_OK with *out_id
 * (malloc'd), MLT_ERR_NOT_FOUND, or a failure (message in mlt_last_error()). */
MLT__MUST_USE mlt_err mlt__client_find_run(mlt__client *c, const char *experiment_id,
                                           const char *run_key, char **out_id);

/* Experiment id for name: get-by-name, create on 404, get again if the create raced. The
 * experiment must be active. *out_id is malloc'd. Messages in mlt_last_error(). */
MLT__MUST_USE mlt_err mlt__client_experiment(mlt__client *c, const char *name, char **out_id);

/*
 * Creates a run carrying the tag mltrack.client_run_key = run_key (added here). After an
 * ambiguous failure it searches for that key before creating again, so a run is never created
 * twice; with search_first (a replay, or after an earlier ambiguous attempt) it searches before
 * the first create too. *out_id is malloc'd.
 */
MLT__MUST_USE mlt_err mlt__client_create_run(mlt__client *c, const char *experiment_id,
                                             const char *run_key, const char *run_name,
                                             int64_t start_time_ms, const mlt__kv *tags,
                                             size_t n_tags, bool search_first, int64_t deadline_ns,
                                             char **out_id);

/* Makes the transport abort a request in flight once *flag is set (NULL: never). */
void mlt__client_set_abort(mlt__client *c, atomic_bool *flag);
/* Another thread, after setting the abort flag: a request in flight ends now. */
void mlt__client_interrupt(mlt__client *c);

/* Sends everything in *batch through as many log-batch calls as the limits require. On return
 * *batch describes what was not sent (empty on success). */
MLT__MUST_USE mlt_err mlt__client_log_batch(mlt__client *c, const char *run_id, mlt__batch *batch,
                                            int64_t deadline_ns);

/* Where run_id's artifacts go through the artifact proxy: the path of its mlflow-artifacts: URI
 * ("/<experiment id>/<run id>/artifacts"), malloc'd into *out_root. MLT_ERR_REJECTED when the
 * run's artifact_uri is not proxied (the server runs without --serve-artifacts): the message
 * says so. Other failures as mlt__client_call. */
MLT__MUST_USE mlt_err mlt__client_artifact_root(mlt__client *c, const char *run_id,
                                                char **out_root);

/* PUTs bytes [0, len) of fd as the artifact at path under root (mlt__client_artifact_root),
 * retried as any call: a PUT of the same bytes to the same path may be sent again. A large file
 * goes as a multipart upload when the server's store takes one (mlt__client_put_multipart). sent
 * (may be NULL) is told the bytes of the try in flight sent so far. */
MLT__MUST_USE mlt_err mlt__client_put_artifact(mlt__client *c, const char *root, const char *path,
                                               int fd, uint64_t len, int64_t deadline_ns,
                                               void (*sent)(void *ud, uint64_t bytes),
                                               void *sent_ud);

/* A multipart upload of bytes [0, len) of fd as the artifact at path under root, when len and
 * the option or the server call for one (*used then true): the parts in parallel, each retried
 * alone, aborted when a part fails for good. *used false: nothing was sent (a small file, a
 * server whose store cannot, a 501 at create), the caller PUTs it whole; an error with *used
 * false is the server-info question's. mlt__client_put_artifact calls it first. */
MLT__MUST_USE mlt_err mlt__client_put_multipart(mlt__client *c, const char *root, const char *path,
                                                int fd, uint64_t len, int64_t deadline_ns,
                                                void (*sent)(void *ud, uint64_t bytes),
                                                void *sent_ud, bool *used);

MLT__MUST_USE mlt_err mlt__client_end_run(mlt__client *c, const char *run_id, mlt_run_status status,
                                          int64_t end_time_ms, int64_t deadline_ns);
/* The step of the latest point of metric_key (the largest step) in the run of run_key in the
 * experiment: MLT_OK, MLT_ERR_NOT_FOUND (no such run, or no such metric in it), or a failure. */
MLT__MUST_USE mlt_err mlt__client_last_step(mlt__client *c, const char *experiment_id,
                                            const char *run_key, const char *metric_key,
                                            int64_t *step);

/* Makes run_id RUNNING again (its end time left as it is): a resumed run. */
MLT__MUST_USE mlt_err mlt__client_resume_run(mlt__client *c, const char *run_id,
                                             int64_t deadline_ns);

#endif
