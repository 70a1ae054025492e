"""`predict.py --serve`: a real server on 127.0.0.1 around a real trained model. Its answers are predict.py's,
concurrent pictures are labeled together, every bad request gets its status and a one-line JSON error while the
server goes on, and the review moves files inside the data folder only, each move undoable, never touching the
model folder. The pages are driven in headless Chromium (Selenium and Debian's chromedriver)."""

import base64
import concurrent.futures
import csv
import hashlib
import http.client
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib

import pytest
from conftest import ROOT, _environment, class_image, run_script, write_class_tree

pytestmark = pytest.mark.slow

MISLABELED = {"b_filed_as_a.png": ("a", "b"), "a_filed_as_b.png": ("b", "a")}  # name: (folder, true class)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model trained on stripes (a: horizontal, b: vertical) with an image of each filed in the other's folder,
    and a copy of a training image."""
    root = tmp_path_factory.mktemp("serve")
    data = root / "Dataset"
    write_class_tree(data / "Training_Set", ["a", "b"], per_class=24, size=64)
    write_class_tree(data / "Validation_Set", ["a", "b"], per_class=6, size=64, start_seed=500)
    for name, (folder, true_class) in MISLABELED.items():
        class_image("ab".index(true_class), 900, 64).save(data / "Training_Set" / folder / name)
    shutil.copy(data / "Training_Set" / "a" / "img_1.png", data / "Training_Set" / "a" / "copy_of_img_1.png")
    # Relative folders, as a user types them: the review finds the flagged files from wherever the server starts.
    flags = ["--data-dir", "Dataset", "--model-dir", "models", "--image-size", "64", "--recipe", "features"]
    result = run_script("train_cnn.py", *flags, cwd=root)
    assert result.returncode == 0, result.stderr
    return root


class Server:
    """`predict.py --serve` in its own process on a free port of 127.0.0.1."""

    def __init__(self, *args, cwd, host="127.0.0.1"):
        with socket.socket() as probe:
            probe.bind((host, 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        command = [sys.executable, str(ROOT / "predict.py"), "--serve", "--host", host, "--port", str(self.port)]
        command += map(str, args)
        self.process = subprocess.Popen(
            command, cwd=cwd, env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            assert self.process.poll() is None, self.process.stdout.read()
            try:
                if request(self.url + "/")[0] == 200:
                    self.started = time.time()
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("the server did not answer within 2 minutes")

    def stop(self):
        self.process.terminate()
        return self.process.communicate(timeout=30)[0]


def request(url, body=None, headers=None, method=None):
    """(status, headers, body bytes) of one HTTP request, whatever the status."""
    message = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(message, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def post_json(url, payload, token=None):
    headers = {"Content-Type": "application/json", **({"X-Token": token} if token else {})}
    status, _, body = request(url, json.dumps(payload).encode(), headers)
    return status, json.loads(body)


@pytest.fixture(scope="module")
def server(trained):
    running = Server("--model-dir", trained / "models", "--max-upload-mb", "0.5", cwd=trained.parent)
    yield running
    running.stop()


def test_answers_are_predict_py_figures_for_raw_and_multipart_uploads(trained, server, tmp_path):
    pictures = sorted((trained / "Dataset" / "Validation_Set").rglob("*.*"))
    output = tmp_path / "p.csv"
    labeled = run_script(
        "predict.py", "--model-dir", trained / "models", "--input", *pictures, "--output", output, cwd=tmp_path
    )
    assert labeled.returncode == 0, labeled.stderr
    with open(output, newline="", encoding="utf-8") as handle:
        expected = {row["path"]: row for row in csv.DictReader(handle)}
    for n, picture in enumerate(pictures):
        data = picture.read_bytes()
        if n % 2:
            status, _, body = request(server.url + "/api/predict", data, {"Content-Type": "image/png"})
        else:
            boundary = "picture-boundary"
            multipart = (
                (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{picture.name}"\r\n'
                    f"Content-Type: application/octet-stream\r\n\r\n"
                ).encode()
                + data
                + f"\r\n--{boundary}--\r\n".encode()
            )
            headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
            status, _, body = request(server.url + "/api/predict", multipart, headers)
        assert status == 200, body
        answer, want = json.loads(body), expected[str(picture)]
        assert set(answer) == {"label", "confidence", "probabilities"}
        assert answer["label"] == want["label"]
        assert abs(answer["confidence"] - float(want["confidence"])) < 1e-4
        assert all(abs(p - float(want[f"prob_{name}"])) < 1e-4 for name, p in answer["probabilities"].items())


def test_concurrent_clients_are_labeled_together(trained, server):
    data = (trained / "Dataset" / "Validation_Set" / "a" / "img_1.png").read_bytes()

    def one(_):
        status, headers, body = request(server.url + "/api/predict", data)
        return status, int(headers["X-Batch"]), json.loads(body)["label"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(64)))
    assert {status for status, _, _ in answers} == {200}
    assert len({label for _, _, label in answers}) == 1
    assert max(batch for _, batch, _ in answers) > 1  # some went together


def _bomb_png():
    """A valid PNG header declaring 20000 x 20000 pixels (400 million), with almost no data."""
    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + header
    ihdr = struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    data = b"IDAT" + zlib.compress(b"\0" * 100)
    idat = struct.pack(">I", len(data) - 4) + data + struct.pack(">I", zlib.crc32(data))
    return b"\x89PNG\r\n\x1a\n" + ihdr + idat


def _oversized(port, size):
    """(status, body) of a POST that declares `size` bytes and sends a few of them."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(
            f"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {size}\r\n\r\n".encode() + b"\0" * 1000
        )
        response = http.client.HTTPResponse(connection)
        response.begin()
        return response.status, response.read()


def test_bad_requests_get_a_status_and_a_one_line_error_and_the_server_goes_on(trained, server):
    picture = (trained / "Dataset" / "Validation_Set" / "b" / "img_1.png").read_bytes()
    # Over the limit: the server answers as soon as it reads the length, without reading the body (a client that
    # is still sending it then finds the connection closed), so the request is written by hand.
    status, answer = _oversized(server.port, 600_000)
    assert status == 413 and "at most 0.5 MB, --max-upload-mb) is over the limit" in json.loads(answer)["error"]
    cases = [
        (b"this is not a picture", 415, "not an image file"),
        (_bomb_png(), 400, "decompression bomb"),
        (picture[: len(picture) // 2], 400, "damaged"),
        (b"", 400, "empty body"),
    ]
    for body, status, message in cases:
        got, headers, answer = request(server.url + "/api/predict", body, method="POST")
        error = json.loads(answer)["error"]
        assert (got, headers["Content-Type"]) == (status, "application/json"), answer
        assert message in error and "\n" not in error
    form = {"Content-Type": "multipart/form-data; boundary=x"}
    no_file = b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--x--\r\n'
    status, _, answer = request(server.url + "/api/predict", no_file, form)
    assert status == 400 and "'file' field" in json.loads(answer)["error"]
    chunked = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)  # no Content-Length
    chunked.request("POST", "/api/predict", body=iter([picture]), encode_chunked=True)
    response = chunked.getresponse()
    assert response.status == 411 and "Content-Length" in json.loads(response.read())["error"]
    for path, method, status in (("/api/nothing-here", "GET", 404), ("/api/predict", "GET", 405)):
        got, headers, answer = request(server.url + path, method=method)
        assert (got, headers["Content-Type"]) == (status, "application/json") and json.loads(answer)["error"]
    status, _, answer = request(server.url + "/api/review", headers={"Host": "attacker.example"})  # DNS rebinding
    assert status == 400 and "not this app's name" in json.loads(answer)["error"]
    status, _, answer = request(server.url + "/api/move", b'{"path": "x", "to": "b"}', {"Content-Type": "text/plain"})
    assert status == 415 and "application/json" in json.loads(answer)["error"]  # what another site's form could send
    assert request(server.url + "/api/predict", picture)[0] == 200  # still serving
    assert server.process.poll() is None


def _tree_digest(folder):
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_review_moves_files_inside_the_data_folder_only_and_undoes_them(trained, tmp_path):
    data, models = trained / "Dataset", trained / "models"
    outside = tmp_path / "outside.png"
    class_image(0, 1, 32).save(outside)
    os.symlink(outside, data / "Training_Set" / "a" / "link_out.png")
    before = _tree_digest(models)
    server = Server("--model-dir", models, "--token", "secret-token", cwd=tmp_path)
    try:
        status, items = 0, {}
        status, _, body = request(server.url + "/api/review", headers={"X-Token": "secret-token"})
        items = json.loads(body)
        assert status == 200 and items["data_dir"] == str(data.resolve())
        flagged = {row["relative"]: row for row in items["suspects"]}
        assert "Training_Set/a/b_filed_as_a.png" in flagged, flagged
        assert flagged["Training_Set/a/b_filed_as_a.png"]["suggested_label"] == "b"
        assert any("copy_of_img_1.png" in row["first"]["relative"] + row["second"]["relative"]
                   for row in items["duplicates"])  # fmt: skip
        move = {"path": "Training_Set/a/b_filed_as_a.png", "to": "b"}
        assert post_json(server.url + "/api/move", move)[0] == 403  # no token
        assert post_json(server.url + "/api/move", move, "sécret")[0] == 403
        assert request(server.url + "/api/image?path=Training_Set%2Fb%2Fimg_1.png")[0] == 403
        status, entry = post_json(server.url + "/api/move", move, "secret-token")
        assert status == 200, entry
        assert not (data / "Training_Set" / "a" / "b_filed_as_a.png").exists()
        assert (data / "Training_Set" / "b" / "b_filed_as_a.png").is_file()
        status, aside = post_json(server.url + "/api/move", {"path": "Training_Set/a/copy_of_img_1.png",
                                                             "to": "_set_aside"}, "secret-token")  # fmt: skip
        assert status == 200 and (data / "_set_aside" / "Training_Set" / "a" / "copy_of_img_1.png").is_file()
        assert post_json(server.url + "/api/undo", {"index": entry["index"]}, "secret-token")[0] == 200
        assert (data / "Training_Set" / "a" / "b_filed_as_a.png").is_file()
        assert not (data / "Training_Set" / "b" / "b_filed_as_a.png").exists()
        assert post_json(server.url + "/api/undo", {"index": entry["index"]}, "secret-token")[0] == 400  # twice
        assert post_json(server.url + "/api/undo", {"index": aside["index"]}, "secret-token")[0] == 200
        assert (data / "Training_Set" / "a" / "copy_of_img_1.png").is_file()
        refused = [
            {"path": "../outside.png", "to": "b"},
            {"path": str(outside), "to": "b"},
            {"path": "Training_Set/a/link_out.png", "to": "b"},
            {"path": "Training_Set/a/img_1.png", "to": "../../escaped"},
            {"path": "Training_Set/a/img_1.png", "to": "a"},
            {"path": "Training_Set/../../models/model.h5", "to": "b"},
            {"path": ["not", "a", "path"], "to": "b"},
        ]
        for payload in refused:
            status, answer = post_json(server.url + "/api/move", payload, "secret-token")
            assert status == 400 and answer["error"], (payload, answer)
        token = {"X-Token": "secret-token"}
        status, _, _ = request(server.url + "/api/image?path=..%2F..%2Fetc%2Fpasswd", headers=token)
        assert status == 400
        status, headers, thumbnail = request(server.url + "/api/image?path=Training_Set%2Fb%2Fimg_1.png", headers=token)
        assert status == 200 and headers["Content-Type"] == "image/png" and thumbnail.startswith(b"\x89PNG")
        log = [json.loads(line) for line in (data / "review_log.jsonl").read_text().splitlines()]
        assert [entry["action"] for entry in log] == ["move", "move", "undo", "undo"]
        assert outside.is_file() and (data / "Training_Set" / "a" / "link_out.png").is_symlink()
    finally:
        server.stop()
        (data / "Training_Set" / "a" / "link_out.png").unlink()
    assert _tree_digest(models) == before  # the server never writes the model folder


def test_a_port_in_use_and_a_missing_data_folder_are_one_line_and_status_2(trained, server, tmp_path):
    taken = run_script("predict.py", "--serve", "--port", server.port, "--model-dir", trained / "models")
    assert taken.returncode == 2 and "Serving" not in taken.stdout
    assert taken.stderr.strip().splitlines() == [
        f"error: --host 127.0.0.1 --port {server.port}: cannot listen there (Address already in use). Choose "
        "another --port, or a --host of this machine."
    ]
    missing = run_script("predict.py", "--serve", "--model-dir", trained / "models", "--data-dir", tmp_path / "nope")
    assert missing.returncode == 2 and "--data-dir" in missing.stderr and "folder not found" in missing.stderr


def test_the_review_never_touches_a_model_folder_inside_the_data_folder(trained):
    from imgclf import review

    data = trained / "Dataset"
    inside = data / "models"
    shutil.copytree(trained / "models", inside)
    try:
        checker = review.Review(inside, data, json.loads((inside / "metadata.json").read_text()))
        assert "models" not in checker.classes() and "Training_Set" in checker.classes()
        with pytest.raises(review.Refused, match="in the model folder"):
            checker.move("models/model.h5", review.SET_ASIDE)
        command = checker.retrain_command()
        assert command.startswith(f"python train_cnn.py --data-dir {data.resolve()} --model-dir {inside.resolve()}")
        assert "--image-size 64" in command and "--recipe features" in command and "--resume" not in command
    finally:
        shutil.rmtree(inside)


def test_another_host_warns_and_makes_up_a_token(trained, tmp_path):
    server = Server("--model-dir", trained / "models", cwd=tmp_path, host="127.0.0.2")  # loopback, but not the default
    try:
        status, answer = post_json(server.url + "/api/move", {"path": "Training_Set/a/img_1.png", "to": "b"})
        assert status == 403 and "token" in answer["error"]
    finally:
        output = server.stop()
    assert "warning: --host 127.0.0.2 lets other machines reach this app" in output
    assert (trained / "Dataset" / "Training_Set" / "a" / "img_1.png").is_file()


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium driven by Selenium through Debian's chromedriver (no download)."""
    from selenium import webdriver

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        missing = "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
        pytest.fail(missing + ": .ci/run installs them") if os.environ.get("CI") else pytest.skip(missing)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1100,640"):
        options.add_argument(argument)
    session = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))
    yield session
    session.quit()


def _wait(condition, seconds=90):
    deadline = time.time() + seconds
    while time.time() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError("the page did not get there in time")


def _screenshot(browser, name):
    """The README's pictures of the app: written where $SCREENSHOTS says (docs/ when they are made again)."""
    if os.environ.get("SCREENSHOTS"):
        browser.save_screenshot(os.path.join(os.environ["SCREENSHOTS"], name))


DROP = """
const [name, data] = arguments;
const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
const transfer = new DataTransfer();
transfer.items.add(new File([bytes], name, {type: "image/png"}));
document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true}));
"""


def test_the_page_labels_a_picked_and_a_dropped_picture_with_its_grad_cam(trained, server, browser):
    from selenium.webdriver.common.by import By

    picked = trained / "Dataset" / "Validation_Set" / "a" / "img_2.jpg"
    dropped = trained / "Dataset" / "Validation_Set" / "b" / "img_3.png"
    expected = {path.name: json.loads(request(server.url + "/api/predict", path.read_bytes())[2]) for path in
                (picked, dropped)}  # fmt: skip
    browser.get(server.url + "/")
    browser.find_element(By.ID, "pick").send_keys(str(picked))
    browser.execute_script(DROP, dropped.name, base64.b64encode(dropped.read_bytes()).decode())

    def labeled():
        cards = browser.find_elements(By.CSS_SELECTOR, ".result")
        drawn = "return [...document.querySelectorAll('.overlay')].filter(i => !i.hidden && i.naturalWidth).length"
        if len(cards) == 2 and browser.execute_script(drawn) == 2:
            return [card.find_element(By.CSS_SELECTOR, ".label").text for card in cards]
        return None

    labels = _wait(labeled)
    assert labels[0].split()[0] == expected[dropped.name]["label"]  # the newest first
    assert labels[1].split()[0] == expected[picked.name]["label"]
    assert f"{100 * expected[picked.name]['confidence']:.1f}%" in labels[1]
    assert not [card.text for card in browser.find_elements(By.CSS_SELECTOR, ".error") if card.text]
    _screenshot(browser, "app.png")


def test_the_review_page_moves_a_suspect_and_undoes_it(trained, server, browser):
    from selenium.webdriver.common.by import By

    data = trained / "Dataset" / "Training_Set"
    browser.get(server.url + "/review")
    suspect = '.suspect[data-path="Training_Set/b/a_filed_as_b.png"]'
    card = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, suspect))
    _screenshot(browser, "review.png")
    card[0].find_element(By.CSS_SELECTOR, "button.move[data-to='a']").click()
    _wait(lambda: (data / "a" / "a_filed_as_b.png").is_file())
    assert not (data / "b" / "a_filed_as_b.png").exists()
    undo = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "button.undo"))
    undo[0].click()
    _wait(lambda: (data / "b" / "a_filed_as_b.png").is_file())
    assert not (data / "a" / "a_filed_as_b.png").exists()
    _wait(lambda: not browser.find_elements(By.CSS_SELECTOR, "button.undo"))  # the page shows it undone
