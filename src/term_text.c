/* term_text: Erlang text syntax ("{ping, <<\"hi\">>}") to ei-encoded terms and back. */
#include "term_common.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ==== text -> term ============================================================================ */

typedef struct tparser {
    const char *s;
    size_t n, i;
    unsigned max_depth;
    const erlang_pid *self;
    ei_x_buff *x;
    term_error *err;
    strbuf str;
    strbuf aux;
} tparser;

static int tfail(tparser *p, term_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int tfail(tparser *p, term_status st, const char *fmt, ...) {
    char what[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return term_fail(p->err, st, "%s at offset %zu", what, p->i);
}

static int tnomem(tparser *p) {
    return term_fail(p->err, TERM_ERR_NOMEM, "out of memory");
}

/* Skips whitespace and % comments. */
static void tws(tparser *p) {
    while (p->i < p->n) {
        char c = p->s[p->i];
        if (c == '%') {
            while (p->i < p->n && p->s[p->i] != '\n') p->i++;
        } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
            p->i++;
        } else {
            break;
        }
    }
}

static bool tpeek(tparser *p, const char *lit) {
    size_t len = strlen(lit);
    return p->n - p->i >= len && memcmp(p->s + p->i, lit, len) == 0;
}

static int texpect(tparser *p, const char *lit) {
    tws(p);
    if (!tpeek(p, lit)) return tfail(p, TERM_ERR_SYNTAX, "expected '%s'", lit);
    p->i += strlen(lit);
    return 0;
}

static bool is_digit(char c) {
    return c >= '0' && c <= '9';
}
static bool is_alnum(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '_' || c == '@';
}

static int hexval(char c) {
    if (is_digit(c)) return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Reads one character of a quoted literal (after the backslash handling), as a code point. */
static int tchar(tparser *p, uint32_t *cp) {
    const unsigned char *u = (const unsigned char *)p->s;
    if (p->i >= p->n) return tfail(p, TERM_ERR_SYNTAX, "unexpected end of input");
    if (u[p->i] != '\\') {
        if (term_utf8_next(u, p->n, &p->i, cp) != 0)
            return tfail(p, TERM_ERR_SYNTAX, "invalid UTF-8");
        return 0;
    }
    p->i++;
    if (p->i >= p->n) return tfail(p, TERM_ERR_SYNTAX, "unterminated escape");
    char e = p->s[p->i++];
    static const char from[] = "bdefnrstv", to[] = "\b\x7f\x1b\f\n\r \t\v";
    const char *m = strchr(from, e);
    if (e && m) {
        *cp = (unsigned char)to[m - from];
        return 0;
    }
    if (e >= '0' && e <= '7') {
        uint32_t v = (uint32_t)(e - '0');
        for (int k = 0; k < 2 && p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '7'; k++)
            v = v * 8 + (uint32_t)(p->s[p->i++] - '0');
        *cp = v;
        return 0;
    }
    if (e == 'x') {
        uint32_t v = 0;
        if (p->i < p->n && p->s[p->i] == '{') {
            p->i++;
            size_t digits = 0;
            while (p->i < p->n && hexval(p->s[p->i]) >= 0 && digits < 8)
                v = v * 16 + (uint32_t)hexval(p->s[p->i++]), digits++;
            if (digits == 0 || p->i >= p->n || p->s[p->i] != '}')
                return tfail(p, TERM_ERR_SYNTAX, "bad \\x{...} escape");
            p->i++;
        } else {
            if (p->n - p->i < 2 || hexval(p->s[p->i]) < 0 || hexval(p->s[p->i + 1]) < 0)
                return tfail(p, TERM_ERR_SYNTAX, "bad \\xHH escape");
            v = (uint32_t)(hexval(p->s[p->i]) * 16 + hexval(p->s[p->i + 1]));
            p->i += 2;
        }
        if (v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
            return tfail(p, TERM_ERR_SYNTAX, "escape is not a Unicode code point");
        *cp = v;
        return 0;
    }
    if (e == '^') {
        if (p->i >= p->n) return tfail(p, TERM_ERR_SYNTAX, "bad \\^ escape");
        *cp = (uint32_t)(p->s[p->i++] & 31);
        return 0;
    }
    *cp = (unsigned char)e; /* \" \' \\ and any other character stand for themselves */
    if ((unsigned char)e >= 0x80) {
        p->i--;
        if (term_utf8_next((const unsigned char *)p->s, p->n, &p->i, cp) != 0)
            return tfail(p, TERM_ERR_SYNTAX, "invalid UTF-8");
    }
    return 0;
}

/* Reads a quoted literal into p->str as code points (uint32_t array). */
static int tquoted(tparser *p, char quote, size_t *count) {
    strbuf_reset(&p->str);
    p->i++;
    *count = 0;
    for (;;) {
        if (p->i >= p->n)
            return tfail(p, TERM_ERR_SYNTAX, "unterminated %s", quote == '"' ? "string" : "atom");
        if (p->s[p->i] == quote) {
            p->i++;
            return 0;
        }
        uint32_t cp;
        if (tchar(p, &cp) != 0) return -1;
        if (strbuf_append(&p->str, &cp, sizeof cp) != 0) return tnomem(p);
        (*count)++;
    }
}

static int enc_atom_cps(tparser *p, const uint32_t *cps, size_t n, size_t at) {
    if (n > 255) {
        p->i = at;
        return tfail(p, TERM_ERR_SYNTAX, "atom longer than 255 characters");
    }
    strbuf_reset(&p->aux);
    for (size_t k = 0; k < n; k++)
        if (term_utf8_put(&p->aux, cps[k]) != 0) return tnomem(p);
    return ei_x_encode_atom_len_as(p->x, p->aux.data ? p->aux.data : "", (int)p->aux.len,
                                   ERLANG_UTF8, ERLANG_UTF8) == 0
               ? 0
               : tnomem(p);
}

/* Parses an integer or float literal; with `bits_out` set, an integer is returned instead of
 * encoded (for binary segments; must fit 64 bits). */
static int tnumber(tparser *p, int64_t *int_out, bool *is_int) {
    size_t start = p->i;
    bool neg = false;
    if (p->s[p->i] == '-' || p->s[p->i] == '+') neg = p->s[p->i++] == '-';
    if (p->i < p->n && p->s[p->i] == '$') {
        p->i++;
        uint32_t cp;
        if (tchar(p, &cp) != 0) return -1;
        int64_t v = neg ? -(int64_t)cp : (int64_t)cp;
        if (int_out) {
            *int_out = v, *is_int = true;
            return 0;
        }
        return term_enc_int64(p->x, v) == 0 ? 0 : tnomem(p);
    }
    size_t d0 = p->i;
    while (p->i < p->n && is_digit(p->s[p->i])) p->i++;
    if (p->i == d0) return tfail(p, TERM_ERR_SYNTAX, "expected a number");
    unsigned base = 10;
    size_t ds = d0, de = p->i;
    if (p->i < p->n && p->s[p->i] == '#') {
        unsigned long b = strtoul(p->s + d0, NULL, 10);
        if (de - d0 > 2 || b < 2 || b > 36) return tfail(p, TERM_ERR_SYNTAX, "bad base");
        base = (unsigned)b;
        p->i++;
        ds = p->i;
        while (p->i < p->n && is_alnum(p->s[p->i]) && p->s[p->i] != '_' && p->s[p->i] != '@') {
            char c = p->s[p->i];
            int v = is_digit(c) ? c - '0' : (c | 0x20) - 'a' + 10;
            if (v >= (int)base) break;
            p->i++;
        }
        de = p->i;
        if (ds == de) return tfail(p, TERM_ERR_SYNTAX, "expected base-%u digits", base);
    } else if (p->n - p->i >= 2 && p->s[p->i] == '.' && is_digit(p->s[p->i + 1])) {
        p->i++;
        while (p->i < p->n && is_digit(p->s[p->i])) p->i++;
        if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
            size_t k = p->i + 1;
            if (k < p->n && (p->s[k] == '+' || p->s[k] == '-')) k++;
            if (k < p->n && is_digit(p->s[k])) {
                while (k < p->n && is_digit(p->s[k])) k++;
                p->i = k;
            }
        }
        if (int_out) return tfail(p, TERM_ERR_UNSUPPORTED, "float binary segments");
        strbuf_reset(&p->aux);
        if (strbuf_append(&p->aux, p->s + start, p->i - start) != 0) return tnomem(p);
        double d = strtod(p->aux.data, NULL);
        if (!isfinite(d)) return tfail(p, TERM_ERR_UNSUPPORTED, "float out of range");
        return ei_x_encode_double(p->x, d) == 0 ? 0 : tnomem(p);
    }
    if (base == 10 && de - ds <= 18) {
        int64_t v = 0;
        for (size_t k = ds; k < de; k++) v = v * 10 + (p->s[k] - '0');
        v = neg ? -v : v;
        if (int_out) {
            *int_out = v, *is_int = true;
            return 0;
        }
        return term_enc_int64(p->x, v) == 0 ? 0 : tnomem(p);
    }
    uint8_t *mag;
    size_t mlen;
    int rc = term_mag_from_digits(p->s + ds, de - ds, base, &mag, &mlen);
    if (rc == -2) return tfail(p, TERM_ERR_SIZE, "integer too large");
    if (rc != 0) return tnomem(p);
    if (int_out) {
        uint64_t v = 0;
        for (size_t k = mlen; k > 0; k--) v = v << 8 | mag[k - 1];
        free(mag);
        if (mlen > 8 || v > (uint64_t)INT64_MAX)
            return tfail(p, TERM_ERR_UNSUPPORTED, "binary segment value over 64 bits");
        *int_out = neg ? -(int64_t)v : (int64_t)v;
        *is_int = true;
        return 0;
    }
    rc = term_enc_int_mag(p->x, neg, mag, mlen);
    free(mag);
    return rc == 0 ? 0 : tnomem(p);
}

/* Appends the low `size` bits of v, most significant first, at bit position *nbits of dst. */
static int put_bits(strbuf *dst, size_t *nbits, uint64_t v, unsigned size) {
    if (size == 8 && *nbits % 8 == 0) {
        *nbits += 8;
        return strbuf_putc(dst, (char)v);
    }
    for (unsigned k = size; k > 0; k--) {
        if (*nbits % 8 == 0 && strbuf_putc(dst, 0) != 0) return -1;
        char *byte = &dst->data[*nbits / 8];
        if ((v >> (k - 1)) & 1) *byte = (char)((unsigned char)*byte | (0x80u >> (*nbits % 8)));
        (*nbits)++;
    }
    return 0;
}

static bool tword(tparser *p, const char *w) {
    size_t len = strlen(w);
    if (!tpeek(p, w) || (p->i + len < p->n && is_alnum(p->s[p->i + len]))) return false;
    p->i += len;
    return true;
}

static int tbinary(tparser *p) {
    p->i += 2; /* << */
    strbuf bits = {0};
    size_t nbits = 0;
    int rc = 0;
    tws(p);
    if (tpeek(p, ">>")) {
        p->i += 2;
        goto done;
    }
    for (;;) {
        tws(p);
        if (p->i >= p->n) {
            rc = tfail(p, TERM_ERR_SYNTAX, "unterminated binary");
            goto done;
        }
        size_t count = 0;
        int64_t v = 0;
        bool is_str = p->s[p->i] == '"', is_int = false;
        if (is_str && nbits % 8 == 0) {
            /* Fast path: a plain string segment (printable ASCII, no escapes) without a size or
             * type is its bytes as they are. */
            size_t e = p->i + 1;
            while (e < p->n && (unsigned char)p->s[e] >= 0x20 && (unsigned char)p->s[e] < 0x7f &&
                   p->s[e] != '"' && p->s[e] != '\\')
                e++;
            if (e < p->n && p->s[e] == '"') {
                size_t after = e + 1;
                while (after < p->n && (p->s[after] == ' ' || p->s[after] == '\t' ||
                                        p->s[after] == '\n' || p->s[after] == '\r'))
                    after++;
                if (after < p->n && (p->s[after] == ',' || p->s[after] == '>')) {
                    if (strbuf_append(&bits, p->s + p->i + 1, e - p->i - 1) != 0) goto nomem;
                    nbits += (e - p->i - 1) * 8;
                    p->i = after;
                    if (p->s[p->i] == ',') {
                        p->i++;
                        continue;
                    }
                    if ((rc = texpect(p, ">>")) != 0) goto done;
                    break;
                }
            }
        }
        if (is_str) {
            if ((rc = tquoted(p, '"', &count)) != 0) goto done;
        } else if (p->s[p->i] == '-' || p->s[p->i] == '$' || is_digit(p->s[p->i])) {
            if ((rc = tnumber(p, &v, &is_int)) != 0) goto done;
        } else {
            rc = tfail(p, TERM_ERR_SYNTAX, "expected a string or integer segment");
            goto done;
        }
        unsigned size = 8;
        bool utf8 = false;
        tws(p);
        if (!is_str && p->i < p->n && p->s[p->i] == ':') {
            p->i++;
            tws(p);
            size_t d0 = p->i;
            unsigned long s = 0;
            while (p->i < p->n && is_digit(p->s[p->i]) && s <= 64)
                s = s * 10 + (unsigned)(p->s[p->i++] - '0');
            if (p->i == d0 || s == 0 || s > 64) {
                rc = tfail(p, TERM_ERR_UNSUPPORTED, "segment size must be 1..64 bits");
                goto done;
            }
            size = (unsigned)s;
            tws(p);
        }
        if (p->i < p->n && p->s[p->i] == '/') {
            p->i++;
            tws(p);
            if (!tword(p, "utf8")) {
                rc = tfail(p, TERM_ERR_UNSUPPORTED, "only the /utf8 type is supported");
                goto done;
            }
            utf8 = true;
        }
        const uint32_t *cps = is_str ? (const uint32_t *)(const void *)p->str.data : NULL;
        uint32_t one = (uint32_t)v;
        if (!is_str) {
            if (utf8 && (v < 0 || v > 0x10ffff)) {
                rc = tfail(p, TERM_ERR_SYNTAX, "/utf8 segment is not a code point");
                goto done;
            }
            cps = &one, count = 1;
        }
        for (size_t k = 0; k < count; k++) {
            if (utf8) {
                strbuf_reset(&p->aux);
                if (term_utf8_put(&p->aux, cps[k]) != 0) goto nomem;
                for (size_t j = 0; j < p->aux.len; j++)
                    if (put_bits(&bits, &nbits, (unsigned char)p->aux.data[j], 8) != 0) goto nomem;
            } else if (put_bits(&bits, &nbits, is_str ? cps[k] : (uint64_t)v, size) != 0) {
                goto nomem;
            }
        }
        tws(p);
        if (p->i < p->n && p->s[p->i] == ',') {
            p->i++;
            continue;
        }
        if ((rc = texpect(p, ">>")) != 0) goto done;
        break;
    }
done:
    if (rc == 0) {
        if (nbits % 8 == 0) {
            rc = term_enc_binary(p->x, bits.data ? bits.data : "", bits.len);
        } else {
            unsigned char h[6] = {ERL_BIT_BINARY_EXT,
                                  (unsigned char)(bits.len >> 24),
                                  (unsigned char)(bits.len >> 16),
                                  (unsigned char)(bits.len >> 8),
                                  (unsigned char)bits.len,
                                  (unsigned char)(nbits % 8)};
            rc = term_x_append(p->x, h, 6) || term_x_append(p->x, bits.data, bits.len);
        }
        if (rc != 0) rc = tnomem(p);
    }
    strbuf_free(&bits);
    return rc;
nomem:
    strbuf_free(&bits);
    return tnomem(p);
}

static int tvalue(tparser *p, unsigned depth);

static int tdeeper(tparser *p, unsigned depth) {
    if (depth + 1 > p->max_depth)
        return tfail(p, TERM_ERR_DEPTH, "nesting deeper than %u", p->max_depth);
    return 0;
}

/* Parses "v, v, ... <close>" after the opening bracket; stops before '|' for lists. */
static int titems(tparser *p, unsigned depth, const char *close, size_t *n, bool *all_bytes) {
    *n = 0;
    *all_bytes = true;
    tws(p);
    if (tpeek(p, close)) return 0;
    for (;;) {
        int start = p->x->index;
        if (tvalue(p, depth) != 0) return -1;
        *all_bytes = *all_bytes && term_is_byte_int(p->x, start);
        (*n)++;
        tws(p);
        if (p->i < p->n && p->s[p->i] == ',') {
            p->i++;
            continue;
        }
        return 0;
    }
}

static int tlist(tparser *p, unsigned depth) {
    p->i++;
    if (tdeeper(p, depth) != 0) return -1;
    int hdr = term_hdr_reserve(p->x);
    if (hdr < 0) return tnomem(p);
    size_t n;
    bool all;
    if (titems(p, depth + 1, "]", &n, &all) != 0) return -1;
    tws(p);
    if (n > 0 && p->i < p->n && p->s[p->i] == '|') {
        p->i++;
        int tail = p->x->index;
        if (tvalue(p, depth + 1) != 0 || texpect(p, "]") != 0) return -1;
        if (p->x->index == tail + 1 && p->x->buff[tail] == ERL_NIL_EXT) {
            p->x->index = tail; /* [a|[]] is the proper list [a] */
            return term_list_close(p->x, hdr, n, all) == 0 ? 0 : tnomem(p);
        }
        term_improper_close(p->x, hdr, n);
        return 0;
    }
    if (texpect(p, "]") != 0) return -1;
    return term_list_close(p->x, hdr, n, all) == 0 ? 0 : tnomem(p);
}

static int topaque(tparser *p, const char *kind, size_t skip) {
    size_t at = p->i;
    p->i += skip;
    size_t b0 = p->i;
    while (p->i < p->n && p->s[p->i] != '>') p->i++;
    if (p->i >= p->n) return tfail(p, TERM_ERR_SYNTAX, "unterminated #%s<...>", kind);
    strbuf_reset(&p->aux);
    if (term_base64_decode(&p->aux, p->s + b0, p->i - b0) != 0) {
        p->i = b0;
        return tfail(p, TERM_ERR_SYNTAX, "#%s<...> does not hold base64", kind);
    }
    p->i++;
    char where[40];
    snprintf(where, sizeof where, "offset %zu", at);
    return term_enc_opaque(p->x, kind, p->aux.data ? p->aux.data : "", p->aux.len, p->err, where);
}

static int tvalue(tparser *p, unsigned depth) {
    tws(p);
    if (p->i >= p->n) return tfail(p, TERM_ERR_SYNTAX, "unexpected end of input");
    char c = p->s[p->i];
    size_t at = p->i, n;
    bool all;
    if (c == '{') {
        p->i++;
        if (tdeeper(p, depth) != 0) return -1;
        int hdr = term_hdr_reserve(p->x);
        if (hdr < 0) return tnomem(p);
        if (titems(p, depth + 1, "}", &n, &all) != 0 || texpect(p, "}") != 0) return -1;
        term_tuple_close(p->x, hdr, n);
        return 0;
    }
    if (c == '[') return tlist(p, depth);
    if (c == '<' && tpeek(p, "<<")) return tbinary(p);
    if (c == '#' && tpeek(p, "#{")) {
        p->i += 2;
        if (tdeeper(p, depth) != 0) return -1;
        int hdr = term_hdr_reserve(p->x);
        if (hdr < 0) return tnomem(p);
        n = 0;
        tws(p);
        if (!tpeek(p, "}")) {
            for (;;) {
                if (tvalue(p, depth + 1) != 0 || texpect(p, "=>") != 0 || tvalue(p, depth + 1) != 0)
                    return -1;
                n++;
                tws(p);
                if (p->i < p->n && p->s[p->i] == ',') {
                    p->i++;
                    continue;
                }
                break;
            }
        }
        if (texpect(p, "}") != 0) return -1;
        term_map_close(p->x, hdr, n);
        return 0;
    }
    if (c == '#') {
        if (tpeek(p, "#Pid<")) return topaque(p, "pid", 5);
        if (tpeek(p, "#Ref<")) return topaque(p, "ref", 5);
        if (tpeek(p, "#Port<")) return topaque(p, "port", 6);
        if (tpeek(p, "#Fun<")) return topaque(p, "fun", 5);
    }
    if (c == '"') {
        if (tquoted(p, '"', &n) != 0) return -1;
        return term_enc_charlist(p->x, (const uint32_t *)(const void *)p->str.data, n) == 0
                   ? 0
                   : tnomem(p);
    }
    if (c == '\'') {
        if (tquoted(p, '\'', &n) != 0) return -1;
        return enc_atom_cps(p, (const uint32_t *)(const void *)p->str.data, n, at);
    }
    if (c >= 'a' && c <= 'z') {
        if (tword(p, "self")) {
            size_t save = p->i;
            tws(p);
            if (tpeek(p, "(")) {
                p->i++;
                if (texpect(p, ")") != 0) return -1;
                if (!p->self) {
                    p->i = at;
                    return tfail(p, TERM_ERR_SELF, "self() but no call pid exists");
                }
                return ei_x_encode_pid(p->x, p->self) == 0 ? 0 : tnomem(p);
            }
            p->i = save;
        }
        while (p->i < p->n && is_alnum(p->s[p->i])) p->i++;
        if (p->i - at > 255) {
            p->i = at;
            return tfail(p, TERM_ERR_SYNTAX, "atom longer than 255 characters");
        }
        return ei_x_encode_atom_len_as(p->x, p->s + at, (int)(p->i - at), ERLANG_UTF8,
                                       ERLANG_UTF8) == 0
                   ? 0
                   : tnomem(p);
    }
    if (c == '-' || c == '+' || c == '$' || is_digit(c)) return tnumber(p, NULL, NULL);
    if ((c >= 'A' && c <= 'Z') || c == '_')
        return tfail(p, TERM_ERR_SYNTAX, "variables are not terms");
    return tfail(p, TERM_ERR_SYNTAX, "unexpected character");
}

int term_from_text(const char *text, size_t len, const term_limits *limits, const erlang_pid *self,
                   ei_x_buff *out, term_error *err) {
    term_limits lim = term_limits_effective(limits);
    if (len > lim.max_bytes)
        return term_fail(err, TERM_ERR_SIZE, "text input of %zu bytes is over the limit of %zu",
                         len, lim.max_bytes);
    tparser p = {
        .s = text, .n = len, .max_depth = lim.max_depth, .self = self, .x = out, .err = err};
    int start = out->index;
    int rc = tvalue(&p, 0);
    if (rc == 0) {
        tws(&p);
        if (p.i < p.n && p.s[p.i] == '.') p.i++;
        tws(&p);
        if (p.i != p.n) rc = tfail(&p, TERM_ERR_SYNTAX, "trailing characters after the term");
    }
    if (rc == 0 && (size_t)(out->index - start) > lim.max_bytes)
        rc = term_fail(err, TERM_ERR_SIZE, "encoded term is over the limit of %zu bytes",
                       lim.max_bytes);
    strbuf_free(&p.str);
    strbuf_free(&p.aux);
    return rc == 0 ? term_ok(err) : -1;
}

/* ==== term -> text ============================================================================ */

typedef struct trender {
    const char *b;
    size_t n;
    strbuf *out;
    term_error *err;
} trender;

static int tr_nomem(trender *r) {
    return term_fail(r->err, TERM_ERR_NOMEM, "out of memory");
}

static bool atom_needs_quotes(const char *s, size_t len) {
    static const char *const reserved[] = {
        "after", "and",    "andalso", "band", "begin", "bnot", "bor", "bsl",   "bsr", "bxor",
        "case",  "catch",  "cond",    "div",  "end",   "fun",  "if",  "let",   "not", "of",
        "or",    "orelse", "receive", "rem",  "try",   "when", "xor", "maybe", "else"};
    if (len == 0 || s[0] < 'a' || s[0] > 'z') return true;
    for (size_t k = 0; k < len; k++)
        if (!is_alnum(s[k])) return true;
    for (size_t k = 0; k < sizeof reserved / sizeof *reserved; k++)
        if (strlen(reserved[k]) == len && memcmp(reserved[k], s, len) == 0) return true;
    return false;
}

/* Appends UTF-8 text between quotes, escaping the quote, backslash and control characters.
 * Runs of bytes that need no escape are copied with one append. */
static int put_quoted(strbuf *out, const char *s, size_t len, char quote) {
    if (strbuf_reserve(out, len + 2) != 0 || strbuf_putc(out, quote) != 0) return -1;
    size_t run = 0; /* start of the pending verbatim run */
    for (size_t k = 0; k < len; k++) {
        unsigned char c = (unsigned char)s[k];
        if (c >= 0x20 && c != 0x7f && c != (unsigned char)quote && c != '\\') continue;
        if (strbuf_append(out, s + run, k - run) != 0) return -1;
        run = k + 1;
        int rc;
        if (c == (unsigned char)quote || c == '\\') {
            char esc[2] = {'\\', (char)c};
            rc = strbuf_append(out, esc, 2);
        } else if (c == '\n') {
            rc = strbuf_append(out, "\\n", 2);
        } else if (c == '\t') {
            rc = strbuf_append(out, "\\t", 2);
        } else if (c == '\r') {
            rc = strbuf_append(out, "\\r", 2);
        } else {
            rc = strbuf_printf(out, "\\x{%X}", c);
        }
        if (rc != 0) return -1;
    }
    if (strbuf_append(out, s + run, len - run) != 0) return -1;
    return strbuf_putc(out, quote);
}

/* Appends a decimal integer (what "%lld" prints) without going through printf. */
static int put_int(strbuf *out, long long v) {
    char buf[24], *e = buf + sizeof buf, *q = e;
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    do {
        *--q = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) *--q = '-';
    return strbuf_append(out, q, (size_t)(e - q));
}

static bool printable_cp(uint32_t c) {
    return (c >= 0x20 && c < 0x7f) || c == '\n' || c == '\t' || c == '\r' ||
           (c >= 0xa0 && c <= 0x10ffff && (c < 0xd800 || c > 0xdfff));
}

static int tr_term(trender *r, int *i);

static int tr_seq(trender *r, int *i, size_t n) {
    for (size_t k = 0; k < n; k++) {
        if (k && strbuf_putc(r->out, ',') != 0) return tr_nomem(r);
        if (tr_term(r, i) != 0) return -1;
    }
    return 0;
}

/* A list prints as "..." when it is proper and every element is a printable code point. */
static bool list_is_string(const trender *r, int i, size_t n) {
    const unsigned char *b = (const unsigned char *)r->b;
    size_t k = (size_t)i + 5;
    for (size_t j = 0; j < n; j++) {
        uint32_t v;
        if (b[k] == ERL_SMALL_INTEGER_EXT)
            v = b[k + 1], k += 2;
        else if (b[k] == ERL_INTEGER_EXT)
            v = term_be32(b + k + 1), k += 5;
        else
            return false;
        if (!printable_cp(v)) return false;
    }
    return b[k] == ERL_NIL_EXT;
}

static int tr_string_cps(trender *r, int *i, size_t n) {
    strbuf s = {0};
    const unsigned char *b = (const unsigned char *)r->b;
    int rc = 0;
    for (size_t j = 0; rc == 0 && j < n; j++) {
        uint32_t v;
        if (b[*i] == ERL_SMALL_INTEGER_EXT)
            v = b[*i + 1], *i += 2;
        else
            v = term_be32(b + *i + 1), *i += 5;
        rc = term_utf8_put(&s, v);
    }
    (*i)++; /* NIL */
    rc = rc || put_quoted(r->out, s.data ? s.data : "", s.len, '"');
    strbuf_free(&s);
    return rc == 0 ? 0 : tr_nomem(r);
}

static int tr_binary(trender *r, const unsigned char *d, size_t len, unsigned last_bits) {
    strbuf *o = r->out;
    if (last_bits == 8 && len > 0) {
        bool ascii = true;
        for (size_t k = 0; ascii && k < len; k++) ascii = d[k] < 0x80 && printable_cp(d[k]);
        bool utf8 = !ascii;
        size_t k = 0;
        while (utf8 && k < len) {
            uint32_t cp;
            utf8 = term_utf8_next(d, len, &k, &cp) == 0 && printable_cp(cp);
        }
        if (ascii || utf8) {
            if (strbuf_puts(o, "<<") != 0 || put_quoted(o, (const char *)d, len, '"') != 0 ||
                strbuf_puts(o, utf8 ? "/utf8>>" : ">>") != 0)
                return tr_nomem(r);
            return 0;
        }
    }
    if (strbuf_puts(o, "<<") != 0) return tr_nomem(r);
    size_t whole = last_bits == 8 ? len : len - 1;
    for (size_t k = 0; k < whole; k++)
        if ((k && strbuf_putc(o, ',') != 0) || put_int(o, d[k]) != 0) return tr_nomem(r);
    if (whole < len &&
        strbuf_printf(o, "%s%u:%u", whole ? "," : "", d[whole] >> (8 - last_bits), last_bits) != 0)
        return tr_nomem(r);
    return strbuf_puts(o, ">>") == 0 ? 0 : tr_nomem(r);
}

static int tr_term(trender *r, int *i) {
    const unsigned char *p = (const unsigned char *)r->b + *i;
    strbuf *o = r->out;
    int rc = 0;
    switch (p[0]) {
    case ERL_SMALL_INTEGER_EXT:
        rc = put_int(o, p[1]);
        *i += 2;
        break;
    case ERL_INTEGER_EXT:
        rc = put_int(o, (int32_t)term_be32(p + 1));
        *i += 5;
        break;
    case ERL_SMALL_BIG_EXT:
    case ERL_LARGE_BIG_EXT: {
        size_t hl = p[0] == ERL_SMALL_BIG_EXT ? 3 : 6;
        size_t len = hl == 3 ? p[1] : term_be32(p + 1);
        if (len > TERM_BIG_MAX_BYTES)
            return term_fail(r->err, TERM_ERR_UNSUPPORTED,
                             "bignum of %zu bytes at offset %d is too large to print", len, *i);
        rc = term_mag_to_decimal(o, p[hl - 1], p + hl, len);
        *i += (int)(hl + len);
        break;
    }
    case NEW_FLOAT_EXT:
    case ERL_FLOAT_EXT: {
        double d;
        if (ei_decode_double(r->b, i, &d) != 0)
            return term_fail(r->err, TERM_ERR_SYNTAX, "bad float at offset %d", *i);
        rc = term_format_double(o, d);
        break;
    }
    case ERL_ATOM_EXT:
    case ERL_SMALL_ATOM_EXT:
    case ERL_ATOM_UTF8_EXT:
    case ERL_SMALL_ATOM_UTF8_EXT: {
        char name[MAXATOMLEN_UTF8];
        size_t len = term_atom_utf8(r->b, i, name);
        rc = atom_needs_quotes(name, len) ? put_quoted(o, name, len, '\'')
                                          : strbuf_append(o, name, len);
        break;
    }
    case ERL_BINARY_EXT: {
        size_t len = term_be32(p + 1);
        *i += 5 + (int)len;
        return tr_binary(r, p + 5, len, 8);
    }
    case ERL_BIT_BINARY_EXT: {
        size_t len = term_be32(p + 1);
        *i += 6 + (int)len;
        return tr_binary(r, p + 6, len, p[5]);
    }
    case ERL_NIL_EXT:
        rc = strbuf_puts(o, "[]");
        *i += 1;
        break;
    case ERL_STRING_EXT: {
        size_t len = term_be16(p + 1);
        bool printable = true;
        for (size_t k = 0; printable && k < len; k++) printable = printable_cp(p[3 + k]);
        if (printable) {
            strbuf s = {0};
            for (size_t k = 0; rc == 0 && k < len; k++) rc = term_utf8_put(&s, p[3 + k]);
            rc = rc || put_quoted(o, s.data ? s.data : "", s.len, '"');
            strbuf_free(&s);
        } else {
            rc = strbuf_putc(o, '[');
            for (size_t k = 0; rc == 0 && k < len; k++)
                rc = (k && strbuf_putc(o, ',') != 0) || put_int(o, p[3 + k]) != 0;
            rc = rc || strbuf_putc(o, ']');
        }
        *i += 3 + (int)len;
        break;
    }
    case ERL_LIST_EXT: {
        size_t n = term_be32(p + 1);
        if (list_is_string(r, *i, n)) {
            *i += 5;
            return tr_string_cps(r, i, n);
        }
        *i += 5;
        if (strbuf_putc(o, '[') != 0) return tr_nomem(r);
        if (tr_seq(r, i, n) != 0) return -1;
        if (r->b[*i] == ERL_NIL_EXT) {
            (*i)++;
        } else {
            if (strbuf_putc(o, '|') != 0) return tr_nomem(r);
            if (tr_term(r, i) != 0) return -1;
        }
        rc = strbuf_putc(o, ']');
        break;
    }
    case ERL_SMALL_TUPLE_EXT:
    case ERL_LARGE_TUPLE_EXT: {
        size_t arity = p[0] == ERL_SMALL_TUPLE_EXT ? p[1] : term_be32(p + 1);
        *i += p[0] == ERL_SMALL_TUPLE_EXT ? 2 : 5;
        if (strbuf_putc(o, '{') != 0) return tr_nomem(r);
        if (tr_seq(r, i, arity) != 0) return -1;
        rc = strbuf_putc(o, '}');
        break;
    }
    case ERL_MAP_EXT: {
        size_t pairs = term_be32(p + 1);
        *i += 5;
        if (strbuf_puts(o, "#{") != 0) return tr_nomem(r);
        for (size_t k = 0; k < pairs; k++) {
            if (k && strbuf_putc(o, ',') != 0) return tr_nomem(r);
            if (tr_term(r, i) != 0) return -1;
            if (strbuf_puts(o, " => ") != 0) return tr_nomem(r);
            if (tr_term(r, i) != 0) return -1;
        }
        rc = strbuf_putc(o, '}');
        break;
    }
    default: {
        const char *kind = term_opaque_kind(p[0]);
        if (!kind) return term_fail(r->err, TERM_ERR_UNSUPPORTED, "tag %u at offset %d", p[0], *i);
        int end = *i;
        term_error e;
        const term_limits deep = {TERM_DEPTH_HARD_MAX, 0};
        (void)term_etf_check(r->b, r->n, &end, &deep, &e);
        static const char *const names[] = {"Pid", "Ref", "Port", "Fun"};
        const char *name = kind[0] == 'p'   ? (kind[1] == 'i' ? names[0] : names[2])
                           : kind[0] == 'r' ? names[1]
                                            : names[3];
        rc = strbuf_printf(o, "#%s<", name) ||
             term_base64_encode(o, r->b + *i, (size_t)(end - *i)) || strbuf_putc(o, '>');
        *i = end;
    }
    }
    return rc == 0 ? 0 : tr_nomem(r);
}

int term_to_text(const char *buf, size_t buf_len, int *index, const term_limits *limits,
                 strbuf *out, term_error *err) {
    term_limits lim = term_limits_effective(limits);
    term_error local;
    if (!err) err = &local;
    err->status = TERM_OK;
    int end = *index;
    if (term_etf_check(buf, buf_len, &end, &lim, err) != 0) return -1;
    size_t mark = out->len;
    trender r = {.b = buf, .n = buf_len, .out = out, .err = err};
    int i = *index;
    ei_x_buff merged;
    int m = term_merge_list_chains(&r.b, &r.n, &i, &merged); /* render the value (15.1) */
    int rc = m < 0 ? tr_nomem(&r) : tr_term(&r, &i);
    if (m > 0) ei_x_free(&merged);
    if (rc == 0 && out->len - mark > lim.max_bytes)
        rc = term_fail(err, TERM_ERR_SIZE, "text output is over the limit of %zu bytes",
                       lim.max_bytes);
    if (rc != 0) {
        out->len = mark;
        if (out->data) out->data[mark] = '\0';
        return -1;
    }
    *index = end;
    return term_ok(err);
}
