/*
 * init: the pod's traffic capture and start-up helpers (private to proxy/;
 * see init.c), behind `meshproxy init` and `meshproxy wait`.
 *
 * `meshproxy init` takes Istio's istio-iptables flags (the injector's
 * istio-init container: -p 15001 -z 15006 -u 1337 -g 1337 -m REDIRECT -i ...
 * -x ... -b ... -d ...), turns them into the nat-table rules istio-iptables
 * builds for REDIRECT mode (chains ISTIO_INBOUND, ISTIO_IN_REDIRECT,
 * ISTIO_OUTPUT, ISTIO_REDIRECT) and applies them in one transaction with
 * `iptables-restore --noflush` (and ip6tables-restore when IPv6 ranges are
 * given). Parsing and rule generation are pure functions; px_init_run() is
 * the only part that touches the system. Everything here is single-threaded
 * and owns only what it returns.
 */
#ifndef MESH_PROXY_INIT_INTERNAL_H
#define MESH_PROXY_INIT_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define PX_INIT_MAX_LIST 64 /* entries in one list flag (ports, CIDRs, UIDs, interfaces) */
#define PX_INIT_IFNAME 16   /* IFNAMSIZ */

typedef struct px_init_cidr {
    int family;       /* 4 or 6 */
    uint8_t addr[16]; /* network address, host bits cleared */
    int prefix;       /* 0..32 or 0..128 */
} px_init_cidr_t;

/* A list flag that may also be "*" (everything) or "" (nothing). */
typedef enum { PX_LIST_NONE, PX_LIST_ALL, PX_LIST_SOME } px_list_kind_t;

typedef struct px_init_opts {
    int outbound_port;               /* -p: where outbound TCP is redirected (15001) */
    int inbound_port;                /* -z: where inbound TCP is redirected (15006) */
    int tunnel_port;                 /* --inbound-tunnel-port: never captured inbound (15008) */
    uint32_t uids[PX_INIT_MAX_LIST]; /* -u: owners never captured (1337) */
    size_t nuids;
    uint32_t gids[PX_INIT_MAX_LIST]; /* -g: defaults to -u */
    size_t ngids;
    px_list_kind_t include_cidrs_kind; /* -i: "*", CIDRs, or "" for no outbound capture */
    px_init_cidr_t include_cidrs[PX_INIT_MAX_LIST];
    size_t ninclude_cidrs;
    px_init_cidr_t exclude_cidrs[PX_INIT_MAX_LIST]; /* -x */
    size_t nexclude_cidrs;
    px_list_kind_t inbound_ports_kind; /* -b: "*", ports, or "" for no inbound capture */
    uint16_t inbound_ports[PX_INIT_MAX_LIST];
    size_t ninbound_ports;
    uint16_t exclude_inbound_ports[PX_INIT_MAX_LIST]; /* -d (with -b "*") */
    size_t nexclude_inbound_ports;
    uint16_t exclude_outbound_ports[PX_INIT_MAX_LIST]; /* -o */
    size_t nexclude_outbound_ports;
    uint16_t include_outbound_ports[PX_INIT_MAX_LIST]; /* -q */
    size_t ninclude_outbound_ports;
    char virt_ifaces[PX_INIT_MAX_LIST][PX_INIT_IFNAME]; /* -k: inbound treated as outbound */
    size_t nvirt_ifaces;
    char exclude_ifaces[PX_INIT_MAX_LIST][PX_INIT_IFNAME]; /* -c: never captured */
    size_t nexclude_ifaces;
    bool dry_run;        /* -n: print the rules, change nothing */
    bool run_validation; /* --run-validation: check that capture works after applying */
    bool skip_apply;     /* --skip-rule-apply: only validate (with --run-validation) */
    bool help;           /* -h: the caller prints px_init_usage() */
} px_init_opts_t;

/* Parses the arguments after "init" (Istio's istio-iptables flags, short and
 * long forms, "-p 1", "-p1", "--envoy-port 1", "--envoy-port=1"). Returns 0,
 * or -1 with err naming the flag, the bad value and why. */
int px_init_parse(int argc, char **argv, px_init_opts_t *o, char *err, size_t errlen);

/* Prints the flags `meshproxy init` accepts. */
void px_init_usage(FILE *f);

/* True when the options name an IPv6 range (-i or -x), so that ip6tables
 * rules are built and applied as well. */
bool px_init_wants_ipv6(const px_init_opts_t *o);

/* Builds the iptables-restore input (nat table, for --noflush) for family 4
 * or 6. `existing` is the current `iptables-save -t nat` text or NULL: the
 * jumps a previous run left in the built-in chains are deleted first, so that
 * running twice leaves one copy of every rule. Returns a malloc'd string the
 * caller frees, NULL on out-of-memory. */
char *px_init_rules(const px_init_opts_t *o, int family, const char *existing);

/* Formats a CIDR as iptables-save prints it ("10.96.0.0/24"). */
void px_init_cidr_format(const px_init_cidr_t *c, char *buf, size_t len);

/* Does what the options ask: prints the rules (dry run) to out, or applies
 * them with iptables-restore / ip6tables-restore (fork and exec, no shell;
 * with IPv6 also `ip -6 addr add ::6/128 dev lo`, the passthrough source),
 * printing what was applied, then validates capture when asked. Returns 0, or
 * -1 with err saying which step failed and what the tool said. Blocking: for
 * the init container's process only. */
int px_init_run(const px_init_opts_t *o, FILE *out, char *err, size_t errlen);

/* `meshproxy wait`: polls url until it answers 200 or timeout_s passes. */
typedef struct px_wait_opts {
    const char *url;         /* default http://127.0.0.1:15021/healthz/ready */
    long timeout_s;          /* default 60 */
    long period_ms;          /* between attempts, default 500 */
    long request_timeout_ms; /* one attempt, default 1000 */
} px_wait_opts_t;

/* Blocks until ready (0) or the timeout (-1 with err holding the URL and the
 * last answer or connection error). Reports progress to log at debug. */
int px_wait_run(const px_wait_opts_t *o, char *err, size_t errlen);

#endif
