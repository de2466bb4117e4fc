/*
 * train_model.c - the decorator style: MLT_TRACKED defines train_model(epochs, learning_rate)
 * as a tracked function. Each call is an MLflow run named "train_model" with the params
 * epochs=10 and learning_rate=0.01, an "accuracy" metric per epoch, the returned accuracy as
 * the metric "result", its duration, and status FINISHED.
 *
 * Logging goes to the durable queue and a background thread delivers it, so the training never
 * waits for the server and works without one: the delivery callback below prints the run's id
 * and MLflow UI address once the server has created it; with no server, the run waits on disk
 * for the next program or `mltrack sync`.
 *
 *   MLFLOW_TRACKING_URI=http://127.0.0.1:5000 ./examples/train_model
 */
#include <mltrack.h>

#include <stdio.h>

MLT_TRACKED(double, train_model, (int, epochs), (double, learning_rate))
{
    double accuracy = 0.5;
    for (int epoch = 0; epoch < epochs; epoch++) {
        accuracy += (1.0 - accuracy) * learning_rate * 10.0; /* a stand-in for training */
        mlt_log_metric(mlt_active_run(), "accuracy", accuracy, epoch);
    }
    return accuracy;
}

static char tracking_uri[1024];

/* Called on the sender thread with the fate of each delivered operation. */
static void on_delivery(const mlt_delivery *d, void *userdata)
{
    int *rejected = userdata;
    if (d->state == MLT_DELIVERY_REJECTED) {
        fprintf(stderr, "train_model: the server refused: %s\n", d->message);
        (*rejected)++;
    } else if (d->op == MLT_OP_CREATE_RUN) {
        /* as mlt_run_ui_url() writes it: the run's charts, in the UI's "Model training" view */
        printf("run id: %s\nrun url: %s/#/experiments/%s/runs/%s/model-metrics"
               "?workflowType=machine_learning\n",
               d->run_id, tracking_uri, d->experiment_id, d->run_id);
        fflush(stdout);
    }
}

int main(void)
{
    char err[512];
    int rejected = 0;
    mlt_options *opts = mlt_options_new();
    mlt_tracker *tracker = NULL;
    mlt_err rc = opts ? mlt_options_from_env(opts, err, sizeof err) : MLT_ERR_NOMEM;
    if (rc == MLT_OK) {
        const char *uri = mlt_options_get(opts, "tracking_uri");
        snprintf(tracking_uri, sizeof tracking_uri, "%s", uri ? uri : "");
        mlt_options_set_delivery_callback(opts, on_delivery, &rejected);
        rc = mlt_tracker_new(&tracker, opts, err, sizeof err);
    }
    if (rc == MLT_OK) {
        rc = mlt_tracker_add_mlflow(tracker, err, sizeof err);
    }
    mlt_options_free(opts);
    if (rc != MLT_OK) {
        fprintf(stderr, "train_model: %s\n", err);
        mlt_tracker_close(tracker, 0);
        return 2;
    }
    mlt_tracker_set_default(tracker);

    double accuracy = train_model(10, 0.01);
    printf("accuracy: %.4f\n", accuracy);

    /* A tracked function returns its own result, so tracking failures are counted instead. */
    int status = 0;
    if (mlt_tracker_last_error(err, sizeof err, tracker) > 0) {
        fprintf(stderr, "train_model: tracking failed: %s\n", err);
        status = 1;
    }
    /* Without a server the close returns at once with MLT_ERR_QUEUED: the run is safe in the
     * queue, which is not a failure; mlt_last_error() says how much, where, and why. */
    rc = mlt_tracker_close(tracker, 10000);
    if (rc == MLT_ERR_QUEUED || rc == MLT_ERR_TIMEOUT) {
        fprintf(stderr, "train_model: %s\n", mlt_last_error());
    } else if (rc != MLT_OK) {
        fprintf(stderr, "train_model: %s\n", mlt_last_error());
        status = 1;
    }
    return rejected ? 1 : status;
}
