"""Importing the predictor module, finding its class, validating signatures with Cortex's
messages, and building the instance with keyword injection."""
import copy
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass, field

from .errors import StartupError
from .log import logger

CLASS_NAMES = {"python": "PythonPredictor", "tensorflow": "TensorFlowPredictor"}

INIT_ARGS = {
    "python": ({"self", "config"}, {"metrics_client", "python_client"}),
    "tensorflow": ({"self", "tensorflow_client", "config"}, {"metrics_client"}),
}
PREDICT_ARGS = ({"self"}, {"payload", "request_id", "query_params", "headers"})
POST_PREDICT_ARGS = ({"self"}, {"response", "payload", "query_params", "headers"})
ASYNC_PREDICT_ARGS = ({"self"}, {"payload", "request_id"})  # Cortex's AsyncAPI handler


@dataclass
class PredictorClass:
    cls: type
    init_args: list          # names __init__ takes besides self
    predict_args: list       # names predict takes besides self
    post_predict_args: list = field(default=None)  # None when there is no post_predict


class _ClassError(Exception):
    pass


def _method_args(cls, method_name, required, optional, must_exist):
    fn = getattr(cls, method_name, None)
    if fn is None:
        if must_exist:
            raise _ClassError(f'required method "{method_name}" is not defined')
        return None
    if not callable(fn):
        raise _ClassError(f'"{method_name}" is defined, but is not a method')
    args = inspect.getfullargspec(fn).args
    signature = f'invalid signature for method "{method_name}({", ".join(args)})"'
    for name in sorted(required, key=lambda n: (n != "self", n)):
        if name not in args:
            raise _ClassError(f'{signature}: "{name}" is a required argument, but was not provided')
    if args[0] != "self":
        raise _ClassError(f'{signature}: "self" must be the first argument')
    seen = set()
    for name in args:
        if name not in required and name not in optional:
            raise _ClassError(f'{signature}: "{name}" is not a supported argument')
        if name in seen:
            raise _ClassError(f'{signature}: "{name}" is duplicated')
        seen.add(name)
    return [name for name in args if name != "self"]


def _module_name(path):
    stem = os.path.splitext(os.path.basename(path))[0]
    name = stem if stem.isidentifier() else "predictor"
    suffix = 1
    while name in sys.modules:
        suffix += 1
        name = f"{stem}_{suffix}"
    return name


def load_class(api, staged_root) -> PredictorClass:
    """Imports api.predictor_path from the staged project and validates its class."""
    where = f"error in {api.predictor_path}"
    path = os.path.join(staged_root, api.predictor_path)
    class_name = CLASS_NAMES[api.predictor_type]
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(name, None)
        logger.error(f"{where}: import failed", exc_info=e)
        raise StartupError(f"{where}: {type(e).__name__}: {e}") from None
    cls = getattr(module, class_name, None)
    if not inspect.isclass(cls):
        raise StartupError(f"{where}: {class_name} class is not defined")
    try:
        init_required, init_optional = INIT_ARGS[api.predictor_type]
        init_args = _method_args(cls, "__init__", init_required, init_optional, True)
        predict_args = _method_args(cls, "predict", *(ASYNC_PREDICT_ARGS if api.kind == "AsyncAPI"
                                                      else PREDICT_ARGS), True)
        post_args = None
        if api.kind == "RealtimeAPI":
            post_args = _method_args(cls, "post_predict", *POST_PREDICT_ARGS, False)
    except _ClassError as e:
        raise StartupError(f"{where}: class {class_name}: {e}") from None
    return PredictorClass(cls, init_args, predict_args, post_args)


def instantiate(api, predictor_class: PredictorClass, metrics_client, clients=None):
    """Runs __init__ with the arguments it names; start-up error with Cortex's wording."""
    available = {"config": copy.deepcopy(api.config), "metrics_client": metrics_client,
                 "python_client": None}
    available.update(clients or {})
    kwargs = {name: available[name] for name in predictor_class.init_args}
    try:
        return predictor_class.cls(**kwargs)
    except Exception as e:
        logger.error(f"{api.predictor_path}: __init__: {e}: runtime exception", exc_info=e)
        raise StartupError(f"{api.predictor_path}: __init__: {e}: runtime exception") from None
