"""Subjects of the vision suites: absent data, given checkpoints, torch hub weights, cache keys; devices; --shrink-weights parsing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pytest_shrinkbench.errors import SuiteUnavailable
from pytest_shrinkbench.identity import file_sha256 as sha256_of
from pytest_shrinkbench.identity import state_digest
from pytest_shrinkbench.suites import vision as vision_suites
from pytest_shrinkbench.suites.recipe import Recipe
from pytest_shrinkbench.suites.registry import SUITES, override_suite
from pytest_shrinkbench.suites.subject import load_checkpoint, load_subject
from pytest_shrinkbench.suites.vision_models import LeNet5, LeNet300
from tests.helpers import tensors_sha256
from tests.vision_fakes import write_cifar10, write_imagefolder, write_mnist


@pytest.fixture
def mnist_root(tmp_path: Path) -> Path:
    write_mnist(tmp_path / "data", train=64, test=32)
    return tmp_path / "data"


@pytest.fixture
def smoke_lenet300():
    """mnist-lenet300 with a one-epoch base recipe, restored afterwards (registries are per process)."""
    before = override_suite("mnist-lenet300", base_recipe=Recipe("adam", lr=1e-3, epochs=1, batch_size=32))
    yield SUITES.get("mnist-lenet300")
    override_suite("mnist-lenet300", **{f: getattr(before, f) for f in ("base_recipe", "finetune_recipe")})
    assert SUITES.get("mnist-lenet300") == before


@pytest.mark.parametrize("suite", ["mnist-lenet5", "cifar10-vgg", "imagenet-mobilenetv2"])
def test_absent_data_is_unavailable_not_an_error(suite: str, tmp_path: Path) -> None:
    with pytest.raises(SuiteUnavailable) as info:
        load_subject(suite, cache_dir=tmp_path, data_root=tmp_path)
    message = str(info.value)
    assert message.startswith(f"suite {suite}: ") and "not found under" in message and "provide" in message
    assert "\n" not in message
    assert list(tmp_path.iterdir()) == [], "nothing downloaded, nothing trained"


def test_given_checkpoint_is_used_and_its_sha_recorded(mnist_root: Path, tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = LeNet5()
    path = tmp_path / "base.pt"
    # Common layouts: nested under "state_dict" with DataParallel's "module." prefix, next to other entries.
    torch.save({"epoch": 7, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    subject = load_subject("mnist-lenet5", cache_dir=tmp_path / "cache", data_root=mnist_root, weights=path)
    assert subject.sha256 == state_digest(model.state_dict()) and subject.checkpoint == path, "identity: the tensors, however nested"
    for key, value in model.state_dict().items():
        assert torch.equal(subject.fresh_model().state_dict()[key], value), key
    assert not (tmp_path / "cache").exists(), "a given checkpoint needs no training and no cache"


def test_checkpoint_that_does_not_fit_names_the_parameters(tmp_path: Path) -> None:
    path = tmp_path / "lenet300.pt"
    torch.save(LeNet300().state_dict(), path)
    with pytest.raises(RuntimeError, match=r"checkpoint .*lenet300.pt for suite 'mnist-lenet5' does not fit its model LeNet5: missing \['conv1.weight'"):
        load_checkpoint(path, SUITES.get("mnist-lenet5"))
    state = LeNet300().state_dict()
    state["fc3.weight"] = torch.zeros(3, 100)
    torch.save(state, path)
    with pytest.raises(RuntimeError, match=r"wrong shape \['fc3.weight'\]"):
        load_checkpoint(path, SUITES.get("mnist-lenet300"))
    torch.save([1, 2, 3], path)
    with pytest.raises(RuntimeError, match="is not a state_dict"):
        load_checkpoint(path, SUITES.get("mnist-lenet300"))
    path.write_bytes(b"not a torch file")
    with pytest.raises(RuntimeError, match="refusing checkpoint .* torch.load\\(weights_only=True\\) rejects it"):
        load_checkpoint(path, SUITES.get("mnist-lenet300"))


def test_old_checkpoints_without_batch_norm_counters_load(tmp_path: Path) -> None:
    """torchvision's 2017 files predate num_batches_tracked: the counters are filled in, nothing else is."""
    suite = SUITES.get("cifar10-resnet20")
    model = suite.build_model()
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pt")
    loaded, _sha = load_checkpoint(tmp_path / "old.pt", suite)
    assert set(loaded) == set(model.state_dict())
    suite.build_model().load_state_dict(loaded)


def test_base_model_cache_key_follows_the_data(mnist_root: Path, tmp_path: Path, smoke_lenet300) -> None:
    """A base model trained on other data (a subset, a fake) never answers for the real data."""
    write_mnist(tmp_path / "other", train=64, test=32, seed=5)
    first = load_subject("mnist-lenet300", cache_dir=tmp_path / "cache", data_root=mnist_root)
    again = load_subject("mnist-lenet300", cache_dir=tmp_path / "cache", data_root=mnist_root)
    other = load_subject("mnist-lenet300", cache_dir=tmp_path / "cache", data_root=tmp_path / "other")
    assert again.checkpoint == first.checkpoint and again.sha256 == first.sha256
    assert other.checkpoint != first.checkpoint
    assert len(list((tmp_path / "cache").glob("mnist-lenet300-*.pt"))) == 2


def test_imagenet_weights_come_from_the_local_torch_hub_cache_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    write_imagefolder(tmp_path / "data", per_class=1)
    with pytest.raises(SuiteUnavailable, match=(
        "suite imagenet-mobilenetv2: no base weights: pass --shrink-weights imagenet-mobilenetv2=PATH, or provide "
        "torchvision's mobilenet_v2-b0353104.pth or mobilenet_v2-7ebf99e0.pth in .*torch/hub/checkpoints"
    )):
        load_subject("imagenet-mobilenetv2", cache_dir=tmp_path / "cache", data_root=tmp_path / "data")
    assert not (tmp_path / "torch").exists(), "never downloaded"
    # A file under torchvision's name whose sha256 does not match the name is partial or corrupt: refused.
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(SUITES.get("imagenet-mobilenetv2").build_model().state_dict(), hub / "mobilenet_v2-b0353104.pth")
    with pytest.raises(RuntimeError, match="has sha256 .* its name says b0353104: it is partial or corrupt"):
        load_subject("imagenet-mobilenetv2", cache_dir=tmp_path / "cache", data_root=tmp_path / "data")
    # Named with its own hash prefix (as torch.hub names files), it is found and used.
    sha = sha256_of(hub / "mobilenet_v2-b0353104.pth")
    good = hub / f"mobilenet_v2-{sha[:8]}.pth"
    (hub / "mobilenet_v2-b0353104.pth").rename(good)
    monkeypatch.setattr(vision_suites, "hub_checkpoint_names", lambda model: [good.name])
    subject = load_subject("imagenet-mobilenetv2", cache_dir=tmp_path / "cache", data_root=tmp_path / "data")
    assert subject.checkpoint == good and subject.sha256 == tensors_sha256(good)
    assert 0.0 <= subject.base_top1 <= subject.base_top5 <= 1.0


def test_hub_names_are_torchvisions() -> None:
    assert vision_suites.hub_checkpoint_names("resnet18") == ["resnet18-f37072fd.pth"]
    assert vision_suites.hub_checkpoint_names("resnet50")[0] == "resnet50-0676ba61.pth"




def test_an_augmenting_suites_pruning_batch_depends_on_the_case_seed_alone(tmp_path: Path, cifar_md5_bypass: None) -> None:
    """CIFAR-10's pruning batch is cropped and flipped at random: what a method sees must not depend on what the
    worker ran before, and drawing it must not move the RNG that fine-tuning draws from."""
    write_cifar10(tmp_path / "data", train=300, test=20)
    path = tmp_path / "resnet20.pt"
    torch.save(SUITES.get("cifar10-resnet20").build_model().state_dict(), path)
    subject = load_subject("cifar10-resnet20", cache_dir=tmp_path / "cache", data_root=tmp_path / "data", weights=path)
    torch.manual_seed(1)
    first = subject.batch(seed=3)
    torch.rand(100)  # another case ran in between
    state = torch.get_rng_state()
    again = subject.batch(seed=3)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert torch.equal(torch.get_rng_state(), state), "the global generator is left as it was"
    assert not torch.equal(subject.batch(seed=4)[0], first[0])
    assert torch.equal(subject.check_inputs(), subject.check_inputs()), "the invariants' inputs are fixed too"
