/* term_etf: External Term Format in and out: validated pass-through, version byte handled here. */
#include "term_common.h"

#define ETF_VERSION 131

int term_from_etf(const char *etf, size_t len, const term_limits *limits, ei_x_buff *out,
                  term_error *err) {
    term_limits lim = term_limits_effective(limits);
    if (len > lim.max_bytes)
        return term_fail(err, TERM_ERR_SIZE, "ETF input of %zu bytes is over the limit of %zu", len,
                         lim.max_bytes);
    if (len < 2 || (unsigned char)etf[0] != ETF_VERSION)
        return term_fail(err, TERM_ERR_SYNTAX, "ETF must start with version byte 131 (offset 0)");
    int end = 1;
    if (term_etf_check(etf, len, &end, &lim, err) != 0) return -1;
    if ((size_t)end != len)
        return term_fail(err, TERM_ERR_SYNTAX, "ETF: %zu bytes after the term at offset %d",
                         len - (size_t)end, end);
    if (term_x_append(out, etf + 1, len - 1) != 0)
        return term_fail(err, TERM_ERR_NOMEM, "out of memory");
    return term_ok(err);
}

int term_to_etf(const char *buf, size_t buf_len, int *index, const term_limits *limits, strbuf *out,
                term_error *err) {
    term_limits lim = term_limits_effective(limits);
    int end = *index;
    if (term_etf_check(buf, buf_len, &end, &lim, err) != 0) return -1;
    size_t n = (size_t)(end - *index);
    if (n + 1 > lim.max_bytes)
        return term_fail(err, TERM_ERR_SIZE, "ETF output of %zu bytes is over the limit of %zu",
                         n + 1, lim.max_bytes);
    const char v = (char)ETF_VERSION;
    if (strbuf_putc(out, v) != 0 || strbuf_append(out, buf + *index, n) != 0)
        return term_fail(err, TERM_ERR_NOMEM, "out of memory");
    *index = end;
    return term_ok(err);
}
