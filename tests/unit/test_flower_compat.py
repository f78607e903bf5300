"""Every private Flower name fedvida uses still exists and behaves as `flower_compat` assumes.

One test per touch (named after it), so that a Flower upgrade fails here, in one named test,
rather than somewhere in a simulation. The last test scans fedvida/, clients/, server/ and tests/
for private Flower names used anywhere but `fedvida/federation/flower_compat.py` (and this file);
bench/ is scanned too.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import io
import math
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import flwr
import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg, FedProx

from fedvida.federation import flower_compat as fc

ROOT = Path(__file__).resolve().parents[2]
FLWR_DIR = Path(flwr.__file__).parent
ALLOWED = {ROOT / "fedvida/federation/flower_compat.py", Path(__file__).resolve()}


@pytest.fixture(autouse=True)
def _identity() -> None:
    fc.set_task_identity(run_id=7, node_id=0, task_id=1)


def test_flower_is_the_pinned_release() -> None:
    assert flwr.__version__ == fc.FLOWER_VERSION


# --- simulation engine ---------------------------------------------------------------------------
def test_fast_message_pickup_replaces_the_engines_queue_loop_and_restores_it() -> None:
    from flwr.server.superlink.fleet.vce import vce_api
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState

    original = vce_api.add_messages_to_queue
    # the loop's signature, and the engine looks it up by module attribute when it starts
    assert list(inspect.signature(original).parameters) == [
        "state", "queue", "nodes_mapping", "f_stop"]
    assert "target=add_messages_to_queue," in inspect.getsource(vce_api)
    # the in-memory link state's store and delivery call the replacement reads
    assert "self.message_ins_store" in inspect.getsource(InMemoryLinkState.__init__)
    assert {"node_id", "limit"} <= set(inspect.signature(InMemoryLinkState.get_message_ins)
                                       .parameters)
    with fc.fast_message_pickup() as installed:
        assert installed and vce_api.add_messages_to_queue is fc.pick_up_messages
    assert vce_api.add_messages_to_queue is original  # restored
    with pytest.raises(RuntimeError), fc.fast_message_pickup():
        raise RuntimeError("the engine failed")
    assert vce_api.add_messages_to_queue is original  # restored after an error too


def test_replace_dead_actors_targets_the_pools_private_names_and_restores() -> None:
    # the patch wraps one method and relies on two attributes of the pool (one private)
    pool = fc.basic_actor_pool()
    original = pool.fetch_result_and_return_actor_to_pool  # type: ignore[attr-defined]
    source = inspect.getsource(pool)
    assert "self._future_to_actor" in source and "self.create_actor_fn" in source
    assert "add_actor_back_to_pool" in source
    with fc.replace_dead_actors():
        assert pool.fetch_result_and_return_actor_to_pool is not original  # type: ignore[attr-defined]
    assert pool.fetch_result_and_return_actor_to_pool is original  # type: ignore[attr-defined]


# --- strategies ----------------------------------------------------------------------------------
def _instruction(node: int) -> Message:
    return Message(RecordDict(), dst_node_id=node, message_type="train")


def _reply(node: int, metrics: dict[str, float]) -> Message:
    content = RecordDict({"arrays": ArrayRecord({"w": Array(np.full(3, float(node), np.float32))}),
                          "metrics": MetricRecord({"num-examples": 1, **metrics})})
    return Message(content, reply_to=_instruction(node))


def test_fedavg_aggregation_goes_through_the_private_reply_check() -> None:
    # replies whose metric keys differ: Flower's own check refuses them, the hook decides
    replies = [_reply(1, {"a": 1.0}), _reply(2, {"a": 3.0, "b": 2.0})]
    with pytest.raises(Exception, match="same keys"):
        FedAvg().aggregate_train(1, replies)
    seen: list[bool] = []

    class Hooked(fc.ReplyCheckHook, FedAvg):
        def check_replies(self, replies: Iterable[Message], is_train: bool
                          ) -> tuple[list[Message], list[Message]]:
            seen.append(is_train)
            return list(replies)[:1], []

    arrays, _ = Hooked(train_metrics_aggr_fn=lambda recs, key: MetricRecord()).aggregate_train(
        1, replies)
    assert seen == [True]
    assert arrays is not None and arrays["w"].numpy().tolist() == [1.0, 1.0, 1.0]


class _Grid:
    def __init__(self, nodes: list[int]) -> None:
        self.nodes = nodes

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)


@pytest.mark.parametrize("cls", [FedAvg, FedProx])
def test_configure_for_nodes_addresses_exactly_the_given_nodes(cls: type[FedAvg]) -> None:
    strategy = cls(fraction_train=0.3, min_train_nodes=1, min_available_nodes=1)
    grid = _Grid(list(range(100, 110)))
    for wanted in ([103, 107], [109], list(range(100, 110))):
        msgs = fc.configure_for_nodes(
            strategy, lambda view: strategy.configure_train(
                4, ArrayRecord(), ConfigRecord(), view), grid, wanted)  # noqa: B023
        assert sorted(m.metadata.dst_node_id for m in msgs) == wanted
        assert all(m.content.config_records["config"]["server-round"] == 4 for m in msgs)
    assert (strategy.fraction_train, strategy.min_train_nodes,
            strategy.min_available_nodes) == (0.3, 1, 1)  # restored
    if cls is FedProx:
        assert "proximal-mu" in msgs[0].content.config_records["config"]


# --- differential privacy ------------------------------------------------------------------------
def test_adaptive_clipping_overrides_fix_the_direction_of_the_norm_update() -> None:
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideAdaptiveClipping as Flower

    source = inspect.getsource(Flower.aggregate_train)
    assert "self._geometric_update(" in source and "self._add_noise_to_aggregated_arrays(" in source
    fixed_cls, _ = fc.adaptive_clipping_classes()
    kwargs = dict(noise_multiplier=0.0, num_sampled_clients=2, initial_clipping_norm=1.0,
                  target_clipped_quantile=0.5, clip_norm_lr=0.2)
    flower, fixed = Flower(FedAvg(), **kwargs), fixed_cls(FedAvg(), **kwargs)
    flower._geometric_update(0.0)  # nothing clipped: Flower's rule shrinks... the wrong way
    fixed._geometric_update(0.0)
    assert flower.clipping_norm == pytest.approx(math.exp(0.1))
    assert fixed.clipping_norm == pytest.approx(math.exp(-0.1))  # Andrew et al.: it shrinks


def test_add_central_noise_adds_gaussian_noise_of_the_wrappers_std() -> None:
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping

    wrapper = DifferentialPrivacyServerSideFixedClipping(
        FedAvg(), noise_multiplier=2.0, clipping_norm=0.5, num_sampled_clients=4)
    np.random.seed(0)
    out = fc.add_central_noise(wrapper, ArrayRecord({"w": Array(np.zeros(20000, np.float32))}))
    assert float(np.std(out["w"].numpy())) == pytest.approx(2.0 * 0.5 / 4, rel=0.05)


def test_rdp_orders_are_flowers_accountant_orders() -> None:
    from flwr.serverapp import NeighboringRelation, PrivacyConfig, RdpAccountant, SamplingMethod

    orders = fc.rdp_orders(RdpAccountant(PrivacyConfig(
        1e-5, 10, NeighboringRelation.ADD_OR_REMOVE_ONE, SamplingMethod.NO_AMPLIFICATION)))
    assert all(isinstance(a, float) for a in orders)
    integers = [a for a in orders if a.is_integer()]
    assert {2.0, 63.0, 128.0}.issubset(integers) and len(integers) > 60


def test_dp_noise_modules_hold_the_helpers_tests_spy_on() -> None:
    from flwr.serverapp.strategy import (
        DifferentialPrivacyServerSideAdaptiveClipping,
        DifferentialPrivacyServerSideFixedClipping,
    )

    mods = fc.dp_noise_modules()
    assert DifferentialPrivacyServerSideFixedClipping.__module__ == mods["fixed"].__name__
    assert DifferentialPrivacyServerSideAdaptiveClipping.__module__ == mods["adaptive"].__name__
    assert callable(mods["fixed"].compute_stdv)
    assert callable(mods["fixed"].add_gaussian_noise_inplace)
    assert callable(mods["adaptive"].compute_stdv)


def test_clipping_norm_key_is_what_flowers_clipping_mods_read() -> None:
    from flwr.clientapp.mod import fixedclipping_mod

    assert fc.CLIPPING_NORM_KEY == "clipping_norm"
    assert "KEY_CLIPPING_NORM" in inspect.getsource(fixedclipping_mod)


# --- metering ------------------------------------------------------------------------------------
def test_drop_chunk_cache_removes_the_arrays_sliced_chunks() -> None:
    arr = Array(np.arange(100_000, dtype=np.float32))
    oid = arr.object_id
    assert arr.children  # slicing caches the chunks in the instance
    assert "_chunks" in arr.__dict__
    fc.drop_chunk_cache(arr)
    assert "_chunks" not in arr.__dict__
    assert arr.object_id == oid and arr.children  # Flower rebuilds them when needed
    fc.drop_chunk_cache(ConfigRecord())  # objects without the cache are left alone


# --- rounds and test helpers ---------------------------------------------------------------------
def test_in_memory_grid_is_recognised() -> None:
    cls = fc.in_memory_grid_class()
    assert fc.is_in_memory_grid(cls.__new__(cls))
    assert not fc.is_in_memory_grid(_Grid([]))


def test_set_message_id_is_what_the_metadata_reports() -> None:
    msg = _instruction(3)
    fc.set_message_id(msg, "abc")
    assert msg.metadata.message_id == "abc"


def test_task_identity_lets_messages_be_built_outside_flower() -> None:
    from flwr.supercore.task_identity import TaskIdentity

    fc.set_task_identity(run_id=11, node_id=0, task_id=2)
    assert (TaskIdentity.run_id, TaskIdentity.task_id) == (11, 2)
    assert _instruction(5).metadata.run_id == 11


def test_aggregate_arrayrecords_is_the_weighted_mean() -> None:
    recs = [RecordDict({"a": ArrayRecord({"w": Array(np.array([v], np.float64))}),
                        "m": MetricRecord({"n": n})}) for v, n in ((1.0, 1), (4.0, 2))]
    assert fc.aggregate_arrayrecords(recs, "n")["w"].numpy().tolist() == [3.0]


def test_message_objects_round_trip() -> None:
    msg = _reply(4, {"a": 1.0})
    contents = {oid: obj.deflate() for oid, obj in fc.message_objects(msg).items()}
    back = fc.message_from_objects(msg.object_id, contents)
    assert back.content["arrays"]["w"].numpy().tolist() == [4.0, 4.0, 4.0]


def test_parse_config_args_reads_flwr_run_values() -> None:
    from flwr.common.config import parse_config_args

    cli_run = importlib.import_module("flwr.cli.run.run")  # the module, not the command
    assert cli_run.parse_config_args is parse_config_args  # what `flwr run` parses with
    parsed = fc.parse_config_args("num-supernodes=4 backend=\"ray\" x=0.5 y=true "
                                  "p='a b;c=[d]'")
    assert parsed == {"num-supernodes": 4, "backend": "ray", "x": 0.5, "y": True,
                      "p": "a b;c=[d]"}


def test_build_fab_bundles_the_app() -> None:
    with zipfile.ZipFile(io.BytesIO(fc.build_fab(ROOT))) as fab:
        names = fab.namelist()
    assert "pyproject.toml" in names and "server/server_app.py" in names
    assert "clients/client_app.py" in names


# --- SecAgg+ -------------------------------------------------------------------------------------
def test_secagg_constants_and_workflow_state_are_as_secagg_uses_them() -> None:
    from flwr.server.workflow import SecAggPlusWorkflow

    assert list(fc.SecAggStage.all()) == ["setup", "share_keys", "collect_masked_vectors", "unmask"]
    for name in ("PUBLIC_KEY_1", "PUBLIC_KEY_2", "DESTINATION_LIST", "CIPHERTEXT_LIST",
                 "MASKED_PARAMETERS", "NODE_ID_LIST", "SHARE_LIST", "MAX_WEIGHT"):
        assert isinstance(getattr(fc.SecAggKey, name), str)
    assert isinstance(fc.RECORD_KEY_CONFIGS, str) and isinstance(fc.RECORD_KEY_STATE, str)
    state = fc.workflow_state()
    for name in ("active_node_ids", "sampled_node_ids", "nid_to_neighbours", "nid_to_fitins",
                 "num_shares", "threshold"):
        assert hasattr(state, name), name
    for stage in ("setup_stage", "share_keys_stage", "collect_masked_vectors_stage",
                  "unmask_stage"):
        assert list(inspect.signature(getattr(SecAggPlusWorkflow, stage)).parameters) == [
            "self", "grid", "context", "state"]
    with fc.no_object_id_recompute():
        pass


def test_legacy_context_carries_the_round_where_the_workflow_reads_it() -> None:
    from flwr.server import LegacyContext
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key

    strategy = FedAvg()
    context = fc.legacy_context(strategy, 5)
    assert isinstance(context, LegacyContext) and context.strategy is strategy
    assert context.state.config_records[MAIN_CONFIGS_RECORD][Key.CURRENT_ROUND] == 5
    assert len(context.state.array_records[MAIN_PARAMS_RECORD]) == 0
    proxy = fc.grid_client_proxy(42, _Grid([42]))
    assert proxy.node_id == 42 and proxy.cid == "42"


def test_fitres_record_round_trips_a_legacy_fitres() -> None:
    import flwr.compat.common.recorddict_compat as compat
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

    res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([np.arange(3.0)]), 9, {})
    back = compat.recorddict_to_fitres(fc.fitres_record(res, keep_input=True), keep_input=True)
    assert back.num_examples == 9
    assert parameters_to_ndarrays(back.parameters)[0].tolist() == [0.0, 1.0, 2.0]


# --- the boundary --------------------------------------------------------------------------------
def _public_names() -> dict[str, set[str]]:
    out = {}
    for pkg in fc.PUBLIC_PACKAGES:
        module = importlib.import_module(pkg)
        out[pkg] = {*getattr(module, "__all__", ()), *fc.PUBLIC_EXTRA.get(pkg, ())}
    return out


def _class_bases_from_flwr(tree: ast.Module) -> set[str]:
    """Names of classes in ``tree`` that derive (directly, or from such a class) from Flower."""
    flwr_names = {alias.asname or alias.name for node in ast.walk(tree)
                  if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("flwr")
                  for alias in node.names}
    derived: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            bases = {ast.unparse(b).split(".")[0] for b in node.bases}
            if bases & (flwr_names | derived | {"flwr"}):
                derived.add(node.name)
    return derived


def _flower_private_names() -> set[str]:
    """Single-underscore names Flower defines (methods, attributes, module globals)."""
    names: set[str] = set()
    for path in FLWR_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = node.name
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                name = node.attr
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                name = node.id
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                name = node.value  # e.g. __dict__["_message_id"]
            else:
                continue
            if name.startswith("_") and not name.startswith("__") and name.isidentifier() \
                    and len(name) > 1:
                names.add(name)
    return names


def _scanned() -> Iterator[tuple[Path, ast.Module]]:
    for top in ("fedvida", "clients", "server", "tests", "bench"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if path.resolve() not in ALLOWED:
                yield path, ast.parse(path.read_text(encoding="utf-8"))


def _extends_super(node: ast.AST) -> bool:
    """A method that calls ``super().<its own name>``: an override (e.g. in a mixin), not a name
    of fedvida's own."""
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return False
    return any(isinstance(n, ast.Attribute) and n.attr == node.name
               and isinstance(n.value, ast.Call) and ast.unparse(n.value) == "super()"
               for n in ast.walk(node))


def _own_names(trees: list[tuple[Path, ast.Module]]) -> set[str]:
    """Underscore names fedvida defines itself, outside classes that derive from Flower's."""
    own: set[str] = set()
    for _, tree in trees:
        derived = _class_bases_from_flwr(tree)
        flower_bodies = {id(n) for c in ast.walk(tree)
                         if isinstance(c, ast.ClassDef) and c.name in derived
                         for n in ast.walk(c) if n is not c}
        for node in ast.walk(tree):
            if id(node) in flower_bodies or _extends_super(node):
                continue
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                own.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                own.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                own.add(node.id)
            elif isinstance(node, ast.arg):
                own.add(node.arg)
    return own


def private_flower_uses(trees: list[tuple[Path, ast.Module]]) -> list[str]:
    """``file:line: what`` for every use of a private Flower name in ``trees``.

    An import from a module outside `PUBLIC_PACKAGES`, or of a name its package does not list in
    ``__all__``; an attribute path ``flwr.x.y`` through a private module or name; and an
    attribute, override or string spelling a single-underscore name that Flower defines and
    fedvida does not define itself (outside subclasses of Flower's classes).
    """
    public = _public_names()
    private = _flower_private_names() - _own_names(trees)
    found: list[str] = []

    def check_path(dotted: str) -> str:
        parts = dotted.split(".")
        for i in range(len(parts), 0, -1):
            pkg = ".".join(parts[:i])
            if pkg in public:
                rest = parts[i:]
                return "" if not rest or rest[0] in public[pkg] else dotted
        return dotted

    for path, tree in trees:
        where = path.relative_to(ROOT)
        for node in ast.walk(tree):
            line = getattr(node, "lineno", 0)
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "flwr" and alias.name not in public:
                        found.append(f"{where}:{line}: import {alias.name}")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "flwr":
                module = node.module or ""
                for alias in node.names:
                    if module not in public or (alias.name not in public[module]
                                                and f"{module}.{alias.name}" not in public):
                        found.append(f"{where}:{line}: from {module} import {alias.name}")
            elif isinstance(node, ast.Attribute) and ast.unparse(node).startswith("flwr."):
                bad = check_path(ast.unparse(node))
                if bad and isinstance(node.ctx, ast.Load) and "(" not in bad:
                    found.append(f"{where}:{line}: {bad}")
            if isinstance(node, ast.Attribute) and node.attr in private:
                found.append(f"{where}:{line}: .{node.attr}")
            elif isinstance(node, ast.FunctionDef) and node.name in private:
                found.append(f"{where}:{line}: def {node.name}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and node.value in private:
                found.append(f"{where}:{line}: {node.value!r}")
    return sorted(set(found))


def test_no_private_flower_name_outside_flower_compat() -> None:
    trees = list(_scanned())
    assert len(trees) > 50
    found = private_flower_uses(trees)
    assert not found, ("private Flower names outside fedvida/federation/flower_compat.py "
                       "(move the touch there, with a test here):\n" + "\n".join(found))


def test_the_scan_finds_each_kind_of_private_use() -> None:
    # what the scan must catch, from the touches this module took over
    samples = {
        "deep import": "from flwr.superlink.grid import InMemoryGrid\n",
        "module import": "import flwr.serverapp.strategy.dp_fixed_clipping as f\n",
        "unexported name": "from flwr.serverapp.strategy.strategy_utils import sample_nodes\n",
        "private attribute": "def f(a):\n    return a._orders\n",
        "override": ("from flwr.serverapp.strategy import FedAvg\nclass S(FedAvg):\n"
                     "    def _check_and_log_replies(self):\n        pass\n"),
        "mixin override": ("class Fix:\n    def _geometric_update(self, f):\n"
                           "        super()._geometric_update(1 - f)\n"),
        "string": "def f(m):\n    m.__dict__['_message_id'] = 1\n",
        "attribute path": "import flwr\nx = flwr.server.superlink.fleet\n",
    }
    for kind, code in samples.items():
        tree = [(ROOT / "fedvida" / "sample.py", ast.parse(code))]
        assert private_flower_uses(tree), kind
    public = ("from flwr.app import Message\nfrom flwr.serverapp import Grid\n"
              "import flwr.simulation\nfrom flwr.server.workflow import SecAggPlusWorkflow\n"
              "v = flwr.__version__\n")
    assert private_flower_uses([(ROOT / "fedvida" / "ok.py", ast.parse(public))]) == []
