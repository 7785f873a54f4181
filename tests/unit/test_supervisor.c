/* test_supervisor: the restart policy (restart types, intensity and its window, the doubling
 * backoff with its cap, adopted nodes) and the entry state machine's transitions and actions. */
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

static config_cnode timeouts(void) {
    config_cnode cfg = policy(CNODE_RESTART_PERMANENT);
    cfg.spawn_inactive_timeout_ms = 500;
    cfg.connect_timeout_ms = 2000;
    cfg.retry_failed_after_ms = 60000;
    return cfg;
}

/* An entry spawned at `now`, as the gateway leaves it. */
static supervisor_entry spawned_entry(const config_cnode *cfg, int64_t now) {
    supervisor_entry e;
    supervisor_entry_init(&e);
    supervisor_entry_spawned(&e, cfg, now);
    return e;
}

static void test_a_new_entry_is_idle_and_its_timer_does_nothing(void **state) {
    (void)state;
    supervisor_entry e;
    supervisor_entry_init(&e);
    assert_int_equal(supervisor_entry_phase(&e), SUPERVISOR_IDLE);
    assert_false(supervisor_entry_restart_due(&e));
    assert_int_equal(supervisor_entry_timer(&e, INT64_MAX - 1), SUPERVISOR_DO_NOTHING);
}

static void test_spawn_timeout_fires_once_at_its_deadline_and_kills(void **state) {
    (void)state;
    config_cnode cfg = timeouts();
    supervisor_entry e = spawned_entry(&cfg, 1000);
    assert_int_equal(supervisor_entry_phase(&e), SUPERVISOR_SPAWNED);
    assert_int_equal(supervisor_entry_timer(&e, 1499), SUPERVISOR_DO_NOTHING);
    assert_int_equal(supervisor_entry_timer(&e, 1500), SUPERVISOR_DO_SPAWN_TIMEOUT);
    assert_int_equal(supervisor_entry_timer(&e, 9999), SUPERVISOR_DO_NOTHING);
}

static void test_connect_timeout_allows_connect_timeout_ms_and_a_second(void **state) {
    (void)state;
    config_cnode cfg = timeouts();
    supervisor_entry e = spawned_entry(&cfg, 1000);
    supervisor_entry_connecting(&e, &cfg, 1200);
    assert_int_equal(supervisor_entry_phase(&e), SUPERVISOR_CONNECTING);
    assert_int_equal(supervisor_entry_timer(&e, 4199), SUPERVISOR_DO_NOTHING);
    assert_int_equal(supervisor_entry_timer(&e, 4200), SUPERVISOR_DO_CONNECT_TIMEOUT);
}

static void test_stopping_escalates_at_its_deadline_and_again_when_extended(void **state) {
    (void)state;
    config_cnode cfg = timeouts();
    supervisor_entry e = spawned_entry(&cfg, 1000);
    supervisor_entry_stopping(&e, 3000);
    assert_int_equal(supervisor_entry_phase(&e), SUPERVISOR_STOPPING);
    assert_int_equal(supervisor_entry_timer(&e, 2999), SUPERVISOR_DO_NOTHING);
    assert_int_equal(supervisor_entry_timer(&e, 3000), SUPERVISOR_DO_ESCALATE);
    supervisor_entry_stopping_until(&e, 4000);
    assert_int_equal(supervisor_entry_timer(&e, 4000), SUPERVISOR_DO_ESCALATE);
}

static void test_an_up_entry_has_no_deadline(void **state) {
    (void)state;
    config_cnode cfg = timeouts();
    supervisor_entry e = spawned_entry(&cfg, 1000);
    supervisor_entry_up(&e);
    assert_int_equal(supervisor_entry_phase(&e), SUPERVISOR_UP);
    assert_int_equal(supervisor_entry_timer(&e, INT64_MAX - 1), SUPERVISOR_DO_NOTHING);
}

static void test_exit_while_up_restarts_after_the_backoff(void **state) {
    (void)state;
    config_cnode cfg = timeouts();
    supervisor_entry e = spawned_entry(&cfg, 1000);
    supervisor_entry_up(&e);
    assert_int_equal(supervisor_entry_after_exit(&e, &cfg, false, false, false, 2000),
                     SUPERVISOR_DO_SET_RESTARTING);
    assert_int_equal(supervisor_entry_phase(&e), SUPERVISOR_BACKOFF);
    assert_true(supervisor_entry_restarting(&e));
    assert_int_equal(supervisor_entry_timer(&e, 2099), SUPERVISOR_DO_NOTHING);
    assert_int_equal(supervisor_entry_timer(&e, 2100), SUPERVISOR_DO_START);
}

static void
test_exit_past_the_intensity_fails_then_retries_after_retry_failed_after_ms(void **state) {
    (void)state;
    config_cnode cfg = timeouts();
    supervisor_entry e = spawned_entry(&cfg, 1000);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(supervisor_entry_after_exit(&e, &cfg, false, false, false, 1000 + i),
                         SUPERVISOR_DO_SET_RESTARTING);
        supervisor_entry_spawned(&e, &cfg, 1000 + i);
    }
    assert_int_equal(supervisor_entry_after_exit(&e, &cfg, false, false, false, 1003),
                     SUPERVISOR_DO_SET_FAILED);
    assert_int_equal(supervisor_entry_phase(&e), SUPERVISOR_FAILED);
    assert_int_equal(supervisor_entry_timer(&e, 61002), SUPERVISOR_DO_NOTHING);
    assert_int_equal(supervisor_entry_timer(&e, 61003), SUPERVISOR_DO_RETRY);
    assert_true(supervisor_entry_restarting(&e));
    /* a clean record: three restarts are allowed again */
    for (int i = 0; i < 3; i++)
        assert_int_equal(supervisor_entry_after_exit(&e, &cfg, false, false, false, 61004),
                         SUPERVISOR_DO_SET_RESTARTING);
}

static void test_failed_stays_failed_without_retry_failed_after_ms(void **state) {
    (void)state;
    config_cnode cfg = timeouts();
    cfg.retry_failed_after_ms = 0;
    cfg.max_restarts = 0;
    supervisor_entry e = spawned_entry(&cfg, 1000);
    assert_int_equal(supervisor_entry_after_exit(&e, &cfg, false, false, false, 1000),
                     SUPERVISOR_DO_SET_FAILED);
    assert_int_equal(supervisor_entry_timer(&e, INT64_MAX - 1), SUPERVISOR_DO_NOTHING);
}

static void test_a_temporary_entry_stops_and_a_peer_or_one_stopped_for_good_retires(void **state) {
    (void)state;
    config_cnode cfg = timeouts();
    cfg.restart = CNODE_RESTART_TEMPORARY;
    supervisor_entry e = spawned_entry(&cfg, 1000);
    assert_int_equal(supervisor_entry_after_exit(&e, &cfg, false, false, false, 1000),
                     SUPERVISOR_DO_SET_STOPPED);
    assert_int_equal(supervisor_entry_phase(&e), SUPERVISOR_STOPPED);
    cfg.restart = CNODE_RESTART_PERMANENT;
    e = spawned_entry(&cfg, 1000);
    assert_int_equal(supervisor_entry_after_exit(&e, &cfg, false, false, true, 1000),
                     SUPERVISOR_DO_RETIRE);
    e = spawned_entry(&cfg, 1000);
    supervisor_entry_restart_soon(&e);
    assert_int_equal(supervisor_entry_after_exit(&e, &cfg, false, true, false, 1000),
                     SUPERVISOR_DO_RETIRE);
    assert_int_equal(supervisor_entry_phase(&e), SUPERVISOR_STOPPED);
}

static void test_a_recycled_entry_starts_at_once_and_is_not_counted(void **state) {
    (void)state;
    config_cnode cfg = timeouts();
    cfg.max_restarts = 1;
    supervisor_entry e = spawned_entry(&cfg, 1000);
    supervisor_entry_up(&e);
    for (int i = 0; i < 10; i++) {
        supervisor_entry_restart_soon(&e);
        assert_true(supervisor_entry_restart_due(&e));
        assert_int_equal(supervisor_entry_after_exit(&e, &cfg, true, false, false, 1000),
                         SUPERVISOR_DO_START);
        assert_false(supervisor_entry_restart_due(&e));
        assert_true(supervisor_entry_restarting(&e));
        supervisor_entry_spawned(&e, &cfg, 1000);
        supervisor_entry_up(&e);
    }
    /* the one restart the intensity allows is still there, with the first backoff */
    assert_int_equal(supervisor_entry_after_exit(&e, &cfg, false, false, false, 1000),
                     SUPERVISOR_DO_SET_RESTARTING);
    assert_int_equal(supervisor_entry_timer(&e, 1100), SUPERVISOR_DO_START);
}

static void test_restart_requested_in_each_phase(void **state) {
    (void)state;
    config_cnode cfg = timeouts();
    supervisor_entry e;
    supervisor_entry_init(&e);
    assert_int_equal(supervisor_entry_restart(&e), SUPERVISOR_DO_NOTHING); /* starts anyway */
    assert_false(supervisor_entry_restart_due(&e));

    const supervisor_phase running[] = {SUPERVISOR_SPAWNED, SUPERVISOR_CONNECTING, SUPERVISOR_UP};
    for (size_t i = 0; i < 3; i++) {
        e = spawned_entry(&cfg, 1000);
        if (running[i] == SUPERVISOR_CONNECTING) supervisor_entry_connecting(&e, &cfg, 1000);
        if (running[i] == SUPERVISOR_UP) supervisor_entry_up(&e);
        assert_int_equal(supervisor_entry_restart(&e), SUPERVISOR_DO_TAKE_DOWN);
        assert_true(supervisor_entry_restart_due(&e));
        supervisor_entry_stopping(&e, 5000);
        assert_int_equal(supervisor_entry_after_exit(&e, &cfg, false, false, false, 1100),
                         SUPERVISOR_DO_START);
    }

    e = spawned_entry(&cfg, 1000);
    supervisor_entry_stopping(&e, 5000);
    assert_int_equal(supervisor_entry_restart(&e), SUPERVISOR_DO_NOTHING);
    assert_true(supervisor_entry_restart_due(&e)); /* starts once the process is gone */
    assert_int_equal(supervisor_entry_after_exit(&e, &cfg, false, false, false, 1100),
                     SUPERVISOR_DO_START);

    /* backoff, failed and stopped start at once, as a restart, with a clean record */
    cfg.max_restarts = 0;
    e = spawned_entry(&cfg, 1000);
    assert_int_equal(supervisor_entry_after_exit(&e, &cfg, false, false, false, 1000),
                     SUPERVISOR_DO_SET_FAILED);
    assert_int_equal(supervisor_entry_restart(&e), SUPERVISOR_DO_START);
    assert_true(supervisor_entry_restarting(&e));
    cfg.restart = CNODE_RESTART_TEMPORARY;
    e = spawned_entry(&cfg, 1000);
    assert_int_equal(supervisor_entry_after_exit(&e, &cfg, false, false, false, 1000),
                     SUPERVISOR_DO_SET_STOPPED);
    assert_int_equal(supervisor_entry_restart(&e), SUPERVISOR_DO_START);
    assert_true(supervisor_entry_restarting(&e));
    cfg.restart = CNODE_RESTART_PERMANENT;
    cfg.max_restarts = 1;
    e = spawned_entry(&cfg, 1000);
    assert_int_equal(supervisor_entry_after_exit(&e, &cfg, false, false, false, 1000),
                     SUPERVISOR_DO_SET_RESTARTING);
    assert_int_equal(supervisor_entry_restart(&e), SUPERVISOR_DO_START);
    supervisor_entry_spawned(&e, &cfg, 1000);
    /* the restart before the request is forgotten: one more is allowed */
    assert_int_equal(supervisor_entry_after_exit(&e, &cfg, false, false, false, 1000),
                     SUPERVISOR_DO_SET_RESTARTING);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_temporary_is_never_restarted_and_transient_only_after_a_crash),
        cmocka_unit_test(test_backoff_doubles_up_to_its_cap_and_resets_once_up),
        cmocka_unit_test(test_more_than_max_restarts_within_max_seconds_fails),
        cmocka_unit_test(test_restarts_older_than_max_seconds_no_longer_count),
        cmocka_unit_test(test_an_adopted_node_is_always_retried_with_backoff),
        cmocka_unit_test(test_a_new_entry_is_idle_and_its_timer_does_nothing),
        cmocka_unit_test(test_spawn_timeout_fires_once_at_its_deadline_and_kills),
        cmocka_unit_test(test_connect_timeout_allows_connect_timeout_ms_and_a_second),
        cmocka_unit_test(test_stopping_escalates_at_its_deadline_and_again_when_extended),
        cmocka_unit_test(test_an_up_entry_has_no_deadline),
        cmocka_unit_test(test_exit_while_up_restarts_after_the_backoff),
        cmocka_unit_test(
            test_exit_past_the_intensity_fails_then_retries_after_retry_failed_after_ms),
        cmocka_unit_test(test_failed_stays_failed_without_retry_failed_after_ms),
        cmocka_unit_test(test_a_temporary_entry_stops_and_a_peer_or_one_stopped_for_good_retires),
        cmocka_unit_test(test_a_recycled_entry_starts_at_once_and_is_not_counted),
        cmocka_unit_test(test_restart_requested_in_each_phase),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
