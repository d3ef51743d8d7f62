"""Feature extractors for the trading env's observation, as SB3 ``BaseFeaturesExtractor`` s.

The observation (see :mod:`factorgym.envs.spaces`) is a feature window ``[W, A, F]``, a tradable mask
``[W, A]`` and the portfolio ``[A + 3]`` (a weight per asset, then cash, equity and drawdown), either
flat (one float32 vector in that order) or as a dict. Every extractor here accepts both layouts.

| name        | what it does                                                                    |
| ----------- | ------------------------------------------------------------------------------- |
| mlp         | flattens the observation (SB3's default MLP policy sees exactly this); default  |
| asset_conv  | per asset, a causal temporal convolution over the window, then cross-asset mix  |
| asset_gru   | per asset, a GRU over the window, then cross-asset mix                          |

The ``asset_*`` extractors encode each asset's window with **one shared encoder** (features plus the
mask bit per bar), append the asset's own weight, then mix information across assets by mean
pooling (``cross="mean"``) or self-attention without positional encoding (``cross="attention"``).
Their output is ``[z_1, ..., z_A, mean_i z_i, cash, equity, drawdown]``: permuting the assets in the
observation permutes the ``z_i`` blocks and leaves the rest unchanged (asset-order equivariance),
and the parameter count does not grow with ``A``. They pay off with longer windows or many assets;
for ``window`` of a few bars the plain MLP is as good and faster.

With a flat observation the extractor needs ``window`` and ``n_assets`` to cut the vector (its
length does not determine them); :func:`policy_kwargs` reads them from the env. Example::

    >>> from factorgym.agents.custom.planted import planted_market
    >>> from factorgym.envs import CryptoTradingEnv
    >>> env = CryptoTradingEnv(planted_market(64, n_assets=3), window=8)
    >>> kw = policy_kwargs("asset_conv", env, embed=16)
    >>> kw["features_extractor_class"].__name__, kw["features_extractor_kwargs"]["n_assets"]
    ('AssetConvExtractor', 3)
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from factorgym.errors import ConfigError

N_GLOBAL = 3  # portfolio entries after the per-asset weights: cash, equity / initial cash, drawdown


@dataclass(frozen=True)
class ObsLayout:
    """Window ``W``, assets ``A`` and features ``F`` of the observation, and how to cut it."""

    window: int
    n_assets: int
    n_features: int

    @property
    def flat_dim(self) -> int:
        W, A, F = self.window, self.n_assets, self.n_features
        return W * A * F + W * A + A + N_GLOBAL

    @classmethod
    def from_space(cls, space: spaces.Space, window: int | None = None, n_assets: int | None = None) -> "ObsLayout":
        """Read the layout from a dict space, or from a flat Box plus ``window`` and ``n_assets``."""
        if isinstance(space, spaces.Dict):
            W, A, F = space["features"].shape
            return cls(int(W), int(A), int(F))
        if not isinstance(space, spaces.Box) or len(space.shape) != 1:
            raise ConfigError(f"observation space {space}; expected the trading env's flat Box or its dict layout")
        D = int(space.shape[0])
        if window is None or n_assets is None:
            raise ConfigError(f"a flat observation of length {D} does not say its window and asset count: pass "
                              f"features_extractor_kwargs window and n_assets (policy_kwargs(name, env) does), "
                              f"or use observation='dict'")
        W, A = int(window), int(n_assets)
        per_feature, rest = divmod(D - A - N_GLOBAL - W * A, W * A) if W > 0 and A > 0 else (0, 1)
        if W < 1 or A < 1 or rest or per_feature < 1:
            raise ConfigError(f"flat observation of length {D} does not fit window={W}, n_assets={A} "
                              f"(expected W*A*F + W*A + A + {N_GLOBAL} for some F >= 1)")
        return cls(W, A, per_feature)

    def split(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(features [B, W, A, F], mask [B, W, A], portfolio [B, A + 3]) from a batch of observations."""
        W, A, F = self.window, self.n_assets, self.n_features
        if isinstance(obs, dict):
            B = obs["features"].shape[0]
            return obs["features"].reshape(B, W, A, F), obs["mask"].reshape(B, W, A), obs["portfolio"].reshape(B, A + N_GLOBAL)
        B = obs.shape[0]
        nf, nm = W * A * F, W * A
        return obs[:, :nf].reshape(B, W, A, F), obs[:, nf:nf + nm].reshape(B, W, A), obs[:, nf + nm:]


class FlattenObs(BaseFeaturesExtractor):
    """The observation as one vector (the dict layout concatenated in the flat layout's order)."""

    def __init__(self, observation_space: spaces.Space, **_: Any) -> None:
        if isinstance(observation_space, spaces.Dict):
            dim = sum(int(np.prod(observation_space[k].shape)) for k in ("features", "mask", "portfolio"))
        else:
            dim = int(np.prod(observation_space.shape))
        super().__init__(observation_space, dim)

    def forward(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        if isinstance(obs, dict):
            B = obs["features"].shape[0]
            return torch.cat([obs[k].reshape(B, -1) for k in ("features", "mask", "portfolio")], dim=1)
        return obs.reshape(obs.shape[0], -1)


class AssetExtractor(BaseFeaturesExtractor):
    """Shared per-asset window encoder, own weight, cross-asset mixing; subclasses choose the encoder.

    Args:
        observation_space: the env's (flat Box or Dict).
        window, n_assets: needed for a flat Box (ignored for a Dict).
        hidden: width of the temporal encoder. embed: width of each asset's embedding ``z_i``.
        cross: ``"mean"`` (context = mean over assets) or ``"attention"`` (self-attention over assets).
        heads: attention heads (``embed`` must be divisible by it).
    Output: ``A * embed + embed + 3`` features (see the module docstring).
    """

    def __init__(self, observation_space: spaces.Space, *, window: int | None = None, n_assets: int | None = None,
                 hidden: int = 32, embed: int = 32, cross: str = "mean", heads: int = 2) -> None:
        layout = ObsLayout.from_space(observation_space, window, n_assets)
        if cross not in ("mean", "attention"):
            raise ConfigError(f"cross={cross!r}; expected 'mean' or 'attention'")
        if cross == "attention" and embed % heads:
            raise ConfigError(f"embed={embed} is not divisible by heads={heads}")
        A = layout.n_assets
        super().__init__(observation_space, A * embed + embed + N_GLOBAL)
        self.layout, self.cross = layout, cross
        self.temporal = self._encoder(layout.n_features + 1, hidden, layout.window)
        self.own = nn.Sequential(nn.Linear(self._encoded_dim(hidden) + 1, embed), nn.ReLU())
        self.attn = nn.MultiheadAttention(embed, heads, batch_first=True) if cross == "attention" else None
        self.mix = nn.Sequential(nn.Linear(2 * embed + N_GLOBAL, embed), nn.ReLU())

    # hooks: the per-asset temporal encoder, [B*A, W, C] -> [B*A, encoded_dim]
    def _encoder(self, channels: int, hidden: int, window: int) -> nn.Module:
        raise NotImplementedError

    def _encoded_dim(self, hidden: int) -> int:
        return hidden

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        feats, mask, port = self.layout.split(obs)
        B, W, A, F = feats.shape
        x = torch.cat([feats, mask.unsqueeze(-1)], dim=-1)          # [B, W, A, F+1]
        x = x.permute(0, 2, 1, 3).reshape(B * A, W, F + 1)           # one sequence per (batch, asset)
        h = self._encode(x).reshape(B, A, -1)                        # [B, A, encoded]
        e = self.own(torch.cat([h, port[:, :A].unsqueeze(-1)], dim=-1))  # [B, A, embed]
        if self.attn is not None:
            ctx, _ = self.attn(e, e, e, need_weights=False)          # no positions: equivariant
        else:
            ctx = e.mean(dim=1, keepdim=True).expand_as(e)
        g = port[:, A:]                                              # [B, 3], asset-free
        z = self.mix(torch.cat([e, ctx, g.unsqueeze(1).expand(B, A, N_GLOBAL)], dim=-1))  # [B, A, embed]
        return torch.cat([z.reshape(B, -1), z.mean(dim=1), g], dim=1)


class AssetConvExtractor(AssetExtractor):
    """Two causal 1-D convolutions over the window (kernel ``min(3, W)``); the encoding is the last
    bar's output and the mean over the window."""

    def _encoder(self, channels: int, hidden: int, window: int) -> nn.Module:
        k = min(3, window)
        self._pad = k - 1
        return nn.ModuleList([nn.Conv1d(channels, hidden, k), nn.Conv1d(hidden, hidden, k)])

    def _encoded_dim(self, hidden: int) -> int:
        return 2 * hidden

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        y = x.transpose(1, 2)                                        # [N, C, W]
        for conv in self.temporal:
            y = torch.relu(conv(nn.functional.pad(y, (self._pad, 0))))  # left padding: causal
        return torch.cat([y[:, :, -1], y.mean(dim=2)], dim=1)


class AssetGRUExtractor(AssetExtractor):
    """A one-layer GRU over the window; the encoding is its last hidden state."""

    def _encoder(self, channels: int, hidden: int, window: int) -> nn.Module:
        return nn.GRU(channels, hidden, batch_first=True)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        _, h = self.temporal(x)
        return h[-1]


EXTRACTORS: dict[str, type[BaseFeaturesExtractor]] = {
    "mlp": FlattenObs,
    "asset_conv": AssetConvExtractor,
    "asset_gru": AssetGRUExtractor,
}
DEFAULT_EXTRACTOR = "mlp"


def get_extractor(name: str) -> type[BaseFeaturesExtractor]:
    """The extractor class registered as ``name``; unknown names get a did-you-mean error."""
    try:
        return EXTRACTORS[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), EXTRACTORS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"features_extractor={name!r} is not one of {sorted(EXTRACTORS)}{hint}") from None


def env_layout(env: Any) -> ObsLayout:
    """The observation layout of a ``CryptoTradingEnv``, ``CryptoTradingVectorEnv`` or SB3 adapter of one."""
    get_attr = getattr(env, "get_attr", None)  # vector envs and SB3 wrappers: the env that describes them all
    obj = get_attr("unwrapped")[0] if callable(get_attr) else getattr(env, "unwrapped", env)
    core = getattr(obj, "core", None)
    if core is not None and hasattr(obj, "window"):
        return ObsLayout(int(obj.window), int(core.n_assets), int(core.n_features))
    raise ConfigError(f"cannot read the observation layout of {type(env).__name__}; pass window and n_assets yourself")


def policy_kwargs(name: str = DEFAULT_EXTRACTOR, env: Any = None, **extractor_kwargs: Any) -> dict[str, Any]:
    """SB3 ``policy_kwargs`` selecting extractor ``name``; ``window``/``n_assets`` come from ``env`` if given."""
    cls = get_extractor(name)
    kwargs = dict(extractor_kwargs)
    if env is not None and cls is not FlattenObs:
        layout = env_layout(env)
        kwargs.setdefault("window", layout.window)
        kwargs.setdefault("n_assets", layout.n_assets)
    return {"features_extractor_class": cls, "features_extractor_kwargs": kwargs}
