"""What an ingest reports: a whole team met again on another platform is one line, not hundreds."""

from training.ingest_batch import IngestReport
from training.store import NameCollision


def test_many_taken_names_are_counted_not_listed() -> None:
    report = IngestReport()
    report.add_collisions(NameCollision("discord", str(i), f"p{i}", f"p{i}_2") for i in range(300))
    assert len(report.collisions) == 300
    assert sum("is taken" in w for w in report.warnings) == 10
    assert "300 people took another name" in report.summary()


def test_a_few_taken_names_are_each_a_warning() -> None:
    report = IngestReport()
    report.add_collisions([NameCollision("discord", "1", "ada", "ada_2")])
    assert report.warnings == ["speaker name 'ada' is taken; discord user 1 is 'ada_2' (the same person? `mimic link ada ada_2`)"]
    assert "took another name" not in report.summary()


def test_skipped_reasons_beyond_six_are_marked() -> None:
    report = IngestReport()
    for i in range(8):
        report.skipped[f"reason{i}"] += 8 - i
    assert report.summary().endswith("reason5 3, ...)")
