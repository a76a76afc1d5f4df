"""The remote backend of tensorflow_client (`serve --tfs-address HOST:PORT`): the same calls
sent over gRPC to a running TensorFlow Serving's PredictionService, as Cortex did.

Needs `grpcio` and `tensorflow-serving-api` (the latter's generated protobuf modules only:
install it with `--no-deps` next to tensorflow-cpu, since it names the `tensorflow` package).
Model names: `paths` and `dir` use the configured (or folder) names; the model of `path` is
the one TensorFlow Serving knows by the last part of that path (`--model_name` of
tensorflow_model_server), e.g. `iris` for `models/iris`.  Versions are asked of TensorFlow
Serving (GetModelStatus) at most once per poll interval, and at once when a version is asked
for that it did not have."""
import os
import threading
import time

from . import tensorflow as tfc
from .errors import StartupError
from .tensorflow import TensorFlowClientError, TensorInfo, Signature, choose_signature_key

CONNECT_TIMEOUT = 30.0
PREDICT_TIMEOUT = 300.0  # Cortex's timeout for one Predict call


class RemoteVersion:
    __slots__ = ("name", "version", "signature")

    def __init__(self, name, version, signature):
        self.name = name
        self.version = version
        self.signature = signature


def signature_from_proto(key, signature_def):
    tf = tfc.tf

    def info(tensor_info):
        shape = tensor_info.tensor_shape
        dims = None if shape.unknown_rank else [int(d.size) for d in shape.dim]
        return TensorInfo(tf.as_dtype(tensor_info.dtype), dims)

    return Signature(key, {k: info(v) for k, v in signature_def.inputs.items()},
                     {k: info(v) for k, v in signature_def.outputs.items()})


class RemoteBackend:
    def __init__(self, address, models, where="predictor.models", timeout=PREDICT_TIMEOUT):
        tfc.import_tensorflow()
        try:
            import grpc
            from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                                 model_service_pb2_grpc, predict_pb2,
                                                 prediction_service_pb2_grpc)
        except ImportError as e:
            raise StartupError(f"--tfs-address needs the grpcio and tensorflow-serving-api "
                               f"packages (pip install grpcio; pip install --no-deps "
                               f"tensorflow-serving-api): {e}") from None
        self._grpc = grpc
        self._metadata_pb2 = get_model_metadata_pb2
        self._status_pb2 = get_model_status_pb2
        self._predict_pb2 = predict_pb2
        self.address = address
        self.models = models
        self._timeout = timeout
        self._channel = grpc.insecure_channel(address, options=[
            ("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)])
        try:
            grpc.channel_ready_future(self._channel).result(timeout=CONNECT_TIMEOUT)
        except grpc.FutureTimeoutError:
            self._channel.close()
            raise StartupError(f"--tfs-address: no TensorFlow Serving answered at {address} "
                               f"within {CONNECT_TIMEOUT:.0f} s") from None
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._status = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._versions = {}    # TFS name -> (monotonic time asked, {version: RemoteVersion|None})
        self._lock = threading.Lock()
        self._tfs_names = {name: os.path.basename(source.path.rstrip(os.sep))
                           if models.kind == "path" else name
                           for name, source in models.sources.items()}
        for name in self._tfs_names.values():
            if not self._available(name, force=True):
                raise StartupError(f"{where}: TensorFlow Serving at {address} has no available "
                                   f"version of model '{name}'")

    # -- TensorFlow Serving -----------------------------------------------------------------
    def _available(self, name, force=False):
        """{version: RemoteVersion or None (signature not fetched yet)}, or None when TFS
        does not know the model."""
        cached = self._versions.get(name)
        interval = self.models.poll_interval
        if cached is not None and not force and (
                not interval or time.monotonic() - cached[0] < interval):
            return cached[1]
        request = self._status_pb2.GetModelStatusRequest()
        request.model_spec.name = name
        try:
            response = self._status.GetModelStatus(request, timeout=self._timeout)
        except self._grpc.RpcError as e:
            if e.code() == self._grpc.StatusCode.NOT_FOUND:
                self._versions.pop(name, None)
                return None
            raise TensorFlowClientError(f"TensorFlow Serving at {self.address}: "
                                        f"{e.code().name}: {e.details()}") from None
        available = self._status_pb2.ModelVersionStatus.AVAILABLE
        old = cached[1] if cached else {}
        versions = {str(s.version): old.get(str(s.version))
                    for s in response.model_version_status if s.state == available}
        self._versions[name] = (time.monotonic(), versions)
        return versions

    def _signature(self, name, version, wanted_key):
        request = self._metadata_pb2.GetModelMetadataRequest()
        request.model_spec.name = name
        request.model_spec.version.value = int(version)
        request.metadata_field.append("signature_def")
        try:
            response = self._predict.GetModelMetadata(request, timeout=self._timeout)
        except self._grpc.RpcError as e:
            raise TensorFlowClientError(f"couldn't find model '{name}' of version '{version}' to "
                                        f"extract the signature def: {e.details()}") from None
        signature_map = self._metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        defs = signature_map.signature_def
        keys = sorted(k for k in defs if not k.startswith("__"))  # e.g. __saved_model_init_op
        key = choose_signature_key(keys, wanted_key, name, version)
        return signature_from_proto(key, defs[key])

    def _source_key(self, name):
        source = self.models.sources.get(name)
        return source.signature_key if source is not None else self.models.signature_key

    # -- backend interface ------------------------------------------------------------------
    def model_names(self):
        if self.models.kind != "dir":
            return None
        return sorted(self.models.scan_directory())

    def lookup(self, name, version):
        tfs_name = self._tfs_names.get(name, name)
        versions = self._available(tfs_name)
        if versions is None:
            raise TensorFlowClientError(f"'{tfs_name}' model wasn't found in the list of "
                                        "available models")
        if version == "latest":
            if not versions:
                versions = self._available(tfs_name, force=True) or {}
            if not versions:
                raise TensorFlowClientError(
                    f"model '{tfs_name}' accessed with tag latest couldn't be found")
            version = max(versions, key=int)
        elif version not in versions:
            versions = self._available(tfs_name, force=True) or {}
            if version not in versions:
                raise TensorFlowClientError(
                    f"model '{tfs_name}' of version '{version}' couldn't be found")
        entry = versions.get(version)
        if entry is None:
            with self._lock:
                entry = versions.get(version)
                if entry is None:
                    signature = self._signature(tfs_name, version, self._source_key(name))
                    entry = versions[version] = RemoteVersion(tfs_name, version, signature)
        return entry

    def run(self, entry, tensors):
        tf = tfc.tf
        request = self._predict_pb2.PredictRequest()
        request.model_spec.name = entry.name
        request.model_spec.version.value = int(entry.version)
        request.model_spec.signature_name = entry.signature.key
        for key, tensor in tensors.items():
            request.inputs[key].CopyFrom(tf.make_tensor_proto(tensor.numpy()))
        try:
            response = self._predict.Predict(request, timeout=self._timeout)
        except self._grpc.RpcError as e:
            raise TensorFlowClientError(
                f"model '{entry.name}' of version '{entry.version}': TensorFlow Serving "
                f"answered {e.code().name}: {e.details()}") from None
        return {key: tf.make_ndarray(proto) for key, proto in response.outputs.items()}

    def metadata(self):
        names = list(self._tfs_names.items())
        if self.models.kind == "dir":
            names = [(name, name) for name in self.models.scan_directory()]
        result = {}
        for name, tfs_name in names:
            try:
                versions = self._available(tfs_name) or {}
                for version in sorted(versions, key=int):
                    entry = self.lookup(name, version)
                    result[f"{tfs_name}-{version}"] = {
                        "tfs_address": self.address,
                        "signature_key": entry.signature.key,
                        "input_signatures": {k: info.describe() for k, info
                                             in sorted(entry.signature.inputs.items())},
                    }
            except TensorFlowClientError:
                continue
        return result

    def close(self):
        self._channel.close()
