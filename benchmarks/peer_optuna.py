"""Peer baseline: what a user writes by hand with plain Optuna + PyTorch.

MNIST-1D (generated offline by the mnist1d package), MLP as in the paper
(40 -> 100 -> 100 -> 10, ReLU). Naive search space, TPE + MedianPruner.
Prints one JSON line per trial and a summary.

This is the reference peer script unchanged, except for `--model digits`: scikit-learn's digits with the
same splits and MLP as tuner's `digits-mlp` objective, and `--model cancer`: scikit-learn's breast-cancer set
with the splits and MLP of tuner's `tabular` objective on its CSV (benchmarks/search.py writes it), and
`--model diabetes`: scikit-learn's diabetes regression the same way (standardised target, MSE loss, scored by
R^2 on the validation split, as `tabular` scores a regression); all written the way a user would write them
by hand; and `--retrain PARAMS --retrain-seeds N`: no study, the given best params (JSON, as the summary
prints them) trained again with N new seeds, the way a user re-trains the config a search delivered.
"""
import argparse, json, time
import numpy as np, optuna, torch, torch.nn as nn
from mnist1d.data import make_dataset, get_dataset_args

p = argparse.ArgumentParser()
p.add_argument("--trials", type=int, default=30)
p.add_argument("--epochs", type=int, default=20)
p.add_argument("--sampler", default="tpe", choices=["tpe", "random"])
p.add_argument("--seed", type=int, default=0)
p.add_argument("--model", default="mlp", choices=["mlp", "cnn", "digits", "cancer", "diabetes"])
p.add_argument("--retrain", help="best params (JSON): train them again instead of searching")
p.add_argument("--retrain-seeds", type=int, default=3)
a = p.parse_args()
torch.set_num_threads(1)

regression = a.model == "diabetes"
if a.model in ("digits", "cancer", "diabetes"):
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler
    x, y = {"digits": load_digits, "cancer": load_breast_cancer, "diabetes": load_diabetes}[a.model](return_X_y=True)
    x_rest, x_te, y_rest, y_te = train_test_split(x, y, test_size=0.2, random_state=0, stratify=None if regression else y)
    x_tr, x_va, y_tr, y_va = train_test_split(x_rest, y_rest, test_size=0.2, random_state=0, stratify=None if regression else y_rest)
    sc = StandardScaler().fit(x_tr)
    f32 = lambda v: torch.tensor(sc.transform(v), dtype=torch.float32)
    Xtr, Xv, Xt = f32(x_tr), f32(x_va), f32(x_te)
    if regression:
        mu, sd = y_tr.mean(), y_tr.std()
        Ytr, Yv, Yt = (torch.tensor((v - mu) / sd, dtype=torch.float32) for v in (y_tr, y_va, y_te))
    else:
        Ytr, Yv, Yt = torch.tensor(y_tr), torch.tensor(y_va), torch.tensor(y_te)
else:
    d = make_dataset(get_dataset_args())
    X = torch.tensor(d["x"], dtype=torch.float32); Y = torch.tensor(d["y"])
    Xt = torch.tensor(d["x_test"], dtype=torch.float32); Yt = torch.tensor(d["y_test"])
    # hold out 20% of train as validation
    g = torch.Generator().manual_seed(0); perm = torch.randperm(len(X), generator=g)
    nv = len(X) // 5
    Xv, Yv, Xtr, Ytr = X[perm[:nv]], Y[perm[:nv]], X[perm[nv:]], Y[perm[nv:]]

class CNN(nn.Module):
    def __init__(s, ch=25, p=0.0):
        super().__init__()
        s.c1 = nn.Conv1d(1, ch, 5, 2, 1); s.c2 = nn.Conv1d(ch, ch, 3, 2, 1); s.c3 = nn.Conv1d(ch, ch, 3, 2, 1)
        s.d = nn.Dropout(p); s.fc = nn.Linear(ch * 5, 10)
    def forward(s, x):
        x = x[:, None]
        x = torch.relu(s.c1(x)); x = torch.relu(s.c2(x)); x = torch.relu(s.c3(x))
        return s.fc(s.d(x.flatten(1)))

def build(p):
    if a.model == "diabetes":
        return nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Dropout(p), nn.Linear(64, 64), nn.ReLU(), nn.Dropout(p), nn.Linear(64, 1))
    if a.model == "cancer":
        return nn.Sequential(nn.Linear(30, 64), nn.ReLU(), nn.Dropout(p), nn.Linear(64, 64), nn.ReLU(), nn.Dropout(p), nn.Linear(64, 2))
    if a.model == "digits":
        return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(p), nn.Linear(128, 64), nn.ReLU(), nn.Dropout(p), nn.Linear(64, 10))
    if a.model == "mlp":
        return nn.Sequential(nn.Linear(40, 100), nn.ReLU(), nn.Dropout(p), nn.Linear(100, 100), nn.ReLU(), nn.Dropout(p), nn.Linear(100, 10))
    return CNN(p=p)

def acc(m, x, y):
    m.eval()
    with torch.no_grad():
        if regression:  # R^2
            out = m(x).reshape(y.shape)
            return (1 - (out - y).pow(2).sum() / (y - y.mean()).pow(2).sum()).item()
        return (m(x).argmax(1) == y).float().mean().item()

def train(trial, opt, lr, bs, wd, dp):
    m = build(dp)
    o = getattr(torch.optim, opt)(m.parameters(), lr=lr, weight_decay=wd)
    lossf = (lambda o, t: nn.functional.mse_loss(o.reshape(t.shape), t)) if regression else nn.CrossEntropyLoss(); best = 0.0
    for ep in range(a.epochs):
        m.train(); pr = torch.randperm(len(Xtr))
        for i in range(0, len(Xtr), bs):
            idx = pr[i:i + bs]
            o.zero_grad(); l = lossf(m(Xtr[idx]), Ytr[idx]); l.backward(); o.step()
        v = acc(m, Xv, Yv); best = max(best, v)
        if trial is not None:
            trial.report(v, ep)
            if trial.should_prune():
                raise optuna.TrialPruned()
    return v, acc(m, Xt, Yt)

if a.retrain:
    params, vals, tests = json.loads(a.retrain), [], []
    for i in range(a.retrain_seeds):
        torch.manual_seed(1_000_000 + i)
        v, te = train(None, params["optimizer"], params["lr"], params["batch_size"], params["weight_decay"], params["dropout"])
        vals.append(v); tests.append(te)
    print(json.dumps({"retrain": True, "params": params, "vals": vals, "tests": tests}))
    raise SystemExit

t0 = time.time(); log = []
def objective(trial):
    torch.manual_seed(trial.number)
    opt = trial.suggest_categorical("optimizer", ["SGD", "Adam", "RMSprop"])
    lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    bs = trial.suggest_categorical("batch_size", [32, 64, 128, 256])
    wd = trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
    dp = trial.suggest_float("dropout", 0.0, 0.5)
    v, te = train(trial, opt, lr, bs, wd, dp)
    trial.set_user_attr("test_acc", te)
    return v

sampler = optuna.samplers.TPESampler(seed=a.seed) if a.sampler == "tpe" else optuna.samplers.RandomSampler(seed=a.seed)
optuna.logging.set_verbosity(optuna.logging.WARNING)
st = optuna.create_study(direction="maximize", sampler=sampler, pruner=optuna.pruners.MedianPruner(n_warmup_steps=5))
def cb(study, t):
    log.append({"n": t.number, "state": t.state.name, "value": t.value, "t": round(time.time() - t0, 2),
                "best": study.best_value if any(x.state.name == "COMPLETE" for x in study.trials) else None})
    print(json.dumps(log[-1]), flush=True)
st.optimize(objective, n_trials=a.trials, callbacks=[cb])
bt = st.best_trial
print(json.dumps({"summary": True, "sampler": a.sampler, "model": a.model, "trials": a.trials, "wall_s": round(time.time() - t0, 1),
                  "best_val": bt.value, "best_test": bt.user_attrs.get("test_acc"), "best_params": bt.params}))
