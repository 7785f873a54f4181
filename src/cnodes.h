/* cnodes: the configured C-nodes, one group of instances each, and what a reload does to them. */
#ifndef NODEX_CNODES_H
#define NODEX_CNODES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "entry.h"
#include "gateway.h"

/* Threading: the loop thread is the only one that changes the set (cnodes_reload) and frees
 * groups, under host->mu; `_locked` functions may run on any thread with host->mu held, and
 * the entries they return are valid only while it is held (a reload may retire a group once it
 * is released). Ownership: cnodes owns every group and its entries, retired ones included. */

typedef struct cnodes cnodes;

/* Sets up an instance group for each of cfg's C-nodes (names, executables), none started.
 * Returns NULL with err. `cfg` must outlive it. Before the loop runs. */
cnodes *cnodes_new(const entry_host *h, const config *cfg, char *err, size_t err_len);
/* Frees every group (closing connections); the loop has returned. NULL is a no-op. */
void cnodes_free(cnodes *cs);
/* How many C-nodes are configured. Caller holds host->mu. */
size_t cnodes_count_locked(const cnodes *cs);
/* The first instance of the C-node at `index` in config order, or NULL. Caller holds mu. */
entry *cnodes_at_locked(const cnodes *cs, size_t index);
/* The first instance of the C-node named `name`, or NULL. Caller holds host->mu. */
entry *cnodes_find_locked(const cnodes *cs, const char *name);
/* The instance of a `back` C-node whose node name is `node`, or NULL. Loop thread. */
entry *cnodes_back_instance(const cnodes *cs, const char *node);
/* The instance after `prev` (NULL: the first): every configured one, then those a reload
 * retired that are still stopping; NULL after the last. Loop thread. */
entry *cnodes_next(const cnodes *cs, const entry *prev);
/* Starts every instance of every configured C-node (gateway_run). Loop thread. */
void cnodes_start(cnodes *cs);
/* Each instance's periodic duties and phase timers; a reload's new group starts once the one it
 * replaces has stopped; a retired one stops after its calls in flight, and is freed once
 * nothing of it runs. Loop thread (the sweep). */
void cnodes_service(cnodes *cs, int64_t now);
/* Applies a reloaded configuration's C-nodes (see gateway_reload_cnodes). Loop thread. */
int cnodes_reload(cnodes *cs, const config *next, gateway_reload_counts *out, char *err,
                  size_t err_len);

#endif
