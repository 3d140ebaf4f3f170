"""Probes (study/probes.py) on a tiny hand-made test split: the probe set is fixed, the top-5 is a
brute-force loop's, the Grad-CAM map is the per-query hand computation of methods.md A.7 for every
composer that takes an image (and depends on the text), hits are framed by the label rule, and the
pictures come back as PNG files and, through the driver's TensorBoard callback, as image summaries
at their step."""
from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.fs
import pytest
import torch
from PIL import Image
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY
from tensorboard.backend.event_processing.event_accumulator import IMAGES as IMAGE_EVENTS
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from models.composers import COMPOSERS, composer_class
from models.encoders import normalize_images
from models.model import CirModel, ModelConfig
from models.text import Vocabulary
from study.budget import Budget, DatasetEntry
from study.data import Query, RetrievalData, Split
from study.probes import (HIT, MISS, PROBE_COUNT, PROBES_DIR, TOP, Probe, attention_maps, probe, probe_pictures,
                          probe_queries, probe_tag, render_attention, render_retrievals, retrieval_box, retrieve,
                          write_probe_files)
from study.space import load_space
from study.tensorboard import TRIALS_SUBDIR, TensorBoardCallback
from study.trial_config import CONFIG_ID, TrialConfig
from study.worker import DatasetShare, SeedRun

SIZE = 64  # small_cnn's last map is 4 x 4
LABELS = ("a", "a", "b", "b", "b", "c", "c", "d", "d", "d", "e", "e")  # duplicates: more than the target is a hit
WORDS = ("red", "blue", "large", "small", "green", "round")  # one word each: attribute_operator reads them too
QUERIES = tuple(Query(source=i, text=WORDS[i % len(WORDS)], target=(5 * i + 3) % len(LABELS), kind="word",
                      region=None) for i in range(10))  # 5i + 3 = i (mod 12) has no solution: target != source
VOCAB = Vocabulary.build(WORDS)
IMAGE_COMPOSERS = [name for name in COMPOSERS.names() if composer_class(name).uses_image]
CPU = torch.device("cpu")
SPACES = Path(__file__).parent / "spaces"


class TensorImages:
    """An in-memory image map: what study.evaluation reads of one (`shape`, `gather`)."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape)

    def gather(self, indices, out=None) -> torch.Tensor:
        return self.images[torch.as_tensor(indices, dtype=torch.long)].clone()


IMAGES = TensorImages(torch.randint(0, 256, (len(LABELS), 3, SIZE, SIZE), dtype=torch.uint8,
                                    generator=torch.Generator().manual_seed(0)))
SPLIT = Split(name="test", root=Path("."), image_paths=tuple(f"{i}.png" for i in range(len(LABELS))), labels=LABELS,
              queries=QUERIES, image_size=SIZE)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: torch's default threads only spin against each other on a small busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build_model(composer: str) -> CirModel:
    torch.manual_seed(0)
    return CirModel(ModelConfig(composer=composer, embed_dim=16, vocab_size=len(VOCAB)))


def test_the_probe_set_is_fixed_by_the_data_seed_and_dataset() -> None:
    chosen = probe_queries(QUERIES, data_seed=7, key="css")
    assert len(chosen) == PROBE_COUNT and set(chosen) <= set(QUERIES)
    assert chosen == probe_queries(QUERIES, data_seed=7, key="css")  # every trial, every epoch
    assert [QUERIES.index(q) for q in chosen] == sorted(QUERIES.index(q) for q in chosen)
    others = {tuple(probe_queries(QUERIES, data_seed=s, key="css")) for s in range(6)}
    others |= {tuple(probe_queries(QUERIES, data_seed=7, key=k)) for k in ("states", "fashion")}
    assert len(others) > 1  # the seed and the dataset choose
    assert probe_queries(QUERIES[:2], data_seed=7, key="css") == list(QUERIES[:2])  # fewer queries than probes


def test_top5_is_a_brute_force_loop_over_the_gallery_without_the_source() -> None:
    model = build_model("tirg").eval()
    with torch.no_grad():
        gallery = [model.embed_images(normalize_images(IMAGES.gather([g])))[0] for g in range(len(LABELS))]
        expected = []
        for q in QUERIES:
            tokens, lengths = VOCAB.encode([q.text])
            psi = model.compose(normalize_images(IMAGES.gather([q.source])), tokens, lengths)[0]
            cosine = {g: float(torch.dot(psi, e) / (psi.norm() * e.norm()))
                      for g, e in enumerate(gallery) if g != q.source}
            expected.append(tuple(sorted(cosine, key=cosine.get, reverse=True)[:TOP]))
    assert retrieve(model, SPLIT, IMAGES, QUERIES, VOCAB, CPU) == expected
    assert retrieve(model, SPLIT, IMAGES, QUERIES, VOCAB, CPU, gallery_emb=torch.stack(gallery)) == expected


def test_hits_are_the_label_rule_and_framed_green_or_grey() -> None:
    probes = probe(build_model("tirg"), SPLIT, IMAGES, VOCAB, CPU, data_seed=0, key="css")
    for p in probes:
        assert p.query.source not in p.top and len(p.top) == TOP
        assert p.hits == tuple(LABELS[g] == LABELS[p.query.target] for g in p.top)
    # frames drawn from hand-set hits, so both colours appear whatever the model retrieves
    made = [Probe(q, top=(1, 2, 3, 4, 5), hits=(True, False, False, True, False), attention=None) for q in QUERIES[:2]]
    picture = render_retrievals(IMAGES, made)
    assert picture.dtype.name == "uint8" and picture.shape[2] == 3
    for row, p in enumerate(made):
        for column, hit in enumerate(p.hits, start=1):
            left, top = retrieval_box(row, column)
            assert tuple(picture[top + 1, left + 1]) == (HIT if hit else MISS)


def hand_attention(model: CirModel, query: Query) -> torch.Tensor:
    """M_i of methods.md A.7 for one query alone, written out."""
    reference = model.image_encoder(normalize_images(IMAGES.gather([query.source])))
    tokens, lengths = VOCAB.encode([query.text])
    psi = model.composer(reference, model.encode_text(tokens, lengths))  # (1, D)
    phi = model.embed_images(normalize_images(IMAGES.gather([query.target])))  # (1, D)
    score = (model.norm(psi) * model.norm(phi)).sum()
    (gradient,) = torch.autograd.grad(score, reference.last_map)  # (1, C, h, w)
    alpha = gradient[0].mean(dim=(1, 2))  # (C,)
    cam = torch.relu(torch.einsum("c,chw->hw", alpha, reference.last_map[0]))  # (h, w)
    return cam / cam.sum() if cam.sum() > 0 else cam


@pytest.mark.parametrize("composer", IMAGE_COMPOSERS)
def test_attention_is_the_grad_cam_of_the_composed_match(composer: str) -> None:
    model = build_model(composer).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    maps = attention_maps(model, IMAGES, QUERIES[:4], VOCAB, CPU)
    assert maps.shape == (4, SIZE // 16, SIZE // 16) and bool((maps >= 0).all())
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # no batch-norm update either
    sums = maps.sum(dim=(1, 2)).tolist()  # 1, or 0 where no channel has positive evidence (ReLU)
    assert all(t == pytest.approx(1.0, abs=1e-5) or t == 0 for t in sums) and any(t > 0 for t in sums)
    model.eval()
    for query, got in zip(QUERIES[:4], maps):
        torch.testing.assert_close(got, hand_attention(model, query), rtol=1e-4, atol=1e-6)


def test_the_tirg_map_depends_on_the_text() -> None:
    model = build_model("tirg")
    same_image = [Query(source=0, text=word, target=3, kind="word", region=None) for word in ("red", "large")]
    maps = attention_maps(model, IMAGES, same_image, VOCAB, CPU)
    assert not torch.allclose(maps[0], maps[1])


def test_a_composer_without_an_image_gets_no_attention_picture() -> None:
    probes = probe(build_model("text_only"), SPLIT, IMAGES, VOCAB, CPU, data_seed=0, key="css")
    assert all(p.attention is None for p in probes) and render_attention(IMAGES, probes) is None
    assert render_retrievals(IMAGES, probes).shape[0] > 0


def seed_run(composer: str) -> SeedRun:
    data = RetrievalData(name="css", train=SPLIT, test=SPLIT, recall_ks=(1, 5))
    share = DatasetShare(key="css", entry=DatasetEntry("css"), data=data, vocab=VOCAB,
                         images={"train": IMAGES, "test": IMAGES}, train_sample=())
    budget = Budget(epochs=1, embed_dim=16, batch_size=4)
    return SeedRun.build(share, TrialConfig.from_params({"composer": composer, "K": 2}, seeds=(0,)), budget,
                         seed=0, device=CPU)


@pytest.fixture(scope="module")
def pictures() -> dict[str, dict]:
    """Two datasets' pictures as the training loop makes them (the second from a composer without an image)."""
    return {"css": probe_pictures(seed_run("tirg"), data_seed=0),
            "fashion": probe_pictures(seed_run("text_only"), data_seed=0)}


def test_pictures_of_a_seed_run(pictures) -> None:
    assert set(pictures["css"]) == {"retrievals", "attention"} and set(pictures["fashion"]) == {"retrievals"}
    for named in pictures.values():
        for picture in named.values():
            assert picture.dtype.name == "uint8" and picture.ndim == 3 and picture.shape[2] == 3


def _result_with_checkpoint(pictures, folder: Path, epoch: int) -> dict:
    """A result as Tune's driver gets it from Train: its metrics and the checkpoint's path."""
    write_probe_files(pictures, folder / PROBES_DIR)
    return {"epoch": epoch, "whm": 0.5, CHECKPOINT_PATH_KEY: str(folder)}


def test_the_driver_logs_each_checkpoints_pictures_into_the_configurations_run(pictures, tmp_path: Path) -> None:
    files = tmp_path / "c1" / PROBES_DIR
    write_probe_files(pictures, files)
    assert sorted(p.name for p in files.iterdir()) == ["css-attention.png", "css-retrievals.png", "fashion-retrievals.png"]
    callback = TensorBoardCallback(tmp_path / "study", load_space(SPACES / "tiny.yaml"))
    trial = SimpleNamespace(trial_id="t1", config={CONFIG_ID: "c0000", "composer": "tirg"},
                            storage=SimpleNamespace(storage_filesystem=pyarrow.fs.LocalFileSystem()))
    for epoch in (1, 2):
        callback.on_trial_result(0, [trial], trial, _result_with_checkpoint(pictures, tmp_path / f"c{epoch}", epoch))
    callback.on_trial_result(0, [trial], trial, {"epoch": 3, "whm": 0.5, CHECKPOINT_PATH_KEY: str(tmp_path / "gone")})
    callback.on_trial_complete(0, [trial], trial)
    run = tmp_path / "study" / TRIALS_SUBDIR / "c0000"
    assert len(list(run.glob("events.out.tfevents.*"))) == 1  # one writer per run
    accumulator = EventAccumulator(str(run), size_guidance={IMAGE_EVENTS: 0})
    accumulator.Reload()
    tags = {"probes/css/retrievals", "probes/css/attention", "probes/fashion/retrievals"}
    assert set(accumulator.Tags()["images"]) == tags
    for tag in tags:
        events = accumulator.Images(tag)
        assert [e.step for e in events] == [1, 2]  # the checkpoint that was gone: no picture, no error
        key, name = tag.split("/")[1:]
        decoded = Image.open(io.BytesIO(events[-1].encoded_image_string))
        assert decoded.format == "PNG" and decoded.size == (pictures[key][name].shape[1], pictures[key][name].shape[0])
        assert np.array_equal(np.asarray(decoded.convert("RGB")), pictures[key][name])  # PNG is lossless
    assert [e.step for e in accumulator.Scalars("whm")] == [1, 2, 3]


def test_a_dataset_key_with_dashes_keeps_them_in_its_tag() -> None:
    assert probe_tag("fashioniq-dress-attention.png") == "probes/fashioniq-dress/attention"
