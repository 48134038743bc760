"""Channel order: every index map and channel move of the shuffle and of group tiling.

The paper's shuffle (`shuffle_permutation`, `shuffle_channels`, its inverse
`unshuffle_channels`): ShuffleNet's 2-group shuffle
with the two channel halves swapped first, because the plain shuffle keeps the first and the
last channel in place, so those channels would meet the same filters at every reuse.

Group tiling (`tile_groups`, `expanded_indices`): the LRU block's depthwise conv with depth
multiplier M runs as a multiplier-1 depthwise conv on the input tiled group by group, which
keeps each group's M * C/groups outputs side by side for the grouped 1x1 conv. On CPU the
multiplier-M kernels were the slowest op (oneDNN ~10x; XNNPACK int8: 4.3 vs 1.6 ms per image
for 14-LruNet-1x).

Physical layouts (`plan_shuffles`): the paper's shuffle moves single channels, which on CPU
costs a slow element-wise gather per reuse. Everything else in a reuse is per-channel
(depthwise conv, BatchNorm, ReLU, residual) or per-group (the grouped 1x1 conv), so it works
just as well on any channel order that keeps each group's channels together, provided the
shared kernels and BatchNorm parameters are indexed the same way (a gather of a few thousand
weights, not of the activations). So the block's fast path keeps activations in a "physical"
order and tracks the permutation to the paper's "logical" order:

- After each reuse the physical tensor is shuffled by a plain 2-group transpose
  ((2, C/2) -> (C/2, 2)), a fast memory-order change, instead of the paper's shuffle.
- `layout[c]` is the physical position of logical channel c. The paper's shuffle S and the
  transpose T differ by a swap of the two channel halves, which only relabels whole groups,
  so the layout stays group-preserving and the grouped conv stays valid. When a layout would
  not be group-preserving, the step falls back to the exact gather.
- After the last reuse one gather restores the logical order.

The moves are written with reshape, split, concatenate and transpose only: they convert to
TFLite without GATHER, which XNNPACK does not take (one GATHER per reuse split the delegate
into one partition per reuse).
"""

import numpy as np
from keras import ops


def shuffle_permutation(channels, groups=2, swap_halves=True):
    """Input channel index of each output channel of the shuffle (a numpy int32 array).

    With C channels and g groups the shuffle views the channels as (g, C/g), transposes to
    (C/g, g) and flattens, so output channel `k*g + j` is input channel `j*C/g + k`; with
    `swap_halves` the halves `[x[C/2:], x[:C/2]]` are swapped first.
    """
    index = np.arange(channels)
    if swap_halves:
        index = np.concatenate([index[channels // 2 :], index[: channels // 2]])
    return index.reshape(groups, channels // groups).T.reshape(-1).astype("int32")


def shuffle_channels(x, groups=2, swap_halves=True):
    """`x[..., shuffle_permutation(C, groups, swap_halves)]` without a gather."""
    channels = x.shape[-1]
    leading = _leading_shape(x)
    y = ops.reshape(x, (*leading, groups, channels // groups))
    if swap_halves and groups == 2:
        y = _swap_rows(y)
    elif swap_halves:
        halves = _swap_rows(ops.reshape(x, (*leading, 2, channels // 2)))
        y = ops.reshape(halves, (*leading, groups, channels // groups))
    return ops.reshape(ops.swapaxes(y, -1, -2), (*leading, channels))


def unshuffle_channels(x, groups=2, swap_halves=True):
    """The inverse of `shuffle_channels`: `x[..., argsort(shuffle_permutation(C, groups,
    swap_halves))]` without a gather (the view (C/g, g) transposed back to (g, C/g), then
    the halves swapped back). A loop that shuffles after every reuse undoes the last shuffle
    with it."""
    channels = x.shape[-1]
    leading = _leading_shape(x)
    y = ops.swapaxes(ops.reshape(x, (*leading, channels // groups, groups)), -1, -2)
    if swap_halves and groups == 2:
        y = _swap_rows(y)
    elif swap_halves:
        y = _swap_rows(ops.reshape(y, (*leading, 2, channels // 2)))
    return ops.reshape(y, (*leading, channels))


def _swap_rows(y):
    """(..., 2, n) -> the two rows of the second-to-last axis swapped: the channel halves."""
    first, second = ops.split(y, 2, axis=-2)
    return ops.concatenate([second, first], axis=-2)


def tile_groups(x, groups, multiplier):
    """(..., C) -> (..., M * C): each of the `groups` channel groups repeated M times, side by
    side, so physical channel e = (g, m, r) holds input channel g * C/groups + r. One
    concatenation of M views (faster than `repeat`: 27 vs 31 ms per stage-1 reuse, batch 256,
    oneDNN on, 2 cores)."""
    channels = x.shape[-1]
    tiled = ops.reshape(x, (*_batch_and_rest(x, groups), 1, channels // groups))
    tiled = ops.concatenate([tiled] * multiplier, axis=2)
    return ops.reshape(tiled, (*_leading_shape(x), channels * multiplier))


def _batch_and_rest(x, groups):
    """(batch, pixels * groups) for a 4-D view that keeps the batch as its first axis. Folding
    the pixels into the batch axis instead converts to TFLite ops whose declared shape has
    batch 1 while they compute 256 rows: LiteRT recomputes shapes and hides it, TFLite Micro
    trusts the declared ones and refuses the file."""
    spatial = tuple(x.shape[1:-1])
    if all(size is not None for size in spatial):
        return (-1, int(np.prod(spatial)) * groups)
    return (ops.shape(x)[0], -1)


def _leading_shape(x):
    """All but the channel axis, for reshapes: -1 for the batch and the static sizes where
    they are known (a graph with static shapes converts to fewer TFLite ops)."""
    spatial = tuple(x.shape[1:-1])
    if all(size is not None for size in spatial):
        return (-1, *spatial)
    return tuple(ops.shape(x)[:-1])


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
