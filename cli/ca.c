/* meshctl ca sign: gets a workload certificate from meshd's CA, as a proxy would. */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../common/caclient.h"



static void ca_usage(FILE *f)
{
    fputs("usage: meshctl ca sign --addr HOST:PORT --root FILE --token-file FILE --out-dir DIR\n"
          "                       [--ecdsa] [--ttl DURATION] [--server-name NAME] [--trust-domain TD]\n"
          "                       [--namespace NS --service-account SA]\n"
          "  Generates a key, asks meshd's certificate service (CreateCertificate) for a certificate\n"
          "  for the identity of the service-account token, verifies it against --root and writes\n"
          "  DIR/key.pem (mode 0600), DIR/cert-chain.pem and DIR/root-cert.pem.\n"
          "  --ecdsa             an ECDSA P-256 key instead of RSA 2048\n"
          "  --ttl DURATION      requested validity (1h, 30m, 90s, 2d); the CA caps it\n"
          "  --server-name NAME  name expected in meshd's certificate (default istiod.istio-system.svc)\n"
          "  --namespace, --service-account  ask for this identity instead of the token's\n",
          f);
}

/* "1h", "30m", "90s", "2d", "1h30m" or plain seconds; -1 when invalid. */
static long long parse_duration(const char *s)
{
    long long total = 0;
    if (!*s)
        return -1;
    while (*s) {
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (end == s || errno || v < 0)
            return -1;
        long long unit = 1;
        switch (*end) {
        case 'd':
            unit = 86400;
            break;
        case 'h':
            unit = 3600;
            break;
        case 'm':
            unit = 60;
            break;
        case 's':
        case 0:
            unit = 1;
            break;
        default:
            return -1;
        }
        total += v * unit;
        s = *end ? end + 1 : end;
    }
    return total;
}

static int write_file(const char *dir, const char *name, const char *text, mode_t mode)
{
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0 || fchmod(fd, mode) != 0) {
        fprintf(stderr, "meshctl ca sign: %s: %s\n", tmp, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    size_t len = strlen(text);
    bool ok = write(fd, text, len) == (ssize_t)len && fsync(fd) == 0;
    close(fd);
    if (!ok || rename(tmp, path) != 0) {
        fprintf(stderr, "meshctl ca sign: %s: %s\n", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

static int ca_sign(int argc, char **argv)
{
    caclient_opts_t o = {0};
    const char *out_dir = NULL;
    o.key_type = CACLIENT_RSA;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = NULL;
        if (!strcmp(a, "--ecdsa")) {
            o.key_type = CACLIENT_ECDSA;
            continue;
        }
        if (!strcmp(a, "--rsa")) {
            o.key_type = CACLIENT_RSA;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            ca_usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--addr"))
            dst = &o.addr;
        else if (!strcmp(a, "--root"))
            dst = &o.root_file;
        else if (!strcmp(a, "--token-file"))
            dst = &o.token_file;
        else if (!strcmp(a, "--out-dir"))
            dst = &out_dir;
        else if (!strcmp(a, "--server-name"))
            dst = &o.server_name;
        else if (!strcmp(a, "--trust-domain"))
            dst = &o.trust_domain;
        else if (!strcmp(a, "--namespace"))
            dst = &o.ns;
        else if (!strcmp(a, "--service-account"))
            dst = &o.sa;
        else if (strcmp(a, "--ttl") != 0) {
            fprintf(stderr, "meshctl ca sign: unknown flag \"%s\"\n", a);
            ca_usage(stderr);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "meshctl ca sign: %s needs a value\n", a);
            return 2;
        }
        if (!dst) {
            long long ttl = parse_duration(argv[++i]);
            if (ttl <= 0) {
                fprintf(stderr, "meshctl ca sign: --ttl %s: not a duration (1h, 30m, 90s, 2d)\n", argv[i]);
                return 2;
            }
            o.ttl_s = ttl;
            continue;
        }
        *dst = argv[++i];
    }
    if (!o.addr || !o.root_file || !o.token_file || !out_dir) {
        fprintf(stderr, "meshctl ca sign: --addr, --root, --token-file and --out-dir are required\n");
        ca_usage(stderr);
        return 2;
    }
    if ((o.ns == NULL) != (o.sa == NULL)) {
        fprintf(stderr, "meshctl ca sign: --namespace and --service-account go together\n");
        return 2;
    }
    if (mkdir(out_dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "meshctl ca sign: %s: %s\n", out_dir, strerror(errno));
        return 1;
    }
    caclient_cert_t c;
    char err[2048];
    int rc = caclient_fetch(&o, &c, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "meshctl ca sign: %s\n", err);
        return 1;
    }
    int st = 0;
    if (write_file(out_dir, "key.pem", c.key_pem, 0600) != 0 ||
        write_file(out_dir, "cert-chain.pem", c.cert_chain_pem, 0644) != 0 ||
        write_file(out_dir, "root-cert.pem", c.root_pem, 0644) != 0)
        st = 1;
    if (st == 0) {
        char t[64] = "?";
        time_t na = (time_t)c.not_after;
        struct tm tm;
        if (gmtime_r(&na, &tm))
            strftime(t, sizeof t, "%Y-%m-%dT%H:%M:%SZ", &tm);
        printf("%s: certificate valid until %s; wrote %s/key.pem, %s/cert-chain.pem, %s/root-cert.pem\n",
               c.identity, t, out_dir, out_dir, out_dir);
    }
    caclient_cert_free(&c);
    return st;
}

int meshctl_ca(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "sign"))
        return ca_sign(argc - 1, argv + 1);
    if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help"))) {
        ca_usage(stdout);
        return 0;
    }
    fprintf(stderr, "meshctl ca: %s\n", argc >= 2 ? "unknown subcommand" : "a subcommand is needed");
    ca_usage(stderr);
    return 2;
}
