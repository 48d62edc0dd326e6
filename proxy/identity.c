/*
 * identity: the workload certificate of meshproxy, kept current in the
 * process's secrets as "default" (chain and key) and "ROOTCA" (the mesh
 * root).
 *
 * One thread per identity does all the blocking work (key generation, the
 * CreateCertificate call, file reads), so no worker loop ever waits on it:
 *  - CA mode: caclient_fetch at once, then again at half of the remaining
 *    validity (+-10% jitter); a failure retries after 1 s, doubling up to
 *    60 s, and the installed certificate stays until it expires;
 *  - file mode (cert_dir): cert-chain.pem, key.pem and root-cert.pem are
 *    read at once and re-read whenever one of them changes (polled every
 *    second); a set that does not load leaves the previous one in place.
 * The thread sleeps on a condition variable, so px_identity_stop() returns as
 * soon as a fetch in flight (bounded by its timeout) finishes.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "../common/arena.h"
#include "../common/caclient.h"
#include "../common/log.h"
#include "tls_internal.h"

#define ID_POLL_MS 1000        /* file mode: how often the files are checked */
#define ID_BACKOFF_MIN_MS 1000 /* CA mode: first retry after a failure */
#define ID_BACKOFF_MAX_MS 60000
#define ID_FETCH_TIMEOUT_MS 10000
#define ID_MAX_FILE (1024 * 1024)

typedef struct file_sig {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    bool present;
} file_sig_t;

struct px_identity {
    px_secrets_t *secrets;
    /* CA mode */
    bool ca_mode;
    caclient_opts_t copts;
    char *addr, *root_file, *token_file, *server_name, *trust_domain, *ns, *sa;
    /* file mode */
    char *cert_dir;
    file_sig_t sig_ok[3], sig_failed[3];
    bool have_ok, have_failed;

    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;     /* under mu */
    char spiffe[512];  /* under mu */
    int64_t not_after; /* under mu */
    atomic_bool ready;
    uint64_t rng;
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static char *dup_or_null(const char *s)
{
    return s != NULL ? mesh_xstrdup(s) : NULL;
}

/* A factor in [0.9, 1.1] (xorshift; the schedule's jitter, not a secret). */
static double jitter(px_identity_t *id)
{
    id->rng ^= id->rng << 13;
    id->rng ^= id->rng >> 7;
    id->rng ^= id->rng << 17;
    return 0.9 + 0.2 * (double)(id->rng % 10001) / 10000.0;
}

/* Sleeps until ms have passed or stop was asked; true when stopping. */
static bool sleep_ms(px_identity_t *id, uint64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&id->mu);
    while (!id->stopping) {
        int r = pthread_cond_timedwait(&id->cv, &id->mu, &ts);
        if (r == ETIMEDOUT)
            break;
    }
    bool stopping = id->stopping;
    pthread_mutex_unlock(&id->mu);
    return stopping;
}

static bool stopping(px_identity_t *id)
{
    pthread_mutex_lock(&id->mu);
    bool s = id->stopping;
    pthread_mutex_unlock(&id->mu);
    return s;
}

static char *read_file(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        set_err(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = mesh_xmalloc(ID_MAX_FILE + 1);
    size_t n = fread(buf, 1, ID_MAX_FILE + 1, f);
    bool bad = ferror(f) != 0;
    fclose(f);
    if (bad || n > ID_MAX_FILE) {
        set_err(err, errlen, "%s: %s", path, bad ? "read error" : "larger than 1 MiB");
        OPENSSL_clear_free(buf, ID_MAX_FILE + 1);
        return NULL;
    }
    buf[n] = 0;
    return buf;
}

static void free_secret(char *s)
{
    if (s != NULL)
        OPENSSL_clear_free(s, strlen(s));
}

/* Publishes a certificate: secrets first, then what readiness reads. */
static void install(px_identity_t *id, const char *chain, const char *key, const char *root,
                    const char *spiffe, int64_t not_after)
{
    px_secrets_set(id->secrets, "ROOTCA", NULL, NULL, root);
    px_secrets_set(id->secrets, "default", chain, key, NULL);
    pthread_mutex_lock(&id->mu);
    snprintf(id->spiffe, sizeof id->spiffe, "%s", spiffe);
    id->not_after = not_after;
    pthread_mutex_unlock(&id->mu);
    atomic_store(&id->ready, true);
}

/* CA mode: after a failed renewal, an expired certificate is withdrawn. */
static void drop_if_expired(px_identity_t *id)
{
    pthread_mutex_lock(&id->mu);
    bool expired = id->not_after != 0 && id->not_after <= (int64_t)time(NULL);
    char spiffe[512];
    snprintf(spiffe, sizeof spiffe, "%s", id->spiffe);
    if (expired) {
        id->spiffe[0] = 0;
        id->not_after = 0;
    }
    pthread_mutex_unlock(&id->mu);
    if (expired) {
        atomic_store(&id->ready, false);
        px_secrets_remove(id->secrets, "default");
        log_error("identity: the certificate of %s expired and could not be renewed", spiffe);
    }
}

static void run_ca(px_identity_t *id)
{
    uint64_t backoff = ID_BACKOFF_MIN_MS;
    char err[1024];
    while (!stopping(id)) {
        caclient_cert_t c;
        memset(&c, 0, sizeof c);
        uint64_t delay;
        int rc = caclient_fetch(&id->copts, &c, err, sizeof err);
        if (rc == 0) {
            char *root = NULL;
            if (c.root_pem == NULL || c.root_pem[0] == 0)
                root = read_file(id->root_file, err, sizeof err);
            const char *r = c.root_pem && c.root_pem[0] ? c.root_pem : root;
            if (r == NULL) {
                log_warn("identity: certificate for %s received but no root: %s", c.identity, err);
                delay = backoff;
                backoff = backoff * 2 > ID_BACKOFF_MAX_MS ? ID_BACKOFF_MAX_MS : backoff * 2;
            } else {
                install(id, c.cert_chain_pem, c.key_pem, r, c.identity, c.not_after);
                int64_t left = c.not_after - (int64_t)time(NULL);
                double half = left > 0 ? (double)left * 1000.0 / 2.0 : 0;
                delay = (uint64_t)(half * jitter(id));
                if (delay < 100)
                    delay = 100;
                backoff = ID_BACKOFF_MIN_MS;
                log_info(
                    "identity: certificate for %s installed, valid until %lld, renewal in %llu ms",
                    c.identity, (long long)c.not_after, (unsigned long long)delay);
            }
            free(root);
        } else {
            delay = (uint64_t)((double)backoff * jitter(id));
            log_warn("identity: certificate request to %s failed (retry in %llu ms): %s", id->addr,
                     (unsigned long long)delay, err);
            backoff = backoff * 2 > ID_BACKOFF_MAX_MS ? ID_BACKOFF_MAX_MS : backoff * 2;
            drop_if_expired(id);
        }
        caclient_cert_free(&c);
        if (sleep_ms(id, delay))
            break;
    }
}

/* ---- file mode ---- */

static const char *const dir_files[3] = {"cert-chain.pem", "key.pem", "root-cert.pem"};

static void file_sigs(const px_identity_t *id, file_sig_t out[3])
{
    char path[4096];
    for (int i = 0; i < 3; i++) {
        struct stat st;
        memset(&out[i], 0, sizeof out[i]);
        snprintf(path, sizeof path, "%s/%s", id->cert_dir, dir_files[i]);
        if (stat(path, &st) == 0) {
            out[i].present = true;
            out[i].dev = st.st_dev;
            out[i].ino = st.st_ino;
            out[i].size = st.st_size;
            out[i].mtime = st.st_mtim;
        }
    }
}

static bool sigs_equal(const file_sig_t a[3], const file_sig_t b[3])
{
    for (int i = 0; i < 3; i++) {
        if (a[i].present != b[i].present || a[i].dev != b[i].dev || a[i].ino != b[i].ino ||
            a[i].size != b[i].size || a[i].mtime.tv_sec != b[i].mtime.tv_sec ||
            a[i].mtime.tv_nsec != b[i].mtime.tv_nsec)
            return false;
    }
    return true;
}

static int64_t asn1_time_unix(const ASN1_TIME *t)
{
    struct tm tm;
    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
        return 0;
    return (int64_t)timegm(&tm);
}

/* Reads and checks the three files; installs them. 0 or -1 with err. */
static int load_dir(px_identity_t *id, char *err, size_t errlen)
{
    char path[3][4096];
    char *text[3] = {NULL, NULL, NULL};
    BIO *b = NULL;
    X509 *leaf = NULL;
    EVP_PKEY *pk = NULL;
    STACK_OF(X509_INFO) *roots = NULL;
    GENERAL_NAMES *gens = NULL;
    int rc = -1;
    for (int i = 0; i < 3; i++) {
        snprintf(path[i], sizeof path[i], "%s/%s", id->cert_dir, dir_files[i]);
        if (i == 2 && id->root_file != NULL) {
            struct stat st;
            if (stat(path[i], &st) != 0)
                snprintf(path[i], sizeof path[i], "%s", id->root_file);
        }
        if ((text[i] = read_file(path[i], err, errlen)) == NULL)
            goto out;
    }
    b = BIO_new_mem_buf(text[0], -1);
    if (b == NULL || (leaf = PEM_read_bio_X509(b, NULL, NULL, NULL)) == NULL) {
        set_err(err, errlen, "%s: no PEM certificate", path[0]);
        goto out;
    }
    BIO_free(b);
    b = BIO_new_mem_buf(text[1], -1);
    if (b == NULL || (pk = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL)) == NULL) {
        set_err(err, errlen, "%s: no PEM private key", path[1]);
        goto out;
    }
    if (X509_check_private_key(leaf, pk) != 1) {
        set_err(err, errlen, "%s: the key does not match the certificate of %s", path[1], path[0]);
        goto out;
    }
    BIO_free(b);
    b = BIO_new_mem_buf(text[2], -1);
    if (b == NULL || (roots = PEM_X509_INFO_read_bio(b, NULL, NULL, NULL)) == NULL ||
        sk_X509_INFO_num(roots) == 0 || sk_X509_INFO_value(roots, 0)->x509 == NULL) {
        set_err(err, errlen, "%s: no PEM certificate", path[2]);
        goto out;
    }
    char spiffe[512] = "";
    gens = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type != GEN_URI)
            continue;
        int n = ASN1_STRING_length(g->d.uniformResourceIdentifier);
        if (n > 0 && (size_t)n < sizeof spiffe) {
            memcpy(spiffe, ASN1_STRING_get0_data(g->d.uniformResourceIdentifier), (size_t)n);
            spiffe[n] = 0;
            break;
        }
    }
    int64_t not_after = asn1_time_unix(X509_get0_notAfter(leaf));
    if (not_after <= (int64_t)time(NULL))
        log_warn("identity: %s: the certificate of %s has expired", path[0],
                 spiffe[0] ? spiffe : "(no URI SAN)");
    install(id, text[0], text[1], text[2], spiffe, not_after);
    log_info("identity: certificate for %s loaded from %s, valid until %lld",
             spiffe[0] ? spiffe : "(no URI SAN)", id->cert_dir, (long long)not_after);
    rc = 0;
out:
    ERR_clear_error();
    GENERAL_NAMES_free(gens);
    sk_X509_INFO_pop_free(roots, X509_INFO_free);
    EVP_PKEY_free(pk);
    X509_free(leaf);
    BIO_free(b);
    for (int i = 0; i < 3; i++)
        free_secret(text[i]);
    return rc;
}

static void run_dir(px_identity_t *id)
{
    char err[1024];
    do {
        file_sig_t now[3];
        file_sigs(id, now);
        if (id->have_ok && sigs_equal(now, id->sig_ok))
            continue;
        if (id->have_failed && sigs_equal(now, id->sig_failed))
            continue; /* already reported; wait for the files to change */
        if (load_dir(id, err, sizeof err) == 0) {
            memcpy(id->sig_ok, now, sizeof now);
            id->have_ok = true;
            id->have_failed = false;
        } else {
            log_warn("identity: certificate files in %s not loaded%s: %s", id->cert_dir,
                     id->have_ok ? " (the previous ones stay)" : "", err);
            memcpy(id->sig_failed, now, sizeof now);
            id->have_failed = true;
        }
    } while (!sleep_ms(id, ID_POLL_MS));
}

static void *identity_thread(void *arg)
{
    px_identity_t *id = arg;
    if (id->ca_mode)
        run_ca(id);
    else
        run_dir(id);
    ERR_clear_error();
    return NULL;
}

static void identity_free(px_identity_t *id)
{
    free(id->addr);
    free(id->root_file);
    free(id->token_file);
    free(id->server_name);
    free(id->trust_domain);
    free(id->ns);
    free(id->sa);
    free(id->cert_dir);
    pthread_cond_destroy(&id->cv);
    pthread_mutex_destroy(&id->mu);
    free(id);
}

px_identity_t *px_identity_start(const px_identity_opts_t *o, px_secrets_t *secrets, char *err,
                                 size_t errlen)
{
    if (o == NULL || secrets == NULL) {
        set_err(err, errlen, "identity: no options or no secrets");
        return NULL;
    }
    bool ca = o->ca_addr != NULL && o->ca_addr[0];
    bool dir = o->cert_dir != NULL && o->cert_dir[0];
    if (ca == dir) {
        set_err(err, errlen, "identity: %s",
                ca ? "ca_addr and cert_dir are exclusive"
                   : "neither ca_addr (meshd's CA) nor cert_dir is set");
        return NULL;
    }
    if (ca && (o->root_file == NULL || !o->root_file[0])) {
        set_err(err, errlen,
                "identity: root_file: required with ca_addr (the root that trusts meshd's CA)");
        return NULL;
    }
    if (ca && access(o->root_file, R_OK) != 0) {
        set_err(err, errlen, "identity: root_file %s: cannot read: %s", o->root_file,
                strerror(errno));
        return NULL;
    }
    if (ca && (o->token_file == NULL || !o->token_file[0])) {
        set_err(err, errlen,
                "identity: token_file: required with ca_addr (the service-account token)");
        return NULL;
    }
    if (o->ttl_s < 0) {
        set_err(err, errlen, "identity: ttl_s: must be >= 0");
        return NULL;
    }
    if (dir) {
        struct stat st;
        if (stat(o->cert_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
            set_err(err, errlen, "identity: cert_dir %s: not a directory", o->cert_dir);
            return NULL;
        }
    }
    px_identity_t *id = mesh_xcalloc(1, sizeof *id);
    id->secrets = secrets;
    id->ca_mode = ca;
    id->addr = dup_or_null(o->ca_addr);
    id->root_file = dup_or_null(o->root_file && o->root_file[0] ? o->root_file : NULL);
    id->token_file = dup_or_null(o->token_file);
    id->server_name = dup_or_null(o->server_name);
    id->trust_domain = dup_or_null(o->trust_domain);
    id->ns = dup_or_null(o->ns);
    id->sa = dup_or_null(o->sa);
    id->cert_dir = dup_or_null(dir ? o->cert_dir : NULL);
    id->copts.addr = id->addr;
    id->copts.root_file = id->root_file;
    id->copts.token_file = id->token_file;
    id->copts.server_name = id->server_name;
    id->copts.plaintext = o->plaintext;
    id->copts.key_type = o->ecdsa ? CACLIENT_ECDSA : CACLIENT_RSA;
    id->copts.ttl_s = o->ttl_s;
    id->copts.trust_domain = id->trust_domain;
    id->copts.ns = id->ns;
    id->copts.sa = id->sa;
    id->copts.timeout_ms = ID_FETCH_TIMEOUT_MS;
    id->rng = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)id ^ 0x9e3779b97f4a7c15ull;
    if (id->rng == 0)
        id->rng = 1;
    atomic_init(&id->ready, false);
    pthread_condattr_t ca_attr;
    pthread_condattr_init(&ca_attr);
    pthread_condattr_setclock(&ca_attr, CLOCK_MONOTONIC);
    pthread_mutex_init(&id->mu, NULL);
    pthread_cond_init(&id->cv, &ca_attr);
    pthread_condattr_destroy(&ca_attr);
    int r = pthread_create(&id->thread, NULL, identity_thread, id);
    if (r != 0) {
        set_err(err, errlen, "identity: cannot start its thread: %s", strerror(r));
        identity_free(id);
        return NULL;
    }
    id->started = true;
    return id;
}

bool px_identity_ready(const px_identity_t *id)
{
    return id != NULL && atomic_load(&((px_identity_t *)id)->ready);
}

void px_identity_current(const px_identity_t *id, char *spiffe, size_t n, int64_t *not_after)
{
    px_identity_t *m = (px_identity_t *)id;
    if (spiffe != NULL && n > 0)
        spiffe[0] = 0;
    if (not_after != NULL)
        *not_after = 0;
    if (m == NULL)
        return;
    pthread_mutex_lock(&m->mu);
    if (spiffe != NULL && n > 0)
        snprintf(spiffe, n, "%s", m->spiffe);
    if (not_after != NULL)
        *not_after = m->not_after;
    pthread_mutex_unlock(&m->mu);
}

void px_identity_stop(px_identity_t *id)
{
    if (id == NULL)
        return;
    pthread_mutex_lock(&id->mu);
    id->stopping = true;
    pthread_cond_broadcast(&id->cv);
    pthread_mutex_unlock(&id->mu);
    if (id->started)
        pthread_join(id->thread, NULL);
    identity_free(id);
}
