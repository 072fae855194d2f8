"""Trial packs: K configs of one objective trained at once, as one stacked model.

Tuning small models is bound by per-step overhead (kernel launches, Python, the optimizer loop), not by
arithmetic. A pack stacks the parameters of K copies of the objective's model (``torch.func``:
``stack_module_state``, ``functional_call``, ``vmap``) and trains them with one forward, one backward and one
fused optimizer update per step, every member with its own hyperparameters as tensors: learning rate and
schedule factor at every step, momentum or betas, eps, weight decay, L1 penalty, dropout rate (each member its
own masks), gradient-clipping norm, initialiser (applied before stacking), seed and data order.

A member trains exactly as ``tuner.train.Trainer`` trains its config alone (same initial weights, same data
order, the same update rule as ``torch.optim``), up to float rounding; dropout masks differ (they are drawn for
the whole pack at once). Members are held in slots: a slot is filled with a config, trained epoch by epoch,
and freed when its member is pruned, diverges or finishes, so the caller can refill it at an epoch boundary.

What can share a pack (``pack_key``): one batch size and one update family (SGD / momentum / Nesterov; Adam /
AdamW; Adamax; RMSprop; Adagrad; NAdam; RAdam). L-BFGS, Adadelta, Schedule-Free AdamW, Prodigy and the
``plateau`` schedule train unpacked.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from tuner.config import TrainConfig
from tuner.optim import get_optimizer, get_schedule, lr_factors
from tuner.train import Diverged, Trainer, sync

__all__ = ["PackTrainer", "Member", "pack_key", "packable", "FAMILIES"]

# The update rule each packable optimizer uses: one fused update per family, coefficients per member.
FAMILIES = {"sgd": "sgd", "momentum": "sgd", "nesterov": "sgd", "adam": "adam", "adamw": "adam",
            "adamax": "adamax", "rmsprop": "rmsprop", "adagrad": "adagrad", "nadam": "nadam", "nadamw": "nadam",
            "radam": "radam"}


def packable(config: TrainConfig) -> str | None:
    """None when ``config`` can train in a pack; else why not, in words."""
    name = config.optimizer.name
    if name not in FAMILIES:
        return f"the {name!r} optimizer has no fused update"
    if get_schedule(config.schedule.name).factor is None:
        return f"the {config.schedule.name!r} schedule steps on each member's metric"
    return None


def pack_key(config: TrainConfig) -> tuple[int, str, int]:
    """Configs with equal keys can share a pack: batch size, update family, epochs."""
    return config.batch_size, FAMILIES[config.optimizer.name], config.epochs


class _Dropout(nn.Module):
    """Dropout whose rate is a buffer, so that every member of a pack has its own (and its own masks).
    ``spatial``: as ``nn.Dropout1d/2d/3d``, whole channels are dropped (one draw over that many trailing
    dimensions); 0: each element, as ``nn.Dropout``."""

    def __init__(self, p: float, spatial: int = 0) -> None:
        super().__init__()
        self.register_buffer("p", torch.tensor(float(p)))
        self.spatial = spatial
        self.active = True  # False while no member of the pack has a rate above 0: no masks to draw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not self.active:
            return x
        keep = 1.0 - self.p
        drawn = x[(Ellipsis,) + (slice(0, 1),) * self.spatial] if self.spatial else x
        mask = (torch.rand_like(drawn) < keep).to(x.dtype)
        return x * mask / keep.clamp_min(1e-12)


# The dropout modules whose rate a config sets (regularization.set_dropout), as packs train them.
_PACKED_DROPOUT = {nn.Dropout: 0, nn.Dropout1d: 1, nn.Dropout2d: 2, nn.Dropout3d: 3}


def _swap_dropout(model: nn.Module) -> None:
    from tuner.regularization import _DROPOUT

    for name, child in list(model.named_children()):
        if type(child) in _PACKED_DROPOUT:
            setattr(model, name, _Dropout(child.p, _PACKED_DROPOUT[type(child)]))
        elif isinstance(child, _DROPOUT):  # nn.AlphaDropout, or a subclass with a forward of its own
            raise ValueError(f"{type(child).__name__} takes the config's dropout rate, which trials in a pack "
                             f"cannot each have (nn.Dropout and nn.Dropout1d/2d/3d can); its trials train one at "
                             f"a time")
        else:
            _swap_dropout(child)


@dataclass
class Member:
    """The config a slot trains, and what it got through."""

    config: TrainConfig
    slot: int
    val_history: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    epoch_times: list[float] = field(default_factory=list)
    epoch: int = 0
    initial_loss: float | None = None


@dataclass(frozen=True)
class _Terms:
    uses: dict[str, bool]
    l2: torch.Tensor | None
    direct_decay: torch.Tensor | None


class PackTrainer:
    """K slots of one objective's model, trained together. ``fill(slot, config)`` puts a config in a slot
    (fresh weights and optimizer state), ``run_epoch()`` trains every filled slot one epoch and returns the
    validation value of each, ``free(slot)`` empties a slot."""

    def __init__(self, trainer: Trainer, slots: int, batch_size: int, family: str) -> None:
        self.trainer, self.k, self.batch_size, self.family = trainer, slots, batch_size, family
        self.device = trainer.device
        self.members: list[Member | None] = [None] * slots
        data = trainer.data
        self.n = len(data.x_train)
        models = [self._model(TrainConfig()) for _ in range(slots)]
        from tuner.train import rows_left_out

        self.tail = rows_left_out(self.n, batch_size, models[0])  # as Trainer.fit leaves them out
        self.steps_per_epoch = math.ceil((self.n - self.tail) / batch_size)
        from torch.func import stack_module_state

        params, self.buffers = stack_module_state(models)
        self.base = copy.deepcopy(models[0]).to("meta")
        # Every member's parameters side by side in one [K, P] tensor: the update is a few operations on it,
        # not a loop over the model's parameters; the model sees views of it.
        self.layout: dict[str, tuple[int, int, torch.Size]] = {}
        offset = 0
        for name, p in params.items():
            size = p[0].numel()
            self.layout[name] = (offset, offset + size, p.shape[1:])
            offset += size
        self.flat = torch.cat([p.detach().reshape(slots, -1) for p in params.values()], dim=1)
        # Weight decay and L1 apply to weights (dimension >= 2), not to biases or norm scales.
        self.decay = torch.cat([torch.full((p[0].numel(),), float(p.ndim > 2), device=self.device)
                                for p in params.values()])
        self.state = {key: torch.zeros_like(self.flat) for key in ("m", "v", "vmax")}
        self.steps = torch.zeros(slots, device=self.device)  # each member's optimizer steps so far
        self.first = torch.ones(slots, dtype=torch.bool, device=self.device)
        self.coef = {key: torch.zeros(slots, device=self.device) for key in (
            "lr", "momentum", "nesterov", "beta1", "beta2", "eps", "weight_decay", "decoupled", "amsgrad",
            "l1", "clip", "alpha", "centered", "lr_decay", "momentum_decay")}
        self.coef["clip"].fill_(math.inf)  # an empty slot clips nothing
        self.mu_product = torch.ones(slots, dtype=torch.float64, device=self.device)  # NAdam's running product
        self.factors = torch.zeros(slots, 1, device=self.device)  # filled per member
        self.generators: list[torch.Generator | None] = [None] * slots
        self._terms: _Terms | None = None

    def _model(self, config: TrainConfig) -> nn.Module:
        model = self.trainer.build_model(config)
        _swap_dropout(model)
        return model.to(self.device)

    # -- slots ------------------------------------------------------------------------------------------
    def fill(self, slot: int, config: TrainConfig) -> Member:
        why = packable(config)
        if why is not None:
            raise ValueError(f"cannot pack this config: {why}")
        if (config.batch_size, FAMILIES[config.optimizer.name]) != (self.batch_size, self.family):
            raise ValueError("the config's batch size or optimizer family differs from the pack's")
        model = self._model(config)
        with torch.no_grad():
            self.flat[slot] = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
            for state in self.state.values():
                state[slot].zero_()
            if self.family == "adagrad":  # Adagrad's sum of squared gradients starts at its initial value
                start = get_optimizer(config.optimizer.name).kwargs(config.optimizer.params)
                self.state["m"][slot] = float(start.get("initial_accumulator_value", 0.0))
            for name, b in model.named_buffers():
                self.buffers[name][slot].copy_(b)
        opt = config.optimizer
        info = get_optimizer(opt.name)
        kwargs = info.kwargs(opt.params)
        betas = kwargs.get("betas", (0.9, 0.999))
        values = {"lr": opt.lr, "momentum": kwargs.get("momentum", 0.0),
                  "nesterov": float(kwargs.get("nesterov", False)),
                  "beta1": betas[0], "beta2": betas[1], "eps": kwargs.get("eps", 1e-8),
                  "weight_decay": config.regularization.weight_decay,
                  "decoupled": float(info.decoupled_weight_decay), "amsgrad": float(kwargs.get("amsgrad", False)),
                  "l1": config.regularization.l1, "alpha": kwargs.get("alpha", 0.99),
                  "centered": float(kwargs.get("centered", False)), "lr_decay": kwargs.get("lr_decay", 0.0),
                  "momentum_decay": kwargs.get("momentum_decay", 4e-3),
                  "clip": math.inf if config.grad_clip_norm is None else config.grad_clip_norm}
        for key, value in values.items():
            self.coef[key][slot] = value
        total = config.epochs * self.steps_per_epoch
        factors = torch.tensor(lr_factors(config.schedule.name, config.schedule.params, epochs=config.epochs,
                                          steps_per_epoch=self.steps_per_epoch), device=self.device)
        factors = torch.cat([factors, factors[-1:]])  # held past the end, as build_scheduler does
        if self.factors.shape[1] < total + 1:
            grown = torch.zeros(self.k, total + 1, device=self.device)
            grown[:, :self.factors.shape[1]] = self.factors
            self.factors = grown
        self.factors[slot].zero_()
        self.factors[slot, :total + 1] = factors
        self.steps[slot] = 0
        self.first[slot] = True
        self.mu_product[slot] = 1.0
        self.generators[slot] = torch.Generator(device=self.trainer.data.x_train.device).manual_seed(config.seed)
        member = Member(config, slot)
        self.members[slot] = member
        self._terms = None
        return member

    def free(self, slot: int) -> None:
        self.members[slot] = None
        for key, value in (("lr", 0.0), ("l1", 0.0), ("weight_decay", 0.0), ("amsgrad", 0.0), ("clip", math.inf)):
            self.coef[key][slot] = value  # an empty slot changes nothing and costs the others no extra terms
        self._terms = None

    def grow(self, k: int) -> None:
        """Adds empty slots up to ``k`` (a pack that may hold more members than it has slots)."""
        extra = k - self.k
        if extra <= 0:
            return

        def more(t: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
            return torch.cat([t, torch.full((extra, *t.shape[1:]), fill, dtype=t.dtype, device=t.device)])

        self.flat = more(self.flat)
        self.state = {key: more(value) for key, value in self.state.items()}
        self.coef = {key: more(value, math.inf if key == "clip" else 0.0) for key, value in self.coef.items()}
        # Buffers of an empty slot are overwritten by fill(); meanwhile a copy of slot 0's keeps them valid
        # (a BatchNorm variance of 0 would not be).
        self.buffers = {key: torch.cat([value, value[:1].expand(extra, *value.shape[1:])])
                        for key, value in self.buffers.items()}
        self.steps, self.first = more(self.steps), more(self.first, True)
        self.mu_product, self.factors = more(self.mu_product, 1.0), more(self.factors)
        self.generators += [None] * extra
        self.members += [None] * extra
        self.k = k
        self._terms = None

    def compact(self) -> dict[int, int]:
        """Drops the empty slots (a pack that is draining computes only for its members), keeping every
        member's weights, optimizer state, schedule position and data order; returns ``{old slot: new slot}``."""
        keep = [slot for slot, member in enumerate(self.members) if member is not None]
        if len(keep) == self.k or not keep:
            return {slot: slot for slot in keep}
        index = torch.tensor(keep, device=self.device)
        self.flat = self.flat[index].contiguous()
        self.state = {key: value[index].contiguous() for key, value in self.state.items()}
        self.coef = {key: value[index].contiguous() for key, value in self.coef.items()}
        self.buffers = {key: value[index].contiguous() for key, value in self.buffers.items()}
        self.steps, self.first = self.steps[index], self.first[index]
        self.mu_product, self.factors = self.mu_product[index], self.factors[index]
        self.generators = [self.generators[slot] for slot in keep]
        self.members = [self.members[slot] for slot in keep]
        for new, member in enumerate(self.members):
            member.slot = new
        self.k = len(keep)
        self._terms = None
        return {old: new for new, old in enumerate(keep)}

    def _derived(self) -> _Terms:
        """What the update needs of the members' coefficients, worked out once after the members change (not
        per step, not per fill): which terms some member uses (a term no member uses is skipped, as
        ``torch.optim`` skips a zero weight decay) and the [K, P] weight-decay tensors; the step's gradient and
        scratch tensors are sized to the pack here too."""
        if self._terms is not None:
            return self._terms
        c = self.coef
        wd = c["weight_decay"][:, None] * self.decay  # [K, P]
        decoupled = c["decoupled"][:, None] if self.family in ("adam", "nadam", "radam") else 0.0
        coupled, direct = (1 - decoupled) * wd, decoupled * wd
        self._terms = _Terms(
            uses={"l1": bool((c["l1"] != 0).any()), "clip": bool(torch.isfinite(c["clip"]).any()),
                  "amsgrad": bool((c["amsgrad"] > 0).any())},
            l2=coupled if bool((coupled != 0).any()) else None,
            direct_decay=direct if bool((direct != 0).any()) else None)
        # Reused from step to step: a fresh [K, P] tensor per step costs its allocation and first touch.
        if getattr(self, "grad", None) is None or self.grad.shape != self.flat.shape:
            self.grad, self.scratch = torch.empty_like(self.flat), torch.empty_like(self.flat)
        return self._terms

    @property
    def uses(self) -> dict[str, bool]:
        """Which of the L1, clipping and AMSGrad terms some member uses."""
        return self._derived().uses

    @property
    def l2(self) -> torch.Tensor | None:
        """Coupled weight decay per weight ([K, P], added to the gradient); None where no member has it."""
        return self._derived().l2

    @property
    def direct_decay(self) -> torch.Tensor | None:
        """Decoupled weight decay per weight (AdamW, NAdamW: applied to the weights); None where none has it."""
        return self._derived().direct_decay

    # -- training -----------------------------------------------------------------------------------------
    def _views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: flat[:, a:b].view(self.k, *shape) for name, (a, b, shape) in self.layout.items()}

    def _forward(self, params: dict[str, torch.Tensor], x: torch.Tensor, train: bool,
                 y: torch.Tensor | None = None) -> torch.Tensor:
        """Every member's output on its own inputs; with ``y``, every member's loss instead (one vmap)."""
        from torch.func import functional_call, vmap

        self.base.train(train)
        loss_fn = self.trainer.loss_fn

        def one(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], xb: torch.Tensor, *yb: torch.Tensor):
            out = functional_call(self.base, (p, b), (xb,))
            return loss_fn(out, yb[0]) if yb else out

        return vmap(one, randomness="different")(params, self.buffers, x, *(() if y is None else (y,)))

    def run_epoch(self) -> dict[int, float]:
        """Trains every filled slot one epoch; returns ``{slot: validation value}``. A member that diverges
        raises nothing here: ``check(slot)`` says so, with the reason."""

        data, bs = self.trainer.data, self.batch_size
        active = [m for m in self.members if m is not None]
        if not active:
            return {}
        start = time.perf_counter()
        self._set_dropout()
        perms = []
        for slot in range(self.k):
            gen = self.generators[slot]
            if self.members[slot] is None or gen is None:
                perms.append(torch.arange(self.n, device=data.x_train.device))
            else:
                perms.append(torch.randperm(self.n, generator=gen, device=data.x_train.device))
        perm = torch.stack(perms)
        losses = [self._step(perm[:, i:i + bs]) for i in range(0, self.n - self.tail, bs)]
        per_step = torch.stack(losses)  # [steps, K]
        values: dict[int, float] = {}
        for member in active:
            slot = member.slot
            mean_loss = float(per_step[:, slot].mean())
            member.train_loss.append(mean_loss)
            if member.initial_loss is None:
                member.initial_loss = abs(float(per_step[0, slot])) + 1e-8
            member.epoch += 1
            values[slot] = self._evaluate(slot, data.x_val, data.y_val)
            member.epoch_times.append((time.perf_counter() - start) / len(active))
            member.val_history.append(values[slot])
        return values

    def _set_dropout(self) -> None:
        """Dropout draws masks only while some member of the pack has a rate above 0."""
        for name, module in self.base.named_modules():
            if isinstance(module, _Dropout):
                module.active = bool((self.buffers[f"{name}.p" if name else "p"] > 0).any())

    def _step(self, idx: torch.Tensor) -> torch.Tensor:
        """One training step of every slot on its own batch (``idx``: [K, batch] rows); the members' losses."""

        data = self.trainer.data
        xb, yb = data.x_train[idx].to(self.device), data.y_train[idx].to(self.device)
        # One leaf per parameter (views of the flat tensor): the backward pass writes each gradient once,
        # where a leaf of the whole [K, P] tensor would get a zero-filled [K, P] gradient per parameter.
        views = {name: view.detach().requires_grad_(True) for name, view in self._views(self.flat).items()}
        terms = self._derived()
        member_loss = self._forward(views, xb, train=True, y=yb)
        total = member_loss.sum()
        if terms.uses["l1"]:
            sizes = torch.stack([(views[name].abs().reshape(self.k, -1) * self.decay[a:b]).sum(1)
                                 for name, (a, b, _) in self.layout.items()]).sum(0)
            penalty = self.coef["l1"] * sizes
            total = total + penalty.sum()
        # A parameter the forward pass does not use gets a zero gradient, as the Trainer's optimizer sees it.
        grads = torch.autograd.grad(total, list(views.values()), allow_unused=True, materialize_grads=True)
        for g, (a, b, shape) in zip(grads, self.layout.values(), strict=True):  # one copy each, no temporaries
            self.grad[:, a:b].view(self.k, *shape).copy_(g)
        self._update(self.grad, terms)
        return member_loss.detach()

    def time_steps(self, steps: int) -> float:
        """Seconds that ``steps`` training steps of the whole pack take (after two unmeasured ones); for
        choosing a pack size. Changes the members' weights: a pack timed is not trained on."""
        n = min(self.n, self.batch_size)
        idx = torch.arange(n, device=self.trainer.data.x_train.device).expand(self.k, n)
        self._set_dropout()
        for _ in range(2):
            self._step(idx)
        sync(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            self._step(idx)
        sync(self.device)
        return time.perf_counter() - start

    def check(self, slot: int) -> None:
        """Raises ``Diverged`` when the slot's member diverged in its last epoch (the Trainer's rules)."""
        member = self.members[slot]
        if member is None:
            return
        loss, epoch = member.train_loss[-1], member.epoch
        if not math.isfinite(loss):
            raise Diverged(f"diverged: training loss became {loss} in epoch {epoch}", epoch - 1)
        if member.initial_loss is not None and loss > self.trainer.divergence_factor * member.initial_loss:
            raise Diverged(f"diverged: training loss {loss:.4g} in epoch {epoch} is over "
                           f"{self.trainer.divergence_factor:g}x the initial {member.initial_loss:.4g}", epoch - 1)
        value = member.val_history[-1]
        if not math.isfinite(value):
            raise Diverged(f"diverged: validation {self.trainer.metric.name} is {value} in epoch {epoch}", epoch - 1)

    @torch.no_grad()
    def _evaluate(self, slot: int, x: torch.Tensor, y: torch.Tensor) -> float:
        from torch.func import functional_call

        self.base.eval()
        params = self.member_parameters(slot)
        buffers = {k: v[slot] for k, v in self.buffers.items()}
        return self.trainer.metric_of(lambda rows: functional_call(self.base, (params, buffers), (rows,)), x, y)

    def test_value(self, slot: int) -> float | None:
        data = self.trainer.data
        return None if data.x_test is None else self._evaluate(slot, data.x_test, data.y_test)

    @torch.no_grad()
    def _update(self, g: torch.Tensor, terms: _Terms) -> None:
        """One optimizer step of every member on the flat [K, P] parameters, as ``torch.optim`` does it.
        ``g`` is this step's gradient (``self.grad``), which the update may overwrite."""
        c = self.coef
        col = {key: value[:, None] for key, value in c.items()}  # [K, 1]: broadcast over the parameters
        if terms.uses["clip"]:  # per member, as torch.nn.utils.clip_grad_norm_ does it (eps 1e-6)
            norms = g.pow(2).sum(1).sqrt()
            clip = torch.where(torch.isinf(c["clip"]), torch.ones_like(norms),
                               (c["clip"] / (norms + 1e-6)).clamp(max=1.0))
            g.mul_(clip[:, None])
        self.steps += 1
        step = self.steps[:, None]
        index = (self.steps - 1).long().clamp(max=self.factors.shape[1] - 1)[:, None]
        lr = (c["lr"][:, None] * self.factors.gather(1, index))  # [K, 1]
        p, s = self.flat, self.state
        if terms.l2 is not None:  # coupled weight decay (L2): part of the gradient
            g.addcmul_(terms.l2, p)
        if terms.direct_decay is not None:  # decoupled weight decay (AdamW, NAdamW): the weights shrink directly
            p.mul_(1 - lr * terms.direct_decay)
        if self.family == "sgd":
            buf, m = s["m"], col["momentum"]
            first = self.first[:, None].to(p.dtype)
            buf.copy_(first * g + (1 - first) * (m * buf + g))
            update = torch.where(col["nesterov"] > 0, g + m * buf, buf)
            p.sub_(lr * update)
        elif self.family == "adamax":
            s["m"].lerp_(g, 1 - col["beta1"])
            torch.maximum(s["v"].mul_(col["beta2"]), g.abs().add_(col["eps"]), out=s["v"])
            p.sub_(lr / (1 - col["beta1"] ** step) * s["m"] / s["v"])
        elif self.family == "rmsprop":
            alpha = col["alpha"]
            s["m"].mul_(alpha).addcmul_(g, g * (1 - alpha))
            s["v"].lerp_(g, 1 - alpha)
            centered = (s["m"] - s["v"] * s["v"]).sqrt()
            avg = torch.where(col["centered"] > 0, centered, s["m"].sqrt()) + col["eps"]
            s["vmax"].mul_(col["momentum"]).add_(g / avg)
            p.sub_(lr * torch.where(col["momentum"] > 0, s["vmax"], g / avg))
        elif self.family == "adagrad":
            s["m"].addcmul_(g, g)
            p.sub_(lr / (1 + (step - 1) * col["lr_decay"]) * g / (s["m"].sqrt() + col["eps"]))
        elif self.family in ("nadam", "radam"):
            s["m"].lerp_(g, 1 - col["beta1"])
            s["v"].mul_(col["beta2"]).addcmul_(g, g * (1 - col["beta2"]))
            # The scalar coefficients in double precision, as torch computes them in Python floats.
            t, b1, b2 = self.steps.double(), c["beta1"].double(), c["beta2"].double()
            bc2 = 1 - b2 ** t
            lr64 = lr[:, 0].double()
            if self.family == "nadam":
                mu = b1 * (1.0 - 0.5 * 0.96 ** (t * c["momentum_decay"].double()))
                mu_next = b1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * c["momentum_decay"].double()))
                self.mu_product = (self.mu_product * mu).float().double()  # stored as float32, as torch does
                denom = (s["v"] / bc2.float()[:, None]).sqrt_().add_(col["eps"])
                first = (-lr64 * (1.0 - mu) / (1.0 - self.mu_product)).float()[:, None]
                second = (-lr64 * mu_next / (1.0 - self.mu_product * mu_next)).float()[:, None]
                p.add_(first * (g / denom)).add_(second * (s["m"] / denom))
            else:
                bc1 = 1 - b1 ** t
                rho_inf = 2 / (1 - b2) - 1
                rho_t = rho_inf - 2 * t * b2 ** t / bc2
                rect = ((rho_t - 4) * (rho_t - 2) * rho_inf
                        / ((rho_inf - 4) * (rho_inf - 2) * rho_t)).clamp(min=0).sqrt()
                corrected = s["m"] / bc1.float()[:, None]
                adaptive = bc2.sqrt().float()[:, None] / (s["v"].sqrt() + col["eps"])
                rectified = (rho_t > 5.0)[:, None]
                p.sub_(torch.where(rectified, corrected * lr * adaptive * rect.float()[:, None], corrected * lr))
        else:  # adam / adamw
            b1, b2, scratch = col["beta1"], col["beta2"], self.scratch
            s["m"].lerp_(g, 1 - b1)
            s["v"].mul_(b2).addcmul_(g, torch.mul(g, 1 - b2, out=scratch))
            bc1 = 1 - b1 ** step
            bc2_sqrt = (1 - b2 ** step).sqrt()
            second = s["v"]
            if terms.uses["amsgrad"]:
                torch.maximum(s["vmax"], s["v"], out=s["vmax"])
                second = torch.where(col["amsgrad"] > 0, s["vmax"], s["v"])
            denom = torch.sqrt(second, out=scratch).div_(bc2_sqrt).add_(col["eps"])
            p.sub_(torch.mul(s["m"], lr / bc1, out=g).div_(denom))  # the gradient is spent: its tensor is reused
        self.first.zero_()

    def member_parameters(self, slot: int) -> dict[str, torch.Tensor]:
        """The slot's parameters by name, as the unpacked model names them."""
        return {name: view[slot] for name, view in self._views(self.flat).items()}
