/*
 * workq: thread pool for blocking jobs; completions go back to the
 * submitting loop through loop_post(). See workq.h.
 */
#include "workq.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "arena.h"
#include "log.h"

typedef struct job {
    loop_t *loop;
    loop_fn work, done;
    void *arg;
    struct job *next;
} job_t;

struct workq {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job_t *head, *tail;
    size_t pending; /* queued + running */
    bool stopping;
    int nthreads;
    pthread_t *threads;
};

static void *worker(void *arg)
{
    workq_t *q = arg;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!q->head && !q->stopping)
            pthread_cond_wait(&q->cv, &q->mu);
        job_t *j = q->head;
        if (!j)
            break; /* stopping and drained */
        q->head = j->next;
        if (!q->head)
            q->tail = NULL;
        pthread_mutex_unlock(&q->mu);

        j->work(j->arg);
        /* Not pending any more once its completion can run. */
        pthread_mutex_lock(&q->mu);
        q->pending--;
        pthread_mutex_unlock(&q->mu);
        if (j->done && loop_post(j->loop, j->done, j->arg) < 0)
            log_error("workq: the loop of a finished job is gone; its completion is dropped");
        free(j);
        pthread_mutex_lock(&q->mu);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

workq_t *workq_new(int nthreads)
{
    if (nthreads <= 0)
        nthreads = 2;
    workq_t *q = mesh_xcalloc(1, sizeof(*q));
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    q->threads = mesh_xcalloc((size_t)nthreads, sizeof(*q->threads));
    for (int i = 0; i < nthreads; i++) {
        if (pthread_create(&q->threads[i], NULL, worker, q) != 0) {
            log_error("workq: cannot start worker thread %d of %d", i + 1, nthreads);
            q->nthreads = i;
            workq_free(q);
            return NULL;
        }
    }
    q->nthreads = nthreads;
    return q;
}

void workq_free(workq_t *q)
{
    if (!q)
        return;
    pthread_mutex_lock(&q->mu);
    q->stopping = true;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    for (int i = 0; i < q->nthreads; i++)
        pthread_join(q->threads[i], NULL);
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
    free(q->threads);
    free(q);
}

int workq_submit(workq_t *q, loop_t *loop, loop_fn work, loop_fn done, void *arg)
{
    if (done && !loop)
        return -1;
    job_t *j = mesh_xmalloc(sizeof(*j));
    *j = (job_t){loop, work, done, arg, NULL};
    pthread_mutex_lock(&q->mu);
    if (q->stopping) {
        pthread_mutex_unlock(&q->mu);
        free(j);
        return -1;
    }
    if (q->tail)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
    q->pending++;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
    return 0;
}

size_t workq_pending(workq_t *q)
{
    pthread_mutex_lock(&q->mu);
    size_t n = q->pending;
    pthread_mutex_unlock(&q->mu);
    return n;
}
