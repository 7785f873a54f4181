/* term_validate: the public face of the codec's bounded ETF walker, for code that decodes with ei.
 */
#include "term.h"
#include "term_common.h"

int term_validate(const char *buf, size_t buf_len, int *index, const term_limits *limits,
                  term_error *err) {
    return term_etf_check(buf, buf_len, index, limits, err);
}
