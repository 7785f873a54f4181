/* routing: in-flight calls by pid, replies matched to them, and every way a call ends. */
#include "routing.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "strbuf.h"
#include "term.h"

struct routing {
    pthread_mutex_t *mu; /* the creator's lock: guards everything below and the owners */
    char node_name[MAXNODELEN * 4];
    call_registry registry;
    call *cancels;            /* calls routing_cancel took, not yet ended */
    uint64_t dropped_unknown; /* messages to pids of no call, on connections of no owner */
    void (*monitor_end)(call *c, routing_owner *o, void *ctx);
    void *monitor_end_ctx;
};

/* ------------------------------------------------------------------------------------------ */
/* Matching */

long routing_match_tagged(const char *msg, size_t len, const char *tag) {
    if (len < 4 || (unsigned char)msg[0] != ERL_SMALL_TUPLE_EXT || msg[1] != 2) return -1;
    size_t i = 2;
    unsigned char t = (unsigned char)msg[i];
    size_t alen, hdr;
    if (t == ERL_SMALL_ATOM_UTF8_EXT || t == ERL_SMALL_ATOM_EXT) {
        alen = (unsigned char)msg[i + 1];
        hdr = 2;
    } else if ((t == ERL_ATOM_UTF8_EXT || t == ERL_ATOM_EXT) && i + 3 <= len) {
        alen = ((size_t)(unsigned char)msg[i + 1] << 8) | (unsigned char)msg[i + 2];
        hdr = 3;
    } else {
        return -1;
    }
    if (i + hdr + alen >= len) return -1;
    if (strlen(tag) != alen || memcmp(msg + i + hdr, tag, alen) != 0) return -1;
    return (long)(i + hdr + alen);
}

long routing_match_ref(const char *msg, size_t len, const erlang_ref *ref) {
    if (len < 4 || (unsigned char)msg[0] != ERL_SMALL_TUPLE_EXT || msg[1] != 2) return -1;
    if ((unsigned char)msg[2] != ERL_NEWER_REFERENCE_EXT &&
        (unsigned char)msg[2] != ERL_NEW_REFERENCE_EXT)
        return -1;
    /* NEWER_REFERENCE_EXT: tag, 2-byte len, node atom, 4-byte creation, len*4 bytes */
    if (len < 8) return -1;
    size_t n = ((size_t)(unsigned char)msg[3] << 8) | (unsigned char)msg[4];
    size_t i = 5;
    unsigned char t = (unsigned char)msg[i];
    size_t alen, hdr;
    if (t == ERL_SMALL_ATOM_UTF8_EXT || t == ERL_SMALL_ATOM_EXT) { /* len >= 8: in bounds */
        alen = (unsigned char)msg[i + 1];
        hdr = 2;
    } else if (t == ERL_ATOM_UTF8_EXT || t == ERL_ATOM_EXT) {
        alen = ((size_t)(unsigned char)msg[i + 1] << 8) | (unsigned char)msg[i + 2];
        hdr = 3;
    } else {
        return -1;
    }
    size_t cre = (unsigned char)msg[2] == ERL_NEWER_REFERENCE_EXT ? 4 : 1;
    size_t end = i + hdr + alen + cre + 4 * n;
    if (n > 5 || end >= len) return -1;
    int idx = 2;
    erlang_ref got;
    if (ei_decode_ref(msg, &idx, &got) < 0 || (size_t)idx != end) return -1;
    if (got.len != ref->len || strcmp(got.node, ref->node) != 0) return -1;
    for (int k = 0; k < got.len; k++)
        if (got.n[k] != ref->n[k]) return -1;
    return (long)end;
}

long routing_match_reply(const routing_owner *o, const call *c, const char *msg, size_t len) {
    const config_cnode *cfg = o->cfg;
    if (cfg->protocol == CNODE_PROTOCOL_GEN_CALL) return routing_match_ref(msg, len, &c->ref);
    if (cfg->reply_filter == REPLY_FILTER_ANY) return 0;
    if (cfg->reply_filter == REPLY_FILTER_TAG)
        return routing_match_tagged(msg, len, cfg->reply_tag);
    return routing_match_tagged(msg, len, o->node);
}

int routing_net_kernel_reply(const char *msg, size_t len, erlang_pid *to, char *out, size_t cap) {
    const char *b = msg;
    int i = 0, arity, tag_start, tag_end;
    term_error err;
    if (term_validate(b, len, &i, &term_limits_default, &err) != 0) return -1;
    /* Validated: ei may decode it now without reading out of bounds. */
    char atom[MAXATOMLEN_UTF8];
    i = 0;
    if (ei_decode_tuple_header(b, &i, &arity) < 0 || arity != 3 ||
        ei_decode_atom(b, &i, atom) < 0 || strcmp(atom, "$gen_call") != 0 ||
        ei_decode_tuple_header(b, &i, &arity) < 0 || arity != 2 || ei_decode_pid(b, &i, to) < 0)
        return -1;
    tag_start = i;
    if (ei_skip_term(b, &i) < 0) return -1;
    tag_end = i;
    if (ei_decode_tuple_header(b, &i, &arity) < 0 || arity != 2 ||
        ei_decode_atom(b, &i, atom) < 0 || strcmp(atom, "is_auth") != 0)
        return -1;
    int r = 0;
    if (cap < 16 || tag_end - tag_start > (int)cap - 16) return -1;
    ei_encode_tuple_header(out, &r, 2);
    memcpy(out + r, b + tag_start, (size_t)(tag_end - tag_start));
    r += tag_end - tag_start;
    ei_encode_atom(out, &r, "yes");
    return r;
}

void routing_make_ref(const erlang_pid *pid, uint32_t counter, erlang_ref *out) {
    memset(out, 0, sizeof *out);
    snprintf(out->node, sizeof out->node, "%s", pid->node);
    out->creation = pid->creation;
    out->len = 3;
    out->n[0] = pid->num & 0x3ffff; /* erts keeps 18 bits of a reference's first word */
    out->n[1] = pid->serial;
    out->n[2] = counter;
}

/* The pid key a routing_make_ref reference stands for. */
static uint64_t routing_ref_key(const erlang_ref *ref) {
    return ref->len >= 2 ? ((uint64_t)ref->n[1] << 32) | ref->n[0] : UINT64_MAX;
}

static bool routing_ref_equal(const erlang_ref *a, const erlang_ref *b) {
    if (a->len != b->len || a->creation != b->creation || strcmp(a->node, b->node) != 0)
        return false;
    for (int k = 0; k < a->len; k++)
        if (a->n[k] != b->n[k]) return false;
    return true;
}

/* ------------------------------------------------------------------------------------------ */
/* The registry */

routing *routing_new(pthread_mutex_t *lock, const char *node_name) {
    routing *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    if (call_registry_init(&r->registry) != 0) {
        free(r);
        return NULL;
    }
    r->mu = lock;
    snprintf(r->node_name, sizeof r->node_name, "%s", node_name);
    return r;
}

void routing_free(routing *r) {
    if (!r) return;
    call_registry_destroy(&r->registry);
    free(r);
}

void routing_set_monitor_end(routing *r, void (*fn)(call *c, routing_owner *o, void *ctx),
                             void *ctx) {
    r->monitor_end = fn;
    r->monitor_end_ctx = ctx;
}

void routing_owner_init(routing_owner *o, const config_cnode *cfg, const char *node) {
    memset(o, 0, sizeof *o);
    o->cfg = cfg;
    o->node = node;
}

size_t routing_owner_in_flight(const routing_owner *o) {
    return o->calls.count;
}

uint64_t routing_owner_calls_total(const routing_owner *o) {
    return o->calls_total;
}

uint64_t routing_owner_dropped(const routing_owner *o) {
    return o->stats.dropped_filtered + o->stats.dropped_unmatched;
}

const routing_stats *routing_owner_stats(const routing_owner *o) {
    return &o->stats;
}

const uint32_t routing_latency_bounds_us[] = {
#define X(us) us,
    ROUTING_LATENCY_BOUNDS_US(X)
#undef X
};

size_t routing_latency_bucket(int64_t us) {
    size_t i = 0;
    while (i < ROUTING_LATENCY_BUCKETS - 1 && us > (int64_t)routing_latency_bounds_us[i]) i++;
    return i;
}

void routing_stats_add(routing_stats *into, const routing_stats *from) {
    for (size_t i = 0; i < CALL_OUTCOME_COUNT; i++) into->outcomes[i] += from->outcomes[i];
    for (size_t i = 0; i < ROUTING_LATENCY_BUCKETS; i++) into->latency[i] += from->latency[i];
    into->latency_sum_us += from->latency_sum_us;
    into->dropped_filtered += from->dropped_filtered;
    into->dropped_unmatched += from->dropped_unmatched;
}

size_t routing_owner_outboxes_locked(const routing_owner *o, call ***out) {
    size_t queued = 0, n = 0;
    *out = NULL;
    for (call *c = o->calls.head; c; c = c->node_next) queued += c->outbox != NULL;
    if (!queued || !(*out = malloc(queued * sizeof **out))) return 0;
    for (call *c = o->calls.head; c; c = c->node_next)
        if (c->outbox) (*out)[n++] = c;
    return n;
}

size_t routing_owner_take_locked(routing_owner *from, routing_owner *to, size_t max, call ***out) {
    size_t n = from->calls.count < max ? from->calls.count : max;
    *out = NULL;
    if (!n || !(*out = malloc(n * sizeof **out))) return 0;
    /* The list holds the newest first: its last n entries are the oldest n. */
    call *c = from->calls.head;
    for (size_t skip = from->calls.count - n; skip > 0; skip--) c = c->node_next;
    for (size_t k = n; k > 0; k--) {
        call *next = c->node_next;
        (*out)[k - 1] = c;
        call_list_move(&from->calls, &to->calls, c);
        c->cnode = to;
        to->calls_total++;
        c = next;
    }
    return n;
}

int routing_register_locked(routing *r, routing_owner *o, call *c) {
    c->cnode = o;
    c->started_us = dist_now_us();
    if (call_registry_add(&r->registry, &o->calls, c) != 0) return -1;
    o->calls_total++;
    return 0;
}

int64_t routing_next_deadline_locked(const routing *r) {
    return call_registry_next_deadline(&r->registry);
}

size_t routing_in_flight_locked(const routing *r) {
    return r->registry.count;
}

uint64_t routing_dropped_unknown_locked(const routing *r) {
    return r->dropped_unknown;
}

/* ------------------------------------------------------------------------------------------ */
/* Ending calls (never under the lock: on_done may take the frontend's locks) */

static void routing_complete(call *c, call_outcome outcome, const char *detail) {
    c->outcome = outcome;
    if (detail) { /* cut to fit: a detail is a human-readable hint */
        size_t n = strnlen(detail, sizeof c->detail - 1);
        memcpy(c->detail, detail, n);
        c->detail[n] = '\0';
    }
    c->on_done(c, c->ctx);
}

/* Unregisters a call that ends with `outcome` (lock held; counted in its owner's stats), and
 * drops it from the cancel list if it is there: once unregistered, the frontend may free it as
 * soon as on_done has run. */
static void routing_unregister(routing *r, call *c, call_outcome outcome) {
    routing_owner *o = c->cnode;
    call_registry_remove(&r->registry, &o->calls, c);
    int64_t us = dist_now_us() - c->started_us;
    o->stats.outcomes[outcome]++;
    o->stats.latency[routing_latency_bucket(us)]++;
    o->stats.latency_sum_us += (uint64_t)(us > 0 ? us : 0);
    if (!c->cancel_requested) return;
    for (call **pp = &r->cancels; *pp; pp = &(*pp)->cancel_next) {
        if (*pp == c) {
            *pp = c->cancel_next;
            break;
        }
    }
    c->cancel_requested = false;
    c->cancel_next = NULL;
}

/* Completes a chain of unregistered calls (linked by hash_next) outside the lock. */
static void routing_complete_chain(call *chain, call_outcome outcome, const char *detail) {
    while (chain) {
        call *next = chain->hash_next;
        chain->hash_next = NULL;
        routing_complete(chain, outcome, detail);
        chain = next;
    }
}

/* Ends a call that leaves with its monitor open: the owner demonitors first. */
static void routing_end_monitor(routing *r, call *c) {
    if (!c->monitored) return;
    c->monitored = false;
    if (r->monitor_end) r->monitor_end(c, c->cnode, r->monitor_end_ctx);
}

/* A monitor exit's reason, as text, into the call's detail. */
static void routing_monitor_exit_detail(call *c, const dist_message *m) {
    strbuf reason = {0};
    term_error err;
    int i = 0;
    const char *what = "";
    if (term_to_text(m->msg, m->msg_len, &i, &term_limits_default, &reason, &err) == 0)
        what = reason.data;
    routing_owner *o = c->cnode;
    snprintf(c->detail, sizeof c->detail, "the target process %s on %s is gone: %.96s",
             o->cfg->registered_name ? o->cfg->registered_name : "", o->node, what);
    strbuf_free(&reason);
}

/* The call `m` is for, if it came the way the call went out (lock held). */
static call *routing_find_for(routing *r, routing_owner *conn_owner, const dist_message *m) {
    call *c = NULL;
    if (m->to_alias) {
        c = call_registry_find(&r->registry, routing_ref_key(&m->ref));
        routing_owner *o = c ? c->cnode : NULL;
        if (c &&
            (o->cfg->protocol != CNODE_PROTOCOL_GEN_CALL || !routing_ref_equal(&m->ref, &c->ref)))
            c = NULL;
    } else if (strcmp(m->to.node, r->node_name) == 0) {
        c = call_registry_find(&r->registry, dist_pid_key(&m->to));
        if (c && c->pid.creation != m->to.creation) c = NULL; /* a pid of an earlier run */
    }
    /* Only the connection a call went out on may answer it: no peer completes another's. */
    return c && c->cnode == conn_owner ? c : NULL;
}

void routing_on_message(routing *r, routing_owner *conn_owner, const dist_message *m) {
    pthread_mutex_lock(r->mu);
    call *c = routing_find_for(r, conn_owner, m);
    long offset = -1;
    bool monitor_exit = false;
    if (c && m->monitor_exit) {
        routing_owner *owner = c->cnode;
        monitor_exit = owner->cfg->protocol == CNODE_PROTOCOL_GEN_CALL && c->monitored &&
                       routing_ref_equal(&m->ref, &c->ref);
        if (monitor_exit)
            routing_unregister(r, c, CALL_UNAVAILABLE);
        else
            owner->stats.dropped_filtered++;
    } else if (c) {
        routing_owner *owner = c->cnode;
        offset = routing_match_reply(owner, c, m->msg, m->msg_len);
        if (offset >= 0)
            routing_unregister(r, c, CALL_REPLIED);
        else if (!c->on_message)
            owner->stats.dropped_filtered++;
    } else if (conn_owner) {
        conn_owner->stats.dropped_unmatched++;
    } else {
        r->dropped_unknown++;
    }
    pthread_mutex_unlock(r->mu);
    if (!c) return;
    if (m->monitor_exit) {
        if (!monitor_exit) return;
        c->monitored = false; /* the peer ended the monitor itself */
        routing_monitor_exit_detail(c, m);
        c->outcome = CALL_UNAVAILABLE;
        c->on_done(c, c->ctx);
        return;
    }
    /* A streaming call's other messages: passed on while the call stays registered (only this
     * thread unregisters calls, so it is still valid after the unlock). */
    if (offset < 0) {
        if (c->on_message) c->on_message(c, m->msg, m->msg_len, c->ctx);
        return;
    }
    routing_end_monitor(r, c);
    c->reply = malloc(m->msg_len ? m->msg_len : 1);
    if (!c->reply) {
        routing_complete(c, CALL_UNAVAILABLE, "out of memory storing the reply");
        return;
    }
    memcpy(c->reply, m->msg, m->msg_len);
    c->reply_len = m->msg_len;
    c->reply_offset = (size_t)offset;
    routing_complete(c, CALL_REPLIED, NULL);
}

void routing_expire(routing *r, int64_t now_ms) {
    call *expired = NULL, *unsent = NULL;
    pthread_mutex_lock(r->mu);
    call *c;
    while ((c = call_registry_expired(&r->registry, now_ms)) != NULL) {
        routing_unregister(r, c, CALL_TIMEOUT);
        call **chain = c->outbox ? &unsent : &expired;
        c->hash_next = *chain;
        *chain = c;
    }
    pthread_mutex_unlock(r->mu);
    for (c = expired; c; c = c->hash_next) routing_end_monitor(r, c);
    routing_complete_chain(expired, CALL_TIMEOUT, "no reply within the call's timeout");
    routing_complete_chain(unsent, CALL_TIMEOUT, ROUTING_NOT_SENT);
}

bool routing_cancel(routing *r, call *c) {
    pthread_mutex_lock(r->mu);
    bool taken = c->registered && !c->cancel_requested;
    if (taken) {
        c->cancel_requested = true;
        c->cancel_next = r->cancels;
        r->cancels = c;
    }
    pthread_mutex_unlock(r->mu);
    return taken;
}

void routing_run_cancels(routing *r) {
    call *cancelled = NULL;
    pthread_mutex_lock(r->mu);
    while (r->cancels) {
        call *c = r->cancels;
        routing_unregister(r, c, CALL_CANCELLED);
        c->hash_next = cancelled;
        cancelled = c;
    }
    pthread_mutex_unlock(r->mu);
    for (call *c = cancelled; c; c = c->hash_next) routing_end_monitor(r, c);
    routing_complete_chain(cancelled, CALL_CANCELLED, "the caller cancelled the call");
}

void routing_fail_owner(routing *r, routing_owner *o, call_outcome outcome, const char *detail) {
    call *failed = NULL;
    pthread_mutex_lock(r->mu);
    while (o->calls.head) {
        call *c = o->calls.head;
        routing_unregister(r, c, outcome);
        c->hash_next = failed;
        failed = c;
    }
    pthread_mutex_unlock(r->mu);
    for (call *c = failed; c; c = c->hash_next) c->monitored = false; /* gone with the link */
    routing_complete_chain(failed, outcome, detail);
}
