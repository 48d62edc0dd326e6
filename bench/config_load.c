/*
 * config_load: how fast one core loads and validates a large mesh config, and
 * how much memory each object keeps resident.
 *
 * Writes a generated configuration (VirtualServices with header matches,
 * weighted routes to subsets, retries and timeouts; DestinationRules with a
 * traffic policy and subsets; Services with two ports and a selector, spread
 * over namespaces) as YAML files into a fresh temporary directory, then, in
 * the same process pinned to one CPU, loads every file with cfg_load_file()
 * into a config store in one batch and reports wall and CPU time, objects per
 * second and resident bytes per object.
 *
 *   config_load [--vs N] [--dr N] [--svc N] [--per-file N] [--namespaces N] [--keep]
 *
 * Prints a table, then one `key=value` line per figure. Exits 1 if nothing
 * loaded, any document was rejected or the store does not hold every object.
 */
#include <dirent.h>
#include <errno.h>
#include <malloc.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../common/log.h"
#include "../config/config.h"

/* Targets the figures are reported against (not asserted). */
#define TARGET_WALL_S 1.0
#define TARGET_BYTES_PER_OBJECT 2048.0

struct params {
    unsigned vs, dr, svc;
    unsigned per_file;
    unsigned namespaces;
    int keep;
};

/* ---- generation ---- */

static const char *const teams[] = {"payments", "catalog", "checkout", "search", "identity",
                                    "ledger", "shipping", "billing", "reviews", "ratings"};
#define NTEAMS (sizeof(teams) / sizeof(teams[0]))

static void ns_name(char *buf, size_t size, unsigned ns)
{
    snprintf(buf, size, "%s-%02u", teams[ns % NTEAMS], ns);
}

/* The application a VirtualService or DestinationRule number i refers to:
 * host app-<i>.<ns>.svc.cluster.local, so that every object is distinct. */
static void write_vs(FILE *f, unsigned i, unsigned nns)
{
    char ns[32];
    ns_name(ns, sizeof(ns), i % nns);
    unsigned w = 5 + (i * 7) % 46; /* canary weight 5..50 */
    unsigned nroutes = 2 + i % 2;
    fprintf(f,
            "---\n"
            "apiVersion: networking.istio.io/v1\n"
            "kind: VirtualService\n"
            "metadata:\n"
            "  name: app-%05u\n"
            "  namespace: %s\n"
            "  labels:\n"
            "    app: app-%05u\n"
            "    team: %s\n"
            "spec:\n"
            "  hosts:\n"
            "  - app-%05u.%s.svc.cluster.local\n"
            "  http:\n",
            i, ns, i, teams[i % NTEAMS], i, ns);
    /* 1: a header match pinned to one subset, with retries. */
    fprintf(f,
            "  - name: pinned-%u\n"
            "    match:\n"
            "    - headers:\n"
            "        end-user:\n"
            "          exact: user-%u\n"
            "        x-canary:\n"
            "          regex: \"^(true|yes|%u)$\"\n"
            "      uri:\n"
            "        prefix: /api/v%u/\n"
            "    route:\n"
            "    - destination:\n"
            "        host: app-%05u.%s.svc.cluster.local\n"
            "        subset: v2\n"
            "        port:\n"
            "          number: %u\n"
            "    retries:\n"
            "      attempts: %u\n"
            "      perTryTimeout: %ums\n"
            "      retryOn: 5xx,connect-failure,refused-stream\n"
            "    timeout: %us\n",
            i, i % 97, i, 1 + i % 3, i, ns, 8000 + i % 100, 2 + i % 3, 250 + (i % 8) * 50,
            5 + i % 25);
    /* 2: a prefix match split by weight between two subsets. */
    if (nroutes == 3)
        fprintf(f,
                "  - name: split-%u\n"
                "    match:\n"
                "    - uri:\n"
                "        prefix: /v%u/\n"
                "      method:\n"
                "        exact: GET\n"
                "    route:\n"
                "    - destination:\n"
                "        host: app-%05u.%s.svc.cluster.local\n"
                "        subset: v1\n"
                "      weight: %u\n"
                "    - destination:\n"
                "        host: app-%05u.%s.svc.cluster.local\n"
                "        subset: v3\n"
                "      weight: %u\n"
                "    timeout: %ums\n",
                i, i % 5, i, ns, 100 - w, i, ns, w, 1500 + (i % 10) * 100);
    /* last: the default route, weighted between two subsets, with retries. */
    fprintf(f,
            "  - name: default\n"
            "    route:\n"
            "    - destination:\n"
            "        host: app-%05u.%s.svc.cluster.local\n"
            "        subset: v1\n"
            "      weight: %u\n"
            "    - destination:\n"
            "        host: app-%05u.%s.svc.cluster.local\n"
            "        subset: v2\n"
            "      weight: %u\n"
            "    retries:\n"
            "      attempts: 3\n"
            "      perTryTimeout: 2s\n"
            "      retryOn: gateway-error,reset\n"
            "    timeout: 10s\n",
            i, ns, 100 - w, i, ns, w);
}

static const char *const lb_modes[] = {"ROUND_ROBIN", "LEAST_REQUEST", "RANDOM"};

static void write_dr(FILE *f, unsigned i, unsigned nns)
{
    char ns[32];
    ns_name(ns, sizeof(ns), i % nns);
    fprintf(f,
            "---\n"
            "apiVersion: networking.istio.io/v1\n"
            "kind: DestinationRule\n"
            "metadata:\n"
            "  name: app-%05u\n"
            "  namespace: %s\n"
            "spec:\n"
            "  host: app-%05u.%s.svc.cluster.local\n"
            "  trafficPolicy:\n"
            "    loadBalancer:\n"
            "      simple: %s\n"
            "    connectionPool:\n"
            "      tcp:\n"
            "        maxConnections: %u\n"
            "        connectTimeout: %ums\n"
            "      http:\n"
            "        http1MaxPendingRequests: %u\n"
            "        http2MaxRequests: %u\n"
            "        maxRequestsPerConnection: %u\n"
            "    outlierDetection:\n"
            "      consecutive5xxErrors: %u\n"
            "      interval: %us\n"
            "      baseEjectionTime: %us\n"
            "      maxEjectionPercent: %u\n"
            "    tls:\n"
            "      mode: ISTIO_MUTUAL\n"
            "  subsets:\n"
            "  - name: v1\n"
            "    labels:\n"
            "      version: v1\n"
            "      app: app-%05u\n"
            "  - name: v2\n"
            "    labels:\n"
            "      version: v2\n"
            "      app: app-%05u\n"
            "    trafficPolicy:\n"
            "      loadBalancer:\n"
            "        simple: LEAST_REQUEST\n",
            i, ns, i, ns, lb_modes[i % 3], 100 + i % 900, 100 + (i % 20) * 10, 64 + i % 512,
            1000 + i % 1000, 1 + i % 100, 3 + i % 5, 5 + i % 30, 15 + i % 60, 10 + i % 90, i, i);
    if (i % 2 == 0)
        fprintf(f,
                "  - name: v3\n"
                "    labels:\n"
                "      version: v3\n"
                "      app: app-%05u\n",
                i);
}

static void write_svc(FILE *f, unsigned i, unsigned nns)
{
    char ns[32];
    ns_name(ns, sizeof(ns), i % nns);
    fprintf(f,
            "---\n"
            "apiVersion: v1\n"
            "kind: Service\n"
            "metadata:\n"
            "  name: svc-%05u\n"
            "  namespace: %s\n"
            "  labels:\n"
            "    app: svc-%05u\n"
            "    service: svc-%05u\n"
            "spec:\n"
            "  type: ClusterIP\n"
            "  selector:\n"
            "    app: svc-%05u\n"
            "  ports:\n"
            "  - name: http\n"
            "    port: %u\n"
            "    targetPort: %u\n"
            "    protocol: TCP\n"
            "  - name: grpc-api\n"
            "    port: 9090\n"
            "    targetPort: grpc\n"
            "    appProtocol: grpc\n",
            i, ns, i, i, i, 80 + (i % 3) * 8000, 8080 + i % 10);
}

typedef void (*write_fn)(FILE *f, unsigned i, unsigned nns);

/* Writes count objects, per_file to a file named <prefix>-NNN.yaml.
 * Returns the number of files, or -1. */
static int write_files(const char *dir, const char *prefix, unsigned count, unsigned per_file,
                       unsigned nns, write_fn fn, unsigned long long *bytes)
{
    int files = 0;
    for (unsigned first = 0; first < count; first += per_file) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s-%03d.yaml", dir, prefix, files);
        FILE *f = fopen(path, "w");
        if (f == NULL) {
            fprintf(stderr, "config_load: %s: %s\n", path, strerror(errno));
            return -1;
        }
        fprintf(f, "# generated by bench/config_load: %s objects %u..%u\n", prefix, first,
                first + per_file < count ? first + per_file - 1 : count - 1);
        for (unsigned i = first; i < count && i < first + per_file; i++)
            fn(f, i, nns);
        long size = ftell(f);
        if (fclose(f) != 0 || size < 0) {
            fprintf(stderr, "config_load: %s: write failed\n", path);
            return -1;
        }
        *bytes += (unsigned long long)size;
        files++;
    }
    return files;
}

/* ---- measurement ---- */

struct load_stats {
    unsigned long long objects;
    unsigned long long rejected;
    unsigned long long warnings;
    unsigned long long footprint;
    unsigned long long put_failed;
    unsigned long long kind_objects[CFG_KIND_COUNT];
    unsigned long long kind_footprint[CFG_KIND_COUNT];
    cfg_store_t *store;
};

static void on_result(void *ud, cfg_object_t *obj, const cfg_diag_t *diag)
{
    struct load_stats *st = ud;
    st->warnings += diag->nwarnings;
    if (obj == NULL) {
        if (diag->nerrors > 0) {
            if (st->rejected < 5)
                for (uint32_t e = 0; e < diag->nerrors; e++)
                    fprintf(stderr, "config_load: rejected: %s\n", diag->errors[e]);
            st->rejected++;
        }
        return;
    }
    st->objects++;
    size_t fp = cfg_object_footprint(obj);
    st->footprint += fp;
    st->kind_objects[obj->kind]++;
    st->kind_footprint[obj->kind] += fp;
    if (cfg_store_put(st->store, obj) != 0)
        st->put_failed++; /* 1: the same object was already there */
    cfg_object_unref(obj); /* the store holds its own reference */
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static long max_rss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* Resident bytes of the process, from /proc/self/statm. */
static unsigned long long rss_bytes(void)
{
    unsigned long long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return 0;
    if (fscanf(f, "%llu %llu", &size, &resident) != 2)
        resident = 0;
    fclose(f);
    return resident * (unsigned long long)sysconf(_SC_PAGESIZE);
}

/* Pins the process to CPU 0, or to the first CPU it may run on. Returns the
 * CPU, or -1 if it could not be pinned. */
static int pin_one_cpu(void)
{
    cpu_set_t allowed, one;
    if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0)
        return -1;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (!CPU_ISSET(cpu, &allowed))
            continue;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        return sched_setaffinity(0, sizeof(one), &one) == 0 ? cpu : -1;
    }
    return -1;
}

static int remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (unlink(path) != 0)
            rc = -1;
    }
    closedir(d);
    if (rmdir(dir) != 0)
        rc = -1;
    return rc;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The generated files, sorted, as full paths (freed by the caller). */
static char **list_files(const char *dir, size_t *n)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return NULL;
    char **v = NULL;
    size_t cap = 0;
    *n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l < 6 || strcmp(e->d_name + l - 5, ".yaml") != 0)
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            v = mesh_xrealloc(v, cap * sizeof(*v));
        }
        size_t pl = strlen(dir) + 1 + l + 1;
        v[*n] = mesh_xmalloc(pl);
        snprintf(v[*n], pl, "%s/%s", dir, e->d_name);
        (*n)++;
    }
    closedir(d);
    qsort(v, *n, sizeof(*v), cmp_str);
    return v;
}

static int count_doc(void *ud, const doc_t *d)
{
    (*(unsigned long *)ud) += d->root != NULL;
    return 0;
}

/* Seconds spent in doc_parse() over every file (reading excluded), or -1. */
static double parse_only(char **files, size_t n)
{
    double total = 0;
    unsigned long docs = 0;
    for (size_t i = 0; i < n; i++) {
        FILE *f = fopen(files[i], "rb");
        if (f == NULL)
            return -1;
        struct stat st;
        if (fstat(fileno(f), &st) != 0) {
            fclose(f);
            return -1;
        }
        size_t size = (size_t)st.st_size;
        char *buf = mesh_xmalloc(size + 1);
        size_t got = fread(buf, 1, size, f);
        fclose(f);
        if (got != size) {
            free(buf);
            return -1;
        }
        double t = now_s();
        doc_parse(buf, size, DOC_FMT_YAML, count_doc, &docs);
        total += now_s() - t;
        free(buf);
    }
    return docs > 0 ? total : -1;
}

static int parse_uint(const char *s, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v > 10000000ul)
        return -1;
    *out = (unsigned)v;
    return 0;
}

static void usage(void)
{
    fputs("usage: config_load [--vs N] [--dr N] [--svc N] [--per-file N] [--namespaces N] "
          "[--keep]\n",
          stderr);
}

int main(int argc, char **argv)
{
    struct params p = {.vs = 10000, .dr = 10000, .svc = 2000, .per_file = 1000, .namespaces = 20};
    for (int i = 1; i < argc; i++) {
        unsigned *dst = NULL;
        if (strcmp(argv[i], "--vs") == 0)
            dst = &p.vs;
        else if (strcmp(argv[i], "--dr") == 0)
            dst = &p.dr;
        else if (strcmp(argv[i], "--svc") == 0)
            dst = &p.svc;
        else if (strcmp(argv[i], "--per-file") == 0)
            dst = &p.per_file;
        else if (strcmp(argv[i], "--namespaces") == 0)
            dst = &p.namespaces;
        else if (strcmp(argv[i], "--keep") == 0) {
            p.keep = 1;
            continue;
        } else {
            usage();
            return 2;
        }
        if (i + 1 >= argc || parse_uint(argv[++i], dst) != 0) {
            usage();
            return 2;
        }
    }
    if (p.per_file == 0 || p.namespaces == 0) {
        usage();
        return 2;
    }
    log_set_level(LOG_WARN);

    int cpu = pin_one_cpu();
    if (cpu < 0)
        fprintf(stderr, "config_load: could not pin to one CPU: %s\n", strerror(errno));

    char dir[] = "/tmp/meshd-bench-XXXXXX";
    if (mkdtemp(dir) == NULL) {
        fprintf(stderr, "config_load: mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    unsigned long long input_bytes = 0;
    int nfiles = 0, rc;
    if ((rc = write_files(dir, "virtualservices", p.vs, p.per_file, p.namespaces, write_vs,
                          &input_bytes)) < 0)
        goto fail_gen;
    nfiles += rc;
    if ((rc = write_files(dir, "destinationrules", p.dr, p.per_file, p.namespaces, write_dr,
                          &input_bytes)) < 0)
        goto fail_gen;
    nfiles += rc;
    if ((rc = write_files(dir, "services", p.svc, p.per_file, p.namespaces, write_svc,
                          &input_bytes)) < 0)
        goto fail_gen;
    nfiles += rc;

    size_t nlisted = 0;
    char **files = list_files(dir, &nlisted);
    if (files == NULL || nlisted != (size_t)nfiles) {
        fprintf(stderr, "config_load: cannot list %s\n", dir);
        goto fail_gen;
    }

    /* Everything the measurement should not count is allocated above; give
     * freed heap back so that the baseline is the process, not the generator. */
    malloc_trim(0);
    unsigned long long rss_before = rss_bytes();
    struct load_stats st = {0};
    int unreadable = 0;

    double t0 = now_s(), c0 = cpu_s();
    st.store = cfg_store_new();
    cfg_store_begin(st.store);
    for (size_t i = 0; i < nlisted; i++)
        if (cfg_load_file(files[i], NULL, on_result, &st) < 0) {
            fprintf(stderr, "config_load: cannot read %s\n", files[i]);
            unreadable++;
        }
    double t_decoded = now_s();
    int published = cfg_store_commit(st.store);
    double t1 = now_s(), c1 = cpu_s();
    unsigned long long rss_after = rss_bytes();

    cfg_snap_t *snap = cfg_store_snapshot(st.store);
    size_t n_vs = cfg_snap_count(snap, CFG_VirtualService);
    size_t n_dr = cfg_snap_count(snap, CFG_DestinationRule);
    size_t n_svc = cfg_snap_count(snap, CFG_Service);
    size_t n_all = cfg_snap_count(snap, CFG_KIND_NONE);
    cfg_snap_release(snap);

    /* How much of the load is the YAML parser: the same files through
     * doc_parse() alone, after the measured load. */
    double parse_s = parse_only(files, nlisted);

    unsigned long long expected = (unsigned long long)p.vs + p.dr + p.svc;
    double wall = t1 - t0, cpu_time = c1 - c0;
    double per_obj_rss =
        st.objects ? (double)(rss_after > rss_before ? rss_after - rss_before : 0) / (double)st.objects
                   : 0;
    double per_obj_fp = st.objects ? (double)st.footprint / (double)st.objects : 0;
    double obj_per_s = wall > 0 ? (double)st.objects / wall : 0;

    printf("config_load: %u VirtualService + %u DestinationRule + %u Service in %d files "
           "(%.1f MB of YAML), %u namespaces, pinned to CPU %d\n",
           p.vs, p.dr, p.svc, nfiles, (double)input_bytes / 1e6, p.namespaces, cpu);
    printf("  %-34s %14s %14s\n", "figure", "measured", "target");
    printf("  %-34s %12.3f s %12.3f s\n", "wall time, load + validate + store", wall,
           TARGET_WALL_S);
    printf("  %-34s %12.3f s\n", "  of which store commit", t1 - t_decoded);
    printf("  %-34s %12.3f s\n", "CPU time (user + system)", cpu_time);
    if (parse_s >= 0)
        printf("  %-34s %12.3f s\n", "YAML parse alone (separate pass)", parse_s);
    printf("  %-34s %14.0f\n", "objects per second (wall)", obj_per_s);
    printf("  %-34s %12.1f MB/s\n", "YAML throughput", wall > 0 ? (double)input_bytes / 1e6 / wall : 0);
    printf("  %-34s %12.0f B %12.0f B\n", "resident memory per object (RSS)", per_obj_rss,
           TARGET_BYTES_PER_OBJECT);
    printf("  %-34s %12.0f B\n", "object footprint (arena) per object", per_obj_fp);
    for (int k = CFG_KIND_NONE + 1; k < CFG_KIND_COUNT; k++)
        if (st.kind_objects[k] > 0) {
            char label[64];
            snprintf(label, sizeof(label), "  %s", cfg_kind_info((cfg_kind_t)k)->name);
            printf("  %-34s %12.0f B\n", label,
                   (double)st.kind_footprint[k] / (double)st.kind_objects[k]);
        }
    char rss_row[64];
    snprintf(rss_row, sizeof(rss_row), "%.1f -> %.1f MB", (double)rss_before / 1e6,
             (double)rss_after / 1e6);
    printf("  %-34s %14s\n", "RSS before -> after loading", rss_row);
    printf("  %-34s %11.1f MB\n", "peak RSS", (double)max_rss_kb() * 1024 / 1e6);
    printf("  %-34s %14llu / %llu\n", "objects loaded / expected", st.objects, expected);
    printf("  %-34s %14llu\n", "documents rejected", st.rejected);
    printf("\n");
    printf("objects=%llu\n", st.objects);
    printf("expected=%llu\n", expected);
    printf("rejected=%llu\n", st.rejected);
    printf("warnings=%llu\n", st.warnings);
    printf("files=%d\n", nfiles);
    printf("input_bytes=%llu\n", input_bytes);
    printf("cpu=%d\n", cpu);
    printf("wall_s=%.4f\n", wall);
    printf("commit_s=%.4f\n", t1 - t_decoded);
    printf("yaml_parse_s=%.4f\n", parse_s);
    printf("cpu_s=%.4f\n", cpu_time);
    printf("objects_per_s=%.0f\n", obj_per_s);
    printf("rss_before_bytes=%llu\n", rss_before);
    printf("rss_after_bytes=%llu\n", rss_after);
    printf("rss_per_object_bytes=%.0f\n", per_obj_rss);
    printf("footprint_total_bytes=%llu\n", st.footprint);
    printf("footprint_per_object_bytes=%.0f\n", per_obj_fp);
    for (int k = CFG_KIND_NONE + 1; k < CFG_KIND_COUNT; k++)
        if (st.kind_objects[k] > 0)
            printf("footprint_per_object_bytes_%s=%.0f\n", cfg_kind_info((cfg_kind_t)k)->name,
                   (double)st.kind_footprint[k] / (double)st.kind_objects[k]);
    printf("peak_rss_kb=%ld\n", max_rss_kb());
    printf("store_published=%d\n", published);
    printf("target_wall_s=%.1f\n", TARGET_WALL_S);
    printf("target_rss_per_object_bytes=%.0f\n", TARGET_BYTES_PER_OBJECT);
    printf("meets_wall_target=%s\n", wall < TARGET_WALL_S ? "yes" : "no");
    printf("meets_rss_target=%s\n", per_obj_rss < TARGET_BYTES_PER_OBJECT ? "yes" : "no");

    int status = 0;
    if (st.objects == 0 || st.rejected > 0 || unreadable > 0 || st.put_failed > 0) {
        fprintf(stderr, "config_load: FAILED: %llu loaded, %llu rejected, %d unreadable files\n",
                st.objects, st.rejected, unreadable);
        status = 1;
    }
    if (n_vs != p.vs || n_dr != p.dr || n_svc != p.svc || n_all != expected) {
        fprintf(stderr,
                "config_load: FAILED: the store holds %zu VirtualService, %zu DestinationRule, "
                "%zu Service (%zu in all), expected %u, %u, %u\n",
                n_vs, n_dr, n_svc, n_all, p.vs, p.dr, p.svc);
        status = 1;
    }

    cfg_store_free(st.store);
    for (size_t i = 0; i < nlisted; i++)
        free(files[i]);
    free(files);
    if (p.keep)
        fprintf(stderr, "config_load: input kept in %s\n", dir);
    else if (remove_tree(dir) != 0)
        fprintf(stderr, "config_load: cannot remove %s\n", dir);
    return status;

fail_gen:
    if (!p.keep)
        remove_tree(dir);
    return 1;
}
