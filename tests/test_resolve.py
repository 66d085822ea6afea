"""Identity resolution rules, on in-memory graphs."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from workers.normalize import Event, Identifiers
from workers.resolve import Graph, Profile, resolve

T0 = datetime(2026, 11, 1, tzinfo=UTC)
_ids = itertools.count()


def ev(
    kind: str = "track",
    *,
    email: str | None = None,
    profile_id: str | None = None,
    user_id: str | None = None,
    anonymous_id: str | None = None,
    at: int = 0,
    traits: dict | None = None,
    previous_id: str | None = None,
    account: dict | None = None,
) -> Event:
    when = T0 + timedelta(minutes=at)
    return Event(
        project_id=1,
        message_id=f"m{next(_ids)}",
        type=kind,
        source="segment",
        timestamp=when,
        received_at=when,
        original_timestamp=when,
        sent_at=None,
        ids=Identifiers(email, profile_id, user_id, anonymous_id),
        traits=traits or {},
        previous_id=previous_id,
        account=account,
    )


def known(*profiles: tuple[int, str | None, list[tuple[str, str]]]) -> Graph:
    graph = Graph()
    for pid, email, keys in profiles:
        graph.profiles[pid] = Profile(
            id=pid, email=email, event_count=1, first_seen=T0, last_seen=T0
        )
        for key in keys:
            graph.owner[key] = pid
    return graph


def test_unknown_visitor_gets_a_new_profile_holding_all_its_identifiers() -> None:
    graph = Graph()
    plan = resolve([ev(profile_id="ko1", anonymous_id="a1")], graph)
    [pid] = plan.assignments
    assert pid < 0 and graph.profiles[pid].new
    assert plan.new_identities == {("profile_id", "ko1"): pid, ("anonymous_id", "a1"): pid}


def test_anonymous_visitor_identified_later_stays_one_profile() -> None:
    graph = Graph()
    plan = resolve(
        [ev(profile_id="ko1", at=0), ev("identify", profile_id="ko1", email="ann@acme.com", at=1)],
        graph,
    )
    assert plan.assignments[0] == plan.assignments[1]
    profile = graph.profiles[plan.assignments[0]]
    assert profile.email == "ann@acme.com" and profile.event_count == 2
    assert ("email", "ann@acme.com") in plan.new_identities


def test_known_identifier_attaches_new_ones_to_its_profile() -> None:
    graph = known((7, None, [("anonymous_id", "a1")]))
    plan = resolve([ev(anonymous_id="a1", user_id="u1")], graph)
    assert plan.assignments == [7]
    assert plan.new_identities == {("user_id", "u1"): 7}
    assert graph.profiles[7].event_count == 2


def test_event_linking_two_profiles_merges_them_and_logs_it() -> None:
    graph = known(
        (7, None, [("anonymous_id", "a1")]), (9, "ann@acme.com", [("email", "ann@acme.com")])
    )
    plan = resolve([ev(email="ann@acme.com", anonymous_id="a1")], graph)
    assert plan.assignments == [9]
    [merge] = plan.merges
    assert (merge.from_profile, merge.into_profile, merge.refused) == (7, 9, False)
    assert 7 not in graph.profiles and graph.owner[("anonymous_id", "a1")] == 9
    assert graph.profiles[9].event_count == 3  # 1 + 1 moved + this event


def test_two_profiles_with_different_emails_are_never_merged() -> None:
    # a shared laptop: the Koala cookie belongs to Ann, Bob logs in on it
    graph = known(
        (7, "ann@acme.com", [("email", "ann@acme.com"), ("profile_id", "ko1")]),
        (9, "bob@acme.com", [("email", "bob@acme.com")]),
    )
    plan = resolve([ev(email="bob@acme.com", profile_id="ko1")], graph)
    assert plan.assignments == [9]  # the event goes to the profile of its email
    assert plan.merges == []
    [refused] = plan.refused
    assert (refused.from_profile, refused.into_profile, refused.refused) == (7, 9, True)
    assert graph.owner[("profile_id", "ko1")] == 7  # the cookie stays with Ann


def test_new_email_on_a_cookie_of_someone_else_makes_a_new_profile() -> None:
    graph = known((7, "ann@acme.com", [("email", "ann@acme.com"), ("profile_id", "ko1")]))
    plan = resolve([ev(email="carl@acme.com", profile_id="ko1")], graph)
    [pid] = plan.assignments
    assert pid != 7 and graph.profiles[pid].email == "carl@acme.com"
    assert graph.owner[("profile_id", "ko1")] == 7
    assert len(plan.refused) == 1


def test_without_email_the_strongest_identifier_picks_the_profile() -> None:
    graph = known(
        (7, "ann@acme.com", [("user_id", "u1")]), (9, "bob@acme.com", [("anonymous_id", "a9")])
    )
    plan = resolve([ev(user_id="u1", anonymous_id="a9")], graph)
    assert plan.assignments == [7] and plan.merges == [] and len(plan.refused) == 1


def test_alias_merges_the_previous_profile_into_the_user_profile() -> None:
    graph = known((7, None, [("anonymous_id", "anon-1")]), (9, "ann@acme.com", [("user_id", "u1")]))
    plan = resolve([ev("alias", user_id="u1", previous_id="anon-1")], graph)
    assert plan.assignments == [9]
    assert [(m.from_profile, m.into_profile) for m in plan.merges] == [(7, 9)]


def test_alias_with_an_unknown_previous_id_attaches_it_as_anonymous_id() -> None:
    graph = known((9, None, [("user_id", "u1")]))
    plan = resolve([ev("alias", user_id="u1", previous_id="old")], graph)
    assert plan.new_identities == {("anonymous_id", "old"): 9}


def test_alias_between_two_identified_people_is_refused() -> None:
    graph = known(
        (7, "ann@acme.com", [("user_id", "old")]), (9, "bob@acme.com", [("user_id", "u1")])
    )
    plan = resolve([ev("alias", user_id="u1", previous_id="old")], graph)
    assert plan.merges == [] and len(plan.refused) == 1


def test_traits_newest_timestamp_wins_even_when_the_older_call_arrives_late() -> None:
    graph = Graph()
    plan = resolve(
        [
            ev("identify", user_id="u1", traits={"plan": "pro", "name": "Ann"}, at=10),
            ev("identify", user_id="u1", traits={"plan": "free", "title": "CTO"}, at=5),
        ],
        graph,
    )
    profile = graph.profiles[plan.assignments[0]]
    assert profile.traits == {"plan": "pro", "name": "Ann", "title": "CTO"}


def test_merge_keeps_the_newest_trait_of_either_profile() -> None:
    graph = known((7, None, [("anonymous_id", "a1")]), (9, None, [("user_id", "u1")]))
    graph.profiles[7].traits, graph.profiles[7].trait_times = (
        {"plan": "new"},
        {"plan": "2026-11-05"},
    )
    graph.profiles[9].traits, graph.profiles[9].trait_times = (
        {"plan": "old"},
        {"plan": "2026-11-01"},
    )
    resolve([ev(user_id="u1", anonymous_id="a1")], graph)
    assert graph.profiles[9].traits == {"plan": "new"}


def test_every_call_type_counts_as_an_event_with_first_and_last_seen() -> None:
    graph = Graph()
    kinds = ["track", "page", "screen", "identify", "group", "alias"]
    plan = resolve(
        [
            ev(k, user_id="u1", at=i, previous_id="p" if k == "alias" else None)
            for i, k in enumerate(kinds)
        ],
        graph,
    )
    profile = graph.profiles[plan.assignments[0]]
    assert len(set(plan.assignments)) == 1
    assert profile.event_count == 6
    assert (profile.first_seen, profile.last_seen) == (T0, T0 + timedelta(minutes=5))


def test_group_links_the_profile_to_the_account() -> None:
    graph = Graph()
    plan = resolve([ev("group", user_id="u1", account={"group_id": "g1"})], graph)
    assert plan.account_links == {(plan.assignments[0], "g1")}


def test_profiles_created_in_the_batch_merge_without_a_store_merge() -> None:
    graph = Graph()
    plan = resolve(
        [ev(anonymous_id="a1"), ev(user_id="u1"), ev(user_id="u1", anonymous_id="a1")], graph
    )
    assert len({graph.final(p) for p in plan.assignments}) == 1
    assert plan.merges == []  # nothing to move in the store: neither existed before
    assert len([p for p in graph.profiles.values() if p.new]) == 1
