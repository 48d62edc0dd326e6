/*
 * splice: moving a tunnel's bytes socket to socket through a kernel pipe
 * (splice(2)), never copied to user space. meshproxy uses it for plaintext
 * tunnels (the TCP proxy, upgraded connections) once they have carried
 * enough to be bulk transfers; short ones stay on the buffered path, which
 * costs no pipe.
 *
 * One px_splice_t per direction, owned by the connection that moves it. Its
 * pipe is read from the source only while it is empty: a destination that
 * cannot keep up stops the reading, and an EAGAIN from the source then
 * always means it has nothing, so a level-triggered loop never spins.
 */
#ifndef MESH_PROXY_SPLICE_INTERNAL_H
#define MESH_PROXY_SPLICE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct px_splice {
    int rfd, wfd; /* the pipe, -1 when closed */
    size_t held;  /* bytes in it */
    bool eof;     /* the source finished sending */
} px_splice_t;

/* Opens the pipe (non-blocking, close-on-exec); 0, or -1 with errno. */
int px_splice_open(px_splice_t *s);
/* Closes the pipe (bytes still held are lost); safe on a closed one. */
void px_splice_close(px_splice_t *s);
/* Moves what the source has to the destination, until the source has
 * nothing more for now, the destination is full, or budget bytes were read
 * (the caller's loop comes back for the rest). Adds the bytes read to
 * *moved. 0, or -1 with errno when either socket failed. Afterwards: wait
 * for the source to be readable when held is 0 and eof is false, for the
 * destination to be writable when held is not 0; eof with held 0 means this
 * direction is done. */
int px_splice_pump(px_splice_t *s, int from, int to, size_t budget, uint64_t *moved);

#endif
