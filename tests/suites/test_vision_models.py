"""The vision suites' architectures: published parameter counts, FLOPs, structure, and the suites' pinned recipes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pytest_shrinkbench.prunable import count_parameters, prunable_modules, trace_model
from pytest_shrinkbench.suites import vision as vision_suites
from pytest_shrinkbench.suites import vision_models as vm
from pytest_shrinkbench.suites.recipe import Recipe, ScheduledRecipe
from pytest_shrinkbench.suites.registry import SUITES


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops(model: nn.Module, shape: tuple[int, ...]) -> int:
    return trace_model(model, torch.zeros(1, *shape)).total


# (exact count, as published by He et al. 2016, Table 6)
CIFAR_RESNETS = {20: (269_722, 0.27e6), 32: (464_154, 0.46e6), 44: (658_586, 0.66e6), 56: (853_018, 0.85e6), 110: (1_727_962, 1.7e6)}


def cifar_resnet_params(depth: int) -> int:
    """By hand: 3×3 convs without bias, batch norm (2 per channel) after each, option-A shortcuts (no parameters)."""
    n = (depth - 2) // 6
    total = 3 * 16 * 9 + 2 * 16  # stem
    cin = 16
    for cout in (16, 32, 64):
        total += cin * cout * 9 + 2 * cout + (2 * n - 1) * (cout * cout * 9 + 2 * cout)
        cin = cout
    return total + 64 * 10 + 10


@pytest.mark.parametrize("depth", sorted(CIFAR_RESNETS))
def test_cifar_resnet_parameter_counts_are_the_published_ones(depth: int) -> None:
    exact, published = CIFAR_RESNETS[depth]
    model = vm.CIFAR_RESNETS[depth]()
    assert n_params(model) == exact == cifar_resnet_params(depth)
    assert exact == pytest.approx(published, rel=0.02)
    assert len(prunable_modules(model)) == depth, "depth counts the weighted layers: 6n+1 convolutions and the classifier"
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_resnet20_flops() -> None:
    """ResNet-20 on 32×32: 40.55M multiply-adds (He et al. quote ~41M), counted as 2 FLOPs each."""
    assert flops(vm.resnet20(), (3, 32, 32)) == 81_102_080
    assert flops(vm.resnet56(), (3, 32, 32)) == pytest.approx(2 * 125.5e6, rel=0.01)


def test_option_a_shortcut_subsamples_and_zero_pads() -> None:
    shortcut = vm.ShortcutA(16, 32, stride=2)
    assert not list(shortcut.parameters())
    x = torch.randn(2, 16, 8, 8)
    out = shortcut(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert not out[:, :8].any() and not out[:, 24:].any()
    assert torch.equal(vm.ShortcutA(16, 16, stride=1)(x), x)


def test_cifar_resnet_rejects_a_depth_that_is_not_6n_plus_2() -> None:
    with pytest.raises(ValueError, match="6n\\+2"):
        vm.CifarResNet(21)


def test_cifar_vgg_is_zagoruykos_network() -> None:
    model = vm.CifarVGG()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 5
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.3] + [0.4] * 7 + [0.5, 0.5]
    assert all(m.eps == 1e-3 for m in model.features if isinstance(m, nn.BatchNorm2d))
    by_hand = sum(cin * cout * 9 + cout + 2 * cout for cin, cout in zip([3] + [c.out_channels for c in convs[:-1]], [c.out_channels for c in convs]))
    by_hand += 512 * 512 + 512 + 2 * 512 + 512 * 10 + 10  # linear, batch norm, linear
    assert n_params(model) == by_hand == 14_991_946  # about 15.0M
    model.eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert flops(model, (3, 32, 32)) == pytest.approx(2 * 313.5e6, rel=0.01)


def test_lenets() -> None:
    assert n_params(vm.LeNet300()) == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10 == 266_610
    assert n_params(vm.LeNet5()) == (20 * 25 + 20) + (50 * 20 * 25 + 50) + (800 * 500 + 500) + (500 * 10 + 10) == 431_080
    for model in (vm.LeNet300(), vm.LeNet5()):
        assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert flops(vm.LeNet5(), (1, 28, 28)) == 2 * (20 * 24 * 24 * 25 + 50 * 8 * 8 * 20 * 25 + 800 * 500 + 500 * 10)


# torchvision's published numbers: parameters and GMACs at 224×224.
IMAGENET = {
    "imagenet-resnet18": (11_689_512, 1.82),
    "imagenet-resnet50": (25_557_032, 4.09),
    "imagenet-vgg16bn": (138_365_992, 15.47),
    "imagenet-mobilenetv2": (3_504_872, 0.30),
    "imagenet-vit_b_16": (86_567_656, 17.56),  # attention's QKᵀ and AV included
}


@pytest.mark.parametrize("suite", sorted(IMAGENET))
def test_imagenet_suites_use_torchvisions_models(suite: str) -> None:
    """Built on the meta device (free, and proof that no weights are fetched): torchvision's counts and GMACs."""
    params, gmacs = IMAGENET[suite]
    with torch.device("meta"):
        model = SUITES.get(suite).build_model()
    assert n_params(model) == params
    assert flops(model, SUITES.get(suite).input_shape) / 2 / 1e9 == pytest.approx(gmacs, rel=0.01)


def test_cifar_vit_prunes_its_attention_and_counts_its_attention_matmuls() -> None:
    with torch.device("meta"):
        model = SUITES.get("cifar10-vit").build_model()
    assert n_params(model) == 1_806_538
    trace = trace_model(model, torch.zeros(1, 3, 32, 32, device="meta"))
    assert "encoder.layers.encoder_layer_0.self_attention.in_proj_weight" in trace.prunable
    assert trace.prunable[0] == "conv_proj.weight" and trace.prunable[-1] == "heads.head.weight"
    # 6 layers × (QKᵀ + AV) over 65 tokens (64 patches and the class token) of width 192
    assert trace.fixed_flops == 6 * 2 * 2 * 65 * 65 * 192
    assert SUITES.get("cifar10-vit").base_recipe.optimizer == "adamw"


def test_resnet18_suite_matches_the_design_reference() -> None:
    torch.manual_seed(0)
    model = SUITES.get("imagenet-resnet18").build_model()
    assert count_parameters(model)[0] == 11_689_512
    assert flops(model, (3, 224, 224)) == pytest.approx(3.63e9, rel=0.01)


VISION = [s.name for s in vision_suites.VISION_SUITES]


def test_every_vision_suite_is_registered_with_its_input_shape() -> None:
    assert VISION == [
        "mnist-lenet300", "mnist-lenet5", "cifar10-resnet20", "cifar10-resnet32", "cifar10-resnet44", "cifar10-resnet56",
        "cifar10-resnet110", "cifar10-vgg", "cifar10-vit", "imagenet-resnet18", "imagenet-resnet50", "imagenet-vgg16bn",
        "imagenet-mobilenetv2", "imagenet-vit_b_16",
    ]
    for name in VISION:
        suite = SUITES.get(name)
        assert suite is vision_suites.VISION_SUITES[VISION.index(name)]
        with torch.device("meta"):
            model = suite.build_model().eval()
            logits = model(torch.empty(2, *suite.input_shape))
        assert logits.shape == (2, 1000 if name.startswith("imagenet") else 10), name


def test_recipes_are_pinned() -> None:
    """A recipe change is a deliberate, visible change: results carry these hashes."""
    assert vision_suites.FINETUNE == ScheduledRecipe("sgd", lr=1e-3, epochs=30, batch_size=128, momentum=0.9, nesterov=True)
    assert vision_suites.CIFAR_RESNET_BASE.milestones == (82, 123) and vision_suites.CIFAR_RESNET_BASE.epochs == 164
    assert vision_suites.CIFAR_VGG_BASE.milestones == tuple(range(25, 300, 25))
    assert vision_suites.MNIST_BASE == Recipe("adam", lr=1e-3, epochs=20, batch_size=128)
    assert {name: SUITES.get(name).finetune_recipe.digest() for name in VISION} == {name: "d43c017adbb8" for name in VISION}
    assert all(SUITES.get(name).base_recipe is None for name in VISION if name.startswith("imagenet"))


def test_scheduled_recipe_steps_the_learning_rate_per_epoch() -> None:
    recipe = ScheduledRecipe("sgd", lr=0.1, epochs=4, batch_size=8, nesterov=True, milestones=(1, 3), gamma=0.5)
    optimizer = recipe.make_optimizer(nn.Linear(2, 2).parameters())
    assert optimizer.defaults["nesterov"] is True
    scheduler = recipe.make_scheduler(optimizer)
    rates = []
    for _ in range(4):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == [0.1, 0.05, 0.05, 0.025]
    assert Recipe("sgd", lr=0.1, epochs=1, batch_size=1).make_scheduler(optimizer) is None
    assert recipe.digest() != Recipe("sgd", lr=0.1, epochs=4, batch_size=8).digest()
