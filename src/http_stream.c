/* http_stream: a streaming HTTP response body fed from any thread; the connection sleeps while
 * the stream is empty (libmicrohttpd suspend/resume) instead of busy-polling. */
#include "http_stream.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "strbuf.h"

struct http_stream {
    pthread_mutex_t mu;
    atomic_int refs;
    struct MHD_Connection *conn;
    strbuf out;     /* bytes not yet handed to MHD */
    size_t out_off; /* how much of `out` was handed over */
    bool suspended; /* the connection sleeps in the reader until data or the end comes */
    bool ended;
    bool dead;
    bool cut;           /* ended by the cap */
    size_t max_pending; /* 0: no cap */
    char *final_frame;  /* written when the cap is reached */
    void (*on_resume)(void *ctx);
    void *resume_ctx;
};

http_stream *http_stream_new(struct MHD_Connection *conn, void (*on_resume)(void *ctx), void *ctx) {
    http_stream *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    pthread_mutex_init(&s->mu, NULL);
    atomic_init(&s->refs, 2);
    s->conn = conn;
    s->on_resume = on_resume;
    s->resume_ctx = ctx;
    return s;
}

void http_stream_ref(http_stream *s) {
    atomic_fetch_add(&s->refs, 1);
}

void http_stream_unref(http_stream *s) {
    if (!s || atomic_fetch_sub(&s->refs, 1) != 1) return;
    strbuf_free(&s->out);
    free(s->final_frame);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

void http_stream_set_cap(http_stream *s, size_t max_pending, const char *final_frame) {
    pthread_mutex_lock(&s->mu);
    s->max_pending = max_pending;
    free(s->final_frame);
    s->final_frame = final_frame ? strdup(final_frame) : NULL;
    pthread_mutex_unlock(&s->mu);
}

bool http_stream_cut_off(http_stream *s) {
    pthread_mutex_lock(&s->mu);
    bool cut = s->cut;
    pthread_mutex_unlock(&s->mu);
    return cut;
}

/* MHD asks for more body. Called on the connection's MHD thread. */
static ssize_t http_stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    http_stream *s = cls;
    pthread_mutex_lock(&s->mu);
    size_t avail = s->out.len - s->out_off;
    if (avail) {
        size_t n = avail < max ? avail : max;
        memcpy(buf, s->out.data + s->out_off, n);
        s->out_off += n;
        if (s->out_off == s->out.len) {
            strbuf_reset(&s->out);
            s->out_off = 0;
        }
        pthread_mutex_unlock(&s->mu);
        return (ssize_t)n;
    }
    if (s->ended) {
        pthread_mutex_unlock(&s->mu);
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    /* Nothing to send: sleep until a writer resumes us. Suspending under the lock means no
     * writer can resume before the suspension is in place. */
    s->suspended = true;
    MHD_suspend_connection(s->conn);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static void http_stream_released(void *cls) {
    http_stream *s = cls;
    pthread_mutex_lock(&s->mu);
    s->dead = true;
    pthread_mutex_unlock(&s->mu);
    http_stream_unref(s);
}

struct MHD_Response *http_stream_response(http_stream *s) {
    struct MHD_Response *r = MHD_create_response_from_callback(
        MHD_SIZE_UNKNOWN, 16384, http_stream_read, s, http_stream_released);
    if (!r) http_stream_released(s);
    return r;
}

/* Wakes the connection if it sleeps. Caller holds s->mu; returns whether to resume after it
 * unlocks (resume takes MHD's locks: never under ours). A suspended connection cannot be
 * freed by MHD, so resuming it after the unlock is safe. */
static bool http_stream_wake_locked(http_stream *s) {
    if (!s->suspended) return false;
    s->suspended = false;
    return true;
}

/* Resumes the sleeping connection and tells whoever drives MHD. */
static void http_stream_resume(http_stream *s) {
    MHD_resume_connection(s->conn);
    if (s->on_resume) s->on_resume(s->resume_ctx);
}

int http_stream_write(http_stream *s, const char *data, size_t len) {
    pthread_mutex_lock(&s->mu);
    if (s->dead || s->ended) {
        pthread_mutex_unlock(&s->mu);
        return -1;
    }
    int rc;
    if (s->max_pending && s->out.len - s->out_off + len > s->max_pending) {
        /* the reader fell behind by the cap: last words, then the end */
        if (s->final_frame) strbuf_puts(&s->out, s->final_frame);
        s->ended = s->cut = true;
        rc = HTTP_STREAM_CUT;
    } else {
        rc = strbuf_append(&s->out, data, len);
    }
    bool wake = http_stream_wake_locked(s);
    pthread_mutex_unlock(&s->mu);
    if (wake) http_stream_resume(s);
    return rc;
}

void http_stream_end(http_stream *s) {
    pthread_mutex_lock(&s->mu);
    s->ended = true;
    bool wake = !s->dead && http_stream_wake_locked(s);
    pthread_mutex_unlock(&s->mu);
    if (wake) http_stream_resume(s);
}

bool http_stream_dead(http_stream *s) {
    pthread_mutex_lock(&s->mu);
    bool dead = s->dead;
    pthread_mutex_unlock(&s->mu);
    return dead;
}
