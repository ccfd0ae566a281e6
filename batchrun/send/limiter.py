"""Request and token budgets shared by every worker, and the pause a rate limit imposes on all.

Inputs: the configured requests/tokens per minute (either may be unlimited), every response's
`x-ratelimit-*` headers, and every 429. Output: `acquire(tokens)` returns when a request of that
many tokens may go.

Guarantees:
- Both budgets are continuous-refill token buckets holding one `burst_s` window's worth, so the
  rate is smooth rather than a burst at the start of each minute. A request larger than the
  bucket waits for a full bucket and then drives it negative: it goes, and the average holds.
- Waiters are served first come, first served (anyio's Lock is fair) and sleep on a timer for
  exactly as long as the budget needs; nothing polls.
- A pause (a 429, a `retry-after`) stops every worker, not just the one that saw it. 429s that
  arrive while a pause is already in force do not lengthen it exponentially: only a 429 earned
  after a pause has ended escalates the next one.
- `x-ratelimit-remaining-*: 0` means the server's bucket was empty when it answered, not that
  it stays empty until `x-ratelimit-reset-*`: in OpenAI's meaning the reset is the time until the
  bucket is FULL again, and the bucket refills continuously, so with a limit of L the next request
  is allowed about reset / L later (one refill). The budget is emptied as of when that request
  left (`mark`), less what was spent since: the next request waits one refill, the ones after
  follow at the budget's pace, and requests already in flight are not counted twice. Only with
  no budget to drain (no limit known) does the run pause for the whole reset.
- After a pause the server imposed by pushing back (`back_off`: a 429, an outage), one request
  goes first as a probe and the others wait for its answer (`probe_done`), or for 2 s at most
  (an answer that takes longer was accepted): a storm of 429s, or a server that is down, sees
  one request per pause, not one per worker.
- The server can lower the budgets (`x-ratelimit-limit-*`), never raise them above the configured
  figures.
- `settle` corrects the token budget once the real usage is known, so estimates do not drift.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import anyio

from batchrun.send.retry import parse_duration_s

__all__ = ["Limiter", "Mark", "TokenBucket"]

_BASE_PAUSE_S = 1.0
_MAX_PAUSE_S = 60.0
_PROBE_PATIENCE_S = 2.0


class TokenBucket:
    """A continuous-refill bucket: `rate_per_s` flows in up to `capacity`; spending may overdraw."""

    __slots__ = ("capacity", "level", "rate_per_s", "spent", "updated_at")

    def __init__(self, *, per_minute: float, burst_s: float, now: float) -> None:
        self.rate_per_s = per_minute / 60.0
        self.capacity = max(1.0, per_minute * burst_s / 60.0)
        self.level = self.capacity
        self.updated_at = now
        self.spent = 0.0  # everything ever spent: what went out between two moments

    def refill(self, now: float) -> None:
        if now > self.updated_at:
            self.level = min(self.capacity, self.level + (now - self.updated_at) * self.rate_per_s)
            self.updated_at = now

    def wait_s(self, amount: float, now: float) -> float:
        """How long until `amount` (or a full bucket, if `amount` is larger) is available."""
        self.refill(now)
        need = min(amount, self.capacity)
        short = need - self.level
        # Float rounding can leave the bucket a hair short after sleeping exactly the computed
        # wait; a sleep that small may not move the clock at all, and the waiter would spin.
        return 0.0 if short <= 1e-9 * max(1.0, need) else short / self.rate_per_s

    def spend(self, amount: float) -> None:
        self.level -= amount
        self.spent += amount

    def empty_as_of(self, *, at: float, spent_then: float, now: float) -> None:
        """The server's bucket was empty at `at` (just after `spent_then`): hold no more than
        what has flowed in since, less what went out since."""
        self.refill(now)
        self.level = min(self.level, (now - at) * self.rate_per_s - (self.spent - spent_then))

    def give_back(self, amount: float) -> None:
        self.level = min(self.capacity, self.level + amount)

    def set_rate(self, per_minute: float, burst_s: float) -> None:
        self.rate_per_s = per_minute / 60.0
        self.capacity = max(1.0, per_minute * burst_s / 60.0)
        self.level = min(self.level, self.capacity)


@dataclass(frozen=True, slots=True)
class Mark:
    """The moment a request left, with both budgets' running totals (see `observe_headers`)."""

    at: float
    requests_spent: float
    tokens_spent: float


class Limiter:
    def __init__(
        self,
        *,
        max_requests_per_minute: float | None = None,
        max_tokens_per_minute: float | None = None,
        burst_s: float = 1.0,
        clock: Callable[[], float] = anyio.current_time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        if burst_s <= 0:
            raise ValueError(f"burst_s must be positive, got {burst_s}")
        self._clock = clock
        self._sleep = sleep
        self._burst_s = burst_s
        self._configured_rpm = max_requests_per_minute
        self._configured_tpm = max_tokens_per_minute
        now = clock()
        self._requests = (
            TokenBucket(per_minute=max_requests_per_minute, burst_s=burst_s, now=now)
            if max_requests_per_minute
            else None
        )
        self._tokens = (
            TokenBucket(per_minute=max_tokens_per_minute, burst_s=burst_s, now=now)
            if max_tokens_per_minute
            else None
        )
        self._paused_until = -math.inf  # when the latest pause ends, or ended
        self._pause_reason = ""
        self._strikes = 0
        self._lock = anyio.Lock()
        # Set by back_off: the next request to go is a probe, and the rest wait for its answer.
        self._probing = False
        self._probe_out: anyio.Event | None = None
        self.pauses = 0
        self.probes = 0

    @property
    def requests_per_minute(self) -> float | None:
        return self._requests.rate_per_s * 60 if self._requests else None

    @property
    def tokens_per_minute(self) -> float | None:
        return self._tokens.rate_per_s * 60 if self._tokens else None

    def paused_for_s(self) -> float:
        return max(0.0, self._paused_until - self._clock())

    async def acquire(self, tokens: int = 0) -> bool:
        """Wait until one request of `tokens` tokens fits every budget and no pause is in force.

        True when this request is a probe after a pushback: the caller must then report its
        answer with `probe_done` (in a `finally`); the others wait for it (2 s at most).
        """
        if (
            self._requests is None
            and self._tokens is None
            and not self._probing
            and self._clock() >= self._paused_until
        ):
            return False
        async with self._lock:
            while True:
                probe = self._probe_out
                if probe is not None:
                    # The lock is fair: the others queue behind this waiter. A pushback (429,
                    # refused connection) comes back at once; a probe still unanswered after a
                    # moment was accepted and is being worked on (LLM answers take a while),
                    # so the others need not wait for all of it.
                    with anyio.move_on_after(_PROBE_PATIENCE_S):
                        await probe.wait()
                    if self._probe_out is probe:
                        self._probe_out = None
                        self._probing = False
                    continue
                now = self._clock()
                wait = self._paused_until - now
                if self._requests is not None:
                    wait = max(wait, self._requests.wait_s(1, now))
                if self._tokens is not None:
                    wait = max(wait, self._tokens.wait_s(tokens, now))
                if wait <= 0:
                    break
                # A pause imposed while we sleep is seen when we wake and recompute.
                await self._sleep(wait)
            if self._requests is not None:
                self._requests.spend(1)
            if self._tokens is not None:
                self._tokens.spend(tokens)
            if not self._probing:
                return False
            self._probe_out = anyio.Event()
            self.probes += 1
            return True

    async def wait_unpaused(self) -> None:
        """Wait until no pause is in force, taking no budget (a task poll: polls have their own
        budget, but a 429's pause holds for them too). A pause set meanwhile is seen on waking."""
        while (wait := self._paused_until - self._clock()) > 0:
            await self._sleep(wait)

    def probe_done(self, *, passed: bool) -> None:
        """The probe came back. `passed`: the server did not push back, so everyone may go again;
        otherwise the probe's own `back_off` has set the next pause and the next probe goes then."""
        event, self._probe_out = self._probe_out, None
        if passed:
            self._probing = False
        if event is not None:
            event.set()

    def settle(self, charged: int, actual: int | None) -> None:
        """Correct the token budget by what a finished request really used."""
        if self._tokens is None or actual is None:
            return
        if actual < charged:
            self._tokens.give_back(charged - actual)
        else:
            self._tokens.spend(actual - charged)

    def pause(self, seconds: float, reason: str) -> None:
        """Stop every worker for `seconds` (a pause already longer than that stays)."""
        until = self._clock() + seconds
        if until > self._paused_until:
            self._paused_until = until
            self._pause_reason = reason
            self.pauses += 1

    def now(self) -> float:
        return self._clock()

    def back_off(
        self, retry_after_s: float | None, reason: str, *, sent_at: float | None = None
    ) -> float:
        """The server is rate limiting or unavailable: pause everyone.

        For as long as the server says (a positive `retry-after`), else by exponential backoff
        with jitter. The backoff grows only for a failure of a request sent after the previous
        pause ended (`sent_at`, on this limiter's clock; the arrival time when not given): a
        gateway may answer 429 only after retrying internally, long after the request left.
        Returns the pause in force, in seconds. The first request after the pause is a probe.
        """
        self._probing = True
        now = self._clock()
        sent_at = now if sent_at is None else sent_at
        if retry_after_s:  # "retry-after: 0" is no reason to skip the backoff
            seconds = retry_after_s
        elif now < self._paused_until:
            # Another failure during a pause: it says nothing new about the server.
            return self._paused_until - now
        elif sent_at < self._paused_until:
            # Sent before the last pause ended: pause again, but do not escalate.
            seconds = min(_BASE_PAUSE_S * 2 ** max(self._strikes - 1, 0), _MAX_PAUSE_S)
            seconds *= 1 - 0.25 * random.random()
        else:
            seconds = min(_BASE_PAUSE_S * 2**self._strikes, _MAX_PAUSE_S)
            seconds *= 1 - 0.25 * random.random()
            self._strikes += 1
        self.pause(seconds, reason)
        return self._paused_until - now

    def succeeded(self) -> None:
        self._strikes = 0

    def mark(self) -> Mark:
        """Where the budgets stand as a request leaves; give it back to `observe_headers`."""
        return Mark(
            at=self._clock(),
            requests_spent=self._requests.spent if self._requests else 0.0,
            tokens_spent=self._tokens.spent if self._tokens else 0.0,
        )

    def observe_headers(
        self, headers: Mapping[str, str], *, sent: Mark | None = None, refused: bool = False
    ) -> None:
        """Learn from OpenAI's `x-ratelimit-*` headers: lower budgets, drain them at zero.

        `sent`: the `mark` taken when this answer's request left (now, when not given).
        `refused`: the answer is a 429. Its zero is not applied: the requests sent after it met
        the same empty bucket and are most likely refused too, so draining the budget by them
        would count them twice (measured in tests/test_limiter.py, 16 workers at 1,200 RPM into
        a drained key: gaps of 0.27-0.40 s instead of 0.06 s); the 429's own `retry-after`,
        shared pause and probe decide when to go.
        """
        get = headers.get
        limit = _number(get("x-ratelimit-limit-requests"))
        if limit:
            self._lower(limit, tokens=False)
        limit = _number(get("x-ratelimit-limit-tokens"))
        if limit:
            self._lower(limit, tokens=True)
        if refused:
            return
        sent = sent or self.mark()
        if _number(get("x-ratelimit-remaining-requests")) == 0:
            self._used_up(
                self._requests,
                sent.at,
                sent.requests_spent,
                parse_duration_s(get("x-ratelimit-reset-requests")),
                "request budget used up (x-ratelimit-remaining-requests: 0)",
            )
        if _number(get("x-ratelimit-remaining-tokens")) == 0:
            self._used_up(
                self._tokens,
                sent.at,
                sent.tokens_spent,
                parse_duration_s(get("x-ratelimit-reset-tokens")),
                "token budget used up (x-ratelimit-remaining-tokens: 0)",
            )

    def _used_up(
        self,
        bucket: TokenBucket | None,
        at: float,
        spent_then: float,
        reset_s: float | None,
        reason: str,
    ) -> None:
        if bucket is not None:
            # Not a pause from now: that would stop every answer's successor, and with answers
            # arriving once per refill the run would stand still. The drained budget makes the
            # next request wait one refill and paces the rest.
            bucket.empty_as_of(at=at, spent_then=spent_then, now=self._clock())
        elif reset_s:
            # No limit known, so no refill rate: the reset is all the server said.
            self.pause(reset_s, reason)

    def _lower(self, per_minute: float, *, tokens: bool) -> None:
        configured = self._configured_tpm if tokens else self._configured_rpm
        if configured is not None and configured <= per_minute:
            return
        bucket = self._tokens if tokens else self._requests
        if bucket is None:
            bucket = TokenBucket(per_minute=per_minute, burst_s=self._burst_s, now=self._clock())
            if tokens:
                self._tokens = bucket
            else:
                self._requests = bucket
        elif bucket.rate_per_s * 60 != per_minute:
            bucket.set_rate(per_minute, self._burst_s)

    def __repr__(self) -> str:
        rpm = self.requests_per_minute
        tpm = self.tokens_per_minute
        paused = self.paused_for_s()
        return (
            f"<Limiter rpm={f'{rpm:g}' if rpm is not None else 'unlimited'} "
            f"tpm={f'{tpm:g}' if tpm is not None else 'unlimited'}"
            + (f" paused {paused:.1f}s: {self._pause_reason}" if paused else "")
            + ">"
        )


def _number(value: str | None) -> float | None:
    """A header's figure, or None unless it is a finite, non-negative number."""
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None
