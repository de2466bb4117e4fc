/* check_protocol.c - the `mltrack run` line protocol: parsing one line, splitting a stream. */
#include "config.h"

#include "testutil.h"

#include "cli/protocol.h"

#include <math.h>
#include <stdbool.h>

/* Parses a copy of text; returns what mlt_proto_parse returned. */
static int parse(const char *text, mlt_proto_line *l, char *why, size_t why_len, char **keep)
{
    size_t n = strlen(text);
    char *copy = malloc(n + 1);
    ck_assert_ptr_nonnull(copy);
    memcpy(copy, text, n);
    why[0] = '\0';
    int rc = mlt_proto_parse(copy, n, l, why, why_len);
    *keep = copy; /* the pairs point into it */
    return rc;
}

START_TEST(metric_lines_parse_pairs_and_step)
{
    mlt_proto_line l = {0};
    char why[256], *buf;
    ck_assert_int_eq(parse("mltrack:metric loss=0.5 acc=-1e-3\tstep=42\r", &l, why, sizeof why,
                           &buf),
                     1);
    ck_assert_int_eq(l.kind, MLT_PROTO_METRIC);
    ck_assert_uint_eq(l.n_pairs, 2);
    ck_assert_str_eq(l.pairs[0].key, "loss");
    ck_assert_double_eq(l.pairs[0].number, 0.5);
    ck_assert_str_eq(l.pairs[1].key, "acc");
    ck_assert_double_eq(l.pairs[1].number, -1e-3);
    ck_assert(l.has_step);
    ck_assert_int_eq(l.step, 42);
    free(buf);
    ck_assert_int_eq(parse("mltrack:metric x=nan y=-inf", &l, why, sizeof why, &buf), 1);
    ck_assert(isnan(l.pairs[0].number) && isinf(l.pairs[1].number));
    ck_assert(!l.has_step);
    free(buf);
    mlt_proto_line_free(&l);
}
END_TEST

START_TEST(params_and_tags_take_quoted_values)
{
    mlt_proto_line l = {0};
    char why[256], *buf;
    ck_assert_int_eq(parse("mltrack:tag a=\"x y\" b=\"q\\\"\\\\\\n\\t\" c= step=s", &l, why,
                           sizeof why, &buf),
                     1);
    ck_assert_int_eq(l.kind, MLT_PROTO_TAG);
    ck_assert_uint_eq(l.n_pairs, 4);
    ck_assert_str_eq(l.pairs[0].value, "x y");
    ck_assert_str_eq(l.pairs[1].value, "q\"\\\n\t");
    ck_assert_str_eq(l.pairs[2].value, "");
    ck_assert_str_eq(l.pairs[3].key, "step"); /* reserved in metric lines only */
    ck_assert_str_eq(l.pairs[3].value, "s");
    free(buf);
    ck_assert_int_eq(parse("mltrack:param k==v", &l, why, sizeof why, &buf), 1);
    ck_assert_str_eq(l.pairs[0].value, "=v");
    free(buf);
    mlt_proto_line_free(&l);
}
END_TEST

START_TEST(malformed_lines_say_why)
{
    static const char *const bad[] = {
        "mltrack:metric",        "mltrack:metric step=1",      "mltrack:metric a",
        "mltrack:metric a=",     "mltrack:metric a=1x",        "mltrack:metric a=0x10",
        "mltrack:metric a=1e999", "mltrack:metric a=1 step=1 step=2", "mltrack:metric a=1 step=1.5",
        "mltrack:metric =1",     "mltrack:tag a=\"open",       "mltrack:tag a=\"x\"y",
        "mltrack:tag a=\"\\q\"", "mltrack:tag \"a\"=1",       "mltrack:metrics a=1",
        "mltrack:",              "mltrack:param",
    };
    mlt_proto_line l = {0};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char why[256], *buf;
        int rc = parse(bad[i], &l, why, sizeof why, &buf);
        ck_assert_msg(rc == -1, "'%s' gave %d", bad[i], rc);
        ck_assert_msg(why[0] != '\0', "'%s': no reason", bad[i]);
        free(buf);
    }
    mlt_proto_line_free(&l);
}
END_TEST

START_TEST(other_lines_are_not_protocol_lines)
{
    static const char *const other[] = {"", "hello", " mltrack:metric a=1", "mltrack",
                                        "MLTRACK:metric a=1", "xmltrack:metric a=1"};
    mlt_proto_line l = {0};
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) {
        char why[256], *buf;
        ck_assert_int_eq(parse(other[i], &l, why, sizeof why, &buf), 0);
        free(buf);
    }
    mlt_proto_line_free(&l);
}
END_TEST

/* ---- the splitter ---- */

typedef struct got {
    char lines[16][128];
    uint64_t line_no[16];
    bool too_long[16];
    int n;
} got;

static void collect(char *line, size_t len, bool too_long, uint64_t line_no, void *ud)
{
    got *g = ud;
    ck_assert_int_lt(g->n, 16);
    snprintf(g->lines[g->n], sizeof g->lines[0], "%.*s", (int)(len < 100 ? len : 100), line);
    g->line_no[g->n] = line_no;
    g->too_long[g->n++] = too_long;
}

START_TEST(splitter_keeps_candidate_lines_whatever_the_chunks)
{
    const char *stream = "a\nmltrack:metric a=1\nmlt\nmltrack:tag t=v\nplain mltrack:x\n"
                         "mltrack:param p=1";
    size_t n = strlen(stream);
    /* every chunk size gives the same lines */
    for (size_t chunk = 1; chunk <= n; chunk++) {
        mlt_proto_splitter s = {0};
        got g = {0};
        for (size_t off = 0; off < n; off += chunk) {
            mlt_proto_feed(&s, stream + off, off + chunk <= n ? chunk : n - off, collect, &g);
        }
        mlt_proto_finish(&s, collect, &g);
        ck_assert_int_eq(g.n, 3);
        ck_assert_str_eq(g.lines[0], "mltrack:metric a=1");
        ck_assert_uint_eq(g.line_no[0], 2);
        ck_assert_str_eq(g.lines[1], "mltrack:tag t=v");
        ck_assert_uint_eq(g.line_no[1], 4);
        ck_assert_str_eq(g.lines[2], "mltrack:param p=1");
        ck_assert_uint_eq(g.line_no[2], 6);
        mlt_proto_splitter_free(&s);
    }
}
END_TEST

START_TEST(splitter_cuts_overlong_lines_and_skips_long_other_lines)
{
    size_t big = MLT_PROTO_MAX_LINE + 100;
    char *data = malloc(big);
    ck_assert_ptr_nonnull(data);
    memset(data, 'x', big);
    memcpy(data, "mltrack:tag a=", 14);
    mlt_proto_splitter s = {0};
    got g = {0};
    mlt_proto_feed(&s, data, big, collect, &g);
    mlt_proto_feed(&s, "\n", 1, collect, &g);
    memset(data, 'y', big); /* a long ordinary line is never buffered */
    mlt_proto_feed(&s, data, big, collect, &g);
    ck_assert_uint_eq(s.len, 0);
    mlt_proto_feed(&s, "\nmltrack:tag b=1\n", 17, collect, &g);
    mlt_proto_finish(&s, collect, &g);
    ck_assert_int_eq(g.n, 2);
    ck_assert(g.too_long[0]);
    ck_assert_uint_eq(g.line_no[0], 1);
    ck_assert(!g.too_long[1]);
    ck_assert_str_eq(g.lines[1], "mltrack:tag b=1");
    ck_assert_uint_eq(g.line_no[1], 3);
    mlt_proto_splitter_free(&s);
    free(data);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("protocol");
    MLT_ADD_TEST(s, metric_lines_parse_pairs_and_step);
    MLT_ADD_TEST(s, params_and_tags_take_quoted_values);
    MLT_ADD_TEST(s, malformed_lines_say_why);
    MLT_ADD_TEST(s, other_lines_are_not_protocol_lines);
    MLT_ADD_TEST(s, splitter_keeps_candidate_lines_whatever_the_chunks);
    MLT_ADD_TEST(s, splitter_cuts_overlong_lines_and_skips_long_other_lines);
    return mlt_test_run_suite(s);
}
