/*
 * bench_util.h - what the benchmark programs share: clocks, resource usage, the metric keys and
 * values every workload logs (so that bench/bench.py can check the server holds exactly them),
 * argument parsing and the one JSON line each program prints.
 */
#ifndef MLT_BENCH_UTIL_H
#define MLT_BENCH_UTIL_H

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define BENCH_KEY_LEN 16
#define BENCH_EXIT_USAGE 64

static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* User + system CPU seconds of the whole process, every thread. */
static inline double bench_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

/* Peak resident set size in KiB: VmHWM, this process image's own high-water mark. Not ru_maxrss,
 * which Linux carries across execve(): a child of a big (v)forking parent reports the parent's. */
static inline long bench_max_rss_kb(void)
{
    long kb = -1;
    char line[256];
    FILE *f = fopen("/proc/self/status", "r");
    if (f != NULL) {
        while (fgets(line, sizeof line, f) != NULL) {
            if (strncmp(line, "VmHWM:", 6) == 0) {
                kb = strtol(line + 6, NULL, 10);
                break;
            }
        }
        fclose(f);
    }
    if (kb < 0) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        kb = ru.ru_maxrss;
    }
    return kb;
}

/* "metric_007": the name of key k, as bench.py expects it. */
static inline void bench_key_name(char *buf, size_t len, int k)
{
    snprintf(buf, len, "metric_%03d", k);
}

/* The value of key k at step s: exact in binary64 and computed the same way by bench.py. */
static inline double bench_value(int64_t step, int k)
{
    return (double)step * 0.001 + (double)k;
}

__attribute__((format(printf, 1, 2), noreturn)) static inline void bench_die(const char *fmt,
                                                                              ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

/* A non-negative integer argument, or exit with a usage error. */
static inline long long bench_arg_ll(const char *name, const char *text)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < 0) {
        fprintf(stderr, "%s: not a non-negative integer: %s\n", name, text);
        exit(BENCH_EXIT_USAGE);
    }
    return v;
}

static inline double bench_arg_double(const char *name, const char *text)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || !(v >= 0)) {
        fprintf(stderr, "%s: not a non-negative number: %s\n", name, text);
        exit(BENCH_EXIT_USAGE);
    }
    return v;
}

/* The value of option argv[*i] ("--name VALUE"), advancing *i; exits when it is missing. */
static inline const char *bench_optarg(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc) {
        fprintf(stderr, "%s needs a value\n", argv[*i]);
        exit(BENCH_EXIT_USAGE);
    }
    *i += 1;
    return argv[*i];
}

#endif /* MLT_BENCH_UTIL_H */
