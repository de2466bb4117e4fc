/*
 * digest.h - SHA-256 of artifacts (OpenSSL's libcrypto, which libcurl's TLS already loads): a
 * streaming context and the lowercase hex form that artifact records and sinks carry.
 */
#ifndef MLT_DIGEST_H
#define MLT_DIGEST_H

#include "common.h"

#define MLT__SHA256_HEX 65 /* 64 lowercase hex digits and a NUL */

typedef struct mlt__sha256 mlt__sha256;

/* A new context, NULL when out of memory (message in mlt_last_error()). */
mlt__sha256 *mlt__sha256_new(void);
void mlt__sha256_update(mlt__sha256 *c, const void *data, size_t len);
/* Writes the digest of everything updated as hex into out and frees c. */
void mlt__sha256_hex(mlt__sha256 *c, char out[MLT__SHA256_HEX]);
/* Frees c without a digest. NULL does nothing. */
void mlt__sha256_free(mlt__sha256 *c);

/* The SHA-256 of bytes [off, off + len) of fd, read with pread (the file offset does not move),
 * into out. MLT_ERR_IO when it cannot be read, or is shorter (message in mlt_last_error()). */
MLT__MUST_USE mlt_err mlt__sha256_fd(int fd, uint64_t off, uint64_t len, char out[MLT__SHA256_HEX]);

#endif
