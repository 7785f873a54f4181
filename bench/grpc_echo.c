/* grpc_echo: gRPC core set up like nodexd's gRPC API, echoing unary calls: the library ceiling.
 * --tls CERT_PEM KEY_PEM: gRPC over TLS with the server credentials of nodexd's grpc.tls. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

#include "echo_tls.h"

#define CALL_METHOD         "/nodex.v1.Gateway/Call"
#define REQUESTS_PER_METHOD 4         /* request slots posted (as nodexd posts per method) */
#define MAX_CONCURRENT      1000      /* nodexd's grpc.max_concurrent_streams default */
#define MAX_MESSAGE         (8 << 20) /* nodexd's grpc.max_message_bytes default */
#define STOP_GRACE_MS       1000
#define THREAD_STACK        (8u << 20)

#define container_of(p, type, member) ((type *)(void *)((char *)(p)-offsetof(type, member)))

/* A completion-queue tag: what to do when its operation completes (on a cq thread). */
typedef struct tag {
    void (*fn)(struct tag *t, bool ok);
} tag;

/* One call: a reference per outstanding tag (request, close, send). */
typedef struct ecall {
    bool registered; /* the Call method, else an unregistered one (answered UNIMPLEMENTED) */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_call_details details;
    grpc_byte_buffer *payload, *reply;
    int cancelled;
    bool listed;
    bool status_pending; /* --split-status: OK goes out once the message batch completed */
    grpc_status_code status;
    const char *status_text; /* static; NULL for OK */
    struct ecall *next;      /* --reply-thread: the replier's queue */
    tag req_tag, close_tag, send_tag, bounce_tag;
    atomic_uint refs;
    pthread_mutex_t mu; /* serializes grpc_call_start_batch on this call */
} ecall;

static bool split_status; /* reply in two batches, as nodexd does (message, then status) */

/* --reply-thread direct: the cq thread hands each call to one replier thread (as nodexd's loop
 * has the C-node's reply), which starts the reply batch; bounce: the replier starts a batch of
 * no operations instead, whose tag completes at once on the cq, and the cq thread that takes it
 * starts the reply batch. Without it the cq thread answers at once. */
static enum { REPLY_CQ, REPLY_DIRECT, REPLY_BOUNCE } reply_mode;
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct ecall *head, *tail;
    bool stop;
} replier;

static struct {
    grpc_server *server;
    grpc_completion_queue *cq;
    void *method;
    atomic_bool stopping;
    tag shutdown_tag;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* live dropped, or the shutdown completed */
    size_t live;       /* calls arrived and not yet freed */
    bool shutdown_done;
} srv;

/* --tls: the PEM files, served to gRPC through a certificate config fetcher as nodexd's grpc.tls
 * serves them (src/grpc_api.c grpc_tls_credentials, without client_ca_file). */
static struct {
    tls_pem pem;        /* cert and key; cert NULL without --tls */
    atomic_bool served; /* gRPC has the config */
} tls;

static void on_request(tag *t, bool ok);
static void on_close(tag *t, bool ok);
static void on_sent(tag *t, bool ok);
static void on_bounce(tag *t, bool ok);

static void ecall_free(ecall *c) {
    if (c->listed) {
        pthread_mutex_lock(&srv.mu);
        srv.live--;
        pthread_cond_broadcast(&srv.cv);
        pthread_mutex_unlock(&srv.mu);
    }
    if (c->payload) grpc_byte_buffer_destroy(c->payload);
    if (c->reply) grpc_byte_buffer_destroy(c->reply);
    grpc_metadata_array_destroy(&c->md);
    grpc_call_details_destroy(&c->details);
    if (c->call) grpc_call_unref(c->call);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static void ecall_unref(ecall *c) {
    if (atomic_fetch_sub(&c->refs, 1) == 1) ecall_free(c);
}

/* Posts one request slot for the Call method (registered) or for any other method. */
static int post_request(bool registered) {
    ecall *c = calloc(1, sizeof *c);
    if (!c) return -1;
    c->registered = registered;
    atomic_init(&c->refs, 1);
    pthread_mutex_init(&c->mu, NULL);
    grpc_metadata_array_init(&c->md);
    grpc_call_details_init(&c->details);
    c->req_tag.fn = on_request;
    c->close_tag.fn = on_close;
    c->send_tag.fn = on_sent;
    c->bounce_tag.fn = on_bounce;
    grpc_call_error e =
        registered
            ? grpc_server_request_registered_call(srv.server, srv.method, &c->call, &c->deadline,
                                                  &c->md, &c->payload, srv.cq, srv.cq, &c->req_tag)
            : grpc_server_request_call(srv.server, &c->call, &c->details, &c->md, srv.cq, srv.cq,
                                       &c->req_tag);
    if (e != GRPC_CALL_OK) {
        ecall_unref(c);
        return -1;
    }
    return 0;
}

/* The request payload bytes, copied into a new byte buffer (NULL without a payload). */
static grpc_byte_buffer *echo_of(grpc_byte_buffer *payload) {
    grpc_byte_buffer_reader reader;
    if (!payload || !grpc_byte_buffer_reader_init(&reader, payload)) return NULL;
    grpc_slice s = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

static void reply(ecall *c);

/* A call arrived (cq thread): answer it at once (or hand it to the replier). */
static void on_request(tag *t, bool ok) {
    ecall *c = container_of(t, ecall, req_tag);
    if (!ok) { /* the server is shutting down */
        ecall_unref(c);
        return;
    }
    if (!atomic_load(&srv.stopping) && post_request(c->registered) != 0)
        fprintf(stderr, "grpc_echo: cannot post a request slot\n");
    pthread_mutex_lock(&srv.mu);
    srv.live++;
    c->listed = true;
    pthread_mutex_unlock(&srv.mu);
    /* RECV_CLOSE_ON_SERVER first: the only signal of cancellation. */
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->cancelled;
    atomic_fetch_add(&c->refs, 1);
    if (grpc_call_start_batch(c->call, &op, 1, &c->close_tag, NULL) != GRPC_CALL_OK)
        atomic_fetch_sub(&c->refs, 1); /* never the last one: we hold the request's */

    c->status = GRPC_STATUS_OK;
    if (!c->registered) {
        c->status = GRPC_STATUS_UNIMPLEMENTED;
        c->status_text = "method not implemented";
    } else if (atomic_load(&srv.stopping)) {
        c->status = GRPC_STATUS_UNAVAILABLE;
        c->status_text = "grpc_echo is shutting down";
    } else if (!(c->reply = echo_of(c->payload))) {
        c->status = GRPC_STATUS_INVALID_ARGUMENT;
        c->status_text = "no request message";
    }
    if (reply_mode == REPLY_CQ || c->status != GRPC_STATUS_OK) {
        reply(c);
        return;
    }
    pthread_mutex_lock(&replier.mu); /* the replier takes over the request's reference */
    if (replier.tail)
        replier.tail->next = c;
    else
        replier.head = c;
    replier.tail = c;
    pthread_cond_signal(&replier.cv);
    pthread_mutex_unlock(&replier.mu);
}

/* The replier thread (--reply-thread): answers the calls the cq threads hand it, until told to
 * stop with its queue empty. */
static void *replier_thread(void *arg) {
    (void)arg;
    pthread_mutex_lock(&replier.mu);
    for (;;) {
        while (!replier.head && !replier.stop) pthread_cond_wait(&replier.cv, &replier.mu);
        ecall *c = replier.head;
        if (!c) break;
        replier.head = c->next;
        if (!replier.head) replier.tail = NULL;
        pthread_mutex_unlock(&replier.mu);
        if (reply_mode == REPLY_DIRECT) {
            reply(c);
        } else {
            pthread_mutex_lock(&c->mu);
            grpc_call_error e = grpc_call_start_batch(c->call, NULL, 0, &c->bounce_tag, NULL);
            pthread_mutex_unlock(&c->mu);
            if (e != GRPC_CALL_OK) reply(c);
        }
        pthread_mutex_lock(&replier.mu);
    }
    pthread_mutex_unlock(&replier.mu);
    return NULL;
}

/* The replier's empty batch completed (cq thread): answer here. */
static void on_bounce(tag *t, bool ok) {
    (void)ok;
    reply(container_of(t, ecall, bounce_tag));
}

/* Starts the reply batch of c (its status and reply set) and drops the request's reference. */
static void reply(ecall *c) {
    grpc_slice details =
        c->status_text ? grpc_slice_from_static_string(c->status_text) : grpc_empty_slice();
    grpc_status_code status = c->status;
    grpc_op ops[3];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (c->reply) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = c->reply;
    }
    if (split_status && c->reply) {
        c->status_pending = true;
    } else {
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.status = status;
        ops[n++].data.send_status_from_server.status_details =
            status == GRPC_STATUS_OK ? NULL : &details;
    }
    atomic_fetch_add(&c->refs, 1);
    pthread_mutex_lock(&c->mu);
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, &c->send_tag, NULL);
    pthread_mutex_unlock(&c->mu);
    if (e != GRPC_CALL_OK) {
        fprintf(stderr, "grpc_echo: start_batch failed (%d)\n", (int)e);
        atomic_fetch_sub(&c->refs, 1);
    }
    ecall_unref(c);
}

static void on_sent(tag *t, bool ok) {
    ecall *c = container_of(t, ecall, send_tag);
    pthread_mutex_lock(&c->mu);
    if (c->status_pending && ok) { /* --split-status: the message is out, now the status */
        c->status_pending = false;
        grpc_op op;
        memset(&op, 0, sizeof op);
        op.op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        op.data.send_status_from_server.status = GRPC_STATUS_OK;
        atomic_fetch_add(&c->refs, 1);
        if (grpc_call_start_batch(c->call, &op, 1, &c->send_tag, NULL) != GRPC_CALL_OK)
            atomic_fetch_sub(&c->refs, 1); /* never the last one: this tag's is still held */
    }
    pthread_mutex_unlock(&c->mu);
    ecall_unref(c); /* a failed send (client gone) ends the call the same way */
}

static void on_close(tag *t, bool ok) {
    (void)ok;
    ecall_unref(container_of(t, ecall, close_tag));
}

static void on_shutdown(tag *t, bool ok) {
    (void)t;
    (void)ok;
    pthread_mutex_lock(&srv.mu);
    srv.shutdown_done = true;
    pthread_cond_broadcast(&srv.cv);
    pthread_mutex_unlock(&srv.mu);
}

static void *cq_thread(void *arg) {
    (void)arg;
    for (;;) {
        grpc_event ev =
            grpc_completion_queue_next(srv.cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type != GRPC_OP_COMPLETE) continue;
        tag *t = ev.tag;
        t->fn(t, ev.success != 0);
    }
    return NULL;
}

static int usage(void) {
    fprintf(stderr,
            "usage: grpc_echo [--threads N] [--split-status] [--reply-thread direct|bounce] "
            "[--tls CERT_PEM KEY_PEM]\n");
    return 2;
}

/* gRPC asks before every handshake, as it asks nodexd's fetcher: the config once, then
 * "unchanged" (nodexd's answer until a reload). */
static grpc_ssl_certificate_config_reload_status
tls_fetch(void *user_data, grpc_ssl_server_certificate_config **config) {
    (void)user_data;
    if (atomic_load(&tls.served)) return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;
    grpc_ssl_pem_key_cert_pair pair = {.private_key = tls.pem.key, .cert_chain = tls.pem.cert};
    /* gRPC asserts that a fetched config has roots: no client certificate is asked for, so the
     * chain stands in, as in nodexd. */
    *config = grpc_ssl_server_certificate_config_create(tls.pem.cert, &pair, 1); /* copies */
    if (!*config) return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_FAIL;
    atomic_store(&tls.served, true);
    return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW;
}

/* Insecure credentials, or with --tls nodexd's for grpc.tls without client_ca_file: no client
 * certificate requested, gRPC's own protocol floor (TLS 1.2) and ciphers (nodexd sets none for
 * gRPC). NULL if gRPC refuses them. */
static grpc_server_credentials *server_credentials(void) {
    if (!tls.pem.cert) return grpc_insecure_server_credentials_create();
    grpc_ssl_server_credentials_options *opts =
        grpc_ssl_server_credentials_create_options_using_config_fetcher(
            GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE, tls_fetch, NULL);
    return opts ? grpc_ssl_server_credentials_create_with_options(opts) : NULL; /* takes opts */
}

int main(int argc, char **argv) {
    unsigned threads = 2;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--split-status") == 0) {
            split_status = true;
        } else if (strcmp(argv[i], "--reply-thread") == 0 && i + 1 < argc) {
            const char *m = argv[++i];
            if (strcmp(m, "direct") == 0)
                reply_mode = REPLY_DIRECT;
            else if (strcmp(m, "bounce") == 0)
                reply_mode = REPLY_BOUNCE;
            else
                return usage();
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            char *end;
            unsigned long n = strtoul(argv[++i], &end, 10);
            if (*end || n < 1 || n > 64) return usage();
            threads = (unsigned)n;
        } else if (strcmp(argv[i], "--tls") == 0 && i + 2 < argc && !tls.pem.cert) {
            if (echo_tls_load("grpc_echo", argv[i + 1], argv[i + 2], &tls.pem) != 0) return 1;
            i += 2;
        } else {
            tls_pem_clear(&tls.pem);
            return usage();
        }
    }
    atomic_init(&tls.served, false);
    /* Before grpc_init: its threads inherit the mask; main waits for the signal. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    pthread_mutex_init(&srv.mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&srv.cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&srv.stopping, false);
    srv.shutdown_tag.fn = on_shutdown;

    grpc_init();
    /* The same channel arguments as src/grpc_api.c grpc_api_start (config defaults). */
    grpc_arg args[4] = {
        {.type = GRPC_ARG_INTEGER,
         .key = (char *)GRPC_ARG_MAX_CONCURRENT_STREAMS,
         .value.integer = MAX_CONCURRENT},
        {.type = GRPC_ARG_INTEGER,
         .key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
         .value.integer = MAX_MESSAGE},
        {.type = GRPC_ARG_INTEGER,
         .key = (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
         .value.integer = MAX_MESSAGE},
        {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_ALLOW_REUSEPORT, .value.integer = 0},
    };
    grpc_channel_args chargs = {sizeof args / sizeof args[0], args};
    srv.server = grpc_server_create(&chargs, NULL);
    srv.cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(srv.server, srv.cq, NULL);
    srv.method = grpc_server_register_method(srv.server, CALL_METHOD, NULL,
                                             GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    grpc_server_credentials *creds = server_credentials();
    int port = creds ? grpc_server_add_http2_port(srv.server, "127.0.0.1:0", creds) : 0;
    if (creds) grpc_server_credentials_release(creds);
    int rc = 0;
    if (port == 0) {
        /* with TLS, gRPC builds its TLS context from the first fetched config here */
        fprintf(stderr, "grpc_echo: %s\n",
                !creds         ? "gRPC refused the TLS credentials"
                : tls.pem.cert ? "cannot listen with TLS on 127.0.0.1 (are CERT_PEM and KEY_PEM a "
                                 "PEM certificate and its unencrypted key?)"
                               : "cannot listen on 127.0.0.1");
        grpc_server_destroy(srv.server);
        grpc_completion_queue_shutdown(srv.cq);
        while (grpc_completion_queue_next(srv.cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN) {
        }
        grpc_completion_queue_destroy(srv.cq);
        grpc_shutdown_blocking();
        pthread_cond_destroy(&srv.cv);
        pthread_mutex_destroy(&srv.mu);
        tls_pem_clear(&tls.pem);
        return 1;
    }
    grpc_server_start(srv.server);

    pthread_t *tids = calloc(threads, sizeof *tids);
    unsigned started = 0;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, THREAD_STACK);
    for (unsigned i = 0; tids && i < threads; i++) {
        if (pthread_create(&tids[i], &attr, cq_thread, NULL) != 0) break;
        started++;
    }
    pthread_mutex_init(&replier.mu, NULL);
    pthread_cond_init(&replier.cv, NULL);
    pthread_t replier_tid;
    bool replier_started =
        reply_mode != REPLY_CQ && pthread_create(&replier_tid, &attr, replier_thread, NULL) == 0;
    pthread_attr_destroy(&attr);
    bool posted = started == threads && (reply_mode == REPLY_CQ || replier_started);
    for (int k = 0; posted && k < REQUESTS_PER_METHOD; k++)
        posted = post_request(true) == 0 && post_request(false) == 0;
    if (posted) {
        printf("grpc_echo ready port=%d threads=%u split_status=%d reply_thread=%d tls=%d\n", port,
               threads, (int)split_status, (int)reply_mode, tls.pem.cert != NULL);
        fflush(stdout);
        int sig = 0;
        sigwait(&set, &sig);
    } else {
        fprintf(stderr, "grpc_echo: cannot start the cq threads or post request slots\n");
        rc = 1;
    }

    /* shutdown_and_notify -> (nothing pending: every call is answered at once) -> grace ->
     * cancel_all_calls -> destroy the server -> shut down and drain the cq -> destroy it ->
     * grpc_shutdown_blocking. */
    atomic_store(&srv.stopping, true);
    grpc_server_shutdown_and_notify(srv.server, srv.cq, &srv.shutdown_tag);
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += STOP_GRACE_MS / 1000;
    pthread_mutex_lock(&srv.mu);
    while (srv.live > 0 && pthread_cond_timedwait(&srv.cv, &srv.mu, &until) == 0) {
    }
    pthread_mutex_unlock(&srv.mu);
    if (replier_started) { /* it answers what it holds, then ends */
        pthread_mutex_lock(&replier.mu);
        replier.stop = true;
        pthread_cond_signal(&replier.cv);
        pthread_mutex_unlock(&replier.mu);
        pthread_join(replier_tid, NULL);
    }
    grpc_server_cancel_all_calls(srv.server);
    if (started == 0) { /* no cq thread takes the shutdown tag */
        while (!srv.shutdown_done) {
            grpc_event ev =
                grpc_completion_queue_next(srv.cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
            if (ev.type == GRPC_OP_COMPLETE) ((tag *)ev.tag)->fn(ev.tag, ev.success != 0);
        }
    }
    pthread_mutex_lock(&srv.mu);
    while (!srv.shutdown_done) pthread_cond_wait(&srv.cv, &srv.mu);
    pthread_mutex_unlock(&srv.mu);
    grpc_server_destroy(srv.server);
    grpc_completion_queue_shutdown(srv.cq);
    for (unsigned i = 0; i < started; i++) pthread_join(tids[i], NULL);
    if (started == 0) {
        while (grpc_completion_queue_next(srv.cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN) {
        }
    }
    free(tids);
    grpc_completion_queue_destroy(srv.cq);
    grpc_shutdown_blocking();
    if (srv.live) fprintf(stderr, "grpc_echo: %zu calls still live at exit\n", srv.live);
    pthread_cond_destroy(&srv.cv);
    pthread_mutex_destroy(&srv.mu);
    tls_pem_clear(&tls.pem);
    return rc;
}
