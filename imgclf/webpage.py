"""report.html: one self-contained page per run (pictures embedded, no network, opens from disk).

Plain HTML and CSS made from the run's own figures: the summary, class balance,
scores per class, the plots already written as PNGs, the top losses with their
Grad-CAM, suspect labels, duplicates and skipped files. `Page` holds what one
page shows; `write` renders it.
"""

import base64
import dataclasses
import html
import io

import numpy as np
from PIL import Image

from imgclf import artifacts, report

SHOWN_PAIRS = 40  # duplicate pairs pictured on the page; the CSV lists all of them
SHOWN_SUSPECTS = 40
SHOWN_SKIPPED = 100

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1d2430;
       background: #f4f6f9; }
header { background: #1d2a3a; color: #fff; padding: 18px 32px; }
header h1 { margin: 0; font-size: 22px; } header p { margin: 4px 0 0; color: #b8c4d4; }
main { max-width: 1180px; margin: 0 auto; padding: 16px 32px 48px; }
section { background: #fff; border-radius: 8px; padding: 16px 22px; margin: 16px 0; box-shadow: 0 1px 3px #0002; }
h2 { font-size: 18px; margin: 0 0 10px; } h3 { font-size: 15px; margin: 14px 0 6px; }
.note { color: #5b6574; margin: 4px 0 10px; }
.warn { background: #fff4e0; border-left: 4px solid #e69a10; padding: 8px 12px; margin: 8px 0; }
table { border-collapse: collapse; margin: 6px 0; } td, th { padding: 4px 12px 4px 0; text-align: left; }
th { font-weight: 600; border-bottom: 1px solid #d5dbe3; } td.n, th.n { text-align: right; }
.kv td:first-child { color: #5b6574; padding-right: 24px; }
.bar { display: inline-block; height: 10px; background: #4a7fc1; border-radius: 2px; vertical-align: middle; }
.plots { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
figure { margin: 0; }
figure img { height: 340px; width: auto; max-width: 100%; object-fit: contain; border: 1px solid #e3e7ed; }
.scores { display: grid; grid-template-columns: repeat(auto-fit, minmax(440px, 1fr)); gap: 8px 32px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr)); gap: 12px; }
.card { border: 1px solid #e3e7ed; border-radius: 6px; overflow: hidden; font-size: 13px; }
.card img { width: 100%; display: block; } .card div { padding: 6px 8px; word-break: break-all; }
.wrong { color: #b3261e; font-weight: 600; } .right { color: #1e7b34; font-weight: 600; }
.pair img { width: 96px; height: 96px; vertical-align: middle; margin-right: 4px; }
code { font-size: 13px; word-break: break-all; }
"""


@dataclasses.dataclass
class Page:
    """What one report page shows; empty parts are left out."""

    title: str
    subtitle: str
    summary: list  # (name, value) rows
    warnings: list = dataclasses.field(default_factory=list)  # lines shown at the top
    class_names: list = dataclasses.field(default_factory=list)
    balance: dict = dataclasses.field(default_factory=dict)  # {part: images per class}
    scores: list = dataclasses.field(default_factory=list)  # (heading, confusion counts, extra lines)
    plots: list = dataclasses.field(default_factory=list)  # (caption, PNG file)
    losses: list = dataclasses.field(default_factory=list)  # dicts: image, path, part, true, predicted, confidence
    losses_note: str = ""
    suspects: list = dataclasses.field(default_factory=list)  # dicts: image, path, part, label, suggested, ...
    suspects_note: str = ""
    copies: list = dataclasses.field(default_factory=list)  # dicts: image, other_image, path, other_path, kind, ...
    copies_note: str = ""
    skipped: list = dataclasses.field(default_factory=list)  # (path, reason)
    recipes: list = dataclasses.field(default_factory=list)  # leaderboard rows: recipe, network, accuracy, ...


def write(page, path):
    """Renders `page` into the HTML file `path` (written whole or not at all)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_text(page.title)}</title><style>{STYLE}</style></head><body>",
        f"<header><h1>{_text(page.title)}</h1><p>{_text(page.subtitle)}</p></header><main>",
        _summary(page),
        _recipes(page),
        _balance(page),
        _scores(page),
        _plots(page),
        _losses(page),
        _suspects(page),
        _copies(page),
        _skipped(page),
        "</main></body></html>",
    ]
    artifacts.write_text(path, "\n".join(part for part in parts if part) + "\n")


def picture(pixels, width=None, quality=85):
    """An `<img>` of a uint8 image array, embedded as a JPEG."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, np.uint8)).save(buffer, "JPEG", quality=quality)
    return _img("image/jpeg", buffer.getvalue(), width)


def _img(mime, content, width=None, alt=""):
    size = f' width="{width}"' if width else ""
    encoded = base64.b64encode(content).decode("ascii")
    return f'<img src="data:{mime};base64,{encoded}" alt="{_text(alt)}"{size}>'


def _text(value):
    return html.escape(str(value))


def _section(heading, body, note=""):
    note = f'<p class="note">{note}</p>' if note else ""
    return f"<section><h2>{_text(heading)}</h2>{note}{body}</section>"


def _table(header, rows, numeric=(), css=""):
    """A table of `rows` (cells already HTML); the columns in `numeric` are right-aligned."""

    def cells(tag, values):
        return "".join(
            f'<{tag} class="n">{value}</{tag}>' if i in numeric else f"<{tag}>{value}</{tag}>"
            for i, value in enumerate(values)
        )

    head = f"<thead><tr>{cells('th', [_text(h) for h in header])}</tr></thead>" if header else ""
    body = "".join(f"<tr>{cells('td', row)}</tr>" for row in rows)
    css = f' class="{css}"' if css else ""
    return f"<table{css}>{head}<tbody>{body}</tbody></table>"


def _summary(page):
    warnings = "".join(f'<div class="warn">{_text(line)}</div>' for line in page.warnings)
    rows = [[_text(name), _text(value)] for name, value in page.summary]
    return _section("Summary", warnings + _table([], rows, css="kv"))


def _recipes(page):
    if len(page.recipes) < 2:
        return ""
    rows = [
        [_text(row["recipe"]), _text(row["network"])]
        + (
            [f"{row['accuracy']:.2%}", f"{row['balanced_accuracy']:.2%}", f"{row['loss']:.3f}", f"{row['seconds']:.0f}"]
            if "accuracy" in row
            else ["-"] * 4
        )
        + [_text(row["outcome"])]
        for row in page.recipes
    ]
    header = ["recipe", "network", "accuracy", "balanced accuracy", "loss", "seconds", "outcome"]
    note = "Each recipe tried, scored on the validation images (the test images never choose)."
    return _section("Recipes tried", _table(header, rows, numeric=(2, 3, 4, 5)), note)


def _balance(page):
    if not page.balance:
        return ""
    parts = list(page.balance)
    peak = max(max(counts) for counts in page.balance.values()) or 1
    rows = []
    for index, name in enumerate(page.class_names):
        cells = [_text(name)]
        for part in parts:
            count = page.balance[part][index]
            cells.append(f'{count:,} <span class="bar" style="width:{round(120 * count / peak)}px"></span>')
        rows.append(cells)
    counts = np.array([page.balance[part] for part in parts])
    ratio = counts[0].max() / max(1, counts[0].min())
    note = f"The largest class has {ratio:.1f}x the images of the smallest in {parts[0]}."
    return _section("Class balance", _table(["class", *parts], rows), note)


def _scores(page):
    blocks = []
    for heading, counts, lines in page.scores:
        precision, recall, f1, support = report.per_class_metrics(counts)
        rows = [
            [_text(name), f"{precision[i]:.3f}", f"{recall[i]:.3f}", f"{f1[i]:.3f}", f"{support[i]:,}"]
            for i, name in enumerate(page.class_names)
        ]
        matrix = [[_text(name), *(f"{count:,}" for count in counts[i])] for i, name in enumerate(page.class_names)]
        listed = "".join(f"<li>{_text(line)}</li>" for line in lines)
        blocks.append(
            f"<h3>{_text(heading)}</h3><ul>{listed}</ul>"
            + _table(["class", "precision", "recall", "F1", "images"], rows, numeric=(1, 2, 3, 4))
            + "<p class=note>Confusion matrix: rows are the true class, columns the predicted class.</p>"
            + _table(["true \\ predicted", *page.class_names], matrix, numeric=tuple(range(1, len(counts) + 1)))
        )
    return (
        _section("Scores", f'<div class="scores">{"".join(f"<div>{block}</div>" for block in blocks)}</div>')
        if blocks
        else ""
    )


def _plots(page):
    shown = []
    for caption, path in page.plots:
        with open(path, "rb") as handle:
            picture_tag = _img("image/png", handle.read(), alt=caption)
        shown.append(f"<figure>{picture_tag}<figcaption>{_text(caption)}</figcaption></figure>")
    return _section("Plots", f'<div class="plots">{"".join(shown)}</div>') if shown else ""


def _card(record, caption):
    """A picture with its caption (HTML) and its path."""
    path = _text(record["path"])
    return (
        f'<div class="card" title="{path}">{picture(record["image"])}<div>{caption}<br><code>{path}</code></div></div>'
    )


def _losses(page):
    if not page.losses:
        return ""
    cards = [
        _card(
            loss,
            f'<span class="{"right" if loss["true"] == loss["predicted"] else "wrong"}">{_text(loss["predicted"])} '
            f"{loss['confidence']:.1%}</span>, truly {_text(loss['true'])} ({_text(loss['part'])})",
        )
        for loss in page.losses
    ]
    return _section("Top losses", f'<div class="cards">{"".join(cards)}</div>', _text(page.losses_note))


def _suspects(page):
    if not page.suspects and not page.suspects_note:
        return ""
    cards = [
        _card(
            suspect,
            f"labeled <b>{_text(suspect['label'])}</b> ({suspect['probability_of_label']:.1%}); looks like "
            f'<span class="wrong">{_text(suspect["suggested"])}</span> ({suspect["probability_of_suggested"]:.1%})',
        )
        for suspect in page.suspects[:SHOWN_SUSPECTS]
    ]
    return _section("Possible label errors", f'<div class="cards">{"".join(cards)}</div>', _text(page.suspects_note))


def _copies(page):
    if not page.copies and not page.copies_note:
        return ""
    rows = [
        [
            f'<span class="pair">{picture(copy["image"])}{picture(copy["other_image"])}</span>',
            f"<code>{_text(copy['path'])}</code> ({_text(copy['part'])})<br>copy of "
            f"<code>{_text(copy['other_path'])}</code> ({_text(copy['other_part'])})",
            f"{_text(copy['kind'])}, {copy['similarity']:.0%}",
        ]
        for copy in page.copies[:SHOWN_PAIRS]
    ]
    table = _table(["images", "files", "kind, similarity"], rows) if rows else ""
    return _section("Duplicates", table, _text(page.copies_note))


def _skipped(page):
    if not page.skipped:
        return ""
    rows = [[f"<code>{_text(path)}</code>", _text(reason)] for path, reason in page.skipped[:SHOWN_SKIPPED]]
    more = len(page.skipped) - SHOWN_SKIPPED
    note = f"{len(page.skipped)} file(s) could not be read and were left out"
    note += f"; the first {SHOWN_SKIPPED} are shown." if more > 0 else "."
    return _section("Skipped files", _table(["file", "reason"], rows), note)
