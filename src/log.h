/* log: leveled, thread-safe logging to stderr, one line per call, as text or as JSON lines. */
#ifndef NODEX_LOG_H
#define NODEX_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LOG_LEVELS(X)                                                                              \
    X(LOG_DEBUG, "debug")                                                                          \
    X(LOG_INFO, "info")                                                                            \
    X(LOG_WARN, "warn")                                                                            \
    X(LOG_ERROR, "error")

typedef enum log_level {
#define X(id, name) id,
    LOG_LEVELS(X)
#undef X
} log_level;

/* Line formats: "<time> <level> <message> key=value..." or one JSON object per line. */
#define LOG_FORMATS(X)                                                                             \
    X(LOG_FORMAT_TEXT, "text")                                                                     \
    X(LOG_FORMAT_JSON, "json")

typedef enum log_format {
#define X(id, name) id,
    LOG_FORMATS(X)
#undef X
} log_format;

/* The longest line written (bytes, newline included); longer messages are cut, and a JSON line
 * then carries "truncated":true and stays valid JSON. */
#define LOG_LINE_MAX 2048

/* Sets the lowest level that is printed (default LOG_INFO). Call before starting threads. */
void log_set_level(log_level level);
/* True when lines at `level` are printed (to skip preparing a line nobody sees). Any thread. */
bool log_enabled(log_level level);
/* Parses "debug", "info", "warn" or "error". Returns 0, or -1 for an unknown name. */
int log_level_parse(const char *name, log_level *out);
/* Returns the level's name ("info"). */
const char *log_level_name(log_level level);
/* Sets the line format (default LOG_FORMAT_TEXT). Call before starting threads. */
void log_set_format(log_format format);
/* Parses "text" or "json". Returns 0, or -1 for an unknown name. */
int log_format_parse(const char *name, log_format *out);
/* Returns the format's name ("json"). */
const char *log_format_name(log_format format);
/* Prints one line with the message formatted from `fmt` when `level` is enabled: text
 * "<time> <level> <message>", or JSON {"time":...,"level":...,"msg":...}. Any thread. */
void log_msg(log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One key of a structured line: a string (NULL prints as null in JSON, "-" in text) or a number. */
typedef struct log_field {
    const char *key;
    const char *str;
    long long num;
    bool is_num;
} log_field;

#define LOG_STR(k, v) ((log_field){.key = (k), .str = (v)})
#define LOG_NUM(k, v) ((log_field){.key = (k), .num = (long long)(v), .is_num = true})

/* Prints `msg` with `count` fields: text "<time> <level> <msg> k=v k="v w"" (values with
 * spaces, quotes or '=' quoted), JSON with each field a member after "msg". Any thread. */
void log_event(log_level level, const char *msg, const log_field *fields, size_t count);

/* At most `per_window` lines per `window_ms` from one source (a C-node's output, say): the rest
 * are counted and reported when the next window opens. Owned and used by one thread. */
typedef struct log_limiter {
    unsigned per_window;
    int64_t window_ms;
    int64_t window_start_ms;
    unsigned in_window;
    uint64_t suppressed; /* lines refused in the current window */
} log_limiter;

/* Starts a limiter (window_ms > 0, per_window > 0). */
void log_limiter_init(log_limiter *l, unsigned per_window, int64_t window_ms);
/* True when a line may be logged at `now_ms` (monotonic); false when over the rate (counted).
 * When a new window opens after refusals, *suppressed gets their count (else 0), so the caller
 * can log "N lines suppressed" once. */
bool log_limiter_allow(log_limiter *l, int64_t now_ms, uint64_t *suppressed);

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
