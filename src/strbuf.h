/* strbuf: a growable, always NUL-terminated byte buffer for building text and binary output. */
#ifndef NODEX_STRBUF_H
#define NODEX_STRBUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

/* Owned by whoever declared it; release with strbuf_free. A zeroed strbuf is valid and empty. */
typedef struct strbuf {
    char *data; /* NUL-terminated when non-NULL; may also hold binary bytes */
    size_t len; /* bytes used, not counting the terminating NUL */
    size_t cap; /* bytes allocated */
} strbuf;

/* Ensures room for `extra` more bytes (plus the NUL). Returns 0, or -1 when out of memory. */
int strbuf_reserve(strbuf *sb, size_t extra);
/* Appends `len` bytes. Returns 0 or -1 (out of memory; the buffer is unchanged). */
int strbuf_append(strbuf *sb, const void *data, size_t len);
/* Appends a NUL-terminated string. Returns 0 or -1. */
int strbuf_puts(strbuf *sb, const char *s);
/* Appends one byte. Returns 0 or -1. */
int strbuf_putc(strbuf *sb, char c);
/* Appends printf-formatted text. Returns 0 or -1. */
int strbuf_printf(strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends `s` as a JSON string literal, quotes included, escaping as RFC 8259 requires. */
int strbuf_json_string(strbuf *sb, const char *s, size_t len);
/* Length of the longest prefix of s[0..n) that a JSON string carries as is: no '"', no '\\', no
 * control character and, with ascii_only, no byte >= 0x80. Scans a word at a time. */
size_t strbuf_json_plain_prefix(const char *s, size_t n, bool ascii_only);
/* Copies the NUL-terminated `src` into dst[cap] (cap >= 1), cut to cap - 1 bytes and always
 * NUL-terminated, as snprintf(dst, cap, "%s", src) does without its formatting cost (it runs
 * per request). Returns the bytes copied. */
size_t strbuf_copy_str(char *dst, size_t cap, const char *src);
/* Empties the buffer, keeping its memory. */
void strbuf_reset(strbuf *sb);
/* Hands the data to the caller (who frees it with free()); the strbuf becomes empty. */
char *strbuf_detach(strbuf *sb, size_t *len);
/* Frees the memory; the strbuf becomes empty and reusable. */
void strbuf_free(strbuf *sb);

#endif
