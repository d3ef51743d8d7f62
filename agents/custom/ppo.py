"""PPO in one file, on ``CryptoTradingVectorEnv`` directly (continuous ``weights`` action schemes).

Read top to bottom: the arguments, the observation normaliser, the network, the policy that acts
from a saved bundle, then the training loop (rollout, advantages, update). The algorithm is PPO with
clipped surrogate and value losses and GAE (Schulman et al. 2017), written in the style of CleanRL's
``ppo_continuous_action.py`` with three differences that matter for trading:

* **Truncation is not termination.** An episode cut by its length (``truncated``) did not end the
  market: its last reward is bootstrapped with ``gamma * V(final observation)``. Only bankruptcy or
  liquidation (``terminated``) has a value of zero after it.
* **The observation normaliser is part of the model.** Running mean and variance are frozen during a
  rollout (the stored observations are the ones the policy acted on), updated after it, saved in the
  bundle and applied by :class:`PPOPolicy` at inference.
* **Seeded everywhere**: the env's start bars, the action noise and the minibatch order come from
  generators seeded by ``Args.seed``; with one torch thread two runs are identical.

Command line (``--help`` lists every field of :class:`Args`)::

    python -m factorgym.agents.custom.ppo --tensor tensors/sample --total-timesteps 200000 --out runs/ppo.bundle

Python::

    result = train(Args(total_timesteps=20_000), tensor)
    policy = result.policy()          # a Policy: obs -> action, for backtest(...)
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from factorgym.agents.extractors import get_extractor
from factorgym.envs.vector_env import CryptoTradingVectorEnv
from factorgym.errors import ConfigError

MODEL_KIND = "factorgym-ppo"
MODEL_FILE = "ppo.pt"


@dataclass
class Args:
    # --- data and env
    tensor: str = ""
    """tensor folder to train on (command line only; Python callers pass the tensor itself)"""
    train_fraction: float = 0.8
    """leading fraction of the tensor's bars to train on; the rest is the validation split (command line)"""
    window: int = 1
    """observation window, bars"""
    mapping: str = "simplex"
    """weights mapping of the action: simplex (long-only), signed (long/short) or direct"""
    reward: str = "log_return"
    """the env's reward name"""
    episode_length: int = 256
    """env steps per episode (random start bars); shorter episodes give more varied starts"""
    # --- algorithm
    total_timesteps: int = 200_000
    """env steps to collect in total (all envs together)"""
    num_envs: int = 64
    """envs stepped together in one kernel call"""
    num_steps: int = 32
    """steps per env per rollout; a rollout holds num_envs * num_steps transitions"""
    minibatch_size: int = 2048
    """transitions per gradient step (SB3's batch_size); must divide num_envs * num_steps"""
    update_epochs: int = 4
    """passes over each rollout"""
    learning_rate: float = 3e-4
    """Adam step size"""
    anneal_lr: bool = False
    """decay the learning rate linearly to 0 over the run"""
    gamma: float = 0.99
    """discount per bar"""
    gae_lambda: float = 0.95
    """GAE's bias/variance trade-off"""
    clip_coef: float = 0.2
    """PPO's ratio clip"""
    clip_vloss: bool = False
    """also clip the value update to +-clip_coef (CleanRL's default; SB3's is off, and it did not help here)"""
    ent_coef: float = 0.0
    """entropy bonus weight"""
    vf_coef: float = 0.5
    """value loss weight"""
    max_grad_norm: float = 0.5
    """gradient norm clip"""
    target_kl: float = math.inf
    """stop the epochs of an update early once the approximate KL exceeds this (inf: never)"""
    norm_obs: bool = True
    """normalise the observation's features with running statistics (saved with the model)"""
    clip_obs: float = 10.0
    """clip normalised features to +-clip_obs"""
    # --- network
    extractor: str = "mlp"
    """feature extractor name (factorgym.agents.extractors.EXTRACTORS)"""
    hidden: tuple[int, ...] = (64, 64)
    """widths of the actor and critic hidden layers (separate networks, tanh)"""
    log_std_init: float = 0.0
    """initial log standard deviation of the Gaussian actions"""
    # --- plumbing
    seed: int = 0
    """seeds the env's start bars, the action noise, the minibatch order and the initial weights"""
    torch_threads: int = 1
    """torch intra-op threads (1 is often fastest on a busy 2-core machine; measure)"""
    max_seconds: float = math.inf
    """stop after the update that crosses this wall time (for equal-time comparisons)"""
    log_dir: str = ""
    """TensorBoard folder ('' = none)"""
    out: str = ""
    """where to write the policy bundle (command line; '' = do not save)"""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """further CryptoTradingVectorEnv arguments (Python only), e.g. execution=ExecutionConfig(...)"""


class RunningNorm:
    """Running mean and variance of the observation's feature block (its first ``dim`` entries), merged
    batch by batch in float64. The mask and portfolio entries after it have known scales (0/1,
    weights, equity ratio, drawdown) and pass through: scaling their tiny variances up would make
    them as loud as the features."""

    def __init__(self, dim: int, clip: float = 10.0, enabled: bool = True) -> None:
        self.mean, self.var, self.count = np.zeros(dim), np.ones(dim), 1e-4
        self.clip, self.enabled = float(clip), bool(enabled)

    def update(self, batch: np.ndarray) -> None:
        if not self.enabled:
            return
        d = len(self.mean)
        x = batch.reshape(-1, batch.shape[-1])[:, :d].astype(np.float64)
        n, m, v = len(x), x.mean(axis=0), x.var(axis=0)
        delta, total = m - self.mean, self.count + n
        self.mean = self.mean + delta * n / total
        self.var = (self.var * self.count + v * n + delta ** 2 * self.count * n / total) / total
        self.count = total

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        out = np.array(obs, dtype=np.float32)  # a copy
        if self.enabled:
            d = len(self.mean)
            z = (out[..., :d] - self.mean) / np.sqrt(self.var + 1e-8)
            out[..., :d] = np.clip(z, -self.clip, self.clip)
        return out

    def state(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "var": self.var.tolist(), "count": self.count, "clip": self.clip,
                "enabled": self.enabled}

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> "RunningNorm":
        norm = cls(len(s["mean"]), s["clip"], s["enabled"])
        norm.mean, norm.var, norm.count = np.asarray(s["mean"]), np.asarray(s["var"]), float(s["count"])
        return norm


def _mlp(n_in: int, hidden: tuple[int, ...], n_out: int, out_gain: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        lin = nn.Linear(n_in, h)
        nn.init.orthogonal_(lin.weight, math.sqrt(2)), nn.init.zeros_(lin.bias)
        layers += [lin, nn.Tanh()]
        n_in = h
    head = nn.Linear(n_in, n_out)
    nn.init.orthogonal_(head.weight, out_gain), nn.init.zeros_(head.bias)
    return nn.Sequential(*layers, head)


class ActorCritic(nn.Module):
    """Shared feature extractor; separate actor (Gaussian mean) and critic MLPs; a free log-std."""

    def __init__(self, obs_space: spaces.Box, n_actions: int, extractor: str, extractor_kwargs: dict[str, Any],
                 hidden: tuple[int, ...], log_std_init: float) -> None:
        super().__init__()
        self.extractor = get_extractor(extractor)(obs_space, **extractor_kwargs)
        d = self.extractor.features_dim
        self.actor = _mlp(d, hidden, n_actions, 0.01)
        self.critic = _mlp(d, hidden, 1, 1.0)
        self.log_std = nn.Parameter(torch.full((n_actions,), float(log_std_init)))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(action mean [B, K], value [B])"""
        z = self.extractor(obs)
        return self.actor(z), self.critic(z).squeeze(-1)

    def log_prob(self, mean: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Gaussian log density of ``action`` summed over its K dimensions [B]."""
        z = (action - mean) * torch.exp(-self.log_std)
        return (-0.5 * z * z - self.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


class PPOPolicy:
    """A trained PPO actor as a ``Policy``: ``__call__(obs) -> action`` (the Gaussian's mean, clipped
    to the action space), ``reset()``, ``spec``. Applies the saved observation normaliser."""

    def __init__(self, net: ActorCritic, norm: RunningNorm, low: np.ndarray, high: np.ndarray, spec: Any = None) -> None:
        self.net, self.norm, self.low, self.high, self.spec = net.eval(), norm, low, high, spec

    def reset(self) -> None:
        """Stateless: nothing to reset."""

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32)
        if obs.shape[-1:] != self.net.extractor._observation_space.shape:
            raise ConfigError(f"observation of length {obs.shape[-1] if obs.ndim else 0}; the policy was trained on "
                              f"{self.net.extractor._observation_space.shape[0]}: build the env from policy.spec.env_kwargs()")
        x = torch.from_numpy(self.norm(obs))
        with torch.inference_mode():
            mean, _ = self.net(x.reshape(1, -1) if x.ndim == 1 else x)
        a = np.clip(mean.numpy(), self.low, self.high)
        return a[0] if np.ndim(obs) == 1 else a


@dataclass
class PPOResult:
    """What :func:`train` returns: the network, its normaliser, counts and per-update statistics."""

    net: ActorCritic
    norm: RunningNorm
    args: Args
    venv: CryptoTradingVectorEnv
    env_steps: int
    seconds: float
    env_seconds: float
    history: list[dict[str, float]]

    def policy(self, spec: Any = None) -> PPOPolicy:
        sp = self.venv.single_action_space
        return PPOPolicy(self.net, self.norm, sp.low, sp.high, spec)


def make_env(args: Args, tensor: Any) -> CryptoTradingVectorEnv:
    """The training vector env the arguments describe (flat observations, a ``weights`` scheme)."""
    kwargs = {"window": args.window, "mapping": args.mapping, "reward": args.reward,
              "episode_length": args.episode_length, **args.env_kwargs}
    if kwargs.get("action_scheme", "weights") != "weights" or kwargs.get("observation", "flat") != "flat":
        raise ConfigError("the custom PPO handles action_scheme='weights' with observation='flat'; use SB3 for others")
    return CryptoTradingVectorEnv(tensor, args.num_envs, **kwargs)


def advantages(rewards: torch.Tensor, values: torch.Tensor, bootstrap: torch.Tensor, ended: torch.Tensor,
               next_value: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """GAE advantages [T, N] of one rollout (all inputs [T, N] but ``next_value`` [N]).

    ``ended[t]`` is 1 where step t finished an episode; the value after it is then ``bootstrap[t]``
    (V of the final observation when the episode was truncated, 0 when it terminated) instead of the
    next stored value, which belongs to a new episode. After the last step comes ``next_value``.
    """
    T = rewards.shape[0]
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(next_value)
    for t in reversed(range(T)):
        keep = 1.0 - ended[t]
        v_next = (next_value if t == T - 1 else values[t + 1]) * keep + bootstrap[t] * ended[t]
        delta = rewards[t] + gamma * v_next - values[t]
        running = delta + gamma * lam * keep * running
        adv[t] = running
    return adv


def train(args: Args, tensor: Any, *, on_update: Callable[[dict[str, float]], None] | None = None) -> PPOResult:
    """Train PPO on ``tensor``'s bars; ``on_update(stats)`` is called after every update."""
    batch = args.num_envs * args.num_steps
    if args.minibatch_size < 1 or batch % args.minibatch_size:
        raise ConfigError(f"minibatch_size={args.minibatch_size} must divide num_envs * num_steps = {batch}")
    n_updates = max(1, args.total_timesteps // batch)
    torch.set_num_threads(args.torch_threads)
    torch.manual_seed(args.seed)
    noise = torch.Generator().manual_seed(args.seed + 1)  # action noise and minibatch order

    venv = make_env(args, tensor)
    obs_space, act_space = venv.single_observation_space, venv.single_action_space
    N, T, D, K = args.num_envs, args.num_steps, obs_space.shape[0], act_space.shape[0]
    ext_kwargs = {} if args.extractor == "mlp" else {"window": args.window, "n_assets": venv.core.n_assets}
    net = ActorCritic(obs_space, K, args.extractor, ext_kwargs, tuple(args.hidden), args.log_std_init)
    opt = torch.optim.Adam(net.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)
    core = venv.core
    norm = RunningNorm(args.window * core.n_assets * core.n_features, args.clip_obs, args.norm_obs)
    low, high = act_space.low, act_space.high
    writer = None
    if args.log_dir:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(args.log_dir)

    # storage, one row per rollout step: shapes [T, N, ...]
    obs_buf = torch.zeros((T, N, D))      # normalised observations the policy acted on
    raw_buf = np.zeros((T, N, D), dtype=np.float32)  # the same, raw (for the normaliser's update)
    act_buf = torch.zeros((T, N, K))      # sampled (unclipped) actions
    logp_buf = torch.zeros((T, N))        # their log-probabilities under the acting policy
    rew_buf = torch.zeros((T, N))         # rewards
    boot_buf = torch.zeros((T, N))        # V(final observation) where the step truncated the episode, else 0
    end_buf = torch.zeros((T, N))         # 1.0 where the step ended the episode (terminated or truncated)
    val_buf = torch.zeros((T, N))         # V(obs) at each step

    raw, _ = venv.reset(seed=args.seed)
    norm.update(raw)
    start, env_seconds, update_seconds, history = time.perf_counter(), 0.0, 0.0, []
    for update in range(1, n_updates + 1):
        if args.anneal_lr:
            opt.param_groups[0]["lr"] = args.learning_rate * (1.0 - (update - 1) / n_updates)

        # ---- rollout: T steps of N envs with the current policy
        with torch.no_grad():
            std = net.log_std.exp()
            logp_at_mean = -(net.log_std.sum() + 0.5 * K * math.log(2 * math.pi))  # log density at the mean
            for t in range(T):
                raw_buf[t] = raw
                obs_buf[t].numpy()[:] = norm(raw)  # (a view: written in place)
                mean, value = net(obs_buf[t])
                eps = torch.randn((N, K), generator=noise)
                act_buf[t], val_buf[t] = mean + std * eps, value
                logp_buf[t] = logp_at_mean - 0.5 * (eps * eps).sum(-1)  # = net.log_prob(mean, action)
                t0 = time.perf_counter()
                raw, reward, terminated, truncated, infos = venv.step(np.clip(act_buf[t].numpy(), low, high))
                env_seconds += time.perf_counter() - t0
                rew_buf[t] = torch.from_numpy(np.asarray(reward, dtype=np.float32))
                ended = terminated | truncated
                end_buf[t] = torch.from_numpy(ended.astype(np.float32))
                cut = np.flatnonzero(truncated & ~terminated)
                boot_buf[t] = 0.0
                if cut.size:  # the market goes on after a time limit: remember V(final observation)
                    final = np.stack([infos["final_obs"][i] for i in cut])
                    boot_buf[t, cut] = net(torch.from_numpy(norm(final)))[1]
            next_value = net(torch.from_numpy(norm(raw)))[1]
            adv = advantages(rew_buf, val_buf, boot_buf, end_buf, next_value, args.gamma, args.gae_lambda)
            returns = adv + val_buf
        norm.update(raw_buf)  # after the rollout: the stored observations stay as acted on

        # ---- update: update_epochs passes of shuffled minibatches
        t_update = time.perf_counter()
        b_obs, b_act, b_logp = obs_buf.reshape(-1, D), act_buf.reshape(-1, K), logp_buf.reshape(-1)
        b_adv, b_ret, b_val = adv.reshape(-1), returns.reshape(-1), val_buf.reshape(-1)
        clipped, kl = [], 0.0
        for _ in range(args.update_epochs):
            order = torch.randperm(batch, generator=noise)
            for lo in range(0, batch, args.minibatch_size):
                mb = order[lo:lo + args.minibatch_size]
                mean, value = net(b_obs[mb])
                logratio = net.log_prob(mean, b_act[mb]) - b_logp[mb]
                ratio = logratio.exp()
                a = b_adv[mb]
                a = (a - a.mean()) / (a.std() + 1e-8)
                pg_loss = torch.max(-a * ratio, -a * ratio.clamp(1 - args.clip_coef, 1 + args.clip_coef)).mean()
                v_loss = (value - b_ret[mb]) ** 2  # SB3's scale: vf_coef * mean squared error
                if args.clip_vloss:
                    v_clip = b_val[mb] + (value - b_val[mb]).clamp(-args.clip_coef, args.clip_coef)
                    v_loss = torch.max(v_loss, (v_clip - b_ret[mb]) ** 2)
                v_loss = v_loss.mean()
                entropy = (net.log_std + 0.5 * math.log(2 * math.pi * math.e)).sum()
                loss = pg_loss - args.ent_coef * entropy + args.vf_coef * v_loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(net.parameters(), args.max_grad_norm)
                opt.step()
                with torch.no_grad():
                    kl = float(((ratio - 1) - logratio).mean())
                    clipped.append(float(((ratio - 1).abs() > args.clip_coef).float().mean()))
            if kl > args.target_kl:
                break

        # ---- bookkeeping
        update_seconds += time.perf_counter() - t_update
        elapsed = time.perf_counter() - start
        stats = {"update": update, "env_steps": update * batch, "seconds": elapsed, "sps": update * batch / elapsed,
                 "env_seconds": env_seconds, "update_seconds": update_seconds,
                 "policy_loss": float(pg_loss.detach()), "value_loss": float(v_loss.detach()), "approx_kl": kl,
                 "clip_fraction": float(np.mean(clipped)), "std": float(net.log_std.detach().exp().mean()),
                 "mean_reward": float(rew_buf.mean())}
        history.append(stats)
        if writer is not None:
            for k, v in stats.items():
                writer.add_scalar(("charts/" if k in ("sps", "mean_reward") else "losses/") + k, v, update * batch)
        if on_update is not None:
            on_update(stats)
        if elapsed > args.max_seconds:
            break
    if writer is not None:
        writer.close()
    return PPOResult(net, norm, args, venv, history[-1]["env_steps"], time.perf_counter() - start, env_seconds, history)


# ---------------------------------------------------------------------- the policy bundle
def spec_of(result: PPOResult, tensor: Any) -> Any:
    """The ``PolicySpec`` of the training env over ``tensor`` (any split of it), with the feature
    normaliser's statistics and the run's arguments."""
    from factorgym.agents.bundle import PolicySpec, _jsonable

    args, norm = result.args, result.norm
    stats = {"kind": "features", "applies_to": "the first len(mean) observation entries (the feature block)",
             "mean": norm.mean.tolist(), "var": norm.var.tolist(), "count": norm.count, "clip_obs": norm.clip,
             "epsilon": 1e-8} if norm.enabled else None
    run_args = _jsonable({k: v for k, v in dataclasses.asdict(args).items() if k != "env_kwargs"})
    return PolicySpec.from_env(result.venv, tensor, obs_normaliser=stats,
                               extra={"algorithm": MODEL_KIND, "args": run_args, "env_steps": result.env_steps})


def save(result: PPOResult, path: str | Path, tensor: Any) -> Path:
    """Write ``result`` as a policy bundle (``model_kind="factorgym-ppo"``): the spec, the weights."""
    from factorgym.agents.bundle import save_bundle

    args, venv, spec = result.args, result.venv, spec_of(result, tensor)
    sp = venv.single_action_space
    arch = {"obs_dim": int(venv.single_observation_space.shape[0]), "n_actions": int(sp.shape[0]),
            "low": sp.low.tolist(), "high": sp.high.tolist(), "extractor": args.extractor,
            "extractor_kwargs": {} if args.extractor == "mlp" else {"window": args.window, "n_assets": venv.core.n_assets},
            "hidden": list(args.hidden)}
    write = lambda folder: torch.save({"arch": arch, "state_dict": result.net.state_dict()}, folder / MODEL_FILE)  # noqa: E731
    return save_bundle(path, spec=spec, model_kind=MODEL_KIND, write_model=write)


def load(model_dir: Path, spec: Any) -> PPOPolicy:
    """The bundle loader for ``model_kind="factorgym-ppo"`` (registered below)."""
    saved = torch.load(Path(model_dir) / MODEL_FILE, weights_only=True)
    arch = saved["arch"]
    obs_space = spaces.Box(-np.inf, np.inf, (arch["obs_dim"],), dtype=np.float32)
    net = ActorCritic(obs_space, arch["n_actions"], arch["extractor"], arch["extractor_kwargs"], tuple(arch["hidden"]), 0.0)
    net.load_state_dict(saved["state_dict"])
    stats = spec.obs_normaliser
    norm = RunningNorm(0, enabled=False) if stats is None else RunningNorm.from_state(
        {"mean": stats["mean"], "var": stats["var"], "count": stats["count"], "clip": stats["clip_obs"], "enabled": True})
    low, high = (np.asarray(arch[k], dtype=np.float32) for k in ("low", "high"))
    return PPOPolicy(net, norm, low, high, spec)


def _register() -> None:
    from factorgym.agents.bundle import register_policy_loader

    register_policy_loader(MODEL_KIND, load)


_register()


if __name__ == "__main__":  # python -m factorgym.agents.custom.ppo: the command line (ppo_cli)
    from factorgym.agents.custom.ppo_cli import main

    raise SystemExit(main())
