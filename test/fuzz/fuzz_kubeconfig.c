/*
 * libFuzzer target: kubeconfig files. The input is written to an in-memory
 * file and read by kube_client_new() as `--kubeconfig` would be: YAML parse,
 * context/cluster/user resolution, base64 data, PEM checks. Nothing is sent.
 */
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../../common/log.h"
#include "../../controlplane/kube.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int quiet;
    if (!quiet) {
        log_set_level(LOG_NONE);
        quiet = 1;
    }
    int fd = memfd_create("kubeconfig", 0);
    if (fd < 0)
        return 0;
    if (write(fd, data, size) == (ssize_t)size) {
        char path[64], err[512];
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        kube_opts_t o = {.kubeconfig = path};
        kube_client_t *c = kube_client_new(&o, err, sizeof(err));
        kube_client_free(c);
    }
    close(fd);
    return 0;
}
