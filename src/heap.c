/* heap: glibc malloc thresholds, and a janitor that trims the heap once idle after a burst. */
#include "heap.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

struct heap_janitor {
    size_t min_free;
    unsigned busy_permille;
    int64_t fault_pages; /* min_free in pages: faults since the last trim that make it worth one */
    heap_usage prev;     /* the previous tick's */
    int64_t faults_at_trim;
    atomic_uint_fast64_t trims;
    unsigned interval_ms; /* 0: no thread */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* `stopping` set */
    bool stopping;
};

int heap_tune(void) {
    int ok = mallopt(M_MMAP_THRESHOLD, (int)HEAP_MMAP_THRESHOLD);
    ok &= mallopt(M_TRIM_THRESHOLD, (int)HEAP_TRIM_THRESHOLD);
    ok &= mallopt(M_ARENA_MAX, HEAP_ARENAS);
    return ok ? 0 : -1;
}

size_t heap_free_bytes(void) {
    return mallinfo2().fordblks;
}

bool heap_trim(void) {
    return malloc_trim(0) != 0;
}

heap_usage heap_usage_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    int64_t cpu_us = (int64_t)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec +
                     (int64_t)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec;
    return (heap_usage){.now_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000,
                        .cpu_ms = cpu_us / 1000,
                        .faults = (int64_t)ru.ru_minflt + ru.ru_majflt};
}

bool heap_janitor_tick(heap_janitor *j, heap_usage now) {
    int64_t wall = now.now_ms - j->prev.now_ms;
    int64_t cpu = now.cpu_ms - j->prev.cpu_ms;
    j->prev = now;
    /* Busy: a trim now would hand back pages the next calls fault in again. */
    if (wall <= 0 || cpu * 1000 > (int64_t)j->busy_permille * wall) return false;
    /* Nothing faulted in since the last trim: what lies free was handed back already. */
    if (now.faults - j->faults_at_trim < j->fault_pages) return false;
    if (heap_free_bytes() < j->min_free) return false;
    heap_trim();
    j->faults_at_trim = now.faults; /* a trim faults nothing in */
    atomic_fetch_add(&j->trims, 1);
    return true;
}

uint64_t heap_janitor_trims(const heap_janitor *j) {
    return atomic_load(&j->trims);
}

static void *heap_janitor_main(void *arg) {
    heap_janitor *j = arg;
    pthread_mutex_lock(&j->mu);
    while (!j->stopping) {
        struct timespec due;
        clock_gettime(CLOCK_MONOTONIC, &due);
        due.tv_sec += j->interval_ms / 1000;
        due.tv_nsec += (long)(j->interval_ms % 1000) * 1000000L;
        if (due.tv_nsec >= 1000000000L) {
            due.tv_sec++;
            due.tv_nsec -= 1000000000L;
        }
        while (!j->stopping && pthread_cond_timedwait(&j->cv, &j->mu, &due) != ETIMEDOUT) {
        }
        if (j->stopping) break;
        pthread_mutex_unlock(&j->mu);
        heap_janitor_tick(j, heap_usage_now());
        pthread_mutex_lock(&j->mu);
    }
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

heap_janitor *heap_janitor_start(unsigned interval_ms, size_t min_free, unsigned busy_permille,
                                 heap_usage first, char *err, size_t err_len) {
    heap_janitor *j = calloc(1, sizeof *j);
    if (!j) {
        snprintf(err, err_len, "heap janitor: out of memory");
        return NULL;
    }
    long page = sysconf(_SC_PAGESIZE);
    j->min_free = min_free;
    j->busy_permille = busy_permille;
    j->fault_pages = (int64_t)(min_free / (size_t)(page > 0 ? page : 4096));
    j->prev = first;
    j->faults_at_trim = first.faults;
    atomic_init(&j->trims, 0);
    j->interval_ms = interval_ms;
    if (interval_ms == 0) return j;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, &ca);
    pthread_condattr_destroy(&ca);
    int rc = pthread_create(&j->thread, NULL, heap_janitor_main, j);
    if (rc != 0) {
        snprintf(err, err_len, "heap janitor: no thread: %s", strerror(rc));
        pthread_cond_destroy(&j->cv);
        pthread_mutex_destroy(&j->mu);
        free(j);
        return NULL;
    }
    return j;
}

void heap_janitor_stop(heap_janitor *j) {
    if (!j) return;
    if (j->interval_ms > 0) {
        pthread_mutex_lock(&j->mu);
        j->stopping = true;
        pthread_cond_signal(&j->cv);
        pthread_mutex_unlock(&j->mu);
        pthread_join(j->thread, NULL);
        pthread_cond_destroy(&j->cv);
        pthread_mutex_destroy(&j->mu);
    }
    free(j);
}
