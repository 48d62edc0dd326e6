/* Socket-to-socket moves through a pipe (see splice_internal.h). */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "splice_internal.h"

/* what one read from the source may put in the pipe: its default size */
#define SPLICE_CHUNK (64 * 1024)

int px_splice_open(px_splice_t *s)
{
    int p[2];
    s->rfd = s->wfd = -1;
    s->held = 0;
    s->eof = false;
    if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0)
        return -1;
    s->rfd = p[0];
    s->wfd = p[1];
    return 0;
}

void px_splice_close(px_splice_t *s)
{
    if (s->rfd >= 0)
        close(s->rfd);
    if (s->wfd >= 0)
        close(s->wfd);
    s->rfd = s->wfd = -1;
    s->held = 0;
}

int px_splice_pump(px_splice_t *s, int from, int to, size_t budget, uint64_t *moved)
{
    size_t got = 0;
    for (;;) {
        if (s->held == 0) {
            if (s->eof || got >= budget)
                return 0;
            ssize_t n = splice(from, NULL, s->wfd, NULL, SPLICE_CHUNK, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n == 0) {
                s->eof = true;
                return 0;
            }
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                return errno == EAGAIN ? 0 : -1;
            }
            s->held = (size_t)n;
            got += (size_t)n;
            *moved += (uint64_t)n;
        }
        ssize_t m = splice(s->rfd, NULL, to, NULL, s->held, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (m < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN ? 0 : -1;
        }
        s->held -= (size_t)m;
        if (s->held)
            return 0; /* the destination is full */
    }
}
