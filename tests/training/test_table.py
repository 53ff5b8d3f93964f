"""`python -m training.table`: rows, statistics, reuse of finished runs, pictures."""

import json

import numpy as np
import pytest

from training import report, table


def _args(out):
    return ["digits", "--seeds", "1", "--models", "softvq", "ae", "--epochs", "1",
            "--kmeans-init", "2", "--probe-epochs", "1", "--out", str(out)]


@pytest.fixture(scope="module")
def small_table(tmp_path_factory):
    out = tmp_path_factory.mktemp("table")
    assert table.main(_args(out)) == 0
    return out


def test_summarize_mean_std_and_paper_values():
    runs = [
        {"clustering_accuracy": a, "nmi": 0.5, "classification_accuracy": 0.9,
         "timings_s": {"total": t}}
        for a, t in ((0.70, 60.0), (0.80, 120.0))
    ]
    (row,) = table.summarize("mnist", {"softvq": runs})
    assert row["clustering_accuracy"]["mean"] == pytest.approx(0.75)
    assert row["clustering_accuracy"]["std"] == pytest.approx(np.std([0.7, 0.8], ddof=1))
    assert row["nmi"]["std"] == 0.0
    assert row["clustering_accuracy"]["paper"] == pytest.approx(0.7764)
    assert row["nmi"]["paper"] == pytest.approx(0.7188)
    assert row["wall_time_s"] == pytest.approx(90.0)


def test_table_writes_rows_in_paper_order_with_pictures(small_table):
    result = json.loads((small_table / "digits.json").read_text())
    assert [r["name"] for r in result["rows"]] == ["raw", "ae", "softvq"]
    for row in result["rows"]:
        for metric in report.METRICS:
            assert 0.0 <= row[metric]["mean"] <= 1.0
            assert len(row[metric]["values"]) == 1
    assert result["machine"]["cpu_cores"] >= 1
    markdown = (small_table / "digits.md").read_text()
    assert "| model | clustering % |" in markdown
    # Header, rule and 3 rows; then the codes table: header, rule and softvq's row.
    assert sum(line.startswith("|") for line in markdown.splitlines()) == 5 + 3
    for name in ("reconstructions", "latents", "codebook", "metrics"):
        png = small_table / f"digits-{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert sorted(result["pictures"]) == sorted(
        f"digits-{n}.png" for n in ("reconstructions", "latents", "codebook", "metrics"))


def test_rerun_reuses_finished_runs(small_table, capsys):
    before = json.loads((small_table / "digits.json").read_text())
    assert table.main(_args(small_table)) == 0
    out = capsys.readouterr().out
    assert out.count("[table] reusing") == 2
    assert "[table] training" not in out
    after = json.loads((small_table / "digits.json").read_text())
    means = lambda result: [r[m]["mean"] for r in result["rows"] for m in report.METRICS]  # noqa: E731
    assert means(after) == means(before)


def test_extra_rows_follow_the_paper_rows_with_their_own_seeds(tmp_path, capsys):
    args = ["digits", "--seeds", "2", "--models", "ae", "--epochs", "2",
            "--kmeans-init", "2", "--probe-epochs", "1", "--out", str(tmp_path),
            "--extra", "vq+kmeans-init", "betavae+raw-mse-beta", "--extra-seeds", "1"]
    assert table.main(args) == 0
    result = json.loads((tmp_path / "digits.json").read_text())
    names = [r["name"] for r in result["rows"]]
    assert names == ["raw", "ae", "vq+kmeans-init", "betavae+raw-mse-beta"]
    assert [r["seeds"] for r in result["rows"]] == [1, 2, 1, 1]  # raw: once, not per seed
    runs = tmp_path / "runs"
    vq = json.loads((runs / "digits-vq+kmeans-init-seed0" / "config.json").read_text())
    assert vq["model"] == "vq" and vq["codebook_init"] == "kmeans"
    beta = json.loads((runs / "digits-betavae+raw-mse-beta-seed0" / "config.json").read_text())
    from training.fit import load_presets

    preset_beta = load_presets().preset("digits")["betavae_beta"]
    assert beta["bottleneck"]["beta"] == pytest.approx(preset_beta / beta["pixel_variance"])
    assert not (runs / "digits-vq+kmeans-init-seed1").exists()
    markdown = (tmp_path / "digits.md").read_text()
    assert "- **vq+kmeans-init** (1 seed): hard VQ, codebook re-initialized" in markdown
    assert "| vq+kmeans-init (1 seed) |" in markdown and "| – |" in markdown


def test_report_only_summarizes_finished_runs_and_trains_nothing(small_table, tmp_path, capsys):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(small_table, out)
    # ae seed 1 never ran; softvq seed 1 was interrupted (it has a checkpoint).
    interrupted = out / "runs" / "digits-softvq-seed1"
    shutil.copytree(out / "runs" / "digits-softvq-seed0", interrupted)
    (interrupted / "checkpoint").mkdir()
    args = _args(out)
    args[args.index("--seeds") + 1] = "2"
    assert table.main([*args, "--report-only"]) == 0
    printed = capsys.readouterr().out
    assert "[table] training" not in printed and "[table] resuming" not in printed
    assert printed.count("leaving out") == 2  # the raw row is computed once, not per seed
    result = json.loads((out / "digits.json").read_text())
    assert {r["name"]: r["seeds"] for r in result["rows"]} == {"raw": 1, "ae": 1, "softvq": 1}
    assert not (out / "digits-runs-epochs1-kmeans2-probe1" / "raw-seed1.json").exists()
    assert not (out / "runs" / "digits-ae-seed1").exists()
    markdown = (out / "digits.md").read_text()
    assert "## digits: 2 seeds" in markdown and "| ae (1 seed) |" in markdown


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert table.main(["digits", "--seeds", "0", "--out", str(tmp_path)]) == 2
    assert "--seeds must be >= 1" in capsys.readouterr().err
    assert table.main(["digits", "--extra-seeds", "0", "--extra", "vq+restarts",
                       "--out", str(tmp_path)]) == 2
    assert "--extra-seeds must be >= 1" in capsys.readouterr().err
    missing = tmp_path / "nope"
    assert table.main(["mnist", "--data-dir", str(missing), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_table_of_an_own_image_folder(own_image_runs, tmp_path, capsys):
    """A folder takes the same DATASET form as training.fit; no paper column."""
    folder = own_image_runs["gray"][0]
    out = tmp_path / "table"
    argv = [str(folder), "--seeds", "1", "--models", "ae", "--epochs", "1", "--kmeans-init", "2",
            "--probe-epochs", "1", "--skip-bad-images", "--out", str(out)]
    assert table.main(argv) == 0
    result = json.loads((out / "gray.json").read_text())
    assert [r["name"] for r in result["rows"]] == ["raw", "ae"]
    assert all(r["clustering_accuracy"]["paper"] is None for r in result["rows"])
    config = json.loads((out / "runs" / "gray-ae-seed0" / "config.json").read_text())
    assert config["class_names"] == ["bars", "blobs", "checks"] and config["skipped_images"] == 1
    assert (out / "gray-latents.png").is_file()
    assert sorted(p.name for p in (out / "gray-runs-epochs1-kmeans2-probe1").iterdir()) == ["ae-seed0.json", "raw-seed0.json"]
    unlabelled = own_image_runs["loose"][0]
    assert table.main([str(unlabelled), "--out", str(tmp_path / "t2")]) == 2
    assert "has no labels" in capsys.readouterr().err


def test_ledger_reuses_runs_whose_folders_are_gone(small_table, tmp_path, capsys):
    """A table resumed on another machine (ledger committed, run folders absent)."""
    import shutil

    out = tmp_path / "elsewhere"
    out.mkdir()
    # A quick table (changed epochs, K-means and probe) never touches the paper's ledger.
    assert not (small_table / "digits-runs").exists()
    ledger = "digits-runs-epochs1-kmeans2-probe1"
    shutil.copytree(small_table / ledger, out / ledger)
    entries = sorted(p.name for p in (out / ledger).iterdir())
    assert entries == ["ae-seed0.json", "raw-seed0.json", "softvq-seed0.json"]
    ae = json.loads((out / ledger / "ae-seed0.json").read_text())
    assert ae["recorded_from"] == "digits-ae-seed0"
    ae["clustering_accuracy"] = 0.4321  # a value only the ledger holds
    (out / ledger / "ae-seed0.json").write_text(json.dumps(ae))
    assert table.main(_args(out)) == 0
    printed = capsys.readouterr().out
    assert "[table] training" not in printed
    assert printed.count("recorded metrics; its folder is not on this machine") == 2
    assert not (out / "runs").exists() or not any((out / "runs").iterdir())
    result = json.loads((out / "digits.json").read_text())
    rows = {r["name"]: r for r in result["rows"]}
    assert rows["ae"]["clustering_accuracy"]["values"] == [0.4321]
    before = {r["name"]: r for r in json.loads((small_table / "digits.json").read_text())["rows"]}
    assert rows["softvq"]["nmi"]["values"] == before["softvq"]["nmi"]["values"]
    assert result["pictures"] == ["digits-metrics.png"] and result["pictured_runs"] == {}
    assert "no finished run folder on this machine" in printed
    # The same table with the paper's probe length does not take those entries.
    args = _args(out)
    args[args.index("--probe-epochs") + 1] = "20"
    assert table.main([*args, "--report-only"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("leaving out") == 3  # ae, softvq and raw
    assert "leaving out the raw-pixel row (not computed; --report-only)" in printed


def test_every_extra_row_is_a_valid_fit_of_its_paper_model():
    """Each VARIANTS entry names a paper model and options `training.fit`
    accepts for it (checked as the CLI checks them, before any training)."""
    from dataclasses import fields

    from training.settings import FitSettings, check_settings, load_presets
    from training.variants import VARIANTS

    names = {f.name for f in fields(FitSettings)}

    class Info:  # what the option functions read from the data
        preset, input_shape = "mnist", (784,)

    for row, (model, options, note) in VARIANTS.items():
        assert row.split("+")[0] == model and note
        if callable(options):
            options = options(Info, 0.0949)
        assert set(options) <= names, (row, set(options) - names)
        check_settings(FitSettings("mnist", model, **options), load_presets())
    with pytest.raises(Exception, match="--softvq-weighting applies to softvq only"):
        check_settings(FitSettings("mnist", "vq", softvq_weighting="svhn_code"),
                       load_presets())


def test_pictures_show_one_test_image_per_class():
    from training import plots

    by_class = np.repeat(np.arange(10), 5)  # a split stored class by class
    shown = plots.one_per_class(by_class, len(by_class))
    assert list(by_class[shown]) == list(range(10))
    assert list(shown) == [5 * c for c in range(10)]
    three = np.array([2, 2, 0, 1, 0, 1, 2])  # fewer classes than pictures: topped up
    assert list(plots.one_per_class(three, 7, n=5)) == [2, 3, 0, 1, 4]
    assert list(plots.one_per_class(None, 4)) == [0, 1, 2, 3]


def test_pictures_come_from_the_lowest_seed_on_this_machine(small_table, tmp_path, capsys):
    """Seed 0 trained elsewhere (ledger only), seed 1 here: softvq is drawn from seed 1."""
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(small_table, out)
    for png in out.glob("digits-*.png"):
        png.unlink()
    runs = out / "runs"
    (runs / "digits-softvq-seed0").rename(runs / "digits-softvq-seed1")
    args = _args(out)
    args[args.index("--seeds") + 1] = "2"
    assert table.main([*args, "--report-only"]) == 0
    result = json.loads((out / "digits.json").read_text())
    assert result["pictured_runs"] == {"softvq": 1, "ae": 0}
    assert {r["name"]: r["seeds"] for r in result["rows"]} == {"raw": 1, "ae": 1, "softvq": 2}
    for name in ("reconstructions", "latents", "codebook"):
        assert (out / f"digits-{name}.png").read_bytes()[:4] == b"\x89PNG", name


def test_data_note_follows_the_file_not_the_dataset_name(tmp_path, monkeypatch):
    """The JPEG note goes under a table trained on the known JPEG-decoded copy only."""
    from training import paper

    copy = tmp_path / "cifar10.npz"
    np.savez(copy, x_train=np.zeros((2, 32, 32, 3), np.uint8), y_train=np.zeros(2, np.uint8))
    other = tmp_path / "other" / "cifar10.npz"
    other.parent.mkdir()
    np.savez(other, x_train=np.ones((2, 32, 32, 3), np.uint8), y_train=np.zeros(2, np.uint8))
    import hashlib

    monkeypatch.setitem(paper.DATA_NOTES, hashlib.sha256(copy.read_bytes()).hexdigest(),
                        "decoded from JPEG")
    assert paper.data_note(str(copy)) == "decoded from JPEG"
    assert paper.data_note(str(other)) is None
    assert paper.data_note("tfds:cifar10") is None and paper.data_note("") is None
    rows = table.summarize("cifar10", {"ae": [{
        "clustering_accuracy": 0.2, "nmi": 0.1, "classification_accuracy": 0.4,
        "timings_s": {"total": 60.0}}]})
    info = {"backend": "jax", "device": "CPU", "cpu_cores": 2}
    lines = report.markdown("cifar10", rows, info, 1, 60.0, note="decoded from JPEG").splitlines()
    assert lines[2] == "*decoded from JPEG*"
    assert "JPEG" not in report.markdown("cifar10", rows, info, 1, 60.0)


@pytest.mark.parametrize("classes", [3, 10, 15])
def test_latent_map_colour_bar_has_one_tick_per_class(tmp_path, classes):
    from training import plots

    labels = np.arange(60) % classes
    names = [f"class{c}" for c in range(classes)]
    latents = {"raw": np.random.default_rng(0).normal(size=(60, 5))}
    import matplotlib.pyplot as plt

    captured = []
    real = plt.Figure.colorbar

    def spy(self, *a, **k):
        bar = real(self, *a, **k)
        captured.append(bar)
        return bar

    plt.Figure.colorbar = spy
    try:
        path = plots.latent_maps(latents, labels, tmp_path / "l.png", class_names=names)
    finally:
        plt.Figure.colorbar = real
    assert path.read_bytes()[:4] == b"\x89PNG"
    (bar,) = captured
    assert [t.get_text() for t in bar.ax.get_yticklabels()] == names


def test_partial_rerun_merges_the_other_rows_from_the_ledger(small_table, tmp_path, capsys):
    """`--models ae` updates the ae row and keeps softvq's (and raw's) from the ledger."""
    import shutil

    out = tmp_path / "partial"
    shutil.copytree(small_table, out)
    args = _args(out)
    at = args.index("--models")
    args[at + 1:at + 3] = ["ae"]
    assert table.main(args) == 0
    printed = capsys.readouterr().out
    assert "[table] training" not in printed
    assert "[table] softvq: 1 seed(s) from the ledger (not asked for this time; kept)" in printed
    result = json.loads((out / "digits.json").read_text())
    assert [r["name"] for r in result["rows"]] == ["raw", "ae", "softvq"]
    before = {r["name"]: r for r in json.loads((small_table / "digits.json").read_text())["rows"]}
    for row in result["rows"]:
        assert row["nmi"]["values"] == before[row["name"]]["nmi"]["values"], row["name"]
    assert "| softvq |" in (out / "digits.md").read_text()


def test_codebook_statistics_recomputed_from_the_run_else_not_recorded(small_table, tmp_path,
                                                                        capsys):
    """A ledger entry without codebook usage (recorded before it was) is completed
    from the saved run; without the run folder the table says "not recorded"."""
    import shutil

    out = tmp_path / "usage"
    shutil.copytree(small_table, out)
    ledger = out / "digits-runs-epochs1-kmeans2-probe1" / "softvq-seed0.json"
    run_metrics = out / "runs" / "digits-softvq-seed0" / "metrics.json"
    expected = json.loads(run_metrics.read_text())
    for path in (ledger, run_metrics):
        entry = json.loads(path.read_text())
        del entry["codebook_usage"], entry["perplexity"]
        path.write_text(json.dumps(entry))
    assert table.main([*_args(out), "--report-only"]) == 0
    assert "[table] recomputing codebook usage and perplexity of" in capsys.readouterr().out
    entry = json.loads(ledger.read_text())
    assert entry["codebook_usage"] == pytest.approx(expected["codebook_usage"], abs=1e-6)
    assert entry["perplexity"] == pytest.approx(expected["perplexity"], rel=1e-5)
    rows = {r["name"]: r for r in json.loads((out / "digits.json").read_text())["rows"]}
    assert rows["softvq"]["perplexity"]["values"] == [entry["perplexity"]]
    assert "codebook_usage" not in rows["ae"]  # no codebook
    assert code_cells(out, "softvq")[2:4] == [f"{entry['codebook_usage'] * 100:.1f}",
                                               f"{entry['perplexity']:.1f}"]

    del entry["codebook_usage"], entry["perplexity"]
    ledger.write_text(json.dumps(entry))
    shutil.rmtree(out / "runs")
    assert table.main([*_args(out), "--report-only"]) == 0
    assert code_cells(out, "softvq")[2:4] == ["not recorded", "not recorded"]
    assert code_cells(out, "ae") is None  # no codes, no row in the codes table


def code_cells(out, row):
    """The cells of `row` in the codes table of `out/digits.md` (None: no such row)."""
    lines = (out / "digits.md").read_text().split("Codes (", 1)[1].splitlines()
    assert lines[2] == ("| model | bits / image | codebook usage % | perplexity "
                        "| reconstruction error |")
    line = next((line for line in lines if line.startswith(f"| {row} |")), None)
    return None if line is None else [c.strip() for c in line.strip().strip("|").split("|")]
