"""`mimic eval MODEL --db PATH`: the report's figures, how they are computed, and the error paths."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from bot.cli import main
from tests.bot.eval_fixtures import build_store, chat_messages, train_chat_model

SAMPLES = 4
ARGS = ["--samples", str(SAMPLES), "--min-messages", "3", "--srand", "5", "--show", "2"]


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evalchat")
    db = build_store(root / "mimic.db", chat_messages())
    model = train_chat_model(db, root / "run")
    return {"db": db, "model": model, "run": root / "run", "root": root}


@pytest.fixture(scope="module")
def report(chat: dict[str, Path]) -> dict:
    out = chat["root"] / "eval.json"
    assert main(["eval", str(chat["model"]), "--db", str(chat["db"]), *ARGS, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def _split(chat: dict[str, Path]):
    from bot.evaluation import load_split

    return load_split(chat["db"], 0.05)


def test_report_has_every_figure(report: dict) -> None:
    speakers = report["classifier"]["speakers"]
    assert sorted(speakers) == ["ada", "grace", "linus", "mo"]
    assert report["classifier"]["chance"] == pytest.approx(1 / 4)
    assert 0 < report["held_out"]["bits_per_char"] < 8
    for name in ("mimic", "mimic_guarded", "mimic_alone", "markov", "markov_tested", "real"):
        s = report["systems"][name]
        for key in ("fidelity", "fidelity_novel", "copy_rate", "mean_longest_span", "exact_copy_rate", "messages",
                    "asked"):
            assert key in s, (name, key)
        assert 0 <= s["copy_rate"] <= 1 and s["mean_longest_span"] >= 0
        assert s["median_chars"] > 0
        if name != "real":  # the reference of "at real lengths"
            assert s["fidelity_at_real_lengths"] is None or 0 <= s["fidelity_at_real_lengths"] <= 1
    assert report["systems"]["mimic"]["messages"] == report["systems"]["markov"]["messages"] == SAMPLES * 4
    assert report["systems"]["mimic"]["asked"] == SAMPLES * 4
    assert report["systems"]["markov_tested"]["messages"] <= SAMPLES * 4  # markovify may give up
    assert report["systems"]["mimic_guarded"]["copy_rate"] == 0.0  # the guard is stricter than 40 characters
    for name, sp in report["speakers"].items():
        assert set(sp["fidelity"]) == {"mimic", "mimic_guarded", "mimic_alone", "markov", "markov_tested"}
        assert len(sp["samples"]["mimic"]) <= 2 and len(sp["samples"]["markov"]) == 2
        assert sp["bits_per_char"] == report["bits_per_char_by_speaker"][name]["bits_per_char"]
    assert set(report["target"]["raw"]) == {"fidelity_above_markov", "at_least_half_ceiling", "lower_copy_rate", "met"}
    assert report["model_info"]["hidden"] == "32"
    gain = report["speaker_name_gain"]
    assert gain["records"] > 0 and gain["gain"] == pytest.approx(gain["wrong_name"] - gain["right_name"])
    assert gain["conditioned"] and gain["gain"] > 0  # four people with distinct styles: the right one costs less


def test_markov_copies_its_training_text(report: dict) -> None:
    # Four speakers, each repeating one long message: a word chain walks straight through it.
    assert report["systems"]["markov"]["copy_rate"] > 0
    assert report["systems"]["markov"]["mean_longest_span"] > report["systems"]["mimic"]["mean_longest_span"]


def test_per_speaker_bits_add_up_to_the_overall_figure(report: dict, chat: dict[str, Path]) -> None:
    per = report["bits_per_char_by_speaker"]
    total_bits = sum(v["bits_per_char"] * v["bytes"] for v in per.values())
    assert sum(v["bytes"] for v in per.values()) == report["held_out"]["bytes"]
    assert total_bits / report["held_out"]["bytes"] == pytest.approx(report["held_out"]["bits_per_char"])
    split = _split(chat)
    assert {s: v["messages"] for s, v in per.items()} == dict(Counter(s for s, _ in split.valid))


def test_record_bits_charge_each_byte_to_its_record(chat: dict[str, Path]) -> None:
    """One stream, by hand: -log2 p of every byte after "\\n", summed per record, equals record_bits."""
    from bot.eval_bpc import record_bits
    from engine.evaluate import log_softmax
    from engine.session import ModelSession
    from training.corpus import format_record

    session = ModelSession(chat["model"])
    records = [format_record(s, t).encode() for s, t in _split(chat).valid]
    stream = np.frombuffer(b"\n" + b"".join(records), dtype=np.uint8).astype(np.int64)
    logits, _ = session.run(stream[None, :-1], session.initial_state(1))
    logp = np.take_along_axis(log_softmax(logits[0]), stream[1:, None], axis=-1)[:, 0] / -math.log(2)
    expected = np.add.reduceat(logp, np.cumsum([0] + [len(r) for r in records[:-1]]))
    np.testing.assert_allclose(record_bits(session, records, max_streams=1, window=7), expected, rtol=1e-4)
    # Cut into parallel streams at record boundaries: only the state at each cut differs.
    many = record_bits(session, records, max_streams=5)
    assert many.sum() == pytest.approx(expected.sum(), rel=0.05)


def test_record_bits_feed_each_writers_slot(chat: dict[str, Path]) -> None:
    """A speaker-conditioned model is charged as it was trained: name and ':' slot 0, the rest the writer's."""
    from bot.eval_bpc import record_bits
    from engine.evaluate import log_softmax
    from engine.model_source import load_model
    from training.corpus import format_record
    from training.speaker_slots import speaker_ids

    model = load_model(chat["model"])
    slots = model.speakers.slots()
    assert set(slots) == {"ada", "grace", "linus", "mo"}
    records = [format_record(s, t).encode() for s, t in _split(chat).valid]
    stream = b"\n" + b"".join(records)
    tokens = np.frombuffer(stream, dtype=np.uint8).astype(np.int64)
    ids = speaker_ids(stream, slots)
    logits, _ = model.session.run(tokens[None, :-1], model.session.initial_state(1), ids[None, :-1])
    logp = np.take_along_axis(log_softmax(logits[0]), tokens[1:, None], axis=-1)[:, 0] / -math.log(2)
    expected = np.add.reduceat(logp, np.cumsum([0] + [len(r) for r in records[:-1]]))
    got = record_bits(model.session, records, max_streams=1, window=7, slots=slots)
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    assert got.sum() < record_bits(model.session, records, max_streams=1).sum()  # slots help on its own data


def test_ceiling_is_the_classifier_on_real_held_out_messages(report: dict, chat: dict[str, Path]) -> None:
    from bot.eval_fidelity import Attributor

    split = _split(chat)
    speakers = report["classifier"]["speakers"]
    attributor = Attributor({s: [t for w, t in split.train if w == s] for s in speakers})
    held = {s: [t for w, t in split.valid if w == s] for s in speakers}
    predicted = {s: attributor.predict(texts) for s, texts in held.items()}
    per = {s: sum(p == s for p in predicted[s]) / len(predicted[s]) for s in speakers}
    assert report["classifier"]["held_out_scored"] == sum(len(v) for v in held.values())
    assert report["classifier"]["ceiling"] == pytest.approx(sum(per.values()) / len(per))
    assert {s: report["speakers"][s]["ceiling"] for s in speakers} == pytest.approx(per)
    assert report["systems"]["real"]["fidelity"] == pytest.approx(report["classifier"]["ceiling"])


def test_fidelity_by_length_counts_each_message_once_in_its_band(report: dict, chat: dict[str, Path]) -> None:
    from bot.eval_fidelity import LENGTHS, Attributor

    split = _split(chat)
    speakers = report["classifier"]["speakers"]
    attributor = Attributor({s: [t for w, t in split.train if w == s] for s in speakers})
    for name, system in report["systems"].items():
        bands = system["fidelity_by_length"]
        assert [b["min"] for b in bands] == [0, *LENGTHS] and bands[-1]["max"] is None
        assert sum(b["messages"] for b in bands) == system["messages"], name
    held = {s: [t for w, t in split.valid if w == s] for s in speakers}
    want = {}
    for s, texts in held.items():
        for text, p in zip(texts, attributor.predict(texts), strict=True):
            band = sum(len(text) >= e for e in LENGTHS)
            hits, n = want.get(band, (0, 0))
            want[band] = (hits + (p == s), n + 1)
    got = report["systems"]["real"]["fidelity_by_length"]
    assert {i: (round(b["fidelity"] * b["messages"]), b["messages"]) for i, b in enumerate(got) if b["messages"]} == want
    assert all(b["fidelity"] is None for b in got if not b["messages"])


def test_guarded_messages_are_what_impersonate_posts(chat: dict[str, Path]) -> None:
    from bot.eval_markov import speaker_seed
    from bot.eval_samples import model_samples
    from engine.impersonate import ImpersonationConfig, impersonate
    from engine.model_source import load_model

    model = load_model(chat["model"])
    cfg = ImpersonationConfig(min_messages=0, max_chars=120)
    seed = speaker_seed(3, "linus")
    ours = model_samples(model, ["linus"], 3, {"linus": seed}, cfg)["linus"]
    if None not in ours.guarded:
        assert [m.text for m in impersonate(model, "linus", n=3, srand=seed, cfg=cfg)] == ours.guarded
    # Guard off: the best non-empty draft, which the guard replaces when it is a copy.
    for unguarded, guarded, attempts in zip(ours.unguarded, ours.guarded, ours.attempts, strict=True):
        assert unguarded
        if attempts == 1 and not model.copy_index.copies(unguarded):
            assert guarded == unguarded


def test_served_with_the_voice_memory_and_alone_without(chat: dict[str, Path], report: dict, tmp_path: Path) -> None:
    """`mimic train --db` writes a voice memory beside the model; the report scores the model as served (with
    it, drafts kept by its style ranker) and alone; --no-voice scores the model alone only, --no-style keeps the
    draft the memory explains best, --drafts sets how many; a model without a memory gets it built for the eval."""
    from engine.voice import voice_path_for

    memory = voice_path_for(chat["model"])
    assert memory.exists() and report["built_for_eval"] == []
    assert report["config"]["voice"] is True and "mimic_alone" in report["systems"]
    assert report["served_with"] == {"voice_memory": True, "drafts": 4, "style_ranker": True}
    check = report["voice_check"]  # the same held-out texts as the speaker check, so the same network figure
    assert check["network"] == pytest.approx(report["speaker_name_gain"]["right_name"], rel=1e-6)
    assert check["own"] < check["other"]  # four people with distinct styles: each one's memory is theirs
    out = tmp_path / "plain.json"
    assert main(["eval", str(chat["model"]), "--db", str(chat["db"]), *ARGS, "--no-voice", "--json", str(out)]) == 0
    plain = json.loads(out.read_text())
    assert "mimic_alone" not in plain["systems"] and plain["voice_check"] is None
    assert plain["served_with"] == {"voice_memory": False, "drafts": 1, "style_ranker": False}
    out = tmp_path / "unranked.json"
    assert main(["eval", str(chat["model"]), "--db", str(chat["db"]), *ARGS, "--no-style", "--drafts", "2",
                 "--json", str(out)]) == 0
    unranked = json.loads(out.read_text())
    assert unranked["served_with"] == {"voice_memory": True, "drafts": 2, "style_ranker": False}
    assert unranked["systems"]["mimic_alone"] == report["systems"]["mimic_alone"]  # one draft: nothing to rank
    assert plain["speakers"]["ada"]["messages"]["mimic_guarded"] == report["speakers"]["ada"]["messages"]["mimic_alone"]
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "model.onnx").write_bytes(chat["model"].read_bytes())  # no copy index, no voice memory beside it
    out = tmp_path / "bare.json"
    assert main(["eval", str(bare / "model.onnx"), "--db", str(chat["db"]), *ARGS, "--json", str(out)]) == 0
    rebuilt = json.loads(out.read_text())
    assert len(rebuilt["built_for_eval"]) == 2 and not voice_path_for(bare / "model.onnx").exists()
    assert rebuilt["systems"]["mimic_guarded"] == report["systems"]["mimic_guarded"]  # the same memory, rebuilt


def test_same_srand_same_report(report: dict, chat: dict[str, Path]) -> None:
    out = chat["root"] / "again.json"
    assert main(["eval", str(chat["model"]), "--db", str(chat["db"]), *ARGS, "--json", str(out)]) == 0
    again = json.loads(out.read_text())
    again.pop("seconds")  # timings vary; every figure and sample must not
    assert again == {k: v for k, v in report.items() if k != "seconds"}


def test_markov_baseline_is_seeded_and_counts_what_came_out() -> None:
    from bot.eval_markov import markov_samples

    msgs = {"a": ["one two three four", "one two five six", "seven eight nine ten eleven"], "b": ["x y z"]}
    first, second = markov_samples(msgs, 5, srand=1), markov_samples(msgs, 5, srand=1)
    assert first == second
    assert len(first["a"].raw) == 5 and first["a"].asked == 5
    assert len(first["b"].tested) == 0  # one three-word message: every walk repeats it, markovify refuses


def test_table_and_samples_are_printed(chat: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    assert main(["eval", str(chat["model"]), "--db", str(chat["db"]), *ARGS, "--show", "1"]) == 0
    out = capsys.readouterr().out
    for needle in ("bits/char", "mimic (guard off)", "mimic model alone (posted)", "markov (raw)", "real held-out (ceiling)", "chance",
                   "target,", "  mimic  | ", "  markov | ", "voice check:"):
        assert needle in out


def test_text_form_still_works_and_writes_json(tiny_model: Path, repeated_text_file: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "t.json"
    assert main(["eval", str(tiny_model), "--text", str(repeated_text_file), "--json", str(out)]) == 0
    printed = float(capsys.readouterr().out.split()[0])
    assert json.loads(out.read_text())["bits_per_char"] == pytest.approx(printed, abs=1e-4)


def _one_line_error(capsys: pytest.CaptureFixture, needle: str) -> None:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mimic:")]
    assert len(err) == 1 and needle in err[0], err


@pytest.mark.parametrize("args,needle", [
    (["eval", "{model}", "--db", "{root}/missing.db"], "no such message store"),
    (["eval", "{model}", "--db", "{db}", "--min-messages", "1000"], "lower --min-messages"),
    (["eval", "{model}", "--db", "{db}", "--text", "{db}"], "give one of"),
    (["eval", "{model}", "--db", "{db}", "--png", "{root}/x.png"], "--png goes with --plot"),
    (["eval", "{model}", "--db", "{db}", "--samples", "0"], "--samples"),
    (["eval", "{model}", "--db", "{db}", "--drafts", "0"], "--drafts"),
    (["eval", "{model}", "--db", "{db}", "--temp", "0"], "temperature"),
    (["eval", "{root}/missing.onnx", "--db", "{db}"], "no such model file"),
    (["eval", "{plain}", "--db", "{db}"], "knows no speakers"),
])
def test_bad_input_is_one_line_and_exit_2(chat: dict[str, Path], tiny_model: Path, capsys, args, needle) -> None:
    subst = {"model": str(chat["model"]), "db": str(chat["db"]), "root": str(chat["root"]), "plain": str(tiny_model)}
    assert main([a.format(**subst) for a in args]) == 2
    _one_line_error(capsys, needle)


def _registry(root: Path, model: Path) -> tuple[Path, Path]:
    """A model registry as `mimic retrain` leaves it, serving a copy of `model`: (registry, the served file)."""
    import shutil

    from export.registry import CHECKPOINT_FILE, Registry, version_name

    registry = Registry.open(root / "models", create=True)
    name = version_name()
    folder = registry.start(name, {"speakers": ["ada"]})
    for f in model.parent.glob("model.*"):  # the model, its copy index and voice memory
        shutil.copy(f, folder / f.name)
    (folder / CHECKPOINT_FILE).write_bytes(b"ckpt")  # not read by eval
    registry.commit(name, registry.manifest(name), promote=True, reason="test")
    return registry.root, registry.model_path(name)


@pytest.fixture
def evaluated(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """What `mimic eval` asked bot/evaluation.py to evaluate, (model, store or text), without evaluating."""
    from bot import eval_report, evaluation

    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(evaluation, "evaluate_chat", lambda model, db, cfg: calls.append((str(model), str(db))))
    monkeypatch.setattr(evaluation, "evaluate_text", lambda model, text: calls.append((str(model), str(text))))
    monkeypatch.setattr(eval_report, "format_chat_report", lambda report: "")
    monkeypatch.setattr(eval_report, "format_text_report", lambda report: "")
    return calls


def test_a_registry_is_evaluated_at_its_current_version(chat: dict[str, Path], tmp_path: Path) -> None:
    """`mimic retrain` writes a registry, and `who`, `impersonate` and `serve` take one: so does eval."""
    models, served = _registry(tmp_path, chat["model"])
    out = tmp_path / "r.json"
    assert main(["eval", str(models), "--db", str(chat["db"]), "--samples", "1", "--min-messages", "3",
                 "--max-speakers", "2", "--show", "0", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["model"] == str(served)


def test_eval_defaults_to_the_configs_store_and_models(chat: dict[str, Path], tmp_path: Path,
                                                       evaluated: list[tuple[str, ...]],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    models, served = _registry(tmp_path / "team", chat["model"])
    config = tmp_path / "config.toml"
    config.write_text(f'[storage]\ndata_dir = "{tmp_path / "team"}"\ndatabase = "{chat["db"]}"\n')
    assert main(["eval", "--config", str(config)]) == 0
    monkeypatch.setenv("MIMIC_CONFIG", str(config))
    assert main(["eval", str(chat["model"])]) == 0  # the store from the config, the model given
    assert main(["eval", "--db", str(tmp_path / "other.db")]) == 0  # the models from the config, the store given
    assert main(["eval", str(chat["model"]), str(chat["db"])]) == 0  # a text FILE: as before, no store
    assert evaluated == [(str(served), str(chat["db"])), (str(chat["model"]), str(chat["db"])),
                         (str(served), str(tmp_path / "other.db")), (str(chat["model"]), str(chat["db"]))]


def test_a_config_is_not_read_when_every_path_is_given(chat: dict[str, Path], tmp_path: Path,
                                                       evaluated: list[tuple[str, ...]],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIMIC_CONFIG", str(tmp_path / "missing.toml"))
    assert main(["eval", str(chat["model"]), "--db", str(chat["db"])]) == 0
    assert evaluated == [(str(chat["model"]), str(chat["db"]))]


def test_eval_without_a_model_or_a_current_version_is_one_line(chat: dict[str, Path], tmp_path: Path,
                                                               capsys: pytest.CaptureFixture,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the built-in defaults: data/models and data/mimic.db, here
    assert main(["eval"]) == 2
    _one_line_error(capsys, "data/models: no model here yet (the config's [storage] model); give MODEL, or train "
                            "one with `mimic retrain`")
    assert main(["eval", str(chat["model"])]) == 2
    _one_line_error(capsys, "data/mimic.db: no such message store")
    models, served = _registry(tmp_path, chat["model"])
    (models / "current").unlink()
    assert main(["eval", str(models), "--db", str(chat["db"])]) == 2
    _one_line_error(capsys, "no current version to evaluate (")
    (tmp_path / "empty").mkdir()
    assert main(["eval", str(tmp_path / "empty"), "--db", str(chat["db"])]) == 2
    _one_line_error(capsys, "no model registry here yet; run `mimic retrain`")


def test_export_with_a_bare_db_reads_the_configs_store(chat: dict[str, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[storage]\ndatabase = "{chat["db"]}"\n')
    out = tmp_path / "model.onnx"
    assert main(["export", str(chat["run"] / "last.pt"), str(out), "--db", "--config", str(config)]) == 0
    assert f"its copy index and voice memory (from {chat['db']})" in capsys.readouterr().err
    assert (tmp_path / "model.copyindex.npy").is_file() and (tmp_path / "model.voice.npz").is_file()


@pytest.mark.parametrize("missing", ["sklearn", "markovify"])
def test_missing_eval_extra_names_the_install_command(chat: dict[str, Path], monkeypatch, capsys, missing) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == missing else real(name, *a))
    assert main(["eval", str(chat["model"]), "--db", str(chat["db"])]) == 2
    _one_line_error(capsys, "pip install 'mimic[eval]'")


def test_context_priming_and_speaker_limit(chat: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "ctx.json"
    assert main(["eval", str(chat["model"]), "--db", str(chat["db"]), "--samples", "2", "--min-messages", "3",
                 "--max-speakers", "2", "--context", "3", "--show", "0", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["config"]["context"] == 3 and len(r["classifier"]["speakers"]) == 2
    assert r["classifier"]["chance"] == 0.5 and r["systems"]["mimic"]["asked"] == 4


def test_contexts_are_the_records_before_a_real_message() -> None:
    from bot.evaluation import Split, _contexts

    valid = [("a", "1"), ("b", "2"), ("a", "3"), ("c", "4"), ("b", "5")]
    ctx = _contexts(Split([], valid, 0), ["b"], 3, 2)
    assert ctx["b"] == [[("a", "1")], valid[2:4], [("a", "1")]]  # b's held-out messages are #1 and #4, in turn


def test_export_writes_the_files_beside_the_model_before_the_model(chat: dict[str, Path], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A bot serving OUT.onnx reloads when the model or a file beside it changes: it must never pick up the
    new model while the old copy index and voice memory are still beside it."""
    import engine.copyindex
    import engine.voice
    from engine.model_source import load_model

    out, seen = tmp_path / "model.onnx", []

    def spy(name: str, real):
        def build(*args, **kwargs):
            seen.append((name, out.exists()))
            return real(*args, **kwargs)
        return build

    for module, name in ((engine.copyindex, "build_copy_index"), (engine.voice, "build_voice_memory")):
        monkeypatch.setattr(module, name, spy(name, getattr(module, name)))
    assert main(["export", str(chat["run"] / "last.pt"), str(out), "--db", str(chat["db"])]) == 0
    assert seen == [("build_copy_index", False), ("build_voice_memory", False)]
    assert load_model(out).copy_index is not None and sorted(p.name for p in tmp_path.iterdir()) == [
        "model.copyindex.npy", "model.onnx", "model.voice.npz"]  # no staged file left behind


def test_export_with_the_store_writes_the_copy_index_and_voice_memory(chat: dict[str, Path], tmp_path: Path) -> None:
    from engine.copyindex import index_path_for
    from engine.voice import VoiceMemory, voice_path_for

    out = tmp_path / "model.onnx"
    assert main(["export", str(chat["run"] / "last.pt"), str(out), "--db", str(chat["db"])]) == 0
    trained, exported = VoiceMemory(voice_path_for(chat["model"])), VoiceMemory(voice_path_for(out))
    assert trained.ids == exported.ids and np.array_equal(trained.keys, exported.keys)
    assert index_path_for(out).read_bytes() == index_path_for(chat["model"]).read_bytes()
    assert main(["export", str(chat["run"] / "last.pt"), str(tmp_path / "x.onnx"), "--db", str(tmp_path / "no.db")]) == 2
