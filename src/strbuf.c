/* strbuf: a growable, always NUL-terminated byte buffer for building text and binary output. */
#include "strbuf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int strbuf_reserve(strbuf *sb, size_t extra) {
    if (extra > SIZE_MAX / 2 - sb->len) return -1;
    size_t need = sb->len + extra + 1;
    if (need <= sb->cap) return 0;
    size_t cap = sb->cap ? sb->cap : 64;
    while (cap < need) cap *= 2;
    char *data = realloc(sb->data, cap);
    if (!data) return -1;
    sb->data = data;
    sb->cap = cap;
    return 0;
}

int strbuf_append(strbuf *sb, const void *data, size_t len) {
    if (strbuf_reserve(sb, len) != 0) return -1;
    if (len) memcpy(sb->data + sb->len, data, len);
    sb->len += len;
    sb->data[sb->len] = '\0';
    return 0;
}

int strbuf_puts(strbuf *sb, const char *s) {
    return strbuf_append(sb, s, strlen(s));
}

int strbuf_putc(strbuf *sb, char c) {
    return strbuf_append(sb, &c, 1);
}

int strbuf_printf(strbuf *sb, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return -1;
    if ((size_t)n < sizeof small) return strbuf_append(sb, small, (size_t)n);
    if (strbuf_reserve(sb, (size_t)n) != 0) return -1;
    va_start(ap, fmt);
    vsnprintf(sb->data + sb->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb->len += (size_t)n;
    return 0;
}

#define BYTES_ONES  0x0101010101010101ull
#define BYTES_HIGHS 0x8080808080808080ull

/* Non-zero when a byte of w is zero / below b (b <= 0x80): exact as a yes/no answer, and the
 * lowest set bit marks the first such byte (a borrow only ever flags bytes above it). */
static inline uint64_t bytes_has_zero(uint64_t w) {
    return (w - BYTES_ONES) & ~w & BYTES_HIGHS;
}
static inline uint64_t bytes_has_less(uint64_t w, unsigned b) {
    return (w - BYTES_ONES * b) & ~w & BYTES_HIGHS;
}

size_t strbuf_json_plain_prefix(const char *s, size_t n, bool ascii_only) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, sizeof w);
        uint64_t special = bytes_has_less(w, 0x20) | bytes_has_zero(w ^ (BYTES_ONES * '"')) |
                           bytes_has_zero(w ^ (BYTES_ONES * '\\')) |
                           (ascii_only ? w & BYTES_HIGHS : 0);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        if (special) return i + (size_t)__builtin_clzll(special) / 8;
#else /* the first byte in memory is the lowest */
        if (special) return i + (size_t)__builtin_ctzll(special) / 8;
#endif
    }
    for (; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == '"' || c == '\\' || (ascii_only && c >= 0x80)) break;
    }
    return i;
}

int strbuf_json_string(strbuf *sb, const char *s, size_t len) {
    static const char hex[] = "0123456789abcdef";
    if (strbuf_putc(sb, '"') != 0) return -1;
    for (size_t i = 0; i < len; i++) {
        size_t run = strbuf_json_plain_prefix(s + i, len - i, false);
        if (run && strbuf_append(sb, s + i, run) != 0) return -1;
        i += run;
        if (i == len) break;
        unsigned char c = (unsigned char)s[i];
        const char *esc;
        char ubuf[7];
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default: /* another control character */
            memcpy(ubuf, "\\u00", 4);
            ubuf[4] = hex[c >> 4];
            ubuf[5] = hex[c & 15];
            ubuf[6] = '\0';
            esc = ubuf;
        }
        if (strbuf_puts(sb, esc) != 0) return -1;
    }
    return strbuf_putc(sb, '"');
}

size_t strbuf_copy_str(char *dst, size_t cap, const char *src) {
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
    return n;
}

void strbuf_reset(strbuf *sb) {
    sb->len = 0;
    if (sb->data) sb->data[0] = '\0';
}

char *strbuf_detach(strbuf *sb, size_t *len) {
    char *data = sb->data;
    if (len) *len = sb->len;
    if (!data) data = calloc(1, 1);
    sb->data = NULL;
    sb->len = sb->cap = 0;
    return data;
}

void strbuf_free(strbuf *sb) {
    free(sb->data);
    sb->data = NULL;
    sb->len = sb->cap = 0;
}
