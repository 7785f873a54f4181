/* ei_sock: poll-based socket callbacks for ei's outgoing connections, bounded by a deadline. */
#ifndef NODEX_EI_SOCK_H
#define NODEX_EI_SOCK_H

#include <stddef.h>
#include <stdint.h>

#include <ei.h>

/* Callbacks for ei_connect_xinit_ussi (EI_SCLBK_FLG_FULL_IMPL: ei never calls select() on our
 * descriptors, which crashes on descriptors >= 1024). Every connect, read and write waits with
 * poll() until the socket's deadline and fails with ETIMEDOUT past it, so a peer that never
 * completes the handshake cannot hold a thread: for connects the calling thread's deadline
 * (ei_sock_set_deadline), for accepted sockets ei_sock_set_accept_deadline's from the accept
 * on, for the whole handshake. A listener waits forever. Sockets are left non-blocking. */
extern ei_socket_callbacks ei_sock_callbacks;

/* Handshake flags nodexd offers beyond ei's own on its outgoing connections: it reads
 * MONITOR_P_EXIT for monitors by name (src/dist.c), which OTP sends only to nodes offering
 * DFLAG_DIST_MONITOR_NAME. The digest covers the challenge, not the flags. */
#define EI_SOCK_DIST_MONITOR_NAME ((uint64_t)0x20)
#define EI_SOCK_EXTRA_FLAGS       EI_SOCK_DIST_MONITOR_NAME

/* Adds EI_SOCK_EXTRA_FLAGS to a version 6 send_name message (`len` bytes with its 2-byte
 * length) in place. Returns the flags it now offers, or 0 when `msg` is not one (left alone). */
uint64_t ei_sock_offer_flags(char *msg, size_t len);

/* How long an accepted connection's whole handshake may take (ms, default 3000). Any thread. */
void ei_sock_set_accept_deadline(unsigned ms);

/* Sets the calling thread's deadline (monotonic ms, as dist_now_ms) for ei I/O through
 * ei_sock_callbacks; 0 means ei's own timeout, or 10 s where ei asks for none. */
void ei_sock_set_deadline(int64_t deadline_ms);

#endif
