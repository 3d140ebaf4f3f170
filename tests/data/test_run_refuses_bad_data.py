"""Bad dataset input stops `python -m study.run` while it prepares its data, before Ray starts: one
`error: ...` line naming the file (and line) and the fix, exit code 2 (issue "Runs on a real cluster
... refuses bad input clearly"). `study.run`'s `main` runs in this process on a tiny Shoes layout
written here; every refusal comes before Ray, so no test starts it."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from data_layout_writers import SHOES_SPLITS, shoes_path, write_image, write_shoes
from PIL import Image

from study.data import DatasetError, open_dataset, open_image_map
from study.data.describe import describe
from study.run import main

SPACE = """\
# bad input: refused before Ray starts
datasets:
  - {name: shoes, root: ROOT}
seeds: 1
parameters:
  composer: {type: choice, values: [concat]}
budgets:
  smoke: {num_samples: 1, epochs: 1, image_size: 16, batch_size: 2}
"""


def run(tmp_path: Path, capsys: pytest.CaptureFixture, root: Path, *extra: str) -> tuple[int, str, Path]:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE.replace("ROOT", str(root)))
    code = main(["--space", str(space), "--budget", "smoke", "--storage", str(tmp_path / "studies"),
                 "--cache-dir", str(tmp_path / "cache"), *extra])
    assert not ray.is_initialized()
    return code, capsys.readouterr().err, space


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_root_that_is_a_file_names_the_space_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    file = tmp_path / "shoes.tar"
    file.write_bytes(b"an archive, not yet unpacked")
    code, err, space = run(tmp_path, capsys, file)
    assert code == 2
    assert error_line(err) == (f"error: {file}: not a folder; `root:` of dataset shoes in {space}, line 3 must be "
                               "the dataset's folder")
    assert not (tmp_path / "cache").exists()  # refused while the space was read


def test_open_dataset_refuses_a_root_that_is_not_a_folder(tmp_path: Path) -> None:
    file = tmp_path / "css.npy"
    file.write_bytes(b"")
    for root, what in ((file, "not a folder"), (tmp_path / "absent", "no such folder")):
        with pytest.raises(DatasetError, match=rf"^{root}: {what}; dataset css reads the folder .* as root \(in a search space"):
            open_dataset("css", root=root)


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_a_truncated_image_stops_the_study_before_ray_and_a_fixed_one_is_used(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, suffix: str) -> None:
    root = write_shoes(tmp_path / "shoes")
    write_image(tmp_path / f"whole{suffix}", seed=7, size=48)
    whole = (tmp_path / f"whole{suffix}").read_bytes()
    victim = root / shoes_path(SHOES_SPLITS["test"][1])  # under the layout's name (.jpg): decoded by content
    victim.write_bytes(whole[: len(whole) // 2])
    monkeypatch.setattr("study.data.image_cache.BUILD_CHUNK", 1)  # one image per task: the failure is a thread's
    code, err, _ = run(tmp_path, capsys, root)
    assert code == 2
    line = error_line(err)
    assert line.startswith(f"error: {victim}: cannot read the image (") and "truncated" in line
    assert "re-download (or regenerate) it, or delete it and pass --allow-missing-images" in line
    maps = tmp_path / "cache" / "images"
    left = sorted(p.name for p in maps.iterdir() if not p.name.endswith(".lock"))
    assert [name for name in left if "-test-" in name] == []  # no partial map, under its name or a temporary one
    assert all(name.endswith(".cirimg") and not name.startswith(".") for name in left)

    victim.write_bytes(whole)  # fixed: the next preparation decodes it into the test split's map
    test = open_dataset("shoes", root=root, image_size=16, cache_dir=tmp_path / "cache").test
    images = open_image_map(test, cache_dir=tmp_path / "cache")
    assert images.shape == (len(SHOES_SPLITS["test"]), 3, 16, 16)
    assert torch.equal(images[1], test.load_image(1))


def test_every_image_missing_is_refused_even_when_missing_images_are_allowed(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = write_shoes(tmp_path / "shoes")
    shutil.rmtree(root / "images")  # annotations only: the images were never unpacked
    code, err, _ = run(tmp_path, capsys, root, "--allow-missing-images")
    assert code == 2
    assert error_line(err).startswith(
        f"error: shoes: none of the 7 images listed in {root / 'split.train.json'}, {root / 'split.test.json'} were "
        f"found under {root / 'attributedata'}; --allow-missing-images drops missing images, which leaves nothing here: "
        "re-download the Shoes annotations")
    assert describe(root, grid=tmp_path / "grid.png", out=None).manifest.missing == 7  # describe still reports it


def test_a_split_left_without_queries_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = write_shoes(tmp_path / "shoes")
    for name in ("img_womens_boots_4.jpg", "img_womens_pumps_6.jpg"):  # the sources of both test queries
        (root / shoes_path(name)).unlink()
    code, err, _ = run(tmp_path, capsys, root, "--allow-missing-images")
    assert code == 2
    assert error_line(err).startswith(
        f"error: shoes: split test has 0 queries left after dropping missing images (2 of its 4 images listed in "
        f"{root / 'split.test.json'} are missing, and every one of its 2 queries touches one); restore them: ")
    (root / shoes_path("img_womens_pumps_6.jpg")).unlink(missing_ok=True)
    write_image(root / shoes_path("img_womens_boots_4.jpg"), seed=1)  # one query back: usable, one dropped
    data = open_dataset("shoes", root=root, allow_missing_images=True, cache_dir=tmp_path / "cache")
    assert (len(data.test.queries), data.manifest.missing, data.unusable) == (1, 1, "")


def test_a_16_bit_png_is_delivered_as_8_bit(tmp_path: Path) -> None:
    root = write_shoes(tmp_path / "shoes")
    victim = root / shoes_path(SHOES_SPLITS["test"][0])
    gray = (np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 256)  # high byte = 0..255
    Image.fromarray(gray).save(victim, format="PNG")  # under its .jpg name: decoded by content
    test = open_dataset("shoes", root=root, image_size=16, cache_dir=tmp_path / "cache").test
    images = open_image_map(test, cache_dir=tmp_path / "cache")
    expected = torch.from_numpy((gray >> 8).astype(np.uint8)).expand(3, 16, 16)
    assert images[0].dtype == torch.uint8 and torch.equal(images[0], expected)
