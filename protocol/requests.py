"""Requests and offers (mutual aid, issue 18): what their records mean together.

Theory of operation. A lab signs a ``request`` record (a design, a quantity, a date it is
needed by, a note); other labs sign ``offer`` records naming it (a quantity, a note); the
requester may sign a closing ``request`` record (``closes`` and nothing else). Nothing is ever
edited: a request's state is computed, every time, from the records held, by
:func:`request_state`, so two nodes holding the same records agree, whatever order the
records arrived in:

* CLOSED     — a closing record by the request's own author is held (by anyone else: ignored);
* FULFILLED  — the offers from keys this node trusts (its own included) cover the quantity;
* EXPIRED    — neither, and the ``needed_by`` date is before today;
* OPEN       — otherwise.

Offers from keys this node does not trust are counted and shown apart, never towards
FULFILLED: a stranger cannot make other labs' needs disappear by "offering" a million. An
offer by the requester to itself counts for nothing. A request dated in the past is refused
when it is made here (:func:`check_new_request`), but one received from a peer is kept and shown
as EXPIRED: its author's clock, or the time the record took to arrive, is not a reason to lose it.

Pure: ``today`` and the trust set are arguments.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Container, Iterable
from dataclasses import dataclass

from .errors import FabnodeError

MAX_DAYS_AHEAD = 3 * 366
"""How far ahead a ``--needed-by`` date may be when made here: a need, not a wish list."""


class BadDate(FabnodeError):
    """A date that is not YYYY-MM-DD (one line)."""


class RequestState(enum.Enum):
    OPEN = "open"
    FULFILLED = "fulfilled"
    CLOSED = "closed"
    EXPIRED = "expired"


def parse_date(value: object) -> datetime.date:
    """A calendar date written YYYY-MM-DD, exactly (no time, no zone, no other spelling), so a
    record's bytes say one date to every reader."""
    if not isinstance(value, str):
        raise BadDate(f"a date must be text written YYYY-MM-DD, not {type(value).__name__}")
    if len(value) != 10 or value[4] != "-" or value[7] != "-":
        raise BadDate(f"{value[:40]!r} is not a date written YYYY-MM-DD")
    try:
        return datetime.date.fromisoformat(value)
    except ValueError:
        raise BadDate(f"{value!r} is not a date on the calendar") from None


def check_new_request(quantity: int, needed_by: str, note: str, today: datetime.date) -> None:
    """Refuse, in one line, a request this lab is about to sign that no one could act on."""
    from .records import MAX_NOTE, MAX_QUANTITY

    if not 1 <= quantity <= MAX_QUANTITY:
        raise FabnodeError(f"--quantity must be between 1 and {MAX_QUANTITY:,}, not {quantity}")
    date = parse_date(needed_by)
    if date < today:
        raise FabnodeError(f"--needed-by {needed_by} is in the past (today is {today.isoformat()}): "
                           "give the date the things are needed by")
    if (date - today).days > MAX_DAYS_AHEAD:
        raise FabnodeError(f"--needed-by {needed_by} is more than three years away: a request is for a need, "
                           "not a wish list")
    if len(note) > MAX_NOTE:
        raise FabnodeError(f"--note is {len(note)} characters long; at most {MAX_NOTE}")


@dataclass(frozen=True, slots=True)
class Offer:
    cid: bytes
    author: str
    ts: int
    quantity: int
    note: str = ""


@dataclass(frozen=True, slots=True)
class RequestView:
    """One request with everything said about it, as computed by :func:`request_state`."""

    cid: bytes
    author: str
    ts: int
    design: bytes
    quantity: int
    needed_by: str
    note: str
    state: RequestState
    offered_trusted: int
    """Things offered by keys this node trusts (never by the requester itself)."""
    offered_untrusted: int
    """Things offered by other keys: shown, never counted towards fulfilled."""
    offers: tuple[Offer, ...]
    closed_by: bytes | None
    """The closing record, when the requester closed it."""

    @property
    def is_open(self) -> bool:
        return self.state is RequestState.OPEN


def request_state(*, cid: bytes, author: str, ts: int, design: bytes, quantity: int, needed_by: str, note: str,
                  offers: Iterable[Offer], closes: Iterable[tuple[bytes, str]], trusted: Container[str],
                  today: datetime.date) -> RequestView:
    """What a request's records mean together (the theory at the top of this module).

    ``closes``: (closing record id, its author) of every closing record naming this request;
    ``trusted``: the keys whose offers count (this node's own key among them)."""
    offers = tuple(sorted((o for o in offers if o.author != author), key=lambda o: (o.ts, o.cid)))
    offered_trusted = sum(o.quantity for o in offers if o.author in trusted)
    offered_untrusted = sum(o.quantity for o in offers if o.author not in trusted)
    closed_by = min((c for c, by in closes if by == author), default=None)
    if closed_by is not None:
        state = RequestState.CLOSED
    elif offered_trusted >= quantity:
        state = RequestState.FULFILLED
    elif _needed_by(needed_by) < today:
        state = RequestState.EXPIRED
    else:
        state = RequestState.OPEN
    return RequestView(cid, author, ts, design, quantity, needed_by, note, state, offered_trusted,
                       offered_untrusted, offers, closed_by)


def _needed_by(text: str) -> datetime.date:
    try:
        return parse_date(text)
    except BadDate:  # stored records were checked; a bad date is as good as long past
        return datetime.date.min


def order_requests(views: Iterable[RequestView], distance_km: dict[str, float | None]) -> list[RequestView]:
    """Open requests first, then by distance to the requesting lab (unknown last), then the
    soonest date: what a lab looking for something to make for its neighbours wants at the top."""
    rank = {RequestState.OPEN: 0, RequestState.FULFILLED: 1, RequestState.EXPIRED: 2, RequestState.CLOSED: 3}

    def key(view: RequestView):
        distance = distance_km.get(view.author)
        return (rank[view.state], distance is None, distance or 0.0, view.needed_by, view.cid)

    return sorted(views, key=key)
