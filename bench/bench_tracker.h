/*
 * bench_tracker.h - the tracker every benchmark program sets up the same way: options from the
 * command line (tracking URI, experiment, queue directory, fsync), the MLflow callback, and a
 * delivery callback that remembers the run id the server gave and counts rejected records.
 */
#ifndef MLT_BENCH_TRACKER_H
#define MLT_BENCH_TRACKER_H

#include "bench_util.h"

#include <mltrack.h>
#include <pthread.h>

typedef struct bench_conf {
    const char *uri;
    const char *experiment;
    const char *queue;
    const char *fsync; /* NULL: the default */
} bench_conf;

/* Written by the sender thread, read after a flush: guarded by lock. */
typedef struct bench_deliveries {
    pthread_mutex_t lock;
    char run_id[64];
    unsigned long long rejected;
} bench_deliveries;

static bench_deliveries bench_delivered = {PTHREAD_MUTEX_INITIALIZER, "", 0};

static inline void bench_on_delivery(const mlt_delivery *d, void *userdata)
{
    bench_deliveries *bd = userdata;
    pthread_mutex_lock(&bd->lock);
    if (d->state == MLT_DELIVERY_REJECTED) {
        bd->rejected += d->records;
    } else if (d->op == MLT_OP_CREATE_RUN && d->run_id != NULL) {
        snprintf(bd->run_id, sizeof bd->run_id, "%s", d->run_id);
    }
    pthread_mutex_unlock(&bd->lock);
}

/* The run id of the (one) run created so far, "" if none, into buf. */
static inline void bench_run_id(char *buf, size_t len, unsigned long long *rejected)
{
    pthread_mutex_lock(&bench_delivered.lock);
    snprintf(buf, len, "%s", bench_delivered.run_id);
    *rejected = bench_delivered.rejected;
    pthread_mutex_unlock(&bench_delivered.lock);
}

static inline void bench_set(mlt_options *o, const char *name, const char *value)
{
    char err[256];
    if (value != NULL && mlt_options_set(o, name, value, err, sizeof err) != MLT_OK) {
        bench_die("option %s: %s", name, err);
    }
}

/* A tracker with the MLflow callback, or exit. */
static inline mlt_tracker *bench_tracker(const bench_conf *c)
{
    char err[256];
    mlt_options *o = mlt_options_new();
    mlt_tracker *t;
    if (o == NULL) {
        bench_die("out of memory");
    }
    if (c->uri == NULL || c->experiment == NULL || c->queue == NULL) {
        bench_die("--uri, --experiment and --queue are required");
    }
    bench_set(o, "tracking_uri", c->uri);
    bench_set(o, "experiment_name", c->experiment);
    bench_set(o, "queue_dir", c->queue);
    bench_set(o, "fsync", c->fsync);
    mlt_options_set_delivery_callback(o, bench_on_delivery, &bench_delivered);
    if (mlt_tracker_new(&t, o, err, sizeof err) != MLT_OK) {
        bench_die("mlt_tracker_new: %s", err);
    }
    mlt_options_free(o);
    if (mlt_tracker_add_mlflow(t, err, sizeof err) != MLT_OK) {
        bench_die("mlt_tracker_add_mlflow: %s", err);
    }
    return t;
}

/* Parses the options every tracker program takes; returns 1 if argv[*i] was one of them. */
static inline int bench_conf_arg(bench_conf *c, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    if (strcmp(a, "--uri") == 0) {
        c->uri = bench_optarg(argc, argv, i);
    } else if (strcmp(a, "--experiment") == 0) {
        c->experiment = bench_optarg(argc, argv, i);
    } else if (strcmp(a, "--queue") == 0) {
        c->queue = bench_optarg(argc, argv, i);
    } else if (strcmp(a, "--fsync") == 0) {
        c->fsync = bench_optarg(argc, argv, i);
    } else {
        return 0;
    }
    return 1;
}

/* The n keys' handles (handles != NULL) and names. */
static inline void bench_keys(mlt_tracker *t, int n, char (*names)[BENCH_KEY_LEN],
                              const mlt_key **handles)
{
    for (int k = 0; k < n; k++) {
        bench_key_name(names[k], BENCH_KEY_LEN, k);
        if (handles != NULL && mlt_metric_key(&handles[k], t, names[k]) != MLT_OK) {
            bench_die("mlt_metric_key %s: %s", names[k], mlt_last_error());
        }
    }
}

/* Room for n keys' names and handles, n from option opt (1-1000, else exits). */
static inline void bench_key_arrays(int n, const char *opt, char (**names)[BENCH_KEY_LEN],
                                    const mlt_key ***handles)
{
    if (n < 1 || n > 1000) {
        bench_die("%s must be 1-1000", opt);
    }
    *names = calloc((size_t)n, BENCH_KEY_LEN);
    *handles = calloc((size_t)n, sizeof **handles);
    if (*names == NULL || *handles == NULL) {
        bench_die("out of memory");
    }
}

/* Logs step s of the n keys, by handle or by name (the measured loop); exits on an error. */
static inline void bench_log_step(mlt_run *run, int64_t s, int n, char (*names)[BENCH_KEY_LEN],
                                  const mlt_key **handles, bool by_handle)
{
    for (int k = 0; k < n; k++) {
        mlt_err e = by_handle ? mlt_log_metric_key(run, handles[k], bench_value(s, k), s)
                              : mlt_log_metric(run, names[k], bench_value(s, k), s);
        if (e != MLT_OK) {
            bench_die("log %s step %" PRId64 ": %s", names[k], s, mlt_last_error());
        }
    }
}

#endif /* MLT_BENCH_TRACKER_H */
