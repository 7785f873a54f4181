/* sdnotify: systemd's readiness protocol (sd_notify) without libsystemd. */
#ifndef NODEX_SDNOTIFY_H
#define NODEX_SDNOTIFY_H

/*
 * The service manager (systemd with Type=notify, or any supervisor speaking the same protocol)
 * passes the address of a datagram socket in $NOTIFY_SOCKET: a file system path ("/run/...") or,
 * when it starts with '@', a Linux abstract socket name (the '@' stands for the leading NUL).
 * Each message is one datagram of newline-separated VAR=value assignments.
 *
 * Every function is a no-op returning 0 when $NOTIFY_SOCKET is unset or empty, so the daemon can
 * call them unconditionally. They keep no state and are safe from any thread; errno is kept on
 * success. $NOTIFY_SOCKET stays in the environment and C-nodes inherit it, which is harmless: they
 * do not speak the protocol, and the shipped unit's NotifyAccess=main ignores other pids.
 */

/*
 * Sends `state` (e.g. "READY=1\nSTATUS=serving") as one datagram to $NOTIFY_SOCKET.
 * Returns 0 when sent or when $NOTIFY_SOCKET is unset/empty; -1 with errno set on error:
 * EINVAL when `state` is NULL or empty, or the address is neither absolute nor abstract;
 * ENAMETOOLONG when the address does not fit in sockaddr_un; a socket/sendto errno otherwise.
 */
int sdnotify_send(const char *state);

/* Sends "READY=1": start-up is complete (nodexd serves HTTP and its C-nodes were started). */
int sdnotify_ready(void);

/* Sends "STOPPING=1": shutdown has begun (C-nodes are being stopped). */
int sdnotify_stopping(void);

/*
 * Sends "STATUS=<text>", the text formatted printf-style from `fmt`; shown by `systemctl status`.
 * Newlines in the text are replaced by spaces (one STATUS line). Text longer than 1 KiB is cut.
 */
int sdnotify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * The watchdog interval the service manager asks for (WatchdogSec= sets $WATCHDOG_USEC), in ms,
 * when $WATCHDOG_USEC is a positive number and $WATCHDOG_PID is unset or names this process;
 * 0 otherwise (no watchdog: nothing to send). Send WATCHDOG=1 at least twice per interval.
 */
long long sdnotify_watchdog_ms(void);

/* Sends "WATCHDOG=1": the main loop is alive. Call from the loop itself, so a stuck loop stops
 * the pings and the service manager restarts nodexd. */
int sdnotify_watchdog(void);

#endif
