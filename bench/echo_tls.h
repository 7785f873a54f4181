/* echo_tls: the echo servers' --tls files, read and checked by nodexd's own loader (src/tls.c),
 * so a ceiling serves what nodexd would; only at start-up, never on the measured path. */
#ifndef NODEX_BENCH_ECHO_TLS_H
#define NODEX_BENCH_ECHO_TLS_H

#include <stdio.h>

#include "tls.h"

/* Fills `out` with the PEM texts of the certificate chain and its key (free with
 * tls_pem_clear). Returns 0, or -1 with the reason on stderr after `prog`. */
static inline int echo_tls_load(const char *prog, char *cert_path, char *key_path, tls_pem *out) {
    config_tls cfg = {
        .enabled = true, .cert_file = cert_path, .key_file = key_path, .origin = "--tls"};
    char err[512] = "--tls: out of memory";
    tls_creds *t = tls_creds_load(&cfg, err, sizeof err);
    int rc = t ? tls_creds_pem(t, out) : -1;
    tls_creds_free(t);
    if (rc != 0) fprintf(stderr, "%s: %s\n", prog, err);
    return rc;
}

#endif
