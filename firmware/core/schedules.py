"""When a schedule is open, in the site's local time.

Windows are wall-clock minutes from local midnight ("07:00 to 22:00" means what the
clock on the wall says, on both DST changes). A window with `end_min` > 1440 runs
into the next morning; a closed date (`except`) closes every window that *starts*
on that date, including its tail after midnight.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from firmware.core.model import Schedule

_ONE_DAY = timedelta(days=1)


def is_open(schedule: Schedule, zone: ZoneInfo, now: float) -> bool:
    """True when `now` (Unix seconds) falls inside one of the schedule's windows."""
    local = datetime.fromtimestamp(now, zone)
    minute = local.hour * 60 + local.minute
    weekday = local.weekday()
    today_bit = 1 << weekday
    yesterday_bit = 1 << ((weekday - 1) % 7)
    today: object = None
    yesterday: object = None
    for w in schedule.windows:
        if w.days & today_bit and w.start_min <= minute < w.end_min:
            if today is None:
                today = local.date()
            if today not in schedule.closed:
                return True
        if w.days & yesterday_bit and minute + 1440 < w.end_min:
            if yesterday is None:
                yesterday = local.date() - _ONE_DAY
            if yesterday not in schedule.closed:
                return True
    return False
