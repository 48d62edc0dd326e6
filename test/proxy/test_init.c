/* Tests of `meshproxy init` and `meshproxy wait` (proxy/init.c): the
 * istio-iptables flags the sidecar injector writes become Istio's REDIRECT
 * rules, in Istio's order; exclusions, inclusions, interfaces and IPv6 land
 * where they must; a re-run deletes what the previous run left; bad flags
 * are refused naming the flag and the value; wait polls until 200 or gives
 * up with the last answer. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../testutil.h"

#include "../../proxy/init_internal.h"

/* Parses a NULL-terminated argument list; asserts success. */
static void parse_ok(px_init_opts_t *o, const char *const *args)
{
    int argc = 0;
    while (args[argc])
        argc++;
    char err[512] = "";
    int rc = px_init_parse(argc, (char **)args, o, err, sizeof(err));
    if (rc != 0)
        print_error("unexpected parse error: %s\n", err);
    assert_int_equal(rc, 0);
}

/* Parses and asserts failure with an error holding both substrings. */
static void parse_fails(const char *const *args, const char *s1, const char *s2)
{
    int argc = 0;
    while (args[argc])
        argc++;
    px_init_opts_t o;
    char err[512] = "";
    int rc = px_init_parse(argc, (char **)args, &o, err, sizeof(err));
    if (rc == 0 || strstr(err, s1) == NULL || (s2 && strstr(err, s2) == NULL))
        print_error("args starting \"%s\": got rc %d, error \"%s\"; want \"%s\" and \"%s\"\n",
                    args[0], rc, err, s1, s2 ? s2 : "");
    assert_int_equal(rc, -1);
    assert_non_null(strstr(err, s1));
    if (s2)
        assert_non_null(strstr(err, s2));
}

static char *rules_for(const char *const *args, int family, const char *existing)
{
    px_init_opts_t o;
    parse_ok(&o, args);
    char *r = px_init_rules(&o, family, existing);
    assert_non_null(r);
    return r;
}

/* Position of a whole line in the rules, or -1. */
static long line_at(const char *rules, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = rules; (p = strstr(p, line)) != NULL; p++)
        if ((p == rules || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0'))
            return p - rules;
    return -1;
}

static void assert_line(const char *rules, const char *line)
{
    if (line_at(rules, line) < 0)
        print_error("missing line \"%s\" in:\n%s", line, rules);
    assert_true(line_at(rules, line) >= 0);
}

static void assert_no_line(const char *rules, const char *line)
{
    if (line_at(rules, line) >= 0)
        print_error("unexpected line \"%s\" in:\n%s", line, rules);
    assert_true(line_at(rules, line) < 0);
}

static void assert_before(const char *rules, const char *first, const char *second)
{
    assert_line(rules, first);
    assert_line(rules, second);
    assert_true(line_at(rules, first) < line_at(rules, second));
}

/* The injector's arguments with its default values. */
#define INJECTOR_ARGS                                                                              \
    "-p", "15001", "-z", "15006", "-u", "1337", "-g", "1337", "-m", "REDIRECT", "-i", "*", "-x",   \
        "", "-b", "*", "-d", "15090,15021,15020"

static void test_injector_defaults_exact(void **state)
{
    (void)state;
    const char *args[] = {INJECTOR_ARGS, NULL};
    char *r = rules_for(args, 4, NULL);
    const char *want =
        "# meshproxy init: IPv4 capture for iptables-restore --noflush (REDIRECT mode)\n"
        "*nat\n"
        ":ISTIO_INBOUND - [0:0]\n"
        ":ISTIO_REDIRECT - [0:0]\n"
        ":ISTIO_IN_REDIRECT - [0:0]\n"
        ":ISTIO_OUTPUT - [0:0]\n"
        "-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN\n"
        "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001\n"
        "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006\n"
        "-A PREROUTING -p tcp -j ISTIO_INBOUND\n"
        "-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN\n"
        "-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN\n"
        "-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN\n"
        "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT\n"
        "-A OUTPUT -p tcp -j ISTIO_OUTPUT\n"
        "-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN\n"
        "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 "
        "-j ISTIO_IN_REDIRECT\n"
        "-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN\n"
        "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN\n"
        "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 "
        "-j ISTIO_IN_REDIRECT\n"
        "-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN\n"
        "-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN\n"
        "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN\n"
        "-A ISTIO_OUTPUT -j ISTIO_REDIRECT\n"
        "COMMIT\n";
    if (strcmp(r, want) != 0)
        print_error("got:\n%s", r);
    assert_string_equal(r, want);
    px_init_opts_t o;
    parse_ok(&o, args);
    assert_false(px_init_wants_ipv6(&o));
    assert_false(o.dry_run);
    free(r);
}

static void test_cidrs_and_exclusions(void **state)
{
    (void)state;
    const char *args[] = {"-p", "15001",
                          "-z", "15006",
                          "-u", "1337",
                          "-g", "1337",
                          "-m", "REDIRECT",
                          "-i", "10.96.0.2/24,10.96.0.3/24",
                          "-x", "10.96.0.7/32, 169.254.169.254",
                          "-b", "*",
                          "-d", "15090,15021,15020,4,5,6",
                          "-o", "7,8,9",
                          "-q", "3306",
                          NULL};
    char *r = rules_for(args, 4, NULL);
    /* Host bits are cleared, as iptables shows them; a bare address is a host. */
    assert_line(r, "-A ISTIO_OUTPUT -d 10.96.0.0/24 -j ISTIO_REDIRECT");
    assert_no_line(r, "-A ISTIO_OUTPUT -d 10.96.0.2/24 -j ISTIO_REDIRECT");
    assert_no_line(r, "-A ISTIO_OUTPUT -j ISTIO_REDIRECT");
    /* Exclusions come before inclusions, after the proxy's own traffic. */
    assert_before(r, "-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN",
                  "-A ISTIO_OUTPUT -d 10.96.0.7/32 -j RETURN");
    assert_before(r, "-A ISTIO_OUTPUT -d 10.96.0.7/32 -j RETURN",
                  "-A ISTIO_OUTPUT -d 10.96.0.0/24 -j ISTIO_REDIRECT");
    assert_before(r, "-A ISTIO_OUTPUT -d 169.254.169.254/32 -j RETURN",
                  "-A ISTIO_OUTPUT -d 10.96.0.0/24 -j ISTIO_REDIRECT");
    /* Excluded inbound ports before the catch-all redirect. */
    assert_before(r, "-A ISTIO_INBOUND -p tcp --dport 6 -j RETURN",
                  "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT");
    /* Excluded outbound ports first of all in ISTIO_OUTPUT. */
    assert_before(r, "-A ISTIO_OUTPUT -p tcp --dport 9 -j RETURN",
                  "-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN");
    /* Included outbound ports are captured whatever the address, after exclusions. */
    assert_before(r, "-A ISTIO_OUTPUT -d 169.254.169.254/32 -j RETURN",
                  "-A ISTIO_OUTPUT -p tcp --dport 3306 -j ISTIO_REDIRECT");
    free(r);
}

static void test_inbound_port_list_and_none(void **state)
{
    (void)state;
    const char *some[] = {"-b", "9080,8443", "-d", "15090", "-i", "*", NULL};
    char *r = rules_for(some, 4, NULL);
    assert_line(r, "-A PREROUTING -p tcp -j ISTIO_INBOUND");
    assert_line(r, "-A ISTIO_INBOUND -p tcp --dport 9080 -j ISTIO_IN_REDIRECT");
    assert_line(r, "-A ISTIO_INBOUND -p tcp --dport 8443 -j ISTIO_IN_REDIRECT");
    assert_no_line(r, "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT");
    assert_no_line(r, "-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN");
    free(r);

    const char *none[] = {"-b", "", "-i", "", NULL};
    r = rules_for(none, 4, NULL);
    assert_no_line(r, "-A PREROUTING -p tcp -j ISTIO_INBOUND");
    assert_null(strstr(r, "-j ISTIO_REDIRECT"));
    /* The proxy's own traffic is still never captured. */
    assert_line(r, "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN");
    free(r);
}

static void test_loopback_include_keeps_app_to_app_capture(void **state)
{
    (void)state;
    const char *args[] = {"-i", "127.0.0.1/24,10.96.0.1/24", "-b", "*", NULL};
    char *r = rules_for(args, 4, NULL);
    assert_line(r, "-A ISTIO_OUTPUT -d 127.0.0.0/24 -j ISTIO_REDIRECT");
    assert_no_line(r, "-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN");
    assert_line(r, "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN");
    free(r);
}

static void test_owner_lists_and_gid_default(void **state)
{
    (void)state;
    const char *args[] = {"-u", "1337,1338", "-i", "*", NULL};
    px_init_opts_t o;
    parse_ok(&o, args);
    assert_int_equal(o.ngids, 2);
    assert_int_equal(o.gids[1], 1338);
    char *r = px_init_rules(&o, 4, NULL);
    assert_before(r, "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
                  "-A ISTIO_OUTPUT -m owner --uid-owner 1338 -j RETURN");
    assert_line(r, "-A ISTIO_OUTPUT -m owner --gid-owner 1338 -j RETURN");
    free(r);
}

static void test_virtual_interfaces(void **state)
{
    (void)state;
    const char *all[] = {"-i", "*", "-b", "*", "-k", "net1,net2", NULL};
    char *r = rules_for(all, 4, NULL);
    assert_line(r, "-I PREROUTING 1 -i net1 -j RETURN");
    assert_line(r, "-I PREROUTING 1 -i net2 -j ISTIO_REDIRECT");
    /* Inserted last at the top: the redirect ends up above the RETURN. */
    assert_before(r, "-I PREROUTING 1 -i net2 -j RETURN",
                  "-I PREROUTING 1 -i net2 -j ISTIO_REDIRECT");
    free(r);
    const char *some[] = {"-i", "10.0.0.0/8", "-k", "net0ps2", NULL};
    r = rules_for(some, 4, NULL);
    assert_line(r, "-I PREROUTING 1 -i net0ps2 -d 10.0.0.0/8 -j ISTIO_REDIRECT");
    free(r);
    const char *excl[] = {"-i", "*", "-c", "eth1", NULL};
    r = rules_for(excl, 4, NULL);
    assert_before(r, "-A PREROUTING -i eth1 -j RETURN", "-A OUTPUT -p tcp -j ISTIO_OUTPUT");
    assert_before(r, "-A OUTPUT -o eth1 -j RETURN", "-A OUTPUT -p tcp -j ISTIO_OUTPUT");
    free(r);
}

static void test_ipv6_only_when_given(void **state)
{
    (void)state;
    const char *args[] = {"-i", "10.0.0.0/8,fd00::1/64", "-x", "fd00::5", "-b", "*", NULL};
    px_init_opts_t o;
    parse_ok(&o, args);
    assert_true(px_init_wants_ipv6(&o));
    char *v4 = px_init_rules(&o, 4, NULL);
    char *v6 = px_init_rules(&o, 6, NULL);
    assert_line(v4, "-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ISTIO_REDIRECT");
    assert_null(strstr(v4, "fd00"));
    assert_line(v6, "-A ISTIO_OUTPUT -d fd00::/64 -j ISTIO_REDIRECT");
    assert_line(v6, "-A ISTIO_OUTPUT -d fd00::5/128 -j RETURN");
    assert_line(v6, "-A ISTIO_OUTPUT -o lo -s ::6/128 -j RETURN");
    assert_line(v6, "-A ISTIO_OUTPUT -d ::1/128 -j RETURN");
    assert_null(strstr(v6, "10.0.0.0"));
    assert_null(strstr(v6, "127.0.0.1"));
    free(v4);
    free(v6);
}

static void test_flag_spellings(void **state)
{
    (void)state;
    const char *args[] = {"--envoy-port=15011",
                          "-z15016",
                          "--proxy-uid",
                          "7",
                          "-g=8",
                          "--istio-service-cidr",
                          "*",
                          "-n",
                          "--run-validation=false",
                          "--istio-inbound-ports=*",
                          NULL};
    px_init_opts_t o;
    parse_ok(&o, args);
    assert_int_equal(o.outbound_port, 15011);
    assert_int_equal(o.inbound_port, 15016);
    assert_int_equal(o.uids[0], 7);
    assert_int_equal(o.gids[0], 8);
    assert_int_equal(o.include_cidrs_kind, PX_LIST_ALL);
    assert_int_equal(o.inbound_ports_kind, PX_LIST_ALL);
    assert_true(o.dry_run);
    assert_false(o.run_validation);
    char *r = px_init_rules(&o, 4, NULL);
    assert_line(r, "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15011");
    assert_line(r, "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15016");
    assert_line(r, "-A ISTIO_OUTPUT -m owner --gid-owner 8 -j RETURN");
    free(r);
}

static void test_bad_flags_are_named(void **state)
{
    (void)state;
    const char *bad_cidr[] = {"-x", "10.0.0.300/8", NULL};
    parse_fails(bad_cidr, "-x: \"10.0.0.300/8\" is not a CIDR", NULL);
    const char *bad_prefix[] = {"-i", "10.0.0.0/8,10.1.0.0/33", NULL};
    parse_fails(bad_prefix, "-i: \"10.1.0.0/33\" is not a CIDR", NULL);
    const char *bad_v6[] = {"--istio-service-cidr=fd00:::1/64", NULL};
    parse_fails(bad_v6, "--istio-service-cidr: \"fd00:::1/64\" is not a CIDR", NULL);
    const char *star_exclude[] = {"-x", "*", NULL};
    parse_fails(star_exclude, "-x: \"*\" is not allowed", NULL);
    const char *star_mixed[] = {"-i", "*,10.0.0.0/8", NULL};
    parse_fails(star_mixed, "-i", "\"*\" must stand alone");
    const char *bad_port[] = {"-d", "15090,abc", NULL};
    parse_fails(bad_port, "-d: \"15090,abc\": \"abc\" is not a port (1-65535)", NULL);
    const char *zero_port[] = {"-p", "0", NULL};
    parse_fails(zero_port, "-p: \"0\" is not a port", NULL);
    const char *big_port[] = {"-b", "70000", NULL};
    parse_fails(big_port, "-b: \"70000\" is not a port", NULL);
    const char *bad_uid[] = {"-u", "istio-proxy", NULL};
    parse_fails(bad_uid, "-u: \"istio-proxy\"", "not a numeric user or group ID");
    const char *tproxy[] = {"-m", "TPROXY", NULL};
    parse_fails(tproxy, "-m: \"TPROXY\" is not supported", "REDIRECT");
    const char *bad_mode[] = {"-m", "redirect", NULL};
    parse_fails(bad_mode, "-m: \"redirect\" is not an interception mode", NULL);
    const char *unknown[] = {"--redirect-everything", NULL};
    parse_fails(unknown, "unknown flag \"--redirect-everything\"", NULL);
    const char *missing[] = {"-i", "*", "-p", NULL};
    parse_fails(missing, "-p: needs a value", NULL);
    const char *same[] = {"-p", "15001", "-z", "15001", NULL};
    parse_fails(same, "must differ", NULL);
    const char *iface[] = {"-k", "averyveryverylongname0", NULL};
    parse_fails(iface, "-k: \"averyveryverylongname0\" is not an interface name", NULL);
    const char *bool_val[] = {"--dry-run=maybe", NULL};
    parse_fails(bool_val, "--dry-run: \"maybe\" is not a boolean", NULL);
    const char *stray[] = {"REDIRECT", NULL};
    parse_fails(stray, "unexpected argument \"REDIRECT\"", NULL);
}

static void test_rerun_deletes_previous_jumps(void **state)
{
    (void)state;
    /* What iptables-save printed after a first run with -k net1. */
    const char *saved = "# Generated by iptables-save v1.8.9\n"
                        "*nat\n"
                        ":PREROUTING ACCEPT [0:0]\n"
                        ":OUTPUT ACCEPT [0:0]\n"
                        ":ISTIO_INBOUND - [0:0]\n"
                        ":ISTIO_OUTPUT - [0:0]\n"
                        "-A PREROUTING -i net1 -j ISTIO_REDIRECT\n"
                        "-A PREROUTING -i net1 -j RETURN\n"
                        "-A PREROUTING -p tcp -j ISTIO_INBOUND\n"
                        "-A OUTPUT -p tcp -j ISTIO_OUTPUT\n"
                        "-A OUTPUT -o eth7 -j RETURN\n"
                        "-A ISTIO_OUTPUT -j ISTIO_REDIRECT\n"
                        "COMMIT\n";
    const char *args[] = {"-i", "*", "-b", "*", "-k", "net1", NULL};
    char *r = rules_for(args, 4, saved);
    assert_line(r, "-D PREROUTING -i net1 -j ISTIO_REDIRECT");
    assert_line(r, "-D PREROUTING -i net1 -j RETURN");
    assert_line(r, "-D PREROUTING -p tcp -j ISTIO_INBOUND");
    assert_line(r, "-D OUTPUT -p tcp -j ISTIO_OUTPUT");
    /* Rules of others and rules inside our (re-declared, so flushed) chains stay. */
    assert_no_line(r, "-D OUTPUT -o eth7 -j RETURN");
    assert_no_line(r, "-D ISTIO_OUTPUT -j ISTIO_REDIRECT");
    /* Deletions come before the new rules. */
    assert_before(r, "-D OUTPUT -p tcp -j ISTIO_OUTPUT", "-A OUTPUT -p tcp -j ISTIO_OUTPUT");
    free(r);

    /* Without a previous run nothing is deleted, not even matching RETURNs. */
    const char *fresh = "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -i net1 -j RETURN\nCOMMIT\n";
    r = rules_for(args, 4, fresh);
    assert_null(strstr(r, "\n-D "));
    free(r);
}

static void test_dry_run_prints_and_changes_nothing(void **state)
{
    (void)state;
    const char *args[] = {INJECTOR_ARGS, "-n", NULL};
    px_init_opts_t o;
    parse_ok(&o, args);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    char err[256] = "";
    /* PATH without any iptables: a dry run must not need one. */
    char *old = getenv("PATH") ? strdup(getenv("PATH")) : NULL;
    setenv("PATH", "/nonexistent", 1);
    int rc = px_init_run(&o, f, err, sizeof(err));
    if (old) {
        setenv("PATH", old, 1);
        free(old);
    }
    fclose(f);
    assert_int_equal(rc, 0);
    assert_line(buf, "-A ISTIO_OUTPUT -j ISTIO_REDIRECT");
    assert_line(buf, "COMMIT");
    free(buf);
}

/* ---- wait ---------------------------------------------------------------- */

typedef struct ready_server {
    int fd;
    int port;
    int not_ready; /* answer 503 this many times, then 200 */
    int served;
    pthread_t thread;
} ready_server_t;

static void *serve(void *arg)
{
    ready_server_t *s = arg;
    for (;;) {
        int c = accept(s->fd, NULL, NULL);
        if (c < 0)
            return NULL;
        char buf[2048];
        ssize_t n = read(c, buf, sizeof(buf));
        (void)n;
        const char *resp =
            s->served < s->not_ready
                ? "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: "
                  "close\r\n\r\n"
                : "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        s->served++;
        ssize_t w = write(c, resp, strlen(resp));
        (void)w;
        close(c);
    }
}

static void server_start(ready_server_t *s, int not_ready)
{
    memset(s, 0, sizeof(*s));
    s->not_ready = not_ready;
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s->fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(s->fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t al = sizeof(a);
    assert_int_equal(getsockname(s->fd, (struct sockaddr *)&a, &al), 0);
    s->port = ntohs(a.sin_port);
    assert_int_equal(listen(s->fd, 16), 0);
    assert_int_equal(pthread_create(&s->thread, NULL, serve, s), 0);
}

static void server_stop(ready_server_t *s)
{
    shutdown(s->fd, SHUT_RDWR);
    pthread_join(s->thread, NULL);
    close(s->fd);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_wait_until_ready(void **state)
{
    (void)state;
    ready_server_t s;
    server_start(&s, 3);
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/healthz/ready", s.port);
    px_wait_opts_t w = {.url = url, .timeout_s = 20, .period_ms = 50, .request_timeout_ms = 1000};
    char err[512] = "";
    int rc = px_wait_run(&w, err, sizeof(err));
    if (rc != 0)
        print_error("%s\n", err);
    assert_int_equal(rc, 0);
    assert_int_equal(s.served, 4); /* three 503s, then the 200 */
    server_stop(&s);
}

static void test_wait_gives_up_with_last_answer(void **state)
{
    (void)state;
    ready_server_t s;
    server_start(&s, 1 << 30);
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/healthz/ready", s.port);
    px_wait_opts_t w = {.url = url, .timeout_s = 1, .period_ms = 100, .request_timeout_ms = 500};
    char err[512] = "";
    double t0 = now_s();
    int rc = px_wait_run(&w, err, sizeof(err));
    double took = now_s() - t0;
    server_stop(&s);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(err, url));
    assert_non_null(strstr(err, "not ready after 1 s"));
    assert_non_null(strstr(err, "HTTP 503"));
    assert_true(took >= 0.9 && took < 6.0);
    assert_true(s.served >= 2);
}

static void test_wait_reports_refused_connection(void **state)
{
    (void)state;
    /* A port nothing listens on: bind, read the port, close. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t al = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &al);
    close(fd);
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/healthz/ready", ntohs(a.sin_port));
    px_wait_opts_t w = {.url = url, .timeout_s = 0, .period_ms = 100, .request_timeout_ms = 500};
    char err[512] = "";
    assert_int_equal(px_wait_run(&w, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "not ready after 0 s"));
    assert_non_null(strstr(err, "onnect"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_injector_defaults_exact),
        cmocka_unit_test(test_cidrs_and_exclusions),
        cmocka_unit_test(test_inbound_port_list_and_none),
        cmocka_unit_test(test_loopback_include_keeps_app_to_app_capture),
        cmocka_unit_test(test_owner_lists_and_gid_default),
        cmocka_unit_test(test_virtual_interfaces),
        cmocka_unit_test(test_ipv6_only_when_given),
        cmocka_unit_test(test_flag_spellings),
        cmocka_unit_test(test_bad_flags_are_named),
        cmocka_unit_test(test_rerun_deletes_previous_jumps),
        cmocka_unit_test(test_dry_run_prints_and_changes_nothing),
        cmocka_unit_test(test_wait_until_ready),
        cmocka_unit_test(test_wait_gives_up_with_last_answer),
        cmocka_unit_test(test_wait_reports_refused_connection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
