/*
 * replay_main.c - a main() for the fuzz targets without libFuzzer: runs LLVMFuzzerTestOneInput
 * once over every file named on the command line, and over every file of every directory named
 * (not recursive, sorted, hidden files skipped), each in a buffer of exactly its size so that
 * AddressSanitizer sees a read past its end. A finding aborts; otherwise exit 0, or 1 when an
 * argument cannot be read or names no input at all.
 *   replay_main [-q] FILE|DIR...
 */
#include "fuzz.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static bool quiet;

/* Reads path whole into a malloc'd buffer of exactly its size (a 1-byte one when empty). */
static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    uint8_t *data = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 4096;
            uint8_t *n = realloc(data, cap);
            if (!n) {
                free(data);
                fclose(f);
                fprintf(stderr, "replay: out of memory reading %s\n", path);
                return -1;
            }
            data = n;
        }
        size_t got = fread(data + len, 1, cap - len, f);
        len += got;
        if (got == 0) {
            break;
        }
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        free(data);
        fprintf(stderr, "replay: cannot read %s\n", path);
        return -1;
    }
    /* exactly len bytes, so that a read past the end is caught */
    uint8_t *exact = malloc(len ? len : 1);
    if (!exact) {
        free(data);
        return -1;
    }
    if (len) {
        memcpy(exact, data, len);
    }
    free(data);
    if (!quiet) {
        fprintf(stderr, "replay: %s (%zu bytes)\n", path, len);
    }
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs every file of dir; returns how many, or -1. */
static long run_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "replay: cannot open %s: %s\n", dir, strerror(errno));
        return -1;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') {
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **nn = realloc(names, cap * sizeof *nn);
            if (!nn) {
                break;
            }
            names = nn;
        }
        if (!(names[n] = strdup(e->d_name))) {
            break;
        }
        n++;
    }
    closedir(d);
    if (n > 1) {
        qsort(names, n, sizeof *names, cmp_names);
    }
    long ran = 0;
    for (size_t i = 0; i < n; i++) {
        char path[PATH_MAX];
        int w = snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        struct stat st;
        if (w > 0 && (size_t)w < sizeof path && stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            if (run_file(path) != 0) {
                ran = -1;
                break;
            }
            ran++;
        }
    }
    for (size_t i = 0; i < n; i++) {
        free(names[i]);
    }
    free(names);
    return ran;
}

int main(int argc, char **argv)
{
    long total = 0;
    int first = 1;
    if (argc > 1 && strcmp(argv[1], "-q") == 0) {
        quiet = true;
        first = 2;
    }
    if (first >= argc) {
        fprintf(stderr, "usage: %s [-q] FILE|DIR...\n", argv[0]);
        return 2;
    }
    for (int i = first; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
            return 1;
        }
        long ran = S_ISDIR(st.st_mode) ? run_dir(argv[i]) : run_file(argv[i]) == 0 ? 1 : -1;
        if (ran < 0) {
            return 1;
        }
        total += ran;
    }
    if (total == 0) {
        fprintf(stderr, "replay: no input found in the arguments\n");
        return 1;
    }
    fprintf(stderr, "replay: %s: %ld inputs, no finding\n", argv[0], total);
    return 0;
}
