/* grpc_reflection: gRPC server reflection answered from the descriptors protoc made at build time.
 */
#include "grpc_reflection.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/status.h>

#define REFL_MAX_DEPTH 64 /* message nesting the index follows */

/* FileDescriptorProto, DescriptorProto, ... field numbers (google/protobuf/descriptor.proto). */
enum {
    FDS_FILE = 1,
    FILE_NAME = 1,
    FILE_PACKAGE = 2,
    FILE_DEPENDENCY = 3,
    FILE_MESSAGE = 4,
    FILE_ENUM = 5,
    FILE_SERVICE = 6,
    FILE_EXTENSION = 7,
    MSG_NAME = 1,
    MSG_FIELD = 2,
    MSG_NESTED = 3,
    MSG_ENUM = 4,
    MSG_EXTENSION = 6,
    MSG_ONEOF = 8,
    ENUM_NAME = 1,
    ENUM_VALUE = 2,
    SERVICE_NAME = 1,
    SERVICE_METHOD = 2,
    NAME_FIELD = 1 /* the name of a field, enum value, method, oneof */
};

typedef struct refl_file {
    const uint8_t *data; /* the serialized FileDescriptorProto, inside the set */
    size_t len;
    char *name;
    char **dep_names;
    size_t dep_count;
    size_t *deps; /* dep_names resolved to file indexes (unknown ones left out) */
    size_t dep_found;
} refl_file;

typedef struct refl_symbol {
    char *name;
    size_t file;
} refl_symbol;

struct grpc_reflection {
    refl_file *files;
    size_t file_count, file_cap;
    refl_symbol *symbols;
    size_t symbol_count, symbol_cap;
    char **services; /* full names */
    size_t service_count, service_cap;
};

/* ------------------------------------------------------------------------------------------ */
/* Protobuf wire format, just enough to walk descriptors */

typedef struct wire {
    const uint8_t *p, *end;
} wire;

static int wire_varint(wire *w, uint64_t *out) {
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (w->p >= w->end) return -1;
        uint8_t b = *w->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

/* The next field of `w`: 1 with its number (and for a length-delimited one its bytes in *value,
 * *is_len true), 0 at the end, -1 when malformed. */
static int wire_next(wire *w, uint32_t *field, wire *value, bool *is_len) {
    if (w->p == w->end) return 0;
    uint64_t key, n;
    if (wire_varint(w, &key) != 0 || key >> 3 == 0 || key >> 3 > UINT32_MAX) return -1;
    *field = (uint32_t)(key >> 3);
    *is_len = false;
    size_t left = (size_t)(w->end - w->p);
    switch (key & 7) {
    case 0: return wire_varint(w, &n) == 0 ? 1 : -1;
    case 1: n = 8; break;
    case 5: n = 4; break;
    case 2:
        if (wire_varint(w, &n) != 0) return -1;
        left = (size_t)(w->end - w->p);
        value->p = w->p;
        value->end = w->p + (n <= left ? n : 0);
        *is_len = true;
        break;
    default: return -1; /* groups: descriptors have none */
    }
    if (n > left) return -1;
    w->p += n;
    return 1;
}

/* The last length-delimited field `field` of message `msg` as a malloc'd string ("" when absent),
 * or NULL when malformed or out of memory. */
static char *wire_string(wire msg, uint32_t field) {
    wire v = {0}, found = {0};
    uint32_t f;
    bool is_len, have = false;
    int rc;
    while ((rc = wire_next(&msg, &f, &v, &is_len)) == 1)
        if (f == field && is_len) {
            found = v;
            have = true;
        }
    if (rc < 0) return NULL;
    size_t n = have ? (size_t)(found.end - found.p) : 0;
    char *s = malloc(n + 1);
    if (!s) return NULL;
    if (n) memcpy(s, found.p, n);
    s[n] = '\0';
    return s;
}

/* ------------------------------------------------------------------------------------------ */
/* The index */

/* Room for one more element in *arr (of `size` bytes each). */
static int grow(void **arr, size_t *cap, size_t count, size_t size) {
    if (count < *cap) return 0;
    size_t n = *cap ? *cap * 2 : 16;
    void *p = realloc(*arr, n * size);
    if (!p) return -1;
    *arr = p;
    *cap = n;
    return 0;
}

/* "scope.name", or "name" in the empty scope (malloc'd, NULL when out of memory). */
static char *join(const char *scope, const char *name) {
    size_t ls = strlen(scope), ln = strlen(name);
    char *s = malloc(ls + ln + 2);
    if (!s) return NULL;
    if (ls)
        snprintf(s, ls + ln + 2, "%s.%s", scope, name);
    else
        memcpy(s, name, ln + 1);
    return s;
}

/* Adds symbol `full` (taken, may be NULL: out of memory) defined by file `file`. */
static int add_symbol(grpc_reflection *r, char *full, size_t file) {
    if (!full || grow((void **)&r->symbols, &r->symbol_cap, r->symbol_count, sizeof *r->symbols)) {
        free(full);
        return -1;
    }
    r->symbols[r->symbol_count++] = (refl_symbol){.name = full, .file = file};
    return 0;
}

/* Adds `scope`.name-of(`msg`) (the name in field NAME_FIELD); *full gets it when asked. */
static int add_named(grpc_reflection *r, wire msg, const char *scope, size_t file,
                     const char **full) {
    char *name = wire_string(msg, NAME_FIELD);
    if (!name) return -1;
    char *s = join(scope, name);
    free(name);
    if (add_symbol(r, s, file) != 0) return -1;
    if (full) *full = s;
    return 0;
}

/* Adds scope.name for each length-delimited field `field` of `msg` (a child's name is its own
 * field NAME_FIELD). */
static int add_children(grpc_reflection *r, wire msg, uint32_t field, const char *scope,
                        size_t file) {
    wire v;
    uint32_t f;
    bool is_len;
    int rc;
    while ((rc = wire_next(&msg, &f, &v, &is_len)) == 1)
        if (f == field && is_len && add_named(r, v, scope, file, NULL) != 0) return -1;
    return rc;
}

/* An enum and its values (in the enum's parent scope, as protobuf scopes them). */
static int index_enum(grpc_reflection *r, wire e, const char *scope, size_t file) {
    if (add_named(r, e, scope, file, NULL) != 0) return -1;
    return add_children(r, e, ENUM_VALUE, scope, file);
}

static int index_message(grpc_reflection *r, wire m, const char *scope, size_t file,
                         unsigned depth) {
    const char *full;
    if (depth > REFL_MAX_DEPTH || add_named(r, m, scope, file, &full) != 0) return -1;
    wire v;
    uint32_t f;
    bool is_len;
    int rc;
    while ((rc = wire_next(&m, &f, &v, &is_len)) == 1) {
        if (!is_len) continue;
        int sub = 0;
        if (f == MSG_FIELD || f == MSG_EXTENSION || f == MSG_ONEOF)
            sub = add_named(r, v, full, file, NULL);
        else if (f == MSG_NESTED)
            sub = index_message(r, v, full, file, depth + 1);
        else if (f == MSG_ENUM)
            sub = index_enum(r, v, full, file);
        if (sub != 0) return -1;
        /* r->symbols may have moved, not the string `full` points to */
    }
    return rc;
}

static int index_service(grpc_reflection *r, wire s, const char *package, size_t file) {
    const char *full;
    if (add_named(r, s, package, file, &full) != 0) return -1;
    char *copy = strdup(full);
    if (!copy ||
        grow((void **)&r->services, &r->service_cap, r->service_count, sizeof *r->services)) {
        free(copy);
        return -1;
    }
    r->services[r->service_count++] = copy;
    return add_children(r, s, SERVICE_METHOD, full, file);
}

static int index_file(grpc_reflection *r, wire fd) {
    if (grow((void **)&r->files, &r->file_cap, r->file_count, sizeof *r->files)) return -1;
    size_t index = r->file_count++;
    refl_file *file = &r->files[index];
    memset(file, 0, sizeof *file);
    file->data = fd.p;
    file->len = (size_t)(fd.end - fd.p);
    char *package = wire_string(fd, FILE_PACKAGE);
    if (!(file->name = wire_string(fd, FILE_NAME)) || !package) {
        free(package);
        return -1;
    }
    wire v;
    uint32_t f;
    bool is_len;
    int rc;
    while ((rc = wire_next(&fd, &f, &v, &is_len)) == 1) {
        if (!is_len) continue;
        int sub = 0;
        file = &r->files[index];
        if (f == FILE_DEPENDENCY) {
            char **d = realloc(file->dep_names, (file->dep_count + 1) * sizeof *d);
            char *name = malloc((size_t)(v.end - v.p) + 1);
            if (d) file->dep_names = d;
            if (!d || !name) {
                free(name);
                sub = -1;
            } else {
                memcpy(name, v.p, (size_t)(v.end - v.p));
                name[v.end - v.p] = '\0';
                d[file->dep_count++] = name;
            }
        } else if (f == FILE_MESSAGE) {
            sub = index_message(r, v, package, index, 0);
        } else if (f == FILE_ENUM) {
            sub = index_enum(r, v, package, index);
        } else if (f == FILE_SERVICE) {
            sub = index_service(r, v, package, index);
        } else if (f == FILE_EXTENSION) {
            sub = add_named(r, v, package, index, NULL);
        }
        if (sub != 0) {
            rc = -1;
            break;
        }
    }
    free(package);
    return rc;
}

static long find_file(const grpc_reflection *r, const char *name) {
    for (size_t i = 0; i < r->file_count; i++)
        if (strcmp(r->files[i].name, name) == 0) return (long)i;
    return -1;
}

/* Each file's dependencies as indexes. */
static int resolve_deps(grpc_reflection *r) {
    for (size_t i = 0; i < r->file_count; i++) {
        refl_file *f = &r->files[i];
        f->deps = calloc(f->dep_count ? f->dep_count : 1, sizeof *f->deps);
        if (!f->deps) return -1;
        for (size_t d = 0; d < f->dep_count; d++) {
            long at = find_file(r, f->dep_names[d]);
            if (at >= 0) f->deps[f->dep_found++] = (size_t)at;
        }
    }
    return 0;
}

grpc_reflection *grpc_reflection_new(const uint8_t *set, size_t len, char *err, size_t err_len) {
    grpc_reflection *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    wire w = {set, set + len}, v;
    uint32_t f;
    bool is_len;
    int rc;
    while ((rc = wire_next(&w, &f, &v, &is_len)) == 1)
        if (f == FDS_FILE && is_len && index_file(r, v) != 0) {
            rc = -1;
            break;
        }
    if (rc < 0 || resolve_deps(r) != 0) {
        snprintf(err, err_len, "the descriptor set is malformed (or out of memory)");
        grpc_reflection_free(r);
        return NULL;
    }
    return r;
}

void grpc_reflection_free(grpc_reflection *r) {
    if (!r) return;
    for (size_t i = 0; i < r->file_count; i++) {
        refl_file *f = &r->files[i];
        for (size_t d = 0; d < f->dep_count; d++) free(f->dep_names[d]);
        free(f->dep_names);
        free(f->deps);
        free(f->name);
    }
    free(r->files);
    for (size_t i = 0; i < r->symbol_count; i++) free(r->symbols[i].name);
    free(r->symbols);
    for (size_t i = 0; i < r->service_count; i++) free(r->services[i]);
    free(r->services);
    free(r);
}

size_t grpc_reflection_service_count(const grpc_reflection *r) {
    return r->service_count;
}

const char *grpc_reflection_service(const grpc_reflection *r, size_t i) {
    return i < r->service_count ? r->services[i] : NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Answers */

static long find_symbol(const grpc_reflection *r, const char *name) {
    for (size_t i = 0; i < r->symbol_count; i++)
        if (strcmp(r->symbols[i].name, name) == 0) return (long)r->symbols[i].file;
    return -1;
}

/* File `f`, then what it depends on, each once, into order[*n]. */
static void closure(const grpc_reflection *r, size_t f, bool *seen, size_t *order, size_t *n) {
    if (seen[f]) return;
    seen[f] = true;
    order[(*n)++] = f;
    for (size_t d = 0; d < r->files[f].dep_found; d++)
        closure(r, r->files[f].deps[d], seen, order, n);
}

static void answer_error(grpc_reflection_answer *a, int code, const char *what, const char *name) {
    snprintf(a->message, sizeof a->message, "%s %.200s", what, name ? name : "");
    grpc__reflection__v1__error_response__init(&a->error);
    a->error.error_code = code;
    a->error.error_message = a->message;
    a->response.message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
    a->response.error_response = &a->error;
}

static int answer_files(const grpc_reflection *r, long f, grpc_reflection_answer *a,
                        const char *what, const char *name) {
    if (f < 0) {
        answer_error(a, GRPC_STATUS_NOT_FOUND, what, name);
        return 0;
    }
    bool *seen = calloc(r->file_count, sizeof *seen);
    size_t *order = calloc(r->file_count, sizeof *order);
    a->file_protos = calloc(r->file_count, sizeof *a->file_protos);
    if (!seen || !order || !a->file_protos) {
        free(seen);
        free(order);
        grpc_reflection_answer_clear(a);
        return -1;
    }
    size_t n = 0;
    closure(r, (size_t)f, seen, order, &n);
    for (size_t i = 0; i < n; i++) {
        a->file_protos[i].data = (uint8_t *)r->files[order[i]].data;
        a->file_protos[i].len = r->files[order[i]].len;
    }
    free(seen);
    free(order);
    grpc__reflection__v1__file_descriptor_response__init(&a->files);
    a->files.n_file_descriptor_proto = n;
    a->files.file_descriptor_proto = a->file_protos;
    a->response.message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
    a->response.file_descriptor_response = &a->files;
    return 0;
}

static int answer_list(const grpc_reflection *r, grpc_reflection_answer *a) {
    size_t n = r->service_count;
    a->services = calloc(n ? n : 1, sizeof *a->services);
    a->service_ptrs = calloc(n ? n : 1, sizeof *a->service_ptrs);
    if (!a->services || !a->service_ptrs) {
        grpc_reflection_answer_clear(a);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        grpc__reflection__v1__service_response__init(&a->services[i]);
        a->services[i].name = r->services[i];
        a->service_ptrs[i] = &a->services[i];
    }
    grpc__reflection__v1__list_service_response__init(&a->list);
    a->list.n_service = n;
    a->list.service = a->service_ptrs;
    a->response.message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
    a->response.list_services_response = &a->list;
    return 0;
}

int grpc_reflection_answer_to(const grpc_reflection *r,
                              const Grpc__Reflection__V1__ServerReflectionRequest *req,
                              grpc_reflection_answer *a) {
    memset(a, 0, sizeof *a);
    grpc__reflection__v1__server_reflection_response__init(&a->response);
    if (req->host) a->response.valid_host = req->host;
    a->response.original_request = (Grpc__Reflection__V1__ServerReflectionRequest *)req;
    switch (req->message_request_case) {
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
        return answer_list(r, a);
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
        return answer_files(r, find_file(r, req->file_by_filename), a, "no file named",
                            req->file_by_filename);
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
        return answer_files(r, find_symbol(r, req->file_containing_symbol), a, "no symbol named",
                            req->file_containing_symbol);
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION:
        answer_error(a, GRPC_STATUS_NOT_FOUND, "no extensions are defined: none of",
                     req->file_containing_extension
                         ? req->file_containing_extension->containing_type
                         : NULL);
        return 0;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE:
        answer_error(a, GRPC_STATUS_NOT_FOUND, "no extensions are defined: none of",
                     req->all_extension_numbers_of_type);
        return 0;
    default:
        answer_error(a, GRPC_STATUS_UNIMPLEMENTED, "a reflection request of no known kind", NULL);
        return 0;
    }
}

void grpc_reflection_answer_clear(grpc_reflection_answer *a) {
    free(a->file_protos);
    free(a->services);
    free(a->service_ptrs);
    a->file_protos = NULL;
    a->services = NULL;
    a->service_ptrs = NULL;
}
