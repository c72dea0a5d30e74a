"""The build report (stagecache.report): its table, markdown and JSON, read back; no engine."""

from __future__ import annotations

from stagecache.refs import ImageRef
from stagecache.report import BuildReport, StageRecord


def test_the_report_renders_a_table_markdown_and_json_that_reads_back() -> None:
    report = BuildReport(
        "test",
        [
            StageRecord("base", "k1", "hit", ImageRef.parse("127.0.0.1:5000/c:base-k1@sha256:" + "f" * 64)),
            StageRecord(
                "test",
                "k2",
                "exported",
                ImageRef.parse("127.0.0.1:5000/c:test-k2"),
                3.0,
                1.0,
                0,
                2048,
                note="a note",
                why="files ~vllm/a.py",
            ),
        ],
        total_seconds=4.5,
        traffic={"pulled": 0, "pushed": 2048, "mounted_blobs": 3},
    )
    assert "test   exported" in report.table() and "dominated by test build (4.0 s)" in report.table()
    assert report.markdown().splitlines()[:3] == [
        "1/2 stages from cache",
        "",
        "| stage | outcome | ref | build s | export s | pulled | pushed | why built; note |",
    ]
    assert (
        report.markdown().splitlines()[5]
        == "| test | exported | c:test-k2 | 3.0 | 1.0 | 0 B | 2.0 kB | files ~vllm/a.py; a note |"
    )
    again = BuildReport.from_json(report.to_json())
    assert again.outcomes() == {"base": "hit", "test": "exported"} and again.traffic == report.traffic


def test_look_up_failures_are_summarised_in_the_first_line_and_retries_counted() -> None:
    report = BuildReport(
        "test",
        [StageRecord("base", "k1", "built"), StageRecord("test", "k2", "built")],
        registry_retries=2,
        lookup_failures=["registry 127.0.0.1:5999 unreachable: ConnectError"],
    )
    assert report.table().splitlines()[0] == "0/2 stages from cache: registry 127.0.0.1:5999 unreachable: ConnectError"
    assert report.table().splitlines()[-1].endswith("; 2 registry requests retried")
    again = BuildReport.from_json(report.to_json())
    assert (again.registry_retries, again.lookup_failures) == (2, report.lookup_failures)
