/* term_common: helpers shared by the term codec's JSON, text and ETF halves (not a public API). */
#ifndef NODEX_TERM_COMMON_H
#define NODEX_TERM_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "term.h"

/* Recursion is bounded by max_depth; larger configured limits are clamped to this so a deep term
 * can never exhaust a thread's stack (about 300 bytes of stack per level). */
#define TERM_DEPTH_HARD_MAX 4096u
/* Largest bignum magnitude in bytes accepted or printed (decimal conversion is quadratic). */
#define TERM_BIG_MAX_BYTES 16384u

/* The limits to apply: `l` or the defaults, with max_depth clamped to TERM_DEPTH_HARD_MAX. */
term_limits term_limits_effective(const term_limits *l);
/* Fills err (when non-NULL) with status and a printf-formatted message. Always returns -1. */
int term_fail(term_error *err, term_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Marks err as success. Returns 0. */
int term_ok(term_error *err);

/* Appends raw bytes to x. Returns 0, or -1 when out of memory. */
int term_x_append(ei_x_buff *x, const void *p, size_t n);
/* Encodes an integer the way term_to_binary does (SMALL_INTEGER, INTEGER or SMALL/LARGE_BIG) from a
 * little-endian magnitude; leading zero bytes are ignored. Returns 0 or -1 (out of memory). */
int term_enc_int_mag(ei_x_buff *x, bool neg, const uint8_t *mag, size_t n);
/* Encodes a 64-bit signed integer canonically. Returns 0 or -1. */
int term_enc_int64(ei_x_buff *x, int64_t v);
/* Parses digits (no sign, no separators; every byte must be a digit of `base` 2..36) into a
 * malloc'd little-endian magnitude. Returns 0, -1 on bad digit or out of memory, -2 if too big. */
int term_mag_from_digits(const char *s, size_t n, unsigned base, uint8_t **mag, size_t *mag_len);
/* Appends the decimal form of a little-endian magnitude with optional '-'. Returns 0 or -1. */
int term_mag_to_decimal(strbuf *out, bool neg, const uint8_t *mag, size_t n);
/* Encodes a list of code points as Erlang would (NIL, STRING_EXT when all < 256, else LIST_EXT). */
int term_enc_charlist(ei_x_buff *x, const uint32_t *cps, size_t n);

/* Appends the shortest decimal form of d that reads back exactly and always reads as a float
 * ("1.0", "1.5e+300"). Valid both as JSON and as Erlang text. Returns 0 or -1. */
int term_format_double(strbuf *out, double d);

/* Appends standard base64 (with padding). Returns 0 or -1. */
int term_base64_encode(strbuf *out, const void *p, size_t n);
/* Decodes standard base64 (padding optional, no whitespace) into out. Returns 0, or -1 on a bad
 * character or length, -2 when out of memory. */
int term_base64_decode(strbuf *out, const char *s, size_t n);

/* Decodes one UTF-8 sequence at s[*i] (bounded by n) into *cp, rejecting overlongs, surrogates and
 * values above 0x10FFFF. Returns 0 and advances *i, or -1. */
int term_utf8_next(const unsigned char *s, size_t n, size_t *i, uint32_t *cp);
/* Returns the number of code points in valid UTF-8, or -1 when s is not valid UTF-8. */
long term_utf8_count(const char *s, size_t n);
/* Appends the UTF-8 encoding of cp (<= 0x10FFFF). Returns 0 or -1. */
int term_utf8_put(strbuf *out, uint32_t cp);

/* Validates one complete ETF term at buf[*index] within buf_len, depth-limited, without recursing
 * past limits->max_depth; on success advances *index past it. Atoms must be valid and at most
 * 255 characters. Only after this succeeds may ei_decode_* touch the term. Returns 0 or -1. */
int term_etf_check(const char *buf, size_t buf_len, int *index, const term_limits *limits,
                   term_error *err);
/* term_etf_check that also records, per map in preorder, 1 when all keys are UTF-8 binaries (and
 * not a lone "$..." key), so the JSON renderer need not look ahead. */
int term_etf_check_maps(const char *buf, size_t buf_len, int *index, const term_limits *limits,
                        term_error *err, strbuf *map_flags);
/* Reads the validated atom at buf[*i] as UTF-8 into out (MAXATOMLEN_UTF8 bytes) and advances *i;
 * returns its length (atoms may hold NUL bytes, so no strlen). */
size_t term_atom_utf8(const char *buf, int *i, char *out);
/* Class of an opaque ETF tag: "pid", "ref", "port", "fun", or NULL for other tags. */
const char *term_opaque_kind(unsigned char tag);
/* Validates decoded opaque bytes as exactly one term of the given kind and appends them to x.
 * `where` names the location for the error message. Returns 0 or -1. */
int term_enc_opaque(ei_x_buff *x, const char *kind, const char *bytes, size_t n, term_error *err,
                    const char *where);

/* Encodes a BINARY_EXT (what ei_x_encode_binary writes, in one pass). Returns 0 or -1. */
int term_enc_binary(ei_x_buff *x, const void *p, size_t n);

/* Structure helpers for encoders that learn counts only at the end (no intermediate tree). */
/* Reserves a 5-byte LIST_EXT/MAP_EXT/LARGE_TUPLE_EXT header; returns its offset or -1. */
int term_hdr_reserve(ei_x_buff *x);
/* Finishes a list opened at hdr with n elements: NIL for n == 0, STRING_EXT when all elements are
 * bytes (`all_bytes`) and n < 65536, otherwise LIST_EXT with the NIL tail appended. */
int term_list_close(ei_x_buff *x, int hdr, size_t n, bool all_bytes);
/* Finishes an improper list opened at hdr with n elements whose tail was just encoded. */
void term_improper_close(ei_x_buff *x, int hdr, size_t n);
/* Finishes a tuple opened at hdr: SMALL_TUPLE_EXT for arity < 256 (moves the body). */
void term_tuple_close(ei_x_buff *x, int hdr, size_t arity);
/* Finishes a map opened at hdr with n pairs. */
void term_map_close(ei_x_buff *x, int hdr, size_t n);
/* True when the encoded term x->buff[start..x->index) is a SMALL_INTEGER_EXT. */
bool term_is_byte_int(const ei_x_buff *x, int start);

/* Cons chains: a list cell whose tail is another list cell or a STRING_EXT is, to Erlang, one
 * list (a C-node that builds a list cell by cell sends that). When the checked term at
 * buf[*index] holds such a chain, re-encodes the term into `tmp` (fresh; the caller ei_x_frees it)
 * with every list as term_to_binary would write it, and points *buf, *len and *index at the copy;
 * returns 1. Returns 0 (nothing touched) when it holds none, -1 when out of memory. */
int term_merge_list_chains(const char **buf, size_t *len, int *index, ei_x_buff *tmp);

/* Reads big-endian integers from validated bytes. */
static inline uint32_t term_be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint16_t term_be16(const unsigned char *p) {
    return (uint16_t)(p[0] << 8 | p[1]);
}

#endif
