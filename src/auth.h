/* auth: who a request comes from: bearer tokens (kept as SHA-256) and client certificates. */
#ifndef NODEX_AUTH_H
#define NODEX_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "service.h"

/* The principals of auth.principals with their token hashes. Immutable once made: any thread
 * may authenticate against it at once. */
typedef struct auth auth;

/* Reads every principal's token (token_file, or token_env, which is then removed from the
 * environment so that no child inherits it), keeps only its SHA-256 and parses the allow lists.
 * With no principals configured every request is service_anonymous. Returns NULL with a
 * message in err (a missing file, an empty or short token, out of memory). `cfg` must outlive
 * it. Free with auth_free. */
auth *auth_new(const config *cfg, char *err, size_t err_len);
/* auth_new for a reload: token files are read again; a token_env principal whose variable is
 * gone (auth_new removed it) keeps `previous`'s token when `previous` had it under the same name
 * and variable. `previous` may be NULL and is not changed. */
auth *auth_renew(const config *cfg, const auth *previous, char *err, size_t err_len);
void auth_free(auth *a);
/* True when principals are configured: every request must prove one. */
bool auth_required(const auth *a);

/* What a request brought to prove who it is; every field may be NULL / 0. */
typedef struct auth_credentials {
    const char *authorization; /* the Authorization header (HTTP) or metadata (gRPC) value */
    size_t authorization_len;
    const char *cert_subject;     /* subject DN of a client certificate the TLS layer verified */
    const char *const *cert_sans; /* its DNS and URI SANs */
    size_t cert_san_count;
} auth_credentials;

/* Splits a TLS layer's "DNS:a.example,URI:spiffe://x" list in place into its values
 * ("a.example", "spiffe://x"), at most `max`, into out. Returns how many. */
size_t auth_split_sans(char *sans, const char **out, size_t max);

/* The principal `cr` proves: SERVICE_OK with *out set (service_anonymous when auth is not
 * required), or SERVICE_UNAUTHENTICATED with why (no credentials, a malformed header, an unknown
 * token, an unknown certificate). A token is compared with every principal's in constant time.
 * *out lives as long as `a`. */
service_status auth_authenticate(const auth *a, const auth_credentials *cr,
                                 const service_principal **out, service_error *err);

/* Lowercase hex SHA-256 of `data` into out (65 bytes). Returns 0, or -1. */
int auth_sha256_hex(const void *data, size_t len, char out[65]);

#endif
