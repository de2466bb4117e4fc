/*
 * mlflow_api.h - the MLflow REST mapping, free of I/O: build each request, pack log-batch
 * bodies to the server's limits, and classify an answer. The MLflow client (mlflow_client.c)
 * drives it.
 */
#ifndef MLT_MLFLOW_API_H
#define MLT_MLFLOW_API_H

#include "common.h"
#include "http.h"

#include <cjson/cJSON.h>

/* runs/log-batch limits of the server (mlflow/utils/validation.py). */
#define MLT__BATCH_MAX_METRICS 1000
#define MLT__BATCH_MAX_PARAMS 100
#define MLT__BATCH_MAX_TAGS 100
#define MLT__BATCH_MAX_ENTITIES 1000
/* Body size kept under the server's 1 MB request limit, with room for the envelope. */
#define MLT__BATCH_MAX_BYTES 1000000

/* A request relative to <tracking_uri>/api/2.0/mlflow/ (artifacts: /api/2.0/mlflow-artifacts/;
 * or the prefix it names), or to an absolute URL (a presigned part of a multipart upload). */
typedef struct mlt__api_req {
    const char *method; /* "GET", "POST" or "PUT" */
    char path[4096];    /* e.g. "runs/create", or "experiments/get-by-name?experiment_name=x" */
    bool artifacts;     /* path is under the artifact proxy's prefix */
    const char *prefix; /* NULL, or the prefix path goes under (e.g. "/api/3.0/mlflow/") */
    const char *url;    /* NULL, or the absolute URL, used as is (not owned) */
    const char *const *headers;     /* NULL, or "Name: value" lines sent too (not owned) */
    const mlt__http_upload *upload; /* PUT: the body, from a file */
    mlt__buf body;                  /* JSON for POST */
    const char *what;               /* short description for messages, e.g. "create run" */
    bool not_idempotent;            /* a second copy would have an effect (runs/create) */
} mlt__api_req;

void mlt__api_req_init(mlt__api_req *r);
void mlt__api_req_free(mlt__api_req *r);

/* The absolute URL of a request (caller frees), NULL on out of memory. */
char *mlt__api_url(const char *tracking_uri, const mlt__api_req *r);

typedef struct mlt__kv {
    const char *key;
    const char *value;
} mlt__kv;

typedef struct mlt__metric {
    const char *key;
    double value;
    int64_t timestamp_ms;
    int64_t step;
} mlt__metric;

MLT__MUST_USE mlt_err mlt__api_get_experiment_by_name(mlt__api_req *r, const char *name);
MLT__MUST_USE mlt_err mlt__api_create_experiment(mlt__api_req *r, const char *name);
MLT__MUST_USE mlt_err mlt__api_create_run(mlt__api_req *r, const char *experiment_id,
                                          const char *run_name, int64_t start_time_ms,
                                          const mlt__kv *tags, size_t n_tags);
/* runs/search for the run whose tag mltrack.client_run_key is run_key. */
MLT__MUST_USE mlt_err mlt__api_search_run_by_key(mlt__api_req *r, const char *experiment_id,
                                                 const char *run_key);
MLT__MUST_USE mlt_err mlt__api_update_run(mlt__api_req *r, const char *run_id,
                                          mlt_run_status status, int64_t end_time_ms);
/* runs/update to RUNNING, the end time left as it is: a run resumed (as the Python client's
 * start_run(run_id) does). */
MLT__MUST_USE mlt_err mlt__api_resume_run(mlt__api_req *r, const char *run_id);

/* runs/get of run_id (the answer's run.info.artifact_uri says where its artifacts go). */
MLT__MUST_USE mlt_err mlt__api_get_run(mlt__api_req *r, const char *run_id);
/* PUT of upload as the artifact at path (relative, '/'-separated) under root, the artifact proxy's
 * path of a run ("<experiment id>/<run id>/artifacts", from an mlflow-artifacts: URI): each part
 * percent-encoded. The answer has no JSON body: a 2xx is success. */
MLT__MUST_USE mlt_err mlt__api_put_artifact(mlt__api_req *r, const char *root, const char *path,
                                            const mlt__http_upload *upload);

/* GET /api/3.0/mlflow/server-info: what the server can do (multipart_uploads_enabled). */
void mlt__api_server_info(mlt__api_req *r);

/* One part of a multipart upload, as complete names it. */
typedef struct mlt__mpu_part {
    uint32_t number; /* from 1 */
    const char *etag;
    const char *url;
} mlt__mpu_part;

/* The multipart calls of the artifact proxy, for the file name in the directory dir (NULL or ""
 * for the run's root) under root (as mlt__api_put_artifact): create with num_parts (the answer:
 * upload_id and a presigned URL per part), complete with the parts' ETags, abort. */
MLT__MUST_USE mlt_err mlt__api_mpu_create(mlt__api_req *r, const char *root, const char *dir,
                                          const char *name, uint32_t num_parts);
MLT__MUST_USE mlt_err mlt__api_mpu_complete(mlt__api_req *r, const char *root, const char *dir,
                                            const char *name, const char *upload_id,
                                            const mlt__mpu_part *parts, size_t n);
MLT__MUST_USE mlt_err mlt__api_mpu_abort(mlt__api_req *r, const char *root, const char *dir,
                                         const char *name, const char *upload_id);

/* PUT of upload (a part) to a presigned URL, with the headers the server named. The answer's
 * ETag names the part to complete. */
void mlt__api_put_part(mlt__api_req *r, const char *url, const char *const *headers,
                       const mlt__http_upload *upload);

/* What a log-batch body takes from the pending arrays, front first. */
typedef struct mlt__batch {
    const mlt__metric *metrics;
    size_t n_metrics;
    const mlt__kv *params;
    size_t n_params;
    const mlt__kv *tags;
    size_t n_tags;
} mlt__batch;

/*
 * Builds one runs/log-batch body from the front of each array of in, within the server's limits
 * (counts, total entities, max_bytes of body); *took says how many of each it took (at least one
 * entity when in is not empty, unless a single entity alone exceeds max_bytes: then
 * MLT_ERR_VALUE_TOO_LONG). Params go first, then tags, then metrics.
 */
MLT__MUST_USE mlt_err mlt__api_log_batch(mlt__api_req *r, const char *run_id, const mlt__batch *in,
                                         size_t max_bytes, mlt__batch *took);

/* The classification of an answer. */
typedef struct mlt__api_answer {
    mlt_err err;          /* MLT_OK on 2xx with a JSON body */
    bool retriable;       /* trying again may succeed */
    bool ambiguous;       /* the server may have acted on the request */
    long status;          /* HTTP status, 0 when none came */
    char error_code[48];  /* the server's error_code, "" when none */
    double retry_after_s; /* < 0 when absent */
    char msg[1024];       /* what happened, for the user */
    char etag[256];       /* the answer's ETag ("" when none) */
    cJSON *json;          /* the parsed answer on success (owned; freed by answer_free) */
} mlt__api_answer;

void mlt__api_answer_init(mlt__api_answer *a);
void mlt__api_answer_free(mlt__api_answer *a);

/* Classifies resp to the request r into a (initialized by the caller). */
void mlt__api_classify(const mlt__api_req *r, const mlt__http_response *resp, mlt__api_answer *a);

/* Reading answers. Each returns a string owned by json, or NULL when absent. */
const char *mlt__api_json_str(const cJSON *json, const char *path); /* "run.info.run_id" */

#endif
