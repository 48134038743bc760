"""Standard TFLite Model Metadata (`TFLITE_METADATA`) for an exported image classifier.

This is the metadata that Android Studio's ML Model Binding, the TFLite Task Library and
MediaPipe Tasks read: the model's name, description, version, author and license; the input
image's color space, normalization ((pixel - mean) / std gives what the model takes) and value
range; and the labels of the output as an associated file. The schema is LiteRT's
`metadata_schema.fbs` (file identifier "M001"); the associated files are appended to the
.tflite as an uncompressed zip archive, as the schema's populator does, so that readers find
them by name and the interpreter ignores them.

The field library that writes this (tflite-support's / MediaPipe's metadata writers) cannot be
installed beside our stack: tflite-support 0.4.4 needs protobuf<4 and a system libusb, and
MediaPipe's releases need absl-py 2, which tensorflow-model-optimization refuses, and ship
their populator without its compiled part. So the few tables we write are built here with the
`flatbuffers` builder, field by field as the schema numbers them, and the tests read the
files back with MediaPipe's own reader and classifier in a separate environment
(`make .venv-clients`).
"""

from __future__ import annotations

import dataclasses
import io
import zipfile

import flatbuffers

FIELD_NAME = "TFLITE_METADATA"  # the name of the model's metadata entry readers look for
FILE_IDENTIFIER = b"M001"
# Every field written here is in the schema's first version; readers refuse a file that
# asks for a newer parser than theirs.
MIN_PARSER_VERSION = "1.0.0"
LABELS_FILE = "labels.txt"

# Enum values of metadata_schema.fbs.
_TENSOR_AXIS_LABELS = 2  # AssociatedFileType
_COLOR_SPACE = {3: 1, 1: 2}  # channels -> ColorSpaceType RGB, GRAYSCALE
_FEATURE_PROPERTIES, _IMAGE_PROPERTIES = 1, 2  # ContentProperties union
_NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions union


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What the metadata says about the model as a whole (the schema's ModelMetadata)."""

    name: str
    description: str
    version: str
    author: str = ""
    license: str = ""


def normalization(input_range) -> tuple[float, float]:
    """(mean, std) such that (pixel - mean) / std maps 8-bit pixels [0, 255] onto the model's
    `input_range` (low, high): the form the schema's NormalizationOptions take."""
    low, high = (float(v) for v in input_range)
    std = 255.0 / (high - low)
    return -low * std + 0.0, std  # + 0.0: no -0.0


def build(info: ModelInfo, *, channels: int, input_range, input_description: str,
          output_name: str, output_description: str, probabilities: bool) -> bytes:
    """The metadata flatbuffer of a one-input, one-output image classifier whose output has
    one value per line of the associated LABELS_FILE."""
    if channels not in _COLOR_SPACE:
        raise ValueError(f"standard image metadata needs 1 (grayscale) or 3 (RGB) input "
                         f"channels, not {channels}")
    b = flatbuffers.Builder(1024)
    mean, std = normalization(input_range)
    low, high = (float(v) for v in input_range)

    image_properties = _table(b, [(0, "int8", _COLOR_SPACE[channels])])
    image_content = _table(b, [(0, "uint8", _IMAGE_PROPERTIES), (1, "offset", image_properties)])
    norm = _table(b, [(0, "offset", _floats(b, [mean])), (1, "offset", _floats(b, [std]))])
    unit = _table(b, [(0, "uint8", _NORMALIZATION_OPTIONS), (1, "offset", norm)])
    input_stats = _table(b, [(0, "offset", _floats(b, [high])), (1, "offset", _floats(b, [low]))])
    input_tensor = _table(b, [
        (0, "offset", b.CreateString("image")),
        (1, "offset", b.CreateString(input_description)),
        (3, "offset", image_content),
        (4, "offset", _offsets(b, [unit])),
        (5, "offset", input_stats),
    ])

    labels = _table(b, [
        (0, "offset", b.CreateString(LABELS_FILE)),
        (1, "offset", b.CreateString("The class names, one per line, in output order.")),
        (2, "int8", _TENSOR_AXIS_LABELS),
    ])
    feature = _table(b, [])
    output_content = _table(b, [(0, "uint8", _FEATURE_PROPERTIES), (1, "offset", feature)])
    output_fields = [
        (0, "offset", b.CreateString(output_name)),
        (1, "offset", b.CreateString(output_description)),
        (3, "offset", output_content),
        (6, "offset", _offsets(b, [labels])),
    ]
    if probabilities:
        output_fields.append((5, "offset", _table(b, [(0, "offset", _floats(b, [1.0])),
                                                      (1, "offset", _floats(b, [0.0]))])))
    output_tensor = _table(b, output_fields)

    subgraph = _table(b, [
        (2, "offset", _offsets(b, [input_tensor])),
        (3, "offset", _offsets(b, [output_tensor])),
    ])
    root = [
        (0, "offset", b.CreateString(info.name)),
        (1, "offset", b.CreateString(info.description)),
        (2, "offset", b.CreateString(info.version)),
        (3, "offset", _offsets(b, [subgraph])),
        (7, "offset", b.CreateString(MIN_PARSER_VERSION)),
    ]
    if info.author:
        root.append((4, "offset", b.CreateString(info.author)))
    if info.license:
        root.append((5, "offset", b.CreateString(info.license)))
    b.Finish(_table(b, root), file_identifier=FILE_IDENTIFIER)
    return bytes(b.Output())


def append_associated_files(content: bytes, files: dict[str, bytes]) -> bytes:
    """`content` followed by a zip archive of `files` (name -> bytes), stored uncompressed and
    with a fixed date, so that the same export gives the same bytes."""
    archive = io.BytesIO(content)
    archive.seek(0, io.SEEK_END)
    with zipfile.ZipFile(archive, "a", compression=zipfile.ZIP_STORED) as zf:
        for name, data in sorted(files.items()):
            zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return archive.getvalue()


def associated_files(content: bytes) -> dict[str, bytes]:
    """The associated files appended to a .tflite (name -> bytes; {} if there are none)."""
    archive = io.BytesIO(content)
    if not zipfile.is_zipfile(archive):
        return {}
    with zipfile.ZipFile(archive) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


# ------------------------------------------------------------------------------------------
# flatbuffers building blocks: a table's fields are (slot, kind, value); a union field takes
# two slots, its type (uint8) then its table.
# ------------------------------------------------------------------------------------------
def _table(b, fields):
    b.StartObject(1 + max((slot for slot, _, _ in fields), default=-1))
    for slot, kind, value in fields:
        if kind == "offset":
            b.PrependUOffsetTRelativeSlot(slot, value, 0)
        elif kind == "int8":
            b.PrependInt8Slot(slot, value, 0)
        else:
            b.PrependUint8Slot(slot, value, 0)
    return b.EndObject()


def _floats(b, values):
    b.StartVector(4, len(values), 4)
    for value in reversed(values):
        b.PrependFloat32(value)
    return b.EndVector()


def _offsets(b, offsets):
    b.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        b.PrependUOffsetTRelative(offset)
    return b.EndVector()
