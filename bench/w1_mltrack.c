/*
 * w1_mltrack.c - benchmark W1 (delivery), mltrack's variant: one run, KEYS metric keys x STEPS
 * steps, timed from the run's start until mlt_tracker_flush(t, -1) returns MLT_OK after the
 * run's end, that is until the server has acknowledged every point.
 *
 *   w1_mltrack --uri URI --experiment NAME --queue DIR [--steps 1000] [--keys 100]
 *              [--handles] [--fsync MODE]
 *
 * Keys metric_000..; the value of key k at step s is s * 0.001 + k (bench_value()). --handles
 * logs through handles registered with mlt_metric_key() (registration is timed too), else
 * through string keys. Prints one JSON line: variant, points, seconds, cpu_s (whole process),
 * cpu_us_per_point, max_rss_kb, run_id, rejected, flush.
 */
#include "bench_tracker.h"

int main(int argc, char **argv)
{
    bench_conf c = {0};
    long long steps = 1000;
    int nkeys = 100;
    bool handles = false;
    for (int i = 1; i < argc; i++) {
        if (bench_conf_arg(&c, argc, argv, &i)) {
            continue;
        } else if (strcmp(argv[i], "--steps") == 0) {
            steps = bench_arg_ll("--steps", bench_optarg(argc, argv, &i));
        } else if (strcmp(argv[i], "--keys") == 0) {
            nkeys = (int)bench_arg_ll("--keys", bench_optarg(argc, argv, &i));
        } else if (strcmp(argv[i], "--handles") == 0) {
            handles = true;
        } else {
            fprintf(stderr, "w1_mltrack: unknown argument %s\n", argv[i]);
            return BENCH_EXIT_USAGE;
        }
    }
    char(*names)[BENCH_KEY_LEN];
    const mlt_key **keys;
    bench_key_arrays(nkeys, "--keys", &names, &keys);
    mlt_tracker *t = bench_tracker(&c);

    double t0 = bench_now();
    mlt_run *run;
    if (mlt_run_start(&run, t, "w1") != MLT_OK) {
        bench_die("mlt_run_start: %s", mlt_last_error());
    }
    bench_keys(t, nkeys, names, handles ? keys : NULL);
    for (int64_t s = 0; s < steps; s++) {
        bench_log_step(run, s, nkeys, names, keys, handles);
    }
    double t_logged = bench_now();
    if (mlt_run_end(run, MLT_RUN_FINISHED) != MLT_OK) {
        bench_die("mlt_run_end: %s", mlt_last_error());
    }
    mlt_err flushed = mlt_tracker_flush(t, -1);
    double t1 = bench_now();

    char run_id[64];
    unsigned long long rejected;
    bench_run_id(run_id, sizeof run_id, &rejected);
    mlt_err closed = mlt_tracker_close(t, 10000);
    double cpu = bench_cpu_s();
    long long points = steps * nkeys;
    printf("{\"variant\":\"mltrack-%s\",\"points\":%lld,\"seconds\":%.6f,\"log_seconds\":%.6f,"
           "\"cpu_s\":%.6f,\"cpu_us_per_point\":%.4f,\"max_rss_kb\":%ld,\"run_id\":\"%s\","
           "\"rejected\":%llu,\"flush\":\"%s\",\"close\":\"%s\"}\n",
           handles ? "handle" : "string", points, t1 - t0, t_logged - t0, cpu,
           points > 0 ? cpu * 1e6 / (double)points : 0.0, bench_max_rss_kb(), run_id, rejected,
           mlt_err_name(flushed), mlt_err_name(closed));
    free(names);
    free(keys);
    return flushed == MLT_OK && closed == MLT_OK && rejected == 0 ? 0 : 1;
}
