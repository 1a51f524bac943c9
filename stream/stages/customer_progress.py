"""What the customer stage keeps in memory per by-customer partition (nothing of it is
in the table): event time, timers, held customers, and finished customers waiting for
their input records to be committed before their value goes (docs/stream.md "Exactly
once in effect")."""

from __future__ import annotations

from collections import deque

from stream.eventtime.timers import Timers, WakeIndex
from stream.eventtime.watermarks import Frontier
from stream.stages.customer_state import Committed, Position, replayable


def everything_committed(_lane: int, _partition: int) -> int:
    """A `Committed` for callers with no re-delivery (one batch, a test)."""
    return 2**62


class PartitionProgress:
    """What one by-customer partition keeps in memory: its event time, its timers and
    the customers holding for a stitched device's handover (key -> (link time, wall
    ms the hold came); the event time kept is the earlier of the link time and the
    customer's first unsettled event). Held customers are due by watermark only to
    settle up to their link time (the handover visits them for the rest); the alert
    stage gets `alert_watermark`, which stays below those times, so their observations
    are not late when a visit settles them."""

    __slots__ = ("deferred", "frontier", "groups", "holds", "read_to", "unvisited", "wakes")

    def __init__(self, wakes: Timers | None = None) -> None:
        self.frontier = Frontier()
        self.wakes: Timers = WakeIndex() if wakes is None else wakes
        self.holds: dict[str, tuple[int, int]] = {}
        # the earliest wake left due by a bounded visit (CustomerStage.due_per_batch):
        # those customers are not settled to the watermark yet; None: none left
        self.unvisited: int | None = None
        # the last by-customer record read from this partition (-1: none since start);
        # a release names it (PEER_BASE in stream.stages.customer_state)
        self.read_to = -1
        # Finished customers whose value goes once their input records are committed
        # (CustomerValue.replayable): key -> its group, and the groups in order, one per
        # batch, each with the highest positions of its keys. Only the oldest group is
        # checked, so a batch or a timer tick costs nothing per waiting key.
        self.deferred: dict[str, int] = {}
        self.groups: deque[tuple[int, dict[int, Position], list[str]]] = deque()

    @property
    def watermark(self) -> int:
        return self.frontier.watermark

    @property
    def alert_watermark(self) -> int:
        """The watermark as far as settled observations go: below every held link, and
        below the customers left due by a bounded visit (a customer due at wake w can
        still report a step reached at w - 1: a tail event at t wakes it at t + 1)."""
        wm = self.frontier.watermark
        if self.holds:
            wm = min(wm, min(at for at, _since in self.holds.values()))
        if self.unvisited is not None:
            wm = min(wm, self.unvisited - 1)
        return wm

    @property
    def settled(self) -> bool:
        """Nothing of this partition waits for a visit at its watermark: no hold, no
        customer left due (an idle partition claims only then)."""
        return not self.holds and self.unvisited is None

    def defer(self, key: str, positions: dict[int, Position], group: int) -> None:
        """Keep a finished customer until its input records are committed."""
        if not self.groups or self.groups[-1][0] != group:
            self.groups.append((group, {}, []))
        _group, need, keys = self.groups[-1]
        for k, pos in positions.items():
            if k not in need or pos > need[k]:
                need[k] = pos
        keys.append(key)
        self.deferred[key] = group

    def has_deletable(self, partition: int, committed: Committed) -> bool:
        return bool(self.groups) and not replayable(self.groups[0][1], partition, committed)

    def deletable(self, partition: int, committed: Committed) -> list[str]:
        """The deferred customers none of whose input records can come again (taken
        off the list: the caller visits them)."""
        out: list[str] = []
        while self.has_deletable(partition, committed):
            group, _need, keys = self.groups.popleft()
            out.extend(k for k in keys if self.deferred.get(k) == group)
        for k in out:
            del self.deferred[k]
        return out

    def set_hold(self, key: str, hold: tuple[int, int] | None) -> None:
        if hold is None:
            self.holds.pop(key, None)
        else:
            self.holds[key] = hold

    def overdue(self, wall_ms: int, max_wait_ms: int) -> list[str]:
        """Held customers whose handover is overdue by wall time (to visit and release)."""
        return [k for k, (_at, since) in self.holds.items() if wall_ms - since > max_wait_ms]
