/* test_term_common: cons chains (lists built cell by cell, tails that are strings) render as the
 * list they are, in JSON, text and the gRPC Term; and, for seeded random chains, exactly as the
 * bytes Erlang's own term_to_binary(binary_to_term(B)) writes for them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "term.h"
#include "term_common.h"
#include "term_pb.h"

static const term_limits lim = {.max_depth = 64, .max_bytes = 1 << 20};

static void cell(ei_x_buff *x, long n) {
    assert_int_equal(ei_x_encode_list_header(x, n), 0);
}
static void num(ei_x_buff *x, long v) {
    assert_int_equal(ei_x_encode_long(x, v), 0);
}
static void nil(ei_x_buff *x) {
    assert_int_equal(ei_x_encode_empty_list(x), 0);
}

static char *json_of(const ei_x_buff *x) {
    strbuf sb = {0};
    term_error err;
    int i = 0;
    if (term_to_json(x->buff, (size_t)x->index, &i, &lim, &sb, &err) != 0)
        fail_msg("json: %s", err.message);
    assert_int_equal(i, x->index);
    return sb.data;
}

static char *text_of(const ei_x_buff *x) {
    strbuf sb = {0};
    term_error err;
    int i = 0;
    if (term_to_text(x->buff, (size_t)x->index, &i, &lim, &sb, &err) != 0)
        fail_msg("text: %s", err.message);
    assert_int_equal(i, x->index);
    return sb.data;
}

static void expect(const ei_x_buff *x, const char *json, const char *text) {
    char *j = json_of(x), *t = text_of(x);
    assert_string_equal(j, json);
    assert_string_equal(t, text);
    free(j);
    free(t);
}

static void test_a_chain_of_cells_is_one_proper_list(void **state) {
    (void)state;
    ei_x_buff x;
    ei_x_new(&x);
    for (int k = 1; k <= 3; k++) { /* [1|[2|[3|[]]]] one cell at a time, as ei lets C build it */
        cell(&x, 1);
        num(&x, -k * 100); /* negative: never shown as a string */
    }
    nil(&x);
    expect(&x, "[-100,-200,-300]", "[-100,-200,-300]");
    /* the gRPC Term: one list of three, no tail */
    term_pb_arena arena = {0};
    Nodex__V1__Term *t = NULL;
    term_error err;
    int i = 0;
    assert_int_equal(term_pb_from_ei(x.buff, (size_t)x.index, &i, &lim, &arena, &t, &err), 0);
    assert_int_equal(i, x.index);
    assert_int_equal(t->kind_case, NODEX__V1__TERM__KIND_LIST);
    assert_int_equal(t->list->n_elements, 3);
    assert_null(t->list->tail);
    assert_int_equal(t->list->elements[2]->int_, -300);
    term_pb_arena_free(&arena);
    ei_x_free(&x);
}

static void test_a_string_tail_joins_the_list(void **state) {
    (void)state;
    ei_x_buff x;
    ei_x_new(&x);
    cell(&x, 1);
    num(&x, -1);
    assert_int_equal(ei_x_encode_string(&x, "ab"), 0); /* [-1|"ab"] = [-1,97,98] */
    expect(&x, "[-1,97,98]", "[-1,97,98]");
    ei_x_free(&x);
    /* all bytes: what Erlang writes as a string, and text shows as one */
    ei_x_new(&x);
    cell(&x, 1);
    num(&x, 'h');
    assert_int_equal(ei_x_encode_string(&x, "i"), 0);
    expect(&x, "[104,105]", "\"hi\"");
    ei_x_free(&x);
}

static void test_nested_chains_and_an_improper_end(void **state) {
    (void)state;
    ei_x_buff x;
    ei_x_new(&x);
    /* {chain, [[-1000|[-2000]] | [x]] } with an improper [3|[4|tail]] beside it */
    assert_int_equal(ei_x_encode_tuple_header(&x, 3), 0);
    assert_int_equal(ei_x_encode_atom(&x, "chain"), 0);
    cell(&x, 1);
    cell(&x, 1);
    num(&x, -1000);
    cell(&x, 1);
    num(&x, -2000);
    nil(&x);
    cell(&x, 1);
    assert_int_equal(ei_x_encode_atom(&x, "x"), 0);
    nil(&x);
    cell(&x, 1);
    num(&x, 3000);
    cell(&x, 1);
    num(&x, 4000);
    assert_int_equal(ei_x_encode_atom(&x, "tail"), 0);
    expect(&x,
           "{\"$tuple\":[{\"$atom\":\"chain\"},[[-1000,-2000],{\"$atom\":\"x\"}],"
           "{\"$improper\":[3000,4000,{\"$atom\":\"tail\"}]}]}",
           "{chain,[[-1000,-2000],x],[3000,4000|tail]}");
    ei_x_free(&x);
}

static void test_terms_without_chains_are_left_alone(void **state) {
    (void)state;
    ei_x_buff x, tmp;
    ei_x_new(&x);
    cell(&x, 2);
    num(&x, 1);
    cell(&x, 1); /* a list inside a list is no chain */
    num(&x, 2);
    nil(&x);
    nil(&x);
    const char *b = x.buff;
    size_t len = (size_t)x.index;
    int i = 0;
    assert_int_equal(term_merge_list_chains(&b, &len, &i, &tmp), 0);
    assert_ptr_equal(b, x.buff);
    ei_x_free(&x);
}

/* ---- the property: as Erlang itself re-encodes the same bytes ----------------------------- */

static uint64_t seed = 0x9e3779b97f4a7c15u;
static unsigned pick(unsigned n) {
    seed ^= seed << 13;
    seed ^= seed >> 7;
    seed ^= seed << 17;
    return (unsigned)(seed % n);
}

static void gen(ei_x_buff *x, unsigned depth);

/* A list as random cells chained by their tails, ending in [], a string or (rarely) an atom. */
static void gen_chain(ei_x_buff *x, unsigned depth) {
    unsigned cells = 1 + pick(4);
    for (unsigned c = 0; c < cells; c++) {
        unsigned n = 1 + pick(3);
        cell(x, n);
        for (unsigned k = 0; k < n; k++) gen(x, depth + 1);
    }
    switch (pick(5)) {
    case 0: assert_int_equal(ei_x_encode_string(x, "tail"), 0); break;
    case 1: assert_int_equal(ei_x_encode_atom(x, "end"), 0); break;
    default: nil(x);
    }
}

static void gen(ei_x_buff *x, unsigned depth) {
    switch (depth > 4 ? pick(3) : pick(6)) {
    case 0: num(x, (long)pick(300)); break; /* bytes and beyond */
    case 1: assert_int_equal(ei_x_encode_atom(x, pick(2) ? "a" : "b"), 0); break;
    case 2: assert_int_equal(ei_x_encode_binary(x, "bin", 3), 0); break;
    case 3:
        assert_int_equal(ei_x_encode_tuple_header(x, 2), 0);
        gen(x, depth + 1);
        gen(x, depth + 1);
        break;
    default: gen_chain(x, depth);
    }
}

static void hex(FILE *f, const char *b, size_t n) {
    for (size_t k = 0; k < n; k++) fprintf(f, "%02x", (unsigned char)b[k]);
    fputc('\n', f);
}

static size_t unhex(const char *line, char *out, size_t cap) {
    size_t n = 0;
    for (; line[0] && line[1] && line[0] != '\n' && n < cap; line += 2) {
        unsigned v;
        if (sscanf(line, "%2x", &v) != 1) break;
        out[n++] = (char)v;
    }
    return n;
}

static void test_rendering_equals_erlangs_own_reencoding(void **state) {
    (void)state;
    enum { CASES = 200 };
    char in_path[64], out_path[64];
    snprintf(in_path, sizeof in_path, "/tmp/nodex-chains-%d.in", (int)getpid());
    snprintf(out_path, sizeof out_path, "/tmp/nodex-chains-%d.out", (int)getpid());
    ei_x_buff terms[CASES];
    FILE *f = fopen(in_path, "w");
    assert_non_null(f);
    for (int c = 0; c < CASES; c++) {
        ei_x_new_with_version(&terms[c]);
        gen_chain(&terms[c], 0);
        hex(f, terms[c].buff, (size_t)terms[c].index);
    }
    fclose(f);
    /* Erlang reads each line's bytes and writes back term_to_binary(binary_to_term(B)). */
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "erl -noshell -eval '{ok, B} = file:read_file(\"%s\"), "
             "L = [binary:encode_hex(term_to_binary(binary_to_term(binary:decode_hex(H)))) "
             "|| H <- binary:split(B, <<\"\\n\">>, [global, trim])], "
             "ok = file:write_file(\"%s\", [[X, $\\n] || X <- L]), halt().' >/dev/null 2>&1",
             in_path, out_path);
    assert_int_equal(system(cmd), 0);
    f = fopen(out_path, "r");
    assert_non_null(f);
    static char line[1 << 16], bytes[1 << 15];
    for (int c = 0; c < CASES; c++) {
        assert_non_null(fgets(line, sizeof line, f));
        ei_x_buff canon = {.buff = bytes, .index = (int)unhex(line, bytes, sizeof bytes)};
        ei_x_buff ours = {.buff = terms[c].buff + 1, .index = terms[c].index - 1};
        canon.buff++; /* both without the version byte */
        canon.index--;
        char *j1 = json_of(&ours), *j2 = json_of(&canon), *t1 = text_of(&ours),
             *t2 = text_of(&canon);
        assert_string_equal(j1, j2);
        assert_string_equal(t1, t2);
        free(j1);
        free(j2);
        free(t1);
        free(t2);
        ei_x_free(&terms[c]);
    }
    fclose(f);
    unlink(in_path);
    unlink(out_path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_chain_of_cells_is_one_proper_list),
        cmocka_unit_test(test_a_string_tail_joins_the_list),
        cmocka_unit_test(test_nested_chains_and_an_improper_end),
        cmocka_unit_test(test_terms_without_chains_are_left_alone),
        cmocka_unit_test(test_rendering_equals_erlangs_own_reencoding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
