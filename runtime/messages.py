"""Every message that crosses a socket, as frozen msgspec structs encoded as MessagePack.

One module holds the whole wire protocol: the structs, the unions that name "any valid
message" on each socket direction, and the encoders and strict typed decoders built once.
A frame that does not decode into the expected type raises ``msgspec.DecodeError`` (or its
subclass ``ValidationError``); receivers count and drop it. New fields are only ever
appended, with defaults.
"""

from __future__ import annotations

from typing import Annotated, Generic, Literal, TypeVar

import msgspec

__all__ = [
    "CANDLE_BATCH_DECODER",
    "CANDLE_DECODER",
    "CONTROL_REPLY_DECODER",
    "CONTROL_REQUEST_DECODER",
    "ENCODER",
    "EVENTS_DOWN_DECODER",
    "EVENTS_UP_DECODER",
    "EVENT_BODY_JSON_DECODER",
    "EVENT_BODY_JSON_ENCODER",
    "FEED_HEARTBEAT_DECODER",
    "HEARTBEAT_TOPIC",
    "HISTORY_PAGE",
    "HISTORY_REPLY_DECODER",
    "HISTORY_REQUEST_DECODER",
    "LATENCY_BUCKETS_S",
    "LIFECYCLE_DECODER",
    "LIFECYCLE_TOPIC",
    "SUPERVISION_DOWN_DECODER",
    "SUPERVISION_UP_DECODER",
    "AccountUpdated",
    "Ack",
    "AddRequest",
    "Candle",
    "ChildHeartbeat",
    "ChildReady",
    "ControlReply",
    "ControlRequest",
    "Direction",
    "DownRequest",
    "Error",
    "ErrorReply",
    "Event",
    "EventBatch",
    "EventBody",
    "EventsDown",
    "EventsUp",
    "FeedHeartbeat",
    "FeedStatus",
    "Halt",
    "HaltRequest",
    "Heartbeat",
    "Hello",
    "HistoryReply",
    "HistoryRequest",
    "LifecycleEvent",
    "Log",
    "NamedRequest",
    "OkReply",
    "OpenPosition",
    "OrderFilled",
    "OrderRejected",
    "OrderSubmitted",
    "Pause",
    "PauseRequest",
    "PendingOrder",
    "PositionClosed",
    "PositionOpened",
    "PositionSide",
    "ProcessFigures",
    "ProcessRow",
    "PsReply",
    "PsRequest",
    "RejectCount",
    "ReloadRequest",
    "RemoveRequest",
    "RestartRequest",
    "Resume",
    "ResumeRequest",
    "ResumeTrading",
    "ResumeTradingRequest",
    "Role",
    "Side",
    "Signal",
    "StartFeed",
    "StartRequest",
    "Stats",
    "StopRequest",
    "StrictDecoder",
    "SupervisionDown",
    "SupervisionUp",
    "Welcome",
    "candle_batch_topic",
    "candle_topic",
    "lifecycle_topic",
    "parse_candle_topic",
]

Side = Literal["buy", "sell"]
Direction = Literal["long", "short", "flat"]
PositionSide = Literal["long", "short"]
LogLevel = Literal["debug", "info", "warning", "error"]
Role = Literal["broker", "aggregator", "worker"]

Price = Annotated[float, msgspec.Meta(gt=0.0)]
Quantity = Annotated[float, msgspec.Meta(gt=0.0)]


class _Wire(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Base of every wire struct: immutable, and a typo in a field name fails to decode."""


# --------------------------------------------------------------------------- market data

HEARTBEAT_TOPIC = b"hb|"


def candle_topic(symbol: str, timeframe: str) -> bytes:
    """The PUB/SUB topic frame of one candle stream: ``c|SYMBOL|TIMEFRAME``.

    The trailing ``|`` keeps prefix matching exact: ``c|ETH|5m|`` does not match ``c|ETH|5m0``.
    """
    return f"c|{symbol}|{timeframe}|".encode()


def candle_batch_topic(symbol: str, timeframe: str) -> bytes:
    """The topic of a frame holding several candles of one stream in a row (a MessagePack
    list of candles, oldest first): ``c|SYMBOL|TIMEFRAME|*``.

    The broker sends one when several candles of a stream are due at once (speed 0, or a
    replay behind its schedule); a candle on time goes alone under :func:`candle_topic`. It
    starts with the stream's topic, so the stream's subscription takes both.
    """
    return candle_topic(symbol, timeframe) + b"*"


def parse_candle_topic(topic: bytes) -> tuple[str, str] | None:
    """Return ``(symbol, timeframe)`` of a candle topic frame, or None if it is not one."""
    parts = topic.split(b"|")
    if len(parts) != 4 or parts[0] != b"c" or parts[3] != b"" or not parts[1] or not parts[2]:
        return None
    try:
        return parts[1].decode(), parts[2].decode()
    except UnicodeDecodeError:
        return None


_INF = float("inf")
_NEG_INF = -_INF


# gc=False: a candle holds only strings and numbers, so it can never be part of a reference
# cycle; untracked, the thousands decoded per second never enter the collector's generations.
class Candle(_Wire, array_like=True, frozen=True, gc=False):
    """One closed OHLCV candle of one stream.

    Parameters
    ----------
    symbol, timeframe:
        The stream, e.g. ``ETH-BTC`` and ``5m``.
    open_time:
        Open time in milliseconds since the epoch, UTC.
    open, high, low, close, volume:
        Prices in quote currency, volume in base units.
    seq:
        Position in its stream, from 1 with no holes, per broker incarnation.
    publish_ns:
        The broker's ``time.time_ns()`` when it published the candle (for latency figures).
    """

    symbol: str
    timeframe: str
    open_time: Annotated[int, msgspec.Meta(ge=0)]
    open: Price
    high: Price
    low: Price
    close: Price
    volume: Annotated[float, msgspec.Meta(ge=0.0)]
    seq: Annotated[int, msgspec.Meta(ge=1)]
    publish_ns: int = 0

    def __post_init__(self) -> None:
        # This runs for every candle built or decoded, so the usual case is one chain of
        # comparisons: any comparison with NaN is false, and with low and high finite and
        # low <= open, close <= high, open and close are finite too; v - v is 0.0 only for a
        # finite v. Only a candle that fails it goes on to say why.
        low, h, v = self.low, self.high, self.volume
        if _NEG_INF < low <= self.open <= h < _INF and low <= self.close <= h and v - v == 0.0:
            return
        o, c = self.open, self.close
        if (o - o) + (h - h) + (low - low) + (c - c) + (v - v) != 0.0:
            raise ValueError("candle has a non-finite price or volume")
        if low > o or low > c:
            raise ValueError("candle low is above open or close")
        if h < o or h < c:
            raise ValueError("candle high is below open or close")


class FeedHeartbeat(_Wire, frozen=True):
    """Broker liveness, published on ``hb|`` whether or not the market is quiet.

    Parameters
    ----------
    incarnation:
        Random id of this broker process; a new value means the broker restarted.
    ts_ns:
        Broker wall clock when sent.
    last_seq:
        Last published ``seq`` of each stream, keyed ``SYMBOL|TIMEFRAME``.
    started:
        Whether the replay has begun (before it, heartbeats are the subscription handshake).
    epoch:
        The replay this feed belongs to: kept across broker restarts (which resume it), new
        with each ``stratrun up``. Seqs only compare within one epoch.
    """

    incarnation: str
    ts_ns: int
    last_seq: dict[str, int]
    started: bool
    epoch: str = ""


# --------------------------------------------------------------------------- history

# Candles in one HistoryReply at most; a client pages through longer ranges. At ~70 bytes a
# candle this keeps a reply well under the sockets' frame-size cap.
HISTORY_PAGE = 5000


class HistoryRequest(_Wire, tag="history_request", frozen=True):
    """Ask the broker for the candles of one stream with ``from_seq <= seq <= to_seq``.

    Parameters
    ----------
    req_id:
        Echoed in the reply.
    stream:
        ``"SYMBOL|TF"``.
    from_seq, to_seq:
        The range wanted; the reply holds at most ``HISTORY_PAGE`` candles from ``from_seq``
        on (or, with ``from_seq == 0``, the last ``HISTORY_PAGE`` up to ``to_seq``).
    """

    req_id: int
    stream: str
    from_seq: Annotated[int, msgspec.Meta(ge=0)]
    to_seq: Annotated[int, msgspec.Meta(ge=0)]


class HistoryReply(_Wire, tag="history_reply", frozen=True):
    """The broker's answer: what it still holds of the range asked for.

    Parameters
    ----------
    req_id:
        The request's id.
    incarnation:
        The broker's incarnation id.
    first_seq, last_seq:
        The oldest and newest seq the broker holds for the stream (0, 0: none, or unknown
        stream).
    candles:
        Consecutive candles of the range, oldest first (``publish_ns`` 0: not live).
    error:
        Why nothing was returned ("unknown stream", ...), empty on success.
    """

    req_id: int
    incarnation: str
    first_seq: int
    last_seq: int
    candles: list[Candle]
    error: str = ""


# --------------------------------------------------------------------------- rejects


class RejectCount(_Wire, array_like=True, frozen=True):
    """Frames one process refused on one of its sockets for one reason.

    Parameters
    ----------
    socket:
        The link (``market_data``, ``events``, ``supervision``, ``control``, ...).
    reason:
        Why (``frame_count``, ``decode``, ``topic``, ``open_time``, ``unauthorised``, ...).
    count:
        How many.
    """

    socket: str
    reason: str
    count: int


# --------------------------------------------------------------------------- events


class _Body(_Wire, tag_field="kind", frozen=True):
    """Base of event bodies: the tag field ``kind`` names what happened."""


class Signal(_Body, tag="signal", frozen=True):
    """The strategy's view changed on a stream."""

    symbol: str
    timeframe: str
    direction: Direction
    strength: float = 1.0
    reason: str = ""


class OrderSubmitted(_Body, tag="order_submitted", frozen=True):
    """A market order was handed to the execution model.

    ``sizing`` says what ``quantity`` counts: ``units``, or (``equity``) the fraction of the
    free cash the order will use, its units being set at the fill.
    """

    order_id: str
    symbol: str
    side: Side
    quantity: Quantity
    reason: str = ""
    sizing: Literal["units", "equity"] = "units"


class OrderFilled(_Body, tag="order_filled", frozen=True):
    """An order filled; ``fee`` is in quote currency, ``fill_time`` in ms UTC."""

    order_id: str
    symbol: str
    side: Side
    quantity: Quantity
    price: Price
    fee: float
    fill_time: int


class OrderRejected(_Body, tag="order_rejected", frozen=True):
    """An order was refused before it filled."""

    order_id: str
    symbol: str
    side: Side
    quantity: float
    reason: str


class PositionOpened(_Body, tag="position_opened", frozen=True):
    """A position came into being at ``entry_price``; ``entry_fee`` is already paid."""

    symbol: str
    side: PositionSide
    quantity: Quantity
    entry_price: Price
    entry_fee: float
    opened_at: int


class PositionClosed(_Body, tag="position_closed", frozen=True):
    """A position was closed; ``realized_pnl`` is net of entry and exit fees.

    ``mae`` and ``mfe`` are the maximum adverse and favourable excursions while it was open,
    in quote currency (from candle lows and highs); ``reason`` says which rule closed it.
    """

    symbol: str
    side: PositionSide
    quantity: Quantity
    entry_price: Price
    exit_price: Price
    fees: float
    realized_pnl: float
    opened_at: int
    closed_at: int
    reason: str = ""
    mae: float = 0.0
    mfe: float = 0.0


class Log(_Body, tag="log", frozen=True):
    """A log record the strategy wants on the event stream as well as in its file."""

    level: LogLevel
    message: str
    logger: str = ""


class Error(_Body, tag="error", frozen=True):
    """Something raised inside the worker and was contained; ``where`` names the hook."""

    where: str
    message: str
    traceback: str = ""


# Upper bounds (seconds) of the candle-to-decision latency buckets, shared by the worker that
# counts and the aggregator that exposes them as a Prometheus histogram.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class Stats(_Body, tag="stats", frozen=True):
    """Periodic figures; counts are since the previous Stats.

    Parameters
    ----------
    candles:
        Candles processed.
    frames_rejected:
        Malformed market-data frames dropped.
    rss_bytes:
        The worker's resident memory now.
    latency_counts:
        Candles whose broker-publish-to-decision time fell in each of ``LATENCY_BUCKETS_S``
        (not cumulative), plus one last count for slower ones.
    latency_sum_s:
        The sum of those latencies.
    candles_missed:
        Candles whose seq was skipped (published, never received).
    rejects:
        The frames behind ``frames_rejected``, by socket and reason.
    """

    candles: int
    frames_rejected: int = 0
    rss_bytes: int = 0
    latency_counts: list[int] = []
    latency_sum_s: float = 0.0
    candles_missed: int = 0
    candles_backfilled: int = 0
    candles_duplicate: int = 0
    gaps: int = 0
    lag_s: float = 0.0
    unrealized_pnl: float = 0.0
    journal_latency_counts: list[int] = []
    journal_latency_sum_s: float = 0.0
    rejects: list[RejectCount] = []


class FeedStatus(_Body, tag="feed", frozen=True):
    """The market-data feed went quiet (``stale``) or came back (``recovered``).

    Parameters
    ----------
    state:
        ``stale`` after no heartbeat or candle for the stale timeout; ``recovered`` when one
        arrives again.
    incarnation:
        The broker incarnation heard last (a new one means the broker restarted).
    silent_s:
        How long the feed had been silent.
    """

    state: Literal["stale", "recovered"]
    incarnation: str = ""
    silent_s: float = 0.0


class AccountUpdated(_Body, tag="account", frozen=True):
    """The strategy's sub-account (its ledger) after a fill, or at a periodic mark.

    Amounts are in quote currency. ``equity = cash + the open positions' gross PnL at
    their marks``, which is ``capital + realized_pnl + unrealized_pnl``.

    Parameters
    ----------
    capital:
        The strategy's allocation (``execution.cash`` in its config).
    cash:
        Capital less every fee paid plus the gross PnL of closed positions (cash tied in
        open positions is not taken off: see ``exposure``).
    exposure:
        The open positions' value at their marks (quantity times last price, longs and
        shorts alike).
    realized_pnl:
        The closed positions' PnL, net of their entry and exit fees.
    unrealized_pnl:
        The open positions' PnL at their marks, net of their entry fees.
    fees:
        Every fee paid, entries and exits.
    equity:
        Cash plus the open positions' gross PnL at their marks.
    peak_equity, max_drawdown:
        The highest equity of the account's points so far, and the deepest fall from such
        a peak (>= 0).
    trades:
        Positions closed.
    at:
        Open time (ms, UTC) of the candle after which the point was taken (0 at the start).
    reason:
        ``start``, ``fill``, ``mark`` (periodic, while positions are held) or ``capital``
        (the allocation changed in the config).
    """

    capital: float
    cash: float
    exposure: float
    realized_pnl: float
    unrealized_pnl: float
    fees: float
    equity: float
    peak_equity: float
    max_drawdown: float
    trades: int
    at: int
    reason: Literal["start", "fill", "mark", "capital"] = "mark"


class Heartbeat(_Body, tag="heartbeat", frozen=True):
    """Sent when a strategy has been quiet for a while, so quiet is not mistaken for dead."""

    pid: int
    uptime_s: float


EventBody = (
    Signal
    | OrderSubmitted
    | OrderFilled
    | OrderRejected
    | PositionOpened
    | PositionClosed
    | Log
    | Error
    | Stats
    | Heartbeat
    | FeedStatus
    | AccountUpdated
)


# gc=False: an event holds strings, numbers and a body of strings, numbers and lists of
# those, so it can never be part of a reference cycle; a backtest keeps hundreds of thousands
# and the collector need not walk them.
class Event(_Wire, tag="event", frozen=True, gc=False):
    """The envelope of everything a strategy reports.

    Parameters
    ----------
    strategy_id:
        The strategy that emitted it; every event carries one.
    seq:
        Per strategy, from 1, increasing across restarts of that strategy.
    ts_ns:
        Worker wall clock when emitted.
    body:
        What happened.
    """

    strategy_id: str
    seq: Annotated[int, msgspec.Meta(ge=1)]
    ts_ns: int
    body: EventBody


class EventBatch(_Wire, tag="batch", frozen=True):
    """The events one candle (or one timer tick) produced, journaled together or not at all.

    Parameters
    ----------
    strategy_id:
        The strategy that emitted them.
    events:
        In seq order, consecutive; may be empty when only the cursor moved.
    cursor:
        ``"SYMBOL|TF"`` -> seq of the last candle the strategy had fully processed when the
        batch was cut. A restarted worker continues after it: the candles it covers are
        either in the journal's effects or had none.
    epoch:
        The feed epoch the cursor's seqs belong to.
    """

    strategy_id: str
    events: list[Event]
    cursor: dict[str, int] = {}
    epoch: str = ""


class Hello(_Wire, tag="hello", frozen=True):
    """A worker introduces itself to the aggregator and asks where its strategy left off."""

    strategy_id: str
    pid: int


class OpenPosition(_Wire, frozen=True):
    """An open position as the journal knows it, handed back to a restarting worker."""

    symbol: str
    side: PositionSide
    quantity: Quantity
    entry_price: Price
    entry_fee: float
    opened_at: int


class PendingOrder(_Wire, frozen=True):
    """An order the journal saw submitted and not yet filled; ``sizing`` and ``quantity``
    as in its OrderSubmitted (``equity``: the quantity is the fraction of the free cash)."""

    order_id: str
    symbol: str
    side: Side
    quantity: Quantity
    reason: str = ""
    sizing: Literal["units", "equity"] = "units"


class Welcome(_Wire, tag="welcome", frozen=True):
    """The aggregator's answer to Hello: the last journaled seq and the open positions.

    ``last_closed`` holds the last position closed on each symbol: rules that look back at
    it (the cooldown after a loss) must see it after a restart as they did before.
    ``account`` is the strategy's last journaled ledger point (None before its first): the
    restarted worker takes its exact figures back.
    """

    strategy_id: str
    last_seq: int
    open_positions: list[OpenPosition]
    realized_pnl: float
    candles: int
    cursor: dict[str, int] = {}
    pending_orders: list[PendingOrder] = []
    epoch: str = ""
    last_closed: list[PositionClosed] = []
    account: AccountUpdated | None = None


class Ack(_Wire, tag="ack", frozen=True):
    """Every event of ``strategy_id`` up to ``seq`` is committed to the journal.

    ``received`` is the highest seq the commit took from this worker; above ``seq`` it
    means a hole after ``seq`` (a batch lost on the way): the worker sends again at once.
    """

    strategy_id: str
    seq: int
    received: int = 0


class ProcessFigures(_Wire, tag="process_figures", frozen=True):
    """Manager to aggregator, every second: each process's state and resources, for metrics.

    ``rejects`` are the frames the manager itself refused since it started (cumulative).
    """

    rows: list[ProcessRow]
    rejects: list[RejectCount] = []


EventsUp = Event | EventBatch | Hello | ProcessFigures
EventsDown = Welcome | Ack

# --------------------------------------------------------------------------- supervision


class ChildReady(_Wire, tag="ready", frozen=True):
    """A child process is up and serving; ``detail`` holds role-specific facts (metrics URL)."""

    name: str
    role: Role
    pid: int
    detail: dict[str, str] = {}


class ChildHeartbeat(_Wire, tag="heartbeat", frozen=True):
    """Periodic liveness and figures of one child, for ``ps``."""

    name: str
    candles: int = 0
    open_positions: int = 0
    realized_pnl: float = 0.0
    state: str = ""  # a worker's own state when it is not simply running ("errored")
    lag_s: float = 0.0  # the broker: how far its paced replay runs behind schedule
    rejects: list[RejectCount] = []  # frames refused since the child started (cumulative)
    halted: bool = False  # a worker under the kill switch: opens no position
    capital: float = 0.0  # a worker: its allocation
    equity: float = 0.0  # a worker: its ledger's equity at the last marks


class StartFeed(_Wire, tag="start_feed", frozen=True):
    """Manager to broker: every worker is subscribed, start publishing candles."""


class Pause(_Wire, tag="pause", frozen=True):
    """Manager to worker: keep the process and its state, stop acting on candles."""


class Resume(_Wire, tag="resume", frozen=True):
    """Manager to worker: act on candles again."""


class Halt(_Wire, tag="halt", frozen=True):
    """Manager to worker, the kill switch: open no position from now on; with ``flatten``,
    also close every open one."""

    flatten: bool = False
    reason: str = ""


class ResumeTrading(_Wire, tag="resume_trading", frozen=True):
    """Manager to worker: the kill switch is lifted."""


SupervisionUp = ChildReady | ChildHeartbeat
SupervisionDown = StartFeed | Pause | Resume | Halt | ResumeTrading

# --------------------------------------------------------------------------- lifecycle

LIFECYCLE_TOPIC = b"lc|"


class LifecycleEvent(_Wire, frozen=True):
    """What happened to a process, published by the manager on topic ``lc|<name>|<event>``.

    Parameters
    ----------
    name, role, pid:
        The process.
    event:
        ``spawn``, ``ready``, ``exit``, ``restart``, ``failed``, ``stopped``, ``paused``,
        ``resumed``, ``killed`` (by the watchdog or the memory cap).
    detail:
        Why, in words (exit status, the rule that fired, the restart delay).
    ts_ns:
        Manager wall clock.
    """

    name: str
    role: Role
    pid: int
    event: str
    detail: str
    ts_ns: int


def lifecycle_topic(name: str, event: str) -> bytes:
    """The PUB topic of a lifecycle event: prefix ``lc|<name>|`` selects one process."""
    return f"lc|{name}|{event}".encode()


# --------------------------------------------------------------------------- control


class PsRequest(_Wire, tag="ps", frozen=True):
    """List every process the manager runs."""

    req_id: int


class DownRequest(_Wire, tag="down", frozen=True):
    """Stop everything: workers, then the broker, then the aggregator, then the manager."""

    req_id: int


class StartRequest(_Wire, tag="start", frozen=True):
    """Start a stopped (or failed) process; replies once it is ready."""

    req_id: int
    name: str


class StopRequest(_Wire, tag="stop", frozen=True):
    """Stop one process gracefully (SIGKILL after the grace); replies once it has exited."""

    req_id: int
    name: str


class RestartRequest(_Wire, tag="restart", frozen=True):
    """Stop then start one process; replies once the new one is ready."""

    req_id: int
    name: str


class PauseRequest(_Wire, tag="pause", frozen=True):
    """Pause one strategy; replies once the worker confirms."""

    req_id: int
    name: str


class ResumeRequest(_Wire, tag="resume", frozen=True):
    """Resume one paused strategy; replies once the worker confirms."""

    req_id: int
    name: str


class AddRequest(_Wire, tag="add", frozen=True):
    """Add the strategies of a TOML file (absolute path) to the running system."""

    req_id: int
    path: str


class RemoveRequest(_Wire, tag="remove", frozen=True):
    """Stop one strategy and forget it."""

    req_id: int
    name: str


class ReloadRequest(_Wire, tag="reload", frozen=True):
    """Re-read the config file: start new strategies, stop removed ones, restart changed ones."""

    req_id: int


class HaltRequest(_Wire, tag="halt", frozen=True):
    """The kill switch for every strategy (kept across restarts until lifted); ``reason``
    is empty from ``stratrun halt``, ``daily loss limit`` from the risk gate."""

    req_id: int
    flatten: bool = False
    reason: str = ""


class ResumeTradingRequest(_Wire, tag="resume_trading", frozen=True):
    """Lift the kill switch."""

    req_id: int


ControlRequest = (
    PsRequest
    | DownRequest
    | StartRequest
    | StopRequest
    | RestartRequest
    | PauseRequest
    | ResumeRequest
    | AddRequest
    | RemoveRequest
    | ReloadRequest
    | HaltRequest
    | ResumeTradingRequest
)


NamedRequest = StartRequest | StopRequest | RestartRequest | PauseRequest | ResumeRequest


class ProcessRow(_Wire, frozen=True):
    """One process as ``stratrun ps`` shows it."""

    name: str
    role: Role
    pid: int
    state: str
    uptime_s: float
    restarts: int
    candles: int = 0
    open_positions: int = 0
    realized_pnl: float = 0.0
    detail: dict[str, str] = {}
    rss_bytes: int = 0
    uss_bytes: int = 0
    cpu_percent: float = 0.0
    last_exit: str = ""
    kills: dict[str, int] = {}  # by cause: watchdog, memory
    heartbeat_age_s: float = 0.0  # since the child's last heartbeat (0 when not running)
    lag_s: float = 0.0
    rejects: list[RejectCount] = []  # from the child's last heartbeat (cumulative)
    halted: bool = False
    capital: float = 0.0  # a worker: its allocation
    equity: float = 0.0  # a worker: its ledger's equity (capital + realized + unrealized)


class PsReply(_Wire, tag="ps_reply", frozen=True):
    """The answer to PsRequest."""

    req_id: int
    rows: list[ProcessRow]


class OkReply(_Wire, tag="ok", frozen=True):
    """A command was accepted."""

    req_id: int
    message: str = ""


class ErrorReply(_Wire, tag="error", frozen=True):
    """A command was refused; ``req_id`` is 0 when the request could not be decoded."""

    req_id: int
    message: str


ControlReply = PsReply | OkReply | ErrorReply

_T = TypeVar("_T")


class StrictDecoder(Generic[_T]):
    """A msgpack decoder whose every refusal is a ``msgspec.DecodeError``.

    msgspec raises ``UnicodeDecodeError`` for a map key that is not UTF-8 (found by the
    fuzz test); receivers catch ``DecodeError`` only, so it is turned into one here.
    """

    __slots__ = ("_decode",)

    def __init__(self, decoder: msgspec.msgpack.Decoder[_T]) -> None:
        self._decode = decoder.decode

    def decode(self, data: bytes) -> _T:
        try:
            return self._decode(data)
        except UnicodeDecodeError as exc:
            raise msgspec.DecodeError(f"invalid UTF-8: {exc}") from None


# One encoder for everything and one strict decoder per socket direction, built once.
ENCODER = msgspec.msgpack.Encoder()
CANDLE_DECODER = StrictDecoder(msgspec.msgpack.Decoder(Candle))
CANDLE_BATCH_DECODER = StrictDecoder(msgspec.msgpack.Decoder(list[Candle]))
FEED_HEARTBEAT_DECODER = StrictDecoder(msgspec.msgpack.Decoder(FeedHeartbeat))
EVENTS_UP_DECODER = StrictDecoder(msgspec.msgpack.Decoder(EventsUp))
EVENTS_DOWN_DECODER = StrictDecoder(msgspec.msgpack.Decoder(EventsDown))
HISTORY_REQUEST_DECODER = StrictDecoder(msgspec.msgpack.Decoder(HistoryRequest))
HISTORY_REPLY_DECODER = StrictDecoder(msgspec.msgpack.Decoder(HistoryReply))
SUPERVISION_UP_DECODER = StrictDecoder(msgspec.msgpack.Decoder(SupervisionUp))
SUPERVISION_DOWN_DECODER = StrictDecoder(msgspec.msgpack.Decoder(SupervisionDown))
LIFECYCLE_DECODER = StrictDecoder(msgspec.msgpack.Decoder(LifecycleEvent))
CONTROL_REQUEST_DECODER = StrictDecoder(msgspec.msgpack.Decoder(ControlRequest))
CONTROL_REPLY_DECODER = StrictDecoder(msgspec.msgpack.Decoder(ControlReply))
# The journal keeps bodies as JSON so that they read well in sqlite3 and json_extract().
EVENT_BODY_JSON_ENCODER = msgspec.json.Encoder()
EVENT_BODY_JSON_DECODER = msgspec.json.Decoder(EventBody)
