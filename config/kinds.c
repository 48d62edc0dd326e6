/* The kinds the mesh reads: API group, served versions, names, schema, validator. */
#include <string.h>

#include "config_internal.h"

static const char *const net_versions[] = {"v1", "v1beta1", "v1alpha3", NULL};
static const char *const sec_versions[] = {"v1", "v1beta1", NULL};
static const char *const core_versions[] = {"v1", NULL};
static const char *const beta_versions[] = {"v1", "v1beta1", NULL};

static const char *const sn_vs[] = {"vs", NULL};
static const char *const sn_dr[] = {"dr", NULL};
static const char *const sn_gw[] = {"gw", NULL};
static const char *const sn_se[] = {"se", NULL};
static const char *const sn_pa[] = {"pa", NULL};
static const char *const sn_ap[] = {"ap", NULL};
static const char *const sn_ra[] = {"ra", NULL};

#define NET "networking.istio.io"
#define SEC "security.istio.io"

#define KIND(K, grp, plural, vers, sn, ns, mesh, doc)                                              \
    [CFG_##K] = {CFG_##K, #K, grp, plural, vers, "v1", sn, ns, mesh, &cfg_##K##Object_desc,          \
                 cfg_validate_##K, doc}

static const cfg_kind_info_t kinds[CFG_KIND_COUNT] = {
    KIND(VirtualService, NET, "virtualservices", net_versions, sn_vs, true, true,
         "Routing rules for traffic to a set of hosts: matches, weighted destinations, "
         "retries, timeouts, fault injection, mirroring."),
    KIND(DestinationRule, NET, "destinationrules", net_versions, sn_dr, true, true,
         "Policies applied to traffic for a service after routing: subsets, load "
         "balancing, connection pools, outlier detection, TLS."),
    KIND(Gateway, NET, "gateways", net_versions, sn_gw, true, true,
         "A load balancer at the edge of the mesh: the ports, protocols, hosts and TLS "
         "settings a gateway proxy serves."),
    KIND(ServiceEntry, NET, "serviceentries", net_versions, sn_se, true, true,
         "Adds services to the mesh's registry: external hosts, static endpoints, "
         "workloads selected by labels."),
    KIND(Sidecar, NET, "sidecars", net_versions, NULL, true, true,
         "The ingress and egress a sidecar proxy handles, limiting what it receives."),
    KIND(PeerAuthentication, SEC, "peerauthentications", sec_versions, sn_pa, true, true,
         "The mutual TLS mode a workload accepts: STRICT, PERMISSIVE or DISABLE."),
    KIND(AuthorizationPolicy, SEC, "authorizationpolicies", sec_versions, sn_ap, true, true,
         "Access control for workloads: ALLOW, DENY, AUDIT or CUSTOM rules on sources, "
         "operations and conditions."),
    KIND(RequestAuthentication, SEC, "requestauthentications", sec_versions, sn_ra, true, true,
         "The JSON Web Tokens a workload accepts and how to find and verify them."),
    KIND(Namespace, "", "namespaces", core_versions, NULL, false, false, "A namespace."),
    KIND(Service, "", "services", core_versions, NULL, true, false, "A Kubernetes Service."),
    KIND(EndpointSlice, "discovery.k8s.io", "endpointslices", beta_versions, NULL, true, false,
         "Endpoints of a Service."),
    KIND(Endpoints, "", "endpoints", core_versions, NULL, true, false,
         "Endpoints of a Service (legacy API)."),
    KIND(Pod, "", "pods", core_versions, NULL, true, false, "A Pod."),
    KIND(ServiceAccount, "", "serviceaccounts", core_versions, NULL, true, false,
         "A service account: the workload identity."),
    KIND(Secret, "", "secrets", core_versions, NULL, true, false, "A Secret."),
    KIND(ConfigMap, "", "configmaps", core_versions, NULL, true, false, "A ConfigMap."),
    KIND(MutatingWebhookConfiguration, "admissionregistration.k8s.io",
         "mutatingwebhookconfigurations", beta_versions, NULL, false, false,
         "Registration of mutating admission webhooks."),
};

const cfg_kind_info_t *cfg_kind_info(cfg_kind_t k)
{
    if (k <= CFG_KIND_NONE || k >= CFG_KIND_COUNT)
        return NULL;
    return &kinds[k];
}

cfg_kind_t cfg_kind_find(const char *group, const char *kind)
{
    for (int k = CFG_KIND_NONE + 1; k < CFG_KIND_COUNT; k++)
        if (strcmp(kinds[k].group, group) == 0 && strcmp(kinds[k].name, kind) == 0)
            return (cfg_kind_t)k;
    return CFG_KIND_NONE;
}

cfg_kind_t cfg_kind_by_name(const char *name)
{
    for (int k = CFG_KIND_NONE + 1; k < CFG_KIND_COUNT; k++)
        if (strcmp(kinds[k].name, name) == 0)
            return (cfg_kind_t)k;
    return CFG_KIND_NONE;
}
