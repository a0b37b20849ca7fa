"""`worldnet serve` on a real uvicorn server: answers, and a one-line 4xx for every hostile request (never a 500 or a trace)."""

from __future__ import annotations

import base64
import concurrent.futures
import io
import pickle
import socket
import struct
import threading
import time
import zlib

import httpx
import mlflow
import pandas as pd
import pytest
import uvicorn
from PIL import Image

import worldnet.models.predictor as predictor_module
from flows.serve import LARGE_DECODE_PIXELS, ServeLimits, create_app, decode_request, land_outlines
from tasks.registry import MODEL_CODE, PIP_REQUIREMENTS, example_photo, model_signature
from worldnet.models.predictor import Predictor

LIMITS = ServeLimits(max_photo_bytes=200_000, max_photos=3)


def _jpeg(size=(96, 72), color=(90, 140, 60)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()


def _png_bomb(width: int = 40_000, height: int = 40_000) -> bytes:
    """A valid PNG header declaring 1.6 billion pixels over a few bytes of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def predictor(model_file, tmp_path_factory):
    return Predictor.load(model_file, graphs_dir=tmp_path_factory.mktemp("graphs"))


@pytest.fixture(scope="module")
def server(predictor):
    """The app on a real uvicorn server on a free port of 127.0.0.1."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    srv = uvicorn.Server(uvicorn.Config(create_app(predictor, "worldnet v7 (@champion)", LIMITS), port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield url
    srv.should_exit = True
    thread.join(10)


def _post(url: str, files: list[tuple[str, bytes]], **kw) -> httpx.Response:
    return httpx.post(f"{url}/predict", files=[("file", (name, data, "image/jpeg")) for name, data in files], timeout=60, **kw)


def _one_line_4xx(res: httpx.Response, status: int, words: str) -> None:
    assert res.status_code == status, (res.status_code, res.text)
    body = res.json()
    assert words in body["error"] and "\n" not in body["error"], body
    assert "Traceback" not in res.text and "/tmp/" not in res.text and ".py" not in res.text


def test_a_photo_gets_coordinates_clusters_and_the_model_version(server):
    res = _post(server, [("street.jpg", _jpeg())], params={"top_k": 2})
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["model"] == "worldnet v7 (@champion)" and body["engine"] in ("onnx", "torch")
    (p,) = body["predictions"]
    assert p["status"] == "ok" and p["name"] == "street.jpg" and -90 <= p["lat"] <= 90 and -180 <= p["lon"] <= 180
    assert p["country"] and p["continent"] and len(p["top_clusters"]) == 2 and p["snapped_km"] >= 0
    assert httpx.get(f"{server}/health").json() == {"status": "ok", "model": "worldnet v7 (@champion)", "engine": body["engine"]}


def test_one_bad_photo_never_fails_the_others(server):
    res = _post(server, [("a.jpg", _jpeg()), ("notes.jpg", b"just some text"), ("b.png", _jpeg())])
    assert res.status_code == 200
    assert [p["status"] for p in res.json()["predictions"]] == ["ok", "not_an_image", "ok"]


def test_photos_of_one_place_get_one_answer_beside_their_own(server):
    files = [("a.jpg", _jpeg(color=(200, 60, 50))), ("notes.jpg", b"just some text"), ("b.jpg", _jpeg(color=(50, 80, 200)))]
    res = _post(server, files, params={"place": 1, "top_k": 2})
    assert res.status_code == 200, res.text
    body = res.json()
    plain = _post(server, files, params={"top_k": 2}).json()
    assert body["predictions"] == plain["predictions"] and "place" not in plain  # each photo's answer as without place
    place = body["place"]
    assert place["status"] == "ok" and (place["n_photos"], place["n_views"], place["views_used"]) == (3, 2, ["a.jpg", "b.jpg"])
    assert -90 <= place["lat"] <= 90 and len(place["top_clusters"]) == 2 and "views" not in place
    # a form field says it as well as the query (a checkbox sends "on"); one photo's place is that photo's answer
    one = _post(server, files[:1], data={"place": "on"}).json()
    assert (one["place"]["lat"], one["place"]["lon"]) == (one["predictions"][0]["lat"], one["predictions"][0]["lon"])
    assert "place" not in _post(server, files[:1], data={"place": "0"}).json()
    _one_line_4xx(_post(server, files[:1], params={"place": "maybe"}), 400, "place query parameter is 1")
    bad = _post(server, files[1:2], params={"place": 1})
    assert bad.status_code == 415 and bad.json()["place"]["status"] == "no_readable_view"


@pytest.mark.parametrize(
    ("files", "status", "words"),
    [
        ([("empty.jpg", b"")], 400, "empty"),
        ([("notes.jpg", b"hello, I am text")], 415, "no image format"),
        ([("cut.jpg", _jpeg((640, 480), (10, 200, 30))[:400])], 422, "could not be decoded"),
        ([("bomb.png", _png_bomb())], 413, "too many pixels"),
        ([("big.jpg", b"\xff\xd8\xff" + b"\0" * 250_000)], 413, "over the 0 MB limit"),
        ([("x.jpg", _jpeg())] * 4, 413, "at most 3 photos per request"),
    ],
    ids=["empty", "not-an-image", "truncated-jpeg", "decompression-bomb", "over-size-limit", "too-many-photos"],
)
def test_hostile_uploads_get_a_4xx_and_one_line(server, files, status, words):
    _one_line_4xx(_post(server, files), status, words)


def test_requests_that_are_not_photo_uploads_get_a_4xx_and_one_line(server):
    _one_line_4xx(httpx.post(f"{server}/predict", json={"photo": "x"}), 415, "multipart/form-data")
    _one_line_4xx(httpx.post(f"{server}/predict", content=b"", headers={"content-type": "multipart/form-data"}), 400, "bad multipart")
    form = httpx.post(f"{server}/predict", files=[("photo", ("a.jpg", _jpeg(), "image/jpeg"))])
    _one_line_4xx(form, 400, "field 'file'")
    # a client announcing a 1 GB body is refused before a byte of it is read (raw socket: httpx will not lie about lengths)
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=x\r\nContent-Length: 999999999\r\n\r\n--x"
        )
        reply = b""
        while b"}" not in reply and (chunk := conn.recv(4096)):  # headers and body may come in separate packets
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413") and b"over" in reply, reply
    assert httpx.get(f"{server}/nope").status_code == 404 and "Traceback" not in httpx.get(f"{server}/nope").text


def _png(size: tuple[int, int], color=(90, 140, 60)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")  # one colour: a large photo in a few KB
    return buf.getvalue()


def test_a_request_over_its_pixel_budget_is_refused_before_any_decoding(predictor, monkeypatch):
    from starlette.testclient import TestClient

    decoded: list[int] = []
    frame = predictor_module.frame_photo
    monkeypatch.setattr(predictor_module, "frame_photo", lambda data, spec: decoded.append(len(data)) or frame(data, spec))
    app = create_app(predictor, "v7", ServeLimits(max_photo_bytes=200_000, max_photos=3, max_request_pixels=5_000_000))
    big = _png((2000, 1500))  # 3 MP each, decoded at full size: PNG has no draft mode
    with TestClient(app) as client:
        over = client.post("/predict", files=[("file", (f"{i}.png", big, "image/png")) for i in range(2)])
        _one_line_4xx(over, 413, "5 megapixels per request")
        assert "6 megapixels" in over.json()["error"] and decoded == []  # refused from the headers: nothing decoded
        # under the budget it is answered; a 12 MP JPEG counts at the 1/8 scale its draft mode decodes at
        jpeg = _jpeg((4000, 3000))
        ok = client.post("/predict", files=[("file", ("a.png", big, "image/png")), ("file", ("b.jpg", jpeg, "image/jpeg"))])
        assert ok.status_code == 200 and [p["status"] for p in ok.json()["predictions"]] == ["ok", "ok"], ok.text
        assert len(decoded) == 2
        # a photo refused on its own (a decompression bomb) takes nothing from the budget: it keeps its own status
        _one_line_4xx(client.post("/predict", files=[("file", ("bomb.png", _png_bomb(), "image/png"))]), 413, "too many pixels")


def test_a_slow_decode_never_holds_up_another_request(server, monkeypatch):
    """Decoding runs outside the model lock: while one request is stuck decoding, another is decoded and answered."""
    slow, fast = _jpeg(color=(200, 10, 10)), _jpeg(color=(10, 10, 200))
    decoding, release = threading.Event(), threading.Event()
    frame = predictor_module.frame_photo

    def stuck_on_slow(data, spec):
        if data == slow:
            decoding.set()
            assert release.wait(30)
        return frame(data, spec)

    monkeypatch.setattr(predictor_module, "frame_photo", stuck_on_slow)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(_post, server, [("slow.jpg", slow)])
        try:
            assert decoding.wait(30)
            other = _post(server, [("fast.jpg", fast)])  # needs the model while the slow request is still decoding
            assert other.status_code == 200 and other.json()["predictions"][0]["status"] == "ok", other.text
            assert not first.done()
        finally:
            release.set()
        res = first.result(60)
    assert res.status_code == 200 and res.json()["predictions"][0]["status"] == "ok", res.text


def test_full_size_decodings_wait_for_a_slot_and_small_photos_never_do(predictor):
    """Concurrent requests hold at most ``large_decodes`` full-size decodings; a photo under LARGE_DECODE_PIXELS skips the queue."""
    large, limits = threading.Semaphore(1), ServeLimits(max_photo_bytes=200_000)
    big = _png((4000, LARGE_DECODE_PIXELS // 4000))
    assert predictor.decoded_pixels([big, _jpeg((4000, 3000))]) == [LARGE_DECODE_PIXELS, 500 * 375]  # the JPEG at its draft scale
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert large.acquire(timeout=5)  # another request is decoding a large photo
        try:
            waiting = pool.submit(decode_request, predictor, [big], ["big.png"], limits, large)
            small = decode_request(predictor, [_jpeg((4000, 3000))], ["small.jpg"], limits, large)
            assert small.good == [0] and not waiting.done()
        finally:
            large.release()
        decoded = waiting.result(60)
    assert decoded.good == [0] and decoded.answers[0].status == "ok" and decoded.framed[0].shape == small.framed[0].shape


def test_the_page_and_its_offline_map(server):
    page = httpx.get(server).text
    assert "world map" in page and "predict" in page and "http" not in page.split("<script>")[1].replace("http://", "")
    rings = httpx.get(f"{server}/land.json").json()
    assert len(rings) > 50 and all(-180.5 <= x <= 180.5 and -90.5 <= y <= 90.5 for ring in rings[:20] for x, y in ring)
    assert land_outlines() is land_outlines()  # computed once per process


def test_the_registered_model_is_code_takes_base64_and_never_unpickles(model_file, tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)  # a store MLflow creates itself puts artifacts under ./mlruns: here, not in the checkout
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # set_tracking_uri exports it too: monkeypatch puts it back after the test
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("serve-test")  # this store's own, not one an earlier test left active
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="predictor",
            python_model=str(MODEL_CODE),
            artifacts={"worldnet": str(model_file)},
            signature=model_signature(),
            input_example=pd.DataFrame({"photo": [example_photo()]}),
            pip_requirements=PIP_REQUIREMENTS,
        )
    local = mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "model"))
    # anyone who can write to the registry could plant this: loading must never unpickle it
    marker = tmp_path / "planted-code-ran"

    class Planted:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "model" / "python_model.pkl").write_bytes(pickle.dumps(Planted()))
    assert "pyfunc_model.py" in (tmp_path / "model" / "MLmodel").read_text()  # the flavour names the code file, not a pickle
    model = mlflow.pyfunc.load_model(local)
    assert not marker.exists()
    rows = pd.DataFrame(
        {"photo": [base64.b64encode(_jpeg()).decode(), base64.b64encode(b"text").decode(), None], "path": [None, None, str(model_file)]}
    )
    out = model.predict(rows, params={"top_k": 2})
    assert out["status"].tolist() == ["ok", "not_an_image", "paths_not_allowed"]
    assert out["lat"].notna().tolist() == [True, False, False]
    assert str(model_file) not in out.to_string()
