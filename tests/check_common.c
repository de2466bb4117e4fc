/*
 * check_common.c - unit tests of src/common.c and src/error.c: the array growth helper, the
 * growable buffer and its oom flag, the UTF-8 cut, the JSON writer (escapes, exact int64, NaN/Inf
 * as strings, shortest round-tripping doubles and floats), UUIDs, jitter randomness, the
 * thread-local last error, the error table and run status names.
 */
#include "common.h"
#include "testutil.h"

#include <cjson/cJSON.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ------------------------------------------------------------------------------- */

static float bits_to_float(uint32_t bits)
{
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static bool same_double(double a, double b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

static bool same_float(float a, float b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

/* True when s is exactly one JSON number (RFC 8259 grammar). */
static bool is_json_number(const char *s)
{
    const char *p = s;
    if (*p == '-') {
        p++;
    }
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (*p >= '0' && *p <= '9') {
            p++;
        }
    } else {
        return false;
    }
    if (*p == '.') {
        p++;
        if (!(*p >= '0' && *p <= '9')) {
            return false;
        }
        while (*p >= '0' && *p <= '9') {
            p++;
        }
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-') {
            p++;
        }
        if (!(*p >= '0' && *p <= '9')) {
            return false;
        }
        while (*p >= '0' && *p <= '9') {
            p++;
        }
    }
    return *p == '\0';
}

/* Significant decimal digits of a "%g"-style number ("1.50e+03" -> 2, "0.001" -> 1, "0" -> 1). */
static int significant_digits(const char *s)
{
    char digits[64];
    int n = 0;
    for (const char *p = s; *p && *p != 'e' && *p != 'E'; p++) {
        if (*p >= '0' && *p <= '9' && n < (int)sizeof digits - 1) {
            digits[n++] = *p;
        }
    }
    int start = 0;
    while (start < n && digits[start] == '0') {
        start++;
    }
    while (n > start && digits[n - 1] == '0') {
        n--;
    }
    return n - start > 0 ? n - start : 1;
}

/* The text mlt__json_double writes for v (into out). */
static void json_double_text(double v, char *out, size_t len)
{
    mlt__buf b;
    mlt__buf_init(&b);
    mlt__json_double(&b, v);
    REQUIRE(!b.oom && b.data && b.len < len, "%a: no JSON text", v);
    memcpy(out, b.data, b.len + 1);
    mlt__buf_free(&b);
}

/* Shortest form: no text reading back to v is shorter. With d significant digits in the text,
 * the "%.*g" text of d - 1 digits must not read back (so fewer digits cannot do), or, if it does
 * (an integer written in full rather than with an exponent, e.g. 223739024 rather than
 * 2.2373902e+08), the text must be no longer than the shortest "%.*g" text that reads back. */
static void assert_shortest(const char *s, double v, bool (*reads_back)(const char *, double))
{
    int d = significant_digits(s);
    if (d <= 1) {
        return;
    }
    char shorter[400];
    snprintf(shorter, sizeof shorter, "%.*g", d - 1, v);
    if (!reads_back(shorter, v)) {
        return;
    }
    for (int p = 1; p < d; p++) {
        snprintf(shorter, sizeof shorter, "%.*g", p, v);
        if (reads_back(shorter, v)) {
            break;
        }
    }
    REQUIRE(strlen(s) <= strlen(shorter), "%a written as '%s' but '%s' reads back too", v, s,
            shorter);
}

static bool double_reads_back(const char *s, double v)
{
    return same_double(strtod(s, NULL), v);
}

static bool float_reads_back(const char *s, double v)
{
    return same_float(strtof(s, NULL), (float)v);
}

/* Asserts that the JSON text of finite v is a JSON number that strtod reads back to v bit for
 * bit, and if shortest, that no shorter text would do. */
static void assert_double_round_trips(double v, bool shortest)
{
    char s[64];
    json_double_text(v, s, sizeof s);
    REQUIRE(is_json_number(s), "%a written as '%s', not a JSON number", v, s);
    double back = strtod(s, NULL);
    REQUIRE(same_double(back, v), "%a written as '%s' reads back as %a", v, s, back);
    if (shortest) {
        assert_shortest(s, v, double_reads_back);
    }
}

static void assert_float_round_trips(float v, bool shortest)
{
    char s[64];
    int n = mlt__fmt_float(s, sizeof s, v);
    REQUIRE(n == (int)strlen(s), "%a: returned %d for '%s'", (double)v, n, s);
    REQUIRE(is_json_number(s), "%a written as '%s', not a JSON number", (double)v, s);
    float back = strtof(s, NULL);
    REQUIRE(same_float(back, v), "%a written as '%s' reads back as %a", (double)v, s, (double)back);
    if (shortest) {
        assert_shortest(s, (double)v, float_reads_back);
    }
}

/* The JSON string mlt__json_strn writes for s[0..len) (caller frees). */
static char *json_string_of(const char *s, size_t len)
{
    mlt__buf b;
    mlt__buf_init(&b);
    mlt__json_strn(&b, s, len);
    char *out = mlt__buf_steal(&b);
    ck_assert_ptr_nonnull(out);
    return out;
}

/* ---- buffers ------------------------------------------------------------------------------- */

START_TEST(buf_init_is_empty_and_free_resets)
{
    mlt__buf b;
    memset(&b, 0xab, sizeof b);
    mlt__buf_init(&b);
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(b.len, 0);
    ck_assert_uint_eq(b.cap, 0);
    ck_assert(!b.oom);
    mlt__buf_puts(&b, "abc");
    mlt__buf_free(&b);
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(b.len, 0);
    ck_assert_uint_eq(b.cap, 0);
    mlt__buf_free(&b); /* freeing twice is harmless */
}
END_TEST

START_TEST(buf_grows_byte_by_byte_and_stays_nul_terminated)
{
    mlt__buf b;
    mlt__buf_init(&b);
    for (size_t i = 0; i < 100000; i++) {
        mlt__buf_putc(&b, (char)('a' + i % 26));
        REQUIRE(b.len == i + 1 && b.cap >= b.len + 1 && b.data[b.len] == '\0',
                "after %zu bytes: len %zu, cap %zu", i + 1, b.len, b.cap);
    }
    for (size_t i = 0; i < 100000; i++) {
        REQUIRE(b.data[i] == (char)('a' + i % 26), "byte %zu is %c", i, b.data[i]);
    }
    ck_assert(!b.oom);
    mlt__buf_free(&b);
}
END_TEST

START_TEST(buf_append_keeps_binary_bytes_and_large_blocks)
{
    mlt__buf b;
    mlt__buf_init(&b);
    mlt__buf_append(&b, "a\0b", 3);
    ck_assert_uint_eq(b.len, 3);
    ck_assert_mem_eq(b.data, "a\0b", 4);
    char *big = malloc(1 << 20);
    ck_assert_ptr_nonnull(big);
    memset(big, 'z', 1 << 20);
    mlt__buf_append(&b, big, 1 << 20);
    ck_assert_uint_eq(b.len, 3 + (1u << 20));
    ck_assert_int_eq(b.data[3], 'z');
    ck_assert_int_eq(b.data[b.len - 1], 'z');
    ck_assert_int_eq(b.data[b.len], '\0');
    mlt__buf_append(&b, "", 0); /* appending nothing changes nothing */
    ck_assert_uint_eq(b.len, 3 + (1u << 20));
    free(big);
    mlt__buf_free(&b);
}
END_TEST

START_TEST(buf_puts_putc_and_printf_concatenate)
{
    mlt__buf b;
    mlt__buf_init(&b);
    mlt__buf_puts(&b, "x=");
    mlt__buf_printf(&b, "%d-%s", 42, "y");
    mlt__buf_putc(&b, '!');
    mlt__buf_puts(&b, "");
    ck_assert_str_eq(b.data, "x=42-y!");
    ck_assert_uint_eq(b.len, 7);
    /* a printf longer than the current capacity grows the buffer */
    char *long_arg = malloc(5001);
    ck_assert_ptr_nonnull(long_arg);
    memset(long_arg, 'q', 5000);
    long_arg[5000] = '\0';
    mlt__buf_printf(&b, "[%s]", long_arg);
    ck_assert_uint_eq(b.len, 7 + 5002);
    ck_assert_uint_eq(strlen(b.data), b.len);
    ck_assert_int_eq(b.data[7], '[');
    ck_assert_int_eq(b.data[b.len - 1], ']');
    free(long_arg);
    mlt__buf_free(&b);
}
END_TEST

START_TEST(buf_printf_into_empty_buffer)
{
    mlt__buf b;
    mlt__buf_init(&b);
    mlt__buf_printf(&b, "%s", "");
    ck_assert(!b.oom);
    ck_assert_uint_eq(b.len, 0);
    mlt__buf_printf(&b, "%05.1f|%x", 3.14159, 255u);
    ck_assert_str_eq(b.data, "003.1|ff");
    mlt__buf_free(&b);
}
END_TEST

START_TEST(buf_reserve_makes_room_without_moving_data)
{
    mlt__buf b;
    mlt__buf_init(&b);
    mlt__buf_puts(&b, "head");
    ck_assert(mlt__buf_reserve(&b, 10000));
    ck_assert_uint_ge(b.cap, 4 + 10000 + 1);
    char *before = b.data;
    for (int i = 0; i < 10000; i++) {
        mlt__buf_putc(&b, 'x');
    }
    ck_assert_ptr_eq(b.data, before);
    ck_assert_uint_eq(b.len, 10004);
    ck_assert_int_eq(strncmp(b.data, "headxxx", 7), 0);
    mlt__buf_free(&b);
}
END_TEST

/* The header promises data is NUL-terminated whenever it is not NULL. */
START_TEST(buf_reserve_on_empty_buffer_leaves_an_empty_string)
{
    mlt__buf b;
    mlt__buf_init(&b);
    ck_assert(mlt__buf_reserve(&b, 100));
    ck_assert_ptr_nonnull(b.data);
    ck_assert_uint_eq(b.len, 0);
    bool terminated = b.data[0] == '\0';
    mlt__buf_free(&b);
    ck_assert_msg(terminated, "data after reserve on an empty buffer is not NUL-terminated");
}
END_TEST

START_TEST(buf_reset_empties_but_keeps_allocation)
{
    mlt__buf b;
    mlt__buf_init(&b);
    mlt__buf_puts(&b, "some text");
    char *data = b.data;
    size_t cap = b.cap;
    mlt__buf_reset(&b);
    ck_assert_uint_eq(b.len, 0);
    ck_assert_ptr_eq(b.data, data);
    ck_assert_uint_eq(b.cap, cap);
    ck_assert_str_eq(b.data, "");
    mlt__buf_puts(&b, "new");
    ck_assert_str_eq(b.data, "new");
    mlt__buf_free(&b);

    mlt__buf_reset(&b); /* reset of a buffer with no allocation */
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(b.len, 0);
}
END_TEST

START_TEST(buf_steal_detaches_the_data)
{
    mlt__buf b;
    mlt__buf_init(&b);
    mlt__buf_puts(&b, "hello");
    char *data = b.data;
    char *s = mlt__buf_steal(&b);
    ck_assert_ptr_eq(s, data);
    ck_assert_str_eq(s, "hello");
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(b.len, 0);
    ck_assert_uint_eq(b.cap, 0);
    ck_assert(!b.oom);
    /* the buffer is usable again and independent of the stolen string */
    mlt__buf_puts(&b, "again");
    ck_assert_str_eq(b.data, "again");
    ck_assert_str_eq(s, "hello");
    free(s);
    mlt__buf_free(&b);
}
END_TEST

START_TEST(buf_steal_of_empty_buffer_gives_empty_string)
{
    mlt__buf b;
    mlt__buf_init(&b);
    char *s = mlt__buf_steal(&b);
    ck_assert_ptr_nonnull(s);
    ck_assert_str_eq(s, "");
    free(s);

    mlt__buf_puts(&b, "abc");
    mlt__buf_reset(&b);
    s = mlt__buf_steal(&b);
    ck_assert_ptr_nonnull(s);
    ck_assert_str_eq(s, "");
    free(s);
    ck_assert_ptr_null(b.data);
}
END_TEST

START_TEST(buf_oom_flag_sticks_and_steal_returns_null)
{
    mlt__buf b;
    mlt__buf_init(&b);
    mlt__buf_puts(&b, "ok");
    ck_assert(!mlt__buf_reserve(&b, SIZE_MAX)); /* cannot be satisfied: sets oom */
    ck_assert(b.oom);
    /* later appends do nothing */
    mlt__buf_puts(&b, "more");
    mlt__buf_putc(&b, 'c');
    mlt__buf_printf(&b, "%d", 12345);
    mlt__buf_append(&b, "xyz", 3);
    mlt__json_str(&b, "s");
    mlt__json_i64(&b, 7);
    mlt__json_double(&b, 1.5);
    ck_assert_uint_eq(b.len, 2);
    ck_assert_str_eq(b.data, "ok");
    ck_assert(b.oom);
    ck_assert(!mlt__buf_reserve(&b, 1)); /* even a small reserve fails once oom */
    /* steal reports the failure, frees and reinitializes the buffer */
    ck_assert_ptr_null(mlt__buf_steal(&b));
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(b.len, 0);
    ck_assert(!b.oom);
    mlt__buf_free(&b);
}
END_TEST

START_TEST(buf_reserve_overflowing_size_sets_oom_without_allocating)
{
    mlt__buf b;
    mlt__buf_init(&b);
    mlt__buf_puts(&b, "abcdef");
    ck_assert(!mlt__buf_reserve(&b, SIZE_MAX - 6)); /* len + extra + 1 would wrap */
    ck_assert(b.oom);
    ck_assert_uint_eq(b.len, 6);
    mlt__buf_free(&b);
    ck_assert(!b.oom);
}
END_TEST

START_TEST(buf_reset_clears_oom)
{
    mlt__buf b;
    mlt__buf_init(&b);
    mlt__buf_puts(&b, "ab");
    ck_assert(!mlt__buf_reserve(&b, SIZE_MAX));
    ck_assert(b.oom);
    mlt__buf_reset(&b);
    ck_assert(!b.oom);
    mlt__buf_puts(&b, "c");
    ck_assert_str_eq(b.data, "c");
    char *s = mlt__buf_steal(&b);
    ck_assert_ptr_nonnull(s);
    ck_assert_str_eq(s, "c");
    free(s);
}
END_TEST

/* ---- growable arrays ------------------------------------------------------------------------ */

typedef struct item24 {
    uint64_t a, b, c;
} item24;

START_TEST(grow_doubles_from_a_first_capacity_and_keeps_the_items)
{
    int *a = NULL;
    size_t cap = 0;
    ck_assert_int_eq(mlt__grow(&a, &cap, 1, sizeof *a), MLT_OK);
    ck_assert_ptr_nonnull(a);
    ck_assert_uint_eq(cap, 16); /* 64 bytes of ints */
    for (int i = 0; i < 1000; i++) {
        ck_assert_int_eq(MLT__GROW(a, cap, (size_t)i + 1), MLT_OK);
        ck_assert_uint_ge(cap, (size_t)i + 1);
        a[i] = i * 7;
    }
    ck_assert_uint_eq(cap, 1024); /* 16 doubled six times */
    for (int i = 0; i < 1000; i++) {
        REQUIRE(a[i] == i * 7, "item %d is %d", i, a[i]);
    }
    free(a);

    item24 *big = NULL;
    cap = 0;
    ck_assert_int_eq(MLT__GROW(big, cap, 1), MLT_OK);
    ck_assert_uint_eq(cap, 8); /* 8 items of more than 8 bytes */
    ck_assert_int_eq(MLT__GROW(big, cap, 9), MLT_OK);
    ck_assert_uint_eq(cap, 16);
    ck_assert_int_eq(MLT__GROW(big, cap, 100), MLT_OK); /* doubled as often as need asks */
    ck_assert_uint_eq(cap, 128);
    big[99] = (item24){1, 2, 3};
    free(big);

    char *bytes = NULL;
    cap = 0;
    ck_assert_int_eq(MLT__GROW(bytes, cap, 1), MLT_OK);
    ck_assert_uint_eq(cap, 64);
    ck_assert_int_eq(MLT__GROW(bytes, cap, 1000), MLT_OK); /* empty or not: 64, 128, ... */
    ck_assert_uint_eq(cap, 1024);
    free(bytes);
}
END_TEST

START_TEST(grow_to_exactly_the_capacity_does_nothing)
{
    int *a = NULL;
    size_t cap = 0;
    ck_assert_int_eq(MLT__GROW(a, cap, 0), MLT_OK); /* nothing needed: nothing allocated */
    ck_assert_ptr_null(a);
    ck_assert_uint_eq(cap, 0);
    ck_assert_int_eq(MLT__GROW(a, cap, 16), MLT_OK);
    ck_assert_uint_eq(cap, 16); /* need is the first capacity exactly */
    int *before = a;
    ck_assert_int_eq(MLT__GROW(a, cap, 16), MLT_OK);
    ck_assert_int_eq(MLT__GROW(a, cap, 3), MLT_OK);
    ck_assert_ptr_eq(a, before);
    ck_assert_uint_eq(cap, 16);
    ck_assert_int_eq(MLT__GROW(a, cap, 17), MLT_OK); /* one more: doubled */
    ck_assert_uint_eq(cap, 32);
    free(a);
}
END_TEST

/* A new array of 4 items, 10 to 13. */
static int *four_items(void)
{
    int *a = malloc(4 * sizeof *a);
    ck_assert_ptr_nonnull(a);
    for (int i = 0; i < 4; i++) {
        a[i] = 10 + i;
    }
    return a;
}

/* The array as it was: pointer, capacity and items. */
static void assert_untouched(const int *a, const int *was, size_t cap, size_t cap_was)
{
    ck_assert_ptr_eq(a, was);
    ck_assert_uint_eq(cap, cap_was);
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(a[i], 10 + i);
    }
}

START_TEST(grow_refuses_a_size_that_overflows_and_leaves_the_array)
{
    int *a = four_items();
    int *was = a;
    size_t cap = 4;
    /* need * elem_size wraps around size_t */
    ck_assert_int_eq(MLT__GROW(a, cap, SIZE_MAX / sizeof *a + 1), MLT_ERR_NOMEM);
    assert_untouched(a, was, cap, 4);
    ck_assert_int_eq(MLT__GROW(a, cap, SIZE_MAX), MLT_ERR_NOMEM);
    assert_untouched(a, was, cap, 4);
    /* it fits in a size_t but no object can be that large */
    ck_assert_int_eq(MLT__GROW(a, cap, (size_t)PTRDIFF_MAX / sizeof *a + 1), MLT_ERR_NOMEM);
    assert_untouched(a, was, cap, 4);
    ck_assert_int_eq(mlt__grow(&a, &cap, 5, SIZE_MAX / 2 + 1), MLT_ERR_NOMEM);
    assert_untouched(a, was, cap, 4);
    ck_assert_int_eq(mlt__grow(&a, &cap, 5, 0), MLT_ERR_INVALID_ARG);
    assert_untouched(a, was, cap, 4);
    free(a);
}
END_TEST

START_TEST(grow_refuses_a_doubling_that_overflows_and_leaves_the_array)
{
    int *a = four_items();
    int *was = a;
    /* a capacity near SIZE_MAX / elem_size, which doubled wraps around (only claimed: the call
     * must fail before it reallocates) */
    size_t cap = SIZE_MAX / sizeof *a - 1;
    ck_assert_int_eq(MLT__GROW(a, cap, cap + 1), MLT_ERR_NOMEM);
    assert_untouched(a, was, cap, SIZE_MAX / sizeof *a - 1);
    cap = SIZE_MAX / sizeof *a / 2 + 1;
    ck_assert_int_eq(MLT__GROW(a, cap, cap + 1), MLT_ERR_NOMEM);
    assert_untouched(a, was, cap, SIZE_MAX / sizeof *a / 2 + 1);
    /* and so for bytes */
    char *b = malloc(1);
    ck_assert_ptr_nonnull(b);
    char *b_was = b;
    size_t bcap = SIZE_MAX - 1;
    ck_assert_int_eq(MLT__GROW(b, bcap, SIZE_MAX), MLT_ERR_NOMEM);
    ck_assert_ptr_eq(b, b_was);
    ck_assert_uint_eq(bcap, SIZE_MAX - 1);
    free(b);
    free(a);
}
END_TEST

/* ---- JSON strings ---------------------------------------------------------------------------- */

START_TEST(json_str_escapes_quote_and_backslash)
{
    char *s = json_string_of("a\"b\\c", 5);
    ck_assert_str_eq(s, "\"a\\\"b\\\\c\"");
    free(s);
    s = json_string_of("", 0);
    ck_assert_str_eq(s, "\"\"");
    free(s);
    s = json_string_of("\"\"\\\\", 4);
    ck_assert_str_eq(s, "\"\\\"\\\"\\\\\\\\\"");
    free(s);
    s = json_string_of("/", 1); /* '/' needs no escape */
    ck_assert_str_eq(s, "\"/\"");
    free(s);
}
END_TEST

START_TEST(json_str_writes_other_control_chars_as_u00xx)
{
    static const char hex[] = "0123456789abcdef";
    for (int c = 1; c < 0x20; c++) {
        char in[4] = {'a', (char)c, 'b', 0};
        char *s = json_string_of(in, 3);
        const char *esc;
        char u[7];
        switch (c) {
        case '\n':
            esc = "\\n";
            break;
        case '\r':
            esc = "\\r";
            break;
        case '\t':
            esc = "\\t";
            break;
        case '\b':
            esc = "\\b";
            break;
        case '\f':
            esc = "\\f";
            break;
        default:
            snprintf(u, sizeof u, "\\u00%c%c", hex[c >> 4], hex[c & 15]);
            esc = u;
            break;
        }
        char want[16];
        snprintf(want, sizeof want, "\"a%sb\"", esc);
        ck_assert_msg(strcmp(s, want) == 0, "byte 0x%02x written as %s, want %s", c, s, want);
        /* and any JSON parser reads the original back */
        cJSON *j = cJSON_Parse(s);
        ck_assert_ptr_nonnull(j);
        ck_assert(cJSON_IsString(j));
        ck_assert_str_eq(j->valuestring, in);
        cJSON_Delete(j);
        free(s);
    }
    char *s = json_string_of("\x01\x1f", 2);
    ck_assert_str_eq(s, "\"\\u0001\\u001f\"");
    free(s);
}
END_TEST

START_TEST(json_strn_escapes_nul_and_stops_at_length)
{
    char *s = json_string_of("a\0b", 3);
    ck_assert_str_eq(s, "\"a\\u0000b\"");
    free(s);
    s = json_string_of("abcdef", 3);
    ck_assert_str_eq(s, "\"abc\"");
    free(s);
}
END_TEST

START_TEST(json_str_passes_utf8_and_del_through_unchanged)
{
    const char *in = "h\xc3\xa9llo \xe2\x9c\x93 \xf0\x9f\x98\x80 \xe4\xb8\xad\x7f end";
    mlt__buf b;
    mlt__buf_init(&b);
    mlt__json_str(&b, in);
    size_t n = strlen(in);
    ck_assert_uint_eq(b.len, n + 2);
    ck_assert_int_eq(b.data[0], '"');
    ck_assert_int_eq(b.data[n + 1], '"');
    ck_assert_mem_eq(b.data + 1, in, n);
    cJSON *j = cJSON_Parse(b.data);
    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(j->valuestring, in);
    cJSON_Delete(j);
    mlt__buf_free(&b);
}
END_TEST

START_TEST(json_str_long_mixed_string_parses_back)
{
    uint64_t st = 42;
    size_t n = 200000;
    char *in = malloc(n + 1);
    ck_assert_ptr_nonnull(in);
    for (size_t i = 0; i < n; i++) {
        unsigned c = (unsigned)(mlt_test_rng_next(&st) % 0x7f) + 1; /* 1..0x7f */
        in[i] = (char)c;
    }
    in[n] = '\0';
    mlt__buf b;
    mlt__buf_init(&b);
    mlt__buf_puts(&b, "{\"k\":");
    mlt__json_str(&b, in);
    mlt__buf_putc(&b, '}');
    ck_assert(!b.oom);
    for (size_t i = 0; i < b.len; i++) {
        REQUIRE((unsigned char)b.data[i] >= 0x20, "raw control byte at %zu", i);
    }
    cJSON *j = cJSON_Parse(b.data);
    ck_assert_ptr_nonnull(j);
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(j, "k");
    ck_assert(cJSON_IsString(k));
    ck_assert_str_eq(k->valuestring, in);
    cJSON_Delete(j);
    mlt__buf_free(&b);
    free(in);
}
END_TEST

/* ---- JSON numbers -------------------------------------------------------------------------- */

START_TEST(json_i64_is_exact_for_extremes)
{
    static const struct {
        int64_t v;
        const char *text;
    } cases[] = {
        {INT64_MIN, "-9223372036854775808"},
        {INT64_MAX, "9223372036854775807"},
        {0, "0"},
        {-1, "-1"},
        {9007199254740993LL, "9007199254740993"}, /* 2^53 + 1: not a double */
        {1700000000123LL, "1700000000123"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mlt__buf b;
        mlt__buf_init(&b);
        mlt__buf_putc(&b, '[');
        mlt__json_i64(&b, cases[i].v);
        mlt__buf_putc(&b, ']');
        char want[32];
        snprintf(want, sizeof want, "[%s]", cases[i].text);
        ck_assert_str_eq(b.data, want);
        mlt__buf_free(&b);
    }
}
END_TEST

START_TEST(json_double_writes_nan_and_infinities_as_strings)
{
    char s[64];
    json_double_text(NAN, s, sizeof s);
    ck_assert_str_eq(s, "\"NaN\"");
    json_double_text(-NAN, s, sizeof s);
    ck_assert_str_eq(s, "\"NaN\"");
    json_double_text(mlt_test_double_of(0x7ff0000000000001ull), s, sizeof s); /* signalling NaN */
    ck_assert_str_eq(s, "\"NaN\"");
    json_double_text(INFINITY, s, sizeof s);
    ck_assert_str_eq(s, "\"Infinity\"");
    json_double_text(-INFINITY, s, sizeof s);
    ck_assert_str_eq(s, "\"-Infinity\"");

    /* inside an object they are real JSON strings */
    mlt__buf b;
    mlt__buf_init(&b);
    mlt__buf_puts(&b, "[");
    mlt__json_double(&b, NAN);
    mlt__buf_putc(&b, ',');
    mlt__json_double(&b, INFINITY);
    mlt__buf_putc(&b, ',');
    mlt__json_double(&b, -INFINITY);
    mlt__buf_putc(&b, ']');
    cJSON *j = cJSON_Parse(b.data);
    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(cJSON_GetArrayItem(j, 0)->valuestring, "NaN");
    ck_assert_str_eq(cJSON_GetArrayItem(j, 1)->valuestring, "Infinity");
    ck_assert_str_eq(cJSON_GetArrayItem(j, 2)->valuestring, "-Infinity");
    cJSON_Delete(j);
    mlt__buf_free(&b);
}
END_TEST

START_TEST(json_double_writes_familiar_values_in_shortest_form)
{
    static const struct {
        double v;
        const char *text;
    } cases[] = {
        {0.1, "0.1"},
        {0.5, "0.5"},
        {1.0, "1"},
        {-2.25, "-2.25"},
        {100.0, "100"},
        {0.3, "0.3"},
        {0.1 + 0.2, "0.30000000000000004"},
        {1.0 / 3.0, "0.3333333333333333"},
        {2.0 / 3.0, "0.6666666666666666"},
        {DBL_MAX, "1.7976931348623157e+308"},
        {-DBL_MAX, "-1.7976931348623157e+308"},
        {DBL_MIN, "2.2250738585072014e-308"},
        {0.0, "0"},
        {1e23, "1e+23"},
        {9007199254740993.0, "9007199254740992"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char s[64];
        json_double_text(cases[i].v, s, sizeof s);
        ck_assert_msg(strcmp(s, cases[i].text) == 0, "%a written as '%s', want '%s'", cases[i].v, s,
                      cases[i].text);
    }
}
END_TEST

START_TEST(json_double_keeps_the_sign_of_negative_zero)
{
    char s[64];
    json_double_text(-0.0, s, sizeof s);
    ck_assert_str_eq(s, "-0");
    ck_assert(signbit(strtod(s, NULL)));
    assert_double_round_trips(-0.0, true);
}
END_TEST

START_TEST(json_double_round_trips_edge_values)
{
    const double cases[] = {0.1,
                            1.0 / 3.0,
                            5e-324,
                            -5e-324,
                            DBL_MAX,
                            -DBL_MAX,
                            DBL_MIN,
                            -0.0,
                            0.0,
                            1e-320,
                            2.5e-310,
                            1e308,
                            1e-5,
                            123456.789,
                            1e15,
                            1e16,
                            1e17,
                            1e21,
                            1e22,
                            4.35,
                            0.000123,
                            2.0e-308 /* subnormal */,
                            nextafter(DBL_MIN, 0),
                            nextafter(1.0, 2.0)};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_double_round_trips(cases[i], false);
    }
}
END_TEST

/* 100k random bit patterns: every finite one round-trips; the normal ones are also shortest
 * (subnormals have their own test below). */
START_TEST(json_double_round_trips_random_doubles_in_shortest_form)
{
    uint64_t st = 0x5eed5eed12345678ull;
    int finite = 0;
    for (int i = 0; i < 100000; i++) {
        double v = mlt_test_double_of(mlt_test_rng_next(&st));
        if (!isfinite(v)) {
            continue;
        }
        finite++;
        assert_double_round_trips(v, isnormal(v));
    }
    ck_assert_int_gt(finite, 99000);
}
END_TEST

START_TEST(json_double_keeps_short_decimals_short)
{
    uint64_t st = 0x0123456789abcdefull;
    for (int i = 0; i < 10000; i++) {
        char src[32];
        snprintf(src, sizeof src, "%d.%de%d", (int)(mlt_test_rng_next(&st) % 1000),
                 (int)(mlt_test_rng_next(&st) % 100), (int)(mlt_test_rng_next(&st) % 600) - 300);
        assert_double_round_trips(strtod(src, NULL), true);
    }
}
END_TEST

START_TEST(json_double_is_shortest_for_subnormals)
{
    char s[64];
    json_double_text(5e-324, s, sizeof s);
    ck_assert_msg(strcmp(s, "5e-324") == 0, "5e-324 written as '%s'", s);
    json_double_text(1e-320, s, sizeof s);
    ck_assert_msg(strcmp(s, "1e-320") == 0, "1e-320 written as '%s'", s);
    uint64_t st = 99;
    for (int i = 0; i < 2000; i++) {
        /* subnormals: exponent bits 0, random mantissa of random width */
        uint64_t mant = mlt_test_rng_next(&st) & ((1ull << 52) - 1);
        mant >>= mlt_test_rng_next(&st) % 52;
        if (mant == 0) {
            continue;
        }
        assert_double_round_trips(
            mlt_test_double_of(mant | (mlt_test_rng_next(&st) & (1ull << 63))), true);
    }
}
END_TEST

START_TEST(fmt_double_returns_the_length)
{
    char s[64];
    ck_assert_int_eq(mlt__fmt_double(s, sizeof s, 0.1), 3);
    ck_assert_str_eq(s, "0.1");
    ck_assert_int_eq(mlt__fmt_double(s, sizeof s, -DBL_MAX), 24);
    ck_assert_str_eq(s, "-1.7976931348623157e+308");
}
END_TEST

START_TEST(fmt_float_writes_familiar_floats_in_shortest_form)
{
    static const struct {
        float v;
        const char *text;
    } cases[] = {
        {0.1f, "0.1"},
        {1.0f / 3.0f, "0.33333334"},
        {16777216.0f, "16777216"},
        {FLT_MAX, "3.4028235e+38"},
        {FLT_MIN, "1.1754944e-38"},
        {-0.0f, "-0"},
        {0.0f, "0"},
        {2.5f, "2.5"},
        {1e10f, "1e+10"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char s[64];
        int n = mlt__fmt_float(s, sizeof s, cases[i].v);
        ck_assert_int_eq(n, (int)strlen(s));
        ck_assert_msg(strcmp(s, cases[i].text) == 0, "%a written as '%s', want '%s'",
                      (double)cases[i].v, s, cases[i].text);
    }
}
END_TEST

START_TEST(fmt_float_round_trips_random_floats_in_shortest_form)
{
    uint64_t st = 7;
    for (int i = 0; i < 50000; i++) {
        float v = bits_to_float((uint32_t)mlt_test_rng_next(&st));
        if (!isfinite(v)) {
            continue;
        }
        assert_float_round_trips(v, isnormal(v));
    }
}
END_TEST

START_TEST(fmt_float_is_shortest_for_subnormals)
{
    char s[64];
    mlt__fmt_float(s, sizeof s, 1e-45f);
    ck_assert_msg(strcmp(s, "1e-45") == 0, "1e-45f written as '%s'", s);
    uint64_t st = 11;
    for (int i = 0; i < 2000; i++) {
        uint32_t mant = (uint32_t)mlt_test_rng_next(&st) & ((1u << 23) - 1);
        mant >>= mlt_test_rng_next(&st) % 23;
        if (mant == 0) {
            continue;
        }
        assert_float_round_trips(bits_to_float(mant), true);
    }
}
END_TEST

/* ---- strings and errbuf -------------------------------------------------------------------- */

START_TEST(strdup_strndup_and_aprintf_copy)
{
    ck_assert_ptr_null(mlt__strdup(NULL));
    char *a = mlt__strdup("abc");
    ck_assert_str_eq(a, "abc");
    char *b = mlt__strndup("abcdef", 4);
    ck_assert_str_eq(b, "abcd");
    char *c = mlt__aprintf("%s-%d-%s", "x", -5, "");
    ck_assert_str_eq(c, "x--5-");
    free(a);
    free(b);
    free(c);
}
END_TEST

START_TEST(errbuf_copies_the_last_error_cut_to_fit_and_returns_the_code)
{
    char buf[8];
    memset(buf, 'z', sizeof buf);
    mlt__fail(MLT_ERR_IO, "%s %d", "failure", 12345);
    ck_assert_int_eq(mlt__errbuf(buf, sizeof buf, MLT_ERR_IO), MLT_ERR_IO);
    ck_assert_str_eq(buf, "failure");
    ck_assert_int_eq(mlt__errbuf(NULL, 0, MLT_ERR_STATE), MLT_ERR_STATE);
    char one[1] = {'x'};
    ck_assert_int_eq(mlt__errbuf(one, 1, MLT_ERR_NOMEM), MLT_ERR_NOMEM);
    ck_assert_int_eq(one[0], '\0');
    /* a success leaves errbuf alone */
    char keep[8] = "keep";
    ck_assert_int_eq(mlt__errbuf(keep, sizeof keep, MLT_OK), MLT_OK);
    ck_assert_str_eq(keep, "keep");
    /* cut before a character that does not fit whole: "ab" then a 3-byte character */
    mlt__fail(MLT_ERR_IO, "ab\xe6\x97\xa5"
                          "c");
    char cut[5];
    ck_assert_int_eq(mlt__errbuf(cut, sizeof cut, MLT_ERR_IO), MLT_ERR_IO);
    ck_assert_str_eq(cut, "ab");
    char whole[6];
    ck_assert_int_eq(mlt__errbuf(whole, sizeof whole, MLT_ERR_IO), MLT_ERR_IO);
    ck_assert_str_eq(whole, "ab\xe6\x97\xa5");
    mlt__fail_clear();
}
END_TEST

/* Every cut of s (len bytes) at max = 0..len+2 against the expected cut for each max. */
static void assert_cuts(const char *s, size_t len, const size_t *want)
{
    for (size_t max = 0; max <= len + 2; max++) {
        size_t got = mlt__utf8_cut(s, len, max);
        ck_assert_msg(got == want[max < len ? max : len],
                      "cut of %zu-byte string at %zu: %zu, want %zu", len, max, got,
                      want[max < len ? max : len]);
    }
}

START_TEST(utf8_cut_keeps_whole_characters)
{
    static const size_t ascii[] = {0, 1, 2, 3, 4, 5};
    assert_cuts("hello", 5, ascii);
    ck_assert_uint_eq(mlt__utf8_cut("", 0, 10), 0);
    ck_assert_uint_eq(mlt__utf8_cut("abc", 3, 0), 0);
    ck_assert_uint_eq(mlt__utf8_cut("abc", 3, SIZE_MAX), 3); /* max beyond len: len */

    /* "a" U+00E9 "z": a cut inside the 2-byte character leaves it out */
    static const size_t two[] = {0, 1, 1, 3, 4};
    assert_cuts("a\xC3\xA9z", 4, two);
    /* "a" U+20AC "z" */
    static const size_t three[] = {0, 1, 1, 1, 4, 5};
    assert_cuts("a\xE2\x82\xACz", 5, three);
    /* "a" U+1F600 "z" */
    static const size_t four[] = {0, 1, 1, 1, 1, 5, 6};
    assert_cuts("a\xF0\x9F\x98\x80z", 6, four);
    /* characters back to back */
    static const size_t mixed[] = {0, 0, 2, 2, 2, 5, 5, 5, 5, 9};
    assert_cuts("\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80", 9, mixed);
}
END_TEST

START_TEST(utf8_cut_drops_an_incomplete_character_at_the_end)
{
    /* the string itself ends inside a character (an answer cut to a buffer) */
    ck_assert_uint_eq(mlt__utf8_cut("ab\xE2\x82", 4, 4), 2);
    ck_assert_uint_eq(mlt__utf8_cut("ab\xF0\x9F\x98", 5, 100), 2);
    ck_assert_uint_eq(mlt__utf8_cut("ab\xC3", 3, 3), 2);
    ck_assert_uint_eq(mlt__utf8_cut("\xC3", 1, 1), 0);
}
END_TEST

START_TEST(utf8_cut_treats_invalid_bytes_as_the_copies_it_replaced_did)
{
    /* any byte >= 0xC0 is a lead byte, announcing 2, 3 or 4 bytes by its high bits */
    ck_assert_uint_eq(mlt__utf8_cut("ab\xFF", 3, 3), 2);
    ck_assert_uint_eq(mlt__utf8_cut("ab\xFF\x80\x80", 5, 5), 2);
    ck_assert_uint_eq(mlt__utf8_cut("ab\xF8\x80\x80\x80", 6, 6), 6);
    ck_assert_uint_eq(mlt__utf8_cut("ab\xC0\x80", 4, 4), 4); /* overlong, but whole */
    ck_assert_uint_eq(mlt__utf8_cut("ab\xC0\x80", 4, 3), 2);
    /* a lone Latin-1 byte is a lead byte without its continuation bytes */
    ck_assert_uint_eq(mlt__utf8_cut("caf\xE9", 4, 4), 3);
    ck_assert_uint_eq(mlt__utf8_cut("caf\xE9 au lait", 13, 4), 3);
    /* only the last character is looked at */
    ck_assert_uint_eq(mlt__utf8_cut("\xE9\xE9", 2, 2), 1);
    /* continuation bytes without a lead byte within 3 bytes are kept */
    ck_assert_uint_eq(mlt__utf8_cut("\x80\x80xy", 4, 1), 1);
    ck_assert_uint_eq(mlt__utf8_cut("a\x80\x80\x80\x80", 5, 5), 5);
    ck_assert_uint_eq(mlt__utf8_cut("\xF0\x80\x80\x80\x80", 5, 5), 5);
    /* more continuation bytes than announced: whole at the end, cut where they go on */
    ck_assert_uint_eq(mlt__utf8_cut("\xC3\xA9\xA9", 3, 3), 3);
    ck_assert_uint_eq(mlt__utf8_cut("\xC3\xA9\xA9", 3, 2), 0);
}
END_TEST

/* ---- UUIDs and randomness ------------------------------------------------------------------ */

static void assert_uuid4(const char *u)
{
    REQUIRE(strlen(u) == 36, "uuid %s is not 36 characters", u);
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            REQUIRE(u[i] == '-', "uuid %s: no dash at %d", u, i);
        } else {
            REQUIRE((u[i] >= '0' && u[i] <= '9') || (u[i] >= 'a' && u[i] <= 'f'),
                    "uuid %s: '%c' at %d is not lowercase hex", u, u[i], i);
        }
    }
    REQUIRE(u[14] == '4', "uuid %s is not version 4", u);
    REQUIRE(strchr("89ab", u[19]) != NULL, "uuid %s has not the RFC 4122 variant", u);
}

static int cmp_uuid(const void *a, const void *b)
{
    return memcmp(a, b, 37);
}

START_TEST(uuid4_has_version_and_variant_bits)
{
    for (int i = 0; i < 1000; i++) {
        char u[37];
        memset(u, 'X', sizeof u);
        mlt__uuid4(u);
        REQUIRE(u[36] == '\0', "uuid not terminated");
        assert_uuid4(u);
    }
}
END_TEST

START_TEST(uuid4_is_distinct_across_10k_calls)
{
    enum { N = 10000 };
    char(*u)[37] = malloc(N * sizeof *u);
    ck_assert_ptr_nonnull(u);
    for (int i = 0; i < N; i++) {
        mlt__uuid4(u[i]);
    }
    qsort(u, N, sizeof *u, cmp_uuid);
    for (int i = 1; i < N; i++) {
        REQUIRE(strcmp(u[i - 1], u[i]) != 0, "uuid %s made twice", u[i]);
    }
    /* every hex position varies: no digit is stuck */
    for (int pos = 0; pos < 36; pos++) {
        if (pos == 8 || pos == 13 || pos == 14 || pos == 18 || pos == 23) {
            continue;
        }
        bool varies = false;
        for (int i = 1; i < N && !varies; i++) {
            varies = u[i][pos] != u[0][pos];
        }
        ck_assert_msg(varies, "uuid position %d never changes", pos);
    }
    free(u);
}
END_TEST

START_TEST(rand01_is_in_unit_interval_and_spread)
{
    double lo = 1, hi = 0, sum = 0;
    int buckets[10] = {0};
    enum { N = 100000 };
    for (int i = 0; i < N; i++) {
        double r = mlt__rand01();
        REQUIRE(r >= 0.0 && r < 1.0, "rand01 gave %.17g", r);
        lo = r < lo ? r : lo;
        hi = r > hi ? r : hi;
        sum += r;
        buckets[(int)(r * 10)]++;
    }
    ck_assert_double_lt(lo, 0.001);
    ck_assert_double_gt(hi, 0.999);
    ck_assert_double_gt(sum / N, 0.48);
    ck_assert_double_lt(sum / N, 0.52);
    for (int i = 0; i < 10; i++) {
        ck_assert_int_gt(buckets[i], N / 10 - N / 50);
        ck_assert_int_lt(buckets[i], N / 10 + N / 50);
    }
}
END_TEST

/* ---- thread-local last error --------------------------------------------------------------- */

typedef struct thread_result {
    char before[64];
    mlt_err rc;
    char after[600];
} thread_result;

static void *failing_thread(void *arg)
{
    thread_result *res = arg;
    snprintf(res->before, sizeof res->before, "%s", mlt_last_error());
    /* a public call that takes no errbuf and fails */
    res->rc = mlt_tracker_add_callbacks(NULL, NULL, NULL);
    snprintf(res->after, sizeof res->after, "%s", mlt_last_error());
    return NULL;
}

START_TEST(last_error_is_thread_local)
{
    mlt__fail(MLT_ERR_IO, "main thread failure %d", 1);
    ck_assert_str_eq(mlt_last_error(), "main thread failure 1");
    thread_result res;
    memset(&res, 0, sizeof res);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, failing_thread, &res), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_str_eq(res.before, ""); /* a new thread has no failure yet */
    ck_assert_int_eq(res.rc, MLT_ERR_INVALID_ARG);
    ck_assert_str_ne(res.after, "");
    ck_assert_str_eq(mlt_last_error(), "main thread failure 1");
    mlt__fail_clear();
}
END_TEST

START_TEST(last_error_set_clear_and_truncate)
{
    ck_assert_int_eq(mlt__fail(MLT_ERR_STATE, "x=%d", 3), MLT_ERR_STATE);
    ck_assert_str_eq(mlt_last_error(), "x=3");
    mlt__fail_set("copied");
    ck_assert_str_eq(mlt_last_error(), "copied");
    mlt__fail_set(NULL);
    ck_assert_str_eq(mlt_last_error(), "");
    /* a message longer than the store is cut, between characters: 'm' then 2-byte ones */
    static char big[20000];
    memset(big, 'm', 1);
    for (size_t i = 1; i + 2 < sizeof big; i += 2) {
        memcpy(big + i, "\xc3\xa9", 2);
    }
    big[sizeof big - 2] = '\0';
    ck_assert_int_eq(mlt__fail(MLT_ERR_IO, "%s", big), MLT_ERR_IO);
    size_t cut = strlen(mlt_last_error());
    ck_assert_uint_gt(cut, 1000);
    ck_assert_uint_lt(cut, sizeof big - 2);
    ck_assert_uint_eq(cut % 2, 1); /* 'm' and whole characters */
    ck_assert_int_eq(strncmp(mlt_last_error(), big, cut), 0);
    /* a message may quote the one it replaces */
    mlt__fail(MLT_ERR_IO, "inner");
    mlt__fail(MLT_ERR_IO, "outer: %s", mlt_last_error());
    ck_assert_str_eq(mlt_last_error(), "outer: inner");
    mlt__fail_clear();
    ck_assert_str_eq(mlt_last_error(), "");
}
END_TEST

/* ---- error table --------------------------------------------------------------------------- */

static const struct {
    mlt_err code;
    const char *name;
    int retriable;
} all_errors[] = {
    {MLT_OK, "MLT_OK", 0},
    {MLT_ERR_INVALID_ARG, "MLT_ERR_INVALID_ARG", 0},
    {MLT_ERR_NOMEM, "MLT_ERR_NOMEM", 0},
    {MLT_ERR_UNKNOWN_OPTION, "MLT_ERR_UNKNOWN_OPTION", 0},
    {MLT_ERR_BAD_OPTION, "MLT_ERR_BAD_OPTION", 0},
    {MLT_ERR_INVALID_KEY, "MLT_ERR_INVALID_KEY", 0},
    {MLT_ERR_VALUE_TOO_LONG, "MLT_ERR_VALUE_TOO_LONG", 0},
    {MLT_ERR_INVALID_VALUE, "MLT_ERR_INVALID_VALUE", 0},
    {MLT_ERR_PARAM_CONFLICT, "MLT_ERR_PARAM_CONFLICT", 0},
    {MLT_ERR_STATE, "MLT_ERR_STATE", 0},
    {MLT_ERR_IO, "MLT_ERR_IO", 0},
    {MLT_ERR_NETWORK, "MLT_ERR_NETWORK", 1},
    {MLT_ERR_TIMEOUT, "MLT_ERR_TIMEOUT", 1},
    {MLT_ERR_SERVER, "MLT_ERR_SERVER", 1},
    {MLT_ERR_RATE_LIMITED, "MLT_ERR_RATE_LIMITED", 1},
    {MLT_ERR_REJECTED, "MLT_ERR_REJECTED", 0},
    {MLT_ERR_NOT_FOUND, "MLT_ERR_NOT_FOUND", 0},
    {MLT_ERR_AUTH, "MLT_ERR_AUTH", 0},
    {MLT_ERR_PROTOCOL, "MLT_ERR_PROTOCOL", 0},
    {MLT_ERR_TLS, "MLT_ERR_TLS", 0},
    {MLT_ERR_CALLBACK, "MLT_ERR_CALLBACK", 0},
    {MLT_ERR_QUEUE_FULL, "MLT_ERR_QUEUE_FULL", 0},
    {MLT_ERR_CORRUPT, "MLT_ERR_CORRUPT", 0},
    {MLT_ERR_LOCKED, "MLT_ERR_LOCKED", 0},
    {MLT_ERR_QUEUED, "MLT_ERR_QUEUED", 1},
};
#define N_ERRORS (sizeof all_errors / sizeof all_errors[0])

START_TEST(err_names_and_texts_cover_every_code)
{
    ck_assert_int_eq((int)N_ERRORS, 1 - (int)MLT_ERR_QUEUED);
    for (size_t i = 0; i < N_ERRORS; i++) {
        ck_assert_int_eq(all_errors[i].code, -(int)i); /* contiguous from MLT_OK down */
        const char *name = mlt_err_name(all_errors[i].code);
        const char *text = mlt_strerror(all_errors[i].code);
        ck_assert_ptr_nonnull(name);
        ck_assert_ptr_nonnull(text);
        ck_assert_str_eq(name, all_errors[i].name);
        ck_assert_str_ne(text, "");
        ck_assert_str_ne(text, "unknown error");
        for (size_t k = 0; k < i; k++) {
            ck_assert_str_ne(name, mlt_err_name(all_errors[k].code));
            ck_assert_str_ne(text, mlt_strerror(all_errors[k].code));
        }
    }
}
END_TEST

START_TEST(err_unknown_code_gives_unknown_error)
{
    const int unknown[] = {1, 7, -25, -100, 1000, -2147483647 - 1};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        mlt_err e = (mlt_err)unknown[i];
        ck_assert_str_eq(mlt_strerror(e), "unknown error");
        const char *name = mlt_err_name(e);
        ck_assert_ptr_nonnull(name);
        for (size_t k = 0; k < N_ERRORS; k++) {
            ck_assert_str_ne(name, all_errors[k].name);
        }
        ck_assert_int_eq(mlt_err_is_retriable(e), 0);
    }
}
END_TEST

START_TEST(err_is_retriable_exactly_for_transient_failures)
{
    for (size_t i = 0; i < N_ERRORS; i++) {
        ck_assert_msg(mlt_err_is_retriable(all_errors[i].code) == all_errors[i].retriable,
                      "%s: retriable %d", all_errors[i].name,
                      mlt_err_is_retriable(all_errors[i].code));
    }
}
END_TEST

START_TEST(run_status_names_are_mlflow_names)
{
    ck_assert_str_eq(mlt_run_status_name(MLT_RUN_FINISHED), "FINISHED");
    ck_assert_str_eq(mlt_run_status_name(MLT_RUN_FAILED), "FAILED");
    ck_assert_str_eq(mlt_run_status_name(MLT_RUN_KILLED), "KILLED");
    ck_assert_str_eq(mlt_run_status_name((mlt_run_status)3), "UNKNOWN");
    ck_assert_str_eq(mlt_run_status_name((mlt_run_status)-1), "UNKNOWN");
}
END_TEST

/* ---- clocks and diagnostics ---------------------------------------------------------------- */

START_TEST(clocks_move_forward)
{
    int64_t now = mlt__now_ms();
    ck_assert_int_gt(now, 1577836800000LL); /* after 2020-01-01 */
    ck_assert_int_lt(now, 4102444800000LL); /* before 2100-01-01 */
    int64_t a = mlt__mono_ns();
    mlt__sleep_ms(20);
    int64_t b = mlt__mono_ns();
    ck_assert_int_ge(b - a, 19000000);
    mlt__sleep_ms(0);
    mlt__sleep_ms(-5); /* returns at once */
    ck_assert_int_ge(mlt__mono_ns(), b);
}
END_TEST

typedef struct log_seen {
    int calls;
    int level;
    char msg[64];
} log_seen;

static void record_log(int level, const char *message, void *userdata)
{
    log_seen *s = userdata;
    s->calls++;
    s->level = level;
    snprintf(s->msg, sizeof s->msg, "%s", message);
}

START_TEST(log_reaches_the_callback_only_when_set)
{
    log_seen seen = {0};
    mlt__logger lg = {record_log, &seen};
    mlt__log(&lg, MLT_LOG_WARN, "retry %d of %d", 2, 7);
    ck_assert_int_eq(seen.calls, 1);
    ck_assert_int_eq(seen.level, MLT_LOG_WARN);
    ck_assert_str_eq(seen.msg, "retry 2 of 7");
    mlt__logger none = {NULL, &seen};
    mlt__log(&none, MLT_LOG_ERROR, "dropped");
    mlt__log(NULL, MLT_LOG_ERROR, "dropped");
    ck_assert_int_eq(seen.calls, 1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("common");
    MLT_ADD_TEST(s, buf_init_is_empty_and_free_resets);
    MLT_ADD_TEST(s, buf_grows_byte_by_byte_and_stays_nul_terminated);
    MLT_ADD_TEST(s, buf_append_keeps_binary_bytes_and_large_blocks);
    MLT_ADD_TEST(s, buf_puts_putc_and_printf_concatenate);
    MLT_ADD_TEST(s, buf_printf_into_empty_buffer);
    MLT_ADD_TEST(s, buf_reserve_makes_room_without_moving_data);
    MLT_ADD_TEST(s, buf_reserve_on_empty_buffer_leaves_an_empty_string);
    MLT_ADD_TEST(s, buf_reset_empties_but_keeps_allocation);
    MLT_ADD_TEST(s, buf_steal_detaches_the_data);
    MLT_ADD_TEST(s, buf_steal_of_empty_buffer_gives_empty_string);
    MLT_ADD_TEST(s, buf_oom_flag_sticks_and_steal_returns_null);
    MLT_ADD_TEST(s, buf_reserve_overflowing_size_sets_oom_without_allocating);
    MLT_ADD_TEST(s, buf_reset_clears_oom);
    MLT_ADD_TEST(s, grow_doubles_from_a_first_capacity_and_keeps_the_items);
    MLT_ADD_TEST(s, grow_to_exactly_the_capacity_does_nothing);
    MLT_ADD_TEST(s, grow_refuses_a_size_that_overflows_and_leaves_the_array);
    MLT_ADD_TEST(s, grow_refuses_a_doubling_that_overflows_and_leaves_the_array);
    MLT_ADD_TEST(s, json_str_escapes_quote_and_backslash);
    MLT_ADD_TEST(s, json_str_writes_other_control_chars_as_u00xx);
    MLT_ADD_TEST(s, json_strn_escapes_nul_and_stops_at_length);
    MLT_ADD_TEST(s, json_str_passes_utf8_and_del_through_unchanged);
    MLT_ADD_TEST(s, json_str_long_mixed_string_parses_back);
    MLT_ADD_TEST(s, json_i64_is_exact_for_extremes);
    MLT_ADD_TEST(s, json_double_writes_nan_and_infinities_as_strings);
    MLT_ADD_TEST(s, json_double_writes_familiar_values_in_shortest_form);
    MLT_ADD_TEST(s, json_double_keeps_the_sign_of_negative_zero);
    MLT_ADD_TEST(s, json_double_round_trips_edge_values);
    MLT_ADD_TEST(s, json_double_round_trips_random_doubles_in_shortest_form);
    MLT_ADD_TEST(s, json_double_keeps_short_decimals_short);
    MLT_ADD_TEST(s, json_double_is_shortest_for_subnormals);
    MLT_ADD_TEST(s, fmt_double_returns_the_length);
    MLT_ADD_TEST(s, fmt_float_writes_familiar_floats_in_shortest_form);
    MLT_ADD_TEST(s, fmt_float_round_trips_random_floats_in_shortest_form);
    MLT_ADD_TEST(s, fmt_float_is_shortest_for_subnormals);
    MLT_ADD_TEST(s, strdup_strndup_and_aprintf_copy);
    MLT_ADD_TEST(s, errbuf_copies_the_last_error_cut_to_fit_and_returns_the_code);
    MLT_ADD_TEST(s, utf8_cut_keeps_whole_characters);
    MLT_ADD_TEST(s, utf8_cut_drops_an_incomplete_character_at_the_end);
    MLT_ADD_TEST(s, utf8_cut_treats_invalid_bytes_as_the_copies_it_replaced_did);
    MLT_ADD_TEST(s, uuid4_has_version_and_variant_bits);
    MLT_ADD_TEST(s, uuid4_is_distinct_across_10k_calls);
    MLT_ADD_TEST(s, rand01_is_in_unit_interval_and_spread);
    MLT_ADD_TEST(s, last_error_is_thread_local);
    MLT_ADD_TEST(s, last_error_set_clear_and_truncate);
    MLT_ADD_TEST(s, err_names_and_texts_cover_every_code);
    MLT_ADD_TEST(s, err_unknown_code_gives_unknown_error);
    MLT_ADD_TEST(s, err_is_retriable_exactly_for_transient_failures);
    MLT_ADD_TEST(s, run_status_names_are_mlflow_names);
    MLT_ADD_TEST(s, clocks_move_forward);
    MLT_ADD_TEST(s, log_reaches_the_callback_only_when_set);
    return mlt_test_run_suite(s);
}
