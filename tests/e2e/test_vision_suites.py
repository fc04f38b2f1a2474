"""The vision suites end to end through pytest: real on-disk formats, missing data, checkpoints as an axis, devices."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from pytest_shrinkbench.identity import file_sha256 as sha256_of
from pytest_shrinkbench.suites.vision_models import LeNet5
from tests.helpers import result_rows
from tests.vision_fakes import CIFAR_MD5_BYPASS, write_cifar10, write_mnist

# The smoke recipes a test project may pin through the documented override (docs/suites.md: "Smoke runs").
SMOKE_CONFTEST = CIFAR_MD5_BYPASS + (
    "from pytest_shrinkbench.suites.recipe import Recipe\n"
    "from pytest_shrinkbench.suites import override_suite\n"
    "SMOKE = Recipe('sgd', lr=0.01, epochs=1, batch_size=32)\n"
    "override_suite('cifar10-resnet20', base_recipe=SMOKE, finetune_recipe=SMOKE)\n"
)
RESNET20_PARAMS = 269_722




def resnet20_flops() -> int:
    """FLOPs (2 per multiply-add) of ResNet-20's convolutions and classifier on one 32×32 image, by hand."""
    flops = 2 * 16 * 32 * 32 * 3 * 9  # stem
    size, cin = 32, 16
    for cout, stride in ((16, 1), (32, 2), (64, 2)):
        size //= stride
        flops += 2 * cout * size * size * cin * 9  # first conv of the stage (strided)
        flops += 5 * 2 * cout * size * size * cout * 9  # the other 5 convs of its 3 blocks
        cin = cout
    return flops + 2 * 64 * 10


def test_cifar10_resnet20_case_end_to_end(project: pytest.Pytester, tmp_path: Path) -> None:
    """The issue's command on a directory in CIFAR-10's real format: base model trained and cached, one case run."""
    data = tmp_path / "data"
    write_cifar10(data, train=64, test=32)
    project.makeconftest(SMOKE_CONFTEST)
    result = project.runpytest_subprocess(
        "--shrink-method=global-magnitude", "--shrink-suite=cifar10-resnet20", f"--shrink-data-root={data}",
        "--shrink-ratios=2", "--shrink-seeds=0", "--shrink-device=cpu", f"--shrink-cache={tmp_path / 'cache'}", "-v",
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_case[[]global-magnitude-cifar10-resnet20-x2-seed0[]] PASSED*", "*shrinkbench leaderboard: cifar10-resnet20*"])
    (row,) = result_rows(project.path / "results")
    assert row["status"] == "passed" and row["suite"] == "cifar10-resnet20" and row["weights"] is None
    assert row["params_total"] == RESNET20_PARAMS
    assert row["params_nonzero"] == round(RESNET20_PARAMS / 2)
    assert row["flops_dense"] == resnet20_flops() == 81_102_080
    assert row["flops_sparse"] < row["flops_dense"]
    assert 0.0 <= row["top1"] <= row["top5"] <= 1.0
    cached = list((tmp_path / "cache").glob("cifar10-resnet20-*.pt"))
    assert len(cached) == 1 and row["base_sha256"] == sha256_of(cached[0])
    assert row["device"] == "cpu"


def test_missing_data_skips_the_suite_with_one_line(project: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Absent data is no failure and no download: each case of the suite skips with one line saying how to provide it."""
    monkeypatch.delenv("SHRINKBENCH_DATA", raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    args = ["--shrink-method=random", "--shrink-ratios=2", "--shrink-seeds=0,1", "-rs", "-p", "no:cacheprovider"]
    result = project.runpytest_inprocess("--shrink-suite=cifar10-resnet56,digits-mlp", f"--shrink-data-root={empty}", *args)
    result.assert_outcomes(passed=2, skipped=2)
    assert result.ret == pytest.ExitCode.OK
    skips = [line for line in result.stdout.lines if line.startswith("SKIPPED")]
    assert len(skips) == 1, skips  # both cases, one reason
    assert skips[0].startswith("SKIPPED [2]")
    assert f"suite cifar10-resnet56: CIFAR-10 not found under {empty}: no cifar-10-batches-py/ folder" in skips[0]
    assert "torchvision.datasets.CIFAR10(DIR, download=True)" in skips[0]
    assert not (empty / "cifar-10-batches-py").exists(), "nothing may be downloaded"
    rows = result_rows(project.path / "results")
    skipped = [r for r in rows if r["suite"] == "cifar10-resnet56"]
    assert [r["status"] for r in skipped] == ["skipped", "skipped"]
    assert skipped[0]["message"].startswith("suite cifar10-resnet56: CIFAR-10 not found under")
    # Without any data root, the reason says how to give one.
    result = project.runpytest_inprocess("--shrink-suite=mnist-lenet5", *args)
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["SKIPPED [[]2[]] *suite mnist-lenet5: no data root: pass --shrink-data-root=DIR*MNIST/raw/*"])


def save_lenet5(path: Path, fc1_scale: float) -> str:
    torch.manual_seed(1)
    state = LeNet5().state_dict()
    state["fc1.weight"] *= fc1_scale  # a large fc1 keeps more of its weights under a global threshold, the convs fewer
    torch.save(state, path)
    return sha256_of(path)


def test_two_checkpoints_are_an_axis_and_each_worker_pins_a_gpu(
    project: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weights A vs weights B under -n 2: every case runs once per checkpoint, tagged by its sha256.

    Also the GPU wiring: the controller hands out the visible GPUs (an outer CUDA_VISIBLE_DEVICES=7,5,
    faked as usable on the controller only, whatever --shrink-device says) and worker k narrows its
    CUDA_VISIBLE_DEVICES to GPU k mod 2 before anything initializes CUDA (the workers then run on the CPU as told).
    """
    write_mnist(tmp_path / "data")
    sha_a = save_lenet5(tmp_path / "a.pt", 1.0)
    sha_b = save_lenet5(tmp_path / "b.pt", 10.0)
    pins = tmp_path / "pins.log"
    project.makeconftest(
        "import os\n"
        "import pytest_shrinkbench.plugin.devices as devices\n"
        "if 'PYTEST_XDIST_WORKER' not in os.environ:\n"
        "    devices.resolve = lambda requested: 'cuda'\n"
        "def pytest_sessionstart(session):\n"
        "    if os.environ.get('PYTEST_XDIST_WORKER'):\n"
        f"        with open({str(pins)!r}, 'a') as f:\n"
        "            f.write(os.environ['PYTEST_XDIST_WORKER'] + ' ' + os.environ['CUDA_VISIBLE_DEVICES'] + '\\n')\n"
    )
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7,5")  # respected as given: its entries are handed out
    result = project.runpytest_subprocess(
        "--shrink-method=global-magnitude", "--shrink-suite=mnist-lenet5", f"--shrink-data-root={tmp_path / 'data'}",
        "--shrink-ratios=4", "--shrink-seeds=0", "--shrink-device=cpu",  # workers: cpu even where a GPU 7 exists
        f"--shrink-weights=mnist-lenet5={tmp_path / 'a.pt'}", "--shrink-weights", f"mnist-lenet5={tmp_path / 'b.pt'}",
        "-n", "2", "-v",
    )
    result.assert_outcomes(passed=2)
    tag_a, tag_b = f"w{sha_a[:8]}", f"w{sha_b[:8]}"
    result.stdout.fnmatch_lines_random([
        f"*test_case[[]global-magnitude-mnist-lenet5-x4-seed0-{tag_a}[]]*",
        f"*test_case[[]global-magnitude-mnist-lenet5-x4-seed0-{tag_b}[]]*",
        f"*shrinkbench leaderboard: mnist-lenet5 [[]{tag_a}[]]*",
        f"*shrinkbench leaderboard: mnist-lenet5 [[]{tag_b}[]]*",
    ])
    rows = result_rows(project.path / "results")
    assert {(r["weights"], r["base_sha256"]) for r in rows} == {(tag_a, sha_a), (tag_b, sha_b)}
    assert all(r["status"] == "passed" and r["params_total"] == 431_080 and r["device"] == "cpu" for r in rows)
    sparse = {r["weights"]: r["flops_sparse"] for r in rows}
    assert sparse[tag_b] < sparse[tag_a], "each case pruned its own base model (B's large fc1 leaves fewer conv weights, so fewer FLOPs)"
    assert sorted(pins.read_text().splitlines()) == ["gw0 7", "gw1 5"]


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_code_running_checkpoint_fails_its_suite_only(project: pytest.Pytester, tmp_path: Path) -> None:
    write_mnist(tmp_path / "data")
    evil = tmp_path / "evil.pt"
    torch.save({"fc1.weight": Payload()}, evil)
    result = project.runpytest_inprocess(
        "--shrink-method=random", "--shrink-suite=mnist-lenet300,digits-mlp", f"--shrink-data-root={tmp_path / 'data'}",
        "--shrink-ratios=2", "--shrink-seeds=0,1", "--shrink-device=cpu", f"--shrink-weights=mnist-lenet300={evil}",
    )
    result.assert_outcomes(passed=2, errors=2)
    result.stdout.fnmatch_lines([
        f"*could not load suite 'mnist-lenet300': RuntimeError: refusing checkpoint {evil} for suite 'mnist-lenet300': "
        "torch.load(weights_only=True) rejects it*",
    ])
    assert "pwned" not in result.stdout.str()
    rows = result_rows(project.path / "results")
    assert sorted((r["suite"], r["status"]) for r in rows) == [("digits-mlp", "passed")] * 2 + [("mnist-lenet300", "failed")] * 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shrink-weights=cifar10-resnet20"], "*--shrink-weights takes SUITE=PATH, got 'cifar10-resnet20'*"),
        (["--shrink-weights=cifar99=x.pt"], "*unknown suite 'cifar99'*"),
        (["--shrink-weights=cifar10-resnet20=nowhere.pt"], "*--shrink-weights 'cifar10-resnet20=nowhere.pt': no file *nowhere.pt*"),
        (["--shrink-device=tpu"], "*--shrink-device: must be one of auto, cpu, cuda, got 'tpu'*"),
    ],
    ids=["no-path", "unknown-suite", "no-file", "bad-device"],
)
def test_bad_vision_options_are_usage_errors(project: pytest.Pytester, args: list[str], message: str) -> None:
    result = project.runpytest_inprocess("--shrink-method=random", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_a_gpu_is_a_usage_error(project: pytest.Pytester) -> None:
    result = project.runpytest_inprocess("--shrink-method=random", "--shrink-device=cuda")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--shrink-device=cuda, but torch sees no usable CUDA device*"])


def test_data_root_and_weights_from_ini_env_and_command_line(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """--shrink-data-root beats ini shrink_data_root beats $SHRINKBENCH_DATA; ini shrink_weights lines give the axis too."""
    from pytest_shrinkbench.plugin.config import CONFIG_KEY

    (project.path / "a.pt").write_bytes(b"A")
    (project.path / "b.pt").write_bytes(b"B")
    monkeypatch.setenv("SHRINKBENCH_DATA", "/from/env")

    def parsed(*args: str):
        return project.parseconfigure("--shrink-method=random", "--shrink-suite=cifar10-resnet56", *args).stash[CONFIG_KEY]

    assert parsed().data_root == Path("/from/env")
    project.makeini("[pytest]\nshrink_results = results\nshrink_data_root = data\nshrink_weights =\n    cifar10-resnet56=a.pt\n    cifar10-resnet56=b.pt\n")
    config = parsed()
    assert config.data_root == project.path / "data", "relative paths are taken from the rootdir"
    tags = [c.tag for c in config.weights["cifar10-resnet56"]]
    assert tags == [f"w{sha256_of(project.path / n)[:8]}" for n in ("a.pt", "b.pt")]
    assert [c.id for c in config.cases()] == [f"random-cifar10-resnet56-x{r}-seed{s}-{t}" for t in tags for r in (1, 2, 4, 8, 16, 32) for s in (0, 1, 2)]
    config = parsed("--shrink-data-root=/from/cli", "--shrink-weights=cifar10-resnet56=b.pt")
    assert config.data_root == Path("/from/cli")
    assert [(c.path, c.tag) for c in config.weights["cifar10-resnet56"]] == [(project.path / "b.pt", None)], "the command line replaces the ini"
    assert {c.weights for c in config.cases()} == {None}
