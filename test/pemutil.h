/*
 * pemutil: throwaway certificates for tests: a self-signed ECDSA P-256
 * certificate for a common name, valid for an hour, as PEM strings.
 */
#ifndef MESH_TEST_PEMUTIL_H
#define MESH_TEST_PEMUTIL_H

typedef struct tu_pem {
    char *cert, *key;
} tu_pem_t;

/* Fails the test if OpenSSL cannot make one. Free with tu_pem_free(). */
tu_pem_t tu_self_signed(const char *cn);
void tu_pem_free(tu_pem_t *p);

#endif
