"""Datasets: `digits`, MedMNIST 2D by name, a MedMNIST-layout `.npz`, or an image folder.

Every loader returns a `Data`: per split (`train`, `val`, `test`) uint8 images shaped
(N, C, S, S) with C = 1 or 3, resized to the run's image size, and int64 labels.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import math
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from agent.plan import dataset_label
from pepr.errors import DownloadError, PeprError, described
from pepr.paper import URL_SCHEME
from pepr.schema import INT32_MAX
from pepr.text import one_spelling

SPLITS = ("train", "val", "test")
MEDMNIST_SIZES = (28, 64, 128, 224)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp"}
FOLDER_SPLITS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}


@dataclasses.dataclass(frozen=True)
class Data:
    name: str
    images: dict[str, torch.Tensor]  # split -> uint8 (N, C, S, S)
    labels: dict[str, torch.Tensor]  # split -> int64 (N,)
    num_classes: int
    digest: str = ""  # of the images and labels as read (`content_digest`; a folder's are resized as read)

    @property
    def channels(self) -> int:
        return self.images["train"].shape[1]


def subsample(n: int, fraction: float) -> np.ndarray:
    """Indices of a deterministic `fraction` of n items (at least one), the same for every run
    and seed; a smaller fraction is a subset of a larger one."""
    keep = max(1, math.ceil(n * fraction))
    return np.sort(np.random.default_rng(0).permutation(n)[:keep])


@functools.cache
def _note_once(text: str) -> None:
    """Print a note to stderr once per process (a sweep of several datasets may read one
    twice: to check it, then to train on it, past `load`'s cache of one)."""
    print(text, file=sys.stderr)


@functools.lru_cache(maxsize=1)
def load(spec: str, data_dir: str, image_size: int) -> Data:
    """Load and resize a dataset; PeprError naming the spec when it cannot be used."""
    path = Path(spec)
    if URL_SCHEME.match(spec):
        raise PeprError(f"--datasets: {spec}: URLs are not read; give digits, a MedMNIST name, "
                        "a .npz file or an image folder")
    if spec == "digits":
        arrays = _digits()
    elif spec.endswith(".npz"):
        arrays = _npz(path)
    elif path.is_dir() or "/" in spec:
        arrays = _folder(path, image_size)
    else:
        arrays = _medmnist(spec.lower(), Path(data_dir), image_size)
    return _to_data(spec, arrays, image_size)


def content_digest(splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    """A digest of each split's images and labels (shape, type and bytes): the same data, the
    same digest, wherever its files lie; about a second per GB."""
    digest = hashlib.blake2b(digest_size=16)
    for split, arrays in splits.items():
        for array in arrays:
            digest.update(f"{split} {array.dtype.str} {array.shape};".encode())
            digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def _to_data(spec: str, arrays: dict, image_size: int) -> Data:
    checked = {split: _check_split(spec, split, arrays[f"{split}_images"], arrays[f"{split}_labels"])
               for split in SPLITS}
    images = {split: _resize(x, image_size) for split, (x, _) in checked.items()}
    labels = {split: torch.from_numpy(y) for split, (_, y) in checked.items()}
    channels = {x.shape[1] for x in images.values()}
    if len(channels) != 1:
        raise PeprError(f"{spec}: splits have different channel counts {sorted(channels)}")
    num_classes = int(max(int(y.max()) for y in labels.values())) + 1
    if num_classes < 2:
        raise PeprError(f"{spec}: needs at least two classes")
    if len(labels["train"]) < 2:
        raise PeprError(f"{spec}: the train split has 1 image; training needs at least 2")
    present = np.unique(labels["train"].numpy())
    for split in ("val", "test"):
        if int(labels[split].max()) > present[-1]:
            raise PeprError(f"{spec}: the {split} split has label {int(labels[split].max())}, which no "
                            f"train image has (train labels run up to {present[-1]}); every class "
                            "needs train images")
    if len(present) < num_classes:  # labels are 0..K-1, each learnt from train
        gap = next((i for i, label in enumerate(present) if label != i), len(present))
        raise PeprError(f"{spec}: no train image has label {gap} (labels run from 0 to "
                        f"{num_classes - 1}); every class needs train images")
    return Data(dataset_label(spec), images, labels, num_classes, content_digest(checked))


def _check_split(spec: str, split: str, x: np.ndarray, y: np.ndarray):
    """Images as uint8 NCHW and labels as int64 (N,), or a PeprError saying what is wrong."""
    shape = x.shape
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    else:
        raise PeprError(
            f"{spec}: {split}_images must be shaped (N, H, W) or (N, H, W, 1|3), got {x.shape}"
        )
    if 0 in x.shape:
        raise PeprError(f"{spec}: {split}_images is empty (shaped {shape})")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != len(x) or len(y) == 0:
        raise PeprError(
            f"{spec}: {split}_labels must be one class index per image "
            f"({len(x)} images, labels shaped {y.shape}); multi-label data is not supported"
        )
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise PeprError(f"{spec}: {split}_labels must be non-negative integers")
    if y.max() > INT32_MAX:
        raise PeprError(f"{spec}: {split}_labels holds {y.max()}; labels are class indices, 0 to K-1")
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.floating) or not (np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1):
            raise PeprError(f"{spec}: {split}_images must be integers (wider than 8 bits: scaled) or floats in [0, 1]")
        x = np.round(x * 255).astype(np.uint8)
    return np.ascontiguousarray(x), y.astype(np.int64)


def _resize(x: np.ndarray, size: int, chunk: int = 512) -> torch.Tensor:
    """uint8 NCHW images resized to size x size (bilinear, antialiased)."""
    x = torch.from_numpy(x)
    if x.shape[-2:] == (size, size):
        return x
    parts = [
        F.interpolate(part.float(), size=(size, size), mode="bilinear", antialias=True)
        .round_()
        .clamp_(0, 255)
        .to(torch.uint8)
        for part in x.split(chunk)
    ]
    return torch.cat(parts)


def _digits() -> dict:
    """scikit-learn's 8x8 handwritten digits, split 60/20/20 stratified with a fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = np.round(digits.images * (255 / 16)).astype(np.uint8)
    y = digits.target.astype(np.int64)
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=0
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=0.25, stratify=y_rest, random_state=0
    )
    return {
        "train_images": x_train, "train_labels": y_train,
        "val_images": x_val, "val_labels": y_val,
        "test_images": x_test, "test_labels": y_test,
    }


ZIP_MAGIC = b"PK\x03\x04"  # an .npz is a zip archive of .npy files


def _npz(path: Path) -> dict:
    if path.is_dir():
        raise PeprError(f"{path}: a folder, not a .npz file")
    if not path.is_file():
        raise PeprError(f"{path}: no such dataset file")
    try:
        with path.open("rb") as file:
            head = file.read(len(ZIP_MAGIC))
    except OSError as error:
        raise PeprError(f"{path}: cannot be read ({error.strerror})") from None
    if head != ZIP_MAGIC:
        raise PeprError(f"{path}: not a .npz file (not a zip archive of arrays)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [
                f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels")
                if f"{s}_{kind}" not in archive.files
            ]
            if missing:
                raise PeprError(f"{path}: not in MedMNIST layout, missing {', '.join(missing)}")
            arrays = {name: archive[name] for name in archive.files}
    except PeprError:
        raise
    except ValueError as error:
        if "pickle" in str(error):
            raise PeprError(f"{path}: holds Python objects (pickles), which are never loaded; "
                            "store plain numeric arrays") from None
        raise PeprError(f"{path}: not a readable .npz file ({error})") from None
    except Exception as error:
        raise PeprError(f"{path}: not a readable .npz file ({type(error).__name__}: {error})") from None
    deep = {arrays[f"{s}_images"].dtype.kind in "iu" and arrays[f"{s}_images"].dtype != np.uint8 for s in SPLITS}
    if deep == {True}:  # 16-bit X-ray, CT in Hounsfield units
        return _to_8_bits(arrays)
    if True in deep:
        raise PeprError(f"{path}: mixes uint8 images with deeper integer ones; store every split as one type")
    return arrays


def _folder(root: Path, image_size: int) -> dict:
    """root/split/class/image; the classes are the train split's folder names (told apart as
    Unicode-normalised text: a folder copied from a Mac may spell `ñ` in two code points).

    Images are resized on reading; a dataset whose images are all grey gets one channel, and
    16-bit or float greyscale images are scaled to 8 bits together (see `_to_8_bits`). Files
    that are not read (other types, broken links, files outside a class folder) are counted
    in a note on stderr.
    """
    from PIL import Image

    if not root.is_dir():
        raise PeprError(f"{root}: no such dataset folder")
    split_dirs = {}
    for split, names in FOLDER_SPLITS.items():
        found = [root / name for name in names if (root / name).is_dir()]
        if not found:
            raise PeprError(f"{root}: missing the {split} split folder ({'/'.join(names)})")
        split_dirs[split] = found[0]
    in_train = _class_folders(split_dirs["train"])
    classes = sorted(in_train, key=in_train.get)  # labels in the order of the names on disk, as always
    if len(classes) < 2:
        raise PeprError(f"{split_dirs['train']}: needs one folder per class, at least two")
    arrays, first_of_kind, skipped = {}, {}, collections.Counter()
    for split, folder in split_dirs.items():
        present = _class_folders(folder)
        unknown = sorted(set(present) - set(classes))
        if unknown:
            raise PeprError(f"{folder / present[unknown[0]]}: class {unknown[0]!r} has no folder in "
                            f"{split_dirs['train']}, so it cannot be learnt")
        skipped["outside a class folder"] += sum(1 for p in folder.iterdir() if not p.is_dir() and not p.name.startswith("."))
        items = []
        for label, name in enumerate(classes):
            place = folder / present.get(name, name)
            files, left = _images_in(place) if place.is_dir() else ([], collections.Counter())
            skipped += left
            if split == "train" and not files:
                others = f" ({_counted(left)} not read; images are {', '.join(sorted(IMAGE_SUFFIXES))})" if left else ""
                raise PeprError(f"{place}: no images{others}; every class needs train images")
            items += [(file, label) for file in files]
        if not items:
            raise PeprError(f"{folder}: no images in the class folders")
        images = []
        for file, _ in items:
            try:
                with warnings.catch_warnings():
                    # a large image (a slide's scan) is the user's own data: PIL's warning, two
                    # lines naming its own source, said nothing to them (a far larger one is refused)
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    with Image.open(file) as image:
                        kind = PIXEL_KINDS.get(image.mode, "8-bit")
                        if kind != "8-bit":  # kept exact (as floats) until scaled below
                            pixels = image.convert("F").resize((image_size, image_size), Image.BILINEAR)
                        else:
                            pixels = image.convert("RGB").resize((image_size, image_size), Image.BILINEAR)
            except Image.DecompressionBombError as error:
                raise PeprError(f"{file}: too large to read as an image ({error})") from None
            except (OSError, ValueError) as error:
                raise PeprError(f"{file}: not a readable image ({error})") from None
            first_of_kind.setdefault(kind, file)
            if len(first_of_kind) > 1:
                other, example = next((k, f) for k, f in first_of_kind.items() if k != kind)
                raise PeprError(f"{file}: {kind} pixels, where {example} has {other} ones: "
                                f"{root} mixes kinds of image; convert them to one kind")
            images.append(np.asarray(pixels))
        arrays[f"{split}_images"] = np.stack(images)
        arrays[f"{split}_labels"] = np.array([label for _, label in items], dtype=np.int64)
    if +skipped:
        _note_once(f"note: {root}: {_counted(skipped)} not read as images")
    if "8-bit" not in first_of_kind:
        return _to_8_bits(arrays)
    if all((x[..., :1] == x).all() for k, x in arrays.items() if k.endswith("_images")):
        arrays.update({k: x[..., 0] for k, x in arrays.items() if k.endswith("_images")})
    return arrays


# PIL modes of one-channel images deeper than 8 bits (X-ray, CT exports), by the kind of their
# values: one linear map to 8 bits serves one kind, not integers and floats in [0, 1] together.
PIXEL_KINDS = {"I;16": "16- or 32-bit", "I;16L": "16- or 32-bit", "I;16B": "16- or 32-bit",
               "I;16N": "16- or 32-bit", "I": "16- or 32-bit", "F": "float"}


def _images_in(folder: Path) -> tuple[list[Path], collections.Counter]:
    """The image files in a class folder and its subfolders (symbolic links followed), hidden
    ones left out (`._x.png`, which macOS leaves beside each file it copies, and
    `.ipynb_checkpoints`); and what else is there, counted by type (`.dcm`, `broken link`)."""
    images, left, seen = [], collections.Counter(), set()
    for place, subfolders, files in os.walk(folder, followlinks=True, onerror=lambda _: left.update(["unreadable folder"])):
        real = os.path.realpath(place)
        if real in seen:  # a link back up the tree
            subfolders.clear()
            continue
        seen.add(real)
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        for name in files:
            file = Path(place) / name
            if name.startswith("."):
                continue
            if not file.exists():
                left["broken link"] += 1
            elif file.suffix.lower() in IMAGE_SUFFIXES:
                images.append(file)
            else:
                left[file.suffix.lower() or "no extension"] += 1
    return sorted(images), left


def _counted(left: collections.Counter) -> str:
    """`12 file(s): 10 .dcm, 2 broken link`."""
    return f"{sum(left.values())} file(s): " + ", ".join(f"{n} {what}" for what, n in sorted(left.items()) if n)


def _class_folders(folder: Path) -> dict[str, str]:
    """The class folders of a split folder, by their name in Unicode's composed form (NFC) ->
    their name on disk; hidden ones (`.ipynb_checkpoints`) left out."""
    names: dict[str, str] = {}
    for path in sorted(folder.iterdir()):
        if path.is_dir() and not path.name.startswith("."):
            key = one_spelling(path.name)
            if key in names:
                raise PeprError(f"{folder}: class folders {names[key]!r} and {path.name!r} are one name spelt "
                                "two ways (Unicode); merge them into one")
            names[key] = path.name
    return names


def _to_8_bits(arrays: dict) -> dict:
    """Greyscale images deeper than 8 bits, mapped to 0..255 by one linear map taken from the
    train split (its lowest value to 0, its highest to 255; val and test clipped to that
    range): their relative brightness is kept, where converting each image to 8 bits on its
    own would clip (PIL turns 16-bit values to white)."""
    train = arrays["train_images"]
    low, high = float(train.min()), float(train.max())
    scale = 255 / (high - low) if high > low else 0.0
    return {k: np.round(np.clip((x - low) * scale, 0, 255)).astype(np.uint8) if k.endswith("_images") else x
            for k, x in arrays.items()}


def _medmnist(flag: str, data_dir: Path, image_size: int) -> dict:
    """A MedMNIST 2D dataset at the smallest published size >= image_size, cached in data_dir."""
    import medmnist

    info = medmnist.INFO.get(flag)
    if info is None or flag.endswith("3d"):
        names = sorted(f for f in medmnist.INFO if not f.endswith("3d"))
        raise PeprError(
            f"--datasets: {flag!r} is not digits, a .npz file, an image folder (none of that name "
            f"in {Path.cwd()}) or a MedMNIST 2D dataset ({', '.join(names)})"
        )
    if info["task"] != "multi-class" and info["task"] != "binary-class":
        raise PeprError(f"--datasets: {flag} is a {info['task']} task; only single-label works")
    size = next((s for s in MEDMNIST_SIZES if s >= image_size), MEDMNIST_SIZES[-1])
    file = data_dir / (f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise PeprError(f"--data-dir: {data_dir}: a file, not a folder") from None
    except OSError as error:
        raise PeprError(f"--data-dir: {data_dir}: {error.strerror or error}") from None
    cls = getattr(medmnist, info["python_class"])
    cached = file.exists()
    arrays = {}
    try:
        for split in SPLITS:
            ds = cls(split=split, root=str(data_dir), size=size, download=not cached)
            arrays[f"{split}_images"], arrays[f"{split}_labels"] = ds.imgs, ds.labels
    except Exception as error:
        cause = described(error)
        if cached:
            raise PeprError(f"{file}: not a readable MedMNIST file ({cause}); a download cut short? "
                            "Delete it to download it again") from None
        raise DownloadError(
            f"--datasets: {flag} ({size} px) is not in {data_dir} and could not be downloaded "
            f"({cause}); put {file.name} there"
        ) from None
    return arrays
