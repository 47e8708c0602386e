"""tests/durations.py reads pytest's `--durations=0` report into seconds per file."""

from tests.durations import durations_parse

REPORT = """============================= slowest durations =============================
30.09s call     tests/e2e/test_lift.py::test_lift__demo_by_planted_intent__worker_computes_waterfall_and_forest
2.50s setup    tests/e2e/test_lift.py::test_lift__fresh_demo__default_view
0.40s teardown tests/test_runner.py::test_runner__redis_postgres_worker_killed[param::x]
(12 durations < 0.005s hidden.  Use -vv to show these durations.)
1780 passed, 38 warnings in 443.04s (0:07:23)
"""


def test_durations_parse__setup_call_teardown__added_per_file():
    assert durations_parse(REPORT.splitlines()) == {"tests/e2e/test_lift.py": 32.6, "tests/test_runner.py": 0.4}
