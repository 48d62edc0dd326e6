/*
 * Finding the cluster: kubeconfig files (parsed with the doc reader) and the
 * in-cluster service-account files, resolved in kubectl's order.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "../common/doc.h"
#include "../common/log.h"
#include "../common/b64.h"
#include "kube_internal.h"

char *kube_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    if (buf == NULL)
        goto fail;
    for (;;) {
        if (n + 1 >= cap) {
            if (cap > (64u << 20)) {
                errno = EFBIG;
                goto fail;
            }
            char *nb = realloc(buf, cap * 2);
            if (nb == NULL)
                goto fail;
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) {
            if (ferror(f)) {
                errno = EIO;
                goto fail;
            }
            break;
        }
    }
    fclose(f);
    buf[n] = '\0';
    if (len != NULL)
        *len = n;
    return buf;
fail : {
    int e = errno;
    free(buf);
    fclose(f);
    errno = e;
    return NULL;
}
}

static char *trimmed_dup(const char *s, size_t n)
{
    while (n > 0 && (s[0] == ' ' || s[0] == '\n' || s[0] == '\r' || s[0] == '\t')) {
        s++;
        n--;
    }
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == '\t'))
        n--;
    return strndup(s, n);
}

/* Reads the token file into c->token; keeps the old token when it cannot. */
static int token_load_locked(kube_client_t *c, char *err, size_t errlen)
{
    struct stat st;
    if (stat(c->token_file, &st) != 0) {
        mesh_errf(err, errlen, "cannot read token file %s: %s", c->token_file, strerror(errno));
        return -1;
    }
    size_t n;
    char *raw = kube_read_file(c->token_file, &n);
    if (raw == NULL) {
        mesh_errf(err, errlen, "cannot read token file %s: %s", c->token_file, strerror(errno));
        return -1;
    }
    char *tok = trimmed_dup(raw, n);
    free(raw);
    if (tok == NULL || tok[0] == '\0') {
        free(tok);
        mesh_errf(err, errlen, "token file %s is empty", c->token_file);
        return -1;
    }
    free(c->token);
    c->token = tok;
    c->token_dev = st.st_dev;
    c->token_ino = st.st_ino;
    c->token_mtime = st.st_mtim;
    c->token_size = st.st_size;
    c->token_checked = time(NULL);
    return 0;
}

void kube_token_refresh_locked(kube_client_t *c, bool force)
{
    if (c->token_file == NULL)
        return;
    time_t now = time(NULL);
    if (!force && now == c->token_checked)
        return;
    c->token_checked = now;
    struct stat st;
    if (stat(c->token_file, &st) != 0) {
        log_warn("kube: token file %s: %s; keeping the previous token", c->token_file,
                 strerror(errno));
        return;
    }
    if (st.st_dev == c->token_dev && st.st_ino == c->token_ino && st.st_size == c->token_size &&
        st.st_mtim.tv_sec == c->token_mtime.tv_sec && st.st_mtim.tv_nsec == c->token_mtime.tv_nsec)
        return;
    char err[300];
    if (token_load_locked(c, err, sizeof(err)) != 0)
        log_warn("kube: %s; keeping the previous token", err);
    else
        log_debug("kube: re-read rotated token from %s", c->token_file);
}

/* Checks that pem holds at least one certificate (what = for messages). */
static int check_cert_pem(const char *pem, size_t len, const char *what, char *err, size_t errlen)
{
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    X509 *x = b != NULL ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    if (x == NULL) {
        mesh_errf(err, errlen, "%s: no PEM certificate found", what);
        return -1;
    }
    X509_free(x);
    return 0;
}

static int check_key_pair(const char *cert, size_t clen, const char *key, size_t klen,
                          const char *who, char *err, size_t errlen)
{
    int rc = -1;
    BIO *cb = BIO_new_mem_buf(cert, (int)clen);
    BIO *kb = BIO_new_mem_buf(key, (int)klen);
    X509 *x = cb != NULL ? PEM_read_bio_X509(cb, NULL, NULL, NULL) : NULL;
    EVP_PKEY *k = kb != NULL ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
    if (x == NULL)
        mesh_errf(err, errlen, "%s: client certificate: no PEM certificate found", who);
    else if (k == NULL)
        mesh_errf(err, errlen, "%s: client key: no PEM private key found", who);
    else if (X509_check_private_key(x, k) != 1)
        mesh_errf(err, errlen, "%s: client certificate and client key do not match", who);
    else
        rc = 0;
    X509_free(x);
    EVP_PKEY_free(k);
    BIO_free(cb);
    BIO_free(kb);
    return rc;
}

/* kubeconfig */

typedef struct kc_ctx {
    kube_client_t *c;
    const char *path;    /* the kubeconfig */
    const char *dir;     /* its directory, for relative paths */
    const char *context; /* requested context or NULL */
    char *err;
    size_t errlen;
    int rc;
    bool seen;
} kc_ctx_t;

static const doc_node_t *named_entry(const doc_node_t *list, const char *name, const char *field)
{
    if (list == NULL || list->type != DOC_SEQ)
        return NULL;
    for (uint32_t i = 0; i < list->v.seq.n; i++) {
        const doc_node_t *it = list->v.seq.items[i];
        if (it == NULL || it->type != DOC_MAP)
            continue;
        const char *n = doc_str(doc_map_get(it, "name"));
        if (n != NULL && strcmp(n, name) == 0) {
            const doc_node_t *v = doc_map_get(it, field);
            return v != NULL ? v : it; /* an entry with no body is an empty one */
        }
    }
    return NULL;
}

/* A string field; an error when present with another type. */
static int kc_str(kc_ctx_t *k, const doc_node_t *m, const char *key, const char *where,
                  const char **out)
{
    *out = NULL;
    const doc_node_t *v = m != NULL && m->type == DOC_MAP ? doc_map_get(m, key) : NULL;
    if (v == NULL || v->type == DOC_NULL)
        return 0;
    if (v->type == DOC_SEQ || v->type == DOC_MAP || v->str == NULL) {
        mesh_errf(k->err, k->errlen, "kubeconfig %s: %s: %s: must be a string, not %s", k->path,
                  where, key, doc_type_name(v->type));
        return -1;
    }
    *out = v->str; /* scalars as written: a numeric-looking token stays text */
    return 0;
}

static void kc_resolve(kc_ctx_t *k, const char *file, char *out, size_t len)
{
    if (file[0] == '/' || k->dir == NULL)
        snprintf(out, len, "%s", file);
    else if (file[0] == '~' && file[1] == '/' && getenv("HOME") != NULL)
        snprintf(out, len, "%s/%s", getenv("HOME"), file + 2);
    else
        snprintf(out, len, "%s/%s", k->dir, file);
}

/* PEM from an inline base64 field or a file field (inline wins, as in kubectl). */
static int kc_pem(kc_ctx_t *k, const doc_node_t *m, const char *data_key, const char *file_key,
                  const char *where, char **out, size_t *outlen)
{
    const char *data, *file;
    if (kc_str(k, m, data_key, where, &data) != 0 || kc_str(k, m, file_key, where, &file) != 0)
        return -1;
    if (data != NULL && data[0] != '\0') {
        size_t n;
        unsigned char *d = b64_decode(data, strlen(data), &n);
        if (d == NULL || n == 0) {
            free(d);
            mesh_errf(k->err, k->errlen, "kubeconfig %s: %s: %s: not valid base64", k->path, where,
                      data_key);
            return -1;
        }
        *out = (char *)d;
        *outlen = n;
        return 0;
    }
    if (file != NULL && file[0] != '\0') {
        char p[PATH_MAX];
        kc_resolve(k, file, p, sizeof(p));
        *out = kube_read_file(p, outlen);
        if (*out == NULL) {
            mesh_errf(k->err, k->errlen, "kubeconfig %s: %s: cannot read %s file %s: %s", k->path,
                      where, file_key, p, strerror(errno));
            return -1;
        }
    }
    return 0;
}

static int kc_apply(kc_ctx_t *k, const doc_node_t *root)
{
    kube_client_t *c = k->c;
    char where[300];
    if (root->type != DOC_MAP) {
        mesh_errf(k->err, k->errlen,
                  "kubeconfig %s: not a kubeconfig (the document is %s, not an object)", k->path,
                  doc_type_name(root->type));
        return -1;
    }
    const char *ctxname = k->context;
    if (ctxname == NULL || ctxname[0] == '\0') {
        if (kc_str(k, root, "current-context", "document", &ctxname) != 0)
            return -1;
        if (ctxname == NULL || ctxname[0] == '\0') {
            mesh_errf(k->err, k->errlen,
                      "kubeconfig %s: no current-context is set and no context was given", k->path);
            return -1;
        }
    }
    const doc_node_t *ctx = named_entry(doc_map_get(root, "contexts"), ctxname, "context");
    if (ctx == NULL) {
        mesh_errf(k->err, k->errlen, "kubeconfig %s: context \"%s\" not found", k->path, ctxname);
        return -1;
    }
    snprintf(where, sizeof(where), "context \"%s\"", ctxname);
    const char *cluster_name, *user_name, *ns;
    if (kc_str(k, ctx, "cluster", where, &cluster_name) != 0 ||
        kc_str(k, ctx, "user", where, &user_name) != 0 ||
        kc_str(k, ctx, "namespace", where, &ns) != 0)
        return -1;
    if (cluster_name == NULL || cluster_name[0] == '\0') {
        mesh_errf(k->err, k->errlen, "kubeconfig %s: context \"%s\" names no cluster", k->path,
                  ctxname);
        return -1;
    }
    const doc_node_t *cl = named_entry(doc_map_get(root, "clusters"), cluster_name, "cluster");
    if (cl == NULL) {
        mesh_errf(k->err, k->errlen, "kubeconfig %s: cluster \"%s\" (of context \"%s\") not found",
                  k->path, cluster_name, ctxname);
        return -1;
    }
    snprintf(where, sizeof(where), "cluster \"%s\"", cluster_name);
    const char *server, *tsn;
    if (kc_str(k, cl, "server", where, &server) != 0 ||
        kc_str(k, cl, "tls-server-name", where, &tsn) != 0)
        return -1;
    if (server == NULL || server[0] == '\0') {
        mesh_errf(k->err, k->errlen, "kubeconfig %s: cluster \"%s\" has no server", k->path,
                  cluster_name);
        return -1;
    }
    if (strncmp(server, "https://", 8) != 0 && strncmp(server, "http://", 7) != 0) {
        mesh_errf(k->err, k->errlen,
                  "kubeconfig %s: cluster \"%s\": server \"%s\" is not an http(s) URL", k->path,
                  cluster_name, server);
        return -1;
    }
    c->server = strdup(server);
    size_t sl = strlen(c->server);
    while (sl > 0 && c->server[sl - 1] == '/')
        c->server[--sl] = '\0';
    if (tsn != NULL && tsn[0] != '\0')
        c->tls_server_name = strdup(tsn);
    const doc_node_t *ins =
        cl->type == DOC_MAP ? doc_map_get(cl, "insecure-skip-tls-verify") : NULL;
    if (ins != NULL && ins->type == DOC_BOOL)
        c->insecure = ins->v.b;
    else if (ins != NULL && ins->type == DOC_STR)
        c->insecure = strcmp(ins->str, "true") == 0;
    if (kc_pem(k, cl, "certificate-authority-data", "certificate-authority", where, &c->ca,
               &c->ca_len) != 0)
        return -1;
    if (c->ca != NULL && c->insecure) {
        mesh_errf(
            k->err, k->errlen,
            "kubeconfig %s: cluster \"%s\": a certificate authority and insecure-skip-tls-verify "
            "cannot be used "
            "together",
            k->path, cluster_name);
        return -1;
    }
    if (c->ca != NULL) {
        snprintf(where, sizeof(where), "kubeconfig %s: cluster \"%s\": certificate authority",
                 k->path, cluster_name);
        if (check_cert_pem(c->ca, c->ca_len, where, k->err, k->errlen) != 0)
            return -1;
    }

    if (user_name == NULL || user_name[0] == '\0') {
        mesh_errf(k->err, k->errlen, "kubeconfig %s: context \"%s\" names no user", k->path,
                  ctxname);
        return -1;
    }
    const doc_node_t *u = named_entry(doc_map_get(root, "users"), user_name, "user");
    if (u == NULL) {
        mesh_errf(k->err, k->errlen, "kubeconfig %s: user \"%s\" (of context \"%s\") not found",
                  k->path, user_name, ctxname);
        return -1;
    }
    snprintf(where, sizeof(where), "user \"%s\"", user_name);
    const char *token, *token_file, *username, *password;
    if (kc_str(k, u, "token", where, &token) != 0 ||
        kc_str(k, u, "tokenFile", where, &token_file) != 0 ||
        kc_str(k, u, "username", where, &username) != 0 ||
        kc_str(k, u, "password", where, &password) != 0)
        return -1;
    if (kc_pem(k, u, "client-certificate-data", "client-certificate", where, &c->cert,
               &c->cert_len) != 0 ||
        kc_pem(k, u, "client-key-data", "client-key", where, &c->key, &c->key_len) != 0)
        return -1;
    if ((c->cert == NULL) != (c->key == NULL)) {
        mesh_errf(k->err, k->errlen, "kubeconfig %s: user \"%s\" has a client %s but no client %s",
                  k->path, user_name, c->cert != NULL ? "certificate" : "key",
                  c->cert != NULL ? "key" : "certificate");
        return -1;
    }
    if (c->cert != NULL) {
        snprintf(where, sizeof(where), "kubeconfig %s: user \"%s\"", k->path, user_name);
        if (check_key_pair(c->cert, c->cert_len, c->key, c->key_len, where, k->err, k->errlen) != 0)
            return -1;
    }
    if (token != NULL && token[0] != '\0') {
        c->token = strdup(token);
    } else if (token_file != NULL && token_file[0] != '\0') {
        char p[PATH_MAX];
        kc_resolve(k, token_file, p, sizeof(p));
        c->token_file = strdup(p);
        char e[PATH_MAX + 100];
        if (token_load_locked(c, e, sizeof(e)) != 0) {
            mesh_errf(k->err, k->errlen, "kubeconfig %s: user \"%s\": %s", k->path, user_name, e);
            return -1;
        }
    } else if (username != NULL && username[0] != '\0' && password != NULL) {
        size_t n = strlen(username) + strlen(password) + 2;
        c->basic = malloc(n);
        if (c->basic != NULL)
            snprintf(c->basic, n, "%s:%s", username, password);
    }
    if (c->token == NULL && c->cert == NULL && c->basic == NULL) {
        if (u->type == DOC_MAP && doc_map_get(u, "exec") != NULL)
            mesh_errf(
                k->err, k->errlen,
                "kubeconfig %s: user \"%s\" uses an exec credential plugin, which meshd does not "
                "run; use a "
                "token, tokenFile or client certificate",
                k->path, user_name);
        else if (u->type == DOC_MAP && doc_map_get(u, "auth-provider") != NULL)
            mesh_errf(
                k->err, k->errlen,
                "kubeconfig %s: user \"%s\" uses an auth-provider, which meshd does not support; "
                "use a token, "
                "tokenFile or client certificate",
                k->path, user_name);
        else
            mesh_errf(k->err, k->errlen,
                      "kubeconfig %s: user \"%s\" has no credentials (token, tokenFile, "
                      "client-certificate/client-key "
                      "or username/password)",
                      k->path, user_name);
        return -1;
    }
    c->ns = strdup(ns != NULL && ns[0] != '\0' ? ns : "default");
    return 0;
}

static int kc_doc(void *ud, const doc_t *d)
{
    kc_ctx_t *k = ud;
    if (d->root == NULL && d->error == NULL)
        return 0; /* an empty document */
    if (k->seen)
        return 0; /* kubectl reads the first document only */
    k->seen = true;
    if (d->root == NULL) {
        mesh_errf(k->err, k->errlen, "kubeconfig %s: %s", k->path, d->error);
        k->rc = -1;
        return 1;
    }
    k->rc = kc_apply(k, d->root);
    return 1;
}

static int load_kubeconfig(kube_client_t *c, const char *path, const char *context, char *err,
                           size_t errlen)
{
    size_t len;
    char *buf = kube_read_file(path, &len);
    if (buf == NULL) {
        mesh_errf(err, errlen, "cannot read kubeconfig %s: %s", path, strerror(errno));
        return -1;
    }
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        dir[1] = '\0';
    else if (slash != NULL)
        *slash = '\0';
    else
        snprintf(dir, sizeof(dir), ".");
    kc_ctx_t k = {
        .c = c, .path = path, .dir = dir, .context = context, .err = err, .errlen = errlen};
    doc_parse(buf, len, DOC_FMT_AUTO, kc_doc, &k);
    free(buf);
    if (!k.seen) {
        mesh_errf(err, errlen, "kubeconfig %s: the file is empty", path);
        return -1;
    }
    if (k.rc == 0)
        c->source = strdup(path);
    return k.rc;
}

static int load_in_cluster(kube_client_t *c, char *err, size_t errlen)
{
    const char *host = getenv("KUBERNETES_SERVICE_HOST");
    const char *port = getenv("KUBERNETES_SERVICE_PORT");
    if (host == NULL || host[0] == '\0') {
        mesh_errf(err, errlen,
                  "no kubeconfig found ($KUBECONFIG, ~/.kube/config) and not running in a cluster "
                  "(KUBERNETES_SERVICE_HOST is not set)");
        return -1;
    }
    if (port == NULL || port[0] == '\0')
        port = "443";
    const char *dir = getenv(KUBE_SA_DIR_ENV);
    if (dir == NULL || dir[0] == '\0')
        dir = KUBE_SA_DIR_DEFAULT;
    char url[512];
    if (strchr(host, ':') != NULL)
        snprintf(url, sizeof(url), "https://[%s]:%s", host, port);
    else
        snprintf(url, sizeof(url), "https://%s:%s", host, port);
    c->server = strdup(url);
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/token", dir);
    c->token_file = strdup(p);
    char e[PATH_MAX + 100];
    if (token_load_locked(c, e, sizeof(e)) != 0) {
        mesh_errf(err, errlen, "in-cluster configuration: %s", e);
        return -1;
    }
    snprintf(p, sizeof(p), "%s/ca.crt", dir);
    c->ca = kube_read_file(p, &c->ca_len);
    if (c->ca == NULL) {
        mesh_errf(err, errlen, "in-cluster configuration: cannot read CA file %s: %s", p,
                  strerror(errno));
        return -1;
    }
    snprintf(e, sizeof(e), "in-cluster configuration: CA file %s", p);
    if (check_cert_pem(c->ca, c->ca_len, e, err, errlen) != 0)
        return -1;
    snprintf(p, sizeof(p), "%s/namespace", dir);
    size_t n;
    char *nsraw = kube_read_file(p, &n);
    if (nsraw != NULL) {
        c->ns = trimmed_dup(nsraw, n);
        free(nsraw);
    }
    if (c->ns == NULL || c->ns[0] == '\0') {
        free(c->ns);
        c->ns = strdup("default");
    }
    c->source = strdup("in-cluster");
    return 0;
}

static bool file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

int kube_config_load(kube_client_t *c, const kube_opts_t *o, char *err, size_t errlen)
{
    const char *context = o != NULL ? o->context : NULL;
    if (o != NULL && o->kubeconfig != NULL && o->kubeconfig[0] != '\0')
        return load_kubeconfig(c, o->kubeconfig, context, err, errlen);
    const char *env = getenv("KUBECONFIG");
    if (env != NULL && env[0] != '\0') {
        /* the first file of the list that exists */
        const char *s = env;
        while (*s != '\0') {
            const char *e = strchr(s, ':');
            size_t n = e != NULL ? (size_t)(e - s) : strlen(s);
            if (n > 0 && n < PATH_MAX) {
                char p[PATH_MAX];
                memcpy(p, s, n);
                p[n] = '\0';
                if (file_exists(p))
                    return load_kubeconfig(c, p, context, err, errlen);
            }
            s += n;
            if (*s == ':')
                s++;
        }
    }
    const char *home = getenv("HOME");
    if (home != NULL && home[0] != '\0') {
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/.kube/config", home);
        if (file_exists(p))
            return load_kubeconfig(c, p, context, err, errlen);
    }
    if (context != NULL && context[0] != '\0') {
        mesh_errf(err, errlen,
                  "context \"%s\" was requested but no kubeconfig was found ($KUBECONFIG, "
                  "~/.kube/config)",
                  context);
        return -1;
    }
    return load_in_cluster(c, err, errlen);
}
