/*
 * meshctl validate: offline validation like `istioctl validate`. One line per
 * rejected document on stdout (every reason, joined by "; "), a summary on
 * stderr, exit status 1 when anything was rejected.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../common/arena.h"
#include "../config/config.h"
#include "cli.h"

struct tally {
    int accepted, rejected, skipped, unreadable;
};

static void report(void *ud, cfg_object_t *obj, const cfg_diag_t *diag)
{
    struct tally *t = ud;
    if (obj != NULL) {
        t->accepted++;
        cfg_object_unref(obj);
        return;
    }
    if (diag->nerrors == 0) {
        t->skipped++;
        for (uint32_t i = 0; i < diag->nwarnings; i++)
            fprintf(stderr, "warning: %s\n", diag->warnings[i]);
        return;
    }
    t->rejected++;
    fputs(diag->errors[0], stdout);
    for (uint32_t i = 1; i < diag->nerrors; i++)
        printf("; %s", diag->errors[i] + diag->reason_at[i]);
    if (diag->truncated)
        fputs("; (more errors not shown)", stdout);
    fputc('\n', stdout);
}

static bool wanted(const char *name)
{
    size_t n = strlen(name);
    return (n > 5 && strcmp(name + n - 5, ".yaml") == 0) ||
           (n > 4 && strcmp(name + n - 4, ".yml") == 0) ||
           (n > 5 && strcmp(name + n - 5, ".json") == 0);
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void validate_path(const char *path, bool top, struct tally *t)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "meshctl: %s: %s\n", path, strerror(errno));
        t->unreadable++;
        return;
    }
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (d == NULL) {
            fprintf(stderr, "meshctl: %s: %s\n", path, strerror(errno));
            t->unreadable++;
            return;
        }
        char **names = NULL;
        size_t n = 0;
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            names = mesh_xrealloc(names, (n + 1) * sizeof(*names));
            names[n++] = mesh_xstrdup(e->d_name);
        }
        closedir(d);
        qsort(names, n, sizeof(*names), cmp_names); /* stable output order */
        for (size_t i = 0; i < n; i++) {
            size_t len = strlen(path) + strlen(names[i]) + 2;
            char *child = mesh_xmalloc(len);
            snprintf(child, len, "%s/%s", path, names[i]);
            struct stat cs;
            if (stat(child, &cs) == 0 && (S_ISDIR(cs.st_mode) || wanted(names[i])))
                validate_path(child, false, t);
            free(child);
            free(names[i]);
        }
        free(names);
        return;
    }
    (void)top;
    if (cfg_load_file(path, NULL, report, t) < 0) {
        fprintf(stderr, "meshctl: %s: cannot read\n", path);
        t->unreadable++;
    }
}

static void validate_stdin(struct tally *t)
{
    size_t cap = 65536, len = 0;
    char *buf = mesh_xmalloc(cap);
    size_t r;
    while ((r = fread(buf + len, 1, cap - len, stdin)) > 0) {
        len += r;
        if (len == cap) {
            cap *= 2;
            buf = mesh_xrealloc(buf, cap);
        }
    }
    cfg_load_opts_t o = {.file = "<stdin>"};
    cfg_load_buffer(buf, len, DOC_FMT_AUTO, &o, report, t);
    free(buf);
}

int meshctl_validate(int argc, char **argv)
{
    struct tally t = {0};
    int inputs = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *val = NULL;
        if (strcmp(arg, "-f") == 0 || strcmp(arg, "--filename") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "meshctl validate: %s needs a file, directory or -\n", arg);
                return 2;
            }
            val = argv[++i];
        } else if (strncmp(arg, "--filename=", 11) == 0) {
            val = arg + 11;
        } else if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            puts("usage: meshctl validate -f FILE|DIR|- [-f ...]\n"
                 "Validates mesh configuration offline. Directories are read recursively\n"
                 "(*.yaml, *.yml, *.json). Prints one line per rejected document and exits 1\n"
                 "when any document was rejected.");
            return 0;
        } else {
            fprintf(stderr, "meshctl validate: unknown argument \"%s\" (use -f FILE|DIR|-)\n", arg);
            return 2;
        }
        inputs++;
        if (strcmp(val, "-") == 0)
            validate_stdin(&t);
        else
            validate_path(val, true, &t);
    }
    if (inputs == 0) {
        fputs("meshctl validate: nothing to validate (use -f FILE|DIR|-)\n", stderr);
        return 2;
    }
    fprintf(stderr, "validated %d documents: %d accepted, %d rejected, %d skipped (not mesh kinds)\n",
            t.accepted + t.rejected + t.skipped, t.accepted, t.rejected, t.skipped);
    return t.rejected > 0 || t.unreadable > 0 ? 1 : 0;
}
