/* test_heap: large buffers stay in the heap when freed, a trim hands them back to the kernel, and
 * the janitor trims once after a burst, only when idle, and not again until the heap is used. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <malloc.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "heap.h"

#define MIB  (1u << 20)
#define BUFS 16 /* 1 MiB buffers of a burst: 16 MiB, well above the janitor's min_free here */

/* AddressSanitizer and ThreadSanitizer bring their own allocators: glibc's thresholds and
 * statistics do not apply there (the plain build runs these tests). */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) /* gcc */
#define SANITIZER_ALLOCATOR 1
#elif defined(__has_feature) /* clang */
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZER_ALLOCATOR 1
#endif
#endif
#ifdef SANITIZER_ALLOCATOR
#define SKIP_UNDER_SANITIZER_ALLOCATOR() skip()
#else
#define SKIP_UNDER_SANITIZER_ALLOCATOR() ((void)0)
#endif

/* This process's resident set, bytes (/proc/self/statm). */
static size_t rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    assert_non_null(f);
    unsigned long size = 0, resident = 0;
    assert_int_equal(fscanf(f, "%lu %lu", &size, &resident), 2);
    fclose(f);
    return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

/* The resident set is at least a burst's buffers (but two MiB) below `before`. */
static void assert_rss_fell_by_a_burst(size_t before) {
    assert_true(rss_bytes() + (size_t)(BUFS - 2) * MIB <= before);
}

/* Allocates BUFS buffers of 1 MiB, touches every page, frees them: a large call's buffers. */
static void burst(void) {
    char *bufs[BUFS];
    for (int i = 0; i < BUFS; i++) {
        bufs[i] = malloc(MIB);
        assert_non_null(bufs[i]);
        memset(bufs[i], 'x', MIB);
    }
    for (int i = 0; i < BUFS; i++) free(bufs[i]);
}

static void test_buffers_below_the_mmap_threshold_stay_in_the_heap_when_freed(void **state) {
    (void)state;
    SKIP_UNDER_SANITIZER_ALLOCATOR();
    assert_int_equal(heap_tune(), 0);
    heap_trim();
    size_t mapped = mallinfo2().hblkhd;
    char *bufs[BUFS];
    for (int i = 0; i < BUFS; i++) {
        bufs[i] = malloc(MIB);
        assert_non_null(bufs[i]);
        memset(bufs[i], 'x', MIB);
    }
    assert_int_equal(mallinfo2().hblkhd, mapped); /* none got an mmap of its own */
    for (int i = 0; i < BUFS; i++) free(bufs[i]);
    /* Freeing did not shrink the heap (the trim threshold): the next call reuses it. */
    assert_true(heap_free_bytes() >= (size_t)BUFS * MIB);
}

static void test_a_trim_hands_the_free_heap_back_to_the_kernel(void **state) {
    (void)state;
    SKIP_UNDER_SANITIZER_ALLOCATOR();
    assert_int_equal(heap_tune(), 0);
    burst();
    size_t before = rss_bytes();
    assert_true(heap_trim());
    assert_rss_fell_by_a_burst(before);
}

static void *burst_thread(void *arg) {
    (void)arg;
    burst();
    return NULL;
}

static void test_a_trim_reaches_what_other_threads_freed(void **state) {
    (void)state;
    SKIP_UNDER_SANITIZER_ALLOCATOR();
    assert_int_equal(heap_tune(), 0);
    heap_trim();
    size_t before = rss_bytes();
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, burst_thread, NULL), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    size_t after_burst = rss_bytes();
    assert_true(after_burst >= before + (size_t)(BUFS - 2) * MIB); /* the thread's pages stay */
    assert_true(heap_trim());
    /* One arena for every thread: what a gRPC thread freed goes back like the main thread's. */
    assert_rss_fell_by_a_burst(after_burst);
}

static void test_the_janitor_trims_once_when_idle_after_a_burst(void **state) {
    (void)state;
    SKIP_UNDER_SANITIZER_ALLOCATOR();
    assert_int_equal(heap_tune(), 0);
    char err[128];
    /* 1 MiB free and 256 pages faulted in make a trim worth it; busy above 2% of a CPU. */
    heap_janitor *j = heap_janitor_start(0, MIB, 20, (heap_usage){0, 0, 0}, err, sizeof err);
    assert_non_null(j);
    burst();
    /* While the burst runs: 500 ms of CPU in a second, 4,096 pages faulted in: no trim. */
    assert_false(heap_janitor_tick(j, (heap_usage){1000, 500, 4096}));
    /* Idle (5 ms of CPU in the next second): the trim, and the heap's pages are gone. */
    size_t before = rss_bytes();
    assert_true(heap_janitor_tick(j, (heap_usage){2000, 505, 4096}));
    assert_rss_fell_by_a_burst(before);
    assert_int_equal(heap_janitor_trims(j), 1);
    /* Still idle, nothing faulted in since: no second trim. */
    assert_false(heap_janitor_tick(j, (heap_usage){3000, 506, 4100}));
    /* The next burst, then idle again: one more trim. */
    burst();
    assert_false(heap_janitor_tick(j, (heap_usage){4000, 900, 8192}));
    assert_true(heap_janitor_tick(j, (heap_usage){5000, 901, 8192}));
    assert_int_equal(heap_janitor_trims(j), 2);
    heap_janitor_stop(j);
}

static void test_the_janitor_leaves_a_heap_with_little_free(void **state) {
    (void)state;
    char err[128];
    /* More free bytes asked for than this test's heap will ever hold. */
    heap_janitor *j =
        heap_janitor_start(0, (size_t)1 << 40, 20, (heap_usage){0, 0, 0}, err, sizeof err);
    assert_non_null(j);
    assert_false(heap_janitor_tick(j, (heap_usage){1000, 1, (int64_t)1 << 40}));
    assert_int_equal(heap_janitor_trims(j), 0);
    heap_janitor_stop(j);
}

static void test_a_started_janitor_stops_at_once(void **state) {
    (void)state;
    char err[128];
    heap_janitor *j = heap_janitor_start(3600 * 1000, MIB, 20, heap_usage_now(), err, sizeof err);
    assert_non_null(j);
    heap_janitor_stop(j); /* joins a thread that waits an hour: must not wait */
    heap_janitor_stop(NULL);
}

static void test_usage_counts_cpu_and_faults_of_this_process(void **state) {
    (void)state;
    heap_usage a = heap_usage_now();
    burst();
    heap_usage b = heap_usage_now();
    assert_true(b.now_ms >= a.now_ms);
    assert_true(b.cpu_ms >= a.cpu_ms);
    assert_true(b.faults >= a.faults);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buffers_below_the_mmap_threshold_stay_in_the_heap_when_freed),
        cmocka_unit_test(test_a_trim_hands_the_free_heap_back_to_the_kernel),
        cmocka_unit_test(test_a_trim_reaches_what_other_threads_freed),
        cmocka_unit_test(test_the_janitor_trims_once_when_idle_after_a_burst),
        cmocka_unit_test(test_the_janitor_leaves_a_heap_with_little_free),
        cmocka_unit_test(test_a_started_janitor_stops_at_once),
        cmocka_unit_test(test_usage_counts_cpu_and_faults_of_this_process),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
