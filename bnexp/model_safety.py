"""What a saved Keras model would run when loaded, judged from its stored description before TensorFlow starts.

A model file is not only data. Loading runs what its description names, and some of that is code:
- a `Lambda` layer stores its Python function as marshalled bytecode (tf-keras revives it from `.h5` files and
  SavedModels whatever `safe_mode` says; Keras 3 and tf-keras `.keras` files refuse it under `safe_mode`);
- a tf-keras op layer (`TFOpLambda`) names any of TensorFlow's ~8500 public functions (tf.io, tf.print,
  tf.load_op_library, ...), a `TFSMLayer` loads a SavedModel from a path, a `TensorFlowOpLayer` runs a raw op;
- a SavedModel folder is a TensorFlow program: its graph runs as stored (file, process or network ops
  included), whatever its Keras layers are. TensorFlow's security policy: treat an untrusted model as code.

`refusal` judges the config bnexp.doctor.inspect_model read (a .keras file's config.json, an .h5 file's
`model_config` attribute; for a SavedModel it reads keras_metadata.pb and the graph itself, with a few lines
of protobuf wire-format parsing), without TensorFlow, and returns the one line that refuses the file, or
None. Classes that are not Keras' own are refused too while no `custom_objects=` module is named: Keras
cannot load them without their code, and saying so here takes milliseconds instead of TensorFlow's start-up.
The user's opt-in (`trust_model=true`, Keras' "unsafe deserialization") skips these checks.
"""

from __future__ import annotations

import base64
import binascii
import functools
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

TRUST_HINT = "if you trust the file's author, add trust_model=true (Keras calls this unsafe deserialization)"
CUSTOM_HINT = ("pass the Python module that defines it with custom_objects=your.module (importable from the "
               "current directory or PYTHONPATH)")

# Built-in layers that carry code or a program in their config.
CODE_LAYERS = {
    "Lambda": "its Python function, stored in the file as bytecode, runs when the model is loaded",
    "TFSMLayer": "it loads and runs a TensorFlow SavedModel from a path, a program",
    "TensorFlowOpLayer": "it runs whatever TensorFlow op its config names",
}
# tf-keras op layers: a TensorFlow function resolved by name among all of TensorFlow's public API.
TF_FUNCTION_LAYERS = {"TFOpLambda", "SlicingOpLambda"}
TF_ATTRIBUTE_LAYERS = {"ClassMethod", "InstanceMethod", "InstanceProperty"}
TF_FUNCTION_WHY = ("a model file may call TensorFlow's tensor math only, not functions that can touch files, "
                   "processes or the network")
# Namespaces of TensorFlow functions that only compute on tensors (a model file may call these).
TF_MATH_NAMESPACES = {"__operators__", "math", "nn", "linalg", "signal", "image", "bitwise", "sparse", "ragged",
                      "strings", "random", "sets", "dtypes"}
# Top-level TensorFlow functions that only compute on tensors (tf.print, tf.py_function, tf.load_op_library and
# the like are top-level too, hence a list of the allowed ones).
TF_ARRAY_FUNCTIONS = set("""
    abs add add_n argmax argmin argsort as_string batch_to_space bitcast boolean_mask broadcast_to cast
    clip_by_norm clip_by_value complex concat constant convert_to_tensor cos cumsum divide einsum ensure_shape
    equal exp expand_dims eye fill floor gather gather_nd greater greater_equal identity identity_n less
    less_equal linspace logical_and logical_not logical_or matmul maximum meshgrid minimum multiply negative norm
    not_equal one_hot ones ones_like pad parallel_stack pow range rank realdiv reduce_all reduce_any
    reduce_logsumexp reduce_max reduce_mean reduce_min reduce_prod reduce_sum repeat reshape reverse
    reverse_sequence roll round saturate_cast scalar_mul scatter_nd searchsorted sequence_mask shape shape_n
    sigmoid sign sin size slice sort space_to_batch space_to_batch_nd split sqrt square squeeze stack
    stop_gradient strided_slice subtract tanh tensor_scatter_nd_add tensor_scatter_nd_max tensor_scatter_nd_min
    tensor_scatter_nd_sub tensor_scatter_nd_update tensordot tile transpose truediv truncatediv truncatemod unique
    unique_with_counts unravel_index unstack where zeros zeros_like""".split())
# Graph ops worth naming in a SavedModel refusal. Only for the message: every SavedModel is refused anyway.
RISKY_OPS = {"WriteFile", "ReadFile", "MatchingFiles", "PyFunc", "PyFuncStateless", "EagerPyFunc", "PrintV2",
             "ImmutableConst", "CreateSummaryFileWriter", "WriteSummary", "WriteScalarSummary", "DebugIdentityV2",
             "DebugIdentityV3", "TFRecordDataset", "TextLineDataset", "FixedLengthRecordDataset", "RpcCall",
             "XlaCallModule"}
# Packages Keras itself deserialises classes from (keras.src.saving.serialization_lib), and tf-keras.
KERAS_PACKAGES = {"keras", "keras_hub", "keras_cv", "keras_nlp", "tf_keras"}
# Installed Keras packages whose public API lists the built-in names (Keras 3 and tf-keras).
API_PACKAGES = ("keras", "tf_keras")
# API folders whose functions Keras resolves by bare name (serialization_lib.BUILTIN_MODULES).
FUNCTION_FOLDERS = {"activations", "constraints", "initializers", "losses", "metrics", "regularizers"}
# Classes a saved config names that no public API exports.
INTERNAL_CLASSES = {"Functional", "Model", "Sequential", "InputLayer", *TF_FUNCTION_LAYERS, *TF_ATTRIBUTE_LAYERS}
# compile=False: the training setup (optimizer, loss, metrics) is never deserialised, so it is not judged.
SKIPPED_KEYS = {"compile_config"}
SERIALIZATION_MARKER = re.compile(r"__\w+__")  # __tuple__, __keras_tensor__, __numpy__, ...: data, not classes
BASE64 = re.compile(r"[A-Za-z0-9+/=\s]{40,}")
MARSHALLED_CODE = 0xE3  # marshal's first byte for a code object (TYPE_CODE | FLAG_REF)


@dataclass(frozen=True)
class Hazard:
    runs_code: bool  # True: loading would run code from the file; False: a class Keras has no code for here
    what: str        # "holds a Lambda layer 'model/inner/marker'"
    why: str


# ---------------------------------------------------------------- the verdict


def refusal(path: str, model: dict, custom_objects: str | None) -> str | None:
    """The one line that refuses `model` (doctor.inspect_model's dict for `path`), or None when it may load."""
    if model["format"] == "savedmodel":
        return savedmodel_refusal(path)
    hazards = list(find_hazards(model["config"]))
    code = next((h for h in hazards if h.runs_code), None)
    if code:
        return (f"model={path} {code.what}: {code.why}; bnexp doctor runs no code from a model file unless told "
                f"to: {TRUST_HINT}")
    custom = next((h for h in hazards if not h.runs_code), None)
    if custom and not custom_objects:
        return f"model={path} {custom.what}, which is not part of Keras, and {custom.why}: {CUSTOM_HINT}"
    return None


def savedmodel_refusal(path: str) -> str:
    """Every SavedModel is refused without the opt-in; the message names what makes this one risky."""
    folder = Path(path)
    found = [h.what for h in find_hazards(keras_metadata(folder)) if h.runs_code][:1]
    ops = sorted(risky_ops(folder))
    if ops:
        found.append(f"holds the graph ops {', '.join(ops)}")
    detail = f" (this one {' and '.join(found)})" if found else ""
    return (f"model={path} is a SavedModel folder: its graph is a TensorFlow program that runs as stored when the "
            f"model is loaded and called{detail}; bnexp doctor runs no code from a model file unless told to: "
            f"{TRUST_HINT}")


# ---------------------------------------------------------------- the Keras config


def find_hazards(node, path: tuple[str, ...] = ()):
    """Every Hazard in a saved config (any JSON value), depth first, with the path of layer names to it."""
    if isinstance(node, list):
        for item in node:
            yield from find_hazards(item, path)
        return
    if isinstance(node, str):
        if looks_like_bytecode(node):
            yield Hazard(True, f"holds a Python function stored as bytecode (in {_where(path)})",
                         "it runs when the model is loaded")
        return
    if not isinstance(node, dict):
        return
    if isinstance(node.get("class_name"), str):
        path = path + ((_name_of(node),) if _name_of(node) else ())
        hazard = judge(node["class_name"], node, path)
        if hazard:
            yield hazard
    for key, value in node.items():
        if key not in SKIPPED_KEYS:
            yield from find_hazards(value, path)


def judge(cls: str, node: dict, path: tuple[str, ...]) -> Hazard | None:
    """The hazard of one serialised object (`class_name` `cls`), or None."""
    config = node.get("config") if isinstance(node.get("config"), dict) else {}
    if cls in CODE_LAYERS:
        return Hazard(True, f"holds a {cls} layer {_where(path)!r}", CODE_LAYERS[cls])
    if cls == "__lambda__" or "function_type" in config:
        return Hazard(True, f"holds a Python function stored as bytecode (in {_where(path)})",
                      "it runs when the model is loaded")
    if cls in TF_FUNCTION_LAYERS and not is_tensor_math(str(config.get("function"))):
        return Hazard(True, f"calls tf.{config.get('function')} (layer {_where(path)!r})", TF_FUNCTION_WHY)
    if cls in TF_ATTRIBUTE_LAYERS and not _attribute_is_plain(cls, config):
        target = f"{config.get('cls_symbol', 'a tensor')}.{config.get('method_name') or config.get('attr_name')}"
        return Hazard(True, f"calls {target} (layer {_where(path)!r})", TF_FUNCTION_WHY)
    if cls == "function":
        return _judge_function(node, path)
    if SERIALIZATION_MARKER.fullmatch(cls) or is_builtin_class(cls, node):
        return None
    module = node.get("module")
    origin = f" from module {module!r}" if isinstance(module, str) and not _in_keras(module) else ""
    return Hazard(False, f"uses the class {cls!r}{origin} (layer {_where(path)!r})",
                  "bnexp doctor cannot load it without its code")


def _judge_function(node: dict, path: tuple[str, ...]) -> Hazard | None:
    """A function stored by name (Keras 3 style); Keras resolves a bare name among its own built-ins."""
    name = node.get("config")
    module = str(node.get("module") or "builtins")
    if isinstance(name, str) and (module == "builtins" or _in_keras(module)) and name in keras_api()[1]:
        return None
    return Hazard(False, f"uses the function {name!r} (layer {_where(path)!r})",
                  "bnexp doctor cannot load it without its code")


def is_tensor_math(function: str) -> bool:
    """Is a tf-keras op layer's TensorFlow function (its API name, e.g. 'math.add') pure tensor math?"""
    name = re.sub(r"^compat\.v[12]\.", "", function)
    namespace, _, _ = name.rpartition(".")
    return namespace.split(".")[0] in TF_MATH_NAMESPACES if namespace else name in TF_ARRAY_FUNCTIONS


def _attribute_is_plain(cls: str, config: dict) -> bool:
    """tf-keras dispatches RaggedTensor class methods and public tensor attributes, nothing else."""
    name = config.get("method_name") if cls == "ClassMethod" else config.get("attr_name")
    public = isinstance(name, str) and name.isidentifier() and not name.startswith("_")
    return public and (cls != "ClassMethod" or config.get("cls_symbol") == "RaggedTensor")


def is_builtin_class(cls: str, node: dict) -> bool:
    """A class Keras ships: a Keras 3 style entry says its module; a tf-keras .h5 entry only its name."""
    if isinstance(node.get("module"), str):
        registered = node.get("registered_name")
        return _in_keras(node["module"]) and not (isinstance(registered, str) and ">" in registered)
    return ">" not in cls and (cls in INTERNAL_CLASSES or cls in keras_api()[0])


def looks_like_bytecode(text: str) -> bool:
    """A base64 string holding a marshalled Python code object (how Keras stores a lambda)."""
    if not BASE64.fullmatch(text):
        return False
    try:
        head = base64.b64decode("".join(text.split())[:8])
    except (binascii.Error, ValueError):
        return False
    return bool(head) and head[0] == MARSHALLED_CODE


def _in_keras(module: str) -> bool:
    return module.split(".")[0] in KERAS_PACKAGES


def _name_of(node: dict) -> str | None:
    """A layer's or model's name (their configs say `trainable`; a dtype policy's `name` is no layer name)."""
    config = node.get("config") if isinstance(node.get("config"), dict) else {}
    name = node.get("name") or (config.get("name") if "trainable" in config else None)
    return name if isinstance(name, str) else None


def _where(path: tuple[str, ...]) -> str:
    return "/".join(path) or "the model"


@functools.cache
def keras_api() -> tuple[frozenset[str], frozenset[str]]:
    """(every name the installed Keras packages export, the functions among them Keras resolves by bare name),
    read from their generated API `__init__.py` files without importing them (importing Keras starts TensorFlow)."""
    names, functions = set(), set()
    for package in API_PACKAGES:
        spec = importlib.util.find_spec(package)
        for root in (spec.submodule_search_locations or []) if spec else []:
            for init, folders in _api_inits(Path(root)):
                exported = _imported_names(init.read_text(encoding="utf-8", errors="replace"))
                names |= exported
                if FUNCTION_FOLDERS & folders:
                    functions |= exported
    return frozenset(names), frozenset(functions)


def _api_inits(root: Path):
    """(each public API __init__.py under a package folder, the folder names on its way), skipping `src`."""
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [d for d in subfolders if d not in ("src", "__pycache__")]
        if "__init__.py" in files:
            yield Path(folder, "__init__.py"), set(Path(folder).relative_to(root).parts)


IMPORT_LIST = re.compile(r"^from\s+[\w.]+\s+import\s+(\([^)]*\)|[^\n]*)", re.M)


def _imported_names(source: str) -> set[str]:
    names = set()
    for group in IMPORT_LIST.findall(source):
        for item in group.strip("()").split(","):
            names.update(part.strip() for part in item.split(" as ") if part.strip().isidentifier())
    return names


# ---------------------------------------------------------------- SavedModel protobufs (wire format, no TensorFlow)


def keras_metadata(folder: Path) -> list:
    """The JSON metadata of every object in keras_metadata.pb (SavedMetadata.nodes[].metadata); [] if unreadable."""
    try:
        data = memoryview((folder / "keras_metadata.pb").read_bytes())
        return [json.loads(bytes(meta)) for node in submessages(data, 1) for meta in submessages(node, 5)]
    except (OSError, ValueError, IndexError):
        return []


def risky_ops(folder: Path) -> set[str]:
    """The RISKY_OPS in saved_model.pb's graphs and function library; empty if unreadable."""
    try:
        return graph_ops(memoryview((folder / "saved_model.pb").read_bytes())) & RISKY_OPS
    except (OSError, ValueError, IndexError):
        return set()


def graph_ops(data: memoryview) -> set[str]:
    """Op types of SavedModel.meta_graphs[].graph_def: its nodes and its library functions' nodes."""
    nodes = []
    for meta_graph in submessages(data, 2):
        for graph in submessages(meta_graph, 2):
            nodes += submessages(graph, 1)
            for library in submessages(graph, 2):
                for function in submessages(library, 1):
                    nodes += submessages(function, 3)
    return {bytes(op).decode("utf-8", "replace") for node in nodes for op in submessages(node, 2)}


def submessages(data: memoryview, number: int) -> list[memoryview]:
    """The length-delimited fields numbered `number` of one protobuf message, as views (no copies)."""
    found, i = [], 0
    while i < len(data):
        key, i = _varint(data, i)
        kind = key & 7
        if kind == 0:
            _, i = _varint(data, i)
        elif kind == 1:
            i += 8
        elif kind == 5:
            i += 4
        elif kind == 2:
            size, i = _varint(data, i)
            if key >> 3 == number:
                found.append(data[i:i + size])
            i += size
        else:
            raise ValueError(f"unsupported protobuf wire type {kind}")
    if i > len(data):
        raise ValueError("truncated protobuf message")
    return found


def _varint(data: memoryview, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i
