/* term_bench: ns per encode and decode of a typical ~1 KiB request in JSON, text and ETF. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "term.h"

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* A request shaped like real traffic: a call tuple with a map of mixed values. */
static const char request_json[] =
    "{\"$tuple\":[{\"$atom\":\"call\"},{\"$atom\":\"orders\"},{\"$atom\":\"create\"},"
    "{\"customer\":{\"id\":1234567,\"name\":\"Ada Lovelace\",\"email\":\"ada@example.com\","
    "\"tags\":[\"vip\",\"beta\",\"newsletter\"],\"score\":98.25},"
    "\"items\":[{\"sku\":\"A-1001\",\"qty\":2,\"price\":19.99,\"note\":\"gift wrap please\"},"
    "{\"sku\":\"B-2002\",\"qty\":1,\"price\":149.5,\"note\":\"\"},"
    "{\"sku\":\"C-3003\",\"qty\":12,\"price\":0.75,\"note\":\"bulk\"},"
    "{\"sku\":\"D-4004\",\"qty\":3,\"price\":7.0,\"note\":\"fragile, handle with care\"}],"
    "\"shipping\":{\"street\":\"12 Analytical Engine Road\",\"city\":\"London\","
    "\"zip\":\"NW1 2DB\",\"country\":\"GB\",\"express\":true},"
    "\"meta\":{\"request_id\":\"7f9c2ba4-e88f-11ee-a506-0242ac120002\",\"retries\":0,"
    "\"trace\":[1,2,3,4,5,6,7,8],\"opaque\":{\"$binary\":\"3q2+7wABAgM=\"},"
    "\"big\":123456789012345678901234567890,\"flags\":[false,null,true],"
    "\"comment\":\"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod "
    "tempor incididunt ut labore et dolore magna aliqua.\"}}]}";

typedef struct result {
    double enc, dec;
} result;

int main(int argc, char **argv) {
    /* argv[1]: iterations per measurement (default 100000; bench/run.sh --smoke uses fewer). */
    const int N = argc > 1 && atoi(argv[1]) > 0 ? atoi(argv[1]) : 100000;
    term_error err;
    ei_x_buff base;
    ei_x_new(&base);
    if (term_from_json(request_json, strlen(request_json), NULL, NULL, &base, &err) != 0) {
        fprintf(stderr, "bench input: %s\n", err.message);
        return 1;
    }
    strbuf forms[3] = {{0}, {0}, {0}};
    const char *names[3] = {"json", "text", "etf"};
    int idx = 0;
    term_to_json(base.buff, (size_t)base.index, &idx, NULL, &forms[0], &err);
    idx = 0;
    term_to_text(base.buff, (size_t)base.index, &idx, NULL, &forms[1], &err);
    idx = 0;
    term_to_etf(base.buff, (size_t)base.index, &idx, NULL, &forms[2], &err);
    printf("request: %d bytes of ETF, %zu JSON, %zu text\n", base.index, forms[0].len,
           forms[1].len);
    ei_x_buff x;
    ei_x_new(&x);
    strbuf out = {0};
    for (int f = 0; f < 3; f++) {
        double t0 = now_ns();
        for (int k = 0; k < N; k++) {
            x.index = 0;
            int rc = f == 0   ? term_from_json(forms[0].data, forms[0].len, NULL, NULL, &x, &err)
                     : f == 1 ? term_from_text(forms[1].data, forms[1].len, NULL, NULL, &x, &err)
                              : term_from_etf(forms[2].data, forms[2].len, NULL, &x, &err);
            if (rc != 0) return 1;
        }
        double t1 = now_ns();
        for (int k = 0; k < N; k++) {
            strbuf_reset(&out);
            idx = 0;
            int rc = f == 0   ? term_to_json(base.buff, (size_t)base.index, &idx, NULL, &out, &err)
                     : f == 1 ? term_to_text(base.buff, (size_t)base.index, &idx, NULL, &out, &err)
                              : term_to_etf(base.buff, (size_t)base.index, &idx, NULL, &out, &err);
            if (rc != 0) return 1;
        }
        double t2 = now_ns();
        printf("%-4s  parse (to ei) %7.0f ns/op   render (from ei) %7.0f ns/op\n", names[f],
               (t1 - t0) / N, (t2 - t1) / N);
    }
    for (int f = 0; f < 3; f++) strbuf_free(&forms[f]);
    strbuf_free(&out);
    ei_x_free(&x);
    ei_x_free(&base);
    return 0;
}
