/*
 * px_splice_pump (proxy/splice.c) on loopback TCP pairs: bytes moved in
 * order and counted, a destination that cannot keep up holding the rest in
 * the pipe (and nothing read from the source meanwhile), the source's end,
 * and a destination that went away.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../proxy/splice_internal.h"

/* A connected loopback TCP pair: fds[0] the client end, fds[1] the accepted one. */
static void tcp_pair(int fds[2])
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(l, 1), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&a, &al), 0);
    fds[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(connect(fds[0], (struct sockaddr *)&a, sizeof(a)), 0);
    fds[1] = accept(l, NULL, NULL);
    assert_true(fds[1] >= 0);
    close(l);
}

static void nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* src[0] writes -> src[1] -(pump)-> dst[0] -> dst[1] reads */
typedef struct pairs {
    int src[2], dst[2];
    px_splice_t sp;
} pairs_t;

static int setup(void **state)
{
    static pairs_t p;
    tcp_pair(p.src);
    tcp_pair(p.dst);
    nonblock(p.src[1]);
    nonblock(p.dst[0]);
    assert_int_equal(px_splice_open(&p.sp), 0);
    *state = &p;
    return 0;
}

static int teardown(void **state)
{
    pairs_t *p = *state;
    px_splice_close(&p->sp);
    for (int i = 0; i < 2; i++) {
        close(p->src[i]);
        close(p->dst[i]);
    }
    return 0;
}

static size_t readable(int fd)
{
    int n = 0;
    ioctl(fd, FIONREAD, &n);
    return (size_t)n;
}

static void test_moves_in_order_and_counts(void **state)
{
    pairs_t *p = *state;
    char msg[100000], got[100000];
    for (size_t i = 0; i < sizeof(msg); i++)
        msg[i] = (char)(i * 31 + i / 251);
    size_t sent = 0, recvd = 0;
    uint64_t moved = 0;
    while (recvd < sizeof(msg)) {
        if (sent < sizeof(msg)) {
            ssize_t n = send(p->src[0], msg + sent, sizeof(msg) - sent, MSG_DONTWAIT);
            if (n > 0)
                sent += (size_t)n;
        }
        assert_int_equal(px_splice_pump(&p->sp, p->src[1], p->dst[0], 1 << 20, &moved), 0);
        ssize_t n = recv(p->dst[1], got + recvd, sizeof(got) - recvd, MSG_DONTWAIT);
        if (n > 0)
            recvd += (size_t)n;
    }
    assert_memory_equal(got, msg, sizeof(msg));
    assert_int_equal(moved, sizeof(msg));
    assert_int_equal(p->sp.held, 0);
    assert_false(p->sp.eof);
}

/* The destination's reader stops: the pump keeps what the socket will not
 * take in the pipe and stops reading the source; once the reader drains,
 * the rest goes through. */
static void test_slow_destination_stops_the_source(void **state)
{
    pairs_t *p = *state;
    int small = 4096;
    setsockopt(p->dst[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    setsockopt(p->dst[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    static char block[1 << 20];
    memset(block, 'x', sizeof(block));
    ssize_t sent = send(p->src[0], block, sizeof(block), MSG_DONTWAIT);
    assert_true(sent > 0);
    uint64_t moved = 0;
    for (int i = 0; i < 100; i++)
        assert_int_equal(px_splice_pump(&p->sp, p->src[1], p->dst[0], 1 << 20, &moved), 0);
    assert_true(p->sp.held > 0); /* waiting for the destination */
    assert_true(moved < (uint64_t)sent);
    size_t left = readable(p->src[1]);
    assert_true(left > 0); /* the source was not drained into memory */
    /* drain the reader as the pump goes on */
    uint64_t out = 0;
    static char sink[1 << 16];
    while (out < (uint64_t)sent) {
        assert_int_equal(px_splice_pump(&p->sp, p->src[1], p->dst[0], 1 << 20, &moved), 0);
        ssize_t n = recv(p->dst[1], sink, sizeof(sink), MSG_DONTWAIT);
        if (n > 0)
            out += (uint64_t)n;
    }
    assert_int_equal(moved, (uint64_t)sent);
    assert_int_equal(out, (uint64_t)sent);
}

static void test_source_end(void **state)
{
    pairs_t *p = *state;
    assert_int_equal(send(p->src[0], "last", 4, 0), 4);
    shutdown(p->src[0], SHUT_WR);
    uint64_t moved = 0;
    for (int i = 0; i < 100 && !p->sp.eof; i++) {
        assert_int_equal(px_splice_pump(&p->sp, p->src[1], p->dst[0], 1 << 20, &moved), 0);
        usleep(1000);
    }
    assert_true(p->sp.eof);
    assert_int_equal(p->sp.held, 0);
    assert_int_equal(moved, 4);
    char got[8];
    assert_int_equal(recv(p->dst[1], got, sizeof(got), 0), 4);
    assert_memory_equal(got, "last", 4);
}

static void test_destination_gone(void **state)
{
    pairs_t *p = *state;
    struct linger lg = {1, 0}; /* closed with a reset */
    setsockopt(p->dst[1], SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(p->dst[1]);
    p->dst[1] = socket(AF_INET, SOCK_STREAM, 0); /* for the teardown */
    usleep(10000);
    static char block[1 << 16];
    uint64_t moved = 0;
    int rc = 0;
    for (int i = 0; i < 100 && rc == 0; i++) {
        send(p->src[0], block, sizeof(block), MSG_DONTWAIT);
        rc = px_splice_pump(&p->sp, p->src[1], p->dst[0], 1 << 20, &moved);
        usleep(1000);
    }
    assert_int_equal(rc, -1);
    assert_true(errno == EPIPE || errno == ECONNRESET);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_moves_in_order_and_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_destination_stops_the_source, setup, teardown),
        cmocka_unit_test_setup_teardown(test_source_end, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destination_gone, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
