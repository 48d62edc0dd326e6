/*
 * meshctl kube-inject -f FILE|- [--injector-config FILE] [--meshNamespace NS] [-o FILE]
 *
 * Prints the manifest with the sidecar injected into every pod template, by
 * the same code the /inject webhook runs (webhook_kube_inject).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/arena.h"
#include "../webhook/webhook.h"
#include "cli.h"

int meshctl_kube_inject(int argc, char **argv);

static void inject_usage(FILE *out)
{
    fputs("usage: meshctl kube-inject -f FILE|- [--injector-config FILE] [--meshNamespace NS] [-o FILE]\n"
          "\n"
          "Writes the manifest with the mesh sidecar (istio-init, istio-proxy) injected into every pod\n"
          "template: Deployment, StatefulSet, DaemonSet, Job, CronJob, ReplicaSet, ReplicationController,\n"
          "Pod and the items of a List. Other documents pass through unchanged. YAML in, YAML out; JSON\n"
          "in, JSON out.\n"
          "\n"
          "  -f, --filename FILE      the manifest, or - for stdin\n"
          "  --injector-config FILE   the injection values (a values document, or the\n"
          "                           istio-sidecar-injector ConfigMap); see webhook/TEMPLATE.md\n"
          "  --meshNamespace NS       the control plane's namespace (default istio-system)\n"
          "  -o, --output FILE        write there instead of stdout\n",
          out);
}

static char *read_all(FILE *f, size_t *len)
{
    size_t cap = 65536, n = 0;
    char *buf = mesh_xmalloc(cap);
    for (;;) {
        if (cap - n < 4096)
            buf = mesh_xrealloc(buf, cap *= 2);
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
    }
    if (ferror(f)) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

/* "--flag value" or "--flag=value": the value, advancing *i; NULL if absent. */
static const char *flag_value(int argc, char **argv, int *i, const char *lng, const char *shrt)
{
    const char *a = argv[*i];
    size_t ll = strlen(lng);
    if (strncmp(a, lng, ll) == 0 && a[ll] == '=')
        return a + ll + 1;
    if (strcmp(a, lng) == 0 || (shrt != NULL && strcmp(a, shrt) == 0)) {
        if (*i + 1 >= argc)
            return NULL;
        return argv[++*i];
    }
    return NULL;
}

int meshctl_kube_inject(int argc, char **argv)
{
    const char *file = NULL, *values = NULL, *mesh_ns = NULL, *output = NULL;
    char err[1024];
    int rc = 1;
    char *buf = NULL;
    size_t len = 0;
    webhook_config_t *c = NULL;
    FILE *out = stdout;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            inject_usage(stdout);
            return 0;
        }
        bool known = strncmp(a, "--filename", 10) == 0 || strcmp(a, "-f") == 0 ||
                     strncmp(a, "--injector-config", 17) == 0 || strncmp(a, "--injectConfigFile", 18) == 0 ||
                     strncmp(a, "--meshNamespace", 15) == 0 || strncmp(a, "--output", 8) == 0 ||
                     strcmp(a, "-o") == 0;
        if (!known) {
            fprintf(stderr, "meshctl kube-inject: unknown flag \"%s\"\n", a);
            inject_usage(stderr);
            return 2;
        }
        if ((v = flag_value(argc, argv, &i, "--filename", "-f")) != NULL)
            file = v;
        else if ((v = flag_value(argc, argv, &i, "--injector-config", NULL)) != NULL ||
                 (v = flag_value(argc, argv, &i, "--injectConfigFile", NULL)) != NULL)
            values = v;
        else if ((v = flag_value(argc, argv, &i, "--meshNamespace", NULL)) != NULL)
            mesh_ns = v;
        else if ((v = flag_value(argc, argv, &i, "--output", "-o")) != NULL)
            output = v;
        else {
            fprintf(stderr, "meshctl kube-inject: flag %s needs a value\n", a);
            return 2;
        }
    }
    if (file == NULL) {
        fprintf(stderr, "meshctl kube-inject: -f FILE (or - for stdin) is required\n");
        inject_usage(stderr);
        return 2;
    }
    if (values != NULL) {
        c = webhook_config_load(values, mesh_ns, err, sizeof(err));
        if (c == NULL) {
            fprintf(stderr, "meshctl kube-inject: --injector-config %s\n", err);
            goto out;
        }
    } else {
        c = webhook_config_default(mesh_ns);
    }
    if (strcmp(file, "-") == 0) {
        buf = read_all(stdin, &len);
    } else {
        FILE *f = fopen(file, "rb");
        if (f == NULL) {
            fprintf(stderr, "meshctl kube-inject: %s: %s\n", file, strerror(errno));
            goto out;
        }
        buf = read_all(f, &len);
        fclose(f);
    }
    if (buf == NULL) {
        fprintf(stderr, "meshctl kube-inject: %s: read error\n", file);
        goto out;
    }
    if (output != NULL && (out = fopen(output, "w")) == NULL) {
        out = stdout;
        fprintf(stderr, "meshctl kube-inject: %s: %s\n", output, strerror(errno));
        goto out;
    }
    if (webhook_kube_inject(c, buf, len, out, err, sizeof(err)) != 0) {
        fprintf(stderr, "meshctl kube-inject: %s: %s\n", strcmp(file, "-") == 0 ? "<stdin>" : file, err);
        goto out;
    }
    if (fflush(out) != 0) {
        fprintf(stderr, "meshctl kube-inject: write error: %s\n", strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (out != stdout && fclose(out) != 0 && rc == 0) {
        fprintf(stderr, "meshctl kube-inject: %s: %s\n", output, strerror(errno));
        rc = 1;
    }
    free(buf);
    webhook_config_unref(c);
    return rc;
}
