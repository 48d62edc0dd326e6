/* Tests of the event loop and the work queue: timers fire in deadline order
 * and not when cancelled, fd readiness, posts from other threads, deferred
 * frees, and work-queue completions that come back on the loop's thread. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../common/loop.h"
#include "../../common/workq.h"

/* --- timers ---------------------------------------------------------------- */

typedef struct order {
    loop_t *loop;
    int seen[16];
    int n;
    int stop_after;
} order_t;

typedef struct tmark {
    order_t *o;
    int id;
} tmark_t;

static void on_mark(loop_timer_t *t, void *arg)
{
    (void)t;
    tmark_t *m = arg;
    m->o->seen[m->o->n++] = m->id;
    if (m->o->n == m->o->stop_after)
        loop_stop(m->o->loop);
}

static void test_timers_fire_in_deadline_order(void **state)
{
    (void)state;
    loop_t *l = loop_new();
    assert_non_null(l);
    order_t o = {.loop = l, .stop_after = 4};
    tmark_t m[5];
    loop_timer_t *t[5];
    const unsigned after[5] = {40, 10, 30, 20, 15};
    for (int i = 0; i < 5; i++) {
        m[i] = (tmark_t){&o, i};
        t[i] = loop_timer_new(l, on_mark, &m[i]);
        loop_timer_start(t[i], after[i], 0);
    }
    loop_timer_stop(t[4]); /* cancelled: never fires */
    assert_false(loop_timer_active(t[4]));
    assert_true(loop_timer_active(t[0]));
    uint64_t t0 = loop_clock_ms();
    assert_int_equal(loop_run(l), 0);
    uint64_t took = loop_clock_ms() - t0;
    assert_int_equal(o.n, 4);
    assert_int_equal(o.seen[0], 1);
    assert_int_equal(o.seen[1], 3);
    assert_int_equal(o.seen[2], 2);
    assert_int_equal(o.seen[3], 0);
    assert_true(took >= 39);
    assert_true(took < 2000);
    for (int i = 0; i < 5; i++)
        loop_timer_free(t[i]);
    loop_free(l);
}

typedef struct rearm {
    loop_t *loop;
    loop_timer_t *other;
    int fired;
    int other_fired;
} rearm_t;

static void on_repeat(loop_timer_t *t, void *arg)
{
    rearm_t *r = arg;
    if (++r->fired == 3) {
        loop_timer_stop(t);
        loop_stop(r->loop);
    }
}

static void on_other(loop_timer_t *t, void *arg)
{
    (void)t;
    rearm_t *r = arg;
    r->other_fired++;
}

static void test_repeat_and_rearm(void **state)
{
    (void)state;
    loop_t *l = loop_new();
    rearm_t r = {.loop = l};
    loop_timer_t *rep = loop_timer_new(l, on_repeat, &r);
    r.other = loop_timer_new(l, on_other, &r);
    loop_timer_start(r.other, 10, 0);
    loop_timer_start(r.other, 5000, 0); /* re-armed: moved far away */
    loop_timer_start(rep, 5, 5);
    uint64_t t0 = loop_clock_ms();
    loop_run(l);
    assert_int_equal(r.fired, 3);
    assert_int_equal(r.other_fired, 0);
    assert_true(loop_clock_ms() - t0 >= 14);
    assert_true(loop_timer_active(r.other));
    loop_timer_free(rep);
    loop_timer_free(r.other);
    loop_free(l);
}

/* --- fd readiness -------------------------------------------------------------- */

typedef struct pipe_state {
    loop_t *loop;
    char got[32];
    size_t len;
    int reads;
    bool writable;
} pipe_state_t;

static void on_readable(loop_io_t *io, int fd, unsigned events, void *arg)
{
    pipe_state_t *p = arg;
    assert_true(events & LOOP_READ);
    ssize_t n = read(fd, p->got + p->len, sizeof(p->got) - 1 - p->len);
    if (n > 0)
        p->len += (size_t)n;
    p->reads++;
    if (p->len >= 5) {
        loop_io_del(io); /* from its own callback */
        loop_stop(p->loop);
    }
}

static void on_writable(loop_io_t *io, int fd, unsigned events, void *arg)
{
    (void)fd;
    pipe_state_t *p = arg;
    if (events & LOOP_WRITE) {
        p->writable = true;
        loop_io_modify(io, 0); /* level-triggered: stop asking */
    }
}

static void *late_writer(void *arg)
{
    int fd = *(int *)arg;
    usleep(20000);
    assert_int_equal(write(fd, "hel", 3), 3);
    usleep(10000);
    assert_int_equal(write(fd, "lo", 2), 2);
    return NULL;
}

static void test_fd_readiness(void **state)
{
    (void)state;
    loop_t *l = loop_new();
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pipe_state_t p = {.loop = l};
    loop_io_t *r = loop_io_add(l, fds[0], LOOP_READ, on_readable, &p);
    loop_io_t *w = loop_io_add(l, fds[1], LOOP_WRITE, on_writable, &p);
    assert_non_null(r);
    assert_non_null(w);
    assert_int_equal(loop_io_events(w), LOOP_WRITE);
    pthread_t th;
    pthread_create(&th, NULL, late_writer, &fds[1]);
    loop_run(l);
    pthread_join(th, NULL);
    p.got[p.len] = 0;
    assert_string_equal(p.got, "hello");
    assert_true(p.writable);
    assert_true(p.reads >= 1);
    assert_int_equal(loop_io_events(w), 0);
    /* A bad fd is refused. */
    assert_null(loop_io_add(l, 12345, LOOP_READ, on_readable, &p));
    loop_io_del(w);
    loop_free(l);
    close(fds[0]);
    close(fds[1]);
}

/* The epoll mask armed for fd in this process's loop (its epoll fd found
 * in /proc/self/fd), or -1 when fd is not watched. */
static long armed_mask(int fd)
{
    char path[64], target[64], line[256];
    for (int e = 0; e < 1024; e++) {
        snprintf(path, sizeof(path), "/proc/self/fd/%d", e);
        ssize_t n = readlink(path, target, sizeof(target) - 1);
        if (n <= 0)
            continue;
        target[n] = 0;
        if (strcmp(target, "anon_inode:[eventpoll]") != 0)
            continue;
        snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", e);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        long mask = -1;
        int tfd;
        unsigned m;
        while (fgets(line, sizeof(line), f))
            if (sscanf(line, "tfd: %d events: %x", &tfd, &m) == 2 && tfd == fd)
                mask = (long)m;
        fclose(f);
        if (mask >= 0)
            return mask;
    }
    return -1;
}

static void on_count(loop_io_t *io, int fd, unsigned ev, void *arg)
{
    (void)io;
    (void)fd;
    int *calls = arg;
    if (ev & LOOP_READ)
        (*calls)++;
}

/* Dropping READ keeps it armed until it fires unwanted; the callback never
 * sees it, and asking for READ again delivers what waited. */
static void test_dropped_read_is_disarmed_lazily(void **state)
{
    (void)state;
    loop_t *l = loop_new();
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    int calls = 0;
    loop_io_t *r = loop_io_add(l, fds[0], LOOP_READ, on_count, &calls);
    assert_non_null(r);
    assert_int_equal(loop_io_modify(r, 0), 0);
    assert_int_equal(loop_io_events(r), 0);
    assert_true(armed_mask(fds[0]) & 0x1);  /* still EPOLLIN: no system call */
    assert_int_equal(loop_io_modify(r, LOOP_READ), 0);
    assert_int_equal(loop_io_modify(r, 0), 0);
    assert_int_equal(write(fds[1], "x", 1), 1);
    loop_run_once(l, 100);
    assert_int_equal(calls, 0);              /* unwanted: not delivered */
    assert_false(armed_mask(fds[0]) & 0x1);  /* and disarmed */
    assert_int_equal(loop_run_once(l, 0), 0); /* no busy loop on the waiting byte */
    assert_int_equal(loop_io_modify(r, LOOP_READ), 0);
    assert_true(armed_mask(fds[0]) & 0x1);
    loop_run_once(l, 100);
    assert_int_equal(calls, 1);
    /* adding WRITE while READ waits disarmed re-arms exactly what is asked */
    assert_int_equal(loop_io_modify(r, 0), 0);
    assert_int_equal(loop_io_modify(r, LOOP_WRITE), 0);
    assert_false(armed_mask(fds[0]) & 0x1);
    loop_io_del(r);
    loop_free(l);
    close(fds[0]);
    close(fds[1]);
}

/* --- posts from other threads ----------------------------------------------------------- */

enum { POSTERS = 4, POSTS = 2000 };

typedef struct post_state {
    loop_t *loop;
    int count;
    int last[POSTERS];
    bool in_order;
    bool on_loop_thread;
} post_state_t;

typedef struct post_msg {
    post_state_t *st;
    int thread, seq;
} post_msg_t;

static void on_post(void *arg)
{
    post_msg_t *m = arg;
    post_state_t *st = m->st;
    if (!loop_in_thread(st->loop))
        st->on_loop_thread = false;
    if (m->seq != st->last[m->thread] + 1)
        st->in_order = false;
    st->last[m->thread] = m->seq;
    if (++st->count == POSTERS * POSTS)
        loop_stop(st->loop);
    free(m);
}

typedef struct poster {
    post_state_t *st;
    int id;
} poster_t;

static void *post_thread(void *arg)
{
    poster_t *p = arg;
    for (int i = 0; i < POSTS; i++) {
        post_msg_t *m = malloc(sizeof(*m));
        *m = (post_msg_t){p->st, p->id, i};
        assert_int_equal(loop_post(p->st->loop, on_post, m), 0);
    }
    return NULL;
}

static void test_post_from_threads(void **state)
{
    (void)state;
    loop_t *l = loop_new();
    post_state_t st = {.loop = l, .in_order = true, .on_loop_thread = true};
    for (int i = 0; i < POSTERS; i++)
        st.last[i] = -1;
    pthread_t th[POSTERS];
    poster_t ps[POSTERS];
    for (int i = 0; i < POSTERS; i++) {
        ps[i] = (poster_t){&st, i};
        pthread_create(&th[i], NULL, post_thread, &ps[i]);
    }
    assert_false(loop_in_thread(l));
    loop_run(l);
    for (int i = 0; i < POSTERS; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(st.count, POSTERS * POSTS);
    assert_true(st.in_order);
    assert_true(st.on_loop_thread);
    loop_free(l);
}

static void *stopper(void *arg)
{
    usleep(20000);
    loop_stop(arg);
    return NULL;
}

static void test_stop_from_another_thread(void **state)
{
    (void)state;
    loop_t *l = loop_new();
    pthread_t th;
    pthread_create(&th, NULL, stopper, l);
    uint64_t t0 = loop_clock_ms();
    assert_int_equal(loop_run(l), 0); /* nothing to do: returns only when stopped */
    assert_true(loop_clock_ms() - t0 >= 15);
    pthread_join(th, NULL);
    loop_free(l);
}

/* --- deferred frees ------------------------------------------------------------------ */

typedef struct victim {
    loop_t *loop;
    int *freed;
    bool closing;
    loop_timer_t *t;
} victim_t;

static int g_freed_during_callback;

static void victim_free(void *arg)
{
    victim_t *v = arg;
    (*v->freed)++;
    loop_timer_free(v->t);
    free(v);
}

static void on_victim(loop_timer_t *t, void *arg)
{
    (void)t;
    victim_t *v = arg;
    v->closing = true;
    loop_defer(v->loop, victim_free, v);
    /* Still alive for the rest of this callback. */
    g_freed_during_callback += *v->freed;
    assert_true(v->closing);
    loop_stop(v->loop);
}

static void test_deferred_free(void **state)
{
    (void)state;
    loop_t *l = loop_new();
    int freed = 0;
    victim_t *v = calloc(1, sizeof(*v));
    v->loop = l;
    v->freed = &freed;
    v->t = loop_timer_new(l, on_victim, v);
    loop_timer_start(v->t, 1, 0);
    g_freed_during_callback = 0;
    loop_run(l);
    assert_int_equal(g_freed_during_callback, 0);
    assert_int_equal(freed, 1); /* freed at the end of the round */
    loop_free(l);
}

/* --- work queue ------------------------------------------------------------------------ */

enum { JOBS = 50 };

typedef struct job_state {
    loop_t *loop;
    pthread_t loop_thread;
    int done;
    int wrong_thread;
    int results[JOBS];
} job_state_t;

typedef struct job {
    job_state_t *st;
    int in, out;
    pthread_t worker;
} job_t;

static void job_work(void *arg)
{
    job_t *j = arg;
    usleep(1000); /* blocking work */
    j->worker = pthread_self();
    j->out = j->in * j->in;
}

static void job_done(void *arg)
{
    job_t *j = arg;
    job_state_t *st = j->st;
    if (!pthread_equal(pthread_self(), st->loop_thread) ||
        pthread_equal(j->worker, st->loop_thread))
        st->wrong_thread++;
    st->results[j->in] = j->out;
    if (++st->done == JOBS)
        loop_stop(st->loop);
    free(j);
}

static void test_workq_completes_on_loop(void **state)
{
    (void)state;
    loop_t *l = loop_new();
    workq_t *q = workq_new(3);
    assert_non_null(q);
    job_state_t st = {.loop = l, .loop_thread = pthread_self()};
    for (int i = 0; i < JOBS; i++) {
        job_t *j = calloc(1, sizeof(*j));
        j->st = &st;
        j->in = i;
        assert_int_equal(workq_submit(q, l, job_work, job_done, j), 0);
    }
    loop_run(l);
    assert_int_equal(st.done, JOBS);
    assert_int_equal(st.wrong_thread, 0);
    for (int i = 0; i < JOBS; i++)
        assert_int_equal(st.results[i], i * i);
    assert_int_equal(workq_pending(q), 0);
    workq_free(q);
    loop_free(l);
}

static void count_work(void *arg)
{
    (*(int *)arg)++;
}

static void test_workq_free_drains(void **state)
{
    (void)state;
    workq_t *q = workq_new(1);
    int n = 0;
    for (int i = 0; i < 20; i++)
        assert_int_equal(workq_submit(q, NULL, count_work, NULL, &n), 0);
    workq_free(q); /* runs what is queued before returning */
    assert_int_equal(n, 20);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timers_fire_in_deadline_order),
        cmocka_unit_test(test_repeat_and_rearm),
        cmocka_unit_test(test_fd_readiness),
        cmocka_unit_test(test_dropped_read_is_disarmed_lazily),
        cmocka_unit_test(test_post_from_threads),
        cmocka_unit_test(test_stop_from_another_thread),
        cmocka_unit_test(test_deferred_free),
        cmocka_unit_test(test_workq_completes_on_loop),
        cmocka_unit_test(test_workq_free_drains),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
