/*
 * check_validate.c - unit tests of src/validate.c: the strict UTF-8 decoder and the MLflow
 * server's rules for keys, values, run and experiment names and timestamps, including the
 * messages written to errbuf. Expected verdicts were cross-checked against the server's own
 * mlflow/utils/validation.py (mlflow 3.17.2).
 */
#include "testutil.h"
#include "validate.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* ---- helpers ------------------------------------------------------------------------------- */

/* a followed by b, in a new string (caller frees). */
static char *concat(const char *a, const char *b)
{
    size_t la = strlen(a);
    size_t lb = strlen(b);
    char *s = malloc(la + lb + 1);
    ck_assert_ptr_nonnull(s);
    memcpy(s, a, la);
    memcpy(s + la, b, lb + 1);
    return s;
}

static const mlt__kind all_kinds[] = {MLT__METRIC, MLT__PARAM, MLT__TAG};

/* Asserts key gets rc for every kind of key. */
static void assert_key_all_kinds(const char *key, mlt_err rc)
{
    for (size_t i = 0; i < sizeof all_kinds / sizeof all_kinds[0]; i++) {
        char err[256] = "";
        mlt_err got = mlt__errbuf(err, sizeof err, mlt__validate_key(all_kinds[i], key));
        ck_assert_msg(got == rc, "kind %d key '%s': expected %d, got %d (%s)", (int)all_kinds[i],
                      key, (int)rc, (int)got, err);
        if (rc != MLT_OK) {
            ck_assert_msg(err[0] != '\0', "no message for key '%s'", key);
        }
    }
}

/* Asserts the param-key message for key contains needle, and returns the code. */
static mlt_err key_message_has(const char *key, const char *needle)
{
    char err[512] = "";
    mlt_err rc = mlt__errbuf(err, sizeof err, mlt__validate_key(MLT__PARAM, key));
    ck_assert_msg(strstr(err, needle) != NULL, "message '%s' lacks '%s'", err, needle);
    return rc;
}

/* True when s contains a byte below 0x20 or DEL. */
static bool has_control_byte(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p != 0; p++) {
        if (*p < 0x20 || *p == 0x7F) {
            return true;
        }
    }
    return false;
}

/* ---- mlt__utf8_len ------------------------------------------------------------------------- */

START_TEST(utf8_len_counts_ascii_and_empty)
{
    ck_assert_int_eq(mlt__utf8_len(""), 0);
    ck_assert_int_eq(mlt__utf8_len("abc"), 3);
    ck_assert_int_eq(mlt__utf8_len("a b/c:d"), 7);
}
END_TEST

START_TEST(utf8_len_counts_code_points_not_bytes)
{
    ck_assert_int_eq(mlt__utf8_len("\xc3\xb1"), 1);                 /* ñ */
    ck_assert_int_eq(mlt__utf8_len("\xe6\x97\xa5\xe6\x9c\xac"), 2); /* 日本 */
    ck_assert_int_eq(mlt__utf8_len("\xf0\x9f\x98\x80"), 1);         /* U+1F600 */
    ck_assert_int_eq(mlt__utf8_len("a\xc3\xb1\xe6\x97\xa5\xf0\x9f\x98\x80z"), 5);
}
END_TEST

START_TEST(utf8_len_accepts_every_boundary_scalar_value)
{
    ck_assert_int_eq(mlt__utf8_len("\x7f"), 1);             /* U+007F */
    ck_assert_int_eq(mlt__utf8_len("\xc2\x80"), 1);         /* U+0080 */
    ck_assert_int_eq(mlt__utf8_len("\xdf\xbf"), 1);         /* U+07FF */
    ck_assert_int_eq(mlt__utf8_len("\xe0\xa0\x80"), 1);     /* U+0800 */
    ck_assert_int_eq(mlt__utf8_len("\xed\x9f\xbf"), 1);     /* U+D7FF */
    ck_assert_int_eq(mlt__utf8_len("\xee\x80\x80"), 1);     /* U+E000 */
    ck_assert_int_eq(mlt__utf8_len("\xef\xbf\xbf"), 1);     /* U+FFFF */
    ck_assert_int_eq(mlt__utf8_len("\xf0\x90\x80\x80"), 1); /* U+10000 */
    ck_assert_int_eq(mlt__utf8_len("\xf4\x8f\xbf\xbf"), 1); /* U+10FFFF */
}
END_TEST

START_TEST(utf8_len_rejects_null)
{
    ck_assert_int_eq(mlt__utf8_len(NULL), -1);
}
END_TEST

START_TEST(utf8_len_rejects_overlong_forms)
{
    ck_assert_int_eq(mlt__utf8_len("\xc0\x80"), -1); /* NUL in 2 bytes */
    ck_assert_int_eq(mlt__utf8_len("\xc0\xaf"), -1); /* '/' in 2 bytes */
    ck_assert_int_eq(mlt__utf8_len("\xc1\xbf"), -1);
    ck_assert_int_eq(mlt__utf8_len("\xe0\x80\xaf"), -1);     /* '/' in 3 bytes */
    ck_assert_int_eq(mlt__utf8_len("\xe0\x9f\xbf"), -1);     /* U+07FF in 3 bytes */
    ck_assert_int_eq(mlt__utf8_len("\xf0\x80\x80\xaf"), -1); /* '/' in 4 bytes */
    ck_assert_int_eq(mlt__utf8_len("\xf0\x8f\xbf\xbf"), -1); /* U+FFFF in 4 bytes */
}
END_TEST

START_TEST(utf8_len_rejects_surrogates)
{
    ck_assert_int_eq(mlt__utf8_len("\xed\xa0\x80"), -1); /* U+D800 */
    ck_assert_int_eq(mlt__utf8_len("\xed\xaf\xbf"), -1); /* U+DBFF */
    ck_assert_int_eq(mlt__utf8_len("\xed\xb0\x80"), -1); /* U+DC00 */
    ck_assert_int_eq(mlt__utf8_len("\xed\xbf\xbf"), -1); /* U+DFFF */
    /* A surrogate pair encoded as two 3-byte sequences (CESU-8) is not UTF-8 either. */
    ck_assert_int_eq(mlt__utf8_len("\xed\xa0\xbd\xed\xb8\x80"), -1);
}
END_TEST

START_TEST(utf8_len_rejects_code_points_above_10ffff)
{
    ck_assert_int_eq(mlt__utf8_len("\xf4\x90\x80\x80"), -1); /* U+110000 */
    ck_assert_int_eq(mlt__utf8_len("\xf5\x80\x80\x80"), -1);
    ck_assert_int_eq(mlt__utf8_len("\xf7\xbf\xbf\xbf"), -1);
    ck_assert_int_eq(mlt__utf8_len("\xf8\x88\x80\x80\x80"), -1); /* old 5-byte form */
    ck_assert_int_eq(mlt__utf8_len("\xfc\x84\x80\x80\x80\x80"), -1);
}
END_TEST

START_TEST(utf8_len_rejects_truncated_sequences)
{
    ck_assert_int_eq(mlt__utf8_len("\xc3"), -1);
    ck_assert_int_eq(mlt__utf8_len("\xe6\x97"), -1);
    ck_assert_int_eq(mlt__utf8_len("\xf0\x9f\x98"), -1);
    ck_assert_int_eq(mlt__utf8_len("abc\xe6"), -1);
    /* Cut short by an ASCII byte rather than by the end of the string. */
    ck_assert_int_eq(mlt__utf8_len("\xc3z"), -1);
    ck_assert_int_eq(mlt__utf8_len("\xe6\x97z"), -1);
    ck_assert_int_eq(mlt__utf8_len("\xf0\x9f\x98z"), -1);
}
END_TEST

START_TEST(utf8_len_rejects_stray_continuation_bytes)
{
    ck_assert_int_eq(mlt__utf8_len("\x80"), -1);
    ck_assert_int_eq(mlt__utf8_len("\xbf"), -1);
    ck_assert_int_eq(mlt__utf8_len("a\x80z"), -1);
    ck_assert_int_eq(mlt__utf8_len("\xc3\xb1\xb1"), -1); /* one continuation too many */
}
END_TEST

START_TEST(utf8_len_rejects_invalid_lead_bytes)
{
    ck_assert_int_eq(mlt__utf8_len("\xc0"), -1);
    ck_assert_int_eq(mlt__utf8_len("\xc1"), -1);
    ck_assert_int_eq(mlt__utf8_len("\xfe"), -1);
    ck_assert_int_eq(mlt__utf8_len("\xff"), -1);
    ck_assert_int_eq(mlt__utf8_len("ok\xffok"), -1);
}
END_TEST

/* ---- keys: characters ---------------------------------------------------------------------- */

START_TEST(key_accepts_plain_names)
{
    const char *ok[] = {"loss",
                        "val_loss",
                        "train/loss",
                        "a.b-c d:e",
                        "A1",
                        "_",
                        "-",
                        ":",
                        " ",
                        "0",
                        "9lives",
                        "mlflow.runName",
                        "x/y/z",
                        "a b",
                        " a ",
                        "a:b/c-d.e f_g",
                        "system/cpu_usage",
                        "a/ /b",
                        " /a",
                        "a/ "};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        assert_key_all_kinds(ok[i], MLT_OK);
    }
}
END_TEST

START_TEST(key_accepts_every_allowed_ascii_character)
{
    char key[4] = "a?b";
    const char *allowed = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-. /:";
    for (const char *c = allowed; *c != '\0'; c++) {
        key[1] = *c;
        assert_key_all_kinds(key, MLT_OK);
    }
}
END_TEST

START_TEST(key_rejects_every_other_printable_ascii_character)
{
    const char *allowed = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-. /:";
    char key[4] = "a?b";
    for (int c = 0x21; c < 0x7F; c++) {
        char quoted[4] = {'\'', (char)c, '\'', '\0'};
        if (strchr(allowed, c) != NULL) {
            continue;
        }
        key[1] = (char)c;
        assert_key_all_kinds(key, MLT_ERR_INVALID_KEY);
        ck_assert_int_eq(key_message_has(key, quoted), MLT_ERR_INVALID_KEY);
    }
}
END_TEST

START_TEST(key_rejects_control_characters)
{
    char key[4] = "a?b";
    for (int c = 0x01; c < 0x20; c++) {
        key[1] = (char)c;
        assert_key_all_kinds(key, MLT_ERR_INVALID_KEY);
    }
    key[1] = 0x7F;
    assert_key_all_kinds(key, MLT_ERR_INVALID_KEY);
    ck_assert_int_eq(key_message_has("a\tb", "character U+0009 is not allowed"),
                     MLT_ERR_INVALID_KEY);
}
END_TEST

START_TEST(key_rejects_trailing_newline)
{
    /* The server's re.match(r"^[...]*$") lets one trailing "\n" through ('$' matches before it);
     * the client refuses it on purpose: such a key is almost always an fgets() leftover. */
    assert_key_all_kinds("loss\n", MLT_ERR_INVALID_KEY);
    assert_key_all_kinds("\nloss", MLT_ERR_INVALID_KEY);
}
END_TEST

START_TEST(key_accepts_unicode_letters)
{
    const char *ok[] = {
        "\xc3\xb1",                                         /* ñ */
        "\xe6\x97\xa5\xe6\x9c\xac",                         /* 日本 */
        "\xce\xa9mega",                                     /* Ωmega */
        "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82", /* Привет */
        "\xd8\xb9\xd8\xb1\xd8\xa8\xd9\x8a",                 /* عربي */
        "\xed\x95\x9c\xea\xb5\xad\xec\x96\xb4",             /* 한국어 */
        "\xc3\x9f",                                         /* ß */
        "\xc3\xa9",                                         /* precomposed é */
        "\xc2\xb5",                                         /* µ, Ll inside Latin-1 symbols */
        "\xc2\xaa\xc2\xba",                                 /* ª º, Lo */
        "\xef\xbc\xa1",                                     /* fullwidth A */
        "\xf0\xa0\x80\x80",                                 /* U+20000, CJK extension B */
        "caf\xc3\xa9/na\xc3\xafve d\xc3\xa9j\xc3\xa0:vu",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        assert_key_all_kinds(ok[i], MLT_OK);
    }
}
END_TEST

START_TEST(key_accepts_unicode_digits_and_numbers)
{
    assert_key_all_kinds("\xd9\xa3", MLT_OK);     /* ٣ Arabic-Indic three, Nd */
    assert_key_all_kinds("x\xc2\xb2", MLT_OK);    /* x², No */
    assert_key_all_kinds("\xc2\xbd", MLT_OK);     /* ½, No */
    assert_key_all_kinds("\xe2\x85\xab", MLT_OK); /* Ⅻ, Nl */
    assert_key_all_kinds("\xef\xbc\x91", MLT_OK); /* fullwidth 1 */
}
END_TEST

START_TEST(key_rejects_combining_marks)
{
    /* Python's \w does not match marks (Mn, Mc, Me), so the server refuses decomposed letters
     * and most Devanagari words (their vowel signs are marks). */
    assert_key_all_kinds("e\xcc\x81", MLT_ERR_INVALID_KEY); /* e + U+0301 */
    assert_key_all_kinds("\xe0\xa4\xb9\xe0\xa4\xbf\xe0\xa4\xa8\xe0\xa5\x8d\xe0\xa4\xa6\xe0\xa5\x80",
                         MLT_ERR_INVALID_KEY);                  /* हिन्दी */
    assert_key_all_kinds("a\xe2\x83\x9d", MLT_ERR_INVALID_KEY); /* U+20DD enclosing circle, Me */
    ck_assert_int_eq(key_message_has("e\xcc\x81", "character U+0301 is not allowed"),
                     MLT_ERR_INVALID_KEY);
}
END_TEST

START_TEST(key_rejects_latin1_punctuation_and_symbols)
{
    const char *bad[] = {
        "\xc2\xa0", /* no-break space */
        "\xc2\xa1", /* ¡ */
        "\xc2\xa7", /* § */
        "\xc2\xa9", /* © */
        "\xc2\xab", /* « */
        "\xc2\xad", /* soft hyphen */
        "\xc2\xb0", /* ° */
        "\xc2\xb1", /* ± */
        "\xc2\xb7", /* · */
        "\xc2\xbb", /* » */
        "\xc2\xbf", /* ¿ */
        "\xc3\x97", /* × */
        "\xc3\xb7", /* ÷ */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *key = concat("a", bad[i]);
        assert_key_all_kinds(key, MLT_ERR_INVALID_KEY);
        free(key);
    }
}
END_TEST

START_TEST(key_rejects_c1_controls)
{
    assert_key_all_kinds("a\xc2\x80", MLT_ERR_INVALID_KEY);
    assert_key_all_kinds("a\xc2\x85", MLT_ERR_INVALID_KEY); /* NEL */
    assert_key_all_kinds("a\xc2\x9b", MLT_ERR_INVALID_KEY); /* CSI */
    assert_key_all_kinds("a\xc2\x9f", MLT_ERR_INVALID_KEY);
}
END_TEST

START_TEST(key_rejects_unicode_spaces_and_general_punctuation)
{
    const char *bad[] = {
        "\xe2\x80\x83", /* em space */
        "\xe3\x80\x80", /* ideographic space */
        "\xe2\x80\x8b", /* zero width space, Cf */
        "\xe2\x80\x94", /* em dash */
        "\xe2\x80\xa6", /* ellipsis */
        "\xe2\x80\xa8", /* line separator */
        "\xe2\x80\xae", /* right-to-left override */
        "\xe3\x80\x82", /* ideographic full stop */
        "\xef\xbc\x81", /* fullwidth ! */
        "\xef\xbb\xbf", /* BOM / zero width no-break space */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *key = concat("a", bad[i]);
        assert_key_all_kinds(key, MLT_ERR_INVALID_KEY);
        free(key);
    }
}
END_TEST

START_TEST(key_rejects_symbols_and_emoji)
{
    assert_key_all_kinds("cost\xe2\x82\xac", MLT_ERR_INVALID_KEY);    /* € */
    assert_key_all_kinds("a\xe2\x84\xa2", MLT_ERR_INVALID_KEY);       /* ™ */
    assert_key_all_kinds("a\xe2\x88\x91", MLT_ERR_INVALID_KEY);       /* ∑ */
    assert_key_all_kinds("ok\xe2\x9c\x93", MLT_ERR_INVALID_KEY);      /* ✓ */
    assert_key_all_kinds("fun\xf0\x9f\x98\x80", MLT_ERR_INVALID_KEY); /* U+1F600 */
    ck_assert_int_eq(key_message_has("cost\xe2\x82\xac", "character U+20AC is not allowed"),
                     MLT_ERR_INVALID_KEY);
    ck_assert_int_eq(key_message_has("a\xf0\x9f\x98\x80", "character U+1F600 is not allowed"),
                     MLT_ERR_INVALID_KEY);
}
END_TEST

START_TEST(key_rejects_private_use_characters)
{
    assert_key_all_kinds("a\xee\x80\x80", MLT_ERR_INVALID_KEY);     /* U+E000 */
    assert_key_all_kinds("a\xef\xa3\xbf", MLT_ERR_INVALID_KEY);     /* U+F8FF */
    assert_key_all_kinds("a\xf3\xb0\x80\x80", MLT_ERR_INVALID_KEY); /* U+F0000 */
    assert_key_all_kinds("a\xf4\x8f\xbf\xbd", MLT_ERR_INVALID_KEY); /* U+10FFFD */
}
END_TEST

START_TEST(key_rejects_noncharacters)
{
    assert_key_all_kinds("a\xef\xb7\x90", MLT_ERR_INVALID_KEY);     /* U+FDD0 */
    assert_key_all_kinds("a\xef\xbf\xbe", MLT_ERR_INVALID_KEY);     /* U+FFFE */
    assert_key_all_kinds("a\xef\xbf\xbf", MLT_ERR_INVALID_KEY);     /* U+FFFF */
    assert_key_all_kinds("a\xf0\x9f\xbf\xbe", MLT_ERR_INVALID_KEY); /* U+1FFFE */
    assert_key_all_kinds("a\xf4\x8f\xbf\xbf", MLT_ERR_INVALID_KEY); /* U+10FFFF */
}
END_TEST

START_TEST(key_accepts_unassigned_code_points)
{
    /* The documented approximation: code points unassigned in Unicode 14 are let through, so that
     * letters of later Unicode versions are never refused by the client. */
    assert_key_all_kinds("a\xcd\xb8", MLT_OK);         /* U+0378 */
    assert_key_all_kinds("a\xf1\x80\x80\x80", MLT_OK); /* U+40000, plane 4 */
}
END_TEST

/* ---- keys: emptiness, NULL, encoding ------------------------------------------------------- */

START_TEST(key_rejects_empty)
{
    char err[128] = "";
    assert_key_all_kinds("", MLT_ERR_INVALID_KEY);
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__validate_key(MLT__METRIC, "")),
                     MLT_ERR_INVALID_KEY);
    ck_assert_str_eq(err, "metric key '' is invalid: it must not be empty");
}
END_TEST

START_TEST(key_rejects_null)
{
    char err[128] = "";
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__validate_key(MLT__PARAM, NULL)),
                     MLT_ERR_INVALID_ARG);
    ck_assert_str_eq(err, "param key is NULL");
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_key(MLT__TAG, NULL)), MLT_ERR_INVALID_ARG);
}
END_TEST

START_TEST(key_rejects_unknown_kind)
{
    char err[128] = "";
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__validate_key((mlt__kind)42, "loss")),
                     MLT_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(err, "42"));
}
END_TEST

START_TEST(key_rejects_invalid_utf8)
{
    char err[256] = "";
    assert_key_all_kinds("a\xff", MLT_ERR_INVALID_VALUE);
    assert_key_all_kinds("\xc3", MLT_ERR_INVALID_VALUE);
    assert_key_all_kinds("a\xed\xa0\x80", MLT_ERR_INVALID_VALUE);
    assert_key_all_kinds("a\xf4\x90\x80\x80", MLT_ERR_INVALID_VALUE);
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__validate_key(MLT__METRIC, "ab\xffz")),
                     MLT_ERR_INVALID_VALUE);
    ck_assert_str_eq(err, "metric key 'ab\\xFFz' is invalid: "
                          "it is not valid UTF-8 (byte 0xFF at offset 2)");
}
END_TEST

START_TEST(key_rejects_overlong_slash_and_dot)
{
    /* Overlong forms must not sneak '/' or '.' past the path rules. */
    assert_key_all_kinds("a\xc0\xaf\xc0\xaf"
                         "b",
                         MLT_ERR_INVALID_VALUE);
    assert_key_all_kinds("\xc0\xae\xc0\xae/a", MLT_ERR_INVALID_VALUE);
}
END_TEST

/* ---- keys: path rules ---------------------------------------------------------------------- */

START_TEST(key_rejects_leading_slash)
{
    assert_key_all_kinds("/a", MLT_ERR_INVALID_KEY);
    assert_key_all_kinds("/", MLT_ERR_INVALID_KEY);
    assert_key_all_kinds("//a", MLT_ERR_INVALID_KEY);
    assert_key_all_kinds("///a", MLT_ERR_INVALID_KEY);
    ck_assert_int_eq(key_message_has("/a", "it must not start with '/'"), MLT_ERR_INVALID_KEY);
}
END_TEST

START_TEST(key_rejects_trailing_slash)
{
    assert_key_all_kinds("a/", MLT_ERR_INVALID_KEY);
    assert_key_all_kinds("a/b/", MLT_ERR_INVALID_KEY);
    ck_assert_int_eq(key_message_has("a/b/", "it must not end with '/'"), MLT_ERR_INVALID_KEY);
}
END_TEST

START_TEST(key_rejects_double_slash)
{
    char err[128] = "";
    assert_key_all_kinds("a//b", MLT_ERR_INVALID_KEY);
    assert_key_all_kinds("a/b//c", MLT_ERR_INVALID_KEY);
    assert_key_all_kinds("a///b", MLT_ERR_INVALID_KEY);
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__validate_key(MLT__METRIC, "a//b")),
                     MLT_ERR_INVALID_KEY);
    ck_assert_str_eq(err, "metric key 'a//b' is invalid: it must not contain '//'");
}
END_TEST

START_TEST(key_rejects_dot_segment)
{
    assert_key_all_kinds(".", MLT_ERR_INVALID_KEY);
    assert_key_all_kinds("./a", MLT_ERR_INVALID_KEY);
    assert_key_all_kinds("a/./b", MLT_ERR_INVALID_KEY);
    assert_key_all_kinds("a/.", MLT_ERR_INVALID_KEY);
    ck_assert_int_eq(key_message_has("a/./b", "it must not contain a '.' path segment"),
                     MLT_ERR_INVALID_KEY);
}
END_TEST

START_TEST(key_rejects_dot_dot_segment)
{
    assert_key_all_kinds("..", MLT_ERR_INVALID_KEY);
    assert_key_all_kinds("../a", MLT_ERR_INVALID_KEY);
    assert_key_all_kinds("a/../b", MLT_ERR_INVALID_KEY);
    assert_key_all_kinds("a/..", MLT_ERR_INVALID_KEY);
    assert_key_all_kinds("a/b/../..", MLT_ERR_INVALID_KEY);
    ck_assert_int_eq(key_message_has("a/../b", "it must not contain a '..' path segment"),
                     MLT_ERR_INVALID_KEY);
}
END_TEST

START_TEST(key_rejects_leading_dot_dot_even_inside_a_name)
{
    /* path_not_unique() refuses any key whose normal form starts with "..", not only a ".."
     * segment. */
    assert_key_all_kinds("..a", MLT_ERR_INVALID_KEY);
    assert_key_all_kinds("...", MLT_ERR_INVALID_KEY);
    assert_key_all_kinds("..a/b", MLT_ERR_INVALID_KEY);
    ck_assert_int_eq(key_message_has("..a", "it must not start with '..'"), MLT_ERR_INVALID_KEY);
}
END_TEST

START_TEST(key_accepts_dots_inside_segments)
{
    const char *ok[] = {".a",        "a.",    "a..",     "a..b", "a/..b", "a/b..", "a/.b",
                        ".hidden/x", "a/...", "a.b/c.d", ". a",  "a/. ",  "a/.. b"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        assert_key_all_kinds(ok[i], MLT_OK);
    }
}
END_TEST

START_TEST(key_characters_are_checked_before_path_rules)
{
    /* As on the server, a bad character is reported first. */
    ck_assert_int_eq(key_message_has("/a#", "character '#'"), MLT_ERR_INVALID_KEY);
    ck_assert_int_eq(key_message_has("/a//b/", "must not start with '/'"), MLT_ERR_INVALID_KEY);
}
END_TEST

/* ---- keys: length -------------------------------------------------------------------------- */

START_TEST(key_accepts_250_ascii_characters)
{
    char *key = mlt_test_repeat("a", 250);
    assert_key_all_kinds(key, MLT_OK);
    free(key);
}
END_TEST

START_TEST(key_rejects_251_ascii_characters)
{
    char *key = mlt_test_repeat("a", 251);
    assert_key_all_kinds(key, MLT_ERR_VALUE_TOO_LONG);
    ck_assert_int_eq(key_message_has(key, "is too long: 251 characters, the limit is 250"),
                     MLT_ERR_VALUE_TOO_LONG);
    free(key);
}
END_TEST

START_TEST(key_accepts_250_two_byte_letters)
{
    char *key = mlt_test_repeat("\xc3\xb1", 250); /* 500 bytes */
    ck_assert_uint_eq(strlen(key), 500);
    assert_key_all_kinds(key, MLT_OK);
    free(key);
}
END_TEST

START_TEST(key_rejects_251_two_byte_letters)
{
    char *key = mlt_test_repeat("\xc3\xb1", 251);
    assert_key_all_kinds(key, MLT_ERR_VALUE_TOO_LONG);
    free(key);
}
END_TEST

START_TEST(key_counts_four_byte_letters_as_one)
{
    char *ok = mlt_test_repeat("\xf0\xa0\x80\x80", 250); /* 1000 bytes */
    char *bad = mlt_test_repeat("\xf0\xa0\x80\x80", 251);
    assert_key_all_kinds(ok, MLT_OK);
    assert_key_all_kinds(bad, MLT_ERR_VALUE_TOO_LONG);
    free(ok);
    free(bad);
}
END_TEST

START_TEST(key_length_boundary_with_multibyte_last_character)
{
    char *base249 = mlt_test_repeat("a", 249);
    char *base250 = mlt_test_repeat("a", 250);
    char *ok = concat(base249, "\xe6\x97\xa5");  /* 250 code points, 252 bytes */
    char *bad = concat(base250, "\xe6\x97\xa5"); /* 251 code points */
    assert_key_all_kinds(ok, MLT_OK);
    assert_key_all_kinds(bad, MLT_ERR_VALUE_TOO_LONG);
    free(base249);
    free(base250);
    free(ok);
    free(bad);
}
END_TEST

/* ---- keys: messages ------------------------------------------------------------------------ */

START_TEST(key_message_names_the_kind)
{
    char err[128] = "";
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__validate_key(MLT__METRIC, "a b#")),
                     MLT_ERR_INVALID_KEY);
    ck_assert_ptr_eq(strstr(err, "metric key 'a b#' is invalid: character '#'"), err);
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__validate_key(MLT__PARAM, "a#")),
                     MLT_ERR_INVALID_KEY);
    ck_assert_ptr_eq(strstr(err, "param key 'a#'"), err);
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__validate_key(MLT__TAG, "a#")),
                     MLT_ERR_INVALID_KEY);
    ck_assert_ptr_eq(strstr(err, "tag key 'a#'"), err);
}
END_TEST

START_TEST(key_message_lists_the_allowed_characters)
{
    ck_assert_int_eq(
        key_message_has("a@b", "is not allowed (only letters, digits, '_', '-', '.', ' ', '/' "
                               "and ':' are)"),
        MLT_ERR_INVALID_KEY);
}
END_TEST

START_TEST(key_message_quotes_at_most_64_bytes_of_a_long_key)
{
    char err[512] = "";
    char *key = mlt_test_repeat("a", 300);
    char *a64 = mlt_test_repeat("a", 64);
    char expected[512];
    snprintf(expected, sizeof expected,
             "tag key '%s...' is too long: 300 characters, the limit is 250", a64);
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__validate_key(MLT__TAG, key)),
                     MLT_ERR_VALUE_TOO_LONG);
    ck_assert_str_eq(err, expected);
    free(key);
    free(a64);
}
END_TEST

START_TEST(key_message_does_not_shorten_a_64_byte_key)
{
    char err[512] = "";
    char *key = mlt_test_repeat("a", 63);
    char *bad = concat(key, "#"); /* exactly 64 bytes */
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__validate_key(MLT__TAG, bad)),
                     MLT_ERR_INVALID_KEY);
    ck_assert_ptr_null(strstr(err, "..."));
    ck_assert_ptr_nonnull(strstr(err, "#'"));
    free(key);
    free(bad);
}
END_TEST

START_TEST(key_message_cuts_the_quote_on_a_utf8_boundary)
{
    char err[512] = "";
    char *a63 = mlt_test_repeat("a", 63);
    char *tail = mlt_test_repeat("\xc3\xb1", 200);
    char *key = concat(a63, tail); /* byte 64 is the first half of an ñ */
    char *expected_quote = concat(a63, "...'");
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__validate_key(MLT__PARAM, key)),
                     MLT_ERR_VALUE_TOO_LONG);
    ck_assert_ptr_nonnull(strstr(err, expected_quote));
    ck_assert_int_ge(mlt__utf8_len(err), 0);
    free(a63);
    free(tail);
    free(key);
    free(expected_quote);
}
END_TEST

START_TEST(key_message_of_multibyte_key_stays_valid_utf8)
{
    char err[512] = "";
    char *key = mlt_test_repeat("\xe6\x97\xa5", 300);
    char *q21 = mlt_test_repeat("\xe6\x97\xa5", 21); /* 63 bytes: a 22nd would pass 64 */
    char *expected = concat(q21, "...'");
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__validate_key(MLT__PARAM, key)),
                     MLT_ERR_VALUE_TOO_LONG);
    ck_assert_ptr_nonnull(strstr(err, expected));
    ck_assert_int_ge(mlt__utf8_len(err), 0);
    free(key);
    free(q21);
    free(expected);
}
END_TEST

START_TEST(key_message_escapes_control_bytes)
{
    char err[256] = "";
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__validate_key(MLT__METRIC, "a\nb\x1b[2J")),
                     MLT_ERR_INVALID_KEY);
    ck_assert_ptr_nonnull(strstr(err, "'a\\x0Ab\\x1B[2J'"));
    ck_assert(!has_control_byte(err));
}
END_TEST

START_TEST(key_message_escapes_invalid_and_c1_bytes)
{
    char err[256] = "";
    ck_assert_int_eq(mlt__errbuf(err, sizeof err,
                                 mlt__validate_key(MLT__METRIC, "a\xc2\x9b"
                                                                "b")),
                     MLT_ERR_INVALID_KEY);
    ck_assert_ptr_nonnull(strstr(err, "'a\\xC2\\x9Bb'"));
    ck_assert_int_eq(mlt__errbuf(err, sizeof err,
                                 mlt__validate_key(MLT__METRIC, "a\xe2\x80\xae"
                                                                "b")),
                     MLT_ERR_INVALID_KEY);
    ck_assert_ptr_nonnull(strstr(err, "'a\\xE2\\x80\\xAEb'"));
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__validate_key(MLT__METRIC, "a\xc3\x28")),
                     MLT_ERR_INVALID_VALUE);
    ck_assert_ptr_nonnull(strstr(err, "'a\\xC3('"));
    ck_assert_int_ge(mlt__utf8_len(err), 0);
}
END_TEST

START_TEST(key_message_of_long_control_key_is_bounded)
{
    char err[1024] = "";
    char *key = mlt_test_repeat("\x01", 500);
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__validate_key(MLT__TAG, key)),
                     MLT_ERR_INVALID_KEY);
    /* 16 escapes of 4 bytes fill the 64-byte quote. */
    ck_assert_ptr_nonnull(strstr(err, "\\x01\\x01...'"));
    ck_assert_uint_lt(strlen(err), 200);
    ck_assert(!has_control_byte(err));
    free(key);
}
END_TEST

START_TEST(key_allows_null_errbuf)
{
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_key(MLT__METRIC, "a//b")),
                     MLT_ERR_INVALID_KEY);
    ck_assert_int_eq(mlt__errbuf(NULL, 100, mlt__validate_key(MLT__METRIC, "a//b")),
                     MLT_ERR_INVALID_KEY);
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_key(MLT__METRIC, "loss")), MLT_OK);
}
END_TEST

START_TEST(key_leaves_errbuf_alone_when_errlen_is_zero)
{
    char err[8] = "keep";
    ck_assert_int_eq(mlt__errbuf(err, 0, mlt__validate_key(MLT__METRIC, "a//b")),
                     MLT_ERR_INVALID_KEY);
    ck_assert_str_eq(err, "keep");
}
END_TEST

START_TEST(key_leaves_errbuf_alone_on_success)
{
    char err[8] = "keep";
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__validate_key(MLT__METRIC, "loss")), MLT_OK);
    ck_assert_str_eq(err, "keep");
}
END_TEST

START_TEST(key_truncated_errbuf_stays_nul_terminated)
{
    char err[16];
    memset(err, 'X', sizeof err);
    ck_assert_int_eq(mlt__errbuf(err, 11, mlt__validate_key(MLT__METRIC, "a//b")),
                     MLT_ERR_INVALID_KEY);
    ck_assert_str_eq(err, "metric key");
    ck_assert_int_eq(err[11], 'X'); /* nothing written past errlen */

    ck_assert_int_eq(mlt__errbuf(err, 1, mlt__validate_key(MLT__METRIC, "a//b")),
                     MLT_ERR_INVALID_KEY);
    ck_assert_str_eq(err, "");
}
END_TEST

START_TEST(key_truncated_errbuf_does_not_split_a_character)
{
    /* "param key '" is 11 bytes; with errlen 13 the 2-byte ñ at bytes 11-12 cannot fit whole. */
    char err[32];
    ck_assert_int_eq(mlt__errbuf(err, 13, mlt__validate_key(MLT__PARAM, "\xc3\xb1/")),
                     MLT_ERR_INVALID_KEY);
    ck_assert_str_eq(err, "param key '");
    ck_assert_int_eq(mlt__errbuf(err, 14, mlt__validate_key(MLT__PARAM, "\xc3\xb1/")),
                     MLT_ERR_INVALID_KEY);
    ck_assert_str_eq(err, "param key '\xc3\xb1");
    ck_assert_int_eq(mlt__errbuf(err, 14, mlt__validate_key(MLT__PARAM, "\xe6\x97\xa5/")),
                     MLT_ERR_INVALID_KEY);
    ck_assert_str_eq(err, "param key '");
}
END_TEST

/* ---- param values -------------------------------------------------------------------------- */

START_TEST(param_value_accepts_6000_characters)
{
    char *v = mlt_test_repeat("x", 6000);
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_param_value("lr", v)), MLT_OK);
    free(v);
}
END_TEST

START_TEST(param_value_rejects_6001_characters)
{
    char err[256] = "";
    char *v = mlt_test_repeat("x", 6001);
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__validate_param_value("lr", v)),
                     MLT_ERR_VALUE_TOO_LONG);
    ck_assert_str_eq(err, "param 'lr' value is too long: 6001 characters, the limit is 6000");
    free(v);
}
END_TEST

START_TEST(param_value_counts_code_points_not_bytes)
{
    char *ok = mlt_test_repeat("\xe6\x97\xa5", 6000); /* 18000 bytes */
    char *bad = mlt_test_repeat("\xe6\x97\xa5", 6001);
    char *x5999 = mlt_test_repeat("x", 5999);
    char *x6000 = mlt_test_repeat("x", 6000);
    char *ok_emoji = concat(x5999, "\xf0\x9f\x98\x80");
    char *bad_emoji = concat(x6000, "\xf0\x9f\x98\x80");
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_param_value("k", ok)), MLT_OK);
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_param_value("k", bad)),
                     MLT_ERR_VALUE_TOO_LONG);
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_param_value("k", ok_emoji)), MLT_OK);
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_param_value("k", bad_emoji)),
                     MLT_ERR_VALUE_TOO_LONG);
    free(ok);
    free(bad);
    free(x5999);
    free(x6000);
    free(ok_emoji);
    free(bad_emoji);
}
END_TEST

START_TEST(param_value_accepts_empty_and_any_characters)
{
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_param_value("k", "")), MLT_OK);
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_param_value("k", "a//b/../#\n\t\x01")),
                     MLT_OK);
    ck_assert_int_eq(
        mlt__errbuf(NULL, 0, mlt__validate_param_value("k", "e\xcc\x81 \xf0\x9f\x98\x80")), MLT_OK);
}
END_TEST

START_TEST(param_value_rejects_null)
{
    char err[128] = "";
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__validate_param_value("lr", NULL)),
                     MLT_ERR_INVALID_ARG);
    ck_assert_str_eq(err, "param 'lr' value is NULL");
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__validate_param_value(NULL, "1")),
                     MLT_ERR_INVALID_ARG);
    ck_assert_str_eq(err, "param key is NULL");
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_param_value(NULL, NULL)),
                     MLT_ERR_INVALID_ARG);
}
END_TEST

START_TEST(param_value_rejects_invalid_utf8)
{
    char err[128] = "";
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__validate_param_value("lr", "0.1\xff")),
                     MLT_ERR_INVALID_VALUE);
    ck_assert_str_eq(err, "param 'lr' value is not valid UTF-8 (byte 0xFF at offset 3)");
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_param_value("lr", "\xed\xa0\x80")),
                     MLT_ERR_INVALID_VALUE);
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_param_value("lr", "\xc0\x80")),
                     MLT_ERR_INVALID_VALUE);
}
END_TEST

START_TEST(param_value_message_quotes_a_long_key_briefly)
{
    char err[512] = "";
    char *key = mlt_test_repeat("k", 200);
    char *k64 = mlt_test_repeat("k", 64);
    char *v = mlt_test_repeat("x", 6001);
    char expected[512];
    snprintf(expected, sizeof expected,
             "param '%s...' value is too long: 6001 characters, the limit is 6000", k64);
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__validate_param_value(key, v)),
                     MLT_ERR_VALUE_TOO_LONG);
    ck_assert_str_eq(err, expected);
    free(key);
    free(k64);
    free(v);
}
END_TEST

START_TEST(param_value_message_escapes_control_bytes_in_key)
{
    char err[256] = "";
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__validate_param_value("a\tb", NULL)),
                     MLT_ERR_INVALID_ARG);
    ck_assert_str_eq(err, "param 'a\\x09b' value is NULL");
}
END_TEST

/* ---- tag values ---------------------------------------------------------------------------- */

START_TEST(tag_value_accepts_8000_characters)
{
    char *v = mlt_test_repeat("x", 8000);
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_tag_value("note", v)), MLT_OK);
    free(v);
}
END_TEST

START_TEST(tag_value_rejects_8001_characters)
{
    char err[256] = "";
    char *v = mlt_test_repeat("x", 8001);
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__validate_tag_value("note", v)),
                     MLT_ERR_VALUE_TOO_LONG);
    ck_assert_str_eq(err, "tag 'note' value is too long: 8001 characters, the limit is 8000");
    free(v);
}
END_TEST

START_TEST(tag_value_counts_code_points_not_bytes)
{
    char *ok = mlt_test_repeat("\xc3\xb1", 8000); /* 16000 bytes */
    char *bad = mlt_test_repeat("\xc3\xb1", 8001);
    char *x7999 = mlt_test_repeat("x", 7999);
    char *boundary = concat(x7999, "\xf0\x9f\x98\x80"); /* 8000 code points */
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_tag_value("k", ok)), MLT_OK);
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_tag_value("k", bad)),
                     MLT_ERR_VALUE_TOO_LONG);
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_tag_value("k", boundary)), MLT_OK);
    free(ok);
    free(bad);
    free(x7999);
    free(boundary);
}
END_TEST

START_TEST(tag_value_accepts_empty_and_any_characters)
{
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_tag_value("k", "")), MLT_OK);
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_tag_value("k", "line 1\nline 2\t//..")),
                     MLT_OK);
}
END_TEST

START_TEST(tag_value_rejects_null)
{
    char err[128] = "";
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__validate_tag_value("note", NULL)),
                     MLT_ERR_INVALID_ARG);
    ck_assert_str_eq(err, "tag 'note' value is NULL");
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__validate_tag_value(NULL, "v")),
                     MLT_ERR_INVALID_ARG);
    ck_assert_str_eq(err, "tag key is NULL");
}
END_TEST

START_TEST(tag_value_rejects_invalid_utf8)
{
    char err[128] = "";
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__validate_tag_value("t", "\xe0\x80\x80")),
                     MLT_ERR_INVALID_VALUE);
    ck_assert_str_eq(err, "tag 't' value is not valid UTF-8 (byte 0xE0 at offset 0)");
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_tag_value("t", "ok\xf0\x9f\x98")),
                     MLT_ERR_INVALID_VALUE);
}
END_TEST

/* ---- run names ----------------------------------------------------------------------------- */

START_TEST(run_name_accepts_null_and_empty)
{
    char err[8] = "keep";
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__validate_run_name(NULL)), MLT_OK);
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__validate_run_name("")), MLT_OK);
    ck_assert_str_eq(err, "keep");
}
END_TEST

START_TEST(run_name_accepts_any_characters)
{
    ck_assert_int_eq(
        mlt__errbuf(NULL, 0, mlt__validate_run_name("resnet/50 #3 (try 2) \xe2\x9c\x93")), MLT_OK);
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_run_name("../..//")), MLT_OK);
}
END_TEST

START_TEST(run_name_length_boundary)
{
    char err[256] = "";
    char *ok = mlt_test_repeat("r", 250);
    char *bad = mlt_test_repeat("r", 251);
    char *ok_mb = mlt_test_repeat("\xe6\x97\xa5", 250);
    char *bad_mb = mlt_test_repeat("\xe6\x97\xa5", 251);
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_run_name(ok)), MLT_OK);
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_run_name(ok_mb)), MLT_OK);
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_run_name(bad_mb)), MLT_ERR_VALUE_TOO_LONG);
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__validate_run_name(bad)),
                     MLT_ERR_VALUE_TOO_LONG);
    ck_assert_ptr_eq(strstr(err, "run name 'rrrr"), err);
    ck_assert_ptr_nonnull(strstr(err, "...' is too long: 251 characters, the limit is 250"));
    free(ok);
    free(bad);
    free(ok_mb);
    free(bad_mb);
}
END_TEST

START_TEST(run_name_rejects_invalid_utf8)
{
    char err[128] = "";
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__validate_run_name("run\xc3")),
                     MLT_ERR_INVALID_VALUE);
    ck_assert_str_eq(err, "run name 'run\\xC3' is not valid UTF-8 (byte 0xC3 at offset 3)");
}
END_TEST

/* ---- experiment names ---------------------------------------------------------------------- */

START_TEST(experiment_name_rejects_null_and_empty)
{
    char err[128] = "";
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__validate_experiment_name(NULL)),
                     MLT_ERR_INVALID_ARG);
    ck_assert_str_eq(err, "experiment name is NULL");
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__validate_experiment_name("")),
                     MLT_ERR_INVALID_ARG);
    ck_assert_str_eq(err, "experiment name must not be empty");
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_experiment_name(NULL)),
                     MLT_ERR_INVALID_ARG);
}
END_TEST

START_TEST(experiment_name_accepts_any_characters)
{
    ck_assert_int_eq(
        mlt__errbuf(NULL, 0, mlt__validate_experiment_name("/Users/me@example.com/exp #1")),
        MLT_OK);
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_experiment_name("a//b/../c")), MLT_OK);
    ck_assert_int_eq(
        mlt__errbuf(NULL, 0, mlt__validate_experiment_name("\xe5\xae\x9f\xe9\xa8\x93")), MLT_OK);
}
END_TEST

START_TEST(experiment_name_accepts_256_characters)
{
    char *ascii = mlt_test_repeat("e", 256);
    char *two = mlt_test_repeat("\xc3\xb1", 256);
    char *four = mlt_test_repeat("\xf0\x9f\x98\x80", 256);
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_experiment_name(ascii)), MLT_OK);
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_experiment_name(two)), MLT_OK);
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_experiment_name(four)), MLT_OK);
    free(ascii);
    free(two);
    free(four);
}
END_TEST

START_TEST(experiment_name_rejects_257_characters)
{
    char err[256] = "";
    char *ascii = mlt_test_repeat("e", 257);
    char *two = mlt_test_repeat("\xc3\xb1", 257);
    char *e256 = mlt_test_repeat("e", 256);
    char *mixed = concat(e256, "\xc3\xb1");
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_experiment_name(two)),
                     MLT_ERR_VALUE_TOO_LONG);
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_experiment_name(mixed)),
                     MLT_ERR_VALUE_TOO_LONG);
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__validate_experiment_name(ascii)),
                     MLT_ERR_VALUE_TOO_LONG);
    ck_assert_ptr_eq(strstr(err, "experiment name 'eeee"), err);
    ck_assert_ptr_nonnull(strstr(err, "...' is too long: 257 characters, the limit is 256"));
    free(ascii);
    free(two);
    free(e256);
    free(mixed);
}
END_TEST

START_TEST(experiment_name_rejects_invalid_utf8)
{
    char err[128] = "";
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__validate_experiment_name("a\xed\xa0\x80")),
                     MLT_ERR_INVALID_VALUE);
    ck_assert_str_eq(err, "experiment name 'a\\xED\\xA0\\x80' "
                          "is not valid UTF-8 (byte 0xED at offset 1)");
}
END_TEST

/* ---- timestamps ---------------------------------------------------------------------------- */

START_TEST(timestamp_accepts_zero_and_positive)
{
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_timestamp(0)), MLT_OK);
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_timestamp(1700000000000LL)), MLT_OK);
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_timestamp(INT64_MAX)), MLT_OK);
}
END_TEST

START_TEST(timestamp_rejects_negative)
{
    char err[128] = "";
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__validate_timestamp(-1)),
                     MLT_ERR_INVALID_VALUE);
    ck_assert_str_eq(err,
                     "timestamp -1 is invalid: it must be >= 0 (milliseconds since the epoch)");
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__validate_timestamp(INT64_MIN)),
                     MLT_ERR_INVALID_VALUE);
    ck_assert_ptr_nonnull(strstr(err, "-9223372036854775808"));
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_timestamp(-5)), MLT_ERR_INVALID_VALUE);
}
END_TEST

/* ---- errbuf handling of the other checks --------------------------------------------------- */

START_TEST(value_and_name_checks_allow_null_errbuf)
{
    char *v = mlt_test_repeat("x", 8001);
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_param_value("k", v)),
                     MLT_ERR_VALUE_TOO_LONG);
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_tag_value("k", v)), MLT_ERR_VALUE_TOO_LONG);
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_run_name(v)), MLT_ERR_VALUE_TOO_LONG);
    ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__validate_experiment_name(v)),
                     MLT_ERR_VALUE_TOO_LONG);
    ck_assert_int_eq(mlt__errbuf(NULL, 64, mlt__validate_param_value("k", v)),
                     MLT_ERR_VALUE_TOO_LONG);
    free(v);
}
END_TEST

START_TEST(value_check_truncated_errbuf_stays_nul_terminated)
{
    char err[32];
    char *v = mlt_test_repeat("x", 6001);
    memset(err, 'X', sizeof err);
    ck_assert_int_eq(mlt__errbuf(err, 6, mlt__validate_param_value("lr", v)),
                     MLT_ERR_VALUE_TOO_LONG);
    ck_assert_str_eq(err, "param");
    ck_assert_int_eq(err[6], 'X');
    free(v);
}
END_TEST

/* ---- suite --------------------------------------------------------------------------------- */

/* ---- artifact paths ---------------------------------------------------------------------------
 */

START_TEST(artifact_path_accepts_relative_paths_of_any_characters)
{
    static const char *const ok[] = {"a",
                                     "model.bin",
                                     "plots/loss curve.png",
                                     "a b+c;d=e&f,g@h!",
                                     "d\xc3\xa9j\xc3\xa0/\xe6\x97\xa5\xe6\x9c\xac.txt",
                                     "100%.txt",
                                     "%zz",
                                     "a/x:y",
                                     "1:2",
                                     "..hidden",
                                     "a.",
                                     "...",
                                     "v1.2/ckpt-3.pt"};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        char err[256] = "";
        mlt_err e = mlt__errbuf(err, sizeof err, mlt__validate_artifact_path("path", ok[i], false));
        ck_assert_msg(e == MLT_OK, "'%s' refused: %s", ok[i], err);
    }
    ck_assert_int_eq(mlt__validate_artifact_path("artifact_dir", NULL, true), MLT_OK);
    ck_assert_int_eq(mlt__validate_artifact_path("artifact_dir", "", true), MLT_OK);
}
END_TEST

START_TEST(artifact_path_refuses_what_the_server_refuses_or_renames)
{
    static const struct {
        const char *path;
        const char *why;
    } bad[] = {
        {"/abs", "relative"},
        {"a/../b", "'..'"},
        {"..", "'..'"},
        {"./a", "'.'"},
        {"a/.", "'.'"},
        {"a//b", "empty part"},
        {"a/", "end with '/'"},
        {"a\\b", "'\\'"},
        {"a#b", "'#'"},
        {"a%41b", "hex digits"},
        {"a%2e%2e/b", "hex digits"},
        {"C:x", "drive letter"},
        {"file:x", "URI scheme"},
        {"Run:1/x", "URI scheme"},
        {"tab\there", "control"},
        {"nl\n", "control"},
        {"del\x7f", "control"},
        {"bad\xff", "UTF-8"},
        {"over\xc0\xaf", "UTF-8"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char err[512] = "";
        mlt_err e = mlt__errbuf(err, sizeof err,
                                mlt__validate_artifact_path("artifact path", bad[i].path, false));
        ck_assert_msg(e == MLT_ERR_INVALID_ARG, "path %zu accepted", i);
        ck_assert_msg(strstr(err, bad[i].why) && strstr(err, "artifact path '"),
                      "path %zu: message '%s' lacks '%s'", i, err, bad[i].why);
    }
    char err[512];
    ck_assert_int_eq(
        mlt__errbuf(err, sizeof err, mlt__validate_artifact_path("artifact_file", NULL, false)),
        MLT_ERR_INVALID_ARG);
    ck_assert_int_eq(
        mlt__errbuf(err, sizeof err, mlt__validate_artifact_path("artifact_file", "", false)),
        MLT_ERR_INVALID_ARG);
    ck_assert_str_eq(err, "artifact_file is empty");
}
END_TEST

START_TEST(artifact_path_length_limits)
{
    char path[MLT__MAX_ARTIFACT_PATH + 4];
    /* four parts of 255 bytes: 1023 bytes in all, taken */
    memset(path, 'a', sizeof path);
    for (size_t i = 255; i < 1023; i += 256) {
        path[i] = '/';
    }
    path[1023] = '\0';
    ck_assert_int_eq(mlt__validate_artifact_path("p", path, false), MLT_OK);
    /* 1025 bytes: refused */
    path[1023] = '/';
    path[1024] = 'a';
    path[1025] = '\0';
    ck_assert_int_eq(mlt__validate_artifact_path("p", path, false), MLT_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(mlt_last_error(), "longer than 1024 bytes"));
    char part[300];
    memset(part, 'b', 256);
    part[256] = '\0';
    ck_assert_int_eq(mlt__validate_artifact_path("p", part, false), MLT_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(mlt_last_error(), "255 bytes"));
}
END_TEST

static Suite *validate_suite(void)
{
    Suite *s = suite_create("validate");

    MLT_ADD_TEST(s, utf8_len_counts_ascii_and_empty);
    MLT_ADD_TEST(s, utf8_len_counts_code_points_not_bytes);
    MLT_ADD_TEST(s, utf8_len_accepts_every_boundary_scalar_value);
    MLT_ADD_TEST(s, utf8_len_rejects_null);
    MLT_ADD_TEST(s, utf8_len_rejects_overlong_forms);
    MLT_ADD_TEST(s, utf8_len_rejects_surrogates);
    MLT_ADD_TEST(s, utf8_len_rejects_code_points_above_10ffff);
    MLT_ADD_TEST(s, utf8_len_rejects_truncated_sequences);
    MLT_ADD_TEST(s, utf8_len_rejects_stray_continuation_bytes);
    MLT_ADD_TEST(s, utf8_len_rejects_invalid_lead_bytes);

    MLT_ADD_TEST(s, key_accepts_plain_names);
    MLT_ADD_TEST(s, key_accepts_every_allowed_ascii_character);
    MLT_ADD_TEST(s, key_rejects_every_other_printable_ascii_character);
    MLT_ADD_TEST(s, key_rejects_control_characters);
    MLT_ADD_TEST(s, key_rejects_trailing_newline);
    MLT_ADD_TEST(s, key_accepts_unicode_letters);
    MLT_ADD_TEST(s, key_accepts_unicode_digits_and_numbers);
    MLT_ADD_TEST(s, key_rejects_combining_marks);
    MLT_ADD_TEST(s, key_rejects_latin1_punctuation_and_symbols);
    MLT_ADD_TEST(s, key_rejects_c1_controls);
    MLT_ADD_TEST(s, key_rejects_unicode_spaces_and_general_punctuation);
    MLT_ADD_TEST(s, key_rejects_symbols_and_emoji);
    MLT_ADD_TEST(s, key_rejects_private_use_characters);
    MLT_ADD_TEST(s, key_rejects_noncharacters);
    MLT_ADD_TEST(s, key_accepts_unassigned_code_points);

    MLT_ADD_TEST(s, key_rejects_empty);
    MLT_ADD_TEST(s, key_rejects_null);
    MLT_ADD_TEST(s, key_rejects_unknown_kind);
    MLT_ADD_TEST(s, key_rejects_invalid_utf8);
    MLT_ADD_TEST(s, key_rejects_overlong_slash_and_dot);

    MLT_ADD_TEST(s, key_rejects_leading_slash);
    MLT_ADD_TEST(s, key_rejects_trailing_slash);
    MLT_ADD_TEST(s, key_rejects_double_slash);
    MLT_ADD_TEST(s, key_rejects_dot_segment);
    MLT_ADD_TEST(s, key_rejects_dot_dot_segment);
    MLT_ADD_TEST(s, key_rejects_leading_dot_dot_even_inside_a_name);
    MLT_ADD_TEST(s, key_accepts_dots_inside_segments);
    MLT_ADD_TEST(s, key_characters_are_checked_before_path_rules);

    MLT_ADD_TEST(s, key_accepts_250_ascii_characters);
    MLT_ADD_TEST(s, key_rejects_251_ascii_characters);
    MLT_ADD_TEST(s, key_accepts_250_two_byte_letters);
    MLT_ADD_TEST(s, key_rejects_251_two_byte_letters);
    MLT_ADD_TEST(s, key_counts_four_byte_letters_as_one);
    MLT_ADD_TEST(s, key_length_boundary_with_multibyte_last_character);

    MLT_ADD_TEST(s, key_message_names_the_kind);
    MLT_ADD_TEST(s, key_message_lists_the_allowed_characters);
    MLT_ADD_TEST(s, key_message_quotes_at_most_64_bytes_of_a_long_key);
    MLT_ADD_TEST(s, key_message_does_not_shorten_a_64_byte_key);
    MLT_ADD_TEST(s, key_message_cuts_the_quote_on_a_utf8_boundary);
    MLT_ADD_TEST(s, key_message_of_multibyte_key_stays_valid_utf8);
    MLT_ADD_TEST(s, key_message_escapes_control_bytes);
    MLT_ADD_TEST(s, key_message_escapes_invalid_and_c1_bytes);
    MLT_ADD_TEST(s, key_message_of_long_control_key_is_bounded);
    MLT_ADD_TEST(s, key_allows_null_errbuf);
    MLT_ADD_TEST(s, key_leaves_errbuf_alone_when_errlen_is_zero);
    MLT_ADD_TEST(s, key_leaves_errbuf_alone_on_success);
    MLT_ADD_TEST(s, key_truncated_errbuf_stays_nul_terminated);
    MLT_ADD_TEST(s, key_truncated_errbuf_does_not_split_a_character);

    MLT_ADD_TEST(s, param_value_accepts_6000_characters);
    MLT_ADD_TEST(s, param_value_rejects_6001_characters);
    MLT_ADD_TEST(s, param_value_counts_code_points_not_bytes);
    MLT_ADD_TEST(s, param_value_accepts_empty_and_any_characters);
    MLT_ADD_TEST(s, param_value_rejects_null);
    MLT_ADD_TEST(s, param_value_rejects_invalid_utf8);
    MLT_ADD_TEST(s, param_value_message_quotes_a_long_key_briefly);
    MLT_ADD_TEST(s, param_value_message_escapes_control_bytes_in_key);

    MLT_ADD_TEST(s, tag_value_accepts_8000_characters);
    MLT_ADD_TEST(s, tag_value_rejects_8001_characters);
    MLT_ADD_TEST(s, tag_value_counts_code_points_not_bytes);
    MLT_ADD_TEST(s, tag_value_accepts_empty_and_any_characters);
    MLT_ADD_TEST(s, tag_value_rejects_null);
    MLT_ADD_TEST(s, tag_value_rejects_invalid_utf8);

    MLT_ADD_TEST(s, run_name_accepts_null_and_empty);
    MLT_ADD_TEST(s, run_name_accepts_any_characters);
    MLT_ADD_TEST(s, run_name_length_boundary);
    MLT_ADD_TEST(s, run_name_rejects_invalid_utf8);

    MLT_ADD_TEST(s, experiment_name_rejects_null_and_empty);
    MLT_ADD_TEST(s, experiment_name_accepts_any_characters);
    MLT_ADD_TEST(s, experiment_name_accepts_256_characters);
    MLT_ADD_TEST(s, experiment_name_rejects_257_characters);
    MLT_ADD_TEST(s, experiment_name_rejects_invalid_utf8);

    MLT_ADD_TEST(s, timestamp_accepts_zero_and_positive);
    MLT_ADD_TEST(s, timestamp_rejects_negative);

    MLT_ADD_TEST(s, value_and_name_checks_allow_null_errbuf);
    MLT_ADD_TEST(s, value_check_truncated_errbuf_stays_nul_terminated);

    MLT_ADD_TEST(s, artifact_path_accepts_relative_paths_of_any_characters);
    MLT_ADD_TEST(s, artifact_path_refuses_what_the_server_refuses_or_renames);
    MLT_ADD_TEST(s, artifact_path_length_limits);

    return s;
}

int main(void)
{
    Suite *s = validate_suite();
    return mlt_test_run_suite(s);
}
