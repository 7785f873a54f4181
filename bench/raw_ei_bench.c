/* raw_ei_bench: the floor. A bare ei client calling a Nodex-style C-node, one call at a time and
 * pipelined, with no gateway in between.
 *
 * usage: raw_ei_bench <cnode-executable> <cookie> <duration-ms> <inflight,...> [payload]
 *
 * We become the node rawbench<pid>@127.0.0.1, listen and publish in epmd (ERL_EPMD_PORT is
 * honoured), spawn the C-node with the Nodex argv (`<sname> <host> <cookie> <our sname>`) so it
 * connects back to us, then for each in-flight count K keep K calls outstanding on the one
 * connection for the duration: every call is {ping, Payload} sent to the registered name `nil`
 * from its own pid (ei_make_pid), and its reply is matched by the pid it is addressed to.
 * One JSON object per K goes to stdout, with the CPU time (user + system) per call of this
 * program (getrusage) and of the C-node (/proc/PID/stat) over the K run; at the end we close the
 * connection (the C-node exits 0) and reap it. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ei.h>

extern char **environ;

#define MAX_INFLIGHT 1024

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static void die(const char *what) {
    fprintf(stderr, "raw_ei_bench: %s (erl_errno %d, errno %d)\n", what, erl_errno, errno);
    exit(1);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct slot {
    erlang_pid pid;
    double t0;
    int busy;
} slot;

typedef struct lat_vec {
    double *v;
    size_t n, cap;
} lat_vec;

static void lat_push(lat_vec *l, double x) {
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 65536;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
        if (!l->v) die("out of memory");
    }
    l->v[l->n++] = x;
}

static ei_cnode ec;
static ei_x_buff req;
static pid_t child;

/* CPU seconds (user + system) of this process. */
static double self_cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* CPU seconds (utime + stime, all threads) of process `pid` from /proc/PID/stat; 0 on error. */
static double proc_cpu_s(pid_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0.0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    /* after the command: state, then fields 4..13, utime and stime are fields 14 and 15 */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return 0.0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static void send_call(int fd, slot *s) {
    if (ei_make_pid(&ec, &s->pid) < 0) die("ei_make_pid");
    s->t0 = now_us();
    s->busy = 1;
    if (ei_send_reg_encoded(fd, &s->pid, "nil", req.buff, req.index) < 0) die("send");
}

/* Receives one reply; returns the slot it answers (NULL for ticks and strays). */
static slot *recv_reply(int fd, slot *slots, int k, ei_x_buff *in) {
    erlang_msg msg;
    in->index = 0;
    int rc = ei_xreceive_msg(fd, &msg, in);
    if (rc == ERL_TICK) return NULL;
    if (rc == ERL_ERROR) die("receive");
    if (msg.msgtype != ERL_SEND) return NULL;
    for (int i = 0; i < k; i++)
        if (slots[i].busy && slots[i].pid.num == msg.to.num &&
            slots[i].pid.serial == msg.to.serial && slots[i].pid.creation == msg.to.creation)
            return &slots[i];
    return NULL;
}

static void run(int fd, int k, double dur_us) {
    static slot slots[MAX_INFLIGHT];
    lat_vec lat = {0};
    ei_x_buff in;
    ei_x_new(&in);
    memset(slots, 0, sizeof slots);
    double warm = dur_us / 10 > 50000 ? dur_us / 10 : 50000;
    double start = now_us() + warm, end = start + dur_us;
    long stray = 0, replies = 0;
    double cpu0 = self_cpu_s(), cnode_cpu0 = proc_cpu_s(child);
    for (int i = 0; i < k; i++) send_call(fd, &slots[i]);
    int outstanding = k;
    while (outstanding > 0) {
        slot *s = recv_reply(fd, slots, k, &in);
        if (!s) {
            stray++;
            continue;
        }
        double t1 = now_us();
        s->busy = 0;
        outstanding--;
        replies++;
        if (s->t0 >= start && t1 <= end) lat_push(&lat, t1 - s->t0);
        if (t1 < end) {
            send_call(fd, s);
            outstanding++;
        }
    }
    double cpu_us = (self_cpu_s() - cpu0) * 1e6,
           cnode_cpu_us = (proc_cpu_s(child) - cnode_cpu0) * 1e6;
    double per = replies ? (double)replies : 1.0;
    qsort(lat.v, lat.n, sizeof *lat.v, cmp_double);
    double sum = 0;
    for (size_t i = 0; i < lat.n; i++) sum += lat.v[i];
    size_t n = lat.n ? lat.n : 1;
#define PCT(p) (lat.n ? lat.v[(size_t)((p) * (double)(lat.n - 1) + 0.5)] : 0.0)
    printf("{\"inflight\":%d,\"calls\":%zu,\"throughput_per_s\":%.1f,\"us_per_op\":%.3f,"
           "\"mean_us\":%.3f,\"p50_us\":%.3f,\"p99_us\":%.3f,\"stray\":%ld,"
           "\"cpu_us_per_call\":%.3f,\"cnode_cpu_us_per_call\":%.3f}\n",
           k, lat.n, (double)lat.n / (dur_us / 1e6), dur_us / (double)n, sum / (double)n, PCT(0.50),
           PCT(0.99), stray, cpu_us / per, cnode_cpu_us / per);
    fflush(stdout);
    free(lat.v);
    ei_x_free(&in);
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: raw_ei_bench <cnode-exe> <cookie> <duration-ms> <inflight,...> "
                        "[payload]\n");
        return 2;
    }
    const char *exe = argv[1], *cookie = argv[2], *payload = argc > 5 ? argv[5] : "hello";
    double dur_us = atof(argv[3]) * 1000.0;

    if (ei_init() != 0) die("ei_init");
    char sname[64], node[128], cn_sname[80];
    snprintf(sname, sizeof sname, "rawbench%d", (int)getpid());
    snprintf(node, sizeof node, "%s@127.0.0.1", sname);
    snprintf(cn_sname, sizeof cn_sname, "%s_cn", sname);
    struct in_addr addr;
    inet_pton(AF_INET, "127.0.0.1", &addr);
    unsigned creation = ((unsigned)time(NULL) ^ ((unsigned)getpid() << 8)) | 1u;
    if (ei_connect_xinit(&ec, "127.0.0.1", sname, node, &addr, cookie, creation) < 0)
        die("ei_connect_xinit");
    int port = 0;
    int lfd = ei_xlisten(&ec, &addr, &port, 5);
    if (lfd < 0) die("ei_xlisten");
    int epmd_fd = ei_publish(&ec, port);
    if (epmd_fd < 0) die("ei_publish");

    /* The C-node, with the Nodex argv, connecting back to us. */
    char *cargv[] = {(char *)exe, cn_sname, "127.0.0.1", (char *)cookie, sname, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    int spawn_rc = posix_spawn(&child, exe, &fa, NULL, cargv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (spawn_rc != 0) die("posix_spawn");
    fprintf(stderr, "cnode_os_pid %d\n", (int)child);

    ErlConnect conp;
    int fd = ei_accept_tmo(&ec, lfd, &conp, 10000);
    if (fd < 0) {
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        die("ei_accept (the C-node did not connect)");
    }

    ei_x_new_with_version(&req);
    ei_x_encode_tuple_header(&req, 2);
    ei_x_encode_atom(&req, "ping");
    ei_x_encode_binary(&req, payload, (long)strlen(payload));

    for (char *tok = strtok(argv[4], ","); tok; tok = strtok(NULL, ",")) {
        int k = atoi(tok);
        if (k < 1 || k > MAX_INFLIGHT) die("bad in-flight count");
        run(fd, k, dur_us);
    }

    /* Closing the connection makes a Nodex-style C-node exit 0. */
    ei_close_connection(fd);
    close(lfd);
    close(epmd_fd);
    int status = 0;
    for (int i = 0; i < 100; i++) {
        if (waitpid(child, &status, WNOHANG) == child) return 0;
        usleep(20000);
    }
    kill(child, SIGKILL);
    waitpid(child, &status, 0);
    fprintf(stderr, "raw_ei_bench: the C-node did not exit; killed\n");
    return 0;
}
