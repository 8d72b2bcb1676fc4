"""Who gets in: session slots, connection caps and wrong-token back-off, across connections.

:class:`Admission` is the server-wide, transport-free counterpart of the per-connection
:class:`realtime.protocol.ServerProtocol`: the adapter asks it before and after each step of a
connection's life, passing the client's address and ``now`` (monotonic seconds), and turns a
refusal (a :class:`~realtime.errors.ProtocolError`) into an ``error`` message and a close::

    ticket = admission.connect(address, now)   # at WebSocket open: caps on connections
    admission.check_hello(ticket, now)         # before the hello's token is compared
    admission.token_rejected(ticket, now)      # the hello's token was wrong
    admission.start_session(ticket)            # the hello was accepted: take a session slot
    admission.release(ticket)                  # the connection is gone (any state; idempotent)

Policy (PROTOCOL.md, "Limits"):

- A session slot (``max_sessions``) is taken by an accepted hello, token checked, never by an
  open socket: silent sockets cannot lock the rightful client out.
- Open connections per client address, authenticated or not, are capped
  (``max_connections_per_address``: ``too_many_connections``, 1013), and connections still
  waiting for their hello are capped server-wide (``max_pending_hellos``: ``server_full``,
  1013). The hello deadline itself is the protocol's (``ServerProtocolConfig.hello_timeout_s``).
- Wrong tokens: after ``auth_failures_allowed`` wrong tokens from one address, its hellos are
  refused (``too_many_attempts``, 1008) for ``auth_backoff_s``, doubling with every further wrong
  token up to ``auth_backoff_max_s``; an address quiet for ``auth_forget_s`` after its last lock
  starts afresh. Other addresses are unaffected. The table of addresses is bounded
  (``max_tracked_addresses``, oldest forgotten first).

:class:`LogBudget` bounds what the log says about refused and failed connections.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

from realtime.errors import CloseCode, ProtocolError

__all__ = ["Admission", "AdmissionConfig", "LogBudget", "Ticket"]


@dataclass(frozen=True)
class AdmissionConfig:
    """Caps and back-off of :class:`Admission` (``max_sessions`` is the server's own knob)."""

    # Open WebSockets from one address, in any state. A browser tab holds one; 32 leaves room
    # for a NAT of users or a test rig, and keeps one address from taking every pending slot.
    max_connections_per_address: int = 32
    # Connections that have not sent an accepted hello yet, server-wide. Each lives at most the
    # hello deadline (5 s); a flood of silent sockets then costs refusals, not sessions.
    max_pending_hellos: int = 64
    auth_failures_allowed: int = 5  # wrong tokens from one address before the back-off
    auth_backoff_s: float = 2.0  # first lock-out; doubles with every further wrong token
    auth_backoff_max_s: float = 300.0
    auth_forget_s: float = 600.0  # quiet time after the last lock that forgets an address
    max_tracked_addresses: int = 10_000  # bound of the wrong-token table (memory)

    def __post_init__(self) -> None:
        for name in ("max_connections_per_address", "max_pending_hellos",
                     "auth_failures_allowed", "max_tracked_addresses"):
            if getattr(self, name) < 1:
                raise ValueError(f"AdmissionConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.auth_backoff_s <= self.auth_backoff_max_s:
            raise ValueError("AdmissionConfig needs 0 < auth_backoff_s <= auth_backoff_max_s")


class Ticket:
    """One connection's standing with :class:`Admission` (opaque to the adapter)."""

    __slots__ = ("address", "stage")

    def __init__(self, address: str) -> None:
        self.address = address
        self.stage = "pending"  # "pending" (no hello yet) | "session" | "released"


@dataclass
class _Failures:
    count: int  # wrong tokens since the address was last forgotten
    last_s: float  # time of the last wrong token
    locked_until_s: float


class Admission:
    """Server-wide admission state. Not thread-safe: the event loop owns it."""

    def __init__(self, max_sessions: int, config: AdmissionConfig | None = None) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        self.max_sessions = max_sessions
        self.config = config or AdmissionConfig()
        self.sessions = 0
        self.pending = 0
        self._per_address: dict[str, int] = {}
        self._failures: OrderedDict[str, _Failures] = OrderedDict()

    @property
    def connections(self) -> int:
        return self.pending + self.sessions

    @property
    def addresses_tracked(self) -> int:
        """Addresses with open connections or remembered wrong tokens (bounded)."""
        return len(self._per_address.keys() | self._failures.keys())

    # ------------------------------------------------------------------ connection life
    def connect(self, address: str, now: float) -> Ticket:
        """A WebSocket opened from ``address``. Raises ProtocolError when a cap is reached."""
        cfg = self.config
        self.expire(now)
        if self._per_address.get(address, 0) >= cfg.max_connections_per_address:
            raise ProtocolError(
                "too_many_connections",
                f"this address already has {cfg.max_connections_per_address} open "
                "connections; close one and try again",
                CloseCode.TRY_AGAIN_LATER,
            )
        if self.pending >= cfg.max_pending_hellos:
            raise ProtocolError(
                "server_full",
                f"the server has {cfg.max_pending_hellos} connections waiting for their hello; "
                "try again later",
                CloseCode.TRY_AGAIN_LATER,
            )
        self._per_address[address] = self._per_address.get(address, 0) + 1
        self.pending += 1
        return Ticket(address)

    def start_session(self, ticket: Ticket) -> None:
        """The connection's hello was accepted: it takes a session slot, or ProtocolError
        ``server_full`` (1013) when all ``max_sessions`` are taken."""
        if ticket.stage != "pending":
            raise ValueError(f"start_session() on a {ticket.stage} ticket")
        if self.sessions >= self.max_sessions:
            raise ProtocolError(
                "server_full",
                f"the server is full ({self.max_sessions} sessions); try again later",
                CloseCode.TRY_AGAIN_LATER,
            )
        self.pending -= 1
        self.sessions += 1
        ticket.stage = "session"

    def release(self, ticket: Ticket) -> None:
        """The connection is gone. Idempotent."""
        if ticket.stage == "released":
            return
        if ticket.stage == "pending":
            self.pending -= 1
        else:
            self.sessions -= 1
        ticket.stage = "released"
        left = self._per_address[ticket.address] - 1
        if left:
            self._per_address[ticket.address] = left
        else:
            del self._per_address[ticket.address]

    # ------------------------------------------------------------------ wrong tokens
    def check_hello(self, ticket: Ticket, now: float) -> None:
        """Before a hello's token is compared: ProtocolError ``too_many_attempts`` (1008) while
        the address is locked out (even a right token: guessing must not go on)."""
        entry = self._failures.get(ticket.address)
        if entry is not None and now < entry.locked_until_s:
            wait_s = math.ceil(entry.locked_until_s - now)
            raise ProtocolError(
                "too_many_attempts",
                f"too many wrong tokens from this address; try again in {wait_s} s",
                CloseCode.POLICY,
            )

    def token_rejected(self, ticket: Ticket, now: float) -> None:
        """Count a wrong token from the ticket's address (and lock it out past the allowance)."""
        cfg = self.config
        self.expire(now)
        entry = self._failures.pop(ticket.address, None)
        if entry is None:
            entry = _Failures(count=0, last_s=now, locked_until_s=now)
        entry.count += 1
        entry.last_s = now
        over = entry.count - cfg.auth_failures_allowed
        if over >= 0:
            delay = min(cfg.auth_backoff_max_s, cfg.auth_backoff_s * 2.0 ** min(over, 60))
            entry.locked_until_s = now + delay
        self._failures[ticket.address] = entry  # most recent last
        while len(self._failures) > cfg.max_tracked_addresses:
            self._failures.popitem(last=False)

    def expire(self, now: float) -> None:
        """Forget addresses quiet for ``auth_forget_s`` after their last wrong token or lock."""
        forget = self.config.auth_forget_s
        stale = []
        for address, entry in self._failures.items():  # oldest last wrong token first
            if now - entry.last_s < forget:
                break  # neither this address nor any later one can be forgotten yet
            if now - entry.locked_until_s >= forget:
                stale.append(address)
        for address in stale:
            del self._failures[address]


class LogBudget:
    """A token bucket for log lines: ``burst`` at once, then ``per_s`` a second; the lines it
    refuses are counted so that the next line allowed can say how many were left out."""

    def __init__(self, burst: int = 20, per_s: float = 1.0) -> None:
        self.burst = burst
        self.per_s = per_s
        self._tokens = float(burst)
        self._at: float | None = None
        self._suppressed = 0

    def allow(self, now: float) -> bool:
        if self._at is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.per_s)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self._suppressed += 1
        return False

    def take_suppressed(self) -> int:
        """Lines refused since the last call."""
        n, self._suppressed = self._suppressed, 0
        return n
