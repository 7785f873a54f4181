/* log: leveled, thread-safe logging to stderr, one line per call. */
#ifndef NODEX_LOG_H
#define NODEX_LOG_H

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

/* Sets the lowest level that is printed (default LOG_INFO). Call before starting threads. */
void log_set_level(log_level level);
/* Parses "debug", "info", "warn" or "error". Returns 0, or -1 for an unknown name. */
int log_level_parse(const char *name, log_level *out);
/* Returns the level's name ("info"). */
const char *log_level_name(log_level level);
/* Prints one line "<time> <level> <message>" to stderr when `level` is enabled. Any thread. */
void log_msg(log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
