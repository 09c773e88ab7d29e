"""shoal's pytest plugin: reports collected tests and per-test progress to shoal.

shoal loads it with ``-p shoal_pytest_plugin`` (it writes this file into its
support directory and puts that directory on PYTHONPATH). Messages are JSON
objects, one per line, schema version 1 (``"v": 1`` in every line), written to

* the file descriptor named by ``SHOAL_PROGRESS_FD`` (a pipe shoal reads), or
* the file named by ``SHOAL_PROGRESS_FILE`` (appended to),

and nowhere when neither is set. Both variables are removed from the
environment and the descriptor is made non-inheritable, so processes the tests
start (including nested pytest runs) never write to shoal's channel.

Messages:

* ``{"event": "collected", "nodeid", "file", "arg"?}`` for each selected item
  when run with ``--collect-only``; ``arg`` is how to name the item on a
  command line run from the invocation directory, when that differs from the
  node id (the rootdir is not the invocation directory).
* ``{"event": "collection_finished", "count"}`` after the last ``collected``.
* ``{"event": "start", "nodeid"}`` when a test starts.
* ``{"event": "finish", "nodeid", "outcome", "duration", "message", "output",
  "output_dropped"}`` when a
  test's setup, call and teardown are over. ``outcome`` is ``pass``, ``fail``
  or ``skip`` and follows pytest's JUnit classification: an error in setup or
  teardown fails, xfail skips, a non-strict xpass passes, a strict one fails.
  ``output`` (failures only) is the failure report and captured sections,
  head and tail of at most OUTPUT_LIMIT characters; ``output_dropped`` counts
  the characters left out.

A failure to write (shoal went away) disables reporting; it never fails the
test run.

Selection: ``--shoal-select=NODEID`` (repeated) runs exactly those items, in
that order, out of what the positional arguments collect (shoal passes the
files the ids are in). Unlike node ids as arguments, an id pytest cannot
parse back (``::`` inside parameters on pytest < 9) or that no longer exists
costs only that test, not the whole batch.

Serving: with ``--shoal-serve`` pytest collects once and, instead of running
what it collected, runs batches it is asked for on stdin, one JSON line each:
``{"run": [NODEID, ...]}`` runs those items in that order (the last one with
no next item, so every fixture is torn down at the end of a batch). Messages:

* ``{"event": "ready", "count"}`` once collection is over, before the first
  request is read;
* the usual ``start`` and ``finish`` for each test;
* ``{"event": "unknown", "nodeid"}`` for an id that was not collected (it is
  skipped);
* ``{"event": "batch_done"}`` after the last test of a request.

End of input ends the session normally (exit status 0, or 1 if a test
failed). A collection error, an unreadable request, or ``-x``/``--maxfail``
being reached stops the process before or instead of ``batch_done``. The
request stream is moved off fd 0 before pytest starts capturing, so tests and
the processes they start never read it.
"""

import json
import os
import sys

import pytest

SCHEMA_VERSION = 1
MESSAGE_LIMIT = 500
# Failure text (characters) sent with a "finish" message, as head and tail; at
# most 6 bytes each once JSON-escaped, it stays under the progress
# pipe reader's 1 MiB line bound.
OUTPUT_LIMIT = 128 * 1024

_stream = None
_states = {}
# Serve mode: the request stream (shoal's stdin), once moved off fd 0.
_requests = None


def _open_channel():
    fd = os.environ.pop("SHOAL_PROGRESS_FD", None)
    path = os.environ.pop("SHOAL_PROGRESS_FILE", None)
    try:
        if fd:
            number = int(fd)
            os.set_inheritable(number, False)
            return os.fdopen(number, "w", buffering=1, encoding="utf-8")
        if path:
            return open(path, "a", buffering=1, encoding="utf-8")
    except (OSError, ValueError):
        return None
    return None


def _emit(message):
    global _stream
    if _stream is None:
        return
    message["v"] = SCHEMA_VERSION
    try:
        _stream.write(json.dumps(message) + "\n")
        _stream.flush()
    except (OSError, ValueError):
        _stream = None


def _short(text):
    text = str(text).strip()
    if len(text) > MESSAGE_LIMIT:
        text = text[: MESSAGE_LIMIT - 3] + "..."
    return text


def _strip_prefix(text, prefix):
    return text[len(prefix):] if text.startswith(prefix) else text


def _failure_message(report):
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    if report.when in ("setup", "teardown"):
        text = "error in {}: {}".format(report.when, text)
    return _short(text)


def _failure_output(report):
    """The failure report and captured sections, as pytest prints them."""
    parts = [report.longreprtext] if report.longreprtext else []
    for title, content in report.sections:
        parts.append("{:-^60}\n{}".format(" " + title + " ", content))
    text = "\n".join(parts)
    dropped = 0
    if len(text) > OUTPUT_LIMIT:
        half = OUTPUT_LIMIT // 2
        dropped = len(text) - 2 * half
        text = text[:half] + "\n[... shoal dropped {} characters of output ...]\n".format(dropped) + text[-half:]
    return text, dropped


def _skip_message(report):
    if hasattr(report, "wasxfail"):
        reason = _strip_prefix(str(report.wasxfail), "reason: ")
        return _short("xfail: " + reason) if reason else "xfail"
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return _short(_strip_prefix(str(longrepr[2]), "Skipped: "))
    return _short(longrepr) if longrepr else None


def _command_line_arg(config, item, invocation_dir):
    """The item named relative to the invocation directory, or its node id."""
    nodeid = item.nodeid
    path_part, sep, rest = nodeid.partition("::")
    item_path = getattr(item, "path", None)
    if item_path is None:
        return nodeid
    item_path = os.path.normpath(str(item_path))
    if os.path.normpath(os.path.join(str(config.rootpath), path_part)) != item_path:
        return nodeid
    relative = os.path.relpath(item_path, invocation_dir).replace(os.sep, "/")
    return relative + sep + rest


def pytest_addoption(parser):
    group = parser.getgroup("shoal")
    group.addoption(
        "--shoal-select",
        action="append",
        dest="shoal_select",
        default=None,
        metavar="NODEID",
        help="run only these node ids, in this order (used by shoal)",
    )
    group.addoption(
        "--shoal-serve",
        action="store_true",
        dest="shoal_serve",
        default=False,
        help="collect once, then run the batches requested on stdin (used by shoal)",
    )


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    # Outside pytest's capture wrapper: fd 0 is still shoal's pipe here.
    global _requests
    if getattr(early_config.known_args_namespace, "shoal_serve", False) and _requests is None:
        _requests = _take_stdin()
    yield


def _take_stdin():
    """Moves stdin to a private descriptor and puts /dev/null at fd 0."""
    private = os.dup(0)  # not inheritable
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(devnull, 0)
    finally:
        os.close(devnull)
    return os.fdopen(private, "r", encoding="utf-8", errors="replace")


def _serve_error(text):
    sys.stderr.write("shoal pytest plugin: {}\n".format(text))
    sys.stderr.flush()
    pytest.exit("shoal: " + text, returncode=pytest.ExitCode.USAGE_ERROR)


def _read_request(stream):
    """The node ids of the next request, or None at end of input."""
    while True:
        line = stream.readline()
        if not line:
            return None
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            ids = request["run"]
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise ValueError("run is not a list of node ids")
        except (ValueError, KeyError, TypeError) as error:
            _serve_error("unreadable request {!r}: {}".format(line.strip()[:200], error))
        return ids


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session):
    if not session.config.getoption("shoal_serve") or session.config.option.collectonly:
        return None
    if session.testsfailed and not session.config.option.continue_on_collection_errors:
        _serve_error("cannot serve: {} error(s) during collection".format(session.testsfailed))
    if _requests is None:
        _serve_error("cannot serve: the request stream was not taken over (plugin loaded too late?)")
    by_id = {}
    for item in session.items:
        by_id.setdefault(item.nodeid, item)
    _emit({"event": "ready", "count": len(session.items)})
    while True:
        ids = _read_request(_requests)
        if ids is None:
            return True
        batch = []
        for nodeid in dict.fromkeys(ids):
            item = by_id.get(nodeid)
            if item is None:
                _emit({"event": "unknown", "nodeid": nodeid})
            else:
                batch.append(item)
        for i, item in enumerate(batch):
            nextitem = batch[i + 1] if i + 1 < len(batch) else None
            item.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
            if session.shouldfail:
                raise session.Failed(session.shouldfail)
            if session.shouldstop:
                raise session.Interrupted(session.shouldstop)
        _emit({"event": "batch_done"})


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    wanted = config.getoption("shoal_select")
    if not wanted:
        return
    order = {}
    for nodeid in wanted:
        order.setdefault(nodeid, len(order))
    keep = [item for item in items if item.nodeid in order]
    drop = [item for item in items if item.nodeid not in order]
    keep.sort(key=lambda item: order[item.nodeid])
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep


def pytest_configure(config):
    global _stream
    if _stream is None:
        _stream = _open_channel()


def pytest_unconfigure(config):
    global _stream
    if _stream is not None:
        try:
            _stream.close()
        except (OSError, ValueError):
            pass
        _stream = None


def pytest_collection_finish(session):
    if _stream is None or not session.config.option.collectonly:
        return
    config = session.config
    invocation_dir = str(config.invocation_params.dir)
    for item in session.items:
        nodeid = item.nodeid
        message = {"event": "collected", "nodeid": nodeid, "file": nodeid.partition("::")[0]}
        try:
            arg = _command_line_arg(config, item, invocation_dir)
        except (OSError, ValueError):
            arg = nodeid
        if arg != nodeid:
            message["arg"] = arg
        _emit(message)
    _emit({"event": "collection_finished", "count": len(session.items)})


def pytest_runtest_logstart(nodeid, location):
    _states[nodeid] = {"outcome": "pass", "duration": 0.0, "message": None}
    _emit({"event": "start", "nodeid": nodeid})


def pytest_runtest_logreport(report):
    state = _states.setdefault(report.nodeid, {"outcome": "pass", "duration": 0.0, "message": None})
    state["duration"] += getattr(report, "duration", 0.0) or 0.0
    try:
        if report.failed:
            if state["outcome"] != "fail":
                state["outcome"] = "fail"
                state["message"] = _failure_message(report)
            output, dropped = _failure_output(report)
            state["output"] = output if not state.get("output") else state["output"] + "\n" + output
            state["output_dropped"] = state.get("output_dropped", 0) + dropped
        elif report.skipped and state["outcome"] == "pass":
            state["outcome"] = "skip"
            state["message"] = _skip_message(report)
    except Exception as error:  # never let reporting break the run
        state["message"] = _short("shoal plugin: could not describe the outcome: {!r}".format(error))


def pytest_runtest_logfinish(nodeid, location):
    state = _states.pop(nodeid, None) or {"outcome": "pass", "duration": 0.0, "message": None}
    _emit(
        {
            "event": "finish",
            "nodeid": nodeid,
            "outcome": state["outcome"],
            "duration": state["duration"],
            "message": state["message"],
            "output": state.get("output"),
            "output_dropped": state.get("output_dropped", 0),
        }
    )
