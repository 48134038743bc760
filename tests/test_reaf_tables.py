"""Every row of the REAF paper's Tables 1-7 (Zhu et al., IEEE Access 2020) built by
lru_keras.zoo.

A test per row checks the trainable parameter count (BatchNorm gamma/beta included, moving
statistics excluded, as the paper counts) against the paper's #Params: within 0.5% for every
row that a reading of the paper reproduces. The five rows that no reading reproduces are
listed in MISMATCHES with their arithmetic; their tests pin our exact (honest) count and
check that the paper's value is indeed off by more than 0.5%, so they fail loudly if a
change in the builders moves them.

FLOPs: the paper's GFLOPs follow no single convention. Beside every row we record our
multiply-accumulates (conv + dense, `lru_keras.analysis.count_macs`) with the stride of a
downsampling bottleneck on its 3x3 conv (the builders' default, torchvision / ResNet v1.5 /
pytorch-cifar100) and on its first 1x1 conv (the original ResNet, `strided_conv="1x1"`):
- ResNet and REAF-ResNet 50/101 on ImageNet (Tables 1, 5) match the 1x1 placement within
  0.4% (ResNet50 3.86 vs 3.858, REAF 8-4-70 3.74 vs 3.741, ResNet101 7.57 vs 7.570), and so
  do the CIFAR ResNet50/101 baselines (1.22 vs 1.223, 2.44 vs 2.435); the REAF rows of Table 3
  are within -4.4%..+1.9% of it; the 3x3 placement is 3-9% above all of these.
- WideResNet50 / REAF-WideResNet50 (11.44 vs 11.398, 10.50 vs 10.484) and all CIFAR rows of
  Tables 6 and 7's ResNeXt50 (1.02 vs 1.011, 1.00 vs 1.003, 1.96 vs 1.938, 1.92 vs 1.912,
  1.36 vs 1.344) match the 3x3 placement within 1.2%; the 1x1 placement is 3-13% below.
- Neither: REAF-ResNet18 on ImageNet (1.95 vs 1.812; its baseline 1.81 matches), the Table 2
  ImageNet rows (2.98 vs 3.209 / 3.094, 2.72 vs 3.187 / 3.013), MobileNetV2 on CIFAR (67.59
  vs 64.95 MMACs: pytorch-cifar100's biases, BatchNorms, ReLU6s and pooling counted as one
  operation per value give 67.55; REAF+ adds 0.31, the 307,520 values of the extra BatchNorm)
  and MobileNetV2 on ImageNet (3.14 / 3.17 vs 0.301: ten times the usual 0.30 GMACs).
So the FLOPs are recorded (`record_property`; `python tests/test_reaf_tables.py` prints them),
not asserted.

Run as a script to print the whole comparison table.
"""

import functools

import keras
import pytest

from lru_keras import analysis
from lru_keras.zoo import get_builder

TOLERANCE = 0.005  # 0.5% of the paper's figure

# (row label, builder, arguments, paper #Params in M, paper GFLOPs)
CIFAR = dict(stem="cifar")


def _t3(c, c_out, config, params, gflops):
    label = (f"REAF-ResNet50 (C=C'={c}, {config})" if c == c_out
             else f"REAF-ResNet50 (C={c}, C'={c_out}, {config})")
    return (label, "REAFResNet", dict(depth=50, config=config, base_width=c, out_width=c_out,
                                      **CIFAR), params, gflops)


TABLES = {
    "1": [  # ImageNet
        ("ResNet50", "REAFResNet", dict(depth=50, config=None), 25.56, 3.86),
        ("REAF-ResNet50 (72-72, 4-3-4)", "REAFResNet", dict(depth=50, config="4-3-4",
                                                            base_width=72), 26.11, 3.97),
    ],
    "2": [  # ImageNet; the table prints widths 72.. for REAF and 64.. for ResNeXt, but its
            # counts are base width 64 for REAF and 128 for ResNeXt (module reaf_resnet)
        ("ResNeXt50 (G=4, all three convs)", "REAFResNeXt", dict(depth=50, config=None),
         20.89, 2.98),
        ("REAF-ResNet50 (64-64, 4-3-4, all three convs)", "REAFResNeXt",
         dict(depth=50, config="4-3-4"), 20.39, 2.72),
    ],
    "3": [  # CIFAR-100
        ("ResNet50 Baseline", "REAFResNet", dict(depth=50, config=None, **CIFAR), 23.71, 1.22),
        _t3(64, 64, "16-15-16", 23.01, 1.18), _t3(64, 64, "8-7-8", 22.30, 1.14),
        _t3(70, 70, "5-4-5", 24.11, 1.22), _t3(72, 72, "4-3-4", 24.32, 1.24),
        _t3(72, 72, "3-2-3", 23.20, 1.20), _t3(80, 80, "2-1-2", 23.75, 1.22),
        _t3(88, 56, "8-6-28", 23.60, 1.23), _t3(77, 63, "7-5-21", 22.76, 1.18),
        _t3(72, 75, "6-4-15", 23.74, 1.23), _t3(80, 70, "5-3-10", 23.23, 1.21),
        _t3(88, 72, "4-2-6", 23.40, 1.23), _t3(90, 90, "3-1-3", 23.66, 1.25),
        _t3(96, 56, "8-5-56", 23.21, 1.23), _t3(84, 70, "7-4-35", 23.50, 1.23),
        _t3(78, 80, "6-3-20", 23.22, 1.21), _t3(90, 80, "5-2-10", 23.36, 1.23),
        _t3(96, 96, "4-1-4", 23.44, 1.25), _t3(88, 70, "8-4-70", 23.00, 1.21),
        _t3(98, 70, "7-3-35", 23.29, 1.24), _t3(90, 90, "6-2-15", 23.56, 1.25),
        _t3(100, 100, "5-1-5", 23.19, 1.24), _t3(64, 112, "8-3-56", 23.59, 1.21),
        _t3(98, 84, "7-2-21", 22.76, 1.21), _t3(102, 102, "6-1-6", 22.74, 1.21),
        _t3(90, 84, "9-3-84", 22.68, 1.20), _t3(104, 84, "8-2-28", 22.71, 1.21),
        _t3(105, 105, "7-1-7", 22.75, 1.22), _t3(90, 108, "9-2-36", 23.58, 1.24),
        _t3(112, 112, "8-1-8", 23.75, 1.28),
    ],
    "4": [  # CIFAR-100
        ("ResNet18 Baseline", "REAFResNet", dict(depth=18, config=None, **CIFAR), 11.22, 0.56),
        ("REAF-ResNet18 (C=72, 4-3-4)", "REAFResNet", dict(depth=18, **CIFAR), 11.17, 0.56),
        ("ResNet34 Baseline", "REAFResNet", dict(depth=34, config=None, **CIFAR), 21.33, 1.16),
        ("REAF-ResNet34 (C=72, 4-3-4)", "REAFResNet", dict(depth=34, **CIFAR), 18.10, 1.13),
        ("ResNet101 Baseline", "REAFResNet", dict(depth=101, config=None, **CIFAR), 42.70,
         2.44),
        ("REAF-ResNet101 (C=72, 4-3-4)", "REAFResNet", dict(depth=101, **CIFAR), 43.81, 2.48),
    ],
    "5": [  # ImageNet
        ("ResNet18 Baseline", "REAFResNet", dict(depth=18, config=None), 11.69, 1.81),
        ("REAF-ResNet18 (C=72, 4-3-4)", "REAFResNet", dict(depth=18), 11.74, 1.95),
        ("ResNet50 Baseline", "REAFResNet", dict(depth=50, config=None), 25.56, 3.86),
        ("REAF-ResNet50 (C=88, C'=70, 8-4-70)", "REAFResNet",
         dict(depth=50, config="8-4-70", base_width=88, out_width=70), 24.85, 3.74),
        ("REAF-ResNet50 (C=72, 4-3-4)", "REAFResNet", dict(depth=50, config="4-3-4",
                                                           base_width=72), 26.11, 3.97),
        ("WideResNet50 Baseline (widen=2.0)", "WideResNet50", dict(), 68.88, 11.44),
        ("REAF-WideResNet50 (C=136, 4-3-4)", "WideResNet50", dict(config="4-3-4"), 63.11,
         10.50),
        ("ResNet101 Baseline", "REAFResNet", dict(depth=101, config=None), 44.55, 7.57),
        ("REAF-ResNet101 (C=72, 4-3-4)", "REAFResNet", dict(depth=101), 45.83, 7.79),
    ],
    "6": [
        ("ResNeXt50 on CIFAR-100", "REAFResNeXt", dict(depth=50, config=None, **CIFAR),
         19.04, 1.02),
        ("REAF-ResNet50 on CIFAR-100", "REAFResNeXt", dict(depth=50, **CIFAR), 18.73, 1.00),
        ("ResNeXt101 on CIFAR-100", "REAFResNeXt", dict(depth=101, config=None, **CIFAR),
         33.60, 1.96),
        ("REAF-ResNet101 on CIFAR-100", "REAFResNeXt", dict(depth=101, **CIFAR), 33.01, 1.92),
        ("ResNeXt50 on ImageNet", "REAFResNeXt", dict(depth=50, config=None), 20.89, 2.98),
        ("REAF-ResNet50 on ImageNet", "REAFResNeXt", dict(depth=50), 20.39, 2.72),
    ],
    "7": [
        ("MobileNetV2 on CIFAR-100", "REAFPlusMobileNetV2", dict(output_groups=None, **CIFAR),
         2.37, 67.59e-3),
        ("REAF+-MobileNetV2 on CIFAR-100", "REAFPlusMobileNetV2",
         dict(output_groups=2, **CIFAR), 2.38, 67.90e-3),
        ("ResNeXt50 on CIFAR-100", "REAFPlusResNeXt50", dict(output_groups=None, **CIFAR),
         23.18, 1.36),
        ("REAF+-ResNeXt50 on CIFAR-100", "REAFPlusResNeXt50", dict(output_groups=2, **CIFAR),
         23.19, 1.36),
        ("MobileNetV2 on ImageNet", "REAFPlusMobileNetV2", dict(output_groups=None), 3.50,
         3.14),
        ("REAF+-MobileNetV2 on ImageNet", "REAFPlusMobileNetV2", dict(output_groups=2), 3.52,
         3.17),
    ],
}

# Rows no reading of the paper reproduces: (table, label) -> (our exact count, arithmetic).
MISMATCHES = {
    ("3", "REAF-ResNet50 (C=C'=80, 2-1-2)"): (
        23_573_220,
        "C=C'=80 with the 3x3 conv at G_M/G_I = 1/2 gives 23.573M (paper 23.75, -0.74%); the "
        "other 29 rows of Table 3 fit the same formula within 0.41% (27 within 0.07%), and no "
        "pair of widths (C multiple of 2, C' of 2) gives 23.75 +- 0.005M for 2-1-2.",
    ),
    ("4", "REAF-ResNet18 (C=72, 4-3-4)"): (
        11_266_692,
        "REAF on the first 3x3 conv of each basic block reproduces the ImageNet REAF-ResNet18 "
        "(Table 5: 11.74M vs 11,736,072). The CIFAR model differs from it only in the stem and "
        "the classifier, by 469,380 parameters, exactly the paper's own baseline difference "
        "(11.69 - 11.22); so 11.74 - 0.47 = 11.27M, the paper prints 11.17 (its two REAF-R18 "
        "rows differ by 0.57M). REAF on the second conv gives 10.83M, on both 9.50M.",
    ),
    ("4", "REAF-ResNet34 (C=72, 4-3-4)"): (
        21_217_492,
        "The ResNet18 reading (REAF on the first 3x3 conv of each basic block) gives 21.22M "
        "(paper 18.10, +17.2%) and 1.149 GMACs (paper 1.13 GFLOPs). REAF on both 3x3 convs "
        "would give 18.03M (-0.36%) but 0.980 GMACs, and the same reading gives 9.50M for the "
        "CIFAR REAF-ResNet18 (paper 11.17) and 9.97M for the ImageNet one (paper 11.74): the "
        "paper's 18.10 contradicts its own GFLOPs and its ResNet18 rows.",
    ),
    ("6", "REAF-ResNet50 on CIFAR-100"): (
        18_536_100,
        "REAF 4-3-4 on all three bottleneck convs at base width 64 reproduces the ImageNet row "
        "of the same table (20.39M vs 20,387,880); the CIFAR model differs only in stem and "
        "classifier (-1,851,780, as the table's own ResNeXt50 pair 20.89 -> 19.04 shows): "
        "18.54M, paper 18.73 (-1.04%). The gap, +0.194M here and +0.217M for REAF-ResNet101, "
        "is the same within rounding at both depths, so it is in the stem or head, not in the "
        "blocks (one more 2048x100 dense layer, 204,900, would close both; not implemented).",
    ),
    ("6", "REAF-ResNet101 on CIFAR-100"): (
        32_793_252,
        "As REAF-ResNet50 on CIFAR-100: 32.79M, paper 33.01 (-0.66%), gap +0.217M.",
    ),
}

ROWS = [(table, *row) for table, rows in TABLES.items() for row in rows]


def _key(row):
    return (row[0], row[1])


def _freeze(arguments):
    return tuple(sorted(arguments.items()))


@functools.cache
def measure(builder, frozen_arguments):
    """Trainable params, MACs with the stride on the 3x3 conv and on the first 1x1 conv.

    Models are built, counted and dropped (no forward pass); only the numbers are cached, so
    rows that appear in several tables are built once.
    """
    model = get_builder(builder)(**dict(frozen_arguments))
    params = analysis.count_parameters(model)["trainable"]
    macs = analysis.count_macs(model)
    macs_1x1 = macs - downsampling_conv1_macs(model) * 3 // 4
    del model
    keras.backend.clear_session()
    return params, macs, macs_1x1


def downsampling_conv1_macs(model):
    """MACs of the first 1x1 conv of the strided bottlenecks (conv3..5, block 1).

    Moving the stride from the 3x3 conv to that 1x1 conv quarters its output (even inputs)
    and changes nothing else, so MACs("1x1") = MACs("3x3") - 3/4 of these; checked against a
    model built with strided_conv="1x1" in test_moving_the_stride_changes_only_conv1.
    """
    names = {f"conv{stage}_block1_1_conv" for stage in (3, 4, 5)}
    return sum(r["macs"] for r in analysis.stage_table(model)
               if r["name"] in names and r["kernel"].startswith("1x1"))  # not basic blocks


def check_row(row, record_property=None):
    table, label, builder, arguments, paper_params, paper_gflops = row
    params, macs, macs_1x1 = measure(builder, _freeze(arguments))
    diff = params / (paper_params * 1e6) - 1
    if record_property is not None:
        record_property("row", f"Table {table}: {label}")
        record_property("params", params)
        record_property("paper_params_M", paper_params)
        record_property("diff_percent", round(100 * diff, 3))
        record_property("gmacs_stride_on_3x3", macs / 1e9)
        record_property("gmacs_stride_on_1x1", macs_1x1 / 1e9)
        record_property("paper_gflops", paper_gflops)
    text = (f"Table {table}, {label}: {params:,} trainable parameters, paper {paper_params}M "
            f"({100 * diff:+.2f}%)")
    if _key(row) in MISMATCHES:
        expected, why = MISMATCHES[_key(row)]
        assert params == expected, f"{text}; the documented honest count is {expected:,}"
        assert abs(diff) > TOLERANCE, f"{text}: now within 0.5%; drop it from MISMATCHES"
    else:
        assert abs(diff) <= TOLERANCE, text


IMAGENET_TABLES = ("1", "2", "5")  # ImageNet-sized builds: the full tier (`slow`)


@pytest.mark.parametrize("row", [
    pytest.param(row, marks=pytest.mark.slow) if row[0] in IMAGENET_TABLES else row
    for row in ROWS
], ids=lambda row: f"table{row[0]}-{row[1]}")
def test_params_of_every_row_match_the_paper(row, record_property):
    check_row(row, record_property)


def test_every_row_of_every_table_is_checked():
    assert {t: len(r) for t, r in TABLES.items()} == {
        "1": 2, "2": 2, "3": 30, "4": 6, "5": 9, "6": 6, "7": 6}
    assert set(MISMATCHES) <= {_key(r) for r in ROWS}


def test_moving_the_stride_changes_only_conv1():
    """The MACs of strided_conv="1x1" derived in `measure` equal those of such a model."""
    from lru_keras.zoo import REAFResNet

    params, macs, macs_1x1 = measure("REAFResNet", _freeze(dict(depth=50, **CIFAR)))
    model = REAFResNet(50, stem="cifar", strided_conv="1x1")
    assert analysis.count_parameters(model)["trainable"] == params
    assert analysis.count_macs(model) == macs_1x1 < macs


def test_reaf_plus_adds_two_parameters_per_channel_of_each_extra_pair():
    """Eq. 8 with g_O = 2: one more BatchNorm (gamma, beta) on the project conv's input."""
    hidden_mobilenetv2 = 32 + sum(  # hidden widths of the 17 bottlenecks (expansion 6)
        c * 6 for c in [16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160])
    widths_resnext50 = 3 * 128 + 4 * 256 + 6 * 512 + 3 * 1024
    for builder, extra, stems in (
        ("REAFPlusMobileNetV2", 2 * hidden_mobilenetv2, ({}, CIFAR)),
        ("REAFPlusResNeXt50", 2 * widths_resnext50, (CIFAR,)),  # the rows of Table 7
    ):
        for stem in stems:
            base = measure(builder, _freeze(dict(output_groups=None, **stem)))
            plus = measure(builder, _freeze(dict(output_groups=2, **stem)))
            assert plus[0] - base[0] == extra
            assert plus[1] == base[1]  # REAF+ adds no multiply-accumulates


def format_rows():
    """The comparison table as text (what `python tests/test_reaf_tables.py` prints)."""
    header = ["table", "model", "paper M", "ours", "diff %", "paper GFLOPs",
              "GMACs 3x3-stride", "GMACs 1x1-stride", "note"]
    body = []
    for row in ROWS:
        table, label, builder, arguments, paper_params, paper_gflops = row
        params, macs, macs_1x1 = measure(builder, _freeze(arguments))
        body.append([table, label, f"{paper_params:.2f}", f"{params:,}",
                     f"{100 * (params / (paper_params * 1e6) - 1):+.2f}",
                     f"{paper_gflops:g}", f"{macs / 1e9:.3f}", f"{macs_1x1 / 1e9:.3f}",
                     "MISMATCH" if _key(row) in MISMATCHES else ""])
    return analysis.format_table(header, body, align_right=(2, 3, 4, 5, 6, 7))


if __name__ == "__main__":
    print(format_rows())
    for (table, label), (count, why) in MISMATCHES.items():
        print(f"\nTable {table}, {label}: ours {count:,}.\n  {why}")
    print(f"\n{len(ROWS)} rows")
