from servesim.workload import RequestState
from tests.workload.helpers import drive, make

SESSIONS = {
    "arrival": {"rate_per_s": 0.5},
    "lengths": {"prompt_tokens": [50, 300], "output_tokens": [20, 200]},
    "sessions": {"turns": 4, "think_time_s": 5.0, "think_time_dist": "fixed"},
    "num_requests": 400,
}


def by_session(reqs):
    out = {}
    for r in reqs:
        out.setdefault(r.session_id, []).append(r)
    return out


def test_turns_extend_the_previous_prompt_and_answer():
    reqs = drive(make(SESSIONS))
    assert len(reqs) == 400
    sessions = by_session(reqs)
    full = [s for s in sessions.values() if len(s) == 4]
    assert len(full) >= 95
    for turns in full:
        assert [r.turn for r in turns] == [0, 1, 2, 3]
        for prev, nxt in zip(turns, turns[1:]):
            assert nxt.prompt_len > prev.prompt_len + prev.output_len
            shared = (prev.prompt_len + prev.output_len) // 16
            assert len(prev.hash_ids) == shared  # ids cover prompt and answer
            assert nxt.hash_ids[:shared] == prev.hash_ids  # the whole previous context is reusable
            assert nxt.arrival_s == prev.finish_s + 5.0  # fixed think time after the answer
    # Different sessions share no blocks.
    first_blocks = [s[0].hash_ids[0] for s in sessions.values()]
    assert len(set(first_blocks)) == len(first_blocks)


def test_rejected_turn_ends_the_session():
    reqs = drive(make(SESSIONS), fail=lambda r: r.turn == 1)
    assert max(r.turn for r in reqs) == 1
    assert all(r.state in (RequestState.FINISHED, RequestState.REJECTED) for r in reqs)


def test_context_limit_ends_sessions():
    cfg = {**SESSIONS, "sessions": {"turns": 50, "max_prompt_tokens": 2000}}
    reqs = drive(make(cfg))
    assert max(r.prompt_len for r in reqs) <= 2000
    assert max(r.turn for r in reqs) < 49


def test_shared_prefix_groups():
    cfg = {"lengths": {"prompt_tokens": 100, "output_tokens": 10}, "shared_prefix": {"tokens": 1024, "groups": 3},
           "num_requests": 300}
    reqs = list(make(cfg).arrivals())
    assert {r.prompt_len for r in reqs} == {1124}
    assert len({r.hash_ids for r in reqs}) == 3
    assert all(len(r.hash_ids) == 64 for r in reqs)


def test_closed_loop_users_keep_one_request_in_flight():
    cfg = {"arrival": {"process": "closed", "users": 4, "think_time_s": 2.0, "think_time_dist": "fixed"},
           "lengths": {"prompt_tokens": 10, "output_tokens": 100}, "num_requests": 40}
    reqs = drive(make(cfg), service_s=lambda r: 1.0)
    assert len(reqs) == 40
    # 4 users, 1 s service + 2 s think: arrivals at 0, 3, 6, ... in groups of four.
    assert [r.arrival_s for r in reqs] == [3.0 * (i // 4) for i in range(40)]


def test_closed_loop_sessions_start_after_the_previous_session():
    cfg = {"arrival": {"process": "closed", "users": 1, "think_time_s": 1.0, "think_time_dist": "fixed"},
           "sessions": {"turns": 2, "think_time_s": 3.0, "think_time_dist": "fixed"},
           "lengths": {"prompt_tokens": 10, "output_tokens": 10}, "num_requests": 6}
    reqs = drive(make(cfg), service_s=lambda r: 1.0)
    assert [(r.session_id, r.turn, r.arrival_s) for r in reqs] == [
        (0, 0, 0.0), (0, 1, 4.0), (1, 0, 6.0), (1, 1, 10.0), (2, 0, 12.0), (2, 1, 16.0)]


def test_a_turns_ids_are_its_ranges_not_a_copy_of_its_history():
    """A next turn's ids (`HashIds.extend`) hold one first id and one bound per range, whatever
    the length of the history they extend, and read as the tuple of the same ids for every
    reader: length, indexing, slices, iteration both ways, membership, equality, hashing,
    ordering, concatenation and pickling."""
    import pickle

    from servesim.workload.prefix import FOLLOW_UP_IDS, HashIds, IdRanges

    firsts, follow = HashIds(16), HashIds(16, FOLLOW_UP_IDS)
    turn = firsts.extend(firsts.fresh(20), 5_000 * 16)
    for _ in range(30):  # a long conversation: 30 turns of 200 new blocks
        turn = follow.extend(turn, (len(turn) + 200) * 16)
    assert type(turn) is IdRanges and len(turn) == 11_000
    assert len(turn.firsts) == 32 and len(turn.bounds) == 33  # the ranges only: no id per block
    ref = (*range(20), *range(20, 5_000), *(x for i in range(30) for x in range(FOLLOW_UP_IDS + 200 * i,
                                                                                FOLLOW_UP_IDS + 200 * (i + 1))))
    assert tuple(turn) == ref and turn == ref and ref == turn and hash(turn) == hash(ref)
    assert list(reversed(turn)) == list(reversed(ref))
    for i in (0, 19, 20, 4_999, 5_000, 5_199, 5_200, 10_999, -1, -11_000):
        assert turn[i] == ref[i]
    for a, b in ((0, 11_000), (0, 5_100), (19, 5_201), (5_000, 5_000), (7_777, 10_001), (-300, None)):
        assert turn[a:b] == ref[a:b] and type(turn[a:b]) is IdRanges
    assert turn[::7] == ref[::7] and turn[10:3] == () and not turn[10:3]
    assert FOLLOW_UP_IDS + 5_999 in turn and 5_000 not in turn and -1 not in turn
    assert turn != ref[:-1] and turn != ref[:-1] + (7,) and turn[:-1] < turn and turn != list(ref)
    assert (1, 2) + turn[:2] == (1, 2, 0, 1) and turn[:2] + (5,) == (0, 1, 5)
    assert pickle.loads(pickle.dumps(turn)) == turn and repr(turn[:3]) == repr((0, 1, 2))
    assert follow.extend(turn, 11_000 * 16) is turn and follow.extend(turn, 300 * 16) == ref[:300]
    assert IdRanges(ref[:5_200], (0, 20, 5_000, 5_200)) == turn[:5_200]  # from the ids and their ranges


def test_a_sessions_last_turn_counts_only_its_previous_turns_ids_as_shared():
    """A turn that no turn can follow (its session's last planned turn, or a context already past
    `max_prompt_tokens`) says its ids past its previous turn's are its own
    (`Request.num_shared_hash_ids`, as a replay's counts: no other request has them); every other
    turn leaves the count unknown, those whose session ends later for the next message's length
    or the request limit included."""
    limit = 1200
    cfg = {**SESSIONS, "sessions": {"turns": [1, 4], "think_time_s": 5.0, "think_time_dist": "fixed",
                                    "max_prompt_tokens": limit}}
    reqs = drive(make(cfg))
    ids_of = {}
    for r in reqs:
        for h in r.hash_ids:
            ids_of.setdefault(h, set()).add(r.id)
    marked = by_cap = one_turn = 0
    unmarked_ends = 0
    for turns in by_session(reqs).values():
        for prev, r in zip([None, *turns], turns):
            if r.num_shared_hash_ids is None:
                unmarked_ends += r is turns[-1]
                continue
            assert r is turns[-1]  # (no turn followed it)
            marked += 1
            shared = len(prev.hash_ids) if prev is not None else 1
            assert r.num_shared_hash_ids == shared
            assert all(ids_of[h] == {r.id} for h in r.hash_ids[shared:])  # (its own ids: in no other request)
            assert r.hash_ids[shared:] or prev is None
            by_cap += r.prompt_len + r.output_len > limit
            one_turn += prev is None
    assert marked > 120 and by_cap >= 5 and one_turn > 30  # (157, 8, 44)
    assert unmarked_ends >= 5  # (9: ended by the next message's length or the request limit: not known when emitted)
