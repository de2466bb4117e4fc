/*
 * train_callbacks.c - the callbacks style: one run seen by three sinks at once: the built-in
 * print callback (to stdout), the MLflow callback, and a callback of our own that keeps the best
 * loss and reports it when the run ends (the seed's Protocol as a struct of hooks).
 *
 *   MLFLOW_TRACKING_URI=http://127.0.0.1:5000 ./examples/train_callbacks
 */
#include <mltrack.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct best_loss {
    double best;
    int64_t best_step;
} best_loss;

static mlt_err best_on_metric(const mlt_run_info *info, const char *key, double value, int64_t step,
                              int64_t timestamp_ms, void *userdata)
{
    (void)info;
    (void)timestamp_ms;
    best_loss *b = userdata;
    if (strcmp(key, "loss") == 0 && !(value >= b->best)) {
        b->best = value;
        b->best_step = step;
    }
    return MLT_OK;
}

static mlt_err best_on_run_end(const mlt_run_info *info, mlt_run_status status, double duration_s,
                               void *userdata)
{
    const best_loss *b = userdata;
    printf("best loss of run '%s': %.6f at step %lld (%s after %.3f s)\n", info->run_name, b->best,
           (long long)b->best_step, mlt_run_status_name(status), duration_s);
    return MLT_OK;
}

/* Waits (up to 10 s) for the queue to deliver the run so far, then prints its id and MLflow UI
 * address; without a server the run stays queued (the flush says so at once), which is not an
 * error. */
static void print_run(mlt_tracker *tracker, mlt_run *run)
{
    char url[1024];
    mlt_queue_stats stats = MLT_QUEUE_STATS_INIT;
    if (mlt_tracker_flush(tracker, 10000) == MLT_OK &&
        mlt_run_ui_url(url, sizeof url, run) == MLT_OK) {
        printf("run id: %s\nrun url: %s\n", mlt_run_id(run), url);
    } else if (mlt_tracker_queue_stats(&stats, tracker) == MLT_OK && stats.rejected > 0) {
        printf("run key: %s (not created: rejected by the server)\n", mlt_run_key(run));
    } else {
        printf("run key: %s (queued: not delivered yet)\n", mlt_run_key(run));
    }
}

/* Closes the tracker. Runs kept in the queue (no server: the close says so at once) are not a
 * failure; records the server refused are. */
static int finish(mlt_tracker *tracker, const char *prog)
{
    mlt_queue_stats stats = MLT_QUEUE_STATS_INIT;
    mlt_tracker_flush(tracker, 10000); /* so that the counters include the run's end */
    int failed = mlt_tracker_queue_stats(&stats, tracker) == MLT_OK && stats.rejected > 0;
    if (failed) {
        fprintf(stderr, "%s: the server refused %llu records (see the queue's dead letters)\n",
                prog, (unsigned long long)stats.rejected);
    }
    mlt_err rc = mlt_tracker_close(tracker, 10000);
    if (rc == MLT_ERR_QUEUED || rc == MLT_ERR_TIMEOUT) {
        fprintf(stderr, "%s: %s\n", prog, mlt_last_error()); /* kept: where, and why */
    } else if (rc != MLT_OK) {
        fprintf(stderr, "%s: %s\n", prog, mlt_last_error());
        failed = 1;
    }
    return failed;
}

int main(void)
{
    char err[512];
    mlt_tracker *tracker;
    if (mlt_tracker_from_env(&tracker, err, sizeof err) != MLT_OK) {
        fprintf(stderr, "train_callbacks: %s\n", err);
        return 2;
    }
    best_loss best = {INFINITY, -1};
    const mlt_callbacks best_cb = {
        .version = MLT_CALLBACKS_VERSION,
        .on_metric = best_on_metric,
        .on_run_end = best_on_run_end,
    };
    mlt_tracker_add_print(tracker, stdout);
    mlt_tracker_add_callbacks(tracker, &best_cb, &best);

    mlt_run *run;
    if (mlt_run_start(&run, tracker, "train_callbacks") != MLT_OK) {
        fprintf(stderr, "train_callbacks: %s\n", mlt_last_error());
        mlt_tracker_close(tracker, 0);
        return 1;
    }
    const int epochs = 15;
    const double lr = 0.01;
    mlt_log_param(run, "epochs", "15");
    mlt_log_param(run, "lr", "0.01");
    double loss = 2.0;
    for (int epoch = 0; epoch < epochs; epoch++) {
        loss -= lr * 10.0 * loss; /* a stand-in for training */
        mlt_log_metric(run, "loss", loss, epoch);
    }
    print_run(tracker, run);
    int rc = 0;
    if (mlt_run_end(run, MLT_RUN_FINISHED) != MLT_OK) {
        fprintf(stderr, "train_callbacks: %s\n", mlt_last_error());
        rc = 1;
    }
    return finish(tracker, "train_callbacks") || rc;
}
