/*
 * url.h - the credentials in a URL's authority (user:password@): masked for messages, removed
 * for what is kept on disk. Ground floor: nothing of the network.
 */
#ifndef MLT_URL_H
#define MLT_URL_H

#include <stddef.h>

/* Copies url with any user:password@ replaced by ***@, for messages (cut to len). */
void mlt__redact_url(const char *url, char *out, size_t len);

/* url without its user:password@ and without trailing slashes, in a new string (NULL when out of
 * memory): what a journal records as the server it is for. */
char *mlt__url_without_credentials(const char *url);

#endif
