"""report.html: its structure, suspect labels and top losses, and the page as a real browser draws it."""

import csv
import html.parser
import os
import shutil
import subprocess

import numpy as np
import pytest
from conftest import class_image, run_script, write_class_tree
from PIL import Image

MISLABELED = {"b_filed_as_a.png": ("a", "b"), "a_filed_as_b.png": ("b", "a")}  # name: (folder, true class)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A pretrained model trained on stripes (a: horizontal, b: vertical), with a 'b' image filed under 'a' and an
    'a' image under 'b'."""
    root = tmp_path_factory.mktemp("report")
    data_dir = root / "Dataset"
    write_class_tree(data_dir / "Training_Set", ["a", "b"], per_class=24, size=64)
    write_class_tree(data_dir / "Validation_Set", ["a", "b"], per_class=6, size=64, start_seed=500)
    write_class_tree(data_dir / "Test_Set", ["a", "b"], per_class=6, size=64, start_seed=700)
    for name, (folder, true_class) in MISLABELED.items():
        class_image("ab".index(true_class), 900, 64).save(data_dir / "Training_Set" / folder / name)
    (data_dir / "Training_Set" / "b" / "broken.jpg").write_bytes(b"not an image")
    result = run_script("train_cnn.py", "--data-dir", data_dir, "--model-dir", root / "m", "--image-size", "64")
    assert result.returncode == 0, result.stderr
    return root, result


class Structure(html.parser.HTMLParser):
    """The headings, pictures and links of a page."""

    def __init__(self):
        super().__init__()
        self.headings, self.images, self.links, self.cards, self._heading = [], [], [], 0, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self._heading = tag == "h2"
        if tag == "img":
            self.images.append(attrs["src"])
        if "href" in attrs or ("src" in attrs and tag != "img"):
            self.links.append(attrs.get("href") or attrs["src"])
        if tag == "div" and attrs.get("class") == "card":
            self.cards += 1

    def handle_data(self, data):
        if self._heading:
            self.headings.append(data)
            self._heading = False


def _structure(path):
    parser = Structure()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_training_writes_one_self_contained_page_with_every_section(trained):
    root, _ = trained
    page = _structure(root / "m" / "report.html")
    assert page.headings == [
        "Summary", "Recipes tried", "Class balance", "Scores", "Plots", "Top losses", "Possible label errors",
        "Duplicates", "Skipped files",
    ]  # fmt: skip
    assert page.images and all(
        src.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for src in page.images
    )
    assert page.links == []  # nothing to fetch: no network, opens from disk
    text = (root / "m" / "report.html").read_text(encoding="utf-8")
    assert "broken.jpg" in text and "efficientnet_lite0" in text and "Test_Set" in text


def test_top_losses_are_the_held_out_images_with_the_highest_loss(trained):
    root, _ = trained
    rows = _rows(root / "m" / "top_losses.csv")
    held_out = sum(1 for row in _rows(root / "m" / "splits.csv") if row["split"] in ("validation", "test"))
    assert len(rows) == min(16, held_out) and {row["part"] for row in rows} <= {"validation", "test"}
    losses = [float(row["loss"]) for row in rows]
    assert losses == sorted(losses, reverse=True)
    for row in rows:
        assert float(row["loss"]) == pytest.approx(-np.log(max(float(row["probability_of_true"]), 1e-7)), abs=1e-3)


def test_suspect_labels_find_the_misfiled_images(trained):
    root, result = trained
    rows = _rows(root / "m" / "suspect_labels.csv")
    found = {os.path.basename(row["path"]): row for row in rows}
    assert set(MISLABELED) <= set(found), rows
    for name, (folder, true_class) in MISLABELED.items():
        assert found[name]["label"] == folder and found[name]["suggested_label"] == true_class
        assert found[name]["judged_by"] == "out of fold (5 folds)" and float(found[name]["probability_of_label"]) <= 0.1
    assert len(rows) <= len(MISLABELED) + 2  # the clean stripes are not accused
    assert "Possible label errors: " in result.stdout


def test_evaluate_writes_a_page_beside_its_csv(trained, tmp_path):
    root, _ = trained
    result = run_script(
        "predict.py", "--model-dir", root / "m", "--input", root / "Dataset" / "Test_Set", "--evaluate",
        "--output", tmp_path / "p.csv",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    page = _structure(tmp_path / "p_report.html")
    assert page.headings == ["Summary", "Class balance", "Scores", "Plots", "Top losses"]
    assert page.cards == len(_rows(tmp_path / "p_top_losses.csv")) == 12
    assert page.links == []


def test_predict_explain_writes_one_overlay_per_labeled_image(trained, tmp_path):
    root, _ = trained
    write_class_tree(tmp_path / "photos" / "more", ["b"], per_class=2, size=64, start_seed=300)
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"not an image")
    result = run_script(
        "predict.py", "--model-dir", root / "m", "--input", tmp_path / "photos", "--output", tmp_path / "p.csv",
        "--explain", tmp_path / "why",
    )  # fmt: skip
    assert result.returncode == 1  # the broken file
    written = sorted(path.relative_to(tmp_path / "why").as_posix() for path in (tmp_path / "why").rglob("*.png"))
    assert written == ["more/b/img_0.jpg.png", "more/b/img_1.png.png"]
    overlay = np.asarray(Image.open(tmp_path / "why" / written[0]))
    assert overlay.shape[0] > 224 and overlay.shape[1] == 224 and overlay.std() > 10
    assert f"Grad-CAM overlays written to {tmp_path / 'why'}/ (red:" in result.stdout


def _chromium():
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.environ.get("CI"):
        pytest.fail("chromium is not installed: .ci/run installs it (apt-get install chromium)")
    if found is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


PROBE = (
    "<script>window.addEventListener('load', () => { const all = [...document.images]; "
    "const drawn = all.filter(image => image.complete && image.naturalWidth > 0); "
    "document.title = `pictures drawn: ${drawn.length} of ${all.length}`; });</script>"
)


def test_a_real_browser_draws_the_page_with_its_pictures(trained, tmp_path):
    root, _ = trained
    browser = _chromium()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,2400"]
    page = (root / "m" / "report.html").resolve()
    shot = tmp_path / "page.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB"), np.int64)
    assert pixels.shape[:2] == (2400, 1280)
    assert len(np.unique(pixels.reshape(-1, 3) // 8, axis=0)) > 150  # text, plots and photos: not a blank page
    # The training curves are drawn: matplotlib's blue and orange lines are on the screen.
    for colour in ((31, 119, 180), (255, 127, 14)):
        assert (np.abs(pixels - colour).sum(axis=2) < 30).sum() > 200, colour
    # Every picture on the page decodes (a page with the probe script added, in a copy).
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = subprocess.run(
        [browser, *flags, "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    count = len(_structure(page).images)
    assert f"<title>pictures drawn: {count} of {count}</title>" in dom
