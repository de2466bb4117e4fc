/*
 * validate.c - owns the client's copy of the MLflow server's input rules: metric, param and tag
 * keys, param and tag values, run and experiment names and timestamps, plus the strict UTF-8
 * decoder that lengths are counted with. A call that breaks a rule fails here, at once, with a
 * message naming the input and the rule, instead of being queued and refused (or silently
 * truncated) by the server later.
 *
 * Source of the rules: mlflow/utils/validation.py of the pinned server (mlflow 3.17.2):
 *   - _validate_metric_name, _validate_param_name and _validate_tag_name are the same check for
 *     all three kinds of key: validate_param_and_metric_name() (re.match(r"^[/\w.\- :]*$") on
 *     POSIX servers; Windows servers also refuse ':', which a client cannot know, so ':' is
 *     accepted as on POSIX) and then path_not_unique(), which refuses a key when
 *     posixpath.normpath(key) != key, or normpath is ".", or it starts with ".." or "/".
 *   - _validate_length_limit: keys MAX_ENTITY_KEY_LENGTH = 250, param values
 *     MAX_PARAM_VAL_LENGTH = 6000 and run tag values MAX_TAG_VAL_LENGTH = 8000, counted with
 *     Python's len(), i.e. in code points. Over-long values are truncated by the server when
 *     MLFLOW_TRUNCATE_LONG_VALUES is on (the default), so the client refuses them instead.
 *   - Experiment names: _validate_experiment_name allows 500 (MAX_EXPERIMENT_NAME_LENGTH), but
 *     the SQL store's experiments.name column is String(256), which PostgreSQL and MySQL enforce;
 *     256 is the limit every backend accepts. Run names have no check in validation.py; the
 *     runs.name column is String(250). No character rules apply to either name.
 *   - _validate_metric: timestamps must be >= 0.
 */
#include "validate.h"

#include "common.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* ---- strict UTF-8 ---------------------------------------------------------------------------- */

/*
 * Decodes one UTF-8 sequence at s (s[0] != 0). Returns its length in bytes (1-4) and sets *cp, or
 * 0 if the bytes at s are not a valid sequence. The second-byte ranges are those of RFC 3629's
 * table, which leave out overlong forms (C0, C1, E0 80-9F, F0 80-8F), surrogates (ED A0-BF) and
 * code points above U+10FFFF (F4 90-BF, F5-FF). Each byte is read only after the one before it
 * was accepted, so the terminating NUL (never a continuation byte) stops a truncated sequence
 * without reading past the end of the string.
 */
static int utf8_decode(const unsigned char *s, uint32_t *cp)
{
    unsigned char c = s[0];
    int n;
    uint32_t v;
    unsigned char lo = 0x80;
    unsigned char hi = 0xBF;

    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        v = c & 0x1Fu;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        v = c & 0x0Fu;
        if (c == 0xE0) {
            lo = 0xA0;
        } else if (c == 0xED) {
            hi = 0x9F;
        }
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        v = c & 0x07u;
        if (c == 0xF0) {
            lo = 0x90;
        } else if (c == 0xF4) {
            hi = 0x8F;
        }
    } else {
        return 0;
    }
    for (int i = 1; i < n; i++) {
        unsigned char b = s[i];
        if (b < lo || b > hi) {
            return 0;
        }
        v = (v << 6) | (b & 0x3Fu);
        lo = 0x80;
        hi = 0xBF;
    }
    *cp = v;
    return n;
}

/* Code points in s, or -1 with *bad_off set to the offset of the first byte that is not valid. */
static long utf8_scan(const char *s, size_t *bad_off)
{
    const unsigned char *p = (const unsigned char *)s;
    long count = 0;
    size_t i = 0;

    while (p[i] != 0) {
        uint32_t cp;
        int n = utf8_decode(p + i, &cp);
        if (n == 0) {
            *bad_off = i;
            return -1;
        }
        i += (size_t)n;
        count++;
    }
    return count;
}

long mlt__utf8_len(const char *s)
{
    size_t bad_off;

    if (s == NULL) {
        return -1;
    }
    return utf8_scan(s, &bad_off);
}

/* ---- which code points Python's \w matches --------------------------------------------------- */

/*
 * The server's key regex is a str pattern, so its \w is Unicode-aware: Python's sre matches
 * '_' and every code point for which str.isalnum() is true, i.e. the general categories Lu, Ll,
 * Lt, Lm, Lo (letters), Nd, Nl, No (numbers). It does NOT match combining marks (Mn, Mc, Me):
 * "e" + U+0301, or most words of Indic scripts (their vowel signs are marks), are refused by the
 * server, while the precomposed "é" is accepted.
 *
 * Without ICU the client keeps a table, below, of the code points >= U+0080 that are assigned
 * but are not word characters (marks, punctuation, symbols, separators, controls, format
 * characters, private use) plus the 66 noncharacters, generated with the server's Python
 * (3.11.7, Unicode 14.0.0) by:
 *
 *   import re, unicodedata
 *   def refused(cp):  # over range(0x80, 0x110000), surrogates skipped; runs merged into ranges
 *       c = chr(cp)
 *       if (cp & 0xFFFE) == 0xFFFE or 0xFDD0 <= cp <= 0xFDEF:
 *           return True
 *       return unicodedata.category(c) != "Cn" and not re.match(r"\w", c)
 *
 * Every other non-ASCII scalar value is accepted. That is exact for assigned code points;
 * the approximation is that code points unassigned in Unicode 14 are accepted (the server
 * refuses them) so that letters added by later Unicode versions, which a server on a newer
 * Python accepts, are never refused by the client. A key the client wrongly lets through
 * still fails, only later, with the server's 400.
 */
typedef struct cp_range {
    uint32_t lo;
    uint32_t hi;
} cp_range;

static const cp_range not_word[] = {
    {0x0080, 0x00A9},    {0x00AB, 0x00B1},   {0x00B4, 0x00B4},   {0x00B6, 0x00B8},
    {0x00BB, 0x00BB},    {0x00BF, 0x00BF},   {0x00D7, 0x00D7},   {0x00F7, 0x00F7},
    {0x02C2, 0x02C5},    {0x02D2, 0x02DF},   {0x02E5, 0x02EB},   {0x02ED, 0x02ED},
    {0x02EF, 0x036F},    {0x0375, 0x0375},   {0x037E, 0x037E},   {0x0384, 0x0385},
    {0x0387, 0x0387},    {0x03F6, 0x03F6},   {0x0482, 0x0489},   {0x055A, 0x055F},
    {0x0589, 0x058A},    {0x058D, 0x058F},   {0x0591, 0x05C7},   {0x05F3, 0x05F4},
    {0x0600, 0x061F},    {0x064B, 0x065F},   {0x066A, 0x066D},   {0x0670, 0x0670},
    {0x06D4, 0x06D4},    {0x06D6, 0x06E4},   {0x06E7, 0x06ED},   {0x06FD, 0x06FE},
    {0x0700, 0x070D},    {0x070F, 0x070F},   {0x0711, 0x0711},   {0x0730, 0x074A},
    {0x07A6, 0x07B0},    {0x07EB, 0x07F3},   {0x07F6, 0x07F9},   {0x07FD, 0x07FF},
    {0x0816, 0x0819},    {0x081B, 0x0823},   {0x0825, 0x0827},   {0x0829, 0x082D},
    {0x0830, 0x083E},    {0x0859, 0x085B},   {0x085E, 0x085E},   {0x0888, 0x0888},
    {0x0890, 0x0891},    {0x0898, 0x089F},   {0x08CA, 0x0903},   {0x093A, 0x093C},
    {0x093E, 0x094F},    {0x0951, 0x0957},   {0x0962, 0x0965},   {0x0970, 0x0970},
    {0x0981, 0x0983},    {0x09BC, 0x09BC},   {0x09BE, 0x09C4},   {0x09C7, 0x09C8},
    {0x09CB, 0x09CD},    {0x09D7, 0x09D7},   {0x09E2, 0x09E3},   {0x09F2, 0x09F3},
    {0x09FA, 0x09FB},    {0x09FD, 0x09FE},   {0x0A01, 0x0A03},   {0x0A3C, 0x0A3C},
    {0x0A3E, 0x0A42},    {0x0A47, 0x0A48},   {0x0A4B, 0x0A4D},   {0x0A51, 0x0A51},
    {0x0A70, 0x0A71},    {0x0A75, 0x0A76},   {0x0A81, 0x0A83},   {0x0ABC, 0x0ABC},
    {0x0ABE, 0x0AC5},    {0x0AC7, 0x0AC9},   {0x0ACB, 0x0ACD},   {0x0AE2, 0x0AE3},
    {0x0AF0, 0x0AF1},    {0x0AFA, 0x0AFF},   {0x0B01, 0x0B03},   {0x0B3C, 0x0B3C},
    {0x0B3E, 0x0B44},    {0x0B47, 0x0B48},   {0x0B4B, 0x0B4D},   {0x0B55, 0x0B57},
    {0x0B62, 0x0B63},    {0x0B70, 0x0B70},   {0x0B82, 0x0B82},   {0x0BBE, 0x0BC2},
    {0x0BC6, 0x0BC8},    {0x0BCA, 0x0BCD},   {0x0BD7, 0x0BD7},   {0x0BF3, 0x0BFA},
    {0x0C00, 0x0C04},    {0x0C3C, 0x0C3C},   {0x0C3E, 0x0C44},   {0x0C46, 0x0C48},
    {0x0C4A, 0x0C4D},    {0x0C55, 0x0C56},   {0x0C62, 0x0C63},   {0x0C77, 0x0C77},
    {0x0C7F, 0x0C7F},    {0x0C81, 0x0C84},   {0x0CBC, 0x0CBC},   {0x0CBE, 0x0CC4},
    {0x0CC6, 0x0CC8},    {0x0CCA, 0x0CCD},   {0x0CD5, 0x0CD6},   {0x0CE2, 0x0CE3},
    {0x0D00, 0x0D03},    {0x0D3B, 0x0D3C},   {0x0D3E, 0x0D44},   {0x0D46, 0x0D48},
    {0x0D4A, 0x0D4D},    {0x0D4F, 0x0D4F},   {0x0D57, 0x0D57},   {0x0D62, 0x0D63},
    {0x0D79, 0x0D79},    {0x0D81, 0x0D83},   {0x0DCA, 0x0DCA},   {0x0DCF, 0x0DD4},
    {0x0DD6, 0x0DD6},    {0x0DD8, 0x0DDF},   {0x0DF2, 0x0DF4},   {0x0E31, 0x0E31},
    {0x0E34, 0x0E3A},    {0x0E3F, 0x0E3F},   {0x0E47, 0x0E4F},   {0x0E5A, 0x0E5B},
    {0x0EB1, 0x0EB1},    {0x0EB4, 0x0EBC},   {0x0EC8, 0x0ECD},   {0x0F01, 0x0F1F},
    {0x0F34, 0x0F3F},    {0x0F71, 0x0F87},   {0x0F8D, 0x0F97},   {0x0F99, 0x0FBC},
    {0x0FBE, 0x0FCC},    {0x0FCE, 0x0FDA},   {0x102B, 0x103E},   {0x104A, 0x104F},
    {0x1056, 0x1059},    {0x105E, 0x1060},   {0x1062, 0x1064},   {0x1067, 0x106D},
    {0x1071, 0x1074},    {0x1082, 0x108D},   {0x108F, 0x108F},   {0x109A, 0x109F},
    {0x10FB, 0x10FB},    {0x135D, 0x1368},   {0x1390, 0x1399},   {0x1400, 0x1400},
    {0x166D, 0x166E},    {0x1680, 0x1680},   {0x169B, 0x169C},   {0x16EB, 0x16ED},
    {0x1712, 0x1715},    {0x1732, 0x1736},   {0x1752, 0x1753},   {0x1772, 0x1773},
    {0x17B4, 0x17D6},    {0x17D8, 0x17DB},   {0x17DD, 0x17DD},   {0x1800, 0x180F},
    {0x1885, 0x1886},    {0x18A9, 0x18A9},   {0x1920, 0x192B},   {0x1930, 0x193B},
    {0x1940, 0x1940},    {0x1944, 0x1945},   {0x19DE, 0x19FF},   {0x1A17, 0x1A1B},
    {0x1A1E, 0x1A1F},    {0x1A55, 0x1A5E},   {0x1A60, 0x1A7C},   {0x1A7F, 0x1A7F},
    {0x1AA0, 0x1AA6},    {0x1AA8, 0x1AAD},   {0x1AB0, 0x1ACE},   {0x1B00, 0x1B04},
    {0x1B34, 0x1B44},    {0x1B5A, 0x1B7E},   {0x1B80, 0x1B82},   {0x1BA1, 0x1BAD},
    {0x1BE6, 0x1BF3},    {0x1BFC, 0x1BFF},   {0x1C24, 0x1C37},   {0x1C3B, 0x1C3F},
    {0x1C7E, 0x1C7F},    {0x1CC0, 0x1CC7},   {0x1CD0, 0x1CE8},   {0x1CED, 0x1CED},
    {0x1CF4, 0x1CF4},    {0x1CF7, 0x1CF9},   {0x1DC0, 0x1DFF},   {0x1FBD, 0x1FBD},
    {0x1FBF, 0x1FC1},    {0x1FCD, 0x1FCF},   {0x1FDD, 0x1FDF},   {0x1FED, 0x1FEF},
    {0x1FFD, 0x1FFE},    {0x2000, 0x2064},   {0x2066, 0x206F},   {0x207A, 0x207E},
    {0x208A, 0x208E},    {0x20A0, 0x20C0},   {0x20D0, 0x20F0},   {0x2100, 0x2101},
    {0x2103, 0x2106},    {0x2108, 0x2109},   {0x2114, 0x2114},   {0x2116, 0x2118},
    {0x211E, 0x2123},    {0x2125, 0x2125},   {0x2127, 0x2127},   {0x2129, 0x2129},
    {0x212E, 0x212E},    {0x213A, 0x213B},   {0x2140, 0x2144},   {0x214A, 0x214D},
    {0x214F, 0x214F},    {0x218A, 0x218B},   {0x2190, 0x2426},   {0x2440, 0x244A},
    {0x249C, 0x24E9},    {0x2500, 0x2775},   {0x2794, 0x2B73},   {0x2B76, 0x2B95},
    {0x2B97, 0x2BFF},    {0x2CE5, 0x2CEA},   {0x2CEF, 0x2CF1},   {0x2CF9, 0x2CFC},
    {0x2CFE, 0x2CFF},    {0x2D70, 0x2D70},   {0x2D7F, 0x2D7F},   {0x2DE0, 0x2E2E},
    {0x2E30, 0x2E5D},    {0x2E80, 0x2E99},   {0x2E9B, 0x2EF3},   {0x2F00, 0x2FD5},
    {0x2FF0, 0x2FFB},    {0x3000, 0x3004},   {0x3008, 0x3020},   {0x302A, 0x3030},
    {0x3036, 0x3037},    {0x303D, 0x303F},   {0x3099, 0x309C},   {0x30A0, 0x30A0},
    {0x30FB, 0x30FB},    {0x3190, 0x3191},   {0x3196, 0x319F},   {0x31C0, 0x31E3},
    {0x3200, 0x321E},    {0x322A, 0x3247},   {0x3250, 0x3250},   {0x3260, 0x327F},
    {0x328A, 0x32B0},    {0x32C0, 0x33FF},   {0x4DC0, 0x4DFF},   {0xA490, 0xA4C6},
    {0xA4FE, 0xA4FF},    {0xA60D, 0xA60F},   {0xA66F, 0xA67E},   {0xA69E, 0xA69F},
    {0xA6F0, 0xA6F7},    {0xA700, 0xA716},   {0xA720, 0xA721},   {0xA789, 0xA78A},
    {0xA802, 0xA802},    {0xA806, 0xA806},   {0xA80B, 0xA80B},   {0xA823, 0xA82C},
    {0xA836, 0xA839},    {0xA874, 0xA877},   {0xA880, 0xA881},   {0xA8B4, 0xA8C5},
    {0xA8CE, 0xA8CF},    {0xA8E0, 0xA8F1},   {0xA8F8, 0xA8FA},   {0xA8FC, 0xA8FC},
    {0xA8FF, 0xA8FF},    {0xA926, 0xA92F},   {0xA947, 0xA953},   {0xA95F, 0xA95F},
    {0xA980, 0xA983},    {0xA9B3, 0xA9CD},   {0xA9DE, 0xA9DF},   {0xA9E5, 0xA9E5},
    {0xAA29, 0xAA36},    {0xAA43, 0xAA43},   {0xAA4C, 0xAA4D},   {0xAA5C, 0xAA5F},
    {0xAA77, 0xAA79},    {0xAA7B, 0xAA7D},   {0xAAB0, 0xAAB0},   {0xAAB2, 0xAAB4},
    {0xAAB7, 0xAAB8},    {0xAABE, 0xAABF},   {0xAAC1, 0xAAC1},   {0xAADE, 0xAADF},
    {0xAAEB, 0xAAF1},    {0xAAF5, 0xAAF6},   {0xAB5B, 0xAB5B},   {0xAB6A, 0xAB6B},
    {0xABE3, 0xABED},    {0xE000, 0xF8FF},   {0xFB1E, 0xFB1E},   {0xFB29, 0xFB29},
    {0xFBB2, 0xFBC2},    {0xFD3E, 0xFD4F},   {0xFDCF, 0xFDEF},   {0xFDFC, 0xFE19},
    {0xFE20, 0xFE52},    {0xFE54, 0xFE66},   {0xFE68, 0xFE6B},   {0xFEFF, 0xFEFF},
    {0xFF01, 0xFF0F},    {0xFF1A, 0xFF20},   {0xFF3B, 0xFF40},   {0xFF5B, 0xFF65},
    {0xFFE0, 0xFFE6},    {0xFFE8, 0xFFEE},   {0xFFF9, 0xFFFF},   {0x10100, 0x10102},
    {0x10137, 0x1013F},  {0x10179, 0x10189}, {0x1018C, 0x1018E}, {0x10190, 0x1019C},
    {0x101A0, 0x101A0},  {0x101D0, 0x101FD}, {0x102E0, 0x102E0}, {0x10376, 0x1037A},
    {0x1039F, 0x1039F},  {0x103D0, 0x103D0}, {0x1056F, 0x1056F}, {0x10857, 0x10857},
    {0x10877, 0x10878},  {0x1091F, 0x1091F}, {0x1093F, 0x1093F}, {0x10A01, 0x10A03},
    {0x10A05, 0x10A06},  {0x10A0C, 0x10A0F}, {0x10A38, 0x10A3A}, {0x10A3F, 0x10A3F},
    {0x10A50, 0x10A58},  {0x10A7F, 0x10A7F}, {0x10AC8, 0x10AC8}, {0x10AE5, 0x10AE6},
    {0x10AF0, 0x10AF6},  {0x10B39, 0x10B3F}, {0x10B99, 0x10B9C}, {0x10D24, 0x10D27},
    {0x10EAB, 0x10EAD},  {0x10F46, 0x10F50}, {0x10F55, 0x10F59}, {0x10F82, 0x10F89},
    {0x11000, 0x11002},  {0x11038, 0x1104D}, {0x11070, 0x11070}, {0x11073, 0x11074},
    {0x1107F, 0x11082},  {0x110B0, 0x110C2}, {0x110CD, 0x110CD}, {0x11100, 0x11102},
    {0x11127, 0x11134},  {0x11140, 0x11143}, {0x11145, 0x11146}, {0x11173, 0x11175},
    {0x11180, 0x11182},  {0x111B3, 0x111C0}, {0x111C5, 0x111CF}, {0x111DB, 0x111DB},
    {0x111DD, 0x111DF},  {0x1122C, 0x1123E}, {0x112A9, 0x112A9}, {0x112DF, 0x112EA},
    {0x11300, 0x11303},  {0x1133B, 0x1133C}, {0x1133E, 0x11344}, {0x11347, 0x11348},
    {0x1134B, 0x1134D},  {0x11357, 0x11357}, {0x11362, 0x11363}, {0x11366, 0x1136C},
    {0x11370, 0x11374},  {0x11435, 0x11446}, {0x1144B, 0x1144F}, {0x1145A, 0x1145B},
    {0x1145D, 0x1145E},  {0x114B0, 0x114C3}, {0x114C6, 0x114C6}, {0x115AF, 0x115B5},
    {0x115B8, 0x115D7},  {0x115DC, 0x115DD}, {0x11630, 0x11643}, {0x11660, 0x1166C},
    {0x116AB, 0x116B7},  {0x116B9, 0x116B9}, {0x1171D, 0x1172B}, {0x1173C, 0x1173F},
    {0x1182C, 0x1183B},  {0x11930, 0x11935}, {0x11937, 0x11938}, {0x1193B, 0x1193E},
    {0x11940, 0x11940},  {0x11942, 0x11946}, {0x119D1, 0x119D7}, {0x119DA, 0x119E0},
    {0x119E2, 0x119E2},  {0x119E4, 0x119E4}, {0x11A01, 0x11A0A}, {0x11A33, 0x11A39},
    {0x11A3B, 0x11A47},  {0x11A51, 0x11A5B}, {0x11A8A, 0x11A9C}, {0x11A9E, 0x11AA2},
    {0x11C2F, 0x11C36},  {0x11C38, 0x11C3F}, {0x11C41, 0x11C45}, {0x11C70, 0x11C71},
    {0x11C92, 0x11CA7},  {0x11CA9, 0x11CB6}, {0x11D31, 0x11D36}, {0x11D3A, 0x11D3A},
    {0x11D3C, 0x11D3D},  {0x11D3F, 0x11D45}, {0x11D47, 0x11D47}, {0x11D8A, 0x11D8E},
    {0x11D90, 0x11D91},  {0x11D93, 0x11D97}, {0x11EF3, 0x11EF8}, {0x11FD5, 0x11FF1},
    {0x11FFF, 0x11FFF},  {0x12470, 0x12474}, {0x12FF1, 0x12FF2}, {0x13430, 0x13438},
    {0x16A6E, 0x16A6F},  {0x16AF0, 0x16AF5}, {0x16B30, 0x16B3F}, {0x16B44, 0x16B45},
    {0x16E97, 0x16E9A},  {0x16F4F, 0x16F4F}, {0x16F51, 0x16F87}, {0x16F8F, 0x16F92},
    {0x16FE2, 0x16FE2},  {0x16FE4, 0x16FE4}, {0x16FF0, 0x16FF1}, {0x1BC9C, 0x1BCA3},
    {0x1CF00, 0x1CF2D},  {0x1CF30, 0x1CF46}, {0x1CF50, 0x1CFC3}, {0x1D000, 0x1D0F5},
    {0x1D100, 0x1D126},  {0x1D129, 0x1D1EA}, {0x1D200, 0x1D245}, {0x1D300, 0x1D356},
    {0x1D6C1, 0x1D6C1},  {0x1D6DB, 0x1D6DB}, {0x1D6FB, 0x1D6FB}, {0x1D715, 0x1D715},
    {0x1D735, 0x1D735},  {0x1D74F, 0x1D74F}, {0x1D76F, 0x1D76F}, {0x1D789, 0x1D789},
    {0x1D7A9, 0x1D7A9},  {0x1D7C3, 0x1D7C3}, {0x1D800, 0x1DA8B}, {0x1DA9B, 0x1DA9F},
    {0x1DAA1, 0x1DAAF},  {0x1E000, 0x1E006}, {0x1E008, 0x1E018}, {0x1E01B, 0x1E021},
    {0x1E023, 0x1E024},  {0x1E026, 0x1E02A}, {0x1E130, 0x1E136}, {0x1E14F, 0x1E14F},
    {0x1E2AE, 0x1E2AE},  {0x1E2EC, 0x1E2EF}, {0x1E2FF, 0x1E2FF}, {0x1E8D0, 0x1E8D6},
    {0x1E944, 0x1E94A},  {0x1E95E, 0x1E95F}, {0x1ECAC, 0x1ECAC}, {0x1ECB0, 0x1ECB0},
    {0x1ED2E, 0x1ED2E},  {0x1EEF0, 0x1EEF1}, {0x1F000, 0x1F02B}, {0x1F030, 0x1F093},
    {0x1F0A0, 0x1F0AE},  {0x1F0B1, 0x1F0BF}, {0x1F0C1, 0x1F0CF}, {0x1F0D1, 0x1F0F5},
    {0x1F10D, 0x1F1AD},  {0x1F1E6, 0x1F202}, {0x1F210, 0x1F23B}, {0x1F240, 0x1F248},
    {0x1F250, 0x1F251},  {0x1F260, 0x1F265}, {0x1F300, 0x1F6D7}, {0x1F6DD, 0x1F6EC},
    {0x1F6F0, 0x1F6FC},  {0x1F700, 0x1F773}, {0x1F780, 0x1F7D8}, {0x1F7E0, 0x1F7EB},
    {0x1F7F0, 0x1F7F0},  {0x1F800, 0x1F80B}, {0x1F810, 0x1F847}, {0x1F850, 0x1F859},
    {0x1F860, 0x1F887},  {0x1F890, 0x1F8AD}, {0x1F8B0, 0x1F8B1}, {0x1F900, 0x1FA53},
    {0x1FA60, 0x1FA6D},  {0x1FA70, 0x1FA74}, {0x1FA78, 0x1FA7C}, {0x1FA80, 0x1FA86},
    {0x1FA90, 0x1FAAC},  {0x1FAB0, 0x1FABA}, {0x1FAC0, 0x1FAC5}, {0x1FAD0, 0x1FAD9},
    {0x1FAE0, 0x1FAE7},  {0x1FAF0, 0x1FAF6}, {0x1FB00, 0x1FB92}, {0x1FB94, 0x1FBCA},
    {0x1FFFE, 0x1FFFF},  {0x2FFFE, 0x2FFFF}, {0x3FFFE, 0x3FFFF}, {0x4FFFE, 0x4FFFF},
    {0x5FFFE, 0x5FFFF},  {0x6FFFE, 0x6FFFF}, {0x7FFFE, 0x7FFFF}, {0x8FFFE, 0x8FFFF},
    {0x9FFFE, 0x9FFFF},  {0xAFFFE, 0xAFFFF}, {0xBFFFE, 0xBFFFF}, {0xCFFFE, 0xCFFFF},
    {0xDFFFE, 0xDFFFF},  {0xE0001, 0xE0001}, {0xE0020, 0xE007F}, {0xE0100, 0xE01EF},
    {0xEFFFE, 0x10FFFF},
};

static bool in_not_word(uint32_t cp)
{
    size_t lo = 0;
    size_t hi = sizeof not_word / sizeof not_word[0];

    /* Binary search over the sorted, disjoint ranges. */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < not_word[mid].lo) {
            hi = mid;
        } else if (cp > not_word[mid].hi) {
            lo = mid + 1;
        } else {
            return true;
        }
    }
    return false;
}

/* A character the server's key regex [/\w.\- :] accepts. */
static bool is_key_char(uint32_t cp)
{
    if (cp < 0x80) {
        return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || (cp >= '0' && cp <= '9') ||
               cp == '_' || cp == '-' || cp == '.' || cp == ' ' || cp == '/' || cp == ':';
    }
    return !in_not_word(cp);
}

/* ---- messages -------------------------------------------------------------------------------- */

/* At most this many bytes of a key or name are quoted in a message, then "...". */
#define QUOTE_MAX 64
#define QUOTE_BUF (QUOTE_MAX + sizeof "...")

/*
 * Code points that are valid but would garble a terminal or a log line if printed raw: C0 and C1
 * controls, DEL, the line and paragraph separators and the bidirectional controls (which can make
 * a key read differently from what it is).
 */
static bool must_escape(uint32_t cp)
{
    return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F) || cp == 0x200E || cp == 0x200F ||
           (cp >= 0x2028 && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069);
}

/*
 * Writes s into out (QUOTE_BUF bytes) for quoting in a message: at most QUOTE_MAX bytes, cut only
 * between whole characters or escapes and then followed by "...", with control characters and
 * bytes that are not valid UTF-8 written as \xNN so that the message is always printable UTF-8.
 */
static void quote(const char *s, char *out)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t used = 0;
    size_t i = 0;

    while (p[i] != 0) {
        uint32_t cp = 0;
        int n = utf8_decode(p + i, &cp);
        char piece[8];
        size_t len;

        if (n == 0 || must_escape(cp)) {
            /* One byte at a time: the bytes after it are looked at again on their own. */
            snprintf(piece, sizeof piece, "\\x%02X", (unsigned)p[i]);
            len = 4;
            n = 1;
        } else {
            memcpy(piece, p + i, (size_t)n);
            len = (size_t)n;
        }
        if (used + len > QUOTE_MAX) {
            memcpy(out + used, "...", sizeof "...");
            return;
        }
        memcpy(out + used, piece, len);
        used += len;
        i += (size_t)n;
    }
    out[used] = '\0';
}

/* How a character is named in a message: 'c' for printable ASCII, U+XXXX otherwise. */
static void describe_char(uint32_t cp, char *out, size_t len)
{
    if (cp >= 0x21 && cp < 0x7F) {
        snprintf(out, len, "'%c'", (char)cp);
    } else {
        snprintf(out, len, "U+%04" PRIX32, cp);
    }
}

static const char *kind_name(mlt__kind kind)
{
    switch (kind) {
    case MLT__METRIC:
        return "metric key";
    case MLT__PARAM:
        return "param key";
    case MLT__TAG:
        return "tag key";
    }
    return NULL;
}

/*
 * Checks that s is valid UTF-8 no longer than limit code points; what names s in a message
 * ("run name", "param 'lr' value"). Quotes s itself in the message when quote_s is set.
 */
static MLT__MUST_USE mlt_err check_text(const char *what, const char *s, bool quote_s, long limit)
{
    char q[QUOTE_BUF] = "";
    size_t bad_off = 0;
    long count = utf8_scan(s, &bad_off);

    if (count >= 0 && count <= limit) {
        return MLT_OK;
    }
    if (quote_s) {
        quote(s, q);
    }
    if (count < 0) {
        return mlt__fail(MLT_ERR_INVALID_VALUE,
                         "%s%s%s%s is not valid UTF-8 (byte 0x%02X at offset %zu)", what,
                         quote_s ? " '" : "", q, quote_s ? "'" : "",
                         (unsigned)(unsigned char)s[bad_off], bad_off);
    }
    return mlt__fail(MLT_ERR_VALUE_TOO_LONG,
                     "%s%s%s%s is too long: %ld characters, the limit is %ld", what,
                     quote_s ? " '" : "", q, quote_s ? "'" : "", count, limit);
}

/* ---- keys ------------------------------------------------------------------------------------ */

/*
 * The server's path_not_unique(), spelled out for keys made only of key characters: a key is
 * refused when posixpath.normpath() would change it (an empty key, a '.' or '..' segment, '//'
 * anywhere, a trailing '/', three or more leading '/'), or when it is '.', or it starts with '..'
 * (so "..a" and "..." are refused too, though they are no '..' segment) or with '/'. Returns the
 * rule broken, or NULL. The same rules hold for metric, param and tag keys.
 */
static const char *path_rule_broken(const char *key)
{
    size_t len = strlen(key);
    const char *seg = key;

    if (key[0] == '/') {
        return "it must not start with '/'";
    }
    if (strncmp(key, "..", 2) == 0) {
        return "it must not start with '..'";
    }
    if (strstr(key, "//") != NULL) {
        return "it must not contain '//'";
    }
    if (key[len - 1] == '/') {
        return "it must not end with '/'";
    }
    for (;;) {
        const char *slash = strchr(seg, '/');
        size_t seg_len = slash != NULL ? (size_t)(slash - seg) : strlen(seg);
        if (seg_len == 1 && seg[0] == '.') {
            return "it must not contain a '.' path segment";
        }
        if (seg_len == 2 && seg[0] == '.' && seg[1] == '.') {
            return "it must not contain a '..' path segment";
        }
        if (slash == NULL) {
            return NULL;
        }
        seg = slash + 1;
    }
}

mlt_err mlt__validate_key(mlt__kind kind, const char *key)
{
    const char *what = kind_name(kind);
    const unsigned char *p = (const unsigned char *)key;
    char q[QUOTE_BUF];
    size_t bad_off = 0;
    long count;
    const char *rule;

    if (what == NULL) {
        return mlt__fail(MLT_ERR_INVALID_ARG, "unknown key kind %d", (int)kind);
    }
    if (key == NULL) {
        return mlt__fail(MLT_ERR_INVALID_ARG, "%s is NULL", what);
    }
    quote(key, q);
    count = utf8_scan(key, &bad_off);
    if (count < 0) {
        return mlt__fail(MLT_ERR_INVALID_VALUE,
                         "%s '%s' is invalid: it is not valid UTF-8 (byte 0x%02X at offset %zu)",
                         what, q, (unsigned)p[bad_off], bad_off);
    }
    if (count == 0) {
        return mlt__fail(MLT_ERR_INVALID_KEY, "%s '' is invalid: it must not be empty", what);
    }
    /* The server checks characters, then path rules, then length; so does the client, so that
     * both name the same rule first. */
    for (size_t i = 0; p[i] != 0;) {
        uint32_t cp = 0;
        int n = utf8_decode(p + i, &cp);
        if (!is_key_char(cp)) {
            char c[16];
            describe_char(cp, c, sizeof c);
            return mlt__fail(
                MLT_ERR_INVALID_KEY,
                "%s '%s' is invalid: character %s is not allowed (only letters, digits, "
                "'_', '-', '.', ' ', '/' and ':' are)",
                what, q, c);
        }
        i += (size_t)n;
    }
    rule = path_rule_broken(key);
    if (rule != NULL) {
        return mlt__fail(MLT_ERR_INVALID_KEY, "%s '%s' is invalid: %s", what, q, rule);
    }
    if (count > MLT__MAX_KEY_LEN) {
        return mlt__fail(MLT_ERR_VALUE_TOO_LONG,
                         "%s '%s' is too long: %ld characters, the limit is %d", what, q, count,
                         MLT__MAX_KEY_LEN);
    }
    return MLT_OK;
}

/* ---- values and names ------------------------------------------------------------------------ */

/* Param and tag values: any characters, only the encoding and the length are checked. */
static MLT__MUST_USE mlt_err check_value(const char *kind, const char *key, const char *value,
                                         long limit)
{
    char q[QUOTE_BUF];
    char what[QUOTE_BUF + 32];

    if (key == NULL) {
        return mlt__fail(MLT_ERR_INVALID_ARG, "%s key is NULL", kind);
    }
    quote(key, q);
    snprintf(what, sizeof what, "%s '%s' value", kind, q);
    if (value == NULL) {
        return mlt__fail(MLT_ERR_INVALID_ARG, "%s is NULL", what);
    }
    return check_text(what, value, false, limit);
}

mlt_err mlt__validate_param_value(const char *key, const char *value)
{
    return check_value("param", key, value, MLT__MAX_PARAM_VALUE);
}

mlt_err mlt__validate_tag_value(const char *key, const char *value)
{
    return check_value("tag", key, value, MLT__MAX_TAG_VALUE);
}

mlt_err mlt__validate_run_name(const char *name)
{
    /* NULL and "" both leave the naming to the server (create_run: run_name or a random name). */
    if (name == NULL) {
        return MLT_OK;
    }
    return check_text("run name", name, true, MLT__MAX_RUN_NAME);
}

mlt_err mlt__validate_experiment_name(const char *name)
{
    /* An empty name is a missing one, as for NULL: the server refuses both alike. */
    if (name == NULL) {
        return mlt__fail(MLT_ERR_INVALID_ARG, "experiment name is NULL");
    }
    if (name[0] == '\0') {
        return mlt__fail(MLT_ERR_INVALID_ARG, "experiment name must not be empty");
    }
    return check_text("experiment name", name, true, MLT__MAX_EXPERIMENT_NAME);
}

mlt_err mlt__validate_timestamp(int64_t ts_ms)
{
    if (ts_ms < 0) {
        return mlt__fail(MLT_ERR_INVALID_VALUE,
                         "timestamp %" PRId64
                         " is invalid: it must be >= 0 (milliseconds since the epoch)",
                         ts_ms);
    }
    return MLT_OK;
}

/* ---- artifact paths ---- */

/* Why an artifact path breaks a rule (see mlt__validate_artifact_path), NULL when it keeps them. */
static const char *artifact_rule_broken(const char *path)
{
    size_t n = strlen(path);
    if (n > MLT__MAX_ARTIFACT_PATH) {
        return "it is longer than 1024 bytes";
    }
    if (path[0] == '/') {
        return "it must be relative, not start with '/'";
    }
    size_t scheme = isalpha((unsigned char)path[0]) ? strspn(path, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                                   "abcdefghijklmnopqrstuvwxyz"
                                                                   "0123456789+-.")
                                                    : 0;
    if (scheme && path[scheme] == ':') {
        return "it must not start with a URI scheme or a drive letter ('name:'): the MLflow "
               "server reads it as one";
    }
    size_t bad_off;
    if (utf8_scan(path, &bad_off) < 0) {
        return "it is not valid UTF-8";
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)path[i];
        if (c < 0x20 || c == 0x7f) {
            return "it must not contain control characters";
        }
        if (c == '\\') {
            return "it must not contain '\\' (parts are separated by '/')";
        }
        if (c == '#') {
            return "it must not contain '#' (the MLflow server refuses it)";
        }
        if (c == '%' && isxdigit((unsigned char)path[i + 1]) &&
            isxdigit((unsigned char)path[i + 2])) {
            return "it must not contain '%' followed by two hex digits (the MLflow server "
                   "decodes it and would store another name)";
        }
    }
    for (const char *part = path;;) {
        size_t len = strcspn(part, "/");
        if (len == 0) {
            return part[0] ? "it must not contain an empty part ('//')"
                           : "it must not end with '/'";
        }
        if ((len == 1 && part[0] == '.') || (len == 2 && part[0] == '.' && part[1] == '.')) {
            return "it must not contain a '.' or '..' part";
        }
        if (len > MLT__MAX_ARTIFACT_NAME) {
            return "each part is at most 255 bytes";
        }
        if (!part[len]) {
            return NULL;
        }
        part += len + 1;
    }
}

mlt_err mlt__validate_artifact_path(const char *what, const char *path, bool empty_ok)
{
    if (path == NULL || path[0] == '\0') {
        return path == NULL && !empty_ok ? mlt__fail(MLT_ERR_INVALID_ARG, "%s is NULL", what)
               : empty_ok                ? MLT_OK
                                         : mlt__fail(MLT_ERR_INVALID_ARG, "%s is empty", what);
    }
    const char *why = artifact_rule_broken(path);
    if (why) {
        char q[QUOTE_BUF];
        quote(path, q);
        return mlt__fail(MLT_ERR_INVALID_ARG, "%s '%s' is invalid: %s", what, q, why);
    }
    return MLT_OK;
}
