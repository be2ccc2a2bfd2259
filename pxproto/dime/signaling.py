"""Reliable signaling: requests that survive loss, responses that are never executed twice.

A :class:`Requester` numbers its requests, retransmits each with exponential
backoff until a response from the same peer with the same request id comes
back, and gives up after a retry cap with a :class:`RequestTimedOut` event
(status :attr:`~pxproto.wire.codes.Status.TIMEOUT`).

A :class:`Responder` answers each (peer, req_id) once: a retransmitted request
gets the cached response again, and one still being worked on is dropped.  The
cache is bounded in size and its entries expire; keep ``cache_ttl`` longer than
the requesters' whole retransmission span.  A request whose id is reused with
a different command or parameters (a restarted requester) is a new request.
"""

from __future__ import annotations

import heapq
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pxproto.dime.endpoint import Address, Event, Output, frame_to, source
from pxproto.wire.codes import COMMAND_PARAMS, TEXT_MAX, Command, Op, Status, TlvType
from pxproto.wire.frame import Frame, Signaling, Tlv

REQ_ID_SPACE = 1 << 32


@dataclass(frozen=True, slots=True)
class RetransmitPolicy:
    """How often and how long a request is retransmitted."""

    initial: float = 0.05
    """Seconds from the first send to the first retransmission."""
    factor: float = 2.0
    """Each interval is the previous one times this."""
    max_interval: float = 1.0
    """No interval is longer than this."""
    retries: int = 5
    """Retransmissions after the first send; then the request times out."""

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.factor < 1 or self.max_interval < self.initial or self.retries < 0:
            raise ValueError(f"bad retransmit policy {self}")

    def interval(self, attempt: int) -> float:
        """The wait after send number ``attempt`` (1 for the first send)."""
        return min(self.initial * self.factor ** (attempt - 1), self.max_interval)

    def span(self) -> float:
        """Seconds from the first send to the timeout."""
        return sum(self.interval(a) for a in range(1, self.retries + 2))


@dataclass(frozen=True, slots=True)
class ResponseReceived(Event):
    """A response matched one of our pending requests."""

    peer: Address
    """Who answered."""
    req_id: int
    """The request id it answers."""
    cmd: Command
    """The command of the request."""
    status: Status
    """The peer's outcome."""
    params: tuple[Tlv, ...]
    """The response's parameters."""
    rtt: float
    """Seconds from the first send of the request to this response."""
    attempts: int
    """How many times the request was sent."""

    def param(self, t: TlvType) -> int | str | bytes | None:
        """The value of parameter ``t``, or None."""
        return next((p.value for p in self.params if p.type == t), None)


@dataclass(frozen=True, slots=True)
class RequestTimedOut(Event):
    """A request got no response after every retransmission."""

    peer: Address
    """Whom it was sent to."""
    req_id: int
    """Its request id."""
    cmd: Command
    """Its command."""
    attempts: int
    """How many times it was sent."""
    status: Status = Status.TIMEOUT
    """Always TIMEOUT, so drivers can treat this like a failed response."""


@dataclass(slots=True)
class _Pending:
    peer: Address
    req_id: int
    frame: Frame
    policy: RetransmitPolicy
    first_sent: float
    attempts: int
    deadline: float


def _key(peer: Address, req_id: int) -> tuple[bytes, int, int]:
    return (peer.mac, peer.dime, req_id)


class Requester:
    """Sends signaling requests reliably and matches their responses by (peer, req_id).

    Seed ``first_req_id`` differently on every start (from the epoch, say):
    responders remember recent (peer, req_id) pairs.
    """

    def __init__(self, local: Address, policy: RetransmitPolicy | None = None, first_req_id: int = 1) -> None:
        self.local = local
        self.policy = policy or RetransmitPolicy()
        self._next_id = first_req_id % REQ_ID_SPACE or 1
        self._pending: dict[tuple[bytes, int, int], _Pending] = {}
        self._heap: list[tuple[float, tuple[bytes, int, int]]] = []
        self.counters: Counter[str] = Counter()
        """Frames ignored, by reason; and requests sent, retransmitted, answered, timed out."""

    @property
    def pending(self) -> int:
        """How many requests await a response."""
        return len(self._pending)

    def is_pending(self, peer: Address, req_id: int) -> bool:
        return _key(peer, req_id) in self._pending

    def _allocate(self, peer: Address) -> int:
        while True:
            req_id = self._next_id
            self._next_id = (self._next_id + 1) % REQ_ID_SPACE or 1
            if _key(peer, req_id) not in self._pending:
                return req_id

    def request(
        self,
        peer: Address,
        cmd: Command,
        params: Sequence[Tlv] = (),
        *,
        now: float,
        policy: RetransmitPolicy | None = None,
    ) -> tuple[int, Output]:
        """Send a request; return its id and the output carrying its first frame."""
        req_id = self._allocate(peer)
        body = Signaling(cmd=cmd, op=Op.REQUEST, req_id=req_id, params=tuple(params))
        frame = frame_to(self.local, peer, body)
        pol = policy or self.policy
        p = _Pending(peer, req_id, frame, pol, now, 1, now + pol.interval(1))
        self._pending[_key(peer, req_id)] = p
        heapq.heappush(self._heap, (p.deadline, _key(peer, req_id)))
        self.counters["sent"] += 1
        return req_id, Output(frames=[frame], timer=self.get_timer())

    def cancel(self, peer: Address, req_id: int) -> bool:
        """Forget a pending request (its response, if any, will be ignored)."""
        return self._pending.pop(_key(peer, req_id), None) is not None

    def receive(self, frame: Frame, now: float) -> Output:
        """Take a signaling response; a matching one completes its request."""
        out = Output()
        body = frame.body
        if not isinstance(body, Signaling):
            self.counters["not_signaling"] += 1
        elif body.op is not Op.RESPONSE:
            self.counters["not_response"] += 1
        else:
            key = (frame.src_mac, frame.src_dime, body.req_id)
            p = self._pending.get(key)
            if p is None:
                self.counters["unmatched"] += 1
            elif p.frame.body.cmd is not body.cmd:  # type: ignore[union-attr]
                self.counters["cmd_mismatch"] += 1
            else:
                del self._pending[key]
                self.counters["answered"] += 1
                rtt = now - p.first_sent
                out.events.append(
                    ResponseReceived(p.peer, p.req_id, body.cmd, body.status, body.params, rtt, p.attempts)
                )
        out.timer = self.get_timer()
        return out

    def get_timer(self) -> float | None:
        heap = self._heap
        while heap:
            deadline, key = heap[0]
            p = self._pending.get(key)
            if p is not None and p.deadline == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    def handle_timer(self, now: float) -> Output:
        """Retransmit what is due; time out what has used up its retries."""
        out = Output()
        while (deadline := self.get_timer()) is not None and deadline <= now:
            _, key = heapq.heappop(self._heap)
            p = self._pending[key]
            if p.attempts > p.policy.retries:
                del self._pending[key]
                self.counters["timed_out"] += 1
                out.events.append(RequestTimedOut(p.peer, p.req_id, p.frame.body.cmd, p.attempts))  # type: ignore[union-attr]
                continue
            p.attempts += 1
            p.deadline = now + p.policy.interval(p.attempts)
            heapq.heappush(self._heap, (p.deadline, key))
            self.counters["retransmitted"] += 1
            out.frames.append(p.frame)
        out.timer = self.get_timer()
        return out


# ------------------------------------------------------------------ responder


@dataclass(frozen=True, slots=True)
class RequestReceived(Event):
    """A new request (never a retransmission of one already seen) that the driver must answer."""

    peer: Address
    """Who asked (MAC, DIME, thread): the response goes back there."""
    local: Address
    """The address it was sent to; the response comes from there."""
    req_id: int
    """The requester's id for it."""
    cmd: Command
    """What is asked."""
    params: tuple[Tlv, ...]
    """The request's parameters."""

    def param(self, t: TlvType) -> int | str | bytes | None:
        """The value of parameter ``t``, or None."""
        return next((p.value for p in self.params if p.type == t), None)


Reply = tuple[Status, Sequence[Tlv]]
Handler = Callable[[RequestReceived], Reply | None]
"""Answers a request at once, or returns None to answer later with :meth:`Responder.respond`."""


@dataclass(slots=True)
class _Answer:
    cmd: Command
    params: tuple[Tlv, ...]
    response: Frame | None
    expires: float


def text_tlv(text: str) -> Tlv:
    """A TEXT parameter, cut to the wire's limit on a character boundary."""
    raw = text.encode()[:TEXT_MAX]
    return Tlv(TlvType.TEXT, raw.decode("utf-8", "ignore"))


class Responder:
    """Executes each signaling request once and answers its retransmissions from a cache.

    ``handlers`` maps commands to functions that answer at once; other requests
    come out as :class:`RequestReceived` events for :meth:`respond`.  A request
    missing a parameter the spec requires is answered BAD_PARAM without a handler.
    """

    def __init__(
        self,
        local: Address,
        handlers: Mapping[Command, Handler] | None = None,
        *,
        cache_size: int = 4096,
        cache_ttl: float = 10.0,
        check_params: bool = True,
    ) -> None:
        if cache_size < 1 or cache_ttl <= 0:
            raise ValueError("cache_size must be >= 1 and cache_ttl > 0")
        self.local = local
        self.handlers: dict[Command, Handler] = dict(handlers or {})
        self.cache_size = cache_size
        self.cache_ttl = cache_ttl
        self.check_params = check_params
        self._cache: OrderedDict[tuple[bytes, int, int], _Answer] = OrderedDict()
        self.counters: Counter[str] = Counter()
        """Requests executed, duplicates answered from the cache or dropped, evictions, frames ignored."""

    def __len__(self) -> int:
        return len(self._cache)

    def receive(self, frame: Frame, now: float) -> Output:
        """Take a signaling request; answer it, replay its cached answer, or hand it to the driver."""
        self._expire(now)
        out = Output()
        body = frame.body
        if not isinstance(body, Signaling) or body.op is not Op.REQUEST:
            self.counters["not_request"] += 1
            out.timer = self.get_timer()
            return out
        peer = source(frame)
        key = _key(peer, body.req_id)
        seen = self._cache.get(key)
        if seen is not None and seen.cmd is body.cmd and seen.params == body.params:
            if seen.response is None:
                self.counters["duplicate_in_progress"] += 1
            else:
                self.counters["duplicate_answered"] += 1
                out.frames.append(seen.response)
            out.timer = self.get_timer()
            return out
        if seen is not None:
            self.counters["req_id_reused"] += 1
            del self._cache[key]
        local = Address(self.local.mac, self.local.dime, frame.dst_thread)
        req = RequestReceived(peer, local, body.req_id, body.cmd, body.params)
        self._store(key, _Answer(body.cmd, body.params, None, now + self.cache_ttl))
        self.counters["executed"] += 1
        reply = self._dispatch(req)
        if reply is None:
            out.events.append(req)
        else:
            out.merge(self.respond(req, reply[0], reply[1], now=now))
        out.timer = self.get_timer()
        return out

    def _dispatch(self, req: RequestReceived) -> Reply | None:
        if self.check_params:
            missing = [t.name for t in COMMAND_PARAMS[req.cmd][0] if req.param(t) is None]
            if missing:
                return Status.BAD_PARAM, (text_tlv(f"{req.cmd.name} request lacks {', '.join(missing)}"),)
        handler = self.handlers.get(req.cmd)
        if handler is None:
            return None
        try:
            return handler(req)
        except Exception as exc:  # a handler's bug must not take the signaling channel down
            self.counters["handler_failed"] += 1
            return Status.INTERNAL, (text_tlv(f"{req.cmd.name} handler failed: {exc!r}"),)

    def respond(self, req: RequestReceived, status: Status, params: Sequence[Tlv] = (), *, now: float) -> Output:
        """Answer a request; the answer is cached for its retransmissions."""
        body = Signaling(cmd=req.cmd, op=Op.RESPONSE, req_id=req.req_id, status=status, params=tuple(params))
        response = frame_to(req.local, req.peer, body)
        key = _key(req.peer, req.req_id)
        self._cache.pop(key, None)
        self._store(key, _Answer(req.cmd, req.params, response, now + self.cache_ttl))
        return Output(frames=[response], timer=self.get_timer())

    def _store(self, key: tuple[bytes, int, int], answer: _Answer) -> None:
        self._cache[key] = answer
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
            self.counters["evicted"] += 1

    def _expire(self, now: float) -> None:
        cache = self._cache
        while cache:
            key, answer = next(iter(cache.items()))
            if answer.expires > now:
                break
            del cache[key]
            self.counters["expired"] += 1

    def get_timer(self) -> float | None:
        return next(iter(self._cache.values())).expires if self._cache else None

    def handle_timer(self, now: float) -> Output:
        """Drop cached answers that have expired."""
        self._expire(now)
        return Output(timer=self.get_timer())
