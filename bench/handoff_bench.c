/* handoff_bench: what handing work to another thread costs on this machine (ping-pong p50). */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Two threads pass a token back and forth `n` times, each blocking until it has it (no
 * spinning): a round trip is two hand-offs. Modes: `eventfd` (each waits in read() on its own
 * eventfd, as nodexd's loop waits for its wake-up), `condvar` (a mutex and condition variable:
 * futex waits and wakes, as gRPC's completion queue wakes a cq thread) and `tcp` (a 1-byte
 * message over a loopback TCP connection, as a request reaches another process's thread).
 *
 *   handoff_bench [ROUND_TRIPS] [MODE...]   one JSON line per mode:
 *   {"mode":"eventfd","round_trips":N,"roundtrip_p50_us":..,"handoff_p50_us":..,"roundtrip_p99_us":..}
 */

typedef struct pingpong {
    int mode;    /* 0 eventfd, 1 condvar, 2 tcp */
    int efd[2];  /* eventfd: [0] wakes the echo thread, [1] the timing thread */
    int sock[2]; /* tcp: [0] the timing thread's end, [1] the echo thread's */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int turn; /* condvar: 1 = the echo thread's, 0 = the timing thread's */
    long n;
} pingpong;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Blocks until the token is ours (`side` 0: the timing thread, 1: the echo thread). */
static int pp_wait(pingpong *p, int side) {
    if (p->mode == 0) {
        uint64_t v;
        return read(p->efd[side ? 0 : 1], &v, sizeof v) == sizeof v ? 0 : -1;
    }
    if (p->mode == 1) {
        pthread_mutex_lock(&p->mu);
        while (p->turn != side) pthread_cond_wait(&p->cv, &p->mu);
        pthread_mutex_unlock(&p->mu);
        return 0;
    }
    char c;
    return read(p->sock[side], &c, 1) == 1 ? 0 : -1;
}

/* Hands the token to the other side. */
static int pp_pass(pingpong *p, int side) {
    if (p->mode == 0) {
        uint64_t one = 1;
        return write(p->efd[side ? 1 : 0], &one, sizeof one) == sizeof one ? 0 : -1;
    }
    if (p->mode == 1) {
        pthread_mutex_lock(&p->mu);
        p->turn = !side;
        pthread_cond_signal(&p->cv);
        pthread_mutex_unlock(&p->mu);
        return 0;
    }
    return write(p->sock[side], "x", 1) == 1 ? 0 : -1;
}

static void *echo_main(void *arg) {
    pingpong *p = arg;
    for (long i = 0; i < p->n; i++)
        if (pp_wait(p, 1) != 0 || pp_pass(p, 1) != 0) break;
    return NULL;
}

static int tcp_pair(int out[2]) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 1) != 0 ||
        getsockname(l, (struct sockaddr *)&a, &len) != 0)
        return -1;
    out[0] = socket(AF_INET, SOCK_STREAM, 0);
    if (out[0] < 0 || connect(out[0], (struct sockaddr *)&a, sizeof a) != 0) return -1;
    out[1] = accept(l, NULL, NULL);
    close(l);
    int one = 1;
    setsockopt(out[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(out[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return out[1] < 0 ? -1 : 0;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int run_mode(const char *name, long n) {
    pingpong p = {.n = n};
    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.cv, NULL);
    if (strcmp(name, "eventfd") == 0) {
        p.mode = 0;
        p.efd[0] = eventfd(0, 0);
        p.efd[1] = eventfd(0, 0);
        if (p.efd[0] < 0 || p.efd[1] < 0) return -1;
    } else if (strcmp(name, "condvar") == 0) {
        p.mode = 1;
    } else if (strcmp(name, "tcp") == 0) {
        p.mode = 2;
        if (tcp_pair(p.sock) != 0) return -1;
    } else {
        fprintf(stderr, "handoff_bench: unknown mode %s\n", name);
        return -1;
    }
    int64_t *rt = malloc((size_t)n * sizeof *rt);
    pthread_t t;
    if (!rt || pthread_create(&t, NULL, echo_main, &p) != 0) return -1;
    for (long i = 0; i < n; i++) {
        int64_t t0 = now_ns();
        if (pp_pass(&p, 0) != 0 || pp_wait(&p, 0) != 0) return -1;
        rt[i] = now_ns() - t0;
    }
    pthread_join(t, NULL);
    qsort(rt, (size_t)n, sizeof *rt, cmp_i64);
    double p50 = (double)rt[n / 2] / 1000.0, p99 = (double)rt[n * 99 / 100] / 1000.0;
    printf("{\"mode\":\"%s\",\"round_trips\":%ld,\"roundtrip_p50_us\":%.2f,\"handoff_p50_us\":%.2f,"
           "\"roundtrip_p99_us\":%.2f}\n",
           name, n, p50, p50 / 2, p99);
    fflush(stdout);
    free(rt);
    if (p.mode == 0) {
        close(p.efd[0]);
        close(p.efd[1]);
    } else if (p.mode == 2) {
        close(p.sock[0]);
        close(p.sock[1]);
    }
    pthread_mutex_destroy(&p.mu);
    pthread_cond_destroy(&p.cv);
    return 0;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 20000;
    if (n < 2) n = 2;
    static const char *const all[] = {"eventfd", "condvar", "tcp"};
    int rc = 0;
    if (argc > 2) {
        for (int i = 2; i < argc; i++) rc |= run_mode(argv[i], n) != 0;
    } else {
        for (size_t i = 0; i < sizeof all / sizeof *all; i++) rc |= run_mode(all[i], n) != 0;
    }
    return rc;
}
