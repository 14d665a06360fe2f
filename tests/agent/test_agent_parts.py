"""The agent's parts: plan, sharding, data loaders, measurement methods, config files."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
import unicodedata

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from agent import plan
from agent.data import load, subsample
from agent.codecarbon_adapter import _cpu_method as cpu_method
from agent.codecarbon_adapter import _gpu_method as gpu_method
from agent.codecarbon_adapter import _ram_method as ram_method
from agent.measure import check_country
from agent.train import Prepare, batches, resolve_device
from pepr.errors import PeprError
from pepr.store import RunStore

SETTINGS = dict(epochs=2, batch_size=8, learning_rate=5e-4, image_size=16, amp="off")


def test_plan_is_every_combination_dataset_major():
    jobs = plan.expand(["a", "b"], ["digits", "x/derma.npz"], [False, True], [1.0, 0.1], [0, 1],
                       **SETTINGS)
    assert len(jobs) == 32 and len({job.key for job in jobs}) == 32
    assert [job.dataset for job in jobs[:16]] == ["digits"] * 16
    assert {job.experiment for job in jobs} == {
        "digits", "digits_pt", "digits_f0.1", "digits_pt_f0.1",
        "derma", "derma_pt", "derma_f0.1", "derma_pt_f0.1",
    }
    assert plan.expand(["a", "a"], ["digits"], [False], [1], [0], **SETTINGS) == jobs[:1]


def test_job_key_is_stable_and_sees_every_setting():
    (job,) = plan.expand(["m"], ["digits"], [False], [1.0], [0], **SETTINGS)
    assert job.key == plan.expand(["m"], ["digits"], [False], [1.0], [0], **SETTINGS)[0].key
    changed = [
        plan.expand(["m"], ["digits"], [False], [1.0], [0], **{**SETTINGS, name: value})[0].key
        for name, value in [("epochs", 3), ("batch_size", 16), ("learning_rate", 1e-3),
                            ("image_size", 32), ("amp", "bf16")]
    ]
    changed.append(plan.expand(["m"], ["digits"], [False], [1.0], [1], **SETTINGS)[0].key)
    changed.append(plan.expand(["m"], ["digits"], [True], [1.0], [0], **SETTINGS)[0].key)
    assert job.key not in changed and len(set(changed)) == len(changed)


def test_job_keys_of_older_databases_stay_the_same():
    """A key is the hash of the job's settings as first written: amp off as false, and settings
    added later left out at their defaults. Else a resumed sweep retrains every finished job."""
    import hashlib
    import json

    (job,) = plan.expand(["m"], ["digits"], [False], [1.0], [0], **SETTINGS)
    first = {"model": "m", "dataset": "digits", "pretrained": False, "train_fraction": 1.0, "seed": 0,
             "epochs": 2, "batch_size": 8, "learning_rate": 5e-4, "image_size": 16, "amp": False,
             "experiment": "digits", "optimizer": "adam", "metric": "test_accuracy"}
    text = json.dumps(first, sort_keys=True, separators=(",", ":"))
    assert job.key == hashlib.sha256(text.encode()).hexdigest()[:16]


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_partition_the_plan(count):
    jobs = plan.expand([f"m{i}" for i in range(5)], ["digits"], [False, True], [1.0], [0, 1],
                       **SETTINGS)
    parts = [plan.shard(jobs, index, count) for index in range(count)]
    assert sorted(k for part in parts for k in (j.key for j in part)) == sorted(j.key for j in jobs)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert all(part == [job for job in jobs if job in part] for part in parts)  # plan order kept


@pytest.mark.parametrize("text", ["1/1", "-1/2", "a/b", "3", "0/0", ""])
def test_bad_shards_are_refused(text):
    with pytest.raises(PeprError, match="--shard"):
        plan.parse_shard(text)


def test_unknown_models_get_suggestions_and_files_allow_comments(tmp_path):
    with pytest.raises(PeprError, match="did you mean .*efficientnet_b0"):
        plan.check_models(["test_resnet", "eficientnet_b0"])
    # A made-up weights tag passed (timm.is_model takes any arch.tag), failed to build, and its
    # failed benchmark hid test_resnet's good one.
    with pytest.raises(PeprError, match=r"timm has no weights 'test_resnet.foo_bar'; test_resnet's are test_resnet.r160_in1k"):
        plan.check_models(["test_resnet.foo_bar"])
    assert plan.check_models(["test_resnet.r160_in1k"]) == ["test_resnet.r160_in1k"]
    names = tmp_path / "models.txt"
    names.write_text("# small ones\ntest_resnet\n\ntest_vit  # a transformer\n")
    assert plan.read_model_file(str(names)) == ["test_resnet", "test_vit"]
    with pytest.raises(PeprError, match="--models-file"):
        plan.read_model_file(str(tmp_path / "absent.txt"))


def test_sampling_by_parameter_count_is_seeded_and_in_range():
    first = plan.sample_models(1e6, 5e7, 2, seed=3, pretrained=False)
    assert first == plan.sample_models(1e6, 5e7, 2, seed=3, pretrained=False)
    assert len(set(first)) == 2
    assert all(1e6 <= plan.count_params(name) <= 5e7 for name in first)


def test_a_range_no_model_fits_says_so_after_showing_progress(monkeypatch, capsys):
    monkeypatch.setattr(plan, "PROGRESS_DELAY_S", 0)
    with pytest.raises(PeprError, match=r"only 0 of timm's \d+ architectures have 1 to 2 parameters, 3 asked"):
        plan.sample_models(1, 2, 3, seed=0, pretrained=False, counter=lambda name: 1000)
    assert "counting parameters" in capsys.readouterr().err


def test_a_draw_where_models_do_not_build_says_why(monkeypatch):
    """A broken install fails every build: the error says so, not only that none fitted."""
    def broken(name):
        raise ImportError("libcudnn.so.9: cannot open shared object file")

    with pytest.raises(PeprError, match=r"only 0 of timm's (\d+) architectures have 1e\+06 to 2e\+06 parameters, 3 "
                                        r"asked for; \1 could not be built, e.g. \w+: ImportError: libcudnn.so.9"):
        plan.sample_models(1e6, 2e6, 3, seed=0, pretrained=False, counter=broken, quiet=True)


def test_a_dataset_given_as_the_working_folder_is_labelled_by_its_name(tmp_path, monkeypatch):
    (tmp_path / "xray.2019" / "inner").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "xray.2019" / "inner")
    assert plan.dataset_label(plan.canonical_dataset(".")) == "inner"  # was "", an experiment with no name
    assert plan.dataset_label(plan.canonical_dataset("..")) == "xray"  # a folder's stem, as before
    assert plan.dataset_label(plan.canonical_dataset("../inner")) == "inner"


def test_digits_split_is_fixed_and_resized():
    data = load("digits", "unused", 12)
    assert {s: len(y) for s, y in data.labels.items()} == {"train": 1077, "val": 360, "test": 360}
    assert data.images["train"].shape[1:] == (1, 12, 12)
    assert data.images["train"].dtype == torch.uint8
    assert data.num_classes == 10 and data.name == "digits"
    again = load.__wrapped__("digits", "unused", 12)
    assert torch.equal(again.images["test"], data.images["test"])


def test_npz_with_float_images_and_rgb(tmp_path, make_npz):
    rgb = np.random.default_rng(0).random((6, 8, 8, 3)).astype(np.float32)
    path = make_npz(tmp_path / "f.npz", n=(6, 6, 6), size=8, classes=2,
                    train_images=rgb, val_images=rgb, test_images=rgb)
    data = load(str(path), "unused", 8)
    assert data.channels == 3 and data.num_classes == 2
    expected = torch.from_numpy(np.round(rgb * 255).astype(np.uint8)).permute(0, 3, 1, 2)
    assert torch.equal(data.images["train"], expected)
    bad = make_npz(tmp_path / "g.npz", n=(6, 6, 6), size=8, train_images=rgb * 3)
    with pytest.raises(PeprError, match=r"integers \(wider than 8 bits: scaled\) or floats in"):
        load(str(bad), "unused", 8)
    multi = make_npz(tmp_path / "m.npz", n=(6, 6, 6), size=8, train_labels=np.zeros((6, 4), int))
    with pytest.raises(PeprError, match="multi-label"):
        load(str(multi), "unused", 8)


@pytest.mark.parametrize("mode, channels", [("L", 1), ("RGB", 3)])
def test_image_folder(tmp_path, mode, channels):
    for split in ("train", "valid", "test"):
        for label, name in enumerate(["cat", "dog"]):
            folder = tmp_path / "pets" / split / name
            folder.mkdir(parents=True)
            for i in range(2):
                Image.new(mode, (10 + i, 10), color=60 + 100 * label).save(folder / f"{i}.png")
    data = load(str(tmp_path / "pets"), "unused", 8)
    assert data.name == "pets" and data.num_classes == 2 and data.channels == channels
    assert data.images["val"].shape == (4, channels, 8, 8)
    assert data.labels["test"].tolist() == [0, 0, 1, 1]


def test_a_large_image_is_read_without_pils_warning_and_a_far_larger_one_refused(tmp_path, monkeypatch, recwarn):
    """PIL warns over an image of more than MAX_IMAGE_PIXELS (two lines naming PIL's source)
    and refuses one of twice that; here, 16 x 16 images against a limit of 200 pixels."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)
    for split in ("train", "valid", "test"):
        for label, name in enumerate(["a", "b"]):
            folder = tmp_path / "big" / split / name
            folder.mkdir(parents=True)
            Image.new("L", (16, 16), color=60 + 100 * label).save(folder / "0.png")
    assert load(str(tmp_path / "big"), "unused", 8).images["train"].shape == (2, 1, 8, 8)
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
    Image.new("L", (21, 21)).save(tmp_path / "big" / "train" / "a" / "1.png")  # 441 > 2 * 200
    load.cache_clear()  # a sweep's one dataset is read once
    with pytest.raises(PeprError, match="1.png: too large to read as an image"):
        load(str(tmp_path / "big"), "unused", 8)


def test_an_image_folder_reads_subfolders_and_skips_what_macos_leaves(tmp_path):
    for split in ("train", "val", "test"):
        for label, name in enumerate(["benign", "malignant"]):
            folder = tmp_path / "derm" / split / name
            (folder / "clinic_b").mkdir(parents=True)
            Image.new("L", (8, 8), 60 + 100 * label).save(folder / "a.png")
            Image.new("L", (8, 8), 60 + 100 * label).save(folder / "clinic_b" / "b.png")  # was left out
            (folder / "._a.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # was refused as unreadable
            (folder / ".hidden").mkdir()
            (folder / ".hidden" / "c.png").write_bytes(b"not an image")
    data = load(str(tmp_path / "derm"), "unused", 8)
    assert data.labels["train"].tolist() == [0, 0, 1, 1]
    assert sorted(set(data.images["test"].flatten().tolist())) == [60, 160]



def test_16_bit_images_keep_their_brightness(tmp_path):
    """PIL turns 16-bit values (X-ray, CT exports) to white when converting to RGB: every image
    of such a folder was blank. They are now scaled together, lowest value 0, highest 255."""
    levels = {"train": (1000, 3500), "val": (1500, 2250), "test": (900, 4000)}
    for split, values in levels.items():
        for label, value in enumerate(values):
            folder = tmp_path / "xray" / split / f"c{label}"
            folder.mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.full((6, 6), value, dtype=np.uint16)).save(folder / f"{i}.png")
    (tmp_path / "xray" / "train" / ".ipynb_checkpoints").mkdir()  # hidden: not a class
    data = load(str(tmp_path / "xray"), "unused", 6)
    assert data.num_classes == 2 and data.channels == 1
    scaled = {split: sorted(set(data.images[split].flatten().tolist())) for split in levels}
    # (v - 1000) * 255 / 2500, from the train split's range; the others clipped to it
    assert scaled == {"train": [0, 255], "val": [51, 128], "test": [0, 255]}
    Image.new("L", (6, 6), 9).save(tmp_path / "xray" / "test" / "c0" / "8bit.png")
    with pytest.raises(PeprError) as refused:
        load(str(tmp_path / "xray"), "elsewhere", 6)  # another key: not the cached load
    assert str(refused.value) == (f"{tmp_path}/xray/test/c0/8bit.png: 8-bit pixels, where {tmp_path}/xray/train/c0/0.png "
                                  f"has 16- or 32-bit ones: {tmp_path}/xray mixes kinds of image; convert them to one kind")


def test_float_and_16_bit_images_are_not_scaled_as_one(tmp_path):
    """Floats in [0, 1] beside 16-bit values: one linear map made the floats black."""
    for split in ("train", "val", "test"):
        for label in (0, 1):
            folder = tmp_path / "xr" / split / f"c{label}"
            folder.mkdir(parents=True)
            Image.fromarray(np.full((6, 6), 1000 + 2000 * label, dtype=np.uint16)).save(folder / "a.png")
    Image.fromarray(np.full((6, 6), 0.7, dtype=np.float32)).save(tmp_path / "xr" / "val" / "c1" / "f.tif")
    with pytest.raises(PeprError, match=r"xr/val/c1/f\.tif: float pixels, where .*xr/train/c0/a\.png has "
                                        r"16- or 32-bit ones"):
        load(str(tmp_path / "xr"), "unused", 6)


def test_an_image_folder_says_what_it_did_not_read_and_follows_links(tmp_path, capsys):
    root = tmp_path / "derm"
    for split in ("train", "val", "test"):
        for label, name in enumerate(["mälign ñevus", "benign"]):
            # A Mac copy spells the test split's accented names decomposed (NFD): the same class.
            spelt = unicodedata.normalize("NFD" if split == "test" else "NFC", name)
            folder = root / split / spelt
            folder.mkdir(parents=True)
            Image.new("L", (8, 8), 60 + 100 * label).save(folder / "a.png")
    extra = tmp_path / "more"
    extra.mkdir()
    Image.new("L", (8, 8), 60).save(extra / "b.png")
    (root / "train" / "mälign ñevus" / "more").symlink_to(extra)  # a linked subfolder: read
    (root / "train" / "benign" / "scan.dcm").write_bytes(b"DICM")
    (root / "train" / "benign" / "gone.png").symlink_to(tmp_path / "absent.png")
    Image.new("L", (8, 8), 60).save(root / "train" / "loose.png")  # in no class folder
    data = load(str(root), "unused", 8)
    assert data.num_classes == 2 and data.labels["train"].tolist() == [0, 1, 1]  # benign; mälign ñevus twice
    assert data.labels["test"].tolist() == [0, 1]
    assert capsys.readouterr().err == f"note: {root}: 3 file(s): 1 .dcm, 1 broken link, 1 outside a class folder not read as images\n"
    load.cache_clear()  # a sweep of two datasets reads each again: to check it, then to train
    load(str(root), "unused", 8)
    assert capsys.readouterr().err == ""  # the note was said once
    for file in (root / "train" / "benign").iterdir():
        if file.suffix == ".png" and file.exists():
            file.unlink()
    with pytest.raises(PeprError, match=r"benign: no images \(2 file\(s\): 1 \.dcm, 1 broken link not read; images are \.bmp"):
        load(str(root), "elsewhere", 8)
    Image.new("L", (8, 8), 160).save(root / "train" / "benign" / "a.png")
    (root / "val" / unicodedata.normalize("NFD", "mälign ñevus")).mkdir()  # beside its NFC twin
    with pytest.raises(PeprError, match=r"val: class folders .* are one name spelt two ways \(Unicode\); merge them"):
        load(str(root), "third", 8)


def test_class_labels_keep_the_order_of_the_names_on_disk(tmp_path):
    """Decomposed `é` (e + accent, as a Mac writes it) sorts before `f` on disk, composed after:
    the labels, and so the digest of a dataset already trained on, stay as they were."""
    for split in ("train", "val", "test"):
        for value, name in ((60, unicodedata.normalize("NFD", "é")), (160, "f")):
            folder = tmp_path / "acc" / split / name
            folder.mkdir(parents=True)
            Image.new("L", (8, 8), value).save(folder / "a.png")
    data = load(str(tmp_path / "acc"), "unused", 8)
    assert data.images["train"][data.labels["train"] == 0].unique().tolist() == [60]  # é is class 0


def test_an_image_too_large_to_decode_is_named(tmp_path):
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 14000, 14000, 8, 0, 0, 0, 0)  # 196 million grey pixels, declared
    for split in ("train", "val", "test"):
        for label in (0, 1):
            folder = tmp_path / "big" / split / f"c{label}"
            folder.mkdir(parents=True)
            Image.new("L", (8, 8), 9).save(folder / "a.png")
    bomb = tmp_path / "big" / "train" / "c1" / "huge.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    with pytest.raises(PeprError, match=r"big/train/c1/huge\.png: too large to read as an image \(Image size \(196000000 pixels\)"):
        load(str(tmp_path / "big"), "unused", 8)


def test_16_bit_npz_images_are_scaled_as_an_image_folders_are(tmp_path, make_npz):
    hu = {split: np.full((n, 8, 8), value, dtype=np.int16)  # CT in Hounsfield units
          for split, n, value in (("train", 24, -1000), ("val", 9, 200), ("test", 9, 3000))}
    hu["train"][1::2] = 1000
    path = make_npz(tmp_path / "ct.npz", **{f"{split}_images": x for split, x in hu.items()})
    data = load(str(path), "unused", 8)
    scaled = {split: sorted(set(data.images[split].flatten().tolist())) for split in hu}
    assert scaled == {"train": [0, 255], "val": [153], "test": [255]}  # (v + 1000) * 255 / 2000
    mixed = make_npz(tmp_path / "mixed.npz", train_images=hu["train"])
    with pytest.raises(PeprError, match="mixes uint8 images with deeper integer ones"):
        load(str(mixed), "unused", 8)


def test_one_dataset_one_spelling_so_a_resume_finds_its_jobs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").mkdir()
    spellings = ["a/x.npz", "./a/x.npz", "a//x.npz", str(tmp_path / "a" / "x.npz")]
    jobs = [plan.expand(["m"], [spec], [False], [1.0], [0], epochs=1, batch_size=8,
                        learning_rate=1e-3, image_size=8, amp="off")[0] for spec in spellings]
    assert {job.dataset for job in jobs} == {"a/x.npz"} and len({job.key for job in jobs}) == 1
    assert plan.canonical_dataset("DermaMNIST") == "dermamnist"
    assert plan.canonical_dataset("/elsewhere/y.npz") == "/elsewhere/y.npz"
    # A database from before holds the job under the key of its dataset as typed then.
    typed = jobs[1]
    before = dataclasses.replace(typed, dataset="./a/x.npz", typed_dataset=None).key
    assert before != typed.key and typed.done_in({before}) and not jobs[0].done_in({before})


def test_medmnist_by_name_fails_clearly_without_the_file_or_network(tmp_path):
    with pytest.raises(PeprError, match="not digits, a .npz file"):
        load("notamnist", str(tmp_path), 28)
    with pytest.raises(PeprError, match="only single-label"):
        load("chestmnist", str(tmp_path), 28)
    with pytest.raises(PeprError, match=r"dermamnist_64.npz"):
        load("dermamnist", str(tmp_path), 64)


def test_subsample_is_deterministic_and_sized():
    assert len(subsample(1077, 0.1)) == 108 and len(subsample(5, 0.01)) == 1
    assert np.array_equal(subsample(1077, 0.1), subsample(1077, 0.1))
    assert set(subsample(100, 0.1)) < set(subsample(100, 0.5))  # smaller regimes nest
    assert np.array_equal(subsample(10, 1.0), np.arange(10))


def test_grey_images_feed_an_rgb_model():
    model = torch.nn.Conv2d(3, 1, 1)
    model.pretrained_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    prepare = Prepare(model, in_chans=3, device=torch.device("cpu"), channels_last=False)
    x = prepare(torch.full((2, 1, 4, 4), 255, dtype=torch.uint8))
    assert x.shape == (2, 3, 4, 4) and torch.allclose(x, torch.full_like(x, 2.0))


def test_batches_cover_the_split_and_never_train_on_one_image():
    x, y = torch.zeros(9, 1, 2, 2, dtype=torch.uint8), torch.arange(9)
    shuffled = list(batches(x, y, 4, torch.device("cpu"), torch.Generator().manual_seed(0)))
    assert [len(b[1]) for b in shuffled] == [4, 4]
    ordered = list(batches(x, y, 4, torch.device("cpu")))
    assert torch.cat([b[1] for b in ordered]).tolist() == list(range(9))


def test_measurement_methods_follow_codecarbon_hardware(tmp_path):
    from codecarbon.external.hardware import CPU
    from codecarbon.external.ram import RAM

    def cpu(mode, tdp):
        return CPU.from_utils(str(tmp_path), mode, "Some CPU", tdp)

    assert cpu_method(cpu("cpu_load", 100)) == "cpu-load-estimate"
    assert cpu_method(cpu("constant", 100)) == "tdp-estimate"
    assert cpu_method(cpu("constant", None)) == "constant-estimate"
    assert ram_method(RAM(tracking_mode="process")) == "ram-estimate"
    assert gpu_method(None) == "none" and cpu_method(None) == "none"
    assert check_country("dnk") == "DNK"


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("tpu", "cuda:99" if torch.cuda.is_available() else "cuda"):
        with pytest.raises(PeprError, match="--device"):
            resolve_device(bad)


def test_config_file_sets_defaults_and_flags_win(cli, tmp_path):
    config = tmp_path / "sweep.toml"
    config.write_text('models = ["test_resnet", "test_vit"]\nseeds = [0, 1]\nepochs = 3\n'
                      'regimes = "pretrained"\n')
    code, out, _ = cli("run", "--config", config, "--epochs", 5, "--dry-run",
                       "--db", tmp_path / "x.duckdb")
    assert code == 0 and len(out.splitlines()) == 4
    assert all("digits_pt" in line and "pretrained" in line for line in out.splitlines())
    (job,) = plan.expand(["test_resnet"], ["digits"], [True], [1.0], [0], epochs=5, batch_size=32,
                         learning_rate=5e-4, image_size=64, amp="off")
    assert out.split()[0] == job.key
    code, out, _ = cli("run", "--config", config, "--models", "test_efficientnet", "--dry-run",
                       "--db", tmp_path / "x.duckdb")
    assert code == 0 and [line.split()[3] for line in out.splitlines()] == ["test_efficientnet"] * 2
    config.write_text("epoch = 3\n")
    code, _, err = cli("run", "--config", config, "--dry-run")
    assert code == 2 and "unknown setting 'epoch'" in err


def test_codecarbon_settings_cannot_leak_in_from_the_environment(monkeypatch):
    from codecarbon.input import DataSource

    from agent.codecarbon_adapter import LastTotals
    from agent.measure import POWER_SAMPLE_SECS, TRACKING_MODE, EnergyMeter, new_tracker

    for name, value in {"TRACKING_MODE": "machine", "MEASURE_POWER_SECS": "99", "PUE": "3",
                        "CO2_SIGNAL_API_TOKEN": "secret", "FORCE_CPU_POWER": "1000",
                        "FORCE_CARBON_INTENSITY_G_CO2E_KWH": "999"}.items():
        monkeypatch.setenv(f"CODECARBON_{name}", value)
    tracker = new_tracker("DNK", None, None, LastTotals())
    energy = EnergyMeter("DNK", None).stop()  # in a helper process, which inherits the environment
    assert tracker._tracking_mode == TRACKING_MODE
    assert tracker._measure_power_secs == POWER_SAMPLE_SECS
    assert tracker._pue == 1.0 and tracker._force_cpu_power is None
    assert not tracker._electricitymaps_api_token
    intensity = DataSource().get_global_energy_mix_data()["DNK"]["carbon_intensity"]
    assert energy.carbon_intensity == pytest.approx(intensity)


def test_signals_wait_for_a_database_write_to_finish():
    import os
    import signal

    from agent.sweep import Interrupted, SignalGuard

    previous = signal.getsignal(signal.SIGTERM)
    steps = []
    with SignalGuard() as guard:
        with pytest.raises(Interrupted, match="SIGTERM"):
            with guard.hold():
                os.kill(os.getpid(), signal.SIGTERM)
                steps.append("write finished")
        assert steps == ["write finished"]
        with guard.hold():  # a handled signal does not come back
            steps.append("next write")
        os.kill(os.getpid(), signal.SIGINT)  # a second signal cannot cut the recording short
        steps.append("recorded")
    assert steps == ["write finished", "next write", "recorded"]
    with SignalGuard():
        with pytest.raises(Interrupted, match="SIGINT"):  # outside a write: at once
            os.kill(os.getpid(), signal.SIGINT)
    with SignalGuard() as guard:
        with pytest.raises(Interrupted, match="SIGTERM"):  # asked first, it wins over a failed write
            with guard.hold():
                os.kill(os.getpid(), signal.SIGTERM)
                raise OSError("the write failed")
    assert signal.getsignal(signal.SIGTERM) is previous


@pytest.mark.parametrize(
    "model, expected",
    [("test_resnet", "CNN"), ("test_efficientnet", "CNN"), ("test_convnext", "CNN"), ("test_vit", "Other"), ("test_coatnet", "Other")],
)
def test_architecture_type_follows_the_papers_cnn_or_other(model, expected):
    import timm

    from agent.train import architecture_type

    assert architecture_type(timm.create_model(model, num_classes=3)) == expected


def test_a_sweep_cannot_mix_protocols_in_one_experiment(cli, tmp_path):
    db = tmp_path / "runs.duckdb"
    code, out, _ = cli("run", "--models", "test_resnet", "--epochs", 4, "--image-size", 32, "--dry-run", "--db", db)
    (key,) = [line.split()[0] for line in out.splitlines()]
    RunStore(db).record_run(
        dict(run_id="r1", job_key=key, experiment="digits", model="test_resnet", source="agent", status="ok",
             epochs=4, batch_size=32, learning_rate=5e-4, image_size=32, optimizer="adam", amp="off")
    )
    before = db.read_bytes()
    code, out, err = cli("run", "--models", "test_vit", "--epochs", 2, "--image-size", 32, "--dry-run", "--db", db)
    assert code == 2
    assert err.strip() == (
        "pepr-agent: experiment 'digits' already holds runs with epochs=4 (this sweep: epochs=2); "
        "name another with --experiment"
    )
    assert db.read_bytes() == before
    code, out, _ = cli("run", "--models", "test_vit", "--epochs", 2, "--image-size", 32, "--dry-run",
                       "--db", db, "--experiment", "digits_e2")
    assert code == 0 and "digits_e2" in out
    code, out, _ = cli("run", "--models", "test_resnet", "--epochs", 4, "--image-size", 32, "--dry-run", "--db", db)
    assert code == 0 and out.split()[1] == "ok"


def test_the_dry_run_tells_a_live_claim_from_an_abandoned_one(cli, tmp_path):
    db = tmp_path / "runs.duckdb"
    plan = ("--models", "test_resnet,test_vit", "--epochs", 1, "--image-size", 32, "--dry-run", "--db", db)
    code, out, _ = cli("run", *plan)
    keys = [line.split()[0] for line in out.splitlines()]
    live = subprocess.Popen([sys.executable, "-c", "input()"], stdin=subprocess.PIPE, text=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    try:
        for key, pid in zip(keys, (live.pid, int(dead.stdout))):
            RunStore(db).record_run(dict(run_id=f"r{pid}", job_key=key, experiment="digits", model="m",
                                         source="agent", status="running", host=socket.gethostname(), pid=pid,
                                         started_at=pd.Timestamp.now("UTC").tz_localize(None)))
        code, out, _ = cli("run", *plan)
    finally:
        live.communicate("\n", timeout=30)
    assert code == 0 and [line.split()[1] for line in out.splitlines()] == ["running", "abandoned"]


def test_done_in_takes_a_database_yet_to_be_made_but_not_a_folder(cli, tmp_path):
    plan = ("run", "--models", "test_resnet", "--image-size", 32, "--dry-run", "--db", tmp_path / "part.duckdb")
    code, out, _ = cli(*plan, "--done-in", tmp_path / "merged.duckdb")  # the first submission: none yet
    assert code == 0 and out.split()[1] == "todo"
    code, _, err = cli(*plan, "--done-in", tmp_path)  # a mistyped path skipped nothing, silently
    assert code == 2 and err == f"pepr-agent: --done-in: {tmp_path}: a folder, not a database file\n"


@pytest.mark.parametrize("model", ["crossvit_tiny_240", "test_vit", "test_resnet"])
def test_every_architecture_takes_the_jobs_image_size(model):
    """A fixed-size ViT is built for the job's size; CrossViT, which rescales its input itself
    and breaks when built for another size (as in the paper's study at 224 px), is not."""
    from agent.train import build_model

    (job,) = plan.expand([model], ["tiny"], [False], [1.0], [0], epochs=1, batch_size=2,
                         learning_rate=5e-4, image_size=32, amp="off")
    net = build_model(job, num_classes=7, in_chans=1).eval()
    with torch.inference_mode():
        assert net(torch.zeros(2, 1, 32, 32)).shape == (2, 7)


def test_an_architecture_that_cannot_take_the_image_size_says_so():
    from agent.train import sized_for

    assert sized_for("halonet26t", 256) == {}  # its own size, as in the paper's study
    refusal = r"^halonet26t cannot take 224x224 images \(AssertionError; its default is 256 px\)"
    with pytest.raises(RuntimeError, match=refusal):
        sized_for("halonet26t", 224)  # its feature maps do not split into whole 8x8 halo blocks


def test_every_model_of_the_papers_study_takes_its_256_px_images(paper_dir):
    import pandas as pd

    from agent.train import sized_for

    cannot = {}
    for name in pd.read_csv(paper_dir / "model_names.csv")["model"]:
        try:
            sized_for(name, 256)
        except RuntimeError as error:
            cannot[name] = str(error)
    assert cannot == {"gluon_xception65": "Unknown model (gluon_xception65)"}  # unknown to timm 1.0


def test_a_sweep_of_two_datasets_reads_its_first_once(cli, make_npz, tmp_path, monkeypatch):
    """The checks before the sweep read both, then the sweep read both again: one dataset is
    kept in memory (a dataset may take gigabytes), and it was the wrong one."""
    import agent.data

    read = []
    monkeypatch.setattr(agent.data, "_npz", lambda path, real=agent.data._npz: read.append(path.name) or real(path))
    load.cache_clear()
    one, two = make_npz(tmp_path / "one.npz"), make_npz(tmp_path / "two.npz")
    code, _, err = cli("run", "--models", "test_resnet", "--datasets", f"{one},{two}", "--epochs", 1,
                       "--image-size", 8, "--quiet", "--db", tmp_path / "runs.duckdb")
    assert code == 0, err
    assert read.count("one.npz") == 1 and read.count("two.npz") == 2


def test_a_dry_run_reads_a_dataset_only_where_runs_recorded_its_digest(cli, make_npz, tmp_path, monkeypatch):
    """Planning a new sweep read (and for an image folder, decoded) every dataset to compare
    digests with runs that did not exist."""
    import agent.data

    read = []
    monkeypatch.setattr(agent.data, "_npz", lambda path, real=agent.data._npz: read.append(path.name) or real(path))
    load.cache_clear()
    data, db = make_npz(tmp_path / "derm.npz"), tmp_path / "runs.duckdb"
    plan = ("run", "--models", "test_resnet", "--datasets", data, "--epochs", 1, "--image-size", 8, "--quiet", "--db", db)
    assert cli(*plan, "--dry-run")[0] == 0 and read == []  # no database yet: nothing to compare with
    assert cli(*plan)[0] == 0 and read == ["derm.npz"]
    load.cache_clear()
    assert cli(*plan, "--dry-run")[0] == 0 and read == ["derm.npz"] * 2  # its runs recorded a digest: checked
