/*
 * cli.h - what the commands of the mltrack tool share: the terminal (stderr messages with
 * secrets masked), the parsed command line, loading options, and the commands themselves.
 */
#ifndef MLT_CLI_H
#define MLT_CLI_H

#include "common.h"

#include <limits.h>
#include <mltrack.h>
#include <pthread.h>
#include <stdbool.h>

#define EXIT_LEFT 1  /* something is left undelivered, or the queue cannot be read */
#define EXIT_USAGE 2 /* bad command line or configuration */
#define EXIT_WAITING                                                                               \
    3 /* sync: all was delivered but records waiting for runs nobody here makes                    \
       */

/* The terminal side of the tool: who may write to stderr and whether a bar is on screen. */
typedef struct cli {
    bool verbose;
    bool bar_enabled; /* stderr is a terminal */
    bool bar_shown;   /* a bar line is on screen, not yet ended by a newline */
    int64_t last_draw_ns;
    pthread_mutex_t lock;   /* serializes every write to stderr (the logger may run anywhere) */
    const char *secrets[2]; /* token and password, borrowed from the options while they live */
} cli;

/* What the command line asked for. */
typedef struct args {
    const char *command;
    const char *queue;
    const char *tracking_uri;
    const char *timeout;
    /* run */
    const char *experiment;
    const char *run_name;
    const char **params; /* "K=V", borrowed from argv */
    size_t n_params;
    const char **tags;
    size_t n_tags;
    bool system_metrics;
    const char *system_metrics_interval;
    const char **artifacts; /* --artifact GLOB, borrowed from argv */
    size_t n_artifacts;
    bool no_capture;
    const char *capture_every;
    const char *resume_key; /* --resume-key */
    char **cmd;             /* the command to run: NULL-terminated, inside argv */
    /* log-metric, log-param, set-tag */
    const char *key;
    const char *value;
    const char *step;
    /* log-artifact */
    const char **paths; /* borrowed from argv */
    size_t n_paths;
    const char *artifact_path;
    /* drop */
    const char **journals; /* borrowed from argv */
    size_t n_journals;
    bool dead_letters;
    /* sync */
    bool follow;         /* --follow */
    const char *poll_ms; /* --poll-ms */
} args;

/* One line on stderr, prefixed "mltrack: ", never drawn over the bar; secrets masked. */
void say(cli *c, const char *fmt, ...) MLT__PRINTF(2, 3);
/* The same, only with -v. */
void verbose(cli *c, const char *fmt, ...) MLT__PRINTF(2, 3);

/* Options from the environment, the logger, then the flags on top (--queue, --tracking-uri,
 * and for run --experiment and the system metrics flags). EXIT_SUCCESS or EXIT_USAGE (said). */
int load_options(cli *c, const args *a, mlt_options **out);
/* Frees the options of load_options() and forgets the secrets borrowed from them. */
void unload_options(cli *c, mlt_options *opts);
/* Parses --timeout SECONDS into milliseconds (def_ms when not given). EXIT_SUCCESS or
 * EXIT_USAGE (said). */
int parse_timeout_ms(cli *c, const char *text, int def_ms, int *out);

/* The detail of a failed call that takes no errbuf (mlt_last_error), else the code's text. */
const char *detail_of(mlt_err e);
/* The queue directory of opts into queue (len bytes); EXIT_SUCCESS, or EXIT_USAGE (said). */
int queue_path(cli *c, const mlt_options *opts, char *queue, size_t len);

/* Appends msg to out with secrets masked (the user:password@ of a URL, the token and password). */
void scrub_append(const cli *c, mlt__buf *out, const char *msg);
/* The sync progress bar on stderr (a terminal only); final ends its line. */
struct mlt__sync_progress;
void bar_draw(cli *c, const struct mlt__sync_progress *p, bool final);
/* Records of a journal not acknowledged yet. */
struct mlt__journal;
uint64_t pending_records(struct mlt__journal *j);
/* Frees a list of n strings and the list. */
void free_list(char **list, size_t n);
/* Parses SECONDS (0 to a year) of --timeout. EXIT_SUCCESS or EXIT_USAGE (said). */
int parse_seconds(cli *c, const char *text, double *out);

/* ---- run: the child's console (console.c) ---- */
typedef struct console {
    cli *c;
    mlt_run *run;
    char dir[PATH_MAX]; /* private temporary directory of the pieces */
    int fd;             /* the piece being written, -1 when none */
    unsigned piece;     /* its number (from 1) */
    uint64_t bytes;     /* in it */
    int64_t opened_ns;  /* monotonic */
    int64_t every_ns;   /* a piece closes this long after it opened */
    unsigned logged;    /* pieces logged */
    bool broken;        /* no more is kept (said once) */
} console;
void console_init(console *con, cli *c, mlt_run *run, double every_s);
/* Keeps n bytes of the console. */
void console_write(console *con, const char *buf, size_t n);
/* Closes and logs the piece when it is old enough (call now and then). */
void console_tick(console *con);
/* Logs the last piece and removes the temporary directory. */
void console_finish(console *con);
/* Logs what each --artifact glob matches (files by name, directories with their name); says
 * what fails. Returns how many failed. */
int log_artifact_globs(cli *c, mlt_run *run, const char *const *globs, size_t n);

int cmd_run(cli *c, const args *a);
int cmd_sync(cli *c, const args *a);
int cmd_status(cli *c, const args *a);
int cmd_requeue(cli *c, const args *a);
int cmd_log(cli *c, const args *a); /* log-metric, log-param, set-tag, log-artifact */
int cmd_drop(cli *c, const args *a);

#endif
