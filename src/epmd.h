/* epmd: checks that the Erlang port mapper answers, and starts it when it does not. */
#ifndef NODEX_EPMD_H
#define NODEX_EPMD_H

#include <stddef.h>

/* The port epmd listens on: $ERL_EPMD_PORT, or 4369. */
int epmd_port(void);
/* True when epmd answers a NAMES request on 127.0.0.1:epmd_port() within timeout_ms. */
int epmd_is_running(int timeout_ms);
/* Ensures epmd answers: if it does not, runs `epmd -daemon` (it inherits ERL_EPMD_PORT, reaps the
 * launcher) and waits up to timeout_ms for it to answer. Returns 0, or -1 with a message in err. */
int epmd_ensure(int timeout_ms, char *err, size_t err_len);

#endif
