/* nodes: Erlang nodes nodexd starts or reaches: their specs, the children's HOME, rpc, init:stop.
 */
#ifndef NODEX_NODES_H
#define NODEX_NODES_H

#include <stdbool.h>
#include <stddef.h>

#include <ei.h>

#include "config.h"
#include "dist.h"

/* Threading: no shared state; every function may run on any thread. The supervisor keeps the
 * entries (children and peers) these specs describe. */

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

#endif
