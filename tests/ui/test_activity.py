"""The live activity table: rows for each kind of record, batching, the filter and highlighting."""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, Qt

from ui.activity import DANGER, DANGER_MARK, FLAGS, KIND, LEVEL, NOTABLE, WHAT, ActivityModel, ActivityWindow, describe
from ui.timefmt import clock

TS = "2026-11-22T03:04:05.123456Z"

SAMPLES = [
    {"type": "file", "op": "modified", "path": "/etc/hosts", "ts": TS, "secret": False},
    {"type": "file", "op": "moved", "path": "/tmp/a", "dest": "/tmp/b", "ts": TS,
     "attribution": {"pid": 4, "how": "guess"}},
    {"type": "file", "op": "created", "path": "/home/c/.ssh/id_ed25519", "secret": True, "ts": TS},
    {"type": "file-burst", "root": "/home/c", "counts": {"created": 120, "deleted": 3, "modified": 0}, "ts": TS},
    {"type": "overflow", "root": "/home/c", "detail": "inotify queue overflowed", "rescanned": True, "ts": TS},
    {"type": "process", "op": "started", "pid": 42, "cmdline": ["curl", "http://x"], "user": "root",
     "technician": True, "ts": TS},
    {"type": "inventory", "phase": "before", "category": "services", "items": 80, "ts": TS},
    {"type": "inventory-change", "category": "users", "op": "added", "item": "eve", "way_back_in": True,
     "why": "a new login account", "ts": TS},
    {"type": "inventory-change", "category": "packages", "op": "added", "item": "htop", "way_back_in": False,
     "ts": TS},
    {"type": "alarm", "tool": "AnyDesk", "process": "anydesk", "pid": 9, "ts": TS},
    {"type": "capture-error", "what": "capture", "path": None, "error": "capture is off", "ts": TS},
    {"type": "note", "author": "ada", "text": "restarting cups", "ts": TS},
    {"type": "session-end", "reason": "customer", "ts": TS},
    {"type": "something-new", "ts": TS},
    {"type": "inventory", "phase": "after", "category": "listening", "items": 1, "ts": TS},
    {"type": "session-start", "until": "2026-11-22T05:18:01.604342Z", "ts": TS},
    {"type": "time-warning", "remaining_s": 300, "ts": TS},
]


def test_describe_every_kind():
    rows = [describe(item) for item in SAMPLES]
    assert rows[0][1:] == ("File modified", "/etc/hosts", "", 0)
    assert rows[1][WHAT] == "/tmp/a → /tmp/b" and "guess" in rows[1][FLAGS]
    assert rows[2][LEVEL] == NOTABLE and "secret" in rows[2][FLAGS]
    assert "120 created" in rows[3][FLAGS] and "3 deleted" in rows[3][FLAGS] and "0 modified" not in rows[3][FLAGS]
    assert rows[4][LEVEL] == NOTABLE
    assert rows[5][WHAT] == "curl http://x" and "technician" in rows[5][FLAGS]
    assert rows[6][WHAT] == "services" and rows[6][FLAGS] == "80 items"
    assert rows[7][LEVEL] == DANGER and rows[7][FLAGS].startswith(DANGER_MARK + "WAY BACK IN")
    assert rows[8][LEVEL] == 0
    assert rows[9][LEVEL] == DANGER and rows[9][WHAT] == "anydesk" and "ALARM" in rows[9][FLAGS]
    assert rows[10][WHAT] == "capture" and rows[10][FLAGS] == "capture is off"
    assert rows[11][KIND] == "Technician's note"
    assert rows[12][KIND] == "Session ended"
    assert rows[13][KIND] == "something-new"
    assert rows[14][FLAGS] == "1 item"
    assert rows[15][KIND] == "Session started" and rows[15][WHAT] == f"until {clock(SAMPLES[15]['until'])}"
    assert rows[16][KIND] == "Time warning" and rows[16][WHAT] == "5 minutes left"
    assert all(type(row) is tuple for row in rows)   # plain tuples: the garbage collector skips them


def test_describe_survives_garbage():
    for item in ({}, {"type": None}, {"type": "file", "path": 5, "dest": ["x"]}, {"type": "process", "cmdline": None},
                 {"type": "file-burst", "counts": "many"}):
        row = describe(item)
        assert isinstance(row[KIND], str) and isinstance(row[WHAT], str)


def test_model_passes_the_model_tester(qtmodeltester):
    model = ActivityModel()
    model.append(SAMPLES, coalesced=3)
    qtmodeltester.check(model)


def test_filter_proxy_passes_the_model_tester(qtbot, qtmodeltester):
    model = ActivityModel()
    window = ActivityWindow(model)
    qtbot.addWidget(window)
    model.append(SAMPLES)
    window.filter_edit.setText("etc")
    window.apply_filter_now()
    qtmodeltester.check(window.proxy)


def test_a_batch_is_one_insertion(qtbot):
    model = ActivityModel()
    inserted = []
    model.rowsInserted.connect(lambda _p, first, last: inserted.append((first, last)))
    model.append(SAMPLES[:5])
    model.append(SAMPLES[5:])
    assert inserted == [(0, 4), (5, len(SAMPLES) - 1)]
    assert model.rowCount() == len(SAMPLES)


def test_display_time_ways_back_in_and_escaping():
    model = ActivityModel()
    model.append([SAMPLES[7], {"type": "file", "op": "created", "path": "/tmp/\u202eevil\x1b[2J", "ts": TS}])
    way_back = model.index(0, ActivityModel.FLAGS)
    assert model.data(way_back).startswith(DANGER_MARK)
    assert model.data(way_back, Qt.ItemDataRole.FontRole).bold()
    assert model.data(way_back, Qt.ItemDataRole.BackgroundRole) is not None
    path = model.data(model.index(1, ActivityModel.WHAT))
    assert "\u202e" not in path and "\x1b" not in path and "\\u202e" in path
    tooltip = model.data(model.index(1, ActivityModel.WHAT), Qt.ItemDataRole.ToolTipRole)
    assert tooltip.startswith("<qt>") and "\x1b" not in tooltip
    assert len(model.data(model.index(0, ActivityModel.TIME)).split(":")) == 3
    assert model.data(QModelIndex()) is None


def test_oldest_rows_make_room_and_the_window_says_so(qtbot):
    model = ActivityModel(max_rows=100)
    window = ActivityWindow(model)
    qtbot.addWidget(window)
    for start in range(0, 250, 50):
        model.append([{"type": "note", "text": f"n{i}", "ts": TS} for i in range(start, start + 50)])
    assert model.rowCount() <= 100
    assert model.row(model.rowCount() - 1)[WHAT] == "n249"
    assert model.dropped == 250 - model.rowCount()
    assert "older rows left out" in window.count_label.text()


def test_filter_box_and_ways_back_in_only(qtbot):
    model = ActivityModel()
    window = ActivityWindow(model)
    qtbot.addWidget(window)
    window.show()
    model.append(SAMPLES)
    assert window.table.model() is model and window.proxy.sourceModel() is None   # no filter, no proxy
    assert window.shown_rows == len(SAMPLES)
    qtbot.keyClicks(window.filter_edit, "ETC/HOSTS")
    qtbot.waitUntil(lambda: window.shown_rows == 1)
    assert window.table.model() is window.proxy
    window.filter_edit.clear()
    window.apply_filter_now()
    assert window.table.model() is model and window.shown_rows == len(SAMPLES)
    window.only_danger.setChecked(True)
    view = window.table.model()
    kinds = {view.index(r, ActivityModel.KIND).data() for r in range(view.rowCount())}
    assert kinds == {"users added", "Remote-access tool"}
    model.append([{"type": "note", "text": "more", "ts": TS}, SAMPLES[7]])
    assert window.shown_rows == 3        # new rows are filtered as they arrive
    assert f"{len(SAMPLES) + 2} events" in window.count_label.text()
