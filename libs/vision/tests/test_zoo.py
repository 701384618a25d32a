"""Model zoo: shapes for many input combos, size limits, knobs, safetensors round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cvops.contracts import training as contracts_training
from cvops.vision import (
    ARCHITECTURES,
    Normalization,
    build_model,
    load_weights,
    parameter_count,
    read_weights_info,
    save_weights,
)

COMBOS = [(16, 1, 2), (32, 3, 10), ((24, 40), 3, 7), (20, 4, 3)]


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize(("size", "channels", "classes"), COMBOS)
def test_every_arch_gives_logits_of_the_right_shape(arch, size, channels, classes):
    model = build_model(arch, classes, channels, size, width=0.25).eval()
    h, w = (size, size) if isinstance(size, int) else size
    out = model(torch.randn(3, channels, h, w))
    assert out.shape == (3, classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_minimum_image_size_is_accepted_and_one_less_is_refused(arch):
    low = ARCHITECTURES[arch].min_image_size
    model = build_model(arch, 3, 3, low, width=0.25).eval()
    assert model(torch.randn(2, 3, low, low)).shape == (2, 3)
    with pytest.raises(ValueError, match=rf"image size {low - 1}x{low} too small for {arch}"):
        build_model(arch, 3, 3, (low - 1, low))


def test_too_small_message_names_size_arch_and_minimum():
    with pytest.raises(ValueError) as err:
        build_model("resnet-mini", 10, 3, 8)
    assert str(err.value) == "image size 8x8 too small for resnet-mini (min 16)"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"arch": "vgg-huge"}, "unknown architecture 'vgg-huge'"),
        ({"num_classes": 1}, "num_classes"),
        ({"in_channels": 0}, "in_channels"),
        ({"width": 0.0}, "width"),
        ({"depth": 0}, "depth"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_arguments_are_refused_with_a_reason(kwargs, message):
    args = {"arch": "simple-cnn", "num_classes": 3, "in_channels": 3, "image_size": 16, **kwargs}
    with pytest.raises(ValueError, match=message):
        build_model(**args)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_width_and_depth_grow_the_model(arch):
    base = parameter_count(build_model(arch, 10, 3, 32, width=0.5, depth=1))
    assert parameter_count(build_model(arch, 10, 3, 32, width=1.0, depth=1)) > base
    assert parameter_count(build_model(arch, 10, 3, 32, width=0.5, depth=2)) > base


def test_dropout_is_active_in_training_only():
    model = build_model("simple-cnn", 4, 3, 16, width=0.25, dropout=0.5)
    x = torch.randn(4, 3, 16, 16)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


def test_the_zoo_builds_exactly_the_architectures_the_contracts_name():
    # the gateway refuses a training request for any other name without importing torch
    assert tuple(ARCHITECTURES) == contracts_training.ARCHITECTURES


def test_architectures_carry_metadata_and_search_hints():
    for name, spec in ARCHITECTURES.items():
        info = spec.info()
        assert info["name"] == name and info["min_image_size"] >= 1
        assert {"lr", "width", "depth", "dropout", "optimizer"} <= set(info["default_space"])
        json.dumps(info)  # plain data


def test_weights_round_trip_through_safetensors(tmp_path: Path):
    model = build_model("resnet-mini", 5, 1, (16, 20), width=0.25, depth=2, dropout=0.1).eval()
    norm = Normalization(mean=(0.5,), std=(0.25,))
    path = save_weights(model, tmp_path / "m.safetensors", normalization=norm, extra={"acc": 0.9})
    info = read_weights_info(path)
    assert info.arch_config == model.arch_config
    assert info.normalization == norm and info.extra == {"acc": 0.9}

    loaded = load_weights("resnet-mini", path)
    x = torch.randn(2, 1, 16, 20)
    assert torch.equal(loaded(x), model(x))
    assert loaded.arch_config == model.arch_config and loaded.normalization == norm


def test_weights_without_metadata_rebuild_from_knobs_and_tensor_shapes(tmp_path: Path):
    model = build_model("mobilenet-mini", 6, 3, 16, width=0.5).eval()
    path = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = load_weights("mobilenet-mini", path, width=0.5)
    assert loaded.arch_config["num_classes"] == 6 and loaded.arch_config["in_channels"] == 3
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(loaded(x), model(x))


def test_weights_that_do_not_fit_are_refused_with_a_reason(tmp_path: Path):
    path = save_weights(build_model("simple-cnn", 3, 3, 16, width=0.5), tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match="do not fit simple-cnn"):
        load_weights("simple-cnn", path, width=1.0)
    with pytest.raises(ValueError, match="holds simple-cnn weights, not resnet-mini"):
        load_weights("resnet-mini", path)
    with pytest.raises(ValueError, match="not a readable safetensors"):
        (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
        load_weights("simple-cnn", tmp_path / "junk.safetensors")
