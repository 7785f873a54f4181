/* test_config: the YAML loader's defaults, every value type, and each error path it reports. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

static config *load(const char *yaml, config_error *err) {
    return config_load_string(yaml, strlen(yaml), "nodex.yaml", err);
}

/* Loading must fail with exactly `message`. */
static void expect_error(const char *yaml, const char *message) {
    config_error err;
    config *cfg = load(yaml, &err);
    if (cfg) {
        config_free(cfg);
        fail_msg("expected an error, the config loaded:\n%s", yaml);
    }
    assert_string_equal(err.message, message);
}

/* Loading must fail with an error that contains `part`. */
static void expect_error_part(const char *yaml, const char *part) {
    config_error err;
    config *cfg = load(yaml, &err);
    if (cfg) {
        config_free(cfg);
        fail_msg("expected an error, the config loaded:\n%s", yaml);
    }
    if (!strstr(err.message, part)) fail_msg("error \"%s\" lacks \"%s\"", err.message, part);
}

#define CNODE "cnodes:\n  - name: a\n    executable: a_cnode\n"

static void test_embedded_default_loads(void **state) {
    (void)state;
    config_error err;
    config *cfg = config_load_default(&err);
    assert_non_null(cfg);
    assert_string_equal(cfg->source, "<embedded default>");
    assert_string_equal(cfg->node_name, "nodexd@127.0.0.1");
    assert_true(cfg->longnames);
    assert_string_equal(cfg->http_listen, "127.0.0.1:8080");
    assert_int_equal(cfg->cnode_count, 1);
    assert_string_equal(cfg->cnodes[0].name, "example");
    assert_string_equal(cfg->cnodes[0].executable, "example_cnode");
    assert_ptr_equal(config_find_cnode(cfg, "example"), &cfg->cnodes[0]);
    assert_null(config_find_cnode(cfg, "nope"));
    config_free(cfg);
}

static void test_omitted_keys_get_documented_defaults(void **state) {
    (void)state;
    config_error err;
    config *cfg = load(CNODE, &err);
    assert_non_null(cfg);
    assert_string_equal(cfg->source, "nodex.yaml");
    assert_string_equal(cfg->node_name, "nodexd@127.0.0.1");
    assert_null(cfg->cookie);
    assert_string_equal(cfg->cookie_file, "~/.erlang.cookie");
    assert_string_equal(cfg->cookie_env, "NODEX_COOKIE");
    assert_string_equal(cfg->dist_listen, "127.0.0.1");
    assert_int_equal(cfg->dist_port, 0);
    assert_int_equal(cfg->tick_time_ms, 4000);
    assert_true(cfg->start_epmd);
    assert_int_equal(cfg->http_threads, 0);
    assert_int_equal(cfg->max_body_bytes, 8388608);
    assert_int_equal(cfg->http_connection_timeout_s, 60);
    assert_int_equal(cfg->term_max_depth, 512);
    assert_int_equal(cfg->term_max_bytes, 67108864);
    assert_int_equal(cfg->log_level, LOG_INFO);
    assert_int_equal(cfg->log_format, LOG_FORMAT_TEXT);
    assert_false(cfg->log_access);
    assert_int_equal(cfg->shutdown_drain_ms, 10000);
    const config_cnode *cn = &cfg->cnodes[0];
    assert_non_null(cn->args);
    assert_int_equal(cn->arg_count, 4); /* the Nodex convention */
    assert_string_equal(cn->args[0], "{sname}");
    assert_string_equal(cn->args[1], "{hostname}");
    assert_string_equal(cn->args[2], "{cookie}");
    assert_string_equal(cn->args[3], "{gateway_sname}");
    assert_null(cn->args[4]);
    assert_int_equal(cn->env_count, 0);
    assert_null(cn->cwd);
    assert_string_equal(cn->sname, "{gateway_sname}_{name}");
    assert_null(cn->hostname);
    assert_null(cn->node);
    assert_string_equal(cn->ready_line, "{sname}@{hostname} ready");
    assert_int_equal(cn->spawn_inactive_timeout_ms, 5000);
    assert_int_equal(cn->direction, CNODE_DIRECTION_BACK);
    assert_int_equal(cn->protocol, CNODE_PROTOCOL_RAW);
    assert_string_equal(cn->registered_name, "nil");
    assert_int_equal(cn->reply_filter, REPLY_FILTER_ANY);
    assert_null(cn->reply_tag);
    assert_int_equal(cn->call_timeout_ms, 5000);
    assert_int_equal(cn->max_call_timeout_ms, 300000);
    assert_int_equal(cn->restart, CNODE_RESTART_PERMANENT);
    assert_int_equal(cn->max_restarts, 3);
    assert_int_equal(cn->max_seconds, 5);
    assert_int_equal(cn->backoff_initial_ms, 100);
    assert_int_equal(cn->backoff_max_ms, 5000);
    assert_int_equal(cn->shutdown_timeout_ms, 2000);
    assert_int_equal(cn->connect_timeout_ms, 2000);
    assert_int_equal(cn->max_in_flight, 10000);
    config_free(cfg);
}

static void test_every_key_is_parsed(void **state) {
    (void)state;
    static const char yaml[] =
        "node:\n"
        "  name: \"gw@host.example.com\"\n"
        "  cookie: secret\n"
        "  cookie_file: /etc/cookie\n"
        "  cookie_env: MY_COOKIE\n"
        "  listen: \"127.0.0.2\"\n"
        "  port: 4370\n"
        "  tick_time_ms: 1000\n"
        "  start_epmd: false\n"
        "http:\n"
        "  listen: \"[::1]:9000\"\n"
        "  threads: 8\n"
        "  max_body_bytes: 1024\n"
        "  connection_timeout_s: 0\n"
        "terms: {max_depth: 64, max_bytes: 4096}\n"
        "log: {level: debug, format: json, access: true}\n"
        "shutdown: {drain_ms: 2500}\n"
        "cnodes:\n"
        "  - name: full-1\n"
        "    executable: /usr/bin/full\n"
        "    args: [\"{sname}\", \"{hostname}\", \"{cookie}\", \"{gateway_sname}\", \"\"]\n"
        "    env: {NAME: \"v {name}\", PORT: 8080}\n"
        "    cwd: /tmp\n"
        "    sname: \"x_{name}\"\n"
        "    hostname: localhost\n"
        "    node: \"{sname}@{hostname}\"\n"
        "    ready_line: \"up {{ok}}\"\n"
        "    spawn_inactive_timeout_ms: 7\n"
        "    direction: to\n"
        "    protocol: gen_call\n"
        "    registered_name: server\n"
        "    reply_filter: {tag: reply}\n"
        "    call_timeout_ms: 10\n"
        "    max_call_timeout_ms: 20\n"
        "    restart: transient\n"
        "    max_restarts: 0\n"
        "    max_seconds: 9\n"
        "    backoff_initial_ms: 1\n"
        "    backoff_max_ms: 2\n"
        "    shutdown_timeout_ms: 3\n"
        "    connect_timeout_ms: 4\n"
        "    max_in_flight: 5\n"
        "  - name: old\n"
        "    direction: adopt\n"
        "    node: \"legacy@host\"\n"
        "    reply_filter: node\n";
    config_error err;
    config *cfg = load(yaml, &err);
    assert_string_equal(err.message, ""); /* shows the error when loading fails */
    assert_non_null(cfg);
    assert_string_equal(cfg->node_name, "gw@host.example.com");
    assert_true(cfg->longnames);
    assert_string_equal(cfg->cookie, "secret");
    assert_string_equal(cfg->cookie_file, "/etc/cookie");
    assert_string_equal(cfg->cookie_env, "MY_COOKIE");
    assert_string_equal(cfg->dist_listen, "127.0.0.2");
    assert_int_equal(cfg->dist_port, 4370);
    assert_int_equal(cfg->tick_time_ms, 1000);
    assert_false(cfg->start_epmd);
    assert_string_equal(cfg->http_listen, "[::1]:9000");
    assert_int_equal(cfg->http_threads, 8);
    assert_int_equal(cfg->max_body_bytes, 1024);
    assert_int_equal(cfg->http_connection_timeout_s, 0);
    assert_int_equal(cfg->term_max_depth, 64);
    assert_int_equal(cfg->term_max_bytes, 4096);
    assert_int_equal(cfg->log_level, LOG_DEBUG);
    assert_int_equal(cfg->log_format, LOG_FORMAT_JSON);
    assert_true(cfg->log_access);
    assert_int_equal(cfg->shutdown_drain_ms, 2500);
    assert_int_equal(cfg->cnode_count, 2);
    const config_cnode *cn = config_find_cnode(cfg, "full-1");
    assert_non_null(cn);
    assert_string_equal(cn->executable, "/usr/bin/full");
    assert_int_equal(cn->arg_count, 5);
    assert_string_equal(cn->args[0], "{sname}");
    assert_string_equal(cn->args[4], "");
    assert_null(cn->args[5]);
    assert_int_equal(cn->env_count, 2);
    assert_string_equal(cn->env[0].name, "NAME");
    assert_string_equal(cn->env[0].value, "v {name}");
    assert_string_equal(cn->env[1].name, "PORT");
    assert_string_equal(cn->env[1].value, "8080");
    assert_string_equal(cn->cwd, "/tmp");
    assert_string_equal(cn->sname, "x_{name}");
    assert_string_equal(cn->hostname, "localhost");
    assert_string_equal(cn->node, "{sname}@{hostname}");
    assert_string_equal(cn->ready_line, "up {{ok}}");
    assert_int_equal(cn->spawn_inactive_timeout_ms, 7);
    assert_int_equal(cn->direction, CNODE_DIRECTION_TO);
    assert_int_equal(cn->protocol, CNODE_PROTOCOL_GEN_CALL);
    assert_string_equal(cn->registered_name, "server");
    assert_int_equal(cn->reply_filter, REPLY_FILTER_TAG);
    assert_string_equal(cn->reply_tag, "reply");
    assert_int_equal(cn->call_timeout_ms, 10);
    assert_int_equal(cn->max_call_timeout_ms, 20);
    assert_int_equal(cn->restart, CNODE_RESTART_TRANSIENT);
    assert_int_equal(cn->max_restarts, 0);
    assert_int_equal(cn->max_seconds, 9);
    assert_int_equal(cn->backoff_initial_ms, 1);
    assert_int_equal(cn->backoff_max_ms, 2);
    assert_int_equal(cn->shutdown_timeout_ms, 3);
    assert_int_equal(cn->connect_timeout_ms, 4);
    assert_int_equal(cn->max_in_flight, 5);
    cn = config_find_cnode(cfg, "old");
    assert_non_null(cn);
    assert_null(cn->executable);
    assert_int_equal(cn->direction, CNODE_DIRECTION_ADOPT);
    assert_string_equal(cn->node, "legacy@host");
    assert_int_equal(cn->reply_filter, REPLY_FILTER_NODE);
    config_free(cfg);
}

/* A reload compares sections and C-nodes by fingerprint: formatting and comments do not count,
 * a value does. */
static void test_fingerprints_see_values_not_formatting(void **state) {
    (void)state;
    config_error err;
    static const char a[] = "http: {listen: \"127.0.0.1:1\"}\n"
                            "cnodes:\n  - {name: x, executable: /bin/true}\n"
                            "  - {name: y, executable: /bin/true}\n";
    static const char b[] = "# the same, written otherwise\nhttp:\n  listen: '127.0.0.1:1'\n"
                            "cnodes:\n  - name: x\n    executable: /bin/true\n"
                            "  - {name: y, executable: /bin/false}\n";
    config *ca = config_load_string(a, strlen(a), "a", &err);
    config *cb = config_load_string(b, strlen(b), "b", &err);
    assert_non_null(ca);
    assert_non_null(cb);
    assert_true(ca->section_fingerprint[CONFIG_SECTION_HTTP] != 0);
    assert_true(ca->section_fingerprint[CONFIG_SECTION_HTTP] ==
                cb->section_fingerprint[CONFIG_SECTION_HTTP]);
    assert_int_equal(ca->section_fingerprint[CONFIG_SECTION_LOG], 0); /* absent */
    assert_true(config_find_cnode(ca, "x")->fingerprint == config_find_cnode(cb, "x")->fingerprint);
    assert_true(config_find_cnode(ca, "y")->fingerprint != config_find_cnode(cb, "y")->fingerprint);
    assert_true(ca->section_fingerprint[CONFIG_SECTION_CNODES] !=
                cb->section_fingerprint[CONFIG_SECTION_CNODES]);
    assert_false(ca->from_file);
    assert_string_equal(config_section_name(CONFIG_SECTION_ERLANG_NODES), "erlang_nodes");
    config_free(ca);
    config_free(cb);
}

static void test_bare_node_name_gets_short_hostname(void **state) {
    (void)state;
    char host[256];
    assert_int_equal(gethostname(host, sizeof host), 0);
    host[sizeof host - 1] = '\0';
    host[strcspn(host, ".")] = '\0';
    char want[300];
    snprintf(want, sizeof want, "gw@%s", host);
    config_error err;
    config *cfg = load("node: {name: gw}\n", &err);
    assert_string_equal(err.message, ""); /* shows the error when loading fails */
    assert_non_null(cfg);
    assert_string_equal(cfg->node_name, want);
    assert_false(cfg->longnames);
    config_free(cfg);
}

static void test_longnames_follow_the_host_part(void **state) {
    (void)state;
    static const struct {
        const char *yaml;
        bool longnames;
    } cases[] = {
        {"node: {name: \"a@127.0.0.1\"}\n", true},
        {"node: {name: \"a@host.domain\"}\n", true},
        {"node: {name: \"a@::1\"}\n", true},
        {"node: {name: \"a@host\"}\n", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        config_error err;
        config *cfg = load(cases[i].yaml, &err);
        assert_string_equal(err.message, "");
        assert_non_null(cfg);
        assert_int_equal(cfg->longnames, cases[i].longnames);
        config_free(cfg);
    }
}

static void test_null_sections_mean_defaults(void **state) {
    (void)state;
    config_error err;
    config *cfg = load("node:\nhttp:\nterms: ~\nlog: null\ncnodes: []\n", &err);
    assert_string_equal(err.message, ""); /* shows the error when loading fails */
    assert_non_null(cfg);
    assert_int_equal(cfg->cnode_count, 0);
    assert_int_equal(cfg->http_threads, 0);
    config_free(cfg);
}

static void test_enum_error_lists_the_choices(void **state) {
    (void)state;
    expect_error(CNODE "    restart: sometimes\n",
                 "nodex.yaml:4: cnodes[0].restart: expected one of permanent, transient, "
                 "temporary, got \"sometimes\"");
    expect_error(CNODE "    direction: sideways\n",
                 "nodex.yaml:4: cnodes[0].direction: expected one of back, to, adopt, got "
                 "\"sideways\"");
    expect_error(CNODE "    protocol: [raw]\n",
                 "nodex.yaml:4: cnodes[0].protocol: expected one of raw, gen_call, got a sequence");
    expect_error("log:\n  level: loud\n",
                 "nodex.yaml:2: log.level: expected one of debug, info, warn, error, got \"loud\"");
    expect_error("log:\n  format: xml\n",
                 "nodex.yaml:2: log.format: expected one of text, json, got \"xml\"");
}

static void test_unknown_key_is_an_error(void **state) {
    (void)state;
    expect_error("node:\n  nmae: x\n", "nodex.yaml:2: node.nmae: unknown key");
    expect_error("nodes: {}\n", "nodex.yaml:1: nodes: unknown key");
    expect_error(CNODE "    restarts: 3\n", "nodex.yaml:4: cnodes[0].restarts: unknown key");
    expect_error(CNODE "    reply_filter: {tag: a, extra: b}\n",
                 "nodex.yaml:4: cnodes[0].reply_filter.extra: unknown key");
}

static void test_duplicate_key_is_an_error(void **state) {
    (void)state;
    expect_error("http:\n  threads: 1\n  threads: 2\n",
                 "nodex.yaml:3: http.threads: duplicate key (first at line 2)");
    expect_error("log: {}\nlog: {}\n", "nodex.yaml:2: log: duplicate key (first at line 1)");
    expect_error(CNODE "    env: {A: x, A: y}\n", "nodex.yaml:4: cnodes[0].env.A: duplicate key");
}

static void test_duplicate_cnode_name_is_an_error(void **state) {
    (void)state;
    expect_error(CNODE "  - name: a\n    executable: other\n",
                 "nodex.yaml:4: cnodes[1].name: duplicate C-node name \"a\" (also cnodes[0])");
}

static void test_cnode_name_must_be_url_safe(void **state) {
    (void)state;
    expect_error("cnodes:\n  - name: \"a/b\"\n    executable: x\n",
                 "nodex.yaml:2: cnodes[0].name: expected 1 to 64 letters, digits, '_' or '-', got "
                 "\"a/b\"");
    expect_error_part("cnodes:\n  - name: \"\"\n    executable: x\n",
                      "cnodes[0].name: expected 1 to 64 letters");
    expect_error_part("cnodes:\n  - name: "
                      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n"
                      "    executable: x\n",
                      "cnodes[0].name: expected 1 to 64 letters");
    config_error err;
    config *cfg = load("cnodes:\n  - name: "
                       "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n"
                       "    executable: x\n",
                       &err);
    assert_string_equal(err.message, ""); /* 64 characters are allowed */
    assert_non_null(cfg);
    config_free(cfg);
}

static void test_integer_type_and_range_errors(void **state) {
    (void)state;
    expect_error("http: {threads: two}\n",
                 "nodex.yaml:1: http.threads: expected a decimal integer from 0 to 1024, got "
                 "\"two\"");
    expect_error_part("node: {port: -1}\n", "node.port: expected a decimal integer from 0 to "
                                            "65535, got \"-1\"");
    expect_error_part("node: {port: 65536}\n", "node.port: expected a decimal integer");
    expect_error_part("node: {port: \"80\"}\n", "node.port: expected a decimal integer");
    expect_error_part("node: {port: 0x50}\n", "node.port: expected a decimal integer");
    expect_error_part("node: {port: 8.0}\n", "node.port: expected a decimal integer");
    expect_error_part("node: {port: }\n", "node.port: expected a decimal integer");
    expect_error_part("node: {port: [1]}\n", "got a sequence");
    expect_error_part("terms: {max_bytes: 99999999999999999999999999}\n",
                      "terms.max_bytes: expected a decimal integer from 1 to 2147483647");
    expect_error_part(CNODE "    max_in_flight: 0\n", "cnodes[0].max_in_flight: expected");
}

static void test_boolean_is_strictly_true_or_false(void **state) {
    (void)state;
    expect_error("node: {start_epmd: yes}\n",
                 "nodex.yaml:1: node.start_epmd: expected true or false, got \"yes\"");
    expect_error_part("node: {start_epmd: \"true\"}\n", "expected true or false");
}

static void test_string_errors(void **state) {
    (void)state;
    expect_error("node: {cookie_file: {a: b}}\n",
                 "nodex.yaml:1: node.cookie_file: expected a string, got a mapping");
    expect_error("node: {cookie_env: null}\n",
                 "nodex.yaml:1: node.cookie_env: expected a string, got null");
    expect_error_part(CNODE "    registered_name: \"\"\n", "registered_name: must not be empty");
    expect_error_part("node: {cookie: \"a\\0b\"}\n", "node.cookie: string contains a NUL byte");
}

static void test_address_errors(void **state) {
    (void)state;
    expect_error_part("node: {listen: localhost}\n", "node.listen: expected an IPv4 address");
    expect_error_part("node: {listen: \"::1\"}\n", "node.listen: IPv6 is not supported here");
    expect_error_part("http: {listen: \"127.0.0.1\"}\n", "http.listen: expected host:port");
    expect_error_part("http: {listen: \"127.0.0.1:70000\"}\n", "http.listen: expected host:port");
    expect_error_part("http: {listen: \"::1:80\"}\n", "http.listen: expected host:port");
    expect_error_part("http: {listen: \":80\"}\n", "http.listen: expected host:port");
}

static void test_node_name_errors(void **state) {
    (void)state;
    expect_error_part("node: {name: \"a@b@c\"}\n", "node.name: expected name@host");
    expect_error_part("node: {name: \"a@\"}\n", "node.name: expected name@host");
    expect_error_part("node: {name: \"@h\"}\n", "node.name: the part before '@'");
    expect_error_part("node: {name: \"a b@h\"}\n", "node.name: the part before '@'");
}

static void test_required_keys_are_enforced(void **state) {
    (void)state;
    expect_error("cnodes:\n  - executable: x\n",
                 "nodex.yaml:2: cnodes[0]: missing required key \"name\"");
    expect_error("cnodes:\n  - name: x\n",
                 "nodex.yaml:2: cnodes[0]: missing required key \"executable\" (direction back)");
    expect_error("cnodes:\n  - name: x\n    direction: adopt\n",
                 "nodex.yaml:2: cnodes[0]: missing required key \"node\" (direction adopt)");
    expect_error_part(CNODE "    reply_filter: {}\n", "reply_filter: missing required key \"tag\"");
    expect_error_part("cnodes:\n  - just a string\n", "cnodes[0]: expected a mapping");
    expect_error_part("cnodes: {a: b}\n", "cnodes: expected a sequence, got a mapping");
}

static void test_cross_key_limits(void **state) {
    (void)state;
    expect_error(CNODE "    call_timeout_ms: 400000\n",
                 "nodex.yaml:4: cnodes[0].call_timeout_ms: 400000 is above max_call_timeout_ms "
                 "(300000)");
    expect_error_part(CNODE "    backoff_initial_ms: 6000\n",
                      "backoff_initial_ms: 6000 is above backoff_max_ms (5000)");
}

static void test_template_placeholders_are_checked(void **state) {
    (void)state;
    expect_error(CNODE "    args: [\"{sname}\", \"{snmae}\"]\n",
                 "nodex.yaml:4: cnodes[0].args[1]: unknown or unterminated placeholder "
                 "\"{snmae}\" (known: sname, hostname, cookie, gateway_sname, gateway_node, "
                 "name, node)");
    expect_error_part(CNODE "    env: {A: \"{oops\"}\n",
                      "cnodes[0].env.A: unknown or unterminated placeholder \"{oops\"");
    expect_error_part(CNODE "    ready_line: \"done }\"\n", "cnodes[0].ready_line: lone \"}\"");
    expect_error_part(CNODE "    sname: \"{sname}_x\"\n",
                      "cnodes[0].sname: unknown or unterminated placeholder \"{sname}\" (known: "
                      "hostname,");
    expect_error_part(CNODE "    node: \"{node}\"\n",
                      "cnodes[0].node: unknown or unterminated placeholder \"{node}\"");
}

static void test_env_and_args_shape_errors(void **state) {
    (void)state;
    expect_error_part(CNODE "    env: {\"1A\": x}\n", "cnodes[0].env.1A: environment variable");
    expect_error_part(CNODE "    env: {\"A=B\": x}\n", "cnodes[0].env.A=B: environment variable");
    expect_error_part(CNODE "    env: [A]\n", "cnodes[0].env: expected a mapping");
    expect_error_part(CNODE "    env: {A: [x]}\n", "cnodes[0].env.A: expected a string");
    expect_error_part(CNODE "    args: x\n", "cnodes[0].args: expected a sequence");
    expect_error_part(CNODE "    args: [a, {b: c}]\n", "cnodes[0].args[1]: expected a string");
    expect_error_part(CNODE "    reply_filter: tag\n", "expected any, node or {tag: atom}");
}

static void test_document_shape_errors(void **state) {
    (void)state;
    expect_error("", "nodex.yaml: empty document, expected a mapping");
    expect_error("- a\n", "nodex.yaml:1: (top level): expected a mapping, got a sequence");
    expect_error("log: {}\n---\nlog: {}\n", "nodex.yaml:3: only one YAML document is allowed");
    expect_error_part("{a: 1}: x\n", "keys must be plain words");
    /* self-referencing anchors must end in a type error, not a loop */
    expect_error_part("cnodes: &a [*a]\n", "cnodes[0]: expected a mapping, got a sequence");
    expect_error_part(CNODE "    reply_filter: &t {tag: *t}\n",
                      "reply_filter.tag: expected a string, got a mapping");
}

static void test_yaml_syntax_error_reports_line(void **state) {
    (void)state;
    expect_error_part("node:\n  name: x\n bad: [\n", "nodex.yaml:");
    expect_error_part("node:\n  name: x\n bad: [\n", "YAML syntax error");
    expect_error("http:\n  threads: 1\n\tlisten: x\n",
                 "nodex.yaml:3: YAML syntax error: found a tab character that violates "
                 "indentation (while scanning a plain scalar started at line 2)");
    expect_error_part("a: *nothing\n", "YAML syntax error");
    expect_error("log: {level: \"\xff\"}\n",
                 "nodex.yaml: YAML read error: invalid leading UTF-8 octet at byte 14");
    /* an error after a valid first document is still reported */
    expect_error_part("log: {}\n---\n[\n", "YAML syntax error");
}

static void test_load_file_reads_and_names_the_file(void **state) {
    (void)state;
    char path[] = "/tmp/test_config_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    static const char yaml[] = CNODE "    restart: never\n";
    assert_int_equal(write(fd, yaml, sizeof yaml - 1), (ssize_t)(sizeof yaml - 1));
    close(fd);
    config_error err;
    config *cfg = config_load_file(path, &err);
    assert_null(cfg);
    char want[600];
    snprintf(want, sizeof want,
             "%s:4: cnodes[0].restart: expected one of permanent, transient, temporary, got "
             "\"never\"",
             path);
    assert_string_equal(err.message, want);
    unlink(path);

    cfg = config_load_file("/nonexistent/nodex.yaml", &err);
    assert_null(cfg);
    assert_string_equal(err.message, "/nonexistent/nodex.yaml: cannot open: No such file or "
                                     "directory");
}

static void test_load_file_success(void **state) {
    (void)state;
    char path[] = "/tmp/test_config_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, config_default_yaml, strlen(config_default_yaml)),
                     (ssize_t)strlen(config_default_yaml));
    close(fd);
    config_error err;
    config *cfg = config_load_file(path, &err);
    unlink(path);
    assert_string_equal(err.message, ""); /* shows the error when loading fails */
    assert_non_null(cfg);
    assert_string_equal(cfg->source, path);
    assert_int_equal(cfg->cnode_count, 1);
    config_free(cfg);
}

static void test_enum_names_come_from_the_tables(void **state) {
    (void)state;
    assert_string_equal(cnode_direction_name(CNODE_DIRECTION_BACK), "back");
    assert_string_equal(cnode_direction_name(CNODE_DIRECTION_ADOPT), "adopt");
    assert_string_equal(cnode_protocol_name(CNODE_PROTOCOL_GEN_CALL), "gen_call");
    assert_string_equal(cnode_restart_name(CNODE_RESTART_TEMPORARY), "temporary");
    assert_string_equal(cnode_restart_name((cnode_restart)42), "?");
    config_free(NULL);
}

/* A failure deep in the second C-node must free the first C-node's strings (checked by ASan). */
static void test_late_error_frees_partial_config(void **state) {
    (void)state;
    expect_error_part(CNODE "    args: [a, b]\n    env: {A: x}\n"
                            "  - name: b\n    executable: y\n    args: [c]\n"
                            "    env: {B: y, C: \"{bad}\"}\n",
                      "cnodes[1].env.C: unknown or unterminated placeholder");
    expect_error_part("node: {name: a@b, cookie: c}\nhttp: {listen: \"h:1\"}\n" CNODE
                      "    reply_filter: {tag: t}\n    max_seconds: 0\n",
                      "cnodes[0].max_seconds");
}

static void test_a_public_listener_without_auth_is_refused(void **state) {
    (void)state;
    expect_error("http:\n  listen: \"0.0.0.0:8080\"\n",
                 "nodex.yaml:2: http.listen: 0.0.0.0:8080 is not a loopback address and no "
                 "authentication is configured: add auth.principals (bearer tokens or client "
                 "certificates), or set auth: none to let anyone who reaches it in");
    expect_error_part("grpc:\n  listen: \"[::]:50051\"\n", "grpc.listen: [::]:50051 is not");
    expect_error_part("http:\n  listen: \"10.0.0.1:80\"\n", "no authentication");
    /* loopback in every spelling is fine */
    static const char *const fine[] = {"127.0.0.1:1", "127.8.9.10:1", "[::1]:1", "localhost:1"};
    for (size_t i = 0; i < sizeof fine / sizeof fine[0]; i++)
        assert_true(config_listen_is_loopback(fine[i]));
    assert_false(config_listen_is_loopback("0.0.0.0:1"));
    assert_false(config_listen_is_loopback("[::]:1"));
    assert_false(config_listen_is_loopback("example.com:1"));
    /* an explicit opt-out, or principals, let it start */
    config_error err;
    config *cfg = load("http:\n  listen: \"0.0.0.0:8080\"\nauth: none\n", &err);
    assert_non_null(cfg);
    assert_true(cfg->auth_none);
    config_free(cfg);
    cfg = load("http:\n  listen: \"0.0.0.0:8080\"\nauth:\n  principals:\n    - name: a\n"
               "      token_env: T\n      allow: [call]\n",
               &err);
    assert_non_null(cfg);
    assert_int_equal(cfg->principal_count, 1);
    assert_string_equal(cfg->principals[0].token_env, "T");
    assert_string_equal(cfg->principals[0].allow[0], "call");
    config_free(cfg);
}

static void test_principals_are_checked_where_they_are_written(void **state) {
    (void)state;
    expect_error(
        "auth:\n  principals:\n    - name: a\n      token_env: T\n"
        "      allow: [calls]\n",
        "nodex.yaml:5: auth.principals[0].allow[0]: unknown permission 'calls' (one of "
        "call, cast, stream, watch, rpc, modules.load, nodes.spawn, nodes.stop, cnodes.restart)");
    expect_error_part("auth:\n  principals:\n    - name: a\n      token_env: T\n"
                      "      allow: [\"watch:x\"]\n",
                      "watch takes no pattern");
    expect_error_part("auth:\n  principals:\n    - name: a\n      token_env: T\n"
                      "      allow: [\"rpc:erlang\"]\n",
                      "expected rpc:MODULE:FUNCTION");
    expect_error_part("auth:\n  principals:\n    - name: a\n      allow: [call]\n",
                      "needs token_file, token_env or client_cert");
    expect_error_part("auth:\n  principals:\n    - name: a\n      token_env: T\n"
                      "      token_file: /x\n",
                      "not both");
    expect_error_part("auth:\n  principals:\n    - name: a\n      token_env: T\n"
                      "    - name: a\n      token_env: U\n",
                      "a second principal named 'a'");
    expect_error_part("auth:\n  principals:\n    - token_env: T\n", "missing required key");
    expect_error_part("auth:\n  principals: []\n", "at least one");
    expect_error_part("auth: maybe\n", "expected none, or a mapping");
    expect_error_part("auth:\n  principals:\n    - name: a\n      client_cert: {}\n",
                      "expected subject");
}

static void test_browser_and_rpc_lists(void **state) {
    (void)state;
    config_error err;
    config *cfg = load("http:\n  allowed_origins: [\"https://app.example.com\", "
                       "\"http://localhost:3000\"]\n  allowed_hosts: [gw.internal]\n"
                       "erlang_nodes:\n  rpc: true\n  rpc_nodes: [\"app@*\"]\n",
                       &err);
    assert_non_null(cfg);
    assert_int_equal(cfg->allowed_origin_count, 2);
    assert_string_equal(cfg->allowed_hosts[0], "gw.internal");
    assert_true(cfg->allow_rpc);
    assert_false(cfg->allow_spawn || cfg->allow_load_modules);
    assert_string_equal(cfg->rpc_nodes[0], "app@*");
    config_free(cfg);
    expect_error_part("http:\n  allowed_origins: [\"https://app.example.com/\"]\n",
                      "expected an origin");
    expect_error_part("http:\n  allowed_origins: [\"app.example.com\"]\n", "expected an origin");
    /* the defaults: nothing allowed */
    cfg = load("cnodes: []\n", &err);
    assert_non_null(cfg);
    assert_int_equal(cfg->allowed_origin_count + cfg->rpc_node_count + cfg->principal_count, 0);
    assert_false(cfg->allow_rpc || cfg->allow_spawn || cfg->allow_load_modules || cfg->auth_none);
    config_free(cfg);
}

static void test_tls_mappings_are_off_by_default_and_parsed_when_given(void **state) {
    (void)state;
    config_error err;
    config *cfg = load("http:\n  tls:\n    cert_file: /c.pem\n    key_file: /k.pem\n"
                       "grpc:\n  tls:\n    cert_file: /g.pem\n    key_file: /gk.pem\n"
                       "    client_ca_file: /ca.pem\n    require_client_cert: true\n",
                       &err);
    assert_non_null(cfg);
    assert_true(cfg->http_tls.enabled);
    assert_string_equal(cfg->http_tls.cert_file, "/c.pem");
    assert_string_equal(cfg->http_tls.key_file, "/k.pem");
    assert_null(cfg->http_tls.client_ca_file);
    assert_false(cfg->http_tls.require_client_cert);
    assert_string_equal(cfg->http_tls.origin, "nodex.yaml:3: http.tls");
    assert_true(cfg->grpc_tls.enabled && cfg->grpc_tls.require_client_cert);
    assert_string_equal(cfg->grpc_tls.client_ca_file, "/ca.pem");
    config_free(cfg);
    cfg = load("http:\n  tls: null\n", &err);
    assert_non_null(cfg);
    assert_false(cfg->http_tls.enabled || cfg->grpc_tls.enabled);
    config_free(cfg);
}

static void test_tls_errors_name_file_line_and_key(void **state) {
    (void)state;
    expect_error("http:\n  tls:\n    cert_file: /c.pem\n",
                 "nodex.yaml:3: http.tls: missing required key \"key_file\"");
    expect_error("grpc:\n  tls:\n    key_file: /k.pem\n",
                 "nodex.yaml:3: grpc.tls: missing required key \"cert_file\"");
    expect_error(
        "http:\n  tls:\n    cert_file: /c\n    key_file: /k\n    require_client_cert: true\n",
        "nodex.yaml:5: http.tls.require_client_cert: true needs client_ca_file (the CA "
        "that client certificates chain to)");
    expect_error("http:\n  tls:\n    cert_file: /c\n    key_file: /k\n    require_client_cert: 1\n",
                 "nodex.yaml:5: http.tls.require_client_cert: expected true or false, got \"1\"");
    expect_error("http:\n  tls:\n    cert_file: /c\n    key_file: /k\n    ca: /x\n",
                 "nodex.yaml:5: http.tls.ca: unknown key");
    expect_error("http:\n  tls: yes\n", "nodex.yaml:2: http.tls: expected a mapping, got \"yes\"");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embedded_default_loads),
        cmocka_unit_test(test_omitted_keys_get_documented_defaults),
        cmocka_unit_test(test_every_key_is_parsed),
        cmocka_unit_test(test_fingerprints_see_values_not_formatting),
        cmocka_unit_test(test_bare_node_name_gets_short_hostname),
        cmocka_unit_test(test_longnames_follow_the_host_part),
        cmocka_unit_test(test_null_sections_mean_defaults),
        cmocka_unit_test(test_enum_error_lists_the_choices),
        cmocka_unit_test(test_unknown_key_is_an_error),
        cmocka_unit_test(test_duplicate_key_is_an_error),
        cmocka_unit_test(test_duplicate_cnode_name_is_an_error),
        cmocka_unit_test(test_cnode_name_must_be_url_safe),
        cmocka_unit_test(test_integer_type_and_range_errors),
        cmocka_unit_test(test_boolean_is_strictly_true_or_false),
        cmocka_unit_test(test_string_errors),
        cmocka_unit_test(test_address_errors),
        cmocka_unit_test(test_node_name_errors),
        cmocka_unit_test(test_required_keys_are_enforced),
        cmocka_unit_test(test_cross_key_limits),
        cmocka_unit_test(test_template_placeholders_are_checked),
        cmocka_unit_test(test_env_and_args_shape_errors),
        cmocka_unit_test(test_document_shape_errors),
        cmocka_unit_test(test_yaml_syntax_error_reports_line),
        cmocka_unit_test(test_load_file_reads_and_names_the_file),
        cmocka_unit_test(test_load_file_success),
        cmocka_unit_test(test_enum_names_come_from_the_tables),
        cmocka_unit_test(test_late_error_frees_partial_config),
        cmocka_unit_test(test_a_public_listener_without_auth_is_refused),
        cmocka_unit_test(test_principals_are_checked_where_they_are_written),
        cmocka_unit_test(test_browser_and_rpc_lists),
        cmocka_unit_test(test_tls_mappings_are_off_by_default_and_parsed_when_given),
        cmocka_unit_test(test_tls_errors_name_file_line_and_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
