/*
 * url.c - the credentials in a URL's authority (see url.h).
 */
#include "config.h"

#include "url.h"

#include "common.h"

#include <stdio.h>
#include <string.h>

/* Where the credentials of url are: [*from, *to) is "user:password@", or false. */
static bool credentials(const char *url, const char **from, const char **to)
{
    const char *scheme = strstr(url, "://");
    const char *host = scheme ? scheme + 3 : url;
    const char *at = strchr(host, '@');
    const char *slash = strchr(host, '/');
    if (!at || (slash && at > slash)) {
        return false;
    }
    *from = host;
    *to = at + 1;
    return true;
}

void mlt__redact_url(const char *url, char *out, size_t len)
{
    const char *from, *to;
    if (credentials(url, &from, &to)) {
        snprintf(out, len, "%.*s***@%s", (int)(from - url), url, to);
    } else {
        snprintf(out, len, "%s", url);
    }
}

char *mlt__url_without_credentials(const char *url)
{
    const char *from, *to;
    char *out = credentials(url, &from, &to) ? mlt__aprintf("%.*s%s", (int)(from - url), url, to)
                                             : mlt__strdup(url);
    if (out) {
        size_t n = strlen(out);
        while (n > 0 && out[n - 1] == '/') {
            out[--n] = '\0';
        }
    }
    return out;
}
