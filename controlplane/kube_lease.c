/*
 * Leader election on a coordination.k8s.io/v1 Lease, with the semantics of
 * Kubernetes' own controllers: a candidate takes the lease when it is free or
 * when its holder has not renewed it for leaseDurationSeconds as observed on
 * the candidate's own clock; every write carries the resourceVersion that was
 * read, so two candidates can never both win. The leader renews every retry
 * period and steps down when it cannot renew within the renew deadline or
 * sees another holder. A clean stop releases the lease so another candidate
 * takes over at its next try.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "../common/log.h"
#include "kube_internal.h"

struct kube_leader {
    kube_client_t *c;
    char *ns, *name, *identity;
    int lease_s;
    int64_t lease_ms, renew_ms, retry_ms;
    void (*on_started)(void *);
    void (*on_stopped)(void *);
    void *ud;

    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    bool leading;
    char holder[256];

    /* election state (election thread only) */
    char observed[512];  /* holder|renewTime|transitions last seen */
    int64_t observed_at; /* monotonic ms when `observed` changed */
    int observed_lease_s;
    unsigned int seed;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void micro_time(char *buf, size_t len)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char base[32];
    strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, len, "%s.%06ldZ", base, (long)tv.tv_usec);
}

static void set_holder(kube_leader_t *l, const char *h)
{
    pthread_mutex_lock(&l->mu);
    snprintf(l->holder, sizeof(l->holder), "%s", h);
    pthread_mutex_unlock(&l->mu);
}

static void lease_path(kube_leader_t *l, const char *name, char *buf, size_t len)
{
    kube_path(l->c, "coordination.k8s.io", "v1", "leases", l->ns, name, NULL, buf, len);
}

static void fill_spec(kube_leader_t *l, struct json_object *spec, const char *acquire,
                      int transitions, const char *holder, int lease_s)
{
    char now[40];
    micro_time(now, sizeof(now));
    json_object_object_add(spec, "holderIdentity", json_object_new_string(holder));
    json_object_object_add(spec, "leaseDurationSeconds", json_object_new_int(lease_s));
    json_object_object_add(spec, "acquireTime",
                           json_object_new_string(acquire != NULL ? acquire : now));
    json_object_object_add(spec, "renewTime", json_object_new_string(now));
    json_object_object_add(spec, "leaseTransitions", json_object_new_int(transitions));
    (void)l;
}

typedef enum { TRY_FAILED, TRY_HELD, TRY_OK } try_t;

/* One round: create, take over or renew the lease. */
static try_t try_acquire_or_renew(kube_leader_t *l)
{
    char path[600], coll[600], e[600];
    lease_path(l, l->name, path, sizeof(path));
    kube_resp_t r;
    try_t res = TRY_FAILED;
    struct json_object *obj = NULL;
    if (kube_request(l->c, "GET", path, NULL, NULL, &r) != 0) {
        log_debug("kube: lease %s/%s: %s", l->ns, l->name, r.err);
        return TRY_FAILED;
    }
    if (r.status == 404) {
        kube_resp_free(&r);
        obj = json_object_new_object();
        json_object_object_add(obj, "apiVersion", json_object_new_string("coordination.k8s.io/v1"));
        json_object_object_add(obj, "kind", json_object_new_string("Lease"));
        struct json_object *md = kube_json_obj(obj, "metadata");
        json_object_object_add(md, "name", json_object_new_string(l->name));
        json_object_object_add(md, "namespace", json_object_new_string(l->ns));
        fill_spec(l, kube_json_obj(obj, "spec"), NULL, 0, l->identity, l->lease_s);
        lease_path(l, NULL, coll, sizeof(coll));
        if (kube_request(l->c, "POST", coll, json_object_to_json_string(obj), "application/json",
                         &r) != 0) {
            log_debug("kube: lease %s/%s: %s", l->ns, l->name, r.err);
            goto out;
        }
        if (r.status == 201 || r.status == 200) {
            res = TRY_OK;
            set_holder(l, l->identity);
        } else if (r.status != 409) {
            kube_fail(&r, "create", coll, e, sizeof(e));
            log_warn("kube: leader election: %s", e);
        }
        kube_resp_free(&r);
        goto out;
    }
    if (r.status != 200) {
        kube_fail(&r, "get", path, e, sizeof(e));
        log_warn("kube: leader election: %s", e);
        kube_resp_free(&r);
        goto out;
    }
    obj = kube_resp_json(&r);
    kube_resp_free(&r);
    struct json_object *spec = obj != NULL ? kube_json_obj(obj, "spec") : NULL;
    if (spec == NULL)
        goto out;
    /* copies: fill_spec replaces these fields */
    char holder[256], renew[64], acquire[64];
    const char *s_holder = kube_json_str(spec, "holderIdentity");
    const char *s_renew = kube_json_str(spec, "renewTime");
    const char *s_acquire = kube_json_str(spec, "acquireTime");
    snprintf(holder, sizeof(holder), "%s", s_holder != NULL ? s_holder : "");
    snprintf(renew, sizeof(renew), "%s", s_renew != NULL ? s_renew : "");
    snprintf(acquire, sizeof(acquire), "%s", s_acquire != NULL ? s_acquire : "");
    struct json_object *jt = kube_json_path(spec, "leaseTransitions", NULL);
    struct json_object *jd = kube_json_path(spec, "leaseDurationSeconds", NULL);
    int transitions = jt != NULL ? json_object_get_int(jt) : 0;
    int dur = jd != NULL ? json_object_get_int(jd) : l->lease_s;
    char key[512];
    snprintf(key, sizeof(key), "%s|%s|%d", holder, renew, transitions);
    int64_t now = mono_ms();
    if (strcmp(key, l->observed) != 0) {
        snprintf(l->observed, sizeof(l->observed), "%s", key);
        l->observed_at = now;
        l->observed_lease_s = dur;
    }
    set_holder(l, holder);
    bool mine = strcmp(holder, l->identity) == 0;
    if (holder[0] != '\0' && !mine && l->observed_at + (int64_t)l->observed_lease_s * 1000 > now) {
        res = TRY_HELD;
        goto out;
    }
    fill_spec(l, spec, mine && acquire[0] ? acquire : NULL, mine ? transitions : transitions + 1,
              l->identity, l->lease_s);
    if (kube_request(l->c, "PUT", path, json_object_to_json_string(obj), "application/json", &r) !=
        0) {
        log_debug("kube: lease %s/%s: %s", l->ns, l->name, r.err);
        goto out;
    }
    if (r.status == 200) {
        res = TRY_OK;
        if (!mine)
            log_info("kube: %s took over lease %s/%s from %s", l->identity, l->ns, l->name,
                     holder[0] ? holder : "(released)");
        set_holder(l, l->identity);
    } else if (r.status == 409) {
        atomic_fetch_add(&l->c->conflicts, 1);
        log_debug("kube: lease %s/%s changed under us", l->ns, l->name);
    } else {
        kube_fail(&r, "update", path, e, sizeof(e));
        log_warn("kube: leader election: %s", e);
    }
    kube_resp_free(&r);
out:
    json_object_put(obj);
    return res;
}

/* Gives the lease up if we still hold it. */
static void release(kube_leader_t *l)
{
    char path[600];
    lease_path(l, l->name, path, sizeof(path));
    kube_resp_t r;
    if (kube_request(l->c, "GET", path, NULL, NULL, &r) != 0 || r.status != 200) {
        kube_resp_free(&r);
        return;
    }
    struct json_object *obj = kube_resp_json(&r);
    kube_resp_free(&r);
    struct json_object *spec = obj != NULL ? kube_json_obj(obj, "spec") : NULL;
    const char *holder = kube_json_str(spec, "holderIdentity");
    if (spec != NULL && holder != NULL && strcmp(holder, l->identity) == 0) {
        struct json_object *jt = kube_json_path(spec, "leaseTransitions", NULL);
        fill_spec(l, spec, NULL, jt != NULL ? json_object_get_int(jt) : 0, "", 1);
        if (kube_request(l->c, "PUT", path, json_object_to_json_string(obj), "application/json",
                         &r) == 0 &&
            r.status == 200) {
            log_info("kube: %s released lease %s/%s", l->identity, l->ns, l->name);
            set_holder(l, "");
        }
        kube_resp_free(&r);
    }
    json_object_put(obj);
}

/* Sleeps ms unless stopped; true when stopping. */
static bool wait_ms(kube_leader_t *l, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&l->mu);
    while (!l->stop && pthread_cond_timedwait(&l->cv, &l->mu, &ts) == 0)
        ;
    bool s = l->stop;
    pthread_mutex_unlock(&l->mu);
    return s;
}

static void set_leading(kube_leader_t *l, bool v)
{
    pthread_mutex_lock(&l->mu);
    l->leading = v;
    pthread_mutex_unlock(&l->mu);
    if (v) {
        log_info("kube: %s is now the leader (lease %s/%s)", l->identity, l->ns, l->name);
        if (l->on_started != NULL)
            l->on_started(l->ud);
    } else {
        log_info("kube: %s stopped leading (lease %s/%s)", l->identity, l->ns, l->name);
        if (l->on_stopped != NULL)
            l->on_stopped(l->ud);
    }
}

static void *leader_main(void *arg)
{
    kube_leader_t *l = arg;
    bool leading = false;
    int64_t last_renew = 0;
    for (;;) {
        try_t t = try_acquire_or_renew(l);
        int64_t now = mono_ms();
        if (t == TRY_OK) {
            last_renew = now;
            if (!leading) {
                leading = true;
                set_leading(l, true);
            }
        } else if (leading && (t == TRY_HELD || now - last_renew >= l->renew_ms)) {
            log_warn("kube: %s lost lease %s/%s (%s)", l->identity, l->ns, l->name,
                     t == TRY_HELD ? "another candidate holds it"
                                   : "could not renew within the deadline");
            leading = false;
            set_leading(l, false);
        }
        int64_t delay = l->retry_ms;
        if (!leading) /* spread the candidates out, as client-go does (factor 1.2) */
            delay += (int64_t)(rand_r(&l->seed) % 1000) * l->retry_ms * 12 / 10000;
        if (wait_ms(l, delay))
            break;
    }
    if (leading) {
        release(l);
        set_leading(l, false);
    }
    return NULL;
}

kube_leader_t *kube_leader_start(kube_client_t *c, const kube_leader_opts_t *o, char *err,
                                 size_t errlen)
{
    if (o->ns == NULL || o->ns[0] == '\0' || o->name == NULL || o->name[0] == '\0' ||
        o->identity == NULL || o->identity[0] == '\0') {
        snprintf(err, errlen, "leader election: namespace, name and identity are required");
        return NULL;
    }
    if (o->lease_duration_ms < 1000 || o->renew_deadline_ms <= 0 || o->retry_period_ms <= 0 ||
        o->renew_deadline_ms >= o->lease_duration_ms ||
        o->retry_period_ms * 12 / 10 >= o->renew_deadline_ms) {
        snprintf(err, errlen,
                 "leader election %s/%s: need lease duration (%d ms, >= 1000) > renew deadline (%d "
                 "ms) > 1.2 x "
                 "retry period (%d ms)",
                 o->ns, o->name, o->lease_duration_ms, o->renew_deadline_ms, o->retry_period_ms);
        return NULL;
    }
    kube_leader_t *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    l->c = c;
    l->ns = strdup(o->ns);
    l->name = strdup(o->name);
    l->identity = strdup(o->identity);
    l->lease_s = (o->lease_duration_ms + 999) / 1000;
    l->lease_ms = o->lease_duration_ms;
    l->renew_ms = o->renew_deadline_ms;
    l->retry_ms = o->retry_period_ms;
    l->on_started = o->on_started;
    l->on_stopped = o->on_stopped;
    l->ud = o->ud;
    l->seed = (unsigned int)mono_ms() ^ (unsigned int)(uintptr_t)l;
    pthread_mutex_init(&l->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&l->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (l->ns == NULL || l->name == NULL || l->identity == NULL ||
        pthread_create(&l->thread, NULL, leader_main, l) != 0) {
        snprintf(err, errlen, "leader election %s/%s: cannot start its thread", o->ns, o->name);
        pthread_cond_destroy(&l->cv);
        pthread_mutex_destroy(&l->mu);
        free(l->ns);
        free(l->name);
        free(l->identity);
        free(l);
        return NULL;
    }
    return l;
}

bool kube_leader_is_leader(kube_leader_t *l)
{
    pthread_mutex_lock(&l->mu);
    bool v = l->leading;
    pthread_mutex_unlock(&l->mu);
    return v;
}

const char *kube_leader_holder(kube_leader_t *l, char *buf, size_t len)
{
    pthread_mutex_lock(&l->mu);
    snprintf(buf, len, "%s", l->holder);
    pthread_mutex_unlock(&l->mu);
    return buf;
}

void kube_leader_stop(kube_leader_t *l)
{
    if (l == NULL)
        return;
    pthread_mutex_lock(&l->mu);
    l->stop = true;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->thread, NULL);
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    free(l->ns);
    free(l->name);
    free(l->identity);
    free(l);
}
