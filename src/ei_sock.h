/* ei_sock: poll-based socket callbacks for ei's outgoing connections, bounded by a deadline. */
#ifndef NODEX_EI_SOCK_H
#define NODEX_EI_SOCK_H

#include <stdint.h>

#include <ei.h>

/* Callbacks for ei_connect_xinit_ussi (EI_SCLBK_FLG_FULL_IMPL: ei never calls select() on our
 * descriptors, which crashes on descriptors >= 1024). Every connect, read and write waits with
 * poll() until the calling thread's deadline (ei_sock_set_deadline) and fails with ETIMEDOUT
 * past it, so a peer that accepts TCP but never completes the handshake cannot hold a thread.
 * Connect only: listen and accept are not supported. Sockets are left non-blocking. */
extern ei_socket_callbacks ei_sock_callbacks;

/* Sets the calling thread's deadline (monotonic ms, as dist_now_ms) for ei I/O through
 * ei_sock_callbacks; 0 means ei's own timeout, or 10 s where ei asks for none. */
void ei_sock_set_deadline(int64_t deadline_ms);

#endif
