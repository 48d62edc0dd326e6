/* meshctl: the operator command line. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

#ifndef MESH_VERSION
#define MESH_VERSION "0.1.0"
#endif

static void usage(FILE *out)
{
    fputs("usage: meshctl COMMAND [flags]\n"
          "\n"
          "commands:\n"
          "  validate -f FILE|DIR|-   check mesh configuration offline; exit 1 if any document is rejected\n"
          "  crds [--out DIR]         print (or write) the CustomResourceDefinitions of the mesh kinds\n"
          "  kube-inject -f FILE|-    print the manifest with the sidecar injected into every pod template\n"
          "  ca sign ...              get a workload certificate from meshd's CA (debugging)\n"
          "  proxy-status             each connected proxy and whether its config is in sync\n"
          "  version                  print the version\n",
          out);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "validate") == 0 || strcmp(cmd, "v") == 0)
        return meshctl_validate(argc - 1, argv + 1);
    if (strcmp(cmd, "crds") == 0)
        return meshctl_crds(argc - 1, argv + 1);
    if (strcmp(cmd, "kube-inject") == 0)
        return meshctl_kube_inject(argc - 1, argv + 1);
    if (strcmp(cmd, "ca") == 0)
        return meshctl_ca(argc - 1, argv + 1);
    if (strcmp(cmd, "proxy-status") == 0 || strcmp(cmd, "ps") == 0)
        return meshctl_proxy_status(argc - 1, argv + 1);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("meshctl %s\n", MESH_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "meshctl: unknown command \"%s\"\n", cmd);
    usage(stderr);
    return 2;
}
