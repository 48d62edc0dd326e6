/*
 * meshctl proxy-status: the sync state of every connected proxy, read from
 * meshd's /debug/syncz, as a table in the manner of istioctl proxy-status:
 * per type SYNCED (the latest response was ACKed), NOT SENT (nothing sent
 * yet), STALE (sent, not ACKed yet) or STALE (NACKed) (the proxy rejected it
 * and keeps its previous config).
 */
#include <curl/curl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int meshctl_proxy_status_render(const char *syncz_json, FILE *out);

typedef struct ps_body {
    char *p;
    size_t n;
} ps_body_t;

static size_t ps_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    ps_body_t *b = ud;
    size_t add = size * nmemb;
    char *np = realloc(b->p, b->n + add + 1);
    if (np == NULL)
        return 0;
    b->p = np;
    memcpy(b->p + b->n, ptr, add);
    b->n += add;
    b->p[b->n] = 0;
    return add;
}

static const char *field(json_object *o, const char *key)
{
    json_object *v;
    if (o == NULL || !json_object_object_get_ex(o, key, &v))
        return "";
    const char *s = json_object_get_string(v);
    return s ? s : "";
}

static const char *sync_state(json_object *proxy, const char *type)
{
    json_object *t;
    if (!json_object_object_get_ex(proxy, type, &t))
        return "NOT SENT";
    const char *sent = field(t, "sent_nonce");
    if (*sent == 0)
        return "NOT SENT";
    if (strcmp(sent, field(t, "acked_nonce")) == 0)
        return "SYNCED";
    json_object *nack;
    if (json_object_object_get_ex(t, "nack", &nack))
        return "STALE (NACKed)";
    return "STALE";
}

static int by_name(const void *a, const void *b)
{
    json_object *x = *(json_object *const *)a, *y = *(json_object *const *)b;
    return strcmp(field(x, "name"), field(y, "name"));
}

/* Prints the table for a /debug/syncz body. Returns 0, or 1 when the body is
 * not the expected JSON. */
int meshctl_proxy_status_render(const char *syncz_json, FILE *out)
{
    json_object *arr = json_tokener_parse(syncz_json);
    if (arr == NULL || !json_object_is_type(arr, json_type_array)) {
        fprintf(stderr, "meshctl proxy-status: /debug/syncz: not a JSON array\n");
        json_object_put(arr);
        return 1;
    }
    size_t n = json_object_array_length(arr);
    json_object **v = calloc(n ? n : 1, sizeof(*v));
    if (v == NULL) {
        json_object_put(arr);
        return 1;
    }
    int w = 4;
    for (size_t i = 0; i < n; i++) {
        v[i] = json_object_array_get_idx(arr, i);
        int l = (int)strlen(field(v[i], "name"));
        if (l > w)
            w = l;
    }
    qsort(v, n, sizeof(*v), by_name);
    fprintf(out, "%-*s   %-16s %-16s %-16s %-16s %s\n", w, "NAME", "CDS", "LDS", "EDS", "RDS",
            "VERSION");
    for (size_t i = 0; i < n; i++) {
        const char *ver = field(v[i], "istio_version");
        fprintf(out, "%-*s   %-16s %-16s %-16s %-16s %s\n", w, field(v[i], "name"),
                sync_state(v[i], "cds"), sync_state(v[i], "lds"), sync_state(v[i], "eds"),
                sync_state(v[i], "rds"), *ver ? ver : "-");
    }
    free(v);
    json_object_put(arr);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: meshctl proxy-status [--debug-addr HOST:PORT]\n"
               "  the xDS sync state of every proxy connected to meshd\n"
               "  --debug-addr  meshd's debug server (default 127.0.0.1:8080)\n");
}

int meshctl_proxy_status(int argc, char **argv)
{
    const char *addr = "127.0.0.1:8080";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--debug-addr") == 0 && i + 1 < argc) {
            addr = argv[++i];
        } else if (strncmp(argv[i], "--debug-addr=", 13) == 0) {
            addr = argv[i] + 13;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "meshctl proxy-status: unknown argument %s\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    char url[512];
    snprintf(url, sizeof(url), "http://%s/debug/syncz", addr);
    CURL *c = curl_easy_init();
    if (c == NULL)
        return 1;
    ps_body_t b = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, ps_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    int ret = 1;
    if (rc != CURLE_OK)
        fprintf(stderr, "meshctl proxy-status: %s: %s\n", url, curl_easy_strerror(rc));
    else if (status != 200)
        fprintf(stderr, "meshctl proxy-status: %s: HTTP %ld\n", url, status);
    else
        ret = meshctl_proxy_status_render(b.p ? b.p : "", stdout);
    free(b.p);
    return ret;
}
