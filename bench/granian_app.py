"""The trivial predictor as a raw ASGI app, served by granian: bench/run.py's second peer.

No framework: the app reads the body, `json.loads`, calls the very same
PythonPredictor (bench/trivial/predictor.py, imported by path as Cortex did) and
answers `json.dumps` of the result as application/json; GET /healthz answers "ok".
One granian worker process, one runtime thread, no access log; run.py pins it
(supervisor and worker alike, taskset is inherited) to CPU 0.

    python bench/granian_app.py [--host 127.0.0.1] [--port 8890]
"""
import argparse
import importlib.util
import json
import os
import pathlib
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PREDICTOR_PATH = os.path.join(HERE, "trivial", "predictor.py")


def load_predictor():
    spec = importlib.util.spec_from_file_location("trivial_predictor", PREDICTOR_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PythonPredictor(config={})


predictor = load_predictor()

JSON_HEADERS = [(b"content-type", b"application/json")]
TEXT_HEADERS = [(b"content-type", b"text/plain")]


async def read_body(receive):
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path, method = scope["path"], scope["method"]
    if path == "/trivial" and method == "POST":
        payload = json.loads(await read_body(receive))
        status, headers = 200, JSON_HEADERS
        body = json.dumps(predictor.predict(payload)).encode()
    elif path == "/healthz" and method == "GET":
        status, headers, body = 200, TEXT_HEADERS, b"ok"
    else:
        status, headers, body = 404, TEXT_HEADERS, b"not found"
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8890)
    args = parser.parse_args()
    try:
        import granian
        from granian import Granian
        from granian.constants import Interfaces, Loops
        from granian.log import LogLevels
    except ImportError as exc:
        sys.exit(f"error: this peer needs granian ({exc}): pip install -r bench/requirements.txt")
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    print(json.dumps({"message": "granian", "version": granian.__version__, "loop": loop}),
          flush=True)
    Granian("granian_app:app", address=args.host, port=args.port, working_dir=pathlib.Path(HERE),
            interface=Interfaces.ASGI, workers=1, runtime_threads=1, loop=Loops(loop),
            log_access=False, log_level=LogLevels.warning, websockets=False).serve()


if __name__ == "__main__":
    main()
