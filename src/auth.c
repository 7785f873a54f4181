/* auth: who a request comes from: bearer tokens (kept as SHA-256) and client certificates. */
#include "auth.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#define AUTH_MIN_TOKEN 16   /* shorter tokens are refused: guessable */
#define AUTH_MAX_TOKEN 4096 /* a token file larger than this is not a token */

typedef struct auth_entry {
    service_principal principal;
    service_grant *grants;
    bool has_token;
    unsigned char token_sha256[32];
    const char *cert_subject, *cert_san; /* the config's */
    const char *token_env;               /* the config's: where the token came from, or NULL */
} auth_entry;

struct auth {
    auth_entry *entries;
    size_t count;
};

int auth_sha256_hex(const void *data, size_t len, char out[65]) {
    unsigned char d[32];
    if (gnutls_hash_fast(GNUTLS_DIG_SHA256, data, len, d) != 0) return -1;
    for (size_t i = 0; i < sizeof d; i++) snprintf(out + 2 * i, 3, "%02x", d[i]);
    return 0;
}

/* Reads a token file: its first line, trailing whitespace dropped. */
static int auth_read_file(const char *path, char *buf, size_t cap, size_t *len, char *err,
                          size_t err_len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, err_len, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    if (n == cap) {
        snprintf(err, err_len, "%s is over %zu bytes: not a token", path, cap - 1);
        return -1;
    }
    buf[n] = '\0';
    *len = strcspn(buf, "\r\n");
    return 0;
}

/* The principal's token into buf: from its file, or from its variable (then unset). */
static int auth_load_token(const config_principal *pr, char *buf, size_t cap, size_t *len,
                           char *err, size_t err_len) {
    if (pr->token_file) {
        if (auth_read_file(pr->token_file, buf, cap, len, err, err_len) != 0) return -1;
    } else {
        const char *v = getenv(pr->token_env);
        if (!v) {
            snprintf(err, err_len, "principal %s: environment variable %s is not set", pr->name,
                     pr->token_env);
            return -1;
        }
        snprintf(buf, cap, "%s", v);
        *len = strcspn(buf, "\r\n");
        unsetenv(pr->token_env); /* no child inherits it */
    }
    while (*len && (buf[*len - 1] == ' ' || buf[*len - 1] == '\t')) (*len)--;
    if (*len < AUTH_MIN_TOKEN) {
        snprintf(err, err_len, "principal %s: the token is shorter than %d characters", pr->name,
                 AUTH_MIN_TOKEN);
        return -1;
    }
    return 0;
}

/* "op" or "op:pattern" into a grant (config.c checked the names). */
static int auth_parse_grant(const char *entry, service_grant *g) {
    size_t len = strcspn(entry, ":");
    for (int op = 0; op < SERVICE_OP_COUNT; op++) {
        const char *name = service_op_name((service_op)op);
        if (strlen(name) == len && strncmp(entry, name, len) == 0) {
            g->op = (service_op)op;
            g->pattern = entry[len] ? entry + len + 1 : NULL;
            return 0;
        }
    }
    return -1;
}

/* The previous set's token hash of a principal whose token came from the same variable: a
 * reload cannot read it again (nodexd unset it at start, so no child inherits it). */
static bool auth_previous_env_token(const auth *previous, const config_principal *pr,
                                    unsigned char out[32]) {
    for (size_t i = 0; previous && i < previous->count; i++) {
        const auth_entry *e = &previous->entries[i];
        if (e->has_token && e->token_env && strcmp(e->principal.name, pr->name) == 0 &&
            strcmp(e->token_env, pr->token_env) == 0) {
            memcpy(out, e->token_sha256, 32);
            return true;
        }
    }
    return false;
}

static int auth_entry_init(auth_entry *e, const config_principal *pr, const auth *previous,
                           char *err, size_t err_len) {
    e->principal.name = pr->name;
    e->token_env = pr->token_env;
    e->cert_subject = pr->cert_subject;
    e->cert_san = pr->cert_san;
    e->grants = calloc(pr->allow_count ? pr->allow_count : 1, sizeof *e->grants);
    if (!e->grants) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < pr->allow_count; i++) {
        if (auth_parse_grant(pr->allow[i], &e->grants[i]) != 0) {
            snprintf(err, err_len, "principal %s: unknown permission %s", pr->name, pr->allow[i]);
            return -1;
        }
    }
    e->principal.grants = e->grants;
    e->principal.grant_count = pr->allow_count;
    if (!pr->token_file && !pr->token_env) return 0;
    if (pr->token_env && !getenv(pr->token_env) &&
        auth_previous_env_token(previous, pr, e->token_sha256)) {
        e->has_token = true;
        return 0;
    }
    char token[AUTH_MAX_TOKEN + 1];
    size_t len = 0;
    int rc = auth_load_token(pr, token, sizeof token, &len, err, err_len);
    if (rc == 0 && gnutls_hash_fast(GNUTLS_DIG_SHA256, token, len, e->token_sha256) != 0) {
        snprintf(err, err_len, "principal %s: cannot hash the token", pr->name);
        rc = -1;
    }
    gnutls_memset(token, 0, sizeof token); /* only the hash stays */
    e->has_token = rc == 0;
    return rc;
}

auth *auth_new(const config *cfg, char *err, size_t err_len) {
    return auth_renew(cfg, NULL, err, err_len);
}

auth *auth_renew(const config *cfg, const auth *previous, char *err, size_t err_len) {
    auth *a = calloc(1, sizeof *a);
    if (!a || !(a->entries =
                    calloc(cfg->principal_count ? cfg->principal_count : 1, sizeof *a->entries))) {
        free(a);
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < cfg->principal_count; i++) {
        a->count = i + 1;
        if (auth_entry_init(&a->entries[i], &cfg->principals[i], previous, err, err_len) != 0) {
            auth_free(a);
            return NULL;
        }
    }
    return a;
}

void auth_free(auth *a) {
    if (!a) return;
    for (size_t i = 0; i < a->count; i++) free(a->entries[i].grants);
    gnutls_memset(a->entries, 0, a->count * sizeof *a->entries);
    free(a->entries);
    free(a);
}

bool auth_required(const auth *a) {
    return a->count > 0;
}

/* The token of "Bearer <token>" (scheme case-insensitive), or NULL. */
static const char *auth_bearer(const char *v, size_t len, size_t *token_len) {
    if (len < 7 || strncasecmp(v, "Bearer ", 7) != 0) return NULL;
    v += 7;
    len -= 7;
    while (len && *v == ' ') v++, len--;
    while (len && (v[len - 1] == ' ' || v[len - 1] == '\t')) len--;
    *token_len = len;
    return len ? v : NULL;
}

size_t auth_split_sans(char *sans, const char **out, size_t max) {
    size_t n = 0;
    for (char *save = NULL, *tok = strtok_r(sans, ",", &save); tok && n < max;
         tok = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(tok, ':');
        out[n++] = colon ? colon + 1 : tok;
    }
    return n;
}

static service_status auth_refuse(service_error *err, const char *why) {
    err->status = SERVICE_UNAUTHENTICATED;
    snprintf(err->message, sizeof err->message, "%s", why);
    return SERVICE_UNAUTHENTICATED;
}

/* The principal whose token hashes to `d`: every entry is compared, in constant time. */
static const auth_entry *auth_by_token(const auth *a, const unsigned char d[32]) {
    const auth_entry *found = NULL;
    for (size_t i = 0; i < a->count; i++) {
        const auth_entry *e = &a->entries[i];
        unsigned char diff = e->has_token ? 0 : 1;
        for (size_t k = 0; k < 32; k++) diff |= (unsigned char)(e->token_sha256[k] ^ d[k]);
        /* branch-free select: no timing difference between a match and a miss */
        uintptr_t mask = (uintptr_t)0 - (uintptr_t)(diff == 0);
        found = (const auth_entry *)(((uintptr_t)e & mask) | ((uintptr_t)found & ~mask));
    }
    return found;
}

static const auth_entry *auth_by_cert(const auth *a, const auth_credentials *cr) {
    for (size_t i = 0; i < a->count; i++) {
        const auth_entry *e = &a->entries[i];
        if (e->cert_subject && cr->cert_subject && strcmp(e->cert_subject, cr->cert_subject) == 0)
            return e;
        for (size_t k = 0; e->cert_san && k < cr->cert_san_count; k++)
            if (cr->cert_sans[k] && strcmp(e->cert_san, cr->cert_sans[k]) == 0) return e;
    }
    return NULL;
}

service_status auth_authenticate(const auth *a, const auth_credentials *cr,
                                 const service_principal **out, service_error *err) {
    *out = NULL;
    if (!auth_required(a)) {
        *out = &service_anonymous;
        err->status = SERVICE_OK;
        err->message[0] = '\0';
        return SERVICE_OK;
    }
    const auth_entry *e = NULL;
    if (cr && cr->authorization) {
        size_t tl;
        const char *t = auth_bearer(cr->authorization, cr->authorization_len, &tl);
        if (!t) return auth_refuse(err, "the Authorization header must be 'Bearer <token>'");
        unsigned char d[32];
        if (gnutls_hash_fast(GNUTLS_DIG_SHA256, t, tl, d) != 0)
            return auth_refuse(err, "cannot check the token");
        if (!(e = auth_by_token(a, d))) return auth_refuse(err, "the bearer token is not valid");
    } else if (cr && (cr->cert_subject || cr->cert_san_count)) {
        if (!(e = auth_by_cert(a, cr)))
            return auth_refuse(err, "the client certificate names no principal");
    } else {
        return auth_refuse(err, "authentication required: send 'Authorization: Bearer <token>' "
                                "or a client certificate");
    }
    *out = &e->principal;
    err->status = SERVICE_OK;
    err->message[0] = '\0';
    return SERVICE_OK;
}
