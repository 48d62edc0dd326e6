/*
 * workq: a small pool of threads for blocking work that must stay off the
 * event loops (key generation, signing, TokenReview HTTP calls, file I/O).
 *
 * A job is a pair of functions: work(arg) runs on a pool thread, then
 * done(arg) runs on the submitting loop's thread (through loop_post), where it
 * may touch loop-owned objects. The job owns nothing: arg belongs to the
 * caller, who typically frees it in done(). Jobs start in submission order;
 * with more than one thread they may finish in any order.
 */
#ifndef MESH_WORKQ_H
#define MESH_WORKQ_H

#include <stddef.h>

#include "loop.h"

typedef struct workq workq_t;

/* Starts `nthreads` worker threads (0: 2). NULL on failure. */
workq_t *workq_new(int nthreads);
/* Runs every job still queued, joins the threads, frees the pool. The done
 * callbacks of the last jobs are posted to their loops as usual; those loops
 * must outlive this call's posts (run them once more, or free them after). */
void workq_free(workq_t *q);
/* Queues work(arg) for a pool thread, then done(arg) on `loop` (done may be
 * NULL; loop may be NULL when done is NULL). Thread-safe. Returns 0, or -1 if
 * the pool is shutting down. */
int workq_submit(workq_t *q, loop_t *loop, loop_fn work, loop_fn done, void *arg);
/* Jobs queued or running; a job whose done() may run no longer counts. */
size_t workq_pending(workq_t *q);

#endif
