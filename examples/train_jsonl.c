/*
 * train_jsonl.c - the context-manager style: MLT_WITH_RUN opens a run that is always ended,
 * however the block is left. Every event also goes, as one JSON object per line, to
 * experiments.log in the working directory (the JSON lines callback), flushed at run end.
 *
 *   MLFLOW_TRACKING_URI=http://127.0.0.1:5000 ./examples/train_jsonl && cat experiments.log
 */
#include <mltrack.h>

#include <stdio.h>

/* Waits (up to 5 s) for the queue to deliver the run so far, then prints its id and MLflow UI
 * address; without a server the run stays queued, which is not an error. */
static void print_run(mlt_tracker *tracker, mlt_run *run)
{
    char url[1024];
    mlt_queue_stats stats = MLT_QUEUE_STATS_INIT;
    if (mlt_tracker_flush(tracker, 5000) == MLT_OK &&
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
        fprintf(stderr, "train_jsonl: %s\n", err);
        return 2;
    }
    if (mlt_tracker_add_jsonl(tracker, "experiments.log", err, sizeof err) != MLT_OK) {
        fprintf(stderr, "train_jsonl: %s\n", err);
        mlt_tracker_close(tracker, 0);
        return 2;
    }

    int failed = 0;
    const int epochs = 20;
    MLT_WITH_RUN(tracker, run, "train_jsonl")
    {
        if (!run) {
            fprintf(stderr, "train_jsonl: no run: %s\n", mlt_last_error());
            failed = 1;
            break;
        }
        mlt_log_param(run, "epochs", "20");
        double loss = 1.0;
        for (int epoch = 0; epoch < epochs; epoch++) {
            loss *= 0.9; /* a stand-in for training */
            if (mlt_log_metric(run, "loss", loss, epoch) != MLT_OK) {
                fprintf(stderr, "train_jsonl: %s\n", mlt_last_error());
                mlt_run_fail(run); /* the run ends FAILED */
                failed = 1;
                break;
            }
        }
        print_run(tracker, run);
    }
    return finish(tracker, "train_jsonl") || failed;
}
