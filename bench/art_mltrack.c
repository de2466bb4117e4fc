/*
 * art_mltrack.c - the artifact benchmarks' mltrack side (bench/bench.py art): one run, PATH...
 * logged with mlt_log_artifact one by one (a directory: each file in it, in name order, one call
 * each, as ART2 counts files), then a flush until everything is uploaded.
 *
 *   art_mltrack --uri URI --experiment NAME --queue DIR [--fsync MODE] [--run-name NAME]
 *               [--no-flush] PATH...
 *
 * Prints one JSON line: files, bytes, log_s (the calls: the snapshots), flush_s (the uploads),
 * total_s, run_id, rejected, flush (the flush's result), max_rss_kb (the peak resident set).
 * With --no-flush (the server away: the offline figure) the tracker is closed at once and the
 * snapshots stay queued.
 */
#include "bench_tracker.h"

#include <dirent.h>
#include <limits.h>
#include <sys/stat.h>

static int cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Logs one path (a directory: its files, one call each); returns files and adds bytes. */
static long log_path(mlt_run *run, const char *path, unsigned long long *bytes)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        bench_die("%s: %s", path, strerror(errno));
    }
    if (!S_ISDIR(st.st_mode)) {
        if (mlt_log_artifact(run, path, NULL) != MLT_OK) {
            bench_die("mlt_log_artifact %s: %s", path, mlt_last_error());
        }
        *bytes += (unsigned long long)st.st_size;
        return 1;
    }
    DIR *d = opendir(path);
    if (d == NULL) {
        bench_die("%s: %s", path, strerror(errno));
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') {
            continue;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            names = realloc(names, cap * sizeof *names);
            if (names == NULL) {
                bench_die("out of memory");
            }
        }
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp);
    long files = 0;
    for (size_t i = 0; i < n; i++) {
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", path, names[i]);
        files += log_path(run, p, bytes);
        free(names[i]);
    }
    free(names);
    return files;
}

int main(int argc, char **argv)
{
    bench_conf c = {0};
    const char *run_name = "art";
    bool flush = true;
    int first = argc;
    for (int i = 1; i < argc; i++) {
        if (bench_conf_arg(&c, argc, argv, &i)) {
            continue;
        } else if (strcmp(argv[i], "--run-name") == 0) {
            run_name = bench_optarg(argc, argv, &i);
        } else if (strcmp(argv[i], "--no-flush") == 0) {
            flush = false;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "art_mltrack: unknown argument %s\n", argv[i]);
            return BENCH_EXIT_USAGE;
        } else {
            first = i;
            break;
        }
    }
    if (first >= argc) {
        fprintf(stderr, "art_mltrack: no PATH\n");
        return BENCH_EXIT_USAGE;
    }
    mlt_tracker *t = bench_tracker(&c);
    mlt_run *run;
    if (mlt_run_start(&run, t, run_name) != MLT_OK) {
        bench_die("mlt_run_start: %s", mlt_last_error());
    }
    unsigned long long bytes = 0;
    long files = 0;
    double t0 = bench_now();
    for (int i = first; i < argc; i++) {
        files += log_path(run, argv[i], &bytes);
    }
    double t1 = bench_now();
    if (mlt_run_end(run, MLT_RUN_FINISHED) != MLT_OK) {
        bench_die("mlt_run_end: %s", mlt_last_error());
    }
    mlt_err fl = flush ? mlt_tracker_flush(t, -1) : MLT_OK;
    double t2 = bench_now();
    char run_id[64];
    unsigned long long rejected;
    bench_run_id(run_id, sizeof run_id, &rejected);
    mlt_tracker_close(t, 0);
    printf("{\"files\":%ld,\"bytes\":%llu,\"log_s\":%.6f,\"flush_s\":%.6f,\"total_s\":%.6f,"
           "\"run_id\":\"%s\",\"rejected\":%llu,\"flush\":\"%s\",\"max_rss_kb\":%ld}\n",
           files, bytes, t1 - t0, t2 - t1, t2 - t0, run_id, rejected, mlt_err_name(fl),
           bench_max_rss_kb());
    return 0;
}
