"""Every use of a private Flower 1.39 name in fedvida, in one module.

fedvida pins ``flwr==1.39.0``. Where Flower's public API does not reach, fedvida leans on
Flower internals; each such touch lives here, with the assumption it makes, and
``tests/unit/test_flower_compat.py`` has one named test per touch that fails when an upgrade
breaks the assumption. ``test_no_private_flower_name_outside_flower_compat`` scans fedvida/,
clients/, server/ and tests/ so that no other module reaches into Flower.

**What "private" means here.** Flower's public API is the names listed in ``__all__`` of the
packages in `PUBLIC_PACKAGES` (``flwr.app``, ``flwr.clientapp``, ``flwr.serverapp``,
``flwr.simulation``, the legacy ``flwr.client`` / ``flwr.common`` / ``flwr.server`` packages, ...)
plus ``flwr.__version__``. Everything else is private: a module path below those packages that
they do not export (``flwr.superlink.grid``, ``flwr.supercore.*``,
``flwr.server.compat.legacy_context``, ``flwr.serverapp.strategy.dp_fixed_clipping``, ...), any
name with a leading underscore that Flower defines (``FedAvg._check_and_log_replies``,
``Array._chunks``, ``Metadata._message_id``), overriding such a method, and spelling such a name
as a string (``obj.__dict__["_chunks"]``).

The touches, and what uses them:

* simulation engine (`fedvida.federation.runner`): `fast_message_pickup` (replaces
  ``vce_api.add_messages_to_queue``), `replace_dead_actors` (wraps
  ``BasicActorPool.fetch_result_and_return_actor_to_pool``); both context managers that restore
  what they replaced;
* strategies (`fedvida.federation.strategy`): `ReplyCheckHook` (routes FedAvg's private
  ``_check_and_log_replies`` to a public ``check_replies``), `configure_for_nodes` (steers
  ``configure_train`` / ``configure_evaluate`` to a given node list through a grid view);
* DP (`fedvida.federation.privacy`): `adaptive_clipping_classes` (overrides of the adaptive
  wrappers' ``_geometric_update`` / ``_add_noise_to_aggregated_arrays``), `add_central_noise`,
  `rdp_orders`;
* metering (`fedvida.federation.metering`): `drop_chunk_cache` (``Array._chunks``);
* SecAgg+ (`fedvida.federation.secagg`): the protocol constants, `WorkflowState`,
  `grid_client_proxy`, `legacy_context` (the synthetic ``LegacyContext`` the workflow runs
  in), `fitres_record`, `no_object_id_recompute`;
* compression (`fedvida.federation.compression`): `CLIPPING_NORM_KEY`, the config key of
  Flower's client-side clipping mods;
* rounds (`fedvida.federation.rounds`): `is_in_memory_grid`;
* tests: `set_message_id`, `set_task_identity`, `InMemoryGrid`, `aggregate_arrayrecords`,
  `build_fab`, `parse_config_args`, `message_objects`, `message_from_objects`, `dp_noise_modules`,
  `BasicActorPool`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast

import flwr
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common.secure_aggregation import secaggplus_constants
from flwr.serverapp import Grid
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM
from flwr.supercore.inflatable import inflatable_object

if TYPE_CHECKING:
    from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState

FLOWER_VERSION = "1.39.0"  # the release every assumption below was checked against

# Flower's public packages: what they list in ``__all__`` is public API (``flwr`` itself also
# exports ``simulation`` lazily and ``__version__``). Used by the private-name scan.
PUBLIC_PACKAGES = (
    "flwr", "flwr.app", "flwr.clientapp", "flwr.clientapp.mod", "flwr.serverapp",
    "flwr.serverapp.strategy", "flwr.simulation", "flwr.client", "flwr.client.mod",
    "flwr.common", "flwr.server", "flwr.server.strategy", "flwr.server.workflow",
)
PUBLIC_EXTRA = {"flwr": ("simulation", "__version__")}

# --- SecAgg+: the protocol's record keys and stage names (flwr.common.secure_aggregation), and
# the context manager under which Flower does not recompute a message's object ids
RECORD_KEY_CONFIGS: str = secaggplus_constants.RECORD_KEY_CONFIGS
RECORD_KEY_STATE: str = secaggplus_constants.RECORD_KEY_STATE
SecAggKey = secaggplus_constants.Key
SecAggStage = secaggplus_constants.Stage
no_object_id_recompute = inflatable_object.no_object_id_recompute

# --- compression: the key Flower's client-side clipping mods read ------------------------------
CLIPPING_NORM_KEY: str = KEY_CLIPPING_NORM  # "clipping_norm" (flwr.supercore.differential_privacy)


# --- simulation engine -------------------------------------------------------------------------
PICKUP_SECONDS = 0.01  # how soon the simulation engine notices a pushed message


def pick_up_messages(state: Any, queue: Any, nodes_mapping: Any, f_stop: Any) -> None:
    """fedvida's replacement of Flower 1.39's ``vce_api.add_messages_to_queue``.

    Flower's loop asks the link state for every node's next message (``get_message_ins``, which
    scans every stored message and checks each one's federation) once per 0.1 s: a round starts
    up to 0.1 s after the server pushed it, and with 1000 virtual nodes the driver spends its
    time scanning for nodes that have nothing. This loop first looks at the stored messages
    (``state.message_ins_store``: one pass over a small dict) and asks only for the nodes that
    have an undelivered one, in Flower's node order, every `PICKUP_SECONDS`. Delivery itself is
    Flower's (``get_message_ins`` marks the message delivered and drops expired ones). A state
    without ``message_ins_store`` (not the in-memory one) falls back to asking every node, like
    Flower. Arguments are Flower's (link state, message queue, ``node_id -> partition``, stop
    event).
    """
    store = getattr(state, "message_ins_store", None)
    while not f_stop.is_set():
        if store is None:
            targets = list(nodes_mapping.keys())
        else:
            pending = {m.metadata.dst_node_id for m in list(store.values())
                       if not m.metadata.delivered_at}
            targets = [n for n in nodes_mapping if n in pending] if pending else []
        for node_id in targets:
            for msg in state.get_message_ins(node_id=node_id, limit=1):
                queue.put(msg)
        f_stop.wait(PICKUP_SECONDS)


@contextlib.contextmanager
def fast_message_pickup() -> Iterator[bool]:
    """Use `pick_up_messages` in Flower's simulation engine while the block runs.

    Replaces ``flwr.server.superlink.fleet.vce.vce_api.add_messages_to_queue`` (the engine looks
    it up by module attribute when it starts its threads) and puts Flower's back on exit.
    Yields whether it was installed: only on the pinned flwr (`FLOWER_VERSION`), else the block
    runs with Flower's loop.
    """
    from flwr.server.superlink.fleet.vce import vce_api

    if flwr.__version__ != FLOWER_VERSION or not hasattr(vce_api, "add_messages_to_queue"):
        yield False
        return
    original = vce_api.add_messages_to_queue
    vce_api.add_messages_to_queue = pick_up_messages
    try:
        yield True
    finally:
        vce_api.add_messages_to_queue = original


@contextlib.contextmanager
def replace_dead_actors() -> Iterator[None]:
    """Patch Flower 1.39's Ray actor pool so that a dead actor is replaced, not reused.

    ``BasicActorPool.fetch_result_and_return_actor_to_pool`` (``flwr.simulation.ray_transport
    .ray_actor``) gets a result with ``ray.get``; when the actor died (OOM kill, segfault)
    ``ray.get`` raises ``ActorDiedError`` and ``RayBackend.process_message`` puts the *dead*
    actor back into the pool (``add_actor_back_to_pool``): every later message given to it
    fails, and with it every later round. Here the dead actor's entry in the pool's private
    ``_future_to_actor`` is swapped for a fresh actor (``create_actor_fn``, the pool's own
    factory, same resources) before the error propagates, so Flower returns the fresh one: only
    the message that was on the dead actor fails (the round goes on with the other clients).
    Everything else is Flower's; the original method is restored on exit.
    """
    import ray
    from flwr.simulation.ray_transport.ray_actor import BasicActorPool

    original = BasicActorPool.fetch_result_and_return_actor_to_pool

    def fetch(self: Any, future: Any) -> Any:
        try:
            return original(self, future)
        except ray.exceptions.ActorDiedError:
            dead = self._future_to_actor.get(future)
            if dead is not None:
                with contextlib.suppress(Exception):
                    ray.kill(dead)
                self._future_to_actor[future] = self.create_actor_fn()
                logging.getLogger("fedvida.runner").warning(
                    "a Ray client actor died; replaced by a fresh one (its message failed)")
            raise

    BasicActorPool.fetch_result_and_return_actor_to_pool = fetch  # type: ignore[method-assign]
    try:
        yield
    finally:
        BasicActorPool.fetch_result_and_return_actor_to_pool = original  # type: ignore[method-assign]


def basic_actor_pool() -> type:
    """Flower's ``BasicActorPool`` class (for the tests of `replace_dead_actors`)."""
    from flwr.simulation.ray_transport.ray_actor import BasicActorPool

    return BasicActorPool


# --- strategies --------------------------------------------------------------------------------
class ReplyCheckHook:
    """Mixin (before Flower's strategy class) that routes FedAvg's reply check to ``check_replies``.

    Flower 1.39's ``FedAvg.aggregate_train`` / ``aggregate_evaluate`` first call the private
    ``self._check_and_log_replies(replies, is_train, validate=True)``, which returns
    ``(valid, errors)`` and raises when replies' metric keys differ (fedvida's clients may report
    different keys). The class that mixes this in implements the public-named
    ``check_replies(replies, is_train) -> (valid, errors)`` instead.
    """

    def check_replies(
        self, replies: Iterable[Message], is_train: bool
    ) -> tuple[list[Message], list[Message]]:
        raise NotImplementedError

    def _check_and_log_replies(
        self, replies: Iterable[Message], is_train: bool, validate: bool = True
    ) -> tuple[list[Message], list[Message]]:
        return self.check_replies(replies, is_train)


class _NodesView:
    """A grid view that offers exactly the given nodes to Flower's ``configure_*``."""

    def __init__(self, grid: Grid, node_ids: list[int]) -> None:
        self.grid = grid
        self.node_ids = node_ids

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.grid, name)


_SAMPLING_FIELDS = ("fraction_train", "fraction_evaluate", "min_train_nodes",
                    "min_evaluate_nodes", "min_available_nodes")


def configure_for_nodes(
    strategy: Any, configure: Callable[[Grid], Iterable[Message]], grid: Grid,
    node_ids: list[int],
) -> list[Message]:
    """Call Flower's ``configure_train`` / ``configure_evaluate`` so that it addresses ``node_ids``.

    Flower 1.39's FedAvg samples ``max(int(len(grid.get_node_ids()) * fraction), min_nodes)``
    nodes at random (``strategy_utils.sample_nodes``) inside ``configure_*``. Here it sees a grid
    view offering ``node_ids`` only, with the fractions set to 1 and the minimums to their number
    (restored after the call), so it returns one message per given node, built by Flower's own
    code (FedProx's ``proximal-mu``, FedAdam's remembered arrays). ``configure(view)`` calls the
    parent method with the view.
    """
    saved = tuple(getattr(strategy, name) for name in _SAMPLING_FIELDS)
    n = len(node_ids)
    strategy.fraction_train = strategy.fraction_evaluate = 1.0
    strategy.min_train_nodes = strategy.min_evaluate_nodes = strategy.min_available_nodes = n
    try:
        return list(configure(cast(Grid, _NodesView(grid, node_ids))))
    finally:
        for name, value in zip(_SAMPLING_FIELDS, saved, strict=True):
            setattr(strategy, name, value)


# --- differential privacy ----------------------------------------------------------------------
class _AdaptiveFixes:
    """Two corrections to Flower 1.39's adaptive-clipping wrappers (mixed in before them).

    * **Direction.** Andrew et al. (2021) update ``C <- C exp(-lr (b - q))`` where ``b`` is the
      (noisy) share of updates *not* clipped and ``q`` the target quantile. Flower counts the
      updates that *were* clipped (its norm bit is ``scaling < 1``) and plugs that share into
      the same formula (private ``_geometric_update``), so the norm grows when nothing is
      clipped and shrinks when everything is: it runs away instead of tracking the quantile.
      Feeding it ``1 - clipped share`` (the same noisy count, reflected) restores the paper's
      rule; the count's privacy cost is unchanged.
    * **Noise of the round's norm.** Flower updates the norm *before* it adds the round's
      noise (private ``_add_noise_to_aggregated_arrays``), so the noise is scaled by the next
      round's norm while the updates were clipped to this round's: when the norm shrinks, the
      aggregate gets less noise than the sensitivity needs and the accounted epsilon would be
      too small. The noise here uses the norm the round clipped with (as in the paper).
    """

    clipping_norm: float
    _round_norm: float

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> Any:
        self._round_norm = self.clipping_norm  # what this round's updates are clipped to
        return super().aggregate_train(server_round, replies)  # type: ignore[misc]

    def _geometric_update(self, clipped_fraction: float) -> None:
        super()._geometric_update(1.0 - clipped_fraction)  # type: ignore[misc]

    def _add_noise_to_aggregated_arrays(self, aggregated: ArrayRecord) -> ArrayRecord:
        updated, self.clipping_norm = self.clipping_norm, self._round_norm
        try:
            return super()._add_noise_to_aggregated_arrays(aggregated)  # type: ignore[misc]
        finally:
            self.clipping_norm = updated


def adaptive_clipping_classes() -> tuple[type, type]:
    """Flower's server-side and client-side adaptive-clipping wrappers with `_AdaptiveFixes`."""
    from flwr.serverapp.strategy import (
        DifferentialPrivacyClientSideAdaptiveClipping,
        DifferentialPrivacyServerSideAdaptiveClipping,
    )

    class ServerSide(_AdaptiveFixes, DifferentialPrivacyServerSideAdaptiveClipping):
        pass

    class ClientSide(_AdaptiveFixes, DifferentialPrivacyClientSideAdaptiveClipping):
        pass

    return ServerSide, ClientSide


def add_central_noise(wrapper: Any, arrays: ArrayRecord) -> ArrayRecord:
    """The noisy release of ``arrays`` by one of Flower's central DP wrappers.

    Calls the wrapper's private ``_add_noise_to_aggregated_arrays``: Gaussian noise of std
    ``noise_multiplier * clipping_norm / num_sampled_clients`` on every array, from numpy's
    global generator (used for a Poisson round that sampled nobody: the release still runs).
    """
    return cast(ArrayRecord, wrapper._add_noise_to_aggregated_arrays(arrays))


def rdp_orders(accountant: Any) -> list[float]:
    """The RDP orders of Flower's ``RdpAccountant`` (its private ``_orders``)."""
    return [float(a) for a in accountant._orders]


# --- metering ----------------------------------------------------------------------------------
_CHUNK_CACHE = "_chunks"  # flwr 1.39 Array.slice_array's cache attribute


def drop_chunk_cache(obj: Any) -> None:
    """Drop the ArrayChunk cache Flower 1.39 keeps in an ``Array`` after slicing it.

    ``Array.slice_array`` (called by ``children`` / ``deflate`` counting) stores the chunks,
    memoryviews of the array's data, in the instance's ``__dict__["_chunks"]``; a message
    pickled afterwards (Ray's simulation transport) would carry its payload twice. Flower
    rebuilds the chunks when it needs them. Objects without the cache are left as they are.
    """
    obj.__dict__.pop(_CHUNK_CACHE, None)


# --- rounds ------------------------------------------------------------------------------------
def is_in_memory_grid(grid: Any) -> bool:
    """Whether ``grid`` is the simulation's in-memory grid (``flwr.superlink.grid``)."""
    from flwr.superlink.grid import InMemoryGrid

    return isinstance(grid, InMemoryGrid)


def in_memory_grid_class() -> type:
    """Flower's ``InMemoryGrid`` class (tests build an uninitialised one)."""
    from flwr.superlink.grid import InMemoryGrid

    return cast(type, InMemoryGrid)


# --- SecAgg+ (Flower's legacy workflow driven inside fedvida's rounds) --------------------------
def grid_client_proxy(node_id: int, grid: Any) -> Any:
    """A legacy ``ClientProxy`` for ``node_id`` on ``grid`` (what the workflow's strategy returns
    from ``configure_fit``; ``flwr.server.compat.grid_client_proxy.GridClientProxy``)."""
    from flwr.server.compat.grid_client_proxy import GridClientProxy

    return GridClientProxy(node_id, grid, 0)


def legacy_context(strategy: Any, server_round: int) -> Any:
    """A synthetic ``LegacyContext`` for one SecAgg+ round of ``strategy``.

    Flower's ``SecAggPlusWorkflow`` stages read the current round from
    ``state.config_records[MAIN_CONFIGS_RECORD][Key.CURRENT_ROUND]`` and the global parameters
    from ``state.array_records[MAIN_PARAMS_RECORD]`` (``flwr.server.workflow.constant``); here
    the round is set and the parameters are empty (fedvida sends its own instruction per node).
    """
    from flwr.server import LegacyContext
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
    from flwr.server.workflow.constant import Key as WorkflowKey

    context = LegacyContext(Context(run_id=0, node_id=0, node_config={}, state=RecordDict(),
                                    run_config={}), strategy=strategy)
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
        {WorkflowKey.CURRENT_ROUND: server_round})
    context.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord()
    return context


def workflow_state() -> WorkflowState:
    """A fresh SecAgg+ ``WorkflowState`` (``flwr.server.workflow.secure_aggregation``)."""
    from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState

    return WorkflowState()


def fitres_record(res: Any, keep_input: bool) -> RecordDict:
    """A legacy ``FitRes`` as the ``RecordDict`` Flower's SecAgg+ mod and workflow exchange
    (``flwr.compat.common.recorddict_compat.fitres_to_recorddict``)."""
    import flwr.compat.common.recorddict_compat as compat

    return compat.fitres_to_recorddict(res, keep_input=keep_input)


# --- tests: building Flower objects outside Flower -----------------------------------------------
def set_message_id(msg: Message, message_id: str) -> None:
    """Give ``msg`` the id a grid would (``Metadata`` keeps it in private ``_message_id``; Flower's
    ``InMemoryGrid.push_messages`` writes it the same way)."""
    msg.metadata.__dict__["_message_id"] = message_id


def set_task_identity(run_id: int, node_id: int, task_id: int) -> None:
    """Set what a ServerApp process has (``flwr.supercore.task_identity.TaskIdentity``), needed
    to build ``Message`` objects outside Flower."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = node_id
    TaskIdentity.task_id = task_id


def aggregate_arrayrecords(records: list[RecordDict], weight_key: str) -> ArrayRecord:
    """Flower's own weighted average of replies' ArrayRecords (``strategy_utils``)."""
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords as aggregate

    return aggregate(records, weight_key)


def parse_config_args(text: str) -> dict[str, Any]:
    """How the ``flwr`` CLI reads a ``--run-config`` / ``--federation-config`` value
    (``flwr.common.config.parse_config_args``): ``key=value`` pairs, TOML values."""
    from flwr.common.config import parse_config_args as parse

    return dict(parse([text]))


def build_fab(project: Any) -> bytes:
    """The FAB (app bundle) ``flwr run`` would build from ``project`` (``flwr.cli.build``)."""
    from flwr.cli.build import build_fab_from_disk

    return cast(bytes, build_fab_from_disk(project))


def message_objects(msg: Message) -> dict[str, Any]:
    """``object_id -> object`` of a message's whole tree, as Flower serializes it."""
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

    return cast(dict[str, Any], get_all_nested_objects(msg))


def message_from_objects(object_id: str, contents: dict[str, bytes]) -> Any:
    """Rebuild a message from its deflated objects, as the receiving side does."""
    from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents

    return inflate_object_from_contents(object_id, contents)


def dp_noise_modules() -> dict[str, Any]:
    """Flower's DP wrapper modules, whose module-level noise helpers tests spy on:
    ``fixed`` (``dp_fixed_clipping``: ``compute_stdv``, ``add_gaussian_noise_inplace``) and
    ``adaptive`` (``dp_adaptive_clipping``: ``compute_stdv``)."""
    import flwr.serverapp.strategy.dp_adaptive_clipping as adaptive
    import flwr.serverapp.strategy.dp_fixed_clipping as fixed

    return {"fixed": fixed, "adaptive": adaptive}
