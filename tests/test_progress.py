"""The progress bar: drawn in place on a terminal, silent elsewhere (the caller prints one summary line)."""

import io

from imgclf import progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_terminal_sees_a_bar_with_rate_and_time_left(monkeypatch):
    monkeypatch.setattr(progress, "UPDATE_SECONDS", 0.0)
    screen = Terminal()
    bar = progress.Progress(200, "images", stream=screen)
    for _ in range(4):
        bar.advance(50)
    bar.close()
    lines = screen.getvalue().split("\r")[1:]
    assert len(lines) == 4 and lines[0].startswith("[######.................") and "50/200 images" in lines[0]
    assert lines[-1].startswith("[" + "#" * progress.BAR_WIDTH + "] 200/200 images")
    assert all("images/s" in line and "left" in line for line in lines) and screen.getvalue().endswith("\n")


def test_a_log_file_and_a_few_items_get_no_bar():
    log, screen = io.StringIO(), Terminal()
    for stream, total in ((log, 500), (screen, progress.MIN_ITEMS - 1)):
        bar = progress.Progress(total, stream=stream)
        bar.advance(total)
        bar.close()
        assert not bar.live and stream.getvalue() == ""


def test_durations_read_naturally():
    assert progress.duration(65) == "1m05s" and progress.duration(7380) == "2h03m"
