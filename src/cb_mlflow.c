/*
 * cb_mlflow.c - the MLflow callback: maps run events onto the MLflow client. Runs are created
 * at start (with the system tags), logs are held per run and sent as log batches when a batch is
 * full, at run end and at flush, and the run is updated with its status and end time.
 * This version sends on the calling thread; the lock serializes use of the one connection.
 */
#include "config.h"

#include "mlflow_client.h"
#include "sysinfo.h"
#include "tracker.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

typedef struct pending {
    mlt__metric *metrics;
    size_t n_metrics, cap_metrics;
    mlt__kv *params;
    size_t n_params, cap_params;
    mlt__kv *tags;
    size_t n_tags, cap_tags;
} pending;

typedef struct mlrun {
    char key[37];
    char *run_id;
    pending p;
    struct mlrun *next;
} mlrun;

typedef struct mlflow_cb {
    mlt__client client;
    mlt_tracker *tracker;
    pthread_mutex_t lock; /* guards everything below and the client */
    char *experiment_id;
    mlrun *runs;
    char user[256];
    char program[PATH_MAX];
    char commit[41];
    int has_commit;
} mlflow_cb;

/* ---- pending logs ---- */

static bool grow(void **arr, size_t *cap, size_t n, size_t size)
{
    if (n < *cap) {
        return true;
    }
    size_t c = *cap ? *cap * 2 : 64;
    void *p = realloc(*arr, c * size);
    if (!p) {
        return false;
    }
    *arr = p;
    *cap = c;
    return true;
}

static void free_kvs(mlt__kv *kv, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free((char *)kv[i].key);
        free((char *)kv[i].value);
    }
}

/* Drops the first n of each kind (they were sent, or rejected for good). */
static void pending_drop(pending *p, size_t nm, size_t np, size_t nt)
{
    for (size_t i = 0; i < nm; i++) {
        free((char *)p->metrics[i].key);
    }
    if (nm) {
        memmove(p->metrics, p->metrics + nm, (p->n_metrics - nm) * sizeof *p->metrics);
        p->n_metrics -= nm;
    }
    free_kvs(p->params, np);
    if (np) {
        memmove(p->params, p->params + np, (p->n_params - np) * sizeof *p->params);
        p->n_params -= np;
    }
    free_kvs(p->tags, nt);
    if (nt) {
        memmove(p->tags, p->tags + nt, (p->n_tags - nt) * sizeof *p->tags);
        p->n_tags -= nt;
    }
}

static void pending_free(pending *p)
{
    pending_drop(p, p->n_metrics, p->n_params, p->n_tags);
    free(p->metrics);
    free(p->params);
    free(p->tags);
    memset(p, 0, sizeof *p);
}

static size_t pending_count(const pending *p)
{
    return p->n_metrics + p->n_params + p->n_tags;
}

/* ---- runs ---- */

static mlrun *find_run(mlflow_cb *m, const char *key)
{
    for (mlrun *r = m->runs; r; r = r->next) {
        if (strcmp(r->key, key) == 0) {
            return r;
        }
    }
    return NULL;
}

static void remove_run(mlflow_cb *m, mlrun *run)
{
    for (mlrun **p = &m->runs; *p; p = &(*p)->next) {
        if (*p == run) {
            *p = run->next;
            break;
        }
    }
    pending_free(&run->p);
    free(run->run_id);
    free(run);
}

/* Sends what is pending for run. Sent entities leave the pending arrays; after a permanent
 * rejection the rejected request's entities leave too (the error says how many); after a
 * retriable failure everything stays for the next try. */
static mlt_err send_pending(mlflow_cb *m, mlrun *run, int64_t deadline_ns)
{
    pending *p = &run->p;
    if (pending_count(p) == 0) {
        return MLT_OK;
    }
    mlt__batch b = {p->metrics, p->n_metrics, p->params, p->n_params, p->tags, p->n_tags};
    size_t msglen;
    char *msg = mlt__fail_buf(&msglen);
    mlt_err err = mlt__client_log_batch(&m->client, run->run_id, &b, deadline_ns, msg, msglen);
    pending_drop(p, p->n_metrics - b.n_metrics, p->n_params - b.n_params, p->n_tags - b.n_tags);
    if (err != MLT_OK && !mlt_err_is_retriable(err) && err != MLT_ERR_NOMEM) {
        /* Find out how much the rejected request held and drop it, or every later call on this
         * run would fail on the same entities. */
        mlt__api_req r;
        mlt__api_req_init(&r);
        mlt__batch took;
        mlt__batch rest = {p->metrics, p->n_metrics, p->params, p->n_params, p->tags, p->n_tags};
        if (mlt__api_log_batch(&r, run->run_id, &rest, MLT__BATCH_MAX_BYTES, &took) == MLT_OK) {
            size_t n = took.n_metrics + took.n_params + took.n_tags;
            size_t used = strlen(msg);
            snprintf(msg + used, msglen - used,
                     " [%zu metrics, %zu params and %zu tags of run %s were not logged]",
                     took.n_metrics, took.n_params, took.n_tags, run->run_id);
            (void)n;
            pending_drop(p, took.n_metrics, took.n_params, took.n_tags);
        }
        mlt__api_req_free(&r);
    }
    return err;
}

static mlt_err resolve_experiment(mlflow_cb *m, char *msg, size_t msglen)
{
    if (m->experiment_id) {
        return MLT_OK;
    }
    const mlt_options *o = mlt__tracker_options(m->tracker);
    const char *name = mlt__opt_str(o, MLT__OPT_EXPERIMENT_NAME);
    const char *id = mlt__opt_str(o, MLT__OPT_EXPERIMENT_ID);
    char *resolved = NULL;
    if (name) {
        mlt_err err = mlt__client_experiment(&m->client, name, &resolved, msg, msglen);
        if (err != MLT_OK) {
            return err;
        }
        if (id && strcmp(id, resolved) != 0) {
            mlt_err e = mlt__errf(msg, msglen, MLT_ERR_BAD_OPTION,
                                  "experiment_id %s does not match experiment '%s' (id %s)", id,
                                  name, resolved);
            free(resolved);
            return e;
        }
    } else {
        resolved = mlt__strdup(id ? id : "0"); /* "0" is MLflow's Default experiment */
        if (!resolved) {
            return MLT_ERR_NOMEM;
        }
    }
    m->experiment_id = resolved;
    return mlt__tracker_set_experiment_id(m->tracker, resolved);
}

static mlt_err on_start(const mlt_run_info *info, void *ud)
{
    mlflow_cb *m = ud;
    size_t msglen;
    char *msg = mlt__fail_buf(&msglen);
    mlrun *run = calloc(1, sizeof *run);
    if (!run) {
        return mlt__fail(MLT_ERR_NOMEM, "out of memory");
    }
    snprintf(run->key, sizeof run->key, "%s", info->run_key);
    pthread_mutex_lock(&m->lock);
    mlt_err err = resolve_experiment(m, msg, msglen);
    if (err == MLT_OK) {
        mlt__kv tags[5];
        size_t n = 0;
        tags[n++] = (mlt__kv){"mlflow.user", m->user};
        tags[n++] = (mlt__kv){"mlflow.source.name", m->program};
        tags[n++] = (mlt__kv){"mlflow.source.type", "LOCAL"};
        if (m->has_commit) {
            tags[n++] = (mlt__kv){"mlflow.source.git.commit", m->commit};
        }
        if (info->parent_run_key) {
            mlrun *parent = find_run(m, info->parent_run_key);
            if (parent) {
                tags[n++] = (mlt__kv){"mlflow.parentRunId", parent->run_id};
            }
        }
        err = mlt__client_create_run(&m->client, m->experiment_id, info->run_key,
                                     info->run_name, info->start_time_ms, tags, n, -1,
                                     &run->run_id, msg, msglen);
    }
    if (err == MLT_OK) {
        err = mlt__run_set_id(info->run, run->run_id);
    }
    if (err == MLT_OK) {
        run->next = m->runs;
        m->runs = run;
    } else {
        free(run->run_id);
        free(run);
    }
    pthread_mutex_unlock(&m->lock);
    return err;
}

/* Adds to a run's pending logs under the lock, sending a batch once a full one is held. */
typedef enum { ADD_METRIC, ADD_PARAM, ADD_TAG } add_kind;

static mlt_err add(mlflow_cb *m, const mlt_run_info *info, add_kind kind, const char *key,
                   const char *value, double num, int64_t step, int64_t ts)
{
    pthread_mutex_lock(&m->lock);
    mlt_err err = MLT_OK;
    mlrun *run = find_run(m, info->run_key);
    if (!run) {
        err = mlt__fail(MLT_ERR_STATE, "mlflow callback: run %s is unknown", info->run_key);
        goto out;
    }
    pending *p = &run->p;
    char *k = mlt__strdup(key);
    char *v = value ? mlt__strdup(value) : NULL;
    if (!k || (value && !v)) {
        free(k);
        free(v);
        err = mlt__fail(MLT_ERR_NOMEM, "out of memory");
        goto out;
    }
    bool ok = true;
    switch (kind) {
    case ADD_METRIC:
        if ((ok = grow((void **)&p->metrics, &p->cap_metrics, p->n_metrics,
                       sizeof *p->metrics))) {
            p->metrics[p->n_metrics++] = (mlt__metric){k, num, ts, step};
        }
        break;
    case ADD_PARAM:
        if ((ok = grow((void **)&p->params, &p->cap_params, p->n_params, sizeof *p->params))) {
            p->params[p->n_params++] = (mlt__kv){k, v};
        }
        break;
    case ADD_TAG:
        /* Last write wins: a pending tag with the same key takes the new value. */
        for (size_t i = 0; i < p->n_tags; i++) {
            if (strcmp(p->tags[i].key, k) == 0) {
                free(k);
                free((char *)p->tags[i].value);
                p->tags[i].value = v;
                goto sent;
            }
        }
        if ((ok = grow((void **)&p->tags, &p->cap_tags, p->n_tags, sizeof *p->tags))) {
            p->tags[p->n_tags++] = (mlt__kv){k, v};
        }
        break;
    }
    if (!ok) {
        free(k);
        free(v);
        err = mlt__fail(MLT_ERR_NOMEM, "out of memory");
        goto out;
    }
sent:
    if (p->n_metrics >= MLT__BATCH_MAX_METRICS || p->n_params >= MLT__BATCH_MAX_PARAMS ||
        p->n_tags >= MLT__BATCH_MAX_TAGS || pending_count(p) >= MLT__BATCH_MAX_ENTITIES) {
        err = send_pending(m, run, -1);
    }
out:
    pthread_mutex_unlock(&m->lock);
    return err;
}

static mlt_err on_param(const mlt_run_info *info, const char *key, const char *value, void *ud)
{
    return add(ud, info, ADD_PARAM, key, value, 0, 0, 0);
}

static mlt_err on_metric(const mlt_run_info *info, const char *key, double value, int64_t step,
                         int64_t ts, void *ud)
{
    return add(ud, info, ADD_METRIC, key, NULL, value, step, ts);
}

static mlt_err on_tag(const mlt_run_info *info, const char *key, const char *value, void *ud)
{
    return add(ud, info, ADD_TAG, key, value, 0, 0, 0);
}

static mlt_err on_end(const mlt_run_info *info, mlt_run_status status, double duration_s,
                      void *ud)
{
    (void)duration_s;
    mlflow_cb *m = ud;
    pthread_mutex_lock(&m->lock);
    mlt_err err = MLT_OK;
    mlrun *run = find_run(m, info->run_key);
    if (run) {
        err = send_pending(m, run, -1);
        char first[512];
        snprintf(first, sizeof first, "%s", mlt_last_error());
        size_t msglen;
        char *msg = mlt__fail_buf(&msglen);
        mlt_err uerr = mlt__client_end_run(&m->client, run->run_id, status, info->end_time_ms,
                                           -1, msg, msglen);
        if (err != MLT_OK) {
            mlt__fail_set(first);
        } else {
            err = uerr;
        }
        remove_run(m, run);
    }
    pthread_mutex_unlock(&m->lock);
    return err;
}

static mlt_err on_flush(int timeout_ms, void *ud)
{
    mlflow_cb *m = ud;
    int64_t deadline = timeout_ms < 0 ? -1 : mlt__mono_ns() + (int64_t)timeout_ms * 1000000;
    mlt_err first = MLT_OK;
    char first_msg[512] = "";
    pthread_mutex_lock(&m->lock);
    for (mlrun *run = m->runs; run; run = run->next) {
        mlt_err err = send_pending(m, run, deadline);
        if (err != MLT_OK && first == MLT_OK) {
            first = err;
            snprintf(first_msg, sizeof first_msg, "%s", mlt_last_error());
        }
    }
    pthread_mutex_unlock(&m->lock);
    if (first != MLT_OK) {
        mlt__fail_set(first_msg);
    }
    return first;
}

static void on_close(void *ud)
{
    mlflow_cb *m = ud;
    while (m->runs) {
        remove_run(m, m->runs);
    }
    mlt__client_free(&m->client);
    free(m->experiment_id);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

mlt_err mlt_tracker_add_mlflow(mlt_tracker *tracker, char *errbuf, size_t errlen)
{
    if (!tracker) {
        return mlt__errf(errbuf, errlen, MLT_ERR_INVALID_ARG, "tracker is required");
    }
    const mlt_options *o = mlt__tracker_options(tracker);
    if (!mlt__opt_str(o, MLT__OPT_TRACKING_URI)) {
        return mlt__errf(errbuf, errlen, MLT_ERR_BAD_OPTION,
                         "the MLflow callback needs a tracking_uri (option tracking_uri or "
                         "MLFLOW_TRACKING_URI)");
    }
    mlflow_cb *m = calloc(1, sizeof *m);
    if (!m) {
        return mlt__errf(errbuf, errlen, MLT_ERR_NOMEM, "out of memory");
    }
    mlt_err err = mlt__client_init(&m->client, o, errbuf, errlen);
    if (err != MLT_OK) {
        free(m);
        return err;
    }
    m->tracker = tracker;
    pthread_mutex_init(&m->lock, NULL);
    mlt__sys_user(m->user, sizeof m->user);
    mlt__sys_program(m->program, sizeof m->program);
    m->has_commit = mlt__sys_git_commit(m->program[0] ? m->program : ".", m->commit);
    if (!m->has_commit) {
        m->has_commit = mlt__sys_git_commit(".", m->commit);
    }
    static const mlt_callbacks cb = {
        .version = MLT_CALLBACKS_VERSION,
        .on_run_start = on_start,
        .on_param = on_param,
        .on_metric = on_metric,
        .on_tag = on_tag,
        .on_run_end = on_end,
        .on_flush = on_flush,
        .on_close = on_close,
    };
    err = mlt_tracker_add_callbacks(tracker, &cb, m);
    if (err != MLT_OK) {
        mlt__errf(errbuf, errlen, err, "%s", mlt_last_error());
        on_close(m);
    }
    return err;
}

mlt_err mlt_tracker_from_env(mlt_tracker **out, char *errbuf, size_t errlen)
{
    if (!out) {
        return mlt__errf(errbuf, errlen, MLT_ERR_INVALID_ARG, "out is required");
    }
    mlt_options *o = mlt_options_new();
    if (!o) {
        return mlt__errf(errbuf, errlen, MLT_ERR_NOMEM, "out of memory");
    }
    mlt_tracker *t = NULL;
    mlt_err err = mlt_options_from_env(o, errbuf, errlen);
    if (err == MLT_OK && !mlt__opt_str(o, MLT__OPT_TRACKING_URI)) {
        err = mlt__errf(errbuf, errlen, MLT_ERR_BAD_OPTION,
                        "MLFLOW_TRACKING_URI is not set (e.g. http://127.0.0.1:5000)");
    }
    if (err == MLT_OK) {
        err = mlt_tracker_new(&t, o, errbuf, errlen);
    }
    mlt_options_free(o);
    if (err == MLT_OK) {
        err = mlt_tracker_add_mlflow(t, errbuf, errlen);
        if (err != MLT_OK) {
            mlt_tracker_close(t, 0);
        }
    }
    if (err == MLT_OK) {
        *out = t;
    }
    return err;
}
