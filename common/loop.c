/*
 * loop: epoll event loop, min-heap timers, eventfd cross-thread queue and
 * deferred frees. See loop.h.
 */
#include "loop.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "arena.h"

struct loop_io {
    loop_t *loop;
    int fd;
    unsigned events; /* interest, LOOP_EDGE included */
    unsigned armed;  /* what epoll has: events, or events plus a READ kept on */
    loop_io_cb cb;
    void *arg;
    bool dead;
    loop_io_t *prev, *next; /* the loop's list of live watchers */
};

struct loop_timer {
    loop_t *loop;
    loop_timer_cb cb;
    void *arg;
    uint64_t deadline;
    uint64_t repeat;
    size_t heap_idx; /* SIZE_MAX when not in the heap */
    bool firing;     /* expired this round, callback not yet run */
    bool dead;
    loop_timer_t *prev, *next;
};

typedef struct post_node {
    loop_fn fn;
    void *arg;
    struct post_node *next;
} post_node_t;

typedef struct defer_ent {
    loop_fn fn;
    void *arg;
} defer_ent_t;

struct loop {
    int epfd;
    int evfd;
    uint64_t now;
    atomic_bool stop;
    atomic_bool freeing;
    pthread_t thread;
    atomic_bool running;

    loop_io_t *ios;  /* live watchers */
    loop_io_t *evio; /* the eventfd watcher */

    loop_timer_t **heap;
    size_t nheap, capheap;
    loop_timer_t *timers; /* every timer not yet freed */
    loop_timer_t **expired;
    size_t capexpired;

    defer_ent_t *defers;
    size_t ndefers, capdefers;

    pthread_mutex_t post_mu;
    post_node_t *post_head, *post_tail;
    atomic_bool post_signalled;
};

uint64_t loop_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t loop_now(const loop_t *l)
{
    return l->now;
}

bool loop_in_thread(const loop_t *l)
{
    return atomic_load(&l->running) && pthread_equal(l->thread, pthread_self());
}

/* --- deferred work -------------------------------------------------------- */

void loop_defer(loop_t *l, loop_fn fn, void *arg)
{
    if (l->ndefers == l->capdefers) {
        l->capdefers = l->capdefers ? l->capdefers * 2 : 32;
        l->defers = mesh_xrealloc(l->defers, l->capdefers * sizeof(*l->defers));
    }
    l->defers[l->ndefers++] = (defer_ent_t){fn, arg};
}

/* Runs deferred functions in FIFO order, including any they defer. */
static void run_defers(loop_t *l)
{
    for (size_t i = 0; i < l->ndefers; i++) {
        defer_ent_t d = l->defers[i];
        d.fn(d.arg);
    }
    l->ndefers = 0;
}

/* --- timers (binary min-heap on deadline) --------------------------------- */

static void heap_set(loop_t *l, size_t i, loop_timer_t *t)
{
    l->heap[i] = t;
    t->heap_idx = i;
}

static void heap_up(loop_t *l, size_t i)
{
    loop_timer_t *t = l->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (l->heap[p]->deadline <= t->deadline)
            break;
        heap_set(l, i, l->heap[p]);
        i = p;
    }
    heap_set(l, i, t);
}

static void heap_down(loop_t *l, size_t i)
{
    loop_timer_t *t = l->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= l->nheap)
            break;
        if (c + 1 < l->nheap && l->heap[c + 1]->deadline < l->heap[c]->deadline)
            c++;
        if (t->deadline <= l->heap[c]->deadline)
            break;
        heap_set(l, i, l->heap[c]);
        i = c;
    }
    heap_set(l, i, t);
}

static void heap_remove(loop_t *l, loop_timer_t *t)
{
    size_t i = t->heap_idx;
    if (i == SIZE_MAX)
        return;
    t->heap_idx = SIZE_MAX;
    l->nheap--;
    if (i == l->nheap)
        return;
    heap_set(l, i, l->heap[l->nheap]);
    heap_up(l, i);
    heap_down(l, l->heap[i]->heap_idx);
}

static void heap_push(loop_t *l, loop_timer_t *t)
{
    if (l->nheap == l->capheap) {
        l->capheap = l->capheap ? l->capheap * 2 : 16;
        l->heap = mesh_xrealloc(l->heap, l->capheap * sizeof(*l->heap));
    }
    heap_set(l, l->nheap++, t);
    heap_up(l, t->heap_idx);
}

loop_timer_t *loop_timer_new(loop_t *l, loop_timer_cb cb, void *arg)
{
    loop_timer_t *t = mesh_xcalloc(1, sizeof(*t));
    t->loop = l;
    t->cb = cb;
    t->arg = arg;
    t->heap_idx = SIZE_MAX;
    t->next = l->timers;
    if (l->timers)
        l->timers->prev = t;
    l->timers = t;
    return t;
}

void loop_timer_start(loop_timer_t *t, uint64_t after_ms, uint64_t repeat_ms)
{
    loop_t *l = t->loop;
    if (t->dead)
        return;
    heap_remove(l, t);
    t->firing = false;
    t->repeat = repeat_ms;
    /* The cached clock may lag a long callback; read the real one. */
    l->now = loop_clock_ms();
    t->deadline = l->now + after_ms;
    heap_push(l, t);
}

void loop_timer_stop(loop_timer_t *t)
{
    heap_remove(t->loop, t);
    t->firing = false;
}

bool loop_timer_active(const loop_timer_t *t)
{
    return t->heap_idx != SIZE_MAX || t->firing;
}

static void timer_release(void *arg)
{
    loop_timer_t *t = arg;
    loop_t *l = t->loop;
    if (t->prev)
        t->prev->next = t->next;
    else
        l->timers = t->next;
    if (t->next)
        t->next->prev = t->prev;
    free(t);
}

void loop_timer_free(loop_timer_t *t)
{
    if (!t || t->dead)
        return;
    loop_timer_stop(t);
    t->dead = true;
    loop_defer(t->loop, timer_release, t);
}

/* Fires every timer due at l->now; timers re-armed for "now" by their own
 * callbacks wait for the next round. */
static int run_timers(loop_t *l)
{
    size_t n = 0;
    while (l->nheap && l->heap[0]->deadline <= l->now) {
        loop_timer_t *t = l->heap[0];
        heap_remove(l, t);
        if (t->repeat) {
            t->deadline = l->now + t->repeat;
            heap_push(l, t);
        }
        if (n == l->capexpired) {
            l->capexpired = l->capexpired ? l->capexpired * 2 : 16;
            l->expired = mesh_xrealloc(l->expired, l->capexpired * sizeof(*l->expired));
        }
        t->firing = true;
        l->expired[n++] = t;
    }
    int fired = 0;
    for (size_t i = 0; i < n; i++) {
        loop_timer_t *t = l->expired[i];
        if (!t->firing || t->dead)
            continue;
        t->firing = false;
        t->cb(t, t->arg);
        fired++;
    }
    return fired;
}

/* --- fd watchers ----------------------------------------------------------- */

static uint32_t to_epoll(unsigned ev)
{
    uint32_t e = 0;
    if (ev & LOOP_READ)
        e |= EPOLLIN | EPOLLRDHUP;
    if (ev & LOOP_WRITE)
        e |= EPOLLOUT;
    if (ev & LOOP_EDGE)
        e |= EPOLLET;
    return e;
}

loop_io_t *loop_io_add(loop_t *l, int fd, unsigned events, loop_io_cb cb, void *arg)
{
    loop_io_t *io = mesh_xcalloc(1, sizeof(*io));
    io->loop = l;
    io->fd = fd;
    io->events = events;
    io->armed = events;
    io->cb = cb;
    io->arg = arg;
    struct epoll_event ev = {.events = to_epoll(events), .data.ptr = io};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        int e = errno;
        free(io);
        errno = e;
        return NULL;
    }
    io->next = l->ios;
    if (l->ios)
        l->ios->prev = io;
    l->ios = io;
    return io;
}

/* Dropping READ from a level-triggered watcher costs no system call: the
 * READ stays armed until it fires while unwanted (dispatch then disarms it).
 * A request/response connection stops reading while its response is on the
 * way and reads again afterwards; the peer rarely sends in between, so both
 * changes usually go without epoll_ctl. */
static int io_arm(loop_io_t *io, unsigned events)
{
    if (events == io->armed)
        return 0;
    struct epoll_event ev = {.events = to_epoll(events), .data.ptr = io};
    if (epoll_ctl(io->loop->epfd, EPOLL_CTL_MOD, io->fd, &ev) < 0)
        return -1;
    io->armed = events;
    return 0;
}

int loop_io_modify(loop_io_t *io, unsigned events)
{
    if (io->dead)
        return -1;
    events |= io->events & LOOP_EDGE;
    if (events == io->events)
        return 0;
    bool lazy = !(events & LOOP_EDGE) && (io->armed & LOOP_READ) && (events | LOOP_READ) == io->armed;
    if (!lazy && io_arm(io, events) < 0)
        return -1;
    io->events = events;
    return 0;
}

unsigned loop_io_events(const loop_io_t *io)
{
    return io->events;
}

static void io_release(void *arg)
{
    loop_io_t *io = arg;
    free(io);
}

void loop_io_del(loop_io_t *io)
{
    if (!io || io->dead)
        return;
    loop_t *l = io->loop;
    io->dead = true;
    epoll_ctl(l->epfd, EPOLL_CTL_DEL, io->fd, NULL);
    if (io->prev)
        io->prev->next = io->next;
    else
        l->ios = io->next;
    if (io->next)
        io->next->prev = io->prev;
    loop_defer(l, io_release, io);
}

/* --- cross-thread posts ------------------------------------------------------ */

static void wake(loop_t *l)
{
    uint64_t one = 1;
    ssize_t r;
    do
        r = write(l->evfd, &one, sizeof(one));
    while (r < 0 && errno == EINTR);
}

int loop_post(loop_t *l, loop_fn fn, void *arg)
{
    if (atomic_load(&l->freeing))
        return -1;
    post_node_t *n = mesh_xmalloc(sizeof(*n));
    n->fn = fn;
    n->arg = arg;
    n->next = NULL;
    pthread_mutex_lock(&l->post_mu);
    if (l->post_tail)
        l->post_tail->next = n;
    else
        l->post_head = n;
    l->post_tail = n;
    pthread_mutex_unlock(&l->post_mu);
    /* One wake-up per batch: the loop clears the flag before draining. */
    if (!atomic_exchange(&l->post_signalled, true))
        wake(l);
    return 0;
}

static void on_eventfd(loop_io_t *io, int fd, unsigned events, void *arg)
{
    (void)io;
    (void)events;
    loop_t *l = arg;
    uint64_t v;
    while (read(fd, &v, sizeof(v)) > 0) {
    }
    atomic_store(&l->post_signalled, false);
    pthread_mutex_lock(&l->post_mu);
    post_node_t *n = l->post_head;
    l->post_head = l->post_tail = NULL;
    pthread_mutex_unlock(&l->post_mu);
    while (n) {
        post_node_t *next = n->next;
        n->fn(n->arg);
        free(n);
        n = next;
    }
}

void loop_stop(loop_t *l)
{
    atomic_store(&l->stop, true);
    if (!loop_in_thread(l))
        wake(l);
}

/* --- the loop ------------------------------------------------------------------ */

loop_t *loop_new(void)
{
    loop_t *l = mesh_xcalloc(1, sizeof(*l));
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    l->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (l->epfd < 0 || l->evfd < 0)
        goto fail;
    pthread_mutex_init(&l->post_mu, NULL);
    l->now = loop_clock_ms();
    l->evio = loop_io_add(l, l->evfd, LOOP_READ, on_eventfd, l);
    if (!l->evio) {
        pthread_mutex_destroy(&l->post_mu);
        goto fail;
    }
    return l;
fail : {
    int e = errno;
    if (l->epfd >= 0)
        close(l->epfd);
    if (l->evfd >= 0)
        close(l->evfd);
    free(l);
    errno = e;
    return NULL;
}
}

#define MAX_EVENTS 256

int loop_run_once(loop_t *l, int timeout_ms)
{
    struct epoll_event evs[MAX_EVENTS];
    l->now = loop_clock_ms();
    if (l->nheap) {
        uint64_t d = l->heap[0]->deadline;
        int until = d <= l->now ? 0 : (d - l->now > 86400000u ? 86400000 : (int)(d - l->now));
        if (timeout_ms < 0 || until < timeout_ms)
            timeout_ms = until;
    }
    if (l->ndefers)
        timeout_ms = 0;
    int n = epoll_wait(l->epfd, evs, MAX_EVENTS, timeout_ms);
    if (n < 0) {
        if (errno != EINTR)
            return -1;
        n = 0;
    }
    l->now = loop_clock_ms();
    int dispatched = 0;
    for (int i = 0; i < n; i++) {
        loop_io_t *io = evs[i].data.ptr;
        if (io->dead)
            continue; /* deleted earlier in this round */
        uint32_t e = evs[i].events;
        unsigned ev = 0;
        if (e & (EPOLLIN | EPOLLRDHUP))
            ev |= LOOP_READ;
        if (e & EPOLLOUT)
            ev |= LOOP_WRITE;
        if (e & (EPOLLERR | EPOLLHUP))
            ev |= LOOP_ERROR | LOOP_READ | LOOP_WRITE;
        if ((ev & LOOP_READ) && !(io->events & LOOP_READ) && !(ev & LOOP_ERROR)) {
            /* a READ kept armed by loop_io_modify fired: disarm it now */
            io_arm(io, io->events);
            ev &= ~LOOP_READ;
            if (ev == 0)
                continue;
        }
        io->cb(io, io->fd, ev, io->arg);
        dispatched++;
    }
    l->now = loop_clock_ms();
    dispatched += run_timers(l);
    run_defers(l);
    return dispatched;
}

int loop_run(loop_t *l)
{
    l->thread = pthread_self();
    atomic_store(&l->running, true);
    int rc = 0;
    while (!atomic_load(&l->stop)) {
        if (loop_run_once(l, -1) < 0) {
            rc = -1;
            break;
        }
    }
    atomic_store(&l->stop, false);
    atomic_store(&l->running, false);
    return rc;
}

void loop_free(loop_t *l)
{
    if (!l)
        return;
    atomic_store(&l->freeing, true);
    run_defers(l);
    while (l->ios) {
        loop_io_t *io = l->ios;
        l->ios = io->next;
        free(io);
    }
    while (l->timers) {
        loop_timer_t *t = l->timers;
        l->timers = t->next;
        free(t);
    }
    pthread_mutex_lock(&l->post_mu);
    post_node_t *n = l->post_head;
    l->post_head = l->post_tail = NULL;
    pthread_mutex_unlock(&l->post_mu);
    while (n) {
        post_node_t *next = n->next;
        free(n);
        n = next;
    }
    pthread_mutex_destroy(&l->post_mu);
    close(l->epfd);
    close(l->evfd);
    free(l->heap);
    free(l->expired);
    free(l->defers);
    free(l);
}
