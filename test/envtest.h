/*
 * envtest: a private, real Kubernetes API server (etcd + kube-apiserver, and
 * optionally kube-controller-manager) for integration tests, started with
 * $MESH_SHARED/tools/envtest/start.sh in a fresh temporary run directory on
 * free loopback ports. The test that starts it owns it and must stop it
 * (tu_envtest_stop also removes the run directory).
 */
#ifndef MESH_TEST_ENVTEST_H
#define MESH_TEST_ENVTEST_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct tu_envtest {
    char run_dir[PATH_MAX];         /* ENVTEST_RUN, a mkdtemp directory */
    char kubeconfig[PATH_MAX + 16]; /* admin kubeconfig (token + CA file) */
    char pki_dir[PATH_MAX + 8];     /* ca.crt, admin.crt/key, webhook.crt/key, sa.key ... */
    char server[64];                /* https://127.0.0.1:PORT */
    char token[128];                /* the admin bearer token */
    int apiserver_port, etcd_port, peer_port;
    bool controllers; /* kube-controller-manager runs too */
    bool running;
    int reaper_fd; /* write end of the pipe that keeps the reaper waiting */
    int reaper_pid;
    char *out; /* stdout + stderr of the last tu_envtest_kubectl (NUL-terminated) */
    size_t out_len;
} tu_envtest_t;

/* Starts a private API server; 0 when ready. Fails the test (fail_msg) with
 * the command to build the binaries when they are missing; -1 on other
 * failures, with start.sh's output printed. */
int tu_envtest_start(tu_envtest_t *e, bool controllers);
/* Runs `kubectl --kubeconfig=... ARGS` (ARGS from fmt, split by a shell) and
 * returns its exit status; the output is in e->out. */
int tu_envtest_kubectl(tu_envtest_t *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Same, with `input` fed to kubectl's stdin (e.g. `apply -f -`). */
int tu_envtest_kubectl_stdin(tu_envtest_t *e, const char *input, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Kills kube-apiserver and starts it again with the same command line, etcd
 * and port; 0 when it is ready again. */
int tu_envtest_restart_apiserver(tu_envtest_t *e);
/* Stops only kube-apiserver (for tests of an unreachable server); restart
 * it with tu_envtest_restart_apiserver. */
int tu_envtest_stop_apiserver(tu_envtest_t *e);
/* Stops every process and removes the run directory. Safe to call twice. */
void tu_envtest_stop(tu_envtest_t *e);

#endif
