#include "envtest.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>

/* Every started envtest, so that an exiting test binary never leaves
 * processes behind even when a test aborts before its teardown. */
#define MAX_LIVE 4
static tu_envtest_t *live[MAX_LIVE];
static bool atexit_done;

static void stop_all_at_exit(void)
{
    for (int i = 0; i < MAX_LIVE; i++)
        if (live[i] != NULL)
            tu_envtest_stop(live[i]);
}

static void track(tu_envtest_t *e, bool on)
{
    for (int i = 0; i < MAX_LIVE; i++) {
        if (on && live[i] == NULL) {
            live[i] = e;
            break;
        }
        if (!on && live[i] == e)
            live[i] = NULL;
    }
    if (on && !atexit_done) {
        atexit(stop_all_at_exit);
        atexit_done = true;
    }
}

static const char *envtest_dir(void)
{
    const char *d = getenv("ENVTEST_DIR");
    return d != NULL && d[0] != '\0' ? d : "/var/cache/meshd-envtest";
}

static void tools_dir(char *buf, size_t len)
{
    const char *s = getenv("MESH_SHARED");
    char rel[PATH_MAX];
    snprintf(rel, sizeof(rel), "%s/tools/envtest", s != NULL && s[0] != '\0' ? s : "../shared");
    if (realpath(rel, buf) == NULL)
        snprintf(buf, len, "%s", rel);
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &al) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* Reads a whole file into a malloc'd string (NULL when unreadable). */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    size_t r;
    while (b != NULL && (r = fread(b + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (n + 1 == cap) {
            char *nb = realloc(b, cap * 2);
            if (nb == NULL) {
                free(b);
                b = NULL;
                break;
            }
            b = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (b != NULL)
        b[n] = '\0';
    return b;
}

static int run_script(tu_envtest_t *e, const char *script, bool clean)
{
    char tools[PATH_MAX], cmd[4 * PATH_MAX];
    tools_dir(tools, sizeof(tools));
    snprintf(cmd, sizeof(cmd),
             "ENVTEST_RUN='%s' APISERVER_PORT=%d ETCD_PORT=%d ETCD_PEER_PORT=%d "
             "ENVTEST_CONTROLLERS=%d CLEAN=%d "
             "bash '%s/%s' > '%s/%s.out' 2>&1 < /dev/null",
             e->run_dir, e->apiserver_port, e->etcd_port, e->peer_port, e->controllers ? 1 : 0,
             clean ? 1 : 0, tools, script, e->run_dir, script);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static bool get_ok(tu_envtest_t *e, const char *path);

/* A process that waits for this one to end, however it ends (even by
 * SIGKILL): when the pipe's write end closes it runs stop.sh and removes the
 * run directory, which is a no-op after a clean tu_envtest_stop. */
static void start_reaper(tu_envtest_t *e)
{
    int fd[2];
    if (pipe2(fd, O_CLOEXEC) != 0)
        return;
    char tools[PATH_MAX], script[3 * PATH_MAX + 256];
    tools_dir(tools, sizeof(tools));
    snprintf(
        script, sizeof(script),
        "cat >/dev/null; ENVTEST_RUN='%s' CLEAN=1 bash '%s/stop.sh' >/dev/null 2>&1; rm -rf '%s'",
        e->run_dir, tools, e->run_dir);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fd[0], 0); /* dup2 clears close-on-exec */
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) {
            dup2(null, 1);
            dup2(null, 2);
        }
        close_range(3, ~0U, 0);
        setpgid(0, 0); /* not in the test's process group: a ^C reaches the test, then this runs */
        execl("/bin/sh", "sh", "-c", script, (char *)NULL);
        _exit(127);
    }
    close(fd[0]);
    if (pid < 0) {
        close(fd[1]);
        return;
    }
    e->reaper_fd = fd[1];
    e->reaper_pid = pid;
}

static void print_file_tail(const char *path, size_t max)
{
    char *s = slurp(path);
    if (s == NULL)
        return;
    size_t n = strlen(s);
    fprintf(stderr, "---- %s\n%s\n----\n", path, n > max ? s + n - max : s);
    free(s);
}

int tu_envtest_start(tu_envtest_t *e, bool controllers)
{
    memset(e, 0, sizeof(*e));
    e->controllers = controllers;
    char tools[PATH_MAX], p[PATH_MAX + 64];
    tools_dir(tools, sizeof(tools));
    snprintf(p, sizeof(p), "%s/start.sh", tools);
    if (access(p, R_OK) != 0)
        fail_msg(
            "envtest: %s not found (set MESH_SHARED to the shared folder that holds tools/envtest)",
            p);
    snprintf(p, sizeof(p), "%s/bin/kube-apiserver", envtest_dir());
    if (access(p, X_OK) != 0)
        fail_msg("envtest: %s is missing; build the envtest binaries with: ENVTEST_CONTROLLERS=1 "
                 "%s/build.sh",
                 p, tools);
    snprintf(p, sizeof(p), "%s/bin/kube-controller-manager", envtest_dir());
    if (controllers && access(p, X_OK) != 0)
        fail_msg("envtest: %s is missing; build it with: ENVTEST_CONTROLLERS=1 %s/build.sh", p,
                 tools);
    if (system("command -v etcd >/dev/null 2>&1 && command -v kubectl >/dev/null 2>&1") != 0)
        fail_msg("envtest: etcd or kubectl is missing; install them with: make deps");

    snprintf(e->run_dir, sizeof(e->run_dir), "/tmp/meshd-envtest-XXXXXX");
    if (mkdtemp(e->run_dir) == NULL) {
        fprintf(stderr, "envtest: mkdtemp: %s\n", strerror(errno));
        return -1;
    }
    snprintf(e->kubeconfig, sizeof(e->kubeconfig), "%s/kubeconfig", e->run_dir);
    snprintf(e->pki_dir, sizeof(e->pki_dir), "%s/pki", e->run_dir);
    track(e, true);
    e->running = true;
    for (int attempt = 0; attempt < 3; attempt++) {
        e->apiserver_port = free_port();
        e->etcd_port = free_port();
        e->peer_port = free_port();
        if (e->apiserver_port < 0 || e->etcd_port < 0 || e->peer_port < 0 ||
            e->apiserver_port == e->etcd_port || e->etcd_port == e->peer_port ||
            e->apiserver_port == e->peer_port)
            continue;
        if (run_script(e, "start.sh", true) == 0) {
            snprintf(e->server, sizeof(e->server), "https://127.0.0.1:%d", e->apiserver_port);
            snprintf(p, sizeof(p), "%s/admin.token", e->pki_dir);
            char *tok = slurp(p);
            if (tok != NULL) {
                snprintf(e->token, sizeof(e->token), "%.*s", (int)strcspn(tok, "\r\n"), tok);
                free(tok);
            }
            /* ready is not settled: the default namespace (and, with the
             * controllers, its service account) come a moment later */
            bool settled = false;
            for (int i = 0; i < 300 && !settled; i++) {
                settled = get_ok(e, "/api/v1/namespaces/default") &&
                          (!controllers ||
                           get_ok(e, "/api/v1/namespaces/default/serviceaccounts/default"));
                if (!settled)
                    usleep(100000);
            }
            if (settled) {
                start_reaper(e);
                return 0;
            }
            fprintf(stderr, "envtest: the default namespace%s never appeared\n",
                    controllers ? " or its service account" : "");
            break;
        }
        snprintf(p, sizeof(p), "%s/start.sh.out", e->run_dir);
        print_file_tail(p, 2000);
        snprintf(p, sizeof(p), "%s/kube-apiserver.log", e->run_dir);
        print_file_tail(p, 2000);
        run_script(e, "stop.sh", true); /* a port may have been taken meanwhile: try others */
    }
    fprintf(stderr, "envtest: could not start the API server (run dir %s)\n", e->run_dir);
    tu_envtest_stop(e);
    return -1;
}

static int kubectl_run(tu_envtest_t *e, const char *input, const char *args)
{
    char in[PATH_MAX + 16] = "/dev/null";
    if (input != NULL) {
        snprintf(in, sizeof(in), "%s/kubectl.in", e->run_dir);
        FILE *f = fopen(in, "wb");
        if (f == NULL)
            fail_msg("envtest: cannot write %s: %s", in, strerror(errno));
        fwrite(input, 1, strlen(input), f);
        fclose(f);
    }
    size_t clen = strlen(args) + 3 * PATH_MAX + 100;
    char *cmd = malloc(clen);
    assert_non_null(cmd);
    snprintf(cmd, clen, "kubectl --kubeconfig='%s' --cache-dir='%s/kubecache' %s < '%s' 2>&1",
             e->kubeconfig, e->run_dir, args, in);
    FILE *pf = popen(cmd, "r");
    free(cmd);
    if (pf == NULL)
        fail_msg("envtest: cannot run kubectl: %s", strerror(errno));
    free(e->out);
    size_t cap = 8192, n = 0, r;
    e->out = malloc(cap);
    assert_non_null(e->out);
    while ((r = fread(e->out + n, 1, cap - n - 1, pf)) > 0) {
        n += r;
        if (n + 1 == cap) {
            cap *= 2;
            e->out = realloc(e->out, cap);
            assert_non_null(e->out);
        }
    }
    e->out[n] = '\0';
    e->out_len = n;
    int st = pclose(pf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int tu_envtest_kubectl(tu_envtest_t *e, const char *fmt, ...)
{
    char args[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    return kubectl_run(e, NULL, args);
}

int tu_envtest_kubectl_stdin(tu_envtest_t *e, const char *input, const char *fmt, ...)
{
    char args[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    return kubectl_run(e, input, args);
}

/* The apiserver's pid from its pid file, after checking it is one. */
static pid_t apiserver_pid(tu_envtest_t *e)
{
    char p[PATH_MAX + 32];
    snprintf(p, sizeof(p), "%s/kube-apiserver.pid", e->run_dir);
    char *s = slurp(p);
    pid_t pid = s != NULL ? (pid_t)atoi(s) : 0;
    free(s);
    if (pid <= 0 || kill(pid, 0) != 0)
        return 0;
    snprintf(p, sizeof(p), "/proc/%d/cmdline", (int)pid);
    char *cl = slurp(p);
    bool ok = cl != NULL && strstr(cl, "kube-apiserver") != NULL;
    free(cl);
    return ok ? pid : 0;
}

/* Saves the running apiserver's command line (NUL-separated) for a restart. */
static void save_cmdline(tu_envtest_t *e, pid_t pid)
{
    char p[64];
    snprintf(p, sizeof(p), "/proc/%d/cmdline", (int)pid);
    int fd = open(p, O_RDONLY);
    if (fd < 0)
        return;
    char buf[16384];
    ssize_t n, total = 0;
    while ((n = read(fd, buf + total, sizeof(buf) - 1 - (size_t)total)) > 0)
        total += n;
    close(fd);
    if (total <= 0)
        return;
    char path[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/kube-apiserver.cmdline", e->run_dir);
    FILE *f = fopen(path, "wb");
    if (f != NULL) {
        fwrite(buf, 1, (size_t)total, f);
        fclose(f);
    }
}

static void kill_wait(pid_t pid)
{
    kill(pid, SIGTERM);
    for (int i = 0; i < 100 && kill(pid, 0) == 0; i++)
        usleep(100000);
    if (kill(pid, 0) == 0) {
        kill(pid, SIGKILL);
        for (int i = 0; i < 50 && kill(pid, 0) == 0; i++)
            usleep(100000);
    }
}

int tu_envtest_stop_apiserver(tu_envtest_t *e)
{
    pid_t pid = apiserver_pid(e);
    if (pid == 0)
        return -1;
    save_cmdline(e, pid);
    kill_wait(pid);
    return 0;
}

static size_t discard(char *p, size_t sz, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return sz * n;
}

static bool get_ok(tu_envtest_t *e, const char *path)
{
    CURL *h = curl_easy_init();
    if (h == NULL)
        return false;
    char url[128], ca[PATH_MAX + 16], auth[200];
    snprintf(url, sizeof(url), "%s%s", e->server, path);
    snprintf(ca, sizeof(ca), "%s/ca.crt", e->pki_dir);
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", e->token);
    struct curl_slist *hd = curl_slist_append(NULL, auth);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CAINFO, ca);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 2000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    long code = 0;
    bool ok = curl_easy_perform(h) == CURLE_OK &&
              curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK && code == 200;
    curl_slist_free_all(hd);
    curl_easy_cleanup(h);
    return ok;
}

int tu_envtest_restart_apiserver(tu_envtest_t *e)
{
    pid_t old = apiserver_pid(e);
    if (old != 0) {
        save_cmdline(e, old);
        kill_wait(old);
    }
    char path[PATH_MAX + 32], logp[PATH_MAX + 32], pidp[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/kube-apiserver.cmdline", e->run_dir);
    snprintf(logp, sizeof(logp), "%s/kube-apiserver.log", e->run_dir);
    snprintf(pidp, sizeof(pidp), "%s/kube-apiserver.pid", e->run_dir);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "envtest: no saved kube-apiserver command line in %s\n", e->run_dir);
        return -1;
    }
    static char buf[16384];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *argv[256];
    int argc = 0;
    for (size_t i = 0; i < n && argc < 255; i += strlen(buf + i) + 1)
        argv[argc++] = buf + i;
    argv[argc] = NULL;
    if (argc == 0)
        return -1;

    /* detached like start.sh's processes: a grandchild in its own session */
    int pfd[2];
    if (pipe(pfd) != 0)
        return -1;
    pid_t child = fork();
    if (child < 0) {
        close(pfd[0]);
        close(pfd[1]);
        return -1;
    }
    if (child == 0) {
        close(pfd[0]);
        setsid();
        pid_t gc = fork();
        if (gc == 0) {
            close(pfd[1]);
            int in = open("/dev/null", O_RDONLY);
            int out = open(logp, O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (in >= 0)
                dup2(in, 0);
            if (out >= 0) {
                dup2(out, 1);
                dup2(out, 2);
            }
            execv(argv[0], argv);
            _exit(127);
        }
        ssize_t w = write(pfd[1], &gc, sizeof(gc));
        (void)w;
        _exit(gc > 0 ? 0 : 1);
    }
    close(pfd[1]);
    pid_t gc = 0;
    ssize_t r = read(pfd[0], &gc, sizeof(gc));
    close(pfd[0]);
    waitpid(child, NULL, 0);
    if (r != (ssize_t)sizeof(gc) || gc <= 0)
        return -1;
    f = fopen(pidp, "w");
    if (f != NULL) {
        fprintf(f, "%d\n", (int)gc);
        fclose(f);
    }
    for (int i = 0; i < 300; i++) {
        if (get_ok(e, "/readyz"))
            return 0;
        if (kill(gc, 0) != 0)
            break;
        usleep(200000);
    }
    fprintf(stderr, "envtest: kube-apiserver did not come back\n");
    print_file_tail(logp, 2000);
    return -1;
}

void tu_envtest_stop(tu_envtest_t *e)
{
    if (e->running) {
        run_script(e, "stop.sh", true);
        if (e->run_dir[0] == '/' && strncmp(e->run_dir, "/tmp/meshd-envtest-", 19) == 0) {
            char cmd[PATH_MAX + 32];
            snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e->run_dir);
            if (system(cmd) != 0)
                fprintf(stderr, "envtest: could not remove %s\n", e->run_dir);
        }
        e->running = false;
    }
    if (e->reaper_pid > 0) {
        close(e->reaper_fd);
        waitpid(e->reaper_pid, NULL, 0);
        e->reaper_pid = 0;
    }
    track(e, false);
    free(e->out);
    e->out = NULL;
    e->out_len = 0;
}
