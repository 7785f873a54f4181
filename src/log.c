/* log: leveled, thread-safe logging to stderr, one line per call. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static const char *const log_names[] = {
#define X(id, name) name,
    LOG_LEVELS(X)
#undef X
};

static log_level log_min_level = LOG_INFO;

void log_set_level(log_level level) {
    log_min_level = level;
}

int log_level_parse(const char *name, log_level *out) {
    for (size_t i = 0; i < sizeof log_names / sizeof log_names[0]; i++) {
        if (strcmp(name, log_names[i]) == 0) {
            *out = (log_level)i;
            return 0;
        }
    }
    return -1;
}

const char *log_level_name(log_level level) {
    return (unsigned)level < sizeof log_names / sizeof log_names[0] ? log_names[level] : "?";
}

void log_msg(log_level level, const char *fmt, ...) {
    if (level < log_min_level) return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = (int)strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
    n += snprintf(line + n, sizeof line - (size_t)n, ".%03ldZ %-5s ", ts.tv_nsec / 1000000,
                  log_level_name(level));
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0) m = 0;
    /* vsnprintf returns the untruncated length: clamp to what the buffer holds. */
    if ((size_t)n + (size_t)m >= sizeof line - 1)
        n = (int)sizeof line - 2;
    else
        n += m;
    line[n++] = '\n';
    fwrite(line, 1, (size_t)n,
           stderr); /* one write per line: lines from threads never interleave */
}
