/*
 * reader.h - what `mltrack run` does with its child's stdout (reader.c): every byte passed
 * through to ours (nested in another mltrack run, the protocol lines it logged marked so that the
 * outer one does not log them again), and the protocol lines logged into the run.
 */
#ifndef MLT_CLI_READER_H
#define MLT_CLI_READER_H

#include "cli.h"
#include "protocol.h"

#define MAX_REPORTS 10 /* malformed lines reported one by one; the rest counted */

/* The steps given to the metrics of lines without step=: 0, 1, 2... per key. */
typedef struct auto_step {
    char *key;
    int64_t next;
} auto_step;

typedef struct reader {
    cli *c;
    mlt_run *run;
    mlt_proto_splitter split;
    mlt_proto_line line;
    auto_step *steps;
    size_t n_steps, cap_steps;
    uint64_t malformed;
    bool out_broken; /* our stdout is gone: no more passing through */
    /* nested (an outer `mltrack run` reads our stdout): the protocol lines read here pass
     * through indented, so that the outer one does not log them again */
    bool mark;
    bool bol;    /* the next byte starts a line */
    size_t held; /* bytes of a line start held back: the prefix, matched so far */
    char hold[sizeof MLT_PROTO_PREFIX];
    mlt__buf out; /* what is passed through, marks included */
} reader;

/* What marks a protocol line already logged, for an outer `mltrack run`: not in column 1. */
#define LOGGED_MARK "  "
/* Set in the child's environment: an `mltrack run` reads its stdout. */
#define READER_ENV "MLTRACK_PROTOCOL_READER"

/* The splitter's callback (ud: the reader): logs one protocol line, reports a malformed one. */
void on_line(char *text, size_t len, bool too_long, uint64_t line_no, void *ud);
/* Copies all of buf to fd. false when fd is gone (EPIPE and the like). */
bool write_all(int fd, const char *buf, size_t n);
/* Copies the child's bytes to our stdout (marking logged lines when nested). false when our
 * stdout is gone. */
bool pass_through(reader *r, const char *buf, size_t n);
/* The end of the child's stdout: a line start held back goes out as it is. */
void pass_rest(reader *r);
void free_reader(reader *r);

#endif
