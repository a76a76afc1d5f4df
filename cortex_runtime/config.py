"""cortex.yaml -> validated ApiSpec objects.

Every problem is a StartupError whose message is one line naming the file and the key, e.g.
'cortex.yaml: api "iris": predictor.type: required'. Unknown keys are warnings, as in Cortex.
A key given as YAML null (`config:` with nothing after it) counts as not given.
"""
import json
import os
import posixpath
import re
from dataclasses import dataclass

import yaml

from .errors import StartupError

CONFIG_NAMES = ("cortex.yaml", "cortex.yml")
KINDS = ("RealtimeAPI", "AsyncAPI")
PREDICTOR_TYPES = ("python", "tensorflow")
LOG_LEVELS = ("debug", "info", "warning", "error")
MAX_NAME_LENGTH = 42
DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
# One or more non-empty path segments of URL path characters (RFC 3986 pchar).
ENDPOINT = re.compile(r"(/[-A-Za-z0-9._~%!$&'()*+,;=:@]+)+")
RESERVED_ENDPOINTS = ("/healthz", "/metrics")
MODEL_NAME = re.compile(r"[A-Za-z0-9_-]+")

# Keys we read, plus keys Cortex had that mean nothing on one machine (accepted, ignored).
API_KEYS = {"name", "kind", "predictor", "networking", "autoscaling", "compute", "update_strategy"}
PREDICTOR_KEYS = {
    "type", "path", "config", "env", "python_path", "log_level", "processes_per_replica",
    "threads_per_process", "server_side_batching", "models", "signature_key",
    "image", "tensorflow_serving_image", "shm_size", "dependencies", "multi_model_reloading",
}
NETWORKING_KEYS = {"endpoint", "api_gateway"}
# cache_size and disk_cache_size (Cortex's model caching) are accepted and ignored;
# poll_interval is ours (how often new model versions are looked for, default 10 s).
MODELS_KEYS = {"path", "paths", "dir", "signature_key", "cache_size", "disk_cache_size",
               "poll_interval"}
MODEL_PATH_KEYS = {"name", "path", "signature_key"}
BATCHING_KEYS = {"max_batch_size", "batch_interval"}
# Cortex v0.31-0.33 autoscaling keys; listed so that a typo such as max_replica_concurency
# gets a warning instead of silently meaning the default.
AUTOSCALING_KEYS = {
    "min_replicas", "max_replicas", "init_replicas", "max_replica_concurrency",
    "target_replica_concurrency", "window", "downscale_stabilization_period",
    "upscale_stabilization_period", "max_downscale_factor", "max_upscale_factor",
    "downscale_tolerance", "upscale_tolerance",
}

DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
                  "m": 60.0, "h": 3600.0}
DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


@dataclass
class Batching:
    max_batch_size: int
    batch_interval: float  # seconds


@dataclass
class ApiSpec:
    name: str
    kind: str
    predictor_type: str
    predictor_path: str
    config: dict
    env: dict
    python_path: "str | None"
    log_level: str
    processes: int
    threads: int
    batching: "Batching | None"
    models: "dict | None"
    endpoint: str
    max_replica_concurrency: int
    raw: dict


@dataclass
class Project:
    root: str
    config_file: str
    apis: list
    warnings: list


def load_project(path: str = ".", api_names: "list | None" = None,
                 overrides: "dict | None" = None) -> Project:
    """Loads and validates the project at path (a directory or a config file)."""
    config_file = find_config(path)
    root = os.path.dirname(config_file)
    label = os.path.basename(config_file)
    document = read_yaml(config_file, label)

    if isinstance(document, dict):
        entries = [document]
    elif isinstance(document, list):
        entries = document
    else:
        raise StartupError(f"{label}: expected a list of APIs or one API mapping, "
                           f"got {type_name(document)}")
    if not entries:
        raise StartupError(f"{label}: no APIs defined (the list is empty)")

    warnings = []
    apis = []
    for index, raw in enumerate(entries):
        api = ApiValidator(label, root, index, raw, warnings).validate()
        for other_index, other in enumerate(apis):
            if other.name == api.name:
                raise StartupError(f'{label}: api at index {index}: name: "{api.name}" '
                                   f"is already used by the api at index {other_index}")
            if other.endpoint == api.endpoint:
                raise StartupError(f'{label}: api "{api.name}": networking.endpoint: '
                                   f'"{api.endpoint}" is already used by api "{other.name}"')
        apis.append(api)

    if api_names:
        by_name = {api.name: api for api in apis}
        for name in api_names:
            if name not in by_name:
                known = ", ".join(f'"{api.name}"' for api in apis)
                raise StartupError(f'{label}: no api named "{name}" (defined: {known})')
        apis = [api for api in apis if api.name in api_names]

    apply_overrides(apis, overrides or {})
    return Project(root=root, config_file=config_file, apis=apis, warnings=warnings)


def find_config(path: str) -> str:
    path = os.path.abspath(path)
    if os.path.isdir(path):
        for name in CONFIG_NAMES:
            candidate = os.path.join(path, name)
            if os.path.isfile(candidate):
                return candidate
        raise StartupError(f"{CONFIG_NAMES[0]}: not found in {path}")
    if os.path.isfile(path):
        return path
    raise StartupError(f"{path}: no such file or directory")


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key; the base class reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {quote(key)}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(config_file: str, label: str):
    try:
        with open(config_file, "rb") as f:
            data = f.read()
    except OSError as e:
        raise StartupError(f"{label}: cannot read: {e.strerror}") from None
    try:
        document = yaml.load(data, Loader=UniqueKeyLoader)
    except yaml.YAMLError as e:
        raise StartupError(f"{label}: invalid YAML: {describe_yaml_error(e)}") from None
    if document is None:
        raise StartupError(f"{label}: the file is empty, expected a list of APIs "
                           "or one API mapping")
    return document


def describe_yaml_error(error) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None)
    if problem is None:
        return " ".join(str(error).split())
    context = getattr(error, "context", None)
    text = f"{context}: {problem}" if context else problem
    if mark is not None:
        text += f" (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(text.split())


class ApiValidator:
    """Validates one API mapping; `where` prefixes every message."""

    def __init__(self, label, root, index, raw, warnings):
        self.label = label
        self.root = root
        self.raw = raw
        self.warnings = warnings
        self.where = f"{label}: api at index {index}"

    def fail(self, key, message):
        raise StartupError(f"{self.where}: {key}: {message}")

    def warn_unknown(self, mapping, known, prefix=""):
        for key in mapping:
            if key not in known:
                self.warnings.append(f'{self.where}: unknown key "{prefix}{key}" (ignored)')

    def mapping(self, parent, key, path):
        """parent[key] as a dict ({} when absent or null)."""
        value = parent.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(path, f"must be a mapping, got {type_name(value)}")
        return value

    def integer(self, parent, key, path, default, low, high=None):
        value = parent.get(key)
        if value is None:
            return default
        if not is_int(value) or value < low or (high is not None and value > high):
            wanted = (f"an integer >= {low}" if high is None
                      else f"an integer from {low} to {high}")
            self.fail(path, f"must be {wanted}, got {show(value)}")
        return value

    def choice(self, parent, key, path, choices, default):
        value = parent.get(key)
        if value is None:
            if default is None:
                self.fail(path, "required")
            return default
        if not isinstance(value, str) or value not in choices:
            quoted = [f'"{c}"' for c in choices]
            options = " or ".join(quoted) if len(quoted) == 2 else "one of " + ", ".join(quoted)
            self.fail(path, f"must be {options}, got {show(value)}")
        return value

    def validate(self) -> ApiSpec:
        raw = self.raw
        if not isinstance(raw, dict):
            raise StartupError(f"{self.where}: expected an API mapping, got {type_name(raw)}")
        name = self.name(raw.get("name"))
        self.where = f'{self.label}: api "{name}"'
        self.warn_unknown(raw, API_KEYS)

        kind = self.choice(raw, "kind", "kind", KINDS, KINDS[0])
        predictor = raw.get("predictor")
        if predictor is None:
            self.fail("predictor", "required")
        if not isinstance(predictor, dict):
            self.fail("predictor", f"must be a mapping, got {type_name(predictor)}")
        self.warn_unknown(predictor, PREDICTOR_KEYS, "predictor.")

        predictor_type = self.choice(predictor, "type", "predictor.type", PREDICTOR_TYPES, None)
        models = self.models(predictor, predictor_type)

        networking = self.mapping(raw, "networking", "networking")
        self.warn_unknown(networking, NETWORKING_KEYS, "networking.")
        autoscaling = self.mapping(raw, "autoscaling", "autoscaling")
        self.warn_unknown(autoscaling, AUTOSCALING_KEYS, "autoscaling.")

        return ApiSpec(
            name=name,
            kind=kind,
            predictor_type=predictor_type,
            predictor_path=self.predictor_path(predictor.get("path")),
            config=self.mapping(predictor, "config", "predictor.config"),
            env=self.env(self.mapping(predictor, "env", "predictor.env")),
            python_path=self.python_path(predictor.get("python_path")),
            log_level=self.choice(predictor, "log_level", "predictor.log_level",
                                  LOG_LEVELS, "info"),
            processes=self.integer(predictor, "processes_per_replica",
                                   "predictor.processes_per_replica", 1, 1),
            threads=self.integer(predictor, "threads_per_process",
                                 "predictor.threads_per_process", 1, 1),
            batching=self.batching(predictor),
            models=models,
            endpoint=self.endpoint(networking.get("endpoint"), name),
            max_replica_concurrency=self.integer(
                autoscaling, "max_replica_concurrency",
                "autoscaling.max_replica_concurrency", 1024, 1),
            raw=raw,
        )

    def models(self, predictor, predictor_type):
        """predictor.models, checked for type tensorflow (path | paths | dir, signature_key,
        poll_interval); kept as the raw mapping, which cortex_runtime.tensorflow reads."""
        models = predictor.get("models")
        if models is not None and not isinstance(models, dict):
            self.fail("predictor.models", f"must be a mapping, got {type_name(models)}")
        if predictor_type != "tensorflow":
            return models
        if models is None:
            self.fail("predictor.models", "required for predictor.type tensorflow "
                                          "(one of path, paths or dir)")
        self.warn_unknown(models, MODELS_KEYS, "predictor.models.")
        given = [key for key in ("path", "paths", "dir") if models.get(key) is not None]
        if not given:
            self.fail("predictor.models", "one of path, paths or dir is required")
        if len(given) > 1:
            self.fail("predictor.models", f"only one of path, paths or dir may be given, "
                                          f"got {' and '.join(given)}")
        self.signature_key(models, "predictor.models.signature_key")
        self.signature_key(predictor, "predictor.signature_key")
        if given[0] != "paths":
            self.model_path(models[given[0]], f"predictor.models.{given[0]}")
        else:
            self.model_paths(models["paths"])
        interval = models.get("poll_interval")
        if interval is not None:
            seconds = parse_duration(interval)
            if seconds is None or seconds < 0:
                self.fail("predictor.models.poll_interval",
                          f'must be a duration such as "10s" or "500ms", or a number of seconds '
                          f"(0 turns polling off), got {show(interval)}")
        return models

    def signature_key(self, parent, key):
        value = parent.get(key.rsplit(".", 1)[1])
        if value is not None and (not isinstance(value, str) or not value):
            self.fail(key, f"must be a non-empty string, got {show(value)}")

    def model_path(self, value, key):
        """A local directory: absolute, or relative to the project directory (not checked
        here: the models are looked for when they are loaded)."""
        if not isinstance(value, str) or not value:
            self.fail(key, f"must be a non-empty string, got {show(value)}")
        if re.match(r"[a-z][a-z0-9+.-]*://", value):
            self.fail(key, f"must be a local directory (remote storage such as s3:// is not "
                           f"supported here), got {show(value)}")

    def model_paths(self, paths):
        if not isinstance(paths, list) or not paths:
            self.fail("predictor.models.paths", "must be a non-empty list of mappings with "
                                                f"name and path, got {show(paths)}")
        names = {}
        for index, entry in enumerate(paths):
            where = f"predictor.models.paths[{index}]"
            if not isinstance(entry, dict):
                self.fail(where, f"must be a mapping with name and path, got {type_name(entry)}")
            self.warn_unknown(entry, MODEL_PATH_KEYS, f"{where}.")
            name = entry.get("name")
            if name is None:
                self.fail(f"{where}.name", "required")
            if not isinstance(name, str) or not MODEL_NAME.fullmatch(name):
                self.fail(f"{where}.name", "must contain only letters, numbers, dashes and "
                                           f"underscores, got {show(name)}")
            if name in names:
                self.fail(f"{where}.name", f"{quote(name)} is already used by "
                                           f"predictor.models.paths[{names[name]}]")
            names[name] = index
            if entry.get("path") is None:
                self.fail(f"{where}.path", "required")
            self.model_path(entry["path"], f"{where}.path")
            self.signature_key(entry, f"{where}.signature_key")

    def name(self, name):
        if name is None:
            self.fail("name", "required")
        if not isinstance(name, str):
            self.fail("name", f"must be a string, got {type_name(name)}")
        if len(name) > MAX_NAME_LENGTH:
            self.fail("name", f"must be at most {MAX_NAME_LENGTH} characters long, "
                              f"got {len(name)} ({show(name)})")
        if not DNS_1035.fullmatch(name):
            self.fail("name", "must contain only lower case letters, numbers and dashes, "
                              f"start with a letter and not end with a dash, got {show(name)}")
        return name

    def relative_path(self, value, key):
        """A normalised relative path that stays inside the project root."""
        if not isinstance(value, str) or not value:
            self.fail(key, f"must be a non-empty string, got {show(value)}")
        if os.path.isabs(value) or value.startswith("~"):
            self.fail(key, f"must be relative to the project directory, got {show(value)}")
        normal = posixpath.normpath(value.replace(os.sep, "/"))
        if normal == ".." or normal.startswith("../"):
            self.fail(key, f"must stay inside the project directory, got {show(value)}")
        return normal

    def predictor_path(self, value):
        if value is None:
            self.fail("predictor.path", "required")
        normal = self.relative_path(value, "predictor.path")
        if not normal.endswith(".py"):
            self.fail("predictor.path", f"must be a .py file, got {show(value)}")
        if not os.path.isfile(os.path.join(self.root, normal)):
            self.fail("predictor.path", f"{show(value)} does not exist in {self.root}")
        return value

    def python_path(self, value):
        if value is None:
            return None
        normal = self.relative_path(value, "predictor.python_path")
        if not os.path.isdir(os.path.join(self.root, normal)):
            self.fail("predictor.python_path",
                      f"{show(value)} is not a directory in {self.root}")
        return normal

    def env(self, env):
        result = {}
        for key, value in env.items():
            path = f"predictor.env.{key}"
            if not isinstance(key, str) or not key or "=" in key or "\0" in key:
                self.fail("predictor.env", f"invalid variable name {show(key)}")
            if key.startswith("CORTEX_"):
                self.fail(path, "environment variables starting with CORTEX_ are reserved")
            if isinstance(value, bool):
                value = "true" if value else "false"  # as written in YAML, not Python's True
            elif isinstance(value, (int, float, str)):
                value = str(value)
            else:
                self.fail(path, f"must be a string, got {type_name(value)}")
            if "\0" in value:
                self.fail(path, "must not contain a NUL character")
            result[key] = value
        return result

    def batching(self, predictor):
        batching = self.mapping(predictor, "server_side_batching",
                                "predictor.server_side_batching")
        if not batching and predictor.get("server_side_batching") is None:
            return None
        self.warn_unknown(batching, BATCHING_KEYS, "predictor.server_side_batching.")
        prefix = "predictor.server_side_batching."
        if batching.get("max_batch_size") is None:
            self.fail(prefix + "max_batch_size", "required")
        size = self.integer(batching, "max_batch_size", prefix + "max_batch_size", None, 2, 1024)
        interval = batching.get("batch_interval")
        if interval is None:
            self.fail(prefix + "batch_interval", "required")
        seconds = parse_duration(interval)
        if seconds is None:
            self.fail(prefix + "batch_interval",
                      f'must be a duration such as "100ms" or "0.1s", or a number of seconds, '
                      f"got {show(interval)}")
        if seconds <= 0:
            self.fail(prefix + "batch_interval", f"must be greater than 0, got {show(interval)}")
        return Batching(max_batch_size=size, batch_interval=seconds)

    def endpoint(self, value, name):
        if value is None:
            return "/" + name
        if not isinstance(value, str) or not value.startswith("/"):
            self.fail("networking.endpoint", f'must start with "/", got {show(value)}')
        endpoint = value.rstrip("/")
        if not endpoint:
            self.fail("networking.endpoint", 'must not be "/" (it is always served when '
                                             "the project has one API)")
        if not ENDPOINT.fullmatch(endpoint):
            self.fail("networking.endpoint", "must be a URL path of non-empty segments of "
                                             f"letters, digits and -._~, got {show(value)}")
        if endpoint in RESERVED_ENDPOINTS:
            self.fail("networking.endpoint", f"{show(value)} is reserved by the server")
        return endpoint


def parse_duration(value):
    """Seconds from a Go-style duration ("100ms", "1m30s", "0.1s") or a bare number; None if
    it is neither."""
    if is_int(value) or isinstance(value, float):
        return float(value)
    if not isinstance(value, str):
        return None
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    total = 0.0
    position = 0
    while position < len(text):
        match = DURATION_PART.match(text, position)
        if match is None:
            return None
        total += float(match.group(1)) * DURATION_UNITS[match.group(2)]
        position = match.end()
    return total if text else None


def apply_overrides(apis, overrides):
    processes = overrides.get("processes")
    threads = overrides.get("threads")
    log_level = overrides.get("log_level")
    for flag, value in (("--processes", processes), ("--threads", threads)):
        if value is not None and (not is_int(value) or value < 1):
            raise StartupError(f"{flag}: must be an integer >= 1, got {show(value)}")
    if log_level is not None and log_level not in LOG_LEVELS:
        raise StartupError(f"--log-level: must be one of {', '.join(LOG_LEVELS)}, "
                           f"got {show(log_level)}")
    for api in apis:
        if processes is not None:
            api.processes = processes
        if threads is not None:
            api.threads = threads
        if log_level is not None:
            api.log_level = log_level


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def type_name(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a value of type {type(value).__name__}"


def quote(value) -> str:
    # JSON string syntax keeps a message on one line whatever the value contains.
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)


def show(value) -> str:
    """A value for an error message: strings quoted, others by type and value."""
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, (list, dict)):
        return type_name(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return repr(value)
