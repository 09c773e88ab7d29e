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

pytest-xdist drop-in: shoal runs several pytest processes ("slots") side by
side in one directory, so a suite that keeps its databases and files apart
per xdist worker must see a worker identity in each of them. shoal sets, for
a process that runs tests, the variables xdist sets in its workers:
``PYTEST_XDIST_WORKER=gwS``, ``PYTEST_XDIST_WORKER_COUNT=N``,
``PYTEST_XDIST_TESTRUNUID`` (one per run). When ``PYTEST_XDIST_WORKER`` is
set and the run is not ``--collect-only``, this plugin makes the process look
like an xdist worker, in-process:

* ``config.workerinput`` = ``{"workerid", "workercount", "testrunuid",
  "mainargv"}`` as xdist's controller fills it (``WorkerController``), plus
  what ``pytest_configure_node`` implementations add; ``config.workeroutput``
  = ``{}``, given ``exitstatus``, ``shouldfail`` and ``shouldstop`` at
  session end as in a worker. The three variables stay in ``os.environ``
  (filled in if only ``PYTEST_XDIST_WORKER`` was given).
* xdist's controller hooks run in this process for an emulated node
  (``workerinput``, ``config``, ``gateway.id``, ``nodemanager.roots``):
  ``pytest_configure_node(node)`` before any plugin's ``pytest_configure``
  for the plugins and initial conftests registered by then (xdist's
  controller collects nothing either), and for an implementation registered
  later only when a key missing from ``workerinput`` is looked up;
  ``pytest_testnodedown(node, error=None)`` after ``pytest_sessionfinish``.
  ``_emulate_worker`` gives the order and how it differs from xdist's.
* The ``worker_id`` and ``testrun_uid`` fixtures return ``gwS`` and the run
  uid: xdist's own read ``workerinput``; without xdist this plugin provides
  them (session scoped, as xdist's).
* An explicit ``--basetemp=DIR`` becomes ``DIR/popen-gwS``, as in xdist's
  workers, so slots do not wipe each other's temporary directory.
* pytest-cov, pytest-randomly and pytest-rerunfailures read in a worker what
  their controller side would have sent; shoal supplies it (see
  ``_controller_state``). pytest-cov's controller hooks are not called.
* pytest writes no ``--junitxml`` report in an xdist worker; here it does,
  as shoal asks for one in per-batch processes.
* In serve mode, Django's test database names (which pytest-django suffixes
  with the worker id in a session fixture, once per batch here) are put back
  after each batch.

Always (discovery too): xdist's distribution options are neutralised as in
its workers (``-n``/``--numprocesses``, ``--dist``, ``-d``, ``--tx``,
``--maxprocesses``, ``-f``), so an ``addopts`` with ``-n 4`` neither starts
workers of its own nor loops on failure. Not emulated: ``--dist
loadscope``/``loadfile``/``loadgroup`` grouping (shoal batches by its own
rules; ``xdist_group`` marks are ignored and node ids never get xdist's
``@group`` suffix), worker restarts, ``pytest_handlecrashitem``, any
controller hook other than the two above, and the controller itself: set-up
a suite does only where ``workerinput`` is absent runs nowhere.
"""

import json
import os
import socket
import sys
import types
import uuid
import zlib

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
    restore_test_databases = _test_database_names()
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
        if restore_test_databases is not None:
            restore_test_databases()
        _emit({"event": "batch_done"})


def _test_database_names():
    """A function that puts the test database names in Django's settings
    back as they are now, or None without a configured Django.

    pytest-django's session fixtures append the xdist worker id (and tox's
    environment) to each database's TEST NAME, again each time they run, and
    a served batch ends with every fixture torn down: without this the second
    batch would use test_db_gw0_gw0, the third test_db_gw0_gw0_gw0, ...
    """
    conf = sys.modules.get("django.conf")
    try:
        if conf is None or not conf.settings.configured:
            return None
        saved = [
            (db, "NAME" in db.get("TEST", {}), db.get("TEST", {}).get("NAME"))
            for db in conf.settings.DATABASES.values()
        ]
    except Exception:  # an unusable settings module is pytest-django's to report
        return None

    def restore():
        for db, had_name, name in saved:
            test = db.get("TEST")
            if test is None:
                continue
            if had_name:
                test["NAME"] = name
            else:
                test.pop("NAME", None)

    return restore


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


# -- pytest-xdist worker emulation (see the module docstring) ---------------

# The options xdist starts its workers with (xdist.remote.setup_config): no
# distribution and no looponfail of their own.
_NO_DISTRIBUTION = (
    ("dist", "no"),
    ("distload", False),
    ("numprocesses", None),
    ("maxprocesses", None),
    ("tx", []),
    ("looponfail", False),
)
# Plugins whose controller hooks cannot run in a worker process (they expect
# the controller's state); _controller_state supplies what their worker side
# reads instead. "_cov" is pytest-cov's plugin object.
_CONTROLLER_ONLY_PLUGINS = ("_cov",)

# The emulated node, from pytest_configure_node until pytest_testnodedown.
_node = None
# Objects standing in for a controller side (kept alive for the session).
_controller_objects = []


class _EmulatedNode:
    """What pytest_configure_node and pytest_testnodedown implementations use
    of xdist's WorkerController (xdist/workermanage.py)."""

    def __init__(self, config, workerinput):
        workerid = workerinput["workerid"]
        spec = types.SimpleNamespace(id=workerid, popen=True, chdir=None, via=None, python=None)
        self.config = config
        self.workerinput = workerinput
        self.gateway = types.SimpleNamespace(id=workerid, spec=spec, _rinfo=_remote_info)
        self.nodemanager = types.SimpleNamespace(
            config=config, roots=[], specs=[spec], testrunuid=workerinput["testrunuid"]
        )
        self.shutting_down = False
        # Plugins whose pytest_configure_node was called (see _configure_node).
        self.configured_plugins = []

    def __repr__(self):
        return "<WorkerController {} (shoal)>".format(self.gateway.id)


def _remote_info():
    """What execnet's gateway._rinfo() tells of the worker: this process."""
    import platform

    return types.SimpleNamespace(
        executable=sys.executable,
        version_info=tuple(sys.version_info),
        platform=platform.platform(),
        cwd=os.getcwd(),
        pid=os.getpid(),
    )


def _neutralise_distribution(option):
    for name, value in _NO_DISTRIBUTION:
        if hasattr(option, name):
            setattr(option, name, list(value) if isinstance(value, list) else value)


def _worker_input(config):
    """workerinput as xdist's controller fills it, from shoal's variables."""
    workerid = os.environ["PYTEST_XDIST_WORKER"]
    try:
        count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", ""))
    except ValueError:
        count = 1
    uid = (
        os.environ.get("PYTEST_XDIST_TESTRUNUID")
        or getattr(config.option, "testrunuid", None)
        or uuid.uuid4().hex
    )
    # As in xdist's workers (xdist/remote.py), for the processes tests start.
    os.environ["PYTEST_XDIST_WORKER_COUNT"] = str(count)
    os.environ["PYTEST_XDIST_TESTRUNUID"] = uid
    return {"workerid": workerid, "workercount": count, "testrunuid": uid, "mainargv": list(sys.argv)}


def _controller_state(config, workerinput):
    """What known plugins' worker sides read from workerinput, which their
    controller side (registered or resolved in its pytest_configure, too late
    to be called here) would have put there."""
    plugins = config.pluginmanager
    cov = plugins.get_plugin("_cov")
    if cov is not None:
        # pytest-cov: its worker side, "collocated" with the controller (same
        # host and directory), saves its own data file
        # (.coverage.<host>.<pid>.<random>) for `coverage combine`, and
        # reports nothing.
        topdir = getattr(getattr(cov, "cov_controller", None), "topdir", None)
        workerinput.setdefault("cov_master_host", socket.gethostname())
        workerinput.setdefault("cov_master_topdir", topdir or os.getcwd())
        workerinput.setdefault("cov_master_rsync_roots", [])
    if plugins.get_plugin("randomly") is not None and "randomly_seed" not in workerinput:
        # pytest-randomly: the seed its controller resolved, the same in every
        # worker: the one given, else one derived from the run uid.
        seed = getattr(config.option, "randomly_seed", None)
        if not isinstance(seed, int):
            seed = zlib.crc32(workerinput["testrunuid"].encode("utf-8"))
        workerinput["randomly_seed"] = seed
    rerun = plugins.get_plugin("rerunfailures")
    if (
        rerun is not None
        and plugins.get_plugin("xdist") is not None
        and getattr(rerun, "HAS_PYTEST_HANDLECRASHITEM", True)
        and "sock_port" not in workerinput
        and hasattr(rerun, "ServerStatusDB")
    ):
        # pytest-rerunfailures: its worker side connects to the controller's
        # status server; this process runs one.
        try:
            server = rerun.ServerStatusDB()
        except OSError:
            return
        _controller_objects.append(server)
        try:
            # Its thread starts listening later; connecting right away (this
            # process's pytest_configure) must not be refused.
            server.sock.listen()
        except (AttributeError, OSError):
            pass
        workerinput["sock_port"] = server.sock_port
        if hasattr(server, "token"):
            workerinput["statusdb_token"] = server.token


def _controller_only_plugins(config):
    plugins = (config.pluginmanager.get_plugin(name) for name in _CONTROLLER_ONLY_PLUGINS)
    return [plugin for plugin in plugins if plugin is not None]


def _configure_node(config, node):
    """Calls pytest_configure_node(node) on the implementations not called
    yet; whether there were any."""
    hook = getattr(config.hook, "pytest_configure_node", None)
    if hook is None:
        return False
    skip = _controller_only_plugins(config)
    new = [
        impl.plugin
        for impl in hook.get_hookimpls()
        if impl.plugin not in skip and impl.plugin not in node.configured_plugins
    ]
    if not new:
        return False
    skip = skip + node.configured_plugins
    node.configured_plugins.extend(new)  # first: the call may look up a missing key
    if skip:
        hook = config.pluginmanager.subset_hook_caller("pytest_configure_node", remove_plugins=skip)
    hook(node=node)
    return True


class _WorkerInput(dict):
    """config.workerinput. A missing key is looked for, once, among the
    pytest_configure_node implementations registered since the last call:
    plugins such as SQLAlchemy's testing plugin (2.1) register theirs in
    their pytest_configure and read what it put there right after."""

    def __missing__(self, key):
        node = _node
        if node is not None and node.workerinput is self and _configure_node(node.config, node):
            if dict.__contains__(self, key):
                return dict.__getitem__(self, key)
        raise KeyError(
            "{!r} (not in this pytest-xdist workerinput, which shoal emulates for worker {}: "
            "no pytest_configure_node implementation put it there; is pytest-xdist installed?)".format(
                key, dict.get(self, "workerid")
            )
        )


def _emulate_worker(config):
    """Makes this process a pytest-xdist worker as far as plugins can tell.

    The order in xdist: (1) the controller runs its pytest_configure; (2) at
    its session start it calls pytest_configure_node(node) for each worker
    and sends node.workerinput over; (3) the worker sets config.workerinput
    and config.workeroutput, then calls pytest_cmdline_main, so its
    pytest_configure and its session see them; (4) once the worker's
    pytest_sessionfinish is over, the controller calls
    pytest_testnodedown(node, error), error None unless the worker crashed.

    The approximation here, in one process, at the start of
    pytest_cmdline_main (before every other plugin's pytest_cmdline_main and
    pytest_configure): (1) does not happen; (2) runs in this process for the
    implementations registered by then (plugins and initial conftests), with
    every plugin still unconfigured: an implementation sees the parsed
    options but no state its plugin sets up in pytest_configure or
    pytest_sessionstart (a database the controller would create from its
    configured state, for one, is not created); (3) follows as in a worker,
    except that an implementation registered later (in a pytest_configure)
    is called when a key missing from workerinput is looked up (see
    _WorkerInput), from within that lookup; (4) runs right after this
    process's pytest_sessionfinish, for every implementation registered by
    then, with error None (or, if the session never finished, from
    pytest_unconfigure with an error); a process that dies calls nothing.
    """
    global _node
    workerinput = _WorkerInput(_worker_input(config))
    basetemp = getattr(config.option, "basetemp", None)
    if basetemp:
        # xdist's workers use <the controller's basetemp>/popen-gwN.
        try:
            os.makedirs(str(basetemp), exist_ok=True)
        except OSError:
            pass
        config.option.basetemp = os.path.join(str(basetemp), "popen-" + workerinput["workerid"])
    config.workerinput = workerinput
    config.workeroutput = {}
    _controller_state(config, workerinput)
    _node = _EmulatedNode(config, workerinput)
    _configure_node(config, _node)


def _take_node_down(config, error=None):
    global _node
    node, _node = _node, None
    if node is None:
        return
    node.workeroutput = getattr(config, "workeroutput", {})
    hook = getattr(config.hook, "pytest_testnodedown", None)
    if hook is None or not hook.get_hookimpls():
        return
    skip = _controller_only_plugins(config)
    if skip:
        hook = config.pluginmanager.subset_hook_caller("pytest_testnodedown", remove_plugins=skip)
    hook(node=node, error=error)


def _xdist_fixtures():
    """xdist's worker_id and testrun_uid fixtures, for when it is not loaded."""
    module = types.ModuleType("shoal_pytest_plugin_xdist_fixtures")

    @pytest.fixture(scope="session")
    def worker_id(request):
        """The xdist worker id shoal gives this slot: gw0, gw1, ..."""
        return request.config.workerinput["workerid"]

    @pytest.fixture(scope="session")
    def testrun_uid(request):
        """An id shared by every slot of the run."""
        return request.config.workerinput["testrunuid"]

    module.worker_id = worker_id
    module.testrun_uid = testrun_uid
    return module


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_cmdline_main(config):
    # Before any pytest_cmdline_main implementation (xdist's decides on
    # distribution there), as xdist sets its worker's options and workerinput
    # before calling the hook.
    _neutralise_distribution(config.option)
    if (
        os.environ.get("PYTEST_XDIST_WORKER")
        and not config.option.collectonly
        and not hasattr(config, "workerinput")
    ):
        _emulate_worker(config)
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_sessionfinish(session, exitstatus):
    output = getattr(session.config, "workeroutput", None) if _node is not None else None
    if output is not None:
        # As xdist's worker does (xdist/remote.py), before the other plugins.
        output["exitstatus"] = int(exitstatus)
        output["shouldfail"] = session.shouldfail
        output["shouldstop"] = session.shouldstop
    yield
    _take_node_down(session.config)


def pytest_configure(config):
    global _stream
    if _stream is None:
        _stream = _open_channel()
    if _node is not None and config.pluginmanager.get_plugin("xdist") is None:
        config.pluginmanager.register(_xdist_fixtures(), "shoal-xdist-fixtures")
    junitxml = config.pluginmanager.get_plugin("junitxml")
    if _node is not None and junitxml is not None and getattr(config.option, "xmlpath", None):
        # pytest writes no JUnit report in an xdist worker (its controller
        # does); a per-batch process must write the one shoal asks for. Run
        # before junitxml's own pytest_configure, which then skips.
        junitxml.pytest_configure(_NotAWorker(config))


class _NotAWorker:
    """The config, as seen by a plugin that must not know it is a worker."""

    def __init__(self, config):
        self.__dict__["_config"] = config

    def __getattr__(self, name):
        if name in ("workerinput", "workeroutput"):
            raise AttributeError(name)
        return getattr(self._config, name)

    def __setattr__(self, name, value):
        setattr(self._config, name, value)


def pytest_unconfigure(config):
    global _stream
    _take_node_down(config, error="shoal: the session did not finish")
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
