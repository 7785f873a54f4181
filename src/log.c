/* log: leveled, thread-safe logging to stderr, one line per call, as text or as JSON lines. */
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

static const char *const log_format_names[] = {
#define X(id, name) name,
    LOG_FORMATS(X)
#undef X
};

static log_level log_min_level = LOG_INFO;
static log_format log_line_format = LOG_FORMAT_TEXT;

/* Room always kept at the end of a JSON line for `,"truncated":true}\n`. */
#define LOG_JSON_RESERVE 24

void log_set_level(log_level level) {
    log_min_level = level;
}

/* Index of `name` in names[0..count), or -1. */
static int log_name_index(const char *const *names, size_t count, const char *name) {
    for (size_t i = 0; i < count; i++)
        if (strcmp(name, names[i]) == 0) return (int)i;
    return -1;
}

bool log_enabled(log_level level) {
    return level >= log_min_level;
}

int log_level_parse(const char *name, log_level *out) {
    int i = log_name_index(log_names, sizeof log_names / sizeof log_names[0], name);
    if (i < 0) return -1;
    *out = (log_level)i;
    return 0;
}

const char *log_level_name(log_level level) {
    return (unsigned)level < sizeof log_names / sizeof log_names[0] ? log_names[level] : "?";
}

void log_set_format(log_format format) {
    log_line_format = format;
}

int log_format_parse(const char *name, log_format *out) {
    int i = log_name_index(log_format_names, sizeof log_format_names / sizeof log_format_names[0],
                           name);
    if (i < 0) return -1;
    *out = (log_format)i;
    return 0;
}

const char *log_format_name(log_format format) {
    return (unsigned)format < sizeof log_format_names / sizeof log_format_names[0]
               ? log_format_names[format]
               : "?";
}

/* One line being built; `limit` is where content must stop (the rest is kept for the ending). */
typedef struct log_line {
    char buf[LOG_LINE_MAX];
    size_t len, limit;
    bool truncated;
} log_line;

static bool line_put(log_line *l, const char *s, size_t n) {
    if (l->truncated || l->len + n > l->limit) {
        l->truncated = true;
        return false;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
    return true;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when the bytes are not one. */
static size_t utf8_sequence(const unsigned char *s, size_t n) {
    size_t len = s[0] < 0x80                    ? 1
                 : s[0] >= 0xc2 && s[0] <= 0xdf ? 2
                 : (s[0] & 0xf0) == 0xe0        ? 3
                 : s[0] >= 0xf0 && s[0] <= 0xf4 ? 4
                                                : 0;
    if (len == 0 || len > n) return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    if (len == 3 && ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] >= 0xa0))) return 0;
    if (len == 4 && ((s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] >= 0x90))) return 0;
    return len;
}

/* Appends s as text: control characters (a C-node's output may hold any byte) as \xNN, so one
 * call stays one line and a terminal shows what was there. */
static void line_put_text(log_line *l, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        char esc[5];
        if (ch < 0x20 && ch != '\t') {
            snprintf(esc, sizeof esc, "\\x%02x", ch);
            if (!line_put(l, esc, 4)) return;
        } else if (!line_put(l, s + i, 1)) {
            return;
        }
    }
}

/* Appends s as a JSON string: escapes, and U+FFFD for bytes that are not UTF-8. Cut between
 * characters when the line is full, the closing quote always written. */
static void line_put_json(log_line *l, const char *s, size_t n) {
    line_put(l, "\"", 1);
    if (l->truncated) return;
    l->limit -= 1; /* the closing quote */
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        char esc[8];
        size_t seq = utf8_sequence(u + i, n - i);
        const char *out = s + i;
        size_t out_len = seq;
        if (seq == 0) {
            out = "\\ufffd";
            out_len = 6;
            seq = 1;
        } else if (u[i] == '"' || u[i] == '\\') {
            esc[0] = '\\';
            esc[1] = (char)u[i];
            out = esc;
            out_len = 2;
        } else if (u[i] < 0x20 || u[i] == 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", u[i]);
            out = esc;
            out_len = 6;
        }
        if (!line_put(l, out, out_len)) break;
        i += seq;
    }
    l->limit += 1;
    memcpy(l->buf + l->len++, "\"", 1);
}

static void line_begin(log_line *l, log_level level) {
    struct timespec ts;
    struct tm tm;
    char stamp[40];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(stamp + n, sizeof stamp - n, ".%03ldZ", ts.tv_nsec / 1000000);
    l->len = 0;
    l->truncated = false;
    if (log_line_format == LOG_FORMAT_JSON) {
        l->limit = sizeof l->buf - LOG_JSON_RESERVE;
        l->len =
            (size_t)snprintf(l->buf, l->limit, "{\"time\":\"%s\",\"level\":\"%s\",\"msg\":", stamp,
                             log_level_name(level));
    } else {
        l->limit = sizeof l->buf - 1; /* the newline */
        l->len = (size_t)snprintf(l->buf, l->limit, "%s %-5s ", stamp, log_level_name(level));
    }
}

/* Ends the line and writes it with one write: lines from threads never interleave. */
static void line_end(log_line *l) {
    if (log_line_format == LOG_FORMAT_JSON) {
        const char *end = l->truncated ? ",\"truncated\":true}\n" : "}\n";
        size_t n = strlen(end);
        memcpy(l->buf + l->len, end, n);
        l->len += n;
    } else {
        l->buf[l->len++] = '\n';
    }
    fwrite(l->buf, 1, l->len, stderr);
}

static void line_put_message(log_line *l, const char *msg, size_t n) {
    if (log_line_format == LOG_FORMAT_JSON)
        line_put_json(l, msg, n);
    else
        line_put_text(l, msg, n);
}

void log_msg(log_level level, const char *fmt, ...) {
    if (level < log_min_level) return;
    char msg[LOG_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t n = m < 0 ? 0 : (size_t)m < sizeof msg ? (size_t)m : sizeof msg - 1;
    log_line l;
    line_begin(&l, level);
    line_put_message(&l, msg, n);
    l.truncated = l.truncated || (m > 0 && (size_t)m >= sizeof msg);
    line_end(&l);
}

/* True when a text value must be quoted to read back as one value. */
static bool text_needs_quotes(const char *s) {
    return *s == '\0' || strpbrk(s, " \t\"=\\") != NULL;
}

static void line_put_field(log_line *l, const log_field *f) {
    bool json = log_line_format == LOG_FORMAT_JSON;
    char num[32];
    line_put(l, json ? "," : " ", 1);
    if (json)
        line_put_json(l, f->key, strlen(f->key));
    else
        line_put_text(l, f->key, strlen(f->key));
    line_put(l, json ? ":" : "=", 1);
    if (f->is_num) {
        line_put(l, num, (size_t)snprintf(num, sizeof num, "%lld", f->num));
    } else if (!f->str) {
        line_put(l, json ? "null" : "-", json ? 4 : 1);
    } else if (json) {
        line_put_json(l, f->str, strlen(f->str));
    } else if (!text_needs_quotes(f->str)) {
        line_put_text(l, f->str, strlen(f->str));
    } else {
        line_put(l, "\"", 1);
        for (const char *p = f->str; *p; p++) {
            if ((*p == '"' || *p == '\\') && !line_put(l, "\\", 1)) break;
            line_put_text(l, p, 1);
        }
        line_put(l, "\"", 1);
    }
}

void log_event(log_level level, const char *msg, const log_field *fields, size_t count) {
    if (level < log_min_level) return;
    log_line l;
    line_begin(&l, level);
    line_put_message(&l, msg, strlen(msg));
    for (size_t i = 0; i < count && !l.truncated; i++) line_put_field(&l, &fields[i]);
    line_end(&l);
}

void log_limiter_init(log_limiter *l, unsigned per_window, int64_t window_ms) {
    *l = (log_limiter){.per_window = per_window, .window_ms = window_ms, .window_start_ms = 0};
}

bool log_limiter_allow(log_limiter *l, int64_t now_ms, uint64_t *suppressed) {
    *suppressed = 0;
    if (l->in_window == 0 || now_ms - l->window_start_ms >= l->window_ms) {
        *suppressed = l->suppressed;
        l->suppressed = 0;
        l->window_start_ms = now_ms;
        l->in_window = 0;
    }
    if (l->in_window >= l->per_window) {
        l->suppressed++;
        return false;
    }
    l->in_window++;
    return true;
}
