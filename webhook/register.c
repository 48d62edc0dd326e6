/*
 * Registration: keeps the MutatingWebhookConfiguration's and the
 * ValidatingWebhookConfiguration's caBundle equal to the CA that signed the
 * serving certificate, and turns the validating webhooks' failurePolicy to
 * Fail once meshd serves them (through the Kubernetes client).
 */
#include <stdio.h>
#include <string.h>

#include "../common/log.h"
#include "../controlplane/kube.h"
#include "webhook_internal.h"

int webhook_register(struct kube_client *c, const webhook_register_opts_t *o, char *err, size_t errlen)
{
    char why[512];
    const struct {
        const char *kind;
        const char *name;
        const char *what;
    } cfgs[] = {{"mutating", o->mutating, "MutatingWebhookConfiguration"},
                {"validating", o->validating, "ValidatingWebhookConfiguration"}};
    if (o->ca_pem == NULL || strstr(o->ca_pem, "-----BEGIN CERTIFICATE-----") == NULL) {
        snprintf(err, errlen, "webhook registration: the CA bundle is not a PEM certificate");
        return -1;
    }
    for (size_t i = 0; i < 2; i++) {
        if (cfgs[i].name == NULL)
            continue;
        int rc = kube_webhook_patch_cabundle(c, cfgs[i].kind, cfgs[i].name, o->ca_pem, why, sizeof(why));
        if (rc == KUBE_NOTFOUND) {
            log_warn("%s %s not found: its caBundle is not managed (install it with the chart)", cfgs[i].what,
                     cfgs[i].name);
            continue;
        }
        if (rc != 0) {
            snprintf(err, errlen, "%s %s: cannot set caBundle: %s", cfgs[i].what, cfgs[i].name, why);
            return -1;
        }
        log_info("%s %s: caBundle is current", cfgs[i].what, cfgs[i].name);
        if (i == 1 && o->ready) {
            rc = kube_webhook_set_failure_policy(c, cfgs[i].name, "Fail", why, sizeof(why));
            if (rc == KUBE_NOTFOUND)
                continue;
            if (rc != 0) {
                snprintf(err, errlen, "%s %s: cannot set failurePolicy to Fail: %s", cfgs[i].what, cfgs[i].name, why);
                return -1;
            }
            log_info("%s %s: failurePolicy is Fail", cfgs[i].what, cfgs[i].name);
        }
    }
    return 0;
}
