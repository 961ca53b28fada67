"""The Qt bindings must not lose references: PySide6 6.12.0 on Python 3.11 does, and the tray would abort."""

from ui.compat import bindings_leak_references, bindings_problem


def test_qt_bindings_keep_reference_counts():
    assert not bindings_leak_references(), bindings_problem()
    assert bindings_problem() is None
