/* heap: glibc heap policy: large buffers stay in the heap between calls, and the free heap goes
 * back to the kernel once the process is idle after a burst. */
#ifndef NODEX_HEAP_H
#define NODEX_HEAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Allocations up to this size come from the heap, not from an mmap of their own. */
#define HEAP_MMAP_THRESHOLD (32u << 20)
/* free() shrinks the heap top only when more than this lies free there. */
#define HEAP_TRIM_THRESHOLD (64u << 20)
/* Arenas: one, shared by every thread. malloc_trim shrinks only the main arena's top, and a
 * thread arena's top shrinks only on a free() past HEAP_TRIM_THRESHOLD, so a gRPC thread's
 * arena would keep a burst's buffers for good. */
#define HEAP_ARENAS 1

/* Sets HEAP_MMAP_THRESHOLD, HEAP_TRIM_THRESHOLD and HEAP_ARENAS: freed request and reply buffers
 * are reused by the next call instead of being mapped and faulted in afresh (~14 us a page on these
 * VMs). Call once from main() before any other thread exists. Returns 0, or -1 when glibc refused.
 */
int heap_tune(void);

/* Bytes lying free in the heap, every arena (mallinfo2's fordblks): at most what a trim hands
 * back; pages already handed back still count. Any thread (takes each arena's lock). */
size_t heap_free_bytes(void);

/* Hands the free pages of every arena back to the kernel (malloc_trim(0)). Returns true when
 * any memory was released. Any thread (takes each arena's lock for the walk). */
bool heap_trim(void);

/* What the janitor looks at, once a tick: this process's clock, CPU time and page faults. */
typedef struct heap_usage {
    int64_t now_ms; /* CLOCK_MONOTONIC */
    int64_t cpu_ms; /* user + system, every thread */
    int64_t faults; /* minor + major page faults so far */
} heap_usage;

/* This process's usage now (clock_gettime, getrusage). Any thread. */
heap_usage heap_usage_now(void);

/* A trimming policy and, when started with an interval, the thread that applies it. */
typedef struct heap_janitor heap_janitor;

/* A janitor that trims at most once per burst: at a tick where the process has faulted in at
 * least `min_free` bytes of pages since its last trim (the heap was used), spent at most
 * `busy_permille` of one CPU since the previous tick (it is idle now) and at least `min_free`
 * bytes lie free. With `interval_ms` > 0 a thread ticks every interval_ms; with 0 no thread
 * starts and the caller ticks (heap_janitor_tick). `first` is the usage the first tick is
 * measured from. Returns NULL with a message in err. Free with heap_janitor_stop. */
heap_janitor *heap_janitor_start(unsigned interval_ms, size_t min_free, unsigned busy_permille,
                                 heap_usage first, char *err, size_t err_len);
/* One tick at `now` (the thread passes heap_usage_now()): trims when the policy says so.
 * Returns true when it trimmed. Not concurrently with the janitor's own thread. */
bool heap_janitor_tick(heap_janitor *j, heap_usage now);
/* How many trims the janitor has done. Any thread. */
uint64_t heap_janitor_trims(const heap_janitor *j);
/* Stops and joins the thread (if any) and frees the janitor. NULL is ignored. */
void heap_janitor_stop(heap_janitor *j);

#endif
