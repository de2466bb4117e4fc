/*
 * protocol.h - the line protocol `mltrack run` reads from a child's stdout:
 *
 *   mltrack:metric KEY=VALUE [KEY=VALUE]... [step=N]
 *   mltrack:param KEY=VALUE [KEY=VALUE]...
 *   mltrack:tag KEY=VALUE [KEY=VALUE]...
 *
 * A line is a protocol line when it starts with "mltrack:" in its first column; pairs are
 * separated by spaces or tabs; a value may be double-quoted, with \" \\ \n \t escapes inside;
 * a trailing \r is ignored. In metric lines "step" is reserved: an integer, at most once.
 * Parsing is all or nothing: a malformed line yields no pair at all.
 */
#ifndef MLT_CLI_PROTOCOL_H
#define MLT_CLI_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MLT_PROTO_PREFIX "mltrack:"
#define MLT_PROTO_MAX_LINE (1u << 20) /* longer protocol lines are malformed */

typedef enum mlt_proto_kind {
    MLT_PROTO_METRIC,
    MLT_PROTO_PARAM,
    MLT_PROTO_TAG,
} mlt_proto_kind;

typedef struct mlt_proto_pair {
    const char *key;   /* NUL-terminated, inside the parsed line */
    const char *value; /* unquoted, NUL-terminated, inside the parsed line */
    double number;     /* metric lines: the value */
} mlt_proto_pair;

/* A parsed line. Reused across lines: its pair array grows as needed. */
typedef struct mlt_proto_line {
    mlt_proto_kind kind;
    mlt_proto_pair *pairs;
    size_t n_pairs, cap_pairs;
    bool has_step;
    int64_t step;
} mlt_proto_line;

/*
 * Parses line[0..len) in place (it is modified: unquoted and cut into NUL-terminated strings; it
 * needs room for one more byte, line[len]). Returns 1 for a well-formed protocol line (out
 * filled), 0 for a line that is not a protocol line, -1 for a malformed protocol line, with the
 * reason in why. Out of memory is malformed too.
 */
int mlt_proto_parse(char *line, size_t len, mlt_proto_line *out, char *why, size_t why_len);

void mlt_proto_line_free(mlt_proto_line *l);

/* Cuts a byte stream into lines, keeping only the lines that may be protocol lines (others are
 * skipped as they stream by, whatever their length). */
typedef struct mlt_proto_splitter {
    char *buf;
    size_t len, cap;
    bool skipping;  /* the current line is not a protocol line */
    bool too_long;  /* the current protocol line passed MLT_PROTO_MAX_LINE */
    uint64_t line_no; /* 1-based number of the current line */
} mlt_proto_splitter;

/* Called for each complete candidate line: line[0..len) has room for a NUL at line[len];
 * too_long says the line was cut at MLT_PROTO_MAX_LINE (it is malformed). */
typedef void (*mlt_proto_line_fn)(char *line, size_t len, bool too_long, uint64_t line_no,
                                  void *ud);

/* Feeds bytes; fn is called for each candidate line completed by them. When memory runs out,
 * the current line is reported as too long. */
void mlt_proto_feed(mlt_proto_splitter *s, const char *data, size_t n, mlt_proto_line_fn fn,
                    void *ud);

/* The end of the stream: a last line without a newline is completed. */
void mlt_proto_finish(mlt_proto_splitter *s, mlt_proto_line_fn fn, void *ud);

void mlt_proto_splitter_free(mlt_proto_splitter *s);

#endif
