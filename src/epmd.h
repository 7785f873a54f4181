/* epmd: the Erlang port mapper: checks it answers, starts it, asks it for a node's port. */
#ifndef NODEX_EPMD_H
#define NODEX_EPMD_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>

/* The port epmd listens on: $ERL_EPMD_PORT, or 4369. */
int epmd_port(void);
/* True when epmd answers a NAMES request on 127.0.0.1:epmd_port() within timeout_ms. */
int epmd_is_running(int timeout_ms);
/* Ensures epmd answers: if it does not, runs `epmd -daemon` (it inherits ERL_EPMD_PORT, reaps the
 * launcher) and waits up to timeout_ms for it to answer. Returns 0, or -1 with a message in err. */
int epmd_ensure(int timeout_ms, char *err, size_t err_len);
/* Asks the epmd on `addr` (port epmd_port()) for the distribution port of the node named
 * `alive` (PORT_PLEASE2), giving up at `deadline_ms` (CLOCK_MONOTONIC ms): ei's own lookup in
 * ei_connect waits without a limit for an epmd that accepts and never answers. Returns the
 * port, 0 when epmd answers that no such node is registered, or -1 with errno (ETIMEDOUT past
 * the deadline, ECONNREFUSED, EPROTO for an answer that is not epmd's). Any thread. */
int epmd_port_please(const struct in_addr *addr, const char *alive, int64_t deadline_ms);

#endif
