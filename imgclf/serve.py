"""`predict.py --serve`: the local app. A page to try the model on pictures, a review page to fix the data that
training flagged, and `POST /api/predict` for programs, on Starlette and uvicorn (no HTTP parsing here).

Concurrent requests are labeled together (dynamic batching): while the model labels one batch, the pictures that
arrive wait, and go as the next batch, so 8 clients keep the runtime's batches full without a timer adding latency.
"""

import asyncio
import contextlib
import io
import os
import secrets
import sys
import threading

import numpy as np
from PIL import Image, ImageOps

from imgclf import images as image_io
from imgclf import loading, outputs, pages, review
from imgclf.cli import UsageError

MAX_BATCH = 32  # pictures labeled together at most
MAX_JSON_BYTES = 65536  # a review action
LOOPBACK = ("127.0.0.1", "localhost", "::1")  # another --host warns, and moving files needs a token


class Batcher:
    """Labels pictures as they come, the ones waiting together, on one thread beside the event loop."""

    def __init__(self, run, threshold, class_names):
        self.run, self.threshold, self.class_names = run, threshold, class_names
        self.queue = None  # made in the server's event loop

    async def label(self, pixels):
        """({"label", "confidence", "probabilities"}, how many pictures were labeled with it) of one picture (size x
        size x 3, uint8)."""
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((pixels, future))
        return await future

    async def work(self):
        self.queue = asyncio.Queue()
        while True:
            waiting = [await self.queue.get()]
            while len(waiting) < MAX_BATCH and not self.queue.empty():
                waiting.append(self.queue.get_nowait())
            try:
                pixels = np.stack([item for item, _ in waiting]).astype(np.float32)
                probabilities = outputs.class_probabilities(await asyncio.to_thread(self.run, pixels))
            except Exception as error:  # a runtime error fails these requests, not the server
                for _, future in waiting:
                    future.set_exception(error) if not future.done() else None
                continue
            chosen, confidence = outputs.label_rows(probabilities, self.threshold)
            for (_, future), index, score, probs in zip(waiting, chosen, confidence, probabilities):
                if not future.done():  # its client may have gone
                    answer = {
                        "label": self.class_names[index],
                        "confidence": float(score),
                        "probabilities": {name: float(p) for name, p in zip(self.class_names, probs)},
                    }
                    future.set_result((answer, len(waiting)))


class HttpError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def build_app(config, classifier, data_dir=None, token=None):
    """The Starlette app around `classifier` (an `api.Classifier`); `data_dir`: the review page's data folder
    (None: no review); `token`: required by every request that moves a file (None: none needed)."""
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    limit = int(config.max_upload_mb * 2**20)
    batcher = Batcher(classifier.run, classifier.threshold, classifier.class_names)
    checker = review.Review(config.model_dir, data_dir) if data_dir else None
    explaining = threading.Lock()  # Grad-CAM in Keras: one at a time

    async def picture(request):
        """The uploaded picture as the model takes it: the body, or the multipart field `file`."""
        size = request.headers.get("content-length")
        if size is None:
            raise HttpError(411, "send the picture with a Content-Length header")
        if not size.isdigit() or int(size) > limit:
            raise HttpError(413, f"the upload is over the {config.max_upload_mb:g} MB limit (--max-upload-mb)")
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
        return await asyncio.to_thread(_decode, body, classifier)

    async def predict(request):
        answer, batch = await batcher.label(await picture(request))
        return JSONResponse(answer, headers={"X-Batch": str(batch)})  # pictures labeled together with this one

    async def explain(request):
        pixels = await picture(request)

        def overlay():
            with explaining:
                image = classifier.explain(pixels)
            buffer = io.BytesIO()
            image.save(buffer, "PNG")
            return buffer.getvalue()

        return Response(await asyncio.to_thread(overlay), media_type="image/png")

    def changes(request):
        if token and not secrets.compare_digest(request.headers.get("x-token", ""), token):
            raise HttpError(403, "this server needs its token (printed at start) in an X-Token header to move files")
        if checker is None:
            raise HttpError(404, "no data folder to review (start with --data-dir, or a model trained on one)")

    async def review_items(request):
        if checker is None:
            raise HttpError(404, "no data folder to review (start with --data-dir, or a model trained on one)")
        return JSONResponse(await asyncio.to_thread(checker.items))

    async def data_image(request):
        if checker is None:
            raise HttpError(404, "no data folder to review")
        path = await asyncio.to_thread(checker.path_of, request.query_params.get("path", ""))
        thumbnail = await asyncio.to_thread(_thumbnail, path)
        return Response(thumbnail, media_type="image/png")

    async def move(request):
        changes(request)
        body = await _json(request)
        return JSONResponse(await asyncio.to_thread(checker.move, body.get("path"), body.get("to")))

    async def undo(request):
        changes(request)
        body = await _json(request)
        return JSONResponse(await asyncio.to_thread(checker.undo, body.get("index")))

    def page(html):
        async def endpoint(request):
            return HTMLResponse(html)

        return endpoint

    def guarded(endpoint):
        """Every failure as a status and a one-line JSON {"error": ...}: the server never stops on a request."""

        async def handle(request):
            try:
                return await endpoint(request)
            except HttpError as error:
                return JSONResponse({"error": str(error)}, status_code=error.status)
            except review.Refused as error:
                return JSONResponse({"error": str(error)}, status_code=400)
            except image_io.ImageError as error:
                status = 400 if "decompression bomb" in str(error) or "damaged" in str(error) else 415
                return JSONResponse({"error": f"not a picture the model can read: {error}"}, status_code=status)
            except UsageError as error:
                return JSONResponse({"error": str(error)}, status_code=409)
            except Exception as error:  # a bug or a runtime failure: this request fails, the server goes on
                print(f"error: {request.url.path}: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
                return JSONResponse({"error": f"{type(error).__name__}: {error}"}, status_code=500)

        return handle

    @contextlib.asynccontextmanager
    async def lifespan(app):
        worker = asyncio.create_task(batcher.work())
        yield
        worker.cancel()

    routes = [
        Route("/", guarded(page(pages.try_page(classifier.class_names)))),
        Route("/review", guarded(page(pages.review_page()))),
        Route("/api/predict", guarded(predict), methods=["POST"]),
        Route("/api/explain", guarded(explain), methods=["POST"]),
        Route("/api/review", guarded(review_items)),
        Route("/api/image", guarded(data_image)),
        Route("/api/move", guarded(move), methods=["POST"]),
        Route("/api/undo", guarded(undo), methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.batcher = batcher
    return app


def serve(config):
    """Starts the app on --host:--port and serves until Ctrl-C; returns 0."""
    from imgclf import api

    host_is_local = config.host in LOOPBACK
    token = config.token or (None if host_is_local else secrets.token_urlsafe(16))
    if not host_is_local:
        print(
            f"warning: --host {config.host} lets other machines reach this app; moving files needs the token "
            f"{token} (an X-Token header; the page asks for it).",
            file=sys.stderr,
        )
    classifier = api.Classifier(config, write_exports=False)
    data_dir = config.data_dir or classifier.metadata.get("config", {}).get("data_dir")
    if data_dir and not os.path.isdir(data_dir):
        print(f"note: no review page: the data folder {data_dir} is not here (--data-dir names it).")
        data_dir = None
    app = build_app(config, classifier, data_dir, token)
    import uvicorn

    url = f"http://{config.host if ':' not in config.host else f'[{config.host}]'}:{config.port}"
    review_line = f"; review the data of {data_dir} at {url}/review" if data_dir else ""
    print(f"Serving {loading.model_path(config)} at {url}/ (POST pictures to {url}/api/predict){review_line}.")
    print("Ctrl-C stops it.", flush=True)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning", access_log=False)
    return 0


def _decode(body, classifier):
    return classifier.pixels(body)


def _thumbnail(path, size=256):
    """A picture of the data folder for the review page: upright, at most `size` px, PNG."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        return buffer.getvalue()


async def _json(request):
    size = request.headers.get("content-length", "")
    if not size.isdigit() or int(size) > MAX_JSON_BYTES:
        raise HttpError(413, f"a JSON body with a Content-Length of at most {MAX_JSON_BYTES} bytes is needed")
    try:
        body = await request.json()
    except ValueError:
        raise HttpError(400, 'the body must be JSON, e.g. {"path": ..., "to": ...}') from None
    if not isinstance(body, dict):
        raise HttpError(400, "the body must be a JSON object")
    return body
