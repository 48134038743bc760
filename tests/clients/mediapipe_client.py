"""Reads .tflite files the way an app's MediaPipe Tasks does; runs in .venv-clients (not in the
package's venv: requirements-clients.lock says why). Prints JSON on stdout.

    python mediapipe_client.py metadata FILE...   # the standard metadata, as MediaPipe's
                                                  # generated schema reads it
    python mediapipe_client.py classify NPY FILE...  # MediaPipe's ImageClassifier with each
                                                     # file on each image of NPY (N, H, W, 3)
                                                     # uint8: every class's index, name, score
"""

import json
import sys
import zipfile

import numpy as np


def metadata(path):
    from mediapipe.tasks.metadata import metadata_schema_py_generated as md_fb
    from mediapipe.tasks.metadata import schema_py_generated as tflite_fb

    content = open(path, "rb").read()
    model = tflite_fb.Model.GetRootAsModel(content, 0)
    entries = {model.Metadata(i).Name().decode(): model.Metadata(i).Buffer()
               for i in range(model.MetadataLength())}
    if "TFLITE_METADATA" not in entries:
        return {"present": False}
    data = model.Buffers(entries["TFLITE_METADATA"]).DataAsNumpy().tobytes()
    root = md_fb.ModelMetadataT.InitFromObj(md_fb.ModelMetadata.GetRootAsModelMetadata(data, 0))
    text = lambda b: None if b is None else b.decode()  # noqa: E731
    (graph,) = root.subgraphMetadata
    (image,) = graph.inputTensorMetadata
    (scores,) = graph.outputTensorMetadata
    (norm,) = [unit.options for unit in image.processUnits
               if unit.optionsType == md_fb.ProcessUnitOptions.NormalizationOptions]
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name).decode() for name in archive.namelist()}
    stats = lambda s: None if s is None else [list(map(float, s.min)), list(map(float, s.max))]  # noqa: E731
    return {
        "present": True,
        "identifier": md_fb.ModelMetadata.ModelMetadataBufferHasIdentifier(data, 0),
        "name": text(root.name), "description": text(root.description),
        "version": text(root.version), "author": text(root.author),
        "license": text(root.license), "min_parser_version": text(root.minParserVersion),
        "input": {
            "name": text(image.name),
            "image": image.content.contentPropertiesType
            == md_fb.ContentProperties.ImageProperties,
            "color_space": {v: k for k, v in vars(md_fb.ColorSpaceType).items()
                            if not k.startswith("_")}[image.content.contentProperties.colorSpace],
            "mean": list(map(float, norm.mean)), "std": list(map(float, norm.std)),
            "stats": stats(image.stats),
        },
        "output": {
            "name": text(scores.name), "description": text(scores.description),
            "labels": [[text(f.name), f.type == md_fb.AssociatedFileType.TENSOR_AXIS_LABELS]
                       for f in scores.associatedFiles],
            "stats": stats(scores.stats),
        },
        "associated_files": files,
    }


def classify(images_path, path):
    import mediapipe as mp
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=path))
    results = []
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for image in np.load(images_path):
            found = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB,
                                                 data=np.ascontiguousarray(image)))
            (head,) = found.classifications
            results.append({"head": head.head_name,
                            "categories": sorted([c.index, c.category_name, c.score]
                                                 for c in head.categories)})
    return results


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "metadata":
        print(json.dumps({path: metadata(path) for path in args}))
    else:
        images, *paths = args
        print(json.dumps({path: classify(images, path) for path in paths}))
