"""The broker's history of published candles, its replay cursor, and the journal's cursors."""

from __future__ import annotations

from pathlib import Path

from broker.cursor import ReplayCursor
from broker.history import History, StreamHistory
from runtime.journal import Journal
from runtime.messages import HISTORY_PAGE, Candle, Event, EventBatch, HistoryRequest, Stats


def _candle(seq: int) -> Candle:
    return Candle("ETH", "1m", seq * 60_000, 1.0, 1.0, 1.0, 1.0, 1.0, seq)


def test_a_range_returns_the_held_candles_of_it_in_order() -> None:
    h = StreamHistory(limit=100)
    for seq in range(1, 51):
        h.append(_candle(seq))
    assert (h.first_seq, h.last_seq) == (1, 50)
    assert [c.seq for c in h.range(10, 14)] == [10, 11, 12, 13, 14]
    assert [c.seq for c in h.range(48, 99)] == [48, 49, 50]  # nothing beyond what was sent
    assert h.range(51, 60) == []
    assert [c.seq for c in h.range(0, 3)] == [1, 2, 3]  # 0: the newest page up to to_seq


def test_old_candles_are_forgotten_past_the_limit() -> None:
    h = StreamHistory(limit=10)
    for seq in range(1, 36):
        h.append(_candle(seq))
        assert h.last_seq - h.first_seq + 1 == min(seq, 10)
        assert [c.seq for c in h.range(1, seq)] == list(range(max(1, seq - 9), seq + 1))


def test_a_reply_holds_one_page_at_most() -> None:
    h = StreamHistory(limit=3 * HISTORY_PAGE)
    for seq in range(1, 2 * HISTORY_PAGE + 11):
        h.append(_candle(seq))
    page = h.range(5, 10**9)
    assert len(page) == HISTORY_PAGE and page[0].seq == 5


def test_an_unknown_stream_is_an_error_not_silence() -> None:
    history = History(["ETH|1m"], 10)
    history.append(_candle(1))
    reply = history.answer(HistoryRequest(7, "BTC|1m", 1, 5), "inc")
    assert reply.req_id == 7 and reply.error == "unknown stream" and reply.candles == []
    ok = history.answer(HistoryRequest(8, "ETH|1m", 1, 5), "inc")
    assert ok.error == "" and [c.seq for c in ok.candles] == [1] and ok.incarnation == "inc"


def test_the_replay_cursor_resumes_only_the_same_epoch_and_feeds(tmp_path: Path) -> None:
    path = str(tmp_path / "cursor.json")
    ReplayCursor(path, "e1", ["A|1m", "B|1m"]).save(1234)
    assert ReplayCursor(path, "e1", ["A|1m", "B|1m"]).load() == 1234
    assert ReplayCursor(path, "e2", ["A|1m", "B|1m"]).load() == 0  # a new `up`
    assert ReplayCursor(path, "e1", ["A|1m"]).load() == 0  # other feeds
    assert ReplayCursor("", "e1", ["A|1m"]).load() == 0  # no file configured
    (tmp_path / "cursor.json").write_text("{not json")
    assert ReplayCursor(path, "e1", ["A|1m", "B|1m"]).load() == 0


def test_the_journal_keeps_each_strategys_cursor_with_its_events(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    try:
        e1 = Event("s", 1, 1, Stats(1))
        b1 = EventBatch("s", [e1], {"ETH|1m": 10, "ETH|1h": 2}, "ep")
        journal.append(b1.events, [b1])
        assert journal.cursor("s") == ("ep", {"ETH|1h": 2, "ETH|1m": 10})
        # A batch resent late does not move the cursor back.
        stale = EventBatch("s", [e1], {"ETH|1m": 5}, "ep")
        assert journal.append(stale.events, [stale]) == []
        assert journal.cursor("s")[1]["ETH|1m"] == 10
        # A new epoch replaces the cursor entirely.
        e2 = Event("s", 2, 2, Stats(1))
        b2 = EventBatch("s", [e2], {"ETH|1m": 3}, "ep2")
        journal.append(b2.events, [b2])
        assert journal.cursor("s") == ("ep2", {"ETH|1m": 3})
        assert journal.cursor("other") == ("", {})
    finally:
        journal.close()
