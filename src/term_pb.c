/* term_pb: lossless conversion between the gRPC API's protobuf Term/Payload messages and ei terms.
 */
#include "term_pb.h"

#include <math.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "term_common.h"

#define ETF_VERSION 131

/* ------------------------------------------------------------------------------------------ */
/* Error paths: "term.tuple[1].map[0].key" */

typedef struct pb_path {
    const struct pb_path *up;
    const char *field; /* ".field" when non-NULL, else "[index]" */
    size_t index;
} pb_path;

static void path_format(const pb_path *path, char *out, size_t cap) {
    const pb_path *chain[48] = {0};
    size_t n = 0;
    bool cut = false;
    for (const pb_path *p = path; p; p = p->up) {
        if (n == sizeof chain / sizeof chain[0]) {
            cut = true;
            break;
        }
        chain[n++] = p;
    }
    size_t len = (size_t)snprintf(out, cap, "%s", cut ? "..." : "term");
    while (n-- > 0 && len < cap) {
        const pb_path *p = chain[n];
        int w = p->field ? snprintf(out + len, cap - len, ".%s", p->field)
                         : snprintf(out + len, cap - len, "[%zu]", p->index);
        if (w < 0) break;
        len += (size_t)w;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* protobuf -> ei */

typedef struct pb_enc {
    term_limits lim;
    const erlang_pid *self;
    ei_x_buff *x;
    term_error *err;
} pb_enc;

static int efail(pb_enc *e, const pb_path *path, term_status st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int efail(pb_enc *e, const pb_path *path, term_status st, const char *fmt, ...) {
    char where[160], what[192];
    path_format(path, where, sizeof where);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return term_fail(e->err, st, "%s: %s", where, what);
}

static int enomem(pb_enc *e) {
    return term_fail(e->err, TERM_ERR_NOMEM, "out of memory");
}

static int enc_term(pb_enc *e, const Nodex__V1__Term *t, const pb_path *path, unsigned depth);

/* Encodes n elements as children of `path` at depth+1; tracks whether all were byte integers. */
static int enc_items(pb_enc *e, Nodex__V1__Term *const *items, size_t n, const pb_path *path,
                     unsigned depth, bool *all_bytes) {
    *all_bytes = true;
    for (size_t k = 0; k < n; k++) {
        pb_path here = {path, NULL, k};
        int start = e->x->index;
        if (enc_term(e, items[k], &here, depth + 1) != 0) return -1;
        *all_bytes = *all_bytes && term_is_byte_int(e->x, start);
    }
    return 0;
}

/* Encodes the elements of `l` and of every list its tail chains to ([A | [B | T]] is
 * [A, B | T] to Erlang, and term_to_binary encodes it so), counted in *n, then the chain's last
 * tail when it has one (*improper). The list header at *hdr is reserved with the first element.
 * Recursion is bounded by max_depth, a tail list counting as one level as elsewhere. */
static int enc_chain(pb_enc *e, const Nodex__V1__List *l, const pb_path *here, unsigned depth,
                     int *hdr, size_t *n, bool *all_bytes, bool *improper) {
    if (!l) return efail(e, here->up, TERM_ERR_SYNTAX, "list without a List message");
    if (l->n_elements) {
        if (*hdr < 0 && (*hdr = term_hdr_reserve(e->x)) < 0) return enomem(e);
        bool bytes;
        if (enc_items(e, l->elements, l->n_elements, here, depth, &bytes) != 0) return -1;
        *all_bytes = *all_bytes && bytes;
        *n += l->n_elements;
    }
    if (!l->tail) return 0;
    pb_path tail = {here, "tail", 0};
    if (l->tail->kind_case != NODEX__V1__TERM__KIND_LIST) {
        *improper = true;
        return enc_term(e, l->tail, &tail, depth + 1);
    }
    if (depth + 2 > e->lim.max_depth)
        return efail(e, &tail, TERM_ERR_DEPTH, "nesting deeper than %u", e->lim.max_depth);
    pb_path next = {&tail, "list", 0};
    return enc_chain(e, l->tail->list, &next, depth + 1, hdr, n, all_bytes, improper);
}

static int enc_list(pb_enc *e, const Nodex__V1__List *l, const pb_path *path, unsigned depth) {
    pb_path here = {path, "list", 0};
    int hdr = -1;
    size_t n = 0;
    bool all_bytes = true, improper = false;
    if (enc_chain(e, l, &here, depth, &hdr, &n, &all_bytes, &improper) != 0) return -1;
    if (!n) return improper || ei_x_encode_empty_list(e->x) == 0 ? 0 : enomem(e); /* [ | T] is T */
    if (improper) {
        term_improper_close(e->x, hdr, n);
        return 0;
    }
    return term_list_close(e->x, hdr, n, all_bytes) == 0 ? 0 : enomem(e);
}

static int enc_big(pb_enc *e, const char *s, const pb_path *path) {
    size_t n = strlen(s);
    bool neg = n > 0 && s[0] == '-';
    const char *digits = s + neg;
    size_t nd = n - neg;
    if (nd == 0 || strspn(digits, "0123456789") != nd)
        return efail(e, path, TERM_ERR_SYNTAX,
                     "big_int must be decimal digits with an optional "
                     "'-'");
    uint8_t *mag = NULL;
    size_t mag_len = 0;
    int rc = term_mag_from_digits(digits, nd, 10, &mag, &mag_len);
    if (rc == -2) return efail(e, path, TERM_ERR_SIZE, "big_int over %u bytes", TERM_BIG_MAX_BYTES);
    if (rc != 0) return enomem(e);
    rc = term_enc_int_mag(e->x, neg, mag, mag_len);
    free(mag);
    return rc == 0 ? 0 : enomem(e);
}

/* Bit strings: BIT_BINARY_EXT with the unused low bits of the last byte cleared. */
static int enc_bits(pb_enc *e, const Nodex__V1__BitString *b, const pb_path *path) {
    if (!b) return efail(e, path, TERM_ERR_SYNTAX, "bits without a BitString message");
    if (b->bits > (uint64_t)b->data.len * 8 || (b->bits + 7) / 8 != b->data.len)
        return efail(e, path, TERM_ERR_SYNTAX, "bits: %llu bits need %llu bytes, got %zu",
                     (unsigned long long)b->bits, (unsigned long long)(b->bits + 7) / 8,
                     b->data.len);
    if (b->bits % 8 == 0)
        return term_enc_binary(e->x, b->data.data, b->data.len) == 0 ? 0 : enomem(e);
    size_t len = b->data.len;
    unsigned last = (unsigned)(b->bits % 8);
    unsigned char h[6] = {ERL_BIT_BINARY_EXT,         (unsigned char)(len >> 24),
                          (unsigned char)(len >> 16), (unsigned char)(len >> 8),
                          (unsigned char)len,         (unsigned char)last};
    if (term_x_append(e->x, h, 6) != 0 || term_x_append(e->x, b->data.data, len) != 0)
        return enomem(e);
    unsigned char *tail = (unsigned char *)e->x->buff + e->x->index - 1;
    *tail &= (unsigned char)(0xffu << (8 - last));
    return 0;
}

static int enc_opaque(pb_enc *e, const Nodex__V1__Opaque *o, const char *kind,
                      const pb_path *path) {
    if (!o || o->etf.len < 2 || o->etf.data[0] != ETF_VERSION)
        return efail(e, path, TERM_ERR_TAG, "%s: etf must start with version byte 131", kind);
    char where[160];
    path_format(path, where, sizeof where);
    return term_enc_opaque(e->x, kind, (const char *)o->etf.data + 1, o->etf.len - 1, e->err,
                           where);
}

static int enc_term(pb_enc *e, const Nodex__V1__Term *t, const pb_path *path, unsigned depth) {
    if (!t) return efail(e, path, TERM_ERR_SYNTAX, "missing term");
    if ((size_t)e->x->index > e->lim.max_bytes)
        return efail(e, path, TERM_ERR_SIZE, "term over %zu bytes", e->lim.max_bytes);
    switch (t->kind_case) {
    case NODEX__V1__TERM__KIND_ATOM: {
        const char *s = t->atom ? t->atom : "";
        size_t len = strlen(s);
        long chars = term_utf8_count(s, len);
        if (chars < 0) return efail(e, path, TERM_ERR_TAG, "atom is not valid UTF-8");
        if (chars > 255) return efail(e, path, TERM_ERR_TAG, "atom longer than 255 characters");
        return ei_x_encode_atom_len_as(e->x, s, (int)len, ERLANG_UTF8, ERLANG_UTF8) == 0
                   ? 0
                   : enomem(e);
    }
    case NODEX__V1__TERM__KIND_INT: return term_enc_int64(e->x, t->int_) == 0 ? 0 : enomem(e);
    case NODEX__V1__TERM__KIND_BIG_INT: return enc_big(e, t->big_int ? t->big_int : "", path);
    case NODEX__V1__TERM__KIND_FLOAT:
        if (!isfinite(t->float_))
            return efail(e, path, TERM_ERR_UNSUPPORTED,
                         "float must be finite (Erlang has no "
                         "NaN or infinity)");
        return ei_x_encode_double(e->x, t->float_) == 0 ? 0 : enomem(e);
    case NODEX__V1__TERM__KIND_BINARY:
        return term_enc_binary(e->x, t->binary.data, t->binary.len) == 0 ? 0 : enomem(e);
    case NODEX__V1__TERM__KIND_BITS: return enc_bits(e, t->bits, path);
    case NODEX__V1__TERM__KIND_LIST:
        if (depth + 1 > e->lim.max_depth)
            return efail(e, path, TERM_ERR_DEPTH, "nesting deeper than %u", e->lim.max_depth);
        return enc_list(e, t->list, path, depth);
    case NODEX__V1__TERM__KIND_TUPLE: {
        if (depth + 1 > e->lim.max_depth)
            return efail(e, path, TERM_ERR_DEPTH, "nesting deeper than %u", e->lim.max_depth);
        if (!t->tuple) return efail(e, path, TERM_ERR_SYNTAX, "tuple without a Tuple message");
        pb_path here = {path, "tuple", 0};
        int hdr = term_hdr_reserve(e->x);
        bool all_bytes;
        if (hdr < 0) return enomem(e);
        if (enc_items(e, t->tuple->elements, t->tuple->n_elements, &here, depth, &all_bytes) != 0)
            return -1;
        term_tuple_close(e->x, hdr, t->tuple->n_elements);
        return 0;
    }
    case NODEX__V1__TERM__KIND_MAP: {
        if (depth + 1 > e->lim.max_depth)
            return efail(e, path, TERM_ERR_DEPTH, "nesting deeper than %u", e->lim.max_depth);
        if (!t->map) return efail(e, path, TERM_ERR_SYNTAX, "map without a Map message");
        pb_path here = {path, "map", 0};
        int hdr = term_hdr_reserve(e->x);
        if (hdr < 0) return enomem(e);
        for (size_t k = 0; k < t->map->n_entries; k++) {
            const Nodex__V1__MapEntry *me = t->map->entries[k];
            pb_path entry = {&here, NULL, k};
            pb_path key = {&entry, "key", 0}, value = {&entry, "value", 0};
            if (!me || !me->key) return efail(e, &entry, TERM_ERR_SYNTAX, "map entry without key");
            if (!me->value) return efail(e, &entry, TERM_ERR_SYNTAX, "map entry without value");
            if (enc_term(e, me->key, &key, depth + 1) != 0 ||
                enc_term(e, me->value, &value, depth + 1) != 0)
                return -1;
        }
        term_map_close(e->x, hdr, t->map->n_entries);
        return 0;
    }
    case NODEX__V1__TERM__KIND_PID: return enc_opaque(e, t->pid, "pid", path);
    case NODEX__V1__TERM__KIND_REF: return enc_opaque(e, t->ref, "ref", path);
    case NODEX__V1__TERM__KIND_PORT: return enc_opaque(e, t->port, "port", path);
    case NODEX__V1__TERM__KIND_FUN: return enc_opaque(e, t->fun, "fun", path);
    case NODEX__V1__TERM__KIND_SELF_PID:
        if (!e->self)
            return efail(e, path, TERM_ERR_SELF, "self_pid where the request has no reply pid");
        return ei_x_encode_pid(e->x, e->self) == 0 ? 0 : enomem(e);
    default: return efail(e, path, TERM_ERR_SYNTAX, "Term with no value set");
    }
}

int term_pb_to_ei(const Nodex__V1__Term *t, const term_limits *limits, const erlang_pid *self,
                  ei_x_buff *out, term_error *err) {
    term_error local;
    pb_enc e = {term_limits_effective(limits), self, out, err ? err : &local};
    int start = out->index;
    if (enc_term(&e, t, NULL, 0) != 0) return -1;
    if ((size_t)(out->index - start) > e.lim.max_bytes)
        return term_fail(e.err, TERM_ERR_SIZE, "term over %zu bytes", e.lim.max_bytes);
    return term_ok(e.err);
}

int term_pb_payload_to_ei(const Nodex__V1__Payload *p, const term_limits *limits,
                          const erlang_pid *self, ei_x_buff *out, term_error *err) {
    if (p && p->value_case == NODEX__V1__PAYLOAD__VALUE_TERM)
        return term_pb_to_ei(p->term, limits, self, out, err);
    if (p && p->value_case == NODEX__V1__PAYLOAD__VALUE_ETF)
        return term_from_etf((const char *)p->etf.data, p->etf.len, limits, out, err);
    return term_fail(err, TERM_ERR_SYNTAX, "payload has neither term nor etf");
}

/* ------------------------------------------------------------------------------------------ */
/* The arena */

struct term_pb_chunk {
    struct term_pb_chunk *next;
    size_t used, cap;
    alignas(max_align_t) unsigned char data[];
};

#define ARENA_CHUNK 16384u

static void *arena_alloc(term_pb_arena *a, size_t n) {
    size_t align = alignof(max_align_t);
    n = (n + align - 1) / align * align;
    struct term_pb_chunk *c = a->chunks;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > ARENA_CHUNK ? n : ARENA_CHUNK;
        c = malloc(sizeof *c + cap);
        if (!c) return NULL;
        c->used = 0;
        c->cap = cap;
        c->next = a->chunks;
        a->chunks = c;
    }
    void *p = c->data + c->used;
    c->used += n;
    return p;
}

void term_pb_arena_free(term_pb_arena *a) {
    while (a->chunks) {
        struct term_pb_chunk *next = a->chunks->next;
        free(a->chunks);
        a->chunks = next;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* ei -> protobuf (input validated by term_etf_check first) */

typedef struct pb_dec {
    const char *b;
    size_t n;
    term_pb_arena *a;
    term_error *err;
} pb_dec;

static int dnomem(pb_dec *d) {
    return term_fail(d->err, TERM_ERR_NOMEM, "out of memory");
}

static Nodex__V1__Term *new_term(pb_dec *d) {
    Nodex__V1__Term *t = arena_alloc(d->a, sizeof *t);
    if (t) nodex__v1__term__init(t);
    return t;
}

static char *arena_strndup(pb_dec *d, const char *s, size_t n) {
    char *p = arena_alloc(d->a, n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static int dec_term(pb_dec *d, int *i, Nodex__V1__Term **out);

/* n terms at *i into a fresh array. */
static int dec_items(pb_dec *d, int *i, size_t n, Nodex__V1__Term ***items) {
    *items = NULL;
    if (n == 0) return 0;
    if (n > d->n) return term_fail(d->err, TERM_ERR_SYNTAX, "ETF: bad length");
    *items = arena_alloc(
        d->a, n * sizeof **items); /* NOLINT(bugprone-sizeof-expression): an array of pointers */
    if (!*items) return dnomem(d);
    for (size_t k = 0; k < n; k++)
        if (dec_term(d, i, &(*items)[k]) != 0) return -1;
    return 0;
}

static Nodex__V1__List *new_list(pb_dec *d) {
    Nodex__V1__List *l = arena_alloc(d->a, sizeof *l);
    if (l) nodex__v1__list__init(l);
    return l;
}

static int dec_big(pb_dec *d, const unsigned char *p, int *i, Nodex__V1__Term *t) {
    size_t hl = p[0] == ERL_SMALL_BIG_EXT ? 3 : 6;
    size_t len = hl == 3 ? p[1] : term_be32(p + 1);
    bool neg = p[hl - 1] != 0;
    const unsigned char *mag = p + hl;
    *i += (int)(hl + len);
    size_t top = len;
    while (top && mag[top - 1] == 0) top--;
    if (top <= 8) {
        uint64_t v = 0;
        for (size_t k = top; k-- > 0;) v = v << 8 | mag[k];
        if (v <= (uint64_t)INT64_MAX || (neg && v == (uint64_t)INT64_MAX + 1)) {
            t->kind_case = NODEX__V1__TERM__KIND_INT;
            t->int_ = neg ? (int64_t)(0 - v) : (int64_t)v;
            return 0;
        }
    }
    if (len > TERM_BIG_MAX_BYTES)
        return term_fail(d->err, TERM_ERR_UNSUPPORTED, "bignum of %zu bytes is too large", len);
    strbuf sb = {0};
    if (term_mag_to_decimal(&sb, neg, mag, len) != 0) {
        strbuf_free(&sb);
        return dnomem(d);
    }
    t->kind_case = NODEX__V1__TERM__KIND_BIG_INT;
    t->big_int = arena_strndup(d, sb.data, sb.len);
    strbuf_free(&sb);
    return t->big_int ? 0 : dnomem(d);
}

static int dec_bits(pb_dec *d, const unsigned char *p, int *i, Nodex__V1__Term *t) {
    size_t len = term_be32(p + 1);
    unsigned last = p[5];
    *i += 6 + (int)len;
    if (len == 0 || last == 8) {
        t->kind_case = NODEX__V1__TERM__KIND_BINARY;
        t->binary.data = (uint8_t *)(p + 6);
        t->binary.len = len;
        return 0;
    }
    Nodex__V1__BitString *b = arena_alloc(d->a, sizeof *b);
    uint8_t *data = arena_alloc(d->a, len);
    if (!b || !data) return dnomem(d);
    nodex__v1__bit_string__init(b);
    memcpy(data, p + 6, len);
    data[len - 1] &= (uint8_t)(0xffu << (8 - last));
    b->data.data = data;
    b->data.len = len;
    b->bits = (uint64_t)(len - 1) * 8 + last;
    t->kind_case = NODEX__V1__TERM__KIND_BITS;
    t->bits = b;
    return 0;
}

static int dec_opaque(pb_dec *d, int *i, const char *kind, Nodex__V1__Term *t) {
    int end = *i;
    if (ei_skip_term(d->b, &end) != 0)
        return term_fail(d->err, TERM_ERR_SYNTAX, "ETF: bad %s at offset %d", kind, *i);
    size_t n = (size_t)(end - *i);
    Nodex__V1__Opaque *o = arena_alloc(d->a, sizeof *o);
    uint8_t *etf = arena_alloc(d->a, n + 1);
    if (!o || !etf) return dnomem(d);
    nodex__v1__opaque__init(o);
    etf[0] = ETF_VERSION;
    memcpy(etf + 1, d->b + *i, n);
    o->etf.data = etf;
    o->etf.len = n + 1;
    *i = end;
    switch (kind[0]) {
    case 'p':
        if (kind[1] == 'i')
            t->kind_case = NODEX__V1__TERM__KIND_PID, t->pid = o;
        else
            t->kind_case = NODEX__V1__TERM__KIND_PORT, t->port = o;
        break;
    case 'r': t->kind_case = NODEX__V1__TERM__KIND_REF, t->ref = o; break;
    default: t->kind_case = NODEX__V1__TERM__KIND_FUN, t->fun = o; break;
    }
    return 0;
}

static int dec_term(pb_dec *d, int *i, Nodex__V1__Term **out) {
    const unsigned char *p = (const unsigned char *)d->b + *i;
    Nodex__V1__Term *t = new_term(d);
    if (!t) return dnomem(d);
    *out = t;
    switch (p[0]) {
    case ERL_SMALL_INTEGER_EXT:
        t->kind_case = NODEX__V1__TERM__KIND_INT;
        t->int_ = p[1];
        *i += 2;
        return 0;
    case ERL_INTEGER_EXT:
        t->kind_case = NODEX__V1__TERM__KIND_INT;
        t->int_ = (int32_t)term_be32(p + 1);
        *i += 5;
        return 0;
    case ERL_SMALL_BIG_EXT:
    case ERL_LARGE_BIG_EXT: return dec_big(d, p, i, t);
    case NEW_FLOAT_EXT:
    case ERL_FLOAT_EXT:
        t->kind_case = NODEX__V1__TERM__KIND_FLOAT;
        if (ei_decode_double(d->b, i, &t->float_) != 0)
            return term_fail(d->err, TERM_ERR_SYNTAX, "ETF: bad float at offset %d", *i);
        return 0;
    case ERL_ATOM_EXT:
    case ERL_SMALL_ATOM_EXT:
    case ERL_ATOM_UTF8_EXT:
    case ERL_SMALL_ATOM_UTF8_EXT: {
        char name[MAXATOMLEN_UTF8];
        size_t len = term_atom_utf8(d->b, i, name);
        if (memchr(name, '\0', len))
            return term_fail(d->err, TERM_ERR_UNSUPPORTED,
                             "an atom containing a NUL character has no Term form (ask for ETF)");
        t->kind_case = NODEX__V1__TERM__KIND_ATOM;
        t->atom = arena_strndup(d, name, len);
        return t->atom ? 0 : dnomem(d);
    }
    case ERL_BINARY_EXT:
        t->kind_case = NODEX__V1__TERM__KIND_BINARY;
        t->binary.len = term_be32(p + 1);
        t->binary.data = (uint8_t *)(p + 5);
        *i += 5 + (int)t->binary.len;
        return 0;
    case ERL_BIT_BINARY_EXT: return dec_bits(d, p, i, t);
    case ERL_NIL_EXT:
        *i += 1;
        t->kind_case = NODEX__V1__TERM__KIND_LIST;
        t->list = new_list(d);
        return t->list ? 0 : dnomem(d);
    case ERL_STRING_EXT: {
        size_t len = term_be16(p + 1);
        t->kind_case = NODEX__V1__TERM__KIND_LIST;
        if (!(t->list = new_list(d))) return dnomem(d);
        t->list->n_elements = len;
        /* NOLINTNEXTLINE(bugprone-sizeof-expression): an array of pointers */
        t->list->elements = len ? arena_alloc(d->a, len * sizeof *t->list->elements) : NULL;
        if (len && !t->list->elements) return dnomem(d);
        for (size_t k = 0; k < len; k++) {
            Nodex__V1__Term *e = new_term(d);
            if (!e) return dnomem(d);
            e->kind_case = NODEX__V1__TERM__KIND_INT;
            e->int_ = p[3 + k];
            t->list->elements[k] = e;
        }
        *i += 3 + (int)len;
        return 0;
    }
    case ERL_LIST_EXT: {
        size_t n = term_be32(p + 1);
        *i += 5;
        t->kind_case = NODEX__V1__TERM__KIND_LIST;
        if (!(t->list = new_list(d))) return dnomem(d);
        t->list->n_elements = n;
        if (dec_items(d, i, n, &t->list->elements) != 0) return -1;
        if (d->b[*i] == ERL_NIL_EXT) {
            *i += 1;
            return 0;
        }
        return dec_term(d, i, &t->list->tail);
    }
    case ERL_SMALL_TUPLE_EXT:
    case ERL_LARGE_TUPLE_EXT: {
        size_t arity = p[0] == ERL_SMALL_TUPLE_EXT ? p[1] : term_be32(p + 1);
        *i += p[0] == ERL_SMALL_TUPLE_EXT ? 2 : 5;
        Nodex__V1__Tuple *tu = arena_alloc(d->a, sizeof *tu);
        if (!tu) return dnomem(d);
        nodex__v1__tuple__init(tu);
        t->kind_case = NODEX__V1__TERM__KIND_TUPLE;
        t->tuple = tu;
        tu->n_elements = arity;
        return dec_items(d, i, arity, &tu->elements);
    }
    case ERL_MAP_EXT: {
        size_t pairs = term_be32(p + 1);
        *i += 5;
        if (pairs > d->n) return term_fail(d->err, TERM_ERR_SYNTAX, "ETF: bad map size");
        Nodex__V1__Map *m = arena_alloc(d->a, sizeof *m);
        /* NOLINTNEXTLINE(bugprone-sizeof-expression): an array of pointers */
        Nodex__V1__MapEntry **entries = pairs ? arena_alloc(d->a, pairs * sizeof *entries) : NULL;
        if (!m || (pairs && !entries)) return dnomem(d);
        nodex__v1__map__init(m);
        m->n_entries = pairs;
        m->entries = entries;
        t->kind_case = NODEX__V1__TERM__KIND_MAP;
        t->map = m;
        for (size_t k = 0; k < pairs; k++) {
            Nodex__V1__MapEntry *me = arena_alloc(d->a, sizeof *me);
            if (!me) return dnomem(d);
            nodex__v1__map_entry__init(me);
            entries[k] = me;
            if (dec_term(d, i, &me->key) != 0 || dec_term(d, i, &me->value) != 0) return -1;
        }
        return 0;
    }
    default: {
        const char *kind = term_opaque_kind(p[0]);
        if (kind) return dec_opaque(d, i, kind, t);
        return term_fail(d->err, TERM_ERR_UNSUPPORTED, "ETF tag %u at offset %d", p[0], *i);
    }
    }
}

int term_pb_from_ei(const char *buf, size_t buf_len, int *index, const term_limits *limits,
                    term_pb_arena *arena, Nodex__V1__Term **out, term_error *err) {
    term_error local;
    if (!err) err = &local;
    term_limits lim = term_limits_effective(limits);
    int end = *index;
    if (term_etf_check(buf, buf_len, &end, &lim, err) != 0) return -1;
    if ((size_t)(end - *index) > lim.max_bytes)
        return term_fail(err, TERM_ERR_SIZE, "term of %d bytes is over the limit of %zu",
                         end - *index, lim.max_bytes);
    const char *b = buf;
    size_t n = buf_len;
    int i = *index;
    ei_x_buff merged;
    int m = term_merge_list_chains(&b, &n, &i, &merged); /* render the value (15.1) */
    if (m < 0) return term_fail(err, TERM_ERR_NOMEM, "out of memory");
    if (m > 0) { /* the Term may point into its bytes: they live in the arena */
        char *copy = arena_alloc(arena, n);
        if (copy) memcpy(copy, b, n);
        ei_x_free(&merged);
        if (!copy) return term_fail(err, TERM_ERR_NOMEM, "out of memory");
        b = copy;
    }
    pb_dec d = {b, n, arena, err};
    if (dec_term(&d, &i, out) != 0) return -1;
    *index = end;
    return term_ok(err);
}

int term_pb_payload_from_ei(const char *buf, size_t buf_len, int *index, const term_limits *limits,
                            bool as_etf, term_pb_arena *arena, Nodex__V1__Payload *out,
                            term_error *err) {
    if (!as_etf) {
        Nodex__V1__Term *t = NULL;
        if (term_pb_from_ei(buf, buf_len, index, limits, arena, &t, err) != 0) return -1;
        out->value_case = NODEX__V1__PAYLOAD__VALUE_TERM;
        out->term = t;
        return 0;
    }
    term_limits lim = term_limits_effective(limits);
    int end = *index;
    if (term_etf_check(buf, buf_len, &end, &lim, err) != 0) return -1;
    size_t n = (size_t)(end - *index);
    if (n + 1 > lim.max_bytes)
        return term_fail(err, TERM_ERR_SIZE, "ETF output of %zu bytes is over the limit of %zu",
                         n + 1, lim.max_bytes);
    uint8_t *etf = arena_alloc(arena, n + 1);
    if (!etf) return term_fail(err, TERM_ERR_NOMEM, "out of memory");
    etf[0] = ETF_VERSION;
    memcpy(etf + 1, buf + *index, n);
    out->value_case = NODEX__V1__PAYLOAD__VALUE_ETF;
    out->etf.data = etf;
    out->etf.len = n + 1;
    *index = end;
    return term_ok(err);
}

/* ------------------------------------------------------------------------------------------ */
/* Wire-format depth check */

static int wire_varint(const uint8_t *p, size_t n, size_t *i, uint64_t *v) {
    *v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (*i >= n) return -1;
        uint8_t b = p[(*i)++];
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) return 0;
    }
    return -1;
}

/* Recursion is bounded by max_depth (each frame is a few words). */
static int wire_check(const ProtobufCMessageDescriptor *desc, const uint8_t *p, size_t n,
                      unsigned depth, unsigned max_depth) {
    if (depth > max_depth) return -1;
    size_t i = 0;
    while (i < n) {
        uint64_t key, v;
        if (wire_varint(p, n, &i, &key) != 0 || key >> 3 == 0) return -1;
        switch (key & 7) {
        case 0:
            if (wire_varint(p, n, &i, &v) != 0) return -1;
            break;
        case 1:
            if (n - i < 8) return -1;
            i += 8;
            break;
        case 5:
            if (n - i < 4) return -1;
            i += 4;
            break;
        case 2: {
            if (wire_varint(p, n, &i, &v) != 0 || v > n - i) return -1;
            const ProtobufCFieldDescriptor *f =
                desc && key >> 3 <= UINT32_MAX
                    ? protobuf_c_message_descriptor_get_field(desc, (unsigned)(key >> 3))
                    : NULL;
            if (f && f->type == PROTOBUF_C_TYPE_MESSAGE &&
                wire_check(f->descriptor, p + i, (size_t)v, depth + 1, max_depth) != 0)
                return -1;
            i += (size_t)v;
            break;
        }
        default: return -1; /* groups are not proto3 */
        }
    }
    return 0;
}

int term_pb_check_depth(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                        unsigned max_depth) {
    return wire_check(desc, data, len, 1, max_depth);
}

/* ------------------------------------------------------------------------------------------ */
/* Budgeted unpacking */

/* Each block carries its size in front (one max_align_t keeps malloc's alignment); a block
 * costs its size plus this header plus malloc's own per-chunk word. */
#define BUDGET_HEADER   sizeof(max_align_t)
#define BUDGET_OVERHEAD (BUDGET_HEADER + sizeof(size_t))

typedef struct pb_budget {
    size_t max, used, peak;
    bool refused;
} pb_budget;

static void *budget_alloc(void *data, size_t size) {
    pb_budget *b = data;
    if (size > SIZE_MAX - BUDGET_OVERHEAD || size + BUDGET_OVERHEAD > b->max - b->used) {
        b->refused = true;
        return NULL;
    }
    max_align_t *h = malloc(BUDGET_HEADER + size);
    if (!h) {
        b->refused = true; /* out of memory is the same answer: no room for this request */
        return NULL;
    }
    memcpy(h, &size, sizeof size);
    b->used += size + BUDGET_OVERHEAD;
    if (b->used > b->peak) b->peak = b->used;
    return h + 1;
}

/* `data` is the budget while unpacking, NULL when the caller frees the message. */
static void budget_free(void *data, void *p) {
    if (!p) return;
    max_align_t *h = (max_align_t *)p - 1;
    size_t size;
    memcpy(&size, h, sizeof size);
    pb_budget *b = data;
    if (b) b->used -= size + BUDGET_OVERHEAD;
    free(h);
}

ProtobufCMessage *term_pb_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *data,
                                 size_t len, unsigned max_depth, size_t max_bytes,
                                 term_pb_unpack_status *status, size_t *peak) {
    pb_budget b = {.max = max_bytes};
    ProtobufCMessage *m = NULL;
    *status = TERM_PB_UNPACK_MALFORMED;
    if (wire_check(desc, data, len, 1, max_depth) == 0) {
        ProtobufCAllocator a = {budget_alloc, budget_free, &b};
        m = protobuf_c_message_unpack(desc, &a, len, data);
        if (m)
            *status = TERM_PB_UNPACK_OK;
        else if (b.refused)
            *status = TERM_PB_UNPACK_OVER_BUDGET;
    }
    if (peak) *peak = b.peak;
    return m;
}

void term_pb_unpacked_free(ProtobufCMessage *msg) {
    ProtobufCAllocator a = {budget_alloc, budget_free, NULL};
    if (msg) protobuf_c_message_free_unpacked(msg, &a);
}

unsigned term_pb_wire_depth(unsigned term_depth, unsigned outer) {
    term_limits l = {term_depth, 1};
    l = term_limits_effective(&l);
    return outer + 3 * l.max_depth + 2;
}
