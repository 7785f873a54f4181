/* tls: a listener's TLS credentials (PEM files checked with GnuTLS, swapped on reload) and the
 * identity in a peer's verified client certificate. */
#include "tls.h"

#include <errno.h>
#include <gnutls/abstract.h>
#include <gnutls/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define TLS_MAX_CHAIN     16
#define TLS_MAX_PEM_BYTES (1u << 20)

/* One loaded generation of the files. Replaced sets stay allocated (a handshake may still hold
 * their certificate or key) until tls_creds_free: a few KiB per reload. */
typedef struct tls_set {
    gnutls_pcert_st pcert[TLS_MAX_CHAIN];
    unsigned pcert_count;
    gnutls_privkey_t key;
    gnutls_x509_trust_list_t ca; /* NULL when no client CA is configured */
    char *cert_pem, *key_pem, *ca_pem;
    size_t key_pem_len;
    char description[256];
    uint64_t generation;
    struct tls_set *older;
} tls_set;

struct tls_creds {
    const config_tls *cfg;
    pthread_mutex_t mu; /* guards current */
    tls_set *current;
};

static void tls_set_free(tls_set *s) {
    if (!s) return;
    for (unsigned i = 0; i < s->pcert_count; i++) gnutls_pcert_deinit(&s->pcert[i]);
    if (s->key) gnutls_privkey_deinit(s->key);
    if (s->ca) gnutls_x509_trust_list_deinit(s->ca, 1);
    if (s->key_pem) gnutls_memset(s->key_pem, 0, s->key_pem_len);
    free(s->cert_pem);
    free(s->key_pem);
    free(s->ca_pem);
    free(s);
}

/* Reads a whole (small) file as a NUL-terminated string. */
static char *tls_read_file(const char *path, size_t *len, char *why, size_t why_len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(why, why_len, "cannot open: %s", strerror(errno));
        return NULL;
    }
    char *buf = malloc(TLS_MAX_PEM_BYTES + 1);
    size_t n = buf ? fread(buf, 1, TLS_MAX_PEM_BYTES + 1, f) : 0;
    int failed = buf ? ferror(f) : 1;
    fclose(f);
    if (failed || n > TLS_MAX_PEM_BYTES || n == 0) {
        snprintf(why, why_len, "%s",
                 !buf     ? "out of memory"
                 : failed ? "cannot read"
                 : n == 0 ? "empty file"
                          : "larger than 1 MiB");
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* "serial=... sha256=..." of a DER certificate. */
static void tls_describe_der(const gnutls_datum_t *der, char *out, size_t out_len) {
    gnutls_x509_crt_t crt;
    unsigned char serial[64], fp[32];
    size_t serial_len = sizeof serial, fp_len = sizeof fp;
    snprintf(out, out_len, "(unreadable certificate)");
    if (gnutls_x509_crt_init(&crt) < 0) return;
    if (gnutls_x509_crt_import(crt, der, GNUTLS_X509_FMT_DER) == 0 &&
        gnutls_x509_crt_get_serial(crt, serial, &serial_len) == 0 &&
        gnutls_x509_crt_get_fingerprint(crt, GNUTLS_DIG_SHA256, fp, &fp_len) == 0) {
        size_t used = (size_t)snprintf(out, out_len, "serial=");
        for (size_t i = 0; i < serial_len && used + 3 < out_len; i++)
            used += (size_t)snprintf(out + used, out_len - used, "%02X", serial[i]);
        used += (size_t)snprintf(out + used, used < out_len ? out_len - used : 0, " sha256=");
        for (size_t i = 0; i < fp_len && used + 4 < out_len; i++)
            used += (size_t)snprintf(out + used, out_len - used, "%s%02X", i ? ":" : "", fp[i]);
    }
    gnutls_x509_crt_deinit(crt);
}

/* Loads one set from the configured files; NULL with "KEY FILE: what" in err. */
static tls_set *tls_set_load(const config_tls *cfg, char *err, size_t err_len) {
    char why[256];
    tls_set *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, err_len, "%s: out of memory", cfg->origin);
        return NULL;
    }
    size_t cert_len = 0, ca_len = 0;
    const char *key = "cert_file", *file = cfg->cert_file;
    if (!(s->cert_pem = tls_read_file(cfg->cert_file, &cert_len, why, sizeof why))) goto fail;
    key = "key_file", file = cfg->key_file;
    if (!(s->key_pem = tls_read_file(cfg->key_file, &s->key_pem_len, why, sizeof why))) goto fail;
    if (cfg->client_ca_file) {
        key = "client_ca_file", file = cfg->client_ca_file;
        if (!(s->ca_pem = tls_read_file(cfg->client_ca_file, &ca_len, why, sizeof why))) goto fail;
    }
    gnutls_datum_t cert = {(unsigned char *)s->cert_pem, (unsigned)cert_len};
    gnutls_datum_t kd = {(unsigned char *)s->key_pem, (unsigned)s->key_pem_len};
    key = "cert_file", file = cfg->cert_file;
    s->pcert_count = TLS_MAX_CHAIN;
    int rc =
        gnutls_pcert_list_import_x509_raw(s->pcert, &s->pcert_count, &cert, GNUTLS_X509_FMT_PEM, 0);
    if (rc < 0) {
        s->pcert_count = 0;
        snprintf(why, sizeof why, "no PEM certificate chain (at most %d): %s", TLS_MAX_CHAIN,
                 gnutls_strerror(rc));
        goto fail;
    }
    key = "key_file", file = cfg->key_file;
    if ((rc = gnutls_privkey_init(&s->key)) < 0 ||
        (rc = gnutls_privkey_import_x509_raw(s->key, &kd, GNUTLS_X509_FMT_PEM, NULL, 0)) < 0) {
        snprintf(why, sizeof why, "not an unencrypted PEM private key: %s", gnutls_strerror(rc));
        goto fail;
    }
    /* GnuTLS checks that the key belongs to the leaf when both go into one credential. */
    gnutls_certificate_credentials_t check;
    if ((rc = gnutls_certificate_allocate_credentials(&check)) == 0) {
        rc = gnutls_certificate_set_x509_key_mem2(check, &cert, &kd, GNUTLS_X509_FMT_PEM, NULL, 0);
        gnutls_certificate_free_credentials(check);
    }
    if (rc < 0) {
        snprintf(why, sizeof why, "%s (cert_file %s)",
                 rc == GNUTLS_E_CERTIFICATE_KEY_MISMATCH ? "does not match the certificate"
                                                         : gnutls_strerror(rc),
                 cfg->cert_file);
        goto fail;
    }
    if (cfg->client_ca_file) {
        key = "client_ca_file", file = cfg->client_ca_file;
        gnutls_datum_t ca = {(unsigned char *)s->ca_pem, (unsigned)ca_len};
        if ((rc = gnutls_x509_trust_list_init(&s->ca, 0)) < 0 ||
            (rc = gnutls_x509_trust_list_add_trust_mem(s->ca, &ca, NULL, GNUTLS_X509_FMT_PEM, 0,
                                                       0)) <= 0) {
            snprintf(why, sizeof why, "no PEM CA certificate: %s",
                     rc < 0 ? gnutls_strerror(rc) : "none found");
            goto fail;
        }
    }
    tls_describe_der(&s->pcert[0].cert, s->description, sizeof s->description);
    return s;
fail:
    snprintf(err, err_len, "%s.%s %s: %s", cfg->origin, key, file, why);
    tls_set_free(s);
    return NULL;
}

tls_creds *tls_creds_load(const config_tls *cfg, char *err, size_t err_len) {
    tls_set *s = tls_set_load(cfg, err, err_len);
    tls_creds *t = s ? calloc(1, sizeof *t) : NULL;
    if (!t) {
        if (s) snprintf(err, err_len, "%s: out of memory", cfg->origin);
        tls_set_free(s);
        return NULL;
    }
    s->generation = 1;
    t->cfg = cfg;
    t->current = s;
    pthread_mutex_init(&t->mu, NULL);
    return t;
}

int tls_creds_reload(tls_creds *t, char *err, size_t err_len) {
    tls_set *s = tls_set_load(t->cfg, err, err_len);
    if (!s) return -1;
    pthread_mutex_lock(&t->mu);
    s->older = t->current;
    s->generation = t->current->generation + 1;
    t->current = s;
    pthread_mutex_unlock(&t->mu);
    return 0;
}

void tls_creds_free(tls_creds *t) {
    if (!t) return;
    for (tls_set *s = t->current, *older; s; s = older) {
        older = s->older;
        tls_set_free(s);
    }
    pthread_mutex_destroy(&t->mu);
    free(t);
}

/* The current set; it stays valid until tls_creds_free. */
static tls_set *tls_current(tls_creds *t) {
    pthread_mutex_lock(&t->mu);
    tls_set *s = t->current;
    pthread_mutex_unlock(&t->mu);
    return s;
}

uint64_t tls_creds_generation(tls_creds *t) {
    return tls_current(t)->generation;
}

void tls_creds_describe(tls_creds *t, char *out, size_t out_len) {
    snprintf(out, out_len, "%s", tls_current(t)->description);
}

void tls_creds_log(tls_creds *t, const char *prefix) {
    log_info("%s %s%s", prefix, tls_current(t)->description,
             t->cfg->require_client_cert ? ", client certificate required"
             : t->cfg->client_ca_file    ? ", client certificate verified if sent"
                                         : "");
}

int tls_creds_pem(tls_creds *t, tls_pem *out) {
    tls_set *s = tls_current(t);
    *out = (tls_pem){.cert = strdup(s->cert_pem),
                     .key = strdup(s->key_pem),
                     .ca = s->ca_pem ? strdup(s->ca_pem) : NULL,
                     .generation = s->generation};
    if (!out->cert || !out->key || (s->ca_pem && !out->ca)) {
        tls_pem_clear(out);
        return -1;
    }
    return 0;
}

void tls_pem_clear(tls_pem *p) {
    if (p->key) gnutls_memset(p->key, 0, strlen(p->key));
    free(p->cert);
    free(p->key);
    free(p->ca);
    *p = (tls_pem){0};
}

int tls_creds_retrieve(tls_creds *t, gnutls_session_t s, gnutls_pcert_st **pcert,
                       unsigned *pcert_length, gnutls_privkey_t *key) {
    tls_set *set = tls_current(t);
    *pcert = set->pcert;
    *pcert_length = set->pcert_count;
    *key = set->key;
    /* The certificate is chosen while the ClientHello is read, before the server's
     * CertificateRequest goes out: this is where the session learns to ask for one. */
    if (set->ca)
        gnutls_certificate_server_set_request(s, t->cfg->require_client_cert ? GNUTLS_CERT_REQUIRE
                                                                             : GNUTLS_CERT_REQUEST);
    return 0;
}

int tls_creds_verify_peer(tls_creds *t, gnutls_session_t s) {
    tls_set *set = tls_current(t);
    unsigned n = 0;
    const gnutls_datum_t *der = gnutls_certificate_get_peers(s, &n);
    if (!der || n == 0) return t->cfg->require_client_cert ? -1 : 0;
    if (!set->ca || n > TLS_MAX_CHAIN) return -1;
    gnutls_x509_crt_t chain[TLS_MAX_CHAIN];
    unsigned imported = 0;
    int rc = 0;
    for (; imported < n && rc == 0; imported++) {
        if ((rc = gnutls_x509_crt_init(&chain[imported])) < 0) break;
        rc = gnutls_x509_crt_import(chain[imported], &der[imported], GNUTLS_X509_FMT_DER);
    }
    unsigned status = 1;
    gnutls_typed_vdata_st purpose = {.type = GNUTLS_DT_KEY_PURPOSE_OID,
                                     .data = (unsigned char *)GNUTLS_KP_TLS_WWW_CLIENT};
    if (rc == 0 &&
        gnutls_x509_trust_list_verify_crt2(set->ca, chain, n, &purpose, 1, 0, &status, NULL) < 0)
        status = 1;
    for (unsigned i = 0; i < imported; i++) gnutls_x509_crt_deinit(chain[i]);
    return rc == 0 && status == 0 ? 0 : -1;
}

void tls_peer_add_san(tls_peer *out, const char *kind, const char *value, size_t len) {
    size_t used = strlen(out->sans);
    if (used + strlen(kind) + len + 3 > sizeof out->sans) return;
    snprintf(out->sans + used, sizeof out->sans - used, "%s%s:%.*s", used ? "," : "", kind,
             (int)len, value);
}

void tls_session_peer(gnutls_session_t s, tls_peer *out) {
    memset(out, 0, sizeof *out);
    unsigned n = 0;
    const gnutls_datum_t *der = gnutls_certificate_get_peers(s, &n);
    gnutls_x509_crt_t crt;
    if (!der || n == 0 || gnutls_x509_crt_init(&crt) < 0) return;
    if (gnutls_x509_crt_import(crt, &der[0], GNUTLS_X509_FMT_DER) == 0) {
        gnutls_datum_t dn = {NULL, 0};
        if (gnutls_x509_crt_get_dn3(crt, &dn, 0) == 0) {
            snprintf(out->subject, sizeof out->subject, "%.*s", (int)dn.size, (char *)dn.data);
            gnutls_free(dn.data);
        }
        out->present = true;
        for (unsigned i = 0;; i++) {
            char buf[512];
            size_t size = sizeof buf;
            int type = gnutls_x509_crt_get_subject_alt_name(crt, i, buf, &size, NULL);
            if (type == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE) break;
            if (type == GNUTLS_SAN_DNSNAME) tls_peer_add_san(out, "DNS", buf, size);
            if (type == GNUTLS_SAN_URI) tls_peer_add_san(out, "URI", buf, size);
        }
    }
    gnutls_x509_crt_deinit(crt);
}
