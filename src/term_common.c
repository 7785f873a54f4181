/* term_common: error helpers, integer/float/base64/UTF-8 primitives and the bounded ETF walker. */
#include "term_common.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const term_limits term_limits_default = {.max_depth = 512, .max_bytes = 64u << 20};

#define X(id, name, http) name,
static const char *const status_names[] = {TERM_ERRORS(X)};
#undef X
#define X(id, name, http) http,
static const int status_http[] = {TERM_ERRORS(X)};
#undef X

const char *term_status_name(term_status status) {
    size_t k = (size_t)status;
    return k < sizeof status_names / sizeof *status_names ? status_names[k] : "unknown";
}

int term_status_http(term_status status) {
    size_t k = (size_t)status;
    return k < sizeof status_http / sizeof *status_http ? status_http[k] : 500;
}

term_limits term_limits_effective(const term_limits *l) {
    term_limits r = l ? *l : term_limits_default;
    if (r.max_depth > TERM_DEPTH_HARD_MAX) r.max_depth = TERM_DEPTH_HARD_MAX;
    if (r.max_bytes == 0) r.max_bytes = term_limits_default.max_bytes;
    if (r.max_bytes > INT32_MAX / 2) r.max_bytes = INT32_MAX / 2; /* ei_x_buff sizes are int */
    return r;
}

int term_fail(term_error *err, term_status status, const char *fmt, ...) {
    if (!err) return -1;
    err->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return -1;
}

int term_ok(term_error *err) {
    if (err) {
        err->status = TERM_OK;
        err->message[0] = '\0';
    }
    return 0;
}

int term_x_append(ei_x_buff *x, const void *p, size_t n) {
    if (n > INT32_MAX) return -1;
    return ei_x_append_buf(x, p, (int)n) == 0 ? 0 : -1;
}

/* ---- integers ------------------------------------------------------------------------------ */

int term_enc_int_mag(ei_x_buff *x, bool neg, const uint8_t *mag, size_t n) {
    while (n > 0 && mag[n - 1] == 0) n--;
    unsigned char h[6];
    if (n <= 4) {
        uint32_t v = 0;
        for (size_t k = n; k > 0; k--) v = v << 8 | mag[k - 1];
        if (v == 0 || (!neg && v <= 255)) {
            h[0] = ERL_SMALL_INTEGER_EXT;
            h[1] = (unsigned char)v;
            return term_x_append(x, h, 2);
        }
        if (v <= (neg ? 0x80000000u : 0x7fffffffu)) {
            uint32_t w = neg ? 0u - v : v;
            h[0] = ERL_INTEGER_EXT;
            h[1] = (unsigned char)(w >> 24);
            h[2] = (unsigned char)(w >> 16);
            h[3] = (unsigned char)(w >> 8);
            h[4] = (unsigned char)w;
            return term_x_append(x, h, 5);
        }
    }
    size_t hl;
    if (n <= 255) {
        h[0] = ERL_SMALL_BIG_EXT;
        h[1] = (unsigned char)n;
        h[2] = neg;
        hl = 3;
    } else {
        h[0] = ERL_LARGE_BIG_EXT;
        h[1] = (unsigned char)(n >> 24);
        h[2] = (unsigned char)(n >> 16);
        h[3] = (unsigned char)(n >> 8);
        h[4] = (unsigned char)n;
        h[5] = neg;
        hl = 6;
    }
    if (term_x_append(x, h, hl) != 0) return -1;
    return term_x_append(x, mag, n);
}

int term_enc_int64(ei_x_buff *x, int64_t v) {
    bool neg = v < 0;
    uint64_t u = neg ? 0u - (uint64_t)v : (uint64_t)v;
    uint8_t mag[8];
    for (int k = 0; k < 8; k++) mag[k] = (uint8_t)(u >> (8 * k));
    return term_enc_int_mag(x, neg, mag, 8);
}

static int digit_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'z') return c - 'a' + 10;
    if (c >= 'A' && c <= 'Z') return c - 'A' + 10;
    return 99;
}

int term_mag_from_digits(const char *s, size_t n, unsigned base, uint8_t **mag, size_t *mag_len) {
    *mag = NULL;
    *mag_len = 0;
    if (n == 0 || base < 2 || base > 36) return -1;
    unsigned floor_bits = 1;
    while ((1u << (floor_bits + 1)) <= base) floor_bits++;
    if (n / 8 > (size_t)TERM_BIG_MAX_BYTES / floor_bits + 1) return -2;
    size_t cap = n * 6 / 32 + 2; /* base 36 needs < 6 bits per digit */
    uint32_t *limbs = calloc(cap, sizeof *limbs);
    if (!limbs) return -1;
    size_t used = 0;
    size_t k = 0;
    while (k < n) {
        uint64_t chunk = 0, mul = 1;
        while (k < n && mul * base <= UINT32_MAX) {
            int d = digit_value(s[k]);
            if (d >= (int)base) {
                free(limbs);
                return -1;
            }
            chunk = chunk * base + (unsigned)d;
            mul *= base;
            k++;
        }
        uint64_t carry = chunk;
        for (size_t j = 0; j < used; j++) {
            uint64_t t = (uint64_t)limbs[j] * mul + carry;
            limbs[j] = (uint32_t)t;
            carry = t >> 32;
        }
        if (carry) limbs[used++] = (uint32_t)carry;
    }
    size_t bytes = used * 4;
    uint8_t *out = malloc(bytes ? bytes : 1);
    if (!out) {
        free(limbs);
        return -1;
    }
    for (size_t j = 0; j < bytes; j++) out[j] = (uint8_t)(limbs[j / 4] >> (8 * (j % 4)));
    free(limbs);
    while (bytes > 0 && out[bytes - 1] == 0) bytes--;
    if (bytes > TERM_BIG_MAX_BYTES) {
        free(out);
        return -2;
    }
    *mag = out;
    *mag_len = bytes;
    return 0;
}

int term_mag_to_decimal(strbuf *out, bool neg, const uint8_t *mag, size_t n) {
    while (n > 0 && mag[n - 1] == 0) n--;
    if (n <= 8) {
        uint64_t v = 0;
        for (size_t k = n; k > 0; k--) v = v << 8 | mag[k - 1];
        return strbuf_printf(out, "%s%llu", neg && v ? "-" : "", (unsigned long long)v);
    }
    size_t nl = (n + 3) / 4;
    uint32_t *limbs = calloc(nl, sizeof *limbs);
    uint32_t *chunks = malloc((n * 241 / 100 / 9 + 2) * sizeof *chunks); /* 2.41 digits/byte */
    if (!limbs || !chunks) {
        free(limbs);
        free(chunks);
        return -1;
    }
    for (size_t k = 0; k < n; k++) limbs[k / 4] |= (uint32_t)mag[k] << (8 * (k % 4));
    size_t nc = 0;
    while (nl > 0) {
        uint64_t rem = 0;
        for (size_t j = nl; j > 0; j--) {
            uint64_t cur = rem << 32 | limbs[j - 1];
            limbs[j - 1] = (uint32_t)(cur / 1000000000u);
            rem = cur % 1000000000u;
        }
        chunks[nc++] = (uint32_t)rem;
        while (nl > 0 && limbs[nl - 1] == 0) nl--;
    }
    int rc = strbuf_printf(out, "%s%u", neg ? "-" : "", chunks[nc - 1]);
    for (size_t j = nc - 1; rc == 0 && j > 0; j--) rc = strbuf_printf(out, "%09u", chunks[j - 1]);
    free(limbs);
    free(chunks);
    return rc;
}

int term_enc_charlist(ei_x_buff *x, const uint32_t *cps, size_t n) {
    unsigned char h[5];
    if (n == 0) {
        h[0] = ERL_NIL_EXT;
        return term_x_append(x, h, 1);
    }
    bool bytes = n < 65536;
    for (size_t k = 0; bytes && k < n; k++) bytes = cps[k] < 256;
    if (bytes) {
        h[0] = ERL_STRING_EXT;
        h[1] = (unsigned char)(n >> 8);
        h[2] = (unsigned char)n;
        if (term_x_append(x, h, 3) != 0) return -1;
        for (size_t k = 0; k < n; k++) {
            unsigned char c = (unsigned char)cps[k];
            if (term_x_append(x, &c, 1) != 0) return -1;
        }
        return 0;
    }
    if (ei_x_encode_list_header(x, (long)n) != 0) return -1;
    for (size_t k = 0; k < n; k++)
        if (term_enc_int64(x, cps[k]) != 0) return -1;
    h[0] = ERL_NIL_EXT;
    return term_x_append(x, h, 1);
}

/* ---- floats, base64, UTF-8 ------------------------------------------------------------------ */

int term_format_double(strbuf *out, double d) {
    char buf[48];
    /* For normal doubles a 15-digit %g that reads back is already the shortest form; only
     * subnormals need the search from 1 digit. */
    int first = fabs(d) >= DBL_MIN || d == 0 ? 15 : 1;
    for (int prec = first; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, d);
        if (strtod(buf, NULL) == d) break;
    }
    char *e = strchr(buf, 'e');
    long x = e ? strtol(e + 1, NULL, 10) : 0;
    if (e && x >= -5 && x < 16) {
        /* %g chose an exponent for a modest number (1e+02): write the same digits positionally. */
        char digits[24];
        size_t nd = 0;
        bool neg = buf[0] == '-';
        for (const char *c = buf + neg; c < e; c++)
            if (*c != '.') digits[nd++] = *c;
        char pos[64];
        size_t k = 0;
        if (neg) pos[k++] = '-';
        if (x >= 0) {
            for (long j = 0; j <= x; j++) pos[k++] = (char)((size_t)j < nd ? digits[j] : '0');
            pos[k++] = '.';
            if ((size_t)x + 1 >= nd) pos[k++] = '0';
            for (size_t j = (size_t)x + 1; j < nd; j++) pos[k++] = digits[j];
        } else {
            pos[k++] = '0', pos[k++] = '.';
            for (long j = 0; j < -x - 1; j++) pos[k++] = '0';
            for (size_t j = 0; j < nd; j++) pos[k++] = digits[j];
        }
        return strbuf_append(out, pos, k);
    }
    /* Erlang needs a '.' with digits on both sides, so "1e+20" becomes "1.0e+20". */
    if (strchr(buf, '.')) return strbuf_puts(out, buf);
    if (!e) return strbuf_printf(out, "%s.0", buf);
    return strbuf_printf(out, "%.*s.0%s", (int)(e - buf), buf, e);
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int term_base64_encode(strbuf *out, const void *p, size_t n) {
    const unsigned char *s = p;
    if (strbuf_reserve(out, (n + 2) / 3 * 4) != 0) return -1;
    char *o = out->data + out->len;
    size_t k = 0;
    for (; k + 3 <= n; k += 3) {
        uint32_t v = (uint32_t)s[k] << 16 | (uint32_t)s[k + 1] << 8 | s[k + 2];
        *o++ = b64[v >> 18];
        *o++ = b64[(v >> 12) & 63];
        *o++ = b64[(v >> 6) & 63];
        *o++ = b64[v & 63];
    }
    if (k < n) {
        uint32_t v = (uint32_t)s[k] << 16 | (k + 1 < n ? (uint32_t)s[k + 1] << 8 : 0);
        *o++ = b64[v >> 18];
        *o++ = b64[(v >> 12) & 63];
        *o++ = (char)(k + 1 < n ? b64[(v >> 6) & 63] : '=');
        *o++ = '=';
    }
    out->len = (size_t)(o - out->data);
    out->data[out->len] = '\0';
    return 0;
}

int term_base64_decode(strbuf *out, const char *s, size_t n) {
    while (n > 0 && s[n - 1] == '=') n--;
    if (n % 4 == 1) return -1;
    if (strbuf_reserve(out, n / 4 * 3 + 3) != 0) return -2;
    unsigned char *o = (unsigned char *)out->data + out->len;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t k = 0; k < n; k++) {
        const char *p = s[k] ? strchr(b64, s[k]) : NULL;
        if (!p) return -1;
        acc = acc << 6 | (uint32_t)(p - b64);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            *o++ = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) return -1; /* non-canonical trailing bits */
    out->len = (size_t)((char *)o - out->data);
    out->data[out->len] = '\0';
    return 0;
}

int term_utf8_next(const unsigned char *s, size_t n, size_t *i, uint32_t *cp) {
    size_t k = *i;
    if (k >= n) return -1;
    unsigned c = s[k];
    if (c < 0x80) {
        *cp = c;
        *i = k + 1;
        return 0;
    }
    size_t len;
    uint32_t v, min;
    if ((c & 0xe0) == 0xc0) {
        len = 2, v = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        len = 3, v = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        return -1;
    }
    if (n - k < len) return -1;
    for (size_t j = 1; j < len; j++) {
        if ((s[k + j] & 0xc0) != 0x80) return -1;
        v = v << 6 | (s[k + j] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) return -1;
    *cp = v;
    *i = k + len;
    return 0;
}

long term_utf8_count(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    long count = 0;
    size_t i = 0;
    while (i < n) {
        uint64_t w;
        if (n - i >= 8 && (memcpy(&w, u + i, sizeof w), (w & 0x8080808080808080ull) == 0)) {
            i += 8; /* eight ASCII characters */
            count += 8;
            continue;
        }
        if (u[i] < 0x80) {
            i++;
        } else {
            uint32_t cp;
            if (term_utf8_next(u, n, &i, &cp) != 0) return -1;
        }
        count++;
    }
    return count;
}

int term_utf8_put(strbuf *out, uint32_t cp) {
    char b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = (char)cp, n = 1;
    } else if (cp < 0x800) {
        b[0] = (char)(0xc0 | cp >> 6), b[1] = (char)(0x80 | (cp & 0x3f)), n = 2;
    } else if (cp < 0x10000) {
        b[0] = (char)(0xe0 | cp >> 12), b[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        b[2] = (char)(0x80 | (cp & 0x3f)), n = 3;
    } else {
        b[0] = (char)(0xf0 | cp >> 18), b[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        b[2] = (char)(0x80 | ((cp >> 6) & 0x3f)), b[3] = (char)(0x80 | (cp & 0x3f)), n = 4;
    }
    return strbuf_append(out, b, n);
}

/* ---- bounded ETF walker --------------------------------------------------------------------- */

typedef struct walker {
    const unsigned char *b;
    size_t n;
    unsigned max_depth;
    term_error *err;
    strbuf *map_flags; /* when set: one byte per map in preorder, 1 if it prints as a JSON object */
} walker;

#define NEED(w, i, k)                                                                              \
    do {                                                                                           \
        if ((w)->n - (i) < (size_t)(k))                                                            \
            return term_fail((w)->err, TERM_ERR_SYNTAX, "ETF truncated at offset %zu",             \
                             (size_t)(i));                                                         \
    } while (0)

static int walk_atom(const walker *w, size_t *i) {
    size_t at = *i;
    NEED(w, at, 2);
    unsigned tag = w->b[at];
    size_t hl, len;
    if (tag == ERL_ATOM_EXT || tag == ERL_ATOM_UTF8_EXT) {
        NEED(w, at, 3);
        hl = 3, len = term_be16(w->b + at + 1);
    } else if (tag == ERL_SMALL_ATOM_EXT || tag == ERL_SMALL_ATOM_UTF8_EXT) {
        hl = 2, len = w->b[at + 1];
    } else {
        return term_fail(w->err, TERM_ERR_SYNTAX, "ETF: expected an atom at offset %zu", at);
    }
    NEED(w, at, hl + len);
    long chars = (long)len;
    if (tag == ERL_ATOM_UTF8_EXT || tag == ERL_SMALL_ATOM_UTF8_EXT)
        chars = term_utf8_count((const char *)w->b + at + hl, len);
    if (chars < 0)
        return term_fail(w->err, TERM_ERR_SYNTAX, "ETF: atom at offset %zu is not valid UTF-8", at);
    if (chars > 255)
        return term_fail(w->err, TERM_ERR_SYNTAX, "ETF: atom at offset %zu is longer than 255", at);
    *i = at + hl + len;
    return 0;
}

static int walk(const walker *w, size_t *i, unsigned depth);

static int walk_seq(const walker *w, size_t *i, unsigned depth, size_t count) {
    /* Every term takes at least one byte: reject impossible counts before looping. */
    if (count > w->n - *i)
        return term_fail(w->err, TERM_ERR_SYNTAX, "ETF truncated at offset %zu", *i);
    for (size_t k = 0; k < count; k++)
        if (walk(w, i, depth) != 0) return -1;
    return 0;
}

static int walk_kind(const walker *w, size_t *i, unsigned depth, const char *kind) {
    size_t at = *i;
    NEED(w, at, 1);
    const char *k = term_opaque_kind(w->b[at]);
    if (!k || strcmp(k, kind) != 0)
        return term_fail(w->err, TERM_ERR_SYNTAX, "ETF: expected a %s at offset %zu", kind, at);
    return walk(w, i, depth);
}

static int walk_small_int(const walker *w, size_t *i) {
    size_t at = *i;
    NEED(w, at, 2);
    if (w->b[at] == ERL_SMALL_INTEGER_EXT) {
        *i = at + 2;
        return 0;
    }
    if (w->b[at] == ERL_INTEGER_EXT) {
        NEED(w, at, 5);
        *i = at + 5;
        return 0;
    }
    return term_fail(w->err, TERM_ERR_SYNTAX, "ETF: expected an integer at offset %zu", at);
}

static int walk_deeper(const walker *w, size_t at, unsigned depth) {
    if (depth + 1 > w->max_depth)
        return term_fail(w->err, TERM_ERR_DEPTH, "ETF nesting deeper than %u at offset %zu",
                         w->max_depth, at);
    return 0;
}

static int walk(const walker *w, size_t *i, unsigned depth) {
    size_t at = *i;
    NEED(w, at, 1);
    const unsigned char *p = w->b + at;
    switch (p[0]) {
    case ERL_SMALL_INTEGER_EXT:
        NEED(w, at, 2);
        *i = at + 2;
        return 0;
    case ERL_INTEGER_EXT:
        NEED(w, at, 5);
        *i = at + 5;
        return 0;
    case NEW_FLOAT_EXT: {
        NEED(w, at, 9);
        uint64_t bits = (uint64_t)term_be32(p + 1) << 32 | term_be32(p + 5);
        double d;
        memcpy(&d, &bits, sizeof d);
        if (!isfinite(d))
            return term_fail(w->err, TERM_ERR_SYNTAX, "ETF: float at offset %zu is not finite", at);
        *i = at + 9;
        return 0;
    }
    case ERL_FLOAT_EXT: {
        NEED(w, at, 32);
        char s[32];
        memcpy(s, p + 1, 31);
        s[31] = '\0';
        char *end;
        double d = strtod(s, &end);
        if (end == s || !isfinite(d))
            return term_fail(w->err, TERM_ERR_SYNTAX, "ETF: bad FLOAT_EXT at offset %zu", at);
        *i = at + 32;
        return 0;
    }
    case ERL_ATOM_EXT:
    case ERL_SMALL_ATOM_EXT:
    case ERL_ATOM_UTF8_EXT:
    case ERL_SMALL_ATOM_UTF8_EXT: return walk_atom(w, i);
    case ERL_PID_EXT:
    case ERL_NEW_PID_EXT:
    case ERL_PORT_EXT:
    case ERL_NEW_PORT_EXT:
    case ERL_V4_PORT_EXT:
    case ERL_REFERENCE_EXT: {
        size_t j = at + 1;
        if (walk_atom(w, &j) != 0) return -1;
        size_t tail = p[0] == ERL_PID_EXT                                 ? 9
                      : p[0] == ERL_NEW_PID_EXT                           ? 12
                      : p[0] == ERL_PORT_EXT || p[0] == ERL_REFERENCE_EXT ? 5
                      : p[0] == ERL_NEW_PORT_EXT                          ? 8
                                                                          : 12;
        NEED(w, j, tail);
        *i = j + tail;
        return 0;
    }
    case ERL_NEW_REFERENCE_EXT:
    case ERL_NEWER_REFERENCE_EXT: {
        NEED(w, at, 3);
        size_t len = term_be16(p + 1);
        if (len == 0 || len > 5)
            return term_fail(w->err, TERM_ERR_SYNTAX, "ETF: bad reference at offset %zu", at);
        size_t j = at + 3;
        if (walk_atom(w, &j) != 0) return -1;
        size_t tail = (p[0] == ERL_NEW_REFERENCE_EXT ? 1 : 4) + 4 * len;
        NEED(w, j, tail);
        *i = j + tail;
        return 0;
    }
    case ERL_SMALL_TUPLE_EXT:
    case ERL_LARGE_TUPLE_EXT: {
        size_t hl = p[0] == ERL_SMALL_TUPLE_EXT ? 2 : 5;
        NEED(w, at, hl);
        size_t arity = hl == 2 ? p[1] : term_be32(p + 1);
        if (walk_deeper(w, at, depth) != 0) return -1;
        *i = at + hl;
        return walk_seq(w, i, depth + 1, arity);
    }
    case ERL_NIL_EXT: *i = at + 1; return 0;
    case ERL_STRING_EXT: {
        NEED(w, at, 3);
        size_t len = term_be16(p + 1);
        NEED(w, at, 3 + len);
        *i = at + 3 + len;
        return 0;
    }
    case ERL_LIST_EXT: {
        NEED(w, at, 5);
        if (walk_deeper(w, at, depth) != 0) return -1;
        *i = at + 5;
        if (walk_seq(w, i, depth + 1, term_be32(p + 1)) != 0) return -1;
        return walk(w, i, depth + 1);
    }
    case ERL_BINARY_EXT: {
        NEED(w, at, 5);
        size_t len = term_be32(p + 1);
        NEED(w, at, 5 + len);
        *i = at + 5 + len;
        return 0;
    }
    case ERL_BIT_BINARY_EXT: {
        NEED(w, at, 6);
        size_t len = term_be32(p + 1);
        if (p[5] < 1 || p[5] > 8 || len == 0)
            return term_fail(w->err, TERM_ERR_SYNTAX, "ETF: bad bit string at offset %zu", at);
        NEED(w, at, 6 + len);
        *i = at + 6 + len;
        return 0;
    }
    case ERL_SMALL_BIG_EXT:
    case ERL_LARGE_BIG_EXT: {
        size_t hl = p[0] == ERL_SMALL_BIG_EXT ? 3 : 6;
        NEED(w, at, hl);
        size_t len = hl == 3 ? p[1] : term_be32(p + 1);
        if (p[hl - 1] > 1)
            return term_fail(w->err, TERM_ERR_SYNTAX, "ETF: bad bignum sign at offset %zu", at);
        NEED(w, at, hl + len);
        *i = at + hl + len;
        return 0;
    }
    case ERL_MAP_EXT: {
        NEED(w, at, 5);
        size_t pairs = term_be32(p + 1);
        if (walk_deeper(w, at, depth) != 0) return -1;
        *i = at + 5;
        if (pairs > (w->n - *i) / 2)
            return term_fail(w->err, TERM_ERR_SYNTAX, "ETF truncated at offset %zu", *i);
        if (!w->map_flags) return walk_seq(w, i, depth + 1, pairs * 2);
        size_t slot = w->map_flags->len;
        if (strbuf_putc(w->map_flags, 1) != 0)
            return term_fail(w->err, TERM_ERR_NOMEM, "out of memory");
        for (size_t k = 0; k < pairs; k++) {
            size_t key = *i;
            if (walk(w, i, depth + 1) != 0) return -1;
            const unsigned char *kp = w->b + key;
            bool plain = kp[0] == ERL_BINARY_EXT &&
                         term_utf8_count((const char *)kp + 5, term_be32(kp + 1)) >= 0 &&
                         !(pairs == 1 && term_be32(kp + 1) > 0 && kp[5] == '$');
            if (!plain) w->map_flags->data[slot] = 0;
            if (walk(w, i, depth + 1) != 0) return -1;
        }
        return 0;
    }
    case ERL_NEW_FUN_EXT: {
        NEED(w, at, 30);
        size_t size = term_be32(p + 1);
        NEED(w, at, 1 + size);
        size_t nfree = term_be32(p + 26);
        if (walk_deeper(w, at, depth) != 0) return -1;
        size_t j = at + 30;
        if (walk_atom(w, &j) != 0 || walk_small_int(w, &j) != 0 || walk_small_int(w, &j) != 0 ||
            walk_kind(w, &j, depth + 1, "pid") != 0 || walk_seq(w, &j, depth + 1, nfree) != 0)
            return -1;
        if (j != at + 1 + size)
            return term_fail(w->err, TERM_ERR_SYNTAX, "ETF: fun size mismatch at offset %zu", at);
        *i = j;
        return 0;
    }
    case ERL_EXPORT_EXT: {
        size_t j = at + 1;
        if (walk_atom(w, &j) != 0) return -1; /* module */
        if (walk_atom(w, &j) != 0) return -1; /* function */
        NEED(w, j, 2);
        if (w->b[j] != ERL_SMALL_INTEGER_EXT)
            return term_fail(w->err, TERM_ERR_SYNTAX, "ETF: bad export arity at offset %zu", j);
        *i = j + 2;
        return 0;
    }
    case ERL_FUN_EXT: {
        NEED(w, at, 5);
        size_t nfree = term_be32(p + 1);
        if (walk_deeper(w, at, depth) != 0) return -1;
        size_t j = at + 5;
        if (walk_kind(w, &j, depth + 1, "pid") != 0 || walk_atom(w, &j) != 0 ||
            walk_small_int(w, &j) != 0 || walk_small_int(w, &j) != 0 ||
            walk_seq(w, &j, depth + 1, nfree) != 0)
            return -1;
        *i = j;
        return 0;
    }
    case 80:
        return term_fail(w->err, TERM_ERR_UNSUPPORTED,
                         "ETF: compressed term (tag 80) at offset %zu is not supported; "
                         "send term_to_binary output without the compressed option",
                         at);
    default:
        return term_fail(w->err, TERM_ERR_SYNTAX, "ETF: unknown tag %u at offset %zu", p[0], at);
    }
}

int term_etf_check(const char *buf, size_t buf_len, int *index, const term_limits *limits,
                   term_error *err) {
    return term_etf_check_maps(buf, buf_len, index, limits, err, NULL);
}

int term_etf_check_maps(const char *buf, size_t buf_len, int *index, const term_limits *limits,
                        term_error *err, strbuf *map_flags) {
    term_limits lim = term_limits_effective(limits);
    if (*index < 0 || (size_t)*index > buf_len)
        return term_fail(err, TERM_ERR_SYNTAX, "ETF: index %d outside the buffer", *index);
    walker w = {(const unsigned char *)buf, buf_len, lim.max_depth, err, map_flags};
    size_t i = (size_t)*index;
    if (walk(&w, &i, 0) != 0) return -1;
    if (i > INT32_MAX) return term_fail(err, TERM_ERR_SIZE, "ETF term too large");
    *index = (int)i;
    return 0;
}

size_t term_atom_utf8(const char *buf, int *i, char *out) {
    const unsigned char *p = (const unsigned char *)buf + *i;
    bool small = p[0] == ERL_SMALL_ATOM_EXT || p[0] == ERL_SMALL_ATOM_UTF8_EXT;
    size_t hl = small ? 2 : 3, len = small ? p[1] : term_be16(p + 1);
    *i += (int)(hl + len);
    if (p[0] == ERL_ATOM_UTF8_EXT || p[0] == ERL_SMALL_ATOM_UTF8_EXT) {
        memcpy(out, p + hl, len);
        return len;
    }
    size_t n = 0; /* latin1: at most 255 characters, 510 bytes as UTF-8 */
    for (size_t k = 0; k < len; k++) {
        unsigned char c = p[hl + k];
        if (c < 0x80) {
            out[n++] = (char)c;
        } else {
            out[n++] = (char)(0xc0 | c >> 6);
            out[n++] = (char)(0x80 | (c & 0x3f));
        }
    }
    return n;
}

const char *term_opaque_kind(unsigned char tag) {
    switch (tag) {
    case ERL_PID_EXT:
    case ERL_NEW_PID_EXT: return "pid";
    case ERL_REFERENCE_EXT:
    case ERL_NEW_REFERENCE_EXT:
    case ERL_NEWER_REFERENCE_EXT: return "ref";
    case ERL_PORT_EXT:
    case ERL_NEW_PORT_EXT:
    case ERL_V4_PORT_EXT: return "port";
    case ERL_NEW_FUN_EXT:
    case ERL_EXPORT_EXT:
    case ERL_FUN_EXT: return "fun";
    default: return NULL;
    }
}

int term_enc_opaque(ei_x_buff *x, const char *kind, const char *bytes, size_t n, term_error *err,
                    const char *where) {
    const char *k = n ? term_opaque_kind((unsigned char)bytes[0]) : NULL;
    if (!k || strcmp(k, kind) != 0)
        return term_fail(err, TERM_ERR_TAG, "%s: $%s bytes do not encode a %s", where, kind, kind);
    int idx = 0;
    term_error sub;
    if (term_etf_check(bytes, n, &idx, NULL, &sub) != 0 || (size_t)idx != n)
        return term_fail(err, TERM_ERR_TAG, "%s: $%s bytes are not one valid term", where, kind);
    if (term_x_append(x, bytes, n) != 0) return term_fail(err, TERM_ERR_NOMEM, "out of memory");
    return 0;
}

/* ---- encoders that patch headers ------------------------------------------------------------ */

int term_enc_binary(ei_x_buff *x, const void *p, size_t n) {
    unsigned char h[5] = {ERL_BINARY_EXT, (unsigned char)(n >> 24), (unsigned char)(n >> 16),
                          (unsigned char)(n >> 8), (unsigned char)n};
    return term_x_append(x, h, 5) == 0 && term_x_append(x, p, n) == 0 ? 0 : -1;
}

int term_hdr_reserve(ei_x_buff *x) {
    static const char zeros[5] = {0};
    int at = x->index;
    return term_x_append(x, zeros, 5) == 0 ? at : -1;
}

static void put_hdr(ei_x_buff *x, int hdr, unsigned char tag, size_t n) {
    unsigned char *p = (unsigned char *)x->buff + hdr;
    p[0] = tag;
    p[1] = (unsigned char)(n >> 24);
    p[2] = (unsigned char)(n >> 16);
    p[3] = (unsigned char)(n >> 8);
    p[4] = (unsigned char)n;
}

int term_list_close(ei_x_buff *x, int hdr, size_t n, bool all_bytes) {
    unsigned char *p = (unsigned char *)x->buff + hdr;
    if (n == 0) {
        p[0] = ERL_NIL_EXT;
        x->index = hdr + 1;
        return 0;
    }
    if (all_bytes && n < 65536) {
        /* [97,v] pairs compact in place into STRING_EXT, as term_to_binary would write it. */
        p[0] = ERL_STRING_EXT;
        p[1] = (unsigned char)(n >> 8);
        p[2] = (unsigned char)n;
        for (size_t k = 0; k < n; k++) p[3 + k] = p[5 + 2 * k + 1];
        x->index = hdr + 3 + (int)n;
        return 0;
    }
    put_hdr(x, hdr, ERL_LIST_EXT, n);
    const char nil = ERL_NIL_EXT;
    return term_x_append(x, &nil, 1);
}

void term_improper_close(ei_x_buff *x, int hdr, size_t n) {
    put_hdr(x, hdr, ERL_LIST_EXT, n);
}

void term_tuple_close(ei_x_buff *x, int hdr, size_t arity) {
    if (arity >= 256) {
        put_hdr(x, hdr, ERL_LARGE_TUPLE_EXT, arity);
        return;
    }
    char *p = x->buff + hdr;
    memmove(p + 2, p + 5, (size_t)(x->index - hdr - 5));
    p[0] = ERL_SMALL_TUPLE_EXT;
    p[1] = (char)arity;
    x->index -= 3;
}

void term_map_close(ei_x_buff *x, int hdr, size_t n) {
    put_hdr(x, hdr, ERL_MAP_EXT, n);
}

bool term_is_byte_int(const ei_x_buff *x, int start) {
    return x->index - start == 2 && x->buff[start] == ERL_SMALL_INTEGER_EXT;
}

/* ---- cons chains ---- */

/* True when the checked term at b[i] holds a list cell whose tail is a list cell or a string. */
static bool chain_in(const unsigned char *b, int *i) {
    switch (b[*i]) {
    case ERL_SMALL_TUPLE_EXT:
    case ERL_LARGE_TUPLE_EXT:
    case ERL_MAP_EXT: {
        bool small = b[*i] == ERL_SMALL_TUPLE_EXT;
        size_t n = small ? b[*i + 1] : term_be32(b + *i + 1);
        if (b[*i] == ERL_MAP_EXT) n *= 2;
        *i += small ? 2 : 5;
        for (size_t k = 0; k < n; k++)
            if (chain_in(b, i)) return true;
        return false;
    }
    case ERL_LIST_EXT: {
        size_t n = term_be32(b + *i + 1);
        *i += 5;
        for (size_t k = 0; k < n; k++)
            if (chain_in(b, i)) return true;
        if (b[*i] == ERL_LIST_EXT || b[*i] == ERL_STRING_EXT) return true;
        return chain_in(b, i); /* the tail */
    }
    default: ei_skip_term((const char *)b, i); return false;
    }
}

static int merge_term(const unsigned char *b, int *i, ei_x_buff *x);

/* A list cell and every cell its tails chain on, as one list. */
static int merge_list(const unsigned char *b, int *i, ei_x_buff *x) {
    int hdr = term_hdr_reserve(x);
    if (hdr < 0) return -1;
    size_t n = 0;
    bool all_bytes = true;
    while (b[*i] == ERL_LIST_EXT) {
        size_t cell = term_be32(b + *i + 1);
        *i += 5;
        for (size_t k = 0; k < cell; k++, n++) {
            int start = x->index;
            if (merge_term(b, i, x) != 0) return -1;
            all_bytes = all_bytes && term_is_byte_int(x, start);
        }
    }
    if (b[*i] == ERL_STRING_EXT) {
        size_t len = term_be16(b + *i + 1);
        for (size_t k = 0; k < len; k++, n++) {
            const char e[2] = {(char)ERL_SMALL_INTEGER_EXT, (char)b[*i + 3 + k]};
            if (term_x_append(x, e, 2) != 0) return -1;
        }
        *i += 3 + (int)len;
        return term_list_close(x, hdr, n, all_bytes);
    }
    if (b[*i] == ERL_NIL_EXT) {
        (*i)++;
        return term_list_close(x, hdr, n, all_bytes);
    }
    if (merge_term(b, i, x) != 0) return -1; /* a tail that is no list: improper */
    term_improper_close(x, hdr, n);
    return 0;
}

static int merge_term(const unsigned char *b, int *i, ei_x_buff *x) {
    unsigned char tag = b[*i];
    if (tag == ERL_LIST_EXT) return merge_list(b, i, x);
    if (tag == ERL_SMALL_TUPLE_EXT || tag == ERL_LARGE_TUPLE_EXT || tag == ERL_MAP_EXT) {
        bool small = tag == ERL_SMALL_TUPLE_EXT;
        size_t n = small ? b[*i + 1] : term_be32(b + *i + 1);
        int head = small ? 2 : 5;
        if (term_x_append(x, b + *i, (size_t)head) != 0) return -1;
        *i += head;
        if (tag == ERL_MAP_EXT) n *= 2;
        for (size_t k = 0; k < n; k++)
            if (merge_term(b, i, x) != 0) return -1;
        return 0;
    }
    int start = *i;
    ei_skip_term((const char *)b, i);
    return term_x_append(x, b + start, (size_t)(*i - start));
}

int term_merge_list_chains(const char **buf, size_t *len, int *index, ei_x_buff *tmp) {
    const unsigned char *b = (const unsigned char *)*buf;
    int probe = *index;
    if (!chain_in(b, &probe)) return 0;
    if (ei_x_new(tmp) != 0) return -1;
    int i = *index;
    if (merge_term(b, &i, tmp) != 0) {
        ei_x_free(tmp);
        return -1;
    }
    *buf = tmp->buff;
    *len = (size_t)tmp->index;
    *index = 0;
    return 1;
}
