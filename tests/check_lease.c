/*
 * check_lease.c - unit tests of the delivery lease of a journal (src/lease.c): the text of a
 * lease file (its lines are built here with a CRC32C written independently of the library's, so
 * that the parser is tested against the format), and the lease itself with real files in fresh
 * temporary directories: the first take, release and takeover, a stale holder, a dead holder of
 * this host, the patient relay, the validity window, a removed directory, the keeper thread and
 * two parties racing for a fresh journal. lease_ms is short (200 ms) to keep the tests fast.
 */
#include "testutil.h"

#include "common.h"
#include "lease.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- helpers -------------------------------------------------------------------------------- */

#define DIR_LEN 512
#define MS 200 /* lease_ms of the tests */
/* lease_ms of the keeper's tests: they count on its thread being scheduled within a fifth of it,
 * which a loaded machine running valgrind may not do within MS's */
#define KEEP_MS 1000

static const char GEN1[] = "lease.00000000000000000001";
static const char GEN2[] = "lease.00000000000000000002";

/* CRC32C, bit by bit: independent of src/crc32c.c. */
static uint32_t ref_crc32c(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) {
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
        }
    }
    return ~crc;
}

/* A lease line of the first flen bytes of fields (which may hold a NUL): "<fields> <crc>\n".
 * Returns its length. */
static size_t line_of_bytes(char *out, size_t cap, const char *fields, size_t flen)
{
    ck_assert_uint_lt(flen + 11, cap);
    memcpy(out, fields, flen);
    int n = snprintf(out + flen, cap - flen, " %08" PRIx32 "\n", ref_crc32c(fields, flen));
    ck_assert_int_eq(n, 10);
    return flen + 10;
}

static size_t line_of(char *out, size_t cap, const char *fields)
{
    return line_of_bytes(out, cap, fields, strlen(fields));
}

/* Whether the line made of fields parses. */
static bool fields_parse(const char *fields)
{
    char line[1024];
    size_t n = line_of(line, sizeof line, fields);
    mlt__lease_info info;
    return mlt__lease_parse(line, n, &info) == 0;
}

/* This host's name as the library writes it (gethostname, or "unknown-host"). */
static void this_host(char out[64])
{
    memset(out, 0, 64);
    bool ok = gethostname(out, 63) == 0 && out[0] != '\0';
    for (const char *h = out; ok && *h; h++) {
        ok = *h > ' ' && *h <= '~';
    }
    if (!ok) {
        snprintf(out, 64, "unknown-host");
    }
}

static void gen_name(char *out, size_t len, uint64_t gen)
{
    int n = snprintf(out, len, "lease.%020" PRIu64, gen);
    ck_assert(n > 0 && (size_t)n < len);
}

static bool exists(const char *dir, const char *name)
{
    char p[PATH_MAX];
    mlt_test_path(p, dir, name);
    struct stat st;
    return stat(p, &st) == 0;
}

/* The entries of dir but . and .. (a taker or a renewal leaves no temporary file behind). */
static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    }
    closedir(d);
    return n;
}

/* Generation gen's file, parsed: whether it exists and parses. */
static bool read_gen(const char *dir, uint64_t gen, mlt__lease_info *out)
{
    char name[64];
    gen_name(name, sizeof name, gen);
    size_t len = 0;
    char *text = mlt_test_slurp(dir, name, &len);
    bool ok = text != NULL && mlt__lease_parse(text, len, out) == 0;
    free(text);
    return ok;
}

/* Writes info as generation info->gen's file, as another party would. */
static void write_gen(const char *dir, const mlt__lease_info *info)
{
    char text[256], name[64], p[PATH_MAX];
    int n = mlt__lease_format(info, text, sizeof text);
    ck_assert_int_gt(n, 0);
    gen_name(name, sizeof name, info->gen);
    mlt_test_path(p, dir, name);
    mlt_test_write_file(p, "wb", text, (size_t)n);
}

static mlt__lease_info info_of(uint64_t gen, uint64_t id, long pid, const char *host)
{
    mlt__lease_info i;
    memset(&i, 0, sizeof i);
    i.gen = gen;
    i.id = id;
    i.role = MLT__LEASE_WRITER;
    i.pid = pid;
    i.beat = 3;
    i.state = MLT__LEASE_DELIVERING;
    snprintf(i.host, sizeof i.host, "%s", host);
    return i;
}

/* link(2), as NFS may answer it: made, but the reply lost, and the client's retry answered
 * EEXIST (link_lies times). The library is linked in statically: its calls come here. */
static atomic_int link_lies;

int link(const char *from, const char *to)
{
    int rc = (int)syscall(SYS_linkat, AT_FDCWD, from, AT_FDCWD, to, 0);
    if (rc == 0 && atomic_load(&link_lies) > 0) {
        atomic_fetch_sub(&link_lies, 1);
        errno = EEXIST;
        return -1;
    }
    return rc;
}

static mlt__lease *lease_new(const char *dir, mlt__lease_role role, long long ms)
{
    mlt__lease *l = mlt__lease_new(dir, role, ms);
    ck_assert_ptr_nonnull(l);
    return l;
}

/* Takes l until it is TAKEN or limit_ms passed: the result of the last take. */
static mlt__lease_take_result take_within(mlt__lease *l, int64_t limit_ms, bool *fresh)
{
    int64_t end = mlt_test_mono_ms() + limit_ms;
    mlt__lease_take_result r;
    while ((r = mlt__lease_take(l, NULL, fresh)) == MLT__LEASE_OTHER && mlt_test_mono_ms() < end) {
        mlt__sleep_ms(5);
    }
    return r;
}

/* ---- the text of a lease file --------------------------------------------------------------- */

static const char BASE[] = "mltrack-lease-1 7 0123456789abcdef relay 4242 9 away node-1.example";

START_TEST(lease_format_writes_the_documented_line_and_parses_back)
{
    mlt__lease_info in = info_of(7, 0x0123456789abcdefull, 4242, "node-1.example");
    in.role = MLT__LEASE_RELAY;
    in.beat = 9;
    in.state = MLT__LEASE_AWAY;
    char text[256], expect[256];
    int n = mlt__lease_format(&in, text, sizeof text);
    size_t want = line_of(expect, sizeof expect, BASE);
    ck_assert_int_eq(n, (int)want);
    ck_assert_str_eq(text, expect);

    mlt__lease_info out;
    memset(&out, 0xA5, sizeof out);
    ck_assert_int_eq(mlt__lease_parse(text, (size_t)n, &out), 0);
    ck_assert_uint_eq(out.gen, 7);
    ck_assert_uint_eq(out.id, 0x0123456789abcdefull);
    ck_assert_int_eq(out.role, MLT__LEASE_RELAY);
    ck_assert_int_eq(out.pid, 4242);
    ck_assert_uint_eq(out.beat, 9);
    ck_assert_int_eq(out.state, MLT__LEASE_AWAY);
    ck_assert_str_eq(out.host, "node-1.example");
}
END_TEST

START_TEST(lease_format_and_parse_round_trip_every_role_state_and_extreme)
{
    char host63[64];
    memset(host63, '~', 63);
    host63[63] = '\0';
    const char *hosts[] = {"h", "node-1.example", host63, "a!b#c$d%e&f'g(h)i*j+k,l"};
    /* generations stay below 2^62, pids within an int (what kill() takes) */
    const uint64_t nums[] = {1, 2, 0xFFFFFFFFull, (UINT64_C(1) << 62) - 1};
    const long pids[] = {1, 4242, 65536, INT_MAX};
    for (int r = 0; r <= MLT__LEASE_RELAY; r++) {
        for (int s = 0; s <= MLT__LEASE_RELEASED; s++) {
            for (size_t k = 0; k < 4; k++) {
                mlt__lease_info in =
                    info_of(nums[k], k == 0 ? 0 : UINT64_MAX / (k + 1), pids[k], hosts[k]);
                in.role = (mlt__lease_role)r;
                in.state = (mlt__lease_state)s;
                in.beat = k == 0 ? 0 : nums[3 - k];
                char text[256];
                int n = mlt__lease_format(&in, text, sizeof text);
                REQUIRE(n > 0 && (size_t)n == strlen(text) && text[n - 1] == '\n',
                        "format of case %d/%d/%zu: %d", r, s, k, n);
                mlt__lease_info out;
                REQUIRE(mlt__lease_parse(text, (size_t)n, &out) == 0, "parse of %s", text);
                REQUIRE(memcmp(&in, &out, sizeof in) == 0, "round trip of %s", text);
            }
        }
    }
}
END_TEST

START_TEST(lease_format_refuses_a_short_buffer_and_bad_fields)
{
    mlt__lease_info in = info_of(7, 1, 4242, "node-1.example");
    char text[256];
    int full = mlt__lease_format(&in, text, sizeof text);
    ck_assert_int_gt(full, 0);
    for (int len = 0; len <= full; len++) {
        char small[256];
        REQUIRE(mlt__lease_format(&in, small, (size_t)len) == -1, "a buffer of %d fits", len);
    }
    ck_assert_int_eq(mlt__lease_format(&in, text, (size_t)full + 1), full);

    const char *bad_hosts[] = {"", "two words", "tab\there", "del\x7f", "caf\xc3\xa9"};
    for (size_t i = 0; i < sizeof bad_hosts / sizeof *bad_hosts; i++) {
        mlt__lease_info b = info_of(7, 1, 4242, bad_hosts[i]);
        REQUIRE(mlt__lease_format(&b, text, sizeof text) == -1, "host '%s' formatted",
                bad_hosts[i]);
    }
    mlt__lease_info b = in;
    b.role = (mlt__lease_role)2;
    ck_assert_int_eq(mlt__lease_format(&b, text, sizeof text), -1);
    b = in;
    b.state = (mlt__lease_state)3;
    ck_assert_int_eq(mlt__lease_format(&b, text, sizeof text), -1);
}
END_TEST

START_TEST(lease_parse_refuses_a_torn_line)
{
    char line[256];
    size_t n = line_of(line, sizeof line, BASE);
    mlt__lease_info info;
    ck_assert_int_eq(mlt__lease_parse(line, n, &info), 0);
    for (size_t len = 0; len < n; len++) {
        REQUIRE(mlt__lease_parse(line, len, &info) == -1, "a line cut at %zu parses", len);
    }
}
END_TEST

START_TEST(lease_parse_refuses_a_bad_checksum)
{
    char line[256];
    size_t n = line_of(line, sizeof line, BASE);
    mlt__lease_info info;
    /* every single bit of the line but its newline: CRC32C sees every one-bit change (but a hex
     * letter of the checksum in upper case, which strtoull reads as the same value) */
    for (size_t i = 0; i + 1 < n; i++) {
        for (int bit = 0; bit < 8; bit++) {
            if (i >= n - 9 && bit == 5 && line[i] >= 'a' && line[i] <= 'f') {
                continue;
            }
            char copy[256];
            memcpy(copy, line, n);
            copy[i] = (char)(copy[i] ^ (1 << bit));
            REQUIRE(mlt__lease_parse(copy, n, &info) == -1, "bit %d of byte %zu flipped parses",
                    bit, i);
        }
    }
    /* the checksum of other fields, and checksums that are not 8 hex digits */
    char other[256];
    line_of(other, sizeof other, "mltrack-lease-1 8 0123456789abcdef relay 4242 9 away h");
    char spliced[300];
    int m = snprintf(spliced, sizeof spliced, "%s %.8s\n", BASE, other + strlen(other) - 9);
    ck_assert_int_eq(mlt__lease_parse(spliced, (size_t)m, &info), -1);
    uint32_t crc = ref_crc32c(BASE, strlen(BASE));
    m = snprintf(spliced, sizeof spliced, "%s %" PRIx32 "\n", BASE, crc >> 4);
    ck_assert_int_eq(mlt__lease_parse(spliced, (size_t)m, &info), -1);
    m = snprintf(spliced, sizeof spliced, "%s 0%08" PRIx32 "\n", BASE, crc);
    ck_assert_int_eq(mlt__lease_parse(spliced, (size_t)m, &info), -1);
    m = snprintf(spliced, sizeof spliced, "%s %08" PRIx32 "\r\n", BASE, crc);
    ck_assert_int_eq(mlt__lease_parse(spliced, (size_t)m, &info), -1);
    m = snprintf(spliced, sizeof spliced, "%s\n", BASE);
    ck_assert_int_eq(mlt__lease_parse(spliced, (size_t)m, &info), -1);
}
END_TEST

START_TEST(lease_parse_refuses_extra_or_missing_fields)
{
    ck_assert(fields_parse(BASE));
    ck_assert(!fields_parse("mltrack-lease-1 7 0123456789abcdef relay 4242 9 away node-1 extra"));
    ck_assert(!fields_parse("mltrack-lease-1 7 0123456789abcdef relay 4242 9 away node-1 "));
    ck_assert(!fields_parse("mltrack-lease-1 7 0123456789abcdef relay 4242 9 away"));
    ck_assert(!fields_parse("mltrack-lease-1 7 0123456789abcdef relay 4242 away node-1"));
    ck_assert(!fields_parse("mltrack-lease-1 0123456789abcdef relay 4242 9 away node-1"));
    ck_assert(!fields_parse(""));
    ck_assert(!fields_parse("mltrack-lease-2 7 0123456789abcdef relay 4242 9 away node-1"));
    ck_assert(!fields_parse("mltrack-lease-10 7 0123456789abcdef relay 4242 9 away node-1"));
    ck_assert(!fields_parse("mltrack-lease 7 0123456789abcdef relay 4242 9 away node-1"));
}
END_TEST

START_TEST(lease_parse_refuses_bytes_after_the_newline_and_a_nul_inside)
{
    char line[600];
    size_t n = line_of(line, sizeof line, BASE);
    mlt__lease_info info;
    const char *tails[] = {"x", "\n", " ", "\0"};
    for (size_t i = 0; i < sizeof tails / sizeof *tails; i++) {
        char copy[300];
        memcpy(copy, line, n);
        copy[n] = tails[i][0];
        REQUIRE(mlt__lease_parse(copy, n + 1, &info) == -1, "tail %zu parses", i);
    }
    char twice[600];
    memcpy(twice, line, n);
    memcpy(twice + n, line, n);
    ck_assert_int_eq(mlt__lease_parse(twice, 2 * n, &info), -1);

    /* a NUL in the host, under a checksum that covers it */
    char fields[] = "mltrack-lease-1 7 0123456789abcdef relay 4242 9 away node-1.example";
    fields[strlen(fields) - 3] = '\0';
    n = line_of_bytes(line, sizeof line, fields, sizeof fields - 1);
    ck_assert_int_eq(mlt__lease_parse(line, n, &info), -1);
    /* and a NUL first, where a C string would be empty */
    char first[] = "\0mltrack-lease-1 7 0123456789abcdef relay 4242 9 away node-1.example";
    n = line_of_bytes(line, sizeof line, first, sizeof first - 1);
    ck_assert_int_eq(mlt__lease_parse(line, n, &info), -1);
}
END_TEST

START_TEST(lease_parse_refuses_generation_zero_and_a_pid_not_positive)
{
    ck_assert(!fields_parse("mltrack-lease-1 0 0123456789abcdef relay 4242 9 away h"));
    ck_assert(!fields_parse("mltrack-lease-1 1 0123456789abcdef relay 0 9 away h"));
    ck_assert(!fields_parse("mltrack-lease-1 1 0123456789abcdef relay -1 9 away h"));
    ck_assert(!fields_parse("mltrack-lease-1 1 0123456789abcdef relay -4242 9 away h"));
    ck_assert(!fields_parse("mltrack-lease-1 x 0123456789abcdef relay 4242 9 away h"));
    ck_assert(!fields_parse("mltrack-lease-1 1 0123456789abcdef relay pid 9 away h"));
    ck_assert(!fields_parse("mltrack-lease-1 1 0123456789abcdef relay 4242 beat away h"));
    ck_assert(fields_parse("mltrack-lease-1 1 0123456789abcdef relay 1 0 away h"));
}
END_TEST

START_TEST(lease_parse_refuses_an_unknown_role_or_state)
{
    ck_assert(fields_parse("mltrack-lease-1 1 0123456789abcdef writer 1 0 delivering h"));
    ck_assert(fields_parse("mltrack-lease-1 1 0123456789abcdef relay 1 0 released h"));
    ck_assert(!fields_parse("mltrack-lease-1 1 0123456789abcdef reader 1 0 away h"));
    ck_assert(!fields_parse("mltrack-lease-1 1 0123456789abcdef Writer 1 0 away h"));
    ck_assert(!fields_parse("mltrack-lease-1 1 0123456789abcdef writers 1 0 away h"));
    ck_assert(!fields_parse("mltrack-lease-1 1 0123456789abcdef 0 1 0 away h"));
    ck_assert(!fields_parse("mltrack-lease-1 1 0123456789abcdef writer 1 0 gone h"));
    ck_assert(!fields_parse("mltrack-lease-1 1 0123456789abcdef writer 1 0 RELEASED h"));
    ck_assert(!fields_parse("mltrack-lease-1 1 0123456789abcdef writer 1 0 2 h"));
}
END_TEST

START_TEST(lease_parse_refuses_a_host_with_spaces_control_characters_or_too_long)
{
    ck_assert(!fields_parse("mltrack-lease-1 1 0123456789abcdef writer 1 0 away two words"));
    ck_assert(!fields_parse("mltrack-lease-1 1 0123456789abcdef writer 1 0 away ctl\x01x"));
    ck_assert(!fields_parse("mltrack-lease-1 1 0123456789abcdef writer 1 0 away esc\x1b"));
    ck_assert(!fields_parse("mltrack-lease-1 1 0123456789abcdef writer 1 0 away del\x7f"));
    ck_assert(!fields_parse("mltrack-lease-1 1 0123456789abcdef writer 1 0 away caf\xc3\xa9"));
    ck_assert(!fields_parse("mltrack-lease-1 1 0123456789abcdef writer 1 0 away \xff"));
    char fields[256], host[80];
    for (size_t len = 62; len <= 66; len++) {
        memset(host, 'h', len);
        host[len] = '\0';
        snprintf(fields, sizeof fields, "mltrack-lease-1 1 0123456789abcdef writer 1 0 away %s",
                 host);
        REQUIRE(fields_parse(fields) == (len < 64), "a host of %zu bytes", len);
    }
}
END_TEST

START_TEST(lease_parse_refuses_an_overlong_line)
{
    char fields[1024], line[1100];
    mlt__lease_info info;
    memset(fields, 0, sizeof fields);
    snprintf(fields, sizeof fields, "mltrack-lease-1 1 0123456789abcdef writer 1 0 away ");
    memset(fields + strlen(fields), 'h', 300);
    size_t n = line_of(line, sizeof line, fields);
    ck_assert_int_eq(mlt__lease_parse(line, n, &info), -1);
    /* long without a long field: the beat with 250 leading zeros */
    snprintf(fields, sizeof fields, "mltrack-lease-1 1 0123456789abcdef writer 1 ");
    size_t at = strlen(fields);
    memset(fields + at, '0', 250);
    snprintf(fields + at + 250, sizeof fields - at - 250, "9 away h");
    n = line_of(line, sizeof line, fields);
    ck_assert_uint_ge(n, 256);
    ck_assert_int_eq(mlt__lease_parse(line, n, &info), -1);
}
END_TEST

START_TEST(lease_parse_refuses_an_id_not_of_16_lowercase_hex_digits)
{
    const char *ids[] = {"0123456789abcde",  "0123456789abcdef0", "0123456789ABCDEF",
                         "0123456789abcdeg", "0x23456789abcdef",  "-123456789abcdef",
                         "+123456789abcdef", "0123456789abcde.",  "x"};
    char fields[256];
    for (size_t i = 0; i < sizeof ids / sizeof *ids; i++) {
        snprintf(fields, sizeof fields, "mltrack-lease-1 1 %s writer 1 0 away h", ids[i]);
        REQUIRE(!fields_parse(fields), "id %s parses", ids[i]);
    }
    ck_assert(fields_parse("mltrack-lease-1 1 0000000000000000 writer 1 0 away h"));
    ck_assert(fields_parse("mltrack-lease-1 1 ffffffffffffffff writer 1 0 away h"));
}
END_TEST

START_TEST(lease_parse_leaves_its_output_alone_on_failure)
{
    mlt__lease_info out, before;
    memset(&out, 0x5A, sizeof out);
    before = out;
    char line[256];
    size_t n = line_of(line, sizeof line, "mltrack-lease-1 1 0123456789abcdef writer 0 0 away h");
    ck_assert_int_eq(mlt__lease_parse(line, n, &out), -1);
    ck_assert_mem_eq(&out, &before, sizeof out);
}
END_TEST

/* ---- taking, releasing, taking over --------------------------------------------------------- */

START_TEST(lease_first_take_creates_generation_one_and_another_party_sees_it)
{
    char dir[DIR_LEN], host[64];
    mlt_test_tmpdir(dir, sizeof dir, "lease");
    this_host(host);
    mlt__lease *a = lease_new(dir, MLT__LEASE_WRITER, MS);
    mlt__lease *b = lease_new(dir, MLT__LEASE_RELAY, MS);
    ck_assert_uint_eq(mlt__lease_gen(a), 0);
    ck_assert(!mlt__lease_valid(a));
    ck_assert_int_eq(count_entries(dir), 0); /* a new object writes nothing */

    bool fresh = true;
    ck_assert_int_eq(mlt__lease_take(a, NULL, &fresh), MLT__LEASE_TAKEN);
    ck_assert(!fresh);
    ck_assert(mlt__lease_valid(a));
    ck_assert(!mlt__lease_lost(a));
    ck_assert_uint_eq(mlt__lease_gen(a), 1);
    ck_assert(exists(dir, GEN1));
    ck_assert_int_eq(count_entries(dir), 1);

    /* the file, byte for byte, against the format built here */
    size_t len = 0;
    char *text = mlt_test_slurp(dir, GEN1, &len);
    ck_assert_ptr_nonnull(text);
    char id[17] = "";
    ck_assert_int_eq(sscanf(text, "mltrack-lease-1 1 %16s ", id), 1);
    char fields[256], expect[256];
    snprintf(fields, sizeof fields, "mltrack-lease-1 1 %s writer %ld 0 delivering %s", id,
             (long)getpid(), host);
    line_of(expect, sizeof expect, fields);
    ck_assert_str_eq(text, expect);
    free(text);
    uint64_t a_id = strtoull(id, NULL, 16);

    /* held: taken again without a new generation */
    ck_assert_int_eq(mlt__lease_take(a, NULL, &fresh), MLT__LEASE_TAKEN);
    ck_assert(!fresh);
    ck_assert_uint_eq(mlt__lease_gen(a), 1);

    mlt__lease_info other;
    memset(&other, 0, sizeof other);
    fresh = true;
    ck_assert_int_eq(mlt__lease_take(b, &other, &fresh), MLT__LEASE_OTHER);
    ck_assert(!fresh);
    ck_assert(!mlt__lease_valid(b));
    ck_assert_uint_eq(mlt__lease_gen(b), 1);
    ck_assert_uint_eq(other.gen, 1);
    ck_assert_uint_eq(other.id, a_id);
    ck_assert_int_eq(other.role, MLT__LEASE_WRITER);
    ck_assert_int_eq(other.pid, (long)getpid());
    ck_assert_int_eq(other.state, MLT__LEASE_DELIVERING);
    ck_assert_str_eq(other.host, host);

    /* released: the file says so, and the other party takes the next generation at once */
    mlt__lease_release(a);
    ck_assert(!mlt__lease_valid(a));
    ck_assert(!mlt__lease_lost(a));
    mlt__lease_release(a); /* not held: nothing */
    mlt__lease_info got;
    ck_assert(read_gen(dir, 1, &got));
    ck_assert_int_eq(got.state, MLT__LEASE_RELEASED);
    ck_assert_uint_eq(got.id, a_id);
    ck_assert_uint_eq(got.beat, 1);

    fresh = false;
    ck_assert_int_eq(mlt__lease_take(b, &other, &fresh), MLT__LEASE_TAKEN);
    ck_assert(fresh);
    ck_assert(mlt__lease_valid(b));
    ck_assert_uint_eq(mlt__lease_gen(b), 2);
    ck_assert(!exists(dir, GEN1));
    ck_assert(read_gen(dir, 2, &got));
    ck_assert_int_eq(got.role, MLT__LEASE_RELAY);
    ck_assert_int_eq(got.state, MLT__LEASE_DELIVERING);
    ck_assert_uint_ne(got.id, a_id);
    ck_assert_int_eq(count_entries(dir), 1);

    /* the first party now sees the second */
    memset(&other, 0, sizeof other);
    ck_assert_int_eq(mlt__lease_take(a, &other, &fresh), MLT__LEASE_OTHER);
    ck_assert(!fresh);
    ck_assert_uint_eq(other.id, got.id);
    ck_assert_int_eq(other.role, MLT__LEASE_RELAY);
    ck_assert(!mlt__lease_valid(a));

    mlt__lease_free(a);
    mlt__lease_free(b); /* releases generation 2 */
    ck_assert(read_gen(dir, 2, &got));
    ck_assert_int_eq(got.state, MLT__LEASE_RELEASED);
    mlt__lease_free(NULL);
    mlt_test_remove_tree(dir);
}
END_TEST

START_TEST(lease_the_releasing_party_takes_its_next_generation_not_fresh)
{
    char dir[DIR_LEN];
    mlt_test_tmpdir(dir, sizeof dir, "lease");
    mlt__lease *a = lease_new(dir, MLT__LEASE_WRITER, MS);
    ck_assert_int_eq(mlt__lease_take(a, NULL, NULL), MLT__LEASE_TAKEN);
    mlt__lease_release(a);
    bool fresh = true;
    ck_assert_int_eq(mlt__lease_take(a, NULL, &fresh), MLT__LEASE_TAKEN);
    ck_assert(!fresh); /* nobody else delivered in between */
    ck_assert_uint_eq(mlt__lease_gen(a), 2);
    ck_assert(!exists(dir, GEN1));
    ck_assert_int_eq(count_entries(dir), 1);
    mlt__lease_free(a);
    mlt_test_remove_tree(dir);
}
END_TEST

START_TEST(lease_stale_generation_is_taken_lease_ms_after_the_taker_first_saw_it)
{
    char dir[DIR_LEN];
    mlt_test_tmpdir(dir, sizeof dir, "lease");
    mlt__lease *a = lease_new(dir, MLT__LEASE_WRITER, MS);
    mlt__lease *b = lease_new(dir, MLT__LEASE_RELAY, MS);
    ck_assert_int_eq(mlt__lease_take(a, NULL, NULL), MLT__LEASE_TAKEN);
    mlt__lease_info a_file;
    ck_assert(read_gen(dir, 1, &a_file));

    /* a stops renewing; the file is already old when b first looks: b counts from its own look */
    mlt__sleep_ms(MS * 3 / 4);
    int64_t first = mlt_test_mono_ms();
    mlt__lease_info other;
    bool fresh = true;
    ck_assert_int_eq(mlt__lease_take(b, &other, &fresh), MLT__LEASE_OTHER);
    ck_assert(!fresh);
    ck_assert_uint_eq(other.id, a_file.id);
    mlt__sleep_ms(MS / 2);
    mlt__lease_take_result r = mlt__lease_take(b, &other, &fresh);
    if (mlt_test_mono_ms() - first < MS) { /* else too slow a machine to tell */
        ck_assert_int_eq(r, MLT__LEASE_OTHER);
        ck_assert(!fresh);
    }
    r = take_within(b, 5 * MS, &fresh);
    int64_t taken = mlt_test_mono_ms();
    ck_assert_int_eq(r, MLT__LEASE_TAKEN);
    ck_assert_int_ge(taken - first, MS);
    ck_assert(fresh);
    /* taken from a holder that went silent: valid only after the settle time (lease_ms / 2), at
     * a renewal that finds no newer generation (were the old one only paused, its own renewal
     * would meanwhile find generation 2 and stop) */
    ck_assert(!mlt__lease_valid(b));
    mlt__sleep_ms(MS / 2 + 20);
    ck_assert_int_eq(mlt__lease_renew(b), MLT_OK);
    ck_assert(mlt__lease_valid(b));
    ck_assert_uint_eq(mlt__lease_gen(b), 2);
    ck_assert(!exists(dir, GEN1));
    mlt__lease_info b_file;
    ck_assert(read_gen(dir, 2, &b_file));
    ck_assert_uint_ne(b_file.id, a_file.id);

    /* the old holder finds out at its next renewal, and leaves no file behind */
    ck_assert(!mlt__lease_valid(a));
    ck_assert(!mlt__lease_lost(a));
    ck_assert_int_eq(mlt__lease_renew(a), MLT_ERR_STATE);
    ck_assert(mlt__lease_lost(a));
    ck_assert(!mlt__lease_valid(a));
    ck_assert(!exists(dir, GEN1));
    ck_assert_int_eq(count_entries(dir), 1);
    mlt__lease_info still;
    ck_assert(read_gen(dir, 2, &still));
    ck_assert_mem_eq(&still, &b_file, sizeof still);
    ck_assert_int_eq(mlt__lease_renew(a), MLT_OK); /* not held any more: nothing to renew */
    ck_assert(mlt__lease_lost(a));

    /* the new holder renews undisturbed */
    ck_assert_int_eq(mlt__lease_renew(b), MLT_OK);
    ck_assert(mlt__lease_valid(b));
    ck_assert(read_gen(dir, 2, &still));
    ck_assert_uint_eq(still.beat, b_file.beat + 1);

    mlt__lease_free(a);
    mlt__lease_free(b);
    mlt_test_remove_tree(dir);
}
END_TEST

/*
 * An old holder whose lease lapsed (paused longer than lease_ms: a stopped process, a hung NFS
 * mount) and which looks again with take() before its keeper's next renewal: it must see the
 * new generation as another's, and its renewals must never write into that generation's file.
 */
START_TEST(lease_old_holder_that_looks_again_never_writes_the_new_generation)
{
    char dir[DIR_LEN];
    mlt_test_tmpdir(dir, sizeof dir, "lease");
    mlt__lease *a = lease_new(dir, MLT__LEASE_WRITER, MS);
    mlt__lease *b = lease_new(dir, MLT__LEASE_RELAY, MS);
    ck_assert_int_eq(mlt__lease_take(a, NULL, NULL), MLT__LEASE_TAKEN);
    ck_assert_int_eq(mlt__lease_take(b, NULL, NULL), MLT__LEASE_OTHER);
    ck_assert_int_eq(take_within(b, 5 * MS, NULL), MLT__LEASE_TAKEN);
    mlt__lease_info b_file;
    ck_assert(read_gen(dir, 2, &b_file));

    /* every figure first, asserted after the objects are freed (clean under CK_FORK=no) */
    mlt__lease_info other;
    memset(&other, 0, sizeof other);
    bool fresh = true;
    mlt__lease_take_result a_take = mlt__lease_take(a, &other, &fresh);
    mlt_err a_renew = mlt__lease_renew(a);
    bool a_lost = mlt__lease_lost(a), a_valid = mlt__lease_valid(a);
    mlt__lease_info gen2;
    memset(&gen2, 0, sizeof gen2);
    bool gen2_read = read_gen(dir, 2, &gen2);
    mlt__sleep_ms(MS / 2 + 20); /* b's settle time after a takeover from a silent holder */
    mlt_err b_renew = mlt__lease_renew(b);
    bool b_valid = mlt__lease_valid(b);
    mlt__lease_free(a);
    mlt__lease_free(b);
    mlt_test_remove_tree(dir);

    ck_assert_int_eq(a_take, MLT__LEASE_OTHER);
    ck_assert(!fresh);
    ck_assert_uint_eq(other.id, b_file.id);
    ck_assert_msg(gen2_read && gen2.id == b_file.id,
                  "the old holder's renewal overwrote generation 2 (now id %016" PRIx64
                  ", the new holder's is %016" PRIx64 ")",
                  gen2.id, b_file.id);
    /* lost when its take() saw generation 2 (then not held: renew has nothing to do), or at
     * this renewal */
    ck_assert(a_renew == MLT_OK || a_renew == MLT_ERR_STATE);
    ck_assert(a_lost);
    ck_assert(!a_valid);
    ck_assert_int_eq(b_renew, MLT_OK);
    ck_assert(b_valid);
}
END_TEST

/* The holder paused past its lease while a party took over and then gave it up to a third
 * (a writer finds the server away and lets go for a relay): generations 1 and 2 are both gone
 * from the directory when the holder renews. It must find the newer one, not write its own
 * file again and hold on (CI saw a relay paused with SIGSTOP deliver and adopt on). */
START_TEST(lease_holder_taken_over_twice_while_away_finds_it_lost_at_its_renewal)
{
    char dir[DIR_LEN];
    mlt_test_tmpdir(dir, sizeof dir, "lease");
    mlt__lease *a = lease_new(dir, MLT__LEASE_RELAY, MS);
    mlt__lease *b = lease_new(dir, MLT__LEASE_WRITER, MS);
    mlt__lease *c = lease_new(dir, MLT__LEASE_RELAY, MS);
    ck_assert_int_eq(mlt__lease_take(a, NULL, NULL), MLT__LEASE_TAKEN);
    ck_assert_int_eq(mlt__lease_take(b, NULL, NULL), MLT__LEASE_OTHER);
    mlt__lease_take_result b_take = take_within(b, 5 * MS, NULL); /* a silent: stale */
    mlt__lease_release(b);
    bool fresh = false;
    mlt__lease_take_result c_take = mlt__lease_take(c, NULL, &fresh);
    char g1[64], g2[64];
    gen_name(g1, sizeof g1, 1);
    gen_name(g2, sizeof g2, 2);
    bool g1_before = exists(dir, g1), g2_before = exists(dir, g2);

    mlt_err a_renew = mlt__lease_renew(a);
    bool a_lost = mlt__lease_lost(a), a_valid = mlt__lease_valid(a);
    bool g1_after = exists(dir, g1);
    mlt__lease_info gen3;
    memset(&gen3, 0, sizeof gen3);
    bool gen3_read = read_gen(dir, 3, &gen3);
    mlt__lease_info c_seen;
    memset(&c_seen, 0, sizeof c_seen);
    int a_peek = mlt__lease_peek(a, &c_seen);
    uint64_t c_gen = mlt__lease_gen(c);
    mlt__lease_free(a);
    mlt__lease_free(b);
    mlt__lease_free(c);
    mlt_test_remove_tree(dir);

    ck_assert_int_eq(b_take, MLT__LEASE_TAKEN);
    ck_assert_int_eq(c_take, MLT__LEASE_TAKEN);
    ck_assert(fresh);
    ck_assert_uint_eq(c_gen, 3);
    ck_assert(!g1_before && !g2_before); /* each taker removed the generation before its own */
    ck_assert_int_eq(a_renew, MLT_ERR_STATE);
    ck_assert(a_lost);
    ck_assert(!a_valid);
    ck_assert_msg(!g1_after, "the old holder's renewal wrote its generation's file again");
    ck_assert(gen3_read);
    ck_assert_int_eq(a_peek, 1);
    ck_assert_uint_eq(c_seen.gen, 3);
    ck_assert_uint_eq(c_seen.id, gen3.id);
}
END_TEST

START_TEST(lease_holder_renewed_by_its_keeper_is_never_taken_over)
{
    char dir[DIR_LEN];
    mlt_test_tmpdir(dir, sizeof dir, "lease");
    mlt__lease *a = lease_new(dir, MLT__LEASE_WRITER, KEEP_MS);
    mlt__lease *b = lease_new(dir, MLT__LEASE_RELAY, KEEP_MS);
    mlt__lease_keeper *k = mlt__lease_keeper_new(KEEP_MS / 5);
    ck_assert_ptr_nonnull(k);
    ck_assert_int_eq(mlt__lease_take(a, NULL, NULL), MLT__LEASE_TAKEN);
    ck_assert_int_eq(mlt__lease_keeper_add(k, a), MLT_OK);
    mlt__lease_info a_file;
    ck_assert(read_gen(dir, 1, &a_file));

    /* past two lease times, and at least a few looks however slowly they come */
    int64_t end = mlt_test_mono_ms() + 2 * KEEP_MS;
    uint64_t first_beat = UINT64_MAX, last_beat = 0;
    int looks = 0;
    while (mlt_test_mono_ms() < end || looks < 11) {
        mlt__lease_info other;
        bool fresh = true;
        REQUIRE(mlt__lease_take(b, &other, &fresh) == MLT__LEASE_OTHER, "taken over after %d looks",
                looks);
        REQUIRE(!fresh && other.id == a_file.id && other.gen == 1, "look %d", looks);
        first_beat = other.beat < first_beat ? other.beat : first_beat;
        last_beat = other.beat;
        looks++;
        mlt__sleep_ms(10);
    }
    ck_assert_uint_gt(last_beat, first_beat); /* renewed meanwhile */
    ck_assert(mlt__lease_valid(a));
    ck_assert(!mlt__lease_lost(a));
    ck_assert_uint_eq(mlt__lease_gen(b), 1);

    /* removed: no renewal of it runs any more (nor its temporary file, while it is renamed) */
    mlt__lease_keeper_remove(k, a);
    ck_assert_int_eq(count_entries(dir), 1);
    size_t len1 = 0, len2 = 0;
    char *before = mlt_test_slurp(dir, GEN1, &len1);
    mlt__sleep_ms(3 * (KEEP_MS / 5));
    char *after = mlt_test_slurp(dir, GEN1, &len2);
    ck_assert_ptr_nonnull(before);
    ck_assert_ptr_nonnull(after);
    ck_assert_str_eq(before, after);
    free(before);
    free(after);
    mlt__lease_keeper_remove(k, a); /* not in it: nothing */

    mlt__lease_keeper_free(k);
    mlt__lease_keeper_free(NULL);
    mlt__lease_free(a);
    mlt__lease_free(b);
    mlt_test_remove_tree(dir);
}
END_TEST

START_TEST(lease_keeper_renews_every_lease_added_to_it)
{
    char tmp[DIR_LEN], d1[DIR_LEN + 8], d2[DIR_LEN + 8];
    mlt_test_tmpdir(tmp, sizeof tmp, "lease");
    snprintf(d1, sizeof d1, "%s/one", tmp);
    snprintf(d2, sizeof d2, "%s/two", tmp);
    ck_assert_int_eq(mkdir(d1, 0700), 0);
    ck_assert_int_eq(mkdir(d2, 0700), 0);
    mlt__lease *a = lease_new(d1, MLT__LEASE_RELAY, KEEP_MS);
    mlt__lease *b = lease_new(d2, MLT__LEASE_RELAY, KEEP_MS);
    /* never taken: nothing to renew */
    mlt__lease *idle = lease_new(tmp, MLT__LEASE_RELAY, KEEP_MS);
    mlt__lease_keeper *k = mlt__lease_keeper_new(KEEP_MS / 10);
    ck_assert_ptr_nonnull(k);
    ck_assert_int_eq(mlt__lease_take(a, NULL, NULL), MLT__LEASE_TAKEN);
    ck_assert_int_eq(mlt__lease_take(b, NULL, NULL), MLT__LEASE_TAKEN);
    ck_assert_int_eq(mlt__lease_keeper_add(k, idle), MLT_OK);
    ck_assert_int_eq(mlt__lease_keeper_add(k, a), MLT_OK);
    ck_assert_int_eq(mlt__lease_keeper_add(k, b), MLT_OK);
    mlt__sleep_ms(KEEP_MS / 2);
    ck_assert(mlt__lease_valid(a));
    ck_assert(mlt__lease_valid(b));
    mlt__lease_info got;
    ck_assert(read_gen(d1, 1, &got));
    ck_assert_uint_ge(got.beat, 2);
    ck_assert(read_gen(d2, 1, &got));
    ck_assert_uint_ge(got.beat, 2);
    ck_assert_int_eq(count_entries(tmp), 2); /* the idle one wrote nothing */
    mlt__lease_keeper_remove(k, idle);
    mlt__lease_keeper_free(k); /* stops the thread; the leases stay the caller's */
    ck_assert(mlt__lease_valid(a));
    mlt__lease_free(idle);
    mlt__lease_free(a);
    mlt__lease_free(b);
    mlt_test_remove_tree(tmp);
}
END_TEST

START_TEST(lease_patient_party_leaves_a_never_taken_lease_for_lease_ms)
{
    char tmp[DIR_LEN], d1[DIR_LEN + 8], d2[DIR_LEN + 8];
    mlt_test_tmpdir(tmp, sizeof tmp, "lease");
    snprintf(d1, sizeof d1, "%s/one", tmp);
    snprintf(d2, sizeof d2, "%s/two", tmp);
    ck_assert_int_eq(mkdir(d1, 0700), 0);
    ck_assert_int_eq(mkdir(d2, 0700), 0);

    mlt__lease *p = lease_new(d1, MLT__LEASE_RELAY, MS);
    mlt__lease_set_patient(p, true);
    int64_t first = mlt_test_mono_ms();
    mlt__lease_info other;
    memset(&other, 0x5A, sizeof other);
    bool fresh = true;
    ck_assert_int_eq(mlt__lease_take(p, &other, &fresh), MLT__LEASE_OTHER);
    ck_assert(!fresh);
    ck_assert_uint_eq(other.gen, 0); /* nobody holds it */
    ck_assert_str_eq(other.host, "");
    ck_assert_int_eq(count_entries(d1), 0);
    ck_assert(!mlt__lease_valid(p));
    mlt__sleep_ms(MS / 2);
    mlt__lease_take_result r = mlt__lease_take(p, NULL, NULL);
    if (mlt_test_mono_ms() - first < MS) {
        ck_assert_int_eq(r, MLT__LEASE_OTHER);
        ck_assert_int_eq(count_entries(d1), 0);
    }
    r = take_within(p, 5 * MS, &fresh);
    ck_assert_int_eq(r, MLT__LEASE_TAKEN);
    ck_assert_int_ge(mlt_test_mono_ms() - first, MS);
    ck_assert(!fresh);
    ck_assert_uint_eq(mlt__lease_gen(p), 1);
    ck_assert(exists(d1, GEN1));

    /* not patient: at once */
    mlt__lease *n = lease_new(d2, MLT__LEASE_RELAY, MS);
    ck_assert_int_eq(mlt__lease_take(n, NULL, &fresh), MLT__LEASE_TAKEN);
    ck_assert(!fresh);
    ck_assert_uint_eq(mlt__lease_gen(n), 1);
    mlt__lease_free(n);
    mlt__lease_free(p);
    mlt_test_remove_tree(tmp);
}
END_TEST

START_TEST(lease_patient_party_lets_a_writer_take_first)
{
    char dir[DIR_LEN];
    mlt_test_tmpdir(dir, sizeof dir, "lease");
    mlt__lease *p = lease_new(dir, MLT__LEASE_RELAY, MS);
    mlt__lease *w = lease_new(dir, MLT__LEASE_WRITER, MS);
    mlt__lease_set_patient(p, true);
    ck_assert_int_eq(mlt__lease_take(p, NULL, NULL), MLT__LEASE_OTHER);
    ck_assert_int_eq(mlt__lease_take(w, NULL, NULL), MLT__LEASE_TAKEN);
    mlt__lease_info other;
    memset(&other, 0, sizeof other);
    ck_assert_int_eq(mlt__lease_take(p, &other, NULL), MLT__LEASE_OTHER);
    ck_assert_uint_eq(other.gen, 1);
    ck_assert_int_eq(other.role, MLT__LEASE_WRITER);
    /* a writer that gives up: the patient party need not wait for it */
    mlt__lease_release(w);
    bool fresh = false;
    ck_assert_int_eq(mlt__lease_take(p, NULL, &fresh), MLT__LEASE_TAKEN);
    ck_assert(fresh);
    ck_assert_uint_eq(mlt__lease_gen(p), 2);
    mlt__lease_free(w);
    mlt__lease_free(p);

    /* patience turned off: at once */
    char sub[DIR_LEN + 8];
    snprintf(sub, sizeof sub, "%s/sub", dir);
    ck_assert_int_eq(mkdir(sub, 0700), 0);
    p = lease_new(sub, MLT__LEASE_RELAY, MS);
    mlt__lease_set_patient(p, true);
    ck_assert_int_eq(mlt__lease_take(p, NULL, NULL), MLT__LEASE_OTHER);
    mlt__lease_set_patient(p, false);
    ck_assert_int_eq(mlt__lease_take(p, NULL, NULL), MLT__LEASE_TAKEN);
    mlt__lease_free(p);
    mlt_test_remove_tree(dir);
}
END_TEST

START_TEST(lease_of_a_dead_process_of_this_host_is_taken_at_once)
{
    char tmp[DIR_LEN], host[64];
    mlt_test_tmpdir(tmp, sizeof tmp, "lease");
    this_host(host);
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        _exit(0);
    }
    int status = 0;
    ck_assert_int_eq(waitpid(child, &status, 0), child);

    struct {
        const char *name;
        long pid;
        const char *host;
        mlt__lease_take_result want;
    } cases[] = {
        {"dead", (long)child, host, MLT__LEASE_TAKEN},
        {"alive", (long)getppid(), host, MLT__LEASE_OTHER},
        {"elsewhere", (long)child, "other-host.invalid", MLT__LEASE_OTHER},
        {"itself", (long)getpid(), host, MLT__LEASE_OTHER},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char dir[DIR_LEN + 16];
        snprintf(dir, sizeof dir, "%s/%s", tmp, cases[i].name);
        ck_assert_int_eq(mkdir(dir, 0700), 0);
        mlt__lease_info holder = info_of(1, 0x1111222233334444ull, cases[i].pid, cases[i].host);
        write_gen(dir, &holder);
        mlt__lease *l = lease_new(dir, MLT__LEASE_RELAY, MS);
        mlt__lease_info other;
        memset(&other, 0, sizeof other);
        bool fresh = false;
        mlt__lease_take_result r = mlt__lease_take(l, &other, &fresh);
        ck_assert_msg(r == cases[i].want, "%s: %d", cases[i].name, (int)r);
        if (r == MLT__LEASE_TAKEN) {
            ck_assert(fresh);
            ck_assert_uint_eq(mlt__lease_gen(l), 2);
            ck_assert(!exists(dir, GEN1));
            ck_assert(exists(dir, GEN2));
        } else {
            ck_assert_uint_eq(other.id, holder.id);
            ck_assert_int_eq(other.pid, cases[i].pid);
            ck_assert(exists(dir, GEN1));
        }
        mlt__lease_free(l);
    }
    mlt_test_remove_tree(tmp);
}
END_TEST

START_TEST(lease_validity_lapses_half_a_lease_after_the_last_renewal)
{
    char dir[DIR_LEN];
    mlt_test_tmpdir(dir, sizeof dir, "lease");
    mlt__lease *a = lease_new(dir, MLT__LEASE_WRITER, 2 * MS);
    ck_assert_int_eq(mlt__lease_take(a, NULL, NULL), MLT__LEASE_TAKEN);
    int64_t after = mlt_test_mono_ms();
    ck_assert(mlt__lease_valid(a));
    mlt__sleep_ms(MS + 20 - (mlt_test_mono_ms() - after)); /* lease_ms / 2, and a margin */
    ck_assert(!mlt__lease_valid(a));
    ck_assert(!mlt__lease_lost(a)); /* lapsed, not lost: nobody took it */
    ck_assert_uint_eq(mlt__lease_gen(a), 1);

    /* a renewal that finds no newer generation makes it valid again */
    ck_assert_int_eq(mlt__lease_renew(a), MLT_OK);
    ck_assert(mlt__lease_valid(a));
    mlt__lease_info got;
    ck_assert(read_gen(dir, 1, &got));
    ck_assert_uint_eq(got.beat, 1);

    /* and so does a take() of its holder, in the same generation */
    mlt__sleep_ms(MS + 20);
    ck_assert(!mlt__lease_valid(a));
    bool fresh = true;
    ck_assert_int_eq(mlt__lease_take(a, NULL, &fresh), MLT__LEASE_TAKEN);
    ck_assert(!fresh);
    ck_assert(mlt__lease_valid(a));
    ck_assert_uint_eq(mlt__lease_gen(a), 1);
    ck_assert(read_gen(dir, 1, &got));
    ck_assert_uint_eq(got.beat, 2);
    ck_assert_int_eq(count_entries(dir), 1);
    mlt__lease_free(a);
    mlt_test_remove_tree(dir);
}
END_TEST

START_TEST(lease_in_a_removed_directory_is_gone_and_a_held_one_lost)
{
    char tmp[DIR_LEN], dir[DIR_LEN + 8], none[DIR_LEN + 8];
    mlt_test_tmpdir(tmp, sizeof tmp, "lease");
    snprintf(dir, sizeof dir, "%s/j", tmp);
    snprintf(none, sizeof none, "%s/none", tmp);
    ck_assert_int_eq(mkdir(dir, 0700), 0);

    mlt__lease *never = lease_new(none, MLT__LEASE_RELAY, MS);
    ck_assert_int_eq(mlt__lease_take(never, NULL, NULL), MLT__LEASE_GONE);
    mlt__lease_set_patient(never, true);
    ck_assert_int_eq(mlt__lease_take(never, NULL, NULL), MLT__LEASE_GONE);
    mlt__lease_free(never);

    mlt__lease *a = lease_new(dir, MLT__LEASE_WRITER, MS);
    mlt__lease *seen = lease_new(dir, MLT__LEASE_RELAY, MS); /* knows generation 1 */
    mlt__lease *fresh = lease_new(dir, MLT__LEASE_RELAY, MS);
    ck_assert_int_eq(mlt__lease_take(a, NULL, NULL), MLT__LEASE_TAKEN);
    ck_assert_int_eq(mlt__lease_take(seen, NULL, NULL), MLT__LEASE_OTHER);
    mlt_test_remove_tree(dir);

    ck_assert_int_eq(mlt__lease_take(seen, NULL, NULL), MLT__LEASE_GONE);
    ck_assert_int_eq(mlt__lease_take(fresh, NULL, NULL), MLT__LEASE_GONE);
    ck_assert_int_eq(mlt__lease_renew(a), MLT_ERR_STATE);
    ck_assert(mlt__lease_lost(a));
    ck_assert(!mlt__lease_valid(a));
    ck_assert_int_eq(mlt__lease_take(a, NULL, NULL), MLT__LEASE_GONE);
    ck_assert_int_eq(count_entries(tmp), 0); /* nothing made again */
    mlt__lease_free(a);
    mlt__lease_free(seen);
    mlt__lease_free(fresh);
    mlt_test_remove_tree(tmp);
}
END_TEST

START_TEST(lease_set_state_is_written_at_once_and_seen_by_another_party)
{
    char dir[DIR_LEN];
    mlt_test_tmpdir(dir, sizeof dir, "lease");
    mlt__lease *a = lease_new(dir, MLT__LEASE_RELAY, MS);
    mlt__lease *b = lease_new(dir, MLT__LEASE_WRITER, MS);
    ck_assert_int_eq(mlt__lease_take(a, NULL, NULL), MLT__LEASE_TAKEN);

    mlt__lease_set_state(a, MLT__LEASE_AWAY);
    mlt__lease_info other;
    memset(&other, 0, sizeof other);
    ck_assert_int_eq(mlt__lease_take(b, &other, NULL), MLT__LEASE_OTHER);
    ck_assert_int_eq(other.state, MLT__LEASE_AWAY);
    ck_assert_uint_eq(other.beat, 1);
    ck_assert_int_eq(other.role, MLT__LEASE_RELAY);

    mlt__lease_set_state(a, MLT__LEASE_AWAY); /* unchanged: not written */
    mlt__lease_info got;
    ck_assert(read_gen(dir, 1, &got));
    ck_assert_uint_eq(got.beat, 1);

    ck_assert_int_eq(mlt__lease_renew(a), MLT_OK); /* a renewal keeps the state */
    ck_assert(read_gen(dir, 1, &got));
    ck_assert_int_eq(got.state, MLT__LEASE_AWAY);
    ck_assert_uint_eq(got.beat, 2);

    mlt__lease_set_state(a, MLT__LEASE_DELIVERING);
    ck_assert_int_eq(mlt__lease_take(b, &other, NULL), MLT__LEASE_OTHER);
    ck_assert_int_eq(other.state, MLT__LEASE_DELIVERING);
    ck_assert_uint_eq(other.beat, 3);

    /* a party that does not hold the lease writes nothing */
    mlt__lease_set_state(b, MLT__LEASE_AWAY);
    ck_assert(read_gen(dir, 1, &got));
    ck_assert_uint_eq(got.id, other.id);
    ck_assert_uint_eq(got.beat, 3);
    ck_assert_int_eq(count_entries(dir), 1);
    mlt__lease_free(a);
    mlt__lease_free(b);
    mlt_test_remove_tree(dir);
}
END_TEST

START_TEST(lease_torn_file_is_left_alone_until_unchanged_for_lease_ms)
{
    char dir[DIR_LEN], p[PATH_MAX];
    mlt_test_tmpdir(dir, sizeof dir, "lease");
    mlt_test_path(p, dir, GEN1);
    static const char torn[] = "mltrack-lease-1 1 0123456789ab";
    mlt_test_write_file(p, "wb", torn, sizeof torn - 1);
    mlt__lease *l = lease_new(dir, MLT__LEASE_RELAY, MS);
    int64_t first = mlt_test_mono_ms();
    mlt__lease_info other;
    memset(&other, 0x5A, sizeof other);
    ck_assert_int_eq(mlt__lease_take(l, &other, NULL), MLT__LEASE_OTHER);
    ck_assert_uint_eq(other.gen, 1);
    ck_assert_uint_eq(other.id, 0);
    bool fresh = false;
    ck_assert_int_eq(take_within(l, 5 * MS, &fresh), MLT__LEASE_TAKEN);
    ck_assert_int_ge(mlt_test_mono_ms() - first, MS);
    ck_assert(fresh);
    ck_assert_uint_eq(mlt__lease_gen(l), 2);
    ck_assert(!exists(dir, GEN1));
    mlt__lease_free(l);
    mlt_test_remove_tree(dir);
}
END_TEST

START_TEST(lease_found_at_a_later_generation_is_taken_after_the_newest)
{
    char dir[DIR_LEN], p[PATH_MAX];
    mlt_test_tmpdir(dir, sizeof dir, "lease");
    mlt__lease_info holder = info_of(5, 42, 4242, "other-host.invalid");
    holder.state = MLT__LEASE_RELEASED;
    write_gen(dir, &holder);
    /* names that are not a generation's */
    const char *strays[] = {"lease.0000000000000000009", "lease.000000000000000000099",
                            "lease.0000000000000000000x", "lease-tmp-0000000000000001"};
    for (size_t i = 0; i < sizeof strays / sizeof *strays; i++) {
        mlt_test_path(p, dir, strays[i]);
        mlt_test_write_file(p, "wb", "x", 1);
    }
    mlt__lease *l = lease_new(dir, MLT__LEASE_WRITER, MS);
    bool fresh = false;
    ck_assert_int_eq(mlt__lease_take(l, NULL, &fresh), MLT__LEASE_TAKEN);
    ck_assert(fresh);
    ck_assert_uint_eq(mlt__lease_gen(l), 6);
    ck_assert(!exists(dir, "lease.00000000000000000005"));
    ck_assert(exists(dir, "lease.00000000000000000006"));
    mlt__lease_free(l);
    mlt_test_remove_tree(dir);
}
END_TEST

/* ---- two parties racing ---------------------------------------------------------------------- */

#define RACE_ROUNDS 200

typedef struct racer {
    mlt__lease *l;
    pthread_barrier_t *start;
    mlt__lease_take_result res;
    mlt__lease_info other;
} racer;

static void *race_main(void *arg)
{
    racer *r = arg;
    pthread_barrier_wait(r->start);
    r->res = mlt__lease_take(r->l, &r->other, NULL);
    return NULL;
}

START_TEST(lease_two_parties_racing_for_a_fresh_journal_take_it_once)
{
    char tmp[DIR_LEN];
    mlt_test_tmpdir(tmp, sizeof tmp, "lease");
    int taken_by[2] = {0, 0};
    for (int round = 0; round < RACE_ROUNDS; round++) {
        char dir[DIR_LEN + 16];
        snprintf(dir, sizeof dir, "%s/r%03d", tmp, round);
        ck_assert_int_eq(mkdir(dir, 0700), 0);
        pthread_barrier_t start;
        ck_assert_int_eq(pthread_barrier_init(&start, NULL, 2), 0);
        racer rs[2];
        pthread_t th[2];
        for (int i = 0; i < 2; i++) {
            memset(&rs[i], 0, sizeof rs[i]);
            rs[i].l = lease_new(dir, i == 0 ? MLT__LEASE_WRITER : MLT__LEASE_RELAY, MS);
            rs[i].start = &start;
        }
        for (int i = 0; i < 2; i++) {
            ck_assert_int_eq(pthread_create(&th[i], NULL, race_main, &rs[i]), 0);
        }
        for (int i = 0; i < 2; i++) {
            ck_assert_int_eq(pthread_join(th[i], NULL), 0);
        }
        pthread_barrier_destroy(&start);
        int taken = (rs[0].res == MLT__LEASE_TAKEN) + (rs[1].res == MLT__LEASE_TAKEN);
        int other = (rs[0].res == MLT__LEASE_OTHER) + (rs[1].res == MLT__LEASE_OTHER);
        bool one_gen = exists(dir, GEN1) && !exists(dir, GEN2);
        int winner = rs[0].res == MLT__LEASE_TAKEN ? 0 : 1;
        bool valid = mlt__lease_valid(rs[winner].l) && !mlt__lease_valid(rs[1 - winner].l);
        mlt__lease_role seen_role = rs[1 - winner].other.role;
        uint64_t seen_gen = rs[1 - winner].other.gen;
        mlt__lease_free(rs[0].l);
        mlt__lease_free(rs[1].l);
        REQUIRE(taken == 1 && other == 1, "round %d: %d and %d", round, (int)rs[0].res,
                (int)rs[1].res);
        REQUIRE(one_gen && valid, "round %d", round);
        REQUIRE(seen_gen == 1 && seen_role == (winner == 0 ? MLT__LEASE_WRITER : MLT__LEASE_RELAY),
                "round %d: the loser saw generation %" PRIu64, round, seen_gen);
        taken_by[winner]++;
    }
    ck_assert_int_eq(taken_by[0] + taken_by[1], RACE_ROUNDS);
    mlt_test_remove_tree(tmp);
}
END_TEST

/* A generation made by our link(2) whose reply was lost (EEXIST on the retry, as NFS may answer)
 * is read back and found ours: held, not given up to nobody; another party then finds it held. */
START_TEST(lease_taken_by_a_link_whose_reply_was_lost_is_ours)
{
    char dir[DIR_LEN];
    mlt_test_tmpdir(dir, sizeof dir, "lease");
    mlt__lease *a = lease_new(dir, MLT__LEASE_WRITER, MS);
    mlt__lease *b = lease_new(dir, MLT__LEASE_RELAY, MS);
    atomic_store(&link_lies, 1);
    ck_assert_int_eq(mlt__lease_take(a, NULL, NULL), MLT__LEASE_TAKEN);
    ck_assert_int_eq(atomic_load(&link_lies), 0); /* the lie was told */
    ck_assert(mlt__lease_valid(a));
    ck_assert_uint_eq(mlt__lease_gen(a), 1);
    mlt__lease_info other;
    ck_assert_int_eq(mlt__lease_take(b, &other, NULL), MLT__LEASE_OTHER);
    ck_assert_int_eq(other.role, MLT__LEASE_WRITER);
    ck_assert_int_eq(mlt__lease_renew(a), MLT_OK);
    ck_assert(mlt__lease_valid(a));
    mlt__lease_free(a);
    mlt__lease_free(b);
    mlt_test_remove_tree(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("lease");
    MLT_ADD_TEST(s, lease_format_writes_the_documented_line_and_parses_back);
    MLT_ADD_TEST(s, lease_format_and_parse_round_trip_every_role_state_and_extreme);
    MLT_ADD_TEST(s, lease_format_refuses_a_short_buffer_and_bad_fields);
    MLT_ADD_TEST(s, lease_parse_refuses_a_torn_line);
    MLT_ADD_TEST(s, lease_parse_refuses_a_bad_checksum);
    MLT_ADD_TEST(s, lease_parse_refuses_extra_or_missing_fields);
    MLT_ADD_TEST(s, lease_parse_refuses_bytes_after_the_newline_and_a_nul_inside);
    MLT_ADD_TEST(s, lease_parse_refuses_generation_zero_and_a_pid_not_positive);
    MLT_ADD_TEST(s, lease_parse_refuses_an_unknown_role_or_state);
    MLT_ADD_TEST(s, lease_parse_refuses_a_host_with_spaces_control_characters_or_too_long);
    MLT_ADD_TEST(s, lease_parse_refuses_an_overlong_line);
    MLT_ADD_TEST(s, lease_parse_refuses_an_id_not_of_16_lowercase_hex_digits);
    MLT_ADD_TEST(s, lease_parse_leaves_its_output_alone_on_failure);
    MLT_ADD_TEST(s, lease_first_take_creates_generation_one_and_another_party_sees_it);
    MLT_ADD_TEST(s, lease_the_releasing_party_takes_its_next_generation_not_fresh);
    MLT_ADD_TEST(s, lease_stale_generation_is_taken_lease_ms_after_the_taker_first_saw_it);
    MLT_ADD_TEST(s, lease_old_holder_that_looks_again_never_writes_the_new_generation);
    MLT_ADD_TEST(s, lease_holder_taken_over_twice_while_away_finds_it_lost_at_its_renewal);
    MLT_ADD_TEST(s, lease_holder_renewed_by_its_keeper_is_never_taken_over);
    MLT_ADD_TEST(s, lease_keeper_renews_every_lease_added_to_it);
    MLT_ADD_TEST(s, lease_patient_party_leaves_a_never_taken_lease_for_lease_ms);
    MLT_ADD_TEST(s, lease_patient_party_lets_a_writer_take_first);
    MLT_ADD_TEST(s, lease_of_a_dead_process_of_this_host_is_taken_at_once);
    MLT_ADD_TEST(s, lease_validity_lapses_half_a_lease_after_the_last_renewal);
    MLT_ADD_TEST(s, lease_in_a_removed_directory_is_gone_and_a_held_one_lost);
    MLT_ADD_TEST(s, lease_set_state_is_written_at_once_and_seen_by_another_party);
    MLT_ADD_TEST(s, lease_torn_file_is_left_alone_until_unchanged_for_lease_ms);
    MLT_ADD_TEST(s, lease_found_at_a_later_generation_is_taken_after_the_newest);
    MLT_ADD_TEST(s, lease_two_parties_racing_for_a_fresh_journal_take_it_once);
    MLT_ADD_TEST(s, lease_taken_by_a_link_whose_reply_was_lost_is_ours);
    return mlt_test_run_suite(s);
}
