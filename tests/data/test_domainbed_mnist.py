"""DomainBed's RotatedMNIST and ColoredMNIST rebuilt from the MNIST cache, against literal
re-implementations of ``domainbed/datasets.py`` (global torch stream, torchvision's calls)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from landscape.data.domainbed import domainbed_domains
from landscape.data.domainbed.mnist import mnist_environments, mnist_folder
from landscape.data.mnist import MNISTError, load_mnist
from tests.data.test_domainbed_split import domainbed_env_splits

pytestmark = pytest.mark.mnist


@pytest.fixture(scope="module")
def mnist70k():
    """MNIST train + test as DomainBed concatenates them (``uint8``, ``int64`` tensors)."""
    try:
        train_x, train_y = load_mnist(split="train", download=False)
        test_x, test_y = load_mnist(split="test", download=False)
    except MNISTError as err:
        pytest.skip(f"MNIST cache not available: {err}")
    images = torch.from_numpy(np.concatenate([train_x, test_x]))
    return images, torch.from_numpy(np.concatenate([train_y, test_y]))


def domainbed_shuffle(images, labels, seed):
    """``torch.manual_seed(args.seed)`` then ``MultipleEnvironmentMNIST``'s shuffle."""
    torch.manual_seed(seed)
    shuffle = torch.randperm(len(images))
    return images[shuffle], labels[shuffle]


def torchvision_rotate(digit, angle):
    """``ToPILImage`` + torchvision's ``rotate(x, angle, fill=(0,), interpolation=BILINEAR)``
    on a PIL image, i.e. Pillow's ``rotate(angle, BILINEAR, False, None, fillcolor=(0,))``."""
    image = Image.fromarray(digit.numpy())
    assert image.mode == "L"
    return np.asarray(image.rotate(angle, Image.BILINEAR, False, None, fillcolor=(0,)))


def concat(loader):
    batches = list(loader)
    return torch.cat([X for X, _ in batches]), torch.cat([y for _, y in batches])


def test_rotated_mnist_sizes(mnist70k):
    envs = mnist_environments("RotatedMNIST", seed=0)
    assert [len(e) for e in envs] == [11667] * 4 + [11666] * 2  # 70000 = 6 * 11666 + 4
    assert [e.angle for e in envs] == [0, 15, 30, 45, 60, 75]
    assert sum(len(e) for e in envs) == 70_000


@pytest.mark.parametrize(
    ("env", "seed", "trial", "test"), [("30", 0, 0, False), ("75", 3, 1, True)]
)
def test_rotated_mnist_in_split_is_domainbeds(mnist70k, env, seed, trial, test):
    """Every image of an environment's in split equals the shuffled MNIST digit rotated by
    the environment's angle (brute force), labels are the digits, split as train.py does."""
    env_i = ["0", "15", "30", "45", "60", "75"].index(env)
    images, labels = domainbed_shuffle(*mnist70k, seed)
    env_images, env_labels = images[env_i::6], labels[env_i::6]
    in_keys, out_keys, _ = domainbed_env_splits(
        len(env_images), env_i, holdout=0.2, trial_seed=trial, test_env=test
    )
    domains = domainbed_domains(
        "RotatedMNIST", test_envs=[env_i] if test else [], seed=seed, trial_seed=trial,
        environments=[env], batch_size=3000,
    )  # fmt: skip
    assert list(domains) == [env] and domains.test_envs == ((env,) if test else ())
    X, y = concat(domains[env])
    assert X.shape == (len(in_keys), 1, 28, 28) and X.dtype == torch.float32
    assert len(out_keys) == int(len(env_images) * 0.2)
    assert torch.equal(y, env_labels[in_keys])
    want = np.stack([torchvision_rotate(env_images[k], int(env)) for k in in_keys])
    assert torch.equal(X[:, 0], torch.from_numpy(want).float().div(255))


def test_rotated_mnist_out_split_and_angle_zero(mnist70k):
    images, labels = domainbed_shuffle(*mnist70k, 0)
    env_images, env_labels = images[0::6], labels[0::6]
    _, out_keys, _ = domainbed_env_splits(11667, 0, holdout=0.2, trial_seed=0, test_env=False)
    domains = domainbed_domains("RotatedMNIST", split="out", environments=["0"], batch_size=999)
    X, y = concat(domains["0"])
    assert len(y) == 2333 == int(11667 * 0.2)
    assert torch.equal(X[:, 0], env_images[out_keys].float() / 255)  # angle 0: unrotated
    assert torch.equal(y, env_labels[out_keys])


def domainbed_colored_mnist(images, labels, seed):
    """``ColoredMNIST.color_dataset`` for each environment, keeping ``x`` as uint8."""
    images, labels = domainbed_shuffle(images, labels, seed)
    envs = []
    for i, p in enumerate([0.1, 0.2, 0.9]):
        imgs, labs = images[i::3], labels[i::3]
        labs = (labs < 5).float()
        labs = (labs - (torch.rand(len(labs)) < 0.25).float()).abs()
        colors = (labs - (torch.rand(len(labs)) < p).float()).abs()
        x = torch.stack([imgs, imgs], dim=1)
        x[torch.tensor(range(len(x))), (1 - colors).long(), :, :] *= 0
        envs.append((x, labs.view(-1).long()))
    return envs


def test_colored_mnist_is_domainbeds(mnist70k):
    want = domainbed_colored_mnist(*mnist70k, seed=5)
    domains = domainbed_domains("ColoredMNIST", split="all", seed=5, batch_size=8192)
    assert list(domains) == ["+90%", "+80%", "-90%"] and domains.num_classes == 2
    assert domains.input_shape == (2, 28, 28)
    for (x, y), (name, loader) in zip(want, domains.items(), strict=True):
        start = 0
        for X, Y in loader:
            stop = start + len(Y)
            assert X.shape[1:] == (2, 28, 28) and X.dtype == torch.float32
            assert torch.equal(X, x[start:stop].float().div_(255.0)), name
            assert torch.equal(Y, y[start:stop]), name
            start = stop
        assert start == len(y) == (23334 if name == "+90%" else 23333)


def test_colored_mnist_split_and_colours(mnist70k):
    """The '-90%' in split as a test environment: DomainBed's samples, colours mostly flipped."""
    x, y = domainbed_colored_mnist(*mnist70k, seed=0)[2]
    in_keys, _, _ = domainbed_env_splits(len(y), 2, holdout=0.2, trial_seed=3, test_env=True)
    domains = domainbed_domains(
        "ColoredMNIST", test_envs=["-90%"], trial_seed=3, environments="test", batch_size=50_000
    )
    assert list(domains) == ["-90%"] and domains.train_envs == ("+90%", "+80%")
    X, Y = concat(domains["-90%"])
    assert torch.equal(X, x[in_keys].float() / 255) and torch.equal(Y, y[in_keys])
    red = X[:, 0].flatten(1).sum(1) > 0  # channel 0 drawn: colour 0
    agreement = (red.long() == (1 - Y)).double().mean().item()
    assert 0.05 < agreement < 0.15  # colour agrees with the label 10% of the time here


def test_mnist_folder_reads_domainbeds_layout(tmp_path):
    assert mnist_folder(None) is None
    assert mnist_folder(tmp_path) == tmp_path
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    assert mnist_folder(tmp_path) == tmp_path / "MNIST" / "raw"
    (tmp_path / "mnist.npz").touch()
    assert mnist_folder(tmp_path) == tmp_path


def test_rotation_happens_once_when_a_digit_is_first_fetched(mnist70k):
    """A digit is rotated when first fetched and kept: a second pass, in any batching,
    gives the same images, and reading a few samples rotates only those."""
    images, _ = domainbed_shuffle(*mnist70k, 0)
    domains = domainbed_domains("RotatedMNIST", split="all", environments=["45"], batch_size=5)
    env = domains["45"].dataset
    first = next(iter(domains["45"]))[0]
    assert int(env.rotated.sum()) == 5  # only the batch read
    want = np.stack([torchvision_rotate(images[3::6][k], 45) for k in range(7)])
    X, _ = env.__getitems__([6, 0, 1, 2, 3, 4, 5, 6])  # repeats and re-reads
    assert torch.equal(X[1:6], first)
    assert torch.equal(X[[1, 2, 3, 4, 5, 6, 0], 0], torch.from_numpy(want).float().div(255))
    assert int(env.rotated.sum()) == 7
