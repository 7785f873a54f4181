/* fuzz_term_etf: every reply decoder (to JSON, text, ETF) and the ETF input check on hostile bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "term.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const term_limits lim = {64, 1 << 20};
    /* Corpus files are term_to_binary output: the reply decoders start after the version byte. */
    size_t off = size > 0 && data[0] == 131 ? 1 : 0;
    const char *buf = (const char *)data + off;
    size -= off;
    term_error err;
    strbuf out = {0};
    int idx = 0;
    int ok_json = term_to_json(buf, size, &idx, &lim, &out, &err);
    strbuf_reset(&out);
    idx = 0;
    int ok_text = term_to_text(buf, size, &idx, &lim, &out, &err);
    strbuf_reset(&out);
    idx = 0;
    int ok_etf = term_to_etf(buf, size, &idx, &lim, &out, &err);
    /* Accepting a term must not depend on the output format (bignum size aside). */
    if (ok_etf != 0 && (ok_json == 0 || ok_text == 0)) abort();
    if (ok_etf == 0) {
        ei_x_buff x;
        ei_x_new(&x);
        if (term_from_etf(out.data, out.len, &lim, &x, &err) != 0) abort();
        if ((size_t)x.index != out.len - 1 || memcmp(x.buff, out.data + 1, (size_t)x.index) != 0)
            abort();
        ei_x_free(&x);
    }
    ei_x_buff y;
    ei_x_new(&y);
    (void)term_from_etf((const char *)data, size + off, &lim, &y, &err);
    ei_x_free(&y);
    strbuf_free(&out);
    return 0;
}
