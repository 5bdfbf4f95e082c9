"""Chapter 07's checks: the stub and a plausible wrong answer fail with a useful message,
the worked answer passes (the same answers as notebooks/solutions/07-*.ipynb)."""

from __future__ import annotations

from chatlab.exercises import ch07

# -- 07.1 keep what send() did not take


def write_some(sock, pending):
    try:
        sent = sock.send(pending)
    except BlockingIOError:
        return 0
    del pending[:sent]
    return sent


def forgets_the_rest(sock, pending):
    return sock.send(pending)


def sendall_it(sock, pending):
    sent = len(pending)
    sock.sendall(pending)
    del pending[:]
    return sent


def test_write_some():
    assert ch07.check_write_some(write_some)
    assert not ch07.check_write_some(lambda sock, pending: None)
    wrong = ch07.check_write_some(forgets_the_rest)
    assert not wrong and "pending" in str(wrong)
    blocking = ch07.check_write_some(sendall_it)
    assert not blocking and "BlockingIOError" in str(blocking)


# -- 07.2 ask for write readiness only while something is left


class Writer:
    def __init__(self, loop, sock):
        self.loop, self.sock, self.pending = loop, sock, bytearray()

    def write(self, data):
        if self.pending:  # already waiting: keep the order
            self.pending += data
            return 0
        self.pending += data
        sent = write_some(self.sock, self.pending)
        if self.pending:
            self.loop.add_writer(self.sock, self.on_writable)
        return sent

    def on_writable(self):
        write_some(self.sock, self.pending)
        if not self.pending:
            self.loop.remove_writer(self.sock)


class WriterLeftRegistered(Writer):
    def on_writable(self):
        write_some(self.sock, self.pending)


class StubWriter:
    def __init__(self, loop, sock): ...

    def write(self, data): ...


def test_writer():
    assert ch07.check_writer(Writer)
    stub = ch07.check_writer(StubWriter)
    assert not stub and "returned None" in str(stub)
    wrong = ch07.check_writer(WriterLeftRegistered)
    assert not wrong and "remove the writer" in str(wrong)


# -- 07.3 count the syscalls

RIGHT = {"sends": 4, "buffers per send": 1, "deliveries": 40, "buffers per send, two rooms": 10}


def test_burst_sends():
    assert ch07.check_burst_sends(RIGHT)
    stub = ch07.check_burst_sends({k: ... for k in RIGHT})
    assert not stub and "not written yet" in str(stub)
    wrong = ch07.check_burst_sends({**RIGHT, "sends": 40, "buffers per send, two rooms": 1})
    assert not wrong and "sends: you said 40" in str(wrong) and "ends a run" in str(wrong)


# -- 07.4 accept until the kernel says no more


def accept_all(listener):
    accepted = []
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return accepted
        accepted.append(conn)


def accept_once(listener):
    try:
        return [listener.accept()[0]]
    except BlockingIOError:
        return []


def test_accept_all():
    assert ch07.check_accept_all(accept_all)
    assert not ch07.check_accept_all(lambda listener: None)
    wrong = ch07.check_accept_all(accept_once)
    assert not wrong and "1 of 10" in str(wrong)
    raising = ch07.check_accept_all(lambda listener: [listener.accept()[0] for _ in range(11)])
    assert not raising and "BlockingIOError" in str(raising)
