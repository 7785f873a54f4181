/* fuzz_term_text: Erlang text decoder on hostile input; whatever it accepts must round-trip
 * exactly. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "term.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const term_limits lim = {64, 1 << 20};
    erlang_pid self = {.node = "gw@host", .num = 1, .serial = 0, .creation = 1};
    ei_x_buff x, y;
    ei_x_new(&x);
    ei_x_new(&y);
    term_error err;
    if (term_from_text((const char *)data, size, &lim, &self, &x, &err) == 0) {
        strbuf out = {0};
        int idx = 0;
        if (term_to_text(x.buff, (size_t)x.index, &idx, &lim, &out, &err) == 0) {
            if (term_from_text(out.data, out.len, &lim, &self, &y, &err) != 0) abort();
            if (y.index != x.index || memcmp(x.buff, y.buff, (size_t)x.index) != 0) abort();
        } else if (err.status != TERM_ERR_SIZE && err.status != TERM_ERR_UNSUPPORTED) {
            abort();
        }
        strbuf_free(&out);
    }
    ei_x_free(&x);
    ei_x_free(&y);
    return 0;
}
