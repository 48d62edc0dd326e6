/*
 * service: /istio.v1.auth.IstioCertificateService/CreateCertificate on a
 * gRPC server, and meshd's own serving certificate for that server.
 *
 * A call collects its one request message on the loop, then a workq job
 * authenticates the caller, decodes the request and signs; the job's done
 * callback answers on the loop. The call state belongs to the job while it
 * runs; on_close only marks it when a job is in flight.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/pem.h>

#include "../common/arena.h"
#include "../common/grpc.h"
#include "../common/log.h"
#include "../common/transport.h"
#include "../common/workq.h"
#include "ca_internal.h"
#include "istio/v1/auth/ca.pb-c.h"

#define CA_MAX_REQUEST (256u * 1024)

struct ca_service {
    ca_t *ca;
    ca_authn_t *authn;
    workq_t *wq;
};

typedef struct ca_call {
    ca_service_t *svc;
    grpc_stream_t *stream;
    char *authorization;
    char peer[64];
    uint8_t *req;
    size_t req_len;
    int nmsgs;
    bool in_flight; /* a job owns the call */
    bool closed; /* on_close ran */
    /* the job's result */
    int status;
    char message[1024];
    uint8_t *resp;
    size_t resp_len;
} ca_call_t;

static void call_free(ca_call_t *c)
{
    free(c->authorization);
    free(c->req);
    free(c->resp);
    free(c);
}

static int status_of(int rc)
{
    switch (rc) {
    case CA_EINVAL:
        return GRPC_INVALID_ARGUMENT;
    case CA_EPERM:
        return GRPC_PERMISSION_DENIED;
    case CA_EAUTH:
        return GRPC_UNAUTHENTICATED;
    default:
        return GRPC_INTERNAL;
    }
}

/* Pool thread: authenticate, decode, sign, encode. */
static void call_work(void *arg)
{
    ca_call_t *c = arg;
    ca_service_t *svc = c->svc;
    ca_caller_t caller;
    char err[900];
    ca_chain_t chain = {0};
    Istio__V1__Auth__IstioCertificateRequest *req = NULL;

    int rc = ca_authn_check(svc->authn, c->authorization, &caller, err, sizeof err);
    if (rc != 0) {
        c->status = rc == CA_EAUTH ? GRPC_UNAUTHENTICATED : GRPC_UNAVAILABLE;
        snprintf(c->message, sizeof c->message, "authentication failed: %s", err);
        log_warn("ca: CreateCertificate from %s refused: %s", c->peer, c->message);
        goto out;
    }
    req = istio__v1__auth__istio_certificate_request__unpack(NULL, c->req_len, c->req);
    if (!req) {
        c->status = GRPC_INVALID_ARGUMENT;
        snprintf(c->message, sizeof c->message, "request is not a valid istio.v1.auth.IstioCertificateRequest");
        log_warn("ca: CreateCertificate from %s (%s) refused: %s", caller.identity, c->peer, c->message);
        goto out;
    }
    const char *csr = req->csr ? req->csr : "";
    rc = ca_sign_csr(svc->ca, csr, strlen(csr), caller.identity, req->validity_duration, &chain, err, sizeof err);
    if (rc != 0) {
        c->status = status_of(rc);
        snprintf(c->message, sizeof c->message, "%s", err);
        if (rc == -1)
            log_error("ca: CreateCertificate for %s (%s) failed: %s", caller.identity, c->peer, err);
        else
            log_warn("ca: CreateCertificate for %s (%s) refused: %s", caller.identity, c->peer, err);
        goto out;
    }
    Istio__V1__Auth__IstioCertificateResponse resp = ISTIO__V1__AUTH__ISTIO_CERTIFICATE_RESPONSE__INIT;
    resp.n_cert_chain = chain.n;
    resp.cert_chain = chain.pem;
    c->resp_len = istio__v1__auth__istio_certificate_response__get_packed_size(&resp);
    c->resp = mesh_xmalloc(c->resp_len ? c->resp_len : 1);
    istio__v1__auth__istio_certificate_response__pack(&resp, c->resp);
    c->status = GRPC_OK;
    log_debug("ca: issued a certificate for %s (%s), %lld s requested", caller.identity, c->peer,
              (long long)req->validity_duration);
out:
    ca_chain_free(&chain);
    if (req)
        istio__v1__auth__istio_certificate_request__free_unpacked(req, NULL);
}

/* Loop thread: answer, unless the call went away meanwhile. */
static void call_done(void *arg)
{
    ca_call_t *c = arg;
    c->in_flight = false;
    if (!c->closed) {
        if (c->status == GRPC_OK)
            grpc_stream_send(c->stream, c->resp, c->resp_len);
        grpc_stream_finish(c->stream, c->status, c->status == GRPC_OK ? NULL : c->message);
    }
    grpc_stream_unref(c->stream);
    if (c->closed)
        call_free(c);
}

static void on_open(grpc_stream_t *s, void *arg)
{
    ca_call_t *c = mesh_xcalloc(1, sizeof *c);
    c->svc = arg;
    c->stream = s;
    const char *authz = grpc_stream_header(s, "authorization");
    c->authorization = authz ? mesh_xstrdup(authz) : NULL;
    const char *peer = grpc_stream_peer_addr(s);
    snprintf(c->peer, sizeof c->peer, "%s", peer ? peer : "?");
    grpc_stream_set_data(s, c);
}

static void on_message(grpc_stream_t *s, void *data, const uint8_t *msg, size_t len)
{
    ca_call_t *c = data;
    if (c->in_flight || ++c->nmsgs > 1) {
        if (!c->in_flight)
            grpc_stream_finish(s, GRPC_INVALID_ARGUMENT, "CreateCertificate takes exactly one request message");
        return;
    }
    if (len > CA_MAX_REQUEST) {
        grpc_stream_finish(s, GRPC_INVALID_ARGUMENT, "request larger than 256 KiB");
        return;
    }
    c->req = mesh_xmalloc(len ? len : 1);
    memcpy(c->req, msg, len);
    c->req_len = len;
}

static void on_half_close(grpc_stream_t *s, void *data)
{
    ca_call_t *c = data;
    if (c->in_flight || grpc_stream_closed(s))
        return;
    if (c->nmsgs != 1) {
        grpc_stream_finish(s, GRPC_INVALID_ARGUMENT, "CreateCertificate takes exactly one request message");
        return;
    }
    c->in_flight = true;
    grpc_stream_ref(s);
    if (workq_submit(c->svc->wq, grpc_stream_loop(s), call_work, call_done, c) != 0) {
        c->in_flight = false;
        grpc_stream_unref(s);
        grpc_stream_finish(s, GRPC_UNAVAILABLE, "the CA is shutting down");
    }
}

static void on_close(grpc_stream_t *s, void *data)
{
    (void)s;
    ca_call_t *c = data;
    if (!c)
        return;
    c->closed = true;
    if (!c->in_flight)
        call_free(c);
}

ca_service_t *ca_service_new(ca_t *ca, ca_authn_t *authn, struct workq *wq, struct grpc_server *srv, char *err,
                             size_t errlen)
{
    ca_service_t *svc = mesh_xcalloc(1, sizeof *svc);
    svc->ca = ca;
    svc->authn = authn;
    svc->wq = wq;
    grpc_method_t m = {
        .on_open = on_open,
        .on_message = on_message,
        .on_half_close = on_half_close,
        .on_close = on_close,
    };
    if (grpc_server_register(srv, CA_SERVICE_PATH, &m, svc) != 0) {
        ca_err(err, errlen, "cannot register %s (already registered?)", CA_SERVICE_PATH);
        free(svc);
        return NULL;
    }
    return svc;
}

void ca_service_free(ca_service_t *s)
{
    free(s);
}

/* ---- meshd's serving certificate ---- */

struct ca_serving {
    ca_t *ca;
    char **dns;
    size_t ndns;
    int64_t ttl;
    pthread_mutex_t mu;
    tp_tls_ctx_t *tls;
    int64_t issued, not_after;
    char *root; /* the root the certificate chains to */
};

static int serving_issue(ca_serving_t *s, tp_tls_config_t *cfg, char **key, ca_chain_t *chain, char **cert,
                         char **root, char *err, size_t errlen)
{
    *key = NULL;
    *cert = NULL;
    *root = ca_root_pem(s->ca);
    if (ca_issue_serving(s->ca, (const char *const *)s->dns, s->ndns, NULL, s->ttl, CA_KEY_ECDSA, key, chain, err,
                         errlen) != 0) {
        free(*root);
        *root = NULL;
        return -1;
    }
    /* leaf and intermediates; the root is the client's to have */
    size_t n = chain->n > 1 ? chain->n - 1 : chain->n;
    ca_chain_t served = {chain->pem, n};
    *cert = ca_chain_join(&served, 0);
    memset(cfg, 0, sizeof *cfg);
    cfg->cert_pem = *cert;
    cfg->key_pem = *key;
    cfg->ca_pem = *root;
    cfg->verify = TP_VERIFY_REQUEST;
    return 0;
}

static int64_t leaf_not_after(const ca_chain_t *chain)
{
    BIO *b = BIO_new_mem_buf(chain->pem[0], -1);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    int64_t t = x ? ca_asn1_time(X509_get0_notAfter(x)) : 0;
    X509_free(x);
    BIO_free(b);
    return t;
}

ca_serving_t *ca_serving_new(ca_t *ca, const char *const *dns, size_t ndns, int64_t ttl_s, char *err, size_t errlen)
{
    ca_serving_t *s = mesh_xcalloc(1, sizeof *s);
    s->ca = ca;
    s->ttl = ttl_s > 0 ? ttl_s : ca_max_ttl(ca);
    pthread_mutex_init(&s->mu, NULL);
    s->dns = mesh_xcalloc(ndns + 2, sizeof *s->dns);
    char own[300];
    snprintf(own, sizeof own, "istiod.%s.svc", ca_namespace(ca));
    s->dns[s->ndns++] = mesh_xstrdup(own);
    for (size_t i = 0; i < ndns; i++)
        if (dns[i] && *dns[i] && strcmp(dns[i], own) != 0)
            s->dns[s->ndns++] = mesh_xstrdup(dns[i]);
    tp_tls_config_t cfg;
    char *key = NULL, *cert = NULL;
    ca_chain_t chain = {0};
    if (serving_issue(s, &cfg, &key, &chain, &cert, &s->root, err, errlen) != 0)
        goto fail;
    s->tls = tp_tls_server_new(&cfg, err, errlen);
    s->issued = (int64_t)time(NULL);
    s->not_after = leaf_not_after(&chain);
    ca_free_secret(key);
    free(cert);
    ca_chain_free(&chain);
    if (!s->tls)
        goto fail;
    return s;
fail:
    ca_serving_free(s);
    return NULL;
}

struct tp_tls_ctx *ca_serving_tls(ca_serving_t *s) { return s->tls; }

int64_t ca_serving_not_after(ca_serving_t *s)
{
    pthread_mutex_lock(&s->mu);
    int64_t t = s->not_after;
    pthread_mutex_unlock(&s->mu);
    return t;
}

int ca_serving_rotate(ca_serving_t *s, bool force, char *err, size_t errlen)
{
    int64_t now = (int64_t)time(NULL);
    char *root_now = ca_root_pem(s->ca);
    pthread_mutex_lock(&s->mu);
    bool root_changed = !s->root || strcmp(root_now, s->root) != 0;
    bool due = now >= s->not_after - (s->not_after - s->issued) / 3;
    free(root_now);
    if (!force && !root_changed && !due) {
        pthread_mutex_unlock(&s->mu);
        return 0;
    }
    tp_tls_config_t cfg;
    char *key = NULL, *cert = NULL, *root = NULL;
    ca_chain_t chain = {0};
    int rc = -1;
    if (serving_issue(s, &cfg, &key, &chain, &cert, &root, err, errlen) == 0 &&
        tp_tls_ctx_update(s->tls, &cfg, err, errlen) == 0) {
        free(s->root);
        s->root = root;
        root = NULL;
        s->issued = now;
        s->not_after = leaf_not_after(&chain);
        rc = 1;
        log_info("ca: rotated the serving certificate for %s%s", s->dns[0], root_changed ? " (new root)" : "");
    }
    pthread_mutex_unlock(&s->mu);
    ca_free_secret(key);
    free(cert);
    free(root);
    ca_chain_free(&chain);
    return rc;
}

void ca_serving_free(ca_serving_t *s)
{
    if (!s)
        return;
    if (s->tls)
        tp_tls_ctx_unref(s->tls);
    for (size_t i = 0; i < s->ndns; i++)
        free(s->dns[i]);
    free(s->dns);
    free(s->root);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
