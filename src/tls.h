/* tls: a listener's TLS credentials (PEM files checked with GnuTLS, swapped on reload) and the
 * identity in a peer's verified client certificate. */
#ifndef NODEX_TLS_H
#define NODEX_TLS_H

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* GnuTLS priorities of every TLS listener: TLS 1.2 and 1.3 only. */
#define TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"

typedef struct tls_creds tls_creds;

/* The identity a client certificate carries. Empty strings when there is none. */
typedef struct tls_peer {
    bool present;      /* the client presented a certificate that was verified */
    char subject[512]; /* RFC 4514 DN of the leaf, "CN=ops,O=Example" */
    char sans[1024];   /* DNS and URI subject alternative names: "DNS:a.example,URI:spiffe://x" */
} tls_peer;

/* Copies of the current PEM texts, for a consumer that builds its own credentials (gRPC). */
typedef struct tls_pem {
    char *cert; /* certificate chain */
    char *key;  /* private key: tls_pem_clear wipes it */
    char *ca;   /* client CA certificates, NULL when none */
    uint64_t generation;
} tls_pem;

/* Reads and checks cfg's files: the chain parses, the key parses and belongs to the leaf, the CA
 * file (if any) holds at least one certificate. Returns NULL with a message naming the config
 * key and the file in err. `cfg` must outlive the result. Call from one thread. */
tls_creds *tls_creds_load(const config_tls *cfg, char *err, size_t err_len);
/* Re-reads the files; on success the new set serves every handshake from now on and the
 * generation grows by one. On failure returns -1 with the reason and the old set stays. Sets
 * in use by a handshake stay valid until tls_creds_free. Any thread. */
int tls_creds_reload(tls_creds *t, char *err, size_t err_len);
/* Frees every set (current and replaced). No handshake may be running. NULL is allowed. */
void tls_creds_free(tls_creds *t);
/* The current set's generation: 1 after load, +1 per successful reload. Any thread. */
uint64_t tls_creds_generation(tls_creds *t);
/* "serial=0A1B sha256=AB:CD:..." of the current leaf certificate, into out. Any thread. */
void tls_creds_describe(tls_creds *t, char *out, size_t out_len);
/* Logs "<prefix> serial=... sha256=..." and the client-certificate mode at info level. */
void tls_creds_log(tls_creds *t, const char *prefix);
/* Fills `out` with malloc'd copies of the current PEM texts. Returns 0, or -1 when out of
 * memory. Free with tls_pem_clear. Any thread. */
int tls_creds_pem(tls_creds *t, tls_pem *out);
/* Wipes the key and frees the copies. */
void tls_pem_clear(tls_pem *p);

/* For a GnuTLS server session being handshaken: hands out the current certificate chain and
 * key (valid until tls_creds_free) and asks for a client certificate when a client CA is set
 * (required with require_client_cert); the session must then verify it with
 * tls_creds_verify_peer (gnutls_session_set_verify_function). Returns 0. Any thread. */
int tls_creds_retrieve(tls_creds *t, gnutls_session_t s, gnutls_pcert_st **pcert,
                       unsigned *pcert_length, gnutls_privkey_t *key);
/* Checks the session's client certificate chain against the current client CA: 0 when it
 * chains to it (or none was sent and none is required), else -1 (the handshake fails). */
int tls_creds_verify_peer(tls_creds *t, gnutls_session_t s);

/* The subject DN and DNS/URI SANs of the session's client certificate. The caller makes sure
 * the session verified it (tls_creds_verify_peer). out->present is false when there is none. */
void tls_session_peer(gnutls_session_t s, tls_peer *out);
/* Appends "KIND:value" to out->sans, comma-separated; silently cut when full. */
void tls_peer_add_san(tls_peer *out, const char *kind, const char *value, size_t len);

#endif
