#include "testutil.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

static void collect(void *ud, cfg_object_t *obj, const cfg_diag_t *diag)
{
    tu_result_t *r = ud;
    r->ndocs++;
    if (obj != NULL) {
        if (r->nobjs < TU_MAX)
            r->objs[r->nobjs++] = obj;
        else
            cfg_object_unref(obj);
    } else if (diag->nerrors > 0) {
        r->nfailed++;
    }
    for (uint32_t i = 0; i < diag->nerrors && r->nerrors < TU_MAX; i++)
        r->errors[r->nerrors++] = strdup(diag->errors[i]);
    for (uint32_t i = 0; i < diag->nwarnings && r->nwarnings < TU_MAX; i++)
        r->warnings[r->nwarnings++] = strdup(diag->warnings[i]);
}

void tu_load(const char *text, const char *name, tu_result_t *r)
{
    memset(r, 0, sizeof(*r));
    cfg_load_opts_t o = {.file = name};
    cfg_load_buffer(text, strlen(text), DOC_FMT_AUTO, &o, collect, r);
}

void tu_load_file(const char *path, tu_result_t *r)
{
    memset(r, 0, sizeof(*r));
    if (cfg_load_file(path, NULL, collect, r) < 0)
        fail_msg("cannot read %s", path);
}

void tu_free(tu_result_t *r)
{
    for (int i = 0; i < r->nobjs; i++)
        cfg_object_unref(r->objs[i]);
    for (int i = 0; i < r->nerrors; i++)
        free(r->errors[i]);
    for (int i = 0; i < r->nwarnings; i++)
        free(r->warnings[i]);
    memset(r, 0, sizeof(*r));
}

bool tu_error_has(const tu_result_t *r, ...)
{
    for (int i = 0; i < r->nerrors; i++) {
        va_list ap;
        va_start(ap, r);
        bool all = true;
        for (const char *s = va_arg(ap, const char *); s != NULL; s = va_arg(ap, const char *))
            if (strstr(r->errors[i], s) == NULL)
                all = false;
        va_end(ap);
        if (all)
            return true;
    }
    tu_dump(r);
    return false;
}

void tu_dump(const tu_result_t *r)
{
    fprintf(stderr, "  %d documents, %d loaded, %d rejected\n", r->ndocs, r->nobjs, r->nfailed);
    for (int i = 0; i < r->nerrors; i++)
        fprintf(stderr, "  error: %s\n", r->errors[i]);
}

const char *tu_shared(const char *rel)
{
    static char buf[4][PATH_MAX];
    static int slot;
    char *out = buf[slot++ % 4];
    const char *base = getenv("MESH_SHARED");
    if (base != NULL)
        snprintf(out, PATH_MAX, "%s/testdata/%s", base, rel);
    else
        snprintf(out, PATH_MAX, "../shared/testdata/%s", rel);
    return out;
}

const cfg_object_t *tu_obj(const tu_result_t *r, cfg_kind_t kind)
{
    for (int i = 0; i < r->nobjs; i++)
        if (r->objs[i]->kind == kind)
            return r->objs[i];
    return NULL;
}

void tu_expect_rejected(const char *yaml, const char *s1, const char *s2)
{
    tu_result_t r;
    tu_load(yaml, "t.yaml", &r);
    if (r.nobjs != 0)
        fprintf(stderr, "  unexpectedly accepted:\n%s\n", yaml);
    assert_int_equal(r.nobjs, 0);
    assert_int_equal(r.nfailed, 1);
    assert_true(tu_error_has(&r, s1, s2, NULL));
    tu_free(&r);
}

void tu_expect_loads(const char *yaml)
{
    tu_result_t r;
    tu_load(yaml, "t.yaml", &r);
    TU_EXPECT_OK(&r);
    assert_int_equal(r.nobjs, 1);
    tu_free(&r);
}

void tu_load_stripped(const char *rel, tu_result_t *r)
{
    FILE *f = fopen(tu_shared(rel), "rb");
    if (f == NULL)
        fail_msg("cannot read %s", tu_shared(rel));
    char line[4096];
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "_err:", 5) == 0)
            continue;
        size_t n = strlen(line);
        if (len + n + 1 > cap) {
            cap = (cap + n) * 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        memcpy(buf + len, line, n);
        len += n;
    }
    buf[len] = '\0';
    fclose(f);
    const char *base = strrchr(rel, '/');
    tu_load(buf, base ? base + 1 : rel, r);
    free(buf);
}

typedef struct body {
    char *p;
    size_t n;
} body_t;

static size_t body_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    body_t *b = ud;
    char *np = realloc(b->p, b->n + size * nmemb + 1);
    if (np == NULL)
        return 0;
    b->p = np;
    memcpy(b->p + b->n, ptr, size * nmemb);
    b->n += size * nmemb;
    b->p[b->n] = 0;
    return size * nmemb;
}

char *tu_http_get(int port, const char *path, long *status)
{
    char url[512];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    CURL *c = curl_easy_init();
    assert_non_null(c);
    body_t b = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, body_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    curl_easy_cleanup(c);
    return b.p ? b.p : strdup("");
}
