/*
 * w2_overhead.c - benchmark W2 (training-loop overhead): STEPS steps of a fixed 1 ms busy
 * computation (a spin on CLOCK_MONOTONIC) followed by METRICS metric points, with the MLflow
 * sender delivering in the background as it would in a real training job.
 *
 *   w2_overhead --variant none|string|handle [--steps 2000] [--metrics 100] [--step-us 1000]
 *               [--uri URI --experiment NAME --queue DIR] [--no-flush]
 *
 * none logs nothing and sets up no tracker; string logs with mlt_log_metric(), handle with
 * mlt_log_metric_key() (keys and values as in W1). Only the loop is timed; afterwards the run is
 * ended and flushed (untimed) so that bench.py can check the server; with --no-flush (for a
 * closed port: no server competing for the CPU) it is closed at once instead, the journal left
 * undelivered. Prints one JSON line:
 * variant, steps, points, seconds, us_per_step, run_id, rejected, flush.
 */
#include "bench_tracker.h"

static void spin_until(double deadline)
{
    while (bench_now() < deadline) {
    }
}

int main(int argc, char **argv)
{
    bench_conf c = {0};
    const char *variant = NULL;
    long long steps = 2000, step_us = 1000;
    int nkeys = 100;
    bool flush = true;
    for (int i = 1; i < argc; i++) {
        if (bench_conf_arg(&c, argc, argv, &i)) {
            continue;
        } else if (strcmp(argv[i], "--no-flush") == 0) {
            flush = false;
        } else if (strcmp(argv[i], "--variant") == 0) {
            variant = bench_optarg(argc, argv, &i);
        } else if (strcmp(argv[i], "--steps") == 0) {
            steps = bench_arg_ll("--steps", bench_optarg(argc, argv, &i));
        } else if (strcmp(argv[i], "--metrics") == 0) {
            nkeys = (int)bench_arg_ll("--metrics", bench_optarg(argc, argv, &i));
        } else if (strcmp(argv[i], "--step-us") == 0) {
            step_us = bench_arg_ll("--step-us", bench_optarg(argc, argv, &i));
        } else {
            fprintf(stderr, "w2_overhead: unknown argument %s\n", argv[i]);
            return BENCH_EXIT_USAGE;
        }
    }
    if (variant == NULL || (strcmp(variant, "none") != 0 && strcmp(variant, "string") != 0 &&
                            strcmp(variant, "handle") != 0)) {
        bench_die("--variant none|string|handle is required");
    }
    bool logging = strcmp(variant, "none") != 0, handles = strcmp(variant, "handle") == 0;
    char(*names)[BENCH_KEY_LEN];
    const mlt_key **keys;
    bench_key_arrays(nkeys, "--metrics", &names, &keys);
    mlt_tracker *t = NULL;
    mlt_run *run = NULL;
    if (logging) {
        t = bench_tracker(&c);
        if (mlt_run_start(&run, t, "w2") != MLT_OK) {
            bench_die("mlt_run_start: %s", mlt_last_error());
        }
        bench_keys(t, nkeys, names, handles ? keys : NULL);
    }

    double step_s = (double)step_us * 1e-6;
    double t0 = bench_now();
    for (int64_t s = 0; s < steps; s++) {
        spin_until(bench_now() + step_s);
        if (!logging) {
            continue;
        }
        bench_log_step(run, s, nkeys, names, keys, handles);
    }
    double t1 = bench_now();

    char run_id[64] = "";
    unsigned long long rejected = 0;
    mlt_err flushed = MLT_OK, closed = MLT_OK;
    if (logging) {
        if (mlt_run_end(run, MLT_RUN_FINISHED) != MLT_OK) {
            bench_die("mlt_run_end: %s", mlt_last_error());
        }
        flushed = flush ? mlt_tracker_flush(t, -1) : MLT_OK;
        bench_run_id(run_id, sizeof run_id, &rejected);
        closed = mlt_tracker_close(t, flush ? 10000 : 0);
        /* left on disk: the closed port is found away (QUEUED), or not tried in 0 ms */
        closed =
            !flush && (closed == MLT_ERR_QUEUED || closed == MLT_ERR_TIMEOUT) ? MLT_OK : closed;
    }
    printf("{\"variant\":\"%s\",\"steps\":%lld,\"points\":%lld,\"seconds\":%.6f,"
           "\"us_per_step\":%.3f,\"run_id\":\"%s\",\"rejected\":%llu,\"flush\":\"%s\","
           "\"close\":\"%s\"}\n",
           variant, steps, logging ? steps * nkeys : 0, t1 - t0,
           steps > 0 ? (t1 - t0) * 1e6 / (double)steps : 0.0, run_id, rejected,
           mlt_err_name(flushed), mlt_err_name(closed));
    free(names);
    free(keys);
    return flushed == MLT_OK && closed == MLT_OK && rejected == 0 ? 0 : 1;
}
