/*
 * httpget: a small blocking HTTP/1.1 GET for meshproxy's own needs (the
 * status port's scrape of the application's metrics, `meshproxy wait`),
 * with the proxy's own HTTP/1.1 parser. http:// with an IP address or
 * "localhost" only: it runs off the request path and needs no resolver nor
 * TLS, so meshproxy does not carry a full HTTP client library.
 */
#ifndef MESH_PROXY_HTTPGET_H
#define MESH_PROXY_HTTPGET_H

#include <stddef.h>

/* GETs url within timeout_ms. On success returns 0 with the status in
 * *status and, when body is not NULL, the body (NUL-terminated, at most
 * max_body bytes, malloc'd) in *body and its length in *body_len. Returns -1
 * with a reason in err when the URL is not one it handles, the connection
 * fails, the deadline passes or the response is malformed or too large. */
int px_http_get(const char *url, int timeout_ms, size_t max_body, int *status, char **body, size_t *body_len,
                char *err, size_t errlen);

#endif
