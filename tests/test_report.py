"""study.report on a study directory written here without Ray: per-seed rows, history and ranks in
the driver's layout (study/trials.py), then ranking, gains and importance by the project's own
`study.results.write_tables`, then the report through its CLI. Two datasets (CSS-like with
modification types, States-like with adjective-only / noun-only), matched baselines, enough
configurations of one composer for importance numbers, one failed configuration, fake probe
pictures at the checkpoint path the trainer writes them to."""
from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from study.metrics import whm
from study.parquet_io import CELL_WEIGHTS_KEY, write_parquet_atomic
from study.report import SECTIONS, check_report, main
from study.report.inputs import MANIFESTS_KEY, read_study_tables
from study.report.context import Context
from study.report.probes import probes
from study.results import write_tables

SPACE = """\
# report_fixture: does a regulariser help TIRG on two small datasets, and at which strength?
# (written by tests/test_report.py)
name: report_fixture
datasets:
  css: {weight: 1.0}
  states: {weight: 1.0}
splits: {test: 1.0, train: 0.0}
seeds: 3
parameters:
  composer: {type: choice, values: [tirg, concat]}
  regularizer: {type: choice, values: [none, ga, dim]}
  ga_noise: {type: loguniform, low: 1.0e-4, high: 1.0e-2, when: {regularizer: ga}}
  dim_weight: {type: loguniform, low: 1.0e-3, high: 1.0e-1, when: {regularizer: dim}}
budgets:
  smoke: {num_samples: 8, epochs: 2, scale: 0.01, embed_dim: 16, batch_size: 8}
"""
KS = {"css": (1, 10, 50), "states": (1, 5)}
KINDS = {"css": ("add", "make", "remove"), "states": ("adjective_only", "noun_only")}
QUERIES = 60
GALLERY = 120
SEEDS = (0, 1, 2)
EPOCHS = 2
WEIGHTS = {**{f"{d}/test@{k}": 1.0 for d, ks in KS.items() for k in ks}, "css/train@1": 0.0}
# (config id, composer, regularizer, strength, baseline id, skill): skill shifts the ranks down
CONFIGS = [("b0000", "tirg", "none", None, None, 0.0),
           *[(f"c{i:04d}", "tirg", "ga" if i % 2 else "dim", 10 ** (-3 + i / 4), "b0000", 0.1 * i) for i in range(7)],
           ("b0001", "concat", "none", None, None, 0.2),
           ("c0007", "concat", "ga", 1e-3, "b0001", 0.3)]
FAILED = ("c0008", "tirg", "dim", 0.05, "b0000", 0.0)


def _recalls(ranks: np.ndarray, dataset: str) -> dict[int, float]:
    return {k: float(np.mean(ranks < k)) for k in KS[dataset]}


def _metrics(rng: np.random.Generator, skill: float, epoch: int) -> tuple[dict, list[dict], float]:
    """One seed at one epoch: recall/breakdown/gap columns, its ranks rows, and its WHM."""
    values, ranks_rows, cells = {}, [], []
    for d in KS:
        scale = GALLERY * (0.6 - 0.15 * skill - 0.1 * epoch)
        ranks = np.minimum(rng.exponential(max(scale, 3.0), QUERIES).astype(int), GALLERY - 1)
        ranks_rows += [{"dataset": d, "split": "test", "query": q, "rank": int(r)} for q, r in enumerate(ranks)]
        test = _recalls(ranks, d)
        train = _recalls(np.maximum(ranks - rng.integers(0, 8, QUERIES), 0), d)  # a little better on seen queries
        for k in KS[d]:
            values[f"recall/{d}/test@{k}"], values[f"recall/{d}/train@{k}"] = test[k], train[k]
            values[f"gap/{d}@{k}"] = train[k] - test[k]
            cells.append(test[k])
        for i, kind in enumerate(KINDS[d]):
            part = _recalls(ranks[i::len(KINDS[d])], d)
            values.update({f"breakdown/{d}/test/{kind}@{k}": part[k] for k in KS[d]})
        values[f"train/{d}/loss/total"] = 2.0 / epoch + rng.uniform(0, 0.1)
    return values, ranks_rows, whm(cells, [1.0] * len(cells))


def build_study(directory: Path) -> Path:
    """A finished study directory (tables, ranks, space, record) in study.run's layout."""
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "space.yaml").write_text(SPACE)
    (directory / "study.json").write_text(json.dumps({
        "space": "report_fixture", "space_path": "tests/test_report.py", "budget_name": "smoke",
        "budget": {"epochs": EPOCHS, "num_samples": 8, "seeds": None, "scale": 0.01, "embed_dim": 16, "batch_size": 8,
                   "gpus_per_worker": 0.0},
        "scheduler": "sync", "seeds": list(SEEDS), "versions": {"python": "3.11"}}))
    trials, history = [], []
    for config_id, composer, regularizer, strength, baseline, skill in [*CONFIGS, FAILED]:
        failed = config_id == FAILED[0]
        base = {"config_id": config_id, "trial_id": f"t{config_id}", "role": "searched" if baseline else "baseline",
                "baseline_id": baseline, "status": "ERROR" if failed else "TERMINATED",
                "epoch": 1 if failed else EPOCHS,
                "max_epochs": EPOCHS, "stopped_early": False, "error": "loss diverged at epoch 1" if failed else None,
                "param/composer": composer, "param/regularizer": regularizer,
                "param/ga_noise": strength if regularizer == "ga" else None,
                "param/dim_weight": strength if regularizer == "dim" else None}
        ranks_rows = []
        for seed in SEEDS:
            for epoch in range(1, base["epoch"] + 1):
                values, rows, score = _metrics(rng, skill, epoch)
                history.append({"config_id": config_id, "seed": seed, "epoch": epoch, **values, "whm": score})
                ranks_rows += [{"seed": seed, "epoch": epoch, **r} for r in rows]
            trials.append({**base, "seed": seed, **values, "whm": score, "wall_time_s": 60.0 + 40 * skill,
                           "cpu_s": 100.0 + 50 * skill, "gpu_s": 0.0})
        if not failed:
            frame = pd.DataFrame(ranks_rows).astype({c: "int32" for c in ("seed", "epoch", "query", "rank")})
            write_parquet_atomic(frame, directory / "ranks" / f"{config_id}.parquet")
    manifests = {d: {"listed": GALLERY, "missing": 0, "missing_examples": [], "sha256": "ab" * 32,
                     "dropped_queries": 0} for d in KS}
    metadata = {CELL_WEIGHTS_KEY: json.dumps(WEIGHTS).encode(), MANIFESTS_KEY: json.dumps(manifests).encode()}
    write_parquet_atomic(pd.DataFrame(trials), directory / "trials.parquet", metadata)
    write_parquet_atomic(pd.DataFrame(history), directory / "history.parquet", metadata)
    write_tables(directory, n_bootstrap=100)
    return directory


def fake_png(path: Path, color: tuple[int, int, int]) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.new("RGB", (24, 16), color).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


NEWEST = "checkpoint_2026-01-01_00-00-02.000000"


def probe_path(study: Path, config_id: str, name: str, checkpoint: str = NEWEST) -> Path:
    return study / "train" / f"train-{config_id}" / checkpoint / "probes" / name


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return build_study(tmp_path_factory.mktemp("report") / "report_fixture")


@pytest.fixture(scope="module")
def rendered(study, tmp_path_factory) -> tuple[Path, Path, dict[str, bytes]]:
    """A copy of the study with probe pictures for the best and its baseline, its report written
    by the CLI; (study, report, {name: png bytes embedded})."""
    copy = tmp_path_factory.mktemp("with_probes") / "s"
    shutil.copytree(study, copy)
    ranking = pd.read_parquet(copy / "ranking.parquet")
    best, baseline = ranking.iloc[0]["config_id"], ranking.iloc[0]["baseline_id"]
    assert isinstance(baseline, str), "the fixture's best configuration must have a matched baseline"
    pictures = {
        "best css retrievals": fake_png(probe_path(copy, best, "css-retrievals.png"), (200, 30, 30)),
        "best css attention": fake_png(probe_path(copy, best, "css-attention.png"), (30, 200, 30)),
        "best states retrievals": fake_png(probe_path(copy, best, "states-retrievals.png"), (30, 30, 200)),
        "baseline css retrievals": fake_png(probe_path(copy, baseline, "css-retrievals.png"), (90, 90, 90)),
    }
    # an older checkpoint's picture must not be the one shown
    fake_png(probe_path(copy, best, "css-retrievals.png", "checkpoint_2026-01-01_00-00-01.000000"), (1, 2, 3))
    out = copy / "elsewhere.html"
    assert main([str(copy), "--out", str(out)]) == 0
    return copy, out, pictures


def test_report_passes_every_check(rendered):
    study, report, _ = rendered
    assert check_report(study, report) == []
    assert not list(report.parent.glob(".*.tmp")), "the atomic write left its temporary file"


def test_every_section_has_its_heading_in_order(rendered):
    html = rendered[1].read_text()
    found = re.findall(r'<section id="([^"]+)">\s*<h2>([^<]+)</h2>', html)
    assert found == list(SECTIONS.items())
    assert "does a regulariser help TIRG on two small datasets" in html  # the question
    for text in ("budget", "smoke", "scheduler", "states", "images listed",  # budget and datasets
                 "Not ranked: c0008", "loss diverged at epoch 1",  # the failed configuration, with why
                 "<td>concat</td>", "too few configurations",  # importance: numbers for tirg, a note for concat
                 "adjective-only @1", "noun-only @5", "add @10",  # both kinds of breakdown
                 "train@1", "gap@50", "wall time", "CPU time"):
        assert text in html, text
    assert "GPU time" not in html  # a CPU study has no GPU column


def test_every_picture_is_an_embedded_png(rendered):
    html = rendered[1].read_text()
    sources = re.findall(r'<img src="([^"]*)"', html)
    assert len(sources) >= 12  # 2 intervals, importance, 2 x (gap, recall, breakdowns), curves, cost, probes
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1], validate=True))) as image:
            image.verify()
            assert image.format == "PNG"


def test_nothing_outside_the_file(rendered):
    html = rendered[1].read_text()
    for reference in re.findall(r'\b(?:src|href)="([^"]*)"', html):
        assert reference.startswith(("data:", "#")), reference
    assert not re.search(r"https?://|<script|<link|@import|url\(", html)


def test_check_report_catches_what_it_checks(rendered, tmp_path):
    study, report, _ = rendered
    html = report.read_text()
    bad = tmp_path / "bad.html"
    bad.write_text(html.replace("</head>", '<link rel="stylesheet" href="https://cdn.example/x.css"></head>')
                   .replace('<h2>Cost</h2>', '<h2>Costs</h2>')
                   .replace('data-key="whm_mean" data-value="', 'data-key="whm_mean" data-value="9', 1)
                   .replace("<style>", "<style>body { background: url(bg.png) }", 1)
                   .replace("</main>", '<img src="plot.png"><img src="data:image/png;base64,AAAA"></main>'))
    problems = "\n".join(check_report(study, bad))
    for expected in ("<link> at line", "refers outside the file", "section 'Cost'", "whm_mean", "CSS that loads",
                     "not a base64 PNG", "does not decode as a PNG"):
        assert expected in problems, expected


def test_ranking_in_the_report_is_the_ranking_table(rendered):
    study, report, _ = rendered
    html = report.read_text()
    ranking = pd.read_parquet(study / "ranking.parquet")
    body = html.split('id="ranking-table"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r'<tr data-config="([^"]+)"[^>]*>(.*?)</tr>', body)
    assert [config for config, _ in rows] == ranking["config_id"].tolist()
    for (config, row), (_, expected) in zip(rows, ranking.iterrows()):
        cells = dict(re.findall(r'data-key="([^"]+)" data-value="([^"]+)">', row))
        shown = dict(re.findall(r'data-key="([^"]+)" data-value="[^"]+">([^<]*)<', row))
        for key in ("whm_mean", "whm_low", "whm_high"):
            assert float(cells[key]) == expected[key]  # the stored value, unrounded
            assert shown[key] == f"{expected[key]:.4f}"
        assert int(cells["rank"]) == expected["rank"] and int(cells["n_seeds"]) == expected["n_seeds"] == 3
    assert ranking.iloc[0]["ci_covers"] in html and "seeds + test set" in html


def test_probe_pictures_of_best_and_baseline_side_by_side(rendered):
    study, report, pictures = rendered
    html = report.read_text()
    for name, data in pictures.items():
        assert base64.b64encode(data).decode() in html, name
    probes_html = html.split('<section id="probes">', 1)[1]
    ranking = pd.read_parquet(study / "ranking.parquet")
    baseline = ranking.iloc[0]["baseline_id"]
    assert f"no attention maps for {baseline}" in probes_html  # the baseline's missing picture is said
    assert f"no retrieval grid for {baseline}" in probes_html  # (states)
    assert probes_html.count('<div class="pair">') == 4  # css, states x retrievals, attention
    assert NEWEST in probes_html  # the newest checkpoint's


def _probe_blocks(study: Path) -> list:
    return list(probes(Context.of(read_study_tables(study))).blocks)


def test_probes_absent_say_so(study):
    texts = [getattr(b, "text", "") for b in _probe_blocks(study)]
    assert any("No probe pictures in this study" in t for t in texts)


def test_a_file_that_is_not_a_png_is_not_embedded(study, tmp_path):
    copy = tmp_path / "s"
    shutil.copytree(study, copy)
    best = pd.read_parquet(copy / "ranking.parquet").iloc[0]["config_id"]
    path = probe_path(copy, best, "css-retrievals.png")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"GIF89a not a png")
    pair = next(b for b in _probe_blocks(copy) if b.kind == "probes")
    assert pair.uris[0] == "" and "is not a PNG" in pair.missing[0]


def test_not_a_study_exits_2_naming_it(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(tmp_path) in error and "not a study directory" in error
    assert "python -m study.run" in error and "Traceback" not in error
    assert main([str(tmp_path / "nope")]) == 2
    assert f"{tmp_path / 'nope'}: no such directory; give a study folder" in capsys.readouterr().err


def test_missing_tables_exit_2_with_the_fix(study, tmp_path, capsys):
    copy = tmp_path / "s"
    shutil.copytree(study, copy)
    (copy / "ranking.parquet").unlink()
    assert main([str(copy)]) == 2
    error = capsys.readouterr().err
    assert f"{copy / 'ranking.parquet'}: not found" in error
    assert f"python -m study.results {copy} --write" in error and error.count("\n") == 1
    (copy / "gains.parquet").write_text("not parquet")
    shutil.copy(study / "ranking.parquet", copy / "ranking.parquet")
    assert main([str(copy)]) == 2
    assert "gains.parquet: not a readable Parquet file" in capsys.readouterr().err
    assert main([str(study), "--out", str(tmp_path / "no" / "dir.html")]) == 2
    assert "no such directory for --out" in capsys.readouterr().err
    assert not (copy / "report.html").exists()


def test_a_study_with_nothing_ranked_still_has_every_section(study, tmp_path):
    copy = tmp_path / "s"
    shutil.copytree(study, copy)
    for name in ("ranking", "gains", "importance"):
        table = pd.read_parquet(copy / f"{name}.parquet")
        write_parquet_atomic(table.iloc[0:0], copy / f"{name}.parquet")
    assert main([str(copy)]) == 0
    html = (copy / "report.html").read_text()
    assert re.findall(r'<section id="([^"]+)">', html) == list(SECTIONS)
    assert "No configuration has finished" in html


def test_a_report_made_while_the_study_runs_shows_trials_only_its_parts_hold(study, tmp_path):
    """The driver writes each trial end as a part under parts/ and rebuilds trials.parquet and
    history.parquet only now and then (study/table_parts.py): the report lays the parts over them."""
    import pyarrow as pa

    from study.table_parts import last_part_number, write_part

    copy = tmp_path / "s"
    shutil.copytree(study, copy)
    trials, history = pd.read_parquet(copy / "trials.parquet"), pd.read_parquet(copy / "history.parquet")
    first = trials["config_id"].iloc[0]
    new_trials = trials[trials["config_id"] == first].assign(config_id="c9999")
    new_history = history[history["config_id"] == first].assign(config_id="c9999")
    metadata = pa.parquet.read_schema(copy / "trials.parquet").metadata
    write_part(copy, last_part_number(copy) + 1, "c9999", pa.Table.from_pandas(new_trials, preserve_index=False),
               pa.Table.from_pandas(new_history, preserve_index=False), metadata)
    tables = read_study_tables(copy)
    assert len(tables.trials) == len(trials) + len(new_trials)
    assert (tables.trials["config_id"] == "c9999").sum() == len(new_trials)
    assert (tables.history["config_id"] == "c9999").sum() == len(new_history) > 0
    assert tables.cell_weights == read_study_tables(study).cell_weights
