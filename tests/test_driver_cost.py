"""bench/driver_cost.py's arithmetic on measurements written by hand (the benchmark itself needs a
Ray cluster and minutes: it is run by hand, its figures are in the README)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.driver_cost import MB, main, noop, per_trial_cpu_ms, rss_growth_mb, writing  # noqa: E402


def ends(n: int, *, rss_step: int, merged_at: dict[int, int]) -> list[dict]:
    """n trial ends: RSS grows `rss_step` bytes per end; a part of 2 rows, 1,000 bytes, 5 ms each;
    `merged_at`: end number -> rows merged there (each merge 10 ms; statistics after the first)."""
    return [{"cpu_s": 0.1 * i, "rss": 100 * MB + rss_step * i, "t": float(i), "part_rows": 2, "part_bytes": 1000,
             "part_s": 0.005, "merged_rows": merged_at.get(i, 0), "merge_s": 0.01 if i in merged_at else 0.0,
             "ranked": i == 1, "rank_s": 0.5 if i == 1 else 0.0} for i in range(1, n + 1)]


def test_rss_growth_is_per_trial_end_after_the_early_one() -> None:
    found = ends(10, rss_step=MB // 2, merged_at={})
    assert rss_growth_mb(found, 2) == pytest.approx(0.5)  # (ends[9] - ends[1]) / 8 ends
    assert rss_growth_mb(found, 10) != rss_growth_mb(found, 10)  # nothing after the last: NaN


def test_writing_sums_parts_merges_and_statistics() -> None:
    found = ends(10, rss_step=0, merged_at={1: 4, 2: 8, 5: 20})
    written = writing(found, 2)
    assert written["bytes_first"] == written["bytes_last"] == 1000
    assert written["ms_first"] == pytest.approx(5.0)
    assert written["rows_first"] == pytest.approx((2 + 4 + 2 + 8) / 2)
    assert written["rows_all"] == pytest.approx((10 * 2 + 4 + 8 + 20) / 10)
    assert (written["merges"], written["merge_s"], written["ranks"], written["rank_s"]) == (3, pytest.approx(0.03), 1, 0.5)
    assert written["every_end_rows"] == pytest.approx(2 * sum(range(1, 11)) / 10)  # all rows again at every end


def test_cpu_per_trial() -> None:
    assert per_trial_cpu_ms({"cpu_s": 8.0, "fit_cpu_s": 6.0, "trials": 100}) == pytest.approx(80.0)
    assert per_trial_cpu_ms({"cpu_s": 8.0, "fit_cpu_s": 6.0, "trials": 100}, "fit_cpu_s") == pytest.approx(60.0)


def test_too_few_configurations_are_refused(capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["--configs", "5"])
    assert stopped.value.code == 2 and "--configs must be at least 10, got 5" in capsys.readouterr().err


def test_the_no_op_reports_one_result_of_a_real_trials_shape(monkeypatch) -> None:
    from ray import tune

    reported = []
    monkeypatch.setattr(tune, "report", reported.append)
    config = {"composer": "tirg", "K": 8}
    noop(config)
    noop({**config, "__config__": "c0001", "__until__": 1, "__role__": "searched"})  # as our driver hands it
    noop({**config, "K": 2})
    [first, again, other] = reported
    assert first == again and first["epoch"] == 1 and 0 <= first["whm"] < 1  # the same parameters, the same score
    assert other["whm"] != first["whm"]
    assert first["seed/0/recall/css/test@10"] == first["whm"] and first["seed/0/whm"] == first["whm"]


def test_the_profile_keeps_hooks_and_suggest_outside_tunes_dispatch() -> None:
    from types import SimpleNamespace

    from bench.driver_cost import profiled

    def entry(seconds: float):
        return (1, 1, 0.0, seconds, {})
    stats = SimpleNamespace(stats={
        ("/x/study/tensorboard.py", 1, "on_trial_start"): entry(2.0),  # 2 s over 100 trials: 20 ms each
        ("/x/study/tensorboard.py", 9, "_writer"): entry(1.5),  # not a hook: inside the one above
        ("/x/ray/tune/callback.py", 3, "on_trial_start"): entry(5.0),  # Tune's dispatch to every callback
        ("/x/tune/search/concurrency_limiter.py", 4, "suggest"): entry(4.0),
        ("/x/study/search.py", 5, "suggest"): entry(3.0),
    })
    assert profiled(stats, 100) == {"study/search.suggest": pytest.approx(30.0),
                                    "study/tensorboard.on_trial_start": pytest.approx(20.0)}
