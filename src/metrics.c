/* metrics: Prometheus text exposition of the gateway: C-nodes, transports' requests and stream
 * cuts, process. */
#include "metrics.h"

#include <dirent.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "call.h"
#include "dist.h"
#include "routing.h"

struct metrics_requests {
    const char *family, *help, *route_label, *status_label;
    const char *const *routes;
    size_t route_count;
    unsigned statuses;            /* max_status + 2: 0..max_status and "other" */
    atomic_uint_fast64_t *counts; /* route_count x statuses */
    metrics_requests *next;
};

struct metrics {
    pthread_mutex_t mu; /* guards the list of tables (their counters are atomic) */
    metrics_requests *tables;
    atomic_uint_fast64_t stream_cuts[METRICS_TRANSPORT_COUNT][METRICS_CUT_CAUSE_COUNT];
    int64_t start_wall_s;
    struct timespec start_mono;
};

static const char *const metrics_outcome_codes[] = {
#define X(id, http, code) code,
    CALL_OUTCOMES(X)
#undef X
};

static const char *const metrics_transport_labels[] = {
#define X(id, label) label,
    METRICS_TRANSPORTS(X)
#undef X
};

static const char *const metrics_cut_cause_labels[] = {
#define X(id, label) label,
    METRICS_CUT_CAUSES(X)
#undef X
};

metrics *metrics_new(void) {
    metrics *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    pthread_mutex_init(&m->mu, NULL);
    m->start_wall_s = (int64_t)time(NULL);
    clock_gettime(CLOCK_MONOTONIC, &m->start_mono);
    return m;
}

void metrics_free(metrics *m) {
    if (!m) return;
    for (metrics_requests *t = m->tables, *next; t; t = next) {
        next = t->next;
        free(t->counts);
        free(t);
    }
    pthread_mutex_destroy(&m->mu);
    free(m);
}

metrics_requests *metrics_add_requests(metrics *m, const char *family, const char *help,
                                       const char *route_label, const char *status_label,
                                       const char *const *routes, size_t route_count,
                                       unsigned max_status) {
    metrics_requests *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->family = family;
    t->help = help;
    t->route_label = route_label;
    t->status_label = status_label;
    t->routes = routes;
    t->route_count = route_count;
    t->statuses = max_status + 2;
    t->counts = calloc(route_count * t->statuses, sizeof *t->counts);
    if (!t->counts) {
        free(t);
        return NULL;
    }
    pthread_mutex_lock(&m->mu);
    metrics_requests **pp = &m->tables; /* appended: the exposition keeps the order of creation */
    while (*pp) pp = &(*pp)->next;
    *pp = t;
    pthread_mutex_unlock(&m->mu);
    return t;
}

static size_t metrics_slot(const metrics_requests *t, size_t route, unsigned status) {
    unsigned s = status < t->statuses - 1 ? status : t->statuses - 1;
    return route * t->statuses + s;
}

void metrics_requests_count(metrics_requests *t, size_t route, unsigned status) {
    if (!t || route >= t->route_count) return;
    atomic_fetch_add_explicit(&t->counts[metrics_slot(t, route, status)], 1, memory_order_relaxed);
}

uint64_t metrics_requests_get(const metrics_requests *t, size_t route, unsigned status) {
    if (!t || route >= t->route_count) return 0;
    return atomic_load_explicit(&t->counts[metrics_slot(t, route, status)], memory_order_relaxed);
}

uint64_t metrics_stream_cut(metrics *m, metrics_transport t, metrics_cut_cause cause) {
    if (!m || (unsigned)t >= METRICS_TRANSPORT_COUNT || (unsigned)cause >= METRICS_CUT_CAUSE_COUNT)
        return 0;
    return atomic_fetch_add_explicit(&m->stream_cuts[t][cause], 1, memory_order_relaxed) + 1;
}

uint64_t metrics_stream_cuts(const metrics *m, metrics_transport t, metrics_cut_cause cause) {
    if (!m || (unsigned)t >= METRICS_TRANSPORT_COUNT || (unsigned)cause >= METRICS_CUT_CAUSE_COUNT)
        return 0;
    return atomic_load_explicit(&m->stream_cuts[t][cause], memory_order_relaxed);
}

int metrics_label_value(strbuf *out, const char *s) {
    int rc = strbuf_putc(out, '"');
    for (; *s && rc == 0; s++) {
        if (*s == '\\')
            rc = strbuf_puts(out, "\\\\");
        else if (*s == '"')
            rc = strbuf_puts(out, "\\\"");
        else if (*s == '\n')
            rc = strbuf_puts(out, "\\n");
        else
            rc = strbuf_putc(out, *s);
    }
    return rc ? rc : strbuf_putc(out, '"');
}

/* ------------------------------------------------------------------------------------------ */
/* Output: the first allocation failure ends the exposition (never half a line) */

typedef struct mout {
    strbuf *sb;
    bool failed;
} mout;

static void mput(mout *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void mput(mout *o, const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (o->failed || n < 0) return;
    if ((size_t)n >= sizeof line) n = sizeof line - 1; /* a label value is never this long */
    if (strbuf_append(o->sb, line, (size_t)n) != 0) o->failed = true;
}

static void mlabel(mout *o, const char *s) {
    if (!o->failed && metrics_label_value(o->sb, s) != 0) o->failed = true;
}

/* C-nodes */

/* The series of one family: its HELP and TYPE lines, then one line per sample. */
static void metrics_family(mout *out, const char *name, const char *type, const char *help) {
    mput(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* `name{cnode="...",instance="..."` (without the closing brace: more labels may follow). */
static void metrics_cnode_labels(mout *out, const char *name, const gateway_cnode_info *i,
                                 const char *instance) {
    mput(out, "%s{cnode=", name);
    mlabel(out, i->name);
    mput(out, ",instance=\"%s\"", instance);
}

/* One row of the exposition: an instance, or a C-node's calls that ended before reaching one. */
typedef struct metrics_row {
    gateway_cnode_info info;
    char instance[16]; /* its instance label: "1".., or "waiting" */
    bool waiting_row;  /* the calls that ended waiting (stats and the waiting count only) */
} metrics_row;

typedef struct metrics_snapshot {
    metrics_row *rows;
    size_t count;
} metrics_snapshot;

static int metrics_snapshot_take(gateway *gw, metrics_snapshot *s) {
    s->rows = NULL;
    s->count = 0;
    size_t groups = gateway_cnode_count(gw), cap = 0;
    for (size_t g = 0; g < groups; g++) {
        gateway_cnode_info all;
        if (gateway_cnode_info_at(gw, g, &all) != 0) continue;
        if (s->count + all.instances + 1 > cap) {
            cap = (s->count + all.instances + 1) * 2;
            metrics_row *rows = realloc(s->rows, cap * sizeof *rows);
            if (!rows) {
                free(s->rows);
                return -1;
            }
            s->rows = rows;
        }
        for (unsigned k = 1; k <= all.instances; k++) {
            metrics_row *r = &s->rows[s->count];
            if (gateway_cnode_instance_at(gw, g, k, &r->info) != 0) continue;
            snprintf(r->instance, sizeof r->instance, "%u", k);
            r->waiting_row = false;
            s->count++;
        }
        /* The C-node's calls that ended before reaching an instance, and its waiting count. */
        metrics_row *w = &s->rows[s->count++];
        w->info = all;
        w->info.stats = all.waited;
        snprintf(w->instance, sizeof w->instance, "waiting");
        w->waiting_row = true;
    }
    return 0;
}

static void metrics_render_states(mout *out, const metrics_snapshot *s) {
    metrics_family(out, "nodex_cnode_state", "gauge",
                   "1 for the state each C-node instance is in, 0 for the others.");
    for (size_t r = 0; r < s->count; r++) {
        if (s->rows[r].waiting_row) continue;
        for (cnode_state st = CNODE_STARTING; st <= CNODE_STOPPED; st++) {
            metrics_cnode_labels(out, "nodex_cnode_state", &s->rows[r].info, s->rows[r].instance);
            mput(out, ",state=\"%s\"} %d\n", cnode_state_name(st), s->rows[r].info.state == st);
        }
    }
    static const struct {
        const char *name, *type, *help;
    } gauges[] = {
        {"nodex_cnode_up", "gauge", "1 when the C-node instance is up (calls go through)."},
        {"nodex_cnode_in_flight", "gauge", "Calls sent to the instance and not yet ended."},
        {"nodex_cnode_restarts_total", "counter", "Restarts of the instance."},
        {"nodex_cnode_received_bytes_total", "counter",
         "Distribution bytes received from the instance."},
        {"nodex_cnode_sent_bytes_total", "counter", "Distribution bytes sent to the instance."},
    };
    for (size_t g = 0; g < sizeof gauges / sizeof gauges[0]; g++) {
        metrics_family(out, gauges[g].name, gauges[g].type, gauges[g].help);
        for (size_t r = 0; r < s->count; r++) {
            if (s->rows[r].waiting_row) continue;
            const gateway_cnode_info *i = &s->rows[r].info;
            uint64_t v[] = {i->state == CNODE_UP, i->in_flight, i->restarts, i->bytes_in,
                            i->bytes_out};
            metrics_cnode_labels(out, gauges[g].name, i, s->rows[r].instance);
            mput(out, "} %llu\n", (unsigned long long)v[g]);
        }
    }
    metrics_family(out, "nodex_cnode_waiting", "gauge",
                   "Calls held until an instance of the C-node is up (during a restart).");
    for (size_t r = 0; r < s->count; r++) {
        if (!s->rows[r].waiting_row) continue;
        mput(out, "%s", "nodex_cnode_waiting{cnode=");
        mlabel(out, s->rows[r].info.name);
        mput(out, "} %zu\n", s->rows[r].info.waiting);
    }
}

static void metrics_render_calls(mout *out, const metrics_snapshot *s) {
    metrics_family(out, "nodex_cnode_calls_total", "counter",
                   "Calls that ended, by outcome (instance=\"waiting\": ended before one was up).");
    for (size_t r = 0; r < s->count; r++)
        for (size_t o = CALL_REPLIED; o < CALL_OUTCOME_COUNT; o++) {
            metrics_cnode_labels(out, "nodex_cnode_calls_total", &s->rows[r].info,
                                 s->rows[r].instance);
            mput(out, ",outcome=\"%s\"} %llu\n", metrics_outcome_codes[o],
                 (unsigned long long)s->rows[r].info.stats.outcomes[o]);
        }
    metrics_family(out, "nodex_cnode_call_duration_seconds", "histogram",
                   "Time from a call's start to its end, whatever the outcome.");
    for (size_t r = 0; r < s->count; r++) {
        const routing_stats *st = &s->rows[r].info.stats;
        uint64_t cumulative = 0;
        for (size_t b = 0; b < ROUTING_LATENCY_BUCKETS; b++) {
            cumulative += st->latency[b];
            metrics_cnode_labels(out, "nodex_cnode_call_duration_seconds_bucket", &s->rows[r].info,
                                 s->rows[r].instance);
            if (b + 1 < ROUTING_LATENCY_BUCKETS)
                mput(out, ",le=\"%g\"} %llu\n", routing_latency_bounds_us[b] / 1e6,
                     (unsigned long long)cumulative);
            else
                mput(out, ",le=\"+Inf\"} %llu\n", (unsigned long long)cumulative);
        }
        metrics_cnode_labels(out, "nodex_cnode_call_duration_seconds_sum", &s->rows[r].info,
                             s->rows[r].instance);
        mput(out, "} %.6f\n", (double)st->latency_sum_us / 1e6);
        metrics_cnode_labels(out, "nodex_cnode_call_duration_seconds_count", &s->rows[r].info,
                             s->rows[r].instance);
        mput(out, "} %llu\n", (unsigned long long)cumulative);
    }
    metrics_family(out, "nodex_cnode_dropped_messages_total", "counter",
                   "Messages from the instance that reached no caller, by cause.");
    for (size_t r = 0; r < s->count; r++) {
        if (s->rows[r].waiting_row) continue;
        const gateway_cnode_info *i = &s->rows[r].info;
        uint64_t v[2 + DIST_CTL_KINDS];
        const char *cause[2 + DIST_CTL_KINDS];
        v[0] = i->stats.dropped_filtered;
        cause[0] = "not_the_reply";
        v[1] = i->stats.dropped_unmatched;
        cause[1] = "no_call";
        for (int k = 0; k < DIST_CTL_KINDS; k++) {
            v[2 + k] = i->ignored_controls[k];
            cause[2 + k] = dist_ignored_control_name((dist_ignored_control)k);
        }
        for (size_t c = 0; c < 2 + DIST_CTL_KINDS; c++) {
            metrics_cnode_labels(out, "nodex_cnode_dropped_messages_total", i, s->rows[r].instance);
            mput(out, ",cause=\"%s%s\"} %llu\n", c >= 2 ? "control_" : "", cause[c],
                 (unsigned long long)v[c]);
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Transports and the process */

static void metrics_render_requests(mout *out, const metrics_requests *t) {
    metrics_family(out, t->family, "counter", t->help);
    for (size_t r = 0; r < t->route_count; r++)
        for (unsigned s = 0; s < t->statuses; s++) {
            uint64_t n =
                atomic_load_explicit(&t->counts[r * t->statuses + s], memory_order_relaxed);
            if (!n) continue; /* series appear once counted: most pairs never happen */
            mput(out, "%s{%s=", t->family, t->route_label);
            mlabel(out, t->routes[r]);
            if (s + 1 < t->statuses)
                mput(out, ",%s=\"%u\"} %llu\n", t->status_label, s, (unsigned long long)n);
            else
                mput(out, ",%s=\"other\"} %llu\n", t->status_label, (unsigned long long)n);
        }
}

/* Every series, zeros too: a cut is rare, and rate() needs the series before the first. */
static void metrics_render_stream_cuts(mout *out, const metrics *m) {
    metrics_family(out, "nodex_stream_cuts_total", "counter",
                   "Streams cut off because their client fell behind, by transport and cause.");
    for (size_t t = 0; t < METRICS_TRANSPORT_COUNT; t++)
        for (size_t c = 0; c < METRICS_CUT_CAUSE_COUNT; c++)
            mput(out, "nodex_stream_cuts_total{transport=\"%s\",cause=\"%s\"} %llu\n",
                 metrics_transport_labels[t], metrics_cut_cause_labels[c],
                 (unsigned long long)atomic_load_explicit(&m->stream_cuts[t][c],
                                                          memory_order_relaxed));
}

static size_t metrics_open_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return 0;
    size_t n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) n += e->d_name[0] != '.';
    closedir(d);
    return n ? n - 1 : 0; /* not the one opendir holds */
}

static unsigned long long metrics_rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r"); /* "size resident shared ..." in pages */
    char line[256];
    bool ok = f && fgets(line, sizeof line, f);
    if (f) fclose(f);
    if (!ok) return 0;
    char *end;
    strtoull(line, &end, 10);
    unsigned long long resident = strtoull(end, NULL, 10);
    return resident * (unsigned long long)sysconf(_SC_PAGESIZE);
}

static void metrics_render_process(const metrics *m, gateway *gw, mout *out) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double up = (double)(now.tv_sec - m->start_mono.tv_sec) +
                (double)(now.tv_nsec - m->start_mono.tv_nsec) / 1e9;
    if (gw) {
        metrics_family(out, "nodex_ready", "gauge", "1 when every C-node that should run is up.");
        mput(out, "nodex_ready %d\n", gateway_is_ready(gw));
    }
    metrics_family(out, "nodex_uptime_seconds", "gauge", "Seconds since nodexd started.");
    mput(out, "nodex_uptime_seconds %.3f\n", up);
    metrics_family(out, "process_start_time_seconds", "gauge",
                   "Start time of the process since the epoch, in seconds.");
    mput(out, "process_start_time_seconds %lld\n", (long long)m->start_wall_s);
    metrics_family(out, "process_resident_memory_bytes", "gauge", "Resident memory in bytes.");
    mput(out, "process_resident_memory_bytes %llu\n", metrics_rss_bytes());
    metrics_family(out, "process_open_fds", "gauge", "Open file descriptors.");
    mput(out, "process_open_fds %zu\n", metrics_open_fds());
}

int metrics_render(const metrics *m, gateway *gw, strbuf *sb) {
    metrics_snapshot s = {0};
    if (gw && metrics_snapshot_take(gw, &s) != 0) return -1;
    mout out = {sb, false};
    if (gw) {
        metrics_render_states(&out, &s);
        metrics_render_calls(&out, &s);
        free(s.rows);
    }
    pthread_mutex_lock((pthread_mutex_t *)&m->mu);
    for (const metrics_requests *t = m->tables; t; t = t->next) metrics_render_requests(&out, t);
    pthread_mutex_unlock((pthread_mutex_t *)&m->mu);
    metrics_render_stream_cuts(&out, m);
    metrics_render_process(m, gw, &out);
    return out.failed ? -1 : 0;
}
