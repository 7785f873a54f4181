/* http_limits: the HTTP limits libmicrohttpd lacks: deadlines for a request's headers and body
 * (a client trickling bytes is cut off), and one budget for the request bodies held at once. */
#ifndef NODEX_HTTP_LIMITS_H
#define NODEX_HTTP_LIMITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct http_limits http_limits;
typedef struct http_limits_conn http_limits_conn;

/* Counters (since http_limits_new) and the budget's use now. */
typedef struct http_limits_stats {
    uint64_t header_timeouts; /* connections cut: headers not in before their deadline */
    uint64_t body_timeouts;   /* connections cut: body not in before its deadline */
    uint64_t budget_refusals; /* reservations refused: the body budget was full */
    size_t buffered;          /* body bytes reserved now */
} http_limits_stats;

/* A tracker: a request's headers must be in `header_timeout_ms` after its connection opened or
 * its previous request ended, its body `body_timeout_ms` after its headers (0: no deadline);
 * at most `body_budget` bytes reserved at once. NULL when out of memory. */
http_limits *http_limits_new(unsigned header_timeout_ms, unsigned body_timeout_ms,
                             size_t body_budget);
/* Frees the tracker; every connection must have been closed. NULL is a no-op. */
void http_limits_free(http_limits *l);

/* A connection on socket `fd` opened at now_ms: its header deadline starts. NULL when out of
 * memory (the connection then has no deadlines). Any thread. */
http_limits_conn *http_limits_open(http_limits *l, int fd, int64_t now_ms);
/* The connection is closing (its fd still open): forgotten, no sweep touches its fd after this
 * returns. NULL is a no-op. Any thread. */
void http_limits_close(http_limits *l, http_limits_conn *c);
/* The connection's request headers are in at now_ms: the body deadline starts. NULL: no-op. */
void http_limits_headers_in(const http_limits *l, http_limits_conn *c, int64_t now_ms);
/* Its request body is in: no deadline while the request is served. NULL: no-op. */
void http_limits_body_in(http_limits_conn *c);
/* Its response is done at now_ms: the next request's header deadline starts. NULL: no-op. */
void http_limits_request_done(const http_limits *l, http_limits_conn *c, int64_t now_ms);
/* Shuts down (both ways) the socket of every connection past its deadline at now_ms, once each,
 * and counts it; the owner (libmicrohttpd) then sees the peer gone and closes it. Returns how
 * many were cut. Any thread (the janitor). */
size_t http_limits_sweep(http_limits *l, int64_t now_ms);

/* Reserves `n` more body bytes: true, or false (nothing reserved, one refusal counted) when the
 * budget would be passed. Any thread. */
bool http_limits_reserve(http_limits *l, size_t n);
/* Gives back `n` reserved bytes. Any thread. */
void http_limits_release(http_limits *l, size_t n);
/* The counters and the bytes reserved now. Any thread. */
http_limits_stats http_limits_stats_get(http_limits *l);

#endif
