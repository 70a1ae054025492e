"""Fixing the data that training flagged: the suspect labels and duplicate pairs of a model folder, and moves of
their files to another class folder or into `_set_aside/`, inside the data folder only, logged and undoable.

The app's review page (`serve.py`) calls this; nothing here writes the model folder or deletes a file.
"""

import csv
import datetime
import json
import os
import shlex
import threading

from imgclf import cli
from imgclf.cli import UsageError

SET_ASIDE = "_set_aside"  # inside the data folder: files taken out of training, never deleted
LOG_FILE = "review_log.jsonl"  # inside the data folder: one JSON line per move and per undo
# training settings that the retrain command does not repeat: where it runs, and what --resume and the folders say
RETRAIN_LEAVES = {"data_dir", "model_dir", "resume", "strategy", "workers", "worker_index"}


class Refused(UsageError):
    """A move that would touch something outside the data folder, or that the folder's state does not allow."""


def trained_on(metadata):
    """The data folder a model was trained on, as its metadata.json says (absolute since the review page came)."""
    return metadata.get("data_dir") or metadata.get("config", {}).get("data_dir")


class Review:
    """The suspects and duplicates of `model_dir` (whose metadata is `metadata`), their images in `data_dir`."""

    def __init__(self, model_dir, data_dir, metadata):
        self.model_dir, self.data_dir = os.path.realpath(model_dir), os.path.realpath(data_dir)
        if not os.path.isdir(self.data_dir):
            raise UsageError(f"--data-dir {data_dir}: folder not found (the review moves files inside it).")
        self.settings = metadata.get("config", {})  # training's, which wrote the flagged paths as it was given them
        self.log_file = os.path.join(self.data_dir, LOG_FILE)
        self._lock = threading.Lock()  # one move at a time: the log's order is the moves' order

    def items(self):
        """Training's flags (suspects, duplicates: each file's path relative to the data folder, its split and class
        folder), the actions so far (log, newest last), the class folders, and the command that retrains."""
        suspects = [
            {**row, **self._where(row["path"])} for row in _rows(os.path.join(self.model_dir, "suspect_labels.csv"))
        ]
        duplicates = [
            {**row, "first": self._where(row["path"]), "second": self._where(row["duplicate_of"])}
            for row in _rows(os.path.join(self.model_dir, "duplicates.csv"))
        ]
        return {
            "suspects": suspects,
            "duplicates": duplicates,
            "log": self.log(),
            "classes": self.classes(),
            "data_dir": self.data_dir,
            "log_file": self.log_file,
            "retrain": self.retrain_command(),
        }

    def retrain_command(self):
        """The command that trains again on the fixed data folder, into the same model folder, with the settings of
        the training that made it where they were not the defaults."""
        defaults = cli.settings().TrainConfig()
        flags = ["--data-dir", self.data_dir, "--model-dir", self.model_dir]
        for name, value in self.settings.items():
            if name in RETRAIN_LEAVES or value in (None, False) or value == getattr(defaults, name, value):
                continue
            flags += [f"--{name.replace('_', '-')}"] + ([] if value is True else [str(value)])
        return "python train_cnn.py " + " ".join(shlex.quote(flag) for flag in flags)

    def classes(self):
        """{split folder: its class folders}: where a file can be moved."""
        found = {}
        for split in sorted(os.listdir(self.data_dir)):
            folder = os.path.join(self.data_dir, split)
            if os.path.isdir(folder) and not split.startswith((".", "_")) and not self._holds_model(folder):
                found[split] = sorted(
                    name
                    for name in os.listdir(folder)
                    if os.path.isdir(os.path.join(folder, name)) and not name.startswith((".", "_"))
                )
        return {split: names for split, names in found.items() if names}  # Predict/ holds pictures, not classes

    def path_of(self, relative):
        """The real path of `relative` (a file inside the data folder), or Refused: outside it (`..`, an absolute
        path elsewhere, a link out), a link, or not a file."""
        if not isinstance(relative, str) or not relative or "\0" in relative:
            raise Refused("path: a file inside the data folder is needed.")
        joined = os.path.join(self.data_dir, relative)
        real = os.path.realpath(joined)
        if os.path.commonpath([real, self.data_dir]) != self.data_dir or real == self.data_dir:
            raise Refused(f"{relative}: outside the data folder; only its files can be moved.")
        if os.path.islink(joined):
            raise Refused(f"{relative}: a link; only the data folder's own files can be moved.")
        if self._holds_model(real):
            raise Refused(f"{relative}: in the model folder, which the review never touches.")
        if not os.path.isfile(real):
            raise Refused(f"{relative}: no such file in the data folder (moved or removed already?).")
        return real

    def move(self, relative, to):
        """Moves the file `relative` into its split's class folder `to`, or into `_set_aside/` (`to` = "_set_aside");
        returns the log entry."""
        with self._lock:
            source = self.path_of(relative)
            parts = os.path.relpath(source, self.data_dir).split(os.sep)
            if parts[0] == SET_ASIDE or len(parts) < 3:
                raise Refused(f"{relative}: not in a class folder (<split>/<class>/...); undo a move to put it back.")
            split, current, rest = parts[0], parts[1], parts[2:]
            if to == SET_ASIDE:
                target = os.path.join(self.data_dir, SET_ASIDE, split, current, *rest)
            elif to in self.classes().get(split, []) and to != current:
                target = os.path.join(self.data_dir, split, to, *rest)
            else:
                choices = [name for name in self.classes().get(split, []) if name != current] + [SET_ASIDE]
                what = f"{to!r} is not a class folder of {split}" if isinstance(to, str) else "a folder name is needed"
                raise Refused(f"to: {what} to move {relative} to; one of {choices}.")
            entry = {"action": "move", "from": self._relative(source), "to": self._relative(target)}
            return self._do(source, target, entry)

    def undo(self, index):
        """Moves the file of the log's entry `index` back where it was (and logs that too); returns the new entry."""
        with self._lock:
            log = self.log()
            moves = {entry["index"]: entry for entry in log if entry["action"] == "move"}
            if type(index) is not int or index not in moves:
                raise Refused(f"undo: no move numbered {index!r} in {LOG_FILE} (index: the number of a move there).")
            if any(entry.get("undoes") == index for entry in log):
                raise Refused(f"undo: move {index} was undone already.")
            move = moves[index]
            source, target = self.path_of(move["to"]), os.path.join(self.data_dir, move["from"])
            entry = {"action": "undo", "undoes": index, "from": move["to"], "to": move["from"]}
            done = self._do(source, target, entry)
            aside = os.path.join(self.data_dir, SET_ASIDE)
            folder = os.path.dirname(source)
            while folder.startswith(aside + os.sep) and not os.listdir(folder):  # no empty folders left set aside
                os.rmdir(folder)
                folder = os.path.dirname(folder)
            return done

    def log(self):
        """The actions so far, each with its number (`index`: its line in the log); a line that is not an action
        (edited by hand, cut short) is left out."""
        if not os.path.isfile(self.log_file):
            return []
        entries = []
        with open(self.log_file, encoding="utf-8") as handle:
            for n, line in enumerate(handle):
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and {"action", "from", "to"} <= set(entry):
                    entries.append({**entry, "index": n})
        return entries

    def _do(self, source, target, entry):
        real_parent = os.path.realpath(os.path.dirname(target))  # the log may have been edited: checked again
        if os.path.commonpath([real_parent, self.data_dir]) != self.data_dir or self._holds_model(real_parent):
            raise Refused(f"{entry['to']}: outside the data folder, or in the model folder.")
        taken = Refused(f"{entry['to']}: a file of that name is there already; nothing was moved.")
        if os.path.lexists(target):
            raise taken
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:  # a link, then the old name removed: never over a file that came meanwhile
            os.link(source, target)
        except FileExistsError:
            raise taken from None
        except OSError:  # a file system without hard links: a rename, within one folder tree
            os.rename(source, target)
        else:
            os.unlink(source)
        entry = {**entry, "time": datetime.datetime.now().isoformat(timespec="seconds")}
        with open(self.log_file, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return {**entry, "index": self.log()[-1]["index"]}

    def _holds_model(self, path):
        return os.path.commonpath([os.path.realpath(path), self.model_dir]) == self.model_dir

    def _relative(self, path):
        return os.path.relpath(path, self.data_dir).replace(os.sep, "/")

    def _where(self, path):
        """A flagged file's place: its path relative to the data folder, its split and class, whether it is there.
        A relative path is as training was given it: below its --data-dir, wherever this server started."""
        trained_as = self.settings.get("data_dir")
        if not os.path.isabs(path) and trained_as:
            below = os.path.relpath(os.path.normpath(path), os.path.normpath(trained_as))
            path = path if below.startswith("..") else os.path.join(self.data_dir, below)
        real = os.path.realpath(path)
        if os.path.commonpath([real, self.data_dir]) != self.data_dir:
            return {"relative": None, "exists": False}
        parts = self._relative(real).split("/")
        return {
            "relative": "/".join(parts),
            "split": parts[0],
            "folder": parts[1] if len(parts) > 2 else "",
            "exists": os.path.isfile(real),
        }


def _rows(path):
    if not os.path.isfile(path):
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))
