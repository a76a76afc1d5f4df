"""predictor.models for predictor.type tensorflow: one-line errors naming the key (no
tensorflow needed: checked when the config is loaded)."""
import pytest

from conftest import write_project

from cortex_runtime.config import load_project
from cortex_runtime.errors import StartupError


def load(tmp_path, models_yaml):
    write_project(tmp_path, {
        "cortex.yaml": "- name: tf\n  predictor:\n    type: tensorflow\n    path: predictor.py\n"
                       + models_yaml,
        "predictor.py": "class TensorFlowPredictor:\n    pass\n"})
    return load_project(str(tmp_path))


@pytest.mark.parametrize("models_yaml, message", [
    ("", 'predictor.models: required for predictor.type tensorflow (one of path, paths or dir)'),
    ("    models: {signature_key: a}\n", "predictor.models: one of path, paths or dir is required"),
    ("    models: {path: a, dir: b}\n",
     "predictor.models: only one of path, paths or dir may be given, got path and dir"),
    ("    models: {path: 3}\n", "predictor.models.path: must be a non-empty string, got 3"),
    ("    models: {dir: 's3://bucket/models'}\n",
     'predictor.models.dir: must be a local directory (remote storage such as s3:// is not '
     'supported here), got "s3://bucket/models"'),
    ("    models: {paths: []}\n",
     "predictor.models.paths: must be a non-empty list of mappings with name and path, got a list"),
    ("    models: {paths: [{path: a}]}\n", "predictor.models.paths[0].name: required"),
    ("    models: {paths: [{name: a b, path: a}]}\n",
     'predictor.models.paths[0].name: must contain only letters, numbers, dashes and '
     'underscores, got "a b"'),
    ("    models: {paths: [{name: a, path: x}, {name: a, path: y}]}\n",
     'predictor.models.paths[1].name: "a" is already used by predictor.models.paths[0]'),
    ("    models: {paths: [{name: a}]}\n", "predictor.models.paths[0].path: required"),
    ("    models: {paths: [{name: a, path: x, signature_key: 1}]}\n",
     "predictor.models.paths[0].signature_key: must be a non-empty string, got 1"),
    ("    models: {path: a, signature_key: ''}\n",
     'predictor.models.signature_key: must be a non-empty string, got ""'),
    ("    models: {path: a, poll_interval: soon}\n",
     'predictor.models.poll_interval: must be a duration such as "10s" or "500ms", or a number '
     'of seconds (0 turns polling off), got "soon"'),
])
def test_models_errors_name_the_key(tmp_path, models_yaml, message):
    with pytest.raises(StartupError) as info:
        load(tmp_path, models_yaml)
    assert str(info.value) == f'cortex.yaml: api "tf": {message}'


def test_models_are_kept_as_written_and_cortex_cache_keys_accepted(tmp_path):
    loaded = load(tmp_path, "    models:\n      dir: models\n      cache_size: 2\n"
                            "      disk_cache_size: 3\n      poll_interval: 500ms\n"
                            "    signature_key: predict\n")
    assert loaded.warnings == []
    assert loaded.apis[0].models == {"dir": "models", "cache_size": 2, "disk_cache_size": 3,
                                     "poll_interval": "500ms"}


def test_unknown_models_keys_are_warnings(tmp_path):
    loaded = load(tmp_path, "    models: {path: a, pth: b, paths: null}\n")
    assert loaded.warnings == ['cortex.yaml: api "tf": unknown key "predictor.models.pth" (ignored)']
