"""Validated configuration: one pydantic root `Config`, loaded from YAML with `a.b=value` overrides.

Every section forbids unknown keys, so a typo is an error that names the field. Relative paths are
resolved against the current working directory when they are used (run fedvida from the project
root, as the README does). The resolved config is written into every run folder.
"""

from __future__ import annotations

import hashlib
import json
import string
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from fedvida.errors import ConfigError


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ClassSelection(Section):
    """Which action classes to use from a dataset."""

    mode: Literal["all", "list", "random"] = "all"
    names: list[str] = Field(default_factory=list, description="Used when mode == 'list'.")
    n: int = Field(20, ge=1, description="Used when mode == 'random' (the research used 20).")
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        """``all``, a list of names or a number N (N random classes, ``seed``) for the mapping."""
        if isinstance(data, str) and data == "all":
            return {"mode": "all"}
        if isinstance(data, int) and not isinstance(data, bool):
            return {"mode": "random", "n": data}
        if isinstance(data, list):
            return {"mode": "list", "names": data}
        return data

    @model_validator(mode="after")
    def _names_for_list(self) -> ClassSelection:
        if self.mode == "list" and not self.names:
            raise ValueError("mode 'list' needs a non-empty 'names'")
        return self


class DataConfig(Section):
    """A dataset in the Moments-in-Time layout (a real download or the demo)."""

    root: Path = Path("work/demo-mit")
    version: Literal["auto", "v1", "v2"] = Field(
        "auto", description="'auto' detects v1 (339 classes) or v2 (305, Moments_in_Time_Raw)."
    )
    classes: ClassSelection = Field(default_factory=ClassSelection)
    max_clips_per_class: int | None = Field(
        None, ge=1, description="Cap on training clips per class (seeded sample; None = all)."
    )
    max_test_clips_per_class: int | None = Field(
        None, ge=1, description="Cap on test (validation) clips per class (None = all)."
    )
    cap_seed: int = Field(0, description="Seed of the per-class cap sample.")
    check_files: bool = Field(
        True,
        description="Check that listed clips exist (one directory listing per folder); false "
        "trusts the CSVs: classes with training rows are present, no clip is missing.",
    )
    train_split: str = Field("training", pattern=r"^[A-Za-z0-9_\-]+$")
    test_split: str = Field("validation", pattern=r"^[A-Za-z0-9_\-]+$")


class DemoConfig(Section):
    """The embedded demo dataset generator (`fedvida data demo`)."""

    out: Path = Path("work/demo-mit")
    classes: int = Field(10, ge=2, le=10)
    clips_per_class: int = Field(40, ge=1, description="Training clips per class.")
    val_clips_per_class: int = Field(12, ge=1, description="Validation clips per class.")
    seed: int = 0
    no_stream_rate: float = Field(0.05, ge=0.0, le=1.0, description="Share with no audio stream.")
    silent_rate: float = Field(0.05, ge=0.0, le=1.0, description="Share with a silent track.")
    weak_audio_rate: float = Field(
        0.1, ge=0.0, le=1.0, description="Share whose sound is buried in noise (SNR -10..0 dB)."
    )
    ambiguous_video_rate: float = Field(
        0.1, ge=0.0, le=1.0, description="Share whose picture is degraded (contrast, size, blur)."
    )
    max_distractors: int = Field(3, ge=0, le=8, description="Independently moving shapes per clip.")
    visual_identity: Literal["pair", "class"] = Field(
        "class",
        description="'class' (the default demo): each class has its own look (shapes, hues) "
        "whose events make its sound, with distractors wearing other classes' looks, so video "
        "can predict the sound; 'pair': both classes of a visual pair share one picture (only "
        "the sound tells them apart; no generator can help there) (docs/demo-data.md).",
    )
    workers: int = Field(2, ge=1, description="Writer processes (1 = in this process).")

    @model_validator(mode="after")
    def _rates(self) -> DemoConfig:
        total = self.no_stream_rate + self.silent_rate + self.weak_audio_rate
        if total > 1.0:
            raise ValueError(
                f"no_stream_rate + silent_rate + weak_audio_rate must not exceed 1 (got {total:g})"
            )
        return self


class WithholdConfig(Section):
    """Audio withheld by the experiment, per clip and per client."""

    clip_rate: float = Field(0.5, ge=0.0, le=1.0, description="Per-clip withholding rate.")
    client_dist: Literal["none", "fixed", "uniform", "beta"] = Field(
        "none",
        description=(
            "'none': every clip independently withheld with probability clip_rate; 'fixed': every "
            "client withholds exactly round(clip_rate * n) clips; 'uniform' / 'beta': a rate per "
            "client drawn from U[client_low, client_high] / Beta(a, b), then exactly that share."
        ),
    )
    client_low: float = Field(0.0, ge=0.0, le=1.0)
    client_high: float = Field(1.0, ge=0.0, le=1.0)
    client_beta_a: float = Field(0.5, gt=0.0)
    client_beta_b: float = Field(0.5, gt=0.0)
    no_audio_client_share: float = Field(
        0.0, ge=0.0, le=1.0, description="Share of clients with no audio at all (FedMultimodal)."
    )
    test_rate: float = Field(0.5, ge=0.0, le=1.0, description="Withheld at test time.")

    @model_validator(mode="after")
    def _bounds(self) -> WithholdConfig:
        if self.client_low > self.client_high:
            raise ValueError("client_low must not exceed client_high")
        return self


class PartitionConfig(Section):
    """How training clips are spread over clients (`fedvida partition`)."""

    num_clients: int = Field(10, ge=1)
    scheme: Literal["iid", "dirichlet"] = "dirichlet"
    alpha: float = Field(0.5, gt=0.0, description="Dirichlet concentration (small = skewed).")
    min_clips_per_client: int = Field(2, ge=1)
    balance: bool = Field(
        True,
        description="Dirichlet: a class gives no share to clients already above the mean size.",
    )
    seed: int = 0
    withhold: WithholdConfig = Field(default_factory=WithholdConfig)
    plan: Path = Path("work/plan.json")


class ExtractConfig(Section):
    """Client-side feature extraction (`fedvida extract`)."""

    fps: float = Field(6.0, gt=0.0)
    steps: int = Field(18, ge=2)
    frame_encoder: str = "effnet-lite0"
    audio_encoder: str = "yamnet"
    tagger: str = Field(
        "yamnet", description="Audio encoder whose AudioSet scores tag the clips when "
        "audio_encoder does not tag AudioSet itself (it must: tags_audioset)."
    )
    captioner: Literal["pseudo", "hf-blip"] = Field(
        "pseudo", description="'pseudo' (top ImageNet labels) or 'hf-blip' (hf_blip_path)."
    )
    hf_vit_path: Path | None = None
    hf_ast_path: Path | None = None
    hf_blip_path: Path | None = None
    device: str = Field(
        "auto", pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$",
        description="Torch device of the encoders; auto: cuda when available, else cpu.",
    )
    batch_clips: int = Field(8, ge=1)
    image_size: int = Field(224, ge=32)
    flow_size: int = Field(160, ge=16, description="Short side for optical flow computation.")
    rep_threshold: float = Field(1.2, gt=0.0, description="Representative step: DIS > x * mean.")
    sample_rate: int = Field(16000, ge=8000)
    silence_dbfs: float = Field(-60.0, le=0.0)
    caption_topk: int = Field(3, ge=1)
    caption_frames: int = Field(
        2, ge=1, description="hf-blip: representative frames captioned per clip (most motion)."
    )
    min_duration: float = Field(
        0.0, ge=0.0,
        description="Clips shorter than this (s) fail extraction as 'too_short' (0: keep all).",
    )
    short_duration: float = Field(
        1.0, ge=0.0,
        description="Clips kept but shorter than this (s) are listed as 'short' problems.",
    )
    workers: int | None = Field(
        None, ge=0,
        description="Decode worker processes (a native crash costs one clip); None = CPU cores, "
        "0 = decode in the main process without crash isolation (debugging only).",
    )
    max_grid: int = Field(
        72, ge=2, description="Most frames sampled at `fps` (longer videos are thinned uniformly)."
    )
    encode_batch: int = Field(64, ge=1, description="Images per frame-encoder forward pass.")
    torch_threads: int = Field(
        0, ge=0,
        description="CPU threads for torch and onnxruntime (0 = all cores but one, which the "
        "decode thread uses; at least 1).",
    )
    cpu_runtime: Literal["onnxruntime", "torch"] = Field(
        "onnxruntime",
        description="Runtime of effnet-lite0 on CPU: its graph exported once to ONNX "
        "(several times faster on a loaded CPU) or torch eager. CUDA always uses torch.",
    )
    cache_dir: Path = Path("work/cache")


def _template_fields(template: str) -> set[str]:
    """Field names of a str.format template; raises ValueError when it is malformed."""
    return {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}


class DictionaryConfig(Section):
    """The semantic dictionary artifact (`fedvida dictionary build`). See docs/semantics.md."""

    model: str = Field("all-MiniLM-L6-v2", description="Name of the bundled model or a local path.")
    action_template: str = Field(
        "the sound of {action}", description="Action text; one {action} field."
    )
    audio_template: str = Field(
        "the sound of {label}", description="AudioSet label text; one {label} field."
    )
    top_k: int = Field(5, ge=1, le=527, description="AudioSet labels per action entry.")
    out: Path = Path("work/dictionary")
    categories_file: Path | None = Field(
        None,
        description="Action labels (rows name,index); default: <data.root>/moments_categories.txt.",
    )
    device: str = Field(
        "auto", description="Torch device for the sentence model; auto: cuda when available."
    )

    @model_validator(mode="after")
    def _templates(self) -> DictionaryConfig:
        for name, field in (("action_template", "action"), ("audio_template", "label")):
            template = getattr(self, name)
            try:
                fields = _template_fields(template)
            except ValueError as exc:
                raise ValueError(f"{name} '{template}' is not a valid template ({exc})") from None
            if fields != {field}:
                raise ValueError(f"{name} '{template}' must use exactly one field {{{field}}}")
        return self


class ModelConfig(Section):
    """Trainable heads (one container; prefixed state_dict keys). See docs/methods.md."""

    audio_dim: int = Field(128, ge=8, description="Projected audio feature size.")
    hidden: int = Field(128, ge=8, description="LSTM width of the generator and the classifier.")
    visual_dim: int = Field(
        128, ge=8, description="Classifier bottleneck: RGB+flow (2D) -> this width before the LSTM."
    )
    tagger_hidden: int = Field(128, ge=8, description="Hidden width of the AudioSet tagging head.")
    noise_dim: int = Field(16, ge=0, description="Generator noise per step (zero at evaluation).")
    cond_dim: int = Field(64, ge=0, description="CAFMap condition width (0 disables it).")
    cond_decay: float = Field(
        0.5, ge=0.0, le=1.0, description="CAFMap: condition weight per step away from an anchor."
    )
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    source_indicator: bool = Field(
        True,
        description="The classifier is told the source of its audio slot (real / generated / "
        "absent, one-hot); false: one present flag for real and generated alike.",
    )
    fusion: Literal["early", "late"] = Field(
        "late",
        description="Classifier fusion: 'early' = one LSTM over video + audio per step; 'late' "
        "= a video LSTM head plus an audio LSTM head, logits summed (audio only where present).",
    )


# The one list of method names: every other list (METHODS, the command choices, the method
# registry `fedvida.training.methods.METHOD_SPECS`) is this one (tests/unit/test_config.py).
Method = Literal["video_only", "gt_audio", "generated", "svdmap", "cafmap", "prototype"]
METHODS: tuple[str, ...] = get_args(Method)
RENAMED_KEYS = {  # removed key -> the one that replaced it (a clear error, not "unknown field")
    "train.method": "train.methods, a list: train.methods=[{value}]",
    "federation.methods": "train.methods (the methods every command trains)",
}


def _default_methods() -> list[Method]:
    return ["generated"]


def _renamed(section: str, data: Any) -> Any:
    """Reject a removed key of ``section`` naming its replacement (`RENAMED_KEYS`)."""
    if isinstance(data, dict):
        for key, instead in RENAMED_KEYS.items():
            head, _, name = key.partition(".")
            if head == section and name in data:
                raise ValueError(f"'{key}' was removed; use "
                                 + instead.format(value=data[name]))
    return data


class TrainConfig(Section):
    """Local / centralised training and evaluation of the methods (docs/methods.md)."""

    methods: list[Method] = Field(
        default_factory=_default_methods,
        min_length=1,
        description="The methods a run trains, one after another: `fedvida train` and "
        "`fedvida simulate` without --method, a deployment, each sweep cell.",
    )
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(256, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    grad_clip: float = Field(5.0, ge=0.0, description="Max gradient norm (0 disables clipping).")
    seed: int = 0
    classifier_audio: Literal["mixed", "real", "generated"] = Field(
        "mixed",
        description=(
            "Audio the classifier trains on in generating methods: 'mixed' = real where present, "
            "generated where missing; 'real' = real where present, absent elsewhere; "
            "'generated' = generated for every clip."
        ),
    )
    generator_min_tag: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Clips with real audio train the generator when their top tag >= this.",
    )
    generator_end_to_end: bool = Field(
        False, description="Let the classifier loss flow into the generator (default: detached)."
    )
    gen_weight: float = Field(1.0, ge=0.0, description="Weight of the generator loss.")
    gen_cos_weight: float = Field(1.0, ge=0.0, description="Generator loss = MSE + w (1 - cos).")
    gen_tag_weight: float = Field(
        0.0,
        ge=0.0,
        description="Distillation of the audio encoder's AudioSet tag scores: BCE between the "
        "(frozen) tagger on generated audio and the real clip's tags, added to the generator "
        "loss with this weight.",
    )
    gen_weight_decay: float | None = Field(
        None, ge=0.0, description="Weight decay of the generator (None: train.weight_decay)."
    )
    video_head_weight: float = Field(
        1.0,
        ge=0.0,
        description="Late fusion: weight of the auxiliary cross-entropy of the video head alone "
        "(keeps the video pathway trained when audio makes the task easy).",
    )
    fill_weight: float | None = Field(
        None,
        ge=0.0,
        description="Late fusion: weight of the audio head's logits on fill-ins (generated, "
        "prototype). None: chosen on the validation split (lowest cross-entropy on its clips "
        "without real audio, from 0, 0.25, 0.5, 0.75, 1): centrally once, federated per round "
        "on the clients' pooled validation scores.",
    )
    modality_dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Training: each clip with real audio is treated as missing with this "
        "probability (the classifier then sees what the method fills in: generated, prototype "
        "or absent), so that it keeps using video and learns to trust fill-ins.",
    )
    modality_dropout_grid: list[float] | None = Field(
        None,
        description="Centralised training: candidate modality-dropout rates (each in [0, 1)); "
        "one model per rate is trained for each method that sees real audio and the one with "
        "the best validation top-1 is kept (ties: the lower rate), its rate reported as "
        "`modality_dropout`. Needs val_fraction > 0. Federated runs train "
        "train.modality_dropout (one federation per rate: use a sweep).",
    )
    val_fraction: float = Field(
        0.2,
        ge=0.0,
        lt=1.0,
        description="Validation split carved from each client's training clips (seeded per "
        "client): it chooses early stopping and the SVDMap threshold; the test split chooses "
        "nothing. 0: no validation split.",
    )
    early_stopping: bool = Field(
        True,
        description="Centralised training keeps the epoch with the best validation top-1 "
        "(needs val_fraction > 0).",
    )
    tag_weight: float = Field(1.0, ge=0.0, description="Weight of the tagger (BCE) loss.")
    svdmap_threshold: float = Field(0.72, ge=-1.0, le=1.0)
    svdmap_candidates: Literal["all", "topk"] = Field(
        "topk",
        description="SVDMap agreement over all actions or the classifier's video-only top-k.",
    )
    svdmap_topk: int = Field(3, ge=1)
    svdmap_sweep: list[float] = Field(
        default_factory=lambda: [0.3, 0.4, 0.5, 0.6, 0.7, 0.72, 0.8, 0.9],
        description="Thresholds evaluated for SVDMap retention and accuracy.",
    )
    device: str = Field(
        "auto", description="Torch device of training and evaluation; auto: cuda when available "
        "in the process that trains (a Ray actor with no GPU share sees none).",
    )
    num_threads: int = Field(
        1,
        ge=0,
        description=(
            "torch CPU threads while training/evaluating (0: leave torch's setting). The models "
            "are small: 2 threads gain ~1.6x on an idle machine but are far slower on a busy one."
        ),
    )
    runs_dir: Path = Path("runs")

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: Any) -> Any:
        return _renamed("train", data)

    @field_validator("methods")
    @classmethod
    def _once_each(cls, methods: list[str]) -> list[str]:
        twice = [m for m in methods if methods.count(m) > 1]
        if twice:
            raise ValueError(f"'{twice[0]}' is listed twice")
        return methods

    @model_validator(mode="after")
    def _sweep_range(self) -> TrainConfig:
        if any(not -1.0 <= t <= 1.0 for t in self.svdmap_sweep):
            raise ValueError("svdmap_sweep values must lie in [-1, 1]")
        grid = self.modality_dropout_grid
        if grid is not None:
            if not grid or any(not 0.0 <= r < 1.0 for r in grid):
                raise ValueError("modality_dropout_grid must list rates in [0, 1)")
            if self.val_fraction <= 0:
                raise ValueError("modality_dropout_grid chooses on the validation split: "
                                 "set train.val_fraction > 0")
        return self


class FederationConfig(Section):
    """Flower federation (simulation and deployment)."""

    rounds: int = Field(10, ge=1)
    fraction_train: float = Field(
        1.0, gt=0.0, le=1.0,
        description="Share of clients per round: the fixed sample's size (sampling 'fixed') or "
        "each client's probability q of joining a round (sampling 'poisson').",
    )
    sampling: Literal["fixed", "poisson"] = Field(
        "fixed",
        description="Client sampling per round, seeded by (train.seed, round). 'fixed': "
        "max(int(n x fraction_train), min_train_clients) clients. 'poisson': every client joins "
        "independently with probability fraction_train (any number, possibly none); central DP "
        "then releases a noisy aggregate every round with the expected count q n as the fixed "
        "denominator, and the accountant includes the amplification by sampling. "
        "min_train_clients does not change a Poisson sample: it is only the number of results "
        "a round without central DP needs to aggregate.",
    )
    fraction_evaluate: float = Field(
        0.0, ge=0.0, le=1.0, description="Clients evaluating the global model on local data."
    )
    min_train_clients: int = Field(
        2, ge=1, description="Sampled at least, and results needed to aggregate a round."
    )
    local_epochs: int = Field(2, ge=1)
    strategy: Literal["fedavg", "fedprox", "fedadam"] = "fedavg"
    proximal_mu: float = Field(0.01, ge=0.0)
    server_lr: float = Field(0.01, gt=0.0, description="FedAdam server learning rate (eta).")
    shared_prefixes: list[str] | None = Field(
        None,
        description="Model parts sent and averaged every round (of audio_proj, generator, "
        "classifier, tagger, prototypes). None: each method's trained parts "
        "(fedvida.training.methods.shared_parts); a list: those parts for every method, the "
        "trained parts it leaves out stay on the nodes (partial sharing).",
    )
    num_cpus_per_client: float = Field(1.0, gt=0.0)
    num_gpus_per_client: float = Field(0.0, ge=0.0)
    ray_num_cpus: int | None = Field(
        None, ge=1, description="CPUs Ray may use in simulation; None: all cores."
    )
    ray_address: str | None = Field(
        None, min_length=1,
        description="Simulation joins the running Ray cluster at this address (Ray's "
        "``ray.init(address=...)``: 'HOST:PORT' of the head's GCS as printed by `ray start "
        "--head`, or 'auto') instead of starting a local Ray; run from a machine of the cluster. "
        "The cluster's nodes then decide how many clients run at once (ray_num_cpus is unused).",
    )
    client_timeout_s: float = Field(
        600.0, gt=0.0, description="A round stops waiting for replies after this many seconds."
    )
    keep_checkpoints: int = Field(3, ge=1)
    node_state: bool = Field(
        True,
        description="Nodes also keep their non-shared parts and compression residuals in files "
        "(runs/<name>/node-state/ or <data-dir>/node-state/) so that --resume continues them; "
        "off: in memory only (a resume restarts them from their initial values).",
    )
    eval_every: int = Field(1, ge=1, description="Server-side evaluation every k rounds.")
    select_round: Literal["validation", "last"] = Field(
        "validation",
        description="Which round's global model a run reports. 'validation': the evaluated "
        "round whose global model scored the best top-1 on the clients' validation splits "
        "(reported by the next round's clients before they train, and by every client after "
        "the last round), the federated counterpart of centralised early stopping; never the "
        "test split. 'last': the final round's model.",
    )
    allow_fewer_nodes: bool = Field(
        False,
        description="Train when fewer nodes answer than the plan has clients (a warning names "
        "the partitions that will not train); false: that is an error naming both numbers.",
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: Any) -> Any:
        return _renamed("federation", data)

    @model_validator(mode="after")
    def _prefixes(self) -> FederationConfig:
        if self.shared_prefixes is not None and not self.shared_prefixes:
            raise ValueError("shared_prefixes must name at least one model part (or be null: "
                             "each method's trained parts)")
        return self


DpMode = Literal[
    "off", "server-fixed", "client-fixed", "server-adaptive", "client-adaptive", "local"
]
CENTRAL_DP_MODES = ("server-fixed", "client-fixed", "server-adaptive", "client-adaptive")


class DpConfig(Section):
    """Differential privacy of the model updates (docs/privacy-and-communication.md).

    Central modes add Gaussian noise to the aggregate (Flower's DP strategy wrappers), with the
    update clipping done on the server (``server-*``) or by a client mod (``client-*``); adaptive
    modes move the clipping norm towards a quantile of the update norms. ``local`` adds noise on
    each client (Flower's ``LocalDpMod``).
    """

    mode: DpMode = "off"
    noise_multiplier: float = Field(
        1.0, ge=0.0, description="Central DP: noise std / clipping norm (per aggregate)."
    )
    clipping_norm: float = Field(
        1.0, gt=0.0, description="L2 bound on each client's update (initial value if adaptive)."
    )
    target_delta: float = Field(
        1e-5, gt=0.0, lt=1.0, description="delta at which the cumulative epsilon is reported."
    )
    target_clipped_quantile: float = Field(
        0.5, ge=0.0, le=1.0, description="Adaptive clipping: share of updates left unclipped."
    )
    clip_norm_lr: float = Field(0.2, gt=0.0, description="Adaptive clipping: geometric step.")
    clipped_count_stddev: float | None = Field(
        None, ge=0.0, description="Adaptive clipping: noise on the unclipped count (None: n/20)."
    )
    local_epsilon: float = Field(
        10.0, gt=0.0, description="Local DP: epsilon of one client's update per round."
    )
    local_delta: float = Field(1e-5, gt=0.0, lt=1.0, description="Local DP: delta per round.")
    local_sensitivity: float | None = Field(
        None, gt=0.0,
        description="Local DP: L2 sensitivity the noise is calibrated for (None: 2 x "
        "clipping_norm, any two clipped updates of one client).",
    )
    noise_seed: int | None = Field(
        None,
        description="Seed of the DP noise (None: fresh OS entropy each round). A known seed "
        "lets anyone who knows it remove the noise: for reproducible studies only.",
    )


class SecAggConfig(Section):
    """Secure aggregation (SecAgg+, Flower's implementation)."""

    enabled: bool = False
    num_shares: int = Field(
        3, ge=3, description="Secret shares per client (odd; Flower's SecAgg+ crashes on even)."
    )
    reconstruction_threshold: int = Field(2, ge=2, description="Shares needed to unmask.")
    clipping_range: float = Field(
        8.0, gt=0.0, description="Values are clipped to +-this before quantisation."
    )
    quantization_range: int = Field(
        4194304, ge=2, description="Quantisation levels over the clipping range."
    )
    modulus_range: int = Field(
        4294967296, ge=2, description="Arithmetic modulus of the masked sums."
    )
    timeout_s: float | None = Field(
        None, gt=0.0, description="Per-stage timeout (None: federation.client_timeout_s)."
    )

    @model_validator(mode="after")
    def _shares(self) -> SecAggConfig:
        if self.num_shares % 2 == 0:
            raise ValueError(
                f"num_shares must be odd (got {self.num_shares}; Flower's SecAgg+ fails on "
                "an even number of shares)"
            )
        if self.reconstruction_threshold >= self.num_shares:
            raise ValueError(
                f"reconstruction_threshold must be less than num_shares (got "
                f"{self.reconstruction_threshold} >= {self.num_shares}; Flower's SecAgg+ "
                "rejects it)"
            )
        if self.modulus_range <= self.quantization_range:
            raise ValueError("modulus_range must be greater than quantization_range")
        if self.modulus_range & (self.modulus_range - 1):
            raise ValueError(f"modulus_range must be a power of 2 (got {self.modulus_range})")
        return self

    def round_problem(self, sampled: int) -> str:
        """Why SecAgg+ cannot run with ``sampled`` clients per round (``""`` when it can)."""
        if self.num_shares > sampled:
            return (f"privacy.secagg.num_shares: {self.num_shares} shares need at least "
                    f"{self.num_shares} clients per round, but {sampled} are sampled")
        if sampled * self.quantization_range >= self.modulus_range:
            return (f"privacy.secagg.modulus_range: the masked sum of {sampled} clients needs "
                    f"{sampled} x quantization_range ({self.quantization_range}) < modulus_range "
                    f"({self.modulus_range})")
        return ""


class PrivacyConfig(Section):
    """Privacy protection of the federated updates."""

    dp: DpConfig = Field(default_factory=DpConfig)
    secagg: SecAggConfig = Field(default_factory=SecAggConfig)


UplinkCodec = Literal["none", "float16", "int8", "topk"]


class CommunicationConfig(Section):
    """Compression of the model arrays on the wire (docs/privacy-and-communication.md)."""

    uplink: UplinkCodec = Field("none", description="Client -> server update codec.")
    downlink: Literal["none", "float16"] = Field(
        "none", description="Server -> client model codec."
    )
    topk_fraction: float = Field(
        0.1, gt=0.0, le=1.0, description="top-k: share of each tensor's entries sent."
    )
    error_feedback: bool = Field(
        True, description="Keep what compression dropped on the client and add it next round."
    )


class Config(Section):
    """The root of every fedvida configuration."""

    name: str = "fedvida"
    data: DataConfig = Field(default_factory=DataConfig)
    demo: DemoConfig = Field(default_factory=DemoConfig)
    partition: PartitionConfig = Field(default_factory=PartitionConfig)
    extract: ExtractConfig = Field(default_factory=ExtractConfig)
    dictionary: DictionaryConfig = Field(default_factory=DictionaryConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    federation: FederationConfig = Field(default_factory=FederationConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    communication: CommunicationConfig = Field(default_factory=CommunicationConfig)

    @model_validator(mode="after")
    def _privacy_combinations(self) -> Config:
        dp, secagg = self.privacy.dp, self.privacy.secagg
        if secagg.enabled and dp.mode.startswith("server-"):
            raise ValueError(
                f"privacy.dp.mode: '{dp.mode}' clips on the server, which SecAgg+ prevents from "
                "seeing single updates; use 'client-fixed' or 'client-adaptive' with SecAgg+"
            )
        if dp.mode in {"server-fixed", "client-fixed", "server-adaptive", "client-adaptive"} \
                and self.federation.strategy == "fedadam":
            raise ValueError(
                f"privacy.dp.mode: central DP noise ('{dp.mode}') is calibrated for averaged "
                "updates; use federation.strategy fedavg or fedprox, not fedadam"
            )
        if self.federation.sampling == "poisson" and dp.mode.endswith("adaptive"):
            raise ValueError(
                f"privacy.dp.mode: '{dp.mode}' with federation.sampling 'poisson' is not "
                "supported (its noisy clipped count is calibrated for a fixed sample); use "
                "'server-fixed' or 'client-fixed'"
            )
        expected = self.federation.fraction_train * self.partition.num_clients
        if self.federation.sampling == "poisson" and dp.mode in {"server-fixed", "client-fixed"} \
                and expected < 1.0:
            raise ValueError(
                f"federation.fraction_train: Poisson sampling with central DP divides the sum of "
                f"updates by the expected clients per round, q n = {expected:g} "
                f"({self.federation.fraction_train:g} x partition.num_clients="
                f"{self.partition.num_clients}); it must be at least 1"
            )
        if secagg.enabled and self.communication.downlink != "none":
            raise ValueError(
                "communication.downlink: SecAgg+ rounds send the global model uncompressed; "
                "set downlink to 'none' when privacy.secagg.enabled is true"
            )
        if secagg.enabled and self.communication.uplink != "none":
            raise ValueError(
                "communication.uplink: SecAgg+ quantises and masks the update itself; "
                "set uplink to 'none' when privacy.secagg.enabled is true"
            )
        return self

    @model_validator(mode="after")
    def _secagg_federation(self) -> Config:
        secagg, fed = self.privacy.secagg, self.federation
        if not secagg.enabled:
            return self
        if fed.sampling == "poisson":
            raise ValueError(
                "federation.sampling: 'poisson' samples a random number of clients (possibly "
                "fewer than privacy.secagg.num_shares, or none); SecAgg+ needs a fixed number "
                "per round: use sampling 'fixed' with privacy.secagg.enabled"
            )
        n = self.partition.num_clients  # the run checks again against the connected nodes
        sampled = min(n, max(int(n * fed.fraction_train), fed.min_train_clients))
        problem = secagg.round_problem(sampled)
        if problem:
            raise ValueError(f"{problem} (partition.num_clients={n}, federation.fraction_train="
                             f"{fed.fraction_train:g}, federation.min_train_clients="
                             f"{fed.min_train_clients})")
        return self

    def to_yaml(self) -> str:
        """Serialise the resolved config as YAML (paths as strings)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def section_hash(self, *sections: str) -> str:
        """Short SHA-256 of the named sections, for cache keys and artifact names."""
        dump = self.model_dump(mode="json")
        payload = json.dumps({s: dump[s] for s in sections}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _parse_value(text: str) -> Any:
    """Parse an override value with YAML rules (`3`, `0.5`, `true`, `[a, b]`, `null`)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_override(tree: dict[str, Any], assignment: str) -> None:
    """Apply one `a.b.c=value` override to a nested dict in place."""
    if "=" not in assignment:
        raise ConfigError(f"override '{assignment}': expected KEY=VALUE (e.g. train.epochs=5)")
    key, _, raw = assignment.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override '{assignment}': empty key")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{assignment}': '{part}' is not a section")
        node = child
    node[parts[-1]] = _parse_value(raw)


def format_validation_error(err: ValidationError, source: str, what: str = "config") -> str:
    """One line for a pydantic error: ``invalid <what> <source>: <field>: <reason>``."""
    first = err.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "(root)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"invalid {what} {source}: {field}: {msg}{more}"


def read_yaml_mapping(path: Path, what: str = "config") -> dict[str, Any]:
    """The top-level mapping of a YAML file (empty file: ``{}``).

    Raises
    ------
    ConfigError
        One line naming the file: missing, not YAML, or not a mapping at the top.
    """
    if path.is_dir():
        raise ConfigError(f"{what} {path}: is a folder, not a YAML file")
    if not path.is_file():
        raise ConfigError(f"{what} file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{what} {path}: not valid YAML{where}: {problem}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"{what} {path}: top level must be a mapping")
    return loaded


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults), apply overrides and validate.

    Parameters
    ----------
    path
        YAML file; ``None`` means the built-in defaults.
    overrides
        ``a.b=value`` strings applied after the file.

    Raises
    ------
    ConfigError
        With one line naming the file, the field and the reason.
    """
    tree: dict[str, Any] = {}
    source = "(defaults)"
    if path is not None:
        source = str(path)
        tree = read_yaml_mapping(Path(path))
    for assignment in overrides or []:
        apply_override(tree, assignment)
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None
