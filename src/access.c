/* access: request ids, W3C trace context and the access log line, shared by HTTP and gRPC. */
#include "access.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "log.h"

static pthread_once_t access_once = PTHREAD_ONCE_INIT;
static uint64_t access_prefix; /* random per process: ids of two runs never collide */
static atomic_uint_fast64_t access_counter;

static void access_seed(void) {
    if (getrandom(&access_prefix, sizeof access_prefix, GRND_NONBLOCK) != sizeof access_prefix) {
        struct timespec ts; /* no entropy yet (early boot): the clock still differs per run */
        clock_gettime(CLOCK_REALTIME, &ts);
        access_prefix = ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)ts.tv_nsec;
    }
}

bool access_request_id_valid(const char *s, size_t len) {
    if (!s || len == 0 || len > ACCESS_REQUEST_ID_MAX) return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c >= 0x7f || c == '"' || c == '\\') return false;
    }
    return true;
}

void access_request_id_new(char out[ACCESS_REQUEST_ID_GENERATED + 1]) {
    pthread_once(&access_once, access_seed);
    uint64_t n = atomic_fetch_add_explicit(&access_counter, 1, memory_order_relaxed);
    static const char hex[] = "0123456789abcdef";
    const uint64_t words[2] = {access_prefix, n};
    for (int w = 0; w < 2; w++)
        for (int i = 0; i < 16; i++) out[w * 16 + i] = hex[(words[w] >> (60 - 4 * i)) & 15];
    out[ACCESS_REQUEST_ID_GENERATED] = '\0';
}

static bool access_lower_hex(const char *s, size_t n, bool *all_zero) {
    *all_zero = true;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
        if (c != '0') *all_zero = false;
    }
    return true;
}

bool access_traceparent_valid(const char *s, size_t len) {
    bool zero;
    if (!s || len < 55 || s[2] != '-' || s[35] != '-' || s[52] != '-') return false;
    if (!access_lower_hex(s, 2, &zero) || (s[0] == 'f' && s[1] == 'f')) return false;
    if (!access_lower_hex(s + 3, 32, &zero) || zero) return false;
    if (!access_lower_hex(s + 36, 16, &zero) || zero) return false;
    if (!access_lower_hex(s + 53, 2, &zero)) return false;
    if (len == 55) return true;
    /* version 00 has exactly 55 bytes; a later version may carry more after a dash */
    return !(s[0] == '0' && s[1] == '0') && s[55] == '-';
}

void access_ids_from(access_ids *ids, const char *request_id, size_t request_id_len,
                     const char *traceparent, size_t traceparent_len, const char *tracestate,
                     size_t tracestate_len) {
    /* each field is written, not the whole struct zeroed: this runs for every request */
    ids->traceparent[0] = ids->tracestate[0] = '\0';
    ids->request_id_generated = false;
    if (access_request_id_valid(request_id, request_id_len)) {
        memcpy(ids->request_id, request_id, request_id_len);
        ids->request_id[request_id_len] = '\0';
    } else {
        access_request_id_new(ids->request_id);
        ids->request_id_generated = true;
    }
    if (!access_traceparent_valid(traceparent, traceparent_len)) return;
    memcpy(ids->traceparent, traceparent, 55); /* the fields this version defines */
    ids->traceparent[55] = '\0';
    if (!tracestate) return;
    size_t n = tracestate_len;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)tracestate[i] < ' ' || (unsigned char)tracestate[i] >= 0x7f) return;
    if (n > ACCESS_TRACESTATE_MAX) { /* keep whole members only */
        n = ACCESS_TRACESTATE_MAX;
        while (n > 0 && tracestate[n] != ',') n--;
    }
    memcpy(ids->tracestate, tracestate, n);
    ids->tracestate[n] = '\0';
}

void access_log(const access_entry *e) {
    if (!log_enabled(LOG_INFO)) return;
    const access_ids *ids = e->ids;
    log_field f[] = {
        LOG_STR("transport", e->transport),
        LOG_STR("method", e->method),
        LOG_STR("route", e->route),
        LOG_STR("target", e->target && *e->target ? e->target : NULL),
        LOG_NUM("status", e->status),
        LOG_STR("code", e->code),
        LOG_NUM("duration_us", e->duration_us),
        LOG_NUM("bytes_in", e->bytes_in),
        LOG_NUM("bytes_out", e->bytes_out),
        LOG_STR("peer", e->peer),
        LOG_STR("principal", e->principal),
        LOG_STR("request_id", ids ? ids->request_id : NULL),
        LOG_STR("traceparent", ids && ids->traceparent[0] ? ids->traceparent : NULL),
        LOG_STR("tracestate", ids && ids->tracestate[0] ? ids->tracestate : NULL),
    };
    log_event(LOG_INFO, "access", f, sizeof f / sizeof f[0]);
}
