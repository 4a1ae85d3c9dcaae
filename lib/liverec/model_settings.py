"""The settings sections of the models the pipeline trains: ``als``, ``ease``, ``embeddings`` and ``ranker`` of
conf/base.yaml, as frozen dataclasses. ``liverec.config`` builds and checks them like every other section (its
``Settings`` holds them) and re-exports them, so ``from liverec.config import AlsSettings`` keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AlsSettings:
    rank: int
    max_iter: int
    reg_param: float
    alpha: float
    half_life_days: float
    rating_as_strength: bool
    count_events: list[str]
    count_cap: float
    window_days: int
    checkpoint_interval: int
    num_blocks: int
    seed: int


@dataclass(frozen=True)
class EaseSettings:
    enabled: bool
    reg_lambda: float
    max_items: int


@dataclass(frozen=True)
class EmbeddingSettings:
    model: str
    device: str
    batch_size: int
    max_chars: int
    torch_threads: int
    partitions: int
    neighbors: int


@dataclass(frozen=True)
class RankerPrivacySettings:
    enabled: bool
    target_epsilon: float
    delta: float
    max_grad_norm: float


@dataclass(frozen=True)
class RankerFederatedSettings:
    silos: int
    rounds: int
    local_epochs: int
    python: str
    timeout_seconds: int


@dataclass(frozen=True)
class RankerSettings:
    label_split: str
    label_fraction: float
    negatives_per_user: int
    negatives_per_positive: int
    impression_negatives: bool
    impression_days: int
    impression_weight_clip: float
    recent_items: int
    trend_days: int
    validation_fraction: float
    seed: int
    text_dim: int
    attention_hidden: int
    cross_layers: int
    hidden_units: list[int]
    dropout: float
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    patience: int
    val_k: int
    num_processes: int
    local_mode: bool
    use_gpu: bool
    score_threads: int
    scoring_variant: str
    export_variants: bool
    variant_max_ndcg_loss: float
    registered_model: str
    champion_alias: str
    privacy: RankerPrivacySettings
    federated: RankerFederatedSettings
