"""Validated configuration: one pydantic root `Config`, loaded from YAML with `a.b=value` overrides.

Every section forbids unknown keys, so a typo is an error that names the field. Relative paths are
resolved against the current working directory when they are used (run fedvida from the project
root, as the README does). The resolved config is written into every run folder.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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

    @model_validator(mode="after")
    def _names_for_list(self) -> ClassSelection:
        if self.mode == "list" and not self.names:
            raise ValueError("mode 'list' needs a non-empty 'names'")
        return self


class DataConfig(Section):
    """A dataset in the Moments-in-Time layout (a real download or the demo)."""

    root: Path = Path("work/demo-mit")
    version: Literal["auto", "v1", "v2"] = "auto"
    classes: ClassSelection = Field(default_factory=ClassSelection)
    max_clips_per_class: int | None = Field(None, ge=1)
    train_split: str = "training"
    test_split: str = "validation"


class DemoConfig(Section):
    """The embedded demo dataset generator (`fedvida data demo`)."""

    out: Path = Path("work/demo-mit")
    classes: int = Field(10, ge=2, le=10)
    clips_per_class: int = Field(40, ge=1, description="Training clips per class.")
    val_clips_per_class: int = Field(12, ge=1, description="Validation clips per class.")
    seed: int = 0
    no_stream_rate: float = Field(0.05, ge=0.0, le=1.0, description="Share with no audio stream.")
    silent_rate: float = Field(0.05, ge=0.0, le=1.0, description="Share with a silent track.")


class WithholdConfig(Section):
    """Audio withheld by the experiment, per clip and per client."""

    clip_rate: float = Field(0.5, ge=0.0, le=1.0, description="Per-clip withholding rate.")
    client_dist: Literal["none", "fixed", "uniform", "beta"] = Field(
        "none",
        description="Per-client rate distribution; when not 'none' it replaces clip_rate.",
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
    seed: int = 0
    withhold: WithholdConfig = Field(default_factory=WithholdConfig)
    plan: Path = Path("work/plan.json")


class ExtractConfig(Section):
    """Client-side feature extraction (`fedvida extract`)."""

    fps: float = Field(6.0, gt=0.0)
    steps: int = Field(18, ge=2)
    frame_encoder: str = "effnet-lite0"
    audio_encoder: str = "yamnet"
    captioner: str = Field("pseudo", description="'pseudo' (ImageNet labels) or 'hf-blip'.")
    hf_vit_path: Path | None = None
    hf_ast_path: Path | None = None
    hf_blip_path: Path | None = None
    device: str = "cpu"
    batch_clips: int = Field(8, ge=1)
    image_size: int = Field(224, ge=32)
    flow_size: int = Field(160, ge=16, description="Short side for optical flow computation.")
    rep_threshold: float = Field(1.2, gt=0.0, description="Representative step: DIS > x * mean.")
    sample_rate: int = Field(16000, ge=8000)
    silence_dbfs: float = Field(-60.0, le=0.0)
    caption_topk: int = Field(3, ge=1)
    cache_dir: Path = Path("work/cache")


class DictionaryConfig(Section):
    """The semantic dictionary artifact (`fedvida dictionary build`)."""

    model: str = Field("all-MiniLM-L6-v2", description="Name of the bundled model or a local path.")
    action_template: str = "a video of someone {action}"
    audio_template: str = "the sound of {label}"
    top_k: int = Field(5, ge=1)
    out: Path = Path("work/dictionary")
    categories_file: Path | None = Field(
        None, description="Action labels; default: the dataset's selected classes."
    )


class ModelConfig(Section):
    """Trainable heads (one container; prefixed state_dict keys)."""

    audio_dim: int = Field(128, ge=8, description="Projected audio feature size.")
    hidden: int = Field(128, ge=8)
    noise_dim: int = Field(16, ge=0)
    cond_dim: int = Field(64, ge=0)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)


Method = Literal["video_only", "gt_audio", "generated", "svdmap", "cafmap"]
METHODS: tuple[str, ...] = ("video_only", "gt_audio", "generated", "svdmap", "cafmap")


class TrainConfig(Section):
    """Local / centralised training."""

    method: Method = "generated"
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    seed: int = 0
    svdmap_threshold: float = Field(0.72, ge=-1.0, le=1.0)
    device: str = "cpu"
    runs_dir: Path = Path("runs")


class FederationConfig(Section):
    """Flower federation (simulation and deployment)."""

    rounds: int = Field(10, ge=1)
    fraction_train: float = Field(1.0, gt=0.0, le=1.0)
    min_train_clients: int = Field(2, ge=1)
    local_epochs: int = Field(2, ge=1)
    strategy: Literal["fedavg", "fedprox", "fedadam"] = "fedavg"
    proximal_mu: float = Field(0.01, ge=0.0)
    shared_prefixes: list[str] = Field(
        default_factory=lambda: ["audio_proj", "generator", "classifier", "tagger"]
    )
    num_cpus_per_client: float = Field(1.0, gt=0.0)
    num_gpus_per_client: float = Field(0.0, ge=0.0)
    keep_checkpoints: int = Field(3, ge=1)


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


def _format_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "(root)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"invalid config {source}: {field}: {msg}{more}"


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
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config {p}: not valid YAML: {str(exc).splitlines()[0]}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config {p}: top level must be a mapping")
        tree = loaded
    for assignment in overrides or []:
        apply_override(tree, assignment)
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, source)) from None
