"""What the benchmarks share: where the photos are, running the product's scripts, describing the machine."""

import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED_PHOTOS = ROOT.parent / "shared" / "datasets" / "cats_dogs"
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))


def photos_dir():
    """The shared cats and dogs photos, or exit with a clear message when they are not beside the repository."""
    path = pathlib.Path(os.environ.get("BENCH_DATA", SHARED_PHOTOS))
    if not (path / "Training_Set").is_dir():
        sys.exit(f"bench: {path}/Training_Set not found. Set BENCH_DATA to a folder in the Dataset layout.")
    return path


def run_script(script, *args, root=ROOT):
    """Runs train_cnn.py or predict.py in a child process.

    Returns:
        (wall seconds, output, peak RSS of that child in MB). Exits if the script fails.
    """
    # A child's peak RSS as wait4 reports it starts from this process's own (Linux carries it over fork and exec):
    # GNU time forks the script from a small process instead, and reports the script's own peak.
    timer = ["/usr/bin/time", "-f", "%M", "-o"] if os.path.exists("/usr/bin/time") else None
    with tempfile.TemporaryFile("w+") as log, tempfile.NamedTemporaryFile("r") as peak:
        started = time.time()
        command = [sys.executable, str(pathlib.Path(root) / script), *map(str, args)]
        process = subprocess.Popen(
            [*timer, peak.name, *command] if timer else command, stdout=log, stderr=subprocess.STDOUT, cwd=root
        )
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.time() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        output = log.read()
        kilobytes = int(peak.read().split()[-1]) if timer else usage.ru_maxrss
    if process.returncode not in (0, 1):
        sys.exit(f"bench: {script} failed ({process.returncode}):\n{output[-3000:]}")
    return seconds, output, kilobytes / 1024


def read_metadata(model_dir):
    return json.loads((pathlib.Path(model_dir) / "metadata.json").read_text())


def machine():
    """One line: CPU model, core count, Python, TensorFlow and Keras versions."""
    from imgclf import cli

    cli.quiet_tensorflow()
    import keras
    import tensorflow as tf

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as handle:
            lines = handle.readlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
        flags = next(line for line in lines if line.startswith("flags")).split()
        cpu += ", with AMX" if "amx_bf16" in flags else ", without AMX"
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}"
    )


def table(rows, headers):
    """A Markdown table as text."""
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
