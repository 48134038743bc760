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
distributed mode, loud failures, the best model), `report` (table and plot). The command line
is `lru-keras tune` (lru_keras/cli/tune.py).
"""

from lru_keras.tune.budget import Budget
from lru_keras.tune.hypermodel import LruNetHyperModel
from lru_keras.tune.run import (
    TUNERS, SearchConfig, SearchConflictError, SearchFailedError, SearchResult, search)
from lru_keras.tune.space import SearchSpace

__all__ = [
    "Budget", "LruNetHyperModel", "SearchConfig", "SearchConflictError", "SearchFailedError",
    "SearchResult", "SearchSpace", "TUNERS", "search",
]
