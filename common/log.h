/*
 * log: leveled logging to stderr, one line per message, with a UTC timestamp
 * and the level, in the style of istiod's default text logs:
 *   2026-11-22T02:08:49.123Z  info   loaded 12 objects from examples/demo
 * The level is process-wide and may be changed at run time.
 */
#ifndef MESH_LOG_H
#define MESH_LOG_H

#include <stdarg.h>
#include <stddef.h>

typedef enum { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_NONE } log_level_t;

void log_set_level(log_level_t level);
log_level_t log_get_level(void);
/* Parses "debug", "info", "warn", "error", "none"; returns -1 if unknown. */
int log_level_parse(const char *name);

void log_msg(log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

/* Formats an error message into err[errlen] (nothing when err is NULL or
 * errlen 0) and returns -1, so a failing function can end with
 * `return mesh_errf(err, errlen, "...", ...)`. */
int mesh_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int mesh_verrf(char *err, size_t errlen, const char *fmt, va_list ap) __attribute__((format(printf, 3, 0)));

#endif
