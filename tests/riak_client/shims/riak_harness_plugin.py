"""pytest plugin of the harness (loaded with `-p riak_harness_plugin`).

The riak client's multi-get/put pools (riak/client/multi.py) run non-daemon
worker threads that only stop when the client that owns them is closed. A
test that fails before closing its client leaves them running, and Python
then never exits after pytest is done (seen: 15 s of tests, then a hang until
the harness's timeout). Once pytest has written its summary and the JUnit
file, this exits the process with pytest's own status instead of waiting for
those threads. It changes no test and no outcome.
"""
import os
import sys

import pytest

_exit_status = []


def pytest_sessionfinish(session, exitstatus):
    _exit_status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    if _exit_status:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status[-1])
