/*
 * sysinfo.h - facts about the process for the system tags MLflow shows: the user, the program's
 * path and the git commit of the work tree it lives in.
 */
#ifndef MLT_SYSINFO_H
#define MLT_SYSINFO_H

#include <stddef.h>
#include <stdint.h>

/* The login name ($USER, $LOGNAME, then the password database); "unknown" if none. */
void mlt__sys_user(char *out, size_t len);

/* The running program's absolute path (/proc/self/exe); "" if unknown. */
void mlt__sys_program(char *out, size_t len);

/*
 * The commit checked out in the git work tree that contains path (a file or a directory),
 * read from .git without running git (worktrees, symbolic and packed refs handled).
 * Returns 1 with the 40-hex commit in out[41], 0 when path is in no work tree or HEAD has no
 * commit.
 */
int mlt__sys_git_commit(const char *path, char out[41]);

/* The machine's cumulative CPU time from /proc/stat, in clock ticks: *busy (all but idle and
 * iowait) and *total. Returns 1, or 0 when it cannot be read. */
int mlt__sys_cpu_times(uint64_t *busy, uint64_t *total);

/* The machine's memory from /proc/meminfo in bytes: *used as psutil counts it (MemTotal -
 * MemFree - Buffers - Cached - SReclaimable; MemTotal - MemFree if that is negative) and
 * *total. Returns 1, or 0 when it cannot be read. */
int mlt__sys_memory(uint64_t *used, uint64_t *total);

#endif
