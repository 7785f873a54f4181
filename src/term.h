/* term: lossless conversion between ei-encoded Erlang terms and JSON, Erlang text syntax and ETF.
 */
#ifndef NODEX_TERM_H
#define NODEX_TERM_H

#include <stddef.h>

#include <ei.h>

#include "strbuf.h"

/* Error kinds, with the HTTP status each maps to, generated from one list. */
#define TERM_ERRORS(X)                                                                             \
    X(TERM_OK, "ok", 200)                                                                          \
    X(TERM_ERR_SYNTAX, "bad_syntax", 400)       /* input is not valid JSON / text / ETF */         \
    X(TERM_ERR_TAG, "bad_tag", 400)             /* unknown or malformed "$tag" object */           \
    X(TERM_ERR_DEPTH, "too_deep", 400)          /* nesting deeper than term_limits.max_depth */    \
    X(TERM_ERR_SIZE, "too_large", 413)          /* input or output over term_limits.max_bytes */   \
    X(TERM_ERR_SELF, "no_self_pid", 400)        /* {"$pid":"self"} where no call pid exists */     \
    X(TERM_ERR_UNSUPPORTED, "unsupported", 400) /* a term the target format cannot express */      \
    X(TERM_ERR_NOMEM, "out_of_memory", 500)

typedef enum term_status {
#define X(id, name, http) id,
    TERM_ERRORS(X)
#undef X
} term_status;

/* Returns the error's short code ("bad_syntax"). */
const char *term_status_name(term_status status);
/* Returns the HTTP status that the error maps to (400, 413, 500). */
int term_status_http(term_status status);

/* Limits applied by every decoder and encoder; depth counts nested containers. */
typedef struct term_limits {
    unsigned max_depth; /* e.g. 512; deeper input is TERM_ERR_DEPTH, never a stack overflow */
    size_t max_bytes;   /* maximum input and output size in bytes; over it is TERM_ERR_SIZE */
} term_limits;

/* The defaults: depth 512, 64 MiB. */
extern const term_limits term_limits_default;

/* Filled on error: what was wrong and where (JSON path such as "$[2].key", or "offset 17"). */
typedef struct term_error {
    term_status status;
    char message[256];
} term_error;

/* --- Input: caller formats to ei encoding. ----------------------------------------------------
 * Each function APPENDS exactly one encoded term to `out` (no version byte: callers embed the term
 * in larger messages; start `out` with ei_x_new_with_version when a standalone term is wanted).
 * `self` is the pid that {"$pid":"self"} (JSON) or the text form `self()` stands for; NULL when
 * there is none. On error returns -1 with `err` filled; `out` may then hold a partial term and the
 * caller discards it. Thread-safe: no shared state. */

/* JSON (RFC 8259) to a term, by the mapping of docs/terms.md. */
int term_from_json(const char *json, size_t len, const term_limits *limits, const erlang_pid *self,
                   ei_x_buff *out, term_error *err);
/* Erlang text syntax ("{ping, <<\"hi\">>}", optionally ending in '.') to a term. */
int term_from_text(const char *text, size_t len, const term_limits *limits, const erlang_pid *self,
                   ei_x_buff *out, term_error *err);
/* External Term Format (starting with version byte 131) validated and appended without the version
 * byte. Compressed terms (tag 80) are inflated or rejected with a clear error. Bytes after the
 * first complete term are an error here (a request must be exactly one term). */
int term_from_etf(const char *etf, size_t len, const term_limits *limits, ei_x_buff *out,
                  term_error *err);

/* --- Output: ei encoding to caller formats. -------------------------------------------------
 * Each function decodes ONE term from buf at *index (no version byte at *index), advances *index
 * past it and appends its rendering to `out`; bytes after that term are left alone (real C-nodes
 * send trailing bytes). `buf_len` bounds every read. Returns 0, or -1 with `err` filled. */

/* A term as JSON, by the mapping of docs/terms.md (term -> JSON -> term is the identity). */
int term_to_json(const char *buf, size_t buf_len, int *index, const term_limits *limits,
                 strbuf *out, term_error *err);
/* A term as Erlang text syntax that term_from_text parses back to the same term. */
int term_to_text(const char *buf, size_t buf_len, int *index, const term_limits *limits,
                 strbuf *out, term_error *err);
/* A term as standalone ETF: version byte 131 followed by the term's bytes, copied exactly. */
int term_to_etf(const char *buf, size_t buf_len, int *index, const term_limits *limits, strbuf *out,
                term_error *err);

/* Validates one complete encoded term at buf[*index] (no version byte) within buf_len, with the
 * depth limit; on success advances *index past it, after which ei_decode_* calls on that term
 * cannot read out of bounds. Returns 0, or -1 with `err` filled. Thread-safe. */
int term_validate(const char *buf, size_t buf_len, int *index, const term_limits *limits,
                  term_error *err);

#endif
