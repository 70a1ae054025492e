"""`predict.py --serve`: the local app. A page to try the model on pictures, a review page to fix the data that
training flagged, and `POST /api/predict` for programs, on Starlette and uvicorn (no HTTP parsing here).

Concurrent requests are labeled together (dynamic batching): while the model labels one batch, the pictures that
arrive wait, and go as the next batch, so 8 clients keep the runtime's batches full without a timer adding latency.
Only the batcher's thread runs the model; Grad-CAM runs in Keras on a thread of its own, one picture at a time.
"""

import asyncio
import concurrent.futures
import contextlib
import io
import os
import secrets
import socket
import sys

import numpy as np

from imgclf import images as image_io
from imgclf import loading, outputs, pages, review
from imgclf.cli import UsageError

MAX_BATCH = 32  # pictures labeled together at most
MAX_JSON_BYTES = 65536  # a review action
THUMBNAIL_SIZE = 256  # the review page's pictures, px
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")  # another --host warns, and every data request needs the token
NO_REVIEW = "no data folder to review (start with --data-dir, or a model trained on a folder that is here)"


class HttpError(Exception):
    """A request that cannot be answered: its HTTP status and the one line of its JSON error."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class Batcher:
    """Labels pictures as they come, the ones waiting together, on one thread of its own."""

    def __init__(self, classifier):
        self.classifier = classifier
        self.queue = asyncio.Queue()
        self.thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="label")

    async def label(self, pixels):
        """({"label", "confidence", "probabilities"}, how many pictures were labeled together with it) of one
        picture (size x size x 3, uint8)."""
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((pixels, future))
        return await future

    async def work(self):
        """Runs while the server does: takes what is waiting (at most MAX_BATCH), labels it, answers each; an
        error fails that batch's requests, never the loop."""
        loop = asyncio.get_running_loop()
        while True:
            waiting = [await self.queue.get()]
            while len(waiting) < MAX_BATCH and not self.queue.empty():
                waiting.append(self.queue.get_nowait())
            try:
                pixels = np.stack([item for item, _ in waiting])
                answers = await loop.run_in_executor(self.thread, self._answers, pixels)
            except Exception as error:
                answers = [error] * len(waiting)
            for (_, future), answer in zip(waiting, answers):
                if future.done():  # its client went away
                    continue
                if isinstance(answer, Exception):
                    future.set_exception(answer)
                else:
                    future.set_result((answer, len(waiting)))

    def _answers(self, pixels):
        names = self.classifier.class_names
        probabilities = self.classifier.probabilities(pixels)
        chosen, confidence = outputs.label_rows(probabilities, self.classifier.threshold)
        return [
            {"label": names[index], "confidence": float(score), "probabilities": dict(zip(names, map(float, probs)))}
            for index, score, probs in zip(chosen, confidence, probabilities)
        ]


def build_app(config, classifier, data_dir=None, token=None, trusted_hosts=None):
    """The Starlette app around `classifier` (an `api.Classifier`). `data_dir`: the review page's data folder (None:
    no review); `token`: what every request touching the data folder must carry (None: none); `trusted_hosts`: the
    Host headers answered (a page of another site renamed to 127.0.0.1 by its DNS is not)."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    def page(html):
        async def endpoint(request):
            return HTMLResponse(html)

        return endpoint

    @contextlib.asynccontextmanager
    async def lifespan(app):
        worker = asyncio.create_task(app.state.batcher.work())
        yield
        worker.cancel()

    routes = [
        Route("/", page(pages.try_page(classifier.class_names))),
        Route("/review", page(pages.review_page())),
        Route("/api/predict", _guarded(predict), methods=["POST"]),
        Route("/api/explain", _guarded(explain), methods=["POST"]),
        Route("/api/review", _guarded(review_items)),
        Route("/api/image", _guarded(data_image)),
        Route("/api/move", _guarded(move), methods=["POST"]),
        Route("/api/undo", _guarded(undo), methods=["POST"]),
    ]
    middleware = [Middleware(_TrustedHosts, hosts=trusted_hosts)] if trusted_hosts else []
    app = Starlette(
        routes=routes, middleware=middleware, lifespan=lifespan, exception_handlers={HTTPException: _http_error}
    )
    app.state.config, app.state.classifier, app.state.token = config, classifier, token
    app.state.batcher = Batcher(classifier)
    app.state.review = review.Review(config.model_dir, data_dir, classifier.metadata) if data_dir else None
    app.state.explaining = asyncio.Lock()  # Grad-CAM in Keras: one at a time, on a thread of its own
    app.state.explainer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="explain")
    return app


async def predict(request):
    """POST /api/predict: the picture's label, confidence and probabilities, as predict.py gives them."""
    answer, batch = await request.app.state.batcher.label(await _picture(request))
    return _json_response(answer, headers={"X-Batch": str(batch)})  # how many pictures went together


async def explain(request):
    """POST /api/explain: the picture with its Grad-CAM laid over it, a PNG (for the label it gets)."""
    from starlette.responses import Response

    state = request.app.state
    pixels = await _picture(request)
    answer, _ = await state.batcher.label(pixels)  # the label comes from the batcher: only it runs the model

    def overlay():
        buffer = io.BytesIO()
        state.classifier.explain(pixels, label=answer["label"]).save(buffer, "PNG")
        return buffer.getvalue()

    async with state.explaining:
        png = await asyncio.get_running_loop().run_in_executor(state.explainer, overlay)
    return Response(png, media_type="image/png")


async def review_items(request):
    """GET /api/review: training's suspects and duplicates, the class folders, the log, the retrain command."""
    checker = _review(request)
    return _json_response(await asyncio.to_thread(checker.items))


async def data_image(request):
    """GET /api/image?path=...: a picture of the data folder, small, as PNG."""
    from starlette.responses import Response

    checker = _review(request)
    path = await asyncio.to_thread(checker.path_of, request.query_params.get("path", ""))

    def png():
        buffer = io.BytesIO()
        image_io.thumbnail(path, THUMBNAIL_SIZE).save(buffer, "PNG")
        return buffer.getvalue()

    return Response(await asyncio.to_thread(png), media_type="image/png")


async def move(request):
    """POST /api/move {"path", "to"}: a file into another class folder of its split, or set aside."""
    checker, body = _review(request), await _json(request)
    return _json_response(await asyncio.to_thread(checker.move, body.get("path"), body.get("to")))


async def undo(request):
    """POST /api/undo {"index"}: the move of that log entry, undone."""
    checker, body = _review(request), await _json(request)
    return _json_response(await asyncio.to_thread(checker.undo, body.get("index")))


def serve(config):
    """Starts the app on --host:--port and serves until Ctrl-C; returns 0."""
    from imgclf import api

    _check_flags(config)
    if config.data_dir and not os.path.isdir(config.data_dir):
        raise UsageError(f"--data-dir {config.data_dir}: folder not found. Name the folder the model was trained on.")
    listening = _listen(config)
    local = config.host in LOOPBACK
    token = config.token or (None if local else secrets.token_urlsafe(16))
    if not local:
        print(
            f"warning: --host {config.host} lets other machines reach this app; the review and every request that "
            f"reads or moves the data folder need the token {token} (an X-Token header; the page asks for it).",
            file=sys.stderr,
        )
    classifier = api.Classifier(config, write_exports=False)
    data_dir = config.data_dir or review.trained_on(classifier.metadata)
    if data_dir and not os.path.isdir(data_dir):
        print(f"note: no review page: the data folder {data_dir} is not here (--data-dir names it).")
        data_dir = None
    trusted = [*LOOPBACK, config.host] if local else None
    app = build_app(config, classifier, data_dir, token, trusted)
    import uvicorn

    host = socket.gethostname() if config.host in ("0.0.0.0", "::") else config.host
    url = f"http://{host if ':' not in host else f'[{host}]'}:{config.port}"
    where = f"; review the data of {os.path.realpath(data_dir)} at {url}/review" if data_dir else ""
    model = os.path.dirname(os.path.abspath(loading.model_path(config)))
    print(f"Serving the model of {model} at {url}/ (POST pictures to {url}/api/predict){where}.")
    print("Ctrl-C stops it.", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[listening])
    return 0


def _listen(config):
    """The socket the app answers on, bound before anything is said to be served: a port in use or a host that is
    not an address of this machine is a usage error."""
    try:
        return socket.create_server((config.host, config.port), family=_family(config.host), reuse_port=False)
    except OSError as error:
        why = os.strerror(error.errno) if (error.errno or 0) > 0 else "not a name or address of this machine"
        raise UsageError(
            f"--host {config.host} --port {config.port}: cannot listen there ({why}). Choose "
            "another --port, or a --host of this machine."
        ) from None


def _family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _check_flags(config):
    """--serve labels what it is sent: the flags about files to label or to write do not go with it."""
    for name in ("export", "convert", "evaluate", "explain", "sort_into", "resume"):
        if getattr(config, name):
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"{flag} labels or writes files; --serve answers requests. Leave one of them out.")


class _TrustedHosts:
    """Answers only requests whose Host header names one of `hosts` (the port aside); the others get 400."""

    def __init__(self, app, hosts):
        self.app, self.hosts = app, set(hosts)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            name = host if host.endswith("]") else host.rsplit(":", 1)[0]
            if name not in self.hosts:
                error = f"Host {host!r} is not this app's name ({', '.join(sorted(self.hosts))})"
                return await _json_response({"error": error}, 400)(scope, receive, send)
        return await self.app(scope, receive, send)


def _guarded(endpoint):
    """Every failure as a status and a one-line JSON {"error": ...}: the server never stops on a request."""
    from starlette.exceptions import HTTPException

    async def handle(request):
        try:
            return await endpoint(request)
        except HttpError as error:
            return _json_response({"error": str(error)}, error.status)
        except HTTPException as error:  # Starlette's own: a malformed multipart body
            return await _http_error(request, error)
        except image_io.ImageError as error:
            status = 415 if error.kind == "not an image" else 400
            return _json_response({"error": f"not a picture the model can read: {error}"}, status)
        except UsageError as error:  # review.Refused and the like: what the request asked cannot be done
            return _json_response({"error": str(error)}, 400)
        except Exception as error:  # a bug or a runtime failure: this request fails, the server goes on
            print(f"error: {request.url.path}: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
            return _json_response({"error": f"{type(error).__name__}: {error}".splitlines()[0]}, 500)

    return handle


async def _http_error(request, error):
    return _json_response({"error": str(error.detail).splitlines()[0]}, error.status_code)


def _json_response(content, status=200, headers=None):
    from starlette.responses import JSONResponse

    return JSONResponse(content, status_code=status, headers=headers)


def _length(request, limit, what):
    """The request's Content-Length, checked against `limit` bytes."""
    size = request.headers.get("content-length")
    if size is None:
        raise HttpError(411, f"send the {what} with a Content-Length header")
    if not size.isdigit() or int(size) > limit:
        raise HttpError(413, f"the {what} is over the limit: {size} bytes")
    return int(size)


async def _picture(request):
    """The uploaded picture as the model takes it: the body, or the multipart field `file`."""
    config, classifier = request.app.state.config, request.app.state.classifier
    limit = int(config.max_upload_mb * 2**20)
    _length(request, limit, f"picture (at most {config.max_upload_mb:g} MB, --max-upload-mb)")
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        async with request.form(max_part_size=limit) as form:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise HttpError(400, "multipart upload without a 'file' field holding the picture")
            body = await upload.read()
    else:
        body = await request.body()
    if not body:
        raise HttpError(400, "empty body: send the picture's bytes, or a multipart field 'file'")
    return await asyncio.to_thread(classifier.pixels, body)


def _review(request):
    """The review of the data folder, for a request allowed to touch it (the token, where one is needed)."""
    state = request.app.state
    if state.token and not secrets.compare_digest(request.headers.get("x-token", "").encode(), state.token.encode()):
        raise HttpError(403, "this server needs its token (printed at start) in an X-Token header to touch the data")
    if state.review is None:
        raise HttpError(404, NO_REVIEW)
    return state.review


async def _json(request):
    """The JSON object of a review action. Only `application/json`: a form that another site's page posts to this
    server (which needs no permission from it) is refused."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise HttpError(415, "send review actions as application/json")
    _length(request, MAX_JSON_BYTES, "JSON body")
    try:
        body = await request.json()
    except ValueError:
        raise HttpError(400, 'the body must be JSON, e.g. {"path": ..., "to": ...}') from None
    if not isinstance(body, dict):
        raise HttpError(400, "the body must be a JSON object")
    return body
