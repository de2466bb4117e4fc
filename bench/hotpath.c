/*
 * hotpath.c - the hot path under callgrind: CALLS calls of mlt_log_metric(run, "train/loss",
 * ...) (--mode string), of mlt_log_metric_key() with a registered handle (--mode handle), or of
 * mlt_log_metric(run, buf, ...) with 100 distinct keys formatted into one reused buffer before
 * each call, "layer<i % 100>/grad_norm" (--mode runtime: keys built at run time, as per-layer
 * metrics are, in the same order at every step) or the same 100 keys in a shuffled order
 * (--mode shuffled: the order changes every call, the worst case of the address cache's guess
 * of the next key), on a tracker with the MLflow callback and its durable queue, the server
 * unreachable (a closed port), so that nothing but the calls themselves varies between runs.
 * Meant for
 *
 *   valgrind --tool=callgrind --collect-atstart=no --toggle-collect=mlt_log_metric \
 *       bench/hotpath --mode string --uri http://127.0.0.1:CLOSED --queue DIR
 *
 * (toggle mlt_log_metric_key for --mode handle): the collected instructions divided by CALLS are
 * the cost of one call. Every call counts, the first ones included.
 *
 *   hotpath --mode string|handle|runtime|shuffled --uri URI --queue DIR [--calls 100000] [--fsync
 * MODE]
 */
#include "bench_tracker.h"

int main(int argc, char **argv)
{
    bench_conf c = {.experiment = "hotpath"};
    const char *mode = NULL;
    long long calls = 100000;
    for (int i = 1; i < argc; i++) {
        if (bench_conf_arg(&c, argc, argv, &i)) {
            continue;
        } else if (strcmp(argv[i], "--mode") == 0) {
            mode = bench_optarg(argc, argv, &i);
        } else if (strcmp(argv[i], "--calls") == 0) {
            calls = bench_arg_ll("--calls", bench_optarg(argc, argv, &i));
        } else {
            fprintf(stderr, "hotpath: unknown argument %s\n", argv[i]);
            return BENCH_EXIT_USAGE;
        }
    }
    if (mode == NULL || (strcmp(mode, "string") != 0 && strcmp(mode, "handle") != 0 &&
                         strcmp(mode, "runtime") != 0 && strcmp(mode, "shuffled") != 0)) {
        bench_die("--mode string|handle|runtime|shuffled is required");
    }
    bool handles = strcmp(mode, "handle") == 0;
    bool runtime = strcmp(mode, "runtime") == 0;
    bool shuffled = strcmp(mode, "shuffled") == 0;
    uint32_t lcg = 12345;
    char buf[64];
    mlt_tracker *t = bench_tracker(&c);
    mlt_run *run;
    const mlt_key *key = NULL;
    if (mlt_run_start(&run, t, "hotpath") != MLT_OK) {
        bench_die("mlt_run_start: %s", mlt_last_error());
    }
    if (handles && mlt_metric_key(&key, t, "train/loss") != MLT_OK) {
        bench_die("mlt_metric_key: %s", mlt_last_error());
    }
    double t0 = bench_now();
    for (int64_t i = 0; i < calls; i++) {
        double v = 1.0 / (double)(i + 1);
        mlt_err e;
        if (runtime || shuffled) {
            int layer = (int)(i % 100);
            if (shuffled) { /* a fixed pseudo-random sequence: the same count at every run */
                lcg = lcg * 1664525u + 1013904223u;
                layer = (int)((lcg >> 16) % 100);
            }
            snprintf(buf, sizeof buf, "layer%d/grad_norm", layer);
            e = mlt_log_metric(run, buf, v, i / 100);
        } else {
            e = handles ? mlt_log_metric_key(run, key, v, i)
                        : mlt_log_metric(run, "train/loss", v, i);
        }
        if (e != MLT_OK) {
            bench_die("call %" PRId64 ": %s", i, mlt_last_error());
        }
    }
    double t1 = bench_now();
    mlt_run_end(run, MLT_RUN_FINISHED);
    mlt_tracker_close(t, 0);
    printf("{\"mode\":\"%s\",\"calls\":%lld,\"seconds\":%.6f}\n", mode, calls, t1 - t0);
    return 0;
}
