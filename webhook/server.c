/*
 * The webhooks' HTTPS server: libmicrohttpd (TLS through its GnuTLS
 * backend, certificate and key handed over as PEM in memory), a small pool
 * of internal threads, keep-alive. Bodies are collected up to
 * WEBHOOK_MAX_BODY and handed to webhook_handle_inject/validate.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "../common/arena.h"
#include "../common/log.h"
#include "webhook_internal.h"

struct webhook_server {
    struct MHD_Daemon *daemon;
    webhook_t *w;
    int port;
    char *cert;
    char *key;
};

/* Per-request state: the body collected so far. */
struct req {
    char *buf;
    size_t len, cap;
    bool too_big;
};

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    if (log_get_level() > LOG_DEBUG)
        return;
    char buf[512];
    vsnprintf(buf, sizeof(buf), fmt, ap);
    size_t n = strlen(buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    log_debug("webhook server: %s", buf);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    struct req *r = *con_cls;
    if (r != NULL) {
        free(r->buf);
        free(r);
        *con_cls = NULL;
    }
}

static enum MHD_Result reply(struct MHD_Connection *c, int status, char *body, size_t len, const char *ct)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (resp == NULL) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ct);
    enum MHD_Result rc = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result reply_text(struct MHD_Connection *c, int status, const char *text)
{
    return reply(c, status, mesh_xstrdup(text), strlen(text), "text/plain; charset=utf-8");
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                              const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    webhook_server_t *s = cls;
    struct req *r = *con_cls;
    (void)version;
    if (r == NULL) {
        if (strcmp(url, "/ready") == 0 || strcmp(url, "/healthz/ready") == 0) {
            if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
                return reply_text(c, 405, "use GET\n");
            return reply_text(c, 200, "ok\n");
        }
        if (strcmp(url, "/inject") != 0 && strcmp(url, "/validate") != 0)
            return reply_text(c, 404, "not found: the webhooks are POST /inject and POST /validate\n");
        if (strcmp(method, "POST") != 0)
            return reply_text(c, 405, "use POST with an AdmissionReview body\n");
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl != NULL && strtoull(cl, NULL, 10) > WEBHOOK_MAX_BODY) {
            char msg[128];
            snprintf(msg, sizeof(msg), "request body exceeds the limit of %u bytes\n", WEBHOOK_MAX_BODY);
            return reply_text(c, 413, msg);
        }
        r = mesh_xcalloc(1, sizeof(*r));
        *con_cls = r;
        return MHD_YES;
    }
    if (*upload_size > 0) {
        if (!r->too_big) {
            if (r->len + *upload_size > WEBHOOK_MAX_BODY) {
                r->too_big = true;
                free(r->buf);
                r->buf = NULL;
                r->len = r->cap = 0;
            } else {
                if (r->len + *upload_size + 1 > r->cap) {
                    r->cap = (r->len + *upload_size + 1) * 2;
                    if (r->cap > WEBHOOK_MAX_BODY + 1)
                        r->cap = WEBHOOK_MAX_BODY + 1;
                    r->buf = mesh_xrealloc(r->buf, r->cap);
                }
                memcpy(r->buf + r->len, upload, *upload_size);
                r->len += *upload_size;
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (r->too_big) {
        char msg[128];
        snprintf(msg, sizeof(msg), "request body exceeds the limit of %u bytes\n", WEBHOOK_MAX_BODY);
        return reply_text(c, 413, msg);
    }
    char *out = NULL;
    size_t outlen = 0;
    const char *ct = NULL;
    int status = strcmp(url, "/inject") == 0
                     ? webhook_handle_inject(s->w, r->buf ? r->buf : "", r->len, &out, &outlen, &ct)
                     : webhook_handle_validate(s->w, r->buf ? r->buf : "", r->len, &out, &outlen, &ct);
    return reply(c, status, out, outlen, ct);
}

static char *dup_or_null(const char *s)
{
    return s ? mesh_xstrdup(s) : NULL;
}

static void free_server(webhook_server_t *s)
{
    if (s->key != NULL) {
        explicit_bzero(s->key, strlen(s->key));
        free(s->key);
    }
    free(s->cert);
    free(s);
}

webhook_server_t *webhook_server_start(webhook_t *w, const webhook_server_opts_t *o, char *err, size_t errlen)
{
    webhook_server_t *s = mesh_xcalloc(1, sizeof(*s));
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_TLS | MHD_USE_ERROR_LOG;
    bool have_addr = false;
    if (o->cert_pem == NULL || o->key_pem == NULL) {
        snprintf(err, errlen, "webhook server: a serving certificate and key are required");
        goto fail;
    }
    if (o->port < 0 || o->port > 65535) {
        snprintf(err, errlen, "webhook server: port %d is out of range", o->port);
        goto fail;
    }
    if (o->addr != NULL && o->addr[0] != '\0') {
        struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        if (inet_pton(AF_INET, o->addr, &in4->sin_addr) == 1) {
            in4->sin_family = AF_INET;
            in4->sin_port = htons((uint16_t)o->port);
        } else if (inet_pton(AF_INET6, o->addr, &in6->sin6_addr) == 1) {
            in6->sin6_family = AF_INET6;
            in6->sin6_port = htons((uint16_t)o->port);
            flags |= MHD_USE_IPv6;
        } else {
            snprintf(err, errlen, "webhook server: \"%s\" is not an IP address", o->addr);
            goto fail;
        }
        have_addr = true;
    } else {
        flags |= MHD_USE_DUAL_STACK;
    }
    s->w = w;
    s->cert = dup_or_null(o->cert_pem);
    s->key = dup_or_null(o->key_pem);
    unsigned threads = o->threads ? o->threads : 2;
    struct MHD_OptionItem opts[] = {
        {MHD_OPTION_HTTPS_MEM_CERT, 0, s->cert},
        {MHD_OPTION_HTTPS_MEM_KEY, 0, s->key},
        {MHD_OPTION_THREAD_POOL_SIZE, (intptr_t)threads, NULL},
        {MHD_OPTION_CONNECTION_TIMEOUT, 30, NULL},
        {MHD_OPTION_CONNECTION_LIMIT, 1000, NULL},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)completed, NULL},
        {have_addr ? MHD_OPTION_SOCK_ADDR : MHD_OPTION_END, 0, have_addr ? (void *)&ss : NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    s->daemon = MHD_start_daemon(flags, (uint16_t)o->port, NULL, NULL, handle, s, MHD_OPTION_EXTERNAL_LOGGER,
                                 mhd_log, NULL, MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
    if (s->daemon == NULL) {
        snprintf(err, errlen,
                 "webhook server: cannot serve HTTPS on %s:%d (port in use, or the certificate or key is not "
                 "valid PEM)",
                 have_addr ? o->addr : "*", o->port);
        goto fail;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : o->port;
    log_info("webhooks serving HTTPS on %s:%d (/inject, /validate)", have_addr ? o->addr : "*", s->port);
    return s;
fail:
    free_server(s);
    return NULL;
}

int webhook_server_port(const webhook_server_t *s)
{
    return s->port;
}

void webhook_server_stop(webhook_server_t *s)
{
    if (s == NULL)
        return;
    MHD_stop_daemon(s->daemon);
    free_server(s);
}
