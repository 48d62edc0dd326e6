/*
 * proxyharness: what the meshproxy end-to-end tests (test/proxy/test_h2.c,
 * test_resilience.c, test_proxy_e2e.c) share.
 *
 * - Loopback sockets: a listener on a kernel-chosen port, free ports,
 *   connecting with a receive timeout, reading and writing whole buffers.
 * - In-test upstreams (ph_backend_t): a thread accepting on 127.0.0.1 and one
 *   thread per connection running the test's serve function, which decides
 *   what the upstream answers. Helpers for serve functions read a request
 *   with the proxy's own HTTP/1.1 parser (px_h1) and send canned responses.
 *   ph_backend_stop() ends every thread and closes every socket it made.
 * - The proxy process (ph_proxy_t): build/meshproxy (or $MESH_BUILD/meshproxy)
 *   as a sidecar on a static config file in a temporary directory of its
 *   own, with its access log (stdout) and stderr in files there.
 * - A small HTTP/1.1 client: one request per connection, or a raw request on
 *   a connection the test holds.
 *
 * Test assertions (cmocka) fail the running test where a step that cannot
 * fail in a sane environment does (a socket, a thread, a fork).
 */
#ifndef MESH_TEST_PROXYHARNESS_H
#define MESH_TEST_PROXYHARNESS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "../proxy/http1_internal.h"

/* ---- loopback sockets ---- */

/* A listener on 127.0.0.1 with a port the kernel picks (*port); fd or -1. */
int ph_listen_any(int *port);
/* A port that is free now (bound, then released). */
int ph_free_port(void);
/* Whether something accepts connections on ip:port / 127.0.0.1:port. */
bool ph_port_open_on(const char *ip, int port);
bool ph_port_open(int port);
/* A connection to ip:port / 127.0.0.1:port with a 5 s receive timeout; fd or -1. */
int ph_connect_on(const char *ip, int port);
int ph_connect(int port);
/* Appends what one recv() gives to buf[*len..cap); 0, or -1 on EOF, error or a full buffer. */
int ph_read_more(int fd, char *buf, size_t *len, size_t cap);
/* Sends all n bytes; 0 or -1. */
int ph_send_all(int fd, const char *p, size_t n);

/* ---- files ---- */

/* Replaces path with text at once (written aside, then renamed). */
void ph_write_file(const char *path, const char *text);
/* The file's first MiB as a string (caller frees); "" when it does not exist. */
char *ph_slurp(const char *path);
/* rm -rf dir (a complaint on stderr when that fails). */
void ph_remove_dir(const char *dir);

/* ---- in-test HTTP upstreams ---- */

#define PH_MAX_CONNS 512

typedef struct ph_backend ph_backend_t;

/* Serves one accepted connection until it should end; the harness shuts the
 * socket down afterwards and closes it in ph_backend_stop(). */
typedef void (*ph_serve_fn)(ph_backend_t *b, int fd);

struct ph_backend {
    const char *name;
    int port;
    atomic_int conns;     /* connections accepted */
    atomic_int reqs;      /* requests answered (counted by the serve function) */
    atomic_int fail_left; /* ph_backend_next_status() answers 503 while this lasts */
    void *data;           /* the test's own state, given to ph_backend_start() */
    pthread_mutex_t mu;   /* guards the connection table; serve functions may take it for `data` */
    ph_serve_fn _serve;
    int _lfd;
    atomic_bool _stop;
    pthread_t _thread;
    int _cfds[PH_MAX_CONNS];
    pthread_t _cth[PH_MAX_CONNS];
    int _ncl;
};

/* Starts a backend named `name` on a free loopback port (b->port). */
ph_backend_t *ph_backend_start(const char *name, ph_serve_fn serve, void *data);
/* Stops accepting, shuts every connection down, joins every thread, frees b. */
void ph_backend_stop(ph_backend_t *b);
/* The status line of the next answer: "503 Service Unavailable" while
 * b->fail_left lasts (it counts down), else "200 OK". */
const char *ph_backend_next_status(ph_backend_t *b);

/* Reads until buf[0..*len) holds a whole request head, parsed into m; the
 * head's length, or -1 on EOF, a full buffer or a malformed request. */
int ph_h1_read_head(int fd, char *buf, size_t *len, size_t cap, px_h1_msg_t *m);
/* Reads the body of the request m whose head is buf[0..head): a
 * Content-Length or chunked one (none otherwise). *used becomes the bytes of
 * the whole request, *body_len the body's (decoded) length; 0 or -1. */
int ph_h1_read_body(int fd, char *buf, size_t *len, size_t cap, const px_h1_msg_t *m, size_t head, size_t *used,
                    size_t *body_len);
/* Copies header `name`'s value into out (truncated to cap); false, and out
 * untouched, when m has no such header. */
bool ph_h1_header(const px_h1_msg_t *m, const char *name, char *out, size_t cap);
/* Sends "HTTP/1.1 <status>", the header lines `headers` (each ending in
 * CRLF, may be ""), "content-length: <content_length>" and the blank line. */
int ph_h1_send_head(int fd, const char *status, const char *headers, size_t content_length);
/* A whole response with this body, in one write; 0 or -1. */
int ph_h1_reply(int fd, const char *status, const char *headers, const char *body, size_t len);

/* ---- the meshproxy process ---- */

typedef struct ph_proxy {
    pid_t pid;                /* 0 when not running */
    int port;                 /* the listener whose accepting means "up" */
    int admin_port;           /* 0 at ph_proxy_start(): a free one is taken */
    int stats_port;           /* likewise */
    int ready_port;           /* likewise */
    char dir[64];             /* the temporary directory */
    char config[128];         /* dir/config.json */
    char log[128];            /* dir/access.log: the proxy's stdout */
    char err[128];            /* dir/stderr.log */
} ph_proxy_t;

typedef struct ph_proxy_opts {
    int concurrency;  /* --concurrency (0: 1) */
    int drain_time;   /* --drain-time in seconds (0: 1) */
    const char *seed; /* MESHPROXY_SEED, or NULL to leave it unset */
} ph_proxy_opts_t;

/* Makes p's directory /tmp/<prefix>-XXXXXX and the paths in it; p->pid = 0. */
void ph_proxy_init(ph_proxy_t *p, const char *prefix);
/* Writes config_text to p->config and starts meshproxy sidecar on it (pod
 * client-7f9, namespace shop, bound to 127.0.0.1), then waits up to 4 s for
 * p->port. True when it is up; false (and the process gone, p->pid 0) when
 * it exited, said "cannot listen" or did not come up. */
bool ph_proxy_start(ph_proxy_t *p, const char *config_text, const ph_proxy_opts_t *o);
/* SIGTERM, up to 6 s, then SIGKILL; p->pid becomes 0. The exit status (128 +
 * signal when one ended it), or -1 when it had to be killed or none ran. */
int ph_proxy_stop(ph_proxy_t *p);
/* The same for any child process; pid <= 0 is ignored (-1). */
int ph_reap(pid_t pid);

/* ---- HTTP/1.1 client ---- */

typedef struct ph_resp {
    int status;
    char head[4096];
    char body[1048576];
    size_t body_len;
    bool closed; /* the response said the connection closes */
} ph_resp_t;

/* Sends raw on fd and reads one response (Content-Length, chunked or none);
 * bytes read past it stay for the next call on the same fd. 0 or -1. */
int ph_roundtrip(int fd, const char *raw, ph_resp_t *r);
/* One request on a new connection to 127.0.0.1:port with this Host: a POST
 * with a Content-Length when body is set, else a GET; extra holds more
 * header lines (each ending in CRLF) or is NULL. 0 or -1. */
int ph_request(int port, const char *host, const char *path, const char *extra, const char *body, ph_resp_t *r);
/* The value of "name: N" in the admin /stats text, or -1. */
long ph_admin_stat(int admin_port, const char *name);

#endif
