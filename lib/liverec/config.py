"""Layered configuration loaded into one typed settings object.

Layers, later wins: ``conf/base.yaml`` (every key, with its default and a comment), then either the
file given with ``--conf`` or the embedded default ``conf/local.yaml``, then each ``--set key=value``
(dotted keys, values parsed as YAML scalars). A key that base.yaml does not define, or a value of the
wrong type, is a :class:`ConfigError` naming the key: never a silent default.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from liverec.errors import ConfigError
from liverec.model_settings import AlsSettings, EaseSettings, EmbeddingSettings, RankerSettings

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def conf_dir() -> Path:
    """Folder holding base.yaml and local.yaml (``LIVEREC_CONF_DIR`` overrides the repo's ``conf/``)."""
    return Path(os.environ.get("LIVEREC_CONF_DIR", PROJECT_ROOT / "conf"))


@dataclass(frozen=True)
class SparkSettings:
    master: str
    app_name: str
    local_dir: str
    shuffle_partitions: int
    driver_memory: str
    delta_package: str
    java_options: str
    conf: dict[str, str]


@dataclass(frozen=True)
class MlflowSettings:
    tracking_uri: str
    experiment: str
    artifact_root: str


@dataclass(frozen=True)
class IdSettings:
    key_env: str
    demo_key: str
    broadcast_pseudonyms: int


@dataclass(frozen=True)
class CleanSettings:
    min_ts: str
    future_tolerance_seconds: int
    bot_max_actions_per_minute: int
    bot_max_actions_per_day: int
    bot_max_actions_per_hour: int
    bot_cadence_actions: int
    bot_cadence_max_cv: float
    bot_cadence_max_mean_gap_seconds: float
    shilling_enabled: bool
    shilling_min_accounts: int
    shilling_min_lift: float
    shilling_window_seconds: int
    shilling_max_account_span_seconds: int
    broadcast_duplicate_ids: int
    max_abs_value: float
    value_limits: dict[str, float]
    event_weights: dict[str, float]


@dataclass(frozen=True)
class ProfileSettings:
    half_life_days: float
    recent_items: int
    top_categories: int
    friends_top_items: int


@dataclass(frozen=True)
class RecommendSettings:
    top_n: int
    active_days: int
    popular_pool: int
    fallback_categories: int
    reason_history_items: int
    content_slots: int
    cold_item_max_users: int
    content_min_similarity: float
    als_candidates: int
    ease_candidates: int
    neighbor_history: int
    neighbors_per_item: int
    category_candidates: int
    friend_candidates: int
    list_batch_users: int
    mmr_lambda: float
    mmr_pool: int
    reranker: str
    calibration_lambda: float
    baseline: str


@dataclass(frozen=True)
class OnlineSettings:
    registered_model: str
    alias: str
    candidates: int
    session_slots: int
    default_k: int
    max_k: int
    max_session: int
    max_exclude: int
    max_requests: int
    host: str
    port: int
    workers: int
    store: str
    store_prefix: str
    store_timeout_s: float
    store_retry_s: float
    reload_seconds: float
    max_body_bytes: int


@dataclass(frozen=True)
class EvaluateSettings:
    k: int
    random_test_fraction: float
    temporal_test_fraction: float
    seed: int
    report_dir: str
    product: bool
    splits: list[str]


@dataclass(frozen=True)
class StreamSettings:
    landing: str
    format: str
    checkpoint: str
    trigger_seconds: float
    max_files_per_trigger: int
    recent_items: int
    shuffle_partitions: int
    snapshot_partitions: int


@dataclass(frozen=True)
class DemoSettings:
    output_dir: str
    users: int
    items: int
    events: int
    categories: int
    days: int
    end_date: str
    seed: int
    avg_friends: int
    bot_users: int
    dirt_fraction: float
    partitions: int


@dataclass(frozen=True)
class FeedbackSettings:
    exploration_temperature: float
    exploration_share: float
    ope_clip: float
    ope_bootstrap: int
    ope_confidence: float
    landing: str
    flush_seconds: float
    flush_rows: int
    attribution_seconds: int
    click_events: list[str]
    ope_gate: bool
    ope_gate_days: int
    ope_gate_min_lists: int


@dataclass(frozen=True)
class PrivacySettings:
    popularity_epsilon: float
    popularity_max_items: int


@dataclass(frozen=True)
class PolicySettings:
    blocked_items: str
    blocked_categories: str


@dataclass(frozen=True)
class ForgetSettings:
    vacuum_retain_hours: int


@dataclass(frozen=True)
class Settings:
    lakehouse_root: str
    scratch_dir: str
    demo_mode: bool
    spark: SparkSettings
    mlflow: MlflowSettings
    ids: IdSettings
    clean: CleanSettings
    profiles: ProfileSettings
    als: AlsSettings
    ease: EaseSettings
    embeddings: EmbeddingSettings
    recommend: RecommendSettings
    ranker: RankerSettings
    online: OnlineSettings
    evaluate: EvaluateSettings
    stream: StreamSettings
    demo: DemoSettings
    feedback: FeedbackSettings
    forget: ForgetSettings
    privacy: PrivacySettings
    policy: PolicySettings

    def tracking_uri(self) -> str:
        """The MLflow tracking URI: ``MLFLOW_TRACKING_URI`` wins over conf when set."""
        return os.environ.get("MLFLOW_TRACKING_URI") or self.mlflow.tracking_uri


def _load_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def _merge(base: dict[str, Any], overlay: dict[str, Any], where: str, prefix: str = "") -> dict[str, Any]:
    """Deep-merge ``overlay`` into ``base``; keys base does not have are errors (free-form maps aside)."""
    out = dict(base)
    for key, value in overlay.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            raise ConfigError(f"unknown config key '{dotted}' in {where}")
        if isinstance(base[key], dict) and isinstance(value, dict) and not _is_free_map(dotted):
            out[key] = _merge(base[key], value, where, prefix=f"{dotted}.")
        else:
            out[key] = value
    return out


def _free_maps() -> set[str]:
    """Dotted keys whose values are free-form maps (their own keys are not validated)."""
    found: set[str] = set()

    def walk(cls: type, prefix: str) -> None:
        for f in dataclasses.fields(cls):
            hint = typing.get_type_hints(cls)[f.name]
            if dataclasses.is_dataclass(hint):
                walk(hint, f"{prefix}{f.name}.")
            elif typing.get_origin(hint) is dict:
                found.add(f"{prefix}{f.name}")

    walk(Settings, "")
    return found


def _is_free_map(dotted: str) -> bool:
    return dotted in _free_maps()


def _set_overrides(pairs: list[str]) -> dict[str, Any]:
    overlay: dict[str, Any] = {}
    free = _free_maps()
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects key=value, got '{pair}'")
        key, raw = pair.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--set expects key=value, got '{pair}'")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        parts = key.split(".")
        # keys inside a free-form map keep their dots (spark.conf.spark.sql.foo=bar)
        for i in range(1, len(parts)):
            if ".".join(parts[:i]) in free:
                parts = parts[:i] + [".".join(parts[i:])]
                break
        node = overlay
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: '{part}' is not a section")
        node[parts[-1]] = value
    return overlay


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a section (mapping), got {type(value).__name__}")
        return _build(hint, value, f"{key}.")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {type(value).__name__}")
        _, vtype = typing.get_args(hint)
        if vtype is str:  # pass-through maps (Spark properties): YAML's true/false mean the strings
            value = {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in value.items()}
        return {str(k): _coerce(v, vtype, f"{key}.{k}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' must be a list, got {type(value).__name__}")
        (itype,) = typing.get_args(hint)
        return [_coerce(v, itype, f"{key}[]") for v in value]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
    raise ConfigError(f"config key '{key}' has an unsupported type {hint}")


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(f"unknown config key '{prefix}{key}'")
    kwargs = {}
    for name in names:
        if name not in data:
            raise ConfigError(f"config key '{prefix}{name}' is missing from base.yaml")
        kwargs[name] = _coerce(data[name], hints[name], f"{prefix}{name}")
    return cls(**kwargs)


def _absolute(path: str) -> str:
    """Relative local paths are resolved against the working directory; URIs are kept."""
    if "://" in path:
        return path
    return str(Path(path).expanduser().resolve())


def _resolve_paths(s: Settings) -> Settings:
    uri = s.mlflow.tracking_uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + _absolute(uri[len("sqlite:///"):])
    return dataclasses.replace(
        s,
        lakehouse_root=_absolute(s.lakehouse_root),
        scratch_dir=_absolute(s.scratch_dir),
        spark=dataclasses.replace(s.spark, local_dir=_absolute(s.spark.local_dir)),
        mlflow=dataclasses.replace(s.mlflow, tracking_uri=uri, artifact_root=_absolute(s.mlflow.artifact_root)),
        demo=dataclasses.replace(s.demo, output_dir=_absolute(s.demo.output_dir)),
        evaluate=dataclasses.replace(s.evaluate, report_dir=_absolute(s.evaluate.report_dir)),
        stream=dataclasses.replace(s.stream, landing=_absolute(s.stream.landing),
                                   checkpoint=_absolute(s.stream.checkpoint) if s.stream.checkpoint else ""),
        policy=PolicySettings(*[_absolute(p) if p else "" for p in (s.policy.blocked_items,
                                                                    s.policy.blocked_categories)]),
    )


def load_settings(conf_file: str | None = None, overrides: list[str] | None = None) -> Settings:
    """Load base.yaml, then ``conf_file`` (or local.yaml), then ``--set`` overrides."""
    base_path = conf_dir() / "base.yaml"
    data = _load_yaml(base_path)
    overlay_path = Path(conf_file) if conf_file else conf_dir() / "local.yaml"
    data = _merge(data, _load_yaml(overlay_path), str(overlay_path))
    if overrides:
        data = _merge(data, _set_overrides(overrides), "--set")
    settings = _build(Settings, data)
    return _resolve_paths(settings)


def as_flat_dict(settings: Settings) -> dict[str, Any]:
    """Settings as ``{dotted.key: value}``, for logging as MLflow parameters."""
    flat: dict[str, Any] = {}

    def walk(obj: Any, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")
            else:
                flat[f"{prefix}{f.name}"] = value

    walk(settings, "")
    return flat
