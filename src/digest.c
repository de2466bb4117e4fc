/*
 * digest.c - SHA-256 through OpenSSL's EVP interface (SHA extensions of the CPU where there
 * are), and its hex form.
 */
#include "config.h"

#include "digest.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct mlt__sha256 {
    EVP_MD_CTX *ctx;
};

mlt__sha256 *mlt__sha256_new(void)
{
    mlt__sha256 *c = malloc(sizeof *c);
    if (c && (c->ctx = EVP_MD_CTX_new()) != NULL &&
        EVP_DigestInit_ex(c->ctx, EVP_sha256(), NULL) == 1) {
        return c;
    }
    if (c) {
        EVP_MD_CTX_free(c->ctx);
        free(c);
    }
    (void)mlt__fail(MLT_ERR_NOMEM, "out of memory (SHA-256 context)");
    return NULL;
}

void mlt__sha256_update(mlt__sha256 *c, const void *data, size_t len)
{
    if (len) {
        (void)EVP_DigestUpdate(c->ctx, data, len); /* fails only for a context never made */
    }
}

void mlt__sha256_hex(mlt__sha256 *c, char out[MLT__SHA256_HEX])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    (void)EVP_DigestFinal_ex(c->ctx, md, &n);
    static const char hex[] = "0123456789abcdef";
    for (unsigned int i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
    mlt__sha256_free(c);
}

void mlt__sha256_free(mlt__sha256 *c)
{
    if (c) {
        EVP_MD_CTX_free(c->ctx);
        free(c);
    }
}

#define CHUNK (1u << 20)

mlt_err mlt__sha256_fd(int fd, uint64_t off, uint64_t len, char out[MLT__SHA256_HEX])
{
    mlt__sha256 *c = mlt__sha256_new();
    unsigned char *buf = c ? malloc(CHUNK) : NULL;
    if (!buf) {
        mlt__sha256_free(c);
        return mlt__fail(MLT_ERR_NOMEM, "out of memory");
    }
    uint64_t done = 0;
    while (done < len) {
        size_t want = len - done < CHUNK ? (size_t)(len - done) : CHUNK;
        ssize_t n = pread(fd, buf, want, (off_t)(off + done));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            mlt_err err = n < 0 ? mlt__fail(MLT_ERR_IO, "cannot read: %s", strerror(errno))
                                : mlt__fail(MLT_ERR_IO, "the file ends after %llu of %llu bytes",
                                            (unsigned long long)done, (unsigned long long)len);
            free(buf);
            mlt__sha256_free(c);
            return err;
        }
        mlt__sha256_update(c, buf, (size_t)n);
        done += (uint64_t)n;
    }
    free(buf);
    mlt__sha256_hex(c, out);
    return MLT_OK;
}
