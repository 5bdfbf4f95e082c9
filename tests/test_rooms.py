"""chatlab.server.rooms: membership and nicks, with no I/O at all (not per backend)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chatlab.server.rooms import Rooms


class Member:
    """What Rooms needs of a member: rooms, nick, name (the nick, or an address)."""

    def __init__(self, address: str) -> None:
        self.address, self.rooms, self.nick = address, {}, None

    @property
    def name(self) -> str:
        return self.nick or self.address


def test_join_returns_who_was_there_in_join_order():
    rooms, a, b, c = Rooms(), Member("a:1"), Member("b:2"), Member("c:3")
    assert rooms.join(a, 5) == []
    assert rooms.join(b, 5) == ["a:1"]
    assert rooms.join(c, 5) == ["a:1", "b:2"]
    assert rooms.names(5) == ["a:1", "b:2", "c:3"]
    assert rooms.join(b, 5) is None  # already a member: nothing changes
    assert list(b.rooms) == [5]


def test_both_sides_of_membership_move_together():
    rooms, a = Rooms(), Member("a:1")
    for room in (7, 3, 9):
        rooms.join(a, room)
    assert list(a.rooms) == [7, 3, 9]  # the order joined, for leaving them in order
    assert rooms.leave(a, 3) and list(a.rooms) == [7, 9]
    assert not rooms.leave(a, 3)
    assert rooms.snapshot() == {7: ["a:1"], 9: ["a:1"]}


def test_an_emptied_room_is_forgotten():
    rooms, a, b = Rooms(), Member("a:1"), Member("b:2")
    rooms.join(a, 1)
    rooms.join(b, 1)
    rooms.leave(a, 1)
    assert len(rooms) == 1 and rooms.counts() == {1: 1}
    rooms.leave(b, 1)
    assert len(rooms) == 0 and rooms.members == {} and rooms.snapshot() == {}


def test_nicks_are_unique_in_any_case_and_renames_free_the_old_one():
    rooms, a, b = Rooms(), Member("a:1"), Member("b:2")
    assert rooms.rename(a, "Alice") == "a:1"  # the old name, for "a:1 is now known as..."
    assert rooms.owner("alice") is a and rooms.owner("ALICE") is a
    assert rooms.rename(a, "al") == "Alice"
    assert rooms.owner("alice") is None and rooms.owner("AL") is a
    rooms.rename(b, "alice")
    assert rooms.owner("Alice") is b


def test_forget_leaves_every_room_and_frees_the_nick():
    rooms, a, b = Rooms(), Member("a:1"), Member("b:2")
    rooms.rename(a, "alice")
    for room in (1, 2):
        rooms.join(a, room)
    rooms.join(b, 2)
    assert rooms.forget(a) == [1, 2]
    assert a.rooms == {} and rooms.owner("alice") is None
    assert rooms.snapshot() == {2: ["b:2"]}


def test_forget_does_not_free_a_nick_someone_else_took_since():
    rooms, a, b = Rooms(), Member("a:1"), Member("b:2")
    rooms.rename(a, "alice")
    rooms.rename(a, "al")
    rooms.rename(b, "alice")
    rooms.forget(a)
    assert rooms.owner("alice") is b and rooms.owner("al") is None


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["join", "leave", "forget"]), st.integers(0, 4), st.integers(1, 3)
        ),
        max_size=60,
    )
)
def test_the_two_sides_always_agree(steps):
    """Whatever the order of joins, leaves and departures, room -> members and member ->
    rooms describe the same relation, and no empty room is kept."""
    rooms, members = Rooms(), [Member(f"m:{i}") for i in range(5)]
    for op, who, room in steps:
        member = members[who]
        if op == "join":
            rooms.join(member, room)
        elif op == "leave":
            rooms.leave(member, room)
        else:
            rooms.forget(member)
        pairs_by_room = {(id(m), r) for r, ms in rooms.members.items() for m in ms}
        pairs_by_member = {(id(m), r) for m in members for r in m.rooms}
        assert pairs_by_room == pairs_by_member
        assert all(rooms.members.values())
