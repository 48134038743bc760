"""Reading, checking and tidying .tflite flatbuffers (no interpreter, no TensorFlow needed).

The LiteRT schema's object API (`ai_edge_litert.schema_py_generated`) unpacks a model into
plain Python objects; this module reads the op list from it and applies rewrites after
conversion, none of which changes a computed value:

- `separate_shared_kernel_biases`: every conv op reading a shared int8 kernel gets a bias
  buffer of its own, which XNNPACK's weight cache needs to pack each op's requantization
  scales (see the function).
- `deduplicate_constants`: constant tensors with identical type, shape, quantization and
  bytes become one tensor.
- `strip_unused`: tensors and buffers nothing refers to any more are dropped, indices renumbered.

`strip_names` (optional) blanks tensor names, which are debugging aids only.
"""

import collections
import copy as copy_module
import dataclasses
import functools
import json
import struct

import flatbuffers
import numpy as np

from lru_keras import extras

schema = extras.lazy("ai_edge_litert.schema_py_generated")  # the [litert] extra

FILE_IDENTIFIER = b"TFL3"
CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


@functools.cache
def _names(enum) -> dict:
    """{value: name} of a schema enum ("BuiltinOperator", "TensorType"), read when first
    needed (the schema comes with the [litert] extra)."""
    return {value: name for name, value in vars(getattr(schema, enum)).items()
            if not name.startswith("_") and isinstance(value, int)}


METADATA_PREFIX = "lru_keras."


def read(content):
    """The unpacked model (`schema.ModelT`) of .tflite bytes; ValueError if they are not a
    whole TFLite flatbuffer (e.g. a truncated file)."""
    content = bytes(content)
    if len(content) < 8 or content[4:8] != FILE_IDENTIFIER:
        raise ValueError("not a TFLite flatbuffer (file identifier 'TFL3' missing)")
    try:
        return schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    except (struct.error, IndexError, TypeError) as error:  # TypeError: an offset out of range
        raise ValueError(f"a damaged or truncated TFLite flatbuffer ({len(content)} bytes: "
                         f"{error})") from None


def write(model):
    """Packs a `schema.ModelT` back into .tflite bytes, each distinct set of quantization
    parameters once: tensors with equal parameters refer to one table (a flatbuffer may refer
    to a table from several places). The object API alone packs one copy per tensor, and the
    per-channel parameters of int8 biases would then be most of a shared-kernel file."""
    builder = flatbuffers.Builder(1 << 20)
    packed = {}
    pack = schema.QuantizationParametersT.Pack

    def pack_once(quantization, builder):
        key = (_quant_key(quantization), quantization.detailsType)
        if quantization.details is not None:  # custom details: never merged
            return pack(quantization, builder)
        if key not in packed:
            packed[key] = pack(quantization, builder)
        return packed[key]

    schema.QuantizationParametersT.Pack = pack_once
    try:
        builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
    finally:
        schema.QuantizationParametersT.Pack = pack
    return bytes(builder.Output())


def op_name(model, operator):
    """Builtin op name of an operator ("CONV_2D", ...), or "CUSTOM:<code>" for custom ops."""
    code = model.operatorCodes[operator.opcodeIndex]
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    name = _names("BuiltinOperator").get(builtin, f"BUILTIN_{builtin}")
    if name == "CUSTOM":
        custom = code.customCode
        custom = custom.decode() if isinstance(custom, bytes) else str(custom)
        return f"CUSTOM:{custom}"
    return name


def type_name(tensor_type):
    """"float32", "int8", ... for a schema TensorType value."""
    name = _names("TensorType").get(tensor_type)
    return str(tensor_type) if name is None else name.lower()


@dataclasses.dataclass
class OpInfo:
    """One operator of a subgraph: its name and input/output tensor indices."""

    index: int
    name: str
    inputs: tuple
    outputs: tuple


def operators(model, subgraph=0):
    """`OpInfo` of every operator of a subgraph, in execution order."""
    graph = model.subgraphs[subgraph]
    return [
        OpInfo(i, op_name(model, op), tuple(int(t) for t in _ints(op.inputs)),
               tuple(int(t) for t in _ints(op.outputs)))
        for i, op in enumerate(graph.operators or [])
    ]


def op_counts(model):
    """{op name: count} over all subgraphs."""
    counts = collections.Counter()
    for s in range(len(model.subgraphs)):
        counts.update(op.name for op in operators(model, s))
    return dict(sorted(counts.items()))


def non_builtin_ops(model):
    """Sorted names of Flex (Select TF) and custom ops: what a plain LiteRT runtime lacks."""
    return sorted({name for name in op_counts(model) if name.startswith("CUSTOM")
                   or name.startswith("BUILTIN_") or name.startswith("FLEX")})


def tensor_bytes(model, tensor):
    """The constant data of a tensor (b"" for activations)."""
    data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
    return b"" if data is None else bytes(np.asarray(data, dtype=np.uint8))


def conv_weights(model):
    """For each conv-like op (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED) reading a constant
    weight, in every subgraph (a loop's body is a subgraph of its own): (subgraph index, op
    index, op name, weight tensor index, weight shape, weight buffer index). Tensor indices
    are per subgraph.

    A weight stored in float16 reaches its conv through a DEQUANTIZE op; the stored (float16)
    tensor is reported then, since that is what the file holds."""
    rows = []
    for s, graph in enumerate(model.subgraphs):
        ops = operators(model, s)
        dequantized = {op.outputs[0]: op.inputs[0] for op in ops if op.name == "DEQUANTIZE"}
        for op in ops:
            if op.name in CONV_OPS and len(op.inputs) > 1 and op.inputs[1] >= 0:
                index = dequantized.get(op.inputs[1], op.inputs[1])
                tensor = graph.tensors[index]
                if tensor_bytes(model, tensor):
                    rows.append((s, op.index, op.name, index,
                                 tuple(int(d) for d in tensor.shape), int(tensor.buffer)))
    return rows


def size_breakdown(model):
    """Where the bytes of a model go: constant data, quantization parameters, names, counts."""
    data = sum(len(tensor_bytes(model, t)) for g in model.subgraphs for t in g.tensors)
    quant = 0
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            q = tensor.quantization
            if q is not None:
                quant += 4 * len(_ints(q.scale)) + 8 * len(_ints(q.zeroPoint))
                quant += 4 * (len(_ints(q.min)) + len(_ints(q.max)))
    names = sum(len(t.name or b"") for g in model.subgraphs for t in g.tensors)
    return {
        "constant_bytes": int(data), "quantization_parameter_bytes": int(quant),
        "tensor_name_bytes": int(names),
        "tensors": sum(len(g.tensors) for g in model.subgraphs),
        "operators": sum(len(g.operators or []) for g in model.subgraphs),
        "buffers": len(model.buffers),
    }


def separate_shared_kernel_biases(model):
    """Gives every conv op that reads a shared int8 kernel a bias buffer of its own. Returns
    the number of bias tensors added.

    XNNPACK's weight cache (what apps enable to start faster: LiteRT's
    `CpuOptions(xnnpack_weight_cache_path=...)`) finds an op's packed weights by the identity
    of its kernel and bias buffers, but for int8 the packed data also holds that op's
    requantization scales. Reuses reading one kernel and one bias buffer got one packing,
    the first op's scales, and wrong outputs (14-LruNet-1x int8: 0 of 20 predictions as
    without the cache). With a bias buffer per op each reuse is packed for itself; the kernel
    stays one tensor. Float kernels have no per-op scales and keep their biases as converted.

    When the biases of a shared kernel are all zero (kernel sharing keeps BatchNorms apart),
    every op gets a copy of the first op's bias tensor: the converter gave each op
    per-channel bias scales of its own (a float scale and an int64 zero point per channel),
    which no runtime kernel reads (bias values are added as they are; tests compare outputs
    bit for bit), and equal parameters are stored once by `write`.
    """
    added = 0
    for s, graph in enumerate(model.subgraphs):
        by_kernel = collections.defaultdict(list)
        for op_info, op in zip(operators(model, s), graph.operators or []):
            if (op_info.name in ("CONV_2D", "DEPTHWISE_CONV_2D") and len(op_info.inputs) > 2
                    and op_info.inputs[2] >= 0):
                by_kernel[op_info.inputs[1]].append(op)
        buffers_in_use = set()
        for kernel, ops in by_kernel.items():
            if len(ops) < 2 or type_name(graph.tensors[kernel].type) != "int8":
                continue
            biases = [graph.tensors[int(op.inputs[2])] for op in ops]
            all_zero = all(_is_zero_constant(model, b) and b.type == biases[0].type
                           and list(b.shape) == list(biases[0].shape) for b in biases)
            for op, bias in zip(ops, biases):
                template = biases[0] if all_zero else bias
                if template is bias and bias.buffer not in buffers_in_use:
                    buffers_in_use.add(bias.buffer)
                    continue
                copy = copy_module.deepcopy(template)
                copy.buffer = len(model.buffers)
                model.buffers.append(copy_module.deepcopy(model.buffers[template.buffer]))
                buffers_in_use.add(copy.buffer)
                inputs = np.array(op.inputs, dtype=np.int32)
                inputs[2] = len(graph.tensors)
                graph.tensors.append(copy)
                op.inputs = inputs
                added += 1
    return added


def deduplicate_constants(model):
    """Points every reader of a constant tensor at the first identical one (type, shape,
    quantization and bytes). Returns the number of tensors made redundant."""
    merged = 0
    for s, graph in enumerate(model.subgraphs):
        first, remap = {}, {}
        for index, tensor in enumerate(graph.tensors):
            data = tensor_bytes(model, tensor)
            if not data or tensor.isVariable:
                continue
            key = (tensor.type, tuple(_ints(tensor.shape)), _quant_key(tensor.quantization), data)
            if key in first:
                remap[index] = first[key]
            else:
                first[key] = index
        if remap:
            merged += len(remap)
            _rewire_inputs(graph, remap)
    return merged


def strip_unused(model):
    """Drops tensors no op, subgraph or signature refers to, then unreferenced buffers."""
    for s, graph in enumerate(model.subgraphs):
        used = set(int(t) for t in _ints(graph.inputs)) | set(int(t) for t in _ints(graph.outputs))
        for op in graph.operators or []:
            for field in (op.inputs, op.outputs, op.intermediates):
                used.update(int(t) for t in _ints(field) if t >= 0)
        for signature in model.signatureDefs or []:
            if signature.subgraphIndex == s:
                used.update(m.tensorIndex for m in (signature.inputs or []) + (signature.outputs or []))
        keep = sorted(used)
        remap = {old: new for new, old in enumerate(keep)}
        graph.tensors = [graph.tensors[i] for i in keep]
        graph.inputs = np.array([remap[int(t)] for t in _ints(graph.inputs)], dtype=np.int32)
        graph.outputs = np.array([remap[int(t)] for t in _ints(graph.outputs)], dtype=np.int32)
        for op in graph.operators or []:
            op.inputs = _remapped(op.inputs, remap)
            op.outputs = _remapped(op.outputs, remap)
            if op.intermediates is not None:
                op.intermediates = _remapped(op.intermediates, remap)
        for signature in model.signatureDefs or []:
            if signature.subgraphIndex == s:
                for m in (signature.inputs or []) + (signature.outputs or []):
                    m.tensorIndex = remap[m.tensorIndex]
    # Buffers: index 0 stays the empty sentinel; metadata entries also refer to buffers.
    used = {0} | {t.buffer for g in model.subgraphs for t in g.tensors}
    used |= {m.buffer for m in model.metadata or []}
    keep = sorted(used)
    remap = {old: new for new, old in enumerate(keep)}
    model.buffers = [model.buffers[i] for i in keep]
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            tensor.buffer = remap[tensor.buffer]
    for entry in model.metadata or []:
        entry.buffer = remap[entry.buffer]


def strip_shape_signatures(model):
    """Drops every tensor's shape signature (the -1 batch size of a dynamic-batch model).

    The file then declares batch 1 (what an app feeds); interpreters can still resize the
    input to any batch (`resize_tensor_input`, non-strict), since every RESHAPE of the export
    graph has -1 for the batch. Saves ~20 bytes per tensor (28 kB of a 0.5 MB int8 file).
    """
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            tensor.shapeSignature = None


def strip_names(model):
    """Blanks tensor names except those of subgraph inputs and outputs."""
    for graph in model.subgraphs:
        keep = set(int(t) for t in _ints(graph.inputs)) | set(int(t) for t in _ints(graph.outputs))
        for index, tensor in enumerate(graph.tensors):
            if index not in keep:
                tensor.name = b""


SIGNATURE_KEY = "serving_default"


def rename_io(model, input_name, output_name):
    """Names the (single) input and output tensor and makes them the one signature,
    `serving_default` (what `get_signature_runner()`, LiteRT's CompiledModel and TensorFlow
    users look a model up by; the converter writes none for a concrete function)."""
    graph = model.subgraphs[0]
    inputs, outputs = int(graph.inputs[0]), int(graph.outputs[0])
    graph.tensors[inputs].name = input_name
    graph.tensors[outputs].name = output_name
    signature = schema.SignatureDefT()
    signature.signatureKey = SIGNATURE_KEY
    signature.subgraphIndex = 0
    signature.inputs, signature.outputs = [schema.TensorMapT()], [schema.TensorMapT()]
    signature.inputs[0].name, signature.inputs[0].tensorIndex = input_name, inputs
    signature.outputs[0].name, signature.outputs[0].tensorIndex = output_name, outputs
    model.signatureDefs = [signature]


def float_activations(model, except_tensors=()):
    """Names (or "tensor <index>") of float32 tensors that are not constants, in every
    subgraph, leaving out `except_tensors` ((subgraph index, tensor index) pairs, e.g.
    `loop_state(model)`): in a full-integer model there are none."""
    skip = set(except_tensors)
    found = []
    for s, graph in enumerate(model.subgraphs):
        for index, tensor in enumerate(graph.tensors):
            if ((s, index) not in skip and type_name(tensor.type) == "float32"
                    and not tensor_bytes(model, tensor)):
                found.append(_text(tensor.name) or f"tensor {index}")
    return found


def loop_state(model):
    """The float32 tensors a loop carries: sorted (subgraph index, tensor index) pairs.

    `model` is .tflite bytes or a `read` result. The TFLite converter does not quantize WHILE
    (its MLIR op TFL_WhileOp lacks the QuantizableResult trait, tensorflow/tensorflow#54304),
    so in an int8 file the values a WHILE passes between iterations stay float32: the WHILE's
    inputs and outputs, the inputs and outputs of its condition and body subgraphs, and the
    float32 RESHAPE views of those; inside the body everything else is int8 (a QUANTIZE after
    the inputs, a DEQUANTIZE before the outputs). These are the float tensors an int8 file
    with loops may keep (`float_activations(model, except_tensors=loop_state(model))`).
    """
    if isinstance(model, (bytes, bytearray)):
        model = read(model)
    state = set()
    for s, graph in enumerate(model.subgraphs):
        for op_info, op in zip(operators(model, s), graph.operators or []):
            if op_info.name != "WHILE":
                continue
            state.update((s, t) for t in (*op_info.inputs, *op_info.outputs) if t >= 0)
            options = op.builtinOptions
            for branch in (options.condSubgraphIndex, options.bodySubgraphIndex):
                branch_graph = model.subgraphs[branch]
                state.update((branch, int(t))
                             for t in (*_ints(branch_graph.inputs), *_ints(branch_graph.outputs)))
    views = [(s, op.inputs[0], op.outputs[0]) for s in range(len(model.subgraphs))
             for op in operators(model, s) if op.name == "RESHAPE"]
    grown = True
    while grown:  # views of views
        grown = False
        for s, source, target in views:
            if ((s, source) in state) != ((s, target) in state):
                state.update({(s, source), (s, target)})
                grown = True
    return sorted((s, t) for s, t in state
                  if type_name(model.subgraphs[s].tensors[t].type) == "float32")


def inline_loops(model):
    """Every counted WHILE of subgraph 0 replaced by its body repeated once per iteration.

    A counted loop is one our export writes (`lru_keras.layers.reuse.reuse_loop`): its first
    loop variable is an int32 counter that starts at a constant, the condition is `counter <
    constant` (one LESS op) and the body adds a constant to it. Other loops stay as they are.
    Changes `model` (a `read` result) in place and returns where the values of the loops'
    tensors now are: {(subgraph index, tensor index) of a body tensor or of a WHILE output:
    [subgraph-0 tensor indices holding its value, one per iteration]} (every other subgraph-0
    tensor keeps its index). An interpreter then sees the values every iteration computes
    (what calibrating the body's int8 ranges needs, see `ranges.refine_ranges`), which it
    cannot inside a WHILE.
    """
    graph = model.subgraphs[0]
    locations = collections.defaultdict(list)
    operators_out = []
    for info, op in zip(operators(model, 0), list(graph.operators or [])):
        trips = _trip_count(model, info, op) if info.name == "WHILE" else None
        if trips is None:
            operators_out.append(op)
            continue
        body_index = op.builtinOptions.bodySubgraphIndex
        body = model.subgraphs[body_index]
        state = [int(t) for t in op.inputs]  # rewired if an earlier loop feeds it
        for _ in range(trips):
            remap = dict(zip((int(t) for t in body.inputs), state))
            for index, tensor in enumerate(body.tensors):
                if index not in remap:
                    graph.tensors.append(copy_module.deepcopy(tensor))
                    remap[index] = len(graph.tensors) - 1
                locations[(body_index, index)].append(remap[index])
            for body_op in body.operators or []:
                copied = copy_module.deepcopy(body_op)
                copied.inputs = _remapped(body_op.inputs, remap)
                copied.outputs = _remapped(body_op.outputs, remap)
                operators_out.append(copied)
            state = [remap[int(t)] for t in body.outputs]
        finals = dict(zip(info.outputs, state))
        for output, final in finals.items():
            locations[(0, output)].append(final)
        for later in graph.operators or []:
            later.inputs = _remapped(later.inputs, finals, keep_missing=True)
        graph.outputs = _remapped(graph.outputs, finals, keep_missing=True)
    graph.operators = operators_out
    return dict(locations)


def _trip_count(model, info, op):
    """How often a WHILE op of subgraph 0 runs its body, if it is a counted loop (see
    `inline_loops`), else None."""
    graph = model.subgraphs[0]

    def scalar(tensors, index):
        tensor = tensors[index]
        data = tensor_bytes(model, tensor)
        if type_name(tensor.type) != "int32" or len(data) != 4:
            return None
        return int(np.frombuffer(data, np.int32)[0])

    condition = model.subgraphs[op.builtinOptions.condSubgraphIndex]
    body_index = op.builtinOptions.bodySubgraphIndex
    body = model.subgraphs[body_index]
    start = scalar(graph.tensors, info.inputs[0])
    tests = operators(model, op.builtinOptions.condSubgraphIndex)
    counter = int(condition.inputs[0])
    if start is None or len(tests) != 1 or tests[0].name != "LESS" or \
            tests[0].inputs[0] != counter:
        return None
    limit = scalar(condition.tensors, tests[0].inputs[1])
    steps = [scalar(body.tensors, o.inputs[1]) for o in operators(model, body_index)
             if o.name == "ADD" and o.inputs[0] == int(body.inputs[0])
             and o.outputs[0] == int(body.outputs[0])]
    if limit is None or len(steps) != 1 or steps[0] is None or steps[0] <= 0:
        return None
    return max(0, -(-(limit - start) // steps[0]))


def set_metadata(model, name, content):
    """Adds (or replaces) a metadata entry `name` holding `content` (bytes) in its own buffer."""
    entries = [m for m in (model.metadata or []) if _text(m.name) != name]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(bytes(content), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers) - 1
    model.metadata = entries + [entry]


def get_metadata(model, name):
    """The bytes of metadata entry `name`, or None."""
    for entry in model.metadata or []:
        if _text(entry.name) == name:
            data = model.buffers[entry.buffer].data
            return b"" if data is None else bytes(np.asarray(data, dtype=np.uint8))
    return None


def read_metadata_json(content, name="spec"):
    """The JSON metadata entry lru_keras wrote into a .tflite (None if absent); ValueError if
    the file or the entry is damaged."""
    raw = get_metadata(read(content), METADATA_PREFIX + name)
    if raw is None:
        return None
    try:
        return json.loads(raw.decode())
    except ValueError as error:  # UnicodeDecodeError and JSONDecodeError both are
        raise ValueError(f"its metadata {METADATA_PREFIX + name!r} is not valid JSON "
                         f"({error})") from None


def _is_zero_constant(model, tensor):
    data = tensor_bytes(model, tensor)
    return bool(data) and not any(data)


def _quant_key(q):
    if q is None:
        return None
    return (tuple(np.asarray(_ints(q.scale), dtype=np.float32).tolist()),
            tuple(int(z) for z in _ints(q.zeroPoint)), int(q.quantizedDimension or 0),
            tuple(np.asarray(_ints(q.min), dtype=np.float32).tolist()),
            tuple(np.asarray(_ints(q.max), dtype=np.float32).tolist()))


def _rewire_inputs(graph, remap):
    for op in graph.operators or []:
        op.inputs = _remapped(op.inputs, remap, keep_missing=True)


def _remapped(indices, remap, keep_missing=False):
    out = []
    for t in _ints(indices):
        t = int(t)
        out.append(t if t < 0 or (keep_missing and t not in remap) else remap[t])
    return np.array(out, dtype=np.int32)


def _ints(values):
    return [] if values is None else list(values)


def _text(value):
    return value.decode() if isinstance(value, bytes) else value
