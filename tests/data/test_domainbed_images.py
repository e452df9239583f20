"""DomainBed's image data sets from a local folder in its layout (a generated PACS here):
environments and classes in DomainBed's (sorted) order, the evaluation transform in closed
form, the in / out split, and one line for each malformed folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from landscape.data.domainbed import DomainBedDataError, domainbed_domains, environment_indices
from landscape.data.domainbed.catalog import IMAGENET_MEAN, IMAGENET_STD

#: PACS's environment folders (DomainBed's download script) and some of its classes, written
#: out of order: the loader must sort them as DomainBed (os.scandir + sorted) does
ENV_FOLDERS = ["sketch", "art_painting", "photo", "cartoon"]
CLASSES = ["guitar", "dog", "elephant"]
#: images per (environment, class): different per pair so the sizes tell them apart
SIZES = {
    (env, cls): 2 + (3 * i + j) % 4
    for i, env in enumerate(ENV_FOLDERS)
    for j, cls in enumerate(CLASSES)
}


def colour(env: str, cls: str, k: int) -> tuple[int, int, int]:
    """The uniform RGB colour of image ``k`` of ``env/cls``: it names the file."""
    return 40 * sorted(ENV_FOLDERS).index(env) + 10, 60 * sorted(CLASSES).index(cls) + 5, 7 * k


def normalised(rgb) -> torch.Tensor:
    """DomainBed's transform of a uniform image in closed form: ``(v / 255 - mean) / std``
    per channel (a bilinear resize of a uniform image is uniform)."""
    v = torch.tensor(rgb, dtype=torch.float32) / 255
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    return ((v - mean) / std).view(3, 1, 1).expand(3, 224, 224)


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    """``root/PACS/<env>/<class>/<k>.<ext>``: uniform images of assorted sizes and formats,
    plus a file that is no image (ignored, as torchvision's ImageFolder ignores it)."""
    root = tmp_path_factory.mktemp("data")
    for (env, cls), n in SIZES.items():
        folder = root / "PACS" / env / cls
        folder.mkdir(parents=True)
        for k in range(n):
            size = (224, 224) if k == 0 else (17 + k, 9 + 2 * k)
            ext = ".PNG" if k % 2 else ".png"  # extensions are compared lower-cased
            Image.new("RGB", size, colour(env, cls, k)).save(folder / f"{k:02d}{ext}")
        (folder / "notes.txt").write_text("not an image")
    return root


def expected(env: str):
    """``(X, y)`` of environment folder ``env`` in ImageFolder's order (classes sorted,
    files sorted)."""
    X, y = [], []
    for label, cls in enumerate(sorted(CLASSES)):
        for k in range(SIZES[(env, cls)]):
            X.append(normalised(colour(env, cls, k)))
            y.append(label)
    return torch.stack(X), torch.tensor(y)


def concat(loader):
    batches = list(loader)
    return torch.cat([X for X, _ in batches]), torch.cat([y for _, y in batches])


def test_pacs_folder_loads_with_its_domains_and_classes(pacs):
    domains = domainbed_domains("PACS", pacs, test_envs=["P"], split="all", batch_size=5)
    assert list(domains) == ["A", "C", "P", "S"]  # DomainBed's names, in its order
    assert domains.test_envs == ("P",) and domains.train_envs == ("A", "C", "S")
    assert domains.num_classes == len(CLASSES) and domains.input_shape == (3, 224, 224)
    for name, env in zip(domains, sorted(ENV_FOLDERS), strict=True):
        assert domains[name].dataset.classes == sorted(CLASSES)
        X, y = concat(domains[name])
        want_X, want_y = expected(env)
        assert X.dtype == torch.float32 and X.shape == want_X.shape
        assert torch.equal(y, want_y)
        torch.testing.assert_close(X, want_X, rtol=0, atol=1e-6)


@pytest.mark.parametrize("split", ["in", "out"])
def test_pacs_in_out_split_is_domainbeds(pacs, split):
    domains = domainbed_domains(
        "PACS", pacs, test_envs=[0], split=split, holdout_fraction=0.3, trial_seed=2,
        environments=["C"], batch_size=64,
    )  # fmt: skip
    want_X, want_y = expected("cartoon")
    keys = environment_indices(len(want_y), 1, split, holdout_fraction=0.3, trial_seed=2)
    X, y = concat(domains["C"])
    held_out = int(len(want_y) * 0.3)
    assert len(y) == (held_out if split == "out" else len(want_y) - held_out) > 0
    assert torch.equal(y, want_y[keys])
    torch.testing.assert_close(X, want_X[keys], rtol=0, atol=1e-6)


def test_missing_folder_says_which_layout_is_expected(tmp_path):
    with pytest.raises(DomainBedDataError) as err:
        domainbed_domains("PACS", tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert f"PACS not found under {tmp_path}" in message
    assert f"{tmp_path}/PACS/{{art_painting,cartoon,photo,sketch}}/<class>/<image>" in message
    with pytest.raises(DomainBedDataError, match=r"pass data_dir \(--data-dir\)"):
        domainbed_domains("VLCS", None)


def test_malformed_folders_get_one_line(tmp_path):
    (tmp_path / "PACS" / "photo").mkdir(parents=True)
    with pytest.raises(DomainBedDataError, match="holds 1 folders .photo. but DomainBed"):
        domainbed_domains("PACS", tmp_path)
    for env in ENV_FOLDERS:
        (tmp_path / "PACS" / env / "dog").mkdir(parents=True, exist_ok=True)
    with pytest.raises(DomainBedDataError, match=r"class folder .*dog holds no image"):
        domainbed_domains("PACS", tmp_path)


def test_unreadable_image_gets_one_line(tmp_path):
    for env in ENV_FOLDERS:
        folder = tmp_path / "PACS" / env / "dog"
        folder.mkdir(parents=True)
        (folder / "0.jpg").write_bytes(b"not a jpeg")
    domains = domainbed_domains("PACS", tmp_path, split="all", environments=["A"])
    with pytest.raises(DomainBedDataError, match=r"0.jpg cannot be read as an image"):
        concat(domains["A"])


def test_decoding_is_lazy(pacs):
    """Listing the environments decodes nothing: a batch is decoded when fetched."""
    domains = domainbed_domains("PACS", pacs, split="all", batch_size=2)
    dataset = domains["S"].dataset
    assert all(isinstance(path, str) for path, _ in dataset.samples)
    X, y = next(iter(domains["S"]))
    assert X.shape == (2, 3, 224, 224) and np.asarray(y).shape == (2,)


def test_first_keeps_the_first_samples_of_each_split(pacs):
    """``first=n``: the first n samples of the split, in DomainBed's order, and only those
    are listed for decoding."""
    whole = domainbed_domains("PACS", pacs, split="in", environments=["P", "A"])
    cut = domainbed_domains("PACS", pacs, split="in", environments=["P", "A"], first=4)
    assert list(cut) == ["P", "A"] and cut.settings["first"] == 4
    for name in cut:
        assert len(cut[name].dataset) == 4
        X, y = concat(cut[name])
        want_X, want_y = concat(whole[name])
        assert torch.equal(y, want_y[:4]) and torch.equal(X, want_X[:4])
    with pytest.raises(ValueError, match="first must be a positive integer or None, got 0"):
        domainbed_domains("PACS", pacs, first=0)
