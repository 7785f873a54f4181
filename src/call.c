/* call: one in-flight call and the registry that matches replies to calls by their pid. */
#include "call.h"

#include <stdlib.h>
#include <string.h>

static const int call_http[] = {
#define X(id, http, code) http,
    CALL_OUTCOMES(X)
#undef X
};
static const char *const call_codes[] = {
#define X(id, http, code) code,
    CALL_OUTCOMES(X)
#undef X
};

int call_outcome_http(call_outcome o) {
    return call_http[o];
}

const char *call_outcome_code(call_outcome o) {
    return call_codes[o];
}

_Static_assert(offsetof(call, pid) < offsetof(call, key) &&
                   offsetof(call, ref) < offsetof(call, key),
               "call_init keeps exactly the fields before key: pid and ref");

void call_init(call *c) {
    memset((char *)c + offsetof(call, key), 0, sizeof *c - offsetof(call, key));
}

void call_clear(call *c) {
    free(c->reply);
    c->reply = NULL;
    free(c->outbox);
    c->outbox = NULL;
    c->outbox_len = 0;
    c->reply_len = c->reply_offset = 0;
    c->outcome = CALL_PENDING;
    c->detail[0] = '\0';
    c->cancel_requested = false;
    c->cancel_next = NULL;
    c->monitored = false;
}

static size_t call_hash(uint64_t key, size_t mask) {
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    return (size_t)key & mask;
}

int call_registry_init(call_registry *r) {
    memset(r, 0, sizeof *r);
    r->bucket_count = 1024;
    r->buckets = calloc(r->bucket_count, sizeof *r->buckets);
    return r->buckets ? 0 : -1;
}

void call_registry_destroy(call_registry *r) {
    free(r->buckets);
    free(r->heap);
    memset(r, 0, sizeof *r);
}

static int call_registry_grow(call_registry *r) {
    size_t n = r->bucket_count * 2;
    call **b = calloc(n, sizeof *b);
    if (!b) return -1;
    for (size_t i = 0; i < r->bucket_count; i++) {
        for (call *c = r->buckets[i], *next; c; c = next) {
            next = c->hash_next;
            size_t h = call_hash(c->key, n - 1);
            c->hash_next = b[h];
            b[h] = c;
        }
    }
    free(r->buckets);
    r->buckets = b;
    r->bucket_count = n;
    return 0;
}

static void heap_swap(call_registry *r, size_t a, size_t b) {
    call *t = r->heap[a];
    r->heap[a] = r->heap[b];
    r->heap[b] = t;
    r->heap[a]->heap_index = a;
    r->heap[b]->heap_index = b;
}

static void heap_up(call_registry *r, size_t i) {
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (r->heap[p]->deadline_ms <= r->heap[i]->deadline_ms) break;
        heap_swap(r, p, i);
        i = p;
    }
}

static void heap_down(call_registry *r, size_t i) {
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        if (l < r->heap_len && r->heap[l]->deadline_ms < r->heap[m]->deadline_ms) m = l;
        if (l + 1 < r->heap_len && r->heap[l + 1]->deadline_ms < r->heap[m]->deadline_ms) m = l + 1;
        if (m == i) return;
        heap_swap(r, i, m);
        i = m;
    }
}

static void call_list_unlink(call_list *owner, call *c) {
    if (c->node_prev)
        c->node_prev->node_next = c->node_next;
    else
        owner->head = c->node_next;
    if (c->node_next) c->node_next->node_prev = c->node_prev;
    owner->count--;
}

static void call_list_push(call_list *owner, call *c) {
    c->node_prev = NULL;
    c->node_next = owner->head;
    if (owner->head) owner->head->node_prev = c;
    owner->head = c;
    owner->count++;
}

int call_registry_add(call_registry *r, call_list *owner, call *c) {
    if (r->count + 1 > r->bucket_count && call_registry_grow(r) != 0) return -1;
    if (r->heap_len == r->heap_cap) {
        size_t cap = r->heap_cap ? r->heap_cap * 2 : 1024;
        call **h = realloc(r->heap, cap * sizeof *h);
        if (!h) return -1;
        r->heap = h;
        r->heap_cap = cap;
    }
    size_t b = call_hash(c->key, r->bucket_count - 1);
    c->hash_next = r->buckets[b];
    r->buckets[b] = c;
    r->count++;
    c->heap_index = r->heap_len;
    r->heap[r->heap_len++] = c;
    heap_up(r, c->heap_index);
    call_list_push(owner, c);
    c->registered = true;
    return 0;
}

call *call_registry_find(const call_registry *r, uint64_t key) {
    for (call *c = r->buckets[call_hash(key, r->bucket_count - 1)]; c; c = c->hash_next)
        if (c->key == key) return c;
    return NULL;
}

void call_list_move(call_list *from, call_list *to, call *c) {
    call_list_unlink(from, c);
    call_list_push(to, c);
}

void call_registry_remove(call_registry *r, call_list *owner, call *c) {
    if (!c->registered) return;
    call **pp = &r->buckets[call_hash(c->key, r->bucket_count - 1)];
    while (*pp != c) pp = &(*pp)->hash_next;
    *pp = c->hash_next;
    r->count--;
    size_t i = c->heap_index;
    r->heap_len--;
    if (i != r->heap_len) {
        r->heap[i] = r->heap[r->heap_len];
        r->heap[i]->heap_index = i;
        heap_down(r, i);
        heap_up(r, i);
    }
    call_list_unlink(owner, c);
    c->hash_next = c->node_prev = c->node_next = NULL;
    c->registered = false;
}

int64_t call_registry_next_deadline(const call_registry *r) {
    return r->heap_len ? r->heap[0]->deadline_ms : INT64_MAX;
}

call *call_registry_expired(const call_registry *r, int64_t now_ms) {
    return r->heap_len && r->heap[0]->deadline_ms <= now_ms ? r->heap[0] : NULL;
}
