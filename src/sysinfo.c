/*
 * sysinfo.c - the user, the program path and the git commit, for MLflow's system tags; the
 * machine's CPU and memory use, for its system metrics.
 */
#include "config.h"

#include "sysinfo.h"

#include <ctype.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void mlt__sys_user(char *out, size_t len)
{
    const char *u = getenv("USER");
    if (!u || !*u) {
        u = getenv("LOGNAME");
    }
    if (u && *u) {
        snprintf(out, len, "%s", u);
        return;
    }
    struct passwd pw, *res = NULL;
    char buf[1024];
    if (getpwuid_r(getuid(), &pw, buf, sizeof buf, &res) == 0 && res && res->pw_name) {
        snprintf(out, len, "%s", res->pw_name);
        return;
    }
    snprintf(out, len, "unknown");
}

void mlt__sys_program(char *out, size_t len)
{
    ssize_t n = readlink("/proc/self/exe", out, len ? len - 1 : 0);
    if (n < 0 || (size_t)n >= len) {
        if (len) {
            out[0] = '\0';
        }
        return;
    }
    out[n] = '\0';
}

/* snprintf that reports truncation: a cut path would name the wrong file. */
#define FITS(n, size) ((n) >= 0 && (size_t)(n) < (size))

/* Reads the first line of a file into out (newline dropped). */
static int read_line(const char *path, char *out, size_t len)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        return 0;
    }
    int ok = fgets(out, (int)len, f) != NULL;
    fclose(f);
    if (ok) {
        out[strcspn(out, "\r\n")] = '\0';
    }
    return ok;
}

static int is_sha(const char *s)
{
    for (int i = 0; i < 40; i++) {
        if (!isxdigit((unsigned char)s[i])) {
            return 0;
        }
    }
    return s[40] == '\0' || isspace((unsigned char)s[40]);
}

/* Resolves ref (e.g. "refs/heads/main") in common_dir: loose file first, then packed-refs. */
static int resolve_ref(const char *common_dir, const char *ref, char out[41])
{
    char path[PATH_MAX], line[512];
    int n = snprintf(path, sizeof path, "%s/%s", common_dir, ref);
    if (FITS(n, sizeof path) && read_line(path, line, sizeof line) && is_sha(line)) {
        memcpy(out, line, 40);
        out[40] = '\0';
        return 1;
    }
    n = snprintf(path, sizeof path, "%s/packed-refs", common_dir);
    FILE *f = FITS(n, sizeof path) ? fopen(path, "re") : NULL;
    if (!f) {
        return 0;
    }
    int found = 0;
    size_t rlen = strlen(ref);
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (is_sha(line) && line[40] == ' ' && strncmp(line + 41, ref, rlen) == 0 &&
            line[41 + rlen] == '\0') {
            memcpy(out, line, 40);
            out[40] = '\0';
            found = 1;
            break;
        }
    }
    fclose(f);
    return found;
}

/* Finds the git dir of the work tree holding dir: <dir>/.git, a directory or a "gitdir:" file. */
static int find_git_dir(const char *start, char *git_dir, size_t len)
{
    char dir[PATH_MAX];
    int n0 = snprintf(dir, sizeof dir, "%s", start);
    if (!FITS(n0, sizeof dir)) {
        return 0;
    }
    for (;;) {
        char cand[PATH_MAX + 8];
        int n = snprintf(cand, sizeof cand, "%s/.git", dir);
        struct stat st;
        if (FITS(n, sizeof cand) && stat(cand, &st) == 0) {
            if (S_ISDIR(st.st_mode)) {
                n = snprintf(git_dir, len, "%s", cand);
                return FITS(n, len);
            }
            char line[PATH_MAX];
            if (read_line(cand, line, sizeof line) && strncmp(line, "gitdir: ", 8) == 0) {
                if (line[8] == '/') {
                    n = snprintf(git_dir, len, "%s", line + 8);
                } else {
                    n = snprintf(git_dir, len, "%s/%s", dir, line + 8);
                }
                return FITS(n, len);
            }
        }
        char *slash = strrchr(dir, '/');
        if (!slash || slash == dir) {
            return 0;
        }
        *slash = '\0';
    }
}

int mlt__sys_git_commit(const char *path, char out[41])
{
    char dir[PATH_MAX];
    if (!path || !realpath(path, dir)) {
        return 0;
    }
    struct stat st;
    if (stat(dir, &st) == 0 && !S_ISDIR(st.st_mode)) {
        char *slash = strrchr(dir, '/');
        if (slash && slash != dir) {
            *slash = '\0';
        }
    }
    char git_dir[PATH_MAX], common[PATH_MAX], line[PATH_MAX], head[512];
    if (!find_git_dir(dir, git_dir, sizeof git_dir)) {
        return 0;
    }
    /* A linked worktree keeps its refs in the main repository's git dir. */
    memcpy(common, git_dir, sizeof common);
    char cpath[PATH_MAX + 16];
    int n = snprintf(cpath, sizeof cpath, "%s/commondir", git_dir);
    if (FITS(n, sizeof cpath) && read_line(cpath, line, sizeof line)) {
        if (line[0] == '/') {
            n = snprintf(common, sizeof common, "%s", line);
        } else {
            n = snprintf(common, sizeof common, "%s/%s", git_dir, line);
        }
        if (!FITS(n, sizeof common)) {
            return 0;
        }
    }
    n = snprintf(cpath, sizeof cpath, "%s/HEAD", git_dir);
    if (!FITS(n, sizeof cpath) || !read_line(cpath, head, sizeof head)) {
        return 0;
    }
    if (is_sha(head)) {
        memcpy(out, head, 40);
        out[40] = '\0';
        return 1;
    }
    if (strncmp(head, "ref: ", 5) != 0) {
        return 0;
    }
    return resolve_ref(git_dir, head + 5, out) || resolve_ref(common, head + 5, out);
}

int mlt__sys_cpu_times(uint64_t *busy, uint64_t *total)
{
    char line[512];
    if (!read_line("/proc/stat", line, sizeof line) || strncmp(line, "cpu ", 4) != 0) {
        return 0;
    }
    /* user nice system idle iowait irq softirq steal (guest times are within user/nice) */
    unsigned long long v[8] = {0};
    int n = sscanf(line + 4, "%llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    if (n < 4) {
        return 0;
    }
    uint64_t sum = 0;
    for (int i = 0; i < 8; i++) {
        sum += v[i];
    }
    *total = sum;
    *busy = sum - v[3] - v[4];
    return 1;
}

int mlt__sys_memory(uint64_t *used, uint64_t *total)
{
    FILE *f = fopen("/proc/meminfo", "re");
    if (!f) {
        return 0;
    }
    static const char *const names[] = {
        "MemTotal:", "MemFree:", "Buffers:", "Cached:", "SReclaimable:"};
    unsigned long long kb[5] = {0};
    int seen = 0;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        for (int i = 0; i < 5; i++) {
            size_t n = strlen(names[i]);
            if (strncmp(line, names[i], n) == 0 && sscanf(line + n, "%llu", &kb[i]) == 1) {
                seen |= 1 << i;
            }
        }
    }
    fclose(f);
    if ((seen & 3) != 3 || kb[0] == 0) {
        return 0;
    }
    unsigned long long cached = kb[2] + kb[3] + kb[4];
    unsigned long long free_kb = kb[1];
    unsigned long long used_kb = kb[0] > free_kb + cached ? kb[0] - free_kb - cached
                                 : kb[0] > free_kb        ? kb[0] - free_kb
                                                          : 0;
    *used = (uint64_t)used_kb * 1024;
    *total = (uint64_t)kb[0] * 1024;
    return 1;
}
