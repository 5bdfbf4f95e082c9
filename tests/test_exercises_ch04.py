"""Chapter 04's checks: the stub and plausible wrong answers fail with a useful message, the
worked answers (as in notebooks/solutions/04-rooms-and-broadcast.ipynb) pass."""

from __future__ import annotations

from chatlab.classic import ClassicServer
from chatlab.exercises import ch04

# -- 04.1 -------------------------------------------------------------------------------------


def broadcast_stub(members, send): ...


def broadcast_in_place(members, send):
    """The classic server's loop: removes from the list it walks."""
    removed = []
    for member in members:
        try:
            send(member)
        except OSError:
            members.remove(member)
            removed.append(member)
    return removed


def broadcast_by_index(members, send):
    """The range(len()) variant: skips too, and runs off the end."""
    removed = []
    for i in range(len(members)):
        try:
            send(members[i])
        except OSError:
            removed.append(members.pop(i))
    return removed


def broadcast_new_list(members, send):
    """Visits everyone, but builds a new list: the server's room never changes."""
    removed = []
    alive = []
    for member in members:
        try:
            send(member)
            alive.append(member)
        except OSError:
            removed.append(member)
    members = alive
    return removed


def broadcast_copy(members, send):
    removed = []
    for member in tuple(members):
        try:
            send(member)
        except OSError:
            members.remove(member)
            removed.append(member)
    return removed


def test_04_1_stub_is_not_yet():
    verdict = ch04.check_broadcast(broadcast_stub)
    assert not verdict
    assert "returned None" in str(verdict)


def test_04_1_removing_while_iterating_skips_carol():
    verdict = ch04.check_broadcast(broadcast_in_place)
    assert not verdict
    assert "carol never sent to" in str(verdict), verdict


def test_04_1_by_index_fails():
    verdict = ch04.check_broadcast(broadcast_by_index)
    assert not verdict
    assert "IndexError" in str(verdict), verdict
    assert "it had sent to ['alice', 'bob', 'dave']" in str(verdict), verdict  # carol skipped


def test_04_1_new_list_leaves_the_room_unchanged():
    verdict = ch04.check_broadcast(broadcast_new_list)
    assert not verdict
    assert "remove from the list you were given" in str(verdict), verdict


def test_04_1_copy_passes():
    verdict = ch04.check_broadcast(broadcast_copy)
    assert verdict, verdict
    assert str(verdict).startswith("passed 04.1")


def test_04_1_comprehension_in_place_passes():
    def answer(members, send):
        failed = []
        for member in list(members):
            try:
                send(member)
            except OSError:
                failed.append(member)
        members[:] = [m for m in members if m not in failed]
        return failed

    assert ch04.check_broadcast(answer)


# -- 04.2 -------------------------------------------------------------------------------------

RIGHT = {
    "list: x in members": "O(n)",
    "list: members.remove(x)": "O(n)",
    "dict: x in members": "O(1)",
    "dict: del members[x]": "O(1)",
    "dict: for m in members": "O(n)",
}


def test_04_2_stub_is_not_yet():
    verdict = ch04.check_costs({question: ... for question in ch04.COST_QUESTIONS})
    assert not verdict
    assert "'list: x in members' is not written yet" in str(verdict)


def test_04_2_everything_o1_is_wrong_with_evidence():
    verdict = ch04.check_costs(dict.fromkeys(ch04.COST_QUESTIONS, "O(1)"))
    assert not verdict
    text = str(verdict)
    assert "'list: x in members': you said O(1), but it took 1000 steps" in text, text
    assert "'dict: x in members'" not in text


def test_04_2_all_on_is_wrong_too():
    verdict = ch04.check_costs(dict.fromkeys(ch04.COST_QUESTIONS, "O(n)"))
    assert not verdict
    assert "'dict: del members[x]': you said O(n)" in str(verdict)


def test_04_2_nonsense_is_named():
    verdict = ch04.check_costs({**RIGHT, "dict: x in members": "fast"})
    assert not verdict
    assert "not 'fast'" in str(verdict)


def test_04_2_right_answers_pass_in_any_spelling():
    assert ch04.check_costs(RIGHT)
    assert ch04.check_costs({k: v.lower().replace("(", " (") for k, v in RIGHT.items()})


# -- 04.3 -------------------------------------------------------------------------------------


class Unchanged(ClassicServer):
    pass


class CopyOnly(ClassicServer):
    """Carol gets "two", but bob's closed socket stays in select()'s list: the server dies."""

    def broadcast(self, room, sender, data):
        for member in tuple(room):
            if member is sender:
                continue
            try:
                member.send(data)
            except OSError:
                member.close()
                room.remove(member)


class InputsOnly(ClassicServer):
    """Survives, but still removes from the list it walks: carol misses "two"."""

    def broadcast(self, room, sender, data):
        for member in room:
            if member is sender:
                continue
            try:
                member.send(data)
            except OSError:
                room.remove(member)
                self.inputs.remove(member)
                member.close()


class Swallows(ClassicServer):
    """Everyone alive gets everything, but bob is never removed."""

    def broadcast(self, room, sender, data):
        for member in room:
            if member is not sender:
                try:
                    member.send(data)
                except OSError:
                    pass


class Fixed(ClassicServer):
    def broadcast(self, room, sender, data):
        for member in tuple(room):
            if member is sender:
                continue
            try:
                member.send(data)
            except OSError:
                room.remove(member)
                if member in self.inputs:
                    self.inputs.remove(member)
                member.close()


def test_04_3_not_a_class():
    verdict = ch04.check_fixed_server(None)
    assert not verdict
    assert "subclass of ClassicServer" in str(verdict)


def test_04_3_stub_without_broadcast():
    verdict = ch04.check_fixed_server(Unchanged)
    assert not verdict
    assert "does not override broadcast()" in str(verdict)


def test_04_3_stub_broadcast_sends_nothing():
    class Stub(ClassicServer):
        def broadcast(self, room, sender, data): ...

    verdict = ch04.check_fixed_server(Stub)
    assert not verdict
    assert "bob never got '[host:port] entered room.' when carol joined" in str(verdict)


def test_04_3_copy_only_crashes():
    verdict = ch04.check_fixed_server(CopyOnly)
    text = str(verdict)
    assert not verdict
    assert "the server died: ValueError" in text, text
    assert "still in self.inputs" in text
    assert "carol missed 'three' (the server was dead by then)" in text, text
    assert "'two'" not in text, text


def test_04_3_removing_while_iterating_skips_carol():
    verdict = ch04.check_fixed_server(InputsOnly)
    text = str(verdict)
    assert not verdict
    assert "carol missed 'two'" in text, text
    assert "dave missed" not in text and "died" not in text, text


def test_04_3_swallowing_keeps_bob():
    verdict = ch04.check_fixed_server(Swallows)
    text = str(verdict)
    assert not verdict
    assert "bob is still a member" in text, text
    assert "missed" not in text, text


def test_04_3_fixed_passes():
    verdict = ch04.check_fixed_server(Fixed)
    assert verdict, verdict
    assert str(verdict).startswith("passed 04.3")


# -- 04.4 -------------------------------------------------------------------------------------


def deliver_stub(members, data, exclude, limit, cut): ...


def deliver_inline(members, data, exclude, limit, cut):
    """Cuts inside the loop over the dict: RuntimeError."""
    cuts = []
    for member, queue in members.items():
        if member is exclude:
            continue
        if len(queue) >= limit:
            cut(member)
            cuts.append(member)
        else:
            queue.append(data)
    return cuts


def deliver_no_cut(members, data, exclude, limit, cut):
    """Never cuts: the slow member stays, its queue full."""
    for member, queue in members.items():
        if member != exclude and len(queue) < limit:
            queue.append(data)
    return []


def deliver_after(members, data, exclude, limit, cut):
    careful = []
    for member, queue in members.items():
        if member == exclude:
            continue
        if len(queue) >= limit:
            careful.append(member)
            continue
        queue.append(data)
    for member in careful:
        cut(member)
    return careful


def test_04_4_stub_is_not_yet():
    verdict = ch04.check_deliver(deliver_stub)
    assert not verdict
    assert "returned None" in str(verdict)


def test_04_4_cutting_inside_the_loop_raises():
    verdict = ch04.check_deliver(deliver_inline)
    assert not verdict
    assert "RuntimeError: dictionary changed size during iteration" in str(verdict), verdict


def test_04_4_never_cutting_is_named():
    verdict = ch04.check_deliver(deliver_no_cut)
    assert not verdict
    assert "cut [], expected ['bob']" in str(verdict), verdict


def test_04_4_cutting_after_the_loop_passes():
    verdict = ch04.check_deliver(deliver_after)
    assert verdict, verdict


def test_04_4_a_copy_passes_too():
    def answer(members, data, exclude, limit, cut):
        cuts = []
        for member in list(members):
            if member == exclude:
                continue
            if len(members[member]) >= limit:
                cut(member)
                cuts.append(member)
            else:
                members[member].append(data)
        return cuts

    assert ch04.check_deliver(answer)
