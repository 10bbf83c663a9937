"""Login throttling that an attacker cannot turn against a victim (time passed in)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from parlour.core.throttles import LoginThrottle

VICTIM, ATTACKER, OWNER = "10.0.0.66", "10.0.0.1", "10.0.0.2"


def throttle(**kw: float) -> LoginThrottle:
    args: dict[str, float] = {
        "address_threshold": 20,
        "address_window": 600,
        "account_threshold": 50,
        "account_window": 3600,
    }
    args.update(kw)
    return LoginThrottle(3, 60.0, **args)  # type: ignore[arg-type]


def test_three_wrong_passwords_lock_that_address_out_of_that_account_only() -> None:
    t = throttle()
    assert t.failure("bob", ATTACKER, 0.0) == 0.0
    assert t.failure("bob", ATTACKER, 1.0) == 0.0
    assert t.failure("bob", ATTACKER, 2.0) == 60.0
    assert t.locked_for("bob", ATTACKER, 30.0) == 32.0
    assert t.locked_for("bob", OWNER, 30.0) == 0.0  # the owner, elsewhere, is not locked out
    assert t.locked_for("alice", ATTACKER, 30.0) == 0.0  # nor is the address for others
    assert t.locked_for("bob", ATTACKER, 62.0) == 0.0  # and it ends


def test_a_success_starts_the_pair_count_again() -> None:
    t = throttle()
    t.failure("bob", OWNER, 0.0)
    t.failure("bob", OWNER, 1.0)
    t.success("bob", OWNER)
    assert t.failure("bob", OWNER, 2.0) == 0.0
    assert t.failure("bob", OWNER, 3.0) == 0.0
    assert t.failure("bob", OWNER, 4.0) == 60.0


def test_spraying_names_from_one_address_locks_the_address_and_the_lock_grows() -> None:
    t = throttle()
    locked = [t.failure(f"guess{i}", ATTACKER, float(i)) for i in range(20)]
    assert locked[:19] == [0.0] * 19 and locked[19] == 60.0
    assert t.locked_for("anyone", ATTACKER, 20.0) > 0  # every name, known or not
    assert t.locked_for("anyone", OWNER, 20.0) == 0.0
    # after the lock, another burst locks for twice as long
    later = [t.failure(f"again{i}", ATTACKER, 100.0 + i) for i in range(20)]
    assert later[-1] == 120.0


def test_evicting_counters_by_guessing_unknown_names_does_not_reopen_a_victims_lock() -> None:
    """Issue 10: 10,050 logins for unknown names evicted the victim's counter (29 real guesses
    in 25 s instead of 3 a minute). Now the address locks after 20 failures, whatever the
    names, and the table bound cannot be used to get more guesses."""
    t = LoginThrottle(3, 60.0, capacity=100)
    now, guesses_on_victim = 0.0, 0
    for round_ in range(200):
        for i in range(60):  # a burst of unknown names to evict counters
            if t.locked_for(f"nobody{round_}-{i}", ATTACKER, now) == 0:
                t.failure(f"nobody{round_}-{i}", ATTACKER, now)
            now += 0.001
        if t.locked_for("victim", ATTACKER, now) == 0:
            guesses_on_victim += 1
            t.failure("victim", ATTACKER, now)
        now += 0.1
    assert now > 25 and guesses_on_victim <= 3
    assert len(t) <= 3 * 100  # every table stays bounded


def test_an_account_under_distributed_attack_locks_the_attackers_not_the_owner() -> None:
    t = throttle(account_threshold=10)
    attackers = [f"10.1.0.{i}" for i in range(30)]
    for i, address in enumerate(attackers):  # one guess each: no pair reaches 3
        t.failure("bob", address, float(i))
    # the account is under attack: every address that failed on it is locked out of it ...
    assert all(t.locked_for("bob", a, 30.5) > 0 for a in attackers[-5:])
    # ... the owner's address, which never failed, is not
    assert t.locked_for("bob", OWNER, 30.5) == 0.0


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["bob", "alice", "ghost"]),
            st.sampled_from([ATTACKER, OWNER, VICTIM]),
            st.floats(0, 5),
        ),
        max_size=60,
    )
)
def test_an_address_with_no_failure_on_an_account_is_never_locked_out_of_it(
    script: list[tuple[str, str, float]],
) -> None:
    """Whatever others do, an address is locked out of an account only for its own
    failures: on that account (pair or account under attack) or anywhere (address)."""
    t = throttle(account_threshold=5, address_threshold=10)
    now = 0.0
    failed: set[tuple[str, str]] = set()
    failed_anywhere: set[str] = set()
    for user, address, step in script:
        now += step
        t.failure(user, address, now)
        failed.add((user, address))
        failed_anywhere.add(address)
    for user in ("bob", "alice", "ghost"):
        for address in (ATTACKER, OWNER, VICTIM, "10.9.9.9"):
            if (user, address) not in failed and address not in failed_anywhere:
                assert t.locked_for(user, address, now) == 0.0
