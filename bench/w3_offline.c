/*
 * w3_offline.c - benchmark W3 (offline append): no server (the tracking URI is a closed port on
 * 127.0.0.1), POINTS metric points appended to the durable queue, then mlt_tracker_close(t, 0):
 * the journal stays on disk undelivered, for W4 (`mltrack sync`) to replay.
 *
 *   w3_offline --uri http://127.0.0.1:CLOSED --experiment NAME --queue DIR [--fsync MODE]
 *              [--points 1000000] [--keys 100] [--max-seconds S] [--handles]
 *
 * Steps of KEYS points each (keys and values as in W1). With --max-seconds the loop stops after
 * the first step that ends past S seconds (fsync=always is slow): the points really logged are
 * printed. Timed: the log calls, the run's end and the close. Prints one JSON line: variant,
 * points, seconds, points_per_s, disk_bytes (apparent sizes of every file under the queue
 * directory), disk_alloc_bytes (allocated blocks), bytes_per_point, files, max_rss_kb, close.
 */
#include "bench_tracker.h"

#include <ftw.h>
#include <sys/stat.h>

static unsigned long long disk_bytes, disk_alloc, disk_files;

static int add_file(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)path;
    (void)ftw;
    if (type == FTW_F) {
        disk_bytes += (unsigned long long)st->st_size;
        disk_alloc += (unsigned long long)st->st_blocks * 512u;
        disk_files++;
    }
    return 0;
}

int main(int argc, char **argv)
{
    bench_conf c = {0};
    long long points = 1000000;
    int nkeys = 100;
    double max_s = 0;
    bool handles = false;
    for (int i = 1; i < argc; i++) {
        if (bench_conf_arg(&c, argc, argv, &i)) {
            continue;
        } else if (strcmp(argv[i], "--points") == 0) {
            points = bench_arg_ll("--points", bench_optarg(argc, argv, &i));
        } else if (strcmp(argv[i], "--keys") == 0) {
            nkeys = (int)bench_arg_ll("--keys", bench_optarg(argc, argv, &i));
        } else if (strcmp(argv[i], "--max-seconds") == 0) {
            max_s = bench_arg_double("--max-seconds", bench_optarg(argc, argv, &i));
        } else if (strcmp(argv[i], "--handles") == 0) {
            handles = true;
        } else {
            fprintf(stderr, "w3_offline: unknown argument %s\n", argv[i]);
            return BENCH_EXIT_USAGE;
        }
    }
    char(*names)[BENCH_KEY_LEN];
    const mlt_key **keys;
    bench_key_arrays(nkeys, "--keys", &names, &keys);
    mlt_tracker *t = bench_tracker(&c);

    long long steps = points / nkeys, done = 0;
    double t0 = bench_now();
    mlt_run *run;
    if (mlt_run_start(&run, t, "w3") != MLT_OK) {
        bench_die("mlt_run_start: %s", mlt_last_error());
    }
    bench_keys(t, nkeys, names, handles ? keys : NULL);
    for (int64_t s = 0; s < steps; s++) {
        bench_log_step(run, s, nkeys, names, keys, handles);
        done += nkeys;
        if (max_s > 0 && bench_now() - t0 > max_s) {
            break;
        }
    }
    if (mlt_run_end(run, MLT_RUN_FINISHED) != MLT_OK) {
        bench_die("mlt_run_end: %s", mlt_last_error());
    }
    mlt_err closed = mlt_tracker_close(t, 0);
    double t1 = bench_now();

    if (nftw(c.queue, add_file, 16, FTW_PHYS) != 0) {
        bench_die("cannot walk %s", c.queue);
    }
    double secs = t1 - t0;
    printf("{\"variant\":\"%s-%s\",\"points\":%lld,\"seconds\":%.6f,\"points_per_s\":%.1f,"
           "\"disk_bytes\":%llu,\"disk_alloc_bytes\":%llu,\"files\":%llu,"
           "\"bytes_per_point\":%.2f,\"max_rss_kb\":%ld,\"close\":\"%s\"}\n",
           c.fsync != NULL ? c.fsync : "default", handles ? "handle" : "string", done, secs,
           secs > 0 ? (double)done / secs : 0.0, disk_bytes, disk_alloc, disk_files,
           done > 0 ? (double)disk_bytes / (double)done : 0.0, bench_max_rss_kb(),
           mlt_err_name(closed));
    free(names);
    free(keys);
    return 0;
}
