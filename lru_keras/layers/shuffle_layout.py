"""Where each channel physically sits while an LRU block runs (channel-shuffle bookkeeping).

The paper's shuffle moves single channels, which on CPU costs a slow element-wise gather per
reuse. Everything else in a reuse is per-channel (depthwise conv, BatchNorm, ReLU, residual)
or per-group (the grouped 1x1 conv), so it works just as well on any channel order that keeps
each group's channels together, provided the shared kernels and BatchNorm parameters are
indexed the same way (a gather of a few thousand weights, not of the activations). So the
block keeps activations in a "physical" order and tracks the permutation to the paper's
"logical" order:

- After each reuse the physical tensor is shuffled by a plain 2-group transpose
  ((2, C/2) -> (C/2, 2)), a fast memory-order change, instead of the paper's shuffle.
- `layout[c]` is the physical position of logical channel c. The paper's shuffle S and the
  transpose T differ by a swap of the two channel halves, which only relabels whole groups,
  so the layout stays group-preserving and the grouped conv stays valid. When a layout would
  not be group-preserving, the step falls back to the exact gather.
- After the last reuse one gather restores the logical order.
"""

import numpy as np

from lru_keras.layers.channel_shuffle import shuffle_permutation


def is_group_preserving(layout, group_size):
    """True if every physical group of channels holds exactly one logical group."""
    inverse = np.argsort(layout)
    groups = inverse.reshape(-1, group_size) // group_size
    return bool(np.all(groups == groups[:, :1]))


def plan_shuffles(channels, group_size, reuses, shuffle=True):
    """The per-reuse layouts and the data movement after each reuse.

    Returns `(layouts, moves, final)`: `layouts[i]` is the layout during reuse i; `moves[i]`
    for i < reuses - 1 is ("transpose", None), ("gather", index) or None (no shuffle);
    `final` is the gather index that restores logical order after the last reuse, or None.
    """
    identity = np.arange(channels)
    layouts, moves = [identity], []
    paper = shuffle_permutation(channels, 2, swap_halves=True)
    transpose = shuffle_permutation(channels, 2, swap_halves=False)
    transpose_inverse = np.argsort(transpose)
    for _ in range(reuses - 1):
        layout = layouts[-1]
        if not shuffle:
            moves.append(None)
            layouts.append(layout)
            continue
        # logical x'[c] = y[paper[c]] = y_phys[layout[paper[c]]]; after the transpose,
        # physical k holds y_phys[transpose[k]], so x'[c] sits at transpose^-1(layout[paper[c]]).
        moved = transpose_inverse[layout[paper]]
        if is_group_preserving(moved, group_size):
            moves.append(("transpose", None))
            layouts.append(moved)
        else:
            moves.append(("gather", layout[paper].astype("int32")))
            layouts.append(identity)
    final = None if np.array_equal(layouts[-1], identity) else layouts[-1].astype("int32")
    return layouts, moves, final


def expanded_indices(layout, group_size, multiplier):
    """Index arrays for running the depthwise conv on a group-wise tiled copy of the input.

    The depthwise conv with depth multiplier M runs as a multiplier-1 conv on the input tiled
    group by group: physical channel e = (g, m, r) (group g, copy m, position r in the group)
    holds input channel g * group_size + r. Its output then has each group's M * group_size
    channels side by side, as the grouped 1x1 conv needs. Returns
    - `depthwise`: for each e, the logical depthwise output channel (c * M + m) it computes;
    - `position`: for each logical depthwise output channel, its e (inverse of `depthwise`);
    - `pointwise`: flat index into the logical grouped 1x1 kernel (M * group_size rows, C
      columns) giving the kernel for this layout: row m * group_size + r of physical column o
      is the weight from logical input channel inverse[block(o) + r], copy m.
    """
    inverse = np.argsort(layout)
    channels = len(layout)
    groups = channels // group_size
    g, m, r = np.meshgrid(np.arange(groups), np.arange(multiplier), np.arange(group_size),
                          indexing="ij")
    depthwise = (inverse[g * group_size + r] * multiplier + m).reshape(-1)
    position = np.argsort(depthwise)
    rows_m, rows_r = np.divmod(np.arange(multiplier * group_size), group_size)
    cols = np.arange(channels)
    logical_inputs = inverse[(cols[None, :] // group_size) * group_size + rows_r[:, None]]
    logical_rows = (logical_inputs % group_size) * multiplier + rows_m[:, None]
    pointwise = (logical_rows * channels + inverse[cols][None, :]).reshape(-1)
    return depthwise.astype("int32"), position.astype("int32"), pointwise.astype("int32")
