/*
 * b64: base64 for the control plane (Kubernetes Secret and ConfigMap data,
 * caBundles, JWT segments, JSONPatches). Allocation failures abort, as
 * everywhere in the control plane (mesh_xmalloc).
 */
#ifndef MESH_B64_H
#define MESH_B64_H

#include <stddef.h>

/* Standard base64 with padding; malloc'd and NUL-terminated. */
char *b64_encode(const void *in, size_t len);
/* Decodes standard or URL-safe base64, padding optional, white space
 * skipped. A malloc'd buffer with a NUL after the *outlen bytes, or NULL
 * when the input is not base64. */
unsigned char *b64_decode(const char *in, size_t len, size_t *outlen);

#endif
