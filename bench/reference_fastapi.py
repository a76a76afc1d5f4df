"""What a Cortex v0.31-v0.33 replica ran for a PythonPredictor: FastAPI on uvicorn, one process.

Cortex's serve.py read the body (`await request.json()`, i.e. json.loads of the raw
body), called predict, and answered `Response(json.dumps(result), media_type=
"application/json")`. This keeps exactly that path and drops what a fair
comparison should not charge either side for: the access log, and Cortex's extras
around it (two HTTP middlewares for request bookkeeping and metrics, and the hop
of every predict call onto a thread pool). So it is faster than real Cortex was:
it flatters the reference, never the runtime.

    python bench/reference_fastapi.py [--host 127.0.0.1] [--port 8889]
"""
import argparse
import importlib.util
import json
import os
import sys

try:
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.responses import Response
except ImportError as exc:
    sys.exit(f"error: the reference server needs fastapi and uvicorn ({exc}): "
             f"pip install -r bench/requirements.txt")

HERE = os.path.dirname(os.path.abspath(__file__))
PREDICTOR_PATH = os.path.join(HERE, "trivial", "predictor.py")


def load_predictor():
    # By path, as Cortex did, so both servers run the very same file.
    spec = importlib.util.spec_from_file_location("trivial_predictor", PREDICTOR_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PythonPredictor(config={})


def make_app():
    predictor = load_predictor()
    app = FastAPI()

    @app.post("/trivial")
    async def trivial(request: Request):
        payload = json.loads(await request.body())
        result = predictor.predict(payload)
        return Response(content=json.dumps(result), media_type="application/json")

    @app.get("/healthz")
    async def healthz():
        return Response(content="ok", media_type="text/plain")

    return app


def best(module, fallback):
    try:
        importlib.import_module(module)
        return module
    except ImportError:
        return fallback


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8889)
    args = parser.parse_args()
    loop = best("uvloop", "asyncio")
    http = best("httptools", "h11")
    print(json.dumps({"message": "reference", "loop": loop, "http": http}), flush=True)
    uvicorn.run(make_app(), host=args.host, port=args.port, workers=1,
                loop=loop, http=http, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
