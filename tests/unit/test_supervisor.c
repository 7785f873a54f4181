/* test_supervisor: the restart policy alone: restart types, the intensity limit and its window,
 * the doubling backoff with its cap, its reset once up, and adopted nodes that never fail. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "supervisor.h"

static config_cnode policy(cnode_restart restart) {
    config_cnode cfg = {.direction = CNODE_DIRECTION_TO,
                        .restart = restart,
                        .max_restarts = 3,
                        .max_seconds = 5,
                        .backoff_initial_ms = 100,
                        .backoff_max_ms = 350};
    return cfg;
}

static void test_temporary_is_never_restarted_and_transient_only_after_a_crash(void **state) {
    (void)state;
    supervisor_history h = {0};
    int64_t due;
    config_cnode cfg = policy(CNODE_RESTART_TEMPORARY);
    assert_int_equal(supervisor_restart(&cfg, &h, false, 1000, &due), SUPERVISOR_STOP);
    assert_int_equal(due, INT64_MAX);
    cfg = policy(CNODE_RESTART_TRANSIENT);
    assert_int_equal(supervisor_restart(&cfg, &h, true, 1000, &due), SUPERVISOR_STOP);
    assert_int_equal(supervisor_restart(&cfg, &h, false, 1000, &due), SUPERVISOR_RESTART);
    assert_int_equal(due, 1100);
    cfg = policy(CNODE_RESTART_PERMANENT);
    assert_int_equal(supervisor_restart(&cfg, &h, true, 2000, &due), SUPERVISOR_RESTART);
}

static void test_backoff_doubles_up_to_its_cap_and_resets_once_up(void **state) {
    (void)state;
    config_cnode cfg = policy(CNODE_RESTART_PERMANENT);
    cfg.max_restarts = 10;
    supervisor_history h = {0};
    int64_t due;
    const int64_t want[] = {100, 200, 350, 350};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(supervisor_restart(&cfg, &h, false, 1000, &due), SUPERVISOR_RESTART);
        assert_int_equal(due, 1000 + want[i]);
    }
    supervisor_history_up(&h);
    assert_int_equal(supervisor_restart(&cfg, &h, false, 1000, &due), SUPERVISOR_RESTART);
    assert_int_equal(due, 1100);
}

static void test_more_than_max_restarts_within_max_seconds_fails(void **state) {
    (void)state;
    config_cnode cfg = policy(CNODE_RESTART_PERMANENT);
    supervisor_history h = {0};
    int64_t due;
    for (int i = 0; i < 3; i++)
        assert_int_equal(supervisor_restart(&cfg, &h, false, 1000 + i, &due), SUPERVISOR_RESTART);
    assert_int_equal(supervisor_restart(&cfg, &h, false, 1003, &due), SUPERVISOR_FAIL);
    assert_int_equal(due, INT64_MAX);
}

static void test_restarts_older_than_max_seconds_no_longer_count(void **state) {
    (void)state;
    config_cnode cfg = policy(CNODE_RESTART_PERMANENT);
    supervisor_history h = {0};
    int64_t due;
    for (int i = 0; i < 3; i++)
        assert_int_equal(supervisor_restart(&cfg, &h, false, 1000, &due), SUPERVISOR_RESTART);
    /* 5 s later the three have left the window. */
    assert_int_equal(supervisor_restart(&cfg, &h, false, 6000, &due), SUPERVISOR_RESTART);
    assert_int_equal(supervisor_restart(&cfg, &h, false, 6001, &due), SUPERVISOR_RESTART);
}

static void test_an_adopted_node_is_always_retried_with_backoff(void **state) {
    (void)state;
    config_cnode cfg = policy(CNODE_RESTART_TEMPORARY);
    cfg.direction = CNODE_DIRECTION_ADOPT;
    supervisor_history h = {0};
    int64_t due = 0;
    for (int i = 0; i < 20; i++)
        assert_int_equal(supervisor_restart(&cfg, &h, true, 1000, &due), SUPERVISOR_RESTART);
    assert_int_equal(due, 1350);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_temporary_is_never_restarted_and_transient_only_after_a_crash),
        cmocka_unit_test(test_backoff_doubles_up_to_its_cap_and_resets_once_up),
        cmocka_unit_test(test_more_than_max_restarts_within_max_seconds_fails),
        cmocka_unit_test(test_restarts_older_than_max_seconds_no_longer_count),
        cmocka_unit_test(test_an_adopted_node_is_always_retried_with_backoff),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
