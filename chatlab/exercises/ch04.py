"""Checks for chapter 04's exercises (notebooks/04-rooms-and-broadcast.ipynb).

04.1 ``check_broadcast``: a broadcast over a plain list that drops the members whose send
     fails, visiting every member exactly once (the classic server's bug, on strings).
04.2 ``check_costs``: which room operations cost O(1) and which O(n), for a list and for a
     dict, counted (comparisons, not seconds: the count is the same on every machine).
04.3 ``check_fixed_server``: a ClassicServer subclass whose broadcast() survives a dead
     member, run live with scripted clients; the verdict says who missed what.
04.4 ``check_deliver``: chatlab's way over a dict, which refuses to change size while it is
     walked: queue for the members who keep up, cut off the others after the loop.

Every check runs the learner's answer, never raises for a wrong one, and cleans up what it
started (servers, sockets) whatever the answer does.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Callable
from typing import Any

from ..classic import ClassicServer
from ..scripted import ExpectTimeout, ScriptedClient
from . import Check, Verdict

__all__ = [
    "COST_QUESTIONS",
    "check_broadcast",
    "check_costs",
    "check_deliver",
    "check_fixed_server",
    "count_steps",
]


# -- 04.1 ------------------------------------------------------------------------------------

#: (members, the dead among them): a dead member in the middle, two in a row, the last one,
#: the first, all of them, none, and an empty room
BROADCAST_CASES: list[tuple[list[str], set[str]]] = [
    (["alice", "bob", "carol", "dave"], {"bob"}),
    (["alice", "bob", "carol", "dave"], {"bob", "carol"}),
    (["alice", "bob", "carol", "dave"], {"dave"}),
    (["alice", "bob", "carol", "dave"], {"alice"}),
    (["alice", "bob", "carol"], {"alice", "bob", "carol"}),
    (["alice", "bob", "carol"], set()),
    ([], set()),
]


def check_broadcast(answer: Callable[[list[str], Callable[[str], None]], Any]) -> Verdict:
    """04.1: ``answer(members, send)`` calls ``send(member)`` once for every member, in
    order; ``send`` raises BrokenPipeError for a dead member, who must then be removed from
    ``members`` itself (the list the server keeps, changed in place). It returns the list of
    the members it removed."""
    check = Check("04.1", "every member visited once, the dead removed")
    for original, dead in BROADCAST_CASES:
        members = list(original)
        sent: list[str] = []

        def send(member: str, sent: list[str] = sent, dead: set[str] = dead) -> None:
            sent.append(member)
            if member in dead:
                raise BrokenPipeError(32, "Broken pipe")

        case = f"with {original} and {sorted(dead)} dead"
        ok, removed = check.call(answer, members, send)
        if not ok:
            check.problems[-1] += f" ({case}" + (f"; it had sent to {sent})" if sent else ")")
            break
        alive = [m for m in original if m not in dead]
        missed = [m for m in original if m not in sent]
        twice = sorted({m for m in sent if sent.count(m) > 1})
        good = check.expect(not missed, f"{case}: {', '.join(missed)} never sent to")
        good &= check.expect(not twice, f"{case}: {', '.join(twice)} sent to twice")
        good &= check.expect(
            sent == original or missed or twice, f"{case}: sent in the order {sent}"
        )
        good &= check.expect(
            members == alive,
            f"{case}: members is {members} afterwards, expected {alive}"
            + (" (remove from the list you were given, not from a new one)" if original else ""),
        )
        good &= check.expect(
            list(removed) == [m for m in original if m in dead],
            f"{case}: returned {removed!r}, expected the removed members "
            f"{[m for m in original if m in dead]}",
        )
        if not good:
            break  # one case at a time: the first that fails says enough
    return check.verdict("iterate over a copy, remove from the original: nobody is skipped")


# -- 04.2 ------------------------------------------------------------------------------------

#: the questions of 04.2, each answered "O(1)" or "O(n)" for a room of n members
COST_QUESTIONS = (
    "list: x in members",
    "list: members.remove(x)",
    "dict: x in members",
    "dict: del members[x]",
    "dict: for m in members",
)


class _Member:
    """A member that counts how often it is compared (its hash is its number: deterministic)."""

    comparisons = 0

    def __init__(self, number: int) -> None:
        self.number = number

    def __eq__(self, other: object) -> bool:
        _Member.comparisons += 1
        return isinstance(other, _Member) and other.number == self.number

    def __hash__(self) -> int:
        return self.number


def count_steps(question: str, n: int) -> int:
    """The steps ``question`` (one of COST_QUESTIONS) takes in a room of n: the comparisons
    made for the member who joined last, looked up with an equal but distinct object (so that
    the ``is`` shortcut cannot skip them), or the members visited, for the loop."""
    room = [_Member(i) for i in range(n)]
    last = _Member(n - 1)
    as_list, as_dict = list(room), dict.fromkeys(room)
    _Member.comparisons = 0
    if question == "list: x in members":
        assert last in as_list
    elif question == "list: members.remove(x)":
        as_list.remove(last)
    elif question == "dict: x in members":
        assert last in as_dict
    elif question == "dict: del members[x]":
        del as_dict[last]
    elif question == "dict: for m in members":
        return sum(1 for _ in as_dict)
    else:
        raise ValueError(f"unknown question {question!r}; the questions: {COST_QUESTIONS}")
    return _Member.comparisons


def check_costs(answers: dict[str, Any]) -> Verdict:
    """04.2: ``answers`` maps each of COST_QUESTIONS to "O(1)" or "O(n)". The check counts
    the comparisons each operation makes in rooms of 1,000 and 2,000 members: a count that
    doubles with the room is O(n), one that stays put is O(1)."""
    check = Check("04.2", "which room operations are O(1)")
    if not check.expect(isinstance(answers, dict), f"answers should be a dict, not {answers!r}"):
        return check.verdict()
    for question in COST_QUESTIONS:
        given = answers.get(question)
        if not check.answered(given, repr(question)):
            continue
        said = str(given).replace(" ", "").lower()
        if not check.expect(
            said in ("o(1)", "o(n)"), f"{question!r}: answer 'O(1)' or 'O(n)', not {given!r}"
        ):
            continue
        small, large = count_steps(question, 1000), count_steps(question, 2000)
        truth = "O(n)" if large >= 2 * small > 0 else "O(1)"
        check.expect(
            said == truth.lower(),
            f"{question!r}: you said {given}, but it took {small} steps for the last of 1000 "
            f"members and {large} for the last of 2000",
        )
    return check.verdict(
        "a dict finds and removes a member in O(1); only visiting them all is O(n)"
    )


# -- 04.3 ------------------------------------------------------------------------------------

ROOM = 111
WAIT = 3.0  # seconds: a bound on each wait; a right answer never comes near it


def _reset_arrived(sock: socket.socket, timeout: float) -> bool:
    """Wait until the server's socket for a closed peer has received that peer's RST (poll()
    reports POLLERR or POLLHUP); without poll (Windows), go on at once."""
    if not hasattr(select, "poll") or sock.fileno() < 0:
        return True
    watcher = select.poll()
    watcher.register(sock, select.POLLERR)  # POLLERR and POLLHUP are reported regardless
    return bool(watcher.poll(int(timeout * 1000)))


def check_fixed_server(server_class: Any) -> Verdict:
    """04.3: ``server_class`` is a subclass of ClassicServer with its own broadcast(). The check
    runs it with bob, carol, dave and alice in room 111 (in that order); bob reads what he was
    sent and closes. Alice says "one" (the send to bob succeeds; his kernel answers RST),
    "two" (the send to bob fails) and "three". Carol and dave must get all three, bob must
    be out of the room and out of select()'s list, and the server must still be running."""
    check = Check("04.3", "the classic server survives a dead member")
    if not check.expect(
        isinstance(server_class, type) and issubclass(server_class, ClassicServer),
        f"pass a subclass of ClassicServer (the class itself), not {server_class!r}",
    ):
        return check.verdict()
    if not check.expect(
        server_class.broadcast is not ClassicServer.broadcast,
        f"{server_class.__name__} does not override broadcast() yet",
    ):
        return check.verdict()
    server = None
    clients: list[ScriptedClient] = []
    try:
        server = server_class().start()
        names = ("bob", "carol", "dave", "alice")
        for name in names:
            clients.append(ScriptedClient(server.address, name=name, timeout=WAIT))
        bob, carol, dave, alice = clients
        for i, client in enumerate(clients):
            client.join(ROOM, wait=False)
            server.wait_reads(i + 1, WAIT)  # the join was handled before the next one
            for member in clients[:i]:
                try:
                    member.expect("entered room")  # read it: nothing unread, so bob's close is FIN
                except ExpectTimeout:
                    check.expect(
                        False,
                        f"{member.name} never got '[host:port] entered room.' when "
                        f"{client.name} joined: does your broadcast() send to the others?",
                    )
                    return check.verdict()
        room = server.rooms[str(ROOM).encode()]
        bob_there = room[0]  # the server's socket for bob: he joined first
        bob.close()
        _run_messages(check, server, bob_there, alice, dave)
        said = ("one", "two", "three")
        if server.crash is None:
            # The classic server sends nothing but "entered room": a newcomer's join is the
            # only way to sync. Whatever was sent to carol and dave before it arrives first.
            eve = ScriptedClient(server.address, name="eve", timeout=WAIT)
            clients.append(eve)
            eve.join(ROOM, wait=False)
            for member in (carol, dave):
                try:
                    member.expect("entered room")
                except ExpectTimeout:
                    pass  # reported below as what is missing
        else:
            for member in (carol, dave):  # the crash closed their sockets: read to the end
                try:
                    member.wait_closed(WAIT)
                except ExpectTimeout:
                    pass
        for member in (carol, dave):
            received = "".join(line.body for line in member.transcript)  # may be coalesced
            missed = [text for text in said if ">" + text not in received]
            dead = " (the server was dead by then)" if server.crash and missed == ["three"] else ""
            check.expect(not missed, f"{member.name} missed {', '.join(map(repr, missed))}{dead}")
        check.expect(
            bob_there not in room, "bob is still a member: a member whose send fails must leave"
        )
        check.expect(
            bob_there not in server.inputs,
            "bob's socket is still in self.inputs (select()'s list): remove it there too",
        )
        check.expect(
            server.crash is None,
            f"the server died: {type(server.crash).__name__}: {server.crash}"
            + (
                " (select() was given a closed socket: the one you closed is still in self.inputs)"
                if isinstance(server.crash, ValueError)
                else ""
            ),
        )
    except Exception as exc:  # the learner's server may break the scenario anywhere
        check.expect(False, f"the scenario could not run: {type(exc).__name__}: {exc}")
    finally:
        for client in clients:
            client.close()
        if server is not None:
            server.stop()
    return check.verdict(
        "iterate over a copy, and a member whose send fails leaves the room and select()'s list"
    )


def _run_messages(
    check: Check,
    server: ClassicServer,
    bob_there: socket.socket,
    alice: ScriptedClient,
    dave: ScriptedClient,
) -> None:
    """Alice says one, two, three; each waits until dave (the last member) has it, or the
    server is dead. Between "one" and "two", wait for bob's RST to reach the server."""
    for text in ("one", "two", "three"):
        if server.crash is not None:
            return
        try:
            alice.send(ROOM, text)
        except OSError:  # the server died and closed alice's socket: reported by the caller
            return
        try:
            dave.expect(">" + text)
        except ExpectTimeout:
            if not dave.closed_by_server:
                check.expect(False, f"dave never got {text!r}: does broadcast() send at all?")
                return
        if text == "one" and not _reset_arrived(bob_there, WAIT):
            check.expect(False, "bob's reset never reached the server (this is not your bug)")
            return


# -- 04.4 ------------------------------------------------------------------------------------

LIMIT = 3  # 04.4: a member whose queue already holds this many messages is cut off

#: (queue lengths by member, in join order; the sender): one over the limit in the middle,
#: two in a row, the last, the sender itself (it gets nothing, so it is not cut), all, none
DELIVER_CASES: list[tuple[dict[str, int], str]] = [
    ({"alice": 0, "bob": LIMIT, "carol": 0, "dave": 1}, "alice"),
    ({"alice": 0, "bob": LIMIT, "carol": LIMIT, "dave": 0}, "alice"),
    ({"alice": 0, "bob": 1, "carol": 2, "dave": LIMIT}, "alice"),
    ({"alice": LIMIT, "bob": 0, "carol": 0}, "alice"),
    ({"alice": 0, "bob": LIMIT, "carol": LIMIT}, "alice"),
    ({"alice": 0, "bob": 0, "carol": 0}, "bob"),
]


def check_deliver(answer: Callable[..., Any]) -> Verdict:
    """04.4: ``answer(members, data, exclude, limit, cut)``: ``members`` maps each member to
    its queue (a list), in join order. Every member but ``exclude`` gets ``data`` appended to
    its queue, unless its queue already holds ``limit`` messages: that member is cut off
    instead, with ``cut(member)``, which deletes it from ``members`` (as chatlab's disconnect
    leaves the room). It returns the list of the members it cut."""
    check = Check("04.4", "deliver over a dict, cut off after the loop")
    data = b"<RID:111><alice> hi</RID:111>"
    for lengths, sender in DELIVER_CASES:
        members = {name: [b"old"] * n for name, n in lengths.items()}
        cuts: list[str] = []

        def cut(member: str, members: dict[str, list[bytes]] = members, cuts: list[str] = cuts):
            cuts.append(member)
            del members[member]  # KeyError if cut twice: noted below

        case = f"with queue lengths {lengths}, {sender} sending, limit {LIMIT}"
        ok, returned = check.call(answer, members, data, sender, LIMIT, cut)
        if not ok:
            check.problems[-1] += f" ({case})"
            break
        over = [m for m, n in lengths.items() if n >= LIMIT and m != sender]
        good = check.expect(cuts == over, f"{case}: cut {cuts}, expected {over}")
        good &= check.expect(
            list(returned) == over, f"{case}: returned {returned!r}, expected {over}"
        )
        for name, n in lengths.items():
            if name in over:
                continue
            queue = members.get(name)
            want = n + (name != sender)
            if queue is None:
                good &= check.expect(False, f"{case}: {name} is gone from members")
            elif len(queue) != want or (name != sender and queue[-1] is not data):
                good &= check.expect(
                    False, f"{case}: {name}'s queue holds {len(queue)} messages, expected {want}"
                )
        if not good:
            break
    return check.verdict(
        "walk the room without changing it, and change it after: a dict would raise otherwise"
    )
