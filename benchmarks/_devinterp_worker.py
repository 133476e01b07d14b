"""devinterp's SGLD on an exported lambda-hat target, run in benchmarks/.venv-devinterp.

Called by ``vs_devinterp.py`` once per run, in its own process, so that the process's
wall time and peak memory are the run's. It imports only torch, numpy and devinterp.

The exported ``.npz`` holds x (n, d_in), y (n, d_out), the layer weights ``w0``, ``w1``,
... of a bias-free linear network (a linear regression is one layer) in torch's
(out, in) layout, the likelihood's noise σ, and the run's settings as JSON. Output is a
JSON object on the last line of stdout.

devinterp 2.x's top-level ``sample``/``llc`` expect a token dataset (an integer
``input_ids`` column and per-token losses). For a regression target we call the loop
``sample`` runs once per chain, ``devinterp.slt.sampler.sample_single_chain``, with the
same optimizer ``sample`` uses by default (``SGMCMC.sgld``) and the same arguments
``sample`` passes it, and record the minibatch losses the way ``sample`` records them
(per step, burn-in included).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from importlib.metadata import version

T_START = time.perf_counter()

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _rss import peak_rss_mb  # noqa: E402
from devinterp.optim import SGMCMC  # noqa: E402
from devinterp.slt.sampler import sample_single_chain  # noqa: E402
from torch import nn  # noqa: E402

T_IMPORTED = time.perf_counter()


class Rows(torch.utils.data.Dataset):
    """One sample per item, as the dict devinterp's loop reads ("input_ids")."""

    def __init__(self, xy: torch.Tensor):
        self.xy = xy

    def __len__(self) -> int:
        return self.xy.shape[0]

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.xy[i]}


def build_model(arrays, dtype: torch.dtype) -> nn.Sequential:
    """The bias-free linear network whose layer weights are w0, w1, ... ."""
    layers = []
    i = 0
    while f"w{i}" in arrays:
        w = torch.as_tensor(arrays[f"w{i}"], dtype=dtype)
        layer = nn.Linear(w.shape[1], w.shape[0], bias=False, dtype=dtype)
        with torch.no_grad():
            layer.weight.copy_(w)
        layers.append(layer)
        i += 1
    return nn.Sequential(*layers)


def main(path: str) -> None:
    arrays = np.load(path)
    s = json.loads(str(arrays["settings"]))
    dtype = {"float32": torch.float32, "float64": torch.float64}[s["dtype"]]
    torch.set_num_threads(int(s.get("threads") or torch.get_num_threads()))
    x = torch.as_tensor(arrays["x"], dtype=dtype)
    y = torch.as_tensor(arrays["y"], dtype=dtype)
    d_in, d_out = x.shape[1], y.shape[1]
    noise = float(arrays["noise"])
    const = d_out * (math.log(noise) + 0.5 * math.log(2 * math.pi))
    model = build_model(arrays, dtype)

    def nll(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        """Per-sample Gaussian negative log-likelihood, shape (batch,)."""
        resid = (yb - m(xb)) / noise
        return 0.5 * (resid**2).sum(-1) + const

    def evaluate(m: nn.Module, data: dict) -> tuple[torch.Tensor, dict]:
        xy = data["input_ids"]
        return nll(m, xy[:, :d_in], xy[:, d_in:]), {}

    with torch.no_grad():
        L0 = float(nll(model, x, y).double().mean())

    n_chains, n_steps, burn_in = s["n_chains"], s["n_steps"], s["burn_in"]
    batch_size = s["batch_size"]
    losses = np.zeros((n_chains, n_steps))

    def on_micro(*, loss, chain, step, **_):
        losses[chain, step] = float(loss.double().mean())

    dataset = Rows(torch.cat([x, y], dim=1))
    t0 = time.perf_counter()
    for chain in range(n_chains):
        # The arguments devinterp's `sample` passes for one chain (its defaults:
        # init_seed 100, minibatches matched across chains, shuffled, cycled).
        sample_single_chain(
            ref_model=model,
            dataset=dataset,
            evaluate=evaluate,
            param_masks={name: None for name, _ in model.named_parameters()},
            num_draws=n_steps - burn_in,
            num_burnin_steps=burn_in,
            num_steps_bw_draws=1,
            sampling_method=SGMCMC.sgld,
            sampling_method_kwargs={
                "nbeta": s["nbeta"],
                "lr": s["step_size"],
                "localization": s["gamma"],
                "noise_level": 1.0,
                "weight_decay": 0.0,
                "bounding_box_size": None,
                "save_metrics": False,
            },
            chain=chain,
            seed=100 + chain,
            dataloader_seed=100,
            device="cpu",
            callbacks=[],
            micro_callback=on_micro,
            batch_size=batch_size,
        )
    sampling_s = time.perf_counter() - t0

    # devinterp's own estimate (slt.llc.compute_llc): every step's minibatch loss,
    # burn-in included, minus an init loss averaged over 32 minibatches at w*.
    g = torch.Generator().manual_seed(100)
    perm = torch.randperm(x.shape[0], generator=g)[: 32 * batch_size]
    with torch.no_grad():
        init_loss = float(nll(model, x[perm], y[perm]).double().mean())
    nbeta = s["nbeta"]
    llc_devinterp = nbeta * (losses.mean() - init_loss)
    # Aligned with lambda-hat: burn-in discarded, L0 over all n samples.
    per_chain = nbeta * (losses[:, burn_in:].mean(axis=1) - L0)
    finite = bool(np.isfinite(losses).all())
    out = {
        "llc": float(per_chain.mean()) if finite else float("nan"),
        "llc_se": float(per_chain.std(ddof=1) / math.sqrt(n_chains))
        if n_chains > 1
        else float("nan"),
        "llc_devinterp_convention": float(llc_devinterp),
        "L0": L0,
        "init_loss_32_batches": init_loss,
        "sampling_s": sampling_s,
        "import_s": T_IMPORTED - T_START,
        "compile_s": 0.0,
        "grad_evals": n_chains * n_steps * batch_size / x.shape[0],
        "steps": n_chains * n_steps,
        "maxrss_mb": peak_rss_mb(),
        "torch_threads": torch.get_num_threads(),
        "versions": {
            "torch": torch.__version__,
            "devinterp": version("devinterp"),
        },
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
