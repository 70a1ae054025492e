"""What both scripts share: the user-error type and the top-level error handling.

Exit statuses: 0 success; 1 prediction finished but some files could not be
read; 2 a usage error (bad flag, path or folder layout); 3 multi-worker training
lost another worker (resumable); 130 interrupted.
"""

import contextlib
import importlib.util
import os
import sys


class UsageError(Exception):
    """Something the user can fix (a path, a flag, a folder layout); exit status 2."""


class WorkerLost(Exception):
    """Multi-worker training stopped because another worker went away; exit status 3 (resume with --resume)."""


def settings():
    """config.py, where every default lives, beside this package (in the repository and once installed): loaded by
    its path, so that a notebook's own config.py is never taken for it."""
    name = "imgclf_config"
    if name not in sys.modules:
        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config.py")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # before it runs: its dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules[name]


def quiet_tensorflow():
    """Imports TensorFlow and Keras without their start-up log lines.

    TensorFlow 2.21 prints oneDNN and absl notices straight to file descriptor 2
    while it loads, whatever TF_CPP_MIN_LOG_LEVEL says.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with native_stderr_silenced():
        import keras  # noqa: F401
        import tensorflow  # noqa: F401


def reason(error, first=False):
    """An exception's message in one short line: its last line (or `first`), else its type's name."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return lines[0 if first else -1][:300]


@contextlib.contextmanager
def native_stderr_silenced():
    """Points file descriptor 2 at /dev/null meanwhile: for C++ code that logs there (TensorFlow, the
    LiteRT converter). Python exceptions are unaffected."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class _ClosedPipeProof:
    """Standard output that keeps working when its reader goes away (`python predict.py | head`).

    Once a write fails with a broken pipe, the rest of the output goes to /dev/null,
    so the model and the CSV are still written and the exit status is unchanged.
    """

    def __init__(self, stream):
        self._stream = stream

    def _silence(self):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())
        os.close(devnull)

    def write(self, text):
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._silence()
            return len(text)

    def flush(self):
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._silence()

    def __getattr__(self, name):
        return getattr(self._stream, name)


def run(main):
    """Runs `main()`, turning user errors into one line on stderr and an exit status."""
    if not isinstance(sys.stdout, _ClosedPipeProof):
        sys.stdout = _ClosedPipeProof(sys.stdout)
    try:
        status = main()
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        status = 2
    except WorkerLost as error:
        print(f"error: {error}", file=sys.stderr)
        # TensorFlow's exit handlers would wait minutes for the lost worker to say goodbye.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(3)
    except KeyboardInterrupt as interrupt:
        print(f"interrupted: {str(interrupt) or 'nothing was overwritten.'}", file=sys.stderr)
        status = 130
    sys.stdout.flush()
    sys.exit(status or 0)
