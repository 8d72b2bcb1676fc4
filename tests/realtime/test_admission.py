"""Admission: session slots only after hello, connection caps, wrong-token back-off, log budget."""

from __future__ import annotations

import pytest

from realtime.admission import Admission, AdmissionConfig, LogBudget
from realtime.errors import ProtocolError


def refused(fn, *args) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    with pytest.raises(ProtocolError) as info:
        fn(*args)
    assert "Traceback" not in info.value.message
    return info.value.code, info.value.close_code


def test_a_session_slot_is_taken_by_an_accepted_hello_not_by_a_connection() -> None:
    adm = Admission(max_sessions=2, config=AdmissionConfig(max_pending_hellos=100))
    silent = [adm.connect("10.0.0.9", 0.0) for _ in range(5)]  # five sockets that never speak
    assert (adm.connections, adm.pending, adm.sessions) == (5, 5, 0)
    a, b, c = (adm.connect(f"10.0.0.{i}", 0.0) for i in range(3))
    adm.start_session(a)
    adm.start_session(b)
    assert refused(adm.start_session, c) == ("server_full", 1013)
    assert (adm.connections, adm.pending, adm.sessions) == (8, 6, 2)
    adm.release(a)
    adm.release(a)  # idempotent
    adm.start_session(c)  # the freed slot
    for t in [b, c, *silent]:
        adm.release(t)
    assert (adm.connections, adm.pending, adm.sessions) == (0, 0, 0)
    assert adm.addresses_tracked == 0  # nothing kept for addresses that left


def test_connections_per_address_are_capped_and_other_addresses_are_not() -> None:
    adm = Admission(max_sessions=10, config=AdmissionConfig(max_connections_per_address=2))
    first = adm.connect("10.0.0.1", 0.0)
    adm.start_session(first)  # authenticated or not, a connection counts
    adm.connect("10.0.0.1", 0.0)
    assert refused(adm.connect, "10.0.0.1", 0.0) == ("too_many_connections", 1013)
    adm.connect("10.0.0.2", 0.0)
    adm.release(first)
    adm.connect("10.0.0.1", 0.0)


def test_unauthenticated_connections_are_bounded_globally() -> None:
    adm = Admission(max_sessions=10, config=AdmissionConfig(max_pending_hellos=2))
    a = adm.connect("10.0.0.1", 0.0)
    adm.connect("10.0.0.2", 0.0)
    assert refused(adm.connect, "10.0.0.3", 0.0) == ("server_full", 1013)
    adm.start_session(a)  # no longer waiting for its hello
    adm.connect("10.0.0.3", 0.0)


def test_wrong_tokens_lock_the_address_out_for_a_growing_delay() -> None:
    cfg = AdmissionConfig(auth_failures_allowed=3, auth_backoff_s=2.0, auth_backoff_max_s=16.0,
                          auth_forget_s=100.0)
    adm = Admission(max_sessions=10, config=cfg)
    t = adm.connect("10.0.0.1", 0.0)
    other = adm.connect("10.0.0.2", 0.0)
    for now in (1.0, 2.0):
        adm.check_hello(t, now)
        adm.token_rejected(t, now)
    adm.check_hello(t, 3.0)
    adm.token_rejected(t, 3.0)  # the third: locked out for 2 s
    code, close = refused(adm.check_hello, t, 4.0)
    assert (code, close) == ("too_many_attempts", 1008)
    adm.check_hello(other, 4.0)  # another address is unaffected
    adm.check_hello(t, 5.0)  # the lock is over
    adm.token_rejected(t, 5.0)  # the fourth: 4 s
    assert refused(adm.check_hello, t, 8.9)[0] == "too_many_attempts"
    adm.check_hello(t, 9.0)
    for now in (9.0, 30.0, 60.0):  # 8 s, then 16 s (the cap), then 16 s
        adm.token_rejected(t, now)
    assert refused(adm.check_hello, t, 75.9)[0] == "too_many_attempts"
    adm.check_hello(t, 76.0)
    # a quiet spell of auth_forget_s after the lock forgets the address
    adm.release(t)
    adm.release(other)
    adm.expire(76.0 + 100.0)
    assert adm.addresses_tracked == 0
    t = adm.connect("10.0.0.1", 200.0)
    adm.token_rejected(t, 200.0)
    adm.check_hello(t, 200.0)  # one wrong token is free again


def test_the_failure_table_is_bounded() -> None:
    adm = Admission(max_sessions=10, config=AdmissionConfig(max_tracked_addresses=100))
    for i in range(1000):
        t = adm.connect(f"10.0.{i // 256}.{i % 256}", float(i))
        adm.token_rejected(t, float(i))
        adm.release(t)
    assert adm.addresses_tracked <= 100


def test_log_budget_allows_a_burst_then_a_rate_and_counts_the_rest() -> None:
    budget = LogBudget(burst=3, per_s=2.0)
    assert [budget.allow(0.0) for _ in range(5)] == [True, True, True, False, False]
    assert budget.take_suppressed() == 2 and budget.take_suppressed() == 0
    assert budget.allow(0.5) and not budget.allow(0.5)  # one more every 0.5 s
    assert budget.allow(100.0) and budget.allow(100.0) and budget.allow(100.0)
    assert not budget.allow(100.0)
