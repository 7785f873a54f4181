/* term_json: JSON to ei-encoded terms (streamed, no tree) and ei-encoded terms to JSON. */
#include "term_common.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ==== JSON -> term ============================================================================ */

/* One step of the JSON path, linked through the parser's stack frames; printed only on error. */
typedef struct jpath {
    const struct jpath *up;
    const char *key; /* object key or tag name, or NULL for an array index */
    size_t klen;
    size_t idx;
} jpath;

/* Tag offsets a parse keeps on the stack (no malloc per request); more move to the heap. */
#define JSCAN_INLINE_TAGS 16

typedef struct jparser {
    const char *s;
    size_t n, i;
    unsigned max_depth;
    const erlang_pid *self;
    ei_x_buff *x;
    term_error *err;
    strbuf str;   /* decoded string scratch, reused */
    strbuf aux;   /* base64 output scratch, reused */
    size_t *tags; /* sorted '{' offsets of the one-member objects whose key starts with '$' */
    size_t tag_count;
    size_t *inline_tags; /* term_from_json's JSCAN_INLINE_TAGS on its stack: `tags` until more */
} jparser;

static void path_format(const jpath *path, char *out, size_t cap) {
    enum { MAX_STEPS = 24 };
    const jpath *steps[MAX_STEPS];
    size_t n = 0;
    bool cut = false;
    for (const jpath *p = path; p; p = p->up) {
        if (n == MAX_STEPS) {
            cut = true;
            break;
        }
        steps[n++] = p;
    }
    size_t len = (size_t)snprintf(out, cap, "%s", cut ? "$..." : "$");
    while (n > 0 && len < cap) {
        const jpath *p = steps[--n];
        if (p->key)
            len += (size_t)snprintf(out + len, cap - len, ".%.*s",
                                    (int)(p->klen > 40 ? 40 : p->klen), p->key);
        else
            len += (size_t)snprintf(out + len, cap - len, "[%zu]", p->idx);
    }
}

static int jfail(jparser *p, const jpath *path, term_status st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int jfail(jparser *p, const jpath *path, term_status st, const char *fmt, ...) {
    char what[160], where[96];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    path_format(path, where, sizeof where);
    return term_fail(p->err, st, "%s at %s (offset %zu)", what, where, p->i);
}

static int jnomem(jparser *p) {
    return term_fail(p->err, TERM_ERR_NOMEM, "out of memory");
}

static void jws(jparser *p) {
    while (p->i < p->n) {
        char c = p->s[p->i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->i++;
    }
}

/* Consumes `c` after optional whitespace. */
static int jexpect(jparser *p, const jpath *path, char c) {
    jws(p);
    if (p->i >= p->n || p->s[p->i] != c) return jfail(p, path, TERM_ERR_SYNTAX, "expected '%c'", c);
    p->i++;
    return 0;
}

static int hex4(const char *s, uint32_t *v) {
    *v = 0;
    for (int k = 0; k < 4; k++) {
        char c = s[k];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else
            return -1;
        *v = *v << 4 | d;
    }
    return 0;
}

/* Parses a JSON string at p->i into dst (UTF-8, validated). */
static int jstring(jparser *p, const jpath *path, strbuf *dst) {
    strbuf_reset(dst);
    if (jexpect(p, path, '"') != 0) return -1;
    const unsigned char *u = (const unsigned char *)p->s;
    for (;;) {
        size_t run = p->i + strbuf_json_plain_prefix(p->s + p->i, p->n - p->i, true);
        if (strbuf_append(dst, p->s + p->i, run - p->i) != 0) return jnomem(p);
        p->i = run;
        if (p->i >= p->n) return jfail(p, path, TERM_ERR_SYNTAX, "unterminated string");
        unsigned char c = u[p->i];
        if (c == '"') {
            p->i++;
            return 0;
        }
        if (c < 0x20) return jfail(p, path, TERM_ERR_SYNTAX, "control character in string");
        if (c >= 0x80) {
            size_t at = p->i;
            uint32_t cp;
            if (term_utf8_next(u, p->n, &p->i, &cp) != 0)
                return jfail(p, path, TERM_ERR_SYNTAX, "invalid UTF-8 in string");
            if (strbuf_append(dst, p->s + at, p->i - at) != 0) return jnomem(p);
            continue;
        }
        /* backslash escape */
        if (p->n - p->i < 2) return jfail(p, path, TERM_ERR_SYNTAX, "unterminated string");
        char e = p->s[p->i + 1];
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e && simple) {
            static const char map[] = "\"\\/\b\f\n\r\t";
            if (strbuf_putc(dst, map[simple - "\"\\/bfnrt"]) != 0) return jnomem(p);
            p->i += 2;
            continue;
        }
        uint32_t cp, lo;
        if (e != 'u' || p->n - p->i < 6 || hex4(p->s + p->i + 2, &cp) != 0)
            return jfail(p, path, TERM_ERR_SYNTAX, "bad escape in string");
        p->i += 6;
        if (cp >= 0xd800 && cp <= 0xdbff) {
            if (p->n - p->i < 6 || p->s[p->i] != '\\' || p->s[p->i + 1] != 'u' ||
                hex4(p->s + p->i + 2, &lo) != 0 || lo < 0xdc00 || lo > 0xdfff)
                return jfail(p, path, TERM_ERR_SYNTAX, "unpaired surrogate in string");
            p->i += 6;
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        } else if (cp >= 0xdc00 && cp <= 0xdfff) {
            return jfail(p, path, TERM_ERR_SYNTAX, "unpaired surrogate in string");
        }
        if (term_utf8_put(dst, cp) != 0) return jnomem(p);
    }
}

static int jnumber(jparser *p, const jpath *path) {
    size_t start = p->i, k = p->i;
    const char *s = p->s;
    bool neg = false, is_float = false;
    if (k < p->n && s[k] == '-') neg = true, k++;
    size_t dstart = k;
    if (k < p->n && s[k] == '0')
        k++;
    else if (k < p->n && s[k] >= '1' && s[k] <= '9')
        while (k < p->n && s[k] >= '0' && s[k] <= '9') k++;
    else
        return jfail(p, path, TERM_ERR_SYNTAX, "bad number");
    size_t dend = k;
    if (k < p->n && s[k] == '.') {
        is_float = true;
        k++;
        if (k >= p->n || s[k] < '0' || s[k] > '9')
            return jfail(p, path, TERM_ERR_SYNTAX, "bad number");
        while (k < p->n && s[k] >= '0' && s[k] <= '9') k++;
    }
    if (k < p->n && (s[k] == 'e' || s[k] == 'E')) {
        is_float = true;
        k++;
        if (k < p->n && (s[k] == '+' || s[k] == '-')) k++;
        if (k >= p->n || s[k] < '0' || s[k] > '9')
            return jfail(p, path, TERM_ERR_SYNTAX, "bad number");
        while (k < p->n && s[k] >= '0' && s[k] <= '9') k++;
    }
    p->i = k;
    if (is_float) {
        strbuf_reset(&p->str);
        if (strbuf_append(&p->str, s + start, k - start) != 0) return jnomem(p);
        double d = strtod(p->str.data, NULL);
        if (!isfinite(d)) return jfail(p, path, TERM_ERR_UNSUPPORTED, "number out of float range");
        return ei_x_encode_double(p->x, d) == 0 ? 0 : jnomem(p);
    }
    if (dend - dstart <= 18) {
        int64_t v = 0;
        for (size_t j = dstart; j < dend; j++) v = v * 10 + (s[j] - '0');
        return term_enc_int64(p->x, neg ? -v : v) == 0 ? 0 : jnomem(p);
    }
    uint8_t *mag;
    size_t mlen;
    int rc = term_mag_from_digits(s + dstart, dend - dstart, 10, &mag, &mlen);
    if (rc == -2) return jfail(p, path, TERM_ERR_SIZE, "integer too large");
    if (rc != 0) return jnomem(p);
    rc = term_enc_int_mag(p->x, neg, mag, mlen);
    free(mag);
    return rc == 0 ? 0 : jnomem(p);
}

static int enc_atom(jparser *p, const jpath *path, const char *s, size_t len) {
    long chars = term_utf8_count(s, len);
    if (chars < 0 || chars > 255)
        return jfail(p, path, TERM_ERR_TAG, "atom longer than 255 characters");
    return ei_x_encode_atom_len_as(p->x, s, (int)len, ERLANG_UTF8, ERLANG_UTF8) == 0 ? 0
                                                                                     : jnomem(p);
}

static int jvalue(jparser *p, const jpath *path, unsigned depth);

static int jdeeper(jparser *p, const jpath *path, unsigned depth) {
    if (depth + 1 > p->max_depth)
        return jfail(p, path, TERM_ERR_DEPTH, "nesting deeper than %u", p->max_depth);
    return 0;
}

/* Parses "[v, ...]" encoding each value; counts them and tracks whether all were byte integers
 * (all but the last one into *init_bytes, for $improper). */
static int jitems(jparser *p, const jpath *path, unsigned depth, size_t *count, bool *all_bytes,
                  bool *init_bytes, int *last_start) {
    *count = 0;
    *last_start = p->x->index;
    *all_bytes = true;
    bool prev = true;
    if (jexpect(p, path, '[') != 0) return -1;
    jws(p);
    if (p->i < p->n && p->s[p->i] == ']') {
        p->i++;
        *init_bytes = true;
        return 0;
    }
    for (;;) {
        jpath here = {path, NULL, 0, *count};
        int start = p->x->index;
        *last_start = start;
        if (jvalue(p, &here, depth) != 0) return -1;
        bool b = term_is_byte_int(p->x, start);
        *init_bytes = prev && *all_bytes;
        prev = b;
        *all_bytes = *all_bytes && b;
        (*count)++;
        jws(p);
        if (p->i < p->n && p->s[p->i] == ',') {
            p->i++;
            continue;
        }
        return jexpect(p, path, ']');
    }
}

static int jlist(jparser *p, const jpath *path, unsigned depth) {
    if (jdeeper(p, path, depth) != 0) return -1;
    int hdr = term_hdr_reserve(p->x);
    size_t n;
    bool all, init;
    int last;
    if (hdr < 0) return jnomem(p);
    if (jitems(p, path, depth + 1, &n, &all, &init, &last) != 0) return -1;
    return term_list_close(p->x, hdr, n, all) == 0 ? 0 : jnomem(p);
}

/* One frame of jtags_scan: an open object or array. */
typedef struct jscan_level {
    size_t start;
    size_t commas;
    bool object, key_seen, dollar;
} jscan_level;

/* Levels jtags_scan keeps on the C stack; deeper inputs move it to the heap (doubling, up to the
 * depth budget). Every level is written when it is pushed: nothing needs zeroing. */
#define JSCAN_INLINE_LEVELS 64

/* Doubles jtags_scan's stack, at most to `max` levels; the inline one is copied, never freed. */
static int jscan_grow(jscan_level **stack, size_t *cap, size_t max, jscan_level *inline_stack) {
    size_t n = *cap * 2 < max ? *cap * 2 : max;
    jscan_level *ns = malloc(n * sizeof *ns);
    if (!ns) return -1;
    memcpy(ns, *stack, *cap * sizeof *ns);
    if (*stack != inline_stack) free(*stack);
    *stack = ns;
    *cap = n;
    return 0;
}

static int jcmp_offset(const void *a, const void *b) {
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

/* Finds every object that is a "$tag" object (one member, key starting with '$') in one pass
 * over the input, without validating it (the real parse does): jobject then decides in
 * O(log n) instead of looking ahead over its value, so every input parses in linear time.
 * Returns 0, or -1 when out of memory. */
static int jtags_scan(jparser *p) {
    if (!memchr(p->s, '$', p->n)) return 0;
    size_t cap_levels = (size_t)p->max_depth + 2, depth = 0, overflow = 0;
    size_t cap_tags = JSCAN_INLINE_TAGS;
    jscan_level inline_stack[JSCAN_INLINE_LEVELS];
    jscan_level *stack = inline_stack;
    size_t cap = cap_levels < JSCAN_INLINE_LEVELS ? cap_levels : JSCAN_INLINE_LEVELS;
    for (size_t k = 0; k < p->n;) {
        char c = p->s[k++];
        if (c == '"') {
            if (!overflow && depth && stack[depth - 1].object && !stack[depth - 1].key_seen) {
                stack[depth - 1].key_seen = true;
                stack[depth - 1].dollar = k < p->n && p->s[k] == '$';
            }
            for (;;) {
                k += strbuf_json_plain_prefix(p->s + k, p->n - k, false);
                if (k >= p->n || p->s[k] == '"') break;
                k += p->s[k] == '\\' ? 2 : 1;
            }
            k++;
        } else if (c == '{' || c == '[') {
            if (overflow || depth == cap_levels) { /* past the depth budget the parse fails */
                overflow++;
                continue;
            }
            if (depth == cap && jscan_grow(&stack, &cap, cap_levels, inline_stack) != 0) {
                if (stack != inline_stack) free(stack);
                return -1;
            }
            stack[depth++] = (jscan_level){.start = k - 1, .object = c == '{'};
        } else if (c == '}' || c == ']') {
            if (overflow) {
                overflow--;
                continue;
            }
            if (!depth) continue; /* unbalanced: the parse reports it */
            jscan_level *l = &stack[--depth];
            if (!l->object || !l->dollar || l->commas) continue;
            if (p->tag_count == cap_tags) {
                size_t n = 2 * cap_tags;
                size_t *t = malloc(n * sizeof *t);
                if (!t) {
                    if (stack != inline_stack) free(stack);
                    return -1;
                }
                memcpy(t, p->tags, p->tag_count * sizeof *t);
                if (p->tags != p->inline_tags) free(p->tags);
                p->tags = t;
                cap_tags = n;
            }
            p->tags[p->tag_count++] = l->start;
        } else if (c == ',' && !overflow && depth) {
            stack[depth - 1].commas++;
        }
    }
    if (stack != inline_stack) free(stack);
    if (p->tag_count > JSCAN_INLINE_TAGS) {
        qsort(p->tags, p->tag_count, sizeof *p->tags, jcmp_offset);
    } else { /* a few: insertion sort, cheaper than qsort's set-up */
        for (size_t i = 1; i < p->tag_count; i++) {
            size_t v = p->tags[i], j = i;
            for (; j > 0 && p->tags[j - 1] > v; j--) p->tags[j] = p->tags[j - 1];
            p->tags[j] = v;
        }
    }
    return 0;
}

/* True when the object whose '{' is at `at` is a "$tag" object. */
static bool jis_tag_object(const jparser *p, size_t at) {
    return p->tag_count && bsearch(&at, p->tags, p->tag_count, sizeof *p->tags, jcmp_offset);
}

static int jbits(jparser *p, const jpath *path) {
    if (jexpect(p, path, '{') != 0) return -1;
    bool have_bytes = false, have_bits = false;
    uint64_t bits = 0;
    strbuf_reset(&p->aux);
    for (;;) {
        if (jstring(p, path, &p->str) != 0 || jexpect(p, path, ':') != 0) return -1;
        jws(p);
        if (strcmp(p->str.data, "bytes") == 0 && !have_bytes) {
            have_bytes = true;
            if (jstring(p, path, &p->str) != 0) return -1;
            if (term_base64_decode(&p->aux, p->str.data, p->str.len) != 0)
                return jfail(p, path, TERM_ERR_TAG, "$bits bytes are not base64");
        } else if (strcmp(p->str.data, "bits") == 0 && !have_bits) {
            have_bits = true;
            size_t k = p->i;
            while (k < p->n && p->s[k] >= '0' && p->s[k] <= '9' && bits < (1ull << 40))
                bits = bits * 10 + (uint64_t)(p->s[k++] - '0');
            if (k == p->i) return jfail(p, path, TERM_ERR_TAG, "$bits needs \"bits\": N");
            p->i = k;
        } else {
            return jfail(p, path, TERM_ERR_TAG, "$bits takes only \"bytes\" and \"bits\"");
        }
        jws(p);
        if (p->i < p->n && p->s[p->i] == ',') {
            p->i++;
            continue;
        }
        if (jexpect(p, path, '}') != 0) return -1;
        break;
    }
    if (!have_bytes || !have_bits || (bits + 7) / 8 != p->aux.len)
        return jfail(p, path, TERM_ERR_TAG, "$bits needs \"bytes\" holding exactly bits/8 bytes");
    unsigned rem = (unsigned)(bits % 8);
    if (rem == 0)
        return term_enc_binary(p->x, p->aux.data ? p->aux.data : "", p->aux.len) == 0 ? 0
                                                                                      : jnomem(p);
    char *last = &p->aux.data[p->aux.len - 1]; /* padding bits are not data */
    *last = (char)((unsigned char)*last & (0xffu << (8 - rem)));
    unsigned char h[6] = {ERL_BIT_BINARY_EXT,
                          (unsigned char)(p->aux.len >> 24),
                          (unsigned char)(p->aux.len >> 16),
                          (unsigned char)(p->aux.len >> 8),
                          (unsigned char)p->aux.len,
                          (unsigned char)rem};
    if (term_x_append(p->x, h, 6) != 0 || term_x_append(p->x, p->aux.data, p->aux.len) != 0)
        return jnomem(p);
    return 0;
}

/* Parses the value of a one-key "$tag" object (tag name in tag, the value at p->i). */
static int jtag(jparser *p, const jpath *path, unsigned depth, const char *tag) {
    jws(p);
    if (strcmp(tag, "$atom") == 0) {
        if (jstring(p, path, &p->str) != 0) return -1;
        return enc_atom(p, path, p->str.data ? p->str.data : "", p->str.len);
    }
    if (strcmp(tag, "$tuple") == 0) {
        if (jdeeper(p, path, depth) != 0) return -1;
        int hdr = term_hdr_reserve(p->x);
        size_t n;
        bool all, init;
        int last;
        if (hdr < 0) return jnomem(p);
        if (jitems(p, path, depth + 1, &n, &all, &init, &last) != 0) return -1;
        term_tuple_close(p->x, hdr, n);
        return 0;
    }
    if (strcmp(tag, "$binary") == 0) {
        if (jstring(p, path, &p->str) != 0) return -1;
        strbuf_reset(&p->aux);
        if (term_base64_decode(&p->aux, p->str.data ? p->str.data : "", p->str.len) != 0)
            return jfail(p, path, TERM_ERR_TAG, "$binary value is not base64");
        return term_enc_binary(p->x, p->aux.data ? p->aux.data : "", p->aux.len) == 0 ? 0
                                                                                      : jnomem(p);
    }
    if (strcmp(tag, "$charlist") == 0) {
        if (jstring(p, path, &p->str) != 0) return -1;
        uint32_t *cps = malloc((p->str.len + 1) * sizeof *cps);
        if (!cps) return jnomem(p);
        size_t n = 0, k = 0;
        while (k < p->str.len)
            (void)term_utf8_next((const unsigned char *)p->str.data, p->str.len, &k, &cps[n++]);
        int rc = term_enc_charlist(p->x, cps, n);
        free(cps);
        return rc == 0 ? 0 : jnomem(p);
    }
    if (strcmp(tag, "$map") == 0) {
        if (jdeeper(p, path, depth) != 0) return -1;
        int hdr = term_hdr_reserve(p->x);
        if (hdr < 0) return jnomem(p);
        if (jexpect(p, path, '[') != 0) return -1;
        size_t n = 0;
        jws(p);
        if (p->i < p->n && p->s[p->i] == ']') {
            p->i++;
        } else {
            for (;;) {
                jpath here = {path, NULL, 0, n};
                if (jexpect(p, &here, '[') != 0 || jvalue(p, &here, depth + 1) != 0 ||
                    jexpect(p, &here, ',') != 0 || jvalue(p, &here, depth + 1) != 0)
                    return -1;
                jws(p);
                if (p->i >= p->n || p->s[p->i] != ']')
                    return jfail(p, &here, TERM_ERR_TAG, "$map entries are [key, value] pairs");
                p->i++;
                n++;
                jws(p);
                if (p->i < p->n && p->s[p->i] == ',') {
                    p->i++;
                    continue;
                }
                if (jexpect(p, path, ']') != 0) return -1;
                break;
            }
        }
        term_map_close(p->x, hdr, n);
        return 0;
    }
    if (strcmp(tag, "$improper") == 0) {
        if (jdeeper(p, path, depth) != 0) return -1;
        int hdr = term_hdr_reserve(p->x);
        size_t n;
        bool all, init;
        if (hdr < 0) return jnomem(p);
        int last;
        if (jitems(p, path, depth + 1, &n, &all, &init, &last) != 0) return -1;
        if (n < 2) return jfail(p, path, TERM_ERR_TAG, "$improper needs elements and a tail");
        if (p->x->index == last + 1 && p->x->buff[last] == ERL_NIL_EXT) {
            /* A [] tail makes a proper list: encode it the canonical way. */
            p->x->index = last;
            return term_list_close(p->x, hdr, n - 1, init) == 0 ? 0 : jnomem(p);
        }
        term_improper_close(p->x, hdr, n - 1);
        return 0;
    }
    const char *kinds[] = {"$pid", "$ref", "$port", "$fun"};
    for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
        if (strcmp(tag, kinds[k]) != 0) continue;
        if (jstring(p, path, &p->str) != 0) return -1;
        if (k == 0 && strcmp(p->str.data ? p->str.data : "", "self") == 0) {
            if (!p->self)
                return jfail(p, path, TERM_ERR_SELF, "{\"$pid\":\"self\"} but no call pid exists");
            return ei_x_encode_pid(p->x, p->self) == 0 ? 0 : jnomem(p);
        }
        strbuf_reset(&p->aux);
        if (term_base64_decode(&p->aux, p->str.data ? p->str.data : "", p->str.len) != 0)
            return jfail(p, path, TERM_ERR_TAG, "%s value is not base64", tag);
        char where[96];
        path_format(path, where, sizeof where);
        return term_enc_opaque(p->x, tag + 1, p->aux.data ? p->aux.data : "", p->aux.len, p->err,
                               where);
    }
    if (strcmp(tag, "$bits") == 0) return jbits(p, path);
    return jfail(p, path, TERM_ERR_TAG, "unknown tag \"%.40s\"", tag);
}

static int jobject(jparser *p, const jpath *path, unsigned depth) {
    size_t brace = p->i;
    p->i++; /* '{' */
    jws(p);
    if (p->i < p->n && p->s[p->i] == '}') {
        p->i++;
        if (jdeeper(p, path, depth) != 0) return -1;
        return ei_x_encode_map_header(p->x, 0) == 0 ? 0 : jnomem(p);
    }
    if (jstring(p, path, &p->str) != 0 || jexpect(p, path, ':') != 0) return -1;
    if (p->str.len > 0 && p->str.data[0] == '$') {
        jws(p);
        if (jis_tag_object(p, brace)) {
            char tag[48];
            strbuf_copy_str(tag, sizeof tag, p->str.data);
            jpath here = {path, tag, strlen(tag), 0};
            if (jtag(p, &here, depth, tag) != 0) return -1;
            return jexpect(p, path, '}');
        }
    }
    if (jdeeper(p, path, depth) != 0) return -1;
    int hdr = term_hdr_reserve(p->x);
    if (hdr < 0) return jnomem(p);
    size_t n = 0;
    for (;;) {
        if (term_enc_binary(p->x, p->str.data ? p->str.data : "", p->str.len) != 0)
            return jnomem(p);
        char key[48];
        size_t klen = p->str.len < sizeof key ? p->str.len : sizeof key - 1;
        memcpy(key, p->str.data ? p->str.data : "", klen);
        jpath here = {path, key, klen, 0};
        if (jvalue(p, &here, depth + 1) != 0) return -1;
        n++;
        jws(p);
        if (p->i < p->n && p->s[p->i] == ',') {
            p->i++;
            if (jstring(p, path, &p->str) != 0 || jexpect(p, path, ':') != 0) return -1;
            continue;
        }
        if (jexpect(p, path, '}') != 0) return -1;
        break;
    }
    term_map_close(p->x, hdr, n);
    return 0;
}

static int jliteral(jparser *p, const jpath *path, const char *word) {
    size_t len = strlen(word);
    if (p->n - p->i < len || memcmp(p->s + p->i, word, len) != 0)
        return jfail(p, path, TERM_ERR_SYNTAX, "unexpected character");
    p->i += len;
    return ei_x_encode_atom_len_as(p->x, word, (int)len, ERLANG_UTF8, ERLANG_UTF8) == 0 ? 0
                                                                                        : jnomem(p);
}

static int jvalue(jparser *p, const jpath *path, unsigned depth) {
    jws(p);
    if (p->i >= p->n) return jfail(p, path, TERM_ERR_SYNTAX, "unexpected end of input");
    char c = p->s[p->i];
    switch (c) {
    case '{': return jobject(p, path, depth);
    case '[': return jlist(p, path, depth);
    case '"':
        if (jstring(p, path, &p->str) != 0) return -1;
        return term_enc_binary(p->x, p->str.data ? p->str.data : "", p->str.len) == 0 ? 0
                                                                                      : jnomem(p);
    case 't': return jliteral(p, path, "true");
    case 'f': return jliteral(p, path, "false");
    case 'n': return jliteral(p, path, "null");
    default:
        if (c == '-' || (c >= '0' && c <= '9')) return jnumber(p, path);
        return jfail(p, path, TERM_ERR_SYNTAX, "unexpected character");
    }
}

int term_from_json(const char *json, size_t len, const term_limits *limits, const erlang_pid *self,
                   ei_x_buff *out, term_error *err) {
    term_limits lim = term_limits_effective(limits);
    if (len > lim.max_bytes)
        return term_fail(err, TERM_ERR_SIZE, "JSON input of %zu bytes is over the limit of %zu",
                         len, lim.max_bytes);
    jparser p = {
        .s = json, .n = len, .max_depth = lim.max_depth, .self = self, .x = out, .err = err};
    size_t inline_tags[JSCAN_INLINE_TAGS];
    p.tags = p.inline_tags = inline_tags;
    int start = out->index;
    int rc = jtags_scan(&p) == 0 ? jvalue(&p, NULL, 0) : jnomem(&p);
    if (rc == 0) {
        jws(&p);
        if (p.i != p.n) rc = jfail(&p, NULL, TERM_ERR_SYNTAX, "trailing characters after value");
    }
    if (rc == 0 && (size_t)(out->index - start) > lim.max_bytes)
        rc = term_fail(err, TERM_ERR_SIZE, "encoded term is over the limit of %zu bytes",
                       lim.max_bytes);
    strbuf_free(&p.str);
    strbuf_free(&p.aux);
    if (p.tags != p.inline_tags) free(p.tags);
    return rc == 0 ? term_ok(err) : -1;
}

/* ==== term -> JSON ============================================================================ */

/* Renders validated bytes (term_etf_check ran first), so reads need no bounds checks here. */
typedef struct jrender {
    const char *b;
    size_t n;
    strbuf *out;
    term_error *err;
    strbuf tmp;
    strbuf map_flags; /* from term_etf_check_maps */
    size_t next_map;
} jrender;

static int rnomem(jrender *r) {
    return term_fail(r->err, TERM_ERR_NOMEM, "out of memory");
}

/* Offset just past the (already validated) term at i. */
static int rskip(const jrender *r, int i) {
    int end = i;
    term_error e;
    const term_limits deep = {TERM_DEPTH_HARD_MAX, 0};
    (void)term_etf_check(r->b, r->n, &end, &deep, &e);
    return end;
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

static int rterm(jrender *r, int *i);

static int rseq(jrender *r, int *i, size_t n) {
    for (size_t k = 0; k < n; k++) {
        if (k && strbuf_putc(r->out, ',') != 0) return rnomem(r);
        if (rterm(r, i) != 0) return -1;
    }
    return 0;
}

static bool is_utf8_binary(const unsigned char *p) {
    return p[0] == ERL_BINARY_EXT && term_utf8_count((const char *)p + 5, term_be32(p + 1)) >= 0;
}

static int rmap(jrender *r, int *i) {
    const unsigned char *p = (const unsigned char *)r->b + *i;
    size_t pairs = term_be32(p + 1);
    bool plain = r->map_flags.data[r->next_map++] != 0;
    *i += 5;
    if (!plain) {
        if (strbuf_puts(r->out, "{\"$map\":[") != 0) return rnomem(r);
        for (size_t j = 0; j < pairs; j++) {
            if (strbuf_puts(r->out, j ? ",[" : "[") != 0) return rnomem(r);
            if (rterm(r, i) != 0 || strbuf_putc(r->out, ',') != 0 || rterm(r, i) != 0 ||
                strbuf_putc(r->out, ']') != 0)
                return r->err->status == TERM_OK ? rnomem(r) : -1;
        }
        return strbuf_puts(r->out, "]}") == 0 ? 0 : rnomem(r);
    }
    if (strbuf_putc(r->out, '{') != 0) return rnomem(r);
    for (size_t j = 0; j < pairs; j++) {
        const unsigned char *key = (const unsigned char *)r->b + *i;
        size_t len = term_be32(key + 1);
        if ((j && strbuf_putc(r->out, ',') != 0) ||
            strbuf_json_string(r->out, (const char *)key + 5, len) != 0 ||
            strbuf_putc(r->out, ':') != 0)
            return rnomem(r);
        *i += 5 + (int)len;
        if (rterm(r, i) != 0) return -1;
    }
    return strbuf_putc(r->out, '}') == 0 ? 0 : rnomem(r);
}

static int rlist(jrender *r, int *i) {
    const unsigned char *p = (const unsigned char *)r->b + *i;
    size_t n = term_be32(p + 1);
    size_t mark = r->out->len;
    *i += 5;
    if (strbuf_putc(r->out, '[') != 0) return rnomem(r);
    if (rseq(r, i, n) != 0) return -1;
    if (r->b[*i] == ERL_NIL_EXT) {
        (*i)++;
        return strbuf_putc(r->out, ']') == 0 ? 0 : rnomem(r);
    }
    /* Improper lists are rare: insert the tag in front once the tail shows up. */
    static const char tag[] = "{\"$improper\":";
    size_t tl = sizeof tag - 1;
    if (strbuf_reserve(r->out, tl) != 0) return rnomem(r);
    memmove(r->out->data + mark + tl, r->out->data + mark, r->out->len - mark + 1);
    memcpy(r->out->data + mark, tag, tl);
    r->out->len += tl;
    if (strbuf_putc(r->out, ',') != 0 || rterm(r, i) != 0) return -1;
    return strbuf_puts(r->out, "]}") == 0 ? 0 : rnomem(r);
}

static int ropaque(jrender *r, int *i, const char *kind) {
    int end = rskip(r, *i);
    if (strbuf_printf(r->out, "{\"$%s\":\"", kind) != 0 ||
        term_base64_encode(r->out, r->b + *i, (size_t)(end - *i)) != 0 ||
        strbuf_puts(r->out, "\"}") != 0)
        return rnomem(r);
    *i = end;
    return 0;
}

static int rbits(jrender *r, int *i) {
    const unsigned char *p = (const unsigned char *)r->b + *i;
    size_t len = term_be32(p + 1);
    unsigned bits = p[5];
    strbuf_reset(&r->tmp);
    if (strbuf_append(&r->tmp, p + 6, len) != 0) return rnomem(r);
    char *last = &r->tmp.data[len - 1];
    *last = (char)((unsigned char)*last & (0xffu << (8 - bits)));
    *i += 6 + (int)len;
    if (bits == 8) {
        if (term_utf8_count(r->tmp.data, len) >= 0)
            return strbuf_json_string(r->out, r->tmp.data, len) == 0 ? 0 : rnomem(r);
        if (strbuf_puts(r->out, "{\"$binary\":\"") != 0 ||
            term_base64_encode(r->out, r->tmp.data, len) != 0 || strbuf_puts(r->out, "\"}") != 0)
            return rnomem(r);
        return 0;
    }
    if (strbuf_puts(r->out, "{\"$bits\":{\"bytes\":\"") != 0 ||
        term_base64_encode(r->out, r->tmp.data, len) != 0 ||
        strbuf_printf(r->out, "\",\"bits\":%zu}}", (len - 1) * 8 + bits) != 0)
        return rnomem(r);
    return 0;
}

static int rterm(jrender *r, int *i) {
    const unsigned char *p = (const unsigned char *)r->b + *i;
    int rc = 0;
    switch (p[0]) {
    case ERL_SMALL_INTEGER_EXT:
        rc = put_int(r->out, p[1]);
        *i += 2;
        break;
    case ERL_INTEGER_EXT:
        rc = put_int(r->out, (int32_t)term_be32(p + 1));
        *i += 5;
        break;
    case ERL_SMALL_BIG_EXT:
    case ERL_LARGE_BIG_EXT: {
        size_t hl = p[0] == ERL_SMALL_BIG_EXT ? 3 : 6;
        size_t len = hl == 3 ? p[1] : term_be32(p + 1);
        if (len > TERM_BIG_MAX_BYTES)
            return term_fail(r->err, TERM_ERR_UNSUPPORTED,
                             "bignum of %zu bytes at offset %d is "
                             "too large to print",
                             len, *i);
        rc = term_mag_to_decimal(r->out, p[hl - 1], p + hl, len);
        *i += (int)(hl + len);
        break;
    }
    case NEW_FLOAT_EXT:
    case ERL_FLOAT_EXT: {
        double d;
        if (ei_decode_double(r->b, i, &d) != 0)
            return term_fail(r->err, TERM_ERR_SYNTAX, "bad float at offset %d", *i);
        rc = term_format_double(r->out, d);
        break;
    }
    case ERL_ATOM_EXT:
    case ERL_SMALL_ATOM_EXT:
    case ERL_ATOM_UTF8_EXT:
    case ERL_SMALL_ATOM_UTF8_EXT: {
        char name[MAXATOMLEN_UTF8];
        size_t len = term_atom_utf8(r->b, i, name);
        name[len] = '\0';
        if (strlen(name) == len &&
            (!strcmp(name, "true") || !strcmp(name, "false") || !strcmp(name, "null")))
            rc = strbuf_puts(r->out, name);
        else
            rc = strbuf_puts(r->out, "{\"$atom\":") || strbuf_json_string(r->out, name, len) ||
                 strbuf_putc(r->out, '}');
        break;
    }
    case ERL_BINARY_EXT: {
        size_t len = term_be32(p + 1);
        if (is_utf8_binary(p)) {
            rc = strbuf_json_string(r->out, (const char *)p + 5, len);
        } else {
            rc = strbuf_puts(r->out, "{\"$binary\":\"") || term_base64_encode(r->out, p + 5, len) ||
                 strbuf_puts(r->out, "\"}");
        }
        *i += 5 + (int)len;
        break;
    }
    case ERL_BIT_BINARY_EXT: return rbits(r, i);
    case ERL_NIL_EXT:
        rc = strbuf_puts(r->out, "[]");
        *i += 1;
        break;
    case ERL_STRING_EXT: {
        size_t len = term_be16(p + 1);
        rc = strbuf_putc(r->out, '[');
        for (size_t k = 0; rc == 0 && k < len; k++)
            rc = (k && strbuf_putc(r->out, ',') != 0) || put_int(r->out, p[3 + k]) != 0;
        rc = rc || strbuf_putc(r->out, ']');
        *i += 3 + (int)len;
        break;
    }
    case ERL_LIST_EXT: return rlist(r, i);
    case ERL_SMALL_TUPLE_EXT:
    case ERL_LARGE_TUPLE_EXT: {
        size_t arity = p[0] == ERL_SMALL_TUPLE_EXT ? p[1] : term_be32(p + 1);
        *i += p[0] == ERL_SMALL_TUPLE_EXT ? 2 : 5;
        if (strbuf_puts(r->out, "{\"$tuple\":[") != 0) return rnomem(r);
        if (rseq(r, i, arity) != 0) return -1;
        rc = strbuf_puts(r->out, "]}");
        break;
    }
    case ERL_MAP_EXT: return rmap(r, i);
    default: {
        const char *kind = term_opaque_kind(p[0]);
        if (kind) return ropaque(r, i, kind);
        return term_fail(r->err, TERM_ERR_UNSUPPORTED, "tag %u at offset %d", p[0], *i);
    }
    }
    return rc == 0 ? 0 : rnomem(r);
}

int term_to_json(const char *buf, size_t buf_len, int *index, const term_limits *limits,
                 strbuf *out, term_error *err) {
    term_limits lim = term_limits_effective(limits);
    term_error local;
    if (!err) err = &local;
    err->status = TERM_OK;
    int end = *index;
    jrender r = {.b = buf, .n = buf_len, .out = out, .err = err};
    if (term_etf_check_maps(buf, buf_len, &end, &lim, err, &r.map_flags) != 0) {
        strbuf_free(&r.map_flags);
        return -1;
    }
    size_t mark = out->len;
    int i = *index;
    ei_x_buff merged;
    int m = term_merge_list_chains(&r.b, &r.n, &i, &merged); /* render the value (15.1) */
    if (m > 0) { /* the copy's maps, in the same preorder */
        strbuf_free(&r.map_flags);
        int e = 0;
        term_etf_check_maps(r.b, r.n, &e, &lim, err, &r.map_flags);
    }
    int rc = m < 0 ? rnomem(&r) : rterm(&r, &i);
    if (m > 0) ei_x_free(&merged);
    strbuf_free(&r.tmp);
    strbuf_free(&r.map_flags);
    if (rc == 0 && out->len - mark > lim.max_bytes)
        rc = term_fail(err, TERM_ERR_SIZE, "JSON output is over the limit of %zu bytes",
                       lim.max_bytes);
    if (rc != 0) {
        out->len = mark;
        if (out->data) out->data[mark] = '\0';
        return -1;
    }
    *index = end;
    return term_ok(err);
}
