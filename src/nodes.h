/* nodes: Erlang nodes nodexd starts or reaches: their specs, the children's HOME, rpc, init:stop.
 */
#ifndef NODEX_NODES_H
#define NODEX_NODES_H

#include <stdbool.h>
#include <stddef.h>

#include <ei.h>

#include "config.h"
#include "dist.h"
#include "gateway.h" /* cnode_state, gateway_spawn_fn: the public vocabulary */

/* Threading: apart from the spawn tracker (nodes_spawns, whose contract is given below), no
 * shared state; every function may run on any thread. The supervisor keeps the entries
 * (children and peers) these specs describe. */

/* Fills `out` (zeroed by the caller) with the synthesized config of the Erlang node `node`: a
 * child (started as `erl` with a private `home`, restarted by cfg's child policy) or a peer
 * (connected to, never restarted); both answer rpc with {rex, Reply}. For a child also resolves
 * `erl` on $PATH into *executable and sets *ready_line ("<node> ready"), both malloc'd. Returns
 * 0, or -1 when out of memory or `erl` is not found (free `out` with nodes_config_free then). */
int nodes_config(const config *cfg, bool child, const char *node, const char *home,
                 config_cnode *out, char **executable, char **ready_line);
/* Frees what nodes_config allocated in `o` (not `o` itself). */
void nodes_config_free(config_cnode *o);
/* Looks a program up on $PATH (execve does not search). A malloc'd path, or NULL. */
char *nodes_which(const char *name);
/* The name of child `index`: <child_prefix><index>@<hostname>. */
void nodes_child_name(const config *cfg, unsigned index, const char *hostname, char *out,
                      size_t cap);
/* True for a node name nodexd will try to reach: alive@host, printable, no spaces or quotes. */
bool nodes_valid_name(const char *node);

/* Creates the children's HOME: a private directory (0700) under $TMPDIR (or /tmp) named
 * nodexd-<pid>-XXXXXX holding .erlang.cookie (0400) with `cookie`, after removing those of
 * nodexds that died without cleaning up. Sets *home (malloc'd). Returns 0, or -1 with err. */
int nodes_home_create(const char *cookie, char **home, char *err, size_t err_len);
/* Removes the directory nodes_home_create made and frees `home` (NULL is ignored). */
void nodes_home_remove(char *home);

/* Appends rpc:call's request for `rex`, {From, {call, Module, Function, Args, user}} (no version
 * byte; `args` an encoded list), to `x` (from ei_x_new). Returns 0, or -1 (an atom over 255
 * characters, or out of memory). */
int nodes_encode_rpc(ei_x_buff *x, const erlang_pid *from, const char *module, const char *function,
                     const char *args, size_t args_len);
/* Tells the node's `init` to stop: {stop, stop} from `from`, what init:stop/0 sends. Returns
 * dist_send_reg's result. */
int nodes_send_init_stop(dist_conn *dc, const erlang_pid *from);

/* --- Spawn requests (POST /nodes): reported once all their children are up, or one is down -- */

/* A child as the tracker sees it (read on the loop thread, its writer). */
typedef struct nodes_child_status {
    cnode_state state;
    const char *node;
    const char *last_error; /* "" when none */
} nodes_child_status;
typedef void (*nodes_status_fn)(const void *child, nodes_child_status *out);

/* The requests in progress. nodes_spawns_submit may be called from any thread; the rest from
 * the loop thread (or once it has returned). */
typedef struct nodes_spawns nodes_spawns;
/* One request being built (by one thread), then submitted. */
typedef struct nodes_spawn nodes_spawn;

/* No requests; `status` reads a child. NULL when out of memory. */
nodes_spawns *nodes_spawns_new(nodes_status_fn status);
/* Frees the tracker and the requests never reported (their `done` is not called). */
void nodes_spawns_free(nodes_spawns *s);
/* A request for `count` children whose outcome goes to `done(ctx, ...)`. NULL when out of memory.
 */
nodes_spawn *nodes_spawn_new(unsigned count, gateway_spawn_fn done, void *ctx);
/* Adds a child (at most `count`). */
void nodes_spawn_add(nodes_spawn *r, void *child);
/* The children added so far. */
size_t nodes_spawn_count(const nodes_spawn *r);
void *nodes_spawn_child(const nodes_spawn *r, size_t i);
/* Frees a request that is not submitted (`done` is not called). */
void nodes_spawn_discard(nodes_spawn *r);
/* Hands a request to the tracker, which owns it from now on. Any thread. */
void nodes_spawns_submit(nodes_spawns *s, nodes_spawn *r);
/* True while a request submitted and not yet reported holds `child` (its owner must not free
 * it before). Loop thread. */
bool nodes_spawns_holds(nodes_spawns *s, const void *child);
/* Reports every request whose children are all up (names, NULL error), or of which one left
 * starting without coming up (its last error), or all of them with `shutting_down` ("the
 * gateway is shutting down" unless a child's error says more); reported requests are freed. */
void nodes_spawns_check(nodes_spawns *s, bool shutting_down);

#endif
