"""The export form of a layer: how it computes inside a .tflite, owned by the layer itself.

A layer whose training graph would convert badly defines two methods (as kimm's
reparameterizable layers and timm's `fuse()` keep their deploy form next to their training
form):

- `export_constants()` (optional): an `ExportConstants` read from the current weights
  (eagerly, numpy); a layer without it computes its export form from its own variables;
- `export_call(x, constants, affine)`: the same function in inference, computed from those
  constants and written for the converter: each shared kernel is ONE constant read by every
  call, no GATHER, TensorFlow's own grouped conv. `affine(x, scale, offset, view)` applies a
  BatchNorm (`x * scale + offset` per channel) in the form the exporter chooses: a form the
  converter keeps as its own ops, or one it folds into the conv before it; `view` is the
  5-D view (two trailing axes) on which a kept multiply-add is applied.

`lru_keras.tflite.graph` builds the export model by asking each layer for this form.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class ExportConstants:
    """The constants a layer's export form computes from.

    Attributes:
        kernels: {name: array} of the kernels the layer reads at every call (or reuse), in
            the layout of its export form: depthwise kernels (k, k, C, multiplier), conv
            kernels (kh, kw, in / groups, out), dense kernels (in, out).
        norms: `norms[i][j]` is the (scale, offset) of the BatchNorm after layer j at reuse i
            (float64 vectors: `y = x * scale + offset`).
        depthwise: names of the depthwise kernels among `kernels`.
    """

    kernels: dict
    norms: tuple = ()
    depthwise: frozenset = frozenset()

    def tflite_kernel_shapes(self):
        """{name: the shape TFLite stores the kernel in} (depthwise (1, k, k, C*M), conv
        (out, kh, kw, in), dense (out, in))."""
        shapes = {}
        for name, kernel in self.kernels.items():
            shape = tuple(int(d) for d in np.shape(kernel))
            if name in self.depthwise:
                shapes[name] = (1, shape[0], shape[1], shape[2] * shape[3])
            elif len(shape) == 4:
                shapes[name] = (shape[3], shape[0], shape[1], shape[2])
            else:
                shapes[name] = (shape[1], shape[0])
        return shapes


def export_forward(layer, x):
    """`layer(x)` in inference, through its export form if it has one; for layers nested in
    a block (their export form reads their own variables)."""
    if hasattr(layer, "export_call"):
        return layer.export_call(x, None, None)
    return layer(x, training=False)
