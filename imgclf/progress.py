"""A progress bar for the long passes (decoding every image, labeling a folder), on a terminal only."""

import sys
import time

UPDATE_SECONDS = 0.5  # how often the bar is redrawn
MIN_ITEMS = 50  # fewer items than this: no bar
BAR_WIDTH = 24


class Progress:
    """One line that updates in place on a terminal: a bar, the count, the rate and the time left.

    `live` is False when the stream is not a terminal (a log file, a pipe, CI) or
    there are few items; then nothing is drawn, and the caller prints its one
    summary line when the pass ends.
    """

    def __init__(self, total, unit="images", stream=None):
        self.stream = stream or sys.stderr
        self.total, self.unit, self.count, self.started, self.shown = total, unit, 0, time.time(), 0.0
        self.live = total >= MIN_ITEMS and self.stream.isatty()

    def advance(self, count):
        self.count += count
        now = time.time()
        if self.live and (now - self.shown > UPDATE_SECONDS or self.count >= self.total):
            self.shown = now
            rate = self.count / max(now - self.started, 1e-9)
            left = (self.total - self.count) / rate if rate else 0
            filled = round(BAR_WIDTH * self.count / max(self.total, 1))
            self.stream.write(
                f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {self.count:,}/{self.total:,} {self.unit}  "
                f"{rate:.0f} {self.unit}/s  {duration(left)} left   "
            )
            self.stream.flush()

    def rate(self):
        """Items per second so far."""
        return self.count / max(time.time() - self.started, 1e-9)

    def close(self):
        if self.live and self.count:
            self.stream.write("\n")
            self.stream.flush()


def duration(seconds):
    """`1m05s`, or `2h03m` from an hour on."""
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"
