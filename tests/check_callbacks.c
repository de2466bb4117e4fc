/*
 * check_callbacks.c - unit tests of the built-in print and JSON lines callbacks
 * (src/cb_print.c, src/cb_jsonl.c): the exact text they write for each event, and their files.
 */
#include "testutil.h"

#include "mltrack.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers -------------------------------------------------------------------------------- */

#define DIR_LEN 512 /* temporary directory names; paths in them get PATH_MAX */

/* The whole file, NUL-terminated (caller frees); "" for an empty file. */
static char *read_file(const char *path)
{
    char *text = mlt_test_read_file(path, NULL);
    ck_assert_msg(text != NULL, "cannot open %s: %s", path, strerror(errno));
    return text;
}

/* Lines of a text: pointers into a private copy, without their '\n'. */
typedef struct lines {
    char *copy;
    char **line;
    size_t n;
} lines;

static lines split_lines(const char *text)
{
    lines l = {0};
    l.copy = strdup(text);
    ck_assert_ptr_nonnull(l.copy);
    size_t cap = 16;
    l.line = malloc(cap * sizeof *l.line);
    ck_assert_ptr_nonnull(l.line);
    char *p = l.copy;
    while (*p) {
        char *nl = strchr(p, '\n');
        ck_assert_msg(nl != NULL, "last line has no newline: '%s'", p);
        *nl = '\0';
        if (l.n == cap) {
            cap *= 2;
            l.line = realloc(l.line, cap * sizeof *l.line);
            ck_assert_ptr_nonnull(l.line);
        }
        l.line[l.n++] = p;
        p = nl + 1;
    }
    return l;
}

static void free_lines(lines *l)
{
    free(l->copy);
    free(l->line);
}

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* ---- print callback ------------------------------------------------------------------------- */

typedef struct memout {
    char *buf;
    size_t len;
    FILE *f;
} memout;

static void mem_open(memout *m)
{
    m->buf = NULL;
    m->len = 0;
    m->f = open_memstream(&m->buf, &m->len);
    ck_assert_ptr_nonnull(m->f);
}

/* Asserts line is "<prefix><seconds with 3 decimals> s". */
static void assert_end_line(const char *line, const char *prefix)
{
    ck_assert_msg(starts_with(line, prefix), "'%s' does not start with '%s'", line, prefix);
    const char *p = line + strlen(prefix);
    size_t digits = strspn(p, "0123456789");
    ck_assert_msg(digits > 0 && p[digits] == '.', "bad duration in '%s'", line);
    p += digits + 1;
    ck_assert_msg(strspn(p, "0123456789") == 3 && strcmp(p + 3, " s") == 0, "bad duration in '%s'",
                  line);
    ck_assert(strtod(line + strlen(prefix), NULL) >= 0.0);
}

START_TEST(print_writes_one_exact_line_per_event)
{
    memout m;
    mem_open(&m);
    mlt_tracker *t;
    ck_assert_int_eq(mlt_tracker_new(&t, NULL, NULL, 0), MLT_OK);
    ck_assert_int_eq(mlt_tracker_add_print(t, m.f), MLT_OK);

    mlt_run *run;
    mlt_run *child;
    mlt_run *unnamed;
    ck_assert_int_eq(mlt_run_start(&run, t, "train"), MLT_OK);
    char key[40];
    snprintf(key, sizeof key, "%s", mlt_run_key(run));
    ck_assert_int_eq(mlt_log_param(run, "lr", "0.01"), MLT_OK);
    ck_assert_int_eq(mlt_log_metric(run, "loss", 0.1 + 0.2, 7), MLT_OK);
    ck_assert_int_eq(mlt_log_metric(run, "tiny", 1e-7, INT64_MAX), MLT_OK);
    ck_assert_int_eq(mlt_log_metric_at(run, "neg", -2.5, -3, 0), MLT_OK);
    ck_assert_int_eq(mlt_log_metric(run, "inf", INFINITY, 0), MLT_OK);
    ck_assert_int_eq(mlt_set_tag(run, "phase", "warm up"), MLT_OK);
    ck_assert_int_eq(mlt_run_start_child(&child, run, "epoch"), MLT_OK);
    char child_key[40];
    snprintf(child_key, sizeof child_key, "%s", mlt_run_key(child));
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK); /* child ends KILLED */
    ck_assert_int_eq(mlt_run_start(&unnamed, t, NULL), MLT_OK);
    char unnamed_key[40];
    snprintf(unnamed_key, sizeof unnamed_key, "%s", mlt_run_key(unnamed));
    mlt_run_fail(unnamed);
    ck_assert_int_eq(mlt_run_end(unnamed, MLT_RUN_FINISHED), MLT_OK);
    ck_assert_int_eq(mlt_tracker_close(t, 0), MLT_OK);
    ck_assert_int_eq(fclose(m.f), 0);

    char want[16][256];
    int n = 0;
    snprintf(want[n++], sizeof want[0], "[mltrack] run 'train' started (key %s)", key);
    snprintf(want[n++], sizeof want[0], "[mltrack] run 'train' param lr=0.01");
    snprintf(want[n++], sizeof want[0],
             "[mltrack] run 'train' metric loss=0.30000000000000004 step=7");
    snprintf(want[n++], sizeof want[0],
             "[mltrack] run 'train' metric tiny=1e-07 step=9223372036854775807");
    snprintf(want[n++], sizeof want[0], "[mltrack] run 'train' metric neg=-2.5 step=-3");
    snprintf(want[n++], sizeof want[0], "[mltrack] run 'train' metric inf=inf step=0");
    snprintf(want[n++], sizeof want[0], "[mltrack] run 'train' tag phase=warm up");
    snprintf(want[n++], sizeof want[0], "[mltrack] run 'epoch' started (key %s, child of %s)",
             child_key, key);
    lines l = split_lines(m.buf);
    ck_assert_uint_eq(l.n, (size_t)n + 4);
    for (int i = 0; i < n; i++) {
        ck_assert_str_eq(l.line[i], want[i]);
    }
    assert_end_line(l.line[n], "[mltrack] run 'epoch' KILLED in ");
    assert_end_line(l.line[n + 1], "[mltrack] run 'train' FINISHED in ");
    char unnamed_start[128];
    snprintf(unnamed_start, sizeof unnamed_start, "[mltrack] run '%s' started (key %s)",
             unnamed_key, unnamed_key);
    ck_assert_str_eq(l.line[n + 2], unnamed_start);
    char unnamed_end[128];
    snprintf(unnamed_end, sizeof unnamed_end, "[mltrack] run '%s' FAILED in ", unnamed_key);
    assert_end_line(l.line[n + 3], unnamed_end);
    free_lines(&l);
    free(m.buf);
}
END_TEST

START_TEST(print_requires_file_and_tracker)
{
    mlt_tracker *t;
    ck_assert_int_eq(mlt_tracker_new(&t, NULL, NULL, 0), MLT_OK);
    ck_assert_int_eq(mlt_tracker_add_print(t, NULL), MLT_ERR_INVALID_ARG);
    ck_assert_str_ne(mlt_last_error(), "");
    ck_assert_int_eq(mlt_tracker_add_print(NULL, stderr), MLT_ERR_INVALID_ARG);
    ck_assert_int_eq(mlt_tracker_close(t, 0), MLT_OK);
}
END_TEST

START_TEST(print_after_first_run_is_state_error)
{
    memout m;
    mem_open(&m);
    mlt_tracker *t;
    ck_assert_int_eq(mlt_tracker_new(&t, NULL, NULL, 0), MLT_OK);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, t, "r"), MLT_OK);
    ck_assert_int_eq(mlt_tracker_add_print(t, m.f), MLT_ERR_STATE);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    ck_assert_int_eq(mlt_tracker_close(t, 0), MLT_OK);
    ck_assert_int_eq(fclose(m.f), 0);
    ck_assert_uint_eq(m.len, 0);
    free(m.buf);
}
END_TEST

START_TEST(print_flushes_at_run_end)
{
    char dir[DIR_LEN];
    mlt_test_tmpdir(dir, sizeof dir, "callbacks");
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/print.log", dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(setvbuf(f, NULL, _IOFBF, 1 << 16), 0);
    mlt_tracker *t;
    ck_assert_int_eq(mlt_tracker_new(&t, NULL, NULL, 0), MLT_OK);
    ck_assert_int_eq(mlt_tracker_add_print(t, f), MLT_OK);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, t, "flushed"), MLT_OK);
    ck_assert_int_eq(mlt_log_metric(run, "m", 1.0, 0), MLT_OK);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);

    char *text = read_file(path); /* the tracker and the FILE are still open */
    lines l = split_lines(text);
    ck_assert_uint_eq(l.n, 3);
    ck_assert_str_eq(l.line[1], "[mltrack] run 'flushed' metric m=1 step=0");
    assert_end_line(l.line[2], "[mltrack] run 'flushed' FINISHED in ");
    free_lines(&l);
    free(text);

    /* mlt_tracker_flush() flushes the FILE too. */
    ck_assert_int_eq(mlt_run_start(&run, t, "second"), MLT_OK);
    ck_assert_int_eq(mlt_tracker_flush(t, 0), MLT_OK);
    text = read_file(path);
    ck_assert_ptr_nonnull(strstr(text, "run 'second' started"));
    free(text);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    ck_assert_int_eq(mlt_tracker_close(t, 0), MLT_OK);
    ck_assert_int_eq(fclose(f), 0);
    mlt_test_remove_tree(dir);
}
END_TEST

START_TEST(print_write_failure_is_io_error)
{
    char dir[DIR_LEN];
    mlt_test_tmpdir(dir, sizeof dir, "callbacks");
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/readonly.log", dir);
    mlt_test_write_file(path, "wb", "", 0);
    FILE *f = fopen(path, "r"); /* cannot be written to */
    ck_assert_ptr_nonnull(f);
    mlt_tracker *t;
    ck_assert_int_eq(mlt_tracker_new(&t, NULL, NULL, 0), MLT_OK);
    ck_assert_int_eq(mlt_tracker_add_print(t, f), MLT_OK);
    mlt_run *run = NULL;
    ck_assert_int_eq(mlt_run_start(&run, t, "r"), MLT_ERR_IO);
    ck_assert_ptr_null(run);
    ck_assert_str_ne(mlt_last_error(), "");
    ck_assert_uint_eq(mlt_tracker_error_count(t), 1);
    ck_assert_int_eq(mlt_tracker_close(t, 0), MLT_OK);
    fclose(f);
    mlt_test_remove_tree(dir);
}
END_TEST

START_TEST(print_failed_flush_at_run_end_is_io_error)
{
    FILE *f = fopen("/dev/full", "w");
    if (!f) {
        return; /* no /dev/full here */
    }
    mlt_tracker *t;
    ck_assert_int_eq(mlt_tracker_new(&t, NULL, NULL, 0), MLT_OK);
    ck_assert_int_eq(mlt_tracker_add_print(t, f), MLT_OK);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, t, "r"), MLT_OK); /* buffered */
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_ERR_IO);
    ck_assert_str_ne(mlt_last_error(), "");
    mlt_tracker_close(t, 0);
    fclose(f);
}
END_TEST

START_TEST(print_keeps_multiline_value_on_one_line)
{
    /* "one human-readable line per event": a value with a newline must not make two lines. */
    memout m;
    mem_open(&m);
    mlt_tracker *t;
    ck_assert_int_eq(mlt_tracker_new(&t, NULL, NULL, 0), MLT_OK);
    ck_assert_int_eq(mlt_tracker_add_print(t, m.f), MLT_OK);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, t, "r"), MLT_OK);
    ck_assert_int_eq(fflush(m.f), 0);
    size_t before = m.len;
    ck_assert_int_eq(mlt_set_tag(run, "cmd", "first line\nsecond line"), MLT_OK);
    ck_assert_int_eq(fflush(m.f), 0);
    char *line = strndup(m.buf + before, m.len - before);
    ck_assert_ptr_nonnull(line);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    ck_assert_int_eq(mlt_tracker_close(t, 0), MLT_OK);
    ck_assert_int_eq(fclose(m.f), 0);
    free(m.buf);
    size_t newlines = 0;
    for (const char *p = line; *p; p++) {
        newlines += *p == '\n';
    }
    bool whole = strstr(line, "first line") && strstr(line, "second line");
    char shown[256];
    snprintf(shown, sizeof shown, "%s", line);
    free(line);
    ck_assert_msg(newlines == 1 && whole, "tag event printed as '%s'", shown);
}
END_TEST

/* ---- JSON lines callback -------------------------------------------------------------------- */

/* A temporary directory with the JSON lines file path in it. */
typedef struct jfix {
    char dir[DIR_LEN];
    char path[PATH_MAX];
    mlt_tracker *t;
} jfix;

static void jfix_init(jfix *j)
{
    mlt_test_tmpdir(j->dir, sizeof j->dir, "callbacks");
    snprintf(j->path, sizeof j->path, "%s/runs.jsonl", j->dir);
    ck_assert_int_eq(mlt_tracker_new(&j->t, NULL, NULL, 0), MLT_OK);
}

static void jfix_add(jfix *j)
{
    char err[512] = "";
    ck_assert_msg(mlt_tracker_add_jsonl(j->t, j->path, err, sizeof err) == MLT_OK, "%s", err);
}

static void jfix_close(jfix *j)
{
    if (j->t) {
        ck_assert_int_eq(mlt_tracker_close(j->t, 0), MLT_OK);
        j->t = NULL;
    }
}

static void jfix_free(jfix *j)
{
    jfix_close(j);
    mlt_test_remove_tree(j->dir);
}

/* Each line of the file, parsed. */
typedef struct jdoc {
    char *text;
    lines raw;
    cJSON **obj;
    size_t n;
} jdoc;

static jdoc read_jsonl(const char *path)
{
    jdoc d;
    d.text = read_file(path);
    d.raw = split_lines(d.text);
    d.n = d.raw.n;
    d.obj = calloc(d.n ? d.n : 1, sizeof *d.obj);
    ck_assert_ptr_nonnull(d.obj);
    for (size_t i = 0; i < d.n; i++) {
        const char *end = NULL;
        d.obj[i] = cJSON_ParseWithOpts(d.raw.line[i], &end, 1);
        ck_assert_msg(d.obj[i] != NULL && cJSON_IsObject(d.obj[i]), "line %zu is no object: %s",
                      i + 1, d.raw.line[i]);
    }
    return d;
}

static void free_jsonl(jdoc *d)
{
    for (size_t i = 0; i < d->n; i++) {
        cJSON_Delete(d->obj[i]);
    }
    free(d->obj);
    free_lines(&d->raw);
    free(d->text);
}

static bool jhas(const cJSON *o, const char *name)
{
    return cJSON_GetObjectItemCaseSensitive(o, name) != NULL;
}

/* Index of the first line with event ev (and run_key, if not NULL) from `from`, or -1. */
static long jfind(const jdoc *d, const char *ev, const char *run_key, size_t from)
{
    for (size_t i = from; i < d->n; i++) {
        if (strcmp(mlt_test_jstr(d->obj[i], "event"), ev) == 0 &&
            (!run_key || strcmp(mlt_test_jstr(d->obj[i], "run_key"), run_key) == 0)) {
            return (long)i;
        }
    }
    return -1;
}

START_TEST(jsonl_writes_one_object_per_event)
{
    jfix j;
    jfix_init(&j);
    jfix_add(&j);
    mlt_run *run;
    mlt_run *child;
    int64_t before = mlt_test_wall_ms();
    ck_assert_int_eq(mlt_run_start(&run, j.t, "train"), MLT_OK);
    char key[40];
    snprintf(key, sizeof key, "%s", mlt_run_key(run));
    ck_assert_int_eq(mlt_log_param(run, "lr", "0.01"), MLT_OK);
    ck_assert_int_eq(mlt_log_metric_at(run, "loss", 0.5, 1, 1700000000000), MLT_OK);
    ck_assert_int_eq(mlt_set_tag(run, "phase", "train"), MLT_OK);
    ck_assert_int_eq(mlt_run_start_child(&child, run, "epoch"), MLT_OK);
    char child_key[40];
    snprintf(child_key, sizeof child_key, "%s", mlt_run_key(child));
    ck_assert_int_eq(mlt_log_metric(child, "acc", 0.75, 2), MLT_OK);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    int64_t after = mlt_test_wall_ms();
    jfix_close(&j);

    jdoc d = read_jsonl(j.path);
    ck_assert_uint_eq(d.n, 8);
    static const char *events[] = {"run_start", "param",  "metric",  "tag",
                                   "run_start", "metric", "run_end", "run_end"};
    for (size_t i = 0; i < d.n; i++) {
        ck_assert_str_eq(mlt_test_jstr(d.obj[i], "event"), events[i]);
    }
    const cJSON *o = d.obj[0];
    ck_assert_str_eq(mlt_test_jstr(o, "run_key"), key);
    ck_assert_str_eq(mlt_test_jstr(o, "run_name"), "train");
    ck_assert(!jhas(o, "parent_run_key"));
    ck_assert(mlt_test_jnum(o, "start_time") >= (double)before &&
              mlt_test_jnum(o, "start_time") <= (double)after);

    o = d.obj[1];
    ck_assert_str_eq(mlt_test_jstr(o, "run_key"), key);
    ck_assert_str_eq(mlt_test_jstr(o, "run_name"), "train");
    ck_assert_str_eq(mlt_test_jstr(o, "key"), "lr");
    ck_assert_str_eq(mlt_test_jstr(o, "value"), "0.01");

    o = d.obj[2];
    ck_assert_str_eq(mlt_test_jstr(o, "key"), "loss");
    ck_assert(mlt_test_jnum(o, "value") == 0.5);
    ck_assert(mlt_test_jnum(o, "step") == 1);
    ck_assert(mlt_test_jnum(o, "timestamp") == 1700000000000.0);
    ck_assert_ptr_nonnull(strstr(d.raw.line[2], "\"timestamp\":1700000000000"));

    o = d.obj[3];
    ck_assert_str_eq(mlt_test_jstr(o, "key"), "phase");
    ck_assert_str_eq(mlt_test_jstr(o, "value"), "train");

    o = d.obj[4];
    ck_assert_str_eq(mlt_test_jstr(o, "run_key"), child_key);
    ck_assert_str_eq(mlt_test_jstr(o, "run_name"), "epoch");
    ck_assert_str_eq(mlt_test_jstr(o, "parent_run_key"), key);

    o = d.obj[5];
    ck_assert_str_eq(mlt_test_jstr(o, "run_key"), child_key);
    ck_assert(mlt_test_jnum(o, "timestamp") >= (double)before &&
              mlt_test_jnum(o, "timestamp") <= (double)after);

    /* The child ends first, KILLED with its parent. */
    o = d.obj[6];
    ck_assert_str_eq(mlt_test_jstr(o, "run_key"), child_key);
    ck_assert_str_eq(mlt_test_jstr(o, "status"), "KILLED");
    o = d.obj[7];
    ck_assert_str_eq(mlt_test_jstr(o, "run_key"), key);
    ck_assert_str_eq(mlt_test_jstr(o, "run_name"), "train");
    ck_assert_str_eq(mlt_test_jstr(o, "status"), "FINISHED");
    ck_assert(mlt_test_jnum(o, "start_time") == mlt_test_jnum(d.obj[0], "start_time"));
    ck_assert(mlt_test_jnum(o, "end_time") >= mlt_test_jnum(o, "start_time"));
    ck_assert(mlt_test_jnum(o, "end_time") <= (double)after);
    ck_assert(mlt_test_jnum(o, "duration_s") >= 0.0 && mlt_test_jnum(o, "duration_s") < 10.0);
    free_jsonl(&d);
    jfix_free(&j);
}
END_TEST

START_TEST(jsonl_unnamed_run_has_no_run_name)
{
    jfix j;
    jfix_init(&j);
    jfix_add(&j);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, j.t, NULL), MLT_OK);
    ck_assert_int_eq(mlt_log_metric(run, "m", 1.0, 0), MLT_OK);
    mlt_run_fail(run);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    jfix_close(&j);
    jdoc d = read_jsonl(j.path);
    ck_assert_uint_eq(d.n, 3);
    for (size_t i = 0; i < d.n; i++) {
        ck_assert(!jhas(d.obj[i], "run_name"));
        ck_assert(!jhas(d.obj[i], "run_id"));
    }
    ck_assert_str_eq(mlt_test_jstr(d.obj[2], "status"), "FAILED");
    free_jsonl(&d);
    jfix_free(&j);
}
END_TEST

START_TEST(jsonl_metric_numbers_are_exact)
{
    jfix j;
    jfix_init(&j);
    jfix_add(&j);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, j.t, "r"), MLT_OK);
    ck_assert_int_eq(mlt_log_metric_at(run, "a", 0.1, INT64_MAX, 4102444800123), MLT_OK);
    ck_assert_int_eq(mlt_log_metric_at(run, "b", 1e-7, INT64_MIN, 0), MLT_OK);
    ck_assert_int_eq(mlt_log_metric_at(run, "c", 0.1 + 0.2, 9007199254740993, 1), MLT_OK);
    ck_assert_int_eq(mlt_log_metric_at(run, "d", -1e300, -1, 2), MLT_OK);
    ck_assert_int_eq(mlt_log_metric_at(run, "e", 5e-324, 0, 3), MLT_OK);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    jfix_close(&j);
    jdoc d = read_jsonl(j.path);
    ck_assert_uint_eq(d.n, 7);
    /* int64 values are written exactly: checked on the text, a double cannot hold them. */
    ck_assert_ptr_nonnull(strstr(d.raw.line[1], ",\"step\":9223372036854775807,"));
    ck_assert_ptr_nonnull(strstr(d.raw.line[1], ",\"timestamp\":4102444800123}"));
    ck_assert_ptr_nonnull(strstr(d.raw.line[2], ",\"step\":-9223372036854775808,"));
    ck_assert_ptr_nonnull(strstr(d.raw.line[3], ",\"step\":9007199254740993,"));
    ck_assert_ptr_nonnull(strstr(d.raw.line[1], ",\"value\":0.1,"));
    ck_assert_ptr_nonnull(strstr(d.raw.line[3], ",\"value\":0.30000000000000004,"));
    /* Doubles read back exactly. */
    ck_assert(mlt_test_jnum(d.obj[1], "value") == 0.1);
    ck_assert(mlt_test_jnum(d.obj[2], "value") == 1e-7);
    ck_assert(mlt_test_jnum(d.obj[3], "value") == 0.1 + 0.2);
    ck_assert(mlt_test_jnum(d.obj[4], "value") == -1e300);
    ck_assert(mlt_test_jnum(d.obj[5], "value") == 5e-324);
    ck_assert(mlt_test_jnum(d.obj[4], "step") == -1);
    free_jsonl(&d);
    jfix_free(&j);
}
END_TEST

START_TEST(jsonl_writes_nonfinite_values_as_strings)
{
    jfix j;
    jfix_init(&j);
    jfix_add(&j);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, j.t, "r"), MLT_OK);
    ck_assert_int_eq(mlt_log_metric(run, "nan", NAN, 0), MLT_OK);
    ck_assert_int_eq(mlt_log_metric(run, "pinf", INFINITY, 0), MLT_OK);
    ck_assert_int_eq(mlt_log_metric(run, "ninf", -INFINITY, 0), MLT_OK);
    ck_assert_int_eq(mlt_log_metric(run, "negnan", -NAN, 0), MLT_OK);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    jfix_close(&j);
    jdoc d = read_jsonl(j.path);
    ck_assert_uint_eq(d.n, 6);
    ck_assert_str_eq(mlt_test_jstr(d.obj[1], "value"), "NaN");
    ck_assert_str_eq(mlt_test_jstr(d.obj[2], "value"), "Infinity");
    ck_assert_str_eq(mlt_test_jstr(d.obj[3], "value"), "-Infinity");
    ck_assert_str_eq(mlt_test_jstr(d.obj[4], "value"), "NaN");
    free_jsonl(&d);
    jfix_free(&j);
}
END_TEST

START_TEST(jsonl_escapes_special_characters)
{
    static const char name[] = "a \"quoted\" name\\ with\nnewline";
    static const char value[] = "q\" bs\\ nl\n cr\r tab\t bell\x07 esc\x1b del\x7f "
                                "\xc3\xa9\xe6\x97\xa5\xf0\x9f\x98\x80 /slash";
    static const char key[] = "\xc3\xa9t\xc3\xa9 key/sub:x-y.z";
    jfix j;
    jfix_init(&j);
    jfix_add(&j);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, j.t, name), MLT_OK);
    ck_assert_int_eq(mlt_log_param(run, key, value), MLT_OK);
    ck_assert_int_eq(mlt_set_tag(run, "t", value), MLT_OK);
    ck_assert_int_eq(mlt_log_metric(run, key, 1.0, 0), MLT_OK);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    jfix_close(&j);

    char *text = read_file(j.path);
    /* No raw control character but the line ends. */
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        ck_assert_msg(*p >= 0x20 || *p == '\n', "raw control byte 0x%02x", *p);
    }
    free(text);
    jdoc d = read_jsonl(j.path);
    ck_assert_uint_eq(d.n, 5);
    for (size_t i = 0; i < d.n; i++) {
        ck_assert_str_eq(mlt_test_jstr(d.obj[i], "run_name"), name);
    }
    ck_assert_str_eq(mlt_test_jstr(d.obj[1], "key"), key);
    ck_assert_str_eq(mlt_test_jstr(d.obj[1], "value"), value);
    ck_assert_str_eq(mlt_test_jstr(d.obj[2], "value"), value);
    ck_assert_str_eq(mlt_test_jstr(d.obj[3], "key"), key);
    /* UTF-8 is written as is. */
    ck_assert_ptr_nonnull(strstr(d.raw.line[1], "\xe6\x97\xa5\xf0\x9f\x98\x80"));
    free_jsonl(&d);
    jfix_free(&j);
}
END_TEST

START_TEST(jsonl_appends_to_existing_file)
{
    jfix j;
    jfix_init(&j);
    const char *earlier = "{\"event\":\"earlier\"}\n";
    mlt_test_write_file(j.path, "wb", earlier, strlen(earlier));
    jfix_add(&j);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, j.t, "r"), MLT_OK);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    jfix_close(&j);

    /* A second tracker appends after the first. */
    ck_assert_int_eq(mlt_tracker_new(&j.t, NULL, NULL, 0), MLT_OK);
    jfix_add(&j);
    ck_assert_int_eq(mlt_run_start(&run, j.t, "r2"), MLT_OK);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    jfix_close(&j);

    jdoc d = read_jsonl(j.path);
    ck_assert_uint_eq(d.n, 5);
    ck_assert_str_eq(d.raw.line[0], "{\"event\":\"earlier\"}");
    ck_assert_str_eq(mlt_test_jstr(d.obj[1], "run_name"), "r");
    ck_assert_str_eq(mlt_test_jstr(d.obj[3], "run_name"), "r2");
    ck_assert_str_eq(mlt_test_jstr(d.obj[4], "event"), "run_end");
    free_jsonl(&d);
    jfix_free(&j);
}
END_TEST

START_TEST(jsonl_flushes_at_run_end_and_at_flush)
{
    jfix j;
    jfix_init(&j);
    jfix_add(&j);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, j.t, "first"), MLT_OK);
    ck_assert_int_eq(mlt_log_metric(run, "m", 1.0, 0), MLT_OK);
    char key[40];
    snprintf(key, sizeof key, "%s", mlt_run_key(run));
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);

    /* Read while the tracker (and its FILE) is still open. */
    jdoc d = read_jsonl(j.path);
    ck_assert_uint_eq(d.n, 3);
    ck_assert_int_eq(jfind(&d, "run_end", key, 0), 2);
    free_jsonl(&d);

    ck_assert_int_eq(mlt_run_start(&run, j.t, "second"), MLT_OK);
    ck_assert_int_eq(mlt_log_metric(run, "m", 2.0, 1), MLT_OK);
    ck_assert_int_eq(mlt_tracker_flush(j.t, 100), MLT_OK);
    d = read_jsonl(j.path);
    ck_assert_uint_eq(d.n, 5);
    ck_assert_str_eq(mlt_test_jstr(d.obj[4], "event"), "metric");
    free_jsonl(&d);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    jfix_free(&j);
}
END_TEST

START_TEST(jsonl_unopenable_path_is_io_error_naming_path)
{
    jfix j;
    jfix_init(&j);
    char bad[PATH_MAX];
    snprintf(bad, sizeof bad, "%s/no/such/dir/runs.jsonl", j.dir);
    char err[512] = "";
    ck_assert_int_eq(mlt_tracker_add_jsonl(j.t, bad, err, sizeof err), MLT_ERR_IO);
    ck_assert_msg(strstr(err, bad) != NULL, "path not in '%s'", err);
    ck_assert_int_eq(mlt_tracker_add_jsonl(j.t, bad, NULL, 0), MLT_ERR_IO);
    char small[8] = "xxxxxxx";
    ck_assert_int_eq(mlt_tracker_add_jsonl(j.t, bad, small, sizeof small), MLT_ERR_IO);
    ck_assert_uint_eq(strlen(small), sizeof small - 1);
    /* The tracker works on, without that callback. */
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, j.t, "r"), MLT_OK);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    jfix_free(&j);
}
END_TEST

START_TEST(jsonl_failed_write_is_io_error_naming_path)
{
    mlt_tracker *t;
    ck_assert_int_eq(mlt_tracker_new(&t, NULL, NULL, 0), MLT_OK);
    char err[512] = "";
    if (mlt_tracker_add_jsonl(t, "/dev/full", err, sizeof err) != MLT_OK) {
        ck_assert_int_eq(mlt_tracker_close(t, 0), MLT_OK);
        return; /* no /dev/full here */
    }
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, t, "r"), MLT_OK); /* buffered */
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_ERR_IO);
    ck_assert_msg(strstr(mlt_last_error(), "/dev/full") != NULL, "'%s'", mlt_last_error());
    ck_assert_uint_eq(mlt_tracker_error_count(t), 1);
    mlt_tracker_close(t, 0);
}
END_TEST

START_TEST(jsonl_requires_tracker_and_path)
{
    jfix j;
    jfix_init(&j);
    char err[256] = "";
    ck_assert_int_eq(mlt_tracker_add_jsonl(j.t, NULL, err, sizeof err), MLT_ERR_INVALID_ARG);
    ck_assert_str_ne(err, "");
    ck_assert_int_eq(mlt_tracker_add_jsonl(NULL, j.path, NULL, 0), MLT_ERR_INVALID_ARG);
    jfix_free(&j);
}
END_TEST

/* Open file descriptors of this process. */
static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d) {
        return -1;
    }
    int n = 0;
    while (readdir(d)) {
        n++;
    }
    closedir(d);
    return n;
}

START_TEST(jsonl_after_first_run_is_state_error_and_closes_its_file)
{
    jfix j;
    jfix_init(&j);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, j.t, "r"), MLT_OK);
    int fds = count_fds();
    char err[256] = "";
    ck_assert_int_eq(mlt_tracker_add_jsonl(j.t, j.path, err, sizeof err), MLT_ERR_STATE);
    ck_assert_str_ne(err, "");
    ck_assert_int_eq(count_fds(), fds);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    jfix_free(&j);
}
END_TEST

START_TEST(jsonl_creates_missing_file_with_mode_0644)
{
    jfix j;
    jfix_init(&j);
    mode_t old = umask(0);
    char err[256] = "";
    mlt_err rc = mlt_tracker_add_jsonl(j.t, j.path, err, sizeof err);
    umask(old);
    ck_assert_int_eq(rc, MLT_OK);
    struct stat st;
    ck_assert_int_eq(stat(j.path, &st), 0);
    jfix_free(&j);
    ck_assert_msg((st.st_mode & 07777) == 0644, "created with mode %04o",
                  (unsigned)(st.st_mode & 07777));
}
END_TEST

START_TEST(jsonl_and_print_together_see_the_same_run)
{
    jfix j;
    jfix_init(&j);
    memout m;
    mem_open(&m);
    jfix_add(&j);
    ck_assert_int_eq(mlt_tracker_add_print(j.t, m.f), MLT_OK);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, j.t, "both"), MLT_OK);
    char key[40];
    snprintf(key, sizeof key, "%s", mlt_run_key(run));
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_KILLED), MLT_OK);
    jfix_close(&j);
    ck_assert_int_eq(fclose(m.f), 0);
    ck_assert_ptr_nonnull(strstr(m.buf, key));
    ck_assert_ptr_nonnull(strstr(m.buf, "[mltrack] run 'both' KILLED in "));
    jdoc d = read_jsonl(j.path);
    ck_assert_uint_eq(d.n, 2);
    ck_assert_str_eq(mlt_test_jstr(d.obj[1], "run_key"), key);
    ck_assert_str_eq(mlt_test_jstr(d.obj[1], "status"), "KILLED");
    free_jsonl(&d);
    free(m.buf);
    jfix_free(&j);
}
END_TEST

#define N_THREADS 4
#define N_PER_THREAD 500

typedef struct jworker {
    mlt_run *run;
    int index;
    mlt_err err;
} jworker;

static void *jsonl_worker(void *arg)
{
    jworker *w = arg;
    for (int i = 0; i < N_PER_THREAD && w->err == MLT_OK; i++) {
        w->err = mlt_log_metric(w->run, "m", i * 0.5, (int64_t)w->index * N_PER_THREAD + i);
    }
    return NULL;
}

START_TEST(jsonl_lines_stay_whole_when_threads_share_a_run)
{
    jfix j;
    jfix_init(&j);
    jfix_add(&j);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, j.t, "shared"), MLT_OK);
    pthread_t th[N_THREADS];
    jworker w[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        w[i] = (jworker){.run = run, .index = i};
        ck_assert_int_eq(pthread_create(&th[i], NULL, jsonl_worker, &w[i]), 0);
    }
    for (int i = 0; i < N_THREADS; i++) {
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
        ck_assert_int_eq(w[i].err, MLT_OK);
    }
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    jfix_close(&j);

    jdoc d = read_jsonl(j.path); /* every line parses */
    ck_assert_uint_eq(d.n, (size_t)N_THREADS * N_PER_THREAD + 2);
    unsigned char seen[N_THREADS * N_PER_THREAD] = {0};
    for (size_t i = 1; i + 1 < d.n; i++) {
        ck_assert_str_eq(mlt_test_jstr(d.obj[i], "event"), "metric");
        double step = mlt_test_jnum(d.obj[i], "step");
        ck_assert(step >= 0 && step < N_THREADS * N_PER_THREAD);
        ck_assert_int_eq(seen[(int)step], 0);
        seen[(int)step] = 1;
        ck_assert(mlt_test_jnum(d.obj[i], "value") == ((int)step % N_PER_THREAD) * 0.5);
    }
    free_jsonl(&d);
    jfix_free(&j);
}
END_TEST

/* ---- artifacts ------------------------------------------------------------------------------ */

typedef struct seen_art {
    int n;
    char path[64];
    char sha[65];
    uint64_t size;
    bool had_data;
    bool had_local;
} seen_art;

static mlt_err count_artifact(const mlt_run_info *info, const mlt_artifact_info *a, void *ud)
{
    (void)info;
    seen_art *s = ud;
    s->n++;
    snprintf(s->path, sizeof s->path, "%s", a->path);
    snprintf(s->sha, sizeof s->sha, "%s", a->sha256);
    s->size = a->size;
    s->had_data = a->data != NULL;
    s->had_local = a->local_path != NULL;
    return MLT_OK;
}

START_TEST(print_and_jsonl_write_artifact_events_with_size_and_digest)
{
    jfix j;
    jfix_init(&j);
    jfix_add(&j);
    memout m;
    mem_open(&m);
    ck_assert_int_eq(mlt_tracker_add_print(j.t, m.f), MLT_OK);
    seen_art seen = {0};
    const mlt_callbacks cb = {.version = MLT_CALLBACKS_VERSION, .on_artifact = count_artifact};
    ck_assert_int_eq(mlt_tracker_add_callbacks(j.t, &cb, &seen), MLT_OK);
    char file[PATH_MAX + 16];
    snprintf(file, sizeof file, "%s/model.bin", j.dir);
    FILE *f = fopen(file, "wb");
    ck_assert_ptr_nonnull(f);
    fputs("abc", f);
    fclose(f);
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, j.t, "train"), MLT_OK);
    ck_assert_int_eq(mlt_log_artifact(run, file, "models"), MLT_OK);
    ck_assert_int_eq(seen.n, 1);
    ck_assert(seen.had_local && !seen.had_data);
    ck_assert_int_eq(mlt_log_artifact_bytes(run, "notes/empty.txt", NULL, 0), MLT_OK);
    ck_assert_int_eq(seen.n, 2);
    ck_assert(!seen.had_local && seen.had_data);
    ck_assert_str_eq(seen.path, "notes/empty.txt");
    ck_assert_uint_eq(seen.size, 0);
    /* refused at the call: no event */
    ck_assert_int_eq(mlt_log_artifact_bytes(run, "../x", "a", 1), MLT_ERR_INVALID_ARG);
    ck_assert_int_eq(mlt_log_artifact(run, j.dir, NULL), MLT_ERR_IO);
    ck_assert_int_eq(seen.n, 2);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    /* after the end: refused */
    ck_assert_int_eq(mlt_log_artifact_bytes(run, "late.txt", "a", 1), MLT_ERR_STATE);
    jfix_close(&j);
    ck_assert_int_eq(fclose(m.f), 0);
    /* sha256sum of "abc" and of nothing */
    static const char abc[] = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    static const char none[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    ck_assert_str_eq(seen.sha, none);
    char want[256];
    snprintf(want, sizeof want,
             "[mltrack] run 'train' artifact models/model.bin (3 bytes, sha256 %s)", abc);
    ck_assert_ptr_nonnull(strstr(m.buf, want));
    snprintf(want, sizeof want,
             "[mltrack] run 'train' artifact notes/empty.txt (0 bytes, sha256 %s)", none);
    ck_assert_ptr_nonnull(strstr(m.buf, want));
    free(m.buf);
    jdoc d = read_jsonl(j.path);
    int found = 0;
    for (long i = jfind(&d, "artifact", NULL, 0); i >= 0; i = jfind(&d, "artifact", NULL, i + 1)) {
        const cJSON *o = d.obj[i];
        const cJSON *size = cJSON_GetObjectItemCaseSensitive(o, "size");
        ck_assert(cJSON_IsNumber(size));
        if (strcmp(mlt_test_jstr(o, "path"), "models/model.bin") == 0) {
            ck_assert_str_eq(mlt_test_jstr(o, "sha256"), abc);
            ck_assert_int_eq(size->valueint, 3);
        } else {
            ck_assert_str_eq(mlt_test_jstr(o, "path"), "notes/empty.txt");
            ck_assert_str_eq(mlt_test_jstr(o, "sha256"), none);
            ck_assert_int_eq(size->valueint, 0);
        }
        found++;
    }
    ck_assert_int_eq(found, 2);
    free_jsonl(&d);
    jfix_free(&j);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("callbacks");
    MLT_ADD_TEST(s, print_writes_one_exact_line_per_event);
    MLT_ADD_TEST(s, print_and_jsonl_write_artifact_events_with_size_and_digest);
    MLT_ADD_TEST(s, print_requires_file_and_tracker);
    MLT_ADD_TEST(s, print_after_first_run_is_state_error);
    MLT_ADD_TEST(s, print_flushes_at_run_end);
    MLT_ADD_TEST(s, print_write_failure_is_io_error);
    MLT_ADD_TEST(s, print_failed_flush_at_run_end_is_io_error);
    MLT_ADD_TEST(s, print_keeps_multiline_value_on_one_line);
    MLT_ADD_TEST(s, jsonl_writes_one_object_per_event);
    MLT_ADD_TEST(s, jsonl_unnamed_run_has_no_run_name);
    MLT_ADD_TEST(s, jsonl_metric_numbers_are_exact);
    MLT_ADD_TEST(s, jsonl_writes_nonfinite_values_as_strings);
    MLT_ADD_TEST(s, jsonl_escapes_special_characters);
    MLT_ADD_TEST(s, jsonl_appends_to_existing_file);
    MLT_ADD_TEST(s, jsonl_flushes_at_run_end_and_at_flush);
    MLT_ADD_TEST(s, jsonl_unopenable_path_is_io_error_naming_path);
    MLT_ADD_TEST(s, jsonl_failed_write_is_io_error_naming_path);
    MLT_ADD_TEST(s, jsonl_requires_tracker_and_path);
    MLT_ADD_TEST(s, jsonl_after_first_run_is_state_error_and_closes_its_file);
    MLT_ADD_TEST(s, jsonl_creates_missing_file_with_mode_0644);
    MLT_ADD_TEST(s, jsonl_and_print_together_see_the_same_run);
    MLT_ADD_TEST(s, jsonl_lines_stay_whole_when_threads_share_a_run);
    return mlt_test_run_suite(s);
}
