/*
 * loop: one event loop per thread, on epoll.
 *
 * A loop owns its fd watchers, its timers (a min-heap, millisecond
 * resolution on CLOCK_MONOTONIC) and a cross-thread queue fed through an
 * eventfd. Everything here runs on the loop's own thread except
 * loop_post() and loop_stop(), which any thread may call.
 *
 * fd watchers are LEVEL-triggered by default; pass LOOP_EDGE for
 * edge-triggered (the callback must then read/write until EAGAIN).
 * The loop never closes a watched fd: the watcher's owner does, after
 * loop_io_del().
 *
 * Lifetimes: a callback never frees the object that is calling it.
 * loop_io_del() and loop_timer_free() may be called from any callback
 * (including their own): the watcher is disarmed at once and its memory is
 * released after the current dispatch round. loop_defer() gives the same
 * safe point to the callers' own objects (mark closing, free later).
 */
#ifndef MESH_LOOP_H
#define MESH_LOOP_H

#include <stdbool.h>
#include <stdint.h>

typedef struct loop loop_t;
typedef struct loop_io loop_io_t;
typedef struct loop_timer loop_timer_t;

/* Interest and readiness bits. LOOP_ERROR is reported (never requested) on
 * EPOLLERR/EPOLLHUP; the callback then sees LOOP_READ|LOOP_WRITE too, so a
 * read or write call discovers the error. */
#define LOOP_READ 0x1u
#define LOOP_WRITE 0x2u
#define LOOP_EDGE 0x4u
#define LOOP_ERROR 0x8u

typedef void (*loop_io_cb)(loop_io_t *io, int fd, unsigned events, void *arg);
typedef void (*loop_timer_cb)(loop_timer_t *t, void *arg);
typedef void (*loop_fn)(void *arg);

/* Creates a loop bound to the thread that later calls loop_run(). NULL on
 * failure (epoll/eventfd creation), with errno set. */
loop_t *loop_new(void);
/* Frees the loop. Watchers and timers still registered are freed with it
 * (their fds are not closed); posted functions not yet run are dropped. Call
 * only when loop_run() has returned or was never called. */
void loop_free(loop_t *l);
/* Runs until loop_stop(). Returns 0, or -1 if epoll_wait fails. */
int loop_run(loop_t *l);
/* Runs one dispatch round, waiting at most timeout_ms (-1: until an event;
 * 0: poll). Returns the number of events and timers dispatched, -1 on error. */
int loop_run_once(loop_t *l, int timeout_ms);
/* Makes loop_run() return after the current round. Any thread. */
void loop_stop(loop_t *l);
/* True when called on the thread that is running the loop. */
bool loop_in_thread(const loop_t *l);

/* The loop's cached monotonic clock in ms (updated each round). */
uint64_t loop_now(const loop_t *l);
/* The current monotonic clock in ms (reads the clock). */
uint64_t loop_clock_ms(void);

/* Watches fd for `events` (LOOP_READ|LOOP_WRITE, optionally LOOP_EDGE).
 * NULL on failure (errno set). */
loop_io_t *loop_io_add(loop_t *l, int fd, unsigned events, loop_io_cb cb, void *arg);
/* Changes the interest set (LOOP_EDGE is kept from loop_io_add unless given
 * again). Returns 0 or -1. */
int loop_io_modify(loop_io_t *io, unsigned events);
/* The current interest set. */
unsigned loop_io_events(const loop_io_t *io);
/* Stops watching and frees the watcher after the dispatch round. No more
 * callbacks after this returns. The fd stays open. NULL is ignored. */
void loop_io_del(loop_io_t *io);

/* A stopped timer. NULL only on out-of-memory (the loop aborts). */
loop_timer_t *loop_timer_new(loop_t *l, loop_timer_cb cb, void *arg);
/* (Re-)arms the timer to fire after `after_ms` and then every `repeat_ms`
 * (0: once). Re-arming an active timer moves it. */
void loop_timer_start(loop_timer_t *t, uint64_t after_ms, uint64_t repeat_ms);
/* Disarms the timer (it stays allocated and may be started again). */
void loop_timer_stop(loop_timer_t *t);
bool loop_timer_active(const loop_timer_t *t);
/* Stops and frees the timer after the dispatch round. NULL is ignored. */
void loop_timer_free(loop_timer_t *t);

/* Runs fn(arg) on the loop's thread at its next round. Any thread; the only
 * thread-safe call besides loop_stop(). Functions run in posting order.
 * Returns 0, or -1 if the loop is being freed (fn is then not run). */
int loop_post(loop_t *l, loop_fn fn, void *arg);
/* Runs fn(arg) at the end of the current dispatch round (loop thread only):
 * the safe point to free an object whose callback is still on the stack.
 * When no round is running, runs at the end of the next one. */
void loop_defer(loop_t *l, loop_fn fn, void *arg);

#endif
