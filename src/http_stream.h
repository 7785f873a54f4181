/* http_stream: a streaming HTTP response body fed from any thread; the connection sleeps while
 * the stream is empty (libmicrohttpd suspend/resume) instead of busy-polling. */
#ifndef NODEX_HTTP_STREAM_H
#define NODEX_HTTP_STREAM_H

#include <stdbool.h>
#include <stddef.h>

#include <microhttpd.h>

typedef struct http_stream http_stream;

/* Creates a stream for `conn`. It starts with two references: one for the caller and one for
 * the MHD response that http_stream_response makes (released when MHD is done with it).
 * `on_resume(ctx)` (may be NULL) runs on the writing thread after each resume of the connection
 * (for an MHD run from an external event loop, which must then call MHD_run). */
http_stream *http_stream_new(struct MHD_Connection *conn, void (*on_resume)(void *ctx), void *ctx);
/* The response that sends what is written, chunked, until http_stream_end. Call once, from the
 * connection's access handler; the caller queues it. NULL when out of memory (then the
 * response's reference is dropped). */
struct MHD_Response *http_stream_response(http_stream *s);
/* http_stream_write's result when that very write found the reader behind by the cap and cut
 * the stream off (once per stream: the writer counts the cut). */
#define HTTP_STREAM_CUT 1

/* Appends bytes; any thread; never blocks on the network. Returns 0; HTTP_STREAM_CUT when the
 * cap cut the stream off instead (see http_stream_set_cap); -1 when the client is gone, the
 * stream ended or memory is out. Must not be called after http_stream_end. */
int http_stream_write(http_stream *s, const char *data, size_t len);
/* Caps the bytes written but not yet taken by the client at `max_pending` (0: no cap, the
 * default). A write that would pass it appends `final_frame` (copied; the stream's last words,
 * e.g. an error line) instead, ends the stream and returns HTTP_STREAM_CUT: a client that stopped
 * reading cannot make nodexd buffer without bound. Set before writing. */
void http_stream_set_cap(http_stream *s, size_t max_pending, const char *final_frame);
/* True once the cap cut the stream off. */
bool http_stream_cut_off(http_stream *s);
/* Ends the body after what was written; any thread. Idempotent. */
void http_stream_end(http_stream *s);
/* True once MHD has released the response (the body was sent, or the client went away). */
bool http_stream_dead(http_stream *s);
/* Adds a reference (any thread). */
void http_stream_ref(http_stream *s);
/* Drops a reference (any thread); the last one frees the stream. */
void http_stream_unref(http_stream *s);

#endif
