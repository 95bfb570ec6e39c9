"""Cases that check the runner itself: a crash, an abort, a hang, a miss and a hold."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from tasks.core.errors import ItemError
from tests.data.hostile.case import Case, Env, is_ok, refused


def _segfault(env: Env, data: Any) -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def _abort(env: Env, data: Any) -> None:
    os.abort()


def _sleep(env: Env, data: Any) -> None:
    time.sleep(3600)


def _refuse(env: Env, data: Any) -> None:
    raise ItemError("bad_json", "refused")


def _slow(env: Env, data: Any) -> None:
    time.sleep(0.3)
    raise ItemError("bad_json", "refused, but slowly")


def cases() -> list[Case]:
    return [
        Case("holds", _refuse, refused("bad_json")),
        Case("segfault", _segfault, refused("bad_json")),
        Case("wrong kind", _refuse, refused("bad_image")),
        Case("abort", _abort, refused("bad_json")),
        Case("too slow", _slow, refused("bad_json"), time_s=0.1),
        Case("hang", _sleep, refused("timeout"), hang_after_s=1.0),
        Case("ok result", lambda env, data: 42, check=is_ok),
    ]
