/* grpc_reflection: gRPC server reflection answered from the descriptors protoc made at build time.
 */
#ifndef NODEX_GRPC_REFLECTION_H
#define NODEX_GRPC_REFLECTION_H

#include <stddef.h>
#include <stdint.h>

#include "grpc/reflection/v1/reflection.pb-c.h"

/* The FileDescriptorSet that `protoc --descriptor_set_out --include_imports` made of every file
 * nodexd serves (nodex.proto, health, reflection v1 and v1alpha), embedded by the build
 * (cmake/embed.cmake). */
extern const unsigned char nodex_descriptor_set[];
extern const size_t nodex_descriptor_set_len;

/* An index of a FileDescriptorSet: its files by name with their dependencies, the symbols each
 * file defines (services, methods, messages, fields, enums and enum values, nested ones too, by
 * full name) and the services. Read-only once made: any thread. */
typedef struct grpc_reflection grpc_reflection;

/* Indexes the serialized FileDescriptorSet `set` (not copied: it must outlive the index).
 * Returns NULL with the reason in err (not a descriptor set, out of memory). Free with
 * grpc_reflection_free. */
grpc_reflection *grpc_reflection_new(const uint8_t *set, size_t len, char *err, size_t err_len);
void grpc_reflection_free(grpc_reflection *r);
/* How many services the set defines, and the full name of the i-th ("nodex.v1.Gateway"), in
 * the set's order (NULL past the end). */
size_t grpc_reflection_service_count(const grpc_reflection *r);
const char *grpc_reflection_service(const grpc_reflection *r, size_t i);

/* One response with the storage it points into. */
typedef struct grpc_reflection_answer {
    Grpc__Reflection__V1__ServerReflectionResponse response;
    Grpc__Reflection__V1__FileDescriptorResponse files;
    Grpc__Reflection__V1__ListServiceResponse list;
    Grpc__Reflection__V1__ErrorResponse error;
    ProtobufCBinaryData *file_protos;                     /* malloc'd */
    Grpc__Reflection__V1__ServiceResponse *services;      /* malloc'd */
    Grpc__Reflection__V1__ServiceResponse **service_ptrs; /* malloc'd */
    char message[320];
} grpc_reflection_answer;

/* Answers `req` in a->response (the same on the wire for v1 and v1alpha): list_services with
 * every service of the set; file_by_filename and file_containing_symbol with that file and,
 * after it, every file it depends on (transitively); an error_response NOT_FOUND for an unknown
 * file or symbol and for the extension requests (nodexd's files define no extensions),
 * UNIMPLEMENTED for a request of no known kind. The response points into `r`, `req` and `a`:
 * pack it while they live, then grpc_reflection_answer_clear. Returns 0, or -1 when out of
 * memory (nothing to clear). Any thread. */
int grpc_reflection_answer_to(const grpc_reflection *r,
                              const Grpc__Reflection__V1__ServerReflectionRequest *req,
                              grpc_reflection_answer *a);
/* Frees what an answer allocated. */
void grpc_reflection_answer_clear(grpc_reflection_answer *a);

#endif
