/*
 * train_model.c - the decorator style: MLT_TRACKED defines train_model(epochs, learning_rate)
 * as a tracked function. Each call is an MLflow run named "train_model" with the params
 * epochs=10 and learning_rate=0.01, an "accuracy" metric per epoch, the returned accuracy as
 * the metric "result", its duration, and status FINISHED.
 *
 *   MLFLOW_TRACKING_URI=http://127.0.0.1:5000 ./examples/train_model
 */
#include <mltrack.h>

#include <stdio.h>
#include <stdlib.h>

MLT_TRACKED(double, train_model, (int, epochs), (double, learning_rate))
{
    mlt_run *run = mlt_active_run();
    double accuracy = 0.5;
    for (int epoch = 0; epoch < epochs; epoch++) {
        accuracy += (1.0 - accuracy) * learning_rate * 10.0; /* a stand-in for training */
        mlt_log_metric(run, "accuracy", accuracy, epoch);
    }
    char url[1024];
    if (mlt_run_ui_url(run, url, sizeof url) == MLT_OK) {
        printf("run id: %s\nrun url: %s\n", mlt_run_id(run), url);
    }
    return accuracy;
}

int main(void)
{
    char err[512];
    mlt_tracker *tracker;
    if (mlt_tracker_from_env(&tracker, err, sizeof err) != MLT_OK) {
        fprintf(stderr, "train_model: %s\n", err);
        return 2;
    }
    mlt_tracker_set_default(tracker);

    double accuracy = train_model(10, 0.01);
    printf("accuracy: %.4f\n", accuracy);

    /* A tracked function returns its own result, so tracking failures are counted instead. */
    int rc = 0;
    if (mlt_tracker_last_error(tracker, err, sizeof err) > 0) {
        fprintf(stderr, "train_model: tracking failed: %s\n", err);
        rc = 1;
    }
    if (mlt_tracker_close(tracker, 10000) != MLT_OK) {
        fprintf(stderr, "train_model: %s\n", mlt_last_error());
        rc = 1;
    }
    return rc;
}
