"""The standard vision suites: the ShrinkBench paper's setups and the MNIST classics, from data on disk.

Each suite pins its architecture, data layout and recipes. Data comes from ``--shrink-data-root``
(see :mod:`pytest_shrinkbench.suites.vision_data`); a suite whose data is absent is skipped with one line
saying how to provide it. Base weights come from ``--shrink-weights SUITE=PATH``, else:

* MNIST and CIFAR-10 suites: the plugin trains the base model once with the suite's pinned base
  recipe and caches it (keyed by suite, recipe, architecture, torch version and a hash of the
  data files), exactly like the embedded digits suites. On a CPU that takes hours for CIFAR-10:
  train once on a GPU and share the cached file, or pass a checkpoint.
* ImageNet suites: torchvision's published weights if their file is in the local torch hub cache
  (``$TORCH_HOME/hub/checkpoints``; found by name, its sha256 checked against the hash in the
  name, never downloaded); otherwise the suite is skipped. The plugin never trains ImageNet.

Fine-tuning is the same for every suite, after ShrinkBench's training defaults: SGD with Nesterov
momentum 0.9, learning rate 1e-3, 30 epochs, batch 128.
"""

from __future__ import annotations

import re
from functools import lru_cache, partial
from pathlib import Path
from urllib.parse import urlparse

import torch

from ..identity import file_sha256
from . import vision_data, vision_models
from .recipe import Recipe, ScheduledRecipe
from .registry import Suite, register_suite

# ShrinkBench's TrainingExperiment defaults (SGD, Nesterov momentum 0.9, lr 1e-3, 30 epochs, batch 128).
FINETUNE = ScheduledRecipe("sgd", lr=1e-3, epochs=30, batch_size=128, momentum=0.9, nesterov=True)

# He et al. 2016, section 4.2: lr 0.1 divided by 10 at 32k and 48k iterations, stopped at 64k
# (batch 128, 391 iterations an epoch: epochs 82, 123 and 164), weight decay 1e-4, momentum 0.9.
CIFAR_RESNET_BASE = ScheduledRecipe(
    "sgd", lr=0.1, epochs=164, batch_size=128, momentum=0.9, weight_decay=1e-4, milestones=(82, 123), gamma=0.1
)
# After Zagoruyko's cifar.torch: 300 epochs, batch 128, momentum 0.9, weight decay 5e-4, learning rate
# halved every 25 epochs (his Torch7 script started at 1; this PyTorch recipe starts at 0.1).
CIFAR_VGG_BASE = ScheduledRecipe(
    "sgd", lr=0.1, epochs=300, batch_size=128, momentum=0.9, weight_decay=5e-4,
    milestones=tuple(range(25, 300, 25)), gamma=0.5,
)
MNIST_BASE = Recipe("adam", lr=1e-3, epochs=20, batch_size=128)
# A ViT trained from scratch on CIFAR-10 wants decoupled weight decay and a falling rate: AdamW, lr 1e-3, weight
# decay 0.05, 100 epochs of batch 128, the rate divided by 10 at epochs 60 and 85.
CIFAR_VIT_BASE = ScheduledRecipe("adamw", lr=1e-3, epochs=100, batch_size=128, weight_decay=0.05, milestones=(60, 85), gamma=0.1)

MNIST_SHAPE = (1, 28, 28)
CIFAR_SHAPE = (3, 32, 32)
IMAGENET_SHAPE = (3, 224, 224)
HUB_HASH = re.compile(r"-([a-f0-9]{6,})\.")  # torch.hub's convention: the file name carries a sha256 prefix


def hub_checkpoint_names(model: str) -> list[str]:
    """File names of torchvision's published weights for ``model``, in the enum's order (V1 first)."""
    import torchvision

    return [Path(urlparse(weights.url).path).name for weights in torchvision.models.get_model_weights(model)]


def find_hub_weights(model: str) -> Path | str:
    """torchvision's weights for ``model`` in the local torch hub cache (never downloaded).

    Returns the first file found whose sha256 matches the prefix in its name, or a str naming the
    files looked for. A file whose hash does not match is an error: it is partial or corrupt.
    """
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    names = hub_checkpoint_names(model)
    for name in names:
        path = folder / name
        if path.is_file():
            expected = HUB_HASH.search(name)
            actual = _sha256(str(path), path.stat().st_size, path.stat().st_mtime_ns)
            if expected and not actual.startswith(expected.group(1)):
                raise RuntimeError(
                    f"torch hub file {path} has sha256 {actual[:16]}..., its name says {expected.group(1)}: "
                    "it is partial or corrupt; delete it or replace it"
                )
            return path
    return f"torchvision's {' or '.join(names)} in {folder}"


@lru_cache(maxsize=None)
def _sha256(path: str, _size: int, _mtime: int) -> str:
    return file_sha256(Path(path))


def _cifar(name: str, build, base: Recipe, description: str) -> Suite:
    return Suite(
        name=name,
        build_model=build,
        load_data=vision_data.cifar10,
        input_shape=CIFAR_SHAPE,
        base_recipe=base,
        finetune_recipe=FINETUNE,
        description=description,
        find_data=vision_data.find_cifar10,
        data_fingerprint=vision_data.fingerprint_cifar10,
    )


def _mnist(name: str, build, description: str) -> Suite:
    return Suite(
        name=name,
        build_model=build,
        load_data=vision_data.mnist,
        input_shape=MNIST_SHAPE,
        base_recipe=MNIST_BASE,
        finetune_recipe=FINETUNE,
        description=description,
        find_data=vision_data.find_mnist,
        data_fingerprint=vision_data.fingerprint_mnist,
    )


def _imagenet(name: str, build, model: str, description: str) -> Suite:
    return Suite(
        name=name,
        build_model=build,
        load_data=vision_data.imagenet,
        input_shape=IMAGENET_SHAPE,
        base_recipe=None,
        finetune_recipe=FINETUNE,
        description=description,
        find_data=vision_data.find_imagenet,
        find_weights=partial(find_hub_weights, model),
    )


VISION_SUITES = (
    _mnist("mnist-lenet300", vision_models.LeNet300, "LeNet-300-100 on MNIST"),
    _mnist("mnist-lenet5", vision_models.LeNet5, "LeNet-5 (Caffe form, 20/50 filters, 500 hidden) on MNIST"),
    *(
        _cifar(f"cifar10-resnet{depth}", build, CIFAR_RESNET_BASE, f"ResNet-{depth} (He et al. 2016, option-A shortcuts) on CIFAR-10")
        for depth, build in vision_models.CIFAR_RESNETS.items()
    ),
    _cifar("cifar10-vgg", vision_models.CifarVGG, CIFAR_VGG_BASE, "Zagoruyko's VGG-BN-dropout on CIFAR-10"),
    _cifar("cifar10-vit", vision_models.cifar_vit, CIFAR_VIT_BASE, "a small ViT (4x4 patches, width 192, 6 layers) on CIFAR-10"),
    _imagenet("imagenet-resnet18", vision_models.imagenet_resnet18, "resnet18", "torchvision ResNet-18 on ImageNet"),
    _imagenet("imagenet-resnet50", vision_models.imagenet_resnet50, "resnet50", "torchvision ResNet-50 on ImageNet"),
    _imagenet("imagenet-vgg16bn", vision_models.imagenet_vgg16_bn, "vgg16_bn", "torchvision VGG-16 with batch norm on ImageNet"),
    _imagenet("imagenet-mobilenetv2", vision_models.imagenet_mobilenet_v2, "mobilenet_v2", "torchvision MobileNetV2 on ImageNet"),
    _imagenet("imagenet-vit_b_16", vision_models.imagenet_vit_b_16, "vit_b_16", "torchvision ViT-B/16 on ImageNet"),
)

for _suite in VISION_SUITES:
    register_suite(_suite)
