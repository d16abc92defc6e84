"""Training progress: a bar redrawn in place on a terminal, a line per fifth of the
epochs in a log, other messages as they are."""

from __future__ import annotations

import io

from serve_ml.bundles.progress import ProgressPrinter


def _feed(tty: bool) -> str:
    out = io.StringIO()
    p = ProgressPrinter(out, tty=tty)
    p("building x from y")
    for e in range(1, 11):
        p(f"  [thermal] epoch {e}/10 loss {1 / e:.5f}")
    p("wrote x")
    return out.getvalue()


def test_a_terminal_gets_one_bar_redrawn_in_place() -> None:
    text = _feed(tty=True)
    assert text.count("\r") == 10 and text.count("\n") == 3  # the two messages and the finished bar
    last = text.split("\r")[-1]
    assert last.startswith("  [thermal] " + "█" * 30 + " 10/10 loss 0.10000\n")
    assert "███░" in text.split("\r")[1] and " 1/10 " in text.split("\r")[1]


def test_a_log_gets_a_line_per_fifth_of_the_epochs() -> None:
    lines = _feed(tty=False).splitlines()
    assert "\r" not in "".join(lines)
    assert [ln.split(" loss")[0].strip() for ln in lines[1:-1]] == [
        f"[thermal] epoch {e}/10" for e in (1, 2, 4, 6, 8, 10)]
    assert lines[0] == "building x from y" and lines[-1] == "wrote x"
