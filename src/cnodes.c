/* cnodes: the configured C-nodes as groups of instances: lookup, start, service and reload. */
#include "cnodes.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

typedef struct cnode_group cnode_group;

/* A configured C-node: its instances, made from one config_cnode. A reload that removes or
 * changes it takes it off `groups` (no thread finds it from then on) and onto `retired`, where
 * its instances finish their calls in flight and stop; it is freed once all have. */
struct cnode_group {
    const config_cnode *cfg; /* lives as long as the process (configs are kept until exit) */
    entry *inst;             /* cfg->instances entries */
    size_t index;            /* in groups while not removed */
    bool removed;            /* on retired (loop thread; set under mu) */
    bool started;            /* its instances were started (loop thread) */
    cnode_group *retired_next;
};

struct cnodes {
    const entry_host *host;
    cnode_group **groups; /* in config order: changed by the loop under mu */
    size_t count;
    cnode_group *retired; /* removed or replaced by a reload, still stopping (loop thread) */
};

/* Frees a group and what its instances hold. */
static void cnodes_group_free(cnode_group *g) {
    if (!g) return;
    entry_array_free(g->inst, g->cfg->instances);
    free(g);
}

/* A configured C-node's instances, set up but not started. NULL with err. */
static cnode_group *cnodes_group_new(const entry_host *h, const config_cnode *cfg, char *err,
                                     size_t err_len) {
    cnode_group *g = calloc(1, sizeof *g);
    if (g) g->cfg = cfg;
    if (!g || !(g->inst = entry_array_new(cfg->instances))) {
        snprintf(err, err_len, "out of memory");
        free(g);
        return NULL;
    }
    for (unsigned i = 0; i < cfg->instances; i++) {
        if (entry_init_cnode(g->inst, i + 1, h, cfg, g, err, err_len) != 0) {
            cnodes_group_free(g);
            return NULL;
        }
    }
    return g;
}

cnodes *cnodes_new(const entry_host *h, const config *cfg, char *err, size_t err_len) {
    cnodes *cs = calloc(1, sizeof *cs);
    if (cs) cs->host = h;
    if (!cs ||
        !(cs->groups = calloc(cfg->cnode_count ? cfg->cnode_count : 1, sizeof *cs->groups))) {
        snprintf(err, err_len, "out of memory");
        free(cs);
        return NULL;
    }
    for (size_t i = 0; i < cfg->cnode_count; i++, cs->count++) {
        if (!(cs->groups[i] = cnodes_group_new(h, &cfg->cnodes[i], err, err_len))) {
            cnodes_free(cs);
            return NULL;
        }
        cs->groups[i]->index = i;
    }
    return cs;
}

void cnodes_free(cnodes *cs) {
    if (!cs) return;
    for (size_t i = 0; i < cs->count; i++) cnodes_group_free(cs->groups[i]);
    for (cnode_group *g = cs->retired, *next; g; g = next) {
        next = g->retired_next;
        cnodes_group_free(g);
    }
    free(cs->groups);
    free(cs);
}

size_t cnodes_count_locked(const cnodes *cs) {
    return cs->count;
}

entry *cnodes_at_locked(const cnodes *cs, size_t index) {
    return index < cs->count ? cs->groups[index]->inst : NULL;
}

entry *cnodes_find_locked(const cnodes *cs, const char *name) {
    for (size_t i = 0; i < cs->count; i++)
        if (strcmp(cs->groups[i]->cfg->name, name) == 0) return cs->groups[i]->inst;
    return NULL;
}

entry *cnodes_back_instance(const cnodes *cs, const char *node) {
    for (size_t i = 0; i < cs->count; i++) {
        cnode_group *g = cs->groups[i];
        if (g->cfg->direction != CNODE_DIRECTION_BACK) continue;
        for (unsigned k = 0; k < g->cfg->instances; k++)
            if (strcmp(entry_node(entry_at(g->inst, k)), node) == 0) return entry_at(g->inst, k);
    }
    return NULL;
}

/* The group after `g` (NULL: the first): the configured ones, then those still stopping. */
static cnode_group *cnodes_group_next(const cnodes *cs, const cnode_group *g) {
    if (!g) return cs->count ? cs->groups[0] : cs->retired;
    if (g->removed) return g->retired_next;
    return g->index + 1 < cs->count ? cs->groups[g->index + 1] : cs->retired;
}

entry *cnodes_next(const cnodes *cs, const entry *prev) {
    const cnode_group *pg = prev ? entry_group(prev) : NULL;
    unsigned i = prev ? entry_instance(prev) : 0; /* 1-based: the next one's index */
    if (pg && i < pg->cfg->instances) return entry_at(pg->inst, i);
    cnode_group *g = cnodes_group_next(cs, pg);
    return g ? g->inst : NULL;
}

/* Starts every instance of a C-node. */
static void cnodes_group_start(cnode_group *g) {
    g->started = true;
    for (unsigned i = 0; i < g->cfg->instances; i++) entry_start(entry_at(g->inst, i));
}

void cnodes_start(cnodes *cs) {
    for (size_t i = 0; i < cs->count; i++) cnodes_group_start(cs->groups[i]);
}

/* True while a group that is still stopping has an instance with one of `g`'s node names: the
 * name is taken (epmd, the C-node's own checks) until that process is gone. */
static bool cnodes_group_blocked(const cnodes *cs, const cnode_group *g) {
    for (const cnode_group *old = cs->retired; old; old = old->retired_next)
        for (unsigned i = 0; i < old->cfg->instances; i++)
            for (unsigned k = 0; k < g->cfg->instances; k++)
                if (strcmp(entry_node(entry_at(old->inst, i)), entry_node(entry_at(g->inst, k))) ==
                    0)
                    return true;
    return false;
}

/* True once nothing of a retired group's runs or refers to it. */
static bool cnodes_group_done(const cnodes *cs, const cnode_group *g) {
    bool done = true;
    pthread_mutex_lock(cs->host->mu);
    for (unsigned i = 0; i < g->cfg->instances && done; i++)
        done = entry_done_locked(entry_at(g->inst, i));
    pthread_mutex_unlock(cs->host->mu);
    return done;
}

/* Frees the groups a reload retired that have stopped. */
static void cnodes_free_retired(cnodes *cs) {
    for (cnode_group **pp = &cs->retired; *pp;) {
        cnode_group *g = *pp;
        if (!cnodes_group_done(cs, g)) {
            pp = &g->retired_next;
            continue;
        }
        *pp = g->retired_next;
        log_info("cnode %s: the instances a reload retired have stopped", g->cfg->name);
        cnodes_group_free(g);
    }
}

void cnodes_service(cnodes *cs, int64_t now) {
    for (entry *cn = cnodes_next(cs, NULL), *nx; cn; cn = nx) {
        nx = cnodes_next(cs, cn);
        cnode_group *g = entry_group(cn);
        if (g->removed) {
            entry_retire_service(cn);
        } else if (!g->started) {
            if (entry_instance(cn) == 1 && !cnodes_group_blocked(cs, g)) cnodes_group_start(g);
            continue; /* a reload's group waits until the one it replaces has stopped */
        } else {
            entry_service(cn);
        }
        entry_timers(cn, now);
    }
    if (cs->retired) cnodes_free_retired(cs);
}

/* The configured group named `name`, or NULL (loop thread: the only writer of groups). */
static cnode_group *cnodes_group_by_name(const cnodes *cs, const char *name) {
    for (size_t i = 0; i < cs->count; i++)
        if (strcmp(cs->groups[i]->cfg->name, name) == 0) return cs->groups[i];
    return NULL;
}

/* True when `g` is one of the `n` groups in `list`. */
static bool cnodes_group_listed(cnode_group *const *list, size_t n, const cnode_group *g) {
    for (size_t i = 0; i < n; i++)
        if (list[i] == g) return true;
    return false;
}

/* True when one of the `n` groups in `list` is named `name`. */
static bool cnodes_group_named(cnode_group *const *list, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i]->cfg->name, name) == 0) return true;
    return false;
}

int cnodes_reload(cnodes *cs, const config *next, gateway_reload_counts *out, char *err,
                  size_t err_len) {
    *out = (gateway_reload_counts){0};
    size_t n = next->cnode_count;
    cnode_group **groups = calloc(n ? n : 1, sizeof *groups);
    if (!groups) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    /* Everything new is set up first: a C-node that cannot be (its executable is gone) refuses
     * the whole reload, and nothing has changed yet. */
    for (size_t i = 0; i < n; i++) {
        const config_cnode *want = &next->cnodes[i];
        cnode_group *had = cnodes_group_by_name(cs, want->name);
        if (had && had->cfg->fingerprint == want->fingerprint) {
            groups[i] = had; /* unchanged: it runs on, untouched */
            continue;
        }
        if (!(groups[i] = cnodes_group_new(cs->host, want, err, err_len))) {
            /* The new ones, each in groups[] once (the analyzer assumes two slots may alias). */
            for (size_t k = 0; k < i; k++)
                if (groups[k]->cfg == &next->cnodes[k]) /* NOLINT(clang-analyzer-unix.Malloc) */
                    cnodes_group_free(groups[k]);
            free(groups);
            return -1;
        }
    }
    pthread_mutex_lock(cs->host->mu);
    cnode_group **was = cs->groups;
    size_t was_count = cs->count;
    for (size_t i = 0; i < was_count; i++) {
        cnode_group *g = was[i];
        if (cnodes_group_listed(groups, n, g)) continue;
        g->removed = true; /* from now on no call, cast or lookup finds it */
        entry_group_set_removing_locked(g->inst);
        g->retired_next = cs->retired;
        cs->retired = g;
    }
    for (size_t i = 0; i < n; i++) groups[i]->index = i;
    cs->groups = groups;
    cs->count = n;
    pthread_mutex_unlock(cs->host->mu);
    for (size_t i = 0; i < n; i++) {
        if (groups[i]->cfg != &next->cnodes[i]) {
            out->kept++;
            continue;
        }
        bool had = cnodes_group_named(was, was_count, groups[i]->cfg->name);
        if (had)
            out->changed++;
        else
            out->added++;
        log_info("reload: cnode %s %s", groups[i]->cfg->name,
                 had ? "changed: its instances finish their calls in flight and stop, then the "
                       "new ones start (calls meanwhile wait: max_waiting)"
                     : "added: starting");
    }
    for (size_t i = 0; i < was_count; i++) {
        cnode_group *g = was[i];
        if (!g->removed) continue;
        bool replaced = cnodes_group_named(groups, n, g->cfg->name);
        if (!replaced) {
            out->removed++;
            log_info("reload: cnode %s removed: its instances finish their calls in flight and "
                     "stop",
                     g->cfg->name);
        }
        char detail[160];
        snprintf(detail, sizeof detail, "C-node %.64s was %s by a reload", g->cfg->name,
                 replaced ? "reconfigured" : "removed");
        entry_fail_waiting(g->inst, detail);
    }
    free(was);
    return 0;
}
