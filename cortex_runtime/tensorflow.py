"""tensorflow_client for TensorFlowPredictor: model sources from predictor.models, the
in-process backend (SavedModels loaded with the installed tensorflow), and the client that
validates calls and converts values the way Cortex's client over TensorFlow Serving did.

TensorFlow is imported only when a tensorflow API is loaded (`import cortex_runtime` never
imports it).  The remote backend (--tfs-address) is in tfs_remote.py; both backends offer
    model_names() -> list | None   the names a dir-style source has now (None: not a dir)
    lookup(name, version) -> entry  an object with .name .version .signature, or raises
    run(entry, tensors) -> dict     output name -> numpy array
    metadata() -> dict              what GET shows as model_metadata
"""
import base64
import os
import threading
import time

from . import _core, log
from .errors import StartupError
from .log import logger

SINGLE_MODEL_NAME = "_cortex_default"  # Cortex's name for the model of predictor.models.path
DEFAULT_POLL_INTERVAL = 10.0           # seconds; Cortex looked for new versions every 10 s
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")

tf = None
np = None


def import_tensorflow():
    """Imports tensorflow (and numpy) on first use, quieting TensorFlow's C++ info lines."""
    global tf, np
    if tf is None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
        try:
            import numpy
            import tensorflow
        except ImportError as e:
            raise StartupError(f"predictor.type tensorflow needs the tensorflow package "
                               f"(pip install 'cortex_runtime[tensorflow]'): {e}") from None
        np, tf = numpy, tensorflow
    return tf


class TensorFlowClientError(Exception):
    """A bad tensorflow_client.predict call (Cortex's UserException): the message says why."""


# -------------------------------------------------------------------------------------------
# predictor.models


class ModelSource:
    """One model: its name, its directory (holding numeric version folders) and the
    signature_key asked for (None: the only one, else "predict")."""

    def __init__(self, name, path, signature_key):
        self.name = name
        self.path = path
        self.signature_key = signature_key


class Models:
    """predictor.models as validated by config.py: kind is "path", "paths" or "dir"."""

    def __init__(self, kind, sources, directory, signature_key, poll_interval):
        self.kind = kind
        self.sources = sources          # name -> ModelSource (path/paths; dir: filled by scans)
        self.directory = directory      # for "dir"
        self.signature_key = signature_key
        self.poll_interval = poll_interval

    @classmethod
    def from_mapping(cls, models, root, fallback_signature_key=None):
        from .config import parse_duration

        def resolve(path):
            return os.path.normpath(os.path.join(root, os.path.expanduser(path)))

        signature_key = models.get("signature_key") or fallback_signature_key
        interval = models.get("poll_interval")
        interval = DEFAULT_POLL_INTERVAL if interval is None else parse_duration(interval)
        if models.get("path") is not None:
            source = ModelSource(SINGLE_MODEL_NAME, resolve(models["path"]), signature_key)
            return cls("path", {source.name: source}, None, signature_key, interval)
        if models.get("paths") is not None:
            sources = {entry["name"]: ModelSource(entry["name"], resolve(entry["path"]),
                                                  entry.get("signature_key") or signature_key)
                       for entry in models["paths"]}
            return cls("paths", sources, None, signature_key, interval)
        return cls("dir", {}, resolve(models["dir"]), signature_key, interval)

    def scan_directory(self):
        """For "dir": name -> ModelSource of the model folders in it now."""
        try:
            names = sorted(os.listdir(self.directory))
        except OSError:
            return {}
        return {name: ModelSource(name, os.path.join(self.directory, name), self.signature_key)
                for name in names
                if not name.startswith(".") and os.path.isdir(os.path.join(self.directory, name))}


def find_versions(path):
    """version string -> directory of each SavedModel under path: numeric folders holding a
    saved_model.pb; a SavedModel right in path (no version folders) is version 1."""
    versions = {}
    try:
        entries = os.listdir(path)
    except OSError:
        return versions
    for entry in entries:
        if entry.isascii() and entry.isdigit():
            folder = os.path.join(path, entry)
            if any(os.path.isfile(os.path.join(folder, f)) for f in SAVED_MODEL_FILES):
                versions.setdefault(str(int(entry)), folder)
    if not versions and any(os.path.isfile(os.path.join(path, f)) for f in SAVED_MODEL_FILES):
        versions["1"] = path
    return versions


# -------------------------------------------------------------------------------------------
# signatures


class TensorInfo:
    """An input or output of a signature: dtype (a tf.DType) and shape (a list with -1 for an
    unknown dimension, or None for an unknown rank)."""

    __slots__ = ("dtype", "shape", "np_dtype", "accepts")

    def __init__(self, dtype, shape):
        self.dtype = dtype
        self.shape = shape
        # the numpy dtype values are converted to, and the numpy kinds of value that may be
        # converted (as TensorFlow's own conversion: no float -> int, no text -> number)
        self.np_dtype = object if dtype == tf.string else np.dtype(dtype.as_numpy_dtype)
        self.accepts = ("" if dtype == tf.string else "b" if dtype.is_bool else
                        "biu" if dtype.is_integer else "biufc" if dtype.is_complex else "biuf")

    def shape_text(self):
        if self.shape is None:
            return "unknown"
        return "scalar" if self.shape == [] else self.shape

    def describe(self):
        """As Cortex's model metadata: {"shape": [...], "type": "float32"}."""
        shape = self.shape_text()
        return {"shape": shape if isinstance(shape, list) else [shape], "type": self.dtype.name}


class Signature:
    def __init__(self, key, inputs, outputs):
        self.key = key
        self.inputs = inputs    # name -> TensorInfo
        self.outputs = outputs  # name -> TensorInfo
        self.input_names = sorted(inputs)


def tensor_info(spec):
    shape = None if spec.shape.rank is None else [-1 if d is None else d
                                                  for d in spec.shape.as_list()]
    return TensorInfo(spec.dtype, shape)


def function_signature(key, function):
    """Signature of a loaded SavedModel signature function (a ConcreteFunction)."""
    inputs = {name: tensor_info(spec)
              for name, spec in function.structured_input_signature[1].items()}
    structured = function.structured_outputs  # a dict for SavedModel signatures
    if not isinstance(structured, dict):
        structured = {f"output_{i}": spec for i, spec in enumerate(tf.nest.flatten(structured))}
    outputs = {name: tensor_info(spec) for name, spec in structured.items()}
    return Signature(key, inputs, outputs)


def choose_signature_key(available, wanted, name, version):
    """The signature key to use among available (a list), with Cortex's messages."""
    if not available:
        raise TensorFlowClientError(
            f"unable to find signature defs in model '{name}' of version '{version}'")
    if wanted is None:
        if len(available) == 1:
            return available[0]
        if "predict" in available:
            return "predict"
        raise TensorFlowClientError(
            f"signature_key was not configured by user, please specify one the following keys "
            f"'{', '.join(available)}' for model '{name}' of version '{version}' "
            f"(found in the signature def map)")
    if wanted not in available:
        found = (f"key: '{available[0]}'" if len(available) == 1
                 else "keys: '{}'".format("', '".join(available)))
        raise TensorFlowClientError(
            f"signature_key '{wanted}' was not found in signature def map for model '{name}' "
            f"of version '{version}', but found the following {found}")
    return wanted


# -------------------------------------------------------------------------------------------
# the in-process backend


class LocalVersion:
    """One loaded version of one model."""

    __slots__ = ("name", "version", "path", "signature", "function", "loaded", "timestamp",
                 "signatures")

    def __init__(self, name, version, path, signature, function, loaded):
        self.name = name
        self.version = version
        self.path = path
        self.signature = signature
        self.function = function
        self.loaded = loaded  # keeps the variables the function reads alive
        self.timestamp = int(os.path.getmtime(path))
        self.signatures = loaded.signatures


def load_version(source, version, path):
    loaded = tf.saved_model.load(path)
    keys = list(loaded.signatures.keys())
    key = choose_signature_key(keys, source.signature_key, source.name, version)
    function = loaded.signatures[key]
    signature = function_signature(key, function)
    return LocalVersion(source.name, version, path, signature,
                        flat_call(function, signature.input_names), loaded)


def flat_call(function, input_names):
    """tensors -> outputs through the signature's flat entry point (_call_flat), which is
    what function(**tensors) ends in after binding and checking the arguments: make_tensor
    did that already, and skipping it saves ~45 µs a call.  Falls back to the public call
    when this TensorFlow's function lacks that entry point or names its arguments otherwise."""
    keywords = list(getattr(function, "_arg_keywords", None) or [])
    call = getattr(function, "_call_flat", None)
    if (call is None or sorted(keywords) != sorted(input_names)
            or getattr(function, "_num_positional_args", 0)
            or not hasattr(function, "captured_inputs")):
        return lambda tensors: function(**tensors)
    return lambda tensors: call([tensors[k] for k in keywords], function.captured_inputs)


def first_line(error):
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def _versions_of(table):
    return {name: sorted(versions) for name, versions in table.items()}


class LocalBackend:
    """SavedModels loaded in this process.  The table of loaded versions is replaced whole
    by the polling thread when versions come or go, so predict reads it without a lock."""

    def __init__(self, models: Models, where="predictor.models"):
        import_tensorflow()
        self.models = models
        self._where = where
        self._table = {}     # name -> {version: LocalVersion}
        self._warned = set() # version folders whose loading failed (warned once)
        self._table = self._scan(startup=True)
        self._listeners = []  # called (on the polling thread) when versions came or went
        self._stop = threading.Event()
        self._poller = None
        # the slot of the API being built: the polling thread logs as that API (its level,
        # its sink), not as the process
        self._log_slot = log.current_slot()
        if models.poll_interval and models.poll_interval > 0:
            self._poller = threading.Thread(target=self._poll, name="cortex-model-poll",
                                            daemon=True)
            self._poller.start()

    # -- loading ----------------------------------------------------------------------------
    def _sources(self, startup):
        if self.models.kind != "dir":
            sources = self.models.sources
            if startup:
                for source in sources.values():
                    key = "path" if self.models.kind == "path" else "paths"
                    if not os.path.isdir(source.path):
                        raise StartupError(f"{self._where}.{key}: {source.path} is not a directory")
            return sources
        if startup and not os.path.isdir(self.models.directory):
            raise StartupError(f"{self._where}.dir: {self.models.directory} is not a directory")
        sources = self.models.scan_directory()
        if startup and not sources:
            raise StartupError(f"{self._where}.dir: {self.models.directory} has no model folders")
        return sources

    def _scan(self, startup=False):
        """The table for what is on disk now, reusing what is loaded already."""
        table = {}
        for name, source in self._sources(startup).items():
            known = self._table.get(name, {})
            found = find_versions(source.path)
            if startup and not found:
                raise StartupError(
                    f"{self._where}: model '{name}' at {source.path} has no SavedModel (expected "
                    f"numeric version folders such as 1/ holding a saved_model.pb)")
            versions = {}
            for version, path in found.items():
                entry = known.get(version)
                if entry is not None and entry.path == path:
                    versions[version] = entry
                    continue
                try:
                    versions[version] = load_version(source, version, path)
                except Exception as e:
                    message = (str(e) if isinstance(e, TensorFlowClientError) else
                               f"cannot load model '{name}' of version '{version}' from {path}: "
                               f"{first_line(e)}")
                    if startup:
                        raise StartupError(f"{self._where}: {message}") from None
                    if path not in self._warned:
                        self._warned.add(path)
                        logger.warning(f"{message} (retrying every poll)")
                    continue
                self._warned.discard(path)
                if not startup:
                    logger.info(f"loaded model '{name}' of version '{version}' from {path}")
            for version in known:
                if version not in versions and version not in found:
                    logger.info(f"model '{name}' of version '{version}' is gone: unloaded")
            if versions or found or self.models.kind != "dir":
                table[name] = versions
        return table

    def _poll(self):
        _core.set_current_api(self._log_slot)
        while not self._stop.wait(self.models.poll_interval):
            try:
                before = _versions_of(self._table)
                self._table = self._scan()
                if _versions_of(self._table) != before:
                    for listener in list(self._listeners):
                        listener()
            except Exception as e:  # the next poll tries again
                logger.warning(f"looking for new model versions failed: {first_line(e)}")

    def on_change(self, listener):
        self._listeners.append(listener)

    def close(self):
        self._stop.set()

    # -- backend interface ------------------------------------------------------------------
    def model_names(self):
        return sorted(self._table) if self.models.kind == "dir" else None

    def lookup(self, name, version):
        versions = self._table.get(name)
        if versions is None:
            raise TensorFlowClientError(f"'{name}' model wasn't found in the list of available models")
        if version == "latest":
            if not versions:
                raise TensorFlowClientError(
                    f"model '{name}' accessed with tag latest couldn't be found")
            return versions[max(versions, key=int)]
        entry = versions.get(version)
        if entry is None:
            raise TensorFlowClientError(f"model '{name}' of version '{version}' couldn't be found")
        return entry

    def run(self, entry, tensors):
        # the function call runs the graph with the GIL released
        return {key: value.numpy() for key, value in entry.function(tensors).items()}

    def metadata(self):
        result = {}
        for name, versions in sorted(self._table.items()):
            for version in sorted(versions, key=int):
                entry = versions[version]
                result[f"{name}-{version}"] = {
                    "disk_path": entry.path,
                    "signature_key": entry.signature.key,
                    "input_signatures": {key: info.describe()
                                         for key, info in sorted(entry.signature.inputs.items())},
                    "timestamp": entry.timestamp,
                }
        return result


# -------------------------------------------------------------------------------------------
# values in and out


def make_tensor(value, info, key):
    """value as a tensor of the input's dtype and shape; a value of lower rank gets leading
    dimensions of size 1 (TF Serving fed such values to graph placeholders)."""
    try:
        if info.np_dtype is object:
            array = np.asarray(value, dtype=object)
            if not all(isinstance(item, (str, bytes)) for item in array.reshape(-1).tolist()):
                raise TypeError(f"Cannot convert {_short(value)} to a tensor of dtype string")
        else:
            array = np.asarray(value)
            if array.dtype.kind not in info.accepts:
                raise TypeError(f"Cannot convert {_short(value)} to a tensor of dtype "
                                f"{info.dtype.name}")
            array = array.astype(info.np_dtype, copy=False)
    except (TypeError, ValueError, OverflowError) as e:
        raise TensorFlowClientError(f'key "{key}": {_expected(info)}: {first_line(e)}') from None
    shape = info.shape
    if shape is not None:
        got = list(array.shape)
        if len(got) < len(shape):
            missing = len(shape) - len(got)
            if all(want in (-1, 1) for want in shape[:missing]):
                got = [1] * missing + got
                array = array.reshape(got)
        if len(got) != len(shape) or any(want not in (-1, have) for want, have in zip(shape, got)):
            raise TensorFlowClientError(f'key "{key}": {_expected(info)}: got shape {got}')
    return _eager_tensor(array, info.dtype)


def _eager_tensor(array, dtype):
    """tf.constant(array, dtype) for an array already of that dtype, through the EagerTensor
    constructor tf.constant ends in (a third less time a call) when this TensorFlow has it."""
    global _eager_tensor
    try:
        from tensorflow.python.eager import context
        from tensorflow.python.framework import ops
        ops.EagerTensor(np.zeros([1], np.float32), context.context().device_name,
                        tf.float32.as_datatype_enum)
    except Exception:  # another TensorFlow: the public way
        _eager_tensor = lambda array, dtype: tf.constant(array, dtype=dtype)  # noqa: E731
    else:
        ctx = context.context()

        def _eager_tensor(array, dtype):
            ctx.ensure_initialized()
            return ops.EagerTensor(array, ctx.device_name, dtype.as_datatype_enum)
    return _eager_tensor(array, dtype)


def _short(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _expected(info):
    shape = info.shape_text()
    if shape == "scalar":
        return "expected to be a scalar"
    if shape == "unknown":
        return "can be of any rank and shape"
    return f"expected shape {shape}"


def _floats(flat):
    """Floats as TensorFlow Serving's JSON gave them (C: _core.float_list): each float32 the
    double of its shortest text that reads back as the same float32, float64 as itself, and
    "NaN", "Infinity", "-Infinity" for the values JSON has no number for."""
    if flat.dtype.char not in "fd" or not flat.dtype.isnative:
        flat = flat.astype(np.float64 if flat.dtype.itemsize > 4 else np.float32)
    return _core.float_list(np.ascontiguousarray(flat))


def to_list(array):
    """One output as Cortex returned it: a flat list (the shape dropped); int64 and uint64
    as strings, bytes as base64, floats as floats, ints and bools as themselves, float16 as
    the int of its 16 bits."""
    array = np.asarray(array)
    flat = array.reshape(-1)
    kind = flat.dtype.kind
    if kind == "f":
        if flat.dtype.itemsize == 2:
            # DT_HALF: TensorFlow Serving puts each value's 16 bits in the int32 half_val, and
            # Cortex's client (json_format.MessageToDict, then the "halfVal" list) returned
            # those ints as they were: float16 0.5 is 14336
            return np.ascontiguousarray(flat, np.float16).view(np.uint16).tolist()
        return _floats(flat)
    if kind == "c":  # (real, imag) pairs, as scomplex_val and dcomplex_val
        flat = np.ascontiguousarray(flat)
        return _floats(flat.view(flat.real.dtype))
    if kind in "iu":
        if flat.dtype.itemsize == 8:
            return [str(v) for v in flat.tolist()]
        return flat.tolist()
    if kind == "b":
        return flat.tolist()
    if kind in "OSU":
        return [base64.b64encode(v if isinstance(v, bytes) else str(v).encode()).decode("ascii")
                for v in flat.tolist()]
    if flat.dtype.name == "bfloat16":
        return _floats(flat.astype(np.float32))
    return flat.tolist()


# -------------------------------------------------------------------------------------------
# the client


class TensorFlowClient:
    """What TensorFlowPredictor.__init__ gets as tensorflow_client."""

    def __init__(self, models: Models, backend):
        self._models = models
        self._backend = backend
        self._names = sorted(models.sources) if models.kind == "paths" else None

    def predict(self, model_input, model_name=None, model_version="latest") -> dict:
        """Runs the model on model_input (input name -> value) and returns output name -> flat
        list of values.  model_name is required with paths/dir; model_version is "latest"
        (the highest version) or a version number."""
        version = _version(model_version)
        name = self._model_name(model_name)
        entry = self._backend.lookup(name, version)
        signature = entry.signature
        if not isinstance(model_input, dict):
            raise TensorFlowClientError(f"model_input must be a dictionary of input names to "
                                        f"values, got {type(model_input).__name__}")
        for key in signature.input_names:
            if key not in model_input:
                raise TensorFlowClientError(
                    f"missing key '{key}' for model '{entry.name}' of version '{entry.version}'")
        tensors = {}
        for key, value in model_input.items():
            info = signature.inputs.get(key)
            if info is None:
                expected = ", ".join(f"'{k}'" for k in signature.input_names)
                raise TensorFlowClientError(
                    f"unexpected key '{key}' for model '{entry.name}' of version "
                    f"'{entry.version}' (its inputs are {expected})")
            tensors[key] = make_tensor(value, info, key)
        outputs = self._backend.run(entry, tensors)
        return {key: to_list(value) for key, value in outputs.items()}

    def _model_name(self, model_name):
        kind = self._models.kind
        if kind == "path":
            return next(iter(self._models.sources))
        if kind == "paths":
            if model_name is None:
                raise TensorFlowClientError(
                    f"model_name was not specified, choose one of the following: {self._names}")
            if model_name not in self._models.sources:
                raise TensorFlowClientError(
                    f"'{model_name}' model wasn't found in the list of available models")
            return model_name
        if model_name is None:
            raise TensorFlowClientError("model_name was not specified")
        return model_name

    @property
    def metadata(self) -> dict:
        """model name-version -> disk_path, signature_key, input_signatures, timestamp."""
        return self._backend.metadata()

    def on_change(self, listener):
        """listener() runs whenever the loaded versions change (models polled from disk)."""
        register = getattr(self._backend, "on_change", None)
        if register is not None:  # a remote TensorFlow Serving is not polled here
            register(listener)


def _version(model_version):
    if isinstance(model_version, int) and not isinstance(model_version, bool) and model_version >= 0:
        return str(model_version)
    if model_version == "latest":
        return "latest"
    if isinstance(model_version, str) and model_version.isascii() and model_version.isdigit():
        return str(int(model_version))
    raise TensorFlowClientError("model_version must be either a parse-able numeric value or 'latest'")


def make_client(api, root, tfs_address=None) -> TensorFlowClient:
    """The tensorflow_client of one tensorflow API: its models loaded in this process, or
    reached at the TensorFlow Serving at tfs_address."""
    import_tensorflow()
    fallback = api.raw.get("predictor", {}).get("signature_key")
    models = Models.from_mapping(api.models, root, fallback)
    where = f'api "{api.name}": predictor.models'
    try:
        if tfs_address:
            from .tfs_remote import RemoteBackend
            backend = RemoteBackend(tfs_address, models, where)
        else:
            backend = LocalBackend(models, where)
    except TensorFlowClientError as e:
        raise StartupError(f"{where}: {e}") from None
    return TensorFlowClient(models, backend)
