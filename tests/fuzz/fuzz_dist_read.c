/* fuzz_dist_read: arbitrary bytes from a distribution peer into dist_read's framing and control
 * message parsing, delivered in pieces as a socket would. */
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dist.h"
#include "term.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Touches every byte a dispatched message points at, so a bad offset is an ASan report. */
static void on_message(void *ctx, dist_conn *c, const dist_message *m) {
    (void)c;
    size_t *sum = ctx;
    for (size_t i = 0; i < m->msg_len; i++) *sum += (unsigned char)m->msg[i];
    if (m->to_name) *sum += strlen(m->to_name);
    const term_limits lim = {64, 1 << 20};
    term_error err;
    strbuf out = {0};
    int idx = 0;
    (void)term_to_json(m->msg, m->msg_len, &idx, &lim, &out, &err);
    strbuf_free(&out);
}

static volatile size_t sink; /* keeps the reads of on_message from being optimized out */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int ready;
    if (!ready) {
        signal(SIGPIPE, SIG_IGN); /* tick answers to a peer that has gone */
        ei_init();                /* dist_conn_unref closes through ei's socket table */
        ready = 1;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return 0;
    dist_conn *c = dist_conn_new(sv[0], "fuzz@peer", 1 << 16);
    if (!c) {
        close(sv[0]);
        close(sv[1]);
        return 0;
    }
    size_t sum = 0;
    dist_close_reason r = DIST_OPEN;
    /* The first byte picks the piece size, so packets also arrive split across reads. */
    size_t piece = size ? 1 + data[0] % 97 : 1;
    for (size_t off = size ? 1 : 0; off < size && r == DIST_OPEN; off += piece) {
        size_t n = size - off < piece ? size - off : piece;
        if (write(sv[1], data + off, n) != (ssize_t)n) break;
        r = dist_read(c, on_message, &sum);
    }
    shutdown(sv[1], SHUT_WR);
    for (int i = 0; i < 1000 && r == DIST_OPEN; i++) r = dist_read(c, on_message, &sum);
    if (r == DIST_OPEN) abort(); /* the peer's end must be seen */
    for (int k = 0; k < DIST_CTL_KINDS; k++) sum += dist_ignored_count(c, (dist_ignored_control)k);
    dist_conn_unref(c);
    close(sv[1]);
    sink = sum;
    return 0;
}
