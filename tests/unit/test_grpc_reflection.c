/* test_grpc_reflection: server reflection over the descriptor set the build embeds (every served
 * service listed, files found by name and by symbol of every kind, unknown names and extension
 * requests NOT_FOUND), dependencies sent after their file, and malformed sets refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc_reflection.h"

typedef Grpc__Reflection__V1__ServerReflectionRequest request;

#define CASE(x)   GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_##x
#define ANSWER(x) GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_##x

static grpc_reflection *built(void) {
    char err[256] = "";
    grpc_reflection *r =
        grpc_reflection_new(nodex_descriptor_set, nodex_descriptor_set_len, err, sizeof err);
    if (!r) fail_msg("grpc_reflection_new: %s", err);
    return r;
}

static request ask(int kind, const char *what) {
    request q = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
    q.message_request_case =
        (Grpc__Reflection__V1__ServerReflectionRequest__MessageRequestCase)kind;
    q.file_by_filename = (char *)what; /* every string member of the union */
    return q;
}

/* The name of a serialized FileDescriptorProto (its field 1, which protoc writes first). */
static void file_name(const ProtobufCBinaryData *f, char *out, size_t cap) {
    assert_true(f->len > 2);
    assert_int_equal(f->data[0], 0x0a);
    size_t n = f->data[1];
    assert_true(n < 128 && n + 2 <= f->len && n < cap);
    memcpy(out, f->data + 2, n);
    out[n] = '\0';
}

/* The names of the files of a file_descriptor_response, comma-separated. */
static void answer_files(const grpc_reflection_answer *a, char *out, size_t cap) {
    assert_int_equal(a->response.message_response_case, ANSWER(FILE_DESCRIPTOR_RESPONSE));
    out[0] = '\0';
    for (size_t i = 0; i < a->response.file_descriptor_response->n_file_descriptor_proto; i++) {
        char name[128];
        file_name(&a->response.file_descriptor_response->file_descriptor_proto[i], name,
                  sizeof name);
        size_t len = strlen(out);
        snprintf(out + len, cap - len, "%s%s", i ? "," : "", name);
    }
}

/* Packs the response and reads it back: the answer is a valid message on the wire. */
static void assert_packs(const grpc_reflection_answer *a) {
    size_t n = protobuf_c_message_get_packed_size(&a->response.base);
    uint8_t *buf = malloc(n ? n : 1);
    assert_non_null(buf);
    assert_int_equal(protobuf_c_message_pack(&a->response.base, buf), n);
    Grpc__Reflection__V1__ServerReflectionResponse *back =
        grpc__reflection__v1__server_reflection_response__unpack(NULL, n, buf);
    assert_non_null(back);
    assert_int_equal(back->message_response_case, a->response.message_response_case);
    grpc__reflection__v1__server_reflection_response__free_unpacked(back, NULL);
    free(buf);
}

static void test_the_built_set_lists_every_served_service(void **state) {
    (void)state;
    grpc_reflection *r = built();
    const char *want[] = {"nodex.v1.Gateway", "grpc.health.v1.Health",
                          "grpc.reflection.v1.ServerReflection",
                          "grpc.reflection.v1alpha.ServerReflection"};
    assert_int_equal(grpc_reflection_service_count(r), 4);
    for (size_t i = 0; i < 4; i++) assert_string_equal(grpc_reflection_service(r, i), want[i]);
    assert_null(grpc_reflection_service(r, 4));
    request q = ask(CASE(LIST_SERVICES), "");
    q.host = "example:50051";
    grpc_reflection_answer a;
    assert_int_equal(grpc_reflection_answer_to(r, &q, &a), 0);
    assert_int_equal(a.response.message_response_case, ANSWER(LIST_SERVICES_RESPONSE));
    assert_int_equal(a.response.list_services_response->n_service, 4);
    for (size_t i = 0; i < 4; i++)
        assert_string_equal(a.response.list_services_response->service[i]->name, want[i]);
    assert_string_equal(a.response.valid_host, "example:50051");
    assert_ptr_equal(a.response.original_request, &q);
    assert_packs(&a);
    grpc_reflection_answer_clear(&a);
    grpc_reflection_free(r);
}

static void test_file_containing_symbol_finds_every_kind_of_symbol(void **state) {
    (void)state;
    grpc_reflection *r = built();
    static const char *const nodex[] = {
        "nodex.v1.Gateway",
        "nodex.v1.Gateway.Call",
        "nodex.v1.Gateway.Health",
        "nodex.v1.CallRequest",
        "nodex.v1.CallRequest.cnode" /* a field */,
        "nodex.v1.Term.kind" /* a oneof */,
        "nodex.v1.State",
        "nodex.v1.UP" /* an enum value, in the enum's scope */,
        "nodex.v1.Event.Kind" /* nested enum */,
        "nodex.v1.Event.ERLANG_NODE",
        "nodex.v1.CnodeInfo.IgnoredControlsEntry" /* a map's entry */,
    };
    for (size_t i = 0; i < sizeof nodex / sizeof nodex[0]; i++) {
        request q = ask(CASE(FILE_CONTAINING_SYMBOL), nodex[i]);
        grpc_reflection_answer a;
        assert_int_equal(grpc_reflection_answer_to(r, &q, &a), 0);
        char files[512];
        answer_files(&a, files, sizeof files);
        if (strcmp(files, "nodex/v1/nodex.proto") != 0) fail_msg("%s: %s", nodex[i], files);
        grpc_reflection_answer_clear(&a);
    }
    static const char *const std[][2] = {
        {"grpc.health.v1.Health.Watch", "grpc/health/v1/health.proto"},
        {"grpc.health.v1.HealthCheckResponse.ServingStatus", "grpc/health/v1/health.proto"},
        {"grpc.health.v1.HealthCheckResponse.SERVICE_UNKNOWN", "grpc/health/v1/health.proto"},
        {"grpc.reflection.v1.ServerReflection", "grpc/reflection/v1/reflection.proto"},
        {"grpc.reflection.v1alpha.ServerReflection.ServerReflectionInfo",
         "grpc/reflection/v1alpha/reflection.proto"},
    };
    for (size_t i = 0; i < sizeof std / sizeof std[0]; i++) {
        request q = ask(CASE(FILE_CONTAINING_SYMBOL), std[i][0]);
        grpc_reflection_answer a;
        assert_int_equal(grpc_reflection_answer_to(r, &q, &a), 0);
        char files[512];
        answer_files(&a, files, sizeof files);
        assert_string_equal(files, std[i][1]);
        assert_packs(&a);
        grpc_reflection_answer_clear(&a);
    }
    grpc_reflection_free(r);
}

static void test_files_are_the_bytes_protoc_made(void **state) {
    (void)state;
    grpc_reflection *r = built();
    request q = ask(CASE(FILE_BY_FILENAME), "grpc/health/v1/health.proto");
    grpc_reflection_answer a;
    assert_int_equal(grpc_reflection_answer_to(r, &q, &a), 0);
    char files[512];
    answer_files(&a, files, sizeof files);
    assert_string_equal(files, "grpc/health/v1/health.proto");
    /* a slice of the embedded set, not a copy or a re-encoding */
    const ProtobufCBinaryData *f = &a.response.file_descriptor_response->file_descriptor_proto[0];
    assert_true(f->data > nodex_descriptor_set &&
                f->data + f->len <= nodex_descriptor_set + nodex_descriptor_set_len);
    grpc_reflection_answer_clear(&a);
    grpc_reflection_free(r);
}

static void test_unknown_names_and_extension_requests_are_not_found(void **state) {
    (void)state;
    grpc_reflection *r = built();
    struct {
        int kind;
        const char *what;
        int code;
    } cases[] = {
        {CASE(FILE_BY_FILENAME), "nope.proto", 5},
        {CASE(FILE_BY_FILENAME), "", 5},
        {CASE(FILE_CONTAINING_SYMBOL), "nodex.v1.Nope", 5},
        {CASE(FILE_CONTAINING_SYMBOL), "nodex.v1.Gateway.", 5},
        {CASE(FILE_CONTAINING_SYMBOL), "Gateway", 5},
        {CASE(ALL_EXTENSION_NUMBERS_OF_TYPE), "nodex.v1.Term", 5},
        {CASE(_NOT_SET), NULL, 12 /* UNIMPLEMENTED */},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        request q = ask(cases[i].kind, cases[i].what);
        grpc_reflection_answer a;
        assert_int_equal(grpc_reflection_answer_to(r, &q, &a), 0);
        assert_int_equal(a.response.message_response_case, ANSWER(ERROR_RESPONSE));
        assert_int_equal(a.response.error_response->error_code, cases[i].code);
        if (cases[i].what && cases[i].what[0])
            assert_non_null(strstr(a.response.error_response->error_message, cases[i].what));
        assert_packs(&a);
        grpc_reflection_answer_clear(&a);
    }
    Grpc__Reflection__V1__ExtensionRequest ext = GRPC__REFLECTION__V1__EXTENSION_REQUEST__INIT;
    ext.containing_type = "nodex.v1.Term";
    ext.extension_number = 100;
    request q = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
    q.message_request_case = CASE(FILE_CONTAINING_EXTENSION);
    q.file_containing_extension = &ext;
    grpc_reflection_answer a;
    assert_int_equal(grpc_reflection_answer_to(r, &q, &a), 0);
    assert_int_equal(a.response.error_response->error_code, 5);
    assert_non_null(strstr(a.response.error_response->error_message, "nodex.v1.Term"));
    grpc_reflection_answer_clear(&a);
    grpc_reflection_free(r);
}

/* ---- a small set written here: dependencies, and malformed input ------------------------- */

typedef struct wbuf {
    uint8_t b[512];
    size_t n;
} wbuf;

static void put_varint(wbuf *w, uint64_t v) {
    do {
        assert_true(w->n < sizeof w->b);
        w->b[w->n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
}

static void put_bytes(wbuf *w, unsigned field, const void *data, size_t len) {
    put_varint(w, (uint64_t)field << 3 | 2);
    put_varint(w, len);
    assert_true(w->n + len <= sizeof w->b);
    memcpy(w->b + w->n, data, len);
    w->n += len;
}

static void put_string(wbuf *w, unsigned field, const char *s) {
    put_bytes(w, field, s, strlen(s));
}

/* A FileDescriptorProto: name, package "p", one message `msg`, dependencies `deps` (NULL-ended). */
static void put_file(wbuf *set, const char *name, const char *msg, const char *const *deps) {
    wbuf f = {0}, m = {0};
    put_string(&f, 1, name);
    put_string(&f, 2, "p");
    for (; deps && *deps; deps++) put_string(&f, 3, *deps);
    put_string(&m, 1, msg);
    put_bytes(&f, 4, m.b, m.n);
    put_bytes(set, 1, f.b, f.n);
}

static void test_a_file_comes_with_every_file_it_depends_on_once(void **state) {
    (void)state;
    wbuf set = {0};
    const char *const a_deps[] = {"b.proto", "missing.proto", NULL};
    const char *const c_deps[] = {"a.proto", "b.proto", NULL};
    const char *const b_deps[] = {"c.proto", NULL}; /* a cycle: still each file once */
    put_file(&set, "a.proto", "A", a_deps);
    put_file(&set, "b.proto", "B", b_deps);
    put_file(&set, "c.proto", "C", c_deps);
    char err[128];
    grpc_reflection *r = grpc_reflection_new(set.b, set.n, err, sizeof err);
    assert_non_null(r);
    assert_int_equal(grpc_reflection_service_count(r), 0);
    const char *cases[][2] = {{"p.A", "a.proto,b.proto,c.proto"},
                              {"p.C", "c.proto,a.proto,b.proto"},
                              {"p.B", "b.proto,c.proto,a.proto"}};
    for (size_t i = 0; i < 3; i++) {
        request q = ask(CASE(FILE_CONTAINING_SYMBOL), cases[i][0]);
        grpc_reflection_answer a;
        assert_int_equal(grpc_reflection_answer_to(r, &q, &a), 0);
        char files[256];
        answer_files(&a, files, sizeof files);
        assert_string_equal(files, cases[i][1]);
        grpc_reflection_answer_clear(&a);
    }
    grpc_reflection_free(r);
}

static void test_malformed_sets_are_refused(void **state) {
    (void)state;
    static const struct {
        const char *bytes;
        size_t len;
    } bad[] = {
        {"\x0a\x05\x0a\x03", 4},                              /* a file longer than the set */
        {"\x0a\x02\x0a\x05", 4},                              /* a name longer than its file */
        {"\x0b", 1},                                          /* a group */
        {"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 11}, /* a varint of 11 bytes */
        {"\x00\x00", 2},                                      /* field 0 */
        {"\x0a\x03\x22\x01\xff", 5},                          /* a message whose body is cut */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[128] = "";
        assert_null(
            grpc_reflection_new((const uint8_t *)bad[i].bytes, bad[i].len, err, sizeof err));
        assert_non_null(strstr(err, "malformed"));
    }
    char err[128];
    grpc_reflection *empty = grpc_reflection_new((const uint8_t *)"", 0, err, sizeof err);
    assert_non_null(empty); /* no files: nothing to answer, not an error */
    grpc_reflection_free(empty);
    /* every prefix of the real set: an index or a refusal, never a read past the end (ASan) */
    size_t ok = 0;
    for (size_t n = 0; n < nodex_descriptor_set_len; n++) {
        uint8_t *copy = malloc(n ? n : 1); /* exactly n bytes: ASan sees any overread */
        assert_non_null(copy);
        memcpy(copy, nodex_descriptor_set, n);
        grpc_reflection *r = grpc_reflection_new(copy, n, err, sizeof err);
        if (r) ok++;
        grpc_reflection_free(r);
        free(copy);
    }
    assert_true(ok >= 4 && ok < 64); /* the empty set and each file boundary, about */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_built_set_lists_every_served_service),
        cmocka_unit_test(test_file_containing_symbol_finds_every_kind_of_symbol),
        cmocka_unit_test(test_files_are_the_bytes_protoc_made),
        cmocka_unit_test(test_unknown_names_and_extension_requests_are_not_found),
        cmocka_unit_test(test_a_file_comes_with_every_file_it_depends_on_once),
        cmocka_unit_test(test_malformed_sets_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
