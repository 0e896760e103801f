"""The layer census (benchmarks/census.py): the committed census_layers.json is what the
architectures give, every entry is a distinct, well-formed layer torch accepts, and the
architectures are the published ones (their parameter counts)."""
import json
import os
import sys

import pytest
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import census  # noqa: E402
from benchmarks.architectures import ARCHITECTURES  # noqa: E402


@pytest.fixture(scope="module")
def regenerated():
    return census.build_census()


def test_committed_census_is_what_the_architectures_give(regenerated):
    with open(census.CENSUS_PATH) as f:
        committed = f.read()
    assert census.dumps(regenerated) == committed, (
        "benchmarks/census_layers.json is stale: run `python -m benchmarks.census --write`")


def test_entries_are_distinct_named_and_sourced(regenerated):
    names = [e["name"] for e in regenerated]
    assert len(set(names)) == len(names)
    keys = [census._shape_key(e) for e in regenerated]
    assert len(set(keys)) == len(keys)
    sources = {arch for e in regenerated for arch in e["from"]}
    assert sources == set(ARCHITECTURES)
    # Each layer of a network appears at every batch size, with the same sources.
    by_batch = {}
    for e in regenerated:
        shape = json.dumps({k: v for k, v in e.items() if k not in ("name", "n")}, sort_keys=True)
        by_batch.setdefault(shape, set()).add(e["n"])
    assert all(batches == set(census.BATCHES) for batches in by_batch.values())


def test_every_entry_is_a_layer_torch_computes_with_that_output(regenerated):
    for e in regenerated:
        x = torch.empty(e["n"], e.get("c_in", e.get("c")), e["h"], e["w"], device="meta")
        if e["kind"] == "conv":
            w = torch.empty(e["c_out"], e["c_in"] // e["groups"], *e["kernel"], device="meta")
            out = F.conv2d(x, w, None, e["stride"], e["padding"], e["dilation"], e["groups"])
        elif e["kind"] == "max_pool":
            out = F.max_pool2d(x, e["kernel"], e["stride"], e["padding"], e["dilation"], e["ceil_mode"])
        elif e["kind"] == "avg_pool":
            out = F.avg_pool2d(x, e["kernel"], e["stride"], e["padding"], e["ceil_mode"],
                               e["count_include_pad"], e["divisor_override"])
        else:
            pool = F.adaptive_avg_pool2d if e["kind"] == "adaptive_avg_pool" else F.adaptive_max_pool2d
            out = pool(x, e["output_size"])
        assert list(out.shape[-2:]) == e["out"], e["name"]


def test_census_holds_the_shapes_issue_12_found_losing(regenerated):
    def find(**fields):
        return [e for e in regenerated if all(e.get(k) == v for k, v in fields.items())]

    assert find(kind="conv", n=8, c_in=240, h=14, kernel=[5, 5], groups=240)  # EfficientNet/MNv3 dw 5x5
    assert find(kind="conv", n=8, c_in=96, h=28, kernel=[5, 5], stride=[2, 2], groups=96)
    assert find(kind="conv", n=8, c_in=768, h=7, kernel=[7, 7], groups=768)  # ConvNeXt-T
    assert find(kind="conv", n=8, c_in=128, h=17, kernel=[1, 7]) and find(kind="conv", n=8, c_in=128, h=17, kernel=[7, 1])
    assert find(kind="conv", n=8, c_in=576, h=1, c_out=144, kernel=[1, 1])  # squeeze-excite
    assert find(kind="conv", n=8, c_in=24, h=56, c_out=144, kernel=[1, 1])  # MobileNetV2 expand
    assert find(kind="adaptive_avg_pool", n=8, c=96, h=14, output_size=[1, 1])


# Published parameter counts (papers / torchvision's documented ones; Inception-v3 without its
# auxiliary classifier, GoogLeNet with the paper's 5x5 branch).
PARAMETERS = {"resnet18": 11_689_512, "resnet50": 25_557_032, "resnext50_32x4d": 25_028_904,
              "regnet_y_400mf": 4_344_144, "vgg16": 138_357_544, "alexnet": 61_100_840,
              "densenet121": 7_978_856, "squeezenet1_1": 1_235_496, "shufflenet_v2_x1_0": 2_278_604,
              "mobilenet_v2": 3_504_872, "mobilenet_v3_small": 2_542_856, "mobilenet_v3_large": 5_483_032,
              "efficientnet_b0": 5_288_548, "convnext_tiny": 28_589_128, "inception_v3": 23_834_568}


@pytest.mark.parametrize("arch", sorted(PARAMETERS))
def test_architecture_has_the_published_parameter_count(arch):
    with torch.device("meta"):
        model = ARCHITECTURES[arch][0]()
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS[arch]
