"""KerasTuner search over LruNet's reuse count N (and width, dropout, shuffle) under a device
budget: the paper's Table 2, automated.

    from lru_keras.tune import Budget, SearchSpace, search
    result = search(dataset="cifar10", tuner="bayesian", max_trials=20,
                    space=SearchSpace(reuse=range(1, 17), width=(0.5, 1.0)),
                    budget=Budget(max_params=200_000, max_mflops=30))
    result.best, result.best_hyperparameters, result.best_model, result.files

Modules, one job each: `space` (what a search may draw, checked), `budget` (params, MFLOPs,
int8 latency, and the infeasible verdict), `hypermodel` (the KerasTuner HyperModel, built and
compiled as `lru_keras.train` does), `run` (`search`: tuners, project directory and resume,
distributed mode, loud failures, the best model, each trial's TensorBoard run), `report`
(table, plot, the list of files written). The command line is `lru-keras tune`
(lru_keras/cli/tune.py).
"""

import importlib

# name: the module that defines it. Imported on first use (PEP 562), so that `space` and
# `budget` (the command line's argument checks) load without KerasTuner, the [tune] extra.
_EXPORTS = {
    "Budget": "budget", "LruNetHyperModel": "hypermodel", "SearchConfig": "run",
    "SearchConflictError": "run", "SearchFailedError": "run", "SearchResult": "run",
    "SearchSpace": "space", "TUNERS": "run", "search": "run",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lru_keras.tune' has no attribute {name!r}")
    return getattr(importlib.import_module(f"lru_keras.tune.{_EXPORTS[name]}"), name)
