"""Load with Ray (``engine="ray"``): decoding in parallel Ray tasks, embedding in Ray Data
actors, writing from the driver through the local loader's own :class:`~clipsql.ingest.loader.Writer`.

Everything but the decode/embed pipeline is :func:`clipsql.ingest.loader.load` itself: the
walk on the driver, the skip of unchanged files by (path, size, mtime), the walk's failures,
``prune`` and the HNSW index at the end. So the guarantees are the local loader's: one
transaction per batch (binary COPY into the staging table, one upsert by path), failures
recorded with their reasons, and a killed driver or worker resumes by running the same load
again. Ray Data restarts a dead embedding actor and retries its batch (``RETRIES`` times);
the driver drops a path it has already written, so a retried batch is never counted twice.

The file list is split into blocks; ``map_batches`` decodes them in CPU tasks (each file
with :func:`clipsql.ingest.decoder_pool.read_file`, exactly as the local loader: an
image's row or a video's moments, which travel and are written together) and a pool of
``actors`` embedding actors loads the model once each: one GPU per actor where the cluster
has GPUs, otherwise CPU actors sharing the cores with the decoders.

Whoever reaches a Ray process's ports can run code in it (Ray's own authentication is not
relied on): a Ray runtime started here listens on 127.0.0.1 only (every process of it; its
node address is checked after the start), and a cluster is joined only when its address is
given (``"auto"`` included), never because one happens to run on the machine.

Ray is imported here only, lazily: without it ``engine="ray"`` is a :class:`ConfigError`
naming the extra to install.

>>> load(connect, model, ["/photos"], address="auto", actors=4)        # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import pickle
import warnings

import numpy as np

from clipsql import config
from clipsql.errors import ConfigError, ImageError, LoadError
from clipsql.ingest import decode, loader
from clipsql.ingest.decoder_pool import read_file

INSTALL = 'pip install "clipsql[ray]"'
#: Restarts of a dead embedding actor, and retries of a batch it held (Ray Data's default
#: is forever: a model that crashes its process on every batch would never end the load).
RETRIES = 4
#: Files per block handed to one decoding task, at most (in batches of ``batch_size``).
BLOCK_BATCHES = 8
#: ``address`` values: a new runtime on this machine alone; the cluster already running here
#: (``RAY_ADDRESS``, or one started with ``ray start``).
LOCAL, RUNNING = "local", "auto"
#: The only address a local runtime's processes listen on.
LOOPBACK = "127.0.0.1"
#: Ray resolves a loopback node address to the machine's own (then its servers listen on
#: every interface) unless it believes clusters are off, as on macOS and Windows: this
#: variable, read by the processes it starts (and its constant, by this one), says so.
CLUSTERS_OFF = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def import_ray():
    """The ``ray`` module with Ray Data, or a :class:`ConfigError` saying how to install it."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ConfigError(f'engine="ray" needs Ray with Ray Data: {INSTALL} ({exc})') from None
    return ray


def load(connect, model, paths, *, address=None, actors=None, prune=False, force=False,
         batch_size=config.BATCH_SIZE, draft=True, progress=None, steps=None,
         follow_links=False) -> loader.LoadReport:
    """:func:`clipsql.ingest.loader.load` with decoding and embedding on a Ray cluster.

    ``address``: None or ``"local"`` for a new Ray runtime on this machine alone, listening
    on 127.0.0.1 only and stopped at the end (``RAY_ADDRESS`` is ignored); ``"auto"`` joins
    the cluster running on this machine or named by ``RAY_ADDRESS`` (a :class:`ConfigError`
    if there is none); any other value is a cluster's address for ``ray.init``. A Ray
    runtime this process already started is used as it is. ``actors``: embedding actors
    (default: one per GPU, else half the cluster's CPUs).
    """
    ray = import_ray()
    if actors is not None and actors < 1:
        raise ConfigError(f"actors must be at least 1, not {actors}")

    def pipeline(connect, model, todo, report, progress, places=None):
        with _runtime(ray, address):
            _run(ray, connect, model, todo, report, batch_size, actors, draft, progress,
                 places)

    return loader.load(connect, model, paths, prune=prune, force=force, batch_size=batch_size,
                       draft=draft, progress=progress, pipeline=pipeline, steps=steps,
                       follow_links=follow_links)


@contextlib.contextmanager
def _runtime(ray, address):
    """The Ray runtime to use; one started here is shut down afterwards."""
    if ray.is_initialized():
        yield
        return
    options = {"include_dashboard": False, "log_to_driver": False,
               "logging_level": logging.ERROR}
    try:
        with quiet_ray():
            if address is None or address == LOCAL:
                with loopback_only(ray):
                    ray.init(address=LOCAL, _node_ip_address=LOOPBACK,
                             dashboard_host=LOOPBACK, **options)
            else:
                ray.init(address=address, **options)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        where = {None: "a local one", LOCAL: "a local one",
                 RUNNING: "the one running on this machine or named by RAY_ADDRESS"}
        raise ConfigError(f"cannot start or reach the Ray cluster "
                          f"({where.get(address, address)}): {first}") from None
    try:
        if address is None or address == LOCAL:
            _check_loopback(ray)
        yield
    finally:
        ray.shutdown()


#: Ray's own log output that reaches the terminal otherwise: its C++ core worker's warnings
#: (``core_worker.cc: Actor with class name ... max_restarts > 0``; read from the environment
#: when the driver's core worker starts) and its Python loggers' notes (token authentication
#: enabled). Errors still show; clipsql's own steps and errors say what happens.
RAY_LOG_ENV = {"RAY_BACKEND_LOG_LEVEL": "error"}
RAY_LOGGERS = ("ray", "ray._private", "ray._private.authentication", "ray.data")


@contextlib.contextmanager
def quiet_ray():
    """Ray's own warnings kept off the terminal while its runtime starts (see
    :data:`RAY_LOG_ENV`); a setting the user made in the environment wins."""
    saved = {k: os.environ.get(k) for k in RAY_LOG_ENV}
    for key, value in RAY_LOG_ENV.items():
        os.environ.setdefault(key, value)
    for name in RAY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)


@contextlib.contextmanager
def loopback_only(ray):
    """Ray told that clusters are off, meanwhile: a runtime started in the block keeps the
    node address 127.0.0.1 (give it ``_node_ip_address=LOOPBACK``), so it listens there."""
    from ray._private import ray_constants

    saved_env, saved = os.environ.get(CLUSTERS_OFF), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[CLUSTERS_OFF] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved
        if saved_env is None:
            os.environ.pop(CLUSTERS_OFF, None)
        else:
            os.environ[CLUSTERS_OFF] = saved_env


def _check_loopback(ray) -> None:
    """Refuse a local runtime whose node address is not loopback (its servers would listen
    there: a Ray version that ignores :data:`CLUSTERS_OFF`)."""
    node = ray.util.get_node_ip_address()
    if node != LOOPBACK:
        raise ConfigError(f"the local Ray runtime took the address {node}, not {LOOPBACK}: "
                          "refusing to run it where the network could reach it")


def _plan(ray, actors):
    """(actors, actor resources, decoder CPUs, device) for the cluster's resources."""
    resources = ray.cluster_resources()
    cpus, gpus = float(resources.get("CPU", 1)), int(resources.get("GPU", 0))
    if gpus:
        actors = actors or gpus
        return actors, {"num_gpus": min(1.0, gpus / actors), "num_cpus": 1}, 1, "cuda"
    actors = actors or max(1, int(cpus) // 2)
    share = cpus / (actors + 1)  # the decoders get one share: never starved by the actors
    return actors, {"num_cpus": share}, min(1.0, share), "cpu"


def _actor_precision(model, device):
    """The precision asked for, where the actors' device takes it (else the default)."""
    asked = model.requested_precision
    if (asked == "fp16" and device == "cpu") or (asked == "int8" and device != "cpu"):
        return None
    return asked


def _run(ray, connect, model, todo, report, batch_size, actors, draft, progress, places=None):
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    preprocess = model.preprocess
    draft_size = decode.draft_size(model.image_size) if draft else None
    actors, actor_resources, decode_cpus, device = _plan(ray, actors)
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    block = max(1, min(batch_size * BLOCK_BATCHES, math.ceil(len(todo) / (2 * cpus))))
    ds = ray.data.from_items([{"path": p} for p in todo],
                             override_num_blocks=math.ceil(len(todo) / block))
    ds = ds.map_batches(_decode_batch, batch_size=batch_size, batch_format="numpy",
                        fn_kwargs={"preprocess": preprocess, "draft_size": draft_size,
                                   "places": places},
                        num_cpus=decode_cpus)
    threads = max(1, int(actor_resources["num_cpus"])) if device == "cpu" else None
    with warnings.catch_warnings():  # Ray 2.60 deprecates passing actor options this way
        warnings.simplefilter("ignore", DeprecationWarning)
        ds = ds.map_batches(_Embedder, batch_size=batch_size, batch_format="numpy",
                            fn_constructor_kwargs={"spec": model.spec, "device": device,
                                                   "precision": _actor_precision(model, device),
                                                   "threads": threads},
                            compute=ray.data.ActorPoolStrategy(size=actors),
                            max_restarts=RETRIES, max_task_retries=RETRIES, **actor_resources)
    writer = loader.Writer(connect, report)
    writer.start()
    seen: set = set()
    done = 0
    try:
        for batch in _batches(ray, ds, batch_size):
            rows, failed = {}, {}
            for path, ok, record in zip(batch["path"], batch["ok"], batch["record"]):
                path = str(path)
                if path in seen:
                    continue  # a retried block: written already
                seen.add(path)
                if ok:
                    rows[path] = pickle.loads(record)  # a video's moments stay together
                else:
                    failed[path] = (path, *pickle.loads(record))
            if rows or failed:
                writer.put([d for file_rows in rows.values() for d in file_rows],
                           list(failed.values()))
                done += len(rows) + len(failed)
                if progress:
                    progress(done, len(todo))
            writer.check()
    finally:
        writer.close()


def _batches(ray, ds, batch_size):
    """The dataset's output batches; a failure of the cluster becomes one :class:`LoadError`."""
    try:
        yield from ds.iter_batches(batch_size=batch_size, batch_format="numpy")
    except (ray.exceptions.RayError, RuntimeError) as exc:
        text = str(exc).strip().splitlines()
        raise LoadError(f"the Ray load failed ({text[-1] if text else type(exc).__name__}); "
                        "batches written so far are kept, run the same load again to resume"
                        ) from exc


def _decode_batch(batch, preprocess, draft_size, places=None):
    """Decode one batch of paths (a Ray task): per file, its pickled rows (Decoded, one or
    a video's moments) without pixels and their pixels apart, stacked, or a pickled
    (reason, detail) for a file that failed; files opened outside ``places`` fail
    (:mod:`clipsql.ingest.confine`)."""
    import sys

    if "torch" in sys.modules:  # a torchvision transform (a numpy one needs no torch)
        sys.modules["torch"].set_num_threads(1)
    paths = [str(p) for p in batch["path"]]
    ok, records, pixels = [], [], []
    for path in paths:
        try:
            rows = read_file(path, preprocess, draft_size, places=places)
        except ImageError as exc:
            ok.append(False)
            records.append(pickle.dumps((exc.reason, exc.detail)))
            pixels.append(b"")
            continue
        ok.append(True)
        pixels.append(pickle.dumps(np.stack([np.asarray(d.pixels) for d in rows])))
        for d in rows:
            d.pixels = None
        records.append(pickle.dumps(rows))
    return {"path": np.array(paths, dtype=object), "ok": np.array(ok, dtype=bool),
            "record": np.array(records, dtype=object), "pixels": np.array(pixels, dtype=object)}


class _Embedder:
    """A Ray Data actor: the model, loaded once, embeds the decoded files of each batch."""

    def __init__(self, spec, device, precision, threads):
        from clipsql.models import runtime
        from clipsql.models.openclip import ClipModel

        if threads:  # this actor's share of the node's cores, not all of them
            runtime.limit_threads(threads)
        # the same rule as the driver's, on the export the driver made: prepared now, not
        # on the first batch
        self.model = ClipModel(spec, device=device, precision=precision).prepare()

    def __call__(self, batch):
        records = list(batch["record"])
        good = np.flatnonzero(batch["ok"])
        if len(good):
            stacks = [pickle.loads(batch["pixels"][i]) for i in good]
            vectors = iter(self.model.encode_images(np.concatenate(stacks)))
            for i in good:  # a file's rows: one image, or a video's moments
                rows = pickle.loads(records[i])
                for decoded in rows:
                    decoded.embedding = np.array(next(vectors), dtype=np.float32)
                records[i] = pickle.dumps(rows)
        return {"path": batch["path"], "ok": batch["ok"],
                "record": np.array(records, dtype=object)}
