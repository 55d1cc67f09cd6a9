from datetime import UTC, datetime

import pytest

from playground.tools import ToolError
from playground.tools.clock import Clock


def test_clock_tells_the_real_current_time_in_utc_and_local():
    out = Clock().run("")
    now = datetime.now(UTC)
    assert out.startswith("UTC: ") and "local: " in out
    assert str(now.year) in out and now.strftime("%B") in out


def test_clock_accepts_what_models_write_and_time_zones():
    fixed = Clock(now=lambda: datetime(2024, 1, 15, 12, 30, tzinfo=UTC))
    assert "Monday 15 January 2024, 12:30:00" in fixed.run("now")
    paris = fixed.run("Europe/Paris")
    assert paris.startswith("Europe/Paris: Monday 15 January 2024, 13:30:00")


@pytest.mark.parametrize("arg", ["Mars/Olympus", "../../etc/passwd", "x" * 100])
def test_unknown_time_zones_are_clear_errors(arg):
    with pytest.raises(ToolError):
        Clock().run(arg)
