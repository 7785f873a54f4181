/* test_call: registry hash (add/find/remove, growth), deadline heap order, removal from the middle,
 * per-owner lists, call_clear, call_init and the outcome tables. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "call.h"

/* Fake pids: only num/serial matter for the key. */
static void make_call(call *c, uint32_t num, uint32_t serial, int64_t deadline) {
    memset(c, 0, sizeof *c);
    c->pid.num = num;
    c->pid.serial = serial;
    c->key = ((uint64_t)serial << 32) | num;
    c->deadline_ms = deadline;
}

/* Checks the min-heap property and the back-indices. */
static void check_heap(const call_registry *r) {
    for (size_t i = 0; i < r->heap_len; i++) {
        assert_int_equal(r->heap[i]->heap_index, i);
        assert_true(r->heap[i]->registered);
        if (i > 0) assert_true(r->heap[(i - 1) / 2]->deadline_ms <= r->heap[i]->deadline_ms);
    }
}

static void check_list(const call_list *l) {
    size_t n = 0;
    const call *prev = NULL;
    for (const call *c = l->head; c; c = c->node_next) {
        assert_ptr_equal(c->node_prev, prev);
        prev = c;
        n++;
    }
    assert_int_equal(n, l->count);
}

static void test_outcome_tables_match_the_x_macro(void **state) {
    (void)state;
    static const struct {
        call_outcome o;
        int http;
        const char *code;
    } t[] = {
#define X(id, http, code) {id, http, code},
        CALL_OUTCOMES(X)
#undef X
    };
    assert_int_equal(sizeof t / sizeof t[0], 6);
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        assert_int_equal(call_outcome_http(t[i].o), t[i].http);
        assert_string_equal(call_outcome_code(t[i].o), t[i].code);
    }
    assert_int_equal(call_outcome_http(CALL_REPLIED), 200);
    assert_int_equal(call_outcome_http(CALL_TIMEOUT), 504);
    assert_int_equal(call_outcome_http(CALL_CANCELLED), 499);
    assert_string_equal(call_outcome_code(CALL_CANCELLED), "cancelled");
    assert_string_equal(call_outcome_code(CALL_TIMEOUT), "timeout");
    assert_int_equal(call_outcome_http(CALL_UNAVAILABLE), 503);
    assert_string_equal(call_outcome_code(CALL_SHUTDOWN), "shutting_down");
}

static void test_call_clear_frees_reply_and_keeps_identity(void **state) {
    (void)state;
    call c;
    make_call(&c, 7, 9, 100);
    int ctx;
    c.ctx = &ctx;
    c.outcome = CALL_REPLIED;
    c.reply = malloc(16);
    assert_non_null(c.reply);
    c.reply_len = 16;
    c.reply_offset = 3;
    snprintf(c.detail, sizeof c.detail, "boom");
    call_clear(&c);
    assert_null(c.reply);
    assert_int_equal(c.reply_len, 0);
    assert_int_equal(c.reply_offset, 0);
    assert_int_equal(c.outcome, CALL_PENDING);
    assert_string_equal(c.detail, "");
    assert_ptr_equal(c.ctx, &ctx);
    assert_int_equal(c.pid.num, 7);
    call_clear(&c); /* idempotent */
}

/* call_init zeroes everything after the pid and reference and leaves those two alone. */
static void test_call_init_zeroes_all_but_pid_and_ref(void **state) {
    (void)state;
    call *c = malloc(sizeof *c);
    assert_non_null(c);
    memset(c, 0xA5, sizeof *c);
    call_init(c);
    const unsigned char *tail = (const unsigned char *)c + offsetof(call, key);
    for (size_t i = 0; i < sizeof *c - offsetof(call, key); i++) assert_int_equal(tail[i], 0);
    assert_int_equal((unsigned char)c->pid.node[0], 0xA5);
    assert_int_equal((unsigned char)c->ref.node[0], 0xA5);
    assert_null(c->reply);
    assert_int_equal(c->outcome, CALL_PENDING);
    assert_false(c->registered);
    free(c);
}

static void test_empty_registry_has_no_deadline_and_finds_nothing(void **state) {
    (void)state;
    call_registry r;
    assert_int_equal(call_registry_init(&r), 0);
    assert_int_equal(r.count, 0);
    assert_null(call_registry_find(&r, 0));
    assert_null(call_registry_find(&r, 12345));
    assert_int_equal(call_registry_next_deadline(&r), INT64_MAX);
    assert_null(call_registry_expired(&r, INT64_MAX));
    call_registry_destroy(&r);
}

static void test_add_find_remove_single_call(void **state) {
    (void)state;
    call_registry r;
    call_list owner = {0};
    assert_int_equal(call_registry_init(&r), 0);
    call c;
    make_call(&c, 1, 2, 500);
    assert_int_equal(call_registry_add(&r, &owner, &c), 0);
    assert_true(c.registered);
    assert_int_equal(r.count, 1);
    assert_ptr_equal(call_registry_find(&r, c.key), &c);
    assert_null(call_registry_find(&r, ((uint64_t)1 << 32) | 2)); /* swapped num/serial */
    assert_int_equal(call_registry_next_deadline(&r), 500);
    assert_null(call_registry_expired(&r, 499));
    assert_ptr_equal(call_registry_expired(&r, 500), &c);
    assert_ptr_equal(owner.head, &c);
    assert_int_equal(owner.count, 1);
    call_registry_remove(&r, &owner, &c);
    assert_false(c.registered);
    assert_int_equal(r.count, 0);
    assert_null(call_registry_find(&r, c.key));
    assert_int_equal(call_registry_next_deadline(&r), INT64_MAX);
    assert_null(owner.head);
    assert_int_equal(owner.count, 0);
    call_registry_remove(&r, &owner, &c); /* removing an unregistered call is a no-op */
    assert_int_equal(r.count, 0);
    assert_int_equal(owner.count, 0);
    call_registry_destroy(&r);
}

static void test_keys_colliding_in_a_bucket_are_all_found(void **state) {
    (void)state;
    /* Keys that differ only above the bucket mask bits still need chaining to work: use many
     * keys so that collisions are certain (pigeonhole: 3000 keys, 1024 or 2048 buckets). */
    call_registry r;
    call_list owner = {0};
    assert_int_equal(call_registry_init(&r), 0);
    enum { N = 3000 };
    call *cs = calloc(N, sizeof *cs);
    assert_non_null(cs);
    for (uint32_t i = 0; i < N; i++) {
        make_call(&cs[i], i * 1024u, i, 1000 + i);
        assert_int_equal(call_registry_add(&r, &owner, &cs[i]), 0);
    }
    for (uint32_t i = 0; i < N; i++) assert_ptr_equal(call_registry_find(&r, cs[i].key), &cs[i]);
    /* remove every other one: the rest are still found */
    for (uint32_t i = 0; i < N; i += 2) call_registry_remove(&r, &owner, &cs[i]);
    for (uint32_t i = 0; i < N; i++) {
        if (i % 2)
            assert_ptr_equal(call_registry_find(&r, cs[i].key), &cs[i]);
        else
            assert_null(call_registry_find(&r, cs[i].key));
    }
    check_heap(&r);
    check_list(&owner);
    call_registry_destroy(&r);
    free(cs);
}

static void test_hash_grows_past_1024_entries(void **state) {
    (void)state;
    call_registry r;
    call_list owner = {0};
    assert_int_equal(call_registry_init(&r), 0);
    size_t initial_buckets = r.bucket_count;
    enum { N = 5000 };
    call *cs = calloc(N, sizeof *cs);
    assert_non_null(cs);
    for (uint32_t i = 0; i < N; i++) {
        make_call(&cs[i], i + 1, (i * 7u) % 13u, (int64_t)(N - i));
        assert_int_equal(call_registry_add(&r, &owner, &cs[i]), 0);
        assert_int_equal(r.count, i + 1);
    }
    assert_true(r.bucket_count > initial_buckets);
    assert_true(r.bucket_count >= N);
    assert_int_equal(r.bucket_count & (r.bucket_count - 1), 0); /* power of two */
    assert_int_equal(r.heap_len, N);
    for (uint32_t i = 0; i < N; i++) assert_ptr_equal(call_registry_find(&r, cs[i].key), &cs[i]);
    assert_null(call_registry_find(&r, ((uint64_t)99 << 32) | 1));
    check_heap(&r);
    assert_int_equal(call_registry_next_deadline(&r), 1);
    assert_int_equal(owner.count, N);
    check_list(&owner);
    for (uint32_t i = 0; i < N; i++) call_registry_remove(&r, &owner, &cs[i]);
    assert_int_equal(r.count, 0);
    assert_int_equal(r.heap_len, 0);
    assert_int_equal(owner.count, 0);
    assert_null(owner.head);
    call_registry_destroy(&r);
    free(cs);
}

static void test_expired_pops_random_deadlines_in_order(void **state) {
    (void)state;
    srand(12345);
    call_registry r;
    call_list owner = {0};
    assert_int_equal(call_registry_init(&r), 0);
    enum { N = 3000 };
    call *cs = calloc(N, sizeof *cs);
    assert_non_null(cs);
    for (uint32_t i = 0; i < N; i++) {
        make_call(&cs[i], i, 0, rand() % 1000); /* many equal deadlines too */
        assert_int_equal(call_registry_add(&r, &owner, &cs[i]), 0);
    }
    check_heap(&r);
    /* Advance a clock; pop everything expired at each step. */
    int64_t last = -1;
    size_t popped = 0;
    for (int64_t now = -1; now <= 1000; now += 7) {
        call *c;
        while ((c = call_registry_expired(&r, now)) != NULL) {
            assert_true(c->deadline_ms <= now);
            assert_true(c->deadline_ms >= last);
            assert_int_equal(call_registry_next_deadline(&r), c->deadline_ms);
            last = c->deadline_ms;
            call_registry_remove(&r, &owner, c);
            popped++;
        }
        if (r.heap_len) assert_true(call_registry_next_deadline(&r) > now);
    }
    assert_int_equal(popped, N);
    assert_int_equal(call_registry_next_deadline(&r), INT64_MAX);
    call_registry_destroy(&r);
    free(cs);
}

static void test_removal_from_middle_keeps_heap_valid(void **state) {
    (void)state;
    srand(777);
    call_registry r;
    call_list owners[3] = {{0}};
    assert_int_equal(call_registry_init(&r), 0);
    enum { N = 2000 };
    call *cs = calloc(N, sizeof *cs);
    call_list **own = calloc(N, sizeof *own);
    assert_non_null(cs);
    assert_non_null(own);
    uint32_t next_num = 1;
    /* Random interleaving of adds and removals of random registered calls. */
    for (int step = 0; step < 20000; step++) {
        size_t i = (size_t)rand() % N;
        if (!cs[i].registered) {
            make_call(&cs[i], next_num++, 0, rand() % 500);
            own[i] = &owners[rand() % 3];
            assert_int_equal(call_registry_add(&r, own[i], &cs[i]), 0);
        } else {
            call_registry_remove(&r, own[i], &cs[i]);
            assert_null(call_registry_find(&r, cs[i].key));
        }
        if (step % 97 == 0) check_heap(&r);
        /* brute-force minimum vs the heap top */
        int64_t min = INT64_MAX;
        size_t count = 0;
        for (size_t k = 0; k < N; k++) {
            if (!cs[k].registered) continue;
            count++;
            if (cs[k].deadline_ms < min) min = cs[k].deadline_ms;
        }
        assert_int_equal(r.count, count);
        assert_int_equal(r.heap_len, count);
        assert_int_equal(call_registry_next_deadline(&r), min);
    }
    check_heap(&r);
    size_t total = 0;
    for (int k = 0; k < 3; k++) {
        check_list(&owners[k]);
        total += owners[k].count;
    }
    assert_int_equal(total, r.count);
    call_registry_destroy(&r);
    free(cs);
    free(own);
}

static int list_contains(const call_list *l, const call *c) {
    for (const call *x = l->head; x; x = x->node_next)
        if (x == c) return 1;
    return 0;
}

static void test_per_owner_lists_and_counts(void **state) {
    (void)state;
    call_registry r;
    call_list a = {0}, b = {0};
    assert_int_equal(call_registry_init(&r), 0);
    call cs[10];
    for (uint32_t i = 0; i < 10; i++) {
        make_call(&cs[i], i + 1, 0, 100 + i);
        assert_int_equal(call_registry_add(&r, i % 2 ? &b : &a, &cs[i]), 0);
    }
    assert_int_equal(a.count, 5);
    assert_int_equal(b.count, 5);
    check_list(&a);
    check_list(&b);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(list_contains(i % 2 ? &b : &a, &cs[i]), 1);
        assert_int_equal(list_contains(i % 2 ? &a : &b, &cs[i]), 0);
    }
    /* remove head, middle and tail of a */
    call_registry_remove(&r, &a, a.head);
    assert_int_equal(a.count, 4);
    check_list(&a);
    call_registry_remove(&r, &a, &cs[4]);
    check_list(&a);
    call *tail = a.head;
    while (tail->node_next) tail = tail->node_next;
    call_registry_remove(&r, &a, tail);
    check_list(&a);
    assert_int_equal(a.count, 2);
    assert_int_equal(b.count, 5);
    assert_int_equal(r.count, 7);
    /* drain owner a the way a dying C-node is drained: always remove the head */
    while (a.head) call_registry_remove(&r, &a, a.head);
    assert_int_equal(a.count, 0);
    assert_int_equal(r.count, 5);
    for (int i = 1; i < 10; i += 2) assert_ptr_equal(call_registry_find(&r, cs[i].key), &cs[i]);
    check_heap(&r);
    assert_int_equal(call_registry_next_deadline(&r), 101);
    while (b.head) call_registry_remove(&r, &b, b.head);
    assert_int_equal(r.count, 0);
    call_registry_destroy(&r);
}

static void test_registry_is_reusable_after_destroy_and_init(void **state) {
    (void)state;
    call_registry r;
    call_list owner = {0};
    assert_int_equal(call_registry_init(&r), 0);
    call c;
    make_call(&c, 5, 5, 5);
    assert_int_equal(call_registry_add(&r, &owner, &c), 0);
    call_registry_remove(&r, &owner, &c);
    call_registry_destroy(&r);
    assert_int_equal(call_registry_init(&r), 0);
    assert_int_equal(call_registry_add(&r, &owner, &c), 0);
    assert_ptr_equal(call_registry_find(&r, c.key), &c);
    call_registry_remove(&r, &owner, &c);
    call_registry_destroy(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outcome_tables_match_the_x_macro),
        cmocka_unit_test(test_call_clear_frees_reply_and_keeps_identity),
        cmocka_unit_test(test_call_init_zeroes_all_but_pid_and_ref),
        cmocka_unit_test(test_empty_registry_has_no_deadline_and_finds_nothing),
        cmocka_unit_test(test_add_find_remove_single_call),
        cmocka_unit_test(test_keys_colliding_in_a_bucket_are_all_found),
        cmocka_unit_test(test_hash_grows_past_1024_entries),
        cmocka_unit_test(test_expired_pops_random_deadlines_in_order),
        cmocka_unit_test(test_removal_from_middle_keeps_heap_valid),
        cmocka_unit_test(test_per_owner_lists_and_counts),
        cmocka_unit_test(test_registry_is_reusable_after_destroy_and_init),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
