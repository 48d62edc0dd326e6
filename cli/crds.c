/* meshctl crds: writes the CustomResourceDefinitions of the mesh kinds. */
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "../config/config.h"

static void crds_usage(FILE *f)
{
    fputs("usage: meshctl crds [--out DIR]\n"
          "  Prints the CustomResourceDefinitions of the mesh kinds, separated by ---.\n"
          "  --out DIR  writes one file per kind instead: DIR/<group>_<plural>.yaml\n",
          f);
}

/* Writes one kind's CRD to DIR/<group>_<plural>.yaml through a temporary file,
 * so that a failed run never leaves a half-written CRD behind. */
static int crds_write_file(const char *dir, const cfg_kind_info_t *info)
{
    char path[4096], tmp[4096 + 8];
    int n = snprintf(path, sizeof(path), "%s/%s_%s.yaml", dir, info->group, info->plural);
    if (n < 0 || (size_t)n >= sizeof(path)) {
        fprintf(stderr, "meshctl crds: %s: path too long\n", dir);
        return -1;
    }
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (f == NULL) {
        fprintf(stderr, "meshctl crds: %s: %s\n", tmp, strerror(errno));
        return -1;
    }
    int rc = cfg_crd_write(f, info->kind);
    if (fclose(f) != 0)
        rc = -1;
    if (rc != 0) {
        fprintf(stderr, "meshctl crds: %s: could not write the CRD of %s\n", path, info->name);
        remove(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        fprintf(stderr, "meshctl crds: %s: %s\n", path, strerror(errno));
        remove(tmp);
        return -1;
    }
    return 0;
}

int meshctl_crds(int argc, char **argv)
{
    const char *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--out") == 0 || strcmp(argv[i], "-o") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "meshctl crds: %s needs a directory\n", argv[i]);
                return 1;
            }
            out = argv[++i];
        } else if (strncmp(argv[i], "--out=", 6) == 0) {
            out = argv[i] + 6;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            crds_usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "meshctl crds: unknown argument %s\n", argv[i]);
            crds_usage(stderr);
            return 1;
        }
    }
    if (out != NULL && out[0] == '\0') {
        fprintf(stderr, "meshctl crds: --out needs a directory\n");
        return 1;
    }
    if (out != NULL && mkdir(out, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "meshctl crds: %s: %s\n", out, strerror(errno));
        return 1;
    }

    int written = 0;
    for (int k = CFG_KIND_NONE + 1; k < CFG_KIND_COUNT; k++) {
        const cfg_kind_info_t *info = cfg_kind_info((cfg_kind_t)k);
        if (info == NULL || !info->mesh)
            continue;
        if (out != NULL) {
            if (crds_write_file(out, info) != 0)
                return 1;
        } else {
            if (written > 0)
                fputs("---\n", stdout);
            if (cfg_crd_write(stdout, info->kind) != 0) {
                fprintf(stderr, "meshctl crds: could not write the CRD of %s\n", info->name);
                return 1;
            }
        }
        written++;
    }
    if (fflush(stdout) != 0) {
        fprintf(stderr, "meshctl crds: stdout: %s\n", strerror(errno));
        return 1;
    }
    if (out != NULL)
        fprintf(stderr, "meshctl crds: wrote %d CustomResourceDefinitions to %s\n", written, out);
    return 0;
}
