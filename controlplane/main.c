/*
 * meshd: the control plane. Parses flags, builds the config store and its
 * sources, and runs the loop.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "../common/log.h"
#include "../config/config.h"

#ifndef MESH_VERSION
#define MESH_VERSION "0.1.0"
#endif

struct flags {
    const char *config_dir;
    const char *ns;
    bool once;
};

static void usage(FILE *out)
{
    fputs("usage: meshd --config-dir DIR [flags]\n"
          "\n"
          "flags:\n"
          "  --config-dir DIR      read mesh configuration from the YAML/JSON files under DIR\n"
          "                        and keep following their changes\n"
          "  --namespace NS        namespace of objects that do not name one (default \"default\")\n"
          "  --log-level LEVEL     debug, info, warn or error (default info)\n"
          "  --once                load the configuration, print a summary and exit:\n"
          "                        status 1 if any document was rejected, else 0\n"
          "  --version             print the version\n"
          "  --help                print this help\n",
          out);
}

/* Matches "--name VALUE" and "--name=VALUE"; advances *i past the value. */
static int flag_value(int argc, char **argv, int *i, const char *name, const char **value)
{
    size_t n = strlen(name);
    const char *a = argv[*i];
    if (strncmp(a, name, n) != 0)
        return 0;
    if (a[n] == '=') {
        *value = a + n + 1;
        return 1;
    }
    if (a[n] != '\0')
        return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "meshd: %s needs a value\n", name);
        return -1;
    }
    *value = argv[++*i];
    return 1;
}

/* 0 to run, or the exit status. */
static int parse_flags(int argc, char **argv, struct flags *fl, int *status)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        int m;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            *status = 0;
            return -1;
        }
        if (strcmp(a, "--version") == 0) {
            printf("meshd %s\n", MESH_VERSION);
            *status = 0;
            return -1;
        }
        if (strcmp(a, "--once") == 0) {
            fl->once = true;
            continue;
        }
        if ((m = flag_value(argc, argv, &i, "--config-dir", &v)) != 0) {
            if (m < 0)
                goto bad;
            fl->config_dir = v;
            continue;
        }
        if ((m = flag_value(argc, argv, &i, "--namespace", &v)) != 0) {
            if (m < 0)
                goto bad;
            fl->ns = v;
            continue;
        }
        if ((m = flag_value(argc, argv, &i, "--log-level", &v)) != 0) {
            int level = m < 0 ? -1 : log_level_parse(v);
            if (level < 0 || level == LOG_NONE) {
                if (m > 0)
                    fprintf(stderr, "meshd: unknown log level \"%s\" (debug, info, warn, error)\n", v);
                goto bad;
            }
            log_set_level((log_level_t)level);
            continue;
        }
        fprintf(stderr, "meshd: unknown flag \"%s\"\n", a);
        goto bad;
    }
    if (fl->config_dir == NULL) {
        fprintf(stderr, "meshd: no configuration source: give --config-dir\n");
        goto bad;
    }
    return 0;
bad:
    usage(stderr);
    *status = 2;
    return -1;
}

static void object_name(char *buf, size_t size, const cfg_object_t *o)
{
    const char *kind = cfg_kind_info(o->kind)->name;
    if (o->namespace != NULL && o->namespace[0] != '\0')
        snprintf(buf, size, "%s %s/%s", kind, o->namespace, o->name);
    else
        snprintf(buf, size, "%s %s", kind, o->name);
}

static void log_change(void *ud, const cfg_event_t *ev)
{
    (void)ud;
    static const char *const what[] = {"added", "updated", "deleted"};
    char name[600];
    object_name(name, sizeof(name), ev->new ? ev->new : ev->old);
    log_info("%s %s (version %" PRIu64 ")", name, what[ev->type], ev->version);
}

/* "3 VirtualService, 1 Gateway" into buf; returns the number of objects. */
static size_t kind_counts(const cfg_snap_t *snap, char *buf, size_t size)
{
    size_t len = 0, total = 0;
    buf[0] = '\0';
    for (int k = CFG_KIND_NONE + 1; k < CFG_KIND_COUNT; k++) {
        size_t n = cfg_snap_count(snap, (cfg_kind_t)k);
        if (n == 0)
            continue;
        total += n;
        int w = snprintf(buf + len, size - len, "%s%zu %s", len ? ", " : "", n,
                         cfg_kind_info((cfg_kind_t)k)->name);
        if (w < 0 || (size_t)w >= size - len)
            break;
        len += (size_t)w;
    }
    return total;
}

static void print_summary(const cfg_snap_t *snap, const cfg_dir_stats_t *st, const char *dir)
{
    printf("%s: %u objects from %u files, %u rejected\n", dir, st->objects, st->files,
           st->rejected);
    for (int k = CFG_KIND_NONE + 1; k < CFG_KIND_COUNT; k++) {
        size_t n = cfg_snap_count(snap, (cfg_kind_t)k);
        if (n > 0)
            printf("  %-30s %zu\n", cfg_kind_info((cfg_kind_t)k)->name, n);
    }
}

static int run(struct flags *fl)
{
    int status = 1, sfd = -1;
    cfg_store_t *store = cfg_store_new();
    cfg_dir_t *dir = NULL;
    cfg_snap_t *snap = NULL;

    /* Signals arrive on a descriptor: the handlers do no work. Blocked
     * before any thread exists so that every thread inherits the mask. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    if (!fl->once) {
        if (sigprocmask(SIG_BLOCK, &mask, NULL) != 0 ||
            (sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK)) < 0) {
            log_error("cannot set up signal handling: %s", strerror(errno));
            goto out;
        }
    }

    cfg_load_opts_t opts = {.default_namespace = fl->ns};
    dir = cfg_dir_open(fl->config_dir, store, &opts);
    if (dir == NULL)
        goto out;
    cfg_dir_stats_t st;
    cfg_dir_stats(dir, &st);
    snap = cfg_store_snapshot(store);
    if (fl->once) {
        print_summary(snap, &st, fl->config_dir);
        status = st.rejected > 0 ? 1 : 0;
        goto out;
    }
    char counts[1024];
    if (kind_counts(snap, counts, sizeof(counts)) > 0)
        log_info("config: %s (version %" PRIu64 ")", counts, cfg_snap_version(snap));
    cfg_snap_release(snap);
    snap = NULL;

    cfg_store_subscribe(store, log_change, NULL);
    log_info("meshd %s watching %s", MESH_VERSION, fl->config_dir);
    struct pollfd pfd[2] = {{.fd = sfd, .events = POLLIN}, {.fd = cfg_dir_fd(dir), .events = POLLIN}};
    for (;;) {
        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            log_error("poll: %s", strerror(errno));
            goto out;
        }
        if (pfd[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
                log_info("received %s, shutting down", si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM");
                status = 0;
                goto out;
            }
        }
        if ((pfd[1].revents & POLLIN) && cfg_dir_process(dir) < 0)
            goto out;
    }
out:
    cfg_snap_release(snap);
    cfg_dir_close(dir);
    cfg_store_free(store);
    if (sfd >= 0)
        close(sfd);
    return status;
}

int main(int argc, char **argv)
{
    struct flags fl = {.ns = "default"};
    int status = 0;
    if (parse_flags(argc, argv, &fl, &status) != 0)
        return status;
    return run(&fl);
}
