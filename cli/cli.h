/*
 * cli: meshctl, the operator command line. main.c dispatches to one function
 * per command; each parses its own flags and returns the process exit status.
 */
#ifndef MESH_CLI_H
#define MESH_CLI_H

/* meshctl validate -f FILE|DIR|- ... */
int meshctl_validate(int argc, char **argv);
/* meshctl crds [--out DIR]: the CustomResourceDefinitions of the mesh kinds. */
int meshctl_crds(int argc, char **argv);

/* meshctl kube-inject -f FILE|-: the manifest with the sidecar injected. */
int meshctl_kube_inject(int argc, char **argv);
/* meshctl ca sign ...: a workload certificate from meshd's CA (debugging). */
int meshctl_ca(int argc, char **argv);

/* meshctl proxy-status [--debug-addr ADDR]: each proxy's xDS sync state. */
int meshctl_proxy_status(int argc, char **argv);

#endif
